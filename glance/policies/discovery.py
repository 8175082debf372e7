"""Policy of the stores-info (discovery) API."""

from oslo_policy import policy

from glance.policies import base

discovery_policies = [
    policy.DocumentedRuleDefault(
        name="stores_info_detail",
        # resolves to role:admin or role:service with the base defaults;
        # Cinder reads the detail with its service credentials
        check_str=base.ADMIN_OR_SERVICE_ROLE,
        scope_types=["project"],
        description="Expose store specific information (type, properties such as the "
                    "RBD pool, fsid and user, weight)",
        operations=[{"path": "/v2/info/stores/detail", "method": "GET"}],
    ),
]


def list_rules():
    return discovery_policies
