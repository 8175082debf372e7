"""A cinder-volume's life between and around requests, inside a real Cinder venv.

    .peers/cinder29/bin/python tests/cinder_peer_day2.py SPEC.json   # or cinder26, 27, 28

Not a test module: tests/interop/test_cinder_driver_day2.py and (mode "calls", in each
release's venv) test_cinder_releases.py run it and assert on the JSON it prints. Cinder is
booted as cinder-volume boots it (tests/cinder_peer_run.boot).

SPEC["mode"]:

calls
    "Off means upstream": set-up, periodic-task start and one tick, create, upload and
    delete through the driver SPEC["driver_class"] names, each phase counted at the
    library boundary: RADOS connections, RBD image opens, HTTP requests, looping calls
    started. The test runs it for upstream's RBDDriver and for ours, and compares.
day2
    The driver's background life with the option on, each step a fact for the test:
    the periodic purge reclaiming the upload snapshot Glance's user could not drop; a
    volume whose Cinder snapshot an admin unmanaged (ours and upstream's, each deleted);
    a volume of ours that is in use (EBUSY); the purge surviving a monitor outage.
"""

import collections
import io
import os
import signal
import sys
import time

from cinder_peer_run import boot, pool_state, run_script, wait_gone  # same folder: a script

MiB = 1 << 20
COUNTS = collections.Counter()


def instrument():
    """Count, at the library boundary, what each driver does: every RADOS connection, RBD
    image open and HTTP request, and every looping call started. The looping calls are
    recorded, not started: the test runs their function once itself, so that a tick
    cannot land in the middle of another phase's count."""
    import rados
    import rbd
    import requests.adapters
    from oslo_service import loopingcall

    class CountedRados(rados.Rados):
        def connect(self, *a, **kw):
            COUNTS["rados_connect"] += 1
            return super().connect(*a, **kw)

    class CountedImage(rbd.Image):
        def __init__(self, *a, **kw):
            COUNTS["rbd_open"] += 1
            super().__init__(*a, **kw)

    rados.Rados = CountedRados
    rbd.Image = CountedImage
    send = requests.adapters.HTTPAdapter.send

    def counted_send(self, request, *a, **kw):
        COUNTS[f"http {request.method} {request.path_url.split('?')[0]}"] += 1
        return send(self, request, *a, **kw)
    requests.adapters.HTTPAdapter.send = counted_send
    started = []

    def record_start(self, *a, **kw):
        COUNTS["looping_calls_started"] += 1
        started.append(self.f)
    loopingcall.FixedIntervalLoopingCall.start = record_start
    return started


def _generic(counts, volume_id, image_id):
    # ids differ between the two runs: the paths are compared with them taken out
    out = {}
    for k, v in counts.items():
        out[k.replace(volume_id, "<volume>").replace(image_id, "<image>")] = v
    return out


def calls(spec, cleanup):
    """The driver of SPEC["driver_class"] (one per process: what the first driver of a
    process loads or caches would otherwise count against it alone)."""
    started = instrument()
    _conf, _config, driver, ctx = boot(spec)
    from cinder import objects
    from cinder.image import glance as cinder_glance
    image_service = cinder_glance.GlanceImageService()
    phases = {}

    def phase(name, fn):
        COUNTS.clear()
        fn()
        phases[name] = dict(COUNTS)
    phase("setup", lambda: (driver.do_setup(ctx), driver.check_for_setup_error()))
    tasks = list(started)
    phase("periodic", lambda: [f() for f in tasks])
    volume = objects.Volume(ctx, size=1, host=f"cinder-test@{spec['backend']}#{spec['backend']}",
                            status="creating", attach_status="detached",
                            project_id=spec["project_id"], user_id="cinder-test",
                            display_name="calls", availability_zone="nova")
    volume.create()
    phase("create", lambda: driver.create_volume(volume))
    cleanup.append(lambda: driver.delete_volume(volume))
    image_id = image_service.create(ctx, {"name": "calls", "disk_format": "raw",
                                          "container_format": "bare"})["id"]
    cleanup.append(lambda: image_service.delete(ctx, image_id))
    meta = image_service.show(ctx, image_id)
    if spec.get("upload", True):
        phase("upload", lambda: driver.copy_volume_to_image(ctx, volume, image_service, meta))
    phase("delete", lambda: driver.delete_volume(volume))
    out = {k: _generic(v, volume.id, image_id) for k, v in phases.items()}
    out["periodic_tasks"] = [getattr(f, "__name__", str(f)) for f in tasks]
    return out


# -- day 2 -------------------------------------------------------------------------------

