#!/usr/bin/python3
"""Tempest 47 and cinder-tempest-plugin 1.23 against a tools/cloud cloud (no compute).

    tools/cloud tempest DIR [--regex R] [--concurrency N]
    tools/cloud tempest-ab DIR [--regex R] [--concurrency N]    (ab(): FULL by default)

Writes DIR/tempest (a `tempest init` workspace) with a tempest.conf for this cloud:
Keystone v3 with dynamic credentials from the admin, Glance and Cinder available, Nova,
Neutron and Swift not; `[volume-feature-enabled] volume_image_dep_tests` (and its new
name enable_volume_image_dep_tests) on; `[compute] image_ref`, which tempest's volume
tests create volumes from, a small public raw image uploaded here. Runs the tests that
REGEX (default: SELECTION) names, and prints pass, skip (with each reason) and fail
counts; DIR/tempest/results.json has every test's status. Exit 1 when a test failed.

tempest-ab runs REGEX (default: FULL, every volume test that needs no compute, network or
object store) with our driver and then with upstream's RBDDriver on the same cloud, and
prints the tests whose outcome differs (rerun once each); DIR/tempest/ab.json. Exit 1
when an outcome differed.
"""

import argparse
import json
import os
import re
import subprocess
import sys
import time
import urllib.request

from cloudlib import PEERS_DIR, Cloud, ini  # also puts tools/peers on sys.path
import setup_peers  # noqa: E402  tools/peers/setup_peers.py

VENV = os.path.join(PEERS_DIR, "tempest")

# The spec's dependency tests; every test that uploads a volume to an image or creates a
# volume from an image and needs no compute (tempest's upload test through our plugin,
# tests/tempest_plugin: tempest's own class skips without Neutron); and tempest's volume
# smoke set.
SELECTION = ("^(cinder_tempest_plugin\\.api\\.volume\\.(test_volume_dependency|test_create_from_image)"
             "|glance_rbd_clone_tempest\\.tests\\.test_volumes_actions"
             "|tempest\\.api\\.volume\\.(test_volumes_actions|test_volumes_get|test_image_metadata"
             "|test_volumes_clone)"
             "|tempest\\.api\\.volume\\..*\\[.*\\bsmoke\\b.*\\])")

# Every Tempest and cinder-tempest-plugin volume API test (tempest.api.volume, admin
# included; cinder_tempest_plugin.api.volume; cinder_tempest_plugin.rbac, Cinder's policy
# as each persona sees it), and our plugin's classes (tests/tempest_plugin): tempest's
# four volume classes that declare a default network, and so skip as a whole without
# Neutron, run without it (VolumesActionsTest, admin VolumesActionsTest,
# VolumesSnapshotTestJSON, SnapshotManageAdminTest). What needs Nova,
# Neutron or Swift skips itself (service_available), and so does what this cloud has not got
# (a backup service, a second backend, replication, consistency groups); the scenario tests
# all boot servers. `tools/cloud tempest-ab` runs this set.
FULL = ("^(tempest\\.api\\.volume\\."
        "|cinder_tempest_plugin\\.api\\.volume\\."
        "|cinder_tempest_plugin\\.rbac\\."
        "|glance_rbd_clone_tempest\\.tests\\.)")

PARSE = r'''
import json, sys
import subunit, testtools
stream = subunit.ByteStreamToStreamResult(sys.stdin.buffer, non_subunit_name="stdout")
out = {}
def on_test(test):
    reason = ""
    if test["status"] == "skip":
        d = test["details"].get("reason")
        reason = d.as_text() if d is not None else ""
    elif test["status"] == "fail":
        d = test["details"].get("traceback")
        reason = d.as_text()[-1500:] if d is not None else ""
    out[test["id"]] = {"status": test["status"], "reason": reason}
result = testtools.StreamToDict(on_test)
result.startTestRun(); stream.run(result); result.stopTestRun()
json.dump(out, sys.stdout)
'''


