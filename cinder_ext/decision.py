"""Clone or copy? A pure function of what was fetched; no I/O here.

``decide()`` returns ``Clone`` (where to clone to; ``flatten``: an independent image, see
cinder_ext.independent) or ``Copy(reason, detail)``. Every reason is one of the constants
below, stable for logs, JSON results and tests.
"""

import dataclasses
import re

from glance_store_ext.contract import ContractError, read_rbd_store, read_stores_detail

# reasons, in the order the checks run
OPTION_DISABLED = "optimization-disabled"
STORES_UNAVAILABLE = "stores-detail-unavailable"   # Glance refused or failed the request
STORES_INVALID = "stores-detail-invalid"           # body does not follow the contract
STORE_NOT_FOUND = "store-not-found"                # named store absent, or no default
STORE_NOT_RBD = "store-not-rbd"
STORE_FSID_UNKNOWN = "store-fsid-unknown"          # rbd store without fsid (Glance did not say)
OTHER_CLUSTER = "store-in-other-cluster"
DISK_FORMAT = "disk-format-not-raw"
CONTAINER_FORMAT = "container-format-not-bare"
VOLUME_ENCRYPTED = "volume-encrypted"
IMAGE_NOT_QUEUED = "image-not-queued"
CLONE_CHAIN_TOO_DEEP = "clone-chain-too-deep"      # the image would pass rbd_max_clone_depth
UPLOAD_SNAPSHOTS_AT_LIMIT = "upload-snapshots-at-limit"  # the volume holds rbd_max_upload_snapshots
# why a Clone is flattened: one of the two above, or the operator asked for it
FLATTEN_REQUESTED = "rbd_flatten_volume_to_image"
# set by upload.py, not by decide(): the clone was tried, rolled back, and the copy ran
CLONE_FAILED = "clone-failed"

REASONS = (OPTION_DISABLED, STORES_UNAVAILABLE, STORES_INVALID, STORE_NOT_FOUND, STORE_NOT_RBD,
           STORE_FSID_UNKNOWN, OTHER_CLUSTER, DISK_FORMAT, CONTAINER_FORMAT, VOLUME_ENCRYPTED,
           IMAGE_NOT_QUEUED, CLONE_CHAIN_TOO_DEEP, UPLOAD_SNAPSHOTS_AT_LIMIT, CLONE_FAILED)


# how cinder_ext.glance words a 404 for the stores detail: what upstream Glance answers
# when it runs single-store ("Multi backend is not supported at this site."); glance-info-api
# reports a single-store Glance's one store (id "rbd", the default), so a 404 means the
# detail did not reach it
_DETAIL_NOT_FOUND = re.compile(r"^get stores detail: Glance answered 404\b")
SINGLE_STORE_HINT = ("Glance runs single-store ([glance_store] default_store, no "
                     "enabled_backends), for which upstream Glance has no stores detail: every "
                     "upload copies. Run glance-info-api beside Glance (it reports the single "
                     "store as 'rbd', the default) and route Glance's /v2/info/stores and "
                     "/v2/info/stores/detail to it; or make Glance multi-store: "
                     "[DEFAULT] enabled_backends = ceph:rbd, "
                     "[glance_store] default_backend = ceph, the rbd_store_* options in [ceph]")


@dataclasses.dataclass(frozen=True)
class Clone:
    store_id: str
    pool: str
    fsid: str
    chunk_size: int          # bytes: the clone's object size (before Cinder's stripe rule)
    user: "str | None" = None
    flatten: bool = False    # an independent image: flattened in Ceph before it is registered
    reason: "str | None" = None   # why flattened: CLONE_CHAIN_TOO_DEEP or FLATTEN_REQUESTED
    detail: str = ""


@dataclasses.dataclass(frozen=True)
class Copy:
    reason: str
    detail: str = ""

    def __str__(self):
        return f"{self.reason}: {self.detail}" if self.detail else self.reason


@dataclasses.dataclass(frozen=True)
class Volume:
    name: str
    encrypted: bool = False


def pick_store(stores, requested=None):
    """The store the request names, else the default one; None if there is none."""
    for store in stores:
        if requested is not None and store["id"] == requested:
            return store
        if requested is None and store.get("default") == "true":
            return store
    return None


