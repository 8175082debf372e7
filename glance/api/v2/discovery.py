"""The stores-info API: GET /v2/info/stores and GET /v2/info/stores/detail.

Answers as upstream Glance 33's InfoController (glance/api/v2/discovery.py)
does for the same glance-api.conf; the store properties come from
glance_store_ext's providers, which add the RBD `user`.
"""

import logging

import webob.exc

from glance.api import policy
from glance.common import wsgi
from glance_store_ext import config as store_config

LOG = logging.getLogger(__name__)


class InfoController:
    def __init__(self, conf, enforcer, store_details):
        self.conf = conf
        self.policy = enforcer
        self.store_details = store_details  # one per process: providers cache (rbd fsid) live in it

    def get_stores(self, req):
        enabled_backends = self.conf.enabled_backends
        if not enabled_backends:
            raise webob.exc.HTTPNotFound(explanation="Multi backend is not supported at this site.")
        stores = []
        for backend, store_type in enabled_backends.items():
            if backend.startswith(store_config.RESERVED_PREFIX):
                continue  # internal staging/tasks stores
            group = getattr(self.conf, backend)
            if store_type == "swift" and self._swift_misconfigured(backend, group):
                continue
            store = {"id": backend}
            if group.store_description:
                store["description"] = group.store_description
            if backend == self.conf.glance_store.default_backend:
                store["default"] = "true"
            if store_type == "http":
                store["read-only"] = "true"  # glance_store's http store cannot add images
            stores.append(store)
        return {"stores": stores}

    def get_stores_detail(self, req):
        # as upstream: no multi-store is a 404 for everyone, before the policy check
        stores = self.get_stores(req)["stores"]
        try:
            self.policy.authorize(req.context, "stores_info_detail", {})
        except policy.Forbidden as exc:
            LOG.debug("User not permitted to view details")
            raise webob.exc.HTTPForbidden(explanation=str(exc))
        enabled_backends = self.conf.enabled_backends
        for store in stores:
            store["type"] = enabled_backends[store["id"]]
            store["properties"] = self.store_details.properties(store["id"])
            store["weight"] = getattr(self.conf, store["id"]).weight
        return {"stores": stores}

    @staticmethod
    def _swift_misconfigured(backend, group):
        # upstream leaves such a swift store out of both answers, with this warning
        if group.swift_store_multi_tenant and group.swift_store_config_file:
            LOG.warning("The config options 'swift_store_multi_tenant' and "
                        "'swift_store_config_file' are mutually exclusive. If you intend to "
                        "use multi-tenant swift store, please make sure that you have not set "
                        "a swift configuration file with the 'swift_store_config_file' option. "
                        "Excluding `%s:swift` store details from the response as it's not "
                        "configured correctly.", backend)
            return True
        return False


def create_resource(conf, enforcer, store_details):
    return wsgi.Resource(InfoController(conf, enforcer, store_details))
