"""cinder-rbd-clone: upload a Cinder RBD volume to a Glance image, by clone when it can.

    cinder-rbd-clone --config-file cinder.conf create-image NAME [--disk-format raw] ...
    cinder-rbd-clone --config-file cinder.conf upload VOLUME IMAGE_ID [--store ID]
    cinder-rbd-clone --config-file cinder.conf audit --glance-config glance-api.conf [--json]
    cinder-rbd-clone --config-file cinder.conf create-volume IMAGE_ID VOLUME [--size GB]
    cinder-rbd-clone --config-file cinder.conf delete-volume VOLUME [--mode deferred|flatten]
    cinder-rbd-clone --config-file cinder.conf purge [--image-pool POOL] [--dry-run] [--budget S]
    cinder-rbd-clone --config-file cinder.conf flatten-uploads [--image-pool POOL] [--dry-run]
    cinder-rbd-clone --config-file cinder.conf adopt [--image-pool POOL] [--dry-run]

Prints one JSON document on stdout; errors are one line on stderr, exit status 1.
"""

import argparse
import json
import logging
import sys
import time

from cinder_ext import audit
from cinder_ext import exceptions as exc
from cinder_ext import opts


class _Progress:
    """A one-line progress bar on a TTY (stderr), nothing otherwise."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.enabled = stream.isatty()
        self.t0 = time.monotonic()
        self.last = 0.0

    def __call__(self, sent, size):
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and sent < size):
            return
        self.last = now
        frac = sent / size if size else 1.0
        bar = "#" * int(frac * 30)
        rate = sent / max(now - self.t0, 1e-6) / 2**20
        self.stream.write(f"\rcopy [{bar:<30}] {frac * 100:5.1f}% {sent / 2**20:,.0f} MiB "
                          f"{rate:,.0f} MiB/s")
        if sent >= size:
            self.stream.write("\n")
        self.stream.flush()


def _parser():
    p = argparse.ArgumentParser(prog="cinder-rbd-clone", description=__doc__.splitlines()[0])
    p.add_argument("--config-file", action="append", required=True, metavar="FILE",
                   help="cinder.conf-style file (repeatable)")
    p.add_argument("--backend", help="backend section (default: first of enabled_backends)")
    p.add_argument("--debug", action="store_true", help="log at debug level on stderr")
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("upload", help="upload a volume to a queued image")
    up.add_argument("volume", metavar="VOLUME", help="volume id (volume-<id>) or RBD image name")
    up.add_argument("image_id", metavar="IMAGE_ID")
    up.add_argument("--store", help="Glance store id to target (as image_service:store_id)")
    enc = up.add_mutually_exclusive_group()
    enc.add_argument("--encrypted", dest="encrypted", action="store_true", default=None,
                     help="the volume is encrypted (default: detect a LUKS header)")
    enc.add_argument("--not-encrypted", dest="encrypted", action="store_false")

    audit.add_subparser(sub)

    cv = sub.add_parser("create-volume", help="create a volume from an image (clone when it can)")
    cv.add_argument("image_id", metavar="IMAGE_ID")
    cv.add_argument("volume", metavar="VOLUME", help="volume id (volume-<id>) or RBD image name")
    cv.add_argument("--size", type=float, metavar="GB",
                    help="size in GiB (default: the image's, rounded up)")

    dv = sub.add_parser("delete-volume", help="delete a volume, even one images were cloned from")
    dv.add_argument("volume", metavar="VOLUME")
    dv.add_argument("--mode", choices=("deferred", "flatten"), default="deferred",
                    help="deferred (default): to the RBD trash in constant time, purged once "
                         "no clone needs it; flatten: flatten the clones first (O(size))")

    pg = sub.add_parser("purge", help="reclaim what deletions and failed uploads left once "
                                      "nothing needs it (both pools)")
    pg.add_argument("--image-pool", action="append", default=None, metavar="POOL",
                    help="Glance pool to purge too (repeatable; default: the pools of "
                         "Glance's rbd stores whose fsid is this cluster's, from the stores "
                         "detail)")
    pg.add_argument("--dry-run", action="store_true",
                    help="print what would be removed, and why; remove nothing")
    pg.add_argument("--budget", type=_seconds, default=None, metavar="SECONDS",
                    help="stop starting new failed uploads and Glance trash entries after "
                         "SECONDS; the next purge goes on where this one stopped "
                         "(JSON unfinished counts what waits)")

    for name, what, dry_run in (
            ("flatten-uploads", "make every clone-uploaded image independent of its volume "
             "(flatten inside Ceph), e.g. before going back to upstream's driver",
             "list and count them; flatten nothing"),
            ("adopt", "journal the clone uploads an earlier release made, so that the purge "
             "knows them (once, after an upgrade from 0.2; --dry-run first)",
             "list what would be adopted; write nothing")):
        sp = sub.add_parser(name, help=what)
        sp.add_argument("--image-pool", action="append", default=None, metavar="POOL",
                        help="Glance pool to look in (repeatable; default: as for purge)")
        sp.add_argument("--dry-run", action="store_true", help=dry_run)

    ci = sub.add_parser("create-image", help="create a queued image to upload into")
    ci.add_argument("name")
    ci.add_argument("--disk-format", default="raw")
    ci.add_argument("--container-format", default="bare")
    ci.add_argument("--property", action="append", default=[], metavar="KEY=VALUE")
    return p


def _glance_or_none(conf):
    from cinder_ext.glance import Glance
    try:
        return Glance(conf)
    except exc.CinderExtError as e:
        logging.getLogger(__name__).warning("purge without Glance (%s): failed uploads' "
                                            "orphans are left for a later purge", e)
        return None


def _image_pools(glance, cluster):
    """Pools of Glance's rbd stores in our cluster (best effort: [] when Glance will not say)."""
    if glance is None:
        return []
    try:
        detail = glance.stores_detail()
    except exc.CinderExtError as e:
        logging.getLogger(__name__).warning("purge: no stores detail (%s); pass --image-pool "
                                            "to purge Glance pools", e)
        return []
    from cinder_ext.purge import image_pools
    return image_pools(detail, cluster.fsid())


