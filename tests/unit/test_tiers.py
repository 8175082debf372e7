"""The two tiers (tests/conftest.py: FULL_TIER, GATE_KEEPS): every entry names tests that
exist, the gate keeps one of each kind of proof, the `full` marker is what pytest deselects,
and the gate and the full tier's rest together are every test, each in one of them."""

import os
import subprocess
import sys

import pytest

from tests import conftest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


PROBE = """
import sys, pytest
class Probe:
    def pytest_collection_finish(self, session):
        for item in session.items:
            print("TIER", "full" if item.get_closest_marker("full") else "gate", item.nodeid)
sys.exit(pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider"], plugins=[Probe()]))
"""


@pytest.fixture(scope="module")
def collected():
    """(every node id, the gate's: those without the `full` marker that tools/test's
    -m "not full" deselects), collected over tests/ (pytest.ini's testpaths) as tools/test
    collects them. A file may mark its own tests `full` too (pytestmark)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "GRC_TEST_"))}
    proc = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    tiers = [ln.split(" ", 2)[1:] for ln in proc.stdout.splitlines() if ln.startswith("TIER ")]
    return [i for _, i in tiers], [i for t, i in tiers if t == "gate"]


def stale_entries(ids):
    """The FULL_TIER entries that name no collected test, and the GATE_KEEPS entries that are
    no collected node id or that no FULL_TIER entry covers (a keep of nothing)."""
    stale = [f"FULL_TIER {e}" for e in conftest.FULL_TIER if not any(conftest._names(e, i) for i in ids)]
    stale += [f"GATE_KEEPS {e}" for e in conftest.GATE_KEEPS
              if e not in ids or not any(conftest._names(f, e) for f in conftest.FULL_TIER)]
    return stale


REQUIRED = {  # each kind of proof the gate keeps at least one test of (issue 35)
    "unit": "tests/unit/",
    "functional on real Ceph": "tests/functional/",
    "interop with the real peers": "tests/interop/",
    "the cloud": "tests/cloud/",
    "the member's flow on the cloud": "tests/cloud/test_user_flow.py::",
    "crash recovery on the cloud": "tests/cloud/test_crash_recovery.py::",
    "a Tempest subset": "tests/cloud/test_tempest.py::",
    "a release cloud": "tests/cloud/test_releases.py::",
    "a Cinder release cell": "tests/interop/test_cinder_releases_",
}


def missing_proofs(gate):
    return sorted(kind for kind, prefix in REQUIRED.items() if not any(i.startswith(prefix) for i in gate))


def test_every_entry_names_tests_that_exist(collected):
    ids, _ = collected
    assert not stale_entries(ids)
    for reason in (*conftest.FULL_TIER.values(), *conftest.GATE_KEEPS.values()):
        assert reason.strip() and "\n" not in reason


def test_the_gate_keeps_one_of_each_kind_of_proof(collected):
    _, gate = collected
    assert not missing_proofs(gate)
    # one release cloud and the full tier's other, not both
    assert len({i.split("[")[-1] for i in gate if i.startswith("tests/cloud/test_releases.py::")}) == 1


def test_the_marker_follows_the_list_and_the_tiers_make_the_whole(collected):
    ids, gate = collected
    assert len(ids) == len(set(ids)) and ids
    # every test the list gives the full tier carries the marker the gate deselects
    assert not {i for i in gate if conftest.tier_of(i) == "full"}
    rest = [i for i in ids if i not in set(gate)]
    assert rest, "the full tier runs nothing beyond the gate"
    assert sorted(gate + rest) == sorted(ids)


def test_the_checks_catch_a_stale_entry_and_a_gate_without_a_kind(monkeypatch):
    """The checks above can fail: a renamed test, a keep outside every family, a gate
    without the cloud."""
    ids = ["tests/unit/test_a.py::t", "tests/cloud/test_user_flow.py::t[x]", "tests/cloud/test_user_flow.py::t[y]"]
    monkeypatch.setattr(conftest, "FULL_TIER", {"tests/unit/test_gone.py": "renamed",
                                                "tests/cloud/test_user_flow.py::t": "family"})
    monkeypatch.setattr(conftest, "GATE_KEEPS", {"tests/cloud/test_user_flow.py::t[x]": "kept",
                                                 "tests/unit/test_a.py::t": "not in a family"})
    assert stale_entries(ids) == ["FULL_TIER tests/unit/test_gone.py", "GATE_KEEPS tests/unit/test_a.py::t"]
    assert conftest.tier_of("tests/cloud/test_user_flow.py::t[y]") == "full"
    assert conftest.tier_of("tests/cloud/test_user_flow.py::t[x]") == "gate"
    assert "the cloud" in missing_proofs(["tests/unit/test_a.py::t"])
