"""Glance v2 over HTTP, through a keystoneauth1 session.

Service credentials from the ``[glance]`` section (the stores detail and the add-location
call need the admin or service role), or a noauth mode for a Glance whose paste pipeline
takes identity from X-Identity-Status/X-Roles/X-Project-Id headers (dev, tests).
Every failure becomes a GlanceError naming the call, the image and Glance's own message.
"""

import dataclasses
import json
import logging
import re
import time

from keystoneauth1 import exceptions as ks_exc
from keystoneauth1 import loading as ks_loading

from cinder_ext import exceptions as exc
from cinder_ext import opts

LOG = logging.getLogger(__name__)

PATCH_TYPE = "application/openstack-images-v2.1-json-patch"
POLL_CAP = 0.25      # seconds: the longest pause between two polls of an image
TASKS_EVERY = 0.5    # seconds: a queued image's tasks are listed at most this often


def _glance_message(resp):
    """Glance's explanation from an error body (JSON, or webob's HTML/plain text)."""
    text = resp.text or ""
    try:
        body = json.loads(text)
        if isinstance(body, dict):
            for key in ("message", "explanation", "title"):
                if key in body:
                    return str(body[key])
            inner = next(iter(body.values()), None)
            if isinstance(inner, dict) and "message" in inner:
                return str(inner["message"])
    except ValueError:
        pass
    text = re.sub(r"<[^>]+>", " ", text)
    text = " ".join(text.split())
    # webob repeats the status as a title: keep the explanation
    m = re.match(r"^(\d{3} [A-Za-z ]+?) \1 (.*)$", text)
    if m:
        text = m.group(2)
    return text[:300] or resp.reason or ""


