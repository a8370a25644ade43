//! The host's files as the kernel and procps write them, parsed: LSM lists,
//! the kernel command line, the kernel's build config, its release and
//! `ps --version`. Pure functions, so that each format is unit-tested.

#![forbid(unsafe_code)]

/// The LSM names of a comma-separated list (`lockdown,capability,bpf`),
/// without blanks or empty entries.
pub(super) fn lsm_list(text: &str) -> Vec<String> {
    text.trim()
        .trim_matches('"')
        .split(',')
        .map(str::trim)
        .filter(|name| !name.is_empty())
        .map(str::to_owned)
        .collect()
}

/// The value of the last `lsm=` on a kernel command line (the kernel keeps
/// the last), up to the `--` that ends the kernel's own arguments.
pub(super) fn cmdline_lsm(cmdline: &str) -> Option<Vec<String>> {
    cmdline
        .split_whitespace()
        .take_while(|word| *word != "--")
        .filter_map(|word| word.strip_prefix("lsm="))
        .last()
        .map(lsm_list)
}

/// A kernel build option in a `/boot/config-*` file: `Some("y")`,
/// `Some("\"a,b\"")`, or `Some("n")` for `# CONFIG_X is not set`; `None`
/// when the file does not name it.
pub(super) fn config_option<'a>(config: &'a str, option: &str) -> Option<&'a str> {
    config.lines().find_map(|line| {
        let line = line.trim();
        if let Some(value) = line
            .strip_prefix(option)
            .and_then(|rest| rest.strip_prefix('='))
        {
            return Some(value);
        }
        let unset = line
            .strip_prefix("# ")
            .and_then(|rest| rest.strip_prefix(option))
            .is_some_and(|rest| rest == " is not set");
        unset.then_some("n")
    })
}

/// A kernel version, major and minor (`6.12.118+deb12-amd64` is 6.12).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct KernelVersion {
    /// The major number.
    pub major: u32,
    /// The minor number.
    pub minor: u32,
}

impl KernelVersion {
    /// `major.minor`.
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }
}

impl std::fmt::Display for KernelVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}", self.major, self.minor)
    }
}

/// The version at the start of a kernel release string (`uname -r`).
pub(super) fn kernel_version(release: &str) -> Option<KernelVersion> {
    let mut numbers = release.trim().split(|c: char| !c.is_ascii_digit());
    let major = numbers.next()?.parse().ok()?;
    let minor = numbers.next()?.parse().ok()?;
    Some(KernelVersion::new(major, minor))
}

/// A procps version: which implementation, and its numbers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Procps {
    /// `procps-ng`, or whatever the first line names (`procps`, BusyBox...).
    pub flavour: String,
    /// The dotted numbers (`4.0.2` is `[4, 0, 2]`).
    pub version: Vec<u32>,
}

impl Procps {
    /// procps-ng 4.0.x reads every process's `/proc/PID/environ` on every
    /// `ps`, whatever its options (Debian 12's `ps aux` among them).
    pub(super) fn reads_every_environ(&self) -> bool {
        self.flavour == "procps-ng" && self.version.starts_with(&[4, 0])
    }
}

/// The first line of `ps --version`: `ps from procps-ng 4.0.2`, or the
/// older `procps-ng version 3.3.17`.
pub(super) fn procps_version(output: &str) -> Option<Procps> {
    let line = output.lines().next()?;
    let words: Vec<&str> = line.split_whitespace().collect();
    let at = words.iter().position(|word| word.starts_with("procps"))?;
    let number = words[at + 1..]
        .iter()
        .find(|word| word.starts_with(|c: char| c.is_ascii_digit()))?;
    let version = number
        .split('.')
        .map_while(|part| {
            let digits: String = part.chars().take_while(char::is_ascii_digit).collect();
            digits.parse().ok()
        })
        .collect::<Vec<u32>>();
    (!version.is_empty()).then(|| Procps {
        flavour: words[at].to_owned(),
        version,
    })
}

/// What a `core_pattern` does with a core: pipe it to a helper
/// (`|/usr/lib/systemd/systemd-coredump ...`), or write a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum CorePattern {
    /// A pipe to this helper (its program).
    Piped(String),
    /// A file, named by this pattern.
    File(String),
}

/// The contents of `/proc/sys/kernel/core_pattern`.
pub(super) fn core_pattern(text: &str) -> CorePattern {
    let text = text.trim_end_matches('\n');
    match text.strip_prefix('|') {
        Some(helper) => CorePattern::Piped(
            helper
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_owned(),
        ),
        None => CorePattern::File(text.to_owned()),
    }
}

