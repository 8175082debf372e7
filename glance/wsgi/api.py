"""WSGI entry point for uwsgi, gunicorn or mod_wsgi: `glance.wsgi.api:application`.

The config files are $OS_GLANCE_CONFIG_DIR/glance-api.conf (default
/etc/glance), plus glance-image-import.conf when present, as upstream, and
glance-info-api.conf when present (our [glance_info_api] section: log_file).
Samples: etc/glance-info-api-uwsgi.ini, etc/glance-info-api-gunicorn.conf.py.
A config error is one line on stderr and the import fails.
"""

from glance.common import service

application = service.load_application(args=[], wsgi_entry=True)
