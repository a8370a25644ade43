"""ningen-shikkaku's reference implementation, in plain CPython (standard library only).

It shows the mechanism of the dead-man's switch and nothing more: hold one
secret bound to a leader PID, run a command with the secret in its
environment, and when the leader dies wipe the secret and kill the command's
process group. It is the proof of concept the Rust guardian grew from, and a
baseline for its benchmarks. It is not a hard guarantee; README.md in this
directory lists what it cannot do.

usage: python3 ningen_ref.py --leader PID --secret-file FILE --env VAR [--report FILE] -- CMD [ARGS...]
"""

import argparse
import ctypes
import ctypes.util
import os
import select
import signal
import subprocess
import sys
import time

_libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)


class LockedSecret:
    """The secret in a bytearray whose pages are mlock'd (best effort).

    CPython may already have copied the bytes elsewhere (the file read, the
    environment dictionary): see README.md.
    """

    def __init__(self, data: bytes):
        self.buf = bytearray(data)
        self.addr = ctypes.addressof((ctypes.c_char * len(self.buf)).from_buffer(self.buf))
        self.locked = _libc.mlock(ctypes.c_void_p(self.addr), ctypes.c_size_t(len(self.buf))) == 0

    def wipe(self) -> None:
        """Overwrite in place with zeros (memset through ctypes, then the bytearray)."""
        ctypes.memset(self.addr, 0, len(self.buf))
        for i in range(len(self.buf)):
            self.buf[i] = 0

    def is_wiped(self) -> bool:
        return not any(self.buf)


def leader_exit_waiter(pid: int):
    """Returns a function that blocks until `pid` exits: a pidfd where the
    kernel and Python have one (3.9+, Linux 5.3+), else polling with kill(pid, 0)."""
    try:
        fd = os.pidfd_open(pid)
    except (AttributeError, OSError):
        fd = None
    if fd is not None:
        poller = select.poll()
        poller.register(fd, select.POLLIN)
        return lambda: poller.poll()

    def poll_kill():
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.001)

    return poll_kill


def run(leader: int, secret: bytes, var: str, cmd: list, report=None) -> int:
    """Runs `cmd` with the secret until the leader dies; then wipes and kills."""
    try:
        os.kill(leader, 0)
    except ProcessLookupError:
        raise SystemExit(f"no such process: {leader}")
    wait_for_leader = leader_exit_waiter(leader)
    held = LockedSecret(secret)
    env = dict(os.environ)
    env[var] = held.buf.decode("latin-1")
    # A new session and process group, so one killpg reaches the whole tree
    # (unless a descendant leaves the group: see README.md).
    child = subprocess.Popen(cmd, env=env, start_new_session=True)
    del env
    wait_for_leader()
    detected_ns = time.monotonic_ns()
    held.wipe()
    wiped_ns = time.monotonic_ns()
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    child.wait()
    dead_ns = time.monotonic_ns()
    if report:
        with open(report, "w") as out:
            out.write(f"{detected_ns} {wiped_ns} {dead_ns} {int(held.locked)}\n")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leader", type=int, required=True, help="PID whose death wipes the secret")
    parser.add_argument("--secret-file", required=True, help="file holding the secret")
    parser.add_argument("--env", required=True, help="environment variable for the secret")
    parser.add_argument("--report", help="write 'detected wiped dead locked' (monotonic ns) here")
    parser.add_argument("cmd", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        parser.error("no command given")
    if args.leader <= 1:
        parser.error("refusing to bind to PID 1 or below")
    with open(args.secret_file, "rb") as f:
        secret = f.read()
    return run(args.leader, secret, args.env, cmd, args.report)


if __name__ == "__main__":
    sys.exit(main())
