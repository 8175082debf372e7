# API reference of the glance-rbd-clone stores-info API (os-api-ref style).
# Build: .venv/bin/sphinx-build -W -b html api-ref/source api-ref/build/html

extensions = ["os_api_ref", "openstackdocstheme"]

# openstackdocstheme
openstackdocs_repo_name = "openstack/glance"
openstackdocs_bug_project = "glance"
openstackdocs_bug_tag = "api-ref"
openstackdocs_auto_name = False
openstackdocs_use_storyboard = False

html_theme = "openstackdocs"
html_theme_options = {"sidebar_mode": "toc"}

project = "Image Service API: stores-info (glance-rbd-clone)"
copyright = "2026, OpenStack contributors"
source_suffix = ".rst"
master_doc = "index"
pygments_style = "native"
add_module_names = False