def image_ref(cloud):
    """A small public raw image as admin: what tempest creates volumes from."""
    code, body = cloud.post("image", "/v2/images", {"name": "tempest-raw", "disk_format": "raw",
                                                    "container_format": "bare", "visibility": "public"},
                            user="admin")
    assert code == 201, body
    token, _ = cloud.token("admin")
    req = urllib.request.Request(f"{cloud.state['image_url']}/v2/images/{body['id']}/file",
                                 data=os.urandom(1 << 20), method="PUT",
                                 headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream"})
    with urllib.request.urlopen(req, timeout=120):
        pass
    cloud.wait("image", body["id"], "active", user="admin", bad=("killed",))
    return body["id"]


def write_conf(cloud, ws):
    ks = cloud.state["keystone"]
    admin = ks["users"]["admin"]
    return ini({
        "DEFAULT": {"log_file": os.path.join(ws, "tempest.log"), "debug": "false"},
        "auth": {"use_dynamic_credentials": "true", "admin_username": "admin",
                 "admin_password": admin["password"], "admin_project_name": "admin",
                 "admin_domain_name": "Default", "create_isolated_networks": "false"},
        "identity": {"uri_v3": ks["auth_url"], "auth_version": "v3", "region": ks["region"],
                     "v3_endpoint_type": "public"},
        "identity-feature-enabled": {"api_v2": "false", "api_v3": "true"},
        # no Neutron: tempest's volume classes that declare create_default_network skip
        # (VolumesActionsTest, with tempest's only upload test, test_volume_upload: our
        # plugin runs it without the network); with neutron "available" the dynamic
        # credentials' cleanup calls Neutron and fails
        "service_available": {"nova": "false", "glance": "true", "cinder": "true", "neutron": "false",
                              "swift": "false", "heat": "false", "horizon": "false"},
        "compute": {"image_ref": image_ref(cloud), "image_ref_alt": ""},
        "compute-feature-enabled": {"attach_encrypted_volume": "false"},
        "image": {"catalog_type": "image", "region": ks["region"], "build_timeout": 300},
        "image-feature-enabled": {"api_v2": "true", "api_v1": "false", "import_image": "false"},
        "volume": {"catalog_type": "volumev3", "region": ks["region"], "build_timeout": 300,
                   "storage_protocol": "ceph", "vendor_name": "Open Source", "backend_names": "ceph",
                   "volume_size": 1, "min_microversion": "3.0", "max_microversion": "latest",
                   # test_volume_upload: one upload per format (raw clones, qcow2 copies)
                   "disk_format": "raw,qcow2",
                   # RBD's names: volume-<id>, and snapshot-<id> on it (tempest's default
                   # `_snapshot-%s` is LVM's)
                   "manage_volume_ref": "source-name,volume-%s",
                   "manage_snapshot_ref": "source-name,snapshot-%s"},
        "volume-feature-enabled": {"api_v3": "true", "backup": "false", "snapshot": "true",
                                   # RBD manages both (its names: [volume] manage_*_ref)
                                   "clone": "true", "manage_volume": "true", "manage_snapshot": "true",
                                   "extend_attached_volume": "false", "volume_revert": "true",
                                   "volume_image_dep_tests": "true",
                                   "enable_volume_image_dep_tests": "true"},
        "validation": {"run_validation": "false"},
        # Cinder 29 on oslo.policy 6 enforces scope and the new defaults (their defaults):
        # cinder-tempest-plugin's RBAC tests run, as on devstack
        "enforce_scope": {"cinder": "true"},
        "network-feature-enabled": {"port_security": "false"},
    })


def workspace(cloud):
    """(DIR/tempest, the environment tempest runs in): `tempest init` and tempest.conf the
    first time."""
    ws = os.path.join(cloud.dir, "tempest")
    setup_peers.setup(["tempest"], log=None)  # its venv, unless current (well under a second)
    env = cloud.os_env()
    for k in [k for k in env if k.startswith(("OS_", "CLOUD_"))]:
        del env[k]
    env["PATH"] = os.path.join(VENV, "bin") + ":/usr/bin:/bin"
    if not os.path.exists(os.path.join(ws, "etc", "tempest.conf")):
        # a name of its own: tempest's workspace registry (in HOME) keeps old names
        proc = subprocess.run([os.path.join(VENV, "bin", "tempest"), "init", "--name",
                               f"cloud-{int(time.time() * 1000)}", ws], env=env, cwd=cloud.dir,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"tempest init: {(proc.stderr or proc.stdout).strip()[-500:]}")
        with open(os.path.join(ws, "etc", "tempest.conf"), "w") as f:
            f.write(write_conf(cloud, ws))
    return ws, env


def list_tests(directory, regex=FULL):
    """The test ids REGEX selects (`tempest run --list-tests`), tempest's own skips included."""
    ws, env = workspace(Cloud(directory))
    proc = subprocess.run([os.path.join(VENV, "bin", "tempest"), "run", "--list-tests", "--regex", regex],
                          env=env, cwd=ws, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"tempest run --list-tests: {(proc.stderr or proc.stdout).strip()[-500:]}")
    return [ln.strip() for ln in proc.stdout.splitlines()
            if ln.strip() and not ln.startswith(" ") and "." in ln and " " not in ln.strip()]


def run(directory, regex=SELECTION, concurrency=2, log=print, name="results"):
    """Run the tests REGEX names; DIR/tempest/NAME.json (and NAME.log) keep the outcome."""
    cloud = Cloud(directory)
    ws, env = workspace(cloud)
    clone_lines_before = count_methods(cloud)
    t0 = time.monotonic()
    proc = subprocess.run([os.path.join(VENV, "bin", "tempest"), "run", "--regex", regex,
                           "--concurrency", str(concurrency)], env=env, cwd=ws,
                          capture_output=True, text=True)
    secs = time.monotonic() - t0
    with open(os.path.join(ws, f"{name}.log" if name != "results" else "run.log"), "w") as f:
        f.write(proc.stdout + proc.stderr)
    sub = subprocess.run([os.path.join(VENV, "bin", "stestr"), "last", "--subunit"], env=env, cwd=ws,
                         capture_output=True)
    parsed = subprocess.run([os.path.join(VENV, "bin", "python"), "-c", PARSE], input=sub.stdout,
                            capture_output=True, env=env, cwd=ws)
    if parsed.returncode != 0:
        raise RuntimeError(f"cannot read tempest's results: {parsed.stderr.decode()[-500:]}")
    results = json.loads(parsed.stdout)
    after = count_methods(cloud)
    uploads = {k: after[k] - clone_lines_before[k] for k in ("clone", "independent", "copy")}
    uploads["copy_reasons"] = after["copy_reasons"][len(clone_lines_before["copy_reasons"]):]
    # tempest's test_volume_upload uploads its raw volume once per [volume] disk_format
    # (raw, qcow2: one raw-to-raw upload each time it passes)
    uploads["raw_to_raw"] = sum(1 for t, r in results.items()
                                if t.split("[")[0].endswith(".test_volume_upload") and r["status"] == "success")
    summary = {"seconds": round(secs, 1), "regex": regex, "concurrency": concurrency,
               "results": results, "returncode": proc.returncode, "uploads": uploads}
    with open(os.path.join(ws, f"{name}.json"), "w") as f:
        json.dump(summary, f, indent=2)
    report(summary, log)
    return summary


def count_methods(cloud):
    counts = {"clone": 0, "independent": 0, "copy": 0, "copy_reasons": []}
    for line in cloud.volume_log_lines():
        if ": method=clone" in line:
            counts["clone"] += 1
        elif ": method=independent" in line:
            counts["independent"] += 1
        elif ": method=copy" in line:
            counts["copy"] += 1
            counts["copy_reasons"].append(line.split("reason=", 1)[-1].strip()[:200])
    return counts


def report(summary, log=print):
    res = summary["results"]
    by = {"success": [], "skip": [], "fail": []}
    for test, r in sorted(res.items()):
        by.setdefault(r["status"], []).append((test, r["reason"]))
    log(f"tempest: {len(by['success'])} passed, {len(by['skip'])} skipped, {len(by['fail'])} failed "
        f"in {summary['seconds']} s (tempest run --regex '{summary['regex']}' --concurrency "
        f"{summary['concurrency']})")
    for test, reason in by["skip"]:
        log(f"  skipped {test}: {reason.strip()}")
    for test, reason in by["fail"]:
        log(f"  FAILED {test}: {reason.strip().splitlines()[-1:] if reason else ''}")
    up = summary["uploads"]
    log(f"cinder-volume uploads during the run: raw to raw {up['raw_to_raw']}; method=clone "
        f"{up['clone']}, method=independent {up['independent']}, method=copy {up['copy']}"
        + (f" (reasons: {'; '.join(up['copy_reasons'])})" if up["copy"] else ""))


# -- A/B: our driver against upstream's on the same cloud ---------------------------------------

def outcome(result):
    """What is compared: the status, and for a skip its reason (a test that skips for
    another reason in the other run is a difference too)."""
    if result is None:
        return "absent"
    if result["status"] == "skip":
        return "skip: " + " ".join(result["reason"].split())[:200]
    return result["status"]


def differing(a, b):
    """Test ids whose outcome differs between two runs' results (a test that ran in one
    only included)."""
    return sorted(t for t in set(a) | set(b) if outcome(a.get(t)) != outcome(b.get(t)))


def rerun_regex(tests):
    """A regex for exactly these tests: a test by its id without tempest's [attrs]; a class
    fixture's failure (`setUpClass (module.Class)`) by its class."""
    parts = set()
    for t in tests:
        m = re.match(r"^\w+ \(([\w.]+)\)$", t)
        parts.add(re.escape(m.group(1)) + r"\." if m else re.escape(t.split("[")[0]) + r"(\[|$)")
    return "^(" + "|".join(sorted(parts)) + ")"


def counts(results):
    names = {"success": "passed", "fail": "failed", "skip": "skipped"}
    c = {"passed": 0, "failed": 0, "skipped": 0}
    for r in results.values():
        key = names.get(r["status"], r["status"])
        c[key] = c.get(key, 0) + 1
    return c


def ab(directory, set_driver, regex=FULL, concurrency=2, log=print):
    """The tests REGEX names, once with our driver (as the cloud runs) and once with
    upstream's RBDDriver on the same cloud; the tests whose outcome differs run once more in
    each configuration. set_driver(upstream) switches cinder.conf's volume_driver and
    restarts cinder-volume (tools/cloud: Services.set_driver); ours is restored at the end,
    whatever happens. DIR/tempest/ab.json keeps the whole comparison. Returns it."""
    t0 = time.monotonic()
    ws = os.path.join(os.path.abspath(directory), "tempest")
    out = {"regex": regex, "concurrency": concurrency, "runs": {}, "reruns": {}}

    def quiet(_line):  # each run's own report stays in DIR/tempest/ab-NAME.json; the A/B prints its own
        pass
    try:
        for name, upstream in (("ours", False), ("upstream", True)):
            set_driver(upstream)
            log(f"tempest-ab: {name} driver: running...")
            s = run(directory, regex, concurrency, log=quiet, name=f"ab-{name}")
            out["runs"][name] = {"seconds": s["seconds"], "counts": counts(s["results"]),
                                 "results": s["results"]}
            log(f"tempest-ab: {name}: {fmt_counts(out['runs'][name])}")
        diff = differing(out["runs"]["ours"]["results"], out["runs"]["upstream"]["results"])
        out["differing"] = diff
        if diff:
            # flaky on a loaded machine or not: once more each, only these, and both shown
            rx = rerun_regex(diff)
            for name, upstream in (("upstream", True), ("ours", False)):  # upstream is still on
                set_driver(upstream)
                log(f"tempest-ab: {len(diff)} differing tests, rerun with the {name} driver...")
                s = run(directory, rx, concurrency, log=quiet, name=f"ab-{name}-rerun")
                out["reruns"][name] = {"seconds": s["seconds"], "counts": counts(s["results"]),
                                       "results": s["results"], "regex": rx}
    finally:
        set_driver(False)
        out["seconds"] = round(time.monotonic() - t0, 1)
        os.makedirs(ws, exist_ok=True)
        with open(os.path.join(ws, "ab.json"), "w") as f:
            json.dump(out, f, indent=2)
    report_ab(out, log)
    return out


def fmt_counts(r):
    c = r["counts"]
    extra = "".join(f", {v} {k}" for k, v in c.items() if k not in ("passed", "failed", "skipped"))
    return (f"{sum(c.values())} tests: {c['passed']} passed, {c['failed']} failed, {c['skipped']} skipped"
            f"{extra} in {r['seconds']} s")


def report_ab(out, log=print):
    log(f"tempest-ab: {len(set(out['runs']['ours']['results']) | set(out['runs']['upstream']['results']))} "
        f"tests (tempest run --regex '{out['regex']}' --concurrency {out['concurrency']}), "
        f"{out['seconds']} s in all")
    for name in ("ours", "upstream"):
        log(f"  {name:9} {fmt_counts(out['runs'][name])}")
    for name in ("ours", "upstream"):
        for t, r in sorted(out["runs"][name]["results"].items()):
            if r["status"] == "fail":
                log(f"  failed with {name}: {t}: {r['reason'].strip().splitlines()[-1:] if r['reason'] else ''}")
    diff = out.get("differing", [])
    log(f"tempest-ab: {len(diff)} tests differ" + (":" if diff else ""))
    for t in diff:
        first = {n: outcome(out["runs"][n]["results"].get(t)) for n in ("ours", "upstream")}
        again = {n: (outcome(out["reruns"][n]["results"].get(t)) if n in out["reruns"] else "not rerun")
                 for n in ("ours", "upstream")}
        verdict = "differs again" if again["ours"] != again["upstream"] else "agrees on the rerun (flaky)"
        log(f"  {t}\n    first run: ours {first['ours']}; upstream {first['upstream']}\n"
            f"    rerun:     ours {again['ours']}; upstream {again['upstream']}: {verdict}")


def main(argv=None):
    p = argparse.ArgumentParser(prog="cloud tempest")
    p.add_argument("dir")
    p.add_argument("--regex", default=SELECTION)
    p.add_argument("--concurrency", type=int, default=2)
    args = p.parse_args(argv)
    summary = run(args.dir, args.regex, args.concurrency)
    return 1 if any(r["status"] == "fail" for r in summary["results"].values()) else 0


if __name__ == "__main__":
    sys.exit(main())