def _volume_command(args, conf, backend):
    from cinder_ext import delete, purge
    from cinder_ext.upload import connect, volume_name
    with connect(backend) as cluster:
        if args.command == "create-volume":
            from cinder_ext.create import create_volume_from_image
            return create_volume_from_image(conf, backend, args.image_id, args.volume,
                                            args.size, cluster=cluster)
        if args.command == "delete-volume":
            delay = backend.deferred_deletion_delay if backend.enable_deferred_deletion else 0
            return delete.delete_volume(cluster, backend.rbd_pool, volume_name(args.volume),
                                        args.mode, delay, backend.rbd_concurrent_flatten_operations)
        glance = _glance_or_none(conf)
        pools = args.image_pool if args.image_pool is not None else _image_pools(glance, cluster)
        if args.command == "adopt":
            from cinder_ext.journal import adopt
            return adopt(cluster, backend.rbd_pool, pools, args.dry_run)
        if args.command == "flatten-uploads":
            from cinder_ext.independent import flatten_uploads
            return flatten_uploads(cluster, backend.rbd_pool, pools,
                                   backend.rbd_concurrent_flatten_operations, args.dry_run)
        return purge.purge(cluster, backend.rbd_pool, pools,
                           include_unmarked=backend.enable_deferred_deletion,
                           glance=glance, dry_run=args.dry_run, budget=args.budget)


def _seconds(text):
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds (0 or more)")
    return value


def main(argv=None):
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.debug else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not args.debug:  # keystoneauth warns before we raise our own one-line error
        logging.getLogger("keystoneauth").setLevel(logging.ERROR)
    if args.command == "purge" and not args.debug:
        # every removal (or, with --dry-run, every planned one) as one line with its reason
        logging.getLogger("cinder_ext.purge").setLevel(logging.INFO)
    if args.command == "audit":  # reads both services' configs itself
        return args.func(args)
    try:
        conf, backend = opts.load(args.config_file, args.backend)
        if args.command == "create-image":
            from cinder_ext.glance import Glance
            props = dict(kv.split("=", 1) for kv in args.property if "=" in kv)
            image = Glance(conf).create_image(args.name, args.disk_format, args.container_format,
                                              **props)
            out = {"id": image["id"], "status": image["status"], "name": image.get("name")}
        elif args.command in ("create-volume", "delete-volume", "purge", "flatten-uploads",
                              "adopt"):
            out = _volume_command(args, conf, backend)
        else:
            from cinder_ext.upload import upload_volume
            out = upload_volume(conf, backend, args.volume, args.image_id, store_id=args.store,
                                encrypted=args.encrypted, progress=_Progress())
    except exc.CinderExtError as e:
        print(f"cinder-rbd-clone: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # oslo.config errors and the like: one line, no traceback
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        print(f"cinder-rbd-clone: error: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1
    print(json.dumps(out, indent=2, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
