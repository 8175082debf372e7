"""The WSGI application: upstream Glance's pipeline, reduced to what the stores-info API needs.

    http_proxy_to_wsgi -> request_id -> /healthcheck (oslo.middleware, no auth)
                                     -> version negotiation (/, /versions: no auth, as upstream)
      -> auth_token (keystone only) -> request context -> /v2 router
"""

import logging
import time

from keystonemiddleware import auth_token
from oslo_middleware import healthcheck
from oslo_middleware import http_proxy_to_wsgi
from oslo_middleware import request_id
import webob
import webob.exc

from glance.api import policy
from glance.api import version_negotiation
from glance.api.v2 import router
from glance.common import context
from glance.common import wsgi
from glance_store_ext import registry

LOG = logging.getLogger(__name__)


class _URLMap:
    """Upstream's root paste urlmap: a prefix goes to its app (moved to SCRIPT_NAME), the rest to `default`."""

    def __init__(self, default, apps):
        self.default = default
        self.apps = apps

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO", "")
        for prefix, app in self.apps.items():
            if path == prefix or path.startswith(prefix + "/"):
                environ["SCRIPT_NAME"] = environ.get("SCRIPT_NAME", "") + prefix
                environ["PATH_INFO"] = path[len(prefix):]
                return app(environ, start_response)
        return self.default(environ, start_response)


class _RejectUndecodablePath:
    """400, not a 500 from deep in webob, for a path whose %-escapes are not UTF-8."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        try:
            # PEP 3333 carries the raw path as latin-1; webob decodes it as UTF-8 later
            environ.get("PATH_INFO", "").encode("latin-1").decode("utf-8")
        except UnicodeError:
            req = webob.Request(environ)
            return wsgi.error_response(req, webob.exc.HTTPBadRequest(
                explanation="Error decoding your request. Either the URL or the request body "
                            "contained characters that could not be decoded by Glance"))(
                environ, start_response)
        return self.app(environ, start_response)


class Application:
    """The WSGI app and what it owns: close() stops the store providers' background work."""

    def __init__(self, conf):
        self.conf = conf
        self.enforcer = policy.Enforcer(conf)
        self.store_details = registry.StoreDetails(conf)  # once per process: no RADOS per request
        app = router.API(conf, self.enforcer, self.store_details)
        if conf.auth_strategy == "noauth":
            LOG.warning("auth_strategy = noauth: NO AUTHENTICATION. Identity headers (X-Roles, "
                        "X-Project-Id, ...) are trusted as sent and a request without X-Roles "
                        "gets the roles %s. Never expose this service beyond a development "
                        "host.", conf.noauth_default_roles)
            app = context.ContextMiddleware(app, trust_headers=True,
                                            default_roles=conf.noauth_default_roles)
        else:
            app = context.ContextMiddleware(app)
            # delay_auth_decision: the context middleware answers 401, as in upstream's pipeline
            app = auth_token.AuthProtocol(app, {"oslo_config_config": conf,
                                                "delay_auth_decision": "true"})
        app = version_negotiation.VersionNegotiation(app, conf)
        # oslo.middleware reads [healthcheck], [oslo_middleware] of the operator's config
        app = _URLMap(app, {"/healthcheck": healthcheck.Healthcheck(None, conf)})
        app = request_id.RequestId(_RejectUndecodablePath(app), conf)
        self.wsgi_app = http_proxy_to_wsgi.HTTPProxyToWSGI(app, conf)

    def __call__(self, environ, start_response):
        return self.wsgi_app(environ, start_response)

    def warm(self):
        """Read every store's properties now (bounded), so that no request waits for Ceph."""
        started = time.monotonic()
        ids = self.store_details.warm()
        LOG.info("Store properties ready for %s in %.3f s", ", ".join(ids) or "no store",
                 time.monotonic() - started)

    def close(self):
        self.store_details.close()
