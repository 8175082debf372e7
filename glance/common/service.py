"""Start-up shared by the console script and the WSGI entry point: config, logging, the app."""

from keystoneauth1 import loading as ks_loading
from keystonemiddleware import auth_token
from oslo_config import cfg
from oslo_log import log as logging

from glance.api import app as api_app
from glance.common import config


def load_config(args=None, default_config_files=None):
    """Parse and check the config; raises config.ConfigError (one line)."""
    return config.load(args, default_config_files,
                       on_parsed=lambda conf: logging.setup(conf, "glance"))


def build_application(conf):
    """The WSGI application for a loaded config; raises config.ConfigError (one line)."""
    if conf.auth_strategy == "keystone":
        _check_keystone_authtoken(conf)
    try:
        application = api_app.Application(conf)
    except (cfg.ConfigFileValueError, cfg.ConfigSourceValueError) as exc:
        # an option a middleware registered itself (auth plugin options, ...)
        raise config.ConfigError(config.describe_value_error(exc)) from None
    try:
        config.check_all(conf)  # options the enforcer and middlewares registered just now
    except config.ConfigError:
        application.close()
        raise
    return application


def _check_keystone_authtoken(conf):
    """auth_token reads [keystone_authtoken] lazily: check it while we can still say where."""
    for group, opts in auth_token.list_opts():
        conf.register_opts(opts, group=group)
    ks_loading.register_auth_conf_options(conf, "keystone_authtoken")
    config.check_group(conf, "keystone_authtoken")
    if not conf.keystone_authtoken.auth_type:
        raise config.ConfigError(
            f"missing setting [keystone_authtoken] auth_type in {config.files(conf)}: "
            "auth_strategy = keystone needs credentials to validate tokens "
            "(or set auth_strategy = noauth for development)")


def load_application(args=None, wsgi_entry=False):
    """Config + app for glance.wsgi.api: the config dir from OS_GLANCE_CONFIG_DIR, as upstream."""
    try:
        conf = load_config(args, config.config_dir_files() if wsgi_entry else None)
        application = build_application(conf)
        application.warm()  # before the server forks its workers: no request waits for Ceph
        return application
    except config.ConfigError as exc:
        # one line, not a traceback, in the WSGI server's log
        raise SystemExit(f"glance-info-api: configuration error: {exc}") from None
