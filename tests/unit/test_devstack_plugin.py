"""devstack/plugin.sh run phase by phase on a devstack-style cinder.conf and glance-api.conf.

Devstack itself cannot be cloned here, and its bash functions (inc/ini-config,
functions-common, lib/apache) are in no PyPI or Debian package: PyPI's
devstack-tools is a Python rewrite (``dsconf``), not the functions a plugin
calls. So SHIM below implements the few devstack functions the plugin calls,
with devstack's semantics where they matter to the result:

* ``iniset FILE SECTION OPTION VALUE``: replaces the option's first line in
  that section, else adds it right under the section's header, else adds the
  section at the end (comments and other lines kept, as devstack's sed does);
* ``iniget FILE SECTION OPTION``: the option's value in that section, or
  nothing;
* ``is_service_enabled``, ``trueorfalse``, ``die``, ``warn``;
* the calls with side effects outside the files (``pip_install``, roles,
  processes, Apache, ``python3 -m venv``) are recorded, one line each.

The fixtures are what devstack plus devstack-plugin-ceph leave before our
post-config (lib/cinder_backends/ceph, cephadm's config_glance). The results
are read back with oslo.config, the way Cinder and the caps audit read them.
"""

import configparser
import os
import re
import subprocess
import textwrap

import pytest

from cinder_ext import audit, opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PLUGIN = os.path.join(ROOT, "devstack")

SHIM = r'''
# -- devstack's functions, as the plugin uses them (see the module docstring) --
_ini() { python3 - "$@" <<'PY'
import os, re, sys
op, path, section, option = sys.argv[1:5]
lines = open(path).read().splitlines() if os.path.exists(path) else []
header = re.compile(r"^\[\s*(.+?)\s*\]\s*$")
key = re.compile(r"^\s*" + re.escape(option) + r"\s*=\s*(.*?)\s*$")
current, first = None, None
for i, line in enumerate(lines):
    m = header.match(line)
    if m:
        current = m.group(1)
        if current == section and first is None:
            first = i
        continue
    m = key.match(line)
    if current == section and m:
        if op == "get":
            print(m.group(1))
            sys.exit(0)
        lines[i] = f"{option} = {sys.argv[5]}"
        break
else:
    if op == "get":
        sys.exit(0)
    if first is None:
        lines += ["", f"[{section}]", f"{option} = {sys.argv[5]}"]
    else:
        lines.insert(first + 1, f"{option} = {sys.argv[5]}")
with open(path, "w") as f:
    f.write("\n".join(lines) + "\n")
PY
}
iniset() { _ini set "$1" "$2" "$3" "$4"; }
iniget() { _ini get "$1" "$2" "$3"; }
is_service_enabled() {
    local s; for s in "$@"; do [[ ,$ENABLED_SERVICES, == *,$s,* ]] && return 0; done; return 1
}
trueorfalse() {
    local default=$1 v=${!2:-}
    case "$v" in
        1|[Yy]es|YES|[Tt]rue|TRUE|on|ON) echo True ;;
        0|[Nn]o|NO|[Ff]alse|FALSE|off|OFF) echo False ;;
        *) echo $default ;;
    esac
}
_record() { echo "$*" >> "$SHIM_LOG"; }
die() { _record "die $*"; exit 1; }
warn() { _record "warn $*"; }
echo_summary() { :; }
sudo() { "$@"; }
pip_install() { _record "pip_install $*"; }
get_or_create_role() { _record "get_or_create_role $*"; }
get_or_add_user_project_role() { _record "get_or_add_user_project_role $*"; }
run_process() { _record "run_process $*"; }
stop_process() { _record "stop_process $*"; }
apache_site_config_for() { echo "$APACHE_SITES/$1.conf"; }
enable_apache_site() { _record "enable_apache_site $*"; }
disable_apache_site() { _record "disable_apache_site $*"; }
restart_apache_server() { _record "restart_apache_server"; }
python3() {
    if [[ "$1 $2" == "-m venv" ]]; then
        _record "venv ${*:3}"; local d=${!#}
        mkdir -p "$d/bin"; printf '#!/bin/sh\necho "venv-pip $*" >> "%s"\n' "$SHIM_LOG" > "$d/bin/pip"
        chmod +x "$d/bin/pip"
    else
        command python3 "$@"
    fi
}
'''

