"""The policy enforcer: oslo.policy with this service's rules in code, overridable by policy.yaml."""

from oslo_config import cfg
from oslo_policy import opts as policy_opts
from oslo_policy import policy

from glance import policies

_ENFORCER = None


class Forbidden(Exception):
    """Policy denies the action; the message is upstream Glance's."""

    def __init__(self, *args, action=None, **kwargs):
        self.action = action or (args[0] if args else None)
        super().__init__(f"You are not authorized to complete {self.action} action.")


class Enforcer(policy.Enforcer):
    def __init__(self, conf):
        # use_conf: [oslo_policy] policy_file / policy_dirs of the operator's config
        super().__init__(conf, use_conf=True, overwrite=False)
        self.register_defaults(policies.list_rules())

    def authorize(self, context, action, target=None):
        """Raise Forbidden unless `context` may perform the registered rule `action`."""
        if action not in self.registered_rules:
            raise policy.PolicyNotRegistered(action)
        try:
            return super().authorize(action, target or {}, context, do_raise=True,
                                     exc=Forbidden, action=action)
        except policy.InvalidScope:
            # a system- or domain-scoped token on a project-scoped rule: denied, as upstream
            raise Forbidden(action=action)


def get_enforcer():
    """Entry point of oslopolicy-policy-generator and oslopolicy-checker (global CONF, as upstream)."""
    global _ENFORCER
    if _ENFORCER is None:
        policy_opts.set_defaults(cfg.CONF)
        cfg.CONF([], project="glance")  # as upstream: the default glance config files, if any
        _ENFORCER = Enforcer(cfg.CONF)
    return _ENFORCER
