"""A burst of uploads in one process, as cinder-volume runs them (threads), on the dev
cluster with upstream Glance 33: their volume snapshots share one monitor commit.

Each snapshot id is a monitor commit, and the monitor commits at once only when idle;
otherwise one paxos_propose_interval (1 s) after its last commit. Two things made a burst
miss the first commit: a mon command per upload just before its snapshot (clone_format's
`osd dump`, whose audit-log entry is itself a commit; now read once per cluster), and
uploads reaching their snapshots at different moments (now they wait for each other at
cinder_ext.snapshot_gate). Either one makes these snapshots take about 1 s.
"""

import threading
import time

from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB
from cinder_ext import opts
from cinder_ext.upload import upload_volume

BURST = 4


def test_a_burst_in_one_process_shares_the_first_monitor_commit(cinder_env):
    env = cinder_env
    conf, backend = opts.load([env.conf()])
    warm = upload_volume(conf, backend, env.volume(16 * MiB), env.image(), encrypted=False)
    assert warm["method"] == "clone", warm
    vols = [env.volume(16 * MiB) for _ in range(BURST)]
    images = [env.image() for _ in range(BURST)]
    results = [None] * BURST

    def one(i):
        results[i] = upload_volume(conf, backend, vols[i], images[i], encrypted=False)

    threads = [threading.Thread(target=one, args=(i,)) for i in range(BURST)]
    time.sleep(2.5)  # an idle monitor: no commit within the last paxos_propose_interval
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert all(r is not None and r["method"] == "clone" for r in results), results
    snaps = sorted(r["seconds"]["volume_snapshot"] for r in results)
    print(f"volume snapshots of a burst of {BURST}: {snaps} s; "
          f"gathered {[r['seconds'].get('gather', 0) for r in results]} s")
    # one commit for all (about 0.06 s); a missed commit is about 1 s. One straggler is
    # allowed for a loaded machine (the gate waits MAX_WAIT at most)
    assert snaps[-2] < 0.5, snaps


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
