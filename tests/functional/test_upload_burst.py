"""A burst of uploads in one process, as cinder-volume runs them (threads), on the dev
cluster with upstream Glance 33: their volume snapshots share one monitor commit.

Each snapshot id is a monitor commit, and the monitor commits at once only when idle;
otherwise one paxos_propose_interval (1 s) after its last commit. Two things made a burst
miss the first commit: a mon command per upload just before its snapshot (clone_format's
`osd dump`, whose audit-log entry is itself a commit; now read once per cluster), and
uploads reaching their snapshots at different moments (now they wait for each other at
cinder_ext.snapshot_gate). Either one makes these snapshots take about 1 s.

Proven by counting commits (the osdmap epochs that committed the snapshot ids, and the
mon commands sent), not by the clock: a loaded machine changes how long a burst takes,
not how many commits serve it. The burst test fails with the gate disabled.
"""

import json
import os
import subprocess
import threading
import time

import rbd

from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB
from cinder_ext import opts, snapshot_gate
from cinder_ext.upload import upload_volume

BURST = 4


def _osdmap_epoch(cluster, epoch=None):
    args = ["ceph", "osd", "dump", *([str(epoch)] if epoch is not None else []), "-f", "json"]
    return json.loads(cluster.admin(*args))


def _committing_epochs(cluster, pool, snap_ids, since):
    """{snapshot id: the osdmap epoch that committed it}. A self-managed snapshot's id is
    allocated by the monitor: it is committed in the first epoch whose pool snap_seq
    reaches it. Counted from the cluster's own history, not from any clock."""
    found = {}
    for epoch in range(since, _osdmap_epoch(cluster)["epoch"] + 1):
        pools = _osdmap_epoch(cluster, epoch)["pools"]
        seq = next(p["snap_seq"] for p in pools if p["pool_name"] == pool)
        for snap_id in snap_ids:
            if seq >= snap_id:
                found.setdefault(snap_id, epoch)
    return found


def _upload_snap_id(env, vol, image_id):
    with rbd.Image(env.io[env.vpool], vol, read_only=True) as img:
        for s in img.list_snaps():
            if s.get("namespace") == rbd.RBD_SNAP_NAMESPACE_TYPE_TRASH and img.snap_get_trash_namespace(
                    s["id"])["original_name"] == f"image-{image_id}":
                return s["id"]
    raise AssertionError(f"no upload snapshot image-{image_id} on {vol}")


def _wait_for_an_idle_monitor(cluster, quiet=1.2, timeout=60):
    """Until the monitor has committed nothing for `quiet` s (more than its 1 s
    paxos_propose_interval): it then commits the next request at once, after gathering
    for paxos_min_wait (50 ms). Read through its admin socket, which commits nothing
    (every `ceph` command is itself a commit: its audit-log entry)."""
    asok = os.path.join(cluster.dir, "run", "ceph-mon.a.asok")

    def commits():
        out = subprocess.run(["ceph", "--admin-daemon", asok, "perf", "dump", "paxos"],
                             capture_output=True, text=True, check=True).stdout
        return json.loads(out)["paxos"]["commit"]
    deadline = time.monotonic() + timeout
    last, since = commits(), time.monotonic()
    while time.monotonic() - since < quiet:
        assert time.monotonic() < deadline, "the monitor never went quiet"
        time.sleep(0.05)
        now = commits()
        if now != last:
            last, since = now, time.monotonic()


# each upload's image is fetched STAGGER s later than the one before (Glance slower for
# some images, as in any real burst): they reach their snapshots 2 * STAGGER apart (two
# fetches each), all within the gate's MAX_WAIT, and each later than the monitor's 50 ms
STAGGER = 0.04


def test_a_burst_in_one_process_shares_one_monitor_commit(cinder_env, glance_proxy):
    """BURST uploads started together in one process, reaching their volume snapshots at
    different moments: their snapshots are committed by one monitor commit (one osdmap
    epoch), because they ask for them together at the gate. Without the gate the first is
    committed alone and the others a second later: two commits. No clock is asserted on:
    the commits are read from the osdmap history."""
    env = cinder_env
    conf, backend = opts.load([env.conf(glance_url=glance_proxy.url)])
    warm = upload_volume(conf, backend, env.volume(16 * MiB), env.image(), encrypted=False)
    assert warm["method"] == "clone", warm
    vols = [env.volume(16 * MiB) for _ in range(BURST)]
    images = [env.image() for _ in range(BURST)]
    delay = {f"/v2/images/{image}": i * STAGGER for i, image in enumerate(images)}
    glance_proxy.intercept = lambda method, path: time.sleep(delay.get(path, 0)) if method == "GET" else None
    results = [None] * BURST

    def one(i):
        results[i] = upload_volume(conf, backend, vols[i], images[i], encrypted=False)

    since = _osdmap_epoch(env.cluster)["epoch"]
    _wait_for_an_idle_monitor(env.cluster)
    threads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None and r["method"] == "clone" for r in results), results
    ids = [_upload_snap_id(env, vols[i], images[i]) for i in range(BURST)]
    epochs = _committing_epochs(env.cluster, env.vpool, ids, since)
    print(f"volume snapshots of a burst of {BURST}: ids {ids} committed in epochs "
          f"{[epochs.get(i) for i in ids]}; gathered "
          f"{[round(r['seconds'].get('gather', 0), 3) for r in results]} s")
    assert len(epochs) == BURST, epochs
    gathered = [r["seconds"].get("gather", 0) for r in results]
    if max(gathered) < snapshot_gate.MAX_WAIT * 0.95:
        # every upload reached the gate in time: one group, one commit
        assert len(set(epochs.values())) == 1, epochs
    else:
        # the gate's bound ran out (CI's 2 cores, 3 workers: an upload took over 0.4 s to
        # reach its snapshot; seen once): the group it let through (each one waited)
        # still shares one commit; the late one asks alone, as the gate promises
        waited = {ids[i] for i in range(BURST) if gathered[i] > 0}
        assert len(waited) >= 2 and len({epochs[i] for i in waited}) == 1, (epochs, gathered)


def test_an_upload_sends_no_mon_command_once_the_clone_format_is_known(cinder_env, monkeypatch):
    # each mon command is a monitor commit (its audit-log entry) that the next snapshot
    # may wait a whole second behind; counted at the client, on the real path
    from cinder_ext import ceph
    sent = []
    connect = ceph.Cluster.connect

    def counting_connect(self):
        out = connect(self)
        client = self.client

        class Counting:
            def __getattr__(self, name):
                return getattr(client, name)

            def mon_command(self, cmd, *a, **kw):
                sent.append(cmd)
                return client.mon_command(cmd, *a, **kw)

        self.client = Counting()
        return out

    monkeypatch.setattr(ceph.Cluster, "connect", counting_connect)
    monkeypatch.setattr(ceph, "_CLONE_FORMATS", {})
    env = cinder_env
    conf, backend = opts.load([env.conf()])
    first = upload_volume(conf, backend, env.volume(16 * MiB), env.image(), encrypted=False)
    assert first["method"] == "clone" and len(sent) == 1 and "osd dump" in sent[0], sent
    second = upload_volume(conf, backend, env.volume(16 * MiB), env.image(), encrypted=False)
    assert second["method"] == "clone" and len(sent) == 1, sent
