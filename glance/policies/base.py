"""Base rules, named and defaulted as in upstream Glance 33 (glance/policies/base.py).

Same names on purpose: an operator's policy.yaml that redefines
`context_is_admin` or `service_api` for Glance means the same here.
"""

from oslo_policy import policy

ADMIN = "rule:context_is_admin"
SERVICE = "rule:service_api"
ADMIN_OR_SERVICE_ROLE = f"{ADMIN} or {SERVICE}"

rules = [
    policy.RuleDefault(name="default", check_str="",
                       description="Defines the default rule used for policies that "
                                   "historically had an empty policy in the supplied "
                                   "policy.json file."),
    policy.RuleDefault(name="context_is_admin", check_str="role:admin",
                       description="Defines the rule for the is_admin:True check."),
    policy.RuleDefault(name="service_api", check_str="role:service or role:admin",
                       description="Default rule for the service-to-service API."),
]


def list_rules():
    return rules
