"""Options of the Cinder side, in cinder.conf style.

Backend options keep upstream Cinder's names, types, defaults and help (Cinder 29,
cinder/volume/drivers/rbd.py) so a real cinder.conf backend section works unchanged.
They live in the backend's own section (``[DEFAULT] enabled_backends``), falling back
to ``[backend_defaults]`` as Cinder does. Glance access is the ``[glance]`` section:
keystoneauth1 session, auth and adapter options, plus ``api_servers`` and a noauth mode.
"""

import copy

from keystoneauth1 import loading as ks_loading
from oslo_config import cfg

SHARED_GROUP = "backend_defaults"
GLANCE_GROUP = "glance"

# Same declarations as upstream Cinder 29 (cinder/volume/drivers/rbd.py RBD_OPTS).
RBD_OPTS = [
    cfg.StrOpt('rbd_cluster_name',
               default='ceph',
               help='The name of ceph cluster'),
    cfg.StrOpt('rbd_pool',
               default='rbd',
               help='The RADOS pool where RBD volumes are stored'),
    cfg.StrOpt('rbd_user',
               help='The RADOS client name for accessing RBD volumes '
                    '- only set when using cephx authentication'),
    cfg.StrOpt('rbd_ceph_conf',
               default='',  # default determined by librados
               help='Path to the ceph configuration file'),
    cfg.BoolOpt('rbd_flatten_volume_from_snapshot',
                default=False,
                help='Flatten volumes created from snapshots to remove '
                     'dependency from volume to snapshot'),
    cfg.StrOpt('rbd_secret_uuid',
               help='The libvirt uuid of the secret for the rbd_user '
                    'volumes. Defaults to the cluster FSID.'),
    cfg.IntOpt('rbd_max_clone_depth',
               default=5,
               help='Maximum number of nested volume clones that are '
                    'taken before a flatten occurs. Set to 0 to disable '
                    'cloning. Note: lowering this value will not affect '
                    'existing volumes whose clone depth exceeds the new '
                    'value.'),
    cfg.IntOpt('rbd_store_chunk_size', default=4,
               help='Volumes will be chunked into objects of this size '
                    '(in megabytes).'),
    cfg.IntOpt('rados_connect_timeout', default=-1,
               help='Timeout value (in seconds) used when connecting to '
                    'ceph cluster. If value < 0, no timeout is set and '
                    'default librados value is used.'),
    cfg.IntOpt('rados_connection_retries', default=3,
               help='Number of retries if connection to ceph cluster '
                    'failed.'),
    cfg.IntOpt('rados_connection_interval', default=5,
               help='Interval value (in seconds) between connection '
                    'retries to ceph cluster.'),
    cfg.BoolOpt('enable_deferred_deletion', default=False,
                help='Enable deferred deletion. Upon deletion, volumes are '
                     'tagged for deletion but will only be removed '
                     'asynchronously at a later time.'),
    cfg.IntOpt('deferred_deletion_delay', default=0,
               help='Time delay in seconds before a volume is eligible '
                    'for permanent removal after being tagged for deferred '
                    'deletion.'),
    cfg.IntOpt('deferred_deletion_purge_interval', default=60,
               help='Number of seconds between runs of the periodic task '
                    'to purge volumes tagged for deletion.'),
    cfg.IntOpt('rbd_concurrent_flatten_operations', default=3, min=0,
               help='Number of flatten operations that will run '
                    'concurrently on this volume service.'),
]

# New with this feature.
CLONE_OPTS = [
    cfg.BoolOpt('enable_clone_optimization', default=False,
                help='Upload a volume to an image by copy-on-write cloning '
                     'it into the Glance RBD pool and registering the '
                     'location, instead of streaming every byte through '
                     'Glance, when Glance\'s target store is RBD in the '
                     'same Ceph cluster. Constant time whatever the volume '
                     'size. Trade-off: the data does not pass through '
                     'Glance, so Glance does not compute the image\'s '
                     'checksum and os_hash_value on the way in (unless '
                     'Glance\'s do_secure_hash computes them afterwards by '
                     'reading the image back); the Cinder Ceph user needs '
                     'write access to the Glance pool and the Glance user '
                     'read access to the Cinder pool. Disabled by default.'),
    cfg.BoolOpt('rbd_flatten_volume_to_image',
                default=False,
                help='Flatten images uploaded from volumes to remove '
                     'dependency from image to volume. When '
                     'enable_clone_optimization is on, an upload to a '
                     'Glance RBD store in the same Ceph cluster then '
                     'becomes an image that depends on nothing: the volume '
                     'is cloned into the Glance pool, the clone is '
                     'flattened inside Ceph (rbd_concurrent_management_ops '
                     'objects at a time, unallocated extents skipped), '
                     'snapshotted, and its location registered; no byte '
                     'passes through Cinder or Glance. Uploads whose clone '
                     'would exceed rbd_max_clone_depth take this path even '
                     'when this option is off. No effect when '
                     'enable_clone_optimization is off.'),
    cfg.IntOpt('rbd_max_upload_snapshots', default=100, min=1,
               help='Most snapshots that clone uploads keep on one volume '
                    '(each clone-uploaded image reads through one snapshot '
                    'of its volume). When a volume holds this many, its '
                    'next uploads become independent images, as with '
                    'rbd_flatten_volume_to_image, until images of it are '
                    'deleted. Every snapshot of a volume adds to each '
                    'write to it, and the kernel RBD client maps no image '
                    'with more than 510 snapshots. No effect when '
                    'enable_clone_optimization is off.'),
    cfg.IntOpt('clone_active_timeout', default=60, min=1,
               help='Seconds to wait, after registering a cloned image\'s '
                    'location, for Glance to make the image active before '
                    'the clone is given up (and rolled back if Glance left '
                    'the image queued).'),
    cfg.IntOpt('image_upload_read_size', default=4, min=1,
               help='Copy path: size of each read from the volume, in '
                    'megabytes.'),
    cfg.IntOpt('image_upload_read_ahead', default=8, min=1,
               help='Copy path: reads buffered ahead of the upload to '
                    'Glance (memory used is at most this times '
                    'image_upload_read_size).'),
]

