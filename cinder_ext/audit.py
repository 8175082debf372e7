"""Audit the Ceph caps of the Glance and Cinder users against what upload-by-clone needs.

    python -m cinder_ext.audit --glance-config glance-api.conf --cinder-config cinder.conf \\
        [--admin-conf ceph.conf --admin-keyring KEYRING] [--json]

For each RBD store in glance-api.conf and each RBD backend in cinder.conf: the
pool, the Ceph user, that user's caps (``ceph auth get`` as the admin user),
what this feature needs of that user, and findings:

* missing: Cinder cannot write the Glance pool (needed to create the clone
  there), Glance cannot read the Cinder pool (a cloned image's parent lives
  there), either cannot use its own pool, mon caps without ``profile rbd``;
* excess: ``allow *``, grants without a pool restriction, write where read is
  enough, caps on pools that neither Glance nor Cinder uses (``--allow-pool``
  names the legitimate others, e.g. Nova's ``vms``);
* cluster: clone v2 unavailable (``require_min_compat_client`` older than
  mimic), a configured pool that does not exist, a store on another cluster;
* tool: excess caps that look like a deployment tool's own (devstack-plugin-ceph,
  OpenStack-Helm), with the ``ceph auth caps`` that fixes them.

Exit status: 0 clean, 1 findings, 2 usage, configuration or connection error
(one line on stderr). Keys are never read into the report: ``auth get`` answers
with the key, which is dropped on the spot.
"""

import argparse
import configparser
import dataclasses
import json
import re
import sys

__all__ = ["Grant", "CapsError", "parse_caps", "pool_access", "analyse", "add_subparser", "main",
           "run", "AuditError"]

PROG = "cinder-rbd-clone audit"

# Ceph releases in order, for require_min_compat_client
RELEASES = ("argonaut", "bobtail", "cuttlefish", "dumpling", "emperor", "firefly", "giant",
            "hammer", "infernalis", "jewel", "kraken", "luminous", "mimic", "nautilus",
            "octopus", "pacific", "quincy", "reef", "squid", "tentacle")

NONE, READ, WRITE = 0, 1, 2
LEVEL_NAMES = {NONE: "none", READ: "read", WRITE: "write"}


class AuditError(Exception):
    """The audit cannot run (usage, configuration, connection): one line, exit status 2."""


class CapsError(ValueError):
    """A caps string does not follow Ceph's grammar."""


# -- Ceph cap grammar -------------------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class Grant:
    """One grant of a caps string: ``allow <perms> [match]`` or ``profile <name> [match]``."""

    text: str
    profile: str = None                 # profile name, or None for an allow grant
    perms: frozenset = frozenset()      # r, w, x, class-read, class-write, *
    pool: str = None
    namespace: str = None
    object_prefix: str = None
    tag: tuple = None                   # (application, key, value)
    restricted: bool = False            # command/service/class/network/...: narrower than perms say

    @property
    def pool_wide(self):
        """Applies to whole pools' objects (no object prefix, no namespace restriction)."""
        return self.object_prefix is None and self.namespace in (None, "*")


_TOKEN = re.compile(r'\s*(?:"((?:[^"\\]|\\.)*)"|\'([^\']*)\'|(=)|([^\s="\']+))')
_PERM_LETTERS = re.compile(r"^[rwx]+$")


def _split_grants(caps):
    """Split on ',' and ';' outside quotes."""
    grants, current, quote = [], [], None
    for ch in caps:
        if quote:
            current.append(ch)
            if ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
            current.append(ch)
        elif ch in ",;":
            grants.append("".join(current))
            current = []
        else:
            current.append(ch)
    if quote:
        raise CapsError(f"unterminated quote in {caps!r}")
    grants.append("".join(current))
    return [g.strip() for g in grants]


def _tokens(text):
    out, pos = [], 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m or m.end() == pos:
            raise CapsError(f"cannot parse {text[pos:]!r}")
        pos = m.end()
        if m.group(3):
            out.append("=")
        else:
            out.append(next(g for g in (m.group(1), m.group(2), m.group(4)) if g is not None))
    return out


