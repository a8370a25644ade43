//! Processes as the guardian sees them: pid and uid newtypes, pidfds (so a
//! reused pid never gets signalled or trusted), and the facts read from /proc.

#![forbid(unsafe_code)]

use std::{
    collections::{HashMap, HashSet},
    fmt, fs, io,
    os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd},
};

use nix::poll::{PollFd, PollFlags, PollTimeout};
use rustix::{
    io::Errno,
    process::{PidfdFlags, Signal, pidfd_open, pidfd_send_signal},
};
use serde::{Deserialize, Serialize};

use super::secret_mem::SecretBuf;

/// A process id (a thread-group id): always positive, also when it comes
/// off the socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(into = "i32", try_from = "i32")]
pub struct Pid(i32);

impl TryFrom<i32> for Pid {
    type Error = String;

    fn try_from(raw: i32) -> Result<Self, String> {
        Self::new(raw).ok_or_else(|| format!("invalid PID {raw}: a PID is a positive number"))
    }
}

impl From<Pid> for i32 {
    fn from(pid: Pid) -> i32 {
        pid.0
    }
}

impl Pid {
    /// Wraps a raw pid; `None` for zero or negative values, which name no single process.
    pub fn new(raw: i32) -> Option<Self> {
        (raw > 0).then_some(Self(raw))
    }

    /// The raw value.
    pub fn raw(self) -> i32 {
        self.0
    }

    /// The calling process.
    pub fn current() -> Self {
        Self(std::process::id() as i32)
    }
}

impl fmt::Display for Pid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A user id.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(transparent)]
pub struct Uid(pub u32);

impl Uid {
    /// The superuser.
    pub const ROOT: Uid = Uid(0);
}

impl fmt::Display for Uid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A pidfd: a handle on one process that stays bound to it after it exits, so
/// signals through it can never reach a process that later reuses the pid.
#[derive(Debug)]
pub struct Pidfd {
    fd: OwnedFd,
    pid: Pid,
}

impl Pidfd {
    /// Opens a pidfd for `pid`. Fails with ESRCH if there is no such process.
    pub fn open(pid: Pid) -> io::Result<Self> {
        // Never None: a Pid is positive, as rustix's is.
        let raw = rustix::process::Pid::from_raw(pid.raw())
            .ok_or_else(|| io::Error::from(io::ErrorKind::InvalidInput))?;
        let fd = pidfd_open(raw, PidfdFlags::empty())?;
        Ok(Self { fd, pid })
    }

    /// Wraps a pidfd received from elsewhere (an inherited descriptor).
    pub fn from_owned(fd: OwnedFd, pid: Pid) -> Self {
        Self { fd, pid }
    }

    /// The pid this handle was opened for.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// Sends SIGKILL; a process that already exited is not an error.
    pub fn kill(&self) -> io::Result<()> {
        self.send(libc::SIGKILL)
    }

    /// Sends `signal` (one of the named signals, not a real-time one); a
    /// process that already exited is not an error.
    pub fn send(&self, signal: i32) -> io::Result<()> {
        let signal = Signal::from_named_raw(signal).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{signal} is not a named signal"),
            )
        })?;
        match pidfd_send_signal(&self.fd, signal) {
            Ok(()) | Err(Errno::SRCH) => Ok(()),
            Err(err) => Err(err.into()),
        }
    }

    /// True while the process has not exited (a pidfd polls readable on exit).
    pub fn is_alive(&self) -> bool {
        let mut fds = [PollFd::new(self.fd.as_fd(), PollFlags::POLLIN)];
        nix::poll::poll(&mut fds, PollTimeout::ZERO) == Ok(0)
    }
}

impl AsFd for Pidfd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Pidfd {
    fn as_raw_fd(&self) -> i32 {
        self.fd.as_raw_fd()
    }
}

/// What /proc/PID/status says about a process.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Status {
    /// Real uid.
    pub uid: Uid,
    /// Real gid.
    pub gid: u32,
    /// Parent pid (0 for the init process).
    pub ppid: i32,
    /// Pid of the tracer, or 0.
    pub tracer: i32,
    /// The thread-group id; differs from the pid asked for when that was a thread.
    pub tgid: i32,
    /// Command name (`comm`).
    pub name: String,
    /// A kernel thread (the `Kthread` field, absent before Linux 6.3).
    pub kernel_thread: bool,
}

impl Status {
    /// Reads /proc/PID/status.
    pub fn read(pid: Pid) -> io::Result<Self> {
        StatusFile::open(pid)?.read()
    }

