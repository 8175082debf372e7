"""Version negotiation, as upstream Glance 33's VersionNegotiationFilter does it.

`/versions` answers the version document (200); a path or an
`Accept: application/vnd.openstack.images-vX` naming a known 2.x version is
rewritten to `/v2/...`; anything else answers the version document with 300.
"""

import logging

import webob.dec

from glance.api import versions
from glance.common import single_store

LOG = logging.getLogger(__name__)

_VND_MIME_TYPE = "application/vnd.openstack.images-"


def allowed_versions(conf):
    """Version strings accepted in the URL, all meaning v2 (upstream's _get_allowed_versions)."""
    names = ["v2", "v2.0", "v2.1", "v2.2", "v2.3", "v2.4", "v2.5", "v2.6", "v2.7", "v2.9"]
    if conf.image_cache_dir:
        names += ["v2.14", "v2.16", "v2.18"]
    names.append("v2.15")
    if single_store.glance_is_multi_store(conf):
        names += ["v2.8", "v2.10", "v2.11", "v2.12", "v2.13"]
    names.append("v2.17")
    return frozenset(names)


class VersionNegotiation:
    def __init__(self, app, conf):
        self.app = app
        self.versions_app = versions.Controller(conf)
        self.allowed = allowed_versions(conf)

    @webob.dec.wsgify
    def __call__(self, req):
        if req.path_info_peek() == "versions":
            return self.versions_app.index(req, explicit=True)
        accept = str(req.accept)
        if accept.startswith(_VND_MIME_TYPE):
            req_version = accept[len(_VND_MIME_TYPE):]
        else:
            req_version = _pop_path_info(req)
        if req_version not in self.allowed:
            LOG.debug("Unknown version %r. Returning version choices.", req_version)
            return self.versions_app
        # upstream rewrites to /v2<rest> and its urlmap then moves /v2 to SCRIPT_NAME
        req.script_name += "/v2"
        return self.app


def _pop_path_info(req):
    """Pop the first segment of PATH_INFO without pushing it onto SCRIPT_NAME (upstream's helper)."""
    path = req.path_info
    if not path:
        return None
    path = path.lstrip("/")
    idx = path.find("/")
    if idx == -1:
        idx = len(path)
    req.path_info = path[idx:]
    return path[:idx]