def _parse_grant(text):
    toks = _tokens(text)
    if not toks:
        raise CapsError("empty grant")
    # "key = value" and "key value" are both Ceph's grammar; normalise to [key, value]
    fields = {}
    perms, profile, restricted = set(), None, False
    i = 1
    if toks[0] == "allow" and len(toks) > 1 and toks[1] == "profile":
        toks = toks[1:]  # "allow profile rbd" is the older spelling of "profile rbd"
    head = toks[0]
    if head == "profile":
        j = 2 if len(toks) > 1 and toks[1] == "=" else 1
        if len(toks) <= j:
            raise CapsError(f"profile without a name in {text!r}")
        profile = toks[j]
        i = j + 1
    elif head != "allow":
        raise CapsError(f"a grant starts with 'allow' or 'profile': {text!r}")

    def value_after(j):
        if j < len(toks) and toks[j] == "=":
            j += 1
        if j >= len(toks):
            raise CapsError(f"{toks[j - 1]!r} without a value in {text!r}")
        return toks[j], j + 1

    while i < len(toks):
        tok = toks[i]
        if tok in ("pool", "namespace", "object_prefix"):
            if tok in fields:
                raise CapsError(f"{tok} given twice in {text!r}")
            fields[tok], i = value_after(i + 1)
        elif tok == "tag":
            rest = toks[i + 1:i + 5]  # <application> <key> = <value>
            if len(rest) < 4 or rest[2] != "=" or "=" in (rest[0], rest[1], rest[3]):
                raise CapsError(f"tag needs '<application> <key>=<value>' in {text!r}")
            fields["tag"] = (rest[0], rest[1], rest[3])
            i += 5
        elif profile is None and tok == "*":
            perms.add("*")
            i += 1
        elif profile is None and _PERM_LETTERS.match(tok):
            perms.update(tok)
            i += 1
        elif profile is None and tok in ("class-read", "class-write"):
            perms.add(tok)
            i += 1
        elif tok in ("class", "command", "service", "network", "with", "prefix", "module"):
            # narrower grants (one class, one mon command, one service, one network):
            # kept as written, counted as no pool-wide access
            restricted = True
            i = len(toks)
        else:
            raise CapsError(f"unexpected {tok!r} in {text!r}")
    if profile is None and not perms and not restricted:
        raise CapsError(f"'allow' without permissions in {text!r}")
    return Grant(text=" ".join(text.split()), profile=profile, perms=frozenset(perms),
                 pool=fields.get("pool"), namespace=fields.get("namespace"),
                 object_prefix=fields.get("object_prefix"), tag=fields.get("tag"),
                 restricted=restricted)


def parse_caps(caps):
    """Parse one service's caps string (``profile rbd pool=a, allow r``) into Grants.

    Empty or None: no grants. Raises CapsError on text Ceph would not accept.
    """
    if caps is None or not caps.strip():
        return []
    return [_parse_grant(g) for g in _split_grants(caps)]


def _rbd_level(grant):
    """What an RBD client can do to the objects a grant covers."""
    if grant.restricted:
        return NONE
    if grant.profile is not None:
        return {"rbd": WRITE, "rbd-read-only": READ}.get(grant.profile, WRITE if grant.profile in (
            "admin", "osd", "bootstrap-osd") else NONE)
    p = grant.perms
    if "*" in p:
        return WRITE
    class_read = "x" in p or "class-read" in p
    class_write = "x" in p or "class-write" in p
    if "r" in p and "w" in p and class_read and class_write:
        return WRITE
    if "r" in p and class_read:
        return READ  # librbd calls the rbd object class even to read
    return NONE


def _ns_matches(pattern, namespace=""):
    if pattern is None:
        return True
    if pattern.endswith("*"):
        return namespace.startswith(pattern[:-1])
    return pattern == namespace


def _tag_matches(tag, application="rbd"):
    if tag is None:
        return True
    app, key, value = tag
    # an RBD pool carries application 'rbd' without metadata: only wildcards match
    return app == application and key == "*" and value == "*"


def applies_to(grant, pool):
    """Whether `grant` covers the default namespace of RBD pool `pool` (all of its objects)."""
    return ((grant.pool is None or grant.pool == pool) and _ns_matches(grant.namespace)
            and grant.object_prefix is None and _tag_matches(grant.tag))


def pool_access(osd_grants, pool):
    """NONE, READ or WRITE: what an RBD client with these osd grants can do in `pool`."""
    return max([_rbd_level(g) for g in osd_grants if applies_to(g, pool)], default=NONE)