    /// The fields wanted, from one pass over the lines of the file's bytes
    /// (this runs several times per request: no search of the whole text
    /// per field, and no check of the whole text as UTF-8, only of the name).
    fn parse(text: &[u8]) -> Option<Self> {
        let (mut uid, mut gid, mut ppid, mut tracer, mut tgid, mut name) =
            (None, None, None, None, None, None);
        let mut kernel_thread = false;
        for line in text.split(|&b| b == b'\n') {
            let Some(colon) = line.iter().position(|&b| b == b':') else {
                continue;
            };
            let (key, value) = (&line[..colon], &line[colon + 1..]);
            match key {
                // A name may hold any byte but a newline (a comm cut
                // mid-character, or set by the process): not a reason to
                // take the process for gone.
                b"Name" => name = Some(String::from_utf8_lossy(value).trim().to_owned()),
                b"Tgid" => tgid = number(value),
                b"PPid" => ppid = number(value),
                b"TracerPid" => tracer = number(value),
                b"Uid" => uid = number(value).map(Uid),
                b"Gid" => gid = number(value),
                b"Kthread" => kernel_thread = number::<u8>(value) == Some(1),
                // The memory lines follow the ids; `Kthread`, where the
                // kernel has it, comes before them.
                b"VmPeak" | b"Threads" => break,
                _ => {}
            }
        }
        Some(Self {
            uid: uid?,
            gid: gid?,
            ppid: ppid?,
            tracer: tracer?,
            tgid: tgid?,
            name: name?,
            kernel_thread,
        })
    }
}

/// An open /proc/PID/status, read again in place for each check: no path
/// lookup, open or close per read, and bound to the process it was opened for,
/// so once that process is reaped a read fails instead of describing whatever
/// process reuses the pid.
#[derive(Debug)]
pub struct StatusFile(fs::File);

impl StatusFile {
    /// Opens /proc/PID/status.
    pub fn open(pid: Pid) -> io::Result<Self> {
        fs::File::open(format!("/proc/{pid}/status")).map(Self)
    }

    /// The process's status now (the kernel writes it afresh at offset 0),
    /// in one read where it fits.
    pub fn read(&self) -> io::Result<Status> {
        use std::os::unix::fs::FileExt;
        // About 1.5 KiB; a read that fills the buffer may be cut, so grow and retry.
        let mut buf = vec![0u8; 4096];
        loop {
            let len = self.0.read_at(&mut buf, 0)?;
            if len < buf.len() {
                buf.truncate(len);
                break;
            }
            buf.resize(buf.len() * 2, 0);
        }
        Status::parse(&buf).ok_or_else(invalid_status)
    }
}

fn invalid_status() -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, "unexpected /proc status")
}

/// The value of `key` in the text of a /proc/PID/status file, trimmed.
pub fn status_field<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    text.lines()
        .find_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(str::trim)
}

/// The first number in a status value's bytes.
fn number<T: std::str::FromStr>(value: &[u8]) -> Option<T> {
    first_number(std::str::from_utf8(value).ok()?)
}

/// The first number in a status value (`Uid:` lists four, for instance).
pub fn first_number<T: std::str::FromStr>(value: &str) -> Option<T> {
    value.split_whitespace().next()?.parse().ok()
}

/// True if `pid` is stopped or traced-stopped (state `T` or `t` in /proc/PID/stat).
pub fn is_stopped(pid: Pid) -> bool {
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| matches!(rest.trim_start().chars().next(), Some('T' | 't')))
    })
}

/// True if `pid` has begun to exit: PF_EXITING in the flags of
/// /proc/PID/stat (set before the exit tracepoints run, long before the
/// process is reaped).
pub fn is_exiting(pid: Pid) -> bool {
    const PF_EXITING: u64 = 0x4;
    fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        stat.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().nth(6)?.parse::<u64>().ok())
            .is_some_and(|flags| flags & PF_EXITING != 0)
    })
}

/// The session id of `pid`, or `None` when it is in session 0: the kernel's
/// own, which processes started by init or a kernel helper stay in unless they
/// call setsid. Session 0 has no leader and is shared by unrelated processes,
/// so it never counts as "the same session".
pub fn session_of(pid: Pid) -> io::Result<Option<Pid>> {
    let sid = nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid.raw())))?;
    Ok(Pid::new(sid.as_raw()))
}

/// The executable of `pid`, or a placeholder when it cannot be read.
pub fn exe_of(pid: Pid) -> String {
    fs::read_link(format!("/proc/{pid}/exe"))
        .map(|path| path.display().to_string())
        .unwrap_or_else(|_| "?".to_owned())
}