# lib/cinder_backends/ceph + devstack's lib/cinder, CINDER_ENABLED_BACKENDS=ceph:ceph,lvm:lvmdriver-1
CINDER_CONF = """\
[DEFAULT]
graceful_shutdown_timeout = 5
glance_api_servers = http://192.0.2.10/image
default_volume_type = ceph
enabled_backends = ceph,lvmdriver-1
my_ip = 192.0.2.10
state_path = /opt/stack/data/cinder
osapi_volume_listen = 0.0.0.0
rootwrap_config = /etc/cinder/rootwrap.conf
api_paste_config = /etc/cinder/api-paste.ini
target_helper = lioadm
debug = True
transport_url = rabbit://stackrabbit:secret@192.0.2.10:5672/
auth_strategy = keystone

[keystone_authtoken]
memcached_servers = localhost:11211
www_authenticate_uri = http://192.0.2.10/identity
project_domain_name = Default
project_name = service
user_domain_name = Default
password = secret
username = cinder
auth_url = http://192.0.2.10/identity
auth_type = password

[nova]
region_name = RegionOne
auth_url = http://192.0.2.10/identity
auth_type = password
username = nova
password = secret
user_domain_name = Default
project_name = service
project_domain_name = Default
{service_user}
[ceph]
rbd_max_clone_depth = 5
rbd_flatten_volume_from_snapshot = False
rbd_secret_uuid = 6d1bf5a0-5d36-4a6c-9d5e-2d7f3f3ab1d2
rbd_user = cinder
rbd_pool = volumes
rbd_ceph_conf = /etc/ceph/ceph.conf
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph

[lvmdriver-1]
image_volume_cache_enabled = True
volume_clear = zero
lvm_type = auto
target_helper = lioadm
volume_group = stack-volumes-lvmdriver-1
volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver
volume_backend_name = lvmdriver-1
"""

# devstack since the 2023 service-token fixes: Cinder's [service_user] is set already
SERVICE_USER = """
[service_user]
send_service_user_token = True
auth_url = http://192.0.2.10/identity
auth_type = password
username = cinder
password = secret
user_domain_name = Default
project_name = service
project_domain_name = Default
"""

# cephadm's config_glance with GLANCE_ENABLE_MULTIPLE_STORES=True
GLANCE_MULTI = """\
[DEFAULT]
enabled_backends = robust_rbd:rbd,fast:file
show_multiple_locations = True
bind_host = 192.0.2.10

[glance_store]
default_backend = robust_rbd

[robust_rbd]
rbd_store_pool = images
rbd_store_user = glance
rbd_store_ceph_conf = /etc/ceph/ceph.conf

[fast]
filesystem_store_datadir = /opt/stack/data/glance/images/
"""

# ... and without it: single-store
GLANCE_SINGLE = """\
[DEFAULT]
show_multiple_locations = True

[glance_store]
default_store = rbd
stores = file, http, rbd
rbd_store_ceph_conf = /etc/ceph/ceph.conf
rbd_store_user = glance
rbd_store_pool = images
"""


class Stack:
    def __init__(self, tmp_path, cinder=CINDER_CONF.format(service_user=SERVICE_USER),
                 glance=GLANCE_MULTI):
        self.dir = tmp_path
        self.cinder_conf = tmp_path / "cinder.conf"
        self.glance_conf = tmp_path / "glance-api.conf"
        self.info_conf = tmp_path / "glance-info-api.conf"
        self.sites = tmp_path / "sites-available"
        self.log = tmp_path / "calls.log"
        self.venv = tmp_path / "venv-glance-info-api"
        self.sites.mkdir()
        self.cinder_conf.write_text(cinder)
        self.glance_conf.write_text(glance)
        self.env = {
            "PATH": os.environ["PATH"], "SHIM_LOG": str(self.log), "APACHE_SITES": str(self.sites),
            "CINDER_CONF": str(self.cinder_conf), "GLANCE_API_CONF": str(self.glance_conf),
            "GLANCE_INFO_API_CONF": str(self.info_conf), "GLANCE_INFO_API_VENV": str(self.venv),
            "CINDER_ENABLED_BACKENDS": "ceph:ceph,lvm:lvmdriver-1",
            "ENABLED_SERVICES": "key,g-api,c-api,c-vol,c-sch",
            "KEYSTONE_SERVICE_URI": "http://192.0.2.10/identity", "SERVICE_PASSWORD": "secret",
            "SERVICE_DOMAIN_NAME": "Default", "SERVICE_PROJECT_NAME": "service",
            "DEST": str(tmp_path),
        }

    def run(self, *phase, **env):
        """One devstack phase: override-defaults and settings sourced, then plugin.sh PHASE."""
        script = (SHIM + f"\nsource {PLUGIN}/override-defaults\nsource {PLUGIN}/settings\n"
                  f"source {PLUGIN}/plugin.sh {' '.join(phase)}\n")
        return subprocess.run(["bash", "-c", script], env={**self.env, **env}, text=True,
                              capture_output=True, timeout=60)

    def stack(self, **env):
        for phase in (("stack", "install"), ("stack", "post-config"), ("stack", "extra")):
            r = self.run(*phase, **env)
            assert r.returncode == 0, (phase, r.stderr[-2000:])

    def calls(self):
        return self.log.read_text().splitlines() if self.log.exists() else []

    def ini(self, path):
        p = configparser.RawConfigParser(strict=True)
        p.read(path)
        return p


