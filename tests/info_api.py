"""Pytest plugin: our glance-info-api service started with its console script.

Fixtures:

* ``info_api_factory`` (session): ``start(config_file, auth_strategy='noauth',
  extra_conf=None)`` runs ``glance-info-api --config-file CONFIG --config-file
  OVERRIDES`` on a free loopback port and returns once ``/healthcheck``
  answers 200. The returned object has ``.url``, ``.port``, ``.log_path``,
  ``.log()`` and ``.stop()``. ``extra_conf`` is ``{section: {option: value}}``
  (or INI text) written to the overrides file, which wins over the config.
  Every service still running at the end of the session is stopped.
* ``peer_info_api`` (session): the service reading the Glance peer's own
  glance-api.conf (``glance_peer.config_file``), noauth.
* ``glance_conf`` (function): ``glance_conf(cluster=None, **sections)`` writes a
  glance-api.conf like an operator's (stores ``fast:file, ceph:rbd, web:http``,
  default ``ceph``, not listed first) into tmp_path, updated by ``sections``
  (``{"DEFAULT": {...}, "ceph": {...}}``; a value None drops the option), and
  returns its path.
* ``info_api_app`` (function): ``info_api_app(config_file, *more_args)`` -> an
  in-process ``InProcessAPI`` (the real WSGI application) with
  ``.request(method, path, roles=..., headers=..., body=...)`` -> webob
  Response; closed at teardown.
"""

import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

import pytest

from tools.peers.peerlib import free_port, ini

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONSOLE_SCRIPT = os.path.join(os.path.dirname(sys.executable), "glance-info-api")
START_TIMEOUT = float(os.environ.get("GLANCE_INFO_API_START_TIMEOUT", "60"))


def _ini(sections):
    """INI text as is; {section: {option: value}} as INI text, values in oslo.config's spelling."""
    if isinstance(sections, str):
        return sections
    return ini({section: {name: _value(value) for name, value in options.items()}
                for section, options in sections.items()})


