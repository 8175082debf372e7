"""Generated files are current, and the api-ref builds and documents every property."""

import json
import os
import subprocess
import sys

import yaml

from glance_store_ext import contract

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)
SAMPLES = os.path.join(ROOT, "api-ref", "source", "samples")


def test_generated_files_are_current():
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "generate-samples"), "--check"],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-3000:]


def test_api_samples_follow_the_contract():
    with open(os.path.join(SAMPLES, "stores-list-response.json")) as f:
        contract.validate_stores(json.load(f))
    with open(os.path.join(SAMPLES, "stores-list-detail-response.json")) as f:
        doc = contract.validate_stores_detail(json.load(f))
    assert {s["type"] for s in doc["stores"]} == {"rbd", "file", "http"}


def test_config_sample_has_our_options_and_the_store_options():
    with open(os.path.join(ROOT, "etc", "glance-api.conf.sample")) as f:
        text = f.read()
    for line in ("#auth_strategy = keystone", "#noauth_default_roles = admin", "[glance_info_api]", "#bind_port = 9293", "#log_file = <None>",
                 "#enabled_backends = <None>", "#rbd_store_user = <None>", "#public_endpoint = <None>",
                 "[keystone_authtoken]", "[oslo_policy]", "[healthcheck]"):
        assert line in text, line


def test_api_ref_documents_every_property_of_every_store_type():
    with open(os.path.join(ROOT, "api-ref", "source", "parameters.yaml")) as f:
        params = yaml.safe_load(f)
    with open(os.path.join(ROOT, "api-ref", "source", "discovery.inc")) as f:
        inc = f.read()
    for store_type, schema in contract.PROPERTY_SCHEMAS.items():
        for name in schema["properties"]:
            key = {"s3": f"s3-{name.replace('s3_store_', '')}"}.get(store_type, f"{store_type}-{name}")
            assert key in params, key
            assert f"   - {name}: {key}\n" in inc, key
    assert "stores_info_detail" in inc
