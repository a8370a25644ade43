#!/bin/bash
# throwaway-systemd.sh: a throwaway systemd (PID 1 of its own
# pid+mount+cgroup+uts+ipc namespaces) for testing a service unit on a machine
# whose init is not systemd, and its teardown. xtask's install test uses it to
# start the installed unit with systemctl.
#
#   [SDNS_BIN=dest:src ...] throwaway-systemd.sh start NAME UNITFILE...   boot it with these units
#   throwaway-systemd.sh exec  NAME CMD...      run CMD inside (pid/mount/cgroup/uts/ipc ns)
#   throwaway-systemd.sh stop  NAME             kill the namespace, remove its cgroups, check
#   throwaway-systemd.sh check NAME             report leftovers (processes, mounts, cgroups)
#
# Environment: SDNS_BASE, an absolute directory under /tmp for its state
# (required); SDNS_BIN="dest:src" pairs (space separated) of files to install
# inside the namespace, e.g. SDNS_BIN=/usr/local/bin/ningen-shikkaku:/tmp/x/ningen-shikkaku
#
# What is private inside: /run, /tmp (with $SDNS_BASE bound back), /var/tmp,
# /var/log, /usr/local/bin, /dev (minimal), hostname, the cgroup2 tree (a
# subtree of the host's cgroup2 mount: $CG2/sdns-NAME), pid numbers.
# What is read-only inside: /proc/sys, /proc/sysrq-trigger, /sys (but not the
# cgroup2 mount): systemd as PID 1 writes sysctls (fs.nr_open, fs.file-max,
# kernel.core_pattern, net.unix.max_dgram_qlen); those are not namespaced
# and must not reach the host.
# Units: only those in $ST/units (SYSTEMD_UNIT_PATH), no generators, so the
# host's own services are never started inside.
set -euo pipefail

BASE=${SDNS_BASE:?set SDNS_BASE to a directory under /tmp}
SELF=$(readlink -f "$0")

cg2_mount() { awk '$9=="cgroup2"{print $5; exit}' /proc/self/mountinfo; }

die() { echo "sdns: $*" >&2; exit 1; }

ns_pid1() { # host pid of the namespace's PID 1
    local st=$BASE/$1
    [ -s "$st/unshare.pid" ] || return 1
    local u; u=$(cat "$st/unshare.pid")
    [ -d /proc/$u ] || return 1
    local c; c=$(cat /proc/$u/task/$u/children 2>/dev/null | awk '{print $1}')
    [ -n "$c" ] || return 1
    echo "$c"
}

write_units() { # $1 = unit dir
    local d=$1
    mkdir -p "$d"
    cat >"$d/sdns.target" <<'EOF'
[Unit]
Description=sdns minimal default target
Requires=basic.target
Wants=systemd-journald.service
After=basic.target
AllowIsolate=yes
EOF
    for t in sysinit basic sockets timers paths slices local-fs swap network network-online nss-lookup multi-user; do
        printf '[Unit]\nDescription=sdns stub %s.target\n' "$t" >"$d/$t.target"
    done
    printf '[Unit]\nDescription=sdns stub basic.target\nRequires=sysinit.target\nAfter=sysinit.target sockets.target\n' >"$d/basic.target"
    printf '[Unit]\nDescription=sdns shutdown.target\nDefaultDependencies=no\nRefuseManualStart=yes\n' >"$d/shutdown.target"
    printf '[Unit]\nDescription=System Slice\nDefaultDependencies=no\nBefore=slices.target\n' >"$d/system.slice"
    cp /lib/systemd/system/systemd-journald.socket "$d/"
    # Debian's journald.service, minus the /dev/log and audit sockets (the
    # /dev/log socket would add a symlink to /dev; ours is private anyway).
    sed -e 's/^Sockets=.*/Sockets=systemd-journald.socket/' \
        -e 's/^After=.*/After=systemd-journald.socket/' \
        /lib/systemd/system/systemd-journald.service >"$d/systemd-journald.service"
}

