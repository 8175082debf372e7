"""The upstream peers are real and usable: Glance 33 on the dev cluster, glanceclient, openstacksdk.

What is learnt here about Glance 33 (location API, policies, headers) is
written down in tests/peers.py's docstring.
"""

import hashlib
import json
import os
import re
import socket
import subprocess
import time

import pytest

from tests.peers import TOOLS

MiB = 1024 * 1024


def table_value(output, prop):
    """The Value cell of one property of glanceclient's print_dict table, wrapped lines joined."""
    rows = [line.split("|") for line in output.splitlines() if line.startswith("|")]
    value, current = [], None
    for row in rows:
        if len(row) < 4:
            continue
        name, cell = row[1].strip(), row[2].strip()
        current = name or current
        if current == prop:
            value.append(cell)
    assert value, f"no '{prop}' row in:\n{output}"
    return "".join(value)


def wait_for(fetch, done, timeout, what):
    """Poll fetch() until done(value); fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = fetch()
        if done(value):
            return value
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout}s waiting for {what}; last seen: {value!r:.600}")
        time.sleep(0.5)


def rbd_names(ceph_cluster, pool):
    return set(ceph_cluster.admin("rbd", "ls", "-p", pool).split())


def make_rbd_snapshot(ceph_cluster, tmp_path, pool, name, data):
    """An rbd image holding `data` with a protected snapshot 'snap', as Cinder's clone leaves it."""
    src = tmp_path / f"{name}.raw"
    src.write_bytes(data)
    ceph_cluster.admin("rbd", "import", "--image-format", "2", str(src), f"{pool}/{name}")
    ceph_cluster.admin("rbd", "snap", "create", f"{pool}/{name}@snap")
    ceph_cluster.admin("rbd", "snap", "protect", f"{pool}/{name}@snap")


def test_glance_cli_uploads_to_rbd_and_downloads_the_same_bytes(glance_peer, peer_clients, ceph_cluster, tmp_path):
    data = os.urandom(3 * MiB + 12345)  # not a multiple of the 8 MiB rbd chunk nor of glanceclient's
    src, dst = tmp_path / "in.raw", tmp_path / "out.raw"
    src.write_bytes(data)

    # glanceclient streams --file chunked; the peer's gunicorn must decode that
    created = peer_clients.run_glance("image-create", "--name", "cli-upload", "--disk-format", "raw",
                                      "--container-format", "bare", "--file", str(src), url=glance_peer.url)
    assert created.returncode == 0, created.stderr
    image_id = table_value(created.stdout, "id")
    assert table_value(created.stdout, "status") == "active"
    assert table_value(created.stdout, "stores") == "ceph"  # the default store, though not listed first
    assert int(table_value(created.stdout, "size")) == len(data)
    assert table_value(created.stdout, "checksum") == hashlib.md5(data).hexdigest()

    with open(os.path.join(glance_peer.dir, "access.log")) as f:
        puts = [line for line in f if f'"PUT /v2/images/{image_id}/file ' in line]
    assert len(puts) == 1 and " 204 " in puts[0] and "te=chunked" in puts[0], puts

    image = glance_peer.request("GET", f"/v2/images/{image_id}").json()
    assert image["direct_url"] == f"rbd://{ceph_cluster.fsid}/{ceph_cluster.glance_pool}/{image_id}/snap"
    assert image_id in rbd_names(ceph_cluster, ceph_cluster.glance_pool)
    snaps = json.loads(ceph_cluster.admin("rbd", "snap", "ls", "--format", "json",
                                          f"{ceph_cluster.glance_pool}/{image_id}"))
    assert [s["name"] for s in snaps] == ["snap"]

    downloaded = peer_clients.run_glance("image-download", "--file", str(dst), image_id, url=glance_peer.url)
    assert downloaded.returncode == 0, downloaded.stderr
    assert dst.read_bytes() == data

    # Glance (as the glance Ceph user) unprotects and removes what it stored
    deleted = peer_clients.run_glance("image-delete", image_id, url=glance_peer.url)
    assert deleted.returncode == 0, deleted.stderr
    assert image_id not in rbd_names(ceph_cluster, ceph_cluster.glance_pool)


