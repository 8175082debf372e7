"""cinder_ext.snapshot_gate inside cinder-volume's world: eventlet monkey-patched, uploads
in greenthreads. A waiting upload must yield to the hub (RPC, heartbeats and the other
uploads go on), and the uploads still on their way must reach the gate while it waits.
Run with the cinder29 peer's python (Cinder 29's eventlet), as the driver runs."""

import json
import subprocess

import pytest

from tests.cinder_peer import cinder29  # noqa: F401  (fixture)

pytestmark = pytest.mark.interop

SCRIPT = r'''
import eventlet
eventlet.monkey_patch()  # as cinder-volume, before the driver is imported
import json, time
from cinder_ext import snapshot_gate

gate = snapshot_gate.gate()
ticks, out = [], {}

def ticker():  # the service's other greenthreads: RPC, heartbeats
    for _ in range(60):
        ticks.append(time.monotonic())
        eventlet.sleep(0.01)

def upload(key, fetch):
    with gate.on_the_way() as ticket:
        eventlet.sleep(fetch)  # a green HTTP request: the image, the stores detail
        waited = ticket.arrive()
        out[key] = [waited, time.monotonic()]

t0 = time.monotonic()
pool = [eventlet.spawn(ticker), eventlet.spawn(upload, "a", 0.0), eventlet.spawn(upload, "b", 0.3)]
for g in pool:
    g.wait()
during = [t - t0 for t in ticks if out["a"][1] - out["a"][0] <= t <= out["a"][1]]
print(json.dumps({"a": [out["a"][0], out["a"][1] - t0], "b": [out["b"][0], out["b"][1] - t0],
                  "ticks_while_a_waited": len(during)}))
'''


def test_a_waiting_upload_yields_to_the_hub_and_the_burst_snapshots_together(cinder29):  # noqa: F811
    proc = subprocess.run([cinder29, "-c", SCRIPT], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    waited_a, at_a = got["a"]
    waited_b, at_b = got["b"]
    assert 0.25 < waited_a < 0.4 and waited_b == 0.0, got
    assert abs(at_a - at_b) < 0.05, got
    # a blocked hub would tick 0 times while "a" waited; it ticks every 10 ms
    assert got["ticks_while_a_waited"] >= 15, got