@pytest.fixture
def stack(tmp_path):
    return Stack(tmp_path)


def test_the_ceph_backend_becomes_ours_with_the_option_on(stack):
    stack.stack()
    # Cinder's own reading: oslo.config, the backend's group, our options registered
    conf, backend = opts.load([str(stack.cinder_conf)], backend="ceph")
    assert backend.enable_clone_optimization is True
    assert (backend.rbd_pool, backend.rbd_user) == ("volumes", "cinder")
    ini = stack.ini(stack.cinder_conf)
    assert ini.get("ceph", "volume_driver") == "cinder_ext.driver.RBDCloneUploadDriver"
    # the caps audit sees the backend as an RBD one that clones
    (entry,) = audit.cinder_backends(str(stack.cinder_conf))
    assert (entry["section"], entry["pool"], entry["clone"]) == ("ceph", "volumes", True)
    # the LVM backend is left alone
    assert ini.get("lvmdriver-1", "volume_driver") == "cinder.volume.drivers.lvm.LVMVolumeDriver"
    assert not ini.has_option("lvmdriver-1", "enable_clone_optimization")
    # nothing else of devstack's config changed
    assert ini.get("ceph", "rbd_secret_uuid") == "6d1bf5a0-5d36-4a6c-9d5e-2d7f3f3ab1d2"
    assert ini.get("DEFAULT", "enabled_backends") == "ceph,lvmdriver-1"


def test_install_puts_the_two_cinder_wheels_into_cinders_environment(stack):
    stack.stack()
    (pip,) = [c for c in stack.calls() if c.startswith("pip_install")]
    paths = pip.split()[1:]
    assert [os.path.basename(p) for p in paths] == ["glance-store-ext", "cinder-rbd-clone"]
    for p in paths:
        assert os.path.isfile(os.path.join(p, "pyproject.toml")), p
    # no glance-info-api in Cinder's (devstack's global) environment, ever
    assert "glance-info-api" not in pip and not stack.venv.exists()


def test_install_from_prebuilt_wheels(stack, tmp_path):
    stack.stack(GLANCE_RBD_CLONE_WHEELS=str(tmp_path / "dist"))
    assert f"pip_install --find-links {tmp_path / 'dist'} cinder-rbd-clone" in stack.calls()


def test_cinders_user_gets_the_service_role(stack):
    stack.stack()
    calls = stack.calls()
    assert "get_or_create_role service" in calls
    assert "get_or_add_user_project_role service cinder service" in calls


def test_service_user_left_as_devstack_wrote_it(stack):
    stack.stack()
    ini = stack.ini(stack.cinder_conf)
    assert ini.get("service_user", "send_service_user_token") == "True"
    assert ini.get("service_user", "username") == "cinder"


def test_service_user_written_where_devstack_left_none(tmp_path):
    stack = Stack(tmp_path, cinder=CINDER_CONF.format(service_user=""))
    stack.stack()
    conf, _ = opts.load([str(stack.cinder_conf)], backend="ceph")
    from keystoneauth1 import loading
    loading.register_auth_conf_options(conf, "service_user")
    from oslo_config import cfg
    conf.register_opt(cfg.BoolOpt("send_service_user_token"), group="service_user")
    conf.reload_config_files()
    assert conf.service_user.send_service_user_token is True
    assert conf.service_user.auth_type == "password"
    ini = stack.ini(stack.cinder_conf)
    assert {k: ini.get("service_user", k) for k in (
        "auth_url", "username", "password", "project_name", "user_domain_name",
        "project_domain_name")} == {
        "auth_url": "http://192.0.2.10/identity", "username": "cinder", "password": "secret",
        "project_name": "service", "user_domain_name": "Default", "project_domain_name": "Default"}


def test_send_service_user_token_turned_on(tmp_path):
    off = SERVICE_USER.replace("send_service_user_token = True", "send_service_user_token = False")
    stack = Stack(tmp_path, cinder=CINDER_CONF.format(service_user=off))
    stack.stack()
    assert stack.ini(stack.cinder_conf).get("service_user", "send_service_user_token") == "True"


def test_enabled_before_devstack_plugin_ceph_dies(tmp_path):
    # devstack's own ceph backend not written yet: the LVM backend only
    cinder = CINDER_CONF.format(service_user=SERVICE_USER).replace(
        "volume_driver = cinder.volume.drivers.rbd.RBDDriver\n", "")
    stack = Stack(tmp_path, cinder=cinder)
    r = stack.run("stack", "post-config")
    assert r.returncode == 1
    (die,) = [c for c in stack.calls() if c.startswith("die")]
    assert "after devstack-plugin-ceph" in die
    assert "RBDCloneUploadDriver" not in stack.cinder_conf.read_text()


