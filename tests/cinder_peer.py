"""Fixtures for tests of cinder_ext.driver inside real Cinder (import them into the test module).

cinder_peer(version)
    Builds <repo>/.peers/cinder<major> for that release (26.3.0, 27.0.0, 28.0.0, 29.0.0)
    with tools/peers/setup-cinder-peer (idempotent) and returns its python. A failed
    build fails the test, never skips it.
cinder29 (session)
    cinder_peer("29.0.0").
cinder_glance (session; needs glance_peers)
    Upstream Glance 33 as Cinder's privileged ``[glance]`` user sees it: the peer's
    identity filter gives every request roles ``admin,service`` (devstack's cinder
    service user; Cinder here runs ``auth_strategy = noauth`` and sends no identity),
    which the stores detail (admin or service) and an rbd location (service) need.
    rbd_thin_provisioning on, so upstream's copy of a 1 GiB volume that is mostly
    holes does not fill the memstore OSD with zeros.
cinder_glance_without_service_role (session; needs glance_peers)
    The same Glance when Cinder's ``[glance]`` user lacks the service role: Glance
    answers 403 to the rbd location (a real refusal, not a mock).
run_cinder (function)
    ``run_cinder(glance_url, enable_clone_optimization, size_gb=1, mode="upload",
    extra_conf="", delete_order="volume-first", delete_with="driver", purge_timeout=60)``
    (delete_with="upstream": upstream RBDDriver.delete_volume instead of ours) writes a real cinder.conf for the dev cluster (None: the option
    is left out of the backend section; extra_conf is appended to that section),
    runs tests/cinder_peer_run.py in the cinder29 venv (``cinder=PYTHON``: another
    release's, from cinder_peer) and returns ``CinderRun``
    (``.result`` dict, ``.log`` text, ``.conf`` text).
"""

import json
import os
import subprocess

import pytest

from tests import crash_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PEERS_DIR = os.environ.get("PEERS_DIR", os.path.join(ROOT, ".peers"))
SETUP = os.path.join(ROOT, "tools", "peers", "setup-cinder-peer")
RUNNER = os.path.join(ROOT, "tests", "cinder_peer_run.py")
DAY2_RUNNER = os.path.join(ROOT, "tests", "cinder_peer_day2.py")
BACKEND = "ceph"
THIN = "ceph.rbd_thin_provisioning=true"


def _last_line(text, default):
    lines = [line for line in (text or "").strip().splitlines() if line.strip()]
    return lines[-1] if lines else default


def _crash_report(proc, state, log):
    """For a run killed by a signal (a native crash), or one that failed outside its
    run (no traceback.txt): the Python stacks faulthandler wrote and the log's last
    lines, in the failure itself (CI keeps no tmp_path)."""
    tail = "\n".join(log.splitlines()[-30:])
    if proc.returncode > 0:
        if (state / "traceback.txt").exists():
            return ""
        return f"\n--- cinder-volume.log, last lines ---\n{tail}"
    crash = state / "traceback.txt.crash"
    # the crashing thread's frames and where each other thread was (CI's log keeps the
    # head and tail of a long output: 20 idle tpool workers used to push the rest out)
    stacks = ("\n".join(crash_report.summary(crash.read_text(errors="replace")))
              if crash.exists() else "(no stacks written)")
    return f"\n--- stacks at the crash ---\n{stacks}\n--- cinder-volume.log, last lines ---\n{tail}"


def cinder_peer(version):
    """The python of a Cinder release's venv, built by tools/peers/setup-cinder-peer
    (idempotent). A failed build fails the test, never skips it."""
    try:
        proc = subprocess.run([SETUP, version], capture_output=True, text=True, timeout=1800)
    except subprocess.TimeoutExpired:
        pytest.fail(f"tools/peers/setup-cinder-peer {version} took over 1800 s", pytrace=False)
    if proc.returncode != 0:
        pytest.fail(f"Cinder {version} venv could not be built: "
                    f"{_last_line(proc.stderr, f'exit {proc.returncode}')}", pytrace=False)
    return os.path.join(PEERS_DIR, f"cinder{version.split('.')[0]}", "bin", "python")