class Glance:
    def __init__(self, conf, session=None):
        g = conf[opts.GLANCE_GROUP]
        self.timeout = g.request_timeout
        self.poll_interval = g.poll_interval
        self.headers = {}
        if g.auth_strategy == "noauth":
            auth = None
            self.headers = {"X-Identity-Status": "Confirmed", "X-Roles": ",".join(g.noauth_roles),
                            "X-Project-Id": g.noauth_project_id, "X-User-Id": g.noauth_user_id}
        else:
            auth = ks_loading.load_auth_from_conf_options(conf, opts.GLANCE_GROUP)
            if auth is None:
                raise exc.ConfigError("[glance] auth_type is not set; set it (e.g. password) "
                                      "or auth_strategy = noauth for a development Glance")
        self.auth = auth
        self.session = session or ks_loading.load_session_from_conf_options(
            conf, opts.GLANCE_GROUP, auth=auth)
        if g.api_servers:
            self.endpoints = [s if "://" in s else "http://" + s for s in g.api_servers]
        else:
            if auth is None:
                raise exc.ConfigError("[glance] api_servers is required with auth_strategy = noauth")
            adapter = ks_loading.load_adapter_from_conf_options(conf, opts.GLANCE_GROUP,
                                                                session=self.session, auth=auth)
            try:
                self.endpoints = [adapter.get_endpoint()]
            except ks_exc.Unauthorized:
                raise exc.GlanceForbidden("authentication to Keystone failed (HTTP 401): the [glance] "
                                          "credentials were refused (wrong user, password or application "
                                          "credential?)", status=401,
                                          op="authenticate") from None
            except ks_exc.ConnectFailure as e:
                raise exc.GlanceError(f"cannot reach Keystone at [glance] auth_url ({e})",
                                      op="authenticate") from None
            except ks_exc.ClientException as e:
                raise exc.GlanceError(f"cannot find the Glance endpoint in the catalog: {e}") from None
        self.endpoints = [e.rstrip("/") for e in self.endpoints]
        # strip a version suffix: paths below carry /v2
        self.endpoints = [re.sub(r"/v2(\.\d+)?$", "", e) for e in self.endpoints]
        self.stores_endpoints = ([re.sub(r"/v2(\.\d+)?/?$", "", g.stores_info_url.rstrip("/"))]
                                 if g.stores_info_url else self.endpoints)

    def sees_every_image(self):
        """True when our identity has Glance's admin role (every image visible to it),
        False when not, None when Keystone could not tell: only then is a 404 "gone"."""
        if self.auth is None:
            return "admin" in self.headers.get("X-Roles", "").split(",")
        try:
            return "admin" in self.auth.get_access(self.session).role_names
        except Exception as e:  # unknown is not yes
            LOG.debug("Cannot tell the [glance] user's roles: %s", e)
            return None

    # -- plumbing -----------------------------------------------------------------------
    def request(self, method, path, op, ok=(200,), timeout=None, endpoints=None, **kwargs):
        headers = dict(self.headers)
        headers.update(kwargs.pop("headers", {}) or {})
        last = None
        for endpoint in endpoints or self.endpoints:
            try:
                resp = self._send(method, endpoint + path, headers, timeout, kwargs)
            except ks_exc.ConnectTimeout as e:
                # keystoneauth reports read timeouts as ConnectTimeout too: the request may have
                # been acted upon, so only a request that is safe to repeat tries another server
                last = exc.GlanceTimeout(f"{op}: Glance at {endpoint} did not answer in time ({e})", op=op)
                if method.upper() in ("GET", "HEAD"):
                    continue
                raise last from None
            except ks_exc.RequestTimeout:
                # the request may have been acted upon: do not try another server
                raise exc.GlanceTimeout(f"{op}: Glance at {endpoint} did not answer within "
                                        f"{timeout or self.timeout} s", op=op) from None
            except ks_exc.ConnectFailure as e:
                last = exc.GlanceError(f"{op}: cannot reach Glance at {endpoint} ({e})", op=op)
                continue
            except ks_exc.ClientException as e:
                raise exc.GlanceError(f"{op}: {e}", op=op) from None
            if resp.status_code in ok:
                return resp
            msg = f"{op}: Glance answered {resp.status_code}: {_glance_message(resp)}"
            cls = {401: exc.GlanceForbidden, 403: exc.GlanceForbidden, 404: exc.GlanceNotFound,
                   409: exc.GlanceConflict}.get(resp.status_code, exc.GlanceError)
            raise cls(msg, status=resp.status_code, op=op)
        raise last

    def _send(self, method, url, headers, timeout, kwargs):
        # a GET is sent again (twice at most) when its connection broke before any answer, as
        # when the server closed a keep-alive connection just then; anything else may have
        # been acted upon, and a GET that timed out is not repeated (a hung Glance stays hung)
        tries = 3 if method.upper() in ("GET", "HEAD") else 1
        for attempt in range(tries):
            try:
                return self.session.request(url, method, headers=headers, raise_exc=False,
                                            connect_retries=0, timeout=timeout or self.timeout,
                                            logger=LOG, **kwargs)
            except ks_exc.ConnectFailure:  # not ConnectTimeout: a timeout is no broken connection
                if attempt == tries - 1:
                    raise
                time.sleep(0.1)

    # -- calls ----------------------------------------------------------------------------
    def stores_detail(self):
        """The parsed body of GET /v2/info/stores/detail (the decision validates it)."""
        resp = self.request("GET", "/v2/info/stores/detail", "get stores detail",
                            endpoints=self.stores_endpoints)
        try:
            return resp.json()
        except ValueError:
            raise exc.GlanceError("get stores detail: Glance answered 200 with a body that is "
                                  "not JSON", status=200, op="get stores detail") from None

    def create_image(self, name, disk_format="raw", container_format="bare", **props):
        body = dict(props, name=name, disk_format=disk_format, container_format=container_format)
        return self.request("POST", "/v2/images", "create image", ok=(201,), json=body).json()

    def get_image(self, image_id):
        return self.request("GET", f"/v2/images/{image_id}", f"get image {image_id}").json()

    def image_locations(self, image_id):
        """[url] of the image's locations: GET .../locations (Glance 2024.2+, service role),
        else what the image shows (direct_url, locations). [] when Glance tells none."""
        image = self.get_image(image_id)
        urls = [loc.get("url") for loc in image.get("locations") or [] if loc.get("url")]
        if image.get("direct_url") and image["direct_url"] not in urls:
            urls.append(image["direct_url"])
        if urls:
            return urls
        try:
            body = self.request("GET", f"/v2/images/{image_id}/locations",
                                f"get locations of image {image_id}").json()
        except (exc.GlanceForbidden, exc.GlanceNotFound):
            return []
        return [loc.get("url") for loc in body or [] if isinstance(loc, dict) and loc.get("url")]

    def delete_image(self, image_id):
        self.request("DELETE", f"/v2/images/{image_id}", f"delete image {image_id}", ok=(204,))

    def image_tasks_strict(self, image_id):
        """Tasks Glance ran on the image; [] when the image or the route does not exist
        (a Glance without the tasks API registers locations synchronously). Any other
        failure raises: "could not tell" must never read as "nothing running"."""
        op = f"list tasks of image {image_id}"
        try:
            return self.request("GET", f"/v2/images/{image_id}/tasks", op).json().get("tasks", [])
        except exc.GlanceNotFound:
            return []

    def add_location(self, image_id, url):
        """Ask Glance to register url.

        Returns the ids of location tasks that existed before (to tell ours apart) and
        the API used: 'task' (POST, 202, runs as a task) or 'legacy' (PATCH, synchronous).
        """
        op = f"add location {url} to image {image_id}"
        # only to tell our task from earlier ones: not knowing them costs nothing here
        before = {t.get("id") for t in tasks_if_known(self, image_id)}
        try:
            self.request("POST", f"/v2/images/{image_id}/locations", op, ok=(202, 200),
                         json={"url": url, "validation_data": {}})
            return "task", before
        except exc.GlanceError as e:
            if e.status not in (404, 405):
                raise
            # 404 is also "no such image": only a Glance without the route gets the PATCH
            self.get_image(image_id)
        patch = [{"op": "add", "path": "/locations/-", "value": {"url": url, "metadata": {}}}]
        self.request("PATCH", f"/v2/images/{image_id}", op + " (legacy PATCH)", ok=(200,),
                     data=json.dumps(patch), headers={"Content-Type": PATCH_TYPE})
        return "legacy", before

    def upload(self, image_id, body, size=None, store=None):
        """PUT /v2/images/{id}/file from an iterable of bytes (sent chunked).

        store: a Glance store id (multi-store header), else Glance's default store.
        """
        headers = {"Content-Type": "application/octet-stream"}
        if store:
            headers["X-Image-Meta-Store"] = store
        self.request("PUT", f"/v2/images/{image_id}/file", f"upload data of image {image_id}",
                     ok=(204,), data=body, headers=headers, timeout=None)

    def download(self, image_id, chunk=1 << 20):
        """Yield the image's bytes (tests, checks)."""
        resp = self.request("GET", f"/v2/images/{image_id}/file", f"download image {image_id}",
                            ok=(200, 204), stream=True)
        yield from resp.iter_content(chunk)


