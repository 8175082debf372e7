"""Drive a real Cinder's volume path with our driver, inside that release's venv.

    .peers/cinder29/bin/python tests/cinder_peer_run.py SPEC.json   # or cinder26, 27, 28

Not a test module: tests/cinder_peer.py runs it as a subprocess (Cinder must not be
imported into the project's venv) and asserts on the JSON it prints.

It does what cinder-volume does, with Cinder's own pieces: parses a real cinder.conf
(SPEC["config_file"]), syncs a real sqlite database, builds the backend's
Configuration as VolumeManager does and imports the class named by its
``volume_driver``, creates real VolumeType/Volume objects, then do_setup,
check_for_setup_error, create_volume, writes data, creates the image as cinder-api
does (GlanceImageService.create) and calls copy_volume_to_image with a
GlanceImageService, then delete_volume. Facts are measured, not judged: the test
decides. Like cinder-volume, it runs under eventlet (on Cinder 29,
OS_CINDER_DISABLE_EVENTLET_PATCHING=1: native threads). Only what every release from 26 to
29 has is used here. Errors: one line on stderr, exit 1; the traceback goes to
SPEC["traceback_file"] and whatever the run created is deleted.
"""

import faulthandler
import hashlib
import json
import os
import sys
import time

MiB = 1 << 20


def boot(spec):
    """Cinder as cinder-volume starts: eventlet (unless disabled), objects, a real
    cinder.conf, a synced database, the backend's Configuration and its driver class
    (SPEC["driver_class"] overrides volume_driver). Returns (conf, config, driver, ctx)."""
    # as cinder/cmd/volume.py starts: eventlet unless OS_CINDER_DISABLE_EVENTLET_PATCHING
    # (Cinder 29); Cinder 26-28 always monkey-patch
    try:
        from cinder import monkey_patch
        monkey_patch.patch()
    except ImportError:
        import eventlet
        eventlet.monkey_patch()

    from oslo_config import cfg
    from oslo_log import log as logging
    from oslo_utils import importutils

    from cinder import objects
    objects.register_all()  # before the rest, as cinder/cmd/volume.py does
    from cinder import context as cinder_context
    from cinder.volume import manager
    from cinder.db import migration
    from cinder.volume import configuration

    conf = cfg.CONF
    logging.register_options(conf)
    conf(["--config-file", spec["config_file"]], project="cinder")
    logging.setup(conf, "cinder")
    migration.db_sync()

    backend = spec["backend"]
    # as VolumeManager.__init__ builds it
    config = configuration.Configuration(manager.volume_backend_opts, config_group=backend)
    # cinderlib's way to hand the keyring to os-brick (upstream's copy path opens the
    # volume through it); OpenStack hosts have it in /etc/ceph, which tests must not touch
    config.rbd_keyring_conf = spec["keyring"]
    from cinder import db
    driver = importutils.import_object(spec.get("driver_class") or config.volume_driver,
                                       configuration=config, db=db,
                                       host=f"cinder-test@{backend}")
    _BOOTED.append(driver)
    ctx = cinder_context.RequestContext(user_id="cinder-test", project_id=spec["project_id"],
                                        is_admin=True)
    return conf, config, driver, ctx


_BOOTED = []  # the drivers this run made, for _stop_periodic_tasks


def _stop_periodic_tasks():
    """Stop and wait for each driver's periodic purge before the interpreter exits: a
    purge left running in a native thread inside librados while Python finalizes the
    rados objects under it segfaulted the run (CI, exit -11). A real cinder-volume's
    stop is a kill as far as the purge is concerned (crash-safe by design); the runner
    has to end cleanly to report."""
    for driver in _BOOTED:
        task = getattr(driver, "_purge_task", None)
        if task is not None:
            task.stop()
            try:
                task.wait()
            except AttributeError:  # it ended already: oslo.service dropped its event
                pass


def on_eventlet():
    try:
        from eventlet import patcher
    except ImportError:
        return False
    return patcher.is_monkey_patched("thread")


