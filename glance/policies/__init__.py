"""Policy in code: every rule this service enforces (oslo.policy.policies entry point)."""

import itertools

from glance.policies import base
from glance.policies import discovery


def list_rules():
    return list(itertools.chain(base.list_rules(), discovery.list_rules()))
