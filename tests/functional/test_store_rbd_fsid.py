"""The RBD provider against a real cluster: fsid read as the store's user, cached, refreshed.

Faults are real: a stopped monitor, a wrong key, an unknown user, a missing
ceph.conf. Tests that stop the monitor use a cluster of their own, so the
session cluster stays healthy for everyone else.
"""

import logging
import os
import signal
import subprocess
import time

import pytest
from oslo_config import cfg

from glance_store_ext import config, registry
from glance_store_ext.cluster_fsid import ClusterFsid
from tests.devcluster import DevCluster

CALL_BUDGET = 0.1  # a properties() call while the cluster is unreachable


def store_conf(tmp_path, cluster, **overrides):
    client = cluster.client("glance")
    values = {"rbd_store_pool": cluster.glance_pool, "rbd_store_user": cluster.glance_user,
              "rbd_store_ceph_conf": client["conf"], "rbd_store_chunk_size": "8",
              "rados_connect_timeout": "2"}
    values.update(overrides)
    path = tmp_path / "glance-api.conf"
    path.write_text("[DEFAULT]\nenabled_backends = ceph:rbd, fast:file\n[glance_store]\n"
                    "default_backend = ceph\n[ceph]\n"
                    + "".join(f"{k} = {v}\n" for k, v in values.items()))
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    conf(args=[], default_config_files=[str(path)])
    config.register_store_opts(conf)
    return conf


@pytest.fixture
def open_details():
    made = []

    def factory(conf, **rbd_args):
        d = registry.StoreDetails(conf, provider_args={"rbd": rbd_args})
        made.append(d)
        return d
    yield factory
    for d in made:
        d.close()


def fsid_logs(caplog):
    return [r for r in caplog.records if r.name.startswith("glance_store_ext")]


def assert_no_secret(records, cluster, *more):
    client = cluster.client("glance")
    with open(client["keyring"]) as f:
        key = f.read().split("key = ")[1].split()[0]
    secrets = [client["keyring"], client["conf"], cluster.conf, cluster.admin_keyring, key,
               os.path.dirname(client["conf"]), *more]
    for record in records:
        text = record.getMessage()
        for secret in secrets:
            assert secret not in text, f"log line leaks a secret: {text!r}"


