"""tools/cloud's errors: one line on stderr, a non-zero exit, nothing started.

(That `stop` leaves no process and no listening port is checked when the session's cloud
stops: tests/cloud/conftest.py.)"""

import os
import subprocess

from tests.cloud.conftest import CLOUD, processes_under


def run(*args):
    return subprocess.run([CLOUD, *args], capture_output=True, text=True, cwd="/", timeout=120)


def test_start_refuses_a_non_empty_directory(tmp_path):
    (tmp_path / "something").write_text("x")
    proc = run("start", str(tmp_path))
    assert proc.returncode == 1
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "is not an empty directory" in proc.stderr
    assert os.listdir(tmp_path) == ["something"]
    assert not processes_under(str(tmp_path))


def test_stop_status_env_of_no_cloud(tmp_path):
    for cmd in ("stop", "status", "env"):
        proc = run(cmd, str(tmp_path))
        assert proc.returncode == 1, (cmd, proc)
        assert proc.stderr.strip() == f"cloud: no cloud in {tmp_path} (cloud.json missing)", proc.stderr


def test_no_subcommand():
    proc = run()
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0, proc.stderr
