"""The request context: who is calling, from the identity headers, for policy and logs.

keystone: keystonemiddleware's auth_token runs first (delay_auth_decision, as
in upstream's paste pipeline) and sets X-Identity-Status; only a Confirmed
identity gets a context, anything else is 401 (keystonemiddleware then adds
its WWW-Authenticate header). The identity headers are the ones auth_token
sets: it removes any that the client sent.

noauth: the same headers are trusted as sent; without X-Roles the request
gets `noauth_default_roles`.
"""

import logging
import time

from oslo_context import context as oslo_context
import webob.dec
import webob.exc

from glance.common import wsgi

LOG = logging.getLogger(__name__)


class ContextMiddleware:
    def __init__(self, app, trust_headers=False, default_roles=()):
        self.app = app
        self.trust_headers = trust_headers
        self.default_roles = list(default_roles)

    @webob.dec.wsgify
    def __call__(self, req):
        start = time.monotonic()
        if not self.trust_headers and req.headers.get("X-Identity-Status") != "Confirmed":
            resp = wsgi.error_response(req, webob.exc.HTTPUnauthorized())
        else:
            req.context = self.context(req)
            req.context.update_store()  # oslo.log reads the request id from here
            resp = req.get_response(self.app)
        LOG.info('%s "%s %s" status: %s len: %s time: %.4f', req.client_addr, req.method,
                 req.path_qs, resp.status_int, resp.content_length, time.monotonic() - start)
        return resp

    def context(self, req):
        # request_id comes from oslo.middleware's RequestId (environ openstack.request_id)
        ctxt = oslo_context.RequestContext.from_environ(req.environ)
        if self.trust_headers and "X-Roles" not in req.headers:
            ctxt.roles = list(self.default_roles)
        # Glance lowercases roles (upstream ContextMiddleware); policy checks match it
        ctxt.roles = [r.lower() for r in ctxt.roles]
        return ctxt
