"""A reader for the end-to-end tests: one mode for each way we know to get at
the memory or the environment of another process.

usage: reader.py MODE PID OUT [EXTRA]

  environ       open /proc/PID/environ and read it
  mem           pread the target's [stack] through /proc/PID/mem
  dirfd         open /proc/PID as a directory, then openat(dirfd, "environ")
  cwd           chdir to /proc/PID, then open "environ" relative to it
  task          read /proc/PID/task/TID/environ (a TID other than PID if any)
  creat-mem     open /proc/PID/mem write-only, and never write
  int80-attach  PTRACE_ATTACH through the i386 syscall table (int $0x80);
                EXTRA: seconds to stay attached before detaching (default 0)
  int80-readv   process_vm_readv through int $0x80, reading the target's first
                readable mapping below 4 GiB into a buffer below 4 GiB
  pidfd-getfd   pidfd_getfd the target's descriptor EXTRA (default 0), read it
  clone-files   open /proc/PID/environ while a clone(CLONE_FILES) accomplice,
                sharing our descriptor table, reads through the new descriptor
  io-uring      IORING_OP_OPENAT then IORING_OP_READ of /proc/PID/environ
  io-uring-direct  the same through a direct (fixed) descriptor, which never
                enters the process's descriptor table
  io-uring-deferred  an io_uring open whose completion is deferred
                (DEFER_TASKRUN), then a plain pread of the new descriptor
  late-mem      open /proc/PID/mem read-write while a clone(CLONE_FILES)
                sharer sleeps; the sharer then reads and writes through it
  thread-mem    open /proc/PID/task/TID/mem (TID a thread other than PID),
                wait for that thread to exit, then pread PID's [stack]
                through it: the file still reads the process's memory
  uring-inline  open /proc/PID/mem non-blocking, wait for a thread other
                than PID to exit, then IORING_OP_READ PID's [stack] through
                it: io_uring runs it inline, inside io_uring_enter
  uring-linked  the same read linked behind a read of an empty pipe, which a
                child fills while we sleep: the kernel issues the linked read
                as task work, in our context, under the sleep's system call
  perf          perf_event_open on PID (a sampling event)
  ns-readv      process_vm_readv from inside PID's user and pid namespace,
                by its local pid
  handle        (root) name_to_handle_at of /proc/PID/fd/EXTRA, then
                open_by_handle_at with a memfd of our own as the mount
                descriptor, and read: a holder's secret file by another path
  pidns-local   (root) in a new pid namespace, PTRACE_SEIZE and
                process_vm_readv the process whose LOCAL pid is PID; it runs
                sleep with INNER_MARKER=EXTRA (default pidns-inner-marker)

Whatever is read lands in a shared file mapping of OUT, so bytes copied survive
this process being SIGKILLed right after the syscall returns: the test searches
OUT for the secret. Each step that returns prints a line at once ("opened FD",
"read N" with N the bytes or -errno, ...), so a test can tell at which step the
guardian killed us. Nothing here catches or masks a signal.

exit status: 0 when every step ran (whatever the reads returned), 2 when a step
before the read failed, 3 without IA32 emulation, 4 without io_uring, 5 when
the local pid cannot be made.
"""

import ctypes
import errno
import fcntl
import mmap
import os
import shutil
import signal
import struct
import sys
import time

libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int,
                      ctypes.c_int, ctypes.c_int, ctypes.c_long]
libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
libc.read.restype = ctypes.c_ssize_t
libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
libc.pread.restype = ctypes.c_ssize_t
libc.pread.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.process_vm_readv.restype = ctypes.c_ssize_t
libc.pwrite.restype = ctypes.c_ssize_t
libc.pwrite.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_long]
libc.mount.argtypes = [ctypes.c_char_p, ctypes.c_char_p, ctypes.c_char_p,
                       ctypes.c_ulong, ctypes.c_void_p]

ENV_SIZE = 64 * 1024
PAGE = mmap.PAGESIZE
LOW_LIMIT = 0xFFFFFFFF
MAP_32BIT = 0x40
PTRACE_ATTACH = 16
PTRACE_DETACH = 17
PTRACE_SEIZE = 0x4206
WALL = 0x40000000
CLONE_FILES = 0x400
CLONE_NEWNS = 0x20000
CLONE_NEWPID = 0x20000000
MS_PRIVATE = 1 << 18
MS_REC = 0x4000
AT_FDCWD = -100