def main(spec, cleanup):
    conf, config, driver, ctx = boot(spec)
    from cinder import objects
    from cinder.image import glance as cinder_glance
    from cinder.volume.drivers import rbd as upstream_rbd
    backend = spec["backend"]
    out = {"driver_class": f"{type(driver).__module__}.{type(driver).__name__}",
           "enable_clone_optimization": config.enable_clone_optimization,
           "eventlet": on_eventlet()}
    if spec.get("mode") == "options":
        return dict(out, clone_active_timeout=config.clone_active_timeout,
                    driver_options=sorted(o.name for o in driver.get_driver_options()),
                    shared_default=conf.backend_defaults.enable_clone_optimization,
                    rbd_pool=config.rbd_pool)

    driver.do_setup(ctx)
    driver.check_for_setup_error()

    # through Cinder's own helper, as `cinder type-create` does
    from cinder.volume import volume_types
    vtype = volume_types.create(ctx, f"{backend}-type", {"volume_backend_name": backend})
    volume = objects.Volume(ctx, size=spec["size_gb"], host=f"cinder-test@{backend}#{backend}",
                            status="creating", attach_status="detached",
                            volume_type_id=vtype.id, project_id=spec["project_id"],
                            user_id="cinder-test", display_name="source",
                            availability_zone="nova")
    volume.create()
    volume = objects.Volume.get_by_id(ctx, volume.id)  # as the manager gets it
    driver.create_volume(volume)
    cleanup.append(lambda: driver.delete_volume(volume))
    volume.status = "available"
    volume.save()
    out["volume"] = volume.name

    # real data in a few places, holes elsewhere
    writes = [(0, os.urandom(4 * MiB)), (300 * MiB + 12345, os.urandom(MiB)),
              (volume.size * 1024 * MiB - MiB, os.urandom(MiB))]
    with upstream_rbd.RBDVolumeProxy(driver, volume.name) as v:
        for offset, data in writes:
            v.write(data, offset)
    out["volume_sha256"], out["volume_md5"] = volume_digests(driver, upstream_rbd, volume.name)

    image_service = cinder_glance.GlanceImageService()
    # as cinder-api's copy_volume_to_image creates the image before casting to the volume service
    meta = {"name": "from-volume", "disk_format": "raw", "container_format": "bare",
            "visibility": "private", "protected": False}
    image_meta = image_service.create(ctx, meta)
    image_id = image_meta["id"]
    out["image_id"] = image_id
    ours = {volume.name, image_id}
    cleanup.append(lambda: image_service.delete(ctx, image_id))

    t0 = time.monotonic()
    driver.copy_volume_to_image(ctx, volume, image_service, image_meta)
    out["upload_seconds"] = time.monotonic() - t0

    client = cinder_glance.GlanceClientWrapper()
    if spec.get("mode") == "chain":
        return dict(out, **chain(spec, ctx, driver, image_service, client, vtype, volume,
                                 image_id, cleanup))
    image = dict(client.call(ctx, "get", image_id))
    out["image_status"] = image["status"]
    out["direct_url"] = image.get("direct_url")
    out["image_size"] = image.get("size")
    out["image_sha256"] = image_sha256(image_service, ctx, image_id)
    out["image_parent"] = rbd_parent(driver, upstream_rbd, spec["glance_pool"], image_id)

    # later writes to the volume must not change the image
    with upstream_rbd.RBDVolumeProxy(driver, volume.name) as v:
        v.write(os.urandom(MiB), 0)
    out["image_sha256_after_volume_write"] = image_sha256(image_service, ctx, image_id)

    # Glance computes checksum/hash (on the way in, or afterwards with do_secure_hash);
    # the image must not be deleted while that task still reads it
    out["image_checksum"] = wait_checksum(client, ctx, image_id, spec.get("hash_timeout", 300))

    if spec.get("delete_order") == "image-first":
        # the image goes first: the volume then has no dependent and deletes as upstream's
        image_service.delete(ctx, image_id)
        wait_gone(driver, spec["glance_pool"], image_id)
        out["volumes_before_delete"] = pool_state(driver, spec["cinder_pool"], ours)
        t0 = time.monotonic()
        driver.delete_volume(volume)
        out["delete_seconds"] = time.monotonic() - t0
        out["volumes_after_delete"] = pool_state(driver, spec["cinder_pool"], ours)
        out["images_after_delete"] = pool_state(driver, spec["glance_pool"], ours)
        return out

    out["volumes_before_delete"] = pool_state(driver, spec["cinder_pool"], ours)
    t0 = time.monotonic()
    if spec.get("delete_with") == "upstream":  # upstream's RBDDriver, a driver of its own
        from cinder import db
        from oslo_utils import importutils
        upstream = importutils.import_object("cinder.volume.drivers.rbd.RBDDriver",
                                             configuration=config, db=db,
                                             host=f"cinder-test@{backend}")
        upstream.do_setup(ctx)
        upstream.delete_volume(volume)
    else:
        driver.delete_volume(volume)
    out["delete_seconds"] = time.monotonic() - t0
    out["volumes_after_delete"] = pool_state(driver, spec["cinder_pool"], ours)
    # not flattened: a clone keeps its parent (now in the trash)
    out["image_parent_after_volume_delete"] = rbd_parent(driver, upstream_rbd, spec["glance_pool"],
                                                         image_id)
    out["image_sha256_after_volume_delete"] = image_sha256(image_service, ctx, image_id)

    image_service.delete(ctx, image_id)
    wait_gone(driver, spec["glance_pool"], image_id)
    # the driver's periodic purge (started by check_for_setup_error) removes a volume
    # trashed for its images once they are gone; wait for it, bounded
    deadline = time.monotonic() + spec.get("purge_timeout", 60)
    while (pool_state(driver, spec["cinder_pool"], ours)["trash"]
           and time.monotonic() < deadline):
        time.sleep(0.5)
    out["volumes_after_purge"] = pool_state(driver, spec["cinder_pool"], ours)
    out["images_after_purge"] = pool_state(driver, spec["glance_pool"], ours)
    return out


