"""Paste filter for the Glance 33 peer: identity from headers, with defaults.

Sits right before upstream's `context` filter (glance.api.middleware.context:
ContextMiddleware), which builds the request context from the headers that
keystonemiddleware would set (X-Identity-Status: Confirmed, X-Roles,
X-Project-Id, X-User-Id, X-Service-Roles, ...) and answers 401 without them.

glanceclient's CLI cannot send those headers (only X-Auth-Token; its
`identity_headers` exist in the library API alone), so this filter fills in
every identity header the request did not send: Confirmed, roles
`default_roles` (admin unless configured), project/user `peer-admin`.
Whatever the request sends wins, so tests still act as member, reader or
service. Upstream's own `unauthenticated-context` would not do: it gives
is_admin with no project and no roles, which no role-based test can use.
Development only, like Glance's noauth pipelines.

Standard library only: loaded by gunicorn from the glance33 venv through
--pythonpath.
"""

DEFAULT_PROJECT = "peer-admin"
DEFAULT_USER = "peer-admin"


class FillIdentity:
    def __init__(self, app, roles, project_id, user_id):
        self.app = app
        self.defaults = {
            "HTTP_X_IDENTITY_STATUS": "Confirmed",
            "HTTP_X_ROLES": roles,
            "HTTP_X_PROJECT_ID": project_id,
            "HTTP_X_TENANT_ID": project_id,
            "HTTP_X_USER_ID": user_id,
        }

    def __call__(self, environ, start_response):
        # a request that sends X-Project-Id but not the legacy X-Tenant-Id
        # (or the reverse) names one project: keep both in step
        project = environ.get("HTTP_X_PROJECT_ID") or environ.get("HTTP_X_TENANT_ID")
        for key, value in self.defaults.items():
            if key in ("HTTP_X_PROJECT_ID", "HTTP_X_TENANT_ID") and project:
                value = project
            environ.setdefault(key, value)
        return self.app(environ, start_response)


def filter_factory(global_conf, **local_conf):
    roles = local_conf.get("default_roles", "admin")
    project_id = local_conf.get("default_project_id", DEFAULT_PROJECT)
    user_id = local_conf.get("default_user_id", DEFAULT_USER)

    def _filter(app):
        return FillIdentity(app, roles, project_id, user_id)
    return _filter