# x86-64 syscall numbers
NR_CLONE = 56
NR_IO_URING_SETUP = 425
NR_IO_URING_ENTER = 426
NR_PIDFD_OPEN = 434
NR_PIDFD_GETFD = 438
# i386 syscall numbers, for int $0x80
NR32_PTRACE = 26
NR32_PROCESS_VM_READV = 347

IORING_OFF_SQ_RING = 0
IORING_OFF_CQ_RING = 0x8000000
IORING_OFF_SQES = 0x10000000
IORING_FEAT_SINGLE_MMAP = 1
IORING_ENTER_GETEVENTS = 1
IORING_OP_OPENAT = 18
IORING_OP_READ = 22
NR_IO_URING_REGISTER = 427
IORING_REGISTER_FILES = 2
IOSQE_FIXED_FILE = 1
IOSQE_ASYNC = 16
IOSQE_IO_LINK = 4
IORING_SETUP_SINGLE_ISSUER = 1 << 12
IORING_SETUP_DEFER_TASKRUN = 1 << 13
NR_PERF_EVENT_OPEN = 298
PERF_TYPE_SOFTWARE = 1
PERF_COUNT_SW_CPU_CLOCK = 0
CLONE_NEWUSER = 0x10000000

# int80(args): rdi points at seven u32 (eax, ebx, ecx, edx, esi, edi, ebp).
# It loads them, does int $0x80 and returns eax sign-extended, so -errno reads
# as negative. rbx and rbp are callee-saved in the x86-64 ABI: pushed, popped.
INT80_STUB = bytes([
    0x53,                    # push rbx
    0x55,                    # push rbp
    0x49, 0x89, 0xFB,        # mov r11, rdi
    0x41, 0x8B, 0x03,        # mov eax, [r11]
    0x41, 0x8B, 0x5B, 0x04,  # mov ebx, [r11+4]
    0x41, 0x8B, 0x4B, 0x08,  # mov ecx, [r11+8]
    0x41, 0x8B, 0x53, 0x0C,  # mov edx, [r11+12]
    0x41, 0x8B, 0x73, 0x10,  # mov esi, [r11+16]
    0x41, 0x8B, 0x7B, 0x14,  # mov edi, [r11+20]
    0x41, 0x8B, 0x6B, 0x18,  # mov ebp, [r11+24]
    0xCD, 0x80,              # int 0x80
    0x48, 0x98,              # cdqe
    0x5D,                    # pop rbp
    0x5B,                    # pop rbx
    0xC3,                    # ret
])


class IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


class CompatIoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_uint32), ("len", ctypes.c_uint32)]


class SqOffsets(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in (
        "head", "tail", "ring_mask", "ring_entries", "flags", "dropped",
        "array", "resv1")] + [("user_addr", ctypes.c_uint64)]


class CqOffsets(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in (
        "head", "tail", "ring_mask", "ring_entries", "overflow", "cqes",
        "flags", "resv1")] + [("user_addr", ctypes.c_uint64)]


class UringParams(ctypes.Structure):
    _fields_ = [(name, ctypes.c_uint32) for name in (
        "sq_entries", "cq_entries", "flags", "sq_thread_cpu",
        "sq_thread_idle", "features", "wq_fd")] + [
        ("resv", ctypes.c_uint32 * 3),
        ("sq_off", SqOffsets),
        ("cq_off", CqOffsets),
    ]


class Sqe(ctypes.Structure):
    _fields_ = [
        ("opcode", ctypes.c_uint8),
        ("flags", ctypes.c_uint8),
        ("ioprio", ctypes.c_uint16),
        ("fd", ctypes.c_int32),
        ("off", ctypes.c_uint64),
        ("addr", ctypes.c_uint64),
        ("len", ctypes.c_uint32),
        ("op_flags", ctypes.c_uint32),  # open_flags for OPENAT, rw_flags for READ
        ("user_data", ctypes.c_uint64),
        ("buf_index", ctypes.c_uint16),
        ("personality", ctypes.c_uint16),
        ("file_index", ctypes.c_int32),
        ("addr3", ctypes.c_uint64),
        ("pad2", ctypes.c_uint64),
    ]


class Cqe(ctypes.Structure):
    _fields_ = [("user_data", ctypes.c_uint64), ("res", ctypes.c_int32),
                ("flags", ctypes.c_uint32)]


