"""The documentation builds with warnings as errors, as tox -e docs builds it.

Three Sphinx trees: doc/source (with the option and policy references generated from
the code), api-ref/source (os-api-ref) and releasenotes/source (reno, which reads the
notes from git history, so it runs from the repository root). The API reference and the
release notes go into the documentation's own output, where its index links to them.
"""

import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# (tree, where its html goes inside the site)
TREES = [
    ("doc/source", ""),
    ("api-ref/source", "api-ref"),
    ("releasenotes/source", "releasenotes"),
]


def sphinx_build(source, out, doctrees):
    """Run sphinx-build -W --keep-going -b html; returns (returncode, its output)."""
    proc = subprocess.run([sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html",
                           "-d", doctrees, os.path.join(ROOT, source), out],
                          cwd=ROOT, capture_output=True, text=True, timeout=600)
    return proc.returncode, (proc.stdout + proc.stderr).strip()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """The site as tox -e docs builds it: {tree: (returncode, output)} and its root."""
    tmp = tmp_path_factory.mktemp("docs")
    html = tmp / "html"
    results = {}
    for source, sub in TREES:
        results[source] = sphinx_build(source, str(html / sub), str(tmp / "doctrees" / source))
    return results, html


@pytest.mark.parametrize("source", [source for source, _ in TREES])
def test_tree_builds_without_warnings(site, source):
    results, _ = site
    returncode, output = results[source]
    assert returncode == 0, f"sphinx-build -W {source} failed:\n{output[-6000:]}"


def test_index_links_the_api_reference_and_the_release_notes(site):
    _, html = site
    index = (html / "index.html").read_text()
    for target in ("api-ref/index.html", "releasenotes/index.html"):
        assert f'href="{target}"' in index, target
        assert (html / target).is_file(), target


def test_references_are_generated_from_the_code(site):
    _, html = site
    cinder = (html / "configuration" / "cinder.html").read_text()
    # options of every group of the cinder_ext namespace
    for option in ("enable_clone_optimization", "rbd_flatten_volume_to_image", "clone_active_timeout",
                   "stores_info_url", "enabled_backends"):
        assert option in cinder, option
    info_api = (html / "configuration" / "glance-info-api.html").read_text()
    for option in ("bind_port", "noauth_default_roles", "workers"):
        assert option in info_api, option
    policy = (html / "configuration" / "policy.html").read_text()
    assert "stores_info_detail" in policy and "rule:context_is_admin or rule:service_api" in policy


def test_contributor_durations_page_is_kept(site):
    _, html = site
    assert "Where the test suite" in (html / "contributor" / "durations.html").read_text()


def test_release_notes_lint():
    reno = os.path.join(os.path.dirname(sys.executable), "reno")
    proc = subprocess.run([reno, "lint"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
