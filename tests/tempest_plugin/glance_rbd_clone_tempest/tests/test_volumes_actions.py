"""Tempest's VolumesActionsTest on a cloud without Neutron.

Tempest's class declares create_default_network (for its attach tests, which need Nova)
and so skips as a whole without Neutron, its volume upload test included: tempest's only
test of `os-volume_upload_image`. This class is tempest's own, test bodies unchanged,
without the default network: test_volume_upload and every other test of the class that
needs no compute run; the compute ones still skip through tempest's services check.
"""

# the module, not the class: a test class bound in this module would run here again
from tempest.api.volume import test_volumes_actions as tempest_volumes_actions


class VolumesActionsWithoutNetworkTest(tempest_volumes_actions.VolumesActionsTest):
    create_default_network = False
