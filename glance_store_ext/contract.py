"""The wire contract between the Glance side and the Cinder side.

Two things are written once here and imported by both sides:

* the JSON Schemas of ``GET /v2/info/stores`` and ``GET /v2/info/stores/detail``,
  shaped exactly as upstream Glance 33 (glance/api/v2/discovery.py) shapes them;
* the ``rbd://`` location codec, byte-for-byte what glance_store's rbd
  ``StoreLocation.get_uri``/``parse_uri`` produce and accept.

Kept light on purpose: no glance_store, no oslo import.
"""

import dataclasses
import urllib.parse

import jsonschema

__all__ = [
    "ContractError", "STORES_SCHEMA", "STORES_DETAIL_SCHEMA", "PROPERTY_SCHEMAS",
    "validate_stores", "validate_stores_detail", "RBDLocation",
    "STORES_DETAIL_READER_SCHEMA", "RBD_READER_SCHEMA", "read_stores_detail", "read_rbd_store",
]


class ContractError(ValueError):
    """A document or location does not follow the wire contract; the message names where."""


_STRING_OR_NULL = {"type": ["string", "null"]}
_INT = {"type": "integer"}
_BOOL = {"type": "boolean"}


def _props(required, optional=None):
    props = dict(required)
    props.update(optional or {})
    return {"type": "object", "properties": props, "required": sorted(required),
            "additionalProperties": False}


# Per store type: the keys upstream Glance 33 reports (all required), plus ours.
# `user` is optional so that an upstream Glance 33 (which does not send it)
# still satisfies the contract.
PROPERTY_SCHEMAS = {
    "rbd": _props({"pool": {"type": "string"}, "chunk_size": _INT,
                   "thin_provisioning": _BOOL, "fsid": _STRING_OR_NULL},
                  {"user": _STRING_OR_NULL}),
    # data_dir is null when the store uses filesystem_store_datadirs (upstream: 500)
    "file": _props({"data_dir": _STRING_OR_NULL, "chunk_size": _INT, "thin_provisioning": _BOOL}),
    "cinder": _props({"volume_type": _STRING_OR_NULL, "use_multipath": _BOOL}),
    "swift": _props({"container": _STRING_OR_NULL, "large_object_size": _INT,
                     "large_object_chunk_size": _INT}),
    "s3": _props({"s3_store_large_object_size": _INT, "s3_store_large_object_chunk_size": _INT,
                  "s3_store_thread_pools": _INT}),
    "http": _props({}),
}

_STORE_ITEM = {
    "id": {"type": "string", "minLength": 1},
    "description": {"type": "string"},
    "default": {"const": "true"},
    "read-only": {"const": "true"},
}

STORES_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "GET /v2/info/stores",
    "type": "object",
    "required": ["stores"],
    "additionalProperties": False,
    "properties": {
        "stores": {
            "type": "array",
            "items": {"type": "object", "required": ["id"], "additionalProperties": False,
                      "properties": _STORE_ITEM},
        },
    },
}

STORES_DETAIL_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "GET /v2/info/stores/detail",
    "type": "object",
    "required": ["stores"],
    "additionalProperties": False,
    "properties": {
        "stores": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "type", "properties", "weight"],
                "additionalProperties": False,
                "properties": dict(_STORE_ITEM, **{
                    "type": {"type": "string", "minLength": 1},
                    # unknown store types (vmware, third-party): any object
                    "properties": {"type": "object"},
                    "weight": _INT,
                }),
                "allOf": [
                    {"if": {"properties": {"type": {"const": name}}, "required": ["type"]},
                     "then": {"properties": {"properties": schema}}}
                    for name, schema in sorted(PROPERTY_SCHEMAS.items())
                ],
            },
        },
    },
}

_VALIDATORS = {}


def _validator(schema):
    key = id(schema)
    if key not in _VALIDATORS:
        cls = jsonschema.validators.validator_for(schema)
        cls.check_schema(schema)
        _VALIDATORS[key] = cls(schema)
    return _VALIDATORS[key]


def _validate(schema, doc, what):
    error = jsonschema.exceptions.best_match(_validator(schema).iter_errors(doc))
    if error is not None:
        raise ContractError(f"{what}: {error.json_path}: {error.message}")
    # what a schema cannot say: ids are unique, at most one default store
    seen = set()
    defaults = 0
    for i, store in enumerate(doc["stores"]):
        if store["id"] in seen:
            raise ContractError(f"{what}: $.stores[{i}].id: duplicate store id {store['id']!r}")
        seen.add(store["id"])
        defaults += store.get("default") == "true"
        if defaults > 1:
            raise ContractError(f"{what}: $.stores[{i}].default: more than one store is the default")
    return doc


def validate_stores(doc):
    """Check a ``GET /v2/info/stores`` body; returns it, or raises ContractError naming the JSON path."""
    return _validate(STORES_SCHEMA, doc, "stores")


