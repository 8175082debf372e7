"""glance-info-api deployed beside Glance as the install guide says (issue 17;
doc/source/install/glance-info-api.rst).

It reads the operator's glance-api.conf unmodified, yet listens on its own port
and logs to its own place; every store's fsid is read before the first request;
the gunicorn sample in etc/ serves it.
"""

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request

from tests.info_api import descendants, free_port, glance_conf_text, listeners

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
GLANCE_PORT, OUR_PORT = 9292, 9293


def _wait_listening(proc, port, log, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"exited {proc.returncode}: {open(log).read()[-3000:]}"
        if listeners(port) & ({proc.pid} | descendants(proc.pid)):
            return
        time.sleep(0.1)
    raise AssertionError(f"not listening on {port} after {timeout}s: {open(log).read()[-3000:]}")


def _stop(proc):
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


def _get(url, roles="admin"):
    req = urllib.request.Request(url, headers={"X-Roles": roles})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


# Runs inside a network namespace of its own (unshare --net): there 9292 and 9293 are
# certainly free, whatever else this machine runs, so what answers is the service's
# default and nothing else.
DEFAULTS_PROBE = """
import json, os, signal, socket, subprocess, sys, time, urllib.request
bin_dir, conf, out = sys.argv[1:4]
subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
log = open(out, "wb")
proc = subprocess.Popen([os.path.join(bin_dir, "glance-info-api"), "--config-file", conf],
                        stdout=log, stderr=subprocess.STDOUT)
def answers(port):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False
deadline = time.monotonic() + 60
while not answers(%(ours)d) and proc.poll() is None and time.monotonic() < deadline:
    time.sleep(0.1)
result = {"ours": answers(%(ours)d), "glance": answers(%(glance)d)}
if result["ours"]:
    req = urllib.request.Request("http://127.0.0.1:%(ours)d/v2/info/stores", headers={"X-Roles": "admin"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        result["stores"] = [s["id"] for s in json.load(resp)["stores"]]
proc.send_signal(signal.SIGTERM)
result["exit"] = proc.wait(20)
print(json.dumps(result))
""" % {"ours": OUR_PORT, "glance": GLANCE_PORT}


def test_unmodified_glance_api_conf_leaves_glance_its_port_and_its_log(tmp_path):
    glance_log = tmp_path / "glance-api.log"
    conf = tmp_path / "glance-api.conf"
    # as an operator's glance-api.conf says it, for Glance itself
    conf.write_text(glance_conf_text(str(tmp_path), DEFAULT={
        "bind_host": "127.0.0.1", "bind_port": GLANCE_PORT, "log_file": str(glance_log)}))
    out = tmp_path / "service.log"
    proc = subprocess.run(["unshare", "--net", sys.executable, "-c", DEFAULTS_PROBE, BIN, str(conf),
                           str(out)], capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    log = out.read_text()
    assert result["ours"] and not result["glance"], (result, log[-3000:])
    assert result["stores"] == ["fast", "ceph", "web"]
    assert result["exit"] == 0
    assert not glance_log.exists(), "glance-info-api wrote Glance's log file"
    assert "serving on http://0.0.0.0:9293" in log, log[-3000:]


def test_every_fsid_is_read_before_the_first_request(ceph_cluster, info_api_factory, tmp_path):
    conf = tmp_path / "glance-api.conf"
    conf.write_text(glance_conf_text(str(tmp_path), cluster=ceph_cluster))
    svc = info_api_factory(str(conf))
    try:
        log = svc.log()
        ready = log.find("Store properties ready for ")
        serving = log.find("serving on http://")
        assert 0 <= ready < serving, log[-3000:]
        # the first request finds the fsid already there: no cold wait, no null
        started = time.monotonic()
        body = _get(svc.url + "/v2/info/stores/detail")
        took = time.monotonic() - started
        ceph = next(s for s in body["stores"] if s["id"] == "ceph")
        assert ceph["properties"]["fsid"] == ceph_cluster.fsid
        assert took < 1.0, took
    finally:
        svc.stop()


def test_gunicorn_sample_serves_the_detail(ceph_cluster, tmp_path):
    """etc/glance-info-api-gunicorn.conf.py as shipped; only the address is this test's."""
    config_dir = tmp_path / "etc-glance"
    config_dir.mkdir()
    (config_dir / "glance-api.conf").write_text(glance_conf_text(
        str(tmp_path), cluster=ceph_cluster, DEFAULT={"auth_strategy": "noauth"}))
    (config_dir / "glance-info-api.conf").write_text(
        f"[glance_info_api]\nlog_file = {tmp_path / 'ours.log'}\n")
    port = free_port()
    out = tmp_path / "gunicorn.log"
    env = dict(os.environ, OS_GLANCE_CONFIG_DIR=str(config_dir))
    env.pop("PYTHONPATH", None)
    with open(out, "wb") as f:
        proc = subprocess.Popen(
            [os.path.join(BIN, "gunicorn"), "-c", os.path.join(ROOT, "etc", "glance-info-api-gunicorn.conf.py"),
             "--bind", f"127.0.0.1:{port}", "--env", f"OS_GLANCE_CONFIG_DIR={config_dir}"],
            stdout=f, stderr=subprocess.STDOUT, env=env, cwd="/", start_new_session=True)
    try:
        _wait_listening(proc, port, out)
        deadline = time.monotonic() + 30
        while True:
            try:
                body = _get(f"http://127.0.0.1:{port}/v2/info/stores/detail")
                break
            except OSError:
                assert time.monotonic() < deadline, out.read_text()[-3000:]
                time.sleep(0.2)
        ceph = next(s for s in body["stores"] if s["id"] == "ceph")
        assert ceph["properties"]["fsid"] == ceph_cluster.fsid
        assert "Store properties ready for " in (tmp_path / "ours.log").read_text()
    finally:
        _stop(proc)
