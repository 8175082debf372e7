"""tests/cloud: a real cloud (tools/cloud) booted once per session, OpenStack's own clients and
Tempest against it (issue 14).

Fixtures
--------
cloud (session)
    tools/demo_openstack.Cloud on a cloud booted in a temporary directory: `.openstack(...,
    user="member")` runs the `openstack` CLI as a clouds.yaml user (member: the demo project's
    non-admin member; admin; cinder), `.write_volume`, `.image_bytes`, `.upload_lines`,
    `.method_of`, `.state` (ports, pgids, boot_seconds). Stopped at the end of the session,
    and the stop is checked: no process of the cloud, no port of it still listening.
    TEST_CLOUD_DIR=DIR uses a cloud you started with `tools/cloud start DIR` instead.
"""

import os
import subprocess
import sys
import tempfile
import time

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.join(ROOT, "tools"))
import cloudlib as cloud_tool  # noqa: E402
import demo_openstack  # noqa: E402

CLOUD = os.path.join(ROOT, "tools", "cloud")


def processes_under(path):
    """pids whose command line or working directory is under `path`."""
    out = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if path in cmd or cwd.startswith(path):
            out.append((int(pid), cmd[:120]))
    return out


@pytest.fixture(scope="session")
def cloud():
    if os.environ.get("TEST_CLOUD_DIR"):  # a running cloud of yours: used, not stopped
        yield demo_openstack.Cloud(os.environ["TEST_CLOUD_DIR"])
        return
    d = tempfile.mkdtemp(prefix="cloud-")
    os.rmdir(d)  # tools/cloud wants an empty or absent directory
    proc = subprocess.run([CLOUD, "start", d], capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        pytest.fail(f"tools/cloud start: {proc.stderr.strip()}")
    c = demo_openstack.Cloud(d)
    print(f"\ncloud booted in {c.state['boot_seconds']} s in {d}")
    yield c
    ports = list(c.state["ports"].values())
    stop = subprocess.run([CLOUD, "stop", d], capture_output=True, text=True, cwd="/")
    left = processes_under(d)
    open_ports = [p for p in ports if cloud_tool.port_open(p)]
    assert stop.returncode == 0, stop.stderr
    assert not left, f"still running after tools/cloud stop: {left}"
    assert not open_ports, f"still listening after tools/cloud stop: {open_ports}"
    subprocess.run(["rm", "-rf", d])


@pytest.fixture(scope="module")
def active_active_cloud():
    """A cloud of the module's own, shaped as most Ceph deployments of Cinder are: two
    cinder-volume services (hosts cloud, cloud-2) in one active-active Cinder cluster over
    3 OSDs with pools of size 3 (`tools/cloud start --osds 3 --volume-services 2`, about
    30 s); its directory. Stopped at the end of the module, nothing left running.
    TEST_AA_CLOUD_DIR=DIR uses one you started that way instead."""
    if os.environ.get("TEST_AA_CLOUD_DIR"):
        yield os.environ["TEST_AA_CLOUD_DIR"]
        return
    d = tempfile.mkdtemp(prefix="aa-cloud-")
    os.rmdir(d)
    proc = subprocess.run([CLOUD, "start", d, "--osds", "3", "--volume-services", "2"],
                          capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        pytest.fail(f"tools/cloud start --osds 3 --volume-services 2: {proc.stderr.strip()}")
    yield d
    stop = subprocess.run([CLOUD, "stop", d], capture_output=True, text=True, cwd="/")
    assert stop.returncode == 0, stop.stderr
    assert not processes_under(d)
    subprocess.run(["rm", "-rf", d])


def wait_baseline(cloud, before):
    """Until both pools and their trash hold no RBD name that `before` (cloud.rbd_names())
    did not, within two purge intervals and the purge's own time; the seconds it took."""
    bound = 2 * cloud_tool.PURGE_INTERVAL + 10
    t0 = time.monotonic()
    while True:
        now = cloud.rbd_names()
        extra = {p: sorted(set(now[p]) - set(before[p])) for p in now}
        if extra == {"volumes": [], "images": []}:
            return time.monotonic() - t0
        assert time.monotonic() - t0 < bound, f"left after {bound} s: {extra}"
        time.sleep(1)