# -- polling, on any GlanceClient (cinder_ext.interfaces) ----------------------------------------
def _pauses(poll_interval):
    """Pauses between polls: poll_interval, growing by half up to POLL_CAP. A burst of
    uploads polls one Glance at once: fixed 50 ms polls (an image GET and a task list
    each) load the very Glance workers and database that activate the images."""
    pause = poll_interval
    while True:
        yield pause
        pause = min(max(POLL_CAP, poll_interval), pause * 1.5)


def tasks_if_known(client, image_id):
    """The image's tasks, [] when Glance does not tell: only to tell our task from older
    ones, never to decide that nothing runs."""
    try:
        return client.image_tasks_strict(image_id)
    except exc.GlanceError as e:
        LOG.warning("image %s: %s", image_id, e)
        return []


def _running_location_tasks(tasks):
    return [t for t in tasks if t.get("type") == "location_import"
            and t.get("status") in ("pending", "processing")]


def wait_location_tasks(client, image_id, timeout):
    """Wait, bounded, until no location_import task of the image is pending or running.

    A retry must not clean up a clone that a task of an earlier attempt is registering.
    Raises GlanceError when the tasks cannot be listed (unknown is not "none running")
    and GlanceTimeout when one still runs after `timeout`.
    """
    deadline = time.monotonic() + timeout
    pauses = _pauses(client.poll_interval)
    while True:
        running = _running_location_tasks(client.image_tasks_strict(image_id))
        if not running:
            return
        if time.monotonic() >= deadline:
            raise exc.GlanceTimeout(f"image {image_id}: Glance's location task {running[0].get('id')} "
                                    f"is still {running[0].get('status')} after {timeout} s",
                                    op="wait for location task")
        time.sleep(next(pauses))


