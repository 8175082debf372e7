"""tools/ imports without a circle (issue 24).

The tools' Python (tools/**/*.py and the extensionless Python scripts beside them) is read
with ast: every import of another tools module is an edge, whichever way it is spelled
(`import cloud` with tools/ on sys.path, `from tools.front_door import ...`, `import
peerlib` with tools/peers on it). The edges must form a DAG, and no tools module may load
another behind the import system's back (importlib's SourceFileLoader and the like hide
an edge from this test and from whoever reads the code).
"""

import ast
import functools
import os

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "tools")
HIDDEN_LOADS = {"SourceFileLoader", "spec_from_file_location", "load_module", "run_path", "import_module",
                "__import__"}


def python_files():
    """Relative paths of the tools' Python files: *.py, and scripts whose shebang runs python."""
    out = []
    for d, dirs, names in os.walk(TOOLS):
        dirs[:] = [x for x in dirs if x != "__pycache__"]
        for name in names:
            path = os.path.join(d, name)
            if name.endswith(".py"):
                out.append(path)
            elif "." not in name and not os.path.islink(path):
                with open(path, "rb") as f:
                    first = f.readline()
                if first.startswith(b"#!") and b"python" in first:
                    out.append(path)
    return sorted(os.path.relpath(p, ROOT) for p in out)


def module_names(files):
    """Every name a tools module is imported by -> its file: `tools.peers.peerlib`,
    `peers.peerlib` and `peerlib` all name tools/peers/peerlib.py."""
    names = {}
    for rel in files:
        if not rel.endswith(".py"):
            continue
        parts = rel[:-3].split(os.sep)
        for i in range(len(parts)):
            names.setdefault(".".join(parts[i:]), set()).add(rel)
    return names


def imports(rel):
    """(module names this file imports, hidden loads it makes)."""
    with open(os.path.join(ROOT, rel)) as f:
        tree = ast.parse(f.read(), rel)
    found, hidden = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: from the file's own package
                pkg = rel.split(os.sep)[:-node.level]
                base = ".".join(pkg + ([base] if base else []))
            found.add(base)
            found.update(f"{base}.{alias.name}" if base else alias.name for alias in node.names)
        elif isinstance(node, (ast.Attribute, ast.Name)):
            name = node.attr if isinstance(node, ast.Attribute) else node.id
            if name in HIDDEN_LOADS:
                hidden.append(f"{rel}:{node.lineno}: {name}")
    return found, hidden


@functools.lru_cache(maxsize=None)
def graph():
    files = python_files()
    names = module_names(files)
    edges, hidden = {}, []
    for rel in files:
        found, h = imports(rel)
        hidden += h
        targets = set()
        for name in found:
            for target in names.get(name, ()):
                if target != rel:
                    targets.add(target)
        edges[rel] = targets
    return files, names, edges, hidden


def find_cycle(edges):
    """One cycle as a list of nodes (first == last), or None."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = "done"
        return None

    for node in sorted(edges):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"a"}}) == ["a", "a"]


def test_tools_imports_form_a_dag():
    files, _, edges, _ = graph()
    cycle = find_cycle(edges)
    assert cycle is None, "tools/ imports in a circle: " + " -> ".join(cycle)


def test_no_tools_module_loads_another_behind_the_import_system():
    *_, hidden = graph()
    assert not hidden, f"hidden imports (use a plain import): {hidden}"


def test_module_names_are_unambiguous():
    # a bare `import cloud` must name one file, wherever tools/ or tools/peers is on sys.path
    files, names, _, _ = graph()
    stems = {}
    for rel in files:
        if rel.endswith(".py"):
            stems.setdefault(os.path.basename(rel)[:-3], []).append(rel)
    assert {s: r for s, r in stems.items() if len(r) > 1} == {}


@pytest.mark.parametrize("importer, imported", [
    # the layering the tools are written to (tools/cloudlib.py's docstring): if these edges
    # vanished, the parser above would be reading nothing
    ("tools/cloud.py", "tools/cloudlib.py"),
    ("tools/cloud.py", "tools/cloud_tempest.py"),
    ("tools/cloud.py", "tools/peers/keystone_peer.py"),
    ("tools/cloud_tempest.py", "tools/cloudlib.py"),
    ("tools/demo_openstack.py", "tools/cloudlib.py"),
    ("tools/cloudlib.py", "tools/peers/peerlib.py"),
    ("tools/peers/glance_peer.py", "tools/peers/setup_peers.py"),
    ("tools/peers/keystone_peer.py", "tools/peers/peerlib.py"),
    ("tools/peers/glance-peer", "tools/peers/glance_peer.py"),
    ("tools/demo.py", "tools/front_door.py"),
])
def test_the_layers_are_seen(importer, imported):
    _, _, edges, _ = graph()
    assert imported in edges[importer], sorted(edges[importer])
