"""Store providers: a glance-api.conf fragment maps to upstream Glance 33's properties.

Expected values are what upstream computes for the same fragment, from its
code: glance/api/v2/discovery.py picks the attributes, glance_store's drivers
derive them from the options in configure()/configure_add(). The interop test
(tests/interop/test_store_properties_upstream.py) runs upstream itself.
"""

import json
import logging
import os
import subprocess
import sys
import textwrap

import pytest
from oslo_config import cfg

from glance_store_ext import config, registry
from glance_store_ext.file import FileProvider
from glance_store_ext.provider import Provider, ProviderError
from glance_store_ext.rbd import RBDProvider

ALL = "ceph:rbd, fast:file, web:http, sw:swift, s:s3, c:cinder"


def make_conf(tmp_path, text, backends=ALL):
    path = tmp_path / "glance-api.conf"
    path.write_text(f"[DEFAULT]\nenabled_backends = {backends}\n" + textwrap.dedent(text))
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=[], project="glance", default_config_files=[str(path)])
    config.register_store_opts(conf)
    return conf


def ours(caplog):
    # glance_store's own driver loading logs too (no os-brick here): not ours to count
    return [r for r in caplog.records if r.name.startswith("glance_store_ext")]


@pytest.fixture
def details():
    made = []

    def factory(conf, **provider_args):
        d = registry.StoreDetails(conf, provider_args=provider_args)
        made.append(d)
        return d
    yield factory
    for d in made:
        d.close()


# rbd: no cluster here; the fsid reader fails at once on the unreadable conf (functional tests cover it)
NO_CLUSTER = "rbd_store_ceph_conf = /nonexistent/ceph.conf\n"


def test_defaults_map_to_upstream_properties(tmp_path, details):
    conf = make_conf(tmp_path, "[ceph]\n" + NO_CLUSTER)
    d = details(conf)
    assert d.properties("ceph") == {
        "chunk_size": 8 * 1024 * 1024,  # rbd_store_chunk_size 8 (MiB) * units.Mi
        "pool": "images", "thin_provisioning": False, "fsid": None, "user": None}
    assert d.properties("fast") == {"data_dir": "/var/lib/glance/images", "chunk_size": 65536,
                                    "thin_provisioning": False}
    assert d.properties("web") == {}
    # swift: "MB" is glance_store's ONE_MB = 1000 * 1024
    assert d.properties("sw") == {"container": "glance", "large_object_size": 5120 * 1024000,
                                  "large_object_chunk_size": 200 * 1024000}
    assert d.properties("s") == {"s3_store_large_object_size": 100 * 1048576,
                                 "s3_store_large_object_chunk_size": 10 * 1048576,
                                 "s3_store_thread_pools": 10}


def test_set_values_map_to_upstream_properties(tmp_path, details):
    conf = make_conf(tmp_path, """
        [ceph]
        rbd_store_pool = glance-images
        rbd_store_chunk_size = 16
        rbd_thin_provisioning = true
        rbd_store_user = glance
        rbd_store_ceph_conf = /nonexistent/ceph.conf
        rados_connect_timeout = 3
        [fast]
        filesystem_store_datadir = /srv/glance/fast
        filesystem_store_chunk_size = 1048576
        filesystem_thin_provisioning = true
        [sw]
        swift_store_container = imgs
        swift_store_large_object_size = 1024
        swift_store_large_object_chunk_size = 100
        [s]
        s3_store_large_object_size = 200
        s3_store_large_object_chunk_size = 20
        s3_store_thread_pools = 4
        """)
    d = details(conf)
    assert d.properties("ceph") == {"chunk_size": 16777216, "pool": "glance-images",
                                    "thin_provisioning": True, "fsid": None, "user": "glance"}
    assert d.properties("fast") == {"data_dir": "/srv/glance/fast", "chunk_size": 1048576,
                                    "thin_provisioning": True}
    assert d.properties("sw") == {"container": "imgs", "large_object_size": 1048576000,
                                  "large_object_chunk_size": 102400000}
    assert d.properties("s") == {"s3_store_large_object_size": 209715200,
                                 "s3_store_large_object_chunk_size": 20971520, "s3_store_thread_pools": 4}


