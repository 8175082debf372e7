"""cinder-volume stays responsive while clone uploads run (issue 14).

Cinder's volume service is one eventlet hub: a librbd call made on it (not through
tpool) blocks every other request, its RPC and its heartbeats, for as long as the call
takes. While 8 clone uploads run at once through the API, every volume create (1 GB) plus
its delete made meanwhile (one after another, up to five) is a probe. The probes' median
must stay within 3x of the slowest idle run (the service is not slowed throughout), and
no probe may take more than 3x the larger of that median and the slowest idle run (no
probe stalls beyond the others: a blocked hub's mark). The volume service list (as
admin) must never show cinder-volume down.

Why, measured (not issue 14's 1.5x of one probe):
* with the driver's Ceph calls put on the hub on purpose, one probe of five took
  15.3-16.4 s (21-22x the idle median) while the others, made between the stalls, took
  0.8-1.1 s. A median alone passes a blocked hub.
* with the calls in native threads, CI's 2 cores, shared with the other test modules,
  slow every probe together: once 1.39, 2.07, 2.49, 5.57 and 4.28 s, with idle runs of
  0.92-0.98 s before the burst and 1.78-2.45 s after it, and uploads at 13-16 s (5.5-6 s
  on a quiet machine). The slowest probe against the idle median (5.7x) failed that
  run; against the burst's own median (2.2x) it is load, not a stall.

The uploads and the probe go through the same REST calls `openstack image create
--volume`, `openstack volume create` and `openstack volume delete` make, without a CLI
process each: on a 2-core machine nine Python CLIs starting at once measure the client's
CPU, not the service.
"""

import concurrent.futures
import os
import statistics
import threading
import time

UPLOADS = 8
RATIO = 3.0
PROBES = 5


def create_delete(cloud):
    t0 = time.monotonic()
    code, body = cloud.post("volume", "/volumes", {"volume": {"size": 1, "name": "probe"}})
    assert code == 202, body
    vol = body["volume"]["id"]
    cloud.wait("volume", vol, "available")
    code, body = cloud.post("volume", f"/volumes/{vol}", None, method="DELETE")
    assert code == 202, body
    cloud.wait_gone("volume", vol)
    return time.monotonic() - t0


def upload(cloud, vol, name):
    t0 = time.monotonic()
    code, body = cloud.post("volume", f"/volumes/{vol}/action", {"os-volume_upload_image": {
        "image_name": name, "disk_format": "raw", "container_format": "bare", "force": False}})
    assert code == 202, body
    image = body["os-volume_upload_image"]["image_id"]
    cloud.wait("image", image, "active", bad=("killed", "deleted"))
    cloud.wait("volume", vol, "available")
    return image, time.monotonic() - t0


def test_volume_service_responsive_during_8_clone_uploads(cloud):
    vols, images = [], []
    try:
        _run(cloud, vols, images)
    finally:
        for img in images:
            cloud.post("image", f"/v2/images/{img}", None, method="DELETE")
        for v in vols:
            cloud.post("volume", f"/volumes/{v}", None, method="DELETE")


def _run(cloud, vols, images):
    for i in range(UPLOADS):
        code, body = cloud.post("volume", "/volumes", {"volume": {"size": 1, "name": f"conc-src-{i}"}})
        assert code == 202, body
        vols.append(body["volume"]["id"])
    for v in vols:
        cloud.wait("volume", v, "available")
        cloud.write_volume(v, os.urandom(4 << 20))
    # idle runs before and after the burst: the other xdist workers load this machine
    # too, and the busy run is compared with idle ones made under the same load
    idle = [create_delete(cloud) for _ in range(3)]

    down, stop = [], threading.Event()

    def watch():
        while not stop.is_set():
            for svc in cloud.services():
                if svc["binary"] == "cinder-volume" and svc["state"] != "up":
                    down.append((time.time(), svc))
            stop.wait(1)
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(UPLOADS) as pool:
            futures = [pool.submit(upload, cloud, v, f"conc-img-{i}") for i, v in enumerate(vols)]
            time.sleep(0.5)  # the uploads are in cinder-volume by now
            # probes one after another while the uploads run: a hub blocked by librbd
            # stalls whichever probe reaches it then, for seconds
            busy = [create_delete(cloud)]
            while not all(f.done() for f in futures) and len(busy) < PROBES:
                busy.append(create_delete(cloud))
            uploads = [f.result() for f in futures]
    finally:
        stop.set()
        watcher.join()
    images += [img for img, _ in uploads]
    idle += [create_delete(cloud) for _ in range(2)]
    idle_s, busy_s, typical = max(idle), max(busy), statistics.median(busy)
    methods = [cloud.method_of(img) for img in images]
    print(f"\nvolume create+delete: idle at most {idle_s:.2f} s (runs {', '.join(f'{x:.2f}' for x in idle)}), "
          f"during {UPLOADS} clone uploads median {typical:.2f} s, at most {busy_s:.2f} s (runs "
          f"{', '.join(f'{x:.2f}' for x in busy)}); uploads took "
          f"{', '.join(f'{s:.1f}' for _, s in uploads)} s; methods {methods}")
    assert methods == ["clone"] * UPLOADS, methods
    assert not down, f"cinder-volume reported down: {down[:3]}"
    assert typical <= RATIO * idle_s, (f"volume create+delete took {typical:.2f} s (median) during the "
                                       f"uploads, {typical / idle_s:.2f}x its slowest idle run {idle_s:.2f} s")
    reference = max(typical, idle_s)
    assert busy_s <= RATIO * reference, (f"a volume create+delete took {busy_s:.2f} s during the uploads, "
                                         f"{busy_s / reference:.2f}x the others ({reference:.2f} s): the hub "
                                         "was blocked")
