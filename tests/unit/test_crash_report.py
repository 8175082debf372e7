"""tests.crash_report.summary: a fault report cut to what a CI log keeps."""

import sysconfig

from tests import crash_report

STDLIB = sysconfig.get_paths()["stdlib"]
IDLE = f'''Thread 0x00007f5b38ff96c0 (most recent call first):
  File "{STDLIB}/threading.py", line 320 in wait
  File "{STDLIB}/queue.py", line 171 in get
  File "/w/.peers/cinder29/lib/python3.11/site-packages/eventlet/tpool.py", line 74 in tworker
  File "{STDLIB}/threading.py", line 975 in run
'''
REPORT = "Fatal Python error: Segmentation fault\n\n" + "\n".join([IDLE] * 20) + f'''
Thread 0x00007f5b40000000 (most recent call first):
  File "/w/cinder_ext/ceph.py", line 312 in _call
  File "/w/.peers/cinder29/lib/python3.11/site-packages/eventlet/tpool.py", line 82 in tworker
  File "{STDLIB}/threading.py", line 975 in run

Current thread 0x00007f5b75f8b6c0 (most recent call first):
  File "/w/.peers/cinder29/lib/python3.11/site-packages/rbd.py", line 10 in open
  File "/w/tests/cinder_peer_run.py", line 287 in rbd_parent
  File "/w/tests/cinder_peer_run.py", line 169 in main
'''


def test_the_crashing_thread_and_busy_threads_survive_twenty_idle_workers():
    lines = crash_report.summary(REPORT)
    assert lines[0] == "Fatal Python error: Segmentation fault"
    assert lines[1].startswith("Current thread 0x00007f5b75f8b6c0")
    assert "rbd_parent" in lines[3] and "main" in lines[4]
    # the busy tpool worker by its innermost frame of ours; the 20 idle ones not at all
    assert lines[5:] == ['Thread 0x00007f5b40000000: File "/w/cinder_ext/ceph.py", line 312 in _call']


def test_a_crash_in_a_thread_without_python_says_so():
    report = REPORT[:REPORT.index("Current thread")]
    lines = crash_report.summary(report)
    assert lines[1] == "(the crashing thread ran no Python: one of Ceph's own threads)"
    assert lines[2].startswith("Thread 0x00007f5b40000000")
