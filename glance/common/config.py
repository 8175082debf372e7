"""This service's options and loading the operator's glance-api.conf.

The service reads the same glance-api.conf as the Glance API it sits beside:
options it does not know are ignored by oslo.config, store options are
registered by glance_store (through glance_store_ext.config) after parsing.
Any setting that cannot be used stops start-up with a ConfigError whose
message is one line naming the option and the file.
"""

import importlib.metadata
import os
import re

from oslo_config import cfg
from oslo_log import log as logging
from oslo_policy import opts as policy_opts

from glance.common import single_store
from glance_store_ext import config as store_config

PROJECT = "glance"
PROG = "glance-api"  # the same program name as upstream, so --config-dir and defaults match

# upstream Glance 33, glance/common/wsgi_app.py, then ours: later files win
CONFIG_FILES = ("glance-image-import.conf", "glance-api.conf", "glance-info-api.conf")
OPTIONAL_FILES = ("glance-image-import.conf", "glance-info-api.conf")

auth_opts = [
    cfg.StrOpt("auth_strategy", default="keystone", choices=[
        ("keystone", "keystonemiddleware auth_token validates every token; the identity of a "
                     "request comes only from the headers it sets"),
        ("noauth", "development only: the X-Roles, X-Project-Id, X-User-Id, ... headers are "
                   "trusted as sent"),
    ], help="How requests to the stores-info API are authenticated."),
    cfg.ListOpt("noauth_default_roles", default=["admin"],
                help="With auth_strategy = noauth: the roles of a request that sends no "
                     "X-Roles header, so that `glance --os-auth-token any stores-info "
                     "--detail` works on a development set-up."),
]

# Our own group: glance-api.conf's [DEFAULT] bind_host, bind_port and log_file belong to
# Glance, and an operator's file sets them (9292, /var/log/glance/api.log); reading them
# would bind Glance's port and write Glance's log.
SERVER_GROUP = "glance_info_api"
DEFAULT_PORT = 9293
LOG_NAME = "glance-info-api.log"

server_opts = [
    cfg.HostAddressOpt("bind_host", default="0.0.0.0",
                       help="Address glance-info-api listens on. Glance's own [DEFAULT] "
                            "bind_host is not read."),
    cfg.PortOpt("bind_port", default=DEFAULT_PORT,
                help="Port glance-info-api listens on (Glance's is 9292; its [DEFAULT] "
                     "bind_port is not read). Route /v2/info/stores and "
                     "/v2/info/stores/detail of Glance's endpoint here."),
    cfg.StrOpt("log_file",
               help="glance-info-api's own log file. Glance's [DEFAULT] log_file is not "
                    "written. Unset: <[DEFAULT] log_dir>/" + LOG_NAME + " when log_dir is "
                    "set, else standard error (the journal under systemd)."),
    cfg.IntOpt("workers", default=1, min=1, max=64,
               deprecated_opts=[cfg.DeprecatedOpt("info_api_workers", group="DEFAULT")],
               help="Processes of glance-info-api serving bind_host:bind_port together "
                    "(SO_REUSEPORT; the kernel spreads connections). One process is bound "
                    "to one core by Python's GIL: set this to the cores you give it. "
                    "Needs a fixed bind_port when above 1."),
    cfg.IntOpt("server_threads", default=16, min=1,
               deprecated_opts=[cfg.DeprecatedOpt("server_threads", group="DEFAULT")],
               help="Worker threads of glance-info-api's WSGI server (cheroot); idle "
                    "keep-alive connections do not hold a thread."),
    cfg.IntOpt("max_keepalive_connections", default=1024, min=0,
               deprecated_opts=[cfg.DeprecatedOpt("max_keepalive_connections", group="DEFAULT")],
               help="Idle keep-alive connections glance-info-api keeps open; beyond this a "
                    "response closes its connection (cheroot's own default is 10)."),
    cfg.IntOpt("client_socket_timeout", default=900, min=0,
               help="Seconds an idle client connection is kept open; 0 waits forever."),
]

# Upstream Glance 33 declares these two; the version document depends on them.
versions_opts = [
    cfg.StrOpt("public_endpoint",
               help="Public url endpoint to use for Glance versions response. If no value "
                    "is specified, the endpoint of the host running the API service is "
                    "used; set it to the proxy or load balancer URL otherwise."),
    cfg.StrOpt("image_cache_dir",
               help="Base directory for image cache (read only to answer the version "
                    "document as Glance does: the cache API versions are listed when it "
                    "is set)."),
]


class ConfigError(Exception):
    """A setting cannot be used: str() is one line naming the option and the file."""


def list_opts():
    return [(None, auth_opts + versions_opts), (SERVER_GROUP, server_opts)]


def register_opts(conf):
    conf.register_opts(auth_opts + versions_opts)
    conf.register_opts(server_opts, group=SERVER_GROUP)
    store_config.register_opts(conf)
    logging.register_options(conf)
    policy_opts.set_defaults(conf)  # registers [oslo_policy] (policy_file = policy.yaml)


def config_dir_files(env=None):
    """The config files of a WSGI deployment: $OS_GLANCE_CONFIG_DIR (default /etc/glance), as
    upstream, plus glance-info-api.conf there when present."""
    env = os.environ if env is None else env
    dirname = env.get("OS_GLANCE_CONFIG_DIR", "/etc/glance").strip()
    files = []
    for name in CONFIG_FILES:
        path = os.path.join(dirname, name)
        if name in OPTIONAL_FILES and not os.path.exists(path):
            continue  # optional: the import one as upstream, ours for [glance_info_api]
        files.append(path)
    return files


