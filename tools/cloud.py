#!/usr/bin/python3
"""A real storage cloud on this machine, everything under one directory, loopback only.

    tools/cloud start DIR [--timeout S] [--osds 1|3] [--volume-services N] [--release SERIES]
                          [--without-info-api] [--single-store]
                                          boot it (DIR empty or absent); prints DIR/cloud.json's path
    tools/cloud status DIR                each component: up or down (JSON); exit 1 if one is down
    tools/cloud env DIR                   shell exports: OS_CLIENT_CONFIG_FILE, OS_CLOUD=member, PATH, CEPH_*
    tools/cloud stop DIR                  no process, port or mount left
    tools/cloud clone on|off DIR          enable_clone_optimization; restarts cinder-volume
    tools/cloud driver ours|upstream DIR  volume_driver: ours, or upstream's RBDDriver (as an
                                          operator goes back); restarts cinder-volume
    tools/cloud restart-volume DIR [--fault-point NAME]
                                          restart cinder-volume; for tests only, --fault-point
                                          runs it through tests/fault_injection.py, SIGKILLed
                                          whole at that cinder_ext.steps boundary
    tools/cloud tempest DIR               Tempest + cinder-tempest-plugin (tools/cloud_tempest.py)
    tools/cloud soak DIR [--minutes M] [--seed N] [--faults K,..]
                                          users, admins and faults at random (tools/soak.py)
    tools/cloud tempest-ab DIR            every volume test without compute, with our driver then
                                          upstream's RBDDriver: the tests whose outcome differs

Components, each on a free port picked at start, each with HOME=DIR/home; the services are
the newest series' (2026.2: Keystone 30, Glance 33, Cinder 29), or with --release SERIES that
series' (tools/peers/releases.py: 2025.1 is Keystone 27, Glance 30, Cinder 26). `start`
builds every virtualenv it needs first (tools/setup-venv, setup-peers, setup-cinder-peer):

    DIR/ceph       tools/ceph-dev-cluster (cephx, least-privilege users glance and cinder); with
                   --osds 3, three OSDs and every pool size 3, min_size 2
    DIR/mysql      Debian's mariadbd: its own datadir, socket and port; databases and users
                   keystone, glance, cinder (never the system instance)
    DIR/rabbitmq   Debian's rabbitmq-server: its own node name, AMQP and dist ports, epmd
                   (ERL_EPMD_PORT), mnesia and logs; user `openstack`
    DIR/keystone   Keystone on MariaDB, fernet, gunicorn; users as tools/peers/keystone-peer
                   makes them (admin; demo: member, reader; service: glance, cinder), catalog
                   identity, image (the front door), volumev3
    DIR/glance     Glance (tools/peers/glance-peer --auth keystone) on MariaDB, rbd default
                   store as Ceph user glance, do_secure_hash on (Glance's default), lock_path
    DIR/info-api   our glance-info-api on Glance's glance-api.conf, auth_strategy keystone
    DIR/frontdoor  the image endpoint: /v2/info/stores and /v2/info/stores/detail to our
                   service, every other path to Glance (tools/front_door.py). With
                   --without-info-api neither runs: the image endpoint is Glance itself, whose
                   own stores detail (Glance 30 to 33) has pool and fsid but no `user`.
                   With --single-store, Glance runs single-store as devstack-plugin-ceph writes
                   it (no enabled_backends; [glance_store] stores = file, http, rbd,
                   default_store = rbd and the rbd_store_* options): upstream answers the
                   stores paths 404, glance-info-api reports the store as `rbd`
    DIR/cinder     Cinder: cinder-api (gunicorn), cinder-scheduler, cinder-volume, over
                   RabbitMQ and MariaDB; backend `ceph` with cinder_ext.driver.RBDCloneUploadDriver,
                   enable_clone_optimization = true, rbd_user cinder; [glance], [service_user]
                   (send_service_user_token) and [keystone_authtoken] as an operator writes them.
                   With --volume-services N (N > 1), N cinder-volume services (hosts cloud,
                   cloud-2, ...) in one active-active Cinder cluster (`[DEFAULT] cluster`), as
                   Kolla and OpenStack-Ansible deploy them: each its own log, cinder-volume-K.log

Upstream services never run with the checkout as their working directory or on
their sys.path: our `glance` package shares upstream Glance's import name.
Errors: one line on stderr, exit 1, nothing left running.

This is the top of tools/'s imports: what its users share with it (paths, the state
file, tokens, the client view of a cloud) is tools/cloudlib.py; Keystone's set-up is
keystone-peer's (tools/peers/keystone_peer.py).
"""

import argparse
import glob
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

import cloud_tempest
import cloudlib  # also puts tools/peers on sys.path
import soak
import releases  # noqa: E402  tools/peers/releases.py (cloudlib put tools/peers on sys.path)
from cloudlib import (HERE, PURGE_INTERVAL, ROOT, STATE, VENVS, CloudError, last_line, last_lines, password_token,
                      port_open, wait_for, write_ini, write_private)
import keystone_peer as ksp  # noqa: E402  tools/peers/keystone_peer.py: Keystone's own set-up
import glance_peer  # noqa: E402  tools/peers/glance_peer.py: the dev cluster's Glance user and pool
from peerlib import PeerError, apt_install, apt_missing, free_port, group_members, stop_group  # noqa: E402

RABBIT_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"
PACKAGES = ("mariadb-server", "rabbitmq-server", "qemu-utils")
STOP_GRACE = 20  # seconds between a service's SIGTERM and its SIGKILL
# tests/fault_injection.py: its variables, and the script that installs its observer
FAULT_INJECTION = os.path.join(ROOT, "tests", "fault_injection.py")
FAULT_ENV = "CINDER_EXT_"  # CINDER_EXT_FAULT_POINT, CINDER_EXT_FAULT_ACTION


