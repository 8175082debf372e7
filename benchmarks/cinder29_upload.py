"""Upstream's path, timed: real Cinder 29's RBDDriver.copy_volume_to_image for an existing volume.

    .peers/cinder29/bin/python benchmarks/cinder29_upload.py SPEC.json

Run by benchmarks/upload_volume_to_image.py inside the Cinder 29 venv (Cinder is never
imported into the project's venv). SPEC: config_file (a cinder.conf whose backend uses
volume_driver = cinder.volume.drivers.rbd.RBDDriver and [glance] noauth towards the
Glance peer), backend, keyring, volume_id (the volume volume-<id> already exists in the
pool, filled with data), size_gb, project_id, work_dir. Prints one JSON line:
{"image_id", "seconds", "status", "size"}: seconds is copy_volume_to_image alone,
what cinder-volume spends between the RPC and the image going active.
"""

import json
import sys
import time


def main(spec_path):
    # as cinder/cmd/volume.py starts
    from cinder import monkey_patch
    monkey_patch.patch()
    with open(spec_path) as f:
        spec = json.load(f)

    from oslo_config import cfg
    from oslo_log import log as logging
    from oslo_utils import importutils

    from cinder import objects
    objects.register_all()
    from cinder import context as cinder_context
    from cinder import db
    from cinder.db import api as db_api
    from cinder.db import migration
    from cinder.image import glance as cinder_glance
    from cinder.volume import configuration
    from cinder.volume import manager
    from cinder.volume import volume_types

    conf = cfg.CONF
    logging.register_options(conf)
    conf(["--config-file", spec["config_file"]], project="cinder")
    logging.setup(conf, "cinder")
    migration.db_sync()

    backend = spec["backend"]
    config = configuration.Configuration(manager.volume_backend_opts, config_group=backend)
    config.rbd_keyring_conf = spec["keyring"]  # os-brick opens the volume with it
    host = f"bench@{backend}"
    driver = importutils.import_object(config.volume_driver, configuration=config, db=db, host=host)
    ctx = cinder_context.RequestContext(user_id="bench", project_id=spec["project_id"], is_admin=True)
    driver.do_setup(ctx)
    driver.check_for_setup_error()

    vtype = volume_types.create(ctx, f"{backend}-{time.time_ns()}", {"volume_backend_name": backend})
    # the Volume row for the existing RBD image volume-<volume_id>, as `cinder-manage volume
    # manage` would record it (Volume.create() refuses a preset id)
    db_api.volume_create(ctx, {"id": spec["volume_id"], "size": spec["size_gb"], "host": f"{host}#{backend}",
                           "status": "uploading", "attach_status": "detached", "volume_type_id": vtype.id,
                           "project_id": spec["project_id"], "user_id": "bench",
                           "availability_zone": "nova"})
    volume = objects.Volume.get_by_id(ctx, spec["volume_id"])

    image_service = cinder_glance.GlanceImageService()
    meta = image_service.create(ctx, {"name": "bench-upstream", "disk_format": "raw",
                                      "container_format": "bare", "visibility": "private"})
    t0 = time.monotonic()
    driver.copy_volume_to_image(ctx, volume, image_service, meta)
    seconds = time.monotonic() - t0
    image = dict(cinder_glance.GlanceClientWrapper().call(ctx, "get", meta["id"]))
    return {"image_id": meta["id"], "seconds": seconds, "status": image["status"], "size": image.get("size")}


if __name__ == "__main__":
    try:
        print(json.dumps(main(sys.argv[1])))
    except Exception as exc:  # one line for the caller; nothing here owns data to clean
        print(f"cinder29_upload: {type(exc).__name__}: {exc}".splitlines()[0], file=sys.stderr)
        sys.exit(1)
