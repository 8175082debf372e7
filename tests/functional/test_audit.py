"""The caps audit on the real dev cluster: its users audit clean; bad users give the right findings."""

import json
import re
import subprocess
import sys
import uuid

import pytest

from tests.devcluster import DevCluster

SECRET_UUID = str(uuid.uuid4())


def cinder_conf(tmp_path, cluster, user=None, clone=True):
    client = cluster.client("cinder")
    path = tmp_path / f"cinder-{uuid.uuid4().hex[:6]}.conf"
    path.write_text(f"""[DEFAULT]
enabled_backends = lvm, ceph

[lvm]
volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver

[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
rbd_pool = {cluster.cinder_pool}
rbd_user = {user or cluster.cinder_user}
rbd_ceph_conf = {client['conf']}
rbd_secret_uuid = {SECRET_UUID}
enable_clone_optimization = {str(clone).lower()}
""")
    return str(path)


def run_audit(cluster, glance_config, cinder_config, *more):
    proc = subprocess.run(
        [sys.executable, "-m", "cinder_ext.audit", "--glance-config", glance_config,
         "--cinder-config", cinder_config, "--admin-conf", cluster.conf,
         "--admin-keyring", cluster.admin_keyring, *more],
        capture_output=True, text=True, timeout=120)
    assert "Traceback" not in proc.stderr, proc.stderr
    return proc


def keys_of(*keyrings):
    out = []
    for path in keyrings:
        with open(path) as f:
            out += re.findall(r"key\s*=\s*(\S+)", f.read())
    return out


def assert_no_secret(cluster, text):
    secrets = keys_of(cluster.admin_keyring, cluster.client("glance")["keyring"],
                      cluster.client("cinder")["keyring"]) + [SECRET_UUID]
    assert secrets and not [s for s in secrets if s in text]


@pytest.fixture
def ceph_user(ceph_cluster):
    """make(mon, osd) -> a new Ceph user name, removed at teardown."""
    made = []

    def make(mon, osd, mgr=None):
        name = f"audit-{uuid.uuid4().hex[:8]}"
        caps = ["mon", mon, "osd", osd] + (["mgr", mgr] if mgr else [])
        ceph_cluster.admin("ceph", "auth", "get-or-create", f"client.{name}", *caps)
        made.append(name)
        return name
    yield make
    for name in made:
        ceph_cluster.admin("ceph", "auth", "del", f"client.{name}")


def test_the_dev_clusters_users_audit_clean(ceph_cluster, glance_conf, tmp_path):
    glance, cinder = glance_conf(cluster=ceph_cluster), cinder_conf(tmp_path, ceph_cluster)
    table = run_audit(ceph_cluster, glance, cinder)
    print("\n" + table.stdout)
    assert table.returncode == 0, table.stdout + table.stderr
    assert "No findings" in table.stdout
    proc = run_audit(ceph_cluster, glance, cinder, "--json")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert report["findings"] == [] and report["clean"] is True
    assert report["cluster"]["fsid"] == ceph_cluster.fsid
    assert report["cluster"]["require_min_compat_client"] == "mimic"
    entries = {(e["service"], e["section"]): e for e in report["entries"]}
    assert set(entries) == {("glance", "ceph"), ("cinder", "ceph")}  # not lvm, not file/http
    g, c = entries["glance", "ceph"], entries["cinder", "ceph"]
    assert (g["pool"], g["user"]) == (ceph_cluster.glance_pool, f"client.{ceph_cluster.glance_user}")
    assert (c["pool"], c["user"]) == (ceph_cluster.cinder_pool, f"client.{ceph_cluster.cinder_user}")
    # the caps as the cluster holds them (the dev cluster's plan)
    assert g["caps"] == ceph_cluster.state["clients"][ceph_cluster.glance_user]["caps"]
    assert c["caps"] == ceph_cluster.state["clients"][ceph_cluster.cinder_user]["caps"]
    assert {p: n["level"] for p, n in g["needs"].items()} == {
        ceph_cluster.glance_pool: "write", ceph_cluster.cinder_pool: "read"}
    assert {p: n["level"] for p, n in c["needs"].items()} == {
        ceph_cluster.glance_pool: "write", ceph_cluster.cinder_pool: "write"}
    assert_no_secret(ceph_cluster, table.stdout + table.stderr + proc.stdout + proc.stderr)


