"""The audit's pure parts: Ceph cap grammar, pool access, findings, config reading, CLI errors."""

import json
import os
import subprocess
import sys

import pytest

from cinder_ext import audit
from cinder_ext.audit import NONE, READ, WRITE, CapsError, parse_caps, pool_access

# the caps the install guide gives operators (doc/source/install/ceph.rst)
CAPS_DOC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                        "doc", "source", "install", "ceph.rst")
DOC_CINDER_OSD = "profile rbd pool=volumes, profile rbd pool=images"
DOC_GLANCE_OSD = "profile rbd pool=images, profile rbd-read-only pool=volumes"
DOC_MON = "profile rbd"


def test_the_documented_caps_are_the_audited_ones():
    with open(CAPS_DOC) as f:
        doc = f.read()
    for user, osd in (("client.cinder", DOC_CINDER_OSD), ("client.glance", DOC_GLANCE_OSD)):
        row = doc[doc.index(f"``{user}``"):]
        assert row.split("\n")[1:3] == [f"     - ``{DOC_MON}``", f"     - ``{osd}``"], user
    assert findings(caps()) == []


# -- grammar ---------------------------------------------------------------------------------

def test_profiles_with_pools():
    g = parse_caps(DOC_GLANCE_OSD)
    assert [(x.profile, x.pool) for x in g] == [("rbd", "images"), ("rbd-read-only", "volumes")]


@pytest.mark.parametrize("text,perms,pool,ns", [
    ("allow r", {"r"}, None, None),
    ("allow rwx pool=images", {"r", "w", "x"}, "images", None),
    ("allow rwx pool images", {"r", "w", "x"}, "images", None),
    ("allow rw pool = images namespace = ns1", {"r", "w"}, "images", "ns1"),
    ("allow pool=images rwx", {"r", "w", "x"}, "images", None),
    ('allow rwx pool="my pool"', {"r", "w", "x"}, "my pool", None),
    ("allow *", {"*"}, None, None),
    ("allow r class-read pool=volumes", {"r", "class-read"}, "volumes", None),
    ("allow   rwx    pool=a", {"r", "w", "x"}, "a", None),
])
def test_allow_grants(text, perms, pool, ns):
    (g,) = parse_caps(text)
    assert g.profile is None and set(g.perms) == perms and g.pool == pool and g.namespace == ns


def test_separators_and_older_spellings():
    grants = parse_caps("allow profile rbd; profile=rbd-read-only pool=v,allow class-read "
                        "object_prefix rbd_children , allow rwx tag rbd *=*")
    assert [g.profile for g in grants] == ["rbd", "rbd-read-only", None, None]
    assert grants[2].object_prefix == "rbd_children" and grants[2].perms == {"class-read"}
    assert grants[3].tag == ("rbd", "*", "*")


def test_mon_command_grants_are_restricted():
    (g,) = parse_caps('allow command "osd blocklist"')
    assert g.restricted


@pytest.mark.parametrize("caps", [None, "", "   "])
def test_empty_caps(caps):
    assert parse_caps(caps) == []


@pytest.mark.parametrize("bad", ["rwx pool=a", "allow", "allow rwx pool", "allow rwx pool=a pool=b",
                                 "allow q", "profile", 'allow rwx pool="open', "allow rwx tag rbd",
                                 "allow rwx, ,profile rbd"])
def test_grammar_errors(bad):
    with pytest.raises(CapsError):
        parse_caps(bad)


# -- what a client can do in a pool ----------------------------------------------------------

