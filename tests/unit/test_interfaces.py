"""The Ceph adapter and both Glance clients implement the declared interfaces, with the
same parameters (cinder_ext.interfaces)."""

import ast
import inspect
import pathlib

import pytest

from cinder_ext import ceph, glance, interfaces

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _members(protocol):
    return {n: v for n, v in vars(protocol).items()
            if not n.startswith("_") and callable(v)}


def _params(fn):
    return list(inspect.signature(fn).parameters)


@pytest.mark.parametrize("protocol, cls", [(interfaces.CephAdapter, ceph.Cluster),
                                           (interfaces.GlanceClient, glance.Glance)])
def test_implementations_have_every_member_with_its_parameters(protocol, cls):
    for name, fn in _members(protocol).items():
        assert hasattr(cls, name), f"{cls.__name__} lacks {name}"
        assert _params(getattr(cls, name)) == _params(fn), f"{cls.__name__}.{name}"
    for attr in getattr(protocol, "__annotations__", {}):
        assert attr in {"instance_id", "poll_interval"}, attr


def test_the_drivers_glance_client_is_composed_and_implements_the_interface():
    # cinder_ext.driver imports Cinder, which this venv does not have: read its source
    tree = ast.parse((ROOT / "cinder_ext" / "driver.py").read_text())
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CinderGlance")
    assert cls.bases == [], "CinderGlance composes Cinder's client; it inherits nothing"
    methods = {n.name: [a.arg for a in n.args.args] for n in cls.body
               if isinstance(n, ast.FunctionDef)}
    for name, fn in _members(interfaces.GlanceClient).items():
        assert methods.get(name) == _params(fn), f"CinderGlance.{name}"
    init = ast.unparse(next(n for n in cls.body if getattr(n, "name", "") == "__init__"))
    assert "self.poll_interval" in init