def test_single_store_glance_is_warned_about(tmp_path):
    stack = Stack(tmp_path, glance=GLANCE_SINGLE)
    stack.stack()
    (warn,) = [c for c in stack.calls() if c.startswith("warn")]
    assert "single-store" in warn and "GLANCE_ENABLE_MULTIPLE_STORES=True" in warn


def test_multi_store_glance_is_not(stack):
    stack.stack()
    assert not [c for c in stack.calls() if c.startswith("warn")]


@pytest.mark.parametrize("local_conf,expected", [(None, "True"), ("False", "False"),
                                                 ("True", "True")])
def test_glance_multi_store_by_default(tmp_path, local_conf, expected):
    env = {"GLANCE_ENABLE_MULTIPLE_STORES": local_conf} if local_conf else {}
    script = SHIM + f"source {PLUGIN}/override-defaults\necho $GLANCE_ENABLE_MULTIPLE_STORES\n"
    r = subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"], **env},
                       text=True, capture_output=True, timeout=30)
    assert r.stdout.strip() == expected, r.stderr


def test_glance_info_api_where_enabled(stack):
    stack.stack(ENABLED_SERVICES=stack.env["ENABLED_SERVICES"] + ",g-info-api")
    calls = stack.calls()
    # its own venv, never devstack's global one
    assert f"venv --system-site-packages {stack.venv}" in calls
    (pip,) = [c for c in calls if c.startswith("venv-pip")]
    assert pip.split()[-1].endswith("packaging/glance-info-api")
    info = stack.ini(stack.info_conf)
    assert (info.get("glance_info_api", "bind_host"), info.get("glance_info_api", "bind_port")) == (
        "127.0.0.1", "9293")
    (run,) = [c for c in calls if c.startswith("run_process")]
    assert run == (f"run_process g-info-api {stack.venv}/bin/glance-info-api --config-file "
                   f"{stack.glance_conf} --config-file {stack.info_conf}")
    # the Apache route: the two stores-info paths under /image, nothing else
    site = (stack.sites / "00-glance-info-api.conf").read_text()
    m = re.fullmatch(r'ProxyPassMatch "(.+)" "(.+)" retry=0\n', site)
    assert m, site
    route = re.compile(m.group(1))
    for path in ("/image/v2/info/stores", "/image/v2/info/stores/detail"):
        assert route.match(path), path
        assert route.sub(m.group(2).replace("$1", r"\1"), path) == (
            "http://127.0.0.1:9293" + path[len("/image"):])
    for path in ("/image/v2/info/import", "/image/v2/info/usage", "/image/v2/images",
                 "/image/v2/info/stores/detailX", "/image/v2/info/storesX"):
        assert not route.match(path), path
    assert "enable_apache_site 00-glance-info-api" in calls
    # sorted before devstack's own Glance site, so that Apache tries it first
    assert "00-glance-info-api" < "glance-api" < "glance-wsgi-api"


def test_glance_info_api_stopped_and_removed(stack):
    env = {"ENABLED_SERVICES": stack.env["ENABLED_SERVICES"] + ",g-info-api"}
    stack.stack(**env)
    assert stack.run("unstack", **env).returncode == 0
    assert stack.run("clean", **env).returncode == 0
    assert "stop_process g-info-api" in stack.calls()
    assert not stack.venv.exists() and not stack.info_conf.exists()
    assert not (stack.sites / "00-glance-info-api.conf").exists()


def test_phases_are_idempotent(stack):
    stack.stack()
    first = stack.cinder_conf.read_text()
    # a second ./stack.sh on the same files (devstack rewrites them, but not always)
    r = stack.run("stack", "post-config")
    assert r.returncode == 0 and stack.cinder_conf.read_text() == first


def test_shim_iniset_semantics(tmp_path):
    # the shim itself, against the behaviour of devstack's iniset the plugin relies on
    path = tmp_path / "x.conf"
    path.write_text(textwrap.dedent("""\
        [a]
        # a comment
        k = 1
        [b]
        k = 2
        """))
    script = SHIM + (f"iniset {path} b k 3\niniset {path} b new v\niniset {path} c z y\n"
                     f"echo \"$(iniget {path} a k) $(iniget {path} b k) $(iniget {path} b none)\"\n")
    r = subprocess.run(["bash", "-c", script], env={"PATH": os.environ["PATH"]}, text=True,
                       capture_output=True, timeout=30)
    assert r.stdout.strip() == "1 3", r.stderr
    assert path.read_text() == "[a]\n# a comment\nk = 1\n[b]\nnew = v\nk = 3\n\n[c]\nz = y\n"
