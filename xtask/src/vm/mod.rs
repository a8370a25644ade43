//! `cargo xtask test --kernel K`: the end-to-end tests inside a virtual
//! machine that boots another kernel than the host's.
//!
//! The guardian takes different paths on different kernels: where BPF LSM
//! programs load (Debian's own kernels list `bpf` among their LSMs) it arms
//! `bpf-lsm+tracepoints`, elsewhere it falls back to tracepoints alone, and
//! the early kill needs 6.13's kfuncs. A machine tests only the path its own
//! kernel allows, so this boots Debian 12's 6.1 or its 6.12 (or any vmlinuz)
//! with virtme-ng, which shows the guest the host's files read-only: the
//! guardian and the test binaries built here run there as they are. Each
//! selected test runs alone, under a time limit, and writes its libtest
//! output into a directory the guest may write (`target/vm/LABEL/`), which
//! this side reads to report; `--cmdline` adds kernel arguments, such as an
//! `lsm=` list without `bpf`, to test the fallback on the same kernel.

mod bench;
mod guest;
mod report;
mod setup;

pub use bench::bench;

use std::{
    ffi::OsStr,
    fs,
    path::{Path, PathBuf},
    process::Stdio,
    time::Duration,
};

use anyhow::{Context, bail};

use crate::toolchain;

/// The tests run when no `--filter` is given: each file's name, then the
/// test's. Together they cover what differs between kernels: the leader's
/// exit and hangup, the holders' deaths, the read paths, tamper by the
/// holder's own uid and by root, the guardian's death failing closed,
/// `exec --file`, the everyday tools, and `doctor`; under TCG, boot and run take
/// about 6 minutes. Left out for their cost there: containment's tree of
/// 200 (2 minutes alone) and ptrace seize (attach covers both uids).
pub const DEFAULT_TESTS: &[&str] = &[
    // The leader's exit and hangup; the holders' deaths.
    "switch::sigkill_of_the_leader_wipes_and_kills_forked_and_setsid_holders",
    "switch::sighup_of_the_leader_wipes_and_kills_forked_and_setsid_holders",
    "switch::revoke_wipes_one_secret_and_kills_only_its_holders",
    // The read paths.
    "read_paths::procfs_environ_and_mem_by_every_spelling_are_stopped_before_a_byte_is_read",
    "read_paths::the_leader_is_protected_like_a_holder_from_ptrace_pidfd_getfd_and_procfs",
    "read_paths::attempts_the_kernel_refuses_are_audited_but_wipe_nothing",
    "read_paths::with_the_32_bit_tables_unwatched_their_memory_reads_are_still_stopped_and_the_gap_is_named",
    "read_paths::the_leaders_environment_which_holds_no_value_may_be_read",
    "read_paths::a_mem_file_opened_before_the_put_reads_nothing_after_it",
    // Tamper: which mode is in force, then root and the holder's own uid.
    "tamper::the_tamper_mode_in_force_is_named_and_the_lsm_fallback_says_why",
    "tamper::the_syscall_tracepoints_are_attached_only_while_something_is_protected",
    "tamper::process_vm_readv_on_a_holder_by_root_copies_nothing_and_dies",
    "tamper::process_vm_readv_on_a_holder_by_its_own_uid_copies_nothing_and_dies",
    "tamper::ptrace_attach_on_a_holder_by_root_and_by_its_uid_dies",
    "tamper::attacks_on_the_guardian_die_and_leave_its_secrets_alone",
    // The guardian's death fails closed.
    "switch::stopping_the_guardian_wipes_everything_and_kills_every_holder",
    "fail_closed::every_holder_dies_within_a_tick_of_a_killed_guardian",
    "fail_closed::every_holder_dies_within_a_tick_of_a_crashed_guardian",
    "fail_closed::the_kernel_kills_the_newest_holder_at_its_leaders_exit_before_the_guardian_wakes",
    "fail_closed::no_core_of_a_ward_is_forced_from_outside_its_session",
    // No tracer keeps a ward; a wiped session stays guarded (issue 27).
    "tracers::issue_27_a_put_from_a_session_traced_from_outside_is_refused_naming_the_tracer",
    "tracers::issue_27_a_session_wiped_by_a_tamper_stays_guarded_against_the_next_attacker",
    "tracers::issue_27_a_session_wiped_by_a_revoke_from_outside_stays_guarded_until_its_leader_exits",
    // exec --file.
    "files::a_secret_file_holds_the_exact_bytes_in_memory_only_and_outside_the_environment",
    "files::an_open_of_the_file_from_outside_the_grant_is_stopped_and_audited",
    "files::a_secret_file_reopened_by_its_handle_is_stopped_and_audited",
    "files::the_trigger_zeroes_the_file_for_whoever_still_has_it",
    // Everyday tools beside holders (issue 24): denied, not killed, where
    // BPF LSM runs.
    "everyday_tools::issue_24_everyday_tools_work_from_anywhere_beside_a_file_holder",
    "everyday_tools::issue_24_ps_at_an_env_holder_is_stopped_outside_the_session_and_works_inside",
    "everyday_tools::issue_24_ps_after_a_guardian_restart_touches_no_session",
    "everyday_tools::a_value_put_with_a_newline_and_exported_by_get_is_guarded",
    "everyday_tools::a_value_exported_before_a_revoke_stays_guarded_in_what_the_shell_starts_next",
    // What doctor says of this kernel, with and without a guardian.
    "doctor::doctor_matches_the_host_with_a_guardian_running",
    "doctor::doctor_matches_the_host_without_a_guardian",
];

