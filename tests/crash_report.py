"""Pytest plugin: where a crashed xdist worker was, in the few lines CI's log keeps.

A worker that dies in native code (librbd, librados) prints Python's fault report of all
its threads (dozens: Ceph's, the servers tests start) to stderr, and CI's log keeps only
the head and the tail of a long output: the crashing thread, in the middle, was cut.
Each worker writes its fault report to a file instead; when a worker goes down, the
controller prints the crashing thread's frames and, for every other thread, its
innermost frame in tests/.
"""

import faulthandler
import os
import shutil
import tempfile

import pytest

ENV = "GRC_TEST_CRASH_DIR"  # set by the controller, inherited by the workers it spawns
MAX_FRAMES = 25
HARNESS = tuple(f"{os.sep}{m}{os.sep}" for m in ("_pytest", "pluggy", "xdist", "execnet"))
_report_key = pytest.StashKey()  # a worker's open report file, kept for faulthandler
_made_key = pytest.StashKey()    # the controller's directory, removed at the end


@pytest.hookimpl(trylast=True)  # after pytest's own faulthandler plugin has enabled it
def pytest_configure(config):
    if not hasattr(config, "workerinput"):
        if ENV not in os.environ:
            os.environ[ENV] = config.stash[_made_key] = tempfile.mkdtemp(prefix="tests-crash-")
    elif os.environ.get(ENV):
        report = open(os.path.join(os.environ[ENV], f"{config.workerinput['workerid']}.txt"), "w")
        config.stash[_report_key] = report
        faulthandler.enable(file=report, all_threads=True)


def pytest_unconfigure(config):
    made = config.stash.get(_made_key, None)
    if made:
        shutil.rmtree(made, ignore_errors=True)


def summary(text):
    """The fatal error, the current thread's frames (pytest's own left out), and each other
    thread's innermost frame in tests/ (the test or fixture it was in)."""
    blocks = [b.strip("\n").splitlines() for b in text.split("\n\n") if b.strip()]
    out = [line for b in blocks for line in b if line.startswith("Fatal Python error")][:1]
    for block in blocks:
        head = block[0]
        frames = [line.strip() for line in block[1:] if not any(h in line for h in HARNESS)]
        if head.startswith("Current thread"):
            out.append(head)
            out += [f"  {f}" for f in frames[:MAX_FRAMES]] or ["  (no Python frame: a thread of Ceph's own)"]
        elif head.startswith("Thread"):
            ours = [f for f in frames if f"{os.sep}tests{os.sep}" in f]
            if ours:
                out.append(f"{head.split(' (')[0]}: {ours[0]}")
    return out


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    directory = os.environ.get(ENV)
    if not error or not directory:
        return
    try:
        with open(os.path.join(directory, f"{node.gateway.id}.txt")) as f:
            text = f.read()
    except OSError:
        return
    if text.strip():
        print(f"\ntests: worker {node.gateway.id}'s fault report:\n" + "\n".join(summary(text)), flush=True)