def _mon_state(mon_grants):
    """(can read the maps, can blocklist, grants that write the mon)."""
    read = blocklist = False
    writers = []
    for g in mon_grants:
        if g.profile is not None:
            read = True
            blocklist = blocklist or g.profile in ("rbd", "admin")
        elif "*" in g.perms:
            read = blocklist = True
            writers.append(g)
        elif g.restricted:
            blocklist = blocklist or "blocklist" in g.text or "blacklist" in g.text
        else:
            read = read or "r" in g.perms
            if g.perms & {"w", "x", "*"}:
                writers.append(g)
    return read, blocklist, writers


# -- the analysis (pure) ---------------------------------------------------------------------

@dataclasses.dataclass
class Need:
    user: str
    pool: str
    level: int
    why: str


def _finding(kind, user, message, pool=None):
    return {"kind": kind, "user": user, "pool": pool, "message": message}


def needs_of(entries):
    """What each user needs: [Need]. `entries`: dicts with service, pool, user, clone (cinder)."""
    needs = []
    glance = [e for e in entries if e["service"] == "glance" and e.get("audited", True)]
    cinder = [e for e in entries if e["service"] == "cinder" and e.get("audited", True)]
    for g in glance:
        needs.append(Need(g["user"], g["pool"], WRITE, "its own pool: stores and deletes images"))
    for c in cinder:
        needs.append(Need(c["user"], c["pool"], WRITE, "its own pool: volumes"))
        for g in glance:
            if c.get("clone"):
                needs.append(Need(c["user"], g["pool"], WRITE,
                                  f"creates the clone in the pool of Glance store {g['section']!r} "
                                  "(enable_clone_optimization)"))
                needs.append(Need(g["user"], c["pool"], READ,
                                  "a cloned image's parent lives in the pool of Cinder backend "
                                  f"{c['section']!r}"))
            else:
                needs.append(Need(c["user"], g["pool"], READ,
                                  "creates volumes from images (enable_clone_optimization off: "
                                  "read is enough)"))
    return needs