def wait_for(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    pytest.fail(f"timed out after {timeout}s waiting for {what}", pytrace=False)


# -- healthy session cluster -------------------------------------------------

def test_fsid_is_the_clusters_and_user_is_the_stores(tmp_path, ceph_cluster, open_details):
    expected = ceph_cluster.admin("ceph", "fsid").strip()
    d = open_details(store_conf(tmp_path, ceph_cluster))
    assert d.properties("ceph") == {"chunk_size": 8 * 1024 * 1024, "pool": ceph_cluster.glance_pool,
                                    "thin_provisioning": False, "fsid": expected,
                                    "user": ceph_cluster.glance_user}
    assert expected == ceph_cluster.fsid


def test_no_rados_connection_per_call(tmp_path, ceph_cluster, open_details):
    d = open_details(store_conf(tmp_path, ceph_cluster), refresh_interval=3600)
    assert d.properties("ceph")["fsid"] == ceph_cluster.fsid
    reader = d._providers["ceph"].fsid_reader()
    reads = reader.reads
    assert reads == 1
    for _ in range(2000):
        d.properties("ceph")
    assert reader.reads == reads


def test_warm_starts_the_read_before_the_first_request(tmp_path, ceph_cluster, open_details):
    d = open_details(store_conf(tmp_path, ceph_cluster), cold_wait=0)
    assert d.warm() == ["ceph", "fast"]
    reader = d._providers["ceph"].fsid_reader()
    wait_for(lambda: reader.reads == 1, 5, "the first background read")
    # cold_wait 0: the call itself never waited, the fsid was already there
    assert d.properties("ceph")["fsid"] == ceph_cluster.fsid


def test_background_refresh_reads_again(tmp_path, ceph_cluster, open_details):
    d = open_details(store_conf(tmp_path, ceph_cluster), refresh_interval=0.2)
    d.properties("ceph")
    reader = d._providers["ceph"].fsid_reader()
    wait_for(lambda: reader.reads >= 3, 5, "two background refreshes")
    assert d.properties("ceph")["fsid"] == ceph_cluster.fsid


@pytest.fixture
def wrong_key_conf(tmp_path, ceph_cluster):
    """A copy of the glance client's ceph.conf whose keyring holds a valid-looking but wrong key."""
    client = ceph_cluster.client("glance")
    key = subprocess.run(["ceph-authtool", "--gen-print-key"], capture_output=True, text=True,
                         check=True).stdout.strip()
    keyring = tmp_path / "wrong.keyring"
    keyring.write_text(f"[client.{ceph_cluster.glance_user}]\n\tkey = {key}\n")
    with open(client["conf"]) as f:
        text = f.read().replace(client["keyring"], str(keyring))
    conf_path = tmp_path / "wrong-key.conf"
    conf_path.write_text(text)
    return str(conf_path), str(keyring), key


def test_wrong_keyring_gives_null_fsid_and_one_warning(tmp_path, ceph_cluster, open_details,
                                                       wrong_key_conf, caplog):
    conf_path, keyring, key = wrong_key_conf
    d = open_details(store_conf(tmp_path, ceph_cluster, rbd_store_ceph_conf=conf_path),
                     retry_interval=0.1)
    with caplog.at_level(logging.INFO, logger="glance_store_ext"):
        started = time.monotonic()
        assert d.properties("ceph")["fsid"] is None
        assert time.monotonic() - started < 2.5
        reader = d._providers["ceph"].fsid_reader()
        wait_for(lambda: reader.reads >= 4, 10, "several failed reads")
        assert d.properties("ceph")["fsid"] is None
    warnings = [r.getMessage() for r in fsid_logs(caplog) if r.levelno >= logging.WARNING]
    assert warnings == [f"store 'ceph': cannot read the Ceph cluster fsid: authentication as "
                        f"client.{ceph_cluster.glance_user} was rejected (wrong key in its keyring?); "
                        "retrying every 0.1s"]
    assert_no_secret(fsid_logs(caplog), ceph_cluster, conf_path, keyring, key)


def test_unknown_user_gives_null_fsid_and_a_warning_naming_it(tmp_path, ceph_cluster, open_details, caplog):
    d = open_details(store_conf(tmp_path, ceph_cluster, rbd_store_user="nobody"))
    with caplog.at_level(logging.WARNING, logger="glance_store_ext"):
        props = d.properties("ceph")
    assert (props["fsid"], props["user"]) == (None, "nobody")
    [warning] = [r.getMessage() for r in fsid_logs(caplog)]
    assert "store 'ceph'" in warning and "no key for client.nobody" in warning
    assert_no_secret(fsid_logs(caplog), ceph_cluster)


def test_missing_ceph_conf_gives_null_fsid_and_a_warning(tmp_path, ceph_cluster, open_details, caplog):
    missing = str(tmp_path / "secret-dir" / "ceph.conf")
    d = open_details(store_conf(tmp_path, ceph_cluster, rbd_store_ceph_conf=missing))
    with caplog.at_level(logging.WARNING, logger="glance_store_ext"):
        assert d.properties("ceph")["fsid"] is None
    [warning] = [r.getMessage() for r in fsid_logs(caplog)]
    assert "store 'ceph'" in warning and "rbd_store_ceph_conf cannot be read" in warning
    assert_no_secret(fsid_logs(caplog), ceph_cluster, missing, "secret-dir")


def test_fixing_the_keyring_by_reload_brings_the_fsid_back(tmp_path, ceph_cluster, open_details,
                                                          wrong_key_conf):
    conf = store_conf(tmp_path, ceph_cluster, rbd_store_ceph_conf=wrong_key_conf[0])
    d = open_details(conf)
    assert d.properties("ceph")["fsid"] is None
    conf.set_override("rbd_store_ceph_conf", ceph_cluster.client("glance")["conf"], group="ceph")
    assert d.properties("ceph")["fsid"] == ceph_cluster.fsid  # a new reader, cold wait once


def test_a_bad_key_after_a_good_read_drops_the_fsid(tmp_path, ceph_cluster, open_details, wrong_key_conf):
    conf = store_conf(tmp_path, ceph_cluster)
    d = open_details(conf)
    assert d.properties("ceph")["fsid"] == ceph_cluster.fsid
    conf.set_override("rbd_store_ceph_conf", wrong_key_conf[0], group="ceph")
    assert d.properties("ceph")["fsid"] is None


# -- outages: a cluster of our own -------------------------------------------

class Monitor:
    def __init__(self, cluster):
        self.cluster = cluster
        self.pidfile = os.path.join(cluster.dir, "run", "mon.a.pid")

    def pid(self):
        try:
            with open(self.pidfile) as f:
                pid = int(f.read().strip())
            os.kill(pid, 0)
            return pid
        except (OSError, ValueError):
            return None

    def stop(self):
        pid = self.pid()
        if pid is None:
            return
        os.kill(pid, signal.SIGTERM)
        wait_for(lambda: self.pid() is None, 30, "ceph-mon to exit")

    def start(self):
        if self.pid() is None:
            subprocess.run(["ceph-mon", "--conf", self.cluster.conf, "-i", "a"], check=True,
                           capture_output=True, timeout=60)
        wait_for(lambda: subprocess.run(
            ["ceph", "--conf", self.cluster.conf, "--keyring", self.cluster.admin_keyring,
             "--connect-timeout", "5", "quorum_status"], capture_output=True, timeout=30).returncode == 0,
            60, "the monitor's quorum")


@pytest.fixture(scope="module")
def own_cluster():
    cluster = DevCluster.start(None, "--osd-size", "512M")
    try:
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def monitor(own_cluster):
    mon = Monitor(own_cluster)
    try:
        yield mon
    finally:
        mon.start()  # whatever happened, the next test finds a healthy cluster


def test_outage_serves_the_cached_fsid_fast_and_recovers(tmp_path, own_cluster, monitor, open_details,
                                                         caplog):
    d = open_details(store_conf(tmp_path, own_cluster), refresh_interval=0.3, retry_interval=0.3)
    assert d.properties("ceph")["fsid"] == own_cluster.fsid
    reader = d._providers["ceph"].fsid_reader()
    with caplog.at_level(logging.INFO, logger="glance_store_ext"):
        monitor.stop()
        before = reader.reads
        # two failed reads at least (each blocks the refresher for the 2 s bound)
        deadline = time.monotonic() + 15
        slowest = 0.0
        while reader.reads < before + 2 or reader._failure is None:
            started = time.monotonic()
            props = d.properties("ceph")
            slowest = max(slowest, time.monotonic() - started)
            assert props["fsid"] == own_cluster.fsid
            assert time.monotonic() < deadline, "the refresher did not notice the outage"
            time.sleep(0.01)
        assert slowest < CALL_BUDGET, f"a call took {slowest * 1000:.0f} ms during the outage"
        outage = [r.getMessage() for r in fsid_logs(caplog) if r.levelno >= logging.WARNING]
        assert outage == ["store 'ceph': cannot read the Ceph cluster fsid: the cluster did not answer "
                          "within 2s (monitors down or unreachable), reporting the last fsid read; "
                          "retrying every 0.3s"]

        monitor.start()
        wait_for(lambda: reader._failure is None, 20, "the fsid to be read again")
    assert d.properties("ceph")["fsid"] == own_cluster.fsid
    assert any(r.levelno == logging.INFO and "fsid read again" in r.getMessage() for r in fsid_logs(caplog))
    assert len([r for r in fsid_logs(caplog) if r.levelno >= logging.WARNING]) == 1
    assert_no_secret(fsid_logs(caplog), own_cluster)


def test_cold_start_with_the_monitor_stopped(tmp_path, own_cluster, monitor, open_details, caplog):
    monitor.stop()
    d = open_details(store_conf(tmp_path, own_cluster, rados_connect_timeout="2"), retry_interval=0.3)
    with caplog.at_level(logging.WARNING, logger="glance_store_ext"):
        started = time.monotonic()
        props = d.properties("ceph")
        first = time.monotonic() - started
        assert props["fsid"] is None and props["pool"] == own_cluster.glance_pool
        assert first < 2 + 0.5, f"the cold call took {first:.2f}s, bound 2s"
        started = time.monotonic()
        assert d.properties("ceph")["fsid"] is None
        assert time.monotonic() - started < CALL_BUDGET  # only the very first call waits
    # after the monitor returns, the fsid comes back without a restart
    monitor.start()
    wait_for(lambda: d.properties("ceph")["fsid"] == own_cluster.fsid, 20, "the fsid after the outage")


def test_cold_wait_without_a_connect_timeout_is_bounded(tmp_path, own_cluster, monitor, open_details):
    # rados_connect_timeout -1 (glance_store's default): librados alone would wait 300 s
    monitor.stop()
    d = open_details(store_conf(tmp_path, own_cluster, rados_connect_timeout="-1"))
    started = time.monotonic()
    assert d.properties("ceph")["fsid"] is None
    assert time.monotonic() - started < 5 + 0.5


def test_unreadable_conf_gives_none_and_one_warning(tmp_path, caplog):
    # librados reading a ceph.conf that is not there: a real fault, no cluster needed
    def reader(**kw):
        return ClusterFsid("ceph", str(tmp_path / "hidden" / "ceph.conf"), "glance", **kw)

    with caplog.at_level(logging.DEBUG, logger="glance_store_ext"):
        r = reader(retry_interval=0.02, bound=2)
        assert r.get() is None
        deadline = time.monotonic() + 5
        while r.reads < 10 and time.monotonic() < deadline:
            assert r.get() is None
            time.sleep(0.01)
    r.close()
    assert r.reads >= 10
    ours = [rec for rec in caplog.records if rec.name.startswith("glance_store_ext")]
    warnings = [rec.getMessage() for rec in ours if rec.levelno == logging.WARNING]
    assert warnings == ["store 'ceph': cannot read the Ceph cluster fsid: the file named by "
                        "rbd_store_ceph_conf cannot be read (ObjectNotFound); retrying every 0.02s"]
    for rec in ours:
        assert "hidden" not in rec.getMessage()
