//! The facts `doctor` reads off the host, each through a path under one
//! root directory (`/` for real; a test's directory in unit tests), and
//! `ps --version`. Nothing here needs root, and a file that is missing or
//! unreadable is a fact too, never an error.

#![forbid(unsafe_code)]

use std::{
    fs,
    path::{Path, PathBuf},
    process::{Command, Stdio},
};

use super::parse::{self, CorePattern, KernelVersion, Procps};

/// Where the host's files are read from.
#[derive(Clone, Debug)]
pub struct Host {
    root: PathBuf,
    ps: PathBuf,
}

impl Default for Host {
    fn default() -> Self {
        Self {
            root: PathBuf::from("/"),
            ps: PathBuf::from("ps"),
        }
    }
}

/// Where the active LSM list was read, since it is not always readable.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum LsmSource {
    /// securityfs: the list in force.
    SecurityFs,
    /// The kernel command line's `lsm=`: the list asked for (less any LSM
    /// the kernel is built without).
    Cmdline,
    /// The kernel's build config (`CONFIG_LSM`): the default list, with no
    /// `lsm=` on the command line.
    Config(PathBuf),
}

impl LsmSource {
    /// Where, as said to a person.
    pub(super) fn said(&self) -> String {
        match self {
            Self::SecurityFs => "/sys/kernel/security/lsm".to_owned(),
            Self::Cmdline => "lsm= on /proc/cmdline, securityfs being unreadable".to_owned(),
            Self::Config(path) => format!(
                "CONFIG_LSM in {}, securityfs being unreadable and /proc/cmdline naming no lsm=",
                path.display()
            ),
        }
    }
}

/// Everything `doctor` judges, as read.
#[derive(Clone, Debug, Default)]
pub(super) struct Facts {
    /// The active LSMs and where they were read; `None` where no source
    /// could be read.
    pub lsms: Option<(Vec<String>, LsmSource)>,
    /// The kernel's build config path, and its `CONFIG_BPF_LSM`
    /// (`"y"`, `"n"`), where that file exists.
    pub bpf_lsm_config: Option<(PathBuf, String)>,
    /// `uname -r`.
    pub release: Option<String>,
    /// Its version.
    pub version: Option<KernelVersion>,
    /// `kernel.io_uring_disabled` (`None`: no such file).
    pub io_uring_disabled: Option<u32>,
    /// `kernel.yama.ptrace_scope` (`None`: Yama is not active).
    pub ptrace_scope: Option<u32>,
    /// `kernel.core_pattern`.
    pub core_pattern: Option<CorePattern>,
    /// `dev.tty.legacy_tiocsti` (`None`: no such file).
    pub legacy_tiocsti: Option<u32>,
    /// `ps --version`: `None` where there is no `ps`, `Some(None)` where its
    /// answer is not procps's.
    pub procps: Option<Option<Procps>>,
}

impl Host {
    /// The host's files under `root` instead of `/`, and `ps` at `ps`.
    pub fn at(root: &Path, ps: &Path) -> Self {
        Self {
            root: root.to_owned(),
            ps: ps.to_owned(),
        }
    }

    /// Reads every fact.
    pub(super) fn facts(&self) -> Facts {
        let release = self
            .read("proc/sys/kernel/osrelease")
            .map(|text| text.trim().to_owned());
        let config = release
            .as_ref()
            .map(|release| self.root.join(format!("boot/config-{release}")));
        let config_text = config
            .as_ref()
            .and_then(|path| fs::read_to_string(path).ok());
        let cmdline_lsm = self
            .read("proc/cmdline")
            .and_then(|cmdline| parse::cmdline_lsm(&cmdline));
        let securityfs = self
            .read("sys/kernel/security/lsm")
            .map(|text| parse::lsm_list(&text))
            .filter(|list| !list.is_empty());
        let lsms = match (securityfs, cmdline_lsm, &config_text, &config) {
            (Some(list), ..) => Some((list, LsmSource::SecurityFs)),
            (None, Some(list), ..) => Some((list, LsmSource::Cmdline)),
            (None, None, Some(text), Some(path)) => parse::config_option(text, "CONFIG_LSM")
                .map(|list| (parse::lsm_list(list), LsmSource::Config(path.clone()))),
            _ => None,
        };
        let bpf_lsm_config = match (&config_text, config) {
            (Some(text), Some(path)) => Some((
                path,
                parse::config_option(text, "CONFIG_BPF_LSM")
                    .unwrap_or("n")
                    .to_owned(),
            )),
            _ => None,
        };
        Facts {
            lsms,
            bpf_lsm_config,
            version: release.as_deref().and_then(parse::kernel_version),
            release,
            io_uring_disabled: self.number("proc/sys/kernel/io_uring_disabled"),
            ptrace_scope: self.number("proc/sys/kernel/yama/ptrace_scope"),
            core_pattern: self
                .read("proc/sys/kernel/core_pattern")
                .map(|text| parse::core_pattern(&text)),
            legacy_tiocsti: self.number("proc/sys/dev/tty/legacy_tiocsti"),
            procps: self.ps_version(),
        }
    }

