//! Field offsets of the tracepoints the programs read, from tracefs.

use guardian_ebpf::NO_FIELD;

use super::tracefs;

/// Tracepoint field offsets of the running kernel.
pub(super) struct Offsets {
    pub(super) exit_group_dead: u32,
    pub(super) newtask_pid: u32,
    pub(super) newtask_clone_flags: u32,
    pub(super) signal_sig: u32,
    pub(super) signal_pid: u32,
    pub(super) deliver_sig: u32,
    pub(super) deliver_handler: u32,
    pub(super) uring_req: u32,
    pub(super) uring_res: u32,
}

impl Offsets {
    pub(super) fn read() -> std::io::Result<Self> {
        let exit = tracefs::Format::read("sched", "sched_process_exit")?;
        let newtask = tracefs::Format::read("task", "task_newtask")?;
        let signal = tracefs::Format::read("signal", "signal_generate")?;
        let deliver = tracefs::Format::read("signal", "signal_deliver")?;
        let uring = tracefs::Format::read("io_uring", "io_uring_complete").ok();
        let uring_field = |name| {
            uring
                .as_ref()
                .and_then(|f| f.offset(name))
                .unwrap_or(NO_FIELD)
        };
        Ok(Self {
            exit_group_dead: exit.offset("group_dead").unwrap_or(NO_FIELD),
            newtask_pid: newtask.require("pid")?,
            newtask_clone_flags: newtask.require("clone_flags")?,
            signal_sig: signal.require("sig")?,
            signal_pid: signal.require("pid")?,
            deliver_sig: deliver.require("sig")?,
            deliver_handler: deliver.require("sa_handler")?,
            uring_req: uring_field("req"),
            uring_res: uring_field("res"),
        })
    }
}