def analyse(entries, caps, cluster, allowed_pools=()):
    """Findings for users' caps against the needs of `entries`.

    entries: [{service, section, pool, user, clone, audited, ...}]
    caps: {user: {"mon": str, "osd": str, "mgr": str}} or {user: None} when the user does not exist
    cluster: {"require_min_compat_client": str, "pools": [names]}
    Returns (needs_by_user {user: {pool: (level, [why])}}, findings [dict]).
    """
    findings = []
    release = cluster.get("require_min_compat_client") or ""
    if release not in RELEASES or RELEASES.index(release) < RELEASES.index("mimic"):
        findings.append(_finding(
            "cluster", None,
            f"require_min_compat_client is {release or 'unset'} (older than mimic): clone v2 is "
            "unavailable, so every clone needs a protected snapshot of its volume "
            "(fix: ceph osd set-require-min-compat-client mimic)"))
    existing = set(cluster.get("pools") or ())
    for e in entries:
        if not e.get("audited", True):
            findings.append(_finding("cluster", e["user"], e["note"], e["pool"]))
        elif e["pool"] not in existing:
            findings.append(_finding("cluster", e["user"],
                                     f"pool {e['pool']} of {e['service']} {e['section']!r} does not "
                                     "exist", e["pool"]))

    by_user = {}
    for n in needs_of(entries):
        level, whys = by_user.setdefault(n.user, {}).get(n.pool, (NONE, []))
        by_user[n.user][n.pool] = (max(level, n.level), whys + [n.why])

    for user, pools in by_user.items():
        entity = f"client.{user}"
        user_caps = caps.get(user)
        if user_caps is None:
            findings.append(_finding("missing", entity, f"{entity} does not exist in the cluster"))
            continue
        try:
            osd = parse_caps(user_caps.get("osd"))
            mon = parse_caps(user_caps.get("mon"))
            mgr = parse_caps(user_caps.get("mgr"))
        except CapsError as exc:
            findings.append(_finding("missing", entity, f"{entity}'s caps cannot be parsed: {exc}"))
            continue

        read, blocklist, writers = _mon_state(mon)
        if not read:
            findings.append(_finding("missing", entity, f"{entity} has no mon read caps: it cannot "
                                                        "connect (needs mon 'profile rbd')"))
        elif not blocklist:
            findings.append(_finding("missing", entity,
                                     f"{entity}'s mon caps lack 'profile rbd': it cannot blocklist a "
                                     "dead client that holds an image's exclusive lock"))
        for g in writers:
            findings.append(_finding("excess", entity, f"mon '{g.text}' lets {entity} change the "
                                                       "cluster (needs mon 'profile rbd' only)"))
        for service, grants in (("osd", osd), ("mgr", mgr)):
            for g in grants:
                if "*" in g.perms and g.pool is None:
                    findings.append(_finding("excess", entity, f"{service} '{g.text}': {entity} may do "
                                                               "anything on every pool"))

        for pool, (need, whys) in sorted(pools.items()):
            have = pool_access(osd, pool)
            if have < need:
                verb = "write" if need == WRITE else "read"
                hint = ("profile rbd" if need == WRITE else "profile rbd-read-only")
                narrow = [g.text for g in osd if g.pool in (None, pool) and not applies_to(g, pool)
                          and _rbd_level(g) >= need]
                extra = (f"; grants limited to a namespace or object prefix do not cover the pool: "
                         f"{', '.join(narrow)}" if narrow else "")
                findings.append(_finding(
                    "missing", entity,
                    f"{entity} cannot {verb} pool {pool} ({'; '.join(whys)}): add osd "
                    f"'{hint} pool={pool}'{extra}", pool))
            elif have > need:
                which = [g.text for g in osd if applies_to(g, pool) and _rbd_level(g) > need]
                findings.append(_finding(
                    "excess", entity,
                    f"{entity} may write pool {pool} where read is enough ({'; '.join(whys)}): "
                    f"'{', '.join(which)}' -> osd 'profile rbd-read-only pool={pool}'", pool))

        known = set(pools) | set(allowed_pools)
        for service, grants in (("osd", osd), ("mgr", mgr)):
            for g in grants:
                if "*" in g.perms and g.pool is None:
                    continue  # reported above
                if g.pool is None and g.object_prefix is None and not g.restricted and (
                        service == "osd" and _rbd_level(g) > NONE or g.tag is not None):
                    findings.append(_finding(
                        "excess", entity, f"{service} '{g.text}' has no pool restriction: {entity} "
                                          "reaches every pool (name the pools it needs)"))
                elif g.pool is not None and g.pool not in known:
                    findings.append(_finding(
                        "excess", entity, f"{service} '{g.text}': pool {g.pool} is used by neither "
                                          "Glance nor Cinder here (or pass --allow-pool "
                                          f"{g.pool})", g.pool))
        if any(f["kind"] == "excess" and f["user"] == entity for f in findings):
            hint = _deployment_tool_hint(entity, osd, mon, pools)
            if hint:
                findings.append(_finding("tool", entity, hint))
    needs = {u: {p: {"level": LEVEL_NAMES[lv], "why": w} for p, (lv, w) in ps.items()}
             for u, ps in by_user.items()}
    return needs, findings


def _deployment_tool_hint(entity, osd, mon, pools):
    """Which deployment tool likely granted these excess caps, and what to change; or None.

    devstack-plugin-ceph gives every user it creates ``allow rwx`` on every pool it made,
    after ``allow class-read object_prefix rbd_children``, with mon ``allow r``;
    OpenStack-Helm's cinder chart (storage-init) grants ``profile rbd`` on no pool, and sets
    it again (``ceph auth caps``) each time the job runs.
    """
    wanted = ", ".join(f"profile rbd{'' if level == WRITE else '-read-only'} pool={pool}"
                       for pool, (level, _) in sorted(pools.items()))
    fix = f"ceph auth caps {entity} mon 'profile rbd' osd '{wanted}'"
    texts = [g.text for g in osd]
    if ("allow class-read object_prefix rbd_children" in texts
            and any(g.perms == {"r", "w", "x"} and g.pool for g in osd)
            and [g.text for g in mon] == ["allow r"]):
        return (f"{entity}'s caps look like devstack-plugin-ceph's (rwx on every pool it created, "
                "for every user; mon 'allow r'): right for a throwaway devstack, not for a cloud. "
                f"Outside devstack: {fix}")
    if texts == ["profile rbd"] and [g.text for g in mon] == ["profile rbd"]:
        return (f"{entity}'s caps look like OpenStack-Helm's (the cinder chart's storage-init job "
                "grants osd 'profile rbd' on every pool and sets it again each time it runs): "
                f"{fix}, then keep the job from resetting them (manage the user outside the "
                "chart: manifests.job_storage_init: false once the pools exist)")
    return None