cmd_start() {
    local name=$1; shift
    local st=$BASE/$name
    [ ! -e "$st/unshare.pid" ] || die "$name already exists (stop it first)"
    mkdir -p "$st/units" "$st/empty"
    write_units "$st/units"
    local u
    for u in "$@"; do cp "$u" "$st/units/"; done
    local cg2; cg2=$(cg2_mount); [ -n "$cg2" ] || die "no cgroup2 mount"
    local cg=$cg2/sdns-$name
    mkdir "$cg"
    echo "$cg" >"$st/cgroup"
    echo "${SDNS_BIN:-}" >"$st/bins"
    cat /proc/sys/kernel/core_pattern >"$st/core_pattern.before"
    # Enter the cgroup first: unshare(CLONE_NEWCGROUP) roots the new cgroup
    # namespace at the caller's cgroup.
    setsid bash -c 'echo $$ >"$1/cgroup.procs"; echo $$ >"$2/unshare.pid"; exec unshare --pid --fork --mount --propagation private --cgroup --uts --ipc "$3" _init "$2"' \
        _ "$cg" "$st" "$SELF" </dev/null >"$st/pid1.log" 2>&1 &
    local i p1=
    for i in $(seq 100); do p1=$(ns_pid1 "$name" || true); [ -n "$p1" ] && break; sleep 0.1; done
    [ -n "$p1" ] || { cat "$st/pid1.log"; die "namespace did not start"; }
    echo "$p1" >"$st/pid1.hostpid"
    # The unshare parent stays in the host pid namespace: move it out of the
    # namespace's cgroup so only the namespace's own processes are in there.
    echo "$(cat "$st/unshare.pid")" >"$cg2/cgroup.procs"
    # Wait for the manager to be up.
    local state=
    for i in $(seq 150); do
        state=$(cmd_exec "$name" systemctl is-system-running 2>/dev/null || true)
        case $state in running|degraded) break;; esac
        sleep 0.2
    done
    echo "sdns $name: PID 1 = host pid $p1, cgroup $cg, state ${state:-unknown}"
    case $state in running|degraded) ;; *) cat "$st/pid1.log"; die "systemd did not come up";; esac
}

