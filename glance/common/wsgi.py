"""WSGI plumbing shaped as upstream Glance's (glance/common/wsgi.py): router, resource, errors.

Errors are negotiated as upstream Glance's (webob's) are, with one deliberate
difference: a request with no Accept header gets JSON, where upstream sends
text/plain. Accept: */* gets HTML, as from upstream: glanceclient and
keystoneauth sessions send */*, and glanceclient can read HTML errors but not
webob's flat JSON ({"message", "code", "title"}), which is what a client asking
for application/json gets, as from Glance.
"""

import logging

from oslo_serialization import jsonutils
from oslo_utils import encodeutils
from oslo_utils import strutils
import routes
import routes.middleware
import webob
import webob.dec
import webob.exc

LOG = logging.getLogger(__name__)

_ERROR_TYPES = ("text/html", "application/json", "text/plain")  # webob's order: HTML wins a tie


def error_response(req, exc):
    """Render a webob HTTP error as the client's Accept asks (webob's order); JSON without one."""
    offers = req.accept.acceptable_offers(_ERROR_TYPES) if "HTTP_ACCEPT" in req.environ else []
    chosen = offers[0][0] if offers else "application/json"
    environ = dict(req.environ, HTTP_ACCEPT=chosen)
    return webob.Request(environ).get_response(exc)


class APIMapper(routes.Mapper):
    """routes.Mapper that also matches the empty path (upstream's APIMapper)."""

    def routematch(self, url=None, environ=None):
        if url == "":
            result = self._match("", environ)
            return result[0], result[1]
        return routes.Mapper.routematch(self, url, environ)


class RejectMethodController:
    """The target of every path's catch-all route: 405 with the allowed methods."""

    def reject(self, req, allowed_methods, *args, **kwargs):
        LOG.debug("The method %s is not allowed for this resource", req.method)
        raise webob.exc.HTTPMethodNotAllowed(headers=[("Allow", allowed_methods)])


_IMPLEMENTED_METHODS = ("GET", "HEAD", "POST", "PUT", "DELETE", "PATCH")


class Router:
    """Maps requests to WSGI apps with routes; 404 when no route matches, 501 for unknown methods."""

    def __init__(self, mapper):
        mapper.redirect("", "/")
        self.map = mapper
        self._router = routes.middleware.RoutesMiddleware(self._dispatch, self.map)

    @webob.dec.wsgify
    def __call__(self, req):
        return self._router

    @staticmethod
    @webob.dec.wsgify
    def _dispatch(req):
        match = req.environ["wsgiorg.routing_args"][1]
        if not match:
            if req.method not in _IMPLEMENTED_METHODS:
                return error_response(req, webob.exc.HTTPNotImplemented())
            return error_response(req, webob.exc.HTTPNotFound())
        return match["controller"]


class JSONResponseSerializer:
    def to_json(self, data):
        return jsonutils.dump_as_bytes(data, default=jsonutils.to_primitive)

    def default(self, response, result):
        response.content_type = "application/json"
        response.body = encodeutils.to_utf8(self.to_json(result))


class Resource:
    """Calls the routed action of a controller and serializes its result (upstream's Resource).

    Controller actions take the request and return a dict, or raise a webob
    HTTP error; anything else raised is a 500 whose cause is logged.
    """

    def __init__(self, controller, serializer=None):
        self.controller = controller
        self.serializer = serializer or JSONResponseSerializer()

    @webob.dec.wsgify
    def __call__(self, request):
        action_args = self.get_action_args(request.environ)
        action = action_args.pop("action", None)
        body_reject = strutils.bool_from_string(action_args.pop("body_reject", None))
        try:
            if body_reject and _has_body(request):
                raise webob.exc.HTTPBadRequest(
                    explanation="A body is not expected with this request.")
            result = getattr(self.controller, action)(request, **action_args)
        except webob.exc.HTTPException as exc:
            return error_response(request, exc)
        except UnicodeDecodeError:
            return error_response(request, webob.exc.HTTPBadRequest(
                explanation="Error decoding your request. Either the URL or the request body "
                            "contained characters that could not be decoded by Glance"))
        except Exception:
            LOG.exception("Unexpected error answering %s %s", request.method, request.path)
            return error_response(request, webob.exc.HTTPInternalServerError())
        response = webob.Response(request=request)
        getattr(self.serializer, action, self.serializer.default)(response, result)
        return response

    @staticmethod
    def get_action_args(environ):
        try:
            args = environ["wsgiorg.routing_args"][1].copy()
        except (KeyError, IndexError, AttributeError):
            return {}
        args.pop("controller", None)
        args.pop("format", None)
        return args


_ENCODINGS = frozenset(["chunked", "compress", "deflate", "gzip", "identity"])


def _has_body(request):
    """Upstream's JSONRequestDeserializer.has_body."""
    encoding = request.headers.get("transfer-encoding", "").lower()
    if encoding in _ENCODINGS and request.method.upper() in ("POST", "PUT", "PATCH"):
        return True
    return request.content_length is not None and request.content_length > 0
