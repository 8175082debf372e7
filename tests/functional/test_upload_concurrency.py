"""Uploads at the same time, by the real CLI in separate processes, on the dev cluster with
upstream Glance 33: the same volume to many images, many volumes, and two uploads to the
same image id, an upload racing a delete of its volume. No corruption (every image's bytes
read back through Glance), no orphan (both pools checked), every loser told so in one line.

The count comes from the environment; the default is issue 9's full count, 16, which
two cores run in about 35 s (16 processes on one volume 21 s, on 16 volumes 11 s).
On a slower machine, reduce it:

    GRC_UPLOAD_CONCURRENCY=4 GRC_UPLOAD_RACE_ROUNDS=1 .venv/bin/python -m pytest tests/functional/test_upload_concurrency.py -q
"""

import json
import os
import random
import subprocess
import sys
import time

import pytest

from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB
from cinder_ext import clone
from cinder_ext import locks
from tests import fault_injection
from cinder_ext.ceph import Cluster
from cinder_ext.locks import VOLUME_LOCK_WAIT
from tests.functional.test_upload_faults import PAUSE_RUNNER, Paused, _one_line_error

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
N = int(os.environ.get("GRC_UPLOAD_CONCURRENCY", "16"))
RACE_ROUNDS = int(os.environ.get("GRC_UPLOAD_RACE_ROUNDS", "3"))
BOUND = float(os.environ.get("GRC_UPLOAD_CONCURRENCY_TIME_LIMIT", "300"))


