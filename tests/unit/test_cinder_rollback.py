"""Rollback safety after a registration attempt (issue 15, finding 3): unknown is unsafe."""

import pytest

from cinder_ext import clone
from cinder_ext import exceptions as exc
from cinder_ext import glance as glance_mod
from cinder_ext.decision import Clone

TARGET = Clone(store_id="ceph", pool="images", fsid="f", chunk_size=8 << 20)
QUEUED = {"status": "queued", "locations": []}


class FakeGlance:
    poll_interval = 0.01

    def __init__(self, image=QUEUED, tasks=(), tasks_error=None):
        self.image, self.tasks, self.tasks_error = dict(image), list(tasks), tasks_error

    def get_image(self, image_id):
        return self.image

    def image_tasks_strict(self, image_id):
        if self.tasks_error:
            raise self.tasks_error
        return self.tasks

    def wait_location_tasks(self, image_id, timeout):
        self.image_tasks_strict(image_id)


def _tx(glance):
    return clone.CloneUpload(None, glance, "volumes", "volume-1", "img", TARGET, active_timeout=0.05)


def test_roll_back_when_glance_tells_nothing_runs():
    assert _tx(FakeGlance(tasks=[{"type": "location_import", "status": "failure"}]))._safe_to_roll_back(None)


@pytest.mark.parametrize("glance", [
    FakeGlance(tasks_error=exc.GlanceError("list tasks: Glance answered 503", status=503)),
    FakeGlance(tasks_error=exc.GlanceTimeout("list tasks: no answer")),
    FakeGlance(tasks_error=exc.GlanceForbidden("list tasks: 403", status=403)),
    FakeGlance(image=dict(QUEUED, os_glance_import_task="t1")),
    FakeGlance(tasks=[{"type": "location_import", "status": "processing"}]),
    FakeGlance(tasks=[{"type": "location_import", "status": "pending"}]),
    FakeGlance(image={"status": "importing"}),
], ids=["5xx", "timeout", "forbidden", "import-lock", "processing", "pending", "importing"])
def test_keep_the_clone_when_glance_may_be_registering_it(glance):
    assert not _tx(glance)._safe_to_roll_back(None)


def test_registered_after_all_watches_the_image_when_tasks_fail():
    g = FakeGlance(image={"status": "active", "locations": [{"url": "rbd://f/images/img/snap"}]},
                   tasks_error=exc.GlanceError("503", status=503))
    assert _tx(g)._registered_after_all()


def test_tasks_if_known_only_looks():
    g = FakeGlance(tasks_error=exc.GlanceError("list tasks: 503", status=503))
    assert glance_mod.tasks_if_known(g, "img") == []  # for callers that only look
    with pytest.raises(exc.GlanceError):
        glance_mod.wait_location_tasks(g, "img", 0.05)  # never "nothing runs"


def test_a_refused_location_rolls_back_even_when_tasks_cannot_be_listed():
    # Glance's task for this attempt failed (a definite answer): the driver's Glance
    # adapter, which cannot list tasks strictly, still rolls back and copies
    g = FakeGlance(tasks_error=exc.GlanceError("cannot tell"))
    assert _tx(g)._safe_to_roll_back(exc.LocationRefused("Glance refused location"))
    g = FakeGlance(image=dict(QUEUED, locations=[{"url": "rbd://f/images/img/snap"}]))
    assert not _tx(g)._safe_to_roll_back(exc.LocationRefused("refused, yet it holds it"))


def test_a_4xx_to_the_add_location_request_is_a_definite_no():
    g = FakeGlance(tasks_error=exc.GlanceError("cannot tell"))
    no = exc.GlanceForbidden("add location: 403", status=403, op="add location rbd://x to image img")
    assert _tx(g)._safe_to_roll_back(no)
    maybe = exc.GlanceError("add location: 504", status=504, op="add location rbd://x to image img")
    assert not _tx(g)._safe_to_roll_back(maybe)
    assert not _tx(g)._safe_to_roll_back(exc.GlanceTimeout("add location: no answer",
                                                           op="add location rbd://x"))
