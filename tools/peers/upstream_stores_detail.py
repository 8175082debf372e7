"""Upstream Glance's own GET /v2/info/stores/detail body for a glance-api.conf.

Runs inside a Glance peer venv (tools/peers/upstream-stores-detail [--release SERIES] wraps
it): loads CONFIG_FILE the way glance-api does (glance.common.wsgi_app
init_app: same project/prog, reserved staging/tasks stores, store
registration and verification), then calls
glance.api.v2.discovery.InfoController().get_stores_detail(req) with an
admin request context and prints the JSON body on stdout.
"""

import json
import logging
import os
import sys
import warnings


def fail(msg):
    print(f"upstream-stores-detail: {msg}", file=sys.stderr)
    sys.exit(1)


def main(argv):
    if len(argv) != 1 or argv[0].startswith("-"):
        fail("usage: upstream-stores-detail CONFIG_FILE")
    config_file = os.path.abspath(argv[0])
    if not os.path.isfile(config_file):
        fail(f"no such config file: {config_file}")
    # stdout is for the JSON only, stderr for one line on failure: the store
    # loader's "Could not load 'cinder'" (no os-brick here) and eventlet's
    # deprecation warning are noise
    logging.basicConfig(level=logging.CRITICAL, stream=sys.stderr, format="%(message)s")
    warnings.filterwarnings("ignore")

    import glance_store
    import webob
    from oslo_config import cfg

    from glance.api import policy
    from glance.api.v2 import discovery
    from glance.common import config, store_utils, wsgi_app
    import glance.context

    conf = cfg.CONF
    try:
        config.set_config_defaults()
        conf(["--config-file", config_file], project="glance", prog="glance-api")
        if not conf.enabled_backends:
            # upstream answers 404 "Multi backend is not supported at this site."
            pass
        elif store_utils.check_reserved_stores(conf.enabled_backends):
            fail(f"{config_file}: 'os_glance_' prefix is reserved in enabled_backends")
        else:
            glance_store.register_store_opts(conf, reserved_stores=wsgi_app.RESERVED_STORES)
            glance_store.create_multi_stores(conf, reserved_stores=wsgi_app.RESERVED_STORES)
            glance_store.verify_store()
    except cfg.Error as e:
        fail(f"{config_file}: {e}".replace("\n", " "))
    except Exception as e:  # store drivers raise their own types; one line all the same
        fail(f"{config_file}: stores did not configure: {type(e).__name__}: {e}".replace("\n", " "))

    enforcer = policy.Enforcer()
    req = webob.Request.blank("/v2/info/stores/detail")
    req.context = glance.context.RequestContext(
        user_id="upstream-stores-detail", project_id="admin", roles=["admin"],
        is_admin=True, policy_enforcer=enforcer)
    try:
        body = discovery.InfoController(policy_enforcer=enforcer).get_stores_detail(req)
    except webob.exc.HTTPException as e:
        fail(f"upstream answered {e.status}: {e.explanation}")
    except Exception as e:
        fail(f"get_stores_detail failed: {type(e).__name__}: {e}".replace("\n", " "))
    print(json.dumps(body, indent=2, sort_keys=False))


if __name__ == "__main__":
    main(sys.argv[1:])
