//! `status`'s list of the read paths the programs stop on this machine,
//! and of those left open, with why.

use super::{KernelLink, attach::io_uring_gap, syscalls::Tables};
use crate::protocol::UNWATCHED_TABLES;

impl KernelLink {
    /// Which read paths the programs stop, and which stay open here.
    pub fn read_paths(&self) -> crate::protocol::ReadPaths {
        let mut paths = crate::protocol::ReadPaths::default();
        if let Some(err) = &self.layout_error {
            paths
                .open
                .push(format!("all but leader and holder tracking: {err}"));
            return paths;
        }
        paths.stopped = match self.lsm_error {
            None => Self::denied_by_lsm(),
            Some(_) => Self::stopped_by_syscall_programs(self.tables, self.lock_error.is_none()),
        };
        if self.lsm_error.is_some() && self.tables == Tables::Native {
            paths.open.push(format!(
                "{UNWATCHED_TABLES} (int 0x80): a ptrace attach (registers, not memory), \
                 pidfd_getfd, perf_event_open, the open of a secret file and a holder's change \
                 of uid are not seen; set watch_32_bit_syscalls = true (a program then runs on \
                 every system call of the machine) or run a kernel with BPF LSM"
            ));
        }
        match &self.lock_error {
            None => paths.stopped.extend(
                [
                    "any read or write through a ward's environ or mem, however the descriptor \
                     was obtained, and process_vm_* or ptrace memory access from any pid \
                     namespace (at the address-space lock)",
                    "io_uring: an open returning a descriptor, and any io_uring read of a ward's \
                     memory",
                ]
                .map(str::to_owned),
            ),
            Some(err) => {
                paths.open.push(format!(
                    "descriptors that escape the open check (a racing thread or sharer), and \
                     process_vm_* from other pid namespaces ({err})"
                ));
                paths
                    .open
                    .extend(io_uring_gap().map(|open| format!("{open} ({err})")));
            }
        }
        paths
    }
}

impl KernelLink {
    /// What the BPF LSM programs refuse, with an error, the caller living on.
    fn denied_by_lsm() -> Vec<String> {
        [
            "ptrace attach and seize, process_vm_readv/writev, pidfd_getfd and \
             perf_event_open on a ward, in any pid namespace: denied (EPERM) by BPF LSM",
            "open of a ward's /proc/PID/mem, and of an environ that may hold a value, by any \
             path, dirfd, task/TID or io_uring: denied (EACCES) by BPF LSM",
            "open of a secret delivered as a file (exec --file) by a process outside its \
             grant, by any path (/proc/HOLDER/fd/N, open_by_handle_at): denied (EACCES) by \
             BPF LSM",
            "a holder's change of uid: denied (EPERM); its exec of a set-uid program: \
             SIGKILLed before the program runs",
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// What the system-call programs stop, SIGKILLing the caller before it
    /// returns to user space. Without the address-space-lock program
    /// (`gate`), process_vm_* are stopped at entry.
    fn stopped_by_syscall_programs(tables: Tables, gate: bool) -> Vec<String> {
        let which = match tables {
            Tables::All => "64-bit, x32 and 32-bit tables",
            Tables::Native => "64-bit table",
        };
        let mut stopped = vec![
            format!("ptrace attach and seize ({which}; any pid namespace)"),
            format!("pidfd_getfd ({which})"),
            format!(
                "perf_event_open sampling a ward ({which}; callers in the initial pid namespace)"
            ),
            format!(
                "open of /proc/PID/mem, and of a /proc/PID/environ that may hold a value, \
                 task/TID too, by any path or dirfd ({which})"
            ),
            format!(
                "open of a secret delivered as a file (exec --file) by a process outside its \
                 grant, by any path (/proc/HOLDER/fd/N, open_by_handle_at) ({which})"
            ),
        ];
        if !gate {
            stopped.push(
                "process_vm_readv/writev at entry (all three tables; callers in the initial pid \
                 namespace)"
                    .to_owned(),
            );
        }
        stopped
    }
}
