"""Crash or fail cinder_ext at a named step boundary (cinder_ext.steps): for tests only.

``CINDER_EXT_FAULT_POINT`` selects boundaries by name (comma-separated);
``CINDER_EXT_FAULT_ACTION`` is ``kill`` (SIGKILL this process, the default: a real
crash, nothing runs after it), ``killpg`` (SIGKILL its whole process group: a service
and its workers, as a crash of the service takes them; cinder-volume's launcher would
respawn a worker killed alone) or ``raise`` (FaultInjected: an error like any other at
that step, to test rollback in-process). The variables are read at each boundary.

In the test process, tests/conftest.py calls ``install()``. A subprocess runs its
module through this one: ``python -m tests.fault_injection cinder_ext.cli ARGS...``, or
a script by its path (a console script: ``python -P tests/fault_injection.py
VENV/bin/cinder-volume ARGS...``, as ``tools/cloud restart-volume --fault-point`` runs
the cloud's cinder-volume, away from the checkout's sys.path).
"""

import os
import runpy
import signal
import sys

from cinder_ext import steps

ENV_POINT = "CINDER_EXT_FAULT_POINT"
ENV_ACTION = "CINDER_EXT_FAULT_ACTION"

_installed = []


class FaultInjected(Exception):
    """Raised at a boundary selected for a test."""


def at(name):
    selected = os.environ.get(ENV_POINT)
    if not selected or name not in selected.split(","):
        return
    action = os.environ.get(ENV_ACTION, "kill")
    if action == "raise":
        raise FaultInjected(f"fault injected at {name}")
    if action == "killpg":
        # a service's log (its stderr) says which boundary ended it
        print(f"fault injected: SIGKILL to process group {os.getpgrp()} at {name}",
              file=sys.stderr, flush=True)
        os.killpg(os.getpgrp(), signal.SIGKILL)
    os.kill(os.getpid(), signal.SIGKILL)


def install():
    if not _installed:
        _installed.append(steps.observe(at))


def main():
    install()
    target = sys.argv[1]
    sys.argv = [target, *sys.argv[2:]]
    if os.path.isfile(target):  # a script: a service's console script
        runpy.run_path(target, run_name="__main__")
    else:
        runpy.run_module(target, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
