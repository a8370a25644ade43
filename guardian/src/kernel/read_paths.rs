//! `status`'s list of the read paths the programs stop on this machine,
//! and of those left open, with why.

use super::{KernelLink, attach::io_uring_gap};

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
            Some(_) => Self::stopped_by_syscall_programs(),
        };
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

    /// What the raw syscall tracepoints stop, SIGKILLing the caller.
    fn stopped_by_syscall_programs() -> Vec<String> {
        [
            "ptrace attach and seize (64-bit, x32 and 32-bit tables; any pid namespace)",
            "process_vm_readv/writev (all three tables; callers in the initial pid namespace)",
            "pidfd_getfd",
            "perf_event_open sampling a ward (callers in the initial pid namespace)",
            "open of /proc/PID/mem, and of a /proc/PID/environ that may hold a value, task/TID \
             too, by any path or dirfd",
            "open of a secret delivered as a file (exec --file) by a process outside its \
             grant, by any path (/proc/HOLDER/fd/N)",
        ]
        .map(str::to_owned)
        .to_vec()
    }
}