@pytest.mark.parametrize("osd,pool,level", [
    (DOC_CINDER_OSD, "volumes", WRITE),
    (DOC_CINDER_OSD, "images", WRITE),
    (DOC_GLANCE_OSD, "images", WRITE),
    (DOC_GLANCE_OSD, "volumes", READ),
    (DOC_GLANCE_OSD, "vms", NONE),
    ("allow rwx pool=images", "images", WRITE),
    ("allow rw pool=images", "images", NONE),        # no class methods: librbd cannot open an image
    ("allow r pool=images", "images", NONE),
    ("allow r class-read pool=images", "images", READ),
    ("allow rx pool=images", "images", READ),
    ("allow rw class-read class-write pool=images", "images", WRITE),
    ("allow *", "anything", WRITE),
    ("profile rbd", "anything", WRITE),
    ("profile rbd pool=images namespace=ns1", "images", NONE),  # not the default namespace
    ("profile rbd pool=images namespace=*", "images", WRITE),
    ("allow rwx object_prefix rbd_data", "images", NONE),
    ("allow rwx tag rbd *=*", "images", WRITE),
    ("allow rwx tag cephfs data=fs", "images", NONE),
    ("allow r pool=images, allow rwx pool=images", "images", WRITE),
    ("", "images", NONE),
])
def test_pool_access(osd, pool, level):
    assert pool_access(parse_caps(osd), pool) == level


# -- findings ----------------------------------------------------------------------------------

GLANCE = {"service": "glance", "section": "ceph", "pool": "images", "user": "glance"}
CINDER = {"service": "cinder", "section": "ceph", "pool": "volumes", "user": "cinder", "clone": True}
CLUSTER = {"require_min_compat_client": "mimic", "pools": ["images", "volumes"]}


def caps(glance_osd=DOC_GLANCE_OSD, cinder_osd=DOC_CINDER_OSD, mon="profile rbd", **more):
    out = {"glance": {"mon": mon, "osd": glance_osd}, "cinder": {"mon": mon, "osd": cinder_osd}}
    out.update(more)
    return out


def findings(c=None, cluster=CLUSTER, entries=(GLANCE, CINDER), allowed=()):
    return audit.analyse([dict(e) for e in entries], c or caps(), cluster, allowed)[1]


def kinds(fs):
    return sorted(((f["kind"], f["user"], f["pool"]) for f in fs),
                  key=lambda t: tuple(x or "" for x in t))


def test_the_readmes_caps_are_clean():
    needs, fs = audit.analyse([GLANCE, CINDER], caps(), CLUSTER)
    assert fs == []
    assert needs["glance"]["volumes"]["level"] == "read"
    assert needs["cinder"]["images"]["level"] == "write"


def test_with_mgr_caps_as_the_dev_cluster_grants_them():
    c = caps()
    c["cinder"]["mgr"] = DOC_CINDER_OSD
    c["glance"]["mgr"] = "profile rbd pool=images"
    assert findings(c) == []


def test_cinder_cannot_write_the_glance_pool():
    fs = findings(caps(cinder_osd="profile rbd pool=volumes, profile rbd-read-only pool=images"))
    assert kinds(fs) == [("missing", "client.cinder", "images")]
    assert "client.cinder cannot write pool images" in fs[0]["message"]
    assert "profile rbd pool=images" in fs[0]["message"]


def test_glance_cannot_read_the_cinder_pool():
    fs = findings(caps(glance_osd="profile rbd pool=images"))
    assert kinds(fs) == [("missing", "client.glance", "volumes")]
    assert "cannot read pool volumes" in fs[0]["message"]


def test_glance_with_only_read_on_its_own_pool():
    fs = findings(caps(glance_osd="profile rbd-read-only pool=images, profile rbd-read-only pool=volumes"))
    assert kinds(fs) == [("missing", "client.glance", "images")]


def test_namespace_grant_does_not_cover_the_pool_and_says_so():
    fs = findings(caps(glance_osd="profile rbd pool=images namespace=glance, "
                                  "profile rbd-read-only pool=volumes"))
    assert kinds(fs) == [("missing", "client.glance", "images")]
    assert "namespace" in fs[0]["message"]


