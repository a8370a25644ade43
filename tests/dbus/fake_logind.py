#!/usr/bin/python3
"""Fake org.freedesktop.login1 for the tests (tests/src/logind.rs): owns the
name, answers Manager.GetSessionByPID / GetSession, exposes Session
properties, and emits Session.Lock / Manager.PrepareForSleep when told to on
its stdin ("lock ID", "sleep true|false", "add ID LEADERPID"), answering
"ok" to each line. "impostor ID" sends a look-alike Lock of session ID from
another connection, once to the last caller of GetSessionByPID (the
guardian) and once to everyone. Each GetSessionByPID call is printed as
"asked PID"; each lock as "emitted ID NS" before the signal and "received
ESCAPED-ID NS" once a subscriber of its own has it (CLOCK_MONOTONIC)."""
import os, sys, time
import dbus, dbus.service, dbus.mainloop.glib
from gi.repository import GLib

BUS = "org.freedesktop.login1"
MGR_PATH = "/org/freedesktop/login1"
MGR = "org.freedesktop.login1.Manager"
SES = "org.freedesktop.login1.Session"
PROPS = "org.freedesktop.DBus.Properties"

def spath(sid):
    # logind escapes session ids in paths; test ids are [A-Za-z0-9_] only.
    return dbus.ObjectPath(MGR_PATH + "/session/_3" + sid if sid[:1].isdigit() else MGR_PATH + "/session/" + sid)

class Session(dbus.service.Object):
    def __init__(self, bus, sid, leader, uid):
        super().__init__(bus, spath(sid))
        self.props = {"Id": dbus.String(sid), "Leader": dbus.UInt32(leader),
                      "User": dbus.Struct((dbus.UInt32(uid), spath(sid)), signature="uo"),
                      "Scope": dbus.String("session-%s.scope" % sid),
                      "LockedHint": dbus.Boolean(False)}
    @dbus.service.method(PROPS, in_signature="ss", out_signature="v")
    def Get(self, iface, name): return self.props[name]
    @dbus.service.method(PROPS, in_signature="s", out_signature="a{sv}")
    def GetAll(self, iface): return self.props
    @dbus.service.signal(SES, signature="")
    def Lock(self): pass
    @dbus.service.signal(SES, signature="")
    def Unlock(self): pass

class Manager(dbus.service.Object):
    def __init__(self, bus):
        super().__init__(bus, MGR_PATH)
        self.bus, self.sessions, self.caller = bus, {}, None
    def add(self, sid, leader, uid=0):
        self.sessions[sid] = Session(self.bus, sid, leader, uid)
    @dbus.service.method(MGR, in_signature="u", out_signature="o", sender_keyword="sender")
    def GetSessionByPID(self, pid, sender=None):
        self.caller = sender
        print("asked", pid, flush=True)
        try:
            sid_of_pid = os.getsid(pid) if pid else None
        except ProcessLookupError:
            sid_of_pid = None
        for sid, s in self.sessions.items():
            if int(s.props["Leader"]) == sid_of_pid:
                return spath(sid)
        raise dbus.exceptions.DBusException("PID %d does not belong to any known session" % pid,
                                            name="org.freedesktop.login1.NoSessionForPID")
    @dbus.service.method(MGR, in_signature="s", out_signature="o")
    def GetSession(self, sid):
        if sid in self.sessions: return spath(sid)
        raise dbus.exceptions.DBusException("No session", name="org.freedesktop.login1.NoSuchSession")
    @dbus.service.signal(MGR, signature="b")
    def PrepareForSleep(self, start): pass
    # Test control, so a test can drive it over the bus too.
    @dbus.service.method("org.freedesktop.login1.Test", in_signature="su", out_signature="o")
    def AddSession(self, sid, leader): self.add(sid, leader); return spath(sid)
    @dbus.service.method("org.freedesktop.login1.Test", in_signature="s")
    def EmitLock(self, sid): self.sessions[sid].Lock()
    @dbus.service.method("org.freedesktop.login1.Test", in_signature="b")
    def EmitPrepareForSleep(self, b): self.PrepareForSleep(b)

def impostor(mgr, sid):
    """A Lock of session SID from a connection that does not own the name."""
    other = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
    for destination in (mgr.caller, None):
        message = dbus.lowlevel.SignalMessage(str(spath(sid)), SES, "Lock")
        if destination:
            message.set_destination(destination)
        other.send_message(message)
    other.flush()
    other.close()

def main():
    dbus.mainloop.glib.DBusGMainLoop(set_as_default=True)
    bus = dbus.SystemBus()          # honours DBUS_SYSTEM_BUS_ADDRESS
    name = dbus.service.BusName(BUS, bus, do_not_queue=True)
    mgr = Manager(bus)
    for arg in sys.argv[1:]:        # "ID:LEADERPID"
        sid, leader = arg.split(":"); mgr.add(sid, int(leader))
    pending = b""
    def on_stdin(fd, cond):
        nonlocal pending
        chunk = os.read(0, 4096)
        if not chunk: loop.quit(); return False
        pending += chunk
        while b"\n" in pending:
            line, pending = pending.split(b"\n", 1)
            w = line.decode().split()
            if not w: continue
            if w[0] == "lock":
                print("emitted", w[1], time.monotonic_ns(), flush=True)
                mgr.sessions[w[1]].Lock()
            elif w[0] == "unlock": mgr.sessions[w[1]].Unlock()
            elif w[0] == "sleep": mgr.PrepareForSleep(w[1] == "true")
            elif w[0] == "add": mgr.add(w[1], int(w[2]))
            elif w[0] == "impostor": impostor(mgr, w[1])
            print("ok", flush=True)
        return True
    # A plain subscriber on a connection of its own: when a Lock reaches
    # any client of the bus (the floor the guardian's latency is set against).
    listener = dbus.bus.BusConnection(os.environ["DBUS_SYSTEM_BUS_ADDRESS"])
    listener.add_signal_receiver(
        lambda path=None: print("received", path.rsplit("/", 1)[-1], time.monotonic_ns(), flush=True),
        signal_name="Lock", dbus_interface=SES, bus_name=BUS, path_keyword="path")
    GLib.io_add_watch(0, GLib.IO_IN | GLib.IO_HUP, on_stdin)
    print("ready", bus.get_unique_name(), flush=True)
    loop = GLib.MainLoop(); loop.run()

if __name__ == "__main__":
    main()
