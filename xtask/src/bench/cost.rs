//! The cost of the guardian's programs to everything else on the machine:
//! each workload's rate with nothing loaded, beside an idle guardian and a
//! guardian holding a secret under each `watch_32_bit_syscalls`, rounds
//! interleaved; then what each program costs per run, from the kernel's own
//! BPF statistics.

use std::{fs, path::Path, time::Duration};

use super::{
    machine::{self, Case},
    programs,
    report::{Markdown, median},
};

/// A loop whose rate shows the guardian's cost: (name, unit, run for a
/// duration and give the rate, the share of the rate it must keep in %).
type Workload = (&'static str, &'static str, machine::Rate, f64);

/// The workloads, with the share of their rate each must keep.
const WORKLOADS: [Workload; 4] = [
    (
        "`make -j2` of a small C project",
        "builds/s",
        machine::build_rate,
        98.0,
    ),
    (
        "`/bin/true` fork-exec-exit",
        "runs/s",
        machine::fork_exec_rate,
        98.0,
    ),
    (
        "open/close of /etc/hostname",
        "pairs/s",
        machine::open_close_rate,
        90.0,
    ),
    (
        "one-byte read+write (`dd bs=1`)",
        "bytes/s",
        machine::byte_copy_rate,
        88.0,
    ),
];

/// The section of the full report.
pub fn table(md: &mut Markdown, binary: &Path, dir: &Path, rounds: usize) -> anyhow::Result<()> {
    md.line("## Cost to the machine\n");
    md.line(format!(
        "Each workload runs {rounds} rounds per case, the order of the cases rotating every \
         round; rounds are listed in the order run. An idle guardian has only its watch \
         tracepoints attached. One holding a secret also has its read-path programs: where BPF \
         LSM does not run (as here), with `watch_32_bit_syscalls = false` the per-call \
         `syscalls:sys_exit_*` tracepoints of the few calls it judges, which the kernel runs for \
         no other call; with `true`, one program on `raw_syscalls:sys_exit`, run on every system \
         call of the machine. Either sends every system call through the kernel's slow path.\n"
    ));
    machine::prepare_build(&dir.join("project"))?;
    rows(md, binary, dir, rounds, &WORKLOADS)?;
    programs::table(md, binary, dir)
}

/// The cost-to-the-machine benchmark alone, `rounds` rounds per workload, as
/// markdown: what `cargo xtask bench --kernel` runs inside the VM, where
/// emulation makes one build of the C project take about a minute, so only
/// the loops run.
pub fn only(binary: &Path, rounds: usize) -> anyhow::Result<String> {
    let dir = std::env::temp_dir().join("ningen-shikkaku-bench");
    let mut md = Markdown::default();
    rows(&mut md, binary, &dir, rounds, &WORKLOADS[1..])?;
    programs::table(&mut md, binary, &dir)?;
    let _ = fs::remove_dir_all(&dir);
    Ok(md.0)
}

/// One table per workload: a row per [`Case`], `rounds` rounds each.
fn rows(
    md: &mut Markdown,
    binary: &Path,
    dir: &Path,
    rounds: usize,
    workloads: &[Workload],
) -> anyhow::Result<()> {
    for &(workload, unit, run, target) in workloads {
        eprintln!("bench: cost to the machine: {workload}");
        let rates = machine::rates(
            binary,
            &dir.join("machine"),
            rounds,
            Duration::from_secs(1),
            run,
        )?;
        md.line(format!("### {workload}\n"));
        md.line(format!(
            "| | {unit} (median) | kept | rounds |\n|---|---|---|---|"
        ));
        let base = median(&rates[Case::Without as usize]);
        for case in Case::ALL {
            let values = &rates[case as usize];
            md.line(format!(
                "| {} | {} | {:.1}% | [{}] |",
                case.label(),
                figure(median(values)),
                median(values) / base * 100.0,
                values
                    .iter()
                    .map(|&v| figure(v))
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        md.line(format!("\nTarget: keeps at least {target}% of its rate.\n"));
    }
    Ok(())
}

/// A rate, to a tenth where it is small (builds per second).
fn figure(value: f64) -> String {
    match value < 100.0 {
        true => format!("{value:.2}"),
        false => format!("{value:.0}"),
    }
}