/// Most of an environment the guardian reads; a bigger one stays guarded.
const MAX_ENVIRON: usize = 1 << 20;

/// `pid`'s environment, judged by `holds`. It is read into locked memory,
/// wiped after, since it may hold a value.
pub fn environ_holds(pid: Pid, holds: &dyn Fn(&[u8]) -> bool) -> io::Result<bool> {
    let mut file = fs::File::open(format!("/proc/{pid}/environ"))?;
    let environ = SecretBuf::read_to_end(&mut file, MAX_ENVIRON)?;
    Ok(holds(environ.as_slice()))
}

/// True if `bytes` holds one of `values` (an empty value is in anything).
/// A value is looked for without the white space around it as well: a value
/// stored as `echo "$TOKEN" | put` ends in a newline that `$(get)` drops,
/// and `read` drops the blanks around a line.
pub fn holds_any(bytes: &[u8], values: &[&[u8]]) -> bool {
    values.iter().any(|value| {
        let core = value.trim_ascii();
        let core = if core.is_empty() { *value } else { core };
        core.is_empty() || bytes.windows(core.len()).any(|w| w == core)
    })
}

/// True if `ancestor` is `pid` itself or one of its ancestors.
pub fn descends_from(pid: Pid, ancestor: Pid) -> bool {
    descends_by(pid, ancestor, |pid| {
        Status::read(pid)
            .ok()
            .and_then(|status| Pid::new(status.ppid))
    })
}

/// True if `ancestor` is `pid` itself or one of its ancestors, as
/// `parent_of` gives each process's parent (`None` once one is gone).
pub fn descends_by(pid: Pid, ancestor: Pid, mut parent_of: impl FnMut(Pid) -> Option<Pid>) -> bool {
    let mut current = pid;
    // A bound on the walk guards against a parent chain that changes under us.
    for _ in 0..4096 {
        if current == ancestor {
            return true;
        }
        if current.raw() == 1 {
            return false; // init has no parent
        }
        match parent_of(current) {
            Some(parent) => current = parent,
            None => return false,
        }
    }
    false
}

