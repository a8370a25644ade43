"""An attacker for the tamper tests: process_vm_readv or ptrace on a pid.

usage: attacker.py readv|attach|seize|seize-hold PID OUTFILE

seize-hold seizes PID, prints the result, and stays its tracer until its
standard input closes, as malware that attaches to a shell at login would:
it lets every signal through, so the tracee runs as if untraced.

For readv, the target's stack (or one page when its maps are unreadable) is
read into a shared file mapping, so any byte copied survives this process's
death and the test can look for the secret there. Prints the syscall's result
only if it returns, which it must not: the guardian's eBPF program SIGKILLs the
caller at syscall entry.
"""

import ctypes
import mmap
import os
import signal
import sys
import threading

libc = ctypes.CDLL(None, use_errno=True)
PTRACE_ATTACH = 16
PTRACE_SEIZE = 0x4206
PTRACE_CONT = 7
WALL = 0x40000000


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


def stack_range(pid):
    try:
        with open(f"/proc/{pid}/maps") as maps:
            for line in maps:
                if line.rstrip().endswith("[stack]"):
                    start, end = line.split()[0].split("-")
                    return int(start, 16), int(end, 16)
    except OSError:
        pass
    return 0x10000, 0x11000


def readv(pid, out):
    start, end = stack_range(pid)
    size = end - start
    fd = os.open(out, os.O_RDWR | os.O_CREAT, 0o600)
    os.ftruncate(fd, size)
    shared = mmap.mmap(fd, size)
    local = IoVec(ctypes.addressof(ctypes.c_char.from_buffer(shared)), size)
    remote = IoVec(start, size)
    libc.process_vm_readv.restype = ctypes.c_ssize_t
    n = libc.process_vm_readv(pid, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    print("readv returned", n, "errno", ctypes.get_errno(), flush=True)


def trace(pid, request):
    libc.ptrace.restype = ctypes.c_long
    r = libc.ptrace(ctypes.c_long(request), ctypes.c_long(pid), None, None)
    print("ptrace returned", r, "errno", ctypes.get_errno(), flush=True)


def hold(pid):
    """Resumes the tracee at each stop, passing its signal on, until stdin
    closes (a thread watches it; ptrace requests must come from this one)."""
    threading.Thread(target=lambda: (sys.stdin.read(), os._exit(0)), daemon=True).start()
    while True:
        try:
            _, status = os.waitpid(pid, WALL)
        except ChildProcessError:
            os._exit(0)
        if os.WIFSTOPPED(status):
            sig = os.WSTOPSIG(status)
            deliver = 0 if sig == signal.SIGTRAP or status >> 16 else sig
            libc.ptrace(ctypes.c_long(PTRACE_CONT), ctypes.c_long(pid), None, ctypes.c_long(deliver))
        elif os.WIFEXITED(status) or os.WIFSIGNALED(status):
            os._exit(0)


def main():
    mode, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    if mode == "readv":
        readv(pid, out)
    elif mode == "attach":
        trace(pid, PTRACE_ATTACH)
    elif mode == "seize":
        trace(pid, PTRACE_SEIZE)
    elif mode == "seize-hold":
        trace(pid, PTRACE_SEIZE)
        hold(pid)
    else:
        sys.exit(f"unknown mode {mode}")


main()