# -- reading the configs ---------------------------------------------------------------------

def _one_line(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def _conf_fsid(path):
    """The fsid a ceph.conf names ([global] fsid), or None."""
    if not path:
        return None
    parser = configparser.RawConfigParser(strict=False, inline_comment_prefixes=(";", "#"))
    try:
        parser.read(path)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return None
    for section in ("global",):
        if parser.has_section(section):
            for key in ("fsid",):
                if parser.has_option(section, key):
                    return parser.get(section, key).strip()
    return None


def glance_stores(path):
    """RBD stores of a glance-api.conf: [{service, section, pool, user, ceph_conf}]."""
    from oslo_config import cfg

    from glance_store_ext import config as store_config
    from glance_store_ext import provider

    _readable(path, "--glance-config")
    conf = cfg.ConfigOpts()
    store_config.register_opts(conf)
    try:
        conf([], project="glance", default_config_files=[path])
        store_config.register_store_opts(conf)
        backends = conf.enabled_backends or {}
        stores = []
        for store_id, store_type in backends.items():
            if store_type != "rbd" or store_id.startswith(store_config.RESERVED_PREFIX):
                continue
            p = provider.Provider(conf, store_id)
            p.store_type = "rbd"
            stores.append({"service": "glance", "section": store_id,
                           "pool": str(p.option("rbd_store_pool")),
                           "user": p.option("rbd_store_user") or "admin",
                           "ceph_conf": str(p.option("rbd_store_ceph_conf") or "")})
        if not backends:
            stores += _legacy_glance_store(conf)
    except (cfg.Error, store_config.StoreConfigError, provider.ProviderError, ValueError) as exc:
        raise AuditError(f"cannot read {path}: {_one_line(exc)}") from None
    if not stores:
        raise AuditError(f"no RBD store in {path} ([DEFAULT] enabled_backends)")
    return stores


def _legacy_glance_store(conf):
    """Single-store glance-api.conf: [glance_store] default_store = rbd."""
    from glance_store import backend
    backend.register_opts(conf)
    gs = conf.glance_store
    if gs.default_store != "rbd":
        return []
    return [{"service": "glance", "section": "glance_store", "pool": str(gs.rbd_store_pool),
             "user": gs.rbd_store_user or "admin", "ceph_conf": str(gs.rbd_store_ceph_conf or "")}]


def _is_rbd_backend(conf, backend):
    from oslo_config import cfg
    conf.register_opt(cfg.StrOpt("volume_driver"), group=backend)
    driver = conf[backend].volume_driver
    if driver:
        return "rbd" in driver.lower()
    # no volume_driver: an RBD backend of cinder_ext's own config if it names rbd options
    return any(conf.get_location(name, backend) is not None
               and conf.get_location(name, backend).location.name in ("user", "command_line")
               for name in ("rbd_pool", "rbd_user", "rbd_ceph_conf"))


def cinder_backends(path):
    """RBD backends of a cinder.conf: [{service, section, pool, user, ceph_conf, clone}]."""
    from oslo_config import cfg

    from cinder_ext import opts

    _readable(path, "--cinder-config")
    try:
        conf, _ = opts.load([path])
        names = conf.enabled_backends or []
        if not names:
            raise AuditError(f"no backend in {path} ([DEFAULT] enabled_backends)")
        found = []
        for name in names:
            conf, backend = opts.load([path], backend=name)
            if not _is_rbd_backend(conf, name):
                continue
            found.append({"service": "cinder", "section": name, "pool": backend.rbd_pool,
                          "user": backend.rbd_user or "admin",
                          "ceph_conf": backend.rbd_ceph_conf or "",
                          "clone": bool(backend.enable_clone_optimization)})
    except cfg.Error as exc:
        raise AuditError(f"cannot read {path}: {_one_line(exc)}") from None
    if not found:
        raise AuditError(f"no RBD backend in {path} (volume_driver ...RBDDriver)")
    return found


def _readable(path, option):
    try:
        with open(path, "rb"):
            pass
    except OSError as exc:
        raise AuditError(f"{option} {path}: {exc.strerror}") from None


# -- the cluster, as admin -------------------------------------------------------------------

class AdminCluster:
    """mon commands as the admin user, through librados, bounded in time."""

    def __init__(self, conffile=None, keyring=None, user="admin", timeout=10):
        self.conffile, self.keyring, self.user, self.timeout = conffile, keyring, user, timeout
        self.client = None

    def __enter__(self):
        try:
            import rados
        except ImportError:
            raise AuditError("the python rados module is not installed") from None
        self._rados = rados
        conf = {"log_to_stderr": "false", "err_to_stderr": "false"}
        if self.keyring:
            conf["keyring"] = self.keyring
        try:
            client = rados.Rados(conffile=self.conffile or "", rados_id=self.user, conf=conf)
        except rados.Error as exc:
            raise AuditError(f"cannot read the admin ceph.conf {self.conffile or '(default)'}: "
                             f"{type(exc).__name__}") from None
        try:
            for option in ("client_mount_timeout", "rados_mon_op_timeout"):
                client.conf_set(option, str(self.timeout))
            client.connect(timeout=self.timeout)
        except rados.Error as exc:
            client.shutdown()
            raise AuditError(f"cannot connect to Ceph as client.{self.user}: {type(exc).__name__} "
                             "(check --admin-conf, --admin-keyring and that the monitors are up)") \
                from None
        self.client = client
        return self

    def __exit__(self, *exc):
        if self.client is not None:
            self.client.shutdown()

    def mon(self, prefix, **args):
        cmd = json.dumps({"prefix": prefix, "format": "json", **args})
        try:
            ret, out, err = self.client.mon_command(cmd, b"", timeout=self.timeout)
        except self._rados.Error as exc:
            raise AuditError(f"ceph {prefix} failed: {type(exc).__name__}") from None
        return ret, out, err

    def fsid(self):
        return self.client.get_fsid()

    def caps(self, user):
        """{service: caps} of client.<user>, or None when it does not exist. The key is dropped."""
        ret, out, err = self.mon("auth get", entity=f"client.{user}")
        if ret == -2:
            return None
        if ret != 0:
            raise AuditError(f"ceph auth get client.{user} failed ({ret}): {err.strip()}")
        entries = json.loads(out)
        entry = entries[0] if isinstance(entries, list) else entries
        return {k: v for k, v in (entry.get("caps") or {}).items()}

    def cluster(self):
        ret, out, err = self.mon("osd dump")
        if ret != 0:
            raise AuditError(f"ceph osd dump failed ({ret}): {err.strip()}")
        dump = json.loads(out)
        return {"fsid": self.fsid(),
                "require_min_compat_client": dump.get("require_min_compat_client", ""),
                "pools": sorted(p["pool_name"] for p in dump.get("pools", []))}


# -- report ----------------------------------------------------------------------------------

def audit(entries, admin, allowed_pools=()):
    """The report: {cluster, entries, findings, clean}.

    `entries`: glance_stores(...) + cinder_backends(...); `admin`: an entered AdminCluster.
    """
    entries = [dict(e) for e in entries]
    cluster = admin.cluster()
    for e in entries:
        fsid = _conf_fsid(e["ceph_conf"])
        e["audited"] = fsid is None or fsid == cluster["fsid"]
        if not e["audited"]:
            e["note"] = (f"{e['service']} {e['section']!r} uses cluster {fsid}, the admin connection "
                         f"reaches {cluster['fsid']}: not audited (no clone across clusters)")
    caps = {}
    for user in sorted({e["user"] for e in entries if e["audited"]}):
        caps[user] = admin.caps(user)
    needs, findings = analyse(entries, caps, cluster, allowed_pools)
    report_entries = []
    for e in entries:
        report_entries.append({
            "service": e["service"], "section": e["section"], "pool": e["pool"],
            "user": f"client.{e['user']}", "clone_optimization": e.get("clone"),
            "caps": caps.get(e["user"]) if e["audited"] else None,
            "needs": needs.get(e["user"], {}) if e["audited"] else {},
        })
    return {"cluster": cluster, "entries": report_entries, "findings": findings,
            "clean": not findings}


def format_table(report):
    c = report["cluster"]
    release = c["require_min_compat_client"] or "unset"
    lines = [f"Ceph cluster {c['fsid']}: require_min_compat_client {release}, "
             f"pools {', '.join(c['pools']) or '(none)'}", ""]
    rows = [("SERVICE", "SECTION", "POOL", "USER", "CAPS", "NEEDS")]
    for e in report["entries"]:
        caps = e["caps"]
        cap_lines = (["(user does not exist)"] if caps is None and e["needs"] else
                     [f"{svc}: {caps[svc]}" for svc in sorted(caps or {})] or ["(none)"])
        need_lines = [f"{lv['level']} {pool}" for pool, lv in sorted(e["needs"].items())] or ["-"]
        for i in range(max(len(cap_lines), len(need_lines))):
            first = i == 0
            rows.append((e["service"] if first else "", e["section"] if first else "",
                         e["pool"] if first else "", e["user"] if first else "",
                         cap_lines[i] if i < len(cap_lines) else "",
                         need_lines[i] if i < len(need_lines) else ""))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        lines.append("  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip())
    lines.append("")
    if report["findings"]:
        lines.append(f"FINDINGS ({len(report['findings'])})")
        for f in report["findings"]:
            lines.append(f"  {f['kind']:<8} {f['message']}")
    else:
        lines.append("No findings: every user has what upload-by-clone needs, and no more.")
    return "\n".join(lines)


# -- command line ----------------------------------------------------------------------------

def _add_arguments(p):
    p.add_argument("--glance-config", metavar="FILE", help="glance-api.conf")
    p.add_argument("--cinder-config", metavar="FILE",
                   help="cinder.conf (default: the --config-file of cinder-rbd-clone)")
    p.add_argument("--admin-conf", metavar="FILE",
                   help="ceph.conf to reach the cluster as admin (default: librados' search)")
    p.add_argument("--admin-keyring", metavar="FILE", help="keyring of the admin user")
    p.add_argument("--admin-user", default="admin", metavar="NAME",
                   help="Ceph user that may run 'auth get' (default: admin)")
    p.add_argument("--allow-pool", action="append", default=[], metavar="POOL",
                   help="a pool the users may legitimately reach besides Glance's and Cinder's "
                        "(e.g. Nova's vms); repeatable")
    p.add_argument("--timeout", type=int, default=10, metavar="SECONDS",
                   help="bound of every Ceph call (default: 10)")
    p.add_argument("--json", action="store_true", help="print the report as JSON")


def add_subparser(subparsers):
    """Add `audit` to a CLI's subparsers; dispatch with ``args.func(args)`` (returns the exit status)."""
    p = subparsers.add_parser("audit", help="audit the Ceph caps of the Glance and Cinder users",
                              description=__doc__.splitlines()[0])
    _add_arguments(p)
    p.set_defaults(func=run)
    return p


def run(args, out=None, err=None):
    """Run the audit for parsed arguments; print the report; return 0, 1 or 2."""
    out = out or sys.stdout
    err = err or sys.stderr
    cinder_config = args.cinder_config
    if not cinder_config:
        files = getattr(args, "config_file", None) or []
        cinder_config = files[0] if files else None
    try:
        if not args.glance_config or not cinder_config:
            raise AuditError("both --glance-config and --cinder-config are required")
        # the configs first: a typo there is reported without touching the cluster
        entries = glance_stores(args.glance_config) + cinder_backends(cinder_config)
        with AdminCluster(args.admin_conf, args.admin_keyring, args.admin_user,
                          args.timeout) as admin:
            report = audit(entries, admin, args.allow_pool)
    except AuditError as exc:
        print(f"{PROG}: error: {exc}", file=err)
        return 2
    except Exception as exc:  # anything unforeseen: still one line
        print(f"{PROG}: error: {type(exc).__name__}: {_one_line(exc)}", file=err)
        return 2
    print(json.dumps(report, indent=2, sort_keys=True) if args.json else format_table(report),
          file=out)
    return 1 if report["findings"] else 0


class _Parser(argparse.ArgumentParser):
    def error(self, message):
        # one line, not argparse's usage block
        print(f"{PROG}: error: {message}", file=sys.stderr)
        sys.exit(2)


def main(argv=None):
    parser = _Parser(prog="python -m cinder_ext.audit", description=__doc__.splitlines()[0])
    _add_arguments(parser)
    args = parser.parse_args(argv)
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
