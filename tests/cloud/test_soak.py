"""A short soak (tools/soak.py, `tools/cloud soak`) on the session's cloud: users of two
projects and an admin at random, with faults (cinder-volume killed mid-upload, glance-api,
the OSD and the monitor, Keystone stopped, RabbitMQ restarted), from a fixed seed. It must
end with 0 invariant violations and 0 leftovers, and leave the cloud as it found it:
every service up, clone on (the other modules share this cloud).
"""

import os
import re
import subprocess

import cloudlib as cloud_tool

SEED = 22
MINUTES = 3


def test_a_short_soak_leaves_no_violation_and_nothing_behind(cloud):
    print(f"\nsoak seed {SEED}, {MINUTES} min")
    proc = subprocess.run([cloud_tool.CLOUD, "soak", cloud.dir, "--minutes", str(MINUTES), "--seed", str(SEED)],
                          capture_output=True, text=True, cwd="/", timeout=MINUTES * 60 + 1800)
    summary = proc.stdout[proc.stdout.find("== soak summary =="):]
    print(summary or proc.stdout[-3000:], proc.stderr[-2000:])
    assert re.search(r"^violations: 0$", summary, re.M), summary
    assert re.search(r"^leftovers: 0$", summary, re.M), summary
    assert proc.returncode == 0, proc.stderr[-2000:]

    # the cloud as the soak found it: every process and Cinder service up, clone on
    status = subprocess.run([cloud_tool.CLOUD, "status", cloud.dir], capture_output=True, text=True, cwd="/")
    assert status.returncode == 0, status.stdout
    assert {"cinder-volume", "cinder-scheduler"} <= {s["binary"] for s in cloud.services() if s["state"] == "up"}
    with open(os.path.join(cloud.dir, "cinder", "cinder.conf")) as f:
        assert re.search(r"^enable_clone_optimization = true$", f.read(), re.M)