/// What `cargo xtask test --kernel` was asked.
pub struct Request {
    /// `debian-6.1`, `debian-6.12` or a vmlinuz path.
    pub kernel: String,
    /// Extra kernel command line, if any.
    pub cmdline: Option<String>,
    /// Substrings of `FILE::TEST`; empty for [`DEFAULT_TESTS`].
    pub filters: Vec<String>,
}

/// One end-to-end test: its binary and its name in it.
#[derive(Clone)]
pub struct Test {
    /// The test binary (for `tests/tests/switch.rs`, `target/release/deps/switch-HASH`).
    pub binary: PathBuf,
    /// `FILE::TEST`, as filters and [`DEFAULT_TESTS`] name it.
    pub id: String,
    /// The test's name inside its binary.
    pub name: String,
}

/// Sets up, builds, boots `request.kernel` and runs the selected tests in
/// it; fails if the machine did not run them all or any test failed.
pub fn test(root: &Path, request: &Request) -> anyhow::Result<()> {
    crate::require_root("the end-to-end tests in a VM (they start a real guardian there)")?;
    let vm = Vm::prepare(root, &request.kernel, request.cmdline.clone(), "")?;
    let object = toolchain::ebpf_object(root);
    let tests = select(&build_tests(root, &object)?, &request.filters)?;
    let mut env = vm.env();
    env.push(("NINGEN_SHIKKAKU_EBPF_OBJECT", object.as_os_str()));
    guest::write_script(
        &vm.machine.out,
        &root.join("tests"),
        &env,
        &guest::tests_body(&tests),
    )?;
    vm.announce(&format!("{} test(s)", tests.len()));
    let mut progress = report::Progress::default();
    let took = vm
        .machine
        .run(guest::TEST_LIMIT * tests.len() as u32, |started| {
            progress.show(&vm.machine.out, &tests, started)
        })?;
    report::summarize(&vm.label, &vm.machine.out, &tests, took, &vm.machine)
}

/// A machine set up to boot: what it needs installed, the guardian built,
/// and an empty results directory.
pub struct Vm {
    /// The kernel's short name (`debian-6.1`, or the file's).
    pub label: String,
    /// The built guardian.
    pub guardian: PathBuf,
    /// The machine to boot (its `out` is the results directory,
    /// `target/vm/LABEL[-SUFFIX]/`).
    pub machine: guest::Machine,
}

impl Vm {
    /// Installs what is missing, builds the guardian, and empties
    /// `target/vm/LABEL{suffix}/`.
    pub fn prepare(
        root: &Path,
        kernel: &str,
        cmdline: Option<String>,
        suffix: &str,
    ) -> anyhow::Result<Self> {
        let kernel = setup::Kernel::parse(kernel);
        let vmlinuz = setup::ensure_vm_tools(&kernel)?;
        let vng = setup::ensure_virtme_ng(root)?;
        toolchain::ensure_test_tools()?;
        let guardian = crate::build(root)?;
        let label = kernel.label();
        let out = root.join("target/vm").join(format!("{label}{suffix}"));
        fresh_dir(&out)?;
        let kvm = guest::kvm_works(&vmlinuz, &out);
        Ok(Self {
            label,
            guardian,
            machine: guest::Machine {
                vng,
                vmlinuz,
                kvm,
                cmdline,
                out,
            },
        })
    }

    /// The environment every guest script sets: the guardian, and under
    /// emulation how much slower the guest is.
    pub fn env(&self) -> Vec<(&'static str, &OsStr)> {
        let mut env = vec![("NINGEN_SHIKKAKU_BIN", self.guardian.as_os_str())];
        if !self.machine.kvm {
            env.push((
                "NINGEN_SHIKKAKU_TEST_SLOWDOWN",
                OsStr::new(guest::TCG_SLOWDOWN),
            ));
        }
        env
    }

