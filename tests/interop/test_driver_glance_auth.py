"""The driver's privileged Glance calls (the stores detail) inside Cinder 29: Cinder's own
client, with the [glance] credentials loaded once per process, not a Keystone password
login per call (Cinder's privileged path loads its auth plugin anew for every client; in a
burst of 16 uploads on tools/cloud those logins made the fetch take 1.5-4 s). The image
calls keep the user's own context. Run with the cinder29 peer's python; Glance's client is
replaced by a recorder (what is checked is which credentials each call would carry)."""

import json
import subprocess

import pytest

from tests.cinder_peer import cinder29  # noqa: F401  (fixture)

pytestmark = pytest.mark.interop

SCRIPT = r'''
import json, sys
from cinder_ext import driver  # first: it loads Cinder's modules in their one working order
from oslo_config import cfg
from cinder import context as cinder_context

cfg.CONF(["--config-file", sys.argv[1]], project="cinder", default_config_files=[])

calls = []

class Recorder:
    def call(self, context, method, *args, privileged_user=False, **kwargs):
        calls.append({"method": method, "privileged_user": privileged_user,
                      "same_context": context is user_context,
                      "plugin": id(context.get_auth_plugin()) if context.user_auth_plugin else None,
                      "user_token": context.auth_token})
        return {"id": "x", "stores": []}

user_context = cinder_context.RequestContext("user", "project", auth_token="user-token")
for _ in range(2):  # two uploads: two CinderGlance objects
    g = driver.CinderGlance(user_context, image_service=None)
    g.client = Recorder()
    g.stores_detail()
    g.get_image("x")
print(json.dumps(calls))
'''


# the [glance] section as an operator writes it for Keystone (nothing listens there: no
# call reaches Glance or Keystone, the recorder answers)
GLANCE_PASSWORD = """[glance]
auth_type = password
auth_url = http://127.0.0.1:9/v3
username = cinder
password = secret
user_domain_name = Default
project_name = service
project_domain_name = Default
"""


# no [glance] credentials (Cinder 26 has no such options) but Cinder's service user, as
# operators configure it to send service tokens
SERVICE_USER_ONLY = GLANCE_PASSWORD.replace("[glance]", "[service_user]\nsend_service_user_token = true")


@pytest.mark.parametrize("auth", ["password", "service_user", "none"])
def test_stores_detail_with_the_glance_credentials_loaded_once(cinder29, auth, tmp_path):  # noqa: F811
    conf = tmp_path / "cinder.conf"
    conf.write_text({"password": GLANCE_PASSWORD, "service_user": SERVICE_USER_ONLY, "none": "[glance]\n"}[auth])
    proc = subprocess.run([cinder29, "-c", SCRIPT, str(conf)], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    calls = json.loads(proc.stdout.strip().splitlines()[-1])
    detail = [c for c in calls if c["method"] == "get_stores_info_detail"]
    image = [c for c in calls if c["method"] == "get"]
    assert len(detail) == 2 and len(image) == 2
    # the image calls: the user's own context, never privileged
    assert all(c["same_context"] and not c["privileged_user"] for c in image), image
    if auth in ("password", "service_user"):
        # one plugin for both uploads (it keeps its token), on a copy of the user's context
        assert detail[0]["plugin"] is not None and detail[0]["plugin"] == detail[1]["plugin"], detail
        assert not any(c["same_context"] or c["privileged_user"] for c in detail), detail
    else:
        # no credentials of Cinder's own: Cinder's privileged path, exactly as before
        assert all(c["privileged_user"] and c["same_context"] for c in detail), detail
