//! The kernel's own kill of a leader's newest holder at the leader's exit
//! (guardian-ebpf's `early_kill`), where this kernel allows it. That
//! program calls kfuncs through raw call instructions whose function ids are
//! placeholders (aya 0.14 cannot relocate kfunc calls), so the object is
//! copied and this kernel's BTF id of each function written over its
//! placeholder before anything is loaded.

#![forbid(unsafe_code)]

use aya::{Ebpf, programs::BtfTracePoint};
use guardian_ebpf::{KFUNCS, NO_FIELD, kfunc_call, programs};

use super::{KernelError, KernelLink, attach::attach_btf_program, btf::Btf, offsets::Offsets};
use crate::os::process::Pid;

/// The ELF parser reads headers in place, so the copy is aligned as
/// `include_bytes_aligned!` aligns the original.
const ALIGN: usize = 32;

/// The programs' object with its kfunc calls resolved for this kernel.
pub(super) struct Object {
    buffer: Vec<u8>,
    start: usize,
    len: usize,
}

impl Object {
    /// A copy of `elf` whose kfunc calls name the functions of the kernel
    /// whose BTF is `btf`; the error says which one this kernel lacks
    /// (before Linux 6.13, no `bpf_send_signal_task`).
    pub(super) fn resolve(elf: &[u8], btf: &Btf) -> Result<Self, String> {
        let mut buffer = vec![0; elf.len() + ALIGN];
        let start = buffer.as_ptr().align_offset(ALIGN);
        let object = &mut buffer[start..start + elf.len()];
        object.copy_from_slice(elf);
        for (function, placeholder) in KFUNCS {
            let id = btf
                .function(function)
                .ok_or_else(|| format!("this kernel has no kfunc {function} (Linux 6.13+)"))?;
            if patch_calls(object, placeholder, id) == 0 {
                return Err(format!("the programs make no call to {function}"));
            }
        }
        Ok(Self {
            buffer,
            start,
            len: elf.len(),
        })
    }

    /// The ELF bytes to load.
    pub(super) fn bytes(&self) -> &[u8] {
        &self.buffer[self.start..self.start + self.len]
    }
}

/// Writes `id` over every call instruction to `placeholder` in `object`
/// (instructions sit at multiples of 8 in their sections, and sections
/// holding code at multiples of 8 in the file); returns how many.
fn patch_calls(object: &mut [u8], placeholder: i32, id: u32) -> usize {
    let call = kfunc_call(placeholder).to_le_bytes();
    let mut patched = 0;
    for insn in object.chunks_exact_mut(8).filter(|insn| **insn == call) {
        insn[4..].copy_from_slice(&id.to_le_bytes());
        patched += 1;
    }
    patched
}

/// Loads and attaches the program, once `resolve` has succeeded. It reads
/// `group_dead`, which kernels without that field in `sched_process_exit`
/// do not pass.
pub(super) fn attach(ebpf: &mut Ebpf, offsets: &Offsets, btf: &aya::Btf) -> Result<(), String> {
    if offsets.exit_group_dead == NO_FIELD {
        return Err("sched_process_exit has no group_dead on this kernel".to_owned());
    }
    let (name, tracepoint) = programs::LEADER_EXIT_KILL;
    attach_btf_program::<BtfTracePoint>(ebpf, name, tracepoint, btf)
        .map_err(|err: KernelError| err.to_string())
}

impl KernelLink {
    /// Has the kernel SIGKILL holder `pid` itself when `leader` exits, in
    /// place of the holder named before. Best effort: where the program is
    /// not loaded, or the map is full, only the guardian's own kill follows
    /// the exit.
    pub fn kill_at_exit_of(&mut self, leader: Pid, pid: Pid) {
        if self.early_kill_error.is_none() {
            let _ = self
                .early_kill
                .insert(leader.raw() as u32, pid.raw() as u32, 0);
        }
    }

    /// Why the kernel does not kill a leader's holder at the leader's exit
    /// itself, or `None` when it does.
    pub fn early_kill_error(&self) -> Option<&str> {
        self.early_kill_error.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_whole_call_instructions_to_the_placeholder_are_patched() {
        let call = kfunc_call(0x6e73_6b01).to_le_bytes();
        let other = kfunc_call(0x6e73_6b02).to_le_bytes();
        let mut object = Vec::new();
        object.extend_from_slice(&call);
        object.extend_from_slice(&other);
        // The same bytes straddling two instructions are not a call.
        object.extend_from_slice(&call[4..]);
        object.extend_from_slice(&call[..4]);
        object.extend_from_slice(&call);
        assert_eq!(patch_calls(&mut object, 0x6e73_6b01, 77), 2);
        assert_eq!(object[..8], kfunc_call(77).to_le_bytes());
        assert_eq!(object[8..16], other);
        assert_eq!(object[24..], kfunc_call(77).to_le_bytes());
    }
}
