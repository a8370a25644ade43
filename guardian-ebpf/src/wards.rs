//! Who is protected from whom. A ward is a process the guardian protects: the
//! guardian and its supervisor (`PROTECTED`), a holder of a secret (`HOLDERS`),
//! or a process that may ask for a bound leader's secrets (`WARDS`: the leader,
//! its session, their descendants). The rules, checked before any read path
//! is let through:
//! - a process may always reach into itself, and the guardian into anyone;
//! - a holder from a holder of the same grant (`exec -- strace -f cmd`), or
//!   from the session it was started in (which may `get` its values anyway:
//!   `ps` typed in the session reads every holder's environment);
//! - any other ward only from a process of the same leader's session.
//!
//! An environment that holds no secret may be read by anyone (`environ`).

use aya_ebpf::helpers::bpf_get_current_uid_gid;
use guardian_ebpf::{
    Event, EventKind, TamperSyscall, flags, holder_grant, ward_leader, ward_owner,
};

use crate::{
    FORCED_CORES, GRANT_OWNERS, HOLDERS, PROTECTED, THREADS, WARDS, caller_event, current_ids,
    emit_tamper, kill_current, kmem, rate,
};

/// What a protected process is.
pub(crate) enum Ward {
    /// The guardian or its supervisor.
    Guardian,
    /// A holder, with its `HOLDERS` value.
    Holder(u64),
    /// A member of a bound leader's session, with its `WARDS` value.
    Member(u64),
}

/// The process a pid or thread id belongs to.
pub(crate) fn thread_group_of(id: u32) -> u32 {
    // SAFETY: the pointer came from a map lookup in this program run; entries are u32.
    THREADS.get_ptr(id).map_or(id, |tgid| unsafe { *tgid })
}

/// Marks session ward `tgid` when the current process, from outside its
/// session, sends it a core-dumping signal or sets its limits (a raised
/// core limit, or a lowered CPU-time or file-size one that makes the kernel
/// raise SIGXCPU or SIGXFSZ in the ward's own name): until it exits, a
/// core-dumping signal kills it instead (`signal_deliver`). The guardian is
/// left to its own defence: it is not dumpable.
pub(crate) fn taint_cores(tgid: u32) {
    if matches!(intrusion(tgid), Some(Ward::Holder(_) | Ward::Member(_))) {
        let _ = FORCED_CORES.insert(tgid, 1, 0);
    }
}

/// The ward `tgid` is, if the current process may not reach into it.
pub(crate) fn intrusion(tgid: u32) -> Option<Ward> {
    let ward = ward_of(tgid)?;
    let (caller, _) = current_ids();
    if caller == tgid || PROTECTED.get_ptr(caller).is_some() {
        return None;
    }
    // SAFETY (both closures): pointers come from map lookups in this program run.
    let allowed = match ward {
        Ward::Guardian => false,
        Ward::Holder(value) => {
            HOLDERS
                .get_ptr(caller)
                .is_some_and(|own| holder_grant(unsafe { *own }) == holder_grant(value))
                || WARDS
                    .get_ptr(tgid)
                    .is_some_and(|target| in_session_of(caller, unsafe { *target }))
        }
        Ward::Member(value) => in_session_of(caller, value),
    };
    (!allowed).then_some(ward)
}

/// True if `caller` is a member of the session that the `WARDS` value
/// `ward` belongs to.
fn in_session_of(caller: u32, ward: u64) -> bool {
    // SAFETY: the pointer came from a map lookup in this program run; entries are u64.
    WARDS
        .get_ptr(caller)
        .is_some_and(|own| ward_leader(unsafe { *own }) == ward_leader(ward))
}

fn ward_of(tgid: u32) -> Option<Ward> {
    if PROTECTED.get_ptr(tgid).is_some() {
        return Some(Ward::Guardian);
    }
    // SAFETY: pointers come from map lookups in this program run; entries are u64.
    if let Some(value) = HOLDERS.get_ptr(tgid) {
        return Some(Ward::Holder(unsafe { *value }));
    }
    // SAFETY: as above.
    WARDS
        .get_ptr(tgid)
        .map(|value| Ward::Member(unsafe { *value }))
}

/// True if the kernel will refuse the current process a ptrace-mode access
/// to `tgid`: another uid without CAP_SYS_PTRACE. Such an attempt is stopped
/// and audited, but must not cost the target its secrets.
pub(crate) fn kernel_refuses(tgid: u32, ward: &Ward) -> bool {
    let owner = match ward {
        Ward::Guardian => Some(0),
        // SAFETY: the pointer came from a map lookup in this program run.
        _ => WARDS
            .get_ptr(tgid)
            .map(|value| ward_owner(unsafe { *value })),
    };
    let Some(owner) = owner else {
        return false; // unknown owner: fail closed, as if the kernel allowed it
    };
    bpf_get_current_uid_gid() as u32 != owner && !kmem::has_cap_sys_ptrace(kmem::current_task())
}