def test_allow_star_user_as_glance(ceph_cluster, glance_conf, tmp_path, ceph_user):
    star = ceph_user("allow *", "allow *")
    glance = glance_conf(cluster=ceph_cluster, ceph={"rbd_store_user": star})
    proc = run_audit(ceph_cluster, glance, cinder_conf(tmp_path, ceph_cluster), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    mine = [(f["kind"], f["pool"], f["message"]) for f in findings if f["user"] == f"client.{star}"]
    assert [f for f in findings if f["user"] != f"client.{star}"] == []
    messages = " | ".join(m for _, _, m in mine)
    assert "osd 'allow *'" in messages and "mon 'allow *'" in messages
    assert ("excess", ceph_cluster.cinder_pool) in [(k, p) for k, p, _ in mine]  # write, read is enough
    assert all(k == "excess" for k, _, _ in mine)
    # and in the table: non-zero exit, the findings listed
    table = run_audit(ceph_cluster, glance, cinder_conf(tmp_path, ceph_cluster))
    assert table.returncode == 1 and "FINDINGS (" in table.stdout and f"client.{star}" in table.stdout
    assert_no_secret(ceph_cluster, proc.stdout + table.stdout)


def test_cinder_user_with_only_read_on_the_glance_pool(ceph_cluster, glance_conf, tmp_path, ceph_user):
    reader = ceph_user("profile rbd", f"profile rbd pool={ceph_cluster.cinder_pool}, "
                                      f"profile rbd-read-only pool={ceph_cluster.glance_pool}")
    proc = run_audit(ceph_cluster, glance_conf(cluster=ceph_cluster),
                     cinder_conf(tmp_path, ceph_cluster, user=reader), "--json")
    assert proc.returncode == 1, proc.stdout + proc.stderr
    findings = json.loads(proc.stdout)["findings"]
    assert [(f["kind"], f["user"], f["pool"]) for f in findings] == [
        ("missing", f"client.{reader}", ceph_cluster.glance_pool)]
    assert f"cannot write pool {ceph_cluster.glance_pool}" in findings[0]["message"]
    # without the optimization the same user is exactly right
    proc = run_audit(ceph_cluster, glance_conf(cluster=ceph_cluster),
                     cinder_conf(tmp_path, ceph_cluster, user=reader, clone=False), "--json")
    findings = json.loads(proc.stdout)["findings"]
    # ... and then the Glance user's read on the Cinder pool is more than needed
    assert [(f["kind"], f["user"], f["pool"]) for f in findings] == [
        ("excess", f"client.{ceph_cluster.glance_user}", ceph_cluster.cinder_pool)]
    assert proc.returncode == 1


def test_glance_user_with_only_read_on_its_pool_and_none_on_cinders(ceph_cluster, glance_conf, tmp_path,
                                                                     ceph_user):
    reader = ceph_user("profile rbd", f"profile rbd-read-only pool={ceph_cluster.glance_pool}, "
                                      "profile rbd pool=backups")
    proc = run_audit(ceph_cluster, glance_conf(cluster=ceph_cluster, ceph={"rbd_store_user": reader}),
                     cinder_conf(tmp_path, ceph_cluster), "--json")
    assert proc.returncode == 1
    got = sorted((f["kind"], f["pool"]) for f in json.loads(proc.stdout)["findings"])
    assert got == sorted([("excess", "backups"), ("missing", ceph_cluster.cinder_pool),
                          ("missing", ceph_cluster.glance_pool)])
    # an operator who means the backups pool says so
    proc = run_audit(ceph_cluster, glance_conf(cluster=ceph_cluster, ceph={"rbd_store_user": reader}),
                     cinder_conf(tmp_path, ceph_cluster), "--json", "--allow-pool", "backups")
    assert sorted((f["kind"], f["pool"]) for f in json.loads(proc.stdout)["findings"]) == got[1:]


def test_a_user_that_does_not_exist(ceph_cluster, glance_conf, tmp_path):
    proc = run_audit(ceph_cluster, glance_conf(cluster=ceph_cluster, ceph={"rbd_store_user": "nobody-here"}),
                     cinder_conf(tmp_path, ceph_cluster), "--json")
    assert proc.returncode == 1
    assert [f["message"] for f in json.loads(proc.stdout)["findings"]] == [
        "client.nobody-here does not exist in the cluster"]


def test_wrong_admin_keyring_is_one_line_exit_2(ceph_cluster, glance_conf, tmp_path):
    keyring = tmp_path / "wrong.keyring"
    key = subprocess.run(["ceph-authtool", "--gen-print-key"], capture_output=True, text=True,
                         check=True, timeout=30).stdout.strip()
    keyring.write_text(f"[client.admin]\n\tkey = {key}\n")
    proc = subprocess.run(
        [sys.executable, "-m", "cinder_ext.audit", "--glance-config", glance_conf(cluster=ceph_cluster),
         "--cinder-config", cinder_conf(tmp_path, ceph_cluster), "--admin-conf", ceph_cluster.conf,
         "--admin-keyring", str(keyring), "--timeout", "5"],
        capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "cannot connect to Ceph as client.admin" in proc.stderr and key not in proc.stderr


def test_clone_v2_unavailable_on_a_cluster_of_our_own(glance_conf, tmp_path):
    # the session cluster stays on mimic: other tests rely on clone v2
    cluster = DevCluster.start(str(tmp_path / "luminous"))
    try:
        cluster.admin("ceph", "osd", "set-require-min-compat-client", "luminous", "--yes-i-really-mean-it")
        proc = run_audit(cluster, glance_conf(cluster=cluster), cinder_conf(tmp_path, cluster), "--json")
        assert proc.returncode == 1, proc.stdout + proc.stderr
        findings = json.loads(proc.stdout)["findings"]
        assert [f["kind"] for f in findings] == ["cluster"]
        assert "require_min_compat_client is luminous" in findings[0]["message"]
        assert "clone v2 is unavailable" in findings[0]["message"]
    finally:
        cluster.stop()


def test_unreachable_cluster_is_exit_2(glance_conf, tmp_path):
    cinder = tmp_path / "cinder.conf"
    cinder.write_text("[DEFAULT]\nenabled_backends = c\n[c]\nrbd_pool = volumes\nrbd_user = cinder\n")
    ceph_conf = tmp_path / "ceph.conf"
    ceph_conf.write_text("[global]\nmon_host = 127.0.0.1:9\nauth_client_required = none\n")
    # librados itself, not a stand-in: a monitor address where nothing listens
    proc = subprocess.run([sys.executable, "-m", "cinder_ext.audit", "--glance-config", glance_conf(),
                           "--cinder-config", str(cinder), "--admin-conf", str(ceph_conf),
                           "--timeout", "2"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert "cannot connect to Ceph as client.admin" in proc.stderr