def test_glance_cli_stores_info_lists_three_stores_with_ceph_default(glance_peer, peer_clients):
    out = peer_clients.run_glance("stores-info", url=glance_peer.url)
    assert out.returncode == 0, out.stderr
    stores = json.loads(table_value(out.stdout, "stores"))
    assert [s["id"] for s in stores] == ["fast", "ceph", "web"]
    assert [s["id"] for s in stores if s.get("default") == "true"] == ["ceph"]
    assert [s["id"] for s in stores if s.get("read-only") == "true"] == ["web"]
    assert all("type" not in s for s in stores)  # plain stores-info: no details


def test_stores_detail_from_upstream_code_matches_the_peer_and_the_live_cluster(
        glance_peer, upstream_stores_detail, peer_clients, ceph_cluster):
    offline = upstream_stores_detail(glance_peer.config_file)
    served = glance_peer.request("GET", "/v2/info/stores/detail")
    assert served.status == 200
    assert served.json() == offline

    stores = {s["id"]: s for s in offline["stores"]}
    assert list(stores) == ["fast", "ceph", "web"]
    assert {k: s["type"] for k, s in stores.items()} == {"fast": "file", "ceph": "rbd", "web": "http"}
    assert stores["ceph"]["default"] == "true"
    assert stores["ceph"]["properties"] == {"chunk_size": 8 * MiB, "pool": ceph_cluster.glance_pool,
                                            "thin_provisioning": False, "fsid": ceph_cluster.fsid}
    assert stores["fast"]["properties"]["data_dir"] == os.path.join(glance_peer.dir, "images")
    assert stores["web"]["properties"] == {}
    # upstream Glance 33 has no rbd `user` in the detail: that is our documented addition
    assert "user" not in stores["ceph"]["properties"]

    # the CLI reads the same detail (wrapping may split a value, not the fsid)
    out = peer_clients.run_glance("stores-info", "--detail", url=glance_peer.url)
    assert out.returncode == 0, out.stderr
    detail = json.loads(table_value(out.stdout, "stores"))
    assert [s["properties"].get("fsid") for s in detail if s["id"] == "ceph"] == [ceph_cluster.fsid]


def test_stores_detail_policy_is_admin_or_service(glance_peer):
    assert glance_peer.request("GET", "/v2/info/stores/detail", roles=("service",)).status == 200
    for roles in (("member",), ("reader",)):
        assert glance_peer.request("GET", "/v2/info/stores/detail", roles=roles).status == 403
        assert glance_peer.request("GET", "/v2/info/stores", roles=roles).status == 200


def test_openstacksdk_reads_the_peer(glance_peer, peer_clients, ceph_cluster):
    code = (
        "import json, sys, openstack\n"
        "url = sys.argv[1]\n"
        "conn = openstack.connect(auth_type='none', auth={'endpoint': url}, image_endpoint_override=url)\n"
        "print(json.dumps([[s.id, s.is_default, s.properties] for s in conn.image.stores(details=True)]))\n"
    )
    proc = peer_clients.run_python(code, glance_peer.url)
    assert proc.returncode == 0, proc.stderr
    stores = json.loads(proc.stdout)
    assert [s[0] for s in stores] == ["fast", "ceph", "web"]
    assert [s[0] for s in stores if s[1]] == ["ceph"]
    assert stores[1][2]["fsid"] == ceph_cluster.fsid


