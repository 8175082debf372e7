"""A soak on a running tools/cloud: `tools/cloud soak DIR --minutes M --seed N` (issue 22).

A seeded, bounded random scenario of what users and admins do through the APIs (REST, as
the demo project's member and as the `alt` project's member; admin for snapshot
manage/unmanage and for an operator's resets): volumes with data, uploads to images
(one "golden" volume per user uploaded again and again), volumes from images, snapshots,
volume clones, extends, snapshot unmanage and manage, deletes in random orders (images
deleted while volumes depend on them, and the reverse). Faults at random moments:
SIGKILL of a cinder-volume service (right after an upload is accepted, too; on a cloud
started with --volume-services 2, either one of the active-active pair) and its restart as
tools/cloud does it, glance-api's workers killed or reloaded, an OSD killed and restarted
(with --osds 3, and then every PG active+clean again before the soak goes on: the
restarted memstore OSD is empty; a lone one is stalled and marked down instead) and the
monitor restarted, Keystone stopped (SIGSTOP) for a few seconds, RabbitMQ restarted.

Invariants, checked while it runs and at the end:

* transitional states (creating, uploading, deleting, queued while its upload runs, ...)
  last at most TRANSITIONAL_BOUND; error states only where upstream's driver would end
  too (a create or upload that a cinder-volume kill or a RabbitMQ restart interrupted:
  the soak then acts as the operator, `os-reset_status`, and counts it);
* every RBD image, trash entry and snapshot of both pools is accounted for by a Cinder
  volume or snapshot, a Glance image, or a trash entry that something still needs (one
  with snapshots); anything else may exist for ORPHAN_BOUND at most (a purge pending),
  plus, for each fault while it was loose, the fault's length and a purge interval (a
  purge skips what it cannot prove orphaned while Glance or Ceph is away);
* no live process is ever blocklisted (`ceph osd blocklist ls`, matched to processes
  through the monitor's sessions and the sockets' owners); cinder-volume is reported
  down only while the soak has it down;
* after the load, everything the soak made is deleted through the API and both pools
  and their trash equal the baseline within two purge intervals (plus
  osd_client_watch_timeout when a kill happened).

Exit status 0 only with no violation and no leftover. Standard library only (Debian's
python3 runs tools/cloud): the Ceph views are one /usr/bin/python3 (rados, rbd) process
per check.
"""

import hashlib
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import time

import cloudlib
from cloudlib import PURGE_INTERVAL, Cloud, FlowError
from peerlib import group_members, stop_group  # noqa: E402  tools/peers, on sys.path through cloudlib

WATCH_TIMEOUT = 30  # the cloud's Ceph: osd_client_watch_timeout
TRANSITIONAL_BOUND = 240  # seconds a volume, snapshot or image may stay transitional
ORPHAN_BOUND = 2 * PURGE_INTERVAL + WATCH_TIMEOUT + 30  # an unaccounted RBD item, seconds
RESTART_SETTLE = WATCH_TIMEOUT + 2 * PURGE_INTERVAL + 10  # an interrupted upload settles in this
USERS = ("member", "alt")
LIMITS = {"volumes": 10, "images": 12, "snapshots": 6}  # per user, live at once
VOL_TRANSITIONAL = {"creating", "deleting", "uploading", "extending", "downloading", "attaching",
                    "detaching", "maintenance", "reserved", "backing-up", "restoring-backup",
                    "retyping", "awaiting-transfer"}
SNAP_TRANSITIONAL = {"creating", "deleting", "unmanaging", "backing-up", "restoring"}
IMG_TRANSITIONAL = {"queued", "saving", "importing", "uploading", "pending_delete"}
ERRORS = {"error", "error_deleting", "error_extending", "error_restoring", "error_managing", "killed"}

DUMP = r"""
import json, sys, rados, rbd
c = rados.Rados(conffile=sys.argv[1]); c.connect()
out = {}
def snaps(im):
    res = []
    for s in im.list_snaps():
        ns = s.get("namespace")
        name = s["name"]
        if ns == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH:
            name = "trash:" + ((s.get("trash") or {}).get("original_name") or name)
        res.append(name)
    return sorted(res)
for pool in ("volumes", "images"):
    io = c.open_ioctx(pool); r = rbd.RBD(); p = {"images": {}, "trash": {}}
    for name in r.list(io):
        try:
            with rbd.Image(io, name, read_only=True) as im:
                p["images"][name] = snaps(im)
        except rbd.ImageNotFound:
            pass
    for t in r.trash_list(io):
        try:
            with rbd.Image(io, image_id=t["id"], read_only=True) as im:
                sn = snaps(im)
        except rbd.ImageNotFound:
            continue
        except Exception as e:
            sn = ["?" + type(e).__name__]
        p["trash"][t["name"] + "#" + t["id"]] = {"name": t["name"], "snaps": sn, "source": t.get("source")}
    out[pool] = p
    io.close()
c.shutdown()
print(json.dumps(out))
"""

READ = r"""
import hashlib, json, sys, rados, rbd
c = rados.Rados(conffile=sys.argv[1]); c.connect()
out = {}
for key, pool, name, n in json.loads(sys.stdin.read()):
    io = c.open_ioctx(pool)
    try:
        with rbd.Image(io, name, read_only=True) as im:
            out[key] = hashlib.sha256(im.read(0, n)).hexdigest()
    except rbd.ImageNotFound:
        out[key] = None
    io.close()
c.shutdown()
print(json.dumps(out))
"""

# every PG's state as its primary OSD reports it: the cloud runs no mgr, which `pg stat` needs
PG_STATES = r"""
import json, sys, rados
c = rados.Rados(conffile=sys.argv[1]); c.connect(timeout=10)
ret, out, err = c.mon_command(json.dumps({"prefix": "osd pool ls", "detail": "detail", "format": "json"}), b"")
states = {}
for p in json.loads(out):
    for i in range(p["pg_num"]):
        pgid = f"{p['pool_id']}.{i:x}"
        ret, out, err = c.pg_command(pgid, json.dumps({"prefix": "query", "pgid": pgid, "format": "json"}),
                                     b"", timeout=10)
        states[pgid] = json.loads(out)["state"] if ret == 0 else f"no answer ({err})"
c.shutdown()
print(json.dumps(states))
"""
RECOVERY_BOUND = 300  # seconds a restarted (empty) memstore OSD may take to hold every replica again

# the faults and their weights: a soak draws one every 30 to 75 s
FAULTS = [("kill-volume", 3), ("kill-volume-mid-upload", 3), ("glance", 2), ("osd", 2), ("mon", 2),
          ("keystone", 2), ("rabbit", 1)]


