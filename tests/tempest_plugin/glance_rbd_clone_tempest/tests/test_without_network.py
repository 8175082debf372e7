"""Tempest's other volume classes that skip as a whole without Neutron.

Like VolumesActionsWithoutNetworkTest (test_volumes_actions.py): each class declares
create_default_network for its tests that attach to a server (which need Nova) and so skips
entirely on a cloud without Neutron, its storage-only tests included. These are tempest's
own classes, test bodies unchanged, without the default network: the tests that need no
compute run, the compute ones still skip through tempest's services check. Together they
are the rest of "every volume test that needs no compute, network or object store"
(tools/cloud tempest-ab). VolumesBackupsTest (a backup service) and
VolumesExtendAttachedTest (every test attaches) stay skipped.
"""

# the modules, not the classes: a test class bound in this module would run here again
from tempest.api.volume.admin import test_snapshot_manage as tempest_snapshot_manage
from tempest.api.volume.admin import test_volumes_actions as tempest_admin_volumes_actions
from tempest.api.volume import test_volumes_snapshots as tempest_volumes_snapshots


class VolumesSnapshotWithoutNetworkTest(tempest_volumes_snapshots.VolumesSnapshotTestJSON):
    create_default_network = False


class SnapshotManageAdminWithoutNetworkTest(tempest_snapshot_manage.SnapshotManageAdminTest):
    create_default_network = False


class VolumesActionsAdminWithoutNetworkTest(tempest_admin_volumes_actions.VolumesActionsTest):
    create_default_network = False
