//! What /proc says about a process: its state, its pipes, its memory
//! mappings and their contents, its status fields.

use std::{
    fs,
    path::{Path, PathBuf},
};

use nix::sys::signal::Signal;

/// The state letter of `pid` in /proc/PID/stat (`R`, `S`, `T`, `Z`, ...).
fn proc_state(pid: i32) -> Option<char> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?.1.trim_start().chars().next()
}

/// True if the task whose /proc directory is `task` (`/proc/PID/task/TID`)
/// exists and is not a zombie.
pub fn is_alive_task(task: &Path) -> bool {
    fs::read_to_string(task.join("stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')')?.1.trim_start().chars().next())
        .is_some_and(|state| state != 'Z')
}

/// True if `pid` exists and is not a zombie.
pub fn is_alive(pid: i32) -> bool {
    proc_state(pid).is_some_and(|state| state != 'Z')
}

/// True if `pid` is stopped (state `T` or `t`).
pub fn is_stopped(pid: i32) -> bool {
    proc_state(pid).is_some_and(|state| state == 'T' || state == 't')
}

/// Sends `signal` to `pid`; the test fails if it cannot be sent.
pub fn send_signal(pid: i32, signal: Signal) {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), signal)
        .unwrap_or_else(|err| panic!("cannot send {signal} to {pid}: {err}"));
}

/// True while `pid` sleeps in a read(2) of the pipe (or other file) that
/// `ours` is open on; from /proc/PID/syscall, whose first fields are the
/// syscall number and its first argument (the descriptor, in hex).
pub fn is_blocked_reading(pid: i32, ours: &impl std::os::fd::AsRawFd) -> bool {
    let target = |path: String| fs::read_link(path).ok();
    let syscall = fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let mut fields = syscall.split_whitespace();
    let reading = fields.next() == Some(&libc::SYS_read.to_string());
    let fd = fields
        .next()
        .and_then(|fd| i32::from_str_radix(fd.trim_start_matches("0x"), 16).ok());
    reading
        && proc_state(pid) == Some('S')
        && fd.is_some_and(|fd| {
            let theirs = target(format!("/proc/{pid}/fd/{fd}"));
            theirs.is_some() && theirs == target(format!("/proc/self/fd/{}", ours.as_raw_fd()))
        })
}

/// Bytes written to a pipe and not yet read from it (FIONREAD, which either
/// end of a pipe answers).
pub fn unread_in_pipe(pipe: &impl std::os::fd::AsRawFd) -> usize {
    let mut unread: libc::c_int = 0;
    // SAFETY: FIONREAD writes one c_int through the pointer, which is valid.
    let rc = unsafe { libc::ioctl(pipe.as_raw_fd(), libc::FIONREAD, &mut unread) };
    assert_eq!(rc, 0, "FIONREAD: {}", std::io::Error::last_os_error());
    usize::try_from(unread).expect("FIONREAD is never negative")
}

/// Every pid in /proc, with its command line (NUL-separated arguments).
pub fn processes() -> impl Iterator<Item = (i32, Vec<u8>)> {
    fs::read_dir("/proc")
        .expect("read /proc")
        .flatten()
        .filter_map(|entry| entry.file_name().to_str()?.parse::<i32>().ok())
        .map(|pid| {
            (
                pid,
                fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default(),
            )
        })
}

/// A mapping of a process where a memory scan found the needle.
#[derive(Debug)]
pub struct Hit {
    /// The mapping's line in /proc/PID/maps.
    pub mapping: String,
    /// Locked kB of the mapping, from /proc/PID/smaps.
    pub locked_kb: u64,
}

/// Reads every readable mapping of `pid` through /proc/PID/mem (as root) and
/// returns the mappings that contain `needle`. Pages that cannot be read
/// (memfd_secret pages among them) are skipped, which is the point.
pub fn find_in_memory(pid: i32, needle: &[u8]) -> Vec<Hit> {
    use std::os::unix::fs::FileExt;
    let maps = fs::read_to_string(format!("/proc/{pid}/maps")).expect("read maps");
    let sizes = mappings(pid);
    let mem = fs::File::open(format!("/proc/{pid}/mem")).expect("open mem");
    let mut hits = Vec::new();
    for line in maps.lines() {
        let mut fields = line.split_whitespace();
        let (Some(range), Some(perms)) = (fields.next(), fields.next()) else {
            continue;
        };
        if !perms.starts_with('r') || line.contains("[vvar") || line.contains("[vsyscall]") {
            continue;
        }
        let Some((start, end)) = range.split_once('-') else {
            continue;
        };
        let start = u64::from_str_radix(start, 16).expect("hex start");
        let end = u64::from_str_radix(end, 16).expect("hex end");
        let mut found = false;
        let mut carry: Vec<u8> = Vec::new();
        let mut at = start;
        while at < end && !found {
            let mut page = vec![0u8; 4096.min((end - at) as usize)];
            if mem.read_exact_at(&mut page, at).is_ok() {
                carry.extend_from_slice(&page);
                found = carry.windows(needle.len()).any(|window| window == needle);
                let keep = carry.len().saturating_sub(needle.len());
                carry.drain(..keep);
            } else {
                carry.clear();
            }
            at += page.len() as u64;
        }
        if found {
            hits.push(Hit {
                mapping: line.to_owned(),
                locked_kb: sizes
                    .iter()
                    .find(|mapping| mapping.range == range)
                    .map_or(0, |mapping| mapping.locked_kb),
            });
        }
    }
    hits
}

/// One mapping of a process, from /proc/PID/smaps.
#[derive(Debug)]
pub struct Mapping {
    /// Its address range, as in /proc/PID/maps (`start-end`, hex).
    pub range: String,
    /// Its path or pseudo-name (`[heap]`, `[stack]`); empty when anonymous.
    pub name: String,
    /// Resident kB.
    pub rss_kb: u64,
    /// Locked kB.
    pub locked_kb: u64,
}

/// Every mapping of `pid`, with its resident and locked sizes.
pub fn mappings(pid: i32) -> Vec<Mapping> {
    let smaps = fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap_or_default();
    let mut found: Vec<Mapping> = Vec::new();
    for line in smaps.lines() {
        let mut words = line.split_whitespace();
        let kb = |value: Option<&str>| value.and_then(|v| v.parse().ok()).unwrap_or(0);
        match (words.next(), found.last_mut()) {
            (Some("Rss:"), Some(mapping)) => mapping.rss_kb = kb(words.next()),
            (Some("Locked:"), Some(mapping)) => mapping.locked_kb = kb(words.next()),
            (Some(range), _) if range.contains('-') && !range.ends_with(':') => {
                found.push(Mapping {
                    range: range.to_owned(),
                    name: words.nth(4).unwrap_or("").to_owned(),
                    rss_kb: 0,
                    locked_kb: 0,
                })
            }
            _ => {}
        }
    }
    found
}

/// Field `key` of /proc/PID/status, first number.
pub fn proc_status_field(pid: i32, key: &str) -> Option<u64> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|line| {
        line.strip_prefix(key)?
            .strip_prefix(':')?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

/// Where cgroup v2 is mounted, from /proc/self/mountinfo.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let mountinfo = fs::read_to_string("/proc/self/mountinfo").ok()?;
    mountinfo.lines().find_map(|line| {
        let (mount, fs_type) = line.split_once(" - ")?;
        let point = mount.split_whitespace().nth(4)?;
        fs_type
            .starts_with("cgroup2 ")
            .then(|| PathBuf::from(point))
    })
}