# Runs as PID 1 of the new namespaces, before exec'ing systemd.
cmd_init() {
    local st=$1
    mount --make-rprivate /
    # /proc for this pid namespace
    mount -t proc -o nosuid,nodev,noexec proc /proc
    # cgroup2 only, rooted at our subtree (hybrid v1 mounts dropped here)
    umount -R /sys/fs/cgroup
    mount -t cgroup2 -o nosuid,nodev,noexec cgroup2 /sys/fs/cgroup
    # private /dev
    local olddev; olddev=$(mktemp -d "$BASE/.olddev.XXXXXX")
    mount --bind /dev "$olddev"
    mount -t tmpfs -o mode=755,nosuid,size=4m tmpfs /dev
    local n
    for n in null zero full random urandom tty fuse; do
        [ -e "$olddev/$n" ] || continue
        touch "/dev/$n"; mount --bind "$olddev/$n" "/dev/$n"
    done
    umount "$olddev"; rmdir "$olddev"
    mkdir -p /dev/pts /dev/shm /dev/mqueue
    mount -t devpts -o newinstance,ptmxmode=0666,mode=620,nosuid,noexec devpts /dev/pts
    ln -s pts/ptmx /dev/ptmx
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /dev/shm
    ln -s /proc/self/fd /dev/fd
    ln -s /proc/self/fd/0 /dev/stdin; ln -s /proc/self/fd/1 /dev/stdout; ln -s /proc/self/fd/2 /dev/stderr
    # private /run, /var/log, /var/tmp, /tmp (keeping $BASE)
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /run
    mount -t tmpfs -o mode=755,nosuid,nodev tmpfs /var/log
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /var/tmp
    exec 9<"$BASE"
    mount -t tmpfs -o mode=1777,nosuid,nodev tmpfs /tmp
    mkdir -p "$BASE"
    mount --no-canonicalize --bind /proc/self/fd/9 "$BASE"
    exec 9<&-
    # files to install (e.g. the daemon at /usr/local/bin)
    local pair dst src
    for pair in $(cat "$st/bins"); do
        dst=${pair%%:*}; src=${pair#*:}
        if ! mountpoint -q "$(dirname "$dst")"; then
            mount -t tmpfs -o mode=755 tmpfs "$(dirname "$dst")"
        fi
        install -m 0755 "$src" "$dst"
    done
    # hostname
    hostname sdns
    # read-only kernel knobs
    mount --bind /proc/sys /proc/sys; mount -o remount,bind,ro,nosuid,nodev,noexec /proc/sys
    if [ -e /proc/sysrq-trigger ]; then mount --bind /proc/sysrq-trigger /proc/sysrq-trigger; mount -o remount,bind,ro /proc/sysrq-trigger; fi
    mount -o remount,bind,ro /sys
    export container=sdns
    export SYSTEMD_UNIT_PATH=$st/units
    export SYSTEMD_GENERATOR_PATH=$st/empty
    export SYSTEMD_ENVIRONMENT_GENERATOR_PATH=$st/empty
    unset NOTIFY_SOCKET LISTEN_FDS LISTEN_PID
    exec /usr/lib/systemd/systemd --system --unit=sdns.target --log-target=console --log-level=info --show-status=no
}

cmd_exec() {
    local name=$1; shift
    local p1; p1=$(ns_pid1 "$name") || die "$name is not running"
    exec_in() { nsenter -t "$p1" -m -p -C -u -i --wd=/ -- "$@"; }
    exec_in env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin TERM=dumb HOME=/root LANG=C.UTF-8 SYSTEMD_PAGER= SYSTEMD_COLORS=0 "$@"
}

cmd_check() {
    local name=$1 st=$BASE/$1 rc=0
    local cg; cg=$(cat "$st/cgroup" 2>/dev/null || echo "$(cg2_mount)/sdns-$name")
    if [ -s "$st/unshare.pid" ] && [ -d /proc/$(cat "$st/unshare.pid") ]; then
        echo "LEFTOVER: unshare process $(cat "$st/unshare.pid") alive"; rc=1; fi
    # any process whose pid namespace is not the host's and descends from our unshare
    local host_pidns; host_pidns=$(readlink /proc/self/ns/pid)
    local p
    for p in /proc/[0-9]*; do
        local pn; pn=$(readlink "$p/ns/pid" 2>/dev/null) || continue
        [ "$pn" = "$host_pidns" ] && continue
        # another pid namespace: ours if its cgroup is ours
        if grep -q "sdns-$name" "$p/cgroup" 2>/dev/null || [ "$(cat "$p/comm" 2>/dev/null)" = systemd ]; then
            echo "LEFTOVER: process ${p#/proc/} ($(cat $p/comm 2>/dev/null)) in pid ns $pn"; rc=1
        fi
    done
    if [ -e "$cg" ]; then echo "LEFTOVER: cgroup $cg"; find "$cg" -type d; rc=1; fi
    if findmnt -rn -o TARGET | grep -q -e "sdns" -e "$BASE/.olddev"; then
        echo "LEFTOVER: mounts:"; findmnt -rn -o TARGET | grep -e sdns -e olddev; rc=1; fi
    if [ -s "$st/core_pattern.before" ] && [ "$(cat "$st/core_pattern.before")" != "$(cat /proc/sys/kernel/core_pattern)" ]; then
        echo "CHANGED: core_pattern now $(cat /proc/sys/kernel/core_pattern)"; rc=1; fi
    [ $rc = 0 ] && echo "sdns $name: nothing left (processes, cgroup $cg, mounts)"
    return $rc
}

rm_cgroup_tree() { # depth-first rmdir; kill anything still inside first
    local cg=$1
    [ -d "$cg" ] || return 0
    [ -e "$cg/cgroup.kill" ] && echo 1 >"$cg/cgroup.kill" 2>/dev/null || true
    local i
    for i in $(seq 50); do
        grep -q '^populated 0' "$cg/cgroup.events" 2>/dev/null && break; sleep 0.1
    done
    find "$cg" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [ ! -d "$cg" ]
}

cmd_stop() {
    local name=$1 st=$BASE/$1
    local p1; p1=$(ns_pid1 "$name" || true)
    if [ -n "$p1" ]; then
        # Graceful first: stop every service so each cleans up after itself.
        timeout 20 "$SELF" exec "$name" systemctl stop --job-mode=replace-irreversibly '*.service' >/dev/null 2>&1 || true
        # SIGKILL to a pid namespace's init from outside kills the whole namespace.
        kill -KILL "$p1" 2>/dev/null || true
    fi
    local u; u=$(cat "$st/unshare.pid" 2>/dev/null || true)
    local i
    for i in $(seq 100); do [ -n "$u" ] && [ -d /proc/$u ] || break; sleep 0.1; done
    local cg; cg=$(cat "$st/cgroup" 2>/dev/null || true)
    [ -z "$cg" ] || rm_cgroup_tree "$cg" || echo "sdns: could not remove $cg" >&2
    cmd_check "$name" && rm -f "$st/unshare.pid" "$st/pid1.hostpid"
}

sub=${1:-}; shift || true
case $sub in
    start) cmd_start "$@";;
    _init) cmd_init "$@";;
    exec) cmd_exec "$@";;
    stop) cmd_stop "$@";;
    check) cmd_check "$@";;
    *) sed -n '2,25p' "$SELF"; exit 2;;
esac
