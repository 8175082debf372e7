"""Crash or fail cinder_ext at a named step boundary (cinder_ext.steps): for tests only.

``CINDER_EXT_FAULT_POINT`` selects boundaries by name (comma-separated);
``CINDER_EXT_FAULT_ACTION`` is ``kill`` (SIGKILL this process, the default: a real
crash, nothing runs after it) or ``raise`` (FaultInjected: an error like any other at
that step, to test rollback in-process). The variables are read at each boundary.

In the test process, tests/conftest.py calls ``install()``. A subprocess runs its
module through this one: ``python -m tests.fault_injection cinder_ext.cli ARGS...``.
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
    if os.environ.get(ENV_ACTION, "kill") == "raise":
        raise FaultInjected(f"fault injected at {name}")
    os.kill(os.getpid(), signal.SIGKILL)


def install():
    if not _installed:
        _installed.append(steps.observe(at))


def main():
    install()
    module = sys.argv[1]
    sys.argv = [module, *sys.argv[2:]]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
