# Release notes of glance-rbd-clone (reno, openstackdocstheme).
# Build from the repository root (reno reads the notes from git history):
#   tox -e releasenotes, or
#   .venv/bin/sphinx-build -W --keep-going -b html releasenotes/source releasenotes/build/html
# A note is committed with its change: `reno new SLUG` writes releasenotes/notes/SLUG-<uid>.yaml.

import os
import runpy

extensions = [
    "openstackdocstheme",
    "reno.sphinxext",
]

# the theme, its switches, the copyright and the source format are the documentation's
# (doc/source/conf.py): the release notes are published inside its site
_DOC_CONF = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, os.pardir, "doc", "source",
                         "conf.py")
globals().update({name: value for name, value in runpy.run_path(_DOC_CONF).items() if name in {
    "openstackdocs_auto_name", "openstackdocs_auto_version", "openstackdocs_use_storyboard", "html_theme",
    "copyright", "source_suffix", "master_doc", "exclude_patterns", "pygments_style"}})

project = "glance-rbd-clone Release Notes"
# the release notes are not versioned themselves: reno names each release
version = release = ""
