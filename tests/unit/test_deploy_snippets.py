"""deploy/'s snippets for OpenStack-Ansible, OpenStack-Helm and Kolla, read as each tool reads them.

The tools themselves do not run here; what each does with the snippet is
reproduced from its code (named at each test), and the resulting cinder.conf
is read with oslo.config, as Cinder and the caps audit read it.
"""

import configparser
import json
import os

import jinja2
import pytest
import yaml
from oslo_config import cfg

from cinder_ext import audit, opts

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DEPLOY = os.path.join(ROOT, "deploy")
UPSTREAM = "cinder.volume.drivers.rbd.RBDDriver"
OURS = "cinder_ext.driver.RBDCloneUploadDriver"
STORES_ACL = "acl stores_info path /v2/info/stores /v2/info/stores/detail"


def _read(*parts):
    with open(os.path.join(DEPLOY, *parts)) as f:
        return f.read()


def _ini_value(value):
    return str(value).lower() if isinstance(value, bool) else str(value)


def _backend(conf_path, backend, args=()):
    conf, b = opts.load([str(conf_path)], backend=backend, args=args)
    conf.register_opt(cfg.StrOpt("volume_driver"), group=backend)
    return conf[backend].volume_driver, b


# -- OpenStack-Ansible -------------------------------------------------------------------------

@pytest.fixture
def osa():
    return yaml.safe_load(_read("openstack-ansible", "user_variables.yml"))


def test_osa_says_the_backend_is_rbd_itself(osa):
    # os_cinder defaults/main.yml: cinder_backend_rbd_inuse is
    # (cinder_backends | to_json).find("cinder.volume.drivers.rbd.RBDDriver") != -1
    assert json.dumps(osa["cinder_backends"]).find(UPSTREAM) == -1  # the trap is real here
    assert osa["cinder_backend_rbd_inuse"] is True


def test_osa_backend_renders_to_our_driver_with_the_option_on(osa, tmp_path):
    # os_cinder templates/cinder.conf.j2: enabled_backends, then one section per backend,
    # its keys dictsorted
    names = sorted(osa["cinder_backends"])
    lines = ["[DEFAULT]", f"enabled_backends={','.join(names)}"]
    for name in names:
        lines.append(f"[{name}]")
        for key, value in sorted(osa["cinder_backends"][name].items()):
            value = value.replace("{{ cinder_ceph_client }}", "cinder").replace(
                "{{ cinder_ceph_client_uuid }}", "457eb676-33da-42ec-9a8c-9293d545c337") \
                if isinstance(value, str) else value
            lines.append(f"{key} = {_ini_value(value)}")
    path = tmp_path / "cinder.conf"
    path.write_text("\n".join(lines) + "\n")
    driver, backend = _backend(path, "rbd")
    assert driver == OURS and backend.enable_clone_optimization is True
    assert (backend.rbd_pool, backend.rbd_user) == ("volumes", "cinder")
    (entry,) = audit.cinder_backends(str(path))
    assert entry["clone"] is True


def test_osa_wheels_and_route(osa):
    wheels = [os.path.basename(u) for u in osa["cinder_user_pip_packages"]]
    assert [w.split("-")[0] for w in wheels] == ["glance_store_ext", "cinder_rbd_clone"]
    assert all(w.endswith("-py3-none-any.whl") for w in wheels)
    assert STORES_ACL in _read("openstack-ansible", "haproxy-glance-info-api.cfg")


# -- OpenStack-Helm ----------------------------------------------------------------------------

@pytest.fixture
def helm():
    return (yaml.safe_load(_read("openstack-helm", "cinder-values.yaml")),
            yaml.safe_load(_read("openstack-helm", "cinder-rbd-clone-secret.yaml")))


def test_helm_keeps_upstreams_string_where_the_chart_looks(helm):
    values, _ = helm
    # cinder/templates/utils/_is_ceph_backend.tpl: eq $backend.volume_driver
    # "cinder.volume.drivers.rbd.RBDDriver"
    assert [b["volume_driver"] for b in values["conf"]["backends"].values()] == [UPSTREAM]


