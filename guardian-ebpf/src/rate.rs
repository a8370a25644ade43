//! The per-uid limit on tamper records. Every attempt is still SIGKILLed;
//! past the limit a uid's attempts are only counted, so a flood of them
//! fills neither the tamper ring nor the audit log, and the guardian audits
//! the count once a second instead.
//!
//! Counted per CPU (no atomics, no lock): each CPU lets a uid send
//! `TAMPER_BURST_PER_CPU` records a second, which the guardian sets to
//! [`guardian_ebpf::TAMPER_BURST`] shared among the CPUs.

use guardian_ebpf::{RateWindow, TAMPER_WINDOW_NS};

use crate::{TAMPER_BURST_PER_CPU, TAMPER_RATE, now, read_global};

/// True if a tamper record of `uid` may be sent now; counts it either way.
pub(crate) fn admit(uid: u32) -> bool {
    let now = now();
    let Some(window) = TAMPER_RATE.get_ptr_mut(&uid) else {
        let first = RateWindow {
            start_ns: now,
            sent: 1,
            suppressed: 0,
        };
        let _ = TAMPER_RATE.insert(&uid, &first, 0);
        return true;
    };
    // SAFETY: the pointer came from a lookup in this program run and is this
    // CPU's copy of the value, which nothing else writes while we run.
    let window = unsafe { &mut *window };
    if now.wrapping_sub(window.start_ns) >= TAMPER_WINDOW_NS {
        window.start_ns = now;
        window.sent = 0;
    }
    if window.sent >= u64::from(read_global(&TAMPER_BURST_PER_CPU)) {
        window.suppressed += 1;
        return false;
    }
    window.sent += 1;
    true
}
