//! What the read-path programs must know of the running kernel's memory
//! (see [`Layout`]): struct member offsets from BTF, and the addresses of the
//! functions that identify a procfs file or a pidfd from /proc/kallsyms.
//! Nothing is compiled in, so the same programs run on every kernel whose BTF
//! and symbols are readable; where they are not, the read-path programs are
//! not armed and `status` says why.

#![forbid(unsafe_code)]

use std::{fs, io};

use guardian_ebpf::Layout;

use super::btf::Btf;

/// Where each [`Layout`] entry comes from.
enum Source {
    /// A member path in a kernel struct.
    Member(&'static str, &'static [&'static str]),
    /// A member only some kernels have (a config option, a subsystem); where
    /// it is missing, the one protection that needs it is off and said so.
    Optional(&'static str, &'static [&'static str]),
    /// The address of a kernel function.
    Symbol(&'static str),
}

fn source(what: Layout) -> Source {
    use Source::{Member, Optional, Symbol};
    match what {
        Layout::TaskTgid => Member("task_struct", &["tgid"]),
        Layout::TaskStatus => Member("task_struct", &["thread_info", "status"]),
        Layout::TaskFiles => Member("task_struct", &["files"]),
        Layout::TaskThreadPid => Member("task_struct", &["thread_pid"]),
        Layout::TaskPidLinks => Member("task_struct", &["pid_links"]),
        Layout::TaskPtraced => Member("task_struct", &["ptraced"]),
        Layout::TaskPtraceEntry => Member("task_struct", &["ptrace_entry"]),
        Layout::TaskCred => Member("task_struct", &["cred"]),
        Layout::CredCapEffective => Member("cred", &["cap_effective"]),
        Layout::CredUid => Member("cred", &["uid"]),
        Layout::CredSuid => Member("cred", &["suid"]),
        Layout::CredEuid => Member("cred", &["euid"]),
        Layout::CredFsuid => Member("cred", &["fsuid"]),
        Layout::CredUserNs => Member("cred", &["user_ns"]),
        Layout::UserNsLevel => Member("user_namespace", &["level"]),
        Layout::FilesFdt => Member("files_struct", &["fdt"]),
        Layout::FdtMaxFds => Member("fdtable", &["max_fds"]),
        Layout::FdtFd => Member("fdtable", &["fd"]),
        Layout::FileOp => Member("file", &["f_op"]),
        Layout::FileInode => Member("file", &["f_inode"]),
        Layout::FilePrivate => Member("file", &["private_data"]),
        Layout::InodePrivate => Member("inode", &["i_private"]),
        Layout::FopRead => Member("file_operations", &["read"]),
        Layout::FopPoll => Member("file_operations", &["poll"]),
        Layout::ProcInodePid => Member("proc_inode", &["pid"]),
        Layout::ProcInodeVfs => Member("proc_inode", &["vfs_inode"]),
        Layout::PidLevel => Member("pid", &["level"]),
        Layout::PidTasks => Member("pid", &["tasks"]),
        Layout::EnvironRead => Symbol("environ_read"),
        Layout::MemRead => Symbol("mem_read"),
        Layout::PidfdPoll => Symbol("pidfd_poll"),
        Layout::TaskFlags => Member("task_struct", &["flags"]),
        Layout::TaskMm => Member("task_struct", &["mm"]),
        Layout::MmOwner => Optional("mm_struct", &["owner"]),
        Layout::IoKiocbOpcode => Optional("io_kiocb", &["opcode"]),
        Layout::TaskSignal => Member("task_struct", &["signal"]),
        Layout::SignalFlags => Member("signal_struct", &["flags"]),
        Layout::InodeIno => Member("inode", &["i_ino"]),
        Layout::InodeSb => Member("inode", &["i_sb"]),
        Layout::SuperBlockDev => Member("super_block", &["s_dev"]),
        Layout::MmEnvEnd => Member("mm_struct", &["env_end"]),
        Layout::MmExeFile => Member("mm_struct", &["exe_file"]),
        Layout::FileDentry => Member("file", &["f_path", "dentry"]),
        Layout::DentryName => Member("dentry", &["d_name", "name"]),
        Layout::TaskWorkerPrivate => Optional("task_struct", &["worker_private"]),
        Layout::IoWorkerTask => Optional("io_worker", &["task"]),
        Layout::IoWorkerCurWork => Optional("io_worker", &["cur_work"]),
        Layout::IoKiocbWork => Optional("io_kiocb", &["work"]),
        Layout::IoKiocbFile => Optional("io_kiocb", &["file"]),
        Layout::TaskIoUring => Optional("task_struct", &["io_uring"]),
    }
}

/// Every [`Layout`] entry, in index order.
const ALL: [Layout; Layout::COUNT] = [
    Layout::TaskTgid,
    Layout::TaskStatus,
    Layout::TaskFiles,
    Layout::TaskThreadPid,
    Layout::TaskPidLinks,
    Layout::TaskPtraced,
    Layout::TaskPtraceEntry,
    Layout::TaskCred,
    Layout::CredCapEffective,
    Layout::CredUid,
    Layout::CredSuid,
    Layout::CredEuid,
    Layout::CredFsuid,
    Layout::CredUserNs,
    Layout::UserNsLevel,
    Layout::FilesFdt,
    Layout::FdtMaxFds,
    Layout::FdtFd,
    Layout::FileOp,
    Layout::FileInode,
    Layout::FilePrivate,
    Layout::InodePrivate,
    Layout::FopRead,
    Layout::FopPoll,
    Layout::ProcInodePid,
    Layout::ProcInodeVfs,
    Layout::PidLevel,
    Layout::PidTasks,
    Layout::EnvironRead,
    Layout::MemRead,
    Layout::PidfdPoll,
    Layout::TaskFlags,
    Layout::TaskMm,
    Layout::MmOwner,
    Layout::IoKiocbOpcode,
    Layout::TaskSignal,
    Layout::SignalFlags,
    Layout::InodeIno,
    Layout::InodeSb,
    Layout::SuperBlockDev,
    Layout::MmEnvEnd,
    Layout::MmExeFile,
    Layout::FileDentry,
    Layout::DentryName,
    Layout::TaskWorkerPrivate,
    Layout::IoWorkerTask,
    Layout::IoWorkerCurWork,
    Layout::IoKiocbWork,
    Layout::IoKiocbFile,
    Layout::TaskIoUring,
];

/// The `LAYOUT` global for the running kernel, whose BTF is `btf`, and why
/// each optional entry this kernel lacks is missing (those entries stay 0).
pub fn read(btf: &Btf) -> io::Result<([u64; Layout::COUNT], Vec<String>)> {
    if !cfg!(target_arch = "x86_64") {
        // The programs decode syscall numbers and registers of x86-64 only.
        return Err(io::Error::other(
            "the read-path programs know only the x86-64 system call tables",
        ));
    }
    let symbols = fs::read_to_string("/proc/kallsyms")?;
    let mut layout = [0; Layout::COUNT];
    let mut missing = Vec::new();
    for what in ALL {
        layout[what as usize] = match source(what) {
            Source::Member(name, path) => u64::from(btf.offset(name, path)?),
            Source::Optional(name, path) => match btf.offset(name, path) {
                Ok(offset) => u64::from(offset),
                Err(err) => {
                    missing.push(err.to_string());
                    0
                }
            },
            Source::Symbol(name) => text_symbol(&symbols, name)?,
        };
    }
    Ok((layout, missing))
}

/// The address of the function `name` in /proc/kallsyms text. Zero addresses
/// mean kptr_restrict hides them from this process.
fn text_symbol(kallsyms: &str, name: &str) -> io::Result<u64> {
    let address = kallsyms
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (address, kind, symbol) = (fields.next()?, fields.next()?, fields.next()?);
            let text = kind.eq_ignore_ascii_case("t");
            (text && symbol == name).then(|| u64::from_str_radix(address, 16).ok())?
        })
        .next();
    match address {
        Some(address) if address != 0 => Ok(address),
        Some(_) => Err(io::Error::other(format!(
            "/proc/kallsyms hides {name}'s address (kernel.kptr_restrict)"
        ))),
        None => Err(io::Error::new(
            io::ErrorKind::NotFound,
            format!("/proc/kallsyms has no function {name}"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_entry_is_listed_once_in_index_order() {
        for (index, what) in ALL.iter().enumerate() {
            assert_eq!(*what as usize, index);
        }
    }

    #[test]
    fn text_symbols_are_found_by_exact_name_and_hidden_ones_refused() {
        let kallsyms = "ffffffff8179e840 t environ_read\n\
                        ffffffff812188da t environ_read.cold\n\
                        ffffffff8179f270 T mem_read\n\
                        ffffffff81000000 D mem_read_data\n";
        assert_eq!(
            text_symbol(kallsyms, "environ_read").unwrap(),
            0xffffffff8179e840
        );
        assert_eq!(
            text_symbol(kallsyms, "mem_read").unwrap(),
            0xffffffff8179f270
        );
        assert!(text_symbol(kallsyms, "pidfd_poll").is_err());
        let hidden = "0000000000000000 t environ_read\n";
        let err = text_symbol(hidden, "environ_read").unwrap_err();
        assert!(err.to_string().contains("kptr_restrict"), "{err}");
    }
}