def wait_active(client, image_id, timeout, url, tasks_before=()):
    """Poll until active; raise if Glance's location task fails or the bound passes."""
    deadline = time.monotonic() + timeout
    pauses = _pauses(client.poll_interval)
    tasks_listed = 0.0
    while True:
        image = client.get_image(image_id)
        status = image.get("status")
        if status == "active":
            return image
        if status in ("killed", "deleted", "deactivated"):
            raise exc.GlanceError(f"image {image_id} went {status} while Glance registered "
                                  f"location {url}", op="wait for active")
        if status == "queued" and time.monotonic() - tasks_listed >= TASKS_EVERY:
            tasks_listed = time.monotonic()
            for task in tasks_if_known(client, image_id):
                if (task.get("id") not in tasks_before and task.get("type") == "location_import"
                        and task.get("status") == "failure"):
                    raise exc.LocationRefused(
                        f"Glance refused location {url} for image {image_id}: "
                        f"{task.get('message') or 'the location task failed'}",
                        op="wait for active")
        if time.monotonic() >= deadline:
            raise exc.GlanceTimeout(f"image {image_id} is still {status} {timeout} s after "
                                    f"location {url} was requested", op="wait for active")
        time.sleep(next(pauses))


# -- where an image stands with its locations ---------------------------------------------------
# One answer for rollback, recovery and purge: may Glance (still, or ever) reference a
# clone named after this image?
ACTIVE = "active"            # active: it references its location(s)
LOCATED = "located"          # not active, but it holds a location already
REGISTERING = "registering"  # saving, importing, an import task, or a location task running
IDLE = "idle"                # queued (or killed) with no location and nothing in flight
GONE = "gone"                # deleted, or 404
UNKNOWN = "unknown"          # Glance did not tell: treated as in flight by every caller

_IN_FLIGHT = ("saving", "importing", "uploading")


def urls_of(image):
    """Every location URL of an image (its locations and direct_url)."""
    urls = {loc.get("url") for loc in image.get("locations") or [] if loc.get("url")}
    if image.get("direct_url"):
        urls.add(image["direct_url"])
    return urls


@dataclasses.dataclass(frozen=True)
class LocationState:
    state: str
    why: str
    image: dict = None    # the image as Glance showed it (None: gone or unknown)

    @property
    def orphaned(self):
        """Glance will never reference a clone named after the image (unless asked again)."""
        return self.state in (GONE, IDLE)

    @property
    def queued_empty(self):
        """Queued with no location: nothing points at a clone of that name yet."""
        return (self.image is not None and self.image.get("status") == "queued"
                and not urls_of(self.image))

    def holds(self, url):
        return self.image is not None and url in urls_of(self.image)


def location_state(client, image_id, tasks=True):
    """Where image_id stands (a LocationState). Unknown is never read as idle: an error
    from Glance, a task listing that fails, an import task: all count as in flight.
    tasks=False: the caller knows no location request of its own was ever sent, so a
    queued image with no location and no import task is idle without asking for its
    tasks (one request instead of two)."""
    try:
        image = client.get_image(image_id)
    except exc.GlanceNotFound:
        return LocationState(GONE, "its Glance image is gone (404)")
    except exc.CinderExtError as e:
        return LocationState(UNKNOWN, f"Glance did not tell about image {image_id} ({e})")
    status = image.get("status")
    if status == "deleted":
        return LocationState(GONE, "its Glance image is deleted", image)
    if status == "active":
        return LocationState(ACTIVE, "its Glance image is active", image)
    if urls_of(image):
        return LocationState(LOCATED, f"its Glance image ({status}) has a location", image)
    if status in _IN_FLIGHT:
        return LocationState(REGISTERING, f"its Glance image is {status}", image)
    if image.get("os_glance_import_task"):
        # Glance's import lock: a location (or data) import holds the image
        return LocationState(REGISTERING, "its Glance image has import task "
                             f"{image['os_glance_import_task']} in flight", image)
    if not tasks:
        return LocationState(IDLE, f"its Glance image is {status} with no location, no "
                             "import task, and no location request was sent", image)
    try:
        running = _running_location_tasks(client.image_tasks_strict(image_id))
    except exc.CinderExtError as e:
        return LocationState(UNKNOWN, f"listing the tasks of image {image_id} failed ({e}): "
                             "may be in flight", image)
    if running:
        return LocationState(REGISTERING, f"Glance's location task {running[0].get('id')} is "
                             f"{running[0].get('status')}", image)
    return LocationState(IDLE, f"its Glance image is {status} with no location and no task "
                         "in flight", image)
