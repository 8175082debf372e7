"""Lock plumbing that needs no cluster: the cls_lock reply decoder and the exceptions."""

from cinder_ext import clone
from cinder_ext import locks
from cinder_ext import exceptions as exc
from cinder_ext.ceph import _decode_lock_info

# cls_lock get_info of a shared lock held by client.4154 at 127.0.0.1:0/3235458663, cookie
# "cookieA", description "DESCX", tag "tag" (captured from Ceph 16.2.15)
REPLY = bytes.fromhex(
    "01016000000001000000010114000000083a100000000000000700000063 6f6f6b696541"
    "0101340000000000000000000000010101 1c00000001000000672ed9c0100000000200"
    "00007f000001000000000000000005000000444553435802030000007461 67".replace(" ", ""))


def test_lock_info_decodes_holder_address_and_description():
    (h,) = _decode_lock_info(REPLY)
    assert h == {"entity": (8, 4154), "gid": 4154, "cookie": "cookieA",
                 "addr": "127.0.0.1:0/3235458663", "desc": "DESCX"}


def test_exceptions_tell_what_happened():
    # a delete meeting a held volume lock is a busy volume (Cinder: VolumeIsBusy)
    assert issubclass(exc.VolumeLocked, exc.VolumeBusy)
    assert locks.VolumeLocked is exc.VolumeLocked
    # an upload already in progress is its own kind, not a failed clone (never a copy)
    assert locks.UploadInProgress is exc.UploadInProgress
    assert not issubclass(exc.UploadInProgress, (exc.CloneFailed, exc.VolumeBusy, exc.CephError))


def test_holder_in_words_names_its_client_not_its_pid_alone():
    h = {"gid": 7, "addr": "10.0.0.1:0/1", "desc": '{"op": "upload", "host": "h", "pid": 1}'}
    assert locks._who(h) == "client.7 at 10.0.0.1:0/1 (op upload, host h, pid 1)"
    assert locks._who({"gid": 7, "addr": None, "desc": "not json"}) == "client.7 at ?"


class _Unknowable:
    """A lock held by client.7, whose watchers cannot be listed (the `rados` command
    absent or failing); records whether anyone is blocklisted or a lock broken."""

    def __init__(self):
        self.fenced = []

    def lock_info(self, pool, obj, name, namespace=""):
        return [{"entity": (8, 7), "gid": 7, "cookie": "c", "addr": "10.0.0.1:0/1",
                 "desc": "{}"}], 1

    def list_watchers(self, pool, obj, namespace=""):
        raise exc.CephError("list watchers of images/rbd_clone_lock.x: [Errno 2] No such "
                            "file or directory: 'rados'")

    def blocklist(self, addr, expire):
        self.fenced.append(addr)

    def break_lock(self, *a, **kw):
        self.fenced.append("broken")


def test_a_holder_whose_liveness_is_unknown_is_alive_never_blocklisted():
    ceph = _Unknowable()
    live = locks.ObjectLock(ceph, "images", "x")._live_holders()
    assert [h["gid"] for h in live] == [7] and ceph.fenced == []