@pytest.fixture(scope="session")
def cinder29():
    return cinder_peer("29.0.0")


@pytest.fixture(scope="session")
def cinder_glance(glance_peers):
    return glance_peers.start(default_roles="admin,service", settings=(THIN,))


@pytest.fixture(scope="session")
def cinder_glance_without_service_role(glance_peers):
    return glance_peers.start(default_roles="admin", settings=(THIN,))


def cinder_conf(cluster, glance_url, state_dir, enable_clone_optimization):
    """A cinder.conf as an operator writes it for this backend (doc/source/install/cinder-driver.rst)."""
    client = cluster.client("cinder")
    return f"""\
[DEFAULT]
enabled_backends = {BACKEND}
glance_api_servers = {glance_url}
# no Keystone in tests: the Glance peer's identity filter stands in for it
auth_strategy = noauth
state_path = {state_dir}
image_conversion_dir = {state_dir}/conversion
log_file = {state_dir}/cinder-volume.log
debug = false

[database]
connection = sqlite:///{state_dir}/cinder.sqlite

[oslo_concurrency]
lock_path = {state_dir}/locks

[{BACKEND}]
volume_driver = cinder_ext.driver.RBDCloneUploadDriver
volume_backend_name = {BACKEND}
rbd_pool = {cluster.cinder_pool}
rbd_user = {cluster.cinder_user}
rbd_ceph_conf = {client["conf"]}
""" + ("" if enable_clone_optimization is None else
       f"enable_clone_optimization = {'true' if enable_clone_optimization else 'false'}\n")


class CinderRun:
    def __init__(self, result, log, conf):
        self.result, self.log, self.conf = result, log, conf

    def log_lines(self, needle):
        return [line for line in self.log.splitlines() if needle in line]


@pytest.fixture
def run_cinder(request, ceph_cluster, tmp_path):
    counter = iter(range(100))

    def run(glance_url, enable_clone_optimization, size_gb=1, mode="upload", extra_conf="",
            delete_order="volume-first", delete_with="driver", purge_timeout=60,
            runner=RUNNER, spec_extra=None, cinder=None):
        state = tmp_path / f"cinder-{next(counter)}"
        (state / "locks").mkdir(parents=True)
        conf_text = cinder_conf(ceph_cluster, glance_url, str(state), enable_clone_optimization)
        conf_text += extra_conf
        (state / "cinder.conf").write_text(conf_text)
        spec = {"config_file": str(state / "cinder.conf"), "backend": BACKEND,
                "keyring": ceph_cluster.client("cinder")["keyring"],
                "project_id": "peer-admin", "size_gb": size_gb,
                "cinder_pool": ceph_cluster.cinder_pool, "glance_pool": ceph_cluster.glance_pool,
                "traceback_file": str(state / "traceback.txt"), "mode": mode,
                "delete_order": delete_order, "delete_with": delete_with,
                "purge_timeout": purge_timeout, **(spec_extra or {})}
        (state / "spec.json").write_text(json.dumps(spec))
        env = dict(os.environ, PYTHONWARNINGS="ignore")
        try:
            # cinder29 only when asked for: a release's own run needs no other venv
            python = cinder or request.getfixturevalue("cinder29")
            proc = subprocess.run([python, runner, str(state / "spec.json")],
                                  capture_output=True,
                                  text=True, timeout=900, cwd=str(state), env=env)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the Cinder run did not finish in 900 s (state in {state})", pytrace=False)
        log_path = state / "cinder-volume.log"
        log = log_path.read_text(errors="replace") if log_path.exists() else ""
        if proc.returncode != 0:
            pytest.fail(f"{_last_line(proc.stderr, f'exit {proc.returncode}')} "
                        f"(log and traceback in {state})" + _crash_report(proc, state, log),
                        pytrace=False)
        return CinderRun(json.loads(proc.stdout), log, conf_text)
    return run