/// A number in a `/proc/sys` file.
pub(super) fn sysctl_number(text: &str) -> Option<u32> {
    text.trim().parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsm_lists_are_split_as_the_kernel_writes_them() {
        assert_eq!(
            lsm_list("lockdown,capability,landlock,bpf"),
            ["lockdown", "capability", "landlock", "bpf"]
        );
        assert_eq!(lsm_list("capability,yama,\n"), ["capability", "yama"]);
        assert_eq!(
            lsm_list("\"landlock,lockdown,yama\""),
            ["landlock", "lockdown", "yama"]
        );
        assert!(lsm_list("").is_empty());
    }

    #[test]
    fn the_last_lsm_on_the_command_line_counts_and_init_arguments_do_not() {
        let cmdline = "BOOT_IMAGE=/vmlinuz root=/dev/sda1 lsm=yama lsm=landlock,bpf quiet";
        assert_eq!(cmdline_lsm(cmdline).unwrap(), ["landlock", "bpf"]);
        assert_eq!(cmdline_lsm("console=ttyS0 quiet"), None);
        assert_eq!(cmdline_lsm("quiet -- lsm=bpf"), None);
        assert_eq!(cmdline_lsm("slsm=bpf"), None);
    }

    #[test]
    fn config_options_are_set_quoted_or_not_set() {
        let config = "\
# Security
CONFIG_BPF_LSM=y
# CONFIG_SECURITY_YAMA is not set
CONFIG_LSM=\"landlock,lockdown,yama,apparmor,bpf\"
CONFIG_BPF_LSM_EXTRA=m
";
        assert_eq!(config_option(config, "CONFIG_BPF_LSM"), Some("y"));
        assert_eq!(config_option(config, "CONFIG_SECURITY_YAMA"), Some("n"));
        assert_eq!(
            lsm_list(config_option(config, "CONFIG_LSM").unwrap()),
            ["landlock", "lockdown", "yama", "apparmor", "bpf"]
        );
        assert_eq!(config_option(config, "CONFIG_IO_URING"), None);
    }

    #[test]
    fn kernel_versions_are_read_off_releases() {
        let version = |release| kernel_version(release).unwrap();
        assert_eq!(version("6.12.118+deb12-amd64"), KernelVersion::new(6, 12));
        assert_eq!(version("6.1.0-57-amd64\n"), KernelVersion::new(6, 1));
        assert_eq!(version("6.18.44-fc-v1252"), KernelVersion::new(6, 18));
        assert_eq!(version("5.15"), KernelVersion::new(5, 15));
        assert!(version("6.4.0") < KernelVersion::new(6, 5));
        assert!(version("6.13-rc1") >= KernelVersion::new(6, 13));
        assert_eq!(kernel_version("linux"), None);
        assert_eq!(kernel_version("6"), None);
    }

    #[test]
    fn procps_versions_old_and_new() {
        let new = procps_version("ps from procps-ng 4.0.2\n").unwrap();
        assert_eq!(
            (new.flavour.as_str(), &new.version[..]),
            ("procps-ng", &[4, 0, 2][..])
        );
        assert!(new.reads_every_environ());
        let fixed = procps_version("ps from procps-ng 4.1.0").unwrap();
        assert!(!fixed.reads_every_environ());
        let old = procps_version("procps-ng version 3.3.17").unwrap();
        assert_eq!(old.version, [3, 3, 17]);
        assert!(!old.reads_every_environ());
        let rc = procps_version("ps from procps-ng 4.0.5-rc1").unwrap();
        assert_eq!(rc.version, [4, 0, 5]);
        assert_eq!(procps_version("BusyBox v1.36.1 multi-call binary."), None);
        assert_eq!(procps_version(""), None);
    }

    #[test]
    fn core_patterns_pipe_or_name_a_file() {
        assert_eq!(
            core_pattern("|/usr/lib/systemd/systemd-coredump %P %u %g %s %t %c %h\n"),
            CorePattern::Piped("/usr/lib/systemd/systemd-coredump".to_owned())
        );
        assert_eq!(core_pattern("core\n"), CorePattern::File("core".to_owned()));
        assert_eq!(
            core_pattern("/var/crash/core.%e.%p"),
            CorePattern::File("/var/crash/core.%e.%p".to_owned())
        );
    }

    #[test]
    fn sysctl_numbers() {
        assert_eq!(sysctl_number("2\n"), Some(2));
        assert_eq!(sysctl_number("x"), None);
    }
}