def test_allow_star_everywhere():
    fs = findings(caps(glance_osd="allow *", mon="allow *"))
    got = kinds(fs)
    assert ("excess", "client.glance", None) in got
    msgs = " | ".join(f["message"] for f in fs if f["user"] == "client.glance")
    assert "osd 'allow *'" in msgs and "mon 'allow *'" in msgs
    # glance's 'allow *' also writes the Cinder pool, where read is enough
    assert ("excess", "client.glance", "volumes") in got


def test_rwx_without_pool_restriction():
    fs = findings(caps(cinder_osd="allow rwx"))
    assert kinds(fs) == [("excess", "client.cinder", None)]
    assert "no pool restriction" in fs[0]["message"]


def test_write_where_read_is_enough():
    fs = findings(caps(glance_osd="profile rbd pool=images, profile rbd pool=volumes"))
    assert kinds(fs) == [("excess", "client.glance", "volumes")]
    assert "where read is enough" in fs[0]["message"]


def test_without_the_optimization_cinder_only_reads_the_glance_pool():
    cinder = dict(CINDER, clone=False)
    fs = findings(entries=(GLANCE, cinder))
    # the documented caps are for the optimization: without it they are more than needed
    assert kinds(fs) == [("excess", "client.cinder", "images"), ("excess", "client.glance", "volumes")]
    assert findings(caps(glance_osd="profile rbd pool=images",
                         cinder_osd="profile rbd pool=volumes, profile rbd-read-only pool=images"),
                    entries=(GLANCE, cinder)) == []


def test_unrelated_pools_unless_allowed():
    c = caps(cinder_osd=DOC_CINDER_OSD + ", profile rbd pool=vms")
    fs = findings(c)
    assert kinds(fs) == [("excess", "client.cinder", "vms")]
    assert findings(c, allowed=["vms"]) == []


def test_mon_caps():
    assert kinds(findings(caps(mon=""))) == [("missing", "client.cinder", None),
                                            ("missing", "client.glance", None)]
    fs = findings(caps(mon="allow r"))
    assert all("blocklist" in f["message"] for f in fs) and len(fs) == 2
    assert findings(caps(mon='allow r, allow command "osd blocklist"')) == []
    fs = findings(caps(mon="profile rbd, allow rw"))
    assert kinds(fs) == [("excess", "client.cinder", None), ("excess", "client.glance", None)]


def test_user_missing_in_the_cluster():
    c = caps()
    c["glance"] = None
    fs = findings(c)
    assert [f["message"] for f in fs] == ["client.glance does not exist in the cluster"]


def test_unparsable_caps_are_a_finding_not_a_crash():
    fs = findings(caps(glance_osd="allow sideways"))
    assert kinds(fs) == [("missing", "client.glance", None)]
    assert "cannot be parsed" in fs[0]["message"]


@pytest.mark.parametrize("release", ["luminous", "jewel", "", None])
def test_clone_v2_unavailable(release):
    fs = findings(cluster=dict(CLUSTER, require_min_compat_client=release))
    assert [f["kind"] for f in fs] == ["cluster"]
    assert "clone v2 is unavailable" in fs[0]["message"]


@pytest.mark.parametrize("release", ["mimic", "reef", "squid"])
def test_clone_v2_available(release):
    assert findings(cluster=dict(CLUSTER, require_min_compat_client=release)) == []


def test_missing_pool():
    fs = findings(cluster=dict(CLUSTER, pools=["volumes"]))
    assert kinds(fs) == [("cluster", "glance", "images")]
    assert "pool images of glance 'ceph' does not exist" in fs[0]["message"]


# -- deployment tools' own caps ---------------------------------------------------------------

# devstack-plugin-ceph (lib/cephadm build_caps): every user, every pool it created
DEVSTACK_OSD = ("allow class-read object_prefix rbd_children, allow rwx pool=images, "
                "allow rwx pool=volumes, allow rwx pool=vms, allow rwx pool=backups")
DEVSTACK_CLUSTER = {"require_min_compat_client": "mimic",
                    "pools": ["images", "volumes", "vms", "backups"]}


