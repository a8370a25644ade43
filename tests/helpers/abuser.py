"""A hostile client for the abuse tests: it speaks the guardian's protocol by
hand (a 4-byte little-endian length, a JSON header, raw bytes after it).

usage:
  abuser.py request SOCKET JSON [PAYLOAD_LEN]
      send one raw request (with PAYLOAD_LEN bytes after it), print the reply
  abuser.py orphan SOCKET JSON
      a child connects and sends the request, then exits and is reaped; print
      its pid, wait for a line on stdin, then read the reply on the connection
      the child made and print it
  abuser.py flood SOCKET IDLE STALLED SECONDS
      open IDLE connections that send nothing and STALLED connections that send
      requests and never read a reply, hold them for SECONDS, then print how
      many the guardian took and how many it refused
  abuser.py after-exec SOCKET JSON
      connect, then hand the connection to a child and exec `sleep` (as an
      `exec` client becomes its command); the child sends the request on the
      connection and prints the reply

Like the real client, it makes itself non-dumpable before it connects, unless
ABUSER_DUMPABLE is set in the environment.
"""

import ctypes
import json
import os
import resource
import socket
import struct
import sys
import time


PR_SET_DUMPABLE = 4


def frame(request):
    data = json.dumps(request).encode()
    return struct.pack("<I", len(data)) + data


def recv_exact(sock, n):
    data = b""
    while len(data) < n:
        chunk = sock.recv(n - len(data))
        if not chunk:
            raise EOFError("the guardian closed the connection")
        data += chunk
    return data


def read_reply(sock):
    (length,) = struct.unpack("<I", recv_exact(sock, 4))
    reply = json.loads(recv_exact(sock, length))
    lens = reply.get("lens", [])
    reply["secret_bytes"] = [recv_exact(sock, n).decode("latin-1") for n in lens]
    return reply


def request(path, header, payload_len=0):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    sock.sendall(frame(json.loads(header)) + b"x" * payload_len)
    try:
        print(json.dumps(read_reply(sock)))
    except EOFError as err:
        print(json.dumps({"reply": "closed", "message": str(err)}))


def after_exec(path, header):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.connect(path)
    child = os.fork()
    if child == 0:
        # Wait until the process that connected has exec'd, as a thief would.
        parent = os.getppid()
        while open(f"/proc/{parent}/comm").read().strip() != "sleep":
            time.sleep(0.01)
        sock.sendall(frame(json.loads(header)))
        try:
            print(json.dumps(read_reply(sock)), flush=True)
        except EOFError as err:
            print(json.dumps({"reply": "closed", "message": str(err)}), flush=True)
        os._exit(0)
    sock.close()
    os.execvp("sleep", ["sleep", "5"])


def orphan(path, header):
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    child = os.fork()
    if child == 0:
        # The peer credentials are the connecting process's: this child's.
        sock.connect(path)
        sock.sendall(frame(json.loads(header)))
        os._exit(0)
    os.waitpid(child, 0)
    print(child, flush=True)
    sys.stdin.readline()
    try:
        print(json.dumps(read_reply(sock)), flush=True)
    except (EOFError, ConnectionError) as err:
        print(json.dumps({"reply": "closed", "message": str(err)}), flush=True)


def flood(path, idle, stalled, seconds):
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    # As many as this process may open, keeping a few descriptors spare.
    room = max(0, hard - 32)
    if idle + stalled > room:
        stalled = stalled * room // (idle + stalled)
        idle = room - stalled
    held, refused = [], 0
    status = frame({"op": "status"})
    for n in range(idle + stalled):
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.connect(path)
        sock.setblocking(False)
        if n >= idle:
            try:
                sock.send(status * 64)
            except OSError:
                pass
        held.append(sock)
    print("open", flush=True)
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        time.sleep(0.2)
    for sock in held:
        try:
            # A refused connection was told why and closed by the guardian.
            data = sock.recv(65536)
            if b"too many connections" in data or data == b"":
                refused += 1
        except BlockingIOError:
            pass
        except OSError:
            refused += 1
    print(
        json.dumps({"opened": len(held), "held": len(held) - refused, "refused": refused}),
        flush=True,
    )


def main():
    mode, path = sys.argv[1], sys.argv[2]
    if "ABUSER_DUMPABLE" not in os.environ:
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    if mode == "request":
        request(path, sys.argv[3], int(sys.argv[4]) if len(sys.argv) > 4 else 0)
    elif mode == "orphan":
        orphan(path, sys.argv[3])
    elif mode == "after-exec":
        after_exec(path, sys.argv[3])
    elif mode == "flood":
        flood(path, int(sys.argv[3]), int(sys.argv[4]), float(sys.argv[5]))
    else:
        sys.exit(f"unknown mode {mode}")


if __name__ == "__main__":
    main()
