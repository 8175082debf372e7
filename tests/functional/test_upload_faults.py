"""Real faults in the middle of an upload by clone: Ceph daemons, Glance, the location task.

Each test injects one fault, then checks: the upload ended within a bound set by the
configured timeouts (rados_connect_timeout, [glance] request_timeout,
clone_active_timeout), with a clear one-line error or a copy fallback with identical
bytes; and once the service is back and the upload is run again, nothing is left but
what a successful upload leaves (the fixture also checks both pools against their
baseline). Each fault is recorded for the session summary (tests/reliability_summary.py).

Real: the OSD and the monitor killed (SIGKILL) and restarted, on a cluster of this
module's own with a file-backed OSD (a memstore OSD loses its data on restart); Glance
stopped and started again; the location task failing because the snapshot it must read
was removed. Through a proxy (a real Glance cannot answer 5xx or stall on demand):
5xx and timeouts of single calls.

The upload runs in a child process (the real CLI) that a test can pause at a step
boundary (the fault points of cinder_ext.faults): the fault then hits between two
real steps, not at an arbitrary instant.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

import pytest

from cinder_ext import decision
from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import CinderEnv, MiB
from tests.devcluster import DevCluster
from tests.peers import GlancePeer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The CLI, observing cinder_ext.steps: at $PAUSE_AT it creates $PAUSE_DIR/reached and
# waits (bounded) for $PAUSE_DIR/go.
PAUSE_RUNNER = r"""
import os, sys, time
from cinder_ext import cli, steps
def pause(name):
    if name == os.environ.get("PAUSE_AT"):
        d = os.environ["PAUSE_DIR"]
        open(os.path.join(d, "reached"), "w").close()
        deadline = time.monotonic() + 300
        while not os.path.exists(os.path.join(d, "go")) and time.monotonic() < deadline:
            time.sleep(0.05)