def test_helm_conf_d_file_wins(helm, tmp_path):
    values, secret = helm
    (source,) = values["pod"]["etcSources"]["cinder_volume"]
    assert source == {"secret": {"name": secret["metadata"]["name"]}}
    # the chart writes conf.backends to backends.conf as-is; cinder-volume runs with
    # --config-file ... --config-file /etc/cinder/conf/backends.conf ...
    # --config-dir /etc/cinder/cinder.conf.d (the projected etcSources)
    backends = values["conf"]["backends"]
    lines = ["[DEFAULT]", f"enabled_backends = {','.join(backends)}"]
    for name, options in backends.items():
        lines.append(f"[{name}]")
        lines += [f"{k} = {_ini_value(v)}" for k, v in options.items()]
    path = tmp_path / "backends.conf"
    path.write_text("\n".join(lines) + "\n")
    conf_d = tmp_path / "cinder.conf.d"
    conf_d.mkdir()
    for name, text in secret["stringData"].items():
        assert name.endswith(".conf")  # oslo.config's --config-dir reads *.conf only
        (conf_d / name).write_text(text)
    assert _backend(path, "rbd1")[0] == UPSTREAM  # what the chart's templates see
    driver, backend = _backend(path, "rbd1", args=["--config-dir", str(conf_d)])
    assert driver == OURS and backend.enable_clone_optimization is True
    assert backend.rbd_pool == "cinder.volumes"


def test_helm_ingress_sends_exactly_two_paths():
    ingress = yaml.safe_load(_read("openstack-helm", "glance-info-api-ingress.yaml"))
    (rule,) = ingress["spec"]["rules"]
    paths = rule["http"]["paths"]
    assert [(p["path"], p["pathType"]) for p in paths] == [
        ("/v2/info/stores", "Exact"), ("/v2/info/stores/detail", "Exact")]
    assert {p["backend"]["service"]["port"]["number"] for p in paths} == {9293}


# -- Kolla (the images: tests/interop/test_kolla_template.py) -----------------------------------

KOLLA_VARS = {"keystone_internal_url": "https://kolla.example:5000", "cinder_keystone_user": "cinder",
              "cinder_keystone_password": "secret", "default_user_domain_id": "default",
              "default_project_domain_id": "default", "openstack_cacert": "",
              "openstack_region_name": "RegionOne"}

# kolla-ansible's cinder.conf.j2 for cinder-volume with cinder_backend_ceph (no [service_user])
KOLLA_CINDER_CONF = """\
[DEFAULT]
enabled_backends = rbd-1

[keystone_authtoken]
username = cinder

[rbd-1]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = rbd-1
rbd_pool = volumes
rbd_ceph_conf = /etc/ceph/ceph.conf
rados_connect_timeout = 5
rbd_user = cinder
rbd_cluster_name = ceph
rbd_keyring_conf = /etc/ceph/ceph.client.cinder.keyring
rbd_secret_uuid = 457eb676-33da-42ec-9a8c-9293d545c337
report_discard_supported = true
"""


def test_kolla_override_merged_over_kollas_cinder_conf(tmp_path):
    override = jinja2.Template(_read("kolla", "cinder-volume.conf"),
                               undefined=jinja2.StrictUndefined).render(**KOLLA_VARS)
    # kolla-ansible's merge_configs: later sources win option by option
    merged = configparser.RawConfigParser(strict=False)
    merged.read_string(KOLLA_CINDER_CONF)
    merged.read_string(override)
    path = tmp_path / "cinder.conf"
    with open(path, "w") as f:
        merged.write(f)
    driver, backend = _backend(path, "rbd-1")
    assert driver == OURS and backend.enable_clone_optimization is True
    assert backend.rbd_user == "cinder"  # Kolla's own wiring kept
    # [service_user] as keystoneauth1 loads it for Cinder
    from keystoneauth1 import loading
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.BoolOpt("send_service_user_token"), group="service_user")
    loading.register_auth_conf_options(conf, "service_user")
    conf([], default_config_files=[str(path)])
    plugin = loading.load_auth_from_conf_options(conf, "service_user")
    assert conf.service_user.send_service_user_token is True
    assert type(plugin).__name__ == "Password"
    assert plugin.auth_url == "https://kolla.example:5000"


def test_kolla_haproxy_backend_and_rules():
    text = _read("kolla", "glance-info-api.cfg")
    assert "backend glance_info_api_back" in text and ":9293 check" in text
    assert STORES_ACL in text and "use_backend glance_info_api_back if stores_info" in text