def test_unset_store_options_fall_back_to_backend_defaults(tmp_path, details):
    # glance_store's BackendGroupConfiguration: store group first, then [backend_defaults]
    conf = make_conf(tmp_path, """
        [backend_defaults]
        rbd_store_chunk_size = 4
        rbd_store_pool = shared
        rbd_thin_provisioning = true
        filesystem_store_chunk_size = 4096
        [ceph]
        rbd_store_pool = own
        rbd_thin_provisioning = false
        rbd_store_ceph_conf = /nonexistent/ceph.conf
        """)
    d = details(conf)
    props = d.properties("ceph")
    assert (props["chunk_size"], props["pool"], props["thin_provisioning"]) == (4 * 1048576, "own", False)
    assert d.properties("fast")["chunk_size"] == 4096


def test_two_stores_of_one_type_are_independent(tmp_path, details):
    conf = make_conf(tmp_path, """
        [a]
        filesystem_store_datadir = /srv/a
        [b]
        filesystem_store_datadir = /srv/b
        filesystem_store_chunk_size = 8192
        """, backends="a:file, b:file")
    d = details(conf)
    assert d.properties("a")["data_dir"] == "/srv/a"
    assert d.properties("b") == {"data_dir": "/srv/b", "chunk_size": 8192, "thin_provisioning": False}


def test_file_store_with_datadirs_reports_null_data_dir(tmp_path, details):
    # glance_store sets `datadir` only for a single directory; upstream answers 500 here
    conf = make_conf(tmp_path, """
        [fast]
        filesystem_store_datadir =
        filesystem_store_datadirs = /srv/one:100
        filesystem_store_datadirs = /srv/two:200
        """, backends="fast:file")
    assert details(conf).properties("fast") == {"data_dir": None, "chunk_size": 65536,
                                                "thin_provisioning": False}


def test_multi_tenant_swift_reports_its_configured_container(tmp_path, details):
    # deliberate difference: upstream's MultiTenantStore sets `container` on its
    # first upload, so upstream reports null until then and the name afterwards
    conf = make_conf(tmp_path, "[sw]\nswift_store_multi_tenant = true\nswift_store_container = tenant\n",
                     backends="sw:swift")
    assert details(conf).properties("sw")["container"] == "tenant"


def test_rbd_without_pool_has_no_fsid(tmp_path):
    # upstream's fsid comes from url_prefix, which glance_store leaves "rbd://" without a pool
    conf = make_conf(tmp_path, "[ceph]\nrbd_store_pool =\n" + NO_CLUSTER, backends="ceph:rbd")
    provider = RBDProvider(conf, "ceph", cold_wait=2)
    try:
        provider.fsid_reader()._fsid = "forced"  # as if the cluster had answered
        provider.fsid_reader()._first_read.set()
        assert provider.properties()["fsid"] is None
        assert provider.properties()["pool"] == ""
    finally:
        provider.close()


def test_config_reload_is_seen(tmp_path, details):
    conf = make_conf(tmp_path, "[fast]\nfilesystem_store_datadir = /srv/old\n", backends="fast:file")
    d = details(conf)
    assert d.properties("fast")["data_dir"] == "/srv/old"
    conf.set_override("filesystem_store_datadir", "/srv/new", group="fast")
    assert d.properties("fast")["data_dir"] == "/srv/new"


def test_properties_carry_no_secret(tmp_path, details):
    conf = make_conf(tmp_path, """
        [ceph]
        rbd_store_user = glance
        rbd_store_ceph_conf = /etc/ceph/secret-place/ceph.conf
        [c]
        """, backends="ceph:rbd")
    text = json.dumps(details(conf, rbd={"cold_wait": 1}).properties("ceph"))
    assert "secret-place" not in text and "keyring" not in text and "/etc/ceph" not in text


# -- the registry -------------------------------------------------------------

def test_providers_are_found_through_entry_points(tmp_path, details):
    conf = make_conf(tmp_path, "[ceph]\n" + NO_CLUSTER)
    d = details(conf)
    for store_id in ("ceph", "fast", "web", "sw", "s"):
        d.properties(store_id)
    types = {sid: type(p).__name__ for sid, p in d._providers.items()}
    assert types == {"ceph": "RBDProvider", "fast": "FileProvider", "web": "HTTPProvider",
                     "sw": "SwiftProvider", "s": "S3Provider"}
    # kept: the same instance serves the next call
    first = d._providers["fast"]
    d.properties("fast")
    assert d._providers["fast"] is first