class Services:
    """The cloud's processes on this machine: start, stop, status, and their state in DIR/cloud.json."""

    def __init__(self, d):
        self.dir = os.path.abspath(d)
        self.state = {}

    # state ----------------------------------------------------------------------------------
    def path(self, *p):
        return os.path.join(self.dir, *p)

    def save(self):
        write_private(self.path(STATE), json.dumps(self.state, indent=2))

    def load(self):
        self.state = cloudlib.read_state(self.dir)
        return self.state

    def env(self, **extra):
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("OS_", "PYTHON", "VIRTUAL_ENV", "RABBITMQ_", "ERL_", "CEPH_", "CLOUD_",
                                    FAULT_ENV))}
        home = self.path("home")
        env.update(HOME=home, XDG_CONFIG_HOME=os.path.join(home, ".config"),
                   XDG_CACHE_HOME=os.path.join(home, ".cache"), XDG_DATA_HOME=os.path.join(home, ".local", "share"))
        env.update(extra)
        return env

    def spawn(self, name, cmd, log, cwd=None, env=None):
        """A service in its own session (stop kills the group); its pgid goes in the state."""
        with open(log, "a") as out:
            proc = subprocess.Popen(cmd, cwd=cwd or self.dir, env=env or self.env(), stdin=subprocess.DEVNULL,
                                    stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        self.state.setdefault("pgids", {})[name] = proc.pid
        self.save()
        return proc

    # start ----------------------------------------------------------------------------------
    def start(self, timeout, osds=1, volume_services=1, release=releases.NEWEST, info_api=True,
              single_store=False):
        d = self.dir
        if os.path.exists(d) and (not os.path.isdir(d) or os.listdir(d)):
            raise CloudError(f"{d} is not an empty directory")
        install_packages()
        for tool in ("mariadbd", "mariadb-install-db", "mariadb", "epmd"):
            if not shutil.which(tool):
                raise CloudError(f"{tool} is missing (apt-get install mariadb-server rabbitmq-server)")
        if not os.access(RABBIT_SERVER, os.X_OK):
            raise CloudError(f"{RABBIT_SERVER} is missing (apt-get install rabbitmq-server)")
        build_venvs(release)
        os.makedirs(d, exist_ok=True)
        for sub in ("home", "mysql", "rabbitmq", "keystone", "info-api", "frontdoor", "cinder", "locks"):
            os.makedirs(self.path(sub), mode=0o700, exist_ok=True)
        taken = set()
        ports = {k: free_port(taken) for k in ("mysql", "amqp", "dist", "epmd", "keystone", "glance",
                                                "info_api", "frontdoor", "cinder")}
        self.state = {"dir": d, "ports": ports, "pgids": {}, "started": time.time(),
                      "passwords": {k: secrets.token_hex(12) for k in ("keystone", "glance", "cinder",
                                                                        "rabbit")},
                      "osds": osds, "volume_services": volume_services, "release": release,
                      "info_api": info_api, "single_store": single_store}
        self.save()
        t0 = time.monotonic()
        try:
            # Ceph, MariaDB and RabbitMQ do not depend on each other: boot them together
            errors = []

            def run(fn):
                try:
                    fn()
                except Exception as e:  # reported below, after every thread ends
                    errors.append(e)
            threads = [threading.Thread(target=run, args=(fn,)) for fn in
                       (self._ceph, self._mysql, self._rabbit)]
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            if errors:
                raise errors[0]
            self._keystone(timeout)
            self._glance(timeout)
            if info_api:
                self._info_api(timeout)
                self._frontdoor(timeout)
            else:
                self.state["image_url"] = self.state["glance_url"]
            self._endpoints()
            self._cinder(timeout)
        except BaseException:
            self.stop(quiet=True)
            raise
        self.state["boot_seconds"] = round(time.monotonic() - t0, 1)
        self.save()
        return self.state

    def _ceph(self):
        proc = subprocess.run([os.path.join(HERE, "ceph-dev-cluster"), "start", self.path("ceph"),
                               "--osd-size", "8G", "--osds", str(self.state.get("osds", 1))],
                              capture_output=True, text=True, env=self.env(), cwd=self.dir, timeout=300)
        if proc.returncode != 0:
            raise CloudError(f"ceph-dev-cluster: {last_line(proc.stderr)}")
        out = subprocess.run([os.path.join(HERE, "ceph-dev-cluster"), "env", self.path("ceph")],
                             capture_output=True, text=True, timeout=60)
        ceph = {}
        for line in out.stdout.splitlines():
            if line.startswith("export "):
                k, _, v = line[7:].partition("=")
                ceph[k] = v.strip("'\"")
        self.state["ceph"] = ceph
        self.state["ceph_started"] = True

    def sql(self, statements):
        proc = subprocess.run(["mariadb", "--no-defaults", "-S", self.path("mysql", "mysqld.sock"), "-u", "root"],
                              input=statements, capture_output=True, text=True, timeout=60, env=self.env())
        if proc.returncode != 0:
            raise CloudError(f"mariadb: {last_line(proc.stderr)}")
        return proc.stdout

    def _mysql(self):
        m = self.path("mysql")
        with open(os.path.join(m, "install.log"), "w") as log:
            proc = subprocess.run(["mariadb-install-db", "--no-defaults", f"--datadir={m}/data", "--user=root",
                                   "--auth-root-authentication-method=socket", "--skip-test-db"],
                                  stdout=log, stderr=subprocess.STDOUT, timeout=120, env=self.env(), cwd=m)
        if proc.returncode != 0:
            raise CloudError(f"mariadb-install-db: {last_lines(os.path.join(m, 'install.log'))}")
        port = self.state["ports"]["mysql"]
        proc = self.spawn("mysql", ["mariadbd", "--no-defaults", f"--datadir={m}/data",
                                    f"--socket={m}/mysqld.sock", f"--port={port}", "--bind-address=127.0.0.1",
                                    f"--pid-file={m}/mysqld.pid", "--user=root", f"--log-error={m}/error.log",
                                    "--skip-name-resolve", "--innodb-buffer-pool-size=128M",
                                    "--max-connections=1000", "--character-set-server=utf8mb4"],
                          os.path.join(m, "out.log"), cwd=m)
        wait_for("mariadbd", lambda: os.path.exists(f"{m}/mysqld.sock") and port_open(port), 60,
                 dead=lambda: proc.poll() is not None, log=f"{m}/error.log")
        stmts = []
        for svc in ("keystone", "glance", "cinder"):
            pw = self.state["passwords"][svc]
            stmts.append(f"CREATE DATABASE {svc} CHARACTER SET utf8mb4;"
                         f"CREATE USER '{svc}'@'127.0.0.1' IDENTIFIED BY '{pw}';"
                         f"GRANT ALL PRIVILEGES ON {svc}.* TO '{svc}'@'127.0.0.1';")
        self.sql("\n".join(stmts))

    def db_url(self, svc):
        return (f"mysql+pymysql://{svc}:{self.state['passwords'][svc]}@127.0.0.1:"
                f"{self.state['ports']['mysql']}/{svc}?charset=utf8mb4")

    def rabbit_env(self):
        r, p = self.path("rabbitmq"), self.state["ports"]
        return self.env(ERL_EPMD_PORT=str(p["epmd"]), ERL_EPMD_ADDRESS="127.0.0.1",
                        RABBITMQ_NODENAME=f"cloud{p['amqp']}@localhost", RABBITMQ_NODE_IP_ADDRESS="127.0.0.1",
                        RABBITMQ_NODE_PORT=str(p["amqp"]), RABBITMQ_DIST_PORT=str(p["dist"]),
                        RABBITMQ_MNESIA_BASE=f"{r}/mnesia", RABBITMQ_LOG_BASE=f"{r}/log",
                        RABBITMQ_CONFIG_FILE=f"{r}/rabbitmq.conf",
                        RABBITMQ_ENABLED_PLUGINS_FILE=f"{r}/enabled_plugins",
                        RABBITMQ_CONF_ENV_FILE=f"{r}/rabbitmq-env.conf",
                        RABBITMQ_ADVANCED_CONFIG_FILE=f"{r}/advanced.config",
                        RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS="-kernel inet_dist_use_interface {127,0,0,1}")

    def _rabbit(self):
        r, p = self.path("rabbitmq"), self.state["ports"]
        for sub in ("mnesia", "log"):
            os.makedirs(os.path.join(r, sub), exist_ok=True)
        with open(f"{r}/rabbitmq.conf", "w") as f:
            f.write(f"listeners.tcp.default = 127.0.0.1:{p['amqp']}\ndefault_user = openstack\n"
                    f"default_pass = {self.state['passwords']['rabbit']}\n")
        with open(f"{r}/enabled_plugins", "w") as f:
            f.write("[].\n")
        open(f"{r}/rabbitmq-env.conf", "w").close()
        env = self.rabbit_env()
        # our own epmd on our own port, started first so that Erlang uses it and we can stop it
        epmd = self.spawn("epmd", ["epmd", "-port", str(p["epmd"]), "-address", "127.0.0.1"],
                          f"{r}/epmd.log", cwd=r, env=env)
        wait_for("epmd", lambda: port_open(p["epmd"]), 20, dead=lambda: epmd.poll() is not None,
                 log=f"{r}/epmd.log")
        proc = self.spawn("rabbitmq", [RABBIT_SERVER], f"{r}/out.log", cwd=r, env=env)

        def amqp():
            with socket.create_connection(("127.0.0.1", p["amqp"]), timeout=2) as s:
                s.sendall(b"AMQP\x00\x00\x09\x01")
                return s.recv(1)[:1] == b"\x01"  # connection.start frame
        wait_for("rabbitmq-server", amqp, 90, dead=lambda: proc.poll() is not None, log=f"{r}/out.log")
        self.state["transport_url"] = (f"rabbit://openstack:{self.state['passwords']['rabbit']}@127.0.0.1:"
                                       f"{p['amqp']}/")

    def _keystone(self, timeout):
        """Keystone as keystone-peer sets it up (keystone_peer.py), on MariaDB."""
        k, port = self.path("keystone"), self.state["ports"]["keystone"]
        for sub in ("fernet-keys", "credential-keys", "locks"):
            os.makedirs(os.path.join(k, sub), mode=0o700, exist_ok=True)
        conf = os.path.join(k, "keystone.conf")
        with open(conf, "w") as f:
            f.write(ksp.render_conf(k, 3600, connection=self.db_url("keystone")))
        kstate = ksp.new_state(k, port, conf, venv=self.venvs["keystone"])
        ksp.write_state(k, kstate)
        env = self.env()
        try:
            ksp.bootstrap(k, conf, kstate, env=env)
            pid = ksp.serve(k, port, ["keystone.conf"], "", timeout, env=env)
            self.state["pgids"]["keystone"] = pid
            self.save()
            kstate["pids"].append(pid)
            kstate["users"].update(ksp.provision(k, "users", env=env))
            ksp.write_state(k, kstate)
            ksp.write_clouds(k, kstate)
        except PeerError as e:
            raise CloudError(f"keystone: {e}") from None
        url = kstate["url"]
        self.state["keystone"] = {"url": url, "auth_url": url + "/v3", "users": kstate["users"],
                                  "clouds_yaml": os.path.join(k, "clouds.yaml"), "region": kstate["region"]}
        self.save()

    def user(self, name):
        return self.state["keystone"]["users"][name]

    def _glance(self, timeout):
        ks, port = self.state["keystone"], self.state["ports"]["glance"]
        proc = subprocess.run([os.path.join(HERE, "peers", "glance-peer"), "start", self.path("glance"),
                               "--ceph-dir", self.path("ceph"), "--port", str(port), "--auth", "keystone",
                               "--keystone-url", ks["url"],
                               # `=`: a random password may start with '-'
                               f"--keystone-password={self.user('glance')['password']}",
                               "--set", f"database.connection={self.db_url('glance')}",
                               "--set", "DEFAULT.debug=false",
                               "--set", f"oslo_concurrency.lock_path={self.path('glance', 'locks')}",
                               "--set", "DEFAULT.do_secure_hash=true",
                               *self._single_store_settings(),
                               "--timeout", str(timeout), "--release", self.release],
                              capture_output=True, text=True, env=self.env(), cwd=self.dir, timeout=timeout + 120)
        if proc.returncode != 0:
            raise CloudError(f"glance: {last_line(proc.stderr)}")
        with open(self.path("glance", "peer.json")) as f:
            self.state["pgids"]["glance"] = json.load(f)["pid"]
        self.state["glance_url"] = f"http://127.0.0.1:{port}"
        self.save()

    def _single_store_settings(self):
        """glance-peer --set items that make Glance single-store (--single-store), as
        devstack-plugin-ceph writes it: no enabled_backends, the store in [glance_store]
        (the peer's multi-store sections stay, unread by a single-store Glance)."""
        if not self.state.get("single_store"):
            return []
        ceph = glance_peer.cluster_info(self.path("ceph"))
        g = self.path("glance")
        items = {"DEFAULT.enabled_backends": "", "DEFAULT.node_staging_uri": f"file://{g}/staging",
                 "glance_store.stores": "file, http, rbd", "glance_store.default_store": "rbd",
                 "glance_store.filesystem_store_datadir": os.path.join(g, "images"),
                 "glance_store.rbd_store_pool": ceph["pool"], "glance_store.rbd_store_user": ceph["user"],
                 "glance_store.rbd_store_ceph_conf": ceph["conf"], "glance_store.rbd_store_chunk_size": "8"}
        return [a for k, v in items.items() for a in ("--set", f"{k}={v}")]

    def _info_api(self, timeout):
        i, port = self.path("info-api"), self.state["ports"]["info_api"]
        server = {"bind_host": "127.0.0.1", "bind_port": port, "log_file": os.path.join(i, "glance-info-api.log")}
        # [glance_info_api] is where the service reads these; [DEFAULT] for older checkouts
        write_ini(os.path.join(i, "glance-info-api.conf"), {
            "DEFAULT": dict(server, auth_strategy="keystone"), "glance_info_api": server})
        cmd = [os.path.join(VENVS["project"], "bin", "glance-info-api"),
               "--config-file", self.path("glance", "glance-api.conf"),
               "--config-file", os.path.join(i, "glance-info-api.conf")]
        proc = self.spawn("info_api", cmd, os.path.join(i, "out.log"), cwd=i)
        wait_for("glance-info-api", lambda: urllib.request.urlopen(
            f"http://127.0.0.1:{port}/healthcheck", timeout=2).status == 200, timeout,
            dead=lambda: proc.poll() is not None, log=os.path.join(i, "out.log"))

    def _frontdoor(self, timeout):
        f, p = self.path("frontdoor"), self.state["ports"]
        info = f"http://127.0.0.1:{p['info_api']}"
        # tools/front_door.py: exactly /v2/info/stores and /v2/info/stores/detail to ours
        cmd = [sys.executable, os.path.join(HERE, "front_door.py"), str(p["frontdoor"]),
               self.state["glance_url"], info]
        proc = self.spawn("frontdoor", cmd, os.path.join(f, "frontdoor.log"), cwd=f)
        wait_for("front door", lambda: port_open(p["frontdoor"]), timeout,
                 dead=lambda: proc.poll() is not None, log=os.path.join(f, "frontdoor.log"))
        self.state["image_url"] = f"http://127.0.0.1:{p['frontdoor']}"

    def _endpoints(self):
        """The catalog's image (the front door) and volume endpoints: cloud_provision.py, run as
        keystone-peer runs its provisioning (in the Keystone venv, as the bootstrap admin)."""
        try:
            users = ksp.provision(self.path("keystone"), self.state["image_url"],
                                  f"http://127.0.0.1:{self.state['ports']['cinder']}/v3/%(project_id)s",
                                  env=self.env(), script=os.path.join(HERE, "cloud_provision.py"))
        except PeerError as e:
            raise CloudError(f"catalog: {e}") from None
        # the second project's user (alt) in clouds.yaml and the state, beside the others
        kstate = ksp.read_state(self.path("keystone"))
        kstate["users"].update(users)
        ksp.write_state(self.path("keystone"), kstate)
        ksp.write_clouds(self.path("keystone"), kstate)
        self.state["keystone"]["users"].update(users)
        self.save()

    @property
    def release(self):
        return self.state.get("release", releases.NEWEST)

    @property
    def venvs(self):
        return cloudlib.venvs(self.release)

    def glance_section(self, auth):
        """[glance] as an operator of this Cinder writes it: only the options it registers
        (Cinder 26 has none beyond the DEFAULT glance_* ones; 27 adds the service
        credentials, 28 region_name), asked of Cinder itself, not of its version."""
        # cinder.image.glance imports only after Cinder's objects are registered
        code = ("from oslo_config import cfg; from cinder import objects; objects.register_all(); "
                "import cinder.image.glance; "
                "g = cfg.CONF._groups.get('glance'); print(' '.join(sorted(g._opts) if g else []))")
        proc = subprocess.run([os.path.join(self.venvs["cinder"], "bin", "python"), "-c", code],
                              capture_output=True, text=True, timeout=120, cwd="/",
                              env=dict(self.env(), PYTHONWARNINGS="ignore"))
        if proc.returncode != 0:
            raise CloudError(f"Cinder's [glance] options: {last_line(proc.stderr)}")
        has = set(proc.stdout.split())
        if "auth_type" not in has:
            return {}
        ks = self.state["keystone"]
        return dict(auth, **({"region_name": ks["region"]} if "region_name" in has else {}))

    def cinder_conf(self):
        ks, ceph, c = self.state["keystone"], self.state["ceph"], self.path("cinder")
        cinder = self.user("cinder")
        auth = {"auth_type": "password", "auth_url": ks["auth_url"], "username": "cinder",
                "password": cinder["password"], "project_name": "service", "user_domain_name": "Default",
                "project_domain_name": "Default"}
        return {
            "DEFAULT": {"transport_url": self.state["transport_url"], "auth_strategy": "keystone",
                        "enabled_backends": "ceph", "default_volume_type": "__DEFAULT__",
                        "api_paste_config": os.path.join(c, "api-paste.ini"),
                        "log_dir": c, "debug": "false", "state_path": c,
                        "my_ip": "127.0.0.1", "host": "cloud",
                        "osapi_volume_listen": "127.0.0.1",
                        "osapi_volume_listen_port": self.state["ports"]["cinder"],
                        # a dev machine: heartbeats every 5 s, down after 30 s (defaults 10/60)
                        "report_interval": 5, "service_down_time": 30,
                        "rpc_response_timeout": 120,
                        # room for the tests and Tempest (defaults: 10 volumes, 1000 GB)
                        "quota_volumes": 200, "quota_snapshots": 200, "quota_gigabytes": 2000,
                        "quota_backups": 50,
                        # without it cinder-api ignores list filters by name and status
                        "resource_query_filters_file": os.path.join(
                            self.venvs["cinder"], "etc", "cinder", "resource_filters.json"),
                        **({"cluster": "cloud-cluster"} if self.volume_services() > 1 else {})},
            "database": {"connection": self.db_url("cinder")},
            "oslo_concurrency": {"lock_path": os.path.join(c, "locks")},
            # quorum queues, as Kolla-Ansible and OpenStack-Ansible deploy them by default: a
            # cast published in the seconds after a RabbitMQ restart, before cinder-volume
            # re-declared its (classic, transient) queue, was dropped; the soak lost an
            # upload's RPC that way and the volume stayed `uploading`
            "oslo_messaging_rabbit": {"heartbeat_timeout_threshold": 60, "rabbit_quorum_queue": "true"},
            "keystone_authtoken": dict(auth, www_authenticate_uri=ks["url"], service_token_roles_required="true",
                                       service_token_roles="service"),
            # Cinder's own Glance access: glance_api_servers unset, Cinder's default, so
            # the catalog's image endpoint (the front door) is found through Keystone; its
            # [glance] credentials and region where this Cinder has those options
            "glance": self.glance_section(auth),
            # the user's token plus this service token on calls to Glance (and Nova)
            "service_user": dict(auth, send_service_user_token="true"),
            "nova": dict(auth, region_name=ks["region"]),
            # the services run as root here: privsep's helper directly, not through sudo and
            # /etc/cinder/rootwrap.conf (the copy path converts with qemu-img under privsep)
            "cinder_sys_admin": {"helper_command": f"{self.venvs['cinder']}/bin/privsep-helper --config-file "
                                                   f"{os.path.join(c, 'cinder.conf')}"},
            "privsep_osbrick": {"helper_command": f"{self.venvs['cinder']}/bin/privsep-helper --config-file "
                                                  f"{os.path.join(c, 'cinder.conf')}"},
            "ceph": {"volume_driver": "cinder_ext.driver.RBDCloneUploadDriver", "volume_backend_name": "ceph",
                     "rbd_pool": "volumes", "rbd_user": ceph["CEPH_CINDER_USER"],
                     "rbd_ceph_conf": ceph["CEPH_CINDER_CONF"], "rbd_flatten_volume_from_snapshot": "false",
                     "enable_clone_optimization": "true", "image_upload_use_cinder_backend": "false",
                     "report_discard_supported": "true",
                     # the driver's periodic purge every 10 s (default 60): a test waits two
                     "deferred_deletion_purge_interval": PURGE_INTERVAL},
        }

    def _cinder(self, timeout):
        c, venv, port = self.path("cinder"), self.venvs["cinder"], self.state["ports"]["cinder"]
        os.makedirs(os.path.join(c, "locks"), exist_ok=True)
        conf = os.path.join(c, "cinder.conf")
        write_ini(conf, self.cinder_conf())
        # Cinder's api-paste.ini, as the venv ships it
        paste = os.path.join(venv, "etc", "cinder", "api-paste.ini")
        if not os.path.exists(paste):
            found = glob.glob(os.path.join(venv, "lib", "python3*", "site-packages", "cinder", "**",
                                           "api-paste.ini"), recursive=True)
            if not found:
                raise CloudError(f"no api-paste.ini in {venv}")
            paste = found[0]
        shutil.copy(paste, os.path.join(c, "api-paste.ini"))
        env = self.env(OS_CINDER_CONFIG_DIR=c)
        with open(os.path.join(c, "db-sync.log"), "w") as log:
            proc = subprocess.run([os.path.join(venv, "bin", "cinder-manage"), "--config-file", conf, "db", "sync"],
                                  stdout=log, stderr=subprocess.STDOUT, env=env, cwd=c, timeout=600)
        if proc.returncode != 0:
            raise CloudError(f"cinder-manage db sync: {last_lines(os.path.join(c, 'db-sync.log'))}")
        self._etc_ceph()
        procs = {"scheduler": self.spawn("cinder_scheduler", [os.path.join(venv, "bin", "cinder-scheduler"),
                                                               "--config-file", conf],
                                         os.path.join(c, "scheduler.out"), cwd=c, env=env)}
        for k in range(1, self.volume_services() + 1):
            procs[f"volume{k}"] = self.spawn(self.volume_pgid_name(k), self.volume_cmd(k),
                                             os.path.join(c, f"volume{self.suffix(k)}.out"), cwd=c, env=env)
        gconf = os.path.join(c, "gunicorn.conf.py")
        with open(gconf, "w") as f:
            # Cinder's WSGI entry parses sys.argv with oslo.config: hand it our config, not
            # gunicorn's arguments
            f.write(f"import sys\nsys.argv[1:] = ['--config-file', {conf!r}]\n")
        procs["api"] = self.spawn("cinder_api", [
            os.path.join(venv, "bin", "gunicorn"), "--config", gconf, "--bind", f"127.0.0.1:{port}",
            # two processes, as a deployment runs several: one would queue a request behind
            # every in-flight one on its GIL
            "--workers", "2", "--worker-class", "gthread", "--threads", "8", "--timeout", "300",
            "--graceful-timeout", "10", "--no-control-socket",
            "--access-logfile", os.path.join(c, "api-access.log"),
            "--error-logfile", os.path.join(c, "gunicorn.log"),
            "cinder.wsgi.api:application"], os.path.join(c, "api.out"), cwd=c, env=env)

        def dead():
            return any(p.poll() is not None for p in procs.values())
        url = f"http://127.0.0.1:{port}/"

        def versions():
            try:
                return urllib.request.urlopen(url, timeout=3).status == 200
            except urllib.error.HTTPError as e:
                return e.code == 300  # the version document: Multiple Choices
        wait_for("cinder-api", versions, timeout,
                 dead=dead, log=os.path.join(c, "gunicorn.log"))
        wait_for("cinder-volume and cinder-scheduler", lambda: all(
            self.driver_ready(k) for k in range(1, self.volume_services() + 1)) and "cinder-scheduler" in
            self.services_up() and len(self.volume_hosts_up()) == self.volume_services(),
                 timeout, dead=dead, log=os.path.join(c, "cinder-volume.log"))

    def _etc_ceph(self):
        # os-brick (upstream's copy path opens the volume through it) reads the keyring
        # from /etc/ceph/ceph.client.<rbd_user>.keyring, as on an OpenStack host; Cinder
        # reads no other keyring option outside cinderlib. This machine's /etc/ceph is not
        # ours to write: cinder-volume gets DIR/etc-ceph there, in a mount namespace of its
        # own (gone with the process: nothing to unmount)
        ceph = self.state["ceph"]
        etc = self.path("etc-ceph")
        os.makedirs(etc, exist_ok=True)
        shutil.copy(ceph["CEPH_CINDER_CONF"], os.path.join(etc, "ceph.conf"))
        shutil.copy(ceph["CEPH_CINDER_KEYRING"],
                    os.path.join(etc, f"ceph.client.{ceph['CEPH_CINDER_USER']}.keyring"))

    # cinder-volume service k (1, 2, ...): host cloud, cloud-2, ...; service 1 keeps the names
    # of a one-service cloud (pgid cinder_volume, cinder-volume.log)
    def volume_services(self):
        return self.state.get("volume_services", 1)

    @staticmethod
    def suffix(k):
        return "" if k == 1 else f"-{k}"

    def volume_pgid_name(self, k):
        return "cinder_volume" if k == 1 else f"cinder_volume_{k}"

    def volume_host(self, k):
        return f"cloud{self.suffix(k)}"

    def volume_cmd(self, k=1, fault_point=None):
        """cinder-volume service k's command line. fault_point (tests only): run through
        tests/fault_injection.py, whose observer SIGKILLs the service's process group at
        that boundary (its environment: fault_env); -P keeps the checkout off sys.path."""
        c = self.path("cinder")
        confs = [os.path.join(c, "cinder.conf")]
        if k > 1:  # its own host and log file over the shared cinder.conf
            confs.append(os.path.join(c, f"cinder-volume{self.suffix(k)}.conf"))
            write_ini(confs[-1], {"DEFAULT": {"host": self.volume_host(k),
                                              "log_file": f"cinder-volume{self.suffix(k)}.log"}})
        program = [os.path.join(self.venvs["cinder"], "bin", "cinder-volume")]
        args = [arg for conf in confs for arg in ("--config-file", conf)]
        if fault_point:
            program = [os.path.join(self.venvs["cinder"], "bin", "python3"), "-P", FAULT_INJECTION, *program]
            # oslo.log names the log under log_dir after the outermost script: this one's
            args += ["--log-file", os.path.join(c, f"cinder-volume{self.suffix(k)}.log")]
        return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
                'mount --bind "$0" /etc/ceph && exec "$@"', self.path("etc-ceph"), *program, *args]

    @staticmethod
    def fault_env(fault_point):
        return {f"{FAULT_ENV}FAULT_POINT": fault_point, f"{FAULT_ENV}FAULT_ACTION": "killpg"} if fault_point else {}

    def restart_volume(self, timeout=120, services=None, extra_env=None, fault_point=None):
        """Restart cinder-volume services (all by default: after a change to cinder.conf),
        one after the other, as a rolling restart does; wait until each is up. extra_env:
        for the restarted processes only (a test runs another release's code through
        PYTHONPATH). fault_point: for tests only (volume_cmd); the next restart without it
        runs cinder-volume as usual."""
        self.load()
        self._etc_ceph()
        for k in services or range(1, self.volume_services() + 1):
            self._restart_one_volume(k, timeout, extra_env or {}, fault_point)

    def _restart_one_volume(self, k, timeout, extra_env, fault_point=None):
        c = self.path("cinder")
        try:
            stop_group(self.state["pgids"][self.volume_pgid_name(k)], STOP_GRACE)
        except PeerError as e:
            raise CloudError(f"cinder-volume: {e}") from None
        since, ready = time.time(), self.driver_ready(k)
        proc = self.spawn(self.volume_pgid_name(k), self.volume_cmd(k, fault_point),
                          os.path.join(c, f"volume{self.suffix(k)}.out"), cwd=c,
                          env=self.env(OS_CINDER_CONFIG_DIR=c, **extra_env, **self.fault_env(fault_point)))
        # up means a heartbeat from the new process: the old one's last report may still count
        wait_for(f"cinder-volume {self.volume_host(k)}",
                 lambda: self.driver_ready(k) > ready and self.volume_reported_since(since, k), timeout,
                 dead=lambda: proc.poll() is not None, log=os.path.join(c, f"cinder-volume{self.suffix(k)}.log"))

    def driver_ready(self, k=1):
        """cinder-volume's driver initialized (a driver that failed to set up leaves the
        service running, and `up`, but with every request failing)."""
        n = 0
        try:
            with open(self.path("cinder", f"cinder-volume{self.suffix(k)}.log"), errors="replace") as f:
                for line in f:
                    if "Driver post RPC initialization completed successfully" in line:
                        n += 1
        except OSError:
            pass
        return n

    def volume_reported_since(self, since, k=1):
        out = self.sql("SELECT UNIX_TIMESTAMP(updated_at) FROM cinder.services WHERE `binary`='cinder-volume' "
                       f"AND host LIKE '{self.volume_host(k)}@%' AND deleted=0;")
        stamps = [float(x) for x in out.split()[1:] if x not in ("NULL",)]
        return bool(stamps) and max(stamps) > since and self.volume_host(k) in self.volume_hosts_up()

    def set_clone(self, enabled):
        """enable_clone_optimization in the backend section, then restart cinder-volume."""
        self.load()
        conf = self.path("cinder", "cinder.conf")
        with open(conf) as f:
            text = f.read()
        new = re.sub(r"^enable_clone_optimization = \w+$",
                     f"enable_clone_optimization = {'true' if enabled else 'false'}", text, flags=re.M)
        with open(conf, "w") as f:
            f.write(new)
        self.restart_volume()

    def set_driver(self, upstream):
        """volume_driver in the backend section: upstream's RBDDriver, or ours (as the cloud
        starts); then restart cinder-volume. Nothing happens when it is that driver already."""
        self.load()
        conf = self.path("cinder", "cinder.conf")
        with open(conf) as f:
            text = f.read()
        driver = "cinder.volume.drivers.rbd.RBDDriver" if upstream else "cinder_ext.driver.RBDCloneUploadDriver"
        new = re.sub(r"^volume_driver = [\w.]+$", f"volume_driver = {driver}", text, flags=re.M)
        if new != text:
            with open(conf, "w") as f:
                f.write(new)
            self.restart_volume()

    # checks -------------------------------------------------------------------------------------
    def token(self, user="admin"):
        return password_token(self.state["keystone"], user)

    def services_up(self):
        token, project = self.token()
        req = urllib.request.Request(f"http://127.0.0.1:{self.state['ports']['cinder']}/v3/{project}/os-services",
                                     headers={"X-Auth-Token": token})
        with urllib.request.urlopen(req, timeout=30) as resp:
            services = json.load(resp)["services"]
        return {s["binary"] for s in services if s["state"] == "up"}

    def volume_hosts_up(self):
        """The hosts (cloud, cloud-2, ...) of the cinder-volume services reported up."""
        token, project = self.token()
        req = urllib.request.Request(f"http://127.0.0.1:{self.state['ports']['cinder']}/v3/{project}/os-services"
                                     "?binary=cinder-volume", headers={"X-Auth-Token": token})
        with urllib.request.urlopen(req, timeout=30) as resp:
            services = json.load(resp)["services"]
        return {s["host"].split("@")[0] for s in services if s["state"] == "up"}

    def status(self):
        st = self.load()
        out = {name: ("up" if group_members(pgid) else "down") for name, pgid in st.get("pgids", {}).items()}
        ceph = subprocess.run([os.path.join(HERE, "ceph-dev-cluster"), "status", self.path("ceph")],
                              capture_output=True, text=True, timeout=60)
        out["ceph"] = "up" if ceph.returncode == 0 else "down"
        try:
            out["cinder_services_up"] = sorted(self.services_up())
        except Exception as e:  # noqa: BLE001 - status reports, it does not fail on it
            out["cinder_services_up"] = f"unknown: {e}"
        return out

    def stop(self, quiet=False):
        if not quiet:
            self.load()
        pgids = self.state.get("pgids", {})
        # clients of the database and the bus first, then the bus, the database, epmd last
        volumes = sorted(n for n in pgids if n.startswith("cinder_volume"))
        order = ["cinder_api", *volumes, "cinder_scheduler", "frontdoor", "info_api", "glance",
                 "keystone", "rabbitmq", "mysql", "epmd"]
        for name in order + [n for n in pgids if n not in order]:
            if name in pgids:
                try:
                    stop_group(pgids[name], STOP_GRACE)
                except PeerError:  # reported below, once every other one is stopped
                    pass
        if os.path.exists(self.path("ceph", "cluster.json")):
            proc = subprocess.run([os.path.join(HERE, "ceph-dev-cluster"), "stop", self.path("ceph")],
                                  capture_output=True, text=True, timeout=120)
            if proc.returncode != 0 and not quiet:
                raise CloudError(f"ceph-dev-cluster stop: {last_line(proc.stderr)}")
        left = [n for n, p in pgids.items() if group_members(p)]
        if left and not quiet:
            raise CloudError(f"still running after stop: {', '.join(left)}")

    def env_lines(self):
        return cloudlib.env_vars(self.dir, self.load())


