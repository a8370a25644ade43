"""A holder that makes itself unkillable with FUSE, for the end-to-end tests.

usage: fuse_trap.py MOUNTPOINT

In a mount namespace of its own, it mounts a FUSE file system that it serves
itself, answers the kernel's INIT, then has a thread stat() a file there and
reads that request without ever answering it. Killed, the process cannot
finish dying: the stat thread waits for the answer in an uninterruptible
sleep (D state) with SIGKILL pending, and the answer would come from the
process's own descriptor of /dev/fuse, which stays open while that thread
lives. Only aborting the FUSE connection frees it.

Prints "trapped" once the stat thread is waiting. Needs root (to open
/dev/fuse and to mount), and prints "no fuse: WHY" and exits 3 otherwise.
"""

import ctypes
import os
import struct
import sys
import threading
import time

CLONE_NEWNS = 0x00020000
MS_REC, MS_PRIVATE = 0x4000, 0x40000
FUSE_INIT = 26
# struct fuse_init_out: major, minor, max_readahead, flags, max_background
# (u16), congestion_threshold (u16), max_write, time_gran, max_pages (u16),
# map_alignment (u16), flags2, max_stack_depth, unused[6]
INIT_OUT = struct.Struct("<IIIIHHIIHHII24x")
OUT_HEADER = struct.Struct("<IiQ")  # len, error, unique
IN_HEADER = struct.Struct("<IIQQIIIHH")  # len, opcode, unique, nodeid, uid, gid, pid, ...

libc = ctypes.CDLL(None, use_errno=True)


def fail(why):
    print("no fuse:", why, flush=True)
    sys.exit(3)


def main():
    mountpoint = sys.argv[1]
    os.makedirs(mountpoint, exist_ok=True)
    if libc.unshare(CLONE_NEWNS) != 0:
        fail(f"unshare: {os.strerror(ctypes.get_errno())}")
    if libc.mount(b"none", b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        fail(f"make / private: {os.strerror(ctypes.get_errno())}")
    try:
        dev = os.open("/dev/fuse", os.O_RDWR)
    except OSError as err:
        fail(f"/dev/fuse: {err}")
    options = f"fd={dev},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"trap", mountpoint.encode(), b"fuse.trap", 0, options) != 0:
        fail(f"mount: {os.strerror(ctypes.get_errno())}")
    request = os.read(dev, 1 << 20)
    _, opcode, unique, *_ = IN_HEADER.unpack_from(request)
    if opcode != FUSE_INIT:
        fail(f"expected INIT, got opcode {opcode}")
    init = INIT_OUT.pack(7, 31, 65536, 0, 16, 12, 65536, 1, 1, 0, 0, 0)
    os.write(dev, OUT_HEADER.pack(OUT_HEADER.size + len(init), 0, unique) + init)
    threading.Thread(target=os.stat, args=(os.path.join(mountpoint, "x"),), daemon=True).start()
    os.read(dev, 1 << 20)  # the stat's LOOKUP, never answered
    print("trapped", flush=True)
    while True:
        time.sleep(1000)


main()