def test_unknown_store_type_gives_empty_properties_and_one_warning(tmp_path, details, caplog):
    conf = make_conf(tmp_path, "", backends="fast:file, vm:vmware")
    d = details(conf)
    with caplog.at_level(logging.WARNING, logger="glance_store_ext"):
        results = [d.properties("vm") for _ in range(5)]
    assert results == [{}] * 5
    warnings = [r for r in ours(caplog) if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'vm'" in warnings[0].getMessage() and "'vmware'" in warnings[0].getMessage()
    assert warnings[0].exc_info is None  # one line, no traceback


def test_store_not_enabled_gives_empty_properties_and_one_warning(tmp_path, details, caplog):
    d = details(make_conf(tmp_path, "", backends="fast:file"))
    with caplog.at_level(logging.WARNING, logger="glance_store_ext"):
        assert d.properties("ghost") == {} and d.properties("ghost") == {}
    assert [r.getMessage() for r in ours(caplog)] == [
        "store 'ghost' is not in [DEFAULT] enabled_backends; reporting no properties"]


def test_a_failing_provider_is_contained(tmp_path, details, caplog):
    # cinder: glance_store cannot load its cinder driver without os-brick, so its
    # options are not registered; the store reports {} and says why, once
    conf = make_conf(tmp_path, "", backends="fast:file, c:cinder")
    try:
        conf.c.cinder_volume_type
        pytest.fail("this venv has os-brick: the cinder options are registered; use another fault")
    except cfg.NoSuchOptError:
        pass
    d = details(conf)
    with caplog.at_level(logging.WARNING, logger="glance_store_ext"):
        assert d.properties("c") == {} and d.properties("c") == {}
    messages = [r.getMessage() for r in ours(caplog)]
    assert len(messages) == 1
    assert "store 'c'" in messages[0] and "[c] cinder_volume_type is not registered" in messages[0]


def test_cinder_properties_from_its_options(tmp_path, details):
    # glance_store's cinder options need os-brick to be importable (not in this venv);
    # stand-ins with the same names and defaults (cinder/store.py: cinder_volume_type
    # StrOpt default None, cinder_use_multipath BoolOpt default False) test the mapping
    conf = make_conf(tmp_path, "[c]\ncinder_use_multipath = true\n"
                     "[backend_defaults]\ncinder_volume_type = glance-vt\n", backends="c:cinder")
    for group in ("c", "backend_defaults"):
        conf.register_opts([cfg.StrOpt("cinder_volume_type"),
                            cfg.BoolOpt("cinder_use_multipath", default=False)], group=group)
    assert details(conf).properties("c") == {"volume_type": "glance-vt", "use_multipath": True}


def test_provider_base_contract():
    p = Provider(cfg.ConfigOpts(), "x")
    with pytest.raises(NotImplementedError):
        p.properties()
    p.close()
    with pytest.raises(ProviderError, match=r"\[x\] y is not registered"):
        p.option("y")


def test_close_stops_rbd_background_work(tmp_path, details):
    conf = make_conf(tmp_path, "[ceph]\n" + NO_CLUSTER, backends="ceph:rbd")
    d = details(conf, rbd={"refresh_interval": 0.05, "retry_interval": 0.05, "cold_wait": 1})
    d.properties("ceph")
    reader = d._providers["ceph"].fsid_reader()
    assert reader._thread.is_alive()
    d.close()
    reader._thread.join(2)
    assert not reader._thread.is_alive()
    assert d.properties("ceph")["pool"] == "images"  # still answers after close


# -- config ------------------------------------------------------------------

def test_enabled_backends_is_declared_as_upstream():
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    config.register_opts(conf)  # idempotent
    [(group, opts)] = config.list_opts()
    assert group is None and [o.name for o in opts] == ["enabled_backends"]
    opt = opts[0]
    assert isinstance(opt, cfg.DictOpt)
    assert opt.help == ("Key:Value pair of store identifier and store type. "
                        "In case of multiple backends should be separated using comma.")


def test_register_opts_leaves_an_existing_declaration_alone():
    conf = cfg.ConfigOpts()
    conf.register_opt(cfg.DictOpt("enabled_backends", help="someone else's"))
    config.register_opts(conf)
    assert conf._opts["enabled_backends"]["opt"].help == "someone else's"


def test_reserved_store_ids_are_refused(tmp_path):
    path = tmp_path / "g.conf"
    path.write_text("[DEFAULT]\nenabled_backends = os_glance_mine:file, fast:file\n")
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=[], default_config_files=[str(path)])
    with pytest.raises(config.StoreConfigError, match="os_glance_mine .*reserved for internal use"):
        config.register_store_opts(conf)