    fn read(&self, path: &str) -> Option<String> {
        fs::read_to_string(self.root.join(path)).ok()
    }

    fn number(&self, path: &str) -> Option<u32> {
        self.read(path).as_deref().and_then(parse::sysctl_number)
    }

    /// `ps --version`, read from its standard output.
    fn ps_version(&self) -> Option<Option<Procps>> {
        let output = Command::new(&self.ps)
            .arg("--version")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .ok()?;
        Some(parse::procps_version(&String::from_utf8_lossy(
            &output.stdout,
        )))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    /// A host tree in a fresh directory, with `files` written in it.
    fn tree(tag: &str, files: &[(&str, &str)]) -> (PathBuf, Host) {
        let dir = std::env::temp_dir().join(format!("ns-doctor-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        for (path, text) in files {
            let path = dir.join(path);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }
        let ps = dir.join("ps");
        fs::write(&ps, "#!/bin/sh\necho 'ps from procps-ng 4.0.2'\n").unwrap();
        fs::set_permissions(&ps, fs::Permissions::from_mode(0o755)).unwrap();
        let host = Host::at(&dir, &ps);
        (dir, host)
    }

    const RELEASE: (&str, &str) = ("proc/sys/kernel/osrelease", "6.1.0-57-amd64\n");
    const CONFIG: (&str, &str) = (
        "boot/config-6.1.0-57-amd64",
        "CONFIG_BPF_LSM=y\nCONFIG_LSM=\"landlock,lockdown,yama,apparmor,bpf\"\n",
    );

    #[test]
    fn securityfs_comes_first() {
        let (dir, host) = tree(
            "securityfs",
            &[
                RELEASE,
                CONFIG,
                ("sys/kernel/security/lsm", "lockdown,capability,yama"),
                ("proc/cmdline", "quiet lsm=landlock,bpf"),
                ("proc/sys/kernel/io_uring_disabled", "2\n"),
                ("proc/sys/kernel/core_pattern", "|/bin/false\n"),
            ],
        );
        let facts = host.facts();
        let (list, source) = facts.lsms.unwrap();
        assert_eq!(
            (list.join(","), source),
            ("lockdown,capability,yama".to_owned(), LsmSource::SecurityFs)
        );
        assert_eq!(facts.bpf_lsm_config.unwrap().1, "y");
        assert_eq!(facts.version, Some(KernelVersion::new(6, 1)));
        assert_eq!(facts.io_uring_disabled, Some(2));
        assert_eq!(facts.ptrace_scope, None);
        assert_eq!(facts.legacy_tiocsti, None);
        assert_eq!(
            facts.core_pattern,
            Some(CorePattern::Piped("/bin/false".to_owned()))
        );
        assert!(facts.procps.unwrap().unwrap().reads_every_environ());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn without_securityfs_the_command_line_then_the_config() {
        let (dir, host) = tree(
            "cmdline",
            &[RELEASE, CONFIG, ("proc/cmdline", "quiet lsm=landlock,yama")],
        );
        let (list, source) = host.facts().lsms.unwrap();
        assert_eq!(
            (list.join(","), source),
            ("landlock,yama".to_owned(), LsmSource::Cmdline)
        );
        fs::remove_dir_all(dir).unwrap();

        let (dir, host) = tree("config", &[RELEASE, CONFIG, ("proc/cmdline", "quiet")]);
        let (list, source) = host.facts().lsms.unwrap();
        assert_eq!(list.join(","), "landlock,lockdown,yama,apparmor,bpf");
        assert!(matches!(source, LsmSource::Config(_)));
        fs::remove_dir_all(dir).unwrap();

        let (dir, host) = tree("nothing", &[("proc/cmdline", "quiet")]);
        let facts = host.facts();
        assert!(facts.lsms.is_none() && facts.bpf_lsm_config.is_none() && facts.release.is_none());
        fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_missing_ps_is_a_fact() {
        let (dir, _) = tree("no-ps", &[]);
        let host = Host::at(&dir, &dir.join("no-such-ps"));
        assert!(host.facts().procps.is_none());
        fs::remove_dir_all(dir).unwrap();
    }
}