def decide(enabled, stores_detail, volume, image, local_fsid, requested_store=None,
           stores_error=None, volume_depth=None, max_clone_depth=None, flatten=False,
           upload_snapshots=None, max_upload_snapshots=None):
    """Clone or Copy(reason).

    enabled:        enable_clone_optimization
    stores_detail:  the parsed body of GET /v2/info/stores/detail, or None if not fetched
    stores_error:   why it could not be fetched (str), when stores_detail is None
    volume:         Volume
    image:          the Glance image (dict: status, disk_format, container_format)
    local_fsid:     fsid of the Cinder backend's cluster
    requested_store: a store id named by the request (volume type image_service:store_id)
    volume_depth:   parent hops above the volume (create.clone_depth), None if not counted
    max_clone_depth: rbd_max_clone_depth; the image clone sits one hop below the volume
    flatten:        rbd_flatten_volume_to_image: every clone becomes an independent image
    upload_snapshots: upload snapshots the volume holds; max_upload_snapshots: its bound
    """
    if not enabled:
        return Copy(OPTION_DISABLED, "enable_clone_optimization is off")
    if stores_detail is None:
        if stores_error and _DETAIL_NOT_FOUND.match(stores_error):
            return Copy(STORES_UNAVAILABLE, f"{stores_error}. {SINGLE_STORE_HINT}")
        return Copy(STORES_UNAVAILABLE, stores_error or "stores detail not fetched")
    # a tolerant reader: only what is read below is checked, unknown fields are ignored
    # (a field Glance adds to any store must not turn every upload into a copy)
    try:
        read_stores_detail(stores_detail)
    except ContractError as e:
        return Copy(STORES_INVALID, str(e))
    store = pick_store(stores_detail["stores"], requested_store)
    if store is None:
        return Copy(STORE_NOT_FOUND, f"Glance has no store {requested_store!r}" if requested_store
                    else "Glance reports no default store")
    if store.get("type") != "rbd":
        return Copy(STORE_NOT_RBD, f"store {store['id']!r} is of type {store.get('type')!r}")
    try:
        read_rbd_store(store, stores_detail["stores"].index(store))
    except ContractError as e:
        return Copy(STORES_INVALID, str(e))
    props = store["properties"]
    if not props.get("fsid"):
        return Copy(STORE_FSID_UNKNOWN, f"store {store['id']!r} does not report its Ceph fsid")
    if props["fsid"] != local_fsid:
        return Copy(OTHER_CLUSTER, f"store {store['id']!r} is in cluster {props['fsid']}, "
                                   f"the volume in {local_fsid}")
    if image.get("disk_format") != "raw":
        return Copy(DISK_FORMAT, f"disk_format is {image.get('disk_format')!r}")
    if image.get("container_format") != "bare":
        return Copy(CONTAINER_FORMAT, f"container_format is {image.get('container_format')!r}")
    if volume.encrypted:
        return Copy(VOLUME_ENCRYPTED, f"volume {volume.name} is encrypted")
    if image.get("status") != "queued":
        return Copy(IMAGE_NOT_QUEUED, f"image status is {image.get('status')!r}")
    why = {}
    if (volume_depth is not None and max_clone_depth is not None
            and volume_depth + 1 > max_clone_depth):
        # Cinder flattens a volume past the bound; the image is flattened inside Ceph
        # before Glance has it (an independent image), as fast as Ceph copies
        why = dict(flatten=True, reason=CLONE_CHAIN_TOO_DEEP,
                   detail=f"the image would be clone {volume_depth + 1} deep "
                          f"(rbd_max_clone_depth {max_clone_depth})")
    elif (upload_snapshots is not None and max_upload_snapshots is not None
            and upload_snapshots >= max_upload_snapshots):
        why = dict(flatten=True, reason=UPLOAD_SNAPSHOTS_AT_LIMIT,
                   detail=f"the volume holds {upload_snapshots} upload snapshots "
                          f"(rbd_max_upload_snapshots {max_upload_snapshots})")
    elif flatten:
        why = dict(flatten=True, reason=FLATTEN_REQUESTED,
                   detail="rbd_flatten_volume_to_image is on")
    return Clone(store_id=store["id"], pool=props["pool"], fsid=props["fsid"],
                 chunk_size=props["chunk_size"], user=props.get("user"), **why)
