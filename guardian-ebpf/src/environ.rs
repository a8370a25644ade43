//! Which wards' environments may hold a secret. Reading an environment that
//! holds none of the guardian's values leaks nothing, and every `ps` on
//! Debian 12 reads every environment, so only those that may hold one are
//! guarded. Each ward's environment has a stamp (`ENVIRON_STAMPS`): a new
//! one at each exec, the parent's at each fork (a fork copies the
//! environment). The guardian reads the environment of each stamp once and
//! lists the stamps it found free of its owner's values (`CLEAN_ENVIRONS`).
//! An environment is readable by outsiders only while its stamp is listed:
//! a ward without a stamp, one whose exec is under way, or one whose stamp
//! was not read yet is guarded (fail closed).

use guardian_ebpf::{ENVIRON_CHANGING, Event, EventKind};

use crate::{
    CLEAN_ENVIRONS, ENVIRON_EVENTS, ENVIRON_STAMPS, PROTECTED, WARDS, current_ids, kmem, now,
};

/// `task:task_rename`. Every exec names the task after it has put the new
/// address space in place and before it sets the bounds of the new
/// environment there; until then that environment reads as empty. Whatever
/// the old stamp said, the new environment is not read yet. A rename by
/// prctl or /proc/PID/comm leaves the environment as it was.
pub(crate) fn renamed() {
    let (tgid, _) = current_ids();
    if WARDS.get_ptr(tgid).is_some() && kmem::current_env_end() == Some(0) {
        set_stamp(tgid, ENVIRON_CHANGING);
    }
}

/// `sched:sched_process_exec`: the new environment is in place. It gets a
/// stamp of its own, and the guardian is asked to read it.
pub(crate) fn exec_done() {
    let (tgid, _) = current_ids();
    if WARDS.get_ptr(tgid).is_none() {
        return;
    }
    // The kernel clock: never 0 (ENVIRON_CHANGING), never with the top bit
    // of the guardian's own stamps.
    let stamp = now();
    set_stamp(tgid, stamp);
    let event = Event {
        kind: EventKind::EnvironChanged as u32,
        pid: tgid,
        request: stamp,
        ktime_ns: stamp,
        ..Event::EMPTY
    };
    if ENVIRON_EVENTS.output::<Event>(&event, 0).is_err() {
        aya_log_ebpf::warn!(&(), "environment of {} not read: it stays guarded", tgid);
    }
}

/// A ward's new child: its environment is a copy of the parent's.
pub(crate) fn inherit(parent: u32, child: u32) {
    // SAFETY: the pointer came from a map lookup in this program run; entries are u64.
    match ENVIRON_STAMPS
        .get_ptr(parent)
        .map(|stamp| unsafe { *stamp })
    {
        Some(stamp) => set_stamp(child, stamp),
        None => forget(child),
    }
}

/// Forgets `tgid`'s stamp (it exited, or its pid may be reused).
pub(crate) fn forget(tgid: u32) {
    if ENVIRON_STAMPS.get_ptr(tgid).is_some() {
        let _ = ENVIRON_STAMPS.remove(tgid);
    }
}

/// Gives `tgid` `stamp`; where the map cannot take it, `tgid` has none,
/// which guards it: an old stamp must never stand for a new environment.
fn set_stamp(tgid: u32, stamp: u64) {
    if ENVIRON_STAMPS.insert(tgid, stamp, 0).is_err() {
        forget(tgid);
    }
}

/// False when `tgid`'s environment holds none of the guardian's values, so
/// reading it is no attack: the guardian's and its supervisor's (values
/// reach the guardian over its socket), and a ward's whose stamp the
/// guardian found clean.
pub(crate) fn may_hold_secret(tgid: u32) -> bool {
    if PROTECTED.get_ptr(tgid).is_some() {
        return false;
    }
    // SAFETY: the pointer came from a map lookup in this program run; entries are u64.
    match ENVIRON_STAMPS.get_ptr(tgid).map(|stamp| unsafe { *stamp }) {
        Some(ENVIRON_CHANGING) | None => true,
        Some(stamp) => CLEAN_ENVIRONS.get_ptr(&stamp).is_none(),
    }
}
