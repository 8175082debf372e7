# Documentation of glance-rbd-clone (openstackdocstheme, as upstream Cinder and Glance).
# Build: tox -e docs, or
#   .venv/bin/sphinx-build -W --keep-going -b html doc/source doc/build/html
# The option and policy references are generated from the code at build time
# (oslo_config.sphinxext, oslo_policy.sphinxext): nothing generated is committed here.
# releasenotes/source/conf.py takes its theme and source settings from here.

extensions = [
    "openstackdocstheme",
    "oslo_config.sphinxext",
    "oslo_policy.sphinxext",
]

# openstackdocstheme: no repository or bug tracker links (the project has neither on
# opendev.org nor Launchpad); name and version given here, not guessed from a package
openstackdocs_auto_name = False
openstackdocs_auto_version = False
openstackdocs_use_storyboard = False

html_theme = "openstackdocs"
html_theme_options = {"sidebar_mode": "toc"}

project = "glance-rbd-clone"
copyright = "2026, OpenStack contributors"
version = release = "0.2.0"
source_suffix = {".rst": "restructuredtext"}
master_doc = "index"
exclude_patterns = []
pygments_style = "native"
add_module_names = False