def test_service_role_adds_an_rbd_location_and_the_image_goes_active(glance_peer, ceph_cluster, tmp_path):
    """The call Cinder's clone path makes: POST /v2/images/{id}/locations with the service role."""
    project = "tenant-a"
    owner = dict(roles=("member",), project_id=project)
    created = glance_peer.request("POST", "/v2/images", {"name": "by-location", "disk_format": "raw",
                                                         "container_format": "bare"}, **owner)
    assert created.status == 201, created
    image_id = created.json()["id"]
    pool = ceph_cluster.glance_pool
    data = os.urandom(2 * MiB + 777)
    make_rbd_snapshot(ceph_cluster, tmp_path, pool, image_id, data)
    url = f"rbd://{ceph_cluster.fsid}/{pool}/{image_id}/snap"
    path = f"/v2/images/{image_id}/locations"

    # admin alone passes the policy but not Glance's in-code check: only a
    # caller with the service role may add a non-http location
    refused = glance_peer.request("POST", path, {"url": url}, headers={"Accept": "application/json"},
                                  roles=("admin",), project_id=project)
    assert refused.status == 403
    assert "http store must be enabled to use location API by normal user" in refused.json()["message"]
    assert glance_peer.request("POST", path, {"url": url}, **owner).status == 403

    # the owner's user token plus Cinder's service token, as keystonemiddleware passes them
    accepted = glance_peer.request("POST", path, {"url": url}, roles=("member",), project_id=project,
                                   service_roles=("service",))
    assert accepted.status == 202, accepted
    get_image = lambda: glance_peer.request("GET", f"/v2/images/{image_id}", **owner).json()  # noqa: E731
    image = wait_for(get_image, lambda i: i["status"] == "active", 60, "the image to go active")
    assert image["direct_url"] == url
    assert image["size"] == len(data)
    assert image["stores"] == "ceph"

    locations = glance_peer.request("GET", path, roles=("service",), project_id=project)
    assert locations.status == 200
    assert locations.json() == [{"url": url, "metadata": {"store": "ceph"}}]

    body = glance_peer.request("GET", f"/v2/images/{image_id}/file", **owner)
    assert body.status == 200 and body.body == data
    # do_secure_hash (default true): Glance reads the image after activating it to hash it
    image = wait_for(get_image, lambda i: i["checksum"], 60, "the checksum")
    assert image["checksum"] == hashlib.md5(data).hexdigest()
    assert image["os_hash_value"] == hashlib.sha512(data).hexdigest()

    # a location can only be added to a queued image
    again = glance_peer.request("POST", path, {"url": url}, roles=("member",), project_id=project,
                                service_roles=("service",))
    assert again.status == 409


def test_other_service_credentials_and_a_bad_url(glance_peer, ceph_cluster, tmp_path):
    project = "tenant-b"
    pool = ceph_cluster.glance_pool
    ids = []
    for name in ("service-only", "other-project", "admin-service", "missing-snapshot"):
        created = glance_peer.request("POST", "/v2/images", {"name": name, "disk_format": "raw",
                                                             "container_format": "bare"},
                                      roles=("member",), project_id=project)
        assert created.status == 201, created
        ids.append(created.json()["id"])
    service_only, other_project, admin_service, bad = ids
    for image_id in (service_only, other_project, admin_service):
        make_rbd_snapshot(ceph_cluster, tmp_path, pool, image_id, os.urandom(MiB))

    def add(image_id, roles, project_id):
        return glance_peer.request("POST", f"/v2/images/{image_id}/locations",
                                   {"url": f"rbd://{ceph_cluster.fsid}/{pool}/{image_id}/snap"},
                                   roles=roles, project_id=project_id)

    # a service-role token scoped to the owner's project
    assert add(service_only, ("service",), project).status == 202
    # service role alone from another project does not even see the (shared-visibility) image
    assert add(other_project, ("service",), "service-project").status == 404
    # a service user holding admin and service (devstack's Cinder user) may, from any project
    assert add(admin_service, ("admin", "service"), "service-project").status == 202
    for image_id in (service_only, admin_service):
        wait_for(lambda: glance_peer.request("GET", f"/v2/images/{image_id}").json(),
                 lambda i: i["status"] == "active", 60, f"image {image_id} to go active")
    assert glance_peer.request("GET", f"/v2/images/{other_project}").json()["status"] == "queued"

    # no such rbd image: still 202, then the location_import task fails and the image stays queued
    assert add(bad, ("service",), project).status == 202
    tasks = wait_for(lambda: glance_peer.request("GET", f"/v2/images/{bad}/tasks").json()["tasks"],
                     lambda ts: ts and all(t["status"] in ("failure", "success") for t in ts), 60,
                     "the location task to end")
    assert len(tasks) == 1
    task = tasks[0]
    assert (task["type"], task["status"]) == ("location_import", "failure")
    image = glance_peer.request("GET", f"/v2/images/{bad}").json()
    assert image["status"] == "queued" and image.get("direct_url") is None


