"""A rolling upgrade of our package: old and new code on one cluster at once (issue 23).

In an active-active Cinder cluster the cinder-volume services are upgraded one after the
other, so for a while an old service's periodic purge runs while a new service uploads,
and the reverse. Each side must see the other's in-flight upload as in flight.

OLD is the release before the lock objects moved to their own RADOS namespace: its code
is taken from git (`git archive`) and run from its own tree (PYTHONPATH), against the same
Ceph cluster, Glance and configuration as the new code. Each upload pauses at a step
boundary where its clone exists and its location is not registered yet; the other
version's purge (the CLI's, the same Purge the driver's periodic task runs, on every pool)
runs then; resumed, the upload must finish by clone with the volume's bytes.
"""

import json
import os
import subprocess
import sys
import time

import pytest

from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB
from tests.functional.test_upload_faults import PAUSE_RUNNER, ROOT

OLD = "2549b634023db0e74885c85dcd2196fc8d367202"  # the release before the lock namespace moved

# The old release's CLI, pausing at its fault points (cinder_ext.faults.point, which 0.2 calls
# where this release reaches cinder_ext.steps) as PAUSE_RUNNER does at the new steps
OLD_PAUSE_RUNNER = PAUSE_RUNNER.replace("from cinder_ext import cli, steps", "from cinder_ext import cli, faults") \
    .replace("steps.observe(pause)", "faults.point = pause")
assert OLD_PAUSE_RUNNER.count("faults") == 2

# where the clone exists and Glance has no location yet, in both releases
IN_FLIGHT = ("clone.cloned", "clone.image_snapshot_created", "clone.location_requested")


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory):
    d = str(tmp_path_factory.mktemp("old-release"))
    proc = subprocess.run(f"git -C {ROOT} archive {OLD} cinder_ext glance_store_ext | tar -x -C {d}",
                          shell=True, capture_output=True, text=True)
    assert proc.returncode == 0, f"the old release ({OLD}) from git: {proc.stderr}"
    # it is the old code that runs from there: its fault points module is gone since
    check = subprocess.run([sys.executable, "-c", "import cinder_ext.faults, cinder_ext; print(cinder_ext.__file__)"],
                           cwd=d, env=dict(os.environ, PYTHONPATH=d), capture_output=True, text=True)
    assert check.returncode == 0 and check.stdout.startswith(d), check.stderr
    return d


class Upload:
    """One release's CLI upload in a child process, paused at a step boundary."""

    def __init__(self, tmp_path, conf, volume, image_id, at, tree=None):
        self.dir = os.path.join(str(tmp_path), f"pause-{os.urandom(3).hex()}")
        os.makedirs(self.dir)
        env = dict(os.environ, PAUSE_AT=at, PAUSE_DIR=self.dir)
        if tree:
            env["PYTHONPATH"] = tree
        self.proc = subprocess.Popen([sys.executable, "-c", OLD_PAUSE_RUNNER if tree else PAUSE_RUNNER,
                                      "--config-file", conf, "upload", volume, image_id], cwd=tree or ROOT,
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def wait_reached(self, timeout=120):
        deadline = time.monotonic() + timeout
        while not os.path.exists(os.path.join(self.dir, "reached")):
            assert self.proc.poll() is None, f"the upload ended before the pause: {self.proc.stderr.read()}"
            assert time.monotonic() < deadline, "the upload never reached the pause point"
            time.sleep(0.05)

    def go(self, timeout=300):
        open(os.path.join(self.dir, "go"), "w").close()
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, err


def purge(conf, tree=None):
    env = dict(os.environ, PYTHONPATH=tree) if tree else dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "cinder_ext.cli", "--config-file", conf, "purge"],
                          cwd=tree or ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


@pytest.mark.parametrize("at", IN_FLIGHT)
@pytest.mark.parametrize("uploader, purger", [("new", "old"), ("old", "new")])
def test_an_upload_in_flight_survives_the_other_releases_purge(cinder_env, old_tree, tmp_path, at, uploader,
                                                               purger):
    env = cinder_env
    vol = env.volume(32 * MiB, data_len=1 * MiB)
    sha = env.volume_sha(vol)
    conf = env.conf()
    image_id = env.image()
    tree = {"old": old_tree, "new": None}
    up = Upload(tmp_path, conf, vol, image_id, at, tree=tree[uploader])
    up.wait_reached()
    said = purge(conf, tree=tree[purger])
    code, out, err = up.go()
    assert code == 0, f"{uploader} upload after the {purger} purge at {at}: {err}\npurge: {said}"
    assert json.loads(out)["method"] == "clone", out
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha


def _cli(conf, *args, tree=None):
    env = dict(os.environ, PYTHONPATH=tree) if tree else dict(os.environ)
    proc = subprocess.run([sys.executable, "-m", "cinder_ext.cli", "--config-file", conf, *args],
                          cwd=tree or ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_the_previous_releases_clone_uploads_are_adopted_once_and_purged_after_their_deletes(
        cinder_env, old_tree):
    """The previous release kept no journal: `adopt` (dry run first) journals its clone
    uploads, which stay readable; once Cinder and Glance delete them, the purge reclaims
    them like any upload of this release's (the image trashed for a volume cloned from it
    included), and both pools are back at the baseline."""
    env = cinder_env
    conf = env.conf()
    vols, images = [env.volume(16 * MiB), env.volume(16 * MiB)], [env.image(), env.image()]
    shas = [env.volume_sha(v) for v in vols]
    for vol, image_id in zip(vols, images):
        assert _cli(conf, "upload", vol, image_id, tree=old_tree)["method"] == "clone"
    wanted = sorted(f"{env.ipool}/{i} <- {env.vpool}/{v} (complete)" for v, i in zip(vols, images))
    plan = _cli(conf, "adopt", "--dry-run")
    assert sorted(plan["adopted"]) == wanted and plan["dry_run"], plan
    assert _cli(conf, "adopt", "--dry-run") == plan  # a dry run writes nothing
    assert sorted(_cli(conf, "adopt")["adopted"]) == wanted
    assert _cli(conf, "adopt")["adopted"] == []  # once
    for image_id, sha in zip(images, shas):
        assert env.image_sha(image_id) == sha
    # a volume cloned from the first image: Glance's delete then trashes that image
    clone = f"volume-clone-{os.urandom(4).hex()}"
    _cli(conf, "create-volume", images[0], clone)
    for image_id in images:
        env.glance().delete_image(image_id)
        env.images.remove(image_id)
    for name in [clone, *vols]:
        _cli(conf, "delete-volume", name)
    env.volumes[:] = [v for v in env.volumes if v not in vols]
    _cli(conf, "purge")
    assert env.new_state(env.baseline) == {env.vpool: {"images": {}, "trash": []},
                                           env.ipool: {"images": {}, "trash": []}}