/// Every live process descending from one of `roots` (not the roots themselves),
/// from one scan of /proc. Used to find holders' children when the kernel is not
/// reporting forks.
pub fn descendants_of(roots: &HashSet<Pid>) -> Vec<Pid> {
    let mut children: HashMap<Pid, Vec<Pid>> = HashMap::new();
    for pid in all_pids() {
        if let Some(parent) = Status::read(pid)
            .ok()
            .and_then(|status| Pid::new(status.ppid))
        {
            children.entry(parent).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut queue: Vec<Pid> = roots.iter().copied().collect();
    while let Some(pid) = queue.pop() {
        for &child in children.get(&pid).into_iter().flatten() {
            if !roots.contains(&child) && !found.contains(&child) {
                found.push(child);
                queue.push(child);
            }
        }
    }
    found
}

/// `leader`, its descendants and, unless `sid` is `None` (session 0), every
/// process of session `sid`: the processes that may ask for a secret bound to
/// `leader`, from one scan of /proc.
pub fn session_members(leader: Pid, sid: Option<Pid>) -> Vec<Pid> {
    let mut members: HashSet<Pid> = descendants_of(&HashSet::from([leader]))
        .into_iter()
        .collect();
    members.insert(leader);
    if let Some(sid) = sid {
        members.extend(all_pids().filter(|&pid| session_of(pid).ok().flatten() == Some(sid)));
    }
    members.into_iter().collect()
}

/// The thread ids of `pid` other than its own.
pub fn other_threads(pid: Pid) -> Vec<Pid> {
    fs::read_dir(format!("/proc/{pid}/task"))
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(Pid::new)
        .filter(|&tid| tid != pid)
        .collect()
}

fn all_pids() -> impl Iterator<Item = Pid> {
    fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .filter_map(|entry| entry.ok()?.file_name().to_str()?.parse().ok())
        .filter_map(Pid::new)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Polls `cond` every millisecond until it holds; false after five seconds.
    fn within_five_seconds(mut cond: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while !cond() {
            if std::time::Instant::now() >= deadline {
                return false;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
        true
    }

    /// A `sleep 30` child and its pid.
    fn sleeper() -> (std::process::Child, Pid) {
        let child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = Pid::new(child.id() as i32).unwrap();
        (child, pid)
    }

    #[test]
    fn a_value_is_found_without_the_white_space_around_it() {
        let environ = b"HOME=/root\0T=s3cret\0";
        assert!(holds_any(environ, &[b"s3cret\n"]), "as `$(get)` strips it");
        assert!(
            holds_any(environ, &[b"  s3cret \r\n"]),
            "as `read` strips it"
        );
        assert!(!holds_any(environ, &[b"s3cret!\n"]));
        assert!(holds_any(environ, &[b""]), "an empty value is in anything");
    }

    #[test]
    fn a_live_process_is_not_exiting() {
        assert!(!is_exiting(Pid::current()));
    }

    #[test]
    fn status_of_self_is_parsed() {
        let status = Status::read(Pid::current()).unwrap();
        assert_eq!(status.tgid, Pid::current().raw());
        assert_eq!(status.uid, Uid(nix::unistd::getuid().as_raw()));
    }

    #[test]
    fn kernel_threads_are_told_apart() {
        let fields = "Name:\tk\nUid:\t0 0 0 0\nGid:\t0\nPPid:\t2\nTracerPid:\t0\nTgid:\t9\n";
        let kthread = Status::parse(format!("{fields}Kthread:\t1\n").as_bytes()).unwrap();
        assert!(kthread.kernel_thread);
        let user = Status::parse(format!("{fields}Kthread:\t0\n").as_bytes()).unwrap();
        assert!(!user.kernel_thread);
        let before_6_3 = Status::parse(fields.as_bytes()).unwrap();
        assert!(!before_6_3.kernel_thread);
    }

    #[test]
    fn a_process_whose_name_is_not_utf8_is_read_not_taken_for_gone() {
        use std::os::unix::ffi::OsStrExt;
        // Its name is the file it runs, a byte that is no UTF-8 in it.
        let dir = std::env::temp_dir().join(format!("ns-name-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let link = dir.join(std::ffi::OsStr::from_bytes(b"sl\xffeep"));
        let _ = fs::remove_file(&link);
        std::os::unix::fs::symlink("/bin/sleep", &link).unwrap();
        let mut child = std::process::Command::new(&link).arg("30").spawn().unwrap();
        let pid = Pid::new(child.id() as i32).unwrap();
        assert!(
            within_five_seconds(|| Status::read(pid).is_ok_and(|s| s.name.starts_with("sl"))),
            "a name with a byte that is no UTF-8 made the status unreadable"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn an_open_status_file_reads_afresh_and_fails_once_the_process_is_reaped() {
        let (mut child, pid) = sleeper();
        let file = StatusFile::open(pid).unwrap();
        assert_eq!(file.read().unwrap().tgid, pid.raw());
        // Spawn may return before the exec; the name then changes under the
        // open file, which shows each read is fresh.
        assert!(
            within_five_seconds(|| file.read().unwrap().name == "sleep"),
            "name never became sleep"
        );
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(file.read().is_err(), "read a reaped process");
    }

    #[test]
    fn status_with_missing_fields_is_refused() {
        assert_eq!(Status::parse(b"Name:\tx\nUid:\t0 0 0 0\n"), None);
    }

    #[test]
    fn pid_refuses_zero_and_negative() {
        assert_eq!(Pid::new(0), None);
        assert_eq!(Pid::new(-5), None);
        assert_eq!(Pid::new(7).map(Pid::raw), Some(7));
    }

    #[test]
    fn a_process_descends_from_its_parent_and_itself() {
        let me = Pid::current();
        let parent = Pid::new(Status::read(me).unwrap().ppid).unwrap();
        assert!(descends_from(me, me));
        assert!(descends_from(me, parent));
        assert!(!descends_from(parent, me));
    }

    #[test]
    fn children_are_found_as_descendants_and_pidfd_kills_them() {
        let (mut child, child_pid) = sleeper();
        let found = descendants_of(&HashSet::from([Pid::current()]));
        assert!(found.contains(&child_pid));
        let pidfd = Pidfd::open(child_pid).unwrap();
        assert!(pidfd.is_alive());
        pidfd.kill().unwrap();
        child.wait().unwrap();
        assert!(!pidfd.is_alive());
        pidfd.kill().unwrap(); // already dead: not an error
    }

    #[test]
    fn a_stopped_process_is_seen_stopped_until_continued() {
        let (mut child, pid) = sleeper();
        let pidfd = Pidfd::open(pid).unwrap();
        assert!(!is_stopped(pid));
        // Delivery is asynchronous: wait for each state rather than a fixed time.
        pidfd.send(libc::SIGSTOP).unwrap();
        assert!(within_five_seconds(|| is_stopped(pid)), "never stopped");
        pidfd.send(libc::SIGCONT).unwrap();
        assert!(
            within_five_seconds(|| !is_stopped(pid)),
            "still stopped after SIGCONT"
        );
        pidfd.kill().unwrap();
        child.wait().unwrap();
    }
}
