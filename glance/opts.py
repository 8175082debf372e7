"""Options of glance-info-api for oslo-config-generator (namespace glance.api)."""

import copy

from glance.common import config
from glance_store_ext import config as store_config


def list_api_opts():
    """Our [DEFAULT] options (enabled_backends included, as upstream declares it) and our
    own [glance_info_api] section."""
    groups = {}
    for group, opts in config.list_opts() + store_config.list_opts():
        groups.setdefault(group, []).extend(opts)
    return [(group, copy.deepcopy(opts)) for group, opts in groups.items()]