def test_reserved_stores_get_their_groups_and_weight_is_registered(tmp_path):
    conf = make_conf(tmp_path, "[fast]\nweight = 5\nstore_description = Fast disks\n", backends="fast:file")
    assert conf.os_glance_staging_store.filesystem_store_datadir == "/var/lib/glance/os_glance_staging_store"
    assert conf.os_glance_tasks_store.filesystem_store_datadir == "/var/lib/glance/os_glance_tasks_store"
    assert (conf.fast.weight, conf.fast.store_description) == (5, "Fast disks")
    config.register_store_opts(conf)  # twice is harmless


def test_single_store_mode_registers_nothing(tmp_path):
    path = tmp_path / "g.conf"
    path.write_text("[DEFAULT]\n")
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=[], default_config_files=[str(path)])
    config.register_store_opts(conf)
    assert "glance_store" not in conf


def test_store_options_are_glance_stores_own(tmp_path):
    from glance_store._drivers import rbd as gs_rbd
    conf = make_conf(tmp_path, "", backends="ceph:rbd")
    ours = {o.name: o for o in gs_rbd._RBD_OPTS}
    for name, opt in ours.items():
        assert conf._groups["ceph"]._opts[name]["opt"] is opt


def test_glance_store_drivers_derive_the_same_values(tmp_path):
    """glance_store's own drivers, in a fresh interpreter (they register on the global CONF)."""
    conf_file = tmp_path / "glance-api.conf"
    datadir = tmp_path / "fast"
    conf_file.write_text(textwrap.dedent(f"""
        [DEFAULT]
        enabled_backends = fast:file, sw:swift
        [backend_defaults]
        filesystem_store_chunk_size = 4096
        [fast]
        filesystem_store_datadir = {datadir}
        filesystem_thin_provisioning = true
        [sw]
        swift_store_container = imgs
        swift_store_large_object_size = 1024
        """))
    script = textwrap.dedent(f"""
        import json
        from oslo_config import cfg
        import glance_store
        from glance_store import exceptions
        from glance_store._drivers import filesystem
        from glance_store._drivers.swift import store as swift
        conf = cfg.CONF
        conf.register_opts([cfg.DictOpt('enabled_backends')])
        conf(args=[], default_config_files=[{str(conf_file)!r}])
        glance_store.register_store_opts(conf)
        fs = filesystem.Store(conf, backend='fast'); fs.configure_add()
        sw = swift.SingleTenantStore(conf, backend='sw')
        try:
            sw.configure()  # stops at "Missing dependency python_swiftclient", sizes are set by then
        except exceptions.BadStoreConfiguration:
            pass
        print(json.dumps({{
            'fast': {{'data_dir': fs.datadir, 'chunk_size': fs.chunk_size,
                     'thin_provisioning': fs.thin_provisioning}},
            'sw': {{'container': sw.store_conf.swift_store_container,
                   'large_object_size': sw.large_object_size,
                   'large_object_chunk_size': sw.large_object_chunk_size}},
        }}))
        """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    upstream = json.loads(proc.stdout.strip().splitlines()[-1])
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=[], default_config_files=[str(conf_file)])
    config.register_store_opts(conf)
    d = registry.StoreDetails(conf)
    assert {"fast": d.properties("fast"), "sw": d.properties("sw")} == upstream
    assert FileProvider(conf, "fast").properties()["chunk_size"] == 4096
