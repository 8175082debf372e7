"""Routes of the v2 API served here: the stores-info paths only (the rest of /v2 is Glance's)."""

from glance.api.v2 import discovery
from glance.common import wsgi


class API(wsgi.Router):
    """WSGI router for /v2: GET answers, any other method 405 with Allow: GET, other paths 404."""

    def __init__(self, conf, enforcer, store_details, mapper=None):
        mapper = mapper or wsgi.APIMapper()
        info_resource = discovery.create_resource(conf, enforcer, store_details)
        reject_method_resource = wsgi.Resource(wsgi.RejectMethodController())
        for path, action in (("/info/stores", "get_stores"),
                             ("/info/stores/detail", "get_stores_detail")):
            mapper.connect(path, controller=info_resource, action=action,
                           conditions={"method": ["GET"]}, body_reject=True)
            mapper.connect(path, controller=reject_method_resource, action="reject",
                           allowed_methods="GET")
        super().__init__(mapper)