def _tool_hints(fs):
    return {f["user"]: f["message"] for f in fs if f["kind"] == "tool"}


def _fix(hint, entity):
    """The grants of the `ceph auth caps` a hint gives, as sets (order is Ceph's business)."""
    import re
    m = re.search(rf"ceph auth caps {entity} mon '([^']*)' osd '([^']*)'", hint)
    assert m, hint
    return {g.text for g in parse_caps(m.group(1))}, {g.text for g in parse_caps(m.group(2))}


def _doc(osd):
    return {g.text for g in parse_caps(DOC_MON)}, {g.text for g in parse_caps(osd)}


def test_devstacks_caps_are_named_with_the_fix():
    c = {u: {"mon": "allow r", "osd": DEVSTACK_OSD, "mgr": "allow rw"} for u in ("glance", "cinder")}
    fs = findings(c, cluster=DEVSTACK_CLUSTER)
    hints = _tool_hints(fs)
    assert set(hints) == {"client.glance", "client.cinder"}
    assert "devstack-plugin-ceph" in hints["client.glance"]
    # the fix is exactly the documented caps (doc/source/install/ceph.rst)
    assert _fix(hints["client.glance"], "client.glance") == _doc(DOC_GLANCE_OSD)
    assert _fix(hints["client.cinder"], "client.cinder") == _doc(DOC_CINDER_OSD)
    # the findings themselves are unchanged: excess on vms and backups, write on volumes
    assert ("excess", "client.glance", "volumes") in kinds(fs)


def test_helms_caps_are_named_with_the_fix():
    fs = findings(caps(glance_osd="profile rbd", cinder_osd="profile rbd"))
    hints = _tool_hints(fs)
    assert set(hints) == {"client.glance", "client.cinder"}
    assert "OpenStack-Helm" in hints["client.cinder"] and "storage-init" in hints["client.cinder"]
    assert _fix(hints["client.cinder"], "client.cinder") == _doc(DOC_CINDER_OSD)
    assert _fix(hints["client.glance"], "client.glance") == _doc(DOC_GLANCE_OSD)


def test_no_tool_named_for_clean_or_other_caps():
    assert _tool_hints(findings(caps())) == {}
    # excess, but no tool's pattern: no guess
    assert _tool_hints(findings(caps(cinder_osd="allow *"))) == {}
    assert _tool_hints(findings(caps(glance_osd="profile rbd pool=images, profile rbd pool=volumes"))) == {}


def test_a_tools_caps_without_excess_get_no_hint():
    # devstack's grant pattern narrowed by hand to exactly the pools Cinder needs (and
    # mon 'allow r'): nothing in excess, so no tool is named, whatever the pattern
    c = {"cinder": {"mon": "allow r, allow command \"osd blocklist\"",
                    "osd": "allow class-read object_prefix rbd_children, "
                           "allow rwx pool=images, allow rwx pool=volumes"},
         "glance": {"mon": "profile rbd", "osd": DOC_GLANCE_OSD}}
    fs = findings(c)
    assert not [f for f in fs if f["kind"] == "excess"], fs
    assert _tool_hints(fs) == {}


def test_one_user_for_both_sides_needs_the_union():
    both = [dict(GLANCE, user="openstack"), dict(CINDER, user="openstack")]
    c = {"openstack": {"mon": "profile rbd", "osd": DOC_CINDER_OSD}}
    assert findings(c, entries=both) == []


# -- reading the configs -----------------------------------------------------------------------

def test_glance_stores_from_an_operators_config(glance_conf):
    (store,) = audit.glance_stores(glance_conf())
    assert store == {"service": "glance", "section": "ceph", "pool": "images", "user": "glance",
                     "ceph_conf": store["ceph_conf"]}


def test_glance_store_user_unset_is_admin(glance_conf):
    (store,) = audit.glance_stores(glance_conf(ceph={"rbd_store_user": None}))
    assert store["user"] == "admin"


