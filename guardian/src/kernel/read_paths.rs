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
        paths.stopped = [
            "ptrace attach and seize (64-bit, x32 and 32-bit tables; any pid namespace)",
            "process_vm_readv/writev (all three tables; callers in the initial pid namespace)",
            "pidfd_getfd",
            "perf_event_open sampling a ward (callers in the initial pid namespace)",
            "open of /proc/PID/environ and /proc/PID/mem, task/TID too, by any path or dirfd",
            "open of a secret delivered as a file (exec --file) by a process outside its \
             grant, by any path (/proc/HOLDER/fd/N)",
        ]
        .map(str::to_owned)
        .to_vec();
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