/// Reports an attempt on `tgid` to the guardian, with the leader whose
/// session it is in (so the guardian knows what a member could reach).
/// At most [`guardian_ebpf::TAMPER_BURST`] a second per caller uid; the rest
/// are counted in `TAMPER_RATE` for the guardian's summary.
pub(crate) fn report(tgid: u32, syscall: TamperSyscall, request: u64, flags: u32) {
    let event = caller_event(EventKind::Tamper);
    if !rate::admit(event.uid) {
        return;
    }
    let (caller, _) = current_ids();
    // SAFETY: the pointer came from a map lookup in this program run; entries are u64.
    let leader = WARDS
        .get_ptr(tgid)
        .map_or(0, |value| ward_leader(unsafe { *value }));
    emit_tamper(Event {
        pid: caller,
        other: tgid,
        grant: leader,
        syscall: syscall as u32,
        request,
        flags,
        exe: kmem::exe_name(kmem::current_task()),
        ..event
    });
}

/// SIGKILLs and reports the current process if it may not reach into `tgid`;
/// true if it did. With `judge`, the call has not reached the kernel's own
/// permission check yet: an attempt the kernel will refuse anyway is only
/// reported, and the kernel's EPERM stands, the answer any other process
/// gets, so a sweep over pids cannot tell wards by who is killed.
pub(crate) fn stop(
    tgid: u32,
    syscall: TamperSyscall,
    request: u64,
    flags: u32,
    judge: bool,
) -> bool {
    let Some(ward) = intrusion(tgid) else {
        return false;
    };
    if judge && kernel_refuses(tgid, &ward) {
        report(tgid, syscall, request, flags | flags::REFUSED_BY_KERNEL);
        return false;
    }
    kill_current();
    let (caller, _) = current_ids();
    aya_log_ebpf::debug!(
        &(),
        "SIGKILLed {} reaching into ward {} (tamper code {})",
        caller,
        tgid,
        syscall as u32
    );
    report(tgid, syscall, request, flags);
    true
}

/// Reports, without a kill, an attempt on `tgid` that the kernel refused
/// (a failed attach): the caller got the kernel's own error.
pub(crate) fn report_refused(tgid: u32, syscall: TamperSyscall, request: u64, flags: u32) {
    if intrusion(tgid).is_some() {
        report(tgid, syscall, request, flags | flags::REFUSED_BY_KERNEL);
    }
}

/// Reports the current process, refused by a BPF LSM hook, if it may not
/// reach into `tgid`; true if it may not.
pub(crate) fn deny(tgid: u32, syscall: TamperSyscall, request: u64) -> bool {
    if intrusion(tgid).is_none() {
        return false;
    }
    report(tgid, syscall, request, flags::DENIED);
    true
}

/// True if the current process is neither one of `grant`'s holders nor the
/// guardian.
fn outside_grant(grant: u32) -> bool {
    let (caller, _) = current_ids();
    // SAFETY: the pointer came from a map lookup in this program run; entries are u64.
    let own = HOLDERS
        .get_ptr(caller)
        .map(|value| holder_grant(unsafe { *value }));
    own != Some(grant) && PROTECTED.get_ptr(caller).is_none()
}

/// Reports the current process, refused by a BPF LSM hook the open of a
/// secret file of `grant`, if it is outside that grant; true if it is.
pub(crate) fn deny_outside_grant(grant: u32) -> bool {
    if !outside_grant(grant) {
        return false;
    }
    report(
        0,
        TamperSyscall::OpenSecretFile,
        u64::from(grant),
        flags::DENIED,
    );
    true
}

/// SIGKILLs and reports the current process, which opened a secret file of
/// `grant`, unless it is one of that grant's holders (or the guardian).
pub(crate) fn stop_outside_grant(grant: u32, flags: u32) {
    if !outside_grant(grant) {
        return;
    }
    let (caller, _) = current_ids();
    kill_current();
    aya_log_ebpf::debug!(
        &(),
        "SIGKILLed {} opening a secret file of grant {}",
        caller,
        grant
    );
    // No process is the target: the grant is, in `request`.
    report(0, TamperSyscall::OpenSecretFile, u64::from(grant), flags);
}

/// The uid of `tgid`'s grant, if it is a holder.
pub(crate) fn holder_owner(tgid: u32) -> Option<u32> {
    // SAFETY: the pointer came from a map lookup in this program run; entries are u64.
    let grant = HOLDERS
        .get_ptr(tgid)
        .map(|value| holder_grant(unsafe { *value }))?;
    // SAFETY: as above; entries are u32.
    GRANT_OWNERS.get_ptr(grant).map(|owner| unsafe { *owner })
}

/// After a call that may change uids: a holder whose uids no longer all
/// match its grant's owner (it ran `su`, `sudo`, a setuid program, or
/// called setuid) has left its grant. It is SIGKILLed before it returns to
/// user space as the new user, and reported as an attempt on itself, so the
/// guardian applies the tamper policy to what it holds.
pub(crate) fn check_uids(task: u64, flags: u32) {
    let (tgid, _) = current_ids();
    let Some(owner) = holder_owner(tgid) else {
        return;
    };
    // Already stopped, and reported, by an earlier check of the same exec.
    if kmem::uids_are(task, owner) || kmem::is_dying(task) {
        return;
    }
    kill_current();
    aya_log_ebpf::debug!(
        &(),
        "SIGKILLed holder {} whose uids left owner {}",
        tgid,
        owner
    );
    report(tgid, TamperSyscall::Credentials, 0, flags);
}
