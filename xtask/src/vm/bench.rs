//! `cargo xtask bench --kernel K`: the cost-to-the-machine benchmark inside
//! the virtual machine, so the BPF LSM mode (and, with an `lsm=` list
//! without `bpf`, the tracepoint mode of the same kernel) is measured where
//! it runs. The guest runs this xtask's own `bench-machine`; its table goes
//! into docs/BENCHMARKS.md as a section of its own, kept by later host runs.

use std::{fs, path::Path, time::Duration};

use anyhow::{Context, bail};

use super::{Vm, guest, report};

/// Rounds per workload in the guest: under TCG each guardian start takes
/// seconds, and a round starts two.
const ROUNDS: usize = 7;
/// The longest the benchmark may run in the guest.
const LIMIT: Duration = Duration::from_secs(40 * 60);

/// Boots `kernel` with `cmdline` added, runs the benchmark there and puts
/// its table in docs/BENCHMARKS.md under the kernel and the guardian's mode.
pub fn bench(root: &Path, kernel: &str, cmdline: Option<String>) -> anyhow::Result<()> {
    crate::require_root("the benchmark in a VM (it starts real guardians there)")?;
    let vm = Vm::prepare(root, kernel, cmdline, "-bench")?;
    let xtask = std::env::current_exe().context("cannot find this xtask's own binary")?;
    let rounds = ROUNDS.to_string();
    let command = [
        xtask.as_os_str(),
        "bench-machine".as_ref(),
        "--rounds".as_ref(),
        rounds.as_ref(),
        "--binary".as_ref(),
        vm.guardian.as_os_str(),
    ];
    let body = guest::command_body(&command, "bench");
    guest::write_script(&vm.machine.out, root, &vm.env(), &body)?;
    vm.announce("the cost-to-the-machine benchmark");
    let mut progress = report::Progress::default();
    let took = vm.machine.run(LIMIT, |started| {
        progress.show(&vm.machine.out, &[], started)
    })?;
    let read = |name: &str| fs::read_to_string(vm.machine.out.join(name)).unwrap_or_default();
    if read("bench.status").trim() != "0" {
        bail!(
            "the benchmark failed in the VM (exit {}): {}",
            read("bench.status").trim(),
            read("bench.log").trim_end()
        );
    }
    let mode = tamper_protection(&read("status"));
    let cmdline = vm.machine.cmdline.as_deref();
    let section = format!(
        "## Cost to the machine in a VM: {label}, {mode}\n\n\
         Kernel {release} under {accel}, active LSMs `{lsm}`, tamper protection `{mode}`: \
         a guardian holding a secret has {attached} attached. \
         {ROUNDS} rounds of 1 s per case, rotating as above; boot and run took {took} s. \
         Made by `cargo xtask bench --kernel {kernel}{extra}`. Figures under emulation compare \
         only with each other, in one run.\n\n{table}",
        label = vm.label,
        release = read("kernel").trim(),
        accel = if vm.machine.kvm { "KVM" } else { "TCG" },
        lsm = read("lsm").trim(),
        took = took.as_secs(),
        attached = match mode.as_str() {
            "bpf-lsm+tracepoints" => {
                "its BPF LSM programs and its address-space-lock and io_uring tracepoints, and \
                 no syscall program (both `watch_32_bit_syscalls` rows alike)"
            }
            _ => {
                "its address-space-lock and io_uring tracepoints, and its syscall programs: the \
                 per-call `syscalls:sys_exit_*` (`watch_32_bit_syscalls = false`) or \
                 `raw_syscalls:sys_exit` (`true`)"
            }
        },
        extra = cmdline.map_or_else(String::new, |c| format!(" --cmdline '{c}'")),
        table = read("bench.out").trim_end(),
    );
    let doc = root.join("docs/BENCHMARKS.md");
    let old = fs::read_to_string(&doc).unwrap_or_default();
    let key = format!("{} {mode}", vm.label);
    fs::write(&doc, crate::bench::splice_vm_section(&old, &key, &section))?;
    println!("{section}");
    eprintln!("xtask: wrote the section \"{key}\" of docs/BENCHMARKS.md");
    Ok(())
}

/// The guardian's tamper protection, from its `status` in the guest.
fn tamper_protection(status: &str) -> String {
    status
        .lines()
        .find_map(|line| line.strip_prefix("tamper protection"))
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or("unknown")
        .to_owned()
}
