"""Options of glance-info-api for oslo-config-generator (namespace glance.api)."""

import copy
import itertools

from glance.common import config
from glance_store_ext import config as store_config


def list_api_opts():
    """[DEFAULT] options this service declares, including enabled_backends (as upstream declares it)."""
    opts = itertools.chain.from_iterable(
        group_opts for _, group_opts in config.list_opts() + store_config.list_opts())
    return [(None, copy.deepcopy(list(opts)))]
