"""What the peer tools share: paths, one-line errors, the command line, ports, process
groups, state files, ini text, apt.

Standard library only, imports nothing of ours: setup_peers, glance_peer and
keystone_peer (beside it), tools/cloudlib.py and tools/ceph_dev_cluster.py build on it.
"""

import argparse
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
PEERS_DIR = os.environ.get("PEERS_DIR", os.path.join(ROOT, ".peers"))
# a traceback's last line, as gunicorn and the manage commands log a failure
EXCEPTION_LINE = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|NotFound|Failure)\b.*: ")


class PeerError(Exception):
    """An error with a message fit for one line on stderr."""


def venv(name):
    return os.path.join(PEERS_DIR, name)


def run_main(prog, command, args):
    """Run command(args); a PeerError (or a timeout) is one line on stderr and exit 1."""
    try:
        command(args)
    except PeerError as e:
        print(f"{prog}: {e}", file=sys.stderr)
        sys.exit(1)
    except subprocess.TimeoutExpired as e:
        print(f"{prog}: {' '.join(map(str, e.cmd[:2]))} took over {e.timeout}s", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


# -- the peers' command line ---------------------------------------------------

def peer_parser(prog, description, start_help):
    """The parser of a peer tool: `start DIR [--port N]`, to which the caller adds start's
    other options and any subcommand of its own. Returns (parser, subparsers, start's parser);
    peer_main adds `stop DIR` and `status DIR`, parses and runs."""
    parser = argparse.ArgumentParser(prog=prog, description=description)
    sub = parser.add_subparsers(dest="cmd", required=True)
    start = sub.add_parser("start", help=start_help)
    start.add_argument("dir")
    start.add_argument("--port", type=int, help="default: any free port")
    return parser, sub, start


def peer_main(parser, sub, commands, argv=None):
    """Add `stop DIR` and `status DIR` to a peer_parser, parse argv and run_main the command
    named, from `commands` ({name: function(args)})."""
    for name in ("stop", "status"):
        sub.add_parser(name).add_argument("dir")
    args = parser.parse_args(argv)
    run_main(parser.prog, commands[args.cmd], args)


def print_status(state, running, answering):
    """A peer's `status`: its state with `running` and `answering` (asked only when running: a
    function of no arguments) as JSON on stdout; exit 3 when it is not running."""
    print(json.dumps(dict(state, running=running, answering=running and answering()), indent=2))
    if not running:
        sys.exit(3)


# -- ports ---------------------------------------------------------------------

def port_free(port):
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def check_port(name, port):
    """An explicit --port: a TCP port, free on 127.0.0.1."""
    if port is not None:
        if not 0 < port < 65536:
            raise PeerError(f"{name} {port} is not a TCP port")
        if not port_free(port):
            raise PeerError(f"port {port} on 127.0.0.1 is already in use")


def free_port(taken=None):
    """A free port on 127.0.0.1; with `taken` (a set), one not in it, added to it."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if taken is None:
            return port
        if port not in taken:
            taken.add(port)
            return port


def answers(url, codes=(200,), timeout=5):
    """GET url answers with one of `codes`."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status in codes
    except urllib.error.HTTPError as e:
        return e.code in codes
    except OSError:  # URLError, refused, reset, timeout
        return False


# -- processes -----------------------------------------------------------------

def _stat(pid):
    """(state, pgid) of a process, from /proc; None when it is gone."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return fields[0], int(fields[2])
    except (OSError, IndexError, ValueError):
        return None


def alive(pid):
    """The process exists and is not a zombie."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    st = _stat(pid)
    return st is not None and st[0] != "Z"


def group_members(pgid):
    """The live (not zombie) processes of a process group."""
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            st = _stat(entry)
            if st and st[1] == pgid and st[0] != "Z":
                out.append(int(entry))
    return out


def stop_group(pgid, grace=15):
    """SIGTERM the group, SIGKILL what is left after `grace` seconds; PeerError if any survives."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    for sig, wait in ((None, grace), (signal.SIGKILL, 5)):
        if sig and group_members(pgid):
            try:
                os.killpg(pgid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while group_members(pgid) and time.monotonic() < deadline:
            time.sleep(0.2 if sig is None else 0.1)
    if group_members(pgid):
        raise PeerError(f"processes of group {pgid} survived SIGKILL")


def spawn(cmd, log, cwd, env, mode="w"):
    """A server in a session of its own (stop_group(pid) stops it and its children)."""
    with open(log, mode) as out:
        return subprocess.Popen(cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)


# -- files ---------------------------------------------------------------------

def read_json(path):
    """The JSON in path, None when it is missing or unreadable."""
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def write_private(path, text, mode=0o600):
    """Write text to path atomically, with `mode` from the start (passwords live in these)."""
    fd = os.open(path + ".tmp", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "w") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def write_json(path, data, mode=0o600):
    write_private(path, json.dumps(data, indent=2), mode)


def ini(sections):
    """{section: {option: value}} as ini text."""
    out = []
    for section, options in sections.items():
        out.append(f"[{section}]")
        out += [f"{k} = {v}" for k, v in options.items()]
        out.append("")
    return "\n".join(out)


def last_hit(d, names, match, cut=slice(-300, None)):
    """The last line of the first of the logs `names` (in d) with a line `match` accepts,
    as "LINE (see PATH)"; None when none has one."""
    for name in names:
        try:
            with open(os.path.join(d, name), errors="replace") as f:
                hits = [line.strip() for line in f if match(line)]
        except OSError:
            continue
        if hits:
            return f"{hits[-1][cut]} (see {os.path.join(d, name)})"
    return None


# -- Debian packages -----------------------------------------------------------

def apt_missing(packages):
    return [p for p in packages if subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}", p], capture_output=True, text=True).stdout
        != "install ok installed"]


def apt_install(packages):
    """apt-get update and install (no recommends); PeerError with apt's last line if either fails."""
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    for cmd, what in ((["apt-get", "update", "-qq"], "apt-get update failed (is the Debian mirror reachable?)"),
                      (["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages],
                       f"apt-get install {' '.join(packages)} failed")):
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
            raise PeerError(what + (f": {lines[-1]}" if lines else ""))
