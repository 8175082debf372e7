#!/bin/bash
# glance-rbd-clone devstack plugin: upload volumes to images by RBD clone.
#
# Enable it AFTER devstack-plugin-ceph (plugins run their phases in the order of
# enable_plugin): by our post-config, devstack-plugin-ceph has written the Ceph backend
# (volume_driver = cinder.volume.drivers.rbd.RBDDriver) and Glance's rbd store.
#
#   stack install      the wheels into Cinder's environment (devstack's pip_install:
#                      the global venv when GLOBAL_VENV=True); glance-info-api into a
#                      venv of its own when g-info-api is enabled
#   stack post-config  each upstream RBD backend of CINDER_ENABLED_BACKENDS -> our driver
#                      with enable_clone_optimization on; [service_user] if devstack left
#                      none; glance-info-api's config and its two Apache routes
#   stack extra        Cinder's user gets the `service` role (Glance 33 takes an rbd
#                      location only from it); g-info-api starts
#   unstack / clean    g-info-api stops / its venv, config and Apache routes go

GLANCE_RBD_CLONE_XTRACE=$(set +o | grep xtrace)
set -o xtrace

function glance_rbd_clone_install {
    local dists="glance-store-ext cinder-rbd-clone"
    if [[ -n "$GLANCE_RBD_CLONE_WHEELS" ]]; then
        pip_install --find-links "$GLANCE_RBD_CLONE_WHEELS" cinder-rbd-clone
    else
        # packaging/<dist> builds one wheel from the checkout (pyproject.toml there)
        local dist paths=""
        for dist in $dists; do
            paths+=" $GLANCE_RBD_CLONE_DIR/packaging/$dist"
        done
        pip_install $paths
    fi
}

function glance_info_api_install {
    # its package is named `glance`, as upstream Glance's is: never in Glance's venv.
    # --system-site-packages: the distribution's python3-rados (installed by
    # devstack-plugin-ceph) reads the fsid
    python3 -m venv --system-site-packages "$GLANCE_INFO_API_VENV"
    local source
    if [[ -n "$GLANCE_RBD_CLONE_WHEELS" ]]; then
        source="--find-links $GLANCE_RBD_CLONE_WHEELS glance-info-api"
    else
        source="$GLANCE_RBD_CLONE_DIR/packaging/glance-store-ext $GLANCE_RBD_CLONE_DIR/packaging/glance-info-api"
    fi
    "$GLANCE_INFO_API_VENV/bin/pip" install $source
}