# -- the tools' own behaviour ------------------------------------------------

def run_tool(*args):
    return subprocess.run([os.path.join(TOOLS, args[0]), *args[1:]], capture_output=True, text=True, timeout=300)


def one_line_error(proc, fragment):
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and fragment in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_glance_peer_refuses_bad_input_in_one_line(glance_peer, ceph_cluster, tmp_path):
    one_line_error(run_tool("glance-peer", "start", str(tmp_path / "a"), "--ceph-dir", str(tmp_path / "nope")),
                   "no dev Ceph cluster")
    one_line_error(run_tool("glance-peer", "start", glance_peer.dir, "--ceph-dir", ceph_cluster.dir),
                   "a peer already runs from")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    one_line_error(run_tool("glance-peer", "start", str(tmp_path / "full"), "--ceph-dir", ceph_cluster.dir),
                   "is not an empty directory")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        one_line_error(run_tool("glance-peer", "start", str(tmp_path / "b"), "--ceph-dir", ceph_cluster.dir,
                                "--port", str(port)), f"port {port} on 127.0.0.1 is already in use")
    one_line_error(run_tool("glance-peer", "start", str(tmp_path / "c"), "--ceph-dir", ceph_cluster.dir,
                            "--set", "nodot"), "--set wants SECTION.OPTION=VALUE")
    one_line_error(run_tool("upstream-stores-detail", str(tmp_path / "none.conf")), "no such config file")


@pytest.fixture(scope="module")
def legacy_peer(glance_peers):
    """A second peer that exposes locations, for the pre-2024.2 PATCH path."""
    return glance_peers.start(settings=("DEFAULT.show_multiple_locations=true",))


def legacy_add_location(peer, image_id, url, **identity):
    patch = [{"op": "add", "path": "/locations/-", "value": {"url": url, "metadata": {}}}]
    return peer.request("PATCH", f"/v2/images/{image_id}", json.dumps(patch).encode(),
                        headers={"Content-Type": "application/openstack-images-v2.1-json-patch"}, **identity)


def test_legacy_patch_location_needs_show_multiple_locations(glance_peer, legacy_peer, ceph_cluster, tmp_path):
    project = "tenant-c"
    pool = ceph_cluster.glance_pool
    for peer, expected in ((glance_peer, 403), (legacy_peer, 200)):
        created = peer.request("POST", "/v2/images", {"name": "legacy", "disk_format": "raw",
                                                      "container_format": "bare"},
                               roles=("member",), project_id=project)
        image_id = created.json()["id"]
        make_rbd_snapshot(ceph_cluster, tmp_path, pool, image_id, os.urandom(MiB))
        url = f"rbd://{ceph_cluster.fsid}/{pool}/{image_id}/snap"
        # the owner itself (policy set_image_location: admin or project member), no service role needed
        answer = legacy_add_location(peer, image_id, url, roles=("member",), project_id=project)
        assert answer.status == expected, answer
        if expected == 403:
            assert b"not allowed to add locations if locations are invisible" in answer.body
        else:  # synchronous: active in the answer itself
            assert answer.json()["status"] == "active"
            assert answer.json()["locations"] == [{"url": url, "metadata": {"store": "ceph"}}]


def test_glance_peer_stop_leaves_no_process(glance_peers):
    # its own peer: stopping the module's shared one breaks whichever test random order runs after this
    peer = glance_peers.start(settings=("DEFAULT.show_multiple_locations=true",))
    status = json.loads(run_tool("glance-peer", "status", peer.dir).stdout)
    assert status["running"] and status["answering"]
    assert re.search(r"^show_multiple_locations = true$", open(peer.config_file).read(), re.M)
    pid = status["pid"]
    peer.stop()
    assert [p for p in os.listdir("/proc") if p.isdigit() and _live_pgid(int(p)) == pid] == []
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", status["port"]), timeout=2).close()
    assert run_tool("glance-peer", "status", peer.dir).returncode == 3


def _live_pgid(pid):
    """The process group of a live process; None for a zombie (this VM's init reaps late) or a gone one."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else int(fields[2])
    except (OSError, IndexError, ValueError):
        return None
