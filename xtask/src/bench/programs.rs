//! What each of the guardian's programs costs while a workload runs, from
//! the kernel's own BPF statistics (`BPF_ENABLE_STATS`, on only while this
//! measures: timing every run costs a little itself).

use std::{collections::HashMap, path::Path, time::Duration};

use aya::{
    programs::loaded_programs,
    sys::{Stats, enable_stats},
};
use guardian_ebpf::programs as names;

use super::{
    machine::{self, Case},
    report::Markdown,
};

/// The programs that may run on a workload's path, as the kernel names them
/// (at most 15 bytes).
fn watched() -> Vec<&'static str> {
    let mut all = vec![
        names::SYSCALL_ENTER.0,
        names::SYSCALL_EXIT.0,
        names::SYSCALL_EXIT_64.0,
        names::MM_LOCK.0,
        names::IO_URING_COMPLETE.0,
    ];
    all.extend(names::WATCH.map(|(name, _, _)| name));
    all.extend(names::LSM.map(|(name, _)| name));
    all.into_iter()
        .map(|name| &name[..name.len().min(15)])
        .collect()
}

/// Run count and run time so far of each watched program, by id.
fn snapshot() -> anyhow::Result<HashMap<u32, (String, u64, Duration)>> {
    let watched = watched();
    let mut programs = HashMap::new();
    for info in loaded_programs() {
        let info = info?;
        let name = info.name_as_str().unwrap_or_default().to_owned();
        if watched.contains(&name.as_str()) {
            programs.insert(info.id(), (name, info.run_count(), info.run_time()));
        }
    }
    Ok(programs)
}

/// The syscall-heavy workloads, where a program's cost shows most.
const WORKLOADS: [(&str, machine::Rate); 2] = [
    ("open/close", machine::open_close_rate),
    ("`dd bs=1`", machine::byte_copy_rate),
];

/// One table: for each guardian holding a secret and each syscall-heavy
/// workload, the runs of each program per operation and their cost.
pub fn table(md: &mut Markdown, binary: &Path, dir: &Path) -> anyhow::Result<()> {
    eprintln!("bench: cost per program");
    md.line("### Cost per program\n");
    md.line(
        "The kernel's own statistics (`BPF_ENABLE_STATS`), over 2 s of each workload, beside a \
         guardian holding a secret. A program run on every system call shows about two runs per \
         operation here.\n",
    );
    md.line("| guardian | workload | program | runs per operation | ns per run |\n|---|---|---|---|---|");
    for case in [Case::Native, Case::All] {
        let _guardian = case.start(binary, &dir.join("programs"))?;
        for (workload, run) in WORKLOADS {
            let _stats = enable_stats(Stats::RunTime)?;
            let before = snapshot()?;
            let duration = Duration::from_secs(2);
            let operations = run(duration) * duration.as_secs_f64();
            for (id, (name, runs, time)) in snapshot()? {
                let (_, runs_before, time_before) = before.get(&id).cloned().unwrap_or_default();
                let runs = runs.saturating_sub(runs_before);
                if runs == 0 {
                    continue;
                }
                let time = time.saturating_sub(time_before);
                md.line(format!(
                    "| {} | {workload} | `{name}` | {:.2} | {:.0} |",
                    case.label().trim_start_matches("holding a secret, "),
                    runs as f64 / operations,
                    time.as_nanos() as f64 / runs as f64,
                ));
            }
        }
    }
    md.line("");
    Ok(())
}