class Soak:
    def __init__(self, directory, minutes, seed, log=print, restart_volume=None, faults=None):
        self.cloud = Cloud(directory)
        self.dir = self.cloud.dir
        self.minutes = minutes
        self.seed = seed
        self.fault_kinds = faults  # None: every kind in FAULTS
        self.rng = random.Random(seed)
        self.log = log
        # restart_volume(k): cinder-volume service k (1, 2, ...) started again as tools/cloud does
        self._restart_volume = restart_volume
        self.t0 = time.monotonic()
        # what the soak made: id -> record
        self.vols, self.snaps, self.imgs = {}, {}, {}
        self.unmanaged = {}  # rbd snapshot name -> {volume, user}
        self.golden = {}  # user -> volume id
        self.ops, self.faults, self.checks = {}, {}, 0
        self.violations, self.operator = [], []
        self.longest = (0.0, "-")
        self.kills = 0
        self.cv_down = []  # [host, start, end or None]: the soak has that cinder-volume down
        self.disruptions = []  # [start, end or None]: faults upstream's driver loses work to too
        self.orphan_seen = {}
        self.longest_pending = (0.0, "-")  # the longest an RBD item stayed unaccounted
        self.fault_windows = []  # [start, end]: every fault, from its start to its services back
        self.blocklist_seen = set()
        self.down_seen = set()  # cinder-volume hosts reported down, already a violation
        self.stacks = []  # py-spy dumps of a cinder-volume reported down while it runs
        self.nonce_pid = {}
        self.last_ceph_check = 0.0
        self.data = {}  # volume or image id -> (length, sha256 of its first bytes)

    # -- output -------------------------------------------------------------------------
    def t(self):
        return time.monotonic() - self.t0

    def say(self, what, msg):
        self.log(f"[{self.t():7.1f}s] {what:9} {msg}", flush=True)

    def violation(self, msg):
        self.violations.append(f"{self.t():.1f}s {msg}")
        self.say("VIOLATION", msg)

    def count(self, table, key):
        table[key] = table.get(key, 0) + 1

    # -- state: the APIs -----------------------------------------------------------------
    def in_window(self, windows, since, slack=0.0):
        """A window of `windows` overlaps [since - slack, now]."""
        now = time.monotonic()
        return any((end is None or end >= since - slack) and start <= now for start, end in windows)

    def poll(self):
        """Every record's current status from the admin's lists; False when an API is away."""
        try:
            code, vols = self.cloud.rest("volume", "/volumes/detail?all_tenants=1&limit=1000", user="admin")
            code2, snaps = self.cloud.rest("volume", "/snapshots/detail?all_tenants=1&limit=1000", user="admin")
            code3, imgs = self.cloud.rest("image", "/v2/images?limit=1000", user="admin")
        except (OSError, FlowError) as e:
            self.say("poll", f"API away: {type(e).__name__}")
            return False
        if code != 200 or code2 != 200 or code3 != 200:
            self.say("poll", f"API away: HTTP {code} {code2} {code3}")
            return False
        seen = {"volume": {v["id"]: v["status"] for v in vols["volumes"]},
                "snapshot": {s["id"]: s["status"] for s in snaps["snapshots"]},
                "image": {i["id"]: i["status"] for i in imgs["images"]}}
        now = time.monotonic()
        for kind, table in (("volume", self.vols), ("snapshot", self.snaps), ("image", self.imgs)):
            for ident, rec in list(table.items()):
                status = seen[kind].get(ident)
                if status is None:
                    if rec.get("deleting") or rec["status"] in ("deleting", "pending_delete"):
                        self.say("gone", f"{kind} {ident[:8]}")
                        del table[ident]
                        continue
                    if now - rec["since"] < 5:  # not listed yet
                        continue
                    self.violation(f"{kind} {ident} vanished while {rec['status']} (nobody deleted it)")
                    del table[ident]
                    continue
                if status != rec["status"]:
                    self.say("state", f"{kind} {ident[:8]} {rec['status']} -> {status} "
                                      f"({now - rec['since']:.1f}s)")
                    rec.update(status=status, since=now)
        return True

    def transitional(self, kind, rec):
        if kind == "volume":
            return rec["status"] in VOL_TRANSITIONAL
        if kind == "snapshot":
            return rec["status"] in SNAP_TRANSITIONAL
        if rec["status"] == "queued":
            # queued counts while its upload runs; a queued image after a failed upload is a
            # leftover Cinder leaves (upstream too), not work in flight
            vol = self.vols.get(rec.get("volume") or "")
            return bool(vol and vol["status"] == "uploading")
        return rec["status"] in IMG_TRANSITIONAL

    def check_states(self):
        now = time.monotonic()
        for kind, table in (("volume", self.vols), ("snapshot", self.snaps), ("image", self.imgs)):
            for ident, rec in list(table.items()):
                age = now - rec["since"]
                if self.transitional(kind, rec):
                    if age > self.longest[0]:
                        self.longest = (age, f"{kind} {ident} {rec['status']}")
                    hit = self.in_window(self.disruptions, rec["op_at"])
                    if hit and rec["status"] in ("uploading", "creating", "deleting", "extending") \
                            and self.disruption_over(RESTART_SETTLE) and age > RESTART_SETTLE:
                        self.reset(kind, ident, rec, "interrupted by a fault")
                    elif age > TRANSITIONAL_BOUND and not hit:
                        self.violation(f"{kind} {ident} {rec['status']} for {age:.0f}s "
                                       f"(bound {TRANSITIONAL_BOUND}s)")
                        self.reset(kind, ident, rec, "stuck past the bound")
                elif rec["status"] in ERRORS and not rec.get("error_judged"):
                    rec["error_judged"] = True
                    if self.in_window(self.disruptions, rec["op_at"], slack=5):
                        self.operator.append(f"{kind} {ident[:8]} {rec['status']} after a fault "
                                             "(upstream's too): deleted")
                        self.say("operator", f"{kind} {ident[:8]} {rec['status']} after a fault")
                    else:
                        self.violation(f"{kind} {ident} went {rec['status']} with no fault to explain it")

    def disruption_over(self, settle):
        if any(e is None for _, e in self.disruptions):
            return False
        ends = [e for _, e in self.disruptions]
        return not ends or time.monotonic() - max(ends) > settle

    def reset(self, kind, ident, rec, why):
        """The operator's os-reset_status: uploading/extending/deleting -> available,
        creating -> error (then a delete)."""
        target = "error" if rec["status"] == "creating" else "available"
        path = {"volume": f"/volumes/{ident}/action", "snapshot": f"/snapshots/{ident}/action"}.get(kind)
        if path is None:
            return  # a queued image: deleted like any other at the end
        code, body = self.cloud.post("volume", path, {"os-reset_status": {"status": target}}, user="admin")
        self.operator.append(f"{kind} {ident[:8]} {rec['status']} -> {target} ({why}): HTTP {code}")
        self.say("operator", f"reset {kind} {ident[:8]} {rec['status']} -> {target} ({why}): HTTP {code}")
        if code < 300:
            rec.update(status=target, since=time.monotonic(), error_judged=True, deleting=False)

    def check_services(self):
        try:
            services = self.cloud.services()
        except (OSError, FlowError):
            return
        down = [s for s in services if s["binary"] == "cinder-volume" and s["state"] != "up"]
        # reported down is right while the soak has it down, and up to service_down_time
        # plus a heartbeat after its restart
        now = time.monotonic()
        for s in services:
            if s["binary"] == "cinder-volume" and s["state"] == "up":
                self.down_seen.discard(s["host"])
        for s in down:
            host = s["host"].split("@")[0]
            if any(h == host and (end is None or now - end < 20) for h, start, end in self.cv_down):
                continue
            if s["host"] in self.down_seen:
                continue  # one violation per episode; its stacks were taken at the first
            self.down_seen.add(s["host"])
            self.violation(f"cinder-volume {s['host']} reported down while it runs: {s.get('updated_at')}")
            self.take_stacks(host)

    def take_stacks(self, host):
        """A cinder-volume that runs but stopped reporting is stuck somewhere: every thread's
        stack of its processes (py-spy, native frames too: a hub stuck inside librbd runs no
        Python, so no Guru Meditation report could say where), kept for the summary."""
        k = 1 if host == "cloud" else int(host.rsplit("-", 1)[1])
        pgid = self.state()["pgids"][_volume_service(k)[1]]
        # on PATH, or the project's venv (test-requirements.txt): tools/cloud runs on the
        # system's Python
        spy = shutil.which("py-spy") or os.path.join(
            os.path.dirname(os.path.dirname(os.path.abspath(__file__))), ".venv", "bin", "py-spy")
        if not os.access(spy, os.X_OK):
            self.stacks.append(f"{host}: no py-spy to take its stacks (pip install py-spy)")
            return
        for pid in group_members(pgid):
            if "cinder-volume" not in _cmdline(pid):
                continue
            out = ""
            # --native can fail to merge a process's frames ("Failed to merge native and
            # python frames"): then the Python stacks alone
            for args in (["--native"], []):
                try:
                    proc = subprocess.run([spy, "dump", *args, "--pid", str(pid)], capture_output=True,
                                          text=True, timeout=60)
                    out = proc.stdout + proc.stderr
                except (OSError, subprocess.SubprocessError) as e:
                    out = f"py-spy: {e}"
                    continue
                if proc.returncode == 0:
                    break
            self.stacks.append(f"{host} pid {pid} ({self.t():.1f}s):\n{out}")
            self.say("stacks", f"{host} pid {pid}: taken ({len(out.splitlines())} lines)")

    # -- state: Ceph ---------------------------------------------------------------------
    def _ceph_script(self, script, what, stdin=None):
        """script's JSON output, run by Debian's Python (the rados and rbd bindings) against
        the cloud's Ceph; FlowError naming `what` when it fails."""
        proc = subprocess.run(["/usr/bin/python3", "-c", script, self.cloud.env["CEPH_CONF"]],
                              input=stdin, capture_output=True, text=True, timeout=120, cwd=self.dir,
                              env={"PATH": "/usr/bin:/bin", "HOME": os.path.join(self.dir, "home")})
        if proc.returncode != 0:
            raise FlowError(f"{what}: {cloudlib.last_line(proc.stderr)}")
        return json.loads(proc.stdout)

    def ceph_dump(self):
        return self._ceph_script(DUMP, "ceph dump")

    def pg_states(self):
        """{pgid: state} of every PG of the cloud's pools (PG_STATES)."""
        return self._ceph_script(PG_STATES, "PG states")

    def sessions(self):
        """Monitor sessions: client nonce -> pid (through the socket's owner)."""
        asok = os.path.join(self.cloud.env["CEPH_DEV_DIR"], "run", "ceph-mon.a.asok")
        proc = subprocess.run(["ceph", "--admin-daemon", asok, "sessions"], capture_output=True, text=True,
                              timeout=30)
        if proc.returncode != 0:
            return
        ports = {}
        ss = subprocess.run(["ss", "-tnpH"], capture_output=True, text=True, timeout=30).stdout
        for line in ss.splitlines():
            m = re.search(r"\s127\.0\.0\.1:(\d+)\s+\S+\s+users:\(\(\"([^\"]+)\",pid=(\d+)", line)
            if m:
                ports[int(m.group(1))] = (int(m.group(3)), m.group(2))
        for s in json.loads(proc.stdout or "[]"):
            if not s.get("entity_name", "").startswith("client."):
                continue
            sock = s.get("socket_addr") or {}
            port = int(sock.get("addr", ":0").rsplit(":", 1)[-1] or 0)
            for a in s.get("addrs", {}).get("addrvec", []):
                if port in ports:
                    self.nonce_pid[str(a.get("nonce"))] = ports[port] + (s["entity_name"],)

    def blocklist(self):
        proc = subprocess.run(["ceph", "--conf", self.cloud.env["CEPH_CONF"], "osd", "blocklist", "ls",
                               "-f", "json"], capture_output=True, text=True, timeout=30)
        if proc.returncode != 0:
            return None
        # Reef prints two lists: addresses, then ranges
        out, text, dec = [], proc.stdout.strip(), json.JSONDecoder()
        while text:
            part, end = dec.raw_decode(text)
            out += [e["addr"] for e in part]
            text = text[end:].strip()
        return out

    def accounted(self, dump):
        """Names of RBD items that nothing accounts for."""
        vols = set(self.vols) | set(self.baseline_ids["volumes"])
        snaps = set(self.snaps)
        imgs = set(self.imgs) | set(self.baseline_ids["images"])
        # every Cinder and Glance object of the cloud accounts for its RBD item, not only ours
        vols |= self.api_ids.get("volume", set())
        snaps |= self.api_ids.get("snapshot", set())
        imgs |= self.api_ids.get("image", set())
        trashed_imgs = {e["name"] for e in dump["images"]["trash"].values()}
        self.rbd_volume_ids = {n[len("volume-"):].split(".")[0] for n in dump["volumes"]["images"]} | \
            {e["name"][len("volume-"):].split(".")[0] for e in dump["volumes"]["trash"].values()}
        unmanaged = set(self.unmanaged)
        out = []
        for name, sn in dump["volumes"]["images"].items():
            vid = name[len("volume-"):].split(".")[0]
            if not name.startswith("volume-") or (vid not in vols and not sn):
                out.append(f"volumes/{name}")
            out += self._snaps_unaccounted("volumes", name, sn, snaps, imgs | trashed_imgs, unmanaged)
        for key, e in dump["volumes"]["trash"].items():
            if not e["snaps"]:
                out.append(f"volumes/trash/{e['name']}")
            out += self._snaps_unaccounted("volumes", "trash/" + e["name"], e["snaps"], snaps,
                                           imgs | trashed_imgs, unmanaged)
        for name, sn in dump["images"]["images"].items():
            if name not in imgs:
                out.append(f"images/{name}")
        for key, e in dump["images"]["trash"].items():
            if not e["snaps"]:
                out.append(f"images/trash/{e['name']}")
        return out

    def _snaps_unaccounted(self, pool, image, names, snaps, imgs, unmanaged):
        out = []
        for s in names:
            base = s[len("trash:"):] if s.startswith("trash:") else s
            if base.startswith("snapshot-") and (base[len("snapshot-"):] in snaps or base in unmanaged):
                continue
            if base.startswith("image-") and base[len("image-"):] in imgs:
                continue
            if base.endswith(".clone_snap"):  # upstream's volume clone: the clone volume's,
                # while that volume lives in Cinder or its RBD image in the pool or trash
                if base[len("volume-"):-len(".clone_snap")] in self.api_ids.get("volume", set()) | \
                        self.rbd_volume_ids:
                    continue
            if base == "snap":
                continue
            out.append(f"{pool}/{image}@{s}")
        return out

    def check_ceph(self):
        self.checks += 1
        try:
            dump = self.ceph_dump()
            self.sessions()
        except (FlowError, subprocess.TimeoutExpired, ValueError) as e:
            self.say("check", f"Ceph view unavailable: {e}")
            return None
        now = time.monotonic()
        try:
            self.refresh_api_ids()
        except (OSError, FlowError):
            return dump
        loose = set(self.accounted(dump))
        for name in list(self.orphan_seen):
            if name not in loose:
                age = now - self.orphan_seen.pop(name)
                if 0 < age and age > self.longest_pending[0]:
                    self.longest_pending = (age, name)
        bound = ORPHAN_BOUND + (WATCH_TIMEOUT if self.kills else 0)
        for name in loose:
            first = self.orphan_seen.setdefault(name, now)
            # a purge cannot judge while Glance, Keystone or the monitor is away (it skips what
            # it cannot prove orphaned): each fault while it was loose extends its bound by
            # the fault's length and one purge interval
            allowed = bound + sum(min(end, now) - max(start, first) + PURGE_INTERVAL
                                  for start, end in self.fault_windows if end > first and start < now)
            if now - first > allowed:
                self.violation(f"unaccounted in Ceph for {now - first:.0f}s (bound {allowed:.0f}s "
                               f"with the faults meanwhile): {name}")
                self.orphan_seen[name] = now + 10 ** 6  # once
        bl = self.blocklist()
        for addr in bl or []:
            if addr in self.blocklist_seen:
                continue
            self.blocklist_seen.add(addr)
            nonce = addr.rsplit("/", 1)[-1]
            who = self.nonce_pid.get(nonce)
            if who and os.path.exists(f"/proc/{who[0]}") and not self.zombie(who[0]):
                self.violation(f"live process blocklisted: {addr} is pid {who[0]} ({who[1]}, {who[2]})")
            else:
                self.say("check", f"blocklisted {addr}: {'dead pid %d (%s, %s)' % who if who else 'unknown, not live'}")
        self.say("check", f"#{self.checks}: {sum(len(p['images']) + len(p['trash']) for p in dump.values())} "
                          f"RBD images, {len(loose)} pending, blocklist {len(bl or [])}")
        return dump

    @staticmethod
    def zombie(pid):
        try:
            with open(f"/proc/{pid}/stat") as f:
                return f.read().rsplit(")", 1)[1].split()[0] in ("Z", "X")
        except OSError:
            return True

    def refresh_api_ids(self):
        out = {}
        for kind, path, key in (("volume", "/volumes?all_tenants=1&limit=1000", "volumes"),
                                ("snapshot", "/snapshots?all_tenants=1&limit=1000", "snapshots")):
            code, body = self.cloud.rest("volume", path, user="admin")
            if code != 200:
                raise FlowError(f"{path}: {code}")
            out[kind] = {x["id"] for x in body[key]}
        code, body = self.cloud.rest("image", "/v2/images?limit=1000", user="admin")
        if code != 200:
            raise FlowError(f"images: {code}")
        out["image"] = {x["id"] for x in body["images"]}
        self.api_ids = out

    # -- operations ----------------------------------------------------------------------
    def mine(self, table, user, status=None):
        return sorted(i for i, r in table.items() if r["user"] == user and not r.get("deleting")
                      and (status is None or r["status"] in status))

    def new(self, table, ident, user, status, **extra):
        now = time.monotonic()
        table[ident] = dict(user=user, status=status, since=now, op_at=now, **extra)

    def op_create(self, user):
        size = self.rng.choice((1, 1, 2))
        code, body = self.cloud.post("volume", "/volumes", {"volume": {"size": size, "name": "soak"}}, user=user)
        if code != 202:
            return f"HTTP {code}"
        vid = body["volume"]["id"]
        self.new(self.vols, vid, user, "creating", size=size, write=True)
        return vid[:8]

    def write_pending(self):
        """Data into volumes that became available since their create (a guest's first writes)."""
        for vid, rec in list(self.vols.items()):
            if rec.get("write") and rec["status"] == "available":
                rec["write"] = False
                data = self.rng.randbytes(self.rng.choice((4096, 65536, 1 << 20)))
                try:
                    self.cloud.write_volume(vid, data)
                except subprocess.CalledProcessError as e:
                    self.violation(f"write into volume {vid}: {e}")
                    continue
                rec["data"] = (len(data), hashlib.sha256(data).hexdigest())

    def op_upload(self, user, golden=False):
        cands = self.mine(self.vols, user, {"available"})
        cands = [v for v in cands if not self.vols[v].get("write")]
        if golden and self.golden.get(user) in cands:
            vid = self.golden[user]
        elif cands:
            vid = self.rng.choice(cands)
            if golden:
                self.golden[user] = vid
        else:
            return None
        if len(self.mine(self.imgs, user)) >= LIMITS["images"]:
            return None
        code, body = self.cloud.post("volume", f"/volumes/{vid}/action", {"os-volume_upload_image": {
            "image_name": "soak", "disk_format": "raw", "container_format": "bare", "force": False}}, user=user)
        if code != 202:
            return f"HTTP {code} {str(body)[:120]}"
        iid = body["os-volume_upload_image"]["image_id"]
        self.new(self.imgs, iid, user, "queued", volume=vid, data=self.vols[vid].get("data"))
        self.vols[vid].update(status="uploading", since=time.monotonic(), op_at=time.monotonic())
        return f"{vid[:8]} -> image {iid[:8]}"

    def op_from_image(self, user):
        cands = self.mine(self.imgs, user, {"active"})
        if not cands or len(self.mine(self.vols, user)) >= LIMITS["volumes"]:
            return None
        iid = self.rng.choice(cands)
        code, body = self.cloud.post("volume", "/volumes", {"volume": {"size": 1, "imageRef": iid,
                                                                       "name": "soak-from-image"}}, user=user)
        if code != 202:
            return f"HTTP {code} {str(body)[:120]}"
        vid = body["volume"]["id"]
        self.new(self.vols, vid, user, "creating", data=self.imgs[iid].get("data"))
        return f"image {iid[:8]} -> {vid[:8]}"

    def op_clone(self, user):
        cands = self.mine(self.vols, user, {"available"})
        if not cands or len(self.mine(self.vols, user)) >= LIMITS["volumes"]:
            return None
        src = self.rng.choice(cands)
        code, body = self.cloud.post("volume", "/volumes", {"volume": {"size": 2, "source_volid": src,
                                                                       "name": "soak-clone"}}, user=user)
        if code != 202:
            return f"HTTP {code} {str(body)[:120]}"
        vid = body["volume"]["id"]
        self.new(self.vols, vid, user, "creating", data=self.vols[src].get("data"))
        return f"{src[:8]} -> {vid[:8]}"

    def op_snapshot(self, user):
        cands = self.mine(self.vols, user, {"available"})
        if not cands or len(self.mine(self.snaps, user)) >= LIMITS["snapshots"]:
            return None
        vid = self.rng.choice(cands)
        code, body = self.cloud.post("volume", "/snapshots", {"snapshot": {"volume_id": vid, "name": "soak"}},
                                     user=user)
        if code != 202:
            return f"HTTP {code} {str(body)[:120]}"
        sid = body["snapshot"]["id"]
        self.new(self.snaps, sid, user, "creating", volume=vid)
        return f"{vid[:8]} -> snapshot {sid[:8]}"

    def op_extend(self, user):
        cands = self.mine(self.vols, user, {"available"})
        if not cands:
            return None
        vid = self.rng.choice(cands)
        rec = self.vols[vid]
        size = rec.get("size", 1) + 1
        if size > 4:
            return None
        code, body = self.cloud.post("volume", f"/volumes/{vid}/action", {"os-extend": {"new_size": size}},
                                     user=user)
        if code != 202:
            return f"HTTP {code} {str(body)[:120]}"
        rec.update(size=size, status="extending", since=time.monotonic(), op_at=time.monotonic())
        return f"{vid[:8]} to {size} GiB"

    def op_unmanage(self, user):
        cands = self.mine(self.snaps, user, {"available"})
        if not cands:
            return None
        sid = self.rng.choice(cands)
        code, body = self.cloud.post("volume", f"/snapshots/{sid}/action", {"os-unmanage": {}}, user="admin")
        if code != 202:
            return f"HTTP {code} {str(body)[:120]}"
        rec = self.snaps[sid]
        rec.update(deleting=True, status="unmanaging", since=time.monotonic())
        self.unmanaged[f"snapshot-{sid}"] = {"volume": rec["volume"], "user": user}
        return f"snapshot {sid[:8]} (volume {rec['volume'][:8]})"

    def op_manage(self, user):
        cands = sorted(n for n, r in self.unmanaged.items() if r["user"] == user and r["volume"] in self.vols
                       and self.vols[r["volume"]]["status"] == "available")
        if not cands:
            return None
        name = self.rng.choice(cands)
        vid = self.unmanaged[name]["volume"]
        code, body = self.cloud.post("volume", "/os-snapshot-manage", {"snapshot": {
            "volume_id": vid, "ref": {"source-name": name}, "name": "soak-managed"}}, user="admin")
        if code != 202:
            return f"HTTP {code} {str(body)[:120]}"
        sid = body["snapshot"]["id"]
        del self.unmanaged[name]
        self.new(self.snaps, sid, "admin", "creating", volume=vid)
        return f"{name} of {vid[:8]} -> snapshot {sid[:8]}"

    def op_delete_image(self, user):
        cands = self.mine(self.imgs, user, {"active", "queued", "killed"})
        cands = [i for i in cands if not self.transitional("image", self.imgs[i])]
        if not cands:
            return None
        iid = self.rng.choice(cands)
        return self.delete_image(iid)

    def delete_image(self, iid):
        rec = self.imgs[iid]
        user = rec["user"]
        code, body = self.cloud.post("image", f"/v2/images/{iid}", None, user=user, method="DELETE")
        if code not in (204, 404):
            return f"image {iid[:8]}: HTTP {code} {str(body)[:120]}"
        rec.update(deleting=True, since=time.monotonic())
        return f"image {iid[:8]} (volume {str(rec.get('volume'))[:8]} "\
               f"{self.vols.get(rec.get('volume'), {}).get('status', 'gone')})"

    def op_delete_snapshot(self, user):
        cands = self.mine(self.snaps, user, {"available", "error"})
        if not cands:
            return None
        return self.delete_snapshot(self.rng.choice(cands))

    def delete_snapshot(self, sid):
        rec = self.snaps[sid]
        code, body = self.cloud.post("volume", f"/snapshots/{sid}", None, user=rec["user"], method="DELETE")
        if code not in (202, 404):
            return f"snapshot {sid[:8]}: HTTP {code} {str(body)[:120]}"
        rec.update(deleting=True, status="deleting", since=time.monotonic(), op_at=time.monotonic())
        return f"snapshot {sid[:8]}"

    def op_delete_volume(self, user):
        cands = self.mine(self.vols, user, {"available", "error"})
        # a volume whose snapshot an admin unmanaged: upstream's delete and ours move it to
        # the RBD trash with that snapshot (Ceph keeps what Cinder forgot); the admin's to
        # remove (finish does, as the operator). Now and then, not every time
        if self.rng.random() < 0.7:
            cands = [v for v in cands if not any(r["volume"] == v for r in self.unmanaged.values())]
        if self.golden.get(user) in cands and self.rng.random() < 0.8:
            cands.remove(self.golden[user])
        if not cands:
            return None
        return self.delete_volume(self.rng.choice(cands))

    def delete_volume(self, vid):
        rec = self.vols[vid]
        has_snaps = any(r["volume"] == vid for r in self.snaps.values())
        cascade = has_snaps and self.rng.random() < 0.5
        path = f"/volumes/{vid}" + ("?cascade=true" if cascade else "")
        code, body = self.cloud.post("volume", path, None, user=rec["user"], method="DELETE")
        if code == 400 and has_snaps:
            return f"volume {vid[:8]}: refused, it has snapshots (as Cinder does)"
        if code not in (202, 404):
            return f"volume {vid[:8]}: HTTP {code} {str(body)[:120]}"
        rec.update(deleting=True, status="deleting", since=time.monotonic(), op_at=time.monotonic())
        kept = [n for n, r in self.unmanaged.items() if r["volume"] == vid]
        for n in kept:
            self.unmanaged[n]["volume_deleted"] = True
        if cascade:
            for sid, s in self.snaps.items():
                if s["volume"] == vid:
                    s.update(deleting=True, status="deleting", since=time.monotonic())
        deps = [i[:8] for i, r in self.imgs.items() if r.get("volume") == vid]
        return f"volume {vid[:8]}{' cascade' if cascade else ''} (images from it: {deps or 'none'}" + \
            (f"; unmanaged snapshots: {len(kept)}" if kept else "") + ")"

    def op_verify(self, user):
        """An active image's and an available volume's first bytes, read back through Ceph."""
        items = []
        for iid in self.mine(self.imgs, user, {"active"}):
            d = self.imgs[iid].get("data")
            if d:
                items.append((f"image {iid}", "images", iid, d))
        for vid in self.mine(self.vols, user, {"available"}):
            d = self.vols[vid].get("data")
            if d:
                items.append((f"volume {vid}", "volumes", f"volume-{vid}", d))
        if not items:
            return None
        items = self.rng.sample(items, min(4, len(items)))
        try:
            got = self._ceph_script(READ, "read failed", json.dumps([(k, p, n, d[0]) for k, p, n, d in items]))
        except FlowError as e:
            return str(e)
        for key, _, _, d in items:
            if got.get(key) not in (None, d[1]):
                self.violation(f"{key}: its first {d[0]} bytes are not what was written")
        return f"{len(items)} checked"

    # -- faults --------------------------------------------------------------------------
    def state(self):
        return cloudlib.read_state(self.dir)

    def fault_kill_volume(self, reason="at random"):
        """SIGKILL one cinder-volume service (of an active-active cluster: any one of them),
        then its restart as tools/cloud does it."""
        self.kills += 1
        k = self.rng.randint(1, self.state().get("volume_services", 1))
        host, key = _volume_service(k)
        pgid = self.state()["pgids"][key]
        start = time.monotonic()
        window = [host, start, None]
        self.cv_down.append(window)
        dis = [start, None]
        self.disruptions.append(dis)
        try:
            os.killpg(pgid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.say("fault", f"SIGKILL cinder-volume {host} ({reason}); restarting it")
        try:
            self._restart_volume(k)
        except Exception as e:  # noqa: BLE001 - reported, and a violation
            self.violation(f"cinder-volume {host} did not come back: {e}")
        window[2] = dis[1] = time.monotonic()
        self.say("fault", f"cinder-volume {host} back after {window[2] - start:.1f}s")

    def fault_keystone(self):
        pgid = self.state()["pgids"]["keystone"]
        secs = self.rng.uniform(3, 8)
        self.say("fault", f"Keystone stopped (SIGSTOP) for {secs:.1f}s")
        os.killpg(pgid, signal.SIGSTOP)
        try:
            time.sleep(secs)
        finally:
            os.killpg(pgid, signal.SIGCONT)

    def fault_glance(self):
        pgid = self.state()["pgids"]["glance"]
        workers = [p for p in _children(pgid)]
        if self.rng.random() < 0.5 or not workers:
            self.say("fault", "glance-api reloaded (SIGHUP: new workers)")
            os.kill(pgid, signal.SIGHUP)
        else:
            self.say("fault", f"glance-api worker killed (SIGKILL {workers})")
            for w in workers:
                try:
                    os.kill(w, signal.SIGKILL)
                except ProcessLookupError:
                    pass
        cloudlib.wait_for("glance-api", lambda: _http_ok(self.state()["glance_url"] + "/versions"), 120)

    def fault_ceph(self, daemon):
        ceph_dir = self.cloud.env["CEPH_DEV_DIR"]
        conf = self.cloud.env["CEPH_CONF"]
        osds = self.state().get("osds", 1)
        ident = str(self.rng.randrange(osds)) if daemon == "osd" else "a"
        name, binary = f"{daemon}.{ident}", f"ceph-{daemon}"
        pidfile = os.path.join(ceph_dir, "run", f"{name}.pid")
        with open(pidfile) as f:
            pid = int(f.read().strip())
        down = self.rng.uniform(2, 10)
        start = time.monotonic()
        if daemon == "osd" and osds > 1:
            # a crash: the replicas on the other two OSDs serve I/O (min_size 2); the
            # restarted memstore OSD comes back empty and recovers from them
            self.say("fault", f"{name} killed (SIGKILL), restarted after {down:.1f}s")
            os.kill(pid, signal.SIGKILL)
            if not self._respawn_ceph(name, ident, binary, pid, start, down, conf):
                return
        elif daemon == "osd":
            # the cloud's OSD is a memstore: a new process would start empty. The OSD goes
            # down without its process ending: stalled (SIGSTOP), then marked down by the
            # monitor; it rejoins and peers again, as after a restart
            self.say("fault", f"{name} stalled (SIGSTOP) {down:.1f}s, marked down, resumed")
            os.kill(pid, signal.SIGSTOP)
            try:
                subprocess.run(["ceph", "--conf", conf, "osd", "down", ident], capture_output=True, timeout=30)
                time.sleep(max(0.0, start + down - time.monotonic()))
            finally:
                os.kill(pid, signal.SIGCONT)
        else:
            self.say("fault", f"{name} restarted (SIGTERM, {down:.1f}s down)")
            os.kill(pid, signal.SIGTERM)
        self._restart_ceph(name, ident, binary, pid, start, down, conf)

    def _restart_ceph(self, name, ident, binary, pid, start, down, conf):
        if name.startswith("mon") and not self._respawn_ceph(name, ident, binary, pid, start, down, conf):
            return
        self._wait_ceph(name, start, conf)

    def _respawn_ceph(self, name, ident, binary, pid, start, down, conf):
        deadline = time.monotonic() + 60
        while os.path.exists(f"/proc/{pid}") and not self.zombie(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if os.path.exists(f"/proc/{pid}") and not self.zombie(pid):
            os.kill(pid, signal.SIGKILL)
            time.sleep(1)
        time.sleep(max(0.0, start + down - time.monotonic()))
        proc = subprocess.run([binary, "--conf", conf, "-i", ident], capture_output=True, text=True, timeout=120)
        if proc.returncode != 0:
            self.violation(f"{name} did not restart: {cloudlib.last_line(proc.stderr)}")
            return False
        return True

    def _wait_ceph(self, name, start, conf):
        def healthy():  # no mgr here (no `pg stat`): the OSD up and a write through
            out = subprocess.run(["ceph", "--conf", conf, "--connect-timeout", "5", "osd", "stat", "-f", "json"],
                                 capture_output=True, text=True, timeout=15)
            if json.loads(out.stdout)["num_up_osds"] < self.state().get("osds", 1):
                return False
            for pool in ("volumes", "images"):
                w = subprocess.run(["rados", "--conf", conf, "-p", pool, "put", "soak-probe", "/dev/null"],
                                   capture_output=True, timeout=15)
                subprocess.run(["rados", "--conf", conf, "-p", pool, "rm", "soak-probe"], capture_output=True,
                               timeout=15)
                if w.returncode != 0:
                    return False
            return True
        try:
            cloudlib.wait_for(f"{name} healthy", healthy, 120)
            if name.startswith("osd") and self.state().get("osds", 1) > 1:
                self._wait_recovered(name)
        except cloudlib.CloudError as e:
            self.violation(str(e))
        self.say("fault", f"{name} back after {time.monotonic() - start:.1f}s")

    def _wait_recovered(self, name):
        """Until every PG is active+clean again. A killed memstore OSD restarts empty: until
        recovery has copied every object back to it, the next OSD fault can take a PG's
        last complete copy (the soak once lost objects that way: Ceph's "unfound", and
        I/O to them blocked for good)."""
        last = {}

        def clean():
            self.check_services()  # a service that stops reporting while Ceph recovers
            last.update(self.pg_states())
            if all(state == "active+clean" for state in last.values()):
                return True
            time.sleep(2)  # each look costs a process and a query per PG
            return False
        t0 = time.monotonic()
        try:
            cloudlib.wait_for(f"{name}'s recovery", clean, RECOVERY_BOUND)
        except cloudlib.CloudError:
            raise cloudlib.CloudError(f"{name}: not every PG active+clean {RECOVERY_BOUND}s after its restart: "
                                      + ", ".join(f"{pg} {st}" for pg, st in sorted(last.items())
                                                  if st != "active+clean")) from None
        self.say("fault", f"{name}: every PG active+clean {time.monotonic() - t0:.1f}s after it was up")

    def fault_rabbit(self):
        pgid = self.state()["pgids"]["rabbitmq"]
        with open(f"/proc/{pgid}/cmdline", "rb") as f:
            cmd = [a.decode() for a in f.read().split(b"\0") if a]
        with open(f"/proc/{pgid}/environ", "rb") as f:
            env = dict(a.decode().split("=", 1) for a in f.read().split(b"\0") if b"=" in a)
        cwd = os.readlink(f"/proc/{pgid}/cwd")
        log = os.readlink(f"/proc/{pgid}/fd/1")
        port = int(env["RABBITMQ_NODE_PORT"])
        start = time.monotonic()
        dis = [start, None]
        self.disruptions.append(dis)
        self.say("fault", "RabbitMQ restarted")
        try:
            stop_group(pgid, 30)
            with open(log, "a") as out:
                proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                        stderr=subprocess.STDOUT, start_new_session=True)
            state = self.state()
            state["pgids"]["rabbitmq"] = proc.pid
            cloudlib.write_private(os.path.join(self.dir, cloudlib.STATE), json.dumps(state, indent=2))

            def amqp():
                with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
                    s.sendall(b"AMQP\x00\x00\x09\x01")
                    return s.recv(1)[:1] == b"\x01"
            cloudlib.wait_for("rabbitmq-server", amqp, 120, dead=lambda: proc.poll() is not None, log=log)
        except Exception as e:  # noqa: BLE001
            self.violation(f"RabbitMQ did not come back: {e}")
        dis[1] = time.monotonic()
        self.say("fault", f"RabbitMQ back after {dis[1] - start:.1f}s")

    # -- the run -------------------------------------------------------------------------
    def tick(self):
        if self.poll():
            self.check_states()
            self.check_services()
            self.write_pending()
        if time.monotonic() - self.last_ceph_check > 20:
            self.last_ceph_check = time.monotonic()
            self.check_ceph()

    def run(self):
        c = self.cloud
        self.log(f"soak: seed {self.seed}, {self.minutes} min, cloud {self.dir}", flush=True)
        self.users = [u for u in USERS if u in c.state["keystone"]["users"]]
        if self.users != list(USERS):
            self.log(f"soak: the cloud has no user {set(USERS) - set(self.users)} (a tools/cloud older than "
                     "the soak): one project only", flush=True)
        self.refresh_api_ids()
        self.baseline_ids = {"volumes": set(self.api_ids["volume"]), "images": set(self.api_ids["image"])}
        self.baseline = self.ceph_dump()
        self.log(f"baseline: {sum(len(p['images']) + len(p['trash']) for p in self.baseline.values())} "
                 f"RBD images and trash entries", flush=True)
        ops = [(self.op_create, 8), (self.op_upload, 6), ("golden", 5), (self.op_from_image, 5),
               (self.op_clone, 3), (self.op_snapshot, 3), (self.op_extend, 2), (self.op_unmanage, 1),
               (self.op_manage, 2), (self.op_delete_image, 5), (self.op_delete_snapshot, 2),
               (self.op_delete_volume, 5), (self.op_verify, 2)]
        faults = [f for f in FAULTS if self.fault_kinds is None or f[0] in self.fault_kinds]
        end = self.t0 + self.minutes * 60
        next_fault = time.monotonic() + self.rng.uniform(20, 45)
        try:
            while time.monotonic() < end:
                self.tick()
                if time.monotonic() >= next_fault:
                    self.do_fault(self.rng.choices([f for f, _ in faults], [w for _, w in faults])[0])
                    next_fault = time.monotonic() + self.rng.uniform(30, 75)
                    continue
                user = self.rng.choice(self.users)
                op = self.rng.choices([o for o, _ in ops], [w for _, w in ops])[0]
                name = "upload(golden)" if op == "golden" else op.__name__[3:]
                try:
                    res = self.op_upload(user, golden=True) if op == "golden" else op(user)
                except (OSError, FlowError) as e:
                    res = f"failed: {type(e).__name__}: {e}"
                if res is not None:
                    self.count(self.ops, name)
                    self.say("op", f"{user:6} {name}: {res}")
                time.sleep(self.rng.uniform(0.2, 1.5))
        finally:
            # a fault half-done must not outlive the soak: Keystone running
            try:
                os.killpg(self.state()["pgids"]["keystone"], signal.SIGCONT)
            except (OSError, KeyError, cloudlib.CloudError):
                pass
        return self.finish()

    def do_fault(self, fault):
        start = time.monotonic()
        try:
            self._do_fault(fault)
        finally:
            self.fault_windows.append((start, time.monotonic()))

    def _do_fault(self, fault):
        self.count(self.faults, fault)
        if fault == "kill-volume":
            self.fault_kill_volume()
        elif fault == "kill-volume-mid-upload":
            user = self.rng.choice(self.users)
            res = self.op_upload(user, golden=self.rng.random() < 0.5)
            if res is None or res.startswith("HTTP"):
                self.fault_kill_volume("no upload to interrupt")
                return
            self.count(self.ops, "upload")
            self.say("op", f"{user:6} upload: {res}")
            time.sleep(self.rng.uniform(0.0, 2.5))
            self.fault_kill_volume("mid-upload")
        elif fault == "glance":
            self.fault_glance()
        elif fault in ("osd", "mon"):
            self.fault_ceph(fault)
        elif fault == "keystone":
            self.fault_keystone()
        elif fault == "rabbit":
            self.fault_rabbit()

    def settle(self, timeout):
        """Until nothing is transitional (operator resets as check_states judges)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.tick()
            busy = [f"{k} {i[:8]} {r['status']}" for k, t in (("volume", self.vols), ("snapshot", self.snaps),
                                                                ("image", self.imgs))
                    for i, r in t.items() if self.transitional(k, r)]
            if not busy:
                return []
            time.sleep(2)
        return busy

    def finish(self):
        self.say("phase", "load stopped: settling, then deleting everything through the API")
        busy = self.settle(TRANSITIONAL_BOUND + RESTART_SETTLE)
        for b in busy:
            self.violation(f"still transitional when the load stopped: {b}")
        # the admin manages again what it unmanaged, so that the volumes can go
        for name, rec in sorted(self.unmanaged.items()):
            if rec["volume"] in self.vols and not rec.get("volume_deleted"):
                res = self.op_manage_named(name)
                self.say("op", f"admin  manage: {res}")
        self.settle(120)
        deadline = time.monotonic() + 600
        while (self.vols or self.snaps or self.imgs) and time.monotonic() < deadline:
            things = ([("image", i) for i in self.imgs if not self.imgs[i].get("deleting")]
                      + [("snapshot", s) for s in self.snaps if not self.snaps[s].get("deleting")
                         and self.snaps[s]["status"] in ("available", "error")]
                      + [("volume", v) for v in self.vols if not self.vols[v].get("deleting")
                         and self.vols[v]["status"] in ("available", "error")])
            self.rng.shuffle(things)
            for kind, ident in things[:6]:
                res = {"image": self.delete_image, "snapshot": self.delete_snapshot,
                       "volume": self.delete_volume}[kind](ident)
                self.count(self.ops, f"cleanup-delete-{kind}")
                self.say("cleanup", res)
            time.sleep(2)
            self.tick()
            for kind, table in (("volume", self.vols), ("snapshot", self.snaps)):
                for ident, rec in table.items():  # a delete Cinder gave back (busy): again
                    if rec.get("deleting") and rec["status"] in ("available", "error") and \
                            time.monotonic() - rec["since"] > 5:
                        rec["deleting"] = False
        leftovers = [f"{k} {i} {r['status']}" for k, t in (("volume", self.vols), ("snapshot", self.snaps),
                                                          ("image", self.imgs)) for i, r in t.items()]
        bound = 2 * PURGE_INTERVAL + (WATCH_TIMEOUT if self.kills else 0)
        self.say("phase", f"everything deleted through the API: waiting for the baseline (bound {bound}s)")
        t_last = time.monotonic()
        while True:
            self.remove_unmanaged_in_trash()
            diff = diff_dump(self.baseline, self.ceph_dump())
            if not diff:
                self.say("check", f"pools at the baseline {time.monotonic() - t_last:.1f}s after the last delete")
                break
            if time.monotonic() - t_last > bound:
                break
            time.sleep(2)
        # a late look (a slow purge is a finding, not a leftover, if it ends)
        late = None
        if diff:
            t_late = time.monotonic()
            while diff and time.monotonic() - t_late < 60:
                time.sleep(5)
                diff = diff_dump(self.baseline, self.ceph_dump())
            late = time.monotonic() - t_last
            if diff:
                leftovers += [f"ceph {d}" for d in diff]
            else:
                self.violation(f"pools back at the baseline only {late:.0f}s after the last delete "
                               f"(bound {bound}s)")
        try:  # the soak's own faults must never have cost Ceph data (_wait_recovered)
            unclean = {pg: st for pg, st in self.pg_states().items() if st != "active+clean"}
        except (OSError, subprocess.SubprocessError, FlowError) as e:
            unclean = {"?": str(e)}
        if unclean:
            self.violation("Ceph: PGs not active+clean at the end: " + json.dumps(unclean))
        return self.summary(leftovers)

    def remove_unmanaged_in_trash(self):
        """The operator's part after a volume with an unmanaged snapshot was deleted: Cinder
        deleted it (the volume went to the RBD trash, as with upstream's driver) and the
        snapshot Cinder no longer knows is the admin's to remove, then the trash entry."""
        names = {f"volume-{r['volume']}": n for n, r in self.unmanaged.items() if r.get("volume_deleted")}
        if not names:
            return
        rbd = ["rbd", "--conf", self.cloud.env["CEPH_CONF"]]
        out = subprocess.run(rbd + ["trash", "ls", "--format", "json", "volumes"], capture_output=True,
                             text=True, timeout=60)
        for e in json.loads(out.stdout or "[]"):
            if e["name"] not in names:
                continue
            purge = subprocess.run(rbd + ["snap", "purge", "--pool", "volumes", "--image-id", e["id"]],
                                   capture_output=True, text=True, timeout=60)
            rm = subprocess.run(rbd + ["trash", "rm", "--pool", "volumes", e["id"]],
                                capture_output=True, text=True, timeout=60) if purge.returncode == 0 else purge
            if rm.returncode == 0:
                self.unmanaged.pop(names[e["name"]], None)
                self.operator.append(f"trash entry {e['name']} with unmanaged {names[e['name']]}: removed")
                self.say("operator", f"removed the trash entry {e['name']} and its unmanaged snapshot")

    def op_manage_named(self, name):
        vid = self.unmanaged[name]["volume"]
        code, body = self.cloud.post("volume", "/os-snapshot-manage", {"snapshot": {
            "volume_id": vid, "ref": {"source-name": name}, "name": "soak-managed"}}, user="admin")
        if code != 202:
            return f"{name}: HTTP {code} {str(body)[:120]}"
        sid = body["snapshot"]["id"]
        del self.unmanaged[name]
        self.new(self.snaps, sid, "admin", "creating", volume=vid)
        return f"{name} of {vid[:8]} -> snapshot {sid[:8]}"

    def summary(self, leftovers):
        p = self.log
        p("\n== soak summary ==", flush=True)
        p(f"seed {self.seed}, {self.minutes} min, {self.t():.0f} s in all")
        p(f"operations: {sum(self.ops.values())} " + json.dumps(dict(sorted(self.ops.items()))))
        p(f"faults: {sum(self.faults.values())} " + json.dumps(dict(sorted(self.faults.items()))))
        p(f"invariant checks (Ceph): {self.checks}")
        p(f"longest transitional: {self.longest[0]:.1f}s ({self.longest[1]})")
        p(f"longest unaccounted in Ceph (a purge pending, seen every 20 s): {self.longest_pending[0]:.0f}s "
          f"({self.longest_pending[1]})")
        p(f"operator actions: {len(self.operator)}")
        for o in self.operator:
            p(f"  {o}")
        p(f"violations: {len(self.violations)}")
        for v in self.violations:
            p(f"  {v}")
        p(f"leftovers: {len(leftovers)}")
        for x in leftovers:
            p(f"  {x}")
        for st in self.stacks:
            p(f"\n== stacks of {st}")
        return 0 if not self.violations and not leftovers else 1


def diff_dump(before, after):
    out = []
    for pool in ("volumes", "images"):
        for part in ("images", "trash"):
            a, b = before[pool][part], after[pool][part]
            for k in sorted(set(a) | set(b)):
                if a.get(k) != b.get(k):
                    out.append(f"{pool}/{part}/{k}: {a.get(k)} -> {b.get(k)}")
    return out


def _volume_service(k):
    """cinder-volume service k's host and its key in the cloud's pgids, as tools/cloud
    names them (Cloud.volume_host, Cloud.volume_pgid_name)."""
    return ("cloud", "cinder_volume") if k == 1 else (f"cloud-{k}", f"cinder_volume_{k}")


def _cmdline(pid):
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(x) for x in f.read().split()]
    except OSError:
        return []


def _http_ok(url):
    import urllib.error
    import urllib.request
    try:
        return urllib.request.urlopen(url, timeout=3).status < 400
    except urllib.error.HTTPError as e:
        return e.code < 400 or e.code == 300


def main(directory, minutes, seed, restart_volume=None, log=print, faults=None):
    soak = Soak(directory, minutes, seed, log=log, restart_volume=restart_volume, faults=faults)
    try:
        return soak.run()
    except FlowError as e:
        log(f"soak: {e}")
        return 1
    except KeyboardInterrupt:
        soak.summary(["interrupted"])
        return 1
