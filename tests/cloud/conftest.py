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

A failed test prints what the cloud's services said (pytest_runtest_makereport below): the
ERROR and WARNING lines of cinder-api, cinder-scheduler, cinder-volume, Glance and Keystone
that mention an id its failure names (every ERROR line when none does), read while its
cloud still runs: a module's cloud is removed after the module, with its logs.
"""

import glob
import os
import re
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
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
REQUEST = re.compile(r"req-[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
LEVEL = re.compile(r" (ERROR|WARNING|CRITICAL) |\[(ERROR|WARNING|CRITICAL|error|warning|critical)\]")
# every service's log under a cloud's directory (tools/cloud.py): Cinder's (cinder-api, its
# gunicorn, cinder-scheduler, each cinder-volume), Glance's, glance-info-api's, Keystone's
SERVICE_LOGS = ("cinder/*.log", "cinder/*.out", "glance/**/*.log", "info-api/*.log", "keystone/**/*.log")
PER_LOG = 30  # lines of each log at most: CI's log keeps the head and the tail of a long output


def _cloud_dirs(item):
    """The directories of the clouds a test ran on: its fixtures' values that are a Cloud
    (cloud), a directory (active_active_cloud) or hold one (release_cloud's (series, Cloud))."""
    out = []
    for value in getattr(item, "funcargs", {}).values():
        for v in (value if isinstance(value, tuple) else (value,)):
            d = getattr(v, "dir", v)
            if isinstance(d, str) and os.path.isfile(os.path.join(d, "cloud.json")) and d not in out:
                out.append(d)
    return out


def services_said(directory, text):
    """The ERROR and WARNING lines of the cloud's services that mention an id `text` names,
    or a request id of a line that does (the scheduler's "No valid backend" names the
    request, not the volume); every ERROR line when it names none, or when no line
    mentions them. The last PER_LOG of each log, oldest first."""
    ids = set(UUID.findall(text))
    logs = {}
    for pattern in SERVICE_LOGS:
        for log in sorted(glob.glob(os.path.join(directory, pattern), recursive=True)):
            try:
                with open(log, errors="replace") as f:
                    logs[os.path.relpath(log, directory)] = f.readlines()
            except OSError:
                continue
    requests = {r for lines in logs.values() for line in lines if ids and any(i in line for i in ids)
                for r in REQUEST.findall(line)}

    def said(named):
        out = []
        for name, lines in logs.items():
            found = [f"{name}: {line.rstrip()[:600]}" for line in lines if (level := LEVEL.search(line))
                     and named(line, (level.group(1) or level.group(2)).upper())]
            out += ([f"{name}: ... {len(found) - PER_LOG} earlier lines"] if len(found) > PER_LOG else []) + \
                found[-PER_LOG:]
        return out
    out = said(lambda line, level: any(i in line for i in (*ids, *requests))) if ids else []
    if out:
        about = f"that mention {', '.join(sorted(ids))} or their requests"
    else:
        out = said(lambda line, level: level != "WARNING")
        about = "(no line mentions an id the failure names: every ERROR)"
    return "\n".join([f"the ERROR and WARNING lines of the services in {directory} {about}:", *out])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A failed test in tests/cloud carries its clouds' service log lines in its report,
    read now, before the module's clouds are stopped and removed."""
    outcome = yield
    report = outcome.get_result()
    if not report.failed or call.when not in ("setup", "call"):
        return
    try:
        for d in _cloud_dirs(item):
            report.sections.append((f"cloud services' log lines ({os.path.basename(d)})",
                                    services_said(d, str(report.longrepr))))
    except Exception as e:  # the evidence must never hide the failure itself
        report.sections.append(("cloud services' log lines", f"could not be read: {e!r}"))


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