    /// Says what is booted, and where the guest's output goes.
    pub fn announce(&self, what: &str) {
        eprintln!(
            "xtask: booting {} ({}) under {}, {what}; guest output in {}",
            self.label,
            self.machine.vmlinuz.display(),
            match self.machine.kvm {
                true => "KVM",
                false => "TCG emulation (slow)",
            },
            self.machine.out.join("vng.log").display()
        );
    }
}

/// Builds the end-to-end test binaries (release, as `cargo xtask test`
/// does) and lists each one's tests.
fn build_tests(root: &Path, object: &Path) -> anyhow::Result<Vec<Test>> {
    eprintln!("xtask: building the end-to-end tests (release)");
    let output = crate::cargo()
        .current_dir(root)
        .args(["test", "--release", "--no-run", "--workspace"])
        .args(["--exclude", "guardian-ebpf", "--message-format=json"])
        .env("NINGEN_SHIKKAKU_EBPF_OBJECT", object)
        .stderr(Stdio::inherit())
        .output()
        .context("cannot run cargo")?;
    if !output.status.success() {
        bail!("building the tests failed");
    }
    let manifest = root.join("tests/Cargo.toml");
    let mut tests = Vec::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        if let Some((file, binary)) = e2e_binary(line, &manifest) {
            tests.extend(list_tests(&file, &binary)?);
        }
    }
    Ok(tests)
}

/// The file name and executable of an end-to-end test binary (a
/// `tests/tests/*.rs` target of the `e2e` package), from one line of
/// cargo's JSON messages; `None` for anything else.
fn e2e_binary(line: &str, manifest: &Path) -> Option<(String, PathBuf)> {
    let message: serde_json::Value = serde_json::from_str(line).ok()?;
    let target = &message["target"];
    let is_e2e = message["reason"] == "compiler-artifact"
        && message["manifest_path"].as_str() == manifest.to_str()
        && target["kind"] == serde_json::json!(["test"]);
    let executable = message["executable"].as_str()?;
    is_e2e.then(|| {
        (
            target["name"].as_str().unwrap_or("?").to_owned(),
            executable.into(),
        )
    })
}

/// Every test in `binary`, ignored ones included (the end-to-end tests are
/// ignored unless asked for).
fn list_tests(file: &str, binary: &Path) -> anyhow::Result<Vec<Test>> {
    let output = std::process::Command::new(binary)
        .args(["--list", "--include-ignored"])
        .output()
        .with_context(|| format!("cannot list the tests of {}", binary.display()))?;
    let listing = String::from_utf8_lossy(&output.stdout);
    Ok(listing
        .lines()
        .filter_map(|line| line.strip_suffix(": test"))
        .map(|name| Test {
            binary: binary.to_owned(),
            id: format!("{file}::{name}"),
            name: name.to_owned(),
        })
        .collect())
}

/// The tests whose `FILE::TEST` contains one of `filters` (or, without
/// filters, those named in [`DEFAULT_TESTS`]), in that order. A filter that
/// matches nothing is an error: a renamed test must not silently drop out.
fn select(tests: &[Test], filters: &[String]) -> anyhow::Result<Vec<Test>> {
    let defaults: Vec<String> = DEFAULT_TESTS.iter().map(|&id| id.to_owned()).collect();
    let exact = filters.is_empty();
    let filters = if exact { &defaults } else { filters };
    let mut selected: Vec<Test> = Vec::new();
    for filter in filters {
        let matches = |test: &&Test| match exact {
            true => test.id == *filter,
            false => test.id.contains(filter.as_str()),
        };
        let found: Vec<&Test> = tests.iter().filter(matches).collect();
        if found.is_empty() {
            bail!("no end-to-end test is named like {filter} (names are FILE::TEST)");
        }
        for test in found {
            if !selected.iter().any(|t| t.id == test.id) {
                selected.push(test.clone());
            }
        }
    }
    Ok(selected)
}

/// Empties `dir` (the last run's results) or makes it.
fn fresh_dir(dir: &Path) -> anyhow::Result<()> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("cannot empty {}", dir.display()))?;
    }
    fs::create_dir_all(dir).with_context(|| format!("cannot make {}", dir.display()))
}

/// Whole seconds and tenths, for reports.
fn seconds(duration: Duration) -> String {
    format!("{:.1} s", duration.as_secs_f64())
}