assert ctypes.sizeof(UringParams) == 120 and ctypes.sizeof(Sqe) == 64


def say(*words):
    # One write per line, at once: the guardian may kill us at the very next
    # syscall, and print would split the line under PYTHONUNBUFFERED.
    os.write(1, (" ".join(str(word) for word in words) + "\n").encode())


def result(r):
    """A libc return value as the tests read it: itself, or -errno on failure."""
    return r if r >= 0 else -ctypes.get_errno()


def syscall(nr, *args):
    return result(libc.syscall(ctypes.c_long(nr), *(ctypes.c_long(a) for a in args)))


def map_memory(size, flags, fd=-1, offset=0, prot=mmap.PROT_READ | mmap.PROT_WRITE):
    addr = libc.mmap(None, size, prot, flags, fd, offset)
    if addr is None or addr == ctypes.c_void_p(-1).value:
        raise OSError(ctypes.get_errno(), "mmap failed")
    return addr


def shared_buffer(out, size, flags=0):
    """OUT mapped shared, by address: what the kernel copies there is in the
    file's page cache at once, and stays there if we are killed a moment later."""
    fd = os.open(out, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    os.ftruncate(fd, size)
    addr = map_memory(size, mmap.MAP_SHARED | flags, fd)
    os.close(fd)
    return addr


def opened(path, flags=os.O_RDONLY, dir_fd=None, label="opened"):
    """Open and say so, or say why not and exit 2."""
    try:
        fd = os.open(path, flags, dir_fd=dir_fd)
    except OSError as err:
        say(f"open {path} returned", -err.errno)
        sys.exit(2)
    say(label, fd)
    return fd


def read_into(fd, addr, size, offset=None):
    if offset is None:
        n = result(libc.read(fd, addr, size))
    else:
        n = result(libc.pread(fd, addr, size, offset))
    say("read", n)
    return n


def maps(pid):
    """(start, end, perms, name) of each mapping of PID; [] when maps is unreadable."""
    try:
        with open(f"/proc/{pid}/maps") as lines:
            rows = [line.split() for line in lines]
    except OSError as err:
        say(f"maps unreadable ({err.strerror})")
        return []
    spans = []
    for row in rows:
        start, end = row[0].split("-")
        spans.append((int(start, 16), int(end, 16), row[1], row[5] if len(row) > 5 else ""))
    return spans


def stack_range(pid):
    for start, end, _, name in maps(pid):
        if name == "[stack]":
            return start, end
    say("no [stack] found: reading one page at 0x10000")
    return 0x10000, 0x10000 + PAGE


def describe(status):
    if os.WIFSIGNALED(status):
        return f"signal {os.WTERMSIG(status)}"
    return str(os.WEXITSTATUS(status))


def environ(pid, out):
    buf = shared_buffer(out, ENV_SIZE)
    fd = opened(f"/proc/{pid}/environ")
    read_into(fd, buf, ENV_SIZE)


def mem(pid, out):
    start, end = stack_range(pid)
    buf = shared_buffer(out, end - start)
    fd = opened(f"/proc/{pid}/mem")
    read_into(fd, buf, end - start, start)


def dirfd(pid, out):
    buf = shared_buffer(out, ENV_SIZE)
    directory = opened(f"/proc/{pid}", os.O_RDONLY | os.O_DIRECTORY, label="dir opened")
    fd = opened("environ", dir_fd=directory)
    read_into(fd, buf, ENV_SIZE)


def cwd(pid, out):
    buf = shared_buffer(out, ENV_SIZE)  # before chdir: OUT may be relative
    try:
        os.chdir(f"/proc/{pid}")
    except OSError as err:
        say("chdir returned", -err.errno)
        sys.exit(2)
    say("chdir done")
    fd = opened("environ")
    read_into(fd, buf, ENV_SIZE)


def task(pid, out):
    buf = shared_buffer(out, ENV_SIZE)
    tids = sorted(int(tid) for tid in os.listdir(f"/proc/{pid}/task"))
    # a thread other than the leader is the path a per-pid check may miss
    others = [tid for tid in tids if tid != pid]
    tid = others[0] if others else pid
    say("task", tid)
    fd = opened(f"/proc/{pid}/task/{tid}/environ")
    read_into(fd, buf, ENV_SIZE)


def creat_mem(pid, out):
    # The open alone is the attack: a write-only descriptor on mem could later
    # patch the target. We never write, so the target is left as it was.
    shared_buffer(out, PAGE)  # stays zeros, but OUT exists in every mode
    opened(f"/proc/{pid}/mem", os.O_WRONLY)
    say("not writing")


def int80(nr, *args):
    """Make i386 syscall NR from this 64-bit process: int $0x80 always goes
    through the kernel's compat table, whatever mode the caller runs in."""
    page = map_memory(PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    ctypes.memmove(page, INT80_STUB, len(INT80_STUB))
    if libc.mprotect(page, PAGE, mmap.PROT_READ | mmap.PROT_EXEC) != 0:
        raise OSError(ctypes.get_errno(), "mprotect failed")
    regs = [nr, *args] + [0] * (6 - len(args))
    regs = (ctypes.c_uint32 * 7)(*(r & 0xFFFFFFFF for r in regs))
    stub = ctypes.CFUNCTYPE(ctypes.c_int64, ctypes.c_void_p)(page)
    return stub(ctypes.addressof(regs))


def no_ia32(r):
    if r == -errno.ENOSYS:
        say("no IA32 emulation: int $0x80 returned -ENOSYS")
        sys.exit(3)


def int80_attach(pid, out, hold):
    shared_buffer(out, PAGE)  # stays zeros, but OUT exists in every mode
    r = int80(NR32_PTRACE, PTRACE_ATTACH, pid, 0, 0)
    say("ptrace32 returned", r)
    no_ia32(r)
    if r != 0:
        return
    time.sleep(float(hold or 0))
    # Exiting would detach too, but would leave the target in the SIGSTOP that
    # PTRACE_ATTACH sent: take that stop and detach without the signal.
    os.waitpid(pid, WALL)
    say("detached", result(libc.ptrace(PTRACE_DETACH, pid, None, None)))


def low_range(pid):
    """Where in PID a 32-bit iovec can point: the first readable mapping
    below 4 GiB (a non-PIE executable), else a truncated address. The aim is
    to prove that the syscall is stopped, not to read anything in particular."""
    spans = maps(pid)
    for start, end, perms, _ in spans:
        if perms.startswith("r") and end <= LOW_LIMIT:
            return start, min(end - start, ENV_SIZE)
    start = (spans[0][0] if spans else 0x10000) & LOW_LIMIT
    say(f"no readable mapping below 4 GiB: reading at {start:#x}")
    return start, PAGE


def int80_readv(pid, out):
    start, size = low_range(pid)
    # The compat iovec holds 32-bit pointers: our buffer and the iovecs
    # themselves must sit below 4 GiB, which MAP_32BIT gives.
    buf = shared_buffer(out, size, MAP_32BIT)
    iovs = map_memory(PAGE, mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | MAP_32BIT)
    assert buf + size <= LOW_LIMIT and iovs + PAGE <= LOW_LIMIT
    local = CompatIoVec.from_address(iovs)
    remote = CompatIoVec.from_address(iovs + ctypes.sizeof(CompatIoVec))
    local.base, local.len = buf, size
    remote.base, remote.len = start, size
    r = int80(NR32_PROCESS_VM_READV, pid, iovs, 1, iovs + ctypes.sizeof(CompatIoVec), 1, 0)
    say("readv32 returned", r)
    no_ia32(r)


def pidfd_getfd(pid, out, target_fd):
    buf = shared_buffer(out, ENV_SIZE)
    pidfd = syscall(NR_PIDFD_OPEN, pid, 0)
    say("pidfd", pidfd)
    if pidfd < 0:
        sys.exit(2)
    fd = syscall(NR_PIDFD_GETFD, pidfd, int(target_fd or 0), 0)
    say("got", fd)
    if fd < 0:
        sys.exit(2)
    # The open file, its offset and flags are the target's too. pread leaves
    # the offset alone; a pipe or terminal, which cannot pread, is read
    # non-blocking, and its flags go back as they were afterwards.
    if read_into(fd, buf, ENV_SIZE, 0) != -errno.ESPIPE:
        return
    flags = fcntl.fcntl(fd, fcntl.F_GETFL)
    fcntl.fcntl(fd, fcntl.F_SETFL, flags | os.O_NONBLOCK)
    read_into(fd, buf, ENV_SIZE)  # -EAGAIN is just printed
    fcntl.fcntl(fd, fcntl.F_SETFL, flags)


def accomplice(fd, buf):
    """The clone child: read through descriptor FD of the table it shares with
    the parent, as soon as the parent's open puts something there. It is a raw
    copy of the interpreter that os.fork never prepared, so it leaves by
    os._exit, never through the interpreter's exit."""
    n = -errno.EBADF
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        n = result(libc.pread(fd, buf, ENV_SIZE, 0))
        if n > 0:
            break
        time.sleep(0.001)  # -EBADF until the parent has opened
    say("accomplice read", n)
    os._exit(0 if n > 0 else 1)


def clone_files(pid, out):
    buf = shared_buffer(out, ENV_SIZE)
    # The table is shared, so the parent's next open takes the lowest free
    # number, which a probe tells us now.
    probe = os.open("/dev/null", os.O_RDONLY)
    os.close(probe)
    say("predicted fd", probe)
    # Not CLONE_VM: the child is a fork-like copy, on a copy of our stack.
    child = syscall(NR_CLONE, CLONE_FILES | signal.SIGCHLD, 0, 0, 0, 0)
    if child == 0:
        accomplice(probe, buf)
    say("accomplice pid", child)
    if child < 0:
        sys.exit(2)
    time.sleep(0.2)
    opened(f"/proc/{pid}/environ")
    _, status = os.waitpid(child, 0)
    say("accomplice exit", describe(status))


class Ring:
    """A bare io_uring: one submission at a time, waited for."""

    def __init__(self, entries=4, flags=0):
        params = UringParams()
        params.flags = flags
        self.fd = syscall(NR_IO_URING_SETUP, entries, ctypes.addressof(params))
        if self.fd < 0:
            say("io_uring unavailable", -self.fd, errno.errorcode.get(-self.fd, ""))
            sys.exit(4)
        sq, cq = params.sq_off, params.cq_off
        sq_size = sq.array + params.sq_entries * 4
        cq_size = cq.cqes + params.cq_entries * ctypes.sizeof(Cqe)
        shared = mmap.MAP_SHARED | mmap.MAP_POPULATE
        if params.features & IORING_FEAT_SINGLE_MMAP:
            sq_size = cq_size = max(sq_size, cq_size)
        sq_ring = map_memory(sq_size, shared, self.fd, IORING_OFF_SQ_RING)
        if params.features & IORING_FEAT_SINGLE_MMAP:
            cq_ring = sq_ring
        else:
            cq_ring = map_memory(cq_size, shared, self.fd, IORING_OFF_CQ_RING)
        self.sqes = map_memory(params.sq_entries * ctypes.sizeof(Sqe), shared,
                               self.fd, IORING_OFF_SQES)
        u32 = ctypes.c_uint32.from_address
        self.sq_tail, self.sq_mask = u32(sq_ring + sq.tail), u32(sq_ring + sq.ring_mask).value
        self.sq_array = sq_ring + sq.array
        self.cq_head, self.cq_mask = u32(cq_ring + cq.head), u32(cq_ring + cq.ring_mask).value
        self.cqes = cq_ring + cq.cqes

    def submit(self, **fields):
        """Submit one SQE with FIELDS and do not wait: io_uring_enter's result."""
        self.queue(fields)
        return syscall(NR_IO_URING_ENTER, self.fd, 1, 0, 0, 0, 0)

    def queue(self, fields):
        """Writes one SQE with FIELDS; the next io_uring_enter, a syscall,
        orders these stores before the kernel reads the tail."""
        tail = self.sq_tail.value
        index = tail & self.sq_mask
        sqe = Sqe.from_address(self.sqes + index * ctypes.sizeof(Sqe))
        ctypes.memset(ctypes.addressof(sqe), 0, ctypes.sizeof(Sqe))
        for name, value in fields.items():
            setattr(sqe, name, value)
        ctypes.c_uint32.from_address(self.sq_array + index * 4).value = index
        self.sq_tail.value = tail + 1

    def run(self, **fields):
        """Submit one SQE with FIELDS and wait: its result, or io_uring_enter's error."""
        self.queue(fields)
        r = syscall(NR_IO_URING_ENTER, self.fd, 1, 1, IORING_ENTER_GETEVENTS, 0, 0)
        if r < 0:
            return r
        head = self.cq_head.value
        cqe = Cqe.from_address(self.cqes + (head & self.cq_mask) * ctypes.sizeof(Cqe))
        res = cqe.res
        self.cq_head.value = head + 1
        return res


def io_uring(pid, out):
    buf = shared_buffer(out, ENV_SIZE)
    ring = Ring()
    path = ctypes.create_string_buffer(f"/proc/{pid}/environ".encode())
    fd = ring.run(opcode=IORING_OP_OPENAT, fd=AT_FDCWD, addr=ctypes.addressof(path),
                  op_flags=os.O_RDONLY)
    say("uring open returned", fd)
    if fd < 0:
        sys.exit(2)
    n = ring.run(opcode=IORING_OP_READ, fd=fd, addr=buf, len=ENV_SIZE, off=0)
    say("uring read returned", n)


def io_uring_direct(pid, out):
    buf = shared_buffer(out, ENV_SIZE)
    ring = Ring()
    # One empty slot in the ring's own file table; the open fills it.
    slots = (ctypes.c_int32 * 1)(-1)
    r = syscall(NR_IO_URING_REGISTER, ring.fd, IORING_REGISTER_FILES, ctypes.addressof(slots), 1)
    say("registered", r)
    if r < 0:
        sys.exit(2)
    path = ctypes.create_string_buffer(f"/proc/{pid}/environ".encode())
    r = ring.run(opcode=IORING_OP_OPENAT, fd=AT_FDCWD, addr=ctypes.addressof(path),
                 op_flags=os.O_RDONLY, file_index=1)
    say("uring direct open returned", r)
    if r < 0:
        sys.exit(2)
    n = ring.run(opcode=IORING_OP_READ, flags=IOSQE_FIXED_FILE, fd=0, addr=buf,
                 len=ENV_SIZE, off=0)
    say("uring read returned", n)


def io_uring_deferred(pid, out):
    """An io_uring open whose completion waits until we ask for it
    (DEFER_TASKRUN): the worker has already put the descriptor in our table,
    and a plain pread of it runs before any completion is seen."""
    buf = shared_buffer(out, ENV_SIZE)
    ring = Ring(flags=IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN)
    probe = os.open("/dev/null", os.O_RDONLY)
    os.close(probe)
    path = ctypes.create_string_buffer(f"/proc/{pid}/environ".encode())
    r = ring.submit(opcode=IORING_OP_OPENAT, flags=IOSQE_ASYNC, fd=AT_FDCWD,
                    addr=ctypes.addressof(path), op_flags=os.O_RDONLY)
    say("submitted", r, "polling fd", probe)
    deadline = time.monotonic() + 5
    n = -errno.EBADF
    while n == -errno.EBADF and time.monotonic() < deadline:
        n = result(libc.pread(probe, buf, ENV_SIZE, 0))
    say("read", n)


def late_mem(pid, out):
    """A clone(CLONE_FILES) sharer asleep while the parent opens /proc/PID/mem
    read-write (and is killed for it); it wakes afterwards and reads and writes
    the target's stack through the descriptor it shares."""
    start, end = stack_range(pid)
    size = min(end - start, PAGE)
    buf = shared_buffer(out, size)
    probe = os.open("/dev/null", os.O_RDONLY)
    os.close(probe)
    child = syscall(NR_CLONE, CLONE_FILES | signal.SIGCHLD, 0, 0, 0, 0)
    if child == 0:
        time.sleep(1)  # blocked in the kernel through the parent's open
        n = result(libc.pread(probe, buf, size, end - size))
        say("sharer read", n)
        w = result(libc.pwrite(probe, buf, n, end - size)) if n > 0 else n
        say("sharer wrote", w)
        os._exit(0)
    say("sharer pid", child)
    time.sleep(0.2)
    opened(f"/proc/{pid}/mem", os.O_RDWR)
    os.waitpid(child, 0)


def opened_before(pid, out, flags=os.O_RDONLY):
    """Opens a thread's mem now and waits for that thread to exit (the test
    makes PID a ward meanwhile): the descriptor, and PID's stack, mapped at
    OUT."""
    start, end = stack_range(pid)
    buf = shared_buffer(out, end - start)
    tid = next(int(t) for t in os.listdir(f"/proc/{pid}/task") if int(t) != pid)
    fd = opened(f"/proc/{pid}/task/{tid}/mem", flags)
    while os.path.exists(f"/proc/{pid}/task/{tid}"):
        time.sleep(0.05)
    say("thread gone")
    return fd, buf, start, end


def thread_mem(pid, out):
    fd, buf, start, end = opened_before(pid, out)
    read_into(fd, buf, end - start, start)


def uring_inline(pid, out):
    ring = Ring()
    fd, buf, start, end = opened_before(pid, out, os.O_RDONLY | os.O_NONBLOCK)
    n = ring.run(opcode=IORING_OP_READ, fd=fd, addr=buf, len=end - start, off=start)
    say("uring read returned", n)


def uring_linked(pid, out):
    """The linked read runs before "slept" is said, or not at all."""
    ring = Ring(entries=8)
    fd, buf, start, end = opened_before(pid, out, os.O_RDONLY | os.O_NONBLOCK)
    r, w = os.pipe()
    one = ctypes.create_string_buffer(1)
    ring.queue(dict(opcode=IORING_OP_READ, fd=r, addr=ctypes.addressof(one), len=1,
                    off=0, flags=IOSQE_IO_LINK))
    ring.queue(dict(opcode=IORING_OP_READ, fd=fd, addr=buf, len=end - start, off=start))
    say("submitted", syscall(NR_IO_URING_ENTER, ring.fd, 2, 0, 0, 0, 0))
    if os.fork() == 0:
        time.sleep(0.3)
        os.write(w, b"x")
        os._exit(0)
    time.sleep(2)  # the pipe's wake-up runs the linked read as task work here
    say("slept")
    head = ring.cq_head.value
    for i in range(2):
        cqe = Cqe.from_address(ring.cqes + ((head + i) & ring.cq_mask) * ctypes.sizeof(Cqe))
        say("cqe", cqe.res)


def perf(pid, out):
    """perf_event_open on PID: a sampling event could copy its registers and
    user stack (PERF_SAMPLE_STACK_USER) at each sample."""
    attr = (ctypes.c_uint8 * 128)()
    struct.pack_into("<IIQ", attr, 0, PERF_TYPE_SOFTWARE, 128, PERF_COUNT_SW_CPU_CLOCK)
    # exclude_kernel and exclude_hv: what an unprivileged user may sample
    struct.pack_into("<Q", attr, 40, (1 << 5) | (1 << 6))
    fd = syscall(NR_PERF_EVENT_OPEN, ctypes.addressof(attr), pid, -1, -1, 0)
    say("perf_event_open returned", fd)


def ns_readv(pid, out):
    """process_vm_readv from inside the target's own user and pid namespace
    (as a process of a rootless container would), by its local pid."""
    for ns, flag in (("user", CLONE_NEWUSER), ("pid", CLONE_NEWPID)):
        fd = os.open(f"/proc/{pid}/ns/{ns}", os.O_RDONLY)
        r = result(libc.setns(fd, flag))
        say("setns", ns, r)
        if r < 0:
            sys.exit(2)
    with open(f"/proc/{pid}/status") as status:
        local = int(next(line for line in status if line.startswith("NSpid")).split()[-1])
    start, end = stack_range(pid)
    size = min(end - start, ENV_SIZE)
    buf = shared_buffer(out, size)
    child = os.fork()
    if child == 0:
        local_iov, remote_iov = IoVec(buf, size), IoVec(end - size, size)
        n = result(libc.process_vm_readv(local, ctypes.byref(local_iov), 1,
                                         ctypes.byref(remote_iov), 1, 0))
        say("readv", n)
        os._exit(0)
    _, status = os.waitpid(child, 0)
    say("reader exit", describe(status))


def ns_init(pid, buf, marker):
    """Pid 1 of the new namespace: make a process whose local pid is PID, then
    seize and read it by that number. Returns the exit status."""
    # Our own procfs: its pid numbers, and its maps, are this namespace's.
    if libc.mount(b"proc", b"/proc", b"proc", 0, None) != 0:
        say("mount proc returned", -ctypes.get_errno())
        return 2
    if pid < 2:
        say(f"local pid {pid} cannot be made: pid 1 is this namespace's init")
        return 5
    try:
        with open("/proc/sys/kernel/ns_last_pid", "w") as last:
            last.write(str(pid - 1))
    except OSError as err:
        say(f"local pid {pid} cannot be made: ns_last_pid refused {pid - 1} ({err.strerror})")
        return 5
    # Close-on-exec: end of file on the pipe means the target has exec'd.
    ready, exec_done = os.pipe()
    target = os.fork()
    if target == 0:
        os.close(ready)
        say("local target", os.getpid())
        sleep = shutil.which("sleep") or "/bin/sleep"
        try:
            os.execve(sleep, ["sleep", "1000"], {"INNER_MARKER": marker})
        finally:
            os._exit(127)
    os.close(exec_done)
    os.read(ready, 1)
    if target != pid:
        say(f"local pid {pid} cannot be made: the target got {target}")
        os.kill(target, signal.SIGKILL)
        return 5
    say("seize returned", result(libc.ptrace(PTRACE_SEIZE, target, None, None)))
    start, end = stack_range(target)
    # The top page of the stack holds the environment strings.
    start = max(start, end - PAGE)
    local = IoVec(buf, PAGE)
    remote = IoVec(start, end - start)
    n = libc.process_vm_readv(target, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
    say("readv returned", result(n))
    os.kill(target, signal.SIGKILL)
    os.waitpid(target, 0)
    return 0


def pidns_local(pid, out, marker):
    buf = shared_buffer(out, PAGE)
    if libc.unshare(CLONE_NEWNS | CLONE_NEWPID) != 0:
        say("unshare returned", -ctypes.get_errno())
        sys.exit(2)
    # Private mounts, so the procfs mounted inside does not reach the host.
    if libc.mount(None, b"/", None, MS_REC | MS_PRIVATE, None) != 0:
        say("mount private returned", -ctypes.get_errno())
        sys.exit(2)
    init = os.fork()  # our first child is pid 1 of the new namespace
    if init == 0:
        status = 1
        try:
            status = ns_init(pid, buf, marker or "pidns-inner-marker")
        except Exception:
            sys.excepthook(*sys.exc_info())
        finally:
            os._exit(status)  # never back into the outer process's code
    _, status = os.waitpid(init, 0)
    if os.WIFSIGNALED(status):
        # pass the death on, as a shell would, so the test sees it on us
        sig = os.WTERMSIG(status)
        say("namespace init killed by signal", sig)
        if sig != signal.SIGKILL:  # which has no handler to reset
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    sys.exit(os.WEXITSTATUS(status))


class FileHandle(ctypes.Structure):
    _fields_ = [("handle_bytes", ctypes.c_uint), ("handle_type", ctypes.c_int),
                ("f_handle", ctypes.c_ubyte * 128)]


def handle(pid, out, target_fd):
    AT_FDCWD, AT_SYMLINK_FOLLOW = -100, 0x400
    file_handle = FileHandle(handle_bytes=128)
    mount_id = ctypes.c_int()
    path = f"/proc/{pid}/fd/{target_fd or 0}".encode()
    r = result(libc.name_to_handle_at(AT_FDCWD, path, ctypes.byref(file_handle),
                                      ctypes.byref(mount_id), AT_SYMLINK_FOLLOW))
    say("name_to_handle_at returned", r)
    if r < 0:
        sys.exit(2)
    mount_fd = os.memfd_create("mount")
    fd = result(libc.open_by_handle_at(mount_fd, ctypes.byref(file_handle), os.O_RDONLY))
    say("opened", fd)
    if fd < 0:
        sys.exit(2)
    read_into(fd, shared_buffer(out, 4096), 4096, 0)


def main():
    if len(sys.argv) < 4:
        sys.exit(__doc__)
    mode, pid, out = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    extra = sys.argv[4] if len(sys.argv) > 4 else None
    simple = {"environ": environ, "mem": mem, "dirfd": dirfd, "cwd": cwd,
              "task": task, "creat-mem": creat_mem, "int80-readv": int80_readv,
              "clone-files": clone_files, "io-uring": io_uring,
              "io-uring-direct": io_uring_direct, "io-uring-deferred": io_uring_deferred,
              "late-mem": late_mem, "thread-mem": thread_mem,
              "uring-inline": uring_inline, "uring-linked": uring_linked, "perf": perf, "ns-readv": ns_readv}
    with_extra = {"int80-attach": int80_attach, "pidfd-getfd": pidfd_getfd,
                  "pidns-local": pidns_local, "handle": handle}
    if mode in simple:
        simple[mode](pid, out)
    elif mode in with_extra:
        with_extra[mode](pid, out, extra)
    else:
        sys.exit(f"unknown mode {mode}\n{__doc__}")
    sys.exit(0)


main()