def _spawn(conf, volume, image_id):
    return subprocess.Popen([sys.executable, "-m", "tests.fault_injection", "cinder_ext.cli",
                             "--config-file", conf, "upload",
                             volume, image_id], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _spawn_delete(conf, volume):
    return subprocess.Popen([sys.executable, "-m", "cinder_ext.cli", "--config-file", conf,
                             "delete-volume", volume], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


class PausedDelete(Paused):
    """delete-volume by the CLI in a child process, paused at a step boundary."""

    def __init__(self, tmpdir, conf, volume, at):  # noqa: super() would start an upload
        self.dir = os.path.join(str(tmpdir), f"pause-{os.urandom(3).hex()}")
        os.makedirs(self.dir)
        env = dict(os.environ, PAUSE_AT=at, PAUSE_DIR=self.dir)
        self.proc = subprocess.Popen([sys.executable, "-c", PAUSE_RUNNER, "--config-file", conf,
                                      "delete-volume", volume], cwd=ROOT, env=env,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs, deadline):
    out = []
    for p in procs:
        try:
            stdout, stderr = p.communicate(timeout=max(1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            stdout, stderr = p.communicate()
        out.append((p.returncode, stdout, stderr))
    return out


def _all_cloned(results):
    bad = [(code, err) for code, out, err in results
           if code != 0 or json.loads(out)["method"] != "clone"]
    assert not bad, bad[:3]


def test_same_volume_to_many_images_at_once(cinder_env, reliability):
    env = cinder_env
    vol = env.volume(32 * MiB, data_len=1 * MiB)
    sha = env.volume_sha(vol)
    conf = env.conf()
    images = [env.image() for _ in range(N)]
    before = env.pool_state()
    t0 = time.monotonic()
    results = _finish([_spawn(conf, vol, i) for i in images], t0 + BOUND)
    took = time.monotonic() - t0
    print(f"{N} uploads of one volume at once: {took:.1f} s")
    done = sum(code == 0 for code, _, _ in results)
    corrupt = sum(env.image_sha(i) != sha for i in images) if done == N else 0
    reliability.uploads(N, done, 0, N if done == N else 0, corrupt)
    _all_cloned(results)
    assert corrupt == 0
    for image_id in images:
        assert env.get_image(image_id)["status"] == "active"
    new = env.new_state(before)
    assert new[env.ipool] == {"images": {i: [("user", "snap", True)] for i in images}, "trash": []}
    assert new[env.vpool] == {"images": {vol: sorted(("trash", f"image-{i}", False) for i in images)},
                              "trash": []}


def test_many_volumes_at_once(cinder_env, reliability):
    env = cinder_env
    vols = [env.volume(16 * MiB, data_len=512 * 1024) for _ in range(N)]
    shas = [env.volume_sha(v) for v in vols]
    conf = env.conf()
    images = [env.image() for _ in range(N)]
    before = env.pool_state()
    t0 = time.monotonic()
    results = _finish([_spawn(conf, v, i) for v, i in zip(vols, images)], t0 + BOUND)
    took = time.monotonic() - t0
    print(f"{N} uploads of {N} volumes at once: {took:.1f} s")
    done = sum(code == 0 for code, _, _ in results)
    corrupt = sum(env.image_sha(i) != sha for i, sha in zip(images, shas)) if done == N else 0
    reliability.uploads(N, done, 0, N if done == N else 0, corrupt)
    _all_cloned(results)
    assert corrupt == 0
    new = env.new_state(before)
    assert new[env.ipool] == {"images": {i: [("user", "snap", True)] for i in images}, "trash": []}
    assert new[env.vpool] == {"images": {v: [("trash", f"image-{i}", False)]
                                         for v, i in zip(vols, images)}, "trash": []}


def test_second_upload_to_an_image_in_progress_is_refused_and_the_first_finishes(
        cinder_env, tmp_path, reliability):
    """The known gap: the second attempt took the first's clone for a crash leftover and
    removed it before it was registered. Now it is refused while the first runs."""
    env = cinder_env
    vol, other = env.volume(16 * MiB), env.volume(16 * MiB)
    sha = env.volume_sha(vol)
    conf = env.conf()
    image_id = env.image()
    before = env.pool_state()
    first = Paused(tmp_path, conf, vol, image_id, at="clone.image_snapshot_protected")
    first.wait_reached()  # cloned, not yet registered: what the second used to remove
    losers = [env.cli("--config-file", conf, "upload", v, image_id) for v in (vol, other)]
    code, out, err, _ = first.go()
    for loser in losers:
        line = _one_line_error(loser.stderr) if loser.returncode == 1 else ""
        assert loser.returncode == 1 and "another upload to it is in progress" in line, loser.stderr
    assert code == 0, err
    assert json.loads(out)["method"] == "clone"
    assert env.image_sha(image_id) == sha
    # once it is done: the same volume again is told it is done; another volume is refused
    again = env.cli("--config-file", conf, "upload", vol, image_id)
    assert again.returncode == 0 and json.loads(again.stdout)["resumed"] is True, again.stderr
    late = env.cli("--config-file", conf, "upload", other, image_id)
    line = _one_line_error(late.stderr)
    assert late.returncode == 1 and f"holds a clone of {env.vpool}/{vol}" in line
    assert env.image_sha(image_id) == sha
    new = env.new_state(before)
    assert new[env.ipool] == {"images": {image_id: [("user", "snap", True)]}, "trash": []}
    assert new[env.vpool] == {"images": {vol: [("trash", f"image-{image_id}", False)]}, "trash": []}
    codes = [code, again.returncode, late.returncode] + [p.returncode for p in losers]
    reliability.uploads(len(codes), codes.count(0), codes.count(1), 1, 0)


def test_two_uploads_racing_to_the_same_image(cinder_env, reliability):
    """Two volumes started together at one image, a few rounds: one wins, whole; the
    other gets one clear line; nothing else is left."""
    env = cinder_env
    conf = env.conf()
    for _ in range(RACE_ROUNDS):
        vols = [env.volume(16 * MiB), env.volume(16 * MiB)]
        shas = {v: env.volume_sha(v) for v in vols}
        image_id = env.image()
        before = env.pool_state()
        results = _finish([_spawn(conf, v, image_id) for v in vols], time.monotonic() + BOUND)
        winners = [(v, json.loads(out)) for v, (code, out, _) in zip(vols, results) if code == 0]
        losers = [err for code, _, err in results if code != 0]
        assert len(winners) == 1 and len(losers) == 1, results
        winner, result = winners[0]
        assert result["method"] in ("clone", "copy"), result
        line = _one_line_error(losers[0])
        assert ("another upload to it is in progress" in line or "holds a clone of" in line
                or "409" in line), line
        corrupt = env.image_sha(image_id) != shas[winner]
        reliability.uploads(2, 1, 1, 1, int(corrupt))
        assert not corrupt
        new = env.new_state(before)
        assert new[env.ipool] == {"images": {image_id: [("user", "snap", True)]}, "trash": []}
        expect = [("trash", f"image-{image_id}", False)] if result["method"] == "clone" else []
        assert new[env.vpool] == {"images": {winner: expect} if expect else {}, "trash": []}


# -- an upload racing a delete of the same volume (locks.VolumeLock) ----------------------

def _waits_on_the_lock(env, waiter, holder, volume, op, seconds=1.0):
    """The waiter is blocked by the volume's lock itself: the volume's lock object exists
    and its one locker is the paused holder's process (op and pid in its description);
    after `seconds` the waiter still runs, the holder still holds, and the volume is as it
    was. Returns the reason it is not, or None."""
    with Cluster(env.cluster.conf, "admin") as admin:
        for _ in range(2):
            holders, _version = admin.lock_info(env.vpool, locks.lock_object(volume), locks.LOCK_NAME,
                                                namespace=locks.LOCK_NAMESPACE)
            described = [json.loads(h.get("desc") or "{}") for h in holders]
            if [(d.get("op"), d.get("pid")) for d in described] != [(op, holder.proc.pid)]:
                return f"the lock of {volume} is held by {described}, not the paused {op}"
            try:
                waiter.wait(timeout=seconds)
                return f"the waiter ended with {waiter.returncode} while the lock was held"
            except subprocess.TimeoutExpired:
                pass
        if volume not in env.pool_state()[env.vpool]["images"]:
            return f"{volume} changed while its lock was held"
    return None


def _upload_won(env, glance, conf, vol, sha, image_id, before, upload, delete, reliability):
    """The image is a whole clone; the delete trashed the volume in constant time. Then
    the image is deleted through Glance and purge leaves both pools as they were."""
    (ucode, uout, uerr), (dcode, dout, derr) = upload, delete
    assert ucode == 0 and dcode == 0, (uerr, derr)
    result, deleted = json.loads(uout), json.loads(dout)
    assert result["method"] == "clone", result
    assert deleted["action"] == "trashed", deleted
    assert deleted["dependents"] == [f"{env.ipool}/{image_id}"]
    assert deleted["seconds"]["total"] < 5, deleted["seconds"]  # constant time once it runs
    assert env.get_image(image_id)["status"] == "active"
    corrupt = env.image_sha(image_id) != sha
    reliability.uploads(1, 1, 0, 1, int(corrupt))
    assert not corrupt
    new = env.new_state(before)
    assert new[env.ipool] == {"images": {image_id: [("user", "snap", True)]}, "trash": []}
    assert new[env.vpool] == {"images": {}, "trash": [vol]}
    assert vol not in env.pool_state()[env.vpool]["images"]
    assert glance.request("DELETE", f"/v2/images/{image_id}").status == 204
    purged = env.cli("--config-file", conf, "purge")
    assert purged.returncode == 0 and json.loads(purged.stdout)["removed"] == [f"{env.vpool}/{vol}"]
    _expect_gone(env, vol, before)


def _delete_won(env, vol, image_id, before, upload, delete, reliability):
    """The volume is gone; the upload said so in one line and made nothing."""
    (ucode, uout, uerr), (dcode, dout, derr) = upload, delete
    assert dcode == 0, derr
    assert json.loads(dout)["action"] == "removed"
    line = _one_line_error(uerr)
    assert ucode == 1 and uout == "" and vol in line, uerr
    assert ("was deleted; nothing was uploaded" in line or "does not exist" in line
            or "not found" in line.lower()), line
    assert env.get_image(image_id)["status"] == "queued"
    reliability.uploads(1, 0, 1, 0, 0)
    _expect_gone(env, vol, before)


def _expect_gone(env, vol, before):
    expect = {p: {"images": dict(st["images"]), "trash": list(st["trash"])} for p, st in before.items()}
    expect[env.vpool]["images"].pop(vol)
    assert env.pool_state() == expect


def test_upload_racing_a_delete_of_the_same_volume(cinder_env, glance_peer, tmp_path, reliability):
    """Each round, both orders forced, then a free race. The upload holds the volume
    shared from its snapshot to its clone, the delete exclusively: either the upload wins
    (a registered clone with the volume's bytes, the volume trashed as its parent, purge
    reclaims it with the image) or the delete wins (the volume gone, the upload refused in
    one line with nothing made). Never a half state, never an orphan."""
    env = cinder_env
    conf = env.conf()
    outcomes = {"upload": 0, "delete": 0}
    for _ in range(RACE_ROUNDS):
        # the upload first: paused between its snapshot and its clone, the window in
        # which the delete used to take the snapshot for a stale one
        vol = env.volume(16 * MiB)
        sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
        upload = Paused(tmp_path, conf, vol, image_id, at="clone.volume_snapshot_created")
        upload.wait_reached()
        delete = _spawn_delete(conf, vol)
        blocked = _waits_on_the_lock(env, delete, upload, vol, "upload")  # it waits for the clone
        assert blocked is None, (blocked, delete.communicate() if delete.poll() is not None else "")
        ucode, uout, uerr, _ = upload.go()
        dout, derr = delete.communicate(timeout=BOUND)
        _upload_won(env, glance_peer, conf, vol, sha, image_id, before, (ucode, uout, uerr),
                    (delete.returncode, dout, derr), reliability)

        # the delete first: paused after inspecting the volume, before removing it
        vol = env.volume(16 * MiB)
        image_id, before = env.image(), env.pool_state()
        delete = PausedDelete(tmp_path, conf, vol, at="delete.inspected")
        delete.wait_reached()
        upload = _spawn(conf, vol, image_id)
        blocked = _waits_on_the_lock(env, upload, delete, vol, "delete")  # it waits for the delete
        assert blocked is None, (blocked, upload.communicate() if upload.poll() is not None else "")
        dcode, dout, derr, _ = delete.go()
        uout, uerr = upload.communicate(timeout=BOUND)
        _delete_won(env, vol, image_id, before, (upload.returncode, uout, uerr),
                    (dcode, dout, derr), reliability)

        # free: started up to 0.5 s apart, either first; either may win
        vol = env.volume(16 * MiB)
        sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
        lag = random.uniform(-0.5, 0.5)
        if lag >= 0:
            upload = _spawn(conf, vol, image_id)
            time.sleep(lag)
            delete = _spawn_delete(conf, vol)
        else:
            delete = _spawn_delete(conf, vol)
            time.sleep(-lag)
            upload = _spawn(conf, vol, image_id)
        upload, delete = _finish([upload, delete], time.monotonic() + BOUND)
        if upload[0] == 0:
            outcomes["upload"] += 1
            _upload_won(env, glance_peer, conf, vol, sha, image_id, before, upload, delete, reliability)
        else:
            outcomes["delete"] += 1
            _delete_won(env, vol, image_id, before, upload, delete, reliability)
    print(f"free races of an upload and a delete: {outcomes}")


@pytest.mark.parametrize("killed", ["upload", "delete"])
def test_a_killed_holder_of_the_volume_lock_blocks_nothing(cinder_env, killed, reliability):
    """A holder SIGKILLed is dead once its lease ends (the OSD drops its watch; env.cli
    waits for that): the other side then breaks its lock at once instead of waiting
    (VOLUME_LOCK_WAIT) or failing, and finishes the job whole."""
    env = cinder_env
    conf = env.conf()
    vol = env.volume(16 * MiB)
    sha, image_id, before = env.volume_sha(vol), env.image(), env.pool_state()
    if killed == "upload":  # holding the volume shared, its snapshot made, no clone yet
        crashed = env.cli("--config-file", conf, "upload", vol, image_id,
                          env={fault_injection.ENV_POINT: "clone.volume_snapshot_created"})
    else:  # holding it exclusively, nothing changed yet
        crashed = env.cli("--config-file", conf, "delete-volume", vol,
                          env={fault_injection.ENV_POINT: "delete.inspected"})
    assert crashed.returncode == -9, crashed.stderr
    t0 = time.monotonic()
    if killed == "upload":
        proc = env.cli("--config-file", conf, "delete-volume", vol)
        took = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout)
        # the crashed upload's snapshot has no clone: a leftover, removed with the volume
        assert out["action"] == "removed" and out["stale_snapshots_removed"] == [f"image-{image_id}"]
        assert "breaking the lock of" in proc.stderr
        _expect_gone(env, vol, before)
    else:
        proc = env.cli("--config-file", conf, "upload", vol, image_id)
        took = time.monotonic() - t0
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["method"] == "clone"
        assert "breaking the lock of" in proc.stderr
        assert env.image_sha(image_id) == sha
        new = env.new_state(before)
        assert new[env.ipool] == {"images": {image_id: [("user", "snap", True)]}, "trash": []}
    assert took < VOLUME_LOCK_WAIT, took
    reliability.crash(f"volume lock held by a killed {killed}", True)