def build_venvs(release):
    """The project's venv and the series' peers (Keystone, Glance, Cinder; the clients), each
    built by its own tool unless current (well under a second each then)."""
    series = releases.SERIES[release]
    steps = [([os.path.join(ROOT, "tools", "setup-venv")], "tools/setup-venv"),
             ([os.path.join(HERE, "peers", "setup-peers"), releases.peer("keystone", release),
               releases.peer("glance", release), "clients"], "tools/peers/setup-peers"),
             ([os.path.join(HERE, "peers", "setup-cinder-peer"), series.cinder], "tools/peers/setup-cinder-peer")]
    for cmd, name in steps:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            # this machine's pip index notes are noise, not the reason
            raise CloudError(f"{name}: " + last_line("\n".join(
                ln for ln in proc.stderr.splitlines() if "is ignored" not in ln)))
    for name, venv in cloudlib.venvs(release).items():
        if not os.access(os.path.join(venv, "bin", "python"), os.X_OK):
            raise CloudError(f"the {name} virtualenv {venv} is missing after its set-up")


def install_packages():
    """Debian's mariadb-server, rabbitmq-server (and qemu-utils for Cinder's copy path) when
    missing. Installing them must not start the system's own MariaDB or RabbitMQ: a
    policy-rc.d that refuses every start is in place for the install (unless one is)."""
    missing = apt_missing(PACKAGES)
    if not missing:
        return
    policy = "/usr/sbin/policy-rc.d"
    ours = not os.path.exists(policy)
    try:
        if ours:
            with open(policy, "w") as f:
                f.write("#!/bin/sh\n# tools/cloud: no service starts while it installs packages\nexit 101\n")
            os.chmod(policy, 0o755)
        apt_install(missing)
    except PeerError as e:
        raise CloudError(str(e)) from None
    finally:
        if ours and os.path.exists(policy):
            os.remove(policy)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cloud", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", metavar="{start,stop,status,env}")
    s = sub.add_parser("start")
    s.add_argument("dir")
    s.add_argument("--timeout", type=float, default=150, help="seconds per service to come up")
    s.add_argument("--osds", type=int, choices=(1, 3), default=1,
                   help="Ceph OSDs; with 3, pools keep 3 replicas (min_size 2) (default 1)")
    s.add_argument("--volume-services", type=int, choices=(1, 2, 3), default=1,
                   help="cinder-volume services; more than 1: one active-active Cinder cluster (default 1)")
    s.add_argument("--release", choices=sorted(releases.SERIES), default=releases.NEWEST,
                   help=f"the OpenStack series of Keystone, Glance and Cinder (default {releases.NEWEST})")
    s.add_argument("--without-info-api", dest="info_api", action="store_false",
                   help="no glance-info-api: the catalog's image endpoint is Glance itself")
    s.add_argument("--single-store", action="store_true",
                   help="Glance single-store ([glance_store] default_store = rbd, no enabled_backends), "
                        "as devstack-plugin-ceph writes it; glance-info-api reports its store")
    for name in ("stop", "status", "env"):
        sub.add_parser(name).add_argument("dir")
    t = sub.add_parser("tempest", help="Tempest + cinder-tempest-plugin against the cloud (cloud_tempest.py)")
    t.add_argument("dir")
    t.add_argument("--regex")
    t.add_argument("--concurrency", type=int, default=2)
    t = sub.add_parser("tempest-ab", help="the volume tests with our driver, then upstream's RBDDriver: "
                       "the tests whose outcome differs (cloud_tempest.ab)")
    t.add_argument("dir")
    t.add_argument("--regex")
    t.add_argument("--concurrency", type=int, default=2)
    k = sub.add_parser("soak", help="a seeded random soak of users, admins and faults (tools/soak.py)")
    k.add_argument("dir")
    k.add_argument("--minutes", type=float, default=30)
    k.add_argument("--seed", type=int, default=1)
    k.add_argument("--faults", type=lambda v: v.split(","), metavar="KIND[,KIND]",
                   help="only these faults (default: all of " + ", ".join(f for f, _ in soak.FAULTS) + ")")
    c = sub.add_parser("clone", help="turn enable_clone_optimization on or off; restarts cinder-volume")
    c.add_argument("state", choices=("on", "off"))
    c.add_argument("dir")
    c = sub.add_parser("driver", help="volume_driver: ours or upstream's RBDDriver; restarts cinder-volume")
    c.add_argument("driver", choices=("ours", "upstream"))
    c.add_argument("dir")
    c = sub.add_parser("restart-volume", help="restart cinder-volume")
    c.add_argument("dir")
    c.add_argument("--fault-point", metavar="NAME[,NAME]",
                   help="tests only: cinder-volume runs through tests/fault_injection.py and is SIGKILLed "
                        "whole (its process group) at that cinder_ext.steps boundary")
    args = parser.parse_args(argv)
    if not args.command:
        print("cloud: a subcommand is required: start, stop, status or env", file=sys.stderr)
        return 2
    cloud = Services(args.dir)
    # a stop must not be cut short by a Ctrl-C during start either
    signal.signal(signal.SIGTERM, lambda *a: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        if args.command == "start":
            st = cloud.start(args.timeout, osds=args.osds, volume_services=args.volume_services,
                             release=args.release, info_api=args.info_api, single_store=args.single_store)
            print(f"cloud ready in {st['boot_seconds']} s: {cloud.path(STATE)}")
            print(f"  eval \"$(tools/cloud env {cloud.dir})\"; openstack volume list", file=sys.stderr)
        elif args.command == "stop":
            cloud.stop()
        elif args.command == "status":
            out = cloud.status()
            print(json.dumps(out, indent=2))
            return 0 if all(v == "up" for k, v in out.items() if k != "cinder_services_up") else 1
        elif args.command == "tempest":
            extra = ["--regex", args.regex] if args.regex else []
            return cloud_tempest.main([cloud.dir, "--concurrency", str(args.concurrency), *extra])
        elif args.command == "tempest-ab":
            out = cloud_tempest.ab(cloud.dir, cloud.set_driver, regex=args.regex or cloud_tempest.FULL,
                                   concurrency=args.concurrency)
            return 1 if out["differing"] else 0
        elif args.command == "clone":
            cloud.set_clone(args.state == "on")
        elif args.command == "driver":
            cloud.set_driver(args.driver == "upstream")
        elif args.command == "restart-volume":
            cloud.restart_volume(fault_point=args.fault_point)
        elif args.command == "soak":
            # cinder-volume's restart after a kill: tools/cloud's own, in this process
            unknown = set(args.faults or ()) - {f for f, _ in soak.FAULTS}
            if unknown:
                raise CloudError(f"no such fault: {', '.join(sorted(unknown))} (the faults: "
                                 f"{', '.join(f for f, _ in soak.FAULTS)})")
            return soak.main(cloud.dir, args.minutes, args.seed, faults=args.faults,
                             restart_volume=lambda k: cloud.restart_volume(services=[k]))
        elif args.command == "env":
            for k, v in cloud.env_lines().items():
                print(f"export {k}='{v}'")
    except CloudError as e:
        print(f"cloud: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cloud: interrupted; stopped what had started", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
