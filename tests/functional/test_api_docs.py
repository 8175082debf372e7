"""The API reference builds: sphinx and os-api-ref, a tool run rather than a unit."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BIN = os.path.dirname(sys.executable)


def test_api_ref_builds_without_warnings(tmp_path):
    proc = subprocess.run([os.path.join(BIN, "sphinx-build"), "-W", "-q", "-b", "html",
                           os.path.join(ROOT, "api-ref", "source"), str(tmp_path / "html")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    html = (tmp_path / "html" / "index.html").read_text()
    assert "/v2/info/stores/detail" in html and "rbd_store_user" in html
