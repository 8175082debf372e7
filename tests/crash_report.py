"""Pytest plugin: where a crashed xdist worker was, in the few lines CI's log keeps.

A worker that dies in native code (librbd, librados) prints Python's fault report of all
its threads (dozens: Ceph's, the servers tests start) to stderr, and CI's log keeps only
the head and the tail of a long output: the crashing thread, in the middle, was cut.
Each worker writes its fault report to a file instead; when a worker goes down, the
controller prints the crashing thread's frames and, for every other thread, its
innermost frame of this project's code (a test, a fixture, a driver call).
"""

import faulthandler
import os
import shutil
import sysconfig
import tempfile

import pytest

ENV = "GRC_TEST_CRASH_DIR"  # set by the controller, inherited by the workers it spawns
MAX_FRAMES = 25
HARNESS = tuple(f"{os.sep}{m}{os.sep}" for m in ("_pytest", "pluggy", "xdist", "execnet"))
STDLIB = sysconfig.get_paths()["stdlib"] + os.sep
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


def _own(frame):
    """A frame of this project's code (tests/, cinder_ext/, ...), not of Python's library
    or an installed package: where an idle thread (eventlet's 20 tpool workers) has none."""
    path = frame.split('"')[1] if frame.count('"') >= 2 else ""
    return bool(path) and not path.startswith(STDLIB) and not any(
        f"{os.sep}{d}{os.sep}" in path for d in ("site-packages", "dist-packages"))


def summary(text):
    """The fatal error, the current thread's frames (pytest's own left out), then each other
    thread's innermost frame of this project's code (the test, fixture or driver call it
    was in)."""
    blocks = [b.strip("\n").splitlines() for b in text.split("\n\n") if b.strip()]
    out = [line for b in blocks for line in b if line.startswith("Fatal Python error")][:1]
    others = []
    for block in blocks:
        head = block[0]
        frames = [line.strip() for line in block[1:] if not any(h in line for h in HARNESS)]
        if head.startswith("Current thread"):
            out.append(head)
            out += [f"  {f}" for f in frames[:MAX_FRAMES]] or ["  (no Python frame: a thread of Ceph's own)"]
        elif head.startswith("Thread"):
            ours = [f for f in frames if _own(f)]
            if ours:
                others.append(f"{head.split(' (')[0]}: {ours[0]}")
    if not any(line.startswith("Current thread") for line in out):
        # faulthandler marks the thread it runs in; a thread librados or librbd started
        # itself (a messenger, a finisher, a watch callback's) has no Python state to mark
        out.append("(the crashing thread ran no Python: one of Ceph's own threads)")
    return out + others


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