steps.observe(pause)
sys.exit(cli.main(sys.argv[1:]))
"""


class Paused:
    """An upload by the CLI in a child process, paused at a step boundary."""

    def __init__(self, tmpdir, conf, volume, image_id, at):
        self.dir = os.path.join(str(tmpdir), f"pause-{os.urandom(3).hex()}")
        os.makedirs(self.dir)
        env = dict(os.environ, PAUSE_AT=at, PAUSE_DIR=self.dir)
        self.proc = subprocess.Popen([sys.executable, "-c", PAUSE_RUNNER, "--config-file", conf,
                                      "upload", volume, image_id], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_reached(self, timeout=120):
        deadline = time.monotonic() + timeout
        while not os.path.exists(os.path.join(self.dir, "reached")):
            if self.proc.poll() is not None:
                raise AssertionError(f"the upload ended before the pause: {self.proc.stderr.read()}")
            assert time.monotonic() < deadline, "the upload never reached the pause point"
            time.sleep(0.05)

    def go(self, timeout=300):
        """Resume; returns (returncode, stdout, stderr, seconds from resume to exit)."""
        t0 = time.monotonic()
        open(os.path.join(self.dir, "go"), "w").close()
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err, time.monotonic() - t0


def _one_line_error(err):
    lines = [line for line in err.splitlines() if line.startswith("cinder-rbd-clone: error:")]
    assert "Traceback" not in err, err
    assert len(lines) == 1, err
    return lines[0]


def _expect_clone_state(env, volume, image_id, before):
    new = env.new_state(before)
    assert new[env.ipool] == {"images": {image_id: [("user", "snap", True)]}, "trash": []}
    assert new[env.vpool] == {"images": {volume: [("trash", f"image-{image_id}", False)]},
                              "trash": []}


def _expect_copy_state(env, volume, image_id, before):
    new = env.new_state(before)
    assert new[env.ipool]["trash"] == [] and new[env.vpool] == {"images": {}, "trash": []}
    assert set(new[env.ipool]["images"]) <= {image_id}
    for snaps in new[env.ipool]["images"].values():
        assert snaps == [("user", "snap", True)]


def _cloned_ok(env, out, volume, sha, image_id, before):
    result = json.loads(out)
    assert result["method"] == "clone", result
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha
    _expect_clone_state(env, volume, image_id, before)
    return result


# -- Glance answering 5xx or not answering (proxy: a real Glance does not do it on demand) --

FAST_GLANCE = "request_timeout = 3\n"


def test_glance_5xx_on_the_location_call_rolls_back_and_copies(cinder_env, glance_proxy, reliability):
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    # mock: Glance answering 503 (an overloaded or restarting API behind a load balancer)
    glance_proxy.intercept = lambda m, p: (503, b"503 Service Unavailable") \
        if m == "POST" and p.endswith("/locations") else None
    t0 = time.monotonic()
    result = env.upload(env.conf(glance_url=glance_proxy.url), vol, image_id)
    took = time.monotonic() - t0
    ok = result["method"] == "copy" and result["reason"] == decision.CLONE_FAILED
    reliability.fault("Glance 503 on add-location (proxy)", ok, took, "copy fallback")
    assert ok, result
    assert "503" in result["detail"]
    assert env.image_sha(image_id) == sha
    _expect_copy_state(env, vol, image_id, before)


def test_glance_not_answering_the_location_call_times_out_and_copies(cinder_env, glance_proxy,
                                                                      reliability):
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()

    # mock: Glance accepting the connection and never answering (a hung API worker);
    # the request never reaches the real Glance
    def stall(method, path):
        if method == "POST" and path.endswith("/locations"):
            time.sleep(5)
            return 504, b"stalled"
        return None
    glance_proxy.intercept = stall
    t0 = time.monotonic()
    result = env.upload(env.conf(glance_url=glance_proxy.url, glance_extra=FAST_GLANCE), vol, image_id)
    took = time.monotonic() - t0
    ok = result["method"] == "copy" and "did not answer" in result["detail"]
    reliability.fault("Glance silent on add-location (proxy)", ok, took, "timeout, copy fallback")
    assert ok, result
    assert result["seconds"]["register"] < 3 + 1
    assert env.image_sha(image_id) == sha
    _expect_copy_state(env, vol, image_id, before)


def test_location_call_answered_too_late_but_registered_keeps_the_clone(cinder_env, glance_proxy,
                                                                        reliability):
    """The request reached Glance, which registered it; the answer came after our timeout.

    Found by this test: the upload used to judge the image before Glance's task ended,
    and either failed with the clone kept, or rolled back a clone Glance was registering.
    """
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()

    def late(status, body):  # mock: the answer lost on the way back (forwarded first)
        time.sleep(5)
        return status, body
    glance_proxy.rewrite[f"/v2/images/{image_id}/locations"] = late
    t0 = time.monotonic()
    result = env.upload(env.conf(glance_url=glance_proxy.url, glance_extra=FAST_GLANCE), vol, image_id)
    took = time.monotonic() - t0
    ok = result["method"] == "clone"
    reliability.fault("Glance answer lost after registering (proxy)", ok, took, "clone kept, active")
    assert ok, result
    assert env.image_sha(image_id) == sha
    _expect_clone_state(env, vol, image_id, before)


def test_glance_5xx_while_polling_for_active_is_retried(cinder_env, glance_proxy, reliability):
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    state = {"registered": False, "failed": 0}

    # mock: three 502s from the load balancer while Glance restarts, once the location
    # was requested (the request itself reaches the real Glance)
    def flaky(method, path):
        if method == "POST" and path.endswith("/locations"):
            state["registered"] = True
        elif (method == "GET" and path == f"/v2/images/{image_id}" and state["registered"]
              and state["failed"] < 3):
            state["failed"] += 1
            return 502, b"502 Bad Gateway"
        return None
    glance_proxy.intercept = flaky
    t0 = time.monotonic()
    result = env.upload(env.conf(glance_url=glance_proxy.url), vol, image_id)
    took = time.monotonic() - t0
    ok = result["method"] == "clone" and state["failed"] == 3
    reliability.fault("Glance 502 x3 while polling (proxy)", ok, took, "retried, clone active")
    assert ok, (result, state)
    assert env.image_sha(image_id) == sha
    _expect_clone_state(env, vol, image_id, before)


def test_glance_5xx_on_the_copy_is_one_clear_error(cinder_env, glance_proxy, reliability):
    env = cinder_env
    vol = env.volume(16 * MiB)
    image_id, before = env.image(), env.pool_state()
    # mock: Glance failing the data upload with a 500
    glance_proxy.intercept = lambda m, p: (500, b'{"message": "Internal Server Error"}') \
        if m == "PUT" and p.endswith("/file") else None
    t0 = time.monotonic()
    proc = env.cli("--config-file", env.conf(enable=False, glance_url=glance_proxy.url),
                   "upload", vol, image_id)
    took = time.monotonic() - t0
    line = _one_line_error(proc.stderr) if proc.returncode == 1 else ""
    ok = proc.returncode == 1 and "Glance answered 500" in line and proc.stdout == ""
    reliability.fault("Glance 500 on image data (proxy)", ok, took, "one-line error")
    assert ok, proc.stderr
    assert env.get_image(image_id)["status"] == "queued"
    assert env.new_state(before) == {env.vpool: {"images": {}, "trash": []},
                                     env.ipool: {"images": {}, "trash": []}}


def test_glance_5xx_on_the_stores_detail_copies(cinder_env, glance_proxy, reliability):
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    # mock: the stores-info endpoint failing
    glance_proxy.intercept = lambda m, p: (500, b"oops") if p.startswith("/v2/info/stores") else None
    t0 = time.monotonic()
    result = env.upload(env.conf(glance_url=glance_proxy.url), vol, image_id)
    ok = result["method"] == "copy" and result["reason"] == decision.STORES_UNAVAILABLE
    reliability.fault("Glance 500 on stores detail (proxy)", ok, time.monotonic() - t0, "copy fallback")
    assert ok, result
    assert env.image_sha(image_id) == sha
    _expect_copy_state(env, vol, image_id, before)


# -- the location task failing, for real ---------------------------------------------------

def test_location_task_failing_on_a_vanished_snapshot_rolls_back_and_copies(cinder_env, tmp_path,
                                                                            reliability):
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    up = Paused(tmp_path, env.conf(), vol, image_id, at="clone.image_snapshot_protected")
    up.wait_reached()
    # real: the snapshot Glance's task must open is removed before it is registered
    env.cluster.admin("rbd", "snap", "unprotect", f"{env.ipool}/{image_id}@snap")
    env.cluster.admin("rbd", "snap", "rm", f"{env.ipool}/{image_id}@snap")
    code, out, err, took = up.go()
    result = json.loads(out) if code == 0 else {}
    ok = code == 0 and result["method"] == "copy" and "refused location" in result["detail"]
    reliability.fault("location task failing: snapshot removed (real)", ok, took, "copy fallback")
    assert ok, (code, out, err)
    assert env.image_sha(image_id) == sha
    _expect_copy_state(env, vol, image_id, before)


# -- Glance stopped between the clone and its registration, for real --------------------------

def _restart_peer(peer):
    """Start the stopped peer again: same port, same database, gunicorn as glance-peer runs it
    (tools/peers/glance-peer start; it refuses a directory in use, so the command is here)."""
    with open(os.path.join(peer.dir, "peer.json")) as f:
        state = json.load(f)
    d = peer.dir
    cmd = [os.path.join(state["venv"], "bin", "gunicorn"), "--config", os.path.join(d, "gunicorn.conf.py"),
           "--bind", f"127.0.0.1:{state['port']}", "--workers", "1", "--worker-class", "gthread",
           "--threads", "8", "--timeout", "600", "--graceful-timeout", "10",
           "--pythonpath", os.path.join(ROOT, "tools", "peers"), "--no-control-socket",
           "--error-logfile", os.path.join(d, "gunicorn.log"), "--pid", os.path.join(d, "gunicorn.pid"),
           "glance.wsgi.api:application"]
    with open(os.path.join(d, "gunicorn.out"), "a") as out:
        proc = subprocess.Popen(cmd, env=dict(os.environ, OS_GLANCE_CONFIG_DIR=d), cwd=d,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                start_new_session=True)
    state_file = os.path.join(peer.dir, "peer.json")
    with open(state_file) as f:
        state = json.load(f)
    state["pid"] = proc.pid  # so that the session's glance-peer stop stops this one
    with open(state_file, "w") as f:
        json.dump(state, f)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(peer.url + "/versions", timeout=5):
                return
        except urllib.error.HTTPError as e:
            if e.code in (200, 300):
                return
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError("the Glance peer did not come back")


@pytest.fixture(scope="module")
def stoppable_glance(glance_peers):
    return glance_peers.start()


def _peer_group(peer):
    with open(os.path.join(peer.dir, "peer.json")) as f:
        return json.load(f)["pid"]  # gunicorn runs in a session (and group) of its own


@pytest.mark.parametrize("how", ["stopped", "frozen"])
def test_glance_down_before_registration_then_retry_finishes(ceph_cluster, stoppable_glance,
                                                             tmp_path, reliability, how):
    """stopped: gunicorn terminated (connections refused); frozen: SIGSTOP (connections
    accepted, never answered: Glance timing out), then SIGCONT, and Glance goes on with
    whatever it had received."""
    peer = stoppable_glance
    env = CinderEnv(ceph_cluster, peer.url, tmp_path)
    env.baseline = env.pool_state()
    try:
        conf = env.conf(glance_extra=FAST_GLANCE)
        vol = env.volume(16 * MiB)
        sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
        up = Paused(tmp_path, conf, vol, image_id, at="clone.image_snapshot_protected")
        up.wait_reached()
        if how == "stopped":
            peer.stop()  # real: gunicorn's process group terminated
        else:
            os.killpg(_peer_group(peer), signal.SIGSTOP)  # real: a hung Glance
        try:
            code, out, err, took = up.go()
        finally:
            if how == "stopped":
                _restart_peer(peer)
            else:
                os.killpg(_peer_group(peer), signal.SIGCONT)
        line = _one_line_error(err) if code == 1 else ""
        expected = "cannot reach Glance" if how == "stopped" else "did not answer"
        # each of the (at most 4) Glance calls after the fault is bounded by request_timeout
        bounded = took < 4 * 3 + 10
        # the clone is kept (Glance might have been reached): the retry finishes it
        retry = env.cli("--config-file", conf, "upload", vol, image_id)
        ok = (code == 1 and expected in line and bounded and retry.returncode == 0)
        reliability.fault(f"Glance {how} before registration (real)", ok, took,
                          "one-line error, retry finished")
        print(f"Glance {how}: exit {code} after {took:.1f} s: {line}; retry: {retry.stdout[-300:]}")
        assert code == 1 and expected in line, (code, out, err)
        assert bounded, took
        assert retry.returncode == 0, retry.stderr
        result = _cloned_ok(env, retry.stdout, vol, sha, image_id, before)
        if how == "stopped":  # the request never reached Glance: the retry redoes the clone
            assert f"{env.ipool}/{image_id}" in result["recovered"]
    finally:
        env.cleanup()
    leaked = env.pool_state() != env.baseline
    reliability.pool_check(leaked)
    assert not leaked


# -- Ceph daemons stopped in the middle of a clone, for real ------------------------------------

CEPH_TIMEOUT = 5  # rados_connect_timeout: also every OSD and monitor operation's bound


@pytest.fixture(scope="module")
def own_cluster(tmp_path_factory, glance_peers):
    """A cluster of this module's own (file-backed OSD: it keeps its data over a restart)
    and an upstream Glance 33 on it."""
    base = tmp_path_factory.mktemp("faults")
    cluster = DevCluster.start(str(base / "cluster"), "--osd-backend", "bluestore", "--osd-size", "3G",
                               "--watch-timeout", "10")
    try:
        # Glance's own Ceph connections bounded too, so that it fails rather than hangs
        peer = GlancePeer.start(str(base / "glance"), cluster.dir,
                                settings=(f"ceph.rados_connect_timeout={CEPH_TIMEOUT}",))
        try:
            yield cluster, peer
        finally:
            peer.stop()
    finally:
        cluster.stop()


def _kill_daemon(cluster, name):
    with open(os.path.join(cluster.dir, "run", f"{name}.pid")) as f:
        pid = int(f.read())
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)


def _start_daemon(cluster, kind, ident):
    subprocess.run([f"ceph-{kind}", "--conf", cluster.conf, "-i", ident], check=True,
                   capture_output=True, timeout=60)
    # back: the OSD up in the monitor's map and serving reads (no mgr here: no PG stats)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            dump = json.loads(cluster.admin("ceph", "osd", "dump", "--format", "json", timeout=10))
            if all(o["up"] for o in dump["osds"]):
                cluster.admin("rbd", "ls", "-p", cluster.cinder_pool, timeout=10)
                cluster.admin("rbd", "ls", "-p", cluster.glance_pool, timeout=10)
                return
        except (subprocess.SubprocessError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    raise AssertionError(f"{kind}.{ident} did not come back healthy")


@pytest.mark.parametrize("daemon, at", [
    ("osd.0", "clone.volume_snapshot_created"),  # the clone itself needs the OSD
    ("mon.a", "clone.recovered"),                # the volume snapshot needs a snap id from the monitor
])
def test_ceph_daemon_killed_mid_clone_then_retry_finishes(own_cluster, tmp_path, reliability, daemon, at):
    cluster, peer = own_cluster
    env = CinderEnv(cluster, peer.url, tmp_path)
    env.baseline = env.pool_state()
    kind, ident = daemon.split(".")
    try:
        conf = env.conf(extra=f"rados_connect_timeout = {CEPH_TIMEOUT}\n", glance_extra=FAST_GLANCE)
        vol = env.volume(16 * MiB)
        sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
        up = Paused(tmp_path, conf, vol, image_id, at=at)
        up.wait_reached()
        _kill_daemon(cluster, daemon)  # real: SIGKILL, as a crashed host
        try:
            code, out, err, took = up.go()
        finally:
            _start_daemon(cluster, kind, ident)
        line = _one_line_error(err) if code == 1 else ""
        print(f"{daemon} killed at {at}: exit {code} after {took:.1f} s: {line or out}")
        # each Ceph call is bounded by CEPH_TIMEOUT, each Glance call by request_timeout
        bounded = took < 60  # observed 13-20 s: a few Ceph calls of 5 s, Glance calls of 3 s
        failed_clearly = code == 1 and line != ""
        copied = code == 0 and json.loads(out)["method"] == "copy"
        retry_ok = True
        if not copied:
            # the failed upload could not release its locks with the daemon down: its
            # lease (its watch) ends osd_client_watch_timeout later; until then a retry
            # finds an upload in progress, as with any paused holder
            env.wait_for_leases_to_end(vol, image_id)
            retry = env.cli("--config-file", conf, "upload", vol, image_id)
            retry_ok = retry.returncode == 0
        reliability.fault(f"{daemon} killed at {at} (real)", bounded and (failed_clearly or copied)
                          and retry_ok, took, "copy fallback" if copied else "one-line error, retry finished")
        assert bounded, took
        assert failed_clearly or copied, (code, out, err)
        if copied:
            assert env.image_sha(image_id) == sha
            _expect_copy_state(env, vol, image_id, before)
        else:
            assert retry_ok, retry.stderr
            _cloned_ok(env, retry.stdout, vol, sha, image_id, before)
    finally:
        env.cleanup()
    leaked = env.pool_state() != env.baseline
    reliability.pool_check(leaked)
    assert not leaked
