"""The version document of `GET /` (300) and `GET /versions` (200), as upstream Glance 33 answers it.

keystoneauth and openstacksdk discover the image API version from it before
any call, so it lists exactly what Glance 33 lists for the same config: the
list depends on image_cache_dir and enabled_backends (Glance's own: a single-store file,
whose store glance-info-api reports, lists what a single-store Glance lists).
"""

import http.client
import urllib.parse

from oslo_serialization import jsonutils
import webob
import webob.dec

from glance.common import single_store

# (version, status) in upstream's order, per branch of its Controller.index
_CACHE = [("2.18", "CURRENT"), ("2.17", "SUPPORTED"), ("2.16", "SUPPORTED"),
          ("2.15", "SUPPORTED"), ("2.14", "SUPPORTED")]
_NO_CACHE = [("2.15", "SUPPORTED")]
_MULTI_STORE = [("2.13", "SUPPORTED"), ("2.12", "SUPPORTED"), ("2.11", "SUPPORTED"),
                ("2.10", "SUPPORTED"), ("2.9", "SUPPORTED"), ("2.8", "SUPPORTED")]
_SINGLE_STORE = [("2.9", "SUPPORTED")]
_NO_CACHE_CURRENT = [("2.17", "CURRENT")]
_ALWAYS = [(f"2.{minor}", "SUPPORTED") for minor in range(7, -1, -1)]


def listed_versions(conf):
    """The (version, status) pairs Glance 33 lists for this config, in its order."""
    versions = list(_CACHE if conf.image_cache_dir else _NO_CACHE)
    versions += _MULTI_STORE if single_store.glance_is_multi_store(conf) else _SINGLE_STORE
    if not conf.image_cache_dir:
        versions += _NO_CACHE_CURRENT
    return versions + _ALWAYS


class Controller:
    """A WSGI app that reports which API versions are supported."""

    def __init__(self, conf):
        self.conf = conf

    def index(self, req, explicit=False):
        url = (self.conf.public_endpoint or req.application_url).rstrip("/") + "/"
        href = urllib.parse.urljoin(url, "v2").rstrip("/") + "/"
        versions = [{"id": f"v{version}", "status": status,
                     "links": [{"rel": "self", "href": href}]}
                    for version, status in listed_versions(self.conf)]
        status = http.client.OK if explicit else http.client.MULTIPLE_CHOICES
        response = webob.Response(request=req, status=status, content_type="application/json")
        response.body = jsonutils.dump_as_bytes({"versions": versions})
        return response

    @webob.dec.wsgify
    def __call__(self, req):
        return self.index(req)