def validate_stores_detail(doc):
    """Check a ``GET /v2/info/stores/detail`` body; returns it, or raises ContractError naming the JSON path."""
    return _validate(STORES_DETAIL_SCHEMA, doc, "stores detail")


# -- the tolerant reader (the Cinder side) -------------------------------------------------
# The schemas above are what our service writes (its tests hold it to them). A reader
# checks only what it uses and ignores the rest, as Glance's own clients do: the day
# Glance adds a field to a store, uploads must keep cloning. What the decision reads:
# each store's id (and default, type) to pick one, then the picked rbd store's pool,
# chunk_size, fsid and user.
STORES_DETAIL_READER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "GET /v2/info/stores/detail, as the Cinder side reads it",
    "type": "object",
    "required": ["stores"],
    "properties": {
        "stores": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id"],
                "properties": {
                    "id": {"type": "string", "minLength": 1},
                    "type": {"type": "string"},
                    "properties": {"type": "object"},
                },
            },
        },
    },
}

RBD_READER_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "an rbd store of GET /v2/info/stores/detail, as the Cinder side reads it",
    "type": "object",
    "required": ["id", "type", "properties"],
    "properties": {
        "properties": {
            "type": "object",
            "required": ["pool", "chunk_size"],
            "properties": {
                "pool": {"type": "string", "minLength": 1},
                "chunk_size": {"type": "integer", "minimum": 0},
                "fsid": _STRING_OR_NULL,
                "user": _STRING_OR_NULL,
            },
        },
    },
}


def read_stores_detail(doc):
    """Check what a reader of ``GET /v2/info/stores/detail`` uses (each store's id, at most
    one default); unknown fields anywhere are ignored. Returns doc or raises ContractError."""
    return _validate(STORES_DETAIL_READER_SCHEMA, doc, "stores detail")


def read_rbd_store(store, index=None):
    """Check the fields of one rbd store that a clone needs; the rest is ignored."""
    error = jsonschema.exceptions.best_match(_validator(RBD_READER_SCHEMA).iter_errors(store))
    if error is not None:
        where = f"$.stores[{index}]" if index is not None else "$"
        path = error.json_path[1:] if error.json_path.startswith("$") else error.json_path
        raise ContractError(f"stores detail: {where}{path}: {error.message}")
    return store


_RBD_PREFIX = "rbd://"


def _quote(part):
    # glance_store quotes with safe='' so that no part can contain '/'
    return urllib.parse.quote(part, "")


@dataclasses.dataclass(frozen=True)
class RBDLocation:
    """An rbd:// image location: either all four parts, or the short form with only `image`."""

    fsid: "str | None"
    pool: "str | None"
    image: str
    snapshot: "str | None"

    def __post_init__(self):
        parts = {"fsid": self.fsid, "pool": self.pool, "image": self.image, "snapshot": self.snapshot}
        for name, value in parts.items():
            if value is not None and not isinstance(value, str):
                raise ContractError(f"rbd location: {name} must be a string, got {type(value).__name__}")
            if value == "":
                raise ContractError(f"rbd location: {name} is empty")
        if self.image is None:
            raise ContractError("rbd location: image is missing")
        given = [n for n in ("fsid", "pool", "snapshot") if parts[n] is not None]
        if given and len(given) != 3:
            missing = sorted({"fsid", "pool", "snapshot"} - set(given))
            raise ContractError(f"rbd location: {', '.join(missing)} missing; "
                                "give fsid, pool and snapshot together or none of them")
        if not given and "/" in self.image:
            # glance_store would write rbd://a/b, which it cannot read back
            raise ContractError(f"rbd location: image {self.image!r} contains '/' and no fsid/pool/snapshot")

    @property
    def url(self):
        """The URL exactly as glance_store's rbd StoreLocation.get_uri writes it."""
        if self.fsid is not None:
            return _RBD_PREFIX + "/".join(map(_quote, (self.fsid, self.pool, self.image, self.snapshot)))
        return _RBD_PREFIX + self.image

    @classmethod
    def parse(cls, url):
        """Read a location the way glance_store's rbd StoreLocation.parse_uri does."""
        if not isinstance(url, str):
            raise ContractError(f"rbd location: expected a string, got {type(url).__name__}")
        if not url.startswith(_RBD_PREFIX):
            raise ContractError(f"rbd location {url!r}: must start with {_RBD_PREFIX!r}")
        pieces = url[len(_RBD_PREFIX):].split("/")
        if len(pieces) not in (1, 4):
            raise ContractError(f"rbd location {url!r}: must have exactly 1 or 4 components, "
                                f"has {len(pieces)}")
        if any(p == "" for p in pieces):
            raise ContractError(f"rbd location {url!r}: cannot contain empty components")
        if len(pieces) == 1:
            # glance_store does not unquote the short form
            return cls(None, None, pieces[0], None)
        return cls(*map(urllib.parse.unquote, pieces))