BACKEND_OPTS = RBD_OPTS + CLONE_OPTS

DEFAULT_OPTS = [
    cfg.ListOpt('enabled_backends',
                help='A list of backend names to use. These backend names '
                     'should be backed by a unique [CONFIG] group with its '
                     'options'),
]

GLANCE_OPTS = [
    cfg.ListOpt('api_servers',
                help='URLs of Glance API servers ([http[s]://]host:port). '
                     'When set, they are used instead of the endpoint found '
                     'in the Keystone catalog; tried in order.'),
    cfg.URIOpt('stores_info_url',
               help='Where to GET /v2/info/stores/detail, when not from the '
                    'Glance API servers themselves (e.g. a glance-info-api '
                    'service in front of a Glance that does not report its '
                    'stores). Same credentials as for Glance.'),
    cfg.StrOpt('auth_strategy', default='keystone',
               choices=[('keystone', 'Keystone tokens from the [glance] '
                                     'auth options (service credentials).'),
                        ('noauth', 'No token: identity sent as '
                                   'X-Identity-Status/X-Roles/X-Project-Id/'
                                   'X-User-Id headers, for a Glance whose '
                                   'paste pipeline uses the "context" '
                                   'filter. Development and tests only.')],
               help='How to authenticate to Glance.'),
    cfg.StrOpt('noauth_project_id', default='service',
               help='noauth mode: project sent as X-Project-Id.'),
    cfg.StrOpt('noauth_user_id', default='cinder',
               help='noauth mode: user sent as X-User-Id.'),
    cfg.ListOpt('noauth_roles', default=['admin', 'service'],
                help='noauth mode: roles sent as X-Roles. Registering an '
                     'rbd location needs the service role.'),
    cfg.IntOpt('request_timeout', default=60, min=1,
               help='Seconds to wait for each Glance HTTP response.'),
    cfg.FloatOpt('poll_interval', default=0.05, min=0.01,
                 help='Seconds between polls of an image that Glance is '
                      'activating.'),
]


def _ks_opts():
    opts = {}
    # auth common and the password plugin share some names: list each once
    for opt in (ks_loading.get_session_conf_options()
                + ks_loading.get_auth_common_conf_options()
                + ks_loading.get_auth_plugin_conf_options('password')
                + ks_loading.get_adapter_conf_options(include_deprecated=False)):
        opts.setdefault(opt.dest, opt)
    return list(opts.values())


def register_opts(conf, backend=None):
    """Register every option on ``conf``; ``backend`` also gets its own section."""
    conf.register_opts(DEFAULT_OPTS)
    conf.register_opts(BACKEND_OPTS, group=SHARED_GROUP)
    if backend:
        conf.register_opts([copy.deepcopy(o) for o in BACKEND_OPTS], group=backend)
    conf.register_opts(GLANCE_OPTS, group=GLANCE_GROUP)
    ks_loading.register_session_conf_options(conf, GLANCE_GROUP)
    ks_loading.register_auth_conf_options(conf, GLANCE_GROUP)
    ks_loading.register_adapter_conf_options(conf, GLANCE_GROUP, include_deprecated=False)
    conf.set_default('service_type', 'image', group=GLANCE_GROUP)


class BackendConfig:
    """The options of one backend section, falling back to [backend_defaults] as Cinder does."""

    def __init__(self, conf, backend):
        self.conf = conf
        self.backend = backend

    def __getattr__(self, name):
        if name.startswith("_") or name in ("conf", "backend"):
            raise AttributeError(name)
        shared = self.conf[SHARED_GROUP]
        if self.backend is None:
            return getattr(shared, name)
        own = self.conf[self.backend]
        # a value set in the backend section wins; else whatever backend_defaults says
        value = getattr(own, name)
        opt = next(o for o in BACKEND_OPTS if o.dest == name)
        return value if value != opt.default else getattr(shared, name)


def load(config_files, backend=None, args=()):
    """Parse cinder.conf-style files; returns (conf, BackendConfig)."""
    conf = cfg.ConfigOpts()
    conf.register_opts(DEFAULT_OPTS)
    conf(list(args), project='cinder', default_config_files=list(config_files),
         validate_default_values=True)
    if backend is None:
        enabled = conf.enabled_backends or []
        backend = enabled[0] if enabled else None
    register_opts(conf, backend)
    return conf, BackendConfig(conf, backend)


def list_opts():
    """For oslo-config-generator (entry point ``oslo.config.opts: cinder_ext``)."""
    return [
        ('DEFAULT', DEFAULT_OPTS),
        (SHARED_GROUP, BACKEND_OPTS),
        (GLANCE_GROUP, GLANCE_OPTS + _ks_opts()),
    ]
