# gunicorn for glance-info-api, from its own virtualenv (never from a directory
# holding upstream Glance's or this project's source: gunicorn puts its start-up
# directory on sys.path). The config files come from OS_GLANCE_CONFIG_DIR
# (default /etc/glance): glance-api.conf, then glance-info-api.conf.
#   cd / && /opt/glance-info-api/bin/gunicorn -c /etc/glance/glance-info-api-gunicorn.conf.py
wsgi_app = "glance.wsgi.api:application"
bind = "0.0.0.0:9293"
workers = 2
threads = 8
# load once in the master: every store's fsid is read before the workers fork
preload_app = True
chdir = "/"
raw_env = ["OS_GLANCE_CONFIG_DIR=/etc/glance"]
