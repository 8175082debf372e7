"""Start-up: the operator's glance-api.conf as is; any unusable setting is one line, never a traceback."""

import json
import os
import socket
import subprocess
import sys
import textwrap
import urllib.request

import pytest

from tests.info_api import CONSOLE_SCRIPT, InfoAPI, InfoAPIError

TIMEOUT = 60


def run_script(*args, timeout=TIMEOUT):
    return subprocess.run([CONSOLE_SCRIPT, *args], capture_output=True, text=True, timeout=timeout)


def assert_one_line_error(proc, *fragments):
    assert proc.returncode == 1, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr + proc.stdout
    errors = [line for line in proc.stderr.splitlines() if line.startswith("glance-info-api: ")]
    assert len(errors) == 1, proc.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]
    return errors[0]


@pytest.mark.parametrize("sections, fragments", [
    ({"glance_info_api": {"bind_port": "ninety"}},
     ["invalid value for [glance_info_api] bind_port", "{conf}"]),
    ({"DEFAULT": {"auth_strategy": "ldap"}}, ["invalid value for [DEFAULT] auth_strategy", "{conf}"]),
    ({"DEFAULT": {"enabled_backends": "fast:file, ceph"}},
     ["invalid value for [DEFAULT] enabled_backends", "{conf}"]),
    ({"DEFAULT": {"enabled_backends": "fast:file, ceph:rbd, tape:tape"}},
     ["[DEFAULT] enabled_backends", "{conf}", "unknown type 'tape'"]),
    ({"DEFAULT": {"enabled_backends": "fast:file, ceph:rbd, os_glance_x:file"}},
     ["enabled_backends", "os_glance_x", "{conf}"]),
    ({"glance_store": {"default_backend": None}}, ["missing setting [glance_store] default_backend", "{conf}"]),
    ({"glance_store": {"default_backend": "slow"}},
     ["invalid value for [glance_store] default_backend", "{conf}", "'slow'"]),
    ({"ceph": {"rbd_store_chunk_size": "eight"}}, ["invalid value for [ceph] rbd_store_chunk_size", "{conf}"]),
    ({"fast": {"weight": "heavy"}}, ["invalid value for [fast] weight", "{conf}"]),
    ({"DEFAULT": {"auth_strategy": "keystone"}}, ["missing setting [keystone_authtoken] auth_type", "{conf}"]),
    ({"DEFAULT": {"auth_strategy": "keystone"},
      "keystone_authtoken": {"auth_type": "password", "http_connect_timeout": "soon"}},
     ["invalid value for [keystone_authtoken] http_connect_timeout", "{conf}"]),
    ({"oslo_policy": {"enforce_new_defaults": "maybe"}},
     ["invalid value for [oslo_policy] enforce_new_defaults", "{conf}"]),
])
def test_unusable_setting_is_one_line_naming_option_and_file(glance_conf, sections, fragments):
    conf = glance_conf(**sections)
    proc = run_script("--config-file", conf)
    assert_one_line_error(proc, *(f.format(conf=conf) for f in fragments))


def test_missing_config_file(tmp_path):
    missing = str(tmp_path / "nope.conf")
    assert_one_line_error(run_script("--config-file", missing), "not found", missing)


def test_unparsable_config_file(tmp_path):
    bad = tmp_path / "bad.conf"
    bad.write_text("[DEFAULT\nbind_port = 1\n")
    assert_one_line_error(run_script("--config-file", str(bad)), str(bad))


def test_unknown_argument():
    proc = run_script("--no-such-flag")
    assert proc.returncode != 0 and "Traceback" not in proc.stderr


def test_busy_port_is_one_line(glance_conf):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        conf = glance_conf(glance_info_api={"bind_host": "127.0.0.1", "bind_port": port})
        assert_one_line_error(run_script("--config-file", conf), f"cannot listen on 127.0.0.1:{port}")


def test_unknown_options_of_the_real_glance_are_ignored(glance_conf, info_api_app):
    # glance_conf() carries [database], show_image_direct_url, workers: Glance's, not ours
    api = info_api_app(glance_conf(paste_deploy={"flavor": "keystone"}, image_format={"x": 1}))
    assert api.get("/v2/info/stores").status_int == 200


def test_console_script_serves_and_warns_about_noauth(glance_conf, tmp_path):
    with InfoAPI(glance_conf(), workdir=str(tmp_path)) as svc:
        with urllib.request.urlopen(svc.url + "/v2/info/stores") as resp:
            assert resp.status == 200
            assert [s["id"] for s in json.load(resp)["stores"]] == ["fast", "ceph", "web"]
            request_id = resp.headers["x-openstack-request-id"]
        log = svc.log()
    assert "WARNING glance.api.app" in log and "NO AUTHENTICATION" in log
    assert "Could not load" not in log  # drivers no store uses (cinder without os-brick) stay quiet
    # the access line carries the request id (oslo.log context)
    assert any(request_id in line and "GET /v2/info/stores" in line for line in log.splitlines())
    assert svc.proc.returncode == 0  # SIGTERM: clean stop


def test_factory_reports_a_service_that_cannot_start(glance_conf, tmp_path):
    with pytest.raises(InfoAPIError, match="bind_port|default_backend"):
        InfoAPI(glance_conf(glance_store={"default_backend": None}), workdir=str(tmp_path))


def _wsgi_env(config_dir):
    env = dict(os.environ, OS_GLANCE_CONFIG_DIR=config_dir)
    env.pop("PYTHONPATH", None)
    return env


WSGI_PROBE = textwrap.dedent("""
    import json, sys, webob
    from glance.wsgi.api import application
    resp = webob.Request.blank('/v2/info/stores').get_response(application)
    print(resp.status_int, json.dumps(resp.json))
""")


def test_wsgi_entry_point_reads_os_glance_config_dir(glance_conf, tmp_path):
    config_dir = tmp_path / "etc-glance"
    config_dir.mkdir()
    os.rename(glance_conf(), config_dir / "glance-api.conf")
    proc = subprocess.run([sys.executable, "-c", WSGI_PROBE], capture_output=True, text=True,
                          env=_wsgi_env(str(config_dir)), timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr
    status, body = proc.stdout.strip().splitlines()[-1].split(" ", 1)
    assert status == "200" and json.loads(body)["stores"][1] == {
        "id": "ceph", "description": "Ceph RBD", "default": "true"}


def test_wsgi_entry_point_with_bad_config_is_one_line(tmp_path):
    config_dir = tmp_path / "empty"
    config_dir.mkdir()
    proc = subprocess.run([sys.executable, "-c", WSGI_PROBE], capture_output=True, text=True,
                          env=_wsgi_env(str(config_dir)), timeout=TIMEOUT)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].startswith("glance-info-api: configuration error: ")
    assert str(config_dir / "glance-api.conf") in proc.stderr


def test_the_suite_never_uses_the_real_home(pytestconfig):
    # tests/conftest.py: every subprocess of the suite inherits a throwaway HOME
    home = os.environ["HOME"]
    assert home == pytestconfig.test_home != pytestconfig.real_home
    assert os.path.basename(home).startswith("tests-home-")
    assert os.environ["XDG_CACHE_HOME"].startswith(home)
