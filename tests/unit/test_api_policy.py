"""Policy in code: defaults, scope, policy.yaml overrides, the oslo.policy tools."""

import os
import subprocess
import sys

import pytest
from oslo_config import cfg
from oslo_context import context as oslo_context

from glance import policies
from glance.api import policy
from glance.common import config

BIN = os.path.dirname(sys.executable)


def enforcer(tmp_path, policy_yaml=None):
    conf = cfg.ConfigOpts()
    config.register_opts(conf)
    args = []
    if policy_yaml is not None:
        path = tmp_path / "policy.yaml"
        path.write_text(policy_yaml)
        args = ["--config-file", str(_conf_with_policy(tmp_path, path))]
    conf(args, project="glance-test", default_config_files=[])
    return policy.Enforcer(conf)


def _conf_with_policy(tmp_path, policy_file):
    path = tmp_path / "glance-api.conf"
    path.write_text(f"[oslo_policy]\npolicy_file = {policy_file}\n")
    return path


def ctx(*roles, **kw):
    return oslo_context.RequestContext(roles=list(roles), project_id=kw.pop("project_id", "p1"), **kw)


def allowed(enf, context):
    try:
        enf.authorize(context, "stores_info_detail")
        return True
    except policy.Forbidden:
        return False


def test_rule_is_documented_project_scoped_admin_or_service():
    rules = {r.name: r for r in policies.list_rules()}
    rule = rules["stores_info_detail"]
    assert rule.scope_types == ["project"]
    assert rule.operations == [{"path": "/v2/info/stores/detail", "method": "GET"}]
    # named as in Glance 33, resolving to role:admin or role:service
    assert rule.check_str == "rule:context_is_admin or rule:service_api"
    assert rules["context_is_admin"].check_str == "role:admin"
    assert rules["service_api"].check_str == "role:service or role:admin"


@pytest.mark.parametrize("roles, ok", [
    (["admin"], True), (["service"], True), (["member", "service"], True), (["reader", "admin"], True),
    (["member"], False), (["reader"], False), ([], False), (["Admin"], True),  # oslo.policy: any case
])
def test_defaults(tmp_path, roles, ok):
    assert allowed(enforcer(tmp_path), ctx(*roles)) is ok


def test_system_scoped_admin_is_denied(tmp_path):
    assert not allowed(enforcer(tmp_path), ctx("admin", project_id=None, system_scope="all"))


def test_service_role_only_as_service_token_role_is_not_enough(tmp_path):
    # X-Service-Roles alone (a user token + service token) does not make a service caller, as upstream
    assert not allowed(enforcer(tmp_path), ctx("member", service_roles=["service"]))


def test_policy_yaml_overrides_the_rule(tmp_path):
    enf = enforcer(tmp_path, '"stores_info_detail": "role:member"\n')
    assert allowed(enf, ctx("member"))
    assert not allowed(enf, ctx("admin"))


def test_policy_yaml_redefining_glances_base_rules_applies(tmp_path):
    # an operator's Glance policy that names its cloud admin role means the same here
    enf = enforcer(tmp_path, '"context_is_admin": "role:cloud-admin"\n"service_api": "role:service"\n')
    assert allowed(enf, ctx("cloud-admin"))
    assert not allowed(enf, ctx("admin"))


def test_unregistered_action_is_an_error(tmp_path):
    from oslo_policy import policy as oslo_policy
    with pytest.raises(oslo_policy.PolicyNotRegistered):
        enforcer(tmp_path).authorize(ctx("admin"), "get_images")


def test_policy_yaml_override_reaches_the_api(glance_conf, info_api_app, tmp_path):
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text('"stores_info_detail": "role:reader"\n')
    api = info_api_app(glance_conf(oslo_policy={"policy_file": str(policy_file)}))
    assert api.get("/v2/info/stores/detail", roles=["reader"]).status_int == 200
    assert api.get("/v2/info/stores/detail", roles=["admin"]).status_int == 403


def test_policy_generator_tools_find_the_entry_points():
    sample = subprocess.run([os.path.join(BIN, "oslopolicy-sample-generator"), "--namespace", "glance"],
                            capture_output=True, text=True, timeout=60)
    assert sample.returncode == 0, sample.stderr
    assert '#"stores_info_detail": "rule:context_is_admin or rule:service_api"' in sample.stdout
    effective = subprocess.run([os.path.join(BIN, "oslopolicy-policy-generator"), "--namespace", "glance"],
                               capture_output=True, text=True, timeout=60, cwd="/")
    assert effective.returncode == 0, effective.stderr
    assert '"stores_info_detail": "rule:context_is_admin or rule:service_api"' in effective.stdout