def _value(value):
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ", ".join(f"{k}:{v}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ",".join(map(str, value))
    return str(value)


def listeners(port):
    """Pids with a TCP socket listening on `port` (any address), from /proc."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(table) as f:
                rows = f.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(fields[9])
    pids = set()
    if not inodes:
        return pids
    wanted = {f"socket:[{i}]" for i in inodes}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            fds = os.listdir(f"/proc/{pid}/fd")
            if any(os.readlink(f"/proc/{pid}/fd/{fd}") in wanted for fd in fds):
                pids.add(int(pid))
        except OSError:
            continue  # gone, or not ours to look at
    return pids


def descendants(pid):
    """Every process below pid, from /proc/*/stat."""
    children = {}
    for entry in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{entry}/stat") as f:
                ppid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, set()).add(int(entry))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


class InfoAPIError(RuntimeError):
    """glance-info-api did not come up; the message carries its output."""


class InfoAPI:
    """One glance-info-api process."""

    def __init__(self, config_file, auth_strategy="noauth", extra_conf=None, workdir=None):
        self.workdir = workdir or tempfile.mkdtemp(prefix="glance-info-api-")
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.config_file = config_file
        self.overrides = os.path.join(self.workdir, "overrides.conf")
        self.oslo_log_path = os.path.join(self.workdir, "glance-info-api.oslo.log")
        extra = _ini(extra_conf or {})
        with open(self.overrides, "w") as f:
            # later --config-file wins: auth over the operator's; where to listen and log
            # is our own section's (the operator's [DEFAULT] ones are Glance's)
            f.write(_ini({"DEFAULT": {"auth_strategy": auth_strategy},
                          "glance_info_api": {"bind_host": "127.0.0.1", "bind_port": self.port,
                                              "log_file": self.oslo_log_path}}))
            f.write("\n" + extra + "\n")
        self.log_path = os.path.join(self.workdir, "glance-info-api.log")
        self.argv = [CONSOLE_SCRIPT, "--config-file", config_file, "--config-file", self.overrides]
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     cwd=self.workdir, start_new_session=True)
        try:
            self._wait_healthy()
        except BaseException:
            self.stop()
            raise

    def _wait_healthy(self):
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise InfoAPIError(f"glance-info-api exited with {self.proc.returncode}: "
                                   f"{self.log().strip()}")
            # the port was free when picked, not reserved: only our child listening there
            # (or, with workers, its children) makes whatever answers ours
            owners = listeners(self.port)
            if owners:
                ours = {self.proc.pid} | descendants(self.proc.pid)
                if not owners <= ours:
                    self.stop()
                    raise InfoAPIError(f"port {self.port} was taken by pid(s) {sorted(owners - ours)} "
                                       "before glance-info-api could bind it")
                try:
                    with urllib.request.urlopen(self.url + "/healthcheck", timeout=2) as resp:
                        if resp.status == 200:
                            return
                except (urllib.error.URLError, ConnectionError, OSError):
                    pass
            time.sleep(0.1)
        raise InfoAPIError(f"glance-info-api not healthy after {START_TIMEOUT}s: {self.log().strip()}")

    def log(self):
        """stdout/stderr, then the oslo.log file."""
        text = ""
        for path in (self.log_path, self.oslo_log_path):
            if os.path.exists(path):
                with open(path, errors="replace") as f:
                    text += f.read()
        return text

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()

    def __repr__(self):
        return f"<InfoAPI {self.url} pid={self.proc.pid}>"


def glance_conf_text(base_dir, cluster=None, **sections):
    """An operator's glance-api.conf; `cluster` (a DevCluster) points the rbd store at it."""
    rbd = {"rbd_store_pool": "images", "rbd_store_user": "glance",
           "rbd_store_ceph_conf": os.path.join(base_dir, "no-ceph.conf"),
           "rbd_store_chunk_size": 8, "store_description": "Ceph RBD"}
    if cluster is not None:
        client = cluster.client("glance")
        rbd.update(rbd_store_pool=cluster.glance_pool, rbd_store_user=cluster.glance_user,
                   rbd_store_ceph_conf=client["conf"])
    conf = {
        "DEFAULT": {"enabled_backends": "fast:file, ceph:rbd, web:http", "auth_strategy": "noauth",
                    # options of the real Glance API that we do not read: ignored, as they must be
                    "show_image_direct_url": True, "workers": 4},
        "database": {"connection": "sqlite:////nonexistent/glance.sqlite"},
        "glance_store": {"default_backend": "ceph"},
        "fast": {"filesystem_store_datadir": os.path.join(base_dir, "images"),
                 "store_description": "Local files"},
        "ceph": rbd,
        "web": {"store_description": "Read-only HTTP"},
        "os_glance_staging_store": {"filesystem_store_datadir": os.path.join(base_dir, "staging")},
        "os_glance_tasks_store": {"filesystem_store_datadir": os.path.join(base_dir, "tasks")},
    }
    for section, options in sections.items():
        target = conf.setdefault(section, {})
        for name, value in options.items():
            if value is None:
                target.pop(name, None)
            else:
                target[name] = value
    return _ini(conf)


@pytest.fixture
def glance_conf(tmp_path):
    counter = iter(range(1000))

    def write(cluster=None, **sections):
        path = tmp_path / f"glance-api-{next(counter)}.conf"
        path.write_text(glance_conf_text(str(tmp_path), cluster=cluster, **sections))
        return str(path)
    return write


class InProcessAPI:
    """The real WSGI application, called without a server."""

    def __init__(self, config_file, *args):
        from glance.common import service
        conf = service.load_config(["--config-file", config_file, *args])
        self.conf = conf
        self.app = service.build_application(conf)

    def request(self, method, path, roles=None, headers=None, body=None, **environ):
        import webob
        h = dict(headers or {})
        if roles is not None:
            h["X-Roles"] = ",".join(roles)
        req = webob.Request.blank(path, method=method, headers=h, **environ)
        if body is not None:
            req.body = body
        return req.get_response(self.app)

    def get(self, path, **kw):
        return self.request("GET", path, **kw)

    def close(self):
        self.app.close()


@pytest.fixture
def info_api_app():
    apps = []

    def make(config_file, *args):
        app = InProcessAPI(config_file, *args)
        apps.append(app)
        return app
    yield make
    for app in apps:
        app.close()


@pytest.fixture(scope="session")
def info_api_factory(tmp_path_factory):
    """start(config_file, auth_strategy='noauth', extra_conf=None) -> InfoAPI (.url, .stop())."""
    started = []

    def start(config_file, auth_strategy="noauth", extra_conf=None):
        workdir = str(tmp_path_factory.mktemp("glance-info-api"))
        service = InfoAPI(config_file, auth_strategy, extra_conf, workdir=workdir)
        started.append(service)
        return service

    yield start
    for service in started:
        service.stop()


@pytest.fixture(scope="session")
def peer_info_api(glance_peer, info_api_factory):
    """Our service on the Glance peer's own glance-api.conf (noauth)."""
    return info_api_factory(glance_peer.config_file)


__all__ = ["InfoAPI", "InfoAPIError", "InProcessAPI", "free_port", "glance_conf_text",
           "glance_conf", "info_api_app", "info_api_factory", "peer_info_api"]