def load(args=None, default_config_files=None, conf=None, on_parsed=None):
    """Parse the command line and the config files into a new ConfigOpts; raises ConfigError.

    `on_parsed(conf)` runs once the files are parsed and checked, before the
    store groups are registered (logging set up there catches glance_store's).
    """
    conf = conf if conf is not None else cfg.ConfigOpts()
    register_opts(conf)
    try:
        conf(args if args is not None else [], project=PROJECT, prog=PROG,
             default_config_files=default_config_files)
    except cfg.ConfigFilesNotFoundError as exc:
        raise ConfigError(f"config file not found or not readable: {', '.join(exc.config_files)}")
    except cfg.ConfigFileParseError as exc:
        raise ConfigError(f"cannot parse {exc.config_file}: {exc.msg}")
    except cfg.RequiredOptError as exc:
        raise ConfigError(f"missing setting [{exc.group.name if exc.group else 'DEFAULT'}] "
                          f"{exc.opt_name} in {files(conf)}")
    except (cfg.Error, ValueError) as exc:  # bad command line, bad --config-dir
        raise ConfigError(str(exc).splitlines()[0])
    check_group(conf, None)
    check_group(conf, SERVER_GROUP)
    _own_log_file(conf)
    if on_parsed is not None:
        on_parsed(conf)
    single = None
    if single_store.applies(conf):
        # a single-store file is read as the multi-store one with its one store; its
        # [glance_store] values are read now: say where one fails
        check_group(conf, single_store.GROUP)
        try:
            single = single_store.prepare(conf)
        except single_store.Invalid as exc:
            raise ConfigError(f"invalid value for [{exc.group}] {exc.option} in "
                              f"{_source(conf, exc.group, exc.option)}: {exc.reason}")
        check_group(conf, single_store.GROUP)  # the driver's options, copied next
    try:
        store_config.register_store_opts(conf)
    except store_config.StoreConfigError as exc:
        raise ConfigError(f"{exc} (in {_source(conf, None, 'enabled_backends')})")
    if single:
        single_store.finish(conf, single)
    _check_stores(conf)
    check_all(conf)
    return conf


def _own_log_file(conf):
    """Log where [glance_info_api] log_file says, never into Glance's [DEFAULT] log_file."""
    ours = conf[SERVER_GROUP].log_file
    if not ours and conf.log_dir:
        ours = LOG_NAME  # oslo.log joins it to log_dir
    conf.set_override("log_file", ours)


def check_all(conf):
    """Check every option registered so far: ours, oslo's, glance_store's, the middlewares'."""
    check_group(conf, None)
    for name in list(conf):
        if isinstance(conf[name], cfg.ConfigOpts.GroupAttr):
            check_group(conf, name)


def check_group(conf, group):
    """oslo.config converts values lazily: read every option now, while we can still say where."""
    section = conf if group is None else conf[group]
    for name in list(section):
        try:
            value = section[name]
        except (cfg.ConfigFileValueError, cfg.ConfigSourceValueError, ValueError) as exc:
            reason = str(exc).rsplit("is not valid: ", 1)[-1]
            raise ConfigError(f"invalid value for [{group or 'DEFAULT'}] {name} in "
                              f"{_source(conf, group, name)}: {reason}")
        if group is None and isinstance(value, cfg.ConfigOpts.GroupAttr):
            continue  # groups are checked when they matter (store groups after registration)


def _check_stores(conf):
    backends = conf.enabled_backends or {}
    if not backends:
        return  # not reached: a single-store file has its store by now (single_store)
    known = _driver_names()
    for store_id, store_type in backends.items():
        if store_type not in known:
            raise ConfigError(f"invalid value for [DEFAULT] enabled_backends in "
                              f"{_source(conf, None, 'enabled_backends')}: store {store_id!r} has "
                              f"unknown type {store_type!r} (known: {', '.join(sorted(known))})")
    default = conf.glance_store.default_backend
    if not default:
        raise ConfigError(f"missing setting [glance_store] default_backend in {files(conf)}: "
                          "required when enabled_backends is set")
    if default not in backends:
        raise ConfigError(f"invalid value for [glance_store] default_backend in "
                          f"{_source(conf, 'glance_store', 'default_backend')}: {default!r} is not "
                          f"a store of enabled_backends ({', '.join(backends)})")


def _driver_names():
    # the store types glance_store knows (its driver entry points; nothing imported)
    return set(importlib.metadata.entry_points(group="glance_store.drivers").names)


def files(conf):
    files = list(conf.config_file or [])
    return ", ".join(files) if files else "(no config file)"


_DETAIL = re.compile(r"detail='([^']*)'")
_OPTION = re.compile(r"Value for option (\S+) ")


def describe_value_error(exc):
    """One line for an oslo.config value error raised where the group is not known."""
    text = str(exc)
    option = _OPTION.search(text)
    where = _DETAIL.search(text)
    return (f"invalid value for option {option.group(1) if option else '?'} in "
            f"{where.group(1) if where else '(unknown file)'}: {text.rsplit('is not valid: ', 1)[-1]}")


def _source(conf, group, name):
    """The file that sets [group] name (the last one wins), for error messages."""
    try:
        where = conf.get_location(name, group)
    except (cfg.ConfigFileValueError, cfg.ConfigSourceValueError) as exc:
        match = _DETAIL.search(str(exc))
        return match.group(1) if match else files(conf)
    except (cfg.NoSuchOptError, cfg.NoSuchGroupError):
        return files(conf)
    if where is not None and where.detail and where.location == cfg.Locations.user:
        return where.detail
    return files(conf)