def test_glance_config_without_rbd(glance_conf):
    path = glance_conf(DEFAULT={"enabled_backends": "fast:file"}, glance_store={"default_backend": "fast"})
    with pytest.raises(audit.AuditError, match="no RBD store in"):
        audit.glance_stores(path)


def _cinder_conf(tmp_path, text):
    path = tmp_path / "cinder.conf"
    path.write_text(text)
    return str(path)


def test_cinder_backends(tmp_path):
    path = _cinder_conf(tmp_path, """[DEFAULT]
enabled_backends = lvm, ceph, ceph2
[lvm]
volume_driver = cinder.volume.drivers.lvm.LVMVolumeDriver
[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
rbd_pool = volumes
rbd_user = cinder
rbd_secret_uuid = 457eb676-33da-42ec-9a8c-9293d545c337
enable_clone_optimization = true
[ceph2]
rbd_pool = fast
""")
    got = audit.cinder_backends(path)
    assert [(b["section"], b["pool"], b["user"], b["clone"]) for b in got] == [
        ("ceph", "volumes", "cinder", True), ("ceph2", "fast", "admin", False)]
    assert "457eb676" not in json.dumps(got)  # the secret uuid is never carried


def test_cinder_config_errors(tmp_path):
    with pytest.raises(audit.AuditError, match="no backend in"):
        audit.cinder_backends(_cinder_conf(tmp_path, "[DEFAULT]\n"))
    with pytest.raises(audit.AuditError, match="cannot read .*enable_clone_optimization"):
        audit.cinder_backends(_cinder_conf(tmp_path, "[DEFAULT]\nenabled_backends = c\n[c]\n"
                                                     "rbd_pool = v\nenable_clone_optimization = maybe\n"))
    with pytest.raises(audit.AuditError, match="--cinder-config .*No such file"):
        audit.cinder_backends(str(tmp_path / "absent.conf"))


# -- command line ------------------------------------------------------------------------------

def _cli(*args):
    return subprocess.run([sys.executable, "-m", "cinder_ext.audit", *args], capture_output=True,
                          text=True, timeout=60)


@pytest.mark.parametrize("args,needle", [
    ((), "both --glance-config and --cinder-config are required"),
    (("--glance-config", "/nonexistent/g.conf", "--cinder-config", "/nonexistent/c.conf"),
     "--glance-config /nonexistent/g.conf: No such file or directory"),
    (("--bogus",), "unrecognized arguments: --bogus"),
    (("--timeout", "x"), "invalid int value"),
])
def test_usage_errors_are_one_line_and_exit_2(args, needle):
    proc = _cli(*args)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert len(proc.stderr.strip().splitlines()) == 1 and needle in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stderr


def test_add_subparser_wires_into_a_cli():
    import argparse
    parser = argparse.ArgumentParser()
    parser.add_argument("--config-file", action="append")
    sub = parser.add_subparsers(dest="command")
    audit.add_subparser(sub)
    args = parser.parse_args(["--config-file", "c.conf", "audit", "--glance-config", "g.conf", "--json"])
    assert args.func is audit.run and args.json and args.glance_config == "g.conf"
    assert args.cinder_config is None and args.config_file == ["c.conf"]


def test_table_format():
    report = {"cluster": {"fsid": "f", "require_min_compat_client": "mimic", "pools": ["images"]},
              "entries": [{"service": "glance", "section": "ceph", "pool": "images",
                           "user": "client.glance", "caps": {"mon": "profile rbd", "osd": "x"},
                           "needs": {"images": {"level": "write", "why": ["own"]}}}],
              "findings": [{"kind": "excess", "user": "client.glance", "pool": None, "message": "m"}]}
    text = audit.format_table(report)
    assert "client.glance" in text and "mon: profile rbd" in text and "write images" in text
    assert "FINDINGS (1)" in text and "excess   m" in text