# the backends of CINDER_ENABLED_BACKENDS (type:name) whose driver is upstream's RBD one
# (or ours already: a second ./stack.sh on the same cinder.conf)
function _glance_rbd_clone_backends {
    local be name driver
    for be in ${CINDER_ENABLED_BACKENDS//,/ }; do
        name=${be##*:}
        driver=$(iniget $CINDER_CONF $name volume_driver)
        if [[ "$driver" == "$GLANCE_RBD_CLONE_UPSTREAM_DRIVER" || "$driver" == "$GLANCE_RBD_CLONE_DRIVER" ]]; then
            echo $name
        fi
    done
}

function glance_rbd_clone_configure_cinder {
    local name found=""
    for name in $(_glance_rbd_clone_backends); do
        iniset $CINDER_CONF $name volume_driver $GLANCE_RBD_CLONE_DRIVER
        iniset $CINDER_CONF $name enable_clone_optimization $GLANCE_RBD_CLONE_ENABLE
        found+=" $name"
    done
    if [[ -z "$found" ]]; then
        die $LINENO "glance-rbd-clone: no backend of CINDER_ENABLED_BACKENDS=$CINDER_ENABLED_BACKENDS has volume_driver = $GLANCE_RBD_CLONE_UPSTREAM_DRIVER in $CINDER_CONF: enable this plugin after devstack-plugin-ceph"
    fi
    # the driver registers the image's location as the user WITH Cinder's service token,
    # and reads the stores detail with these credentials when [glance] has none
    if [[ -z "$(iniget $CINDER_CONF service_user auth_type)" ]]; then
        iniset $CINDER_CONF service_user send_service_user_token True
        iniset $CINDER_CONF service_user auth_type password
        iniset $CINDER_CONF service_user auth_url $KEYSTONE_SERVICE_URI
        iniset $CINDER_CONF service_user username cinder
        iniset $CINDER_CONF service_user password $SERVICE_PASSWORD
        iniset $CINDER_CONF service_user user_domain_name $SERVICE_DOMAIN_NAME
        iniset $CINDER_CONF service_user project_name $SERVICE_PROJECT_NAME
        iniset $CINDER_CONF service_user project_domain_name $SERVICE_DOMAIN_NAME
    elif [[ "$(iniget $CINDER_CONF service_user send_service_user_token)" != [Tt]rue ]]; then
        iniset $CINDER_CONF service_user send_service_user_token True
    fi
}

function glance_rbd_clone_check_glance {
    if [[ -z "$(iniget $GLANCE_API_CONF DEFAULT enabled_backends)" ]]; then
        warn $LINENO "glance-rbd-clone: Glance is single-store ([glance_store] default_store): it answers /v2/info/stores with 404 and every upload copies. Set GLANCE_ENABLE_MULTIPLE_STORES=True in local.conf"
    fi
}

function glance_info_api_configure {
    iniset $GLANCE_INFO_API_CONF glance_info_api bind_host 127.0.0.1
    iniset $GLANCE_INFO_API_CONF glance_info_api bind_port $GLANCE_INFO_API_PORT
    # Apache fronts Glance at /image: the two stores-info paths, and only those, go to
    # glance-info-api. Apache takes the first ProxyPass(Match) that matches, in the order
    # it reads them: the site's name sorts before devstack's own Glance site.
    local site
    site=$(apache_site_config_for 00-glance-info-api)
    sudo tee $site >/dev/null <<EOF
ProxyPassMatch "^/image/v2/info/stores(/detail)?$" "http://127.0.0.1:$GLANCE_INFO_API_PORT/v2/info/stores\$1" retry=0
EOF
    enable_apache_site 00-glance-info-api
    restart_apache_server
}

function glance_rbd_clone_roles {
    # Glance 33 takes an rbd location only from a service token with `service`, and the
    # stores detail needs admin or service; devstack gives Cinder's user admin already
    get_or_create_role service
    get_or_add_user_project_role service cinder $SERVICE_PROJECT_NAME
}

function glance_info_api_start {
    run_process g-info-api "$GLANCE_INFO_API_VENV/bin/glance-info-api --config-file $GLANCE_API_CONF --config-file $GLANCE_INFO_API_CONF"
}

if [[ "$1" == "stack" && "$2" == "install" ]]; then
    echo_summary "glance-rbd-clone: installing the driver into Cinder's environment"
    glance_rbd_clone_install
    if is_service_enabled g-info-api; then
        echo_summary "glance-rbd-clone: installing glance-info-api"
        glance_info_api_install
    fi
elif [[ "$1" == "stack" && "$2" == "post-config" ]]; then
    echo_summary "glance-rbd-clone: switching the Ceph backend to the clone upload driver"
    glance_rbd_clone_configure_cinder
    glance_rbd_clone_check_glance
    if is_service_enabled g-info-api; then
        glance_info_api_configure
    fi
elif [[ "$1" == "stack" && "$2" == "extra" ]]; then
    glance_rbd_clone_roles
    if is_service_enabled g-info-api; then
        glance_info_api_start
    fi
fi

if [[ "$1" == "unstack" ]]; then
    if is_service_enabled g-info-api; then
        stop_process g-info-api
    fi
fi

if [[ "$1" == "clean" ]]; then
    if is_service_enabled g-info-api; then
        disable_apache_site 00-glance-info-api
        sudo rm -f $(apache_site_config_for 00-glance-info-api)
        rm -rf "$GLANCE_INFO_API_VENV"
        rm -f "$GLANCE_INFO_API_CONF"
    fi
fi

$GLANCE_RBD_CLONE_XTRACE
