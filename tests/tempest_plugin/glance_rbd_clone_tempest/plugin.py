"""Tempest's entry point for our tests (tempest.test_plugins): no options of our own."""

import os

from tempest.test_discover import plugins


class GlanceRbdClonePlugin(plugins.TempestPlugin):
    def load_tests(self):
        here = os.path.dirname(os.path.abspath(__file__))
        return os.path.join(here, "tests"), os.path.dirname(here)

    def register_opts(self, conf):
        pass

    def get_opt_lists(self):
        return []
