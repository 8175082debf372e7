"""Rollback never removes a clone Glance may be registering (issue 15, finding 3).

Real Glance 33 behind a proxy. The proxy answers 5xx to the image's task listing once
the location was requested: a real Glance cannot be made to fail only that call, so this
one fault is produced by the proxy; every other call reaches Glance as is.
"""

import pytest

from tests.cinder_fixtures import *  # noqa: F401,F403  (fixtures)
from tests.cinder_fixtures import MiB
from cinder_ext import exceptions as exc
from cinder_ext.footprint import upload_snap_name as volume_snapshot_name

ACTIVE_TIMEOUT = 5


def _conf(env, url):
    path = env.conf(glance_url=url)
    with open(path) as f:
        text = f.read()
    with open(path, "w") as f:
        f.write(text.replace("clone_active_timeout = 30", f"clone_active_timeout = {ACTIVE_TIMEOUT}"))
    return path


class Faults:
    """The proxy's faults for one image: the POST of its location answered 504 (after
    reaching Glance, or not at all), then every task listing of it answered 503."""

    def __init__(self, proxy, image_id, post_reaches_glance):
        self.image_id, self.reaches = image_id, post_reaches_glance
        self.posted = False
        self.task_listings_failed = 0
        locations = f"/v2/images/{image_id}/locations"
        if post_reaches_glance:
            proxy.rewrite[locations] = self._posted
        proxy.intercept = self._intercept

    def _posted(self, status, body):
        assert status in (200, 202), (status, body)  # Glance took it; we say it did not
        self.posted = True
        return 504, b'{"message": "Gateway Timeout"}'

    def _intercept(self, method, path):
        if method == "POST" and path == f"/v2/images/{self.image_id}/locations" and not self.reaches:
            self.posted = True
            return 504, b'{"message": "Gateway Timeout"}'
        if method == "GET" and path.startswith(f"/v2/images/{self.image_id}/tasks") and self.posted:
            self.task_listings_failed += 1
            return 503, b'{"message": "Service Unavailable"}'
        return None


def _clone_parent(env, image_id):
    import rbd
    with rbd.Image(env.io[env.ipool], image_id, read_only=True) as img:
        spec = img.get_parent_image_spec()
        return spec["pool_name"], spec["image_name"]


def test_registration_that_reached_glance_ends_active_with_its_data(cinder_env, glance_proxy):
    """The POST reached Glance but we saw 504, and Glance cannot list the tasks: the
    upload watches the image instead of rolling back, and it goes active with our bytes."""
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id = env.volume_sha(vol), env.image()
    faults = Faults(glance_proxy, image_id, post_reaches_glance=True)
    result = env.upload(_conf(env, glance_proxy.url), vol, image_id)
    assert faults.posted and faults.task_listings_failed >= 1
    assert result["method"] == "clone", result
    image = env.get_image(image_id)
    assert image["status"] == "active"
    assert env.image_sha(image_id) == sha  # never active without its data
    assert _clone_parent(env, image_id) == (env.vpool, vol)


def test_unknown_task_state_keeps_the_clone_for_a_retry(cinder_env, glance_proxy):
    """We saw 504 for the POST and 503 for every task listing: Glance may be registering
    the clone, so it stays (CloneIncomplete); a retry with the same image id, Glance whole
    again, finishes the upload with the volume's bytes."""
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id = env.volume_sha(vol), env.image()
    faults = Faults(glance_proxy, image_id, post_reaches_glance=False)
    with pytest.raises(exc.CloneIncomplete, match="the clone is kept"):
        env.upload(_conf(env, glance_proxy.url), vol, image_id)
    assert faults.posted and faults.task_listings_failed >= 1
    # the clone survived the failed transaction
    assert _clone_parent(env, image_id) == (env.vpool, vol)
    image = env.get_image(image_id)
    assert image["status"] == "queued" and not image.get("locations")
    # the retry (the reconciler's job when Cinder gives up instead) settles it
    glance_proxy.intercept = None
    glance_proxy.rewrite.clear()
    result = env.upload(_conf(env, glance_proxy.url), vol, image_id)
    assert result["method"] == "clone", result
    assert f"{env.ipool}/{image_id}" in result["recovered"]
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha
    snaps = env.pool_state()[env.vpool]["images"][vol]
    assert snaps == [("trash", volume_snapshot_name(image_id), False)]


def test_a_5xx_that_changed_nothing_is_sent_again(cinder_env, glance_proxy):
    """Glance 33 answers 500 to concurrent add-location calls when MariaDB reports a
    deadlock, and rolls the request back. The proxy produces that answer (a database
    deadlock cannot be made to order): the first POST of the location never reaches
    Glance and is answered 500. Glance provably did nothing (image queued, no task), so
    the upload sends it again and clones, instead of falling back to the copy."""
    env = cinder_env
    vol = env.volume(16 * MiB)
    sha, image_id = env.volume_sha(vol), env.image()
    posts = []

    def intercept(method, path):
        if method == "POST" and path == f"/v2/images/{image_id}/locations":
            posts.append(path)
            if len(posts) == 1:
                return 500, b'{"message": "The server has either erred or is incapable of performing the requested operation."}'
        return None
    glance_proxy.intercept = intercept
    result = env.upload(_conf(env, glance_proxy.url), vol, image_id)
    assert len(posts) == 2, posts
    assert result["method"] == "clone", result
    assert env.get_image(image_id)["status"] == "active"
    assert env.image_sha(image_id) == sha