def chain(spec, ctx, driver, image_service, client, vtype, volume, image_id, cleanup):
    """volume -> image -> volume -> image, each step as Cinder runs it: the second volume
    from the image through the driver's clone_image (the create-from-image flow's first
    try), the second image by copy_volume_to_image. Reports each link's parent and data."""
    from cinder import objects
    from cinder.volume.drivers import rbd as upstream_rbd
    out = {"image1_parent": rbd_parent(driver, upstream_rbd, spec["glance_pool"], image_id)}
    second = objects.Volume(ctx, size=spec["size_gb"], host=volume.host, status="creating",
                            attach_status="detached", volume_type_id=vtype.id,
                            project_id=spec["project_id"], user_id="cinder-test",
                            display_name="from-image", availability_zone="nova")
    second.create()
    second = objects.Volume.get_by_id(ctx, second.id)
    # as create_volume's flow asks the driver first (CreateVolumeFromSpecTask._clone_image_volume)
    _update, cloned = driver.clone_image(ctx, second, image_service.get_location(ctx, image_id),
                                         image_service.show(ctx, image_id), image_service)
    cleanup.append(lambda: driver.delete_volume(second))
    second.status = "available"
    second.save()
    out.update(volume2=second.name, volume2_cloned=cloned)
    out["volume2_parent"] = rbd_parent(driver, upstream_rbd, spec["cinder_pool"], second.name)
    meta = {"name": "from-volume-2", "disk_format": "raw", "container_format": "bare",
            "visibility": "private", "protected": False}
    image2_id = image_service.create(ctx, meta)["id"]
    cleanup.append(lambda: image_service.delete(ctx, image2_id))
    driver.copy_volume_to_image(ctx, second, image_service, dict(meta, id=image2_id))
    image2 = dict(client.call(ctx, "get", image2_id))
    out.update(image2_id=image2_id, image2_status=image2["status"],
               image2_parent=rbd_parent(driver, upstream_rbd, spec["glance_pool"], image2_id),
               image2_sha256=image_sha256(image_service, ctx, image2_id))
    # every link goes, leaves first
    for undo in reversed(cleanup):
        undo()
    cleanup.clear()
    names = {volume.name, second.name, image_id, image2_id}
    for pool, name in ((spec["glance_pool"], image2_id), (spec["glance_pool"], image_id)):
        wait_gone(driver, pool, name)
    out["after_deletes"] = {"volumes": pool_state(driver, spec["cinder_pool"], names),
                            "images": pool_state(driver, spec["glance_pool"], names)}
    return out


