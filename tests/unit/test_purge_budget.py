"""A purge with a time budget (cinder_ext.purge, budget=): it stops starting new work
once the budget is spent, counts what waits, and the next run goes on where it stopped
(a cursor in the journal), so every entry is reached however many there are. The
journal is tests/unit/test_journal.py's in-memory omap; the clock is the run's deadline,
moved by the test (the budget's passing is what is tested, not a wait)."""

import time

from cinder_ext import journal, purge
from tests.unit.test_journal import OmapCeph

ITEMS = ["a", "b", "c", "d", "e"]


def _run(ceph, budget=60.0, dry_run=False):
    return purge._Purge(ceph, "volumes", ["images"], False, False, None, dry_run,
                        purge.Timer(), budget=budget)


def _take(run, stop_after=None):
    """What the run's phase hands out; the budget runs out after `stop_after` items."""
    out = []
    for item in run._resumed("open_uploads", list(reversed(ITEMS)), lambda i: i):
        out.append(item)
        if stop_after is not None and len(out) == stop_after:
            run.deadline = time.monotonic() - 1
    return out


def test_without_a_budget_every_item_in_order_and_no_cursor():
    ceph = OmapCeph()
    assert _take(_run(ceph, budget=None)) == ITEMS
    assert ceph.omap == {}


def test_a_spent_budget_stops_and_the_next_run_starts_after_where_it_stopped():
    ceph = OmapCeph()
    first = _run(ceph)
    assert _take(first, stop_after=2) == ["a", "b"]
    assert first.unfinished == {"open_uploads": 3}
    assert journal.Journal(ceph, "volumes").cursor("open_uploads") == "b"
    second = _run(ceph)
    assert _take(second) == ["c", "d", "e", "a", "b"]  # around, to where it began
    assert second.unfinished == {}
    assert journal.Journal(ceph, "volumes").cursor("open_uploads") == ""  # a whole pass


def test_a_budget_spent_before_the_first_item_starts_nothing_and_moves_no_cursor():
    ceph = OmapCeph()
    journal.Journal(ceph, "volumes").set_cursor("open_uploads", "c")
    run = _run(ceph, budget=0.0)
    assert _take(run) == []
    assert run.unfinished == {"open_uploads": 5}
    assert journal.Journal(ceph, "volumes").cursor("open_uploads") == "c"


def test_a_dry_run_reads_the_cursor_and_writes_none():
    ceph = OmapCeph()
    journal.Journal(ceph, "volumes").set_cursor("open_uploads", "d")
    run = _run(ceph, dry_run=True)
    assert _take(run, stop_after=1) == ["e"]
    assert journal.Journal(ceph, "volumes").cursor("open_uploads") == "d"


def test_cursor_keys_are_not_records():
    ceph = OmapCeph()
    j = journal.Journal(ceph, "volumes")
    j.set_cursor("open_uploads", "b")
    assert j.records() == [] and j.records(journal.SourceRecord) == []