def _volume(ctx, spec, name, vtype_id=None):
    from cinder import objects
    v = objects.Volume(ctx, size=1, host=f"cinder-test@{spec['backend']}#{spec['backend']}",
                       status="creating", attach_status="detached", project_id=spec["project_id"],
                       user_id="cinder-test", display_name=name, availability_zone="nova",
                       volume_type_id=vtype_id)
    v.create()
    return objects.Volume.get_by_id(ctx, v.id)


def _write(driver, name, data):
    from cinder.volume.drivers import rbd as upstream_rbd
    with upstream_rbd.RBDVolumeProxy(driver, name) as v:
        v.write(data, 0)


def _outcome(fn):
    t0 = time.monotonic()
    why = None
    try:
        fn()
        what = "ok"
    except Exception as e:  # the test compares outcomes: the class is the fact
        what, why = type(e).__name__, str(e)
    return what, round(time.monotonic() - t0, 2), why


def _wait(cond, timeout, step=0.5):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step)
    return cond()


def day2(spec, cleanup):
    _conf, config, driver, ctx = boot(spec)
    from cinder import db, objects
    from cinder.image import glance as cinder_glance
    from cinder.volume import volume_types
    from oslo_utils import importutils
    vpool, ipool = spec["cinder_pool"], spec["glance_pool"]
    image_service = cinder_glance.GlanceImageService()
    driver.do_setup(ctx)
    driver.check_for_setup_error()  # starts the periodic purge, every purge_interval s
    vtype = volume_types.create(ctx, f"{spec['backend']}-day2", {"volume_backend_name": spec["backend"]})
    out = {}

    def upload(volume):
        image_id = image_service.create(ctx, {"name": f"of-{volume.name}", "disk_format": "raw",
                                              "container_format": "bare"})["id"]
        cleanup.append(lambda: image_service.delete(ctx, image_id))
        driver.copy_volume_to_image(ctx, volume, image_service, image_service.show(ctx, image_id))
        return image_id

    def new_volume(name, d=driver):
        v = _volume(ctx, spec, name, vtype.id)
        d.create_volume(v)
        cleanup.append(lambda: d.delete_volume(v))
        _write(d, v.name, os.urandom(MiB))
        return v

    # 1. Glance deletes a clone-uploaded image: the volume's upload snapshot (trash
    #    namespace; Glance's user may not drop it) is reclaimed by the periodic purge
    v1 = new_volume("day2-snapshot-leak")
    i1 = upload(v1)
    out["upload_parent"] = pool_state(driver, ipool, {i1})
    image_service.delete(ctx, i1)
    wait_gone(driver, ipool, i1)
    out["snapshots_after_image_delete"] = pool_state(driver, vpool, {v1.name})["images"][v1.name]
    t0 = time.monotonic()
    _wait(lambda: not pool_state(driver, vpool, {v1.name})["images"][v1.name],
          spec["purge_wait"])
    out["snapshots_after_purge"] = pool_state(driver, vpool, {v1.name})["images"][v1.name]
    out["snapshot_reclaimed_after"] = round(time.monotonic() - t0, 2)

    # 2. an admin unmanages a Cinder snapshot (Cinder forgets it, Ceph keeps it); the
    #    volume is deleted: by upstream's driver and by ours, with and without an upload
    upstream = importutils.import_object("cinder.volume.drivers.rbd.RBDDriver",
                                         configuration=config, db=db,
                                         host=f"cinder-test@{spec['backend']}")
    upstream.do_setup(ctx)
    for label, d, uploaded in (("upstream", upstream, False), ("ours", driver, False),
                               ("ours-uploaded", driver, True)):
        v = new_volume(f"day2-unmanaged-{label}", d)
        if uploaded:
            upload(v)
        snap = objects.Snapshot(ctx, volume_id=v.id, volume_size=1, status="creating",
                                project_id=spec["project_id"], user_id="cinder-test",
                                display_name="unmanaged")
        snap.create()
        d.create_snapshot(snap)
        d.unmanage_snapshot(snap)  # as the manager's unmanage_snapshot, then the row goes
        snap.destroy()
        outcome, seconds, why = _outcome(lambda: d.delete_volume(v))
        state = pool_state(driver, vpool, {v.name})
        out[f"unmanaged_{label}"] = {"outcome": outcome, "seconds": seconds, "why": why,
                                     "in_pool": v.name in state["images"],
                                     "in_trash": v.name in state["trash"]}

    # 3. a volume of ours (uploaded by clone) whose exclusive lock another client keeps:
    #    the trash move is refused with EBUSY, and Cinder hears VolumeIsBusy (as from upstream's)
    v3 = new_volume("day2-busy")
    upload(v3)
    import rbd
    from cinder.volume.drivers import rbd as upstream_rbd
    with upstream_rbd.RADOSClient(driver) as client:
        holder = rbd.Image(client.ioctx, v3.name)
        try:
            # a client that keeps the exclusive lock (librbd's managed lock, as a mapped
            # krbd device with exclusive does): librbd's trash move answers EBUSY
            holder.lock_acquire(rbd.RBD_LOCK_MODE_EXCLUSIVE)
            out["busy"] = dict(zip(("outcome", "seconds", "why"), _outcome(lambda: driver.delete_volume(v3))))
        finally:
            holder.lock_release()
            holder.close()
    out["busy"]["in_pool_after"] = v3.name in pool_state(driver, vpool, {v3.name})["images"]

    # 4. the monitor stops answering (SIGSTOP) for longer than a few purge ticks: ticks
    #    fail, the loop lives on, and once the monitor is back a volume trashed for its
    #    image is purged when the image goes
    v4 = new_volume("day2-mon-outage")
    i4 = upload(v4)
    driver.delete_volume(v4)
    out["mon_outage_trashed"] = v4.name in pool_state(driver, vpool, {v4.name})["trash"]
    mon = int(open(spec["mon_pid_file"]).read().strip())
    window = [time.strftime("%Y-%m-%d %H:%M:%S")]  # as the log stamps its lines
    os.kill(mon, signal.SIGSTOP)
    try:
        time.sleep(spec["mon_outage"])
    finally:
        os.kill(mon, signal.SIGCONT)
        window.append(time.strftime("%Y-%m-%d %H:%M:%S"))
    image_service.delete(ctx, i4)
    wait_gone(driver, ipool, i4)
    t0 = time.monotonic()
    gone = _wait(lambda: v4.name not in pool_state(driver, vpool, {v4.name})["trash"],
                 spec["purge_wait"] + 30)
    out["mon_outage"] = {"purged": gone, "after": round(time.monotonic() - t0, 2),
                         "window": window}

    # 5. a volume cloned from an image Glance wrote (the manager's clone_image), the image
    #    deleted (glance_store trashes it: the volume reads through it), then the volume,
    #    before a purge tick has seen the two together: the periodic purge reclaims the image
    i5 = image_service.create(ctx, {"name": "day2-glance-written", "disk_format": "raw",
                                    "container_format": "bare"})["id"]
    cleanup.append(lambda: image_service.delete(ctx, i5))
    image_service.update(ctx, i5, {}, data=io.BytesIO(os.urandom(MiB)))
    v5 = _volume(ctx, spec, "day2-from-image", vtype.id)
    _, cloned = driver.clone_image(ctx, v5, image_service.get_location(ctx, i5),
                                   image_service.show(ctx, i5), image_service)
    cleanup.append(lambda: driver.delete_volume(v5))
    image_service.delete(ctx, i5)
    wait_gone(driver, ipool, i5)
    trashed = i5 in pool_state(driver, ipool, {i5})["trash"]
    driver.delete_volume(v5)
    t0 = time.monotonic()
    gone = _wait(lambda: i5 not in pool_state(driver, ipool, {i5})["trash"], spec["purge_wait"])
    out["glance_parent"] = {"cloned": cloned, "trashed": trashed, "purged": gone,
                            "after": round(time.monotonic() - t0, 2)}

    # 6. a Cinder clone of a volume our delete moved to the trash (its clone-uploaded
    #    image and the clone still read through it), cloned in turn: upstream's
    #    create_cloned_volume walks the clone chain by name (_get_clone_depth)
    a = new_volume("day2-trashed-parent")
    upload(a)
    b = _volume(ctx, spec, "day2-clone-of-trashed", vtype.id)
    driver.create_cloned_volume(b, a)
    cleanup.append(lambda: driver.delete_volume(b))
    driver.delete_volume(a)
    trashed = a.name in pool_state(driver, vpool, {a.name})["trash"]
    c = _volume(ctx, spec, "day2-clone-of-clone", vtype.id)
    outcome, seconds, why = _outcome(lambda: driver.create_cloned_volume(c, b))
    cleanup.append(lambda: driver.delete_volume(c))
    out["clone_of_trashed_parents_clone"] = {"trashed": trashed, "outcome": outcome,
                                             "seconds": seconds, "why": why}
    return out


if __name__ == "__main__":
    run_script("cinder_peer_day2", lambda spec, cleanup: {"calls": calls, "day2": day2}[
        spec["mode"]](spec, cleanup), sys.argv[1], always_clean=True)