def volume_digests(driver, upstream_rbd, name):
    sha, md5 = hashlib.sha256(), hashlib.md5()
    with upstream_rbd.RBDVolumeProxy(driver, name, read_only=True) as v:
        size = v.size()
        for off in range(0, size, 8 * MiB):
            data = v.read(off, min(8 * MiB, size - off))
            sha.update(data)
            md5.update(data)
    return sha.hexdigest(), md5.hexdigest()


def image_sha256(image_service, ctx, image_id):
    sha = hashlib.sha256()
    for chunk in image_service.download(ctx, image_id):
        sha.update(chunk)
    return sha.hexdigest()


def rbd_parent(driver, upstream_rbd, pool, name):
    with upstream_rbd.RBDVolumeProxy(driver, name, pool=pool, read_only=True) as img:
        try:
            spec = img.get_parent_image_spec()
        except driver.rbd.ImageNotFound:
            return None
        return f"{spec['pool_name']}/{spec['image_name']}"


def wait_checksum(client, ctx, image_id, timeout):
    deadline = time.monotonic() + timeout
    while True:
        image = dict(client.call(ctx, "get", image_id))
        if image.get("checksum") and image.get("os_hash_value"):
            return image["checksum"]
        if time.monotonic() > deadline:
            return None
        time.sleep(0.5)


def wait_gone(driver, pool, name, timeout=60):
    from cinder.volume.drivers import rbd as upstream_rbd
    deadline = time.monotonic() + timeout
    with upstream_rbd.RADOSClient(driver, pool) as client:
        while name in driver.RBDProxy().list(client.ioctx) and time.monotonic() < deadline:
            time.sleep(0.2)


def pool_state(driver, pool, names):
    """Images named `names` with their snapshots (every namespace), and their trash entries.

    Only this run's names: the session's cluster is shared with other tests.
    """
    from cinder.volume.drivers import rbd as upstream_rbd
    with upstream_rbd.RADOSClient(driver, pool) as client:
        images = {}
        for name in driver.RBDProxy().list(client.ioctx):
            if name not in names:
                continue
            with upstream_rbd.RBDVolumeProxy(driver, name, ioctx=client.ioctx,
                                             client=client.cluster, read_only=True) as img:
                images[name] = [s["name"] if s.get("namespace", 0) == 0 else
                                f"trash:{s.get('trash', {}).get('original_name')}"
                                for s in img.list_snaps()]
        trash = [e["name"] for e in driver.RBDProxy().trash_list(client.ioctx) if e["name"] in names]
    return {"images": images, "trash": trash}


def run_script(name, run, spec_path, always_clean=False):
    """A runner's main: run(spec, cleanup) -> its JSON on stdout. On failure one line on
    stderr (the test's failure message), the traceback in SPEC["traceback_file"], and
    what the run created is undone (always_clean: on success too), so that later tests
    see clean pools."""
    with open(spec_path) as f:
        spec = json.load(f)
    # a native crash (SIGSEGV, SIGABRT) writes every thread's Python stack here; the
    # test's failure message quotes it (tests/cinder_peer.py)
    crash_file = open(spec["traceback_file"] + ".crash", "w")
    faulthandler.enable(file=crash_file, all_threads=True)
    cleanup = []
    try:
        result = run(spec, cleanup)
    except Exception as e:
        import traceback
        with open(spec["traceback_file"], "w") as f:
            traceback.print_exc(file=f)
            for undo in reversed(cleanup):
                try:
                    undo()
                except Exception:
                    traceback.print_exc(file=f)
        _stop_periodic_tasks()
        print(f"{name}: {type(e).__name__}: {e}".splitlines()[0], file=sys.stderr)
        sys.exit(1)
    for undo in reversed(cleanup) if always_clean else ():
        try:
            undo()
        except Exception:  # already gone with the run's own deletes
            pass
    _stop_periodic_tasks()
    print(json.dumps(result))


if __name__ == "__main__":
    run_script("cinder_peer_run", main, sys.argv[1])
