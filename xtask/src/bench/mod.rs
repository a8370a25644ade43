//! `cargo xtask bench`: measures the switch against its alternatives in one
//! run and writes docs/BENCHMARKS.md and docs/bench-latency.svg.
//!
//! 1. Trigger latency (kill of the leader to secret wiped, and to the last
//!    holder dead) for trees of 1, 10 and 100 holders: the eBPF guardian, the
//!    same guardian with `--no-ebpf`, and the Python reference; and the
//!    guardian's own death to the last holder dead.
//! 2. Request cost: `get` with 1, 16 and 64 clients against ssh-agent.
//! 3. Cost to the machine: fork-exec-exit, open/close and one-byte read/write
//!    loops with and without the guardian.
//! 4. Size: RSS and locked memory idle, with 10,000 secrets, 1,000 sessions.
//! 5. Screen lock to secret wiped, through a private system bus and the
//!    tests' fake logind, beside D-Bus's own delivery.
//!
//! `NINGEN_SHIKKAKU_BENCH_TRIGGERS` sets the triggers per row (default 200),
//! `NINGEN_SHIKKAKU_BENCH_DEATHS` the guardian deaths per row (default 200,
//! each a guardian start);
//! `NINGEN_SHIKKAKU_BENCH_LOCKS` the screen locks (default 200);
//! `NINGEN_SHIKKAKU_BENCH_ONLY=requests` (or `=machine`, `=lock`, or `=deaths`) runs
//! only the request rows (or the cost to the machine, or the guardian's
//! death beside the kernel-alone rows, or `=triggers` the eBPF guardian's
//! trigger rows beside them) and prints them without writing the report (for
//! iterating on one figure).

mod cost;
mod guardian;
mod lock;
mod machine;
mod programs;
mod report;
mod requests;
mod sys;
mod trigger;
mod vm_sections;

pub use cost::only as machine_only;
pub use vm_sections::splice as splice_vm_section;

use std::{fs, path::Path, time::Duration};

use report::{Markdown, Series, Summary};
use requests::Placement;
use trigger::{Bench, Sample, Subject};

const TREES: [usize; 3] = [1, 10, 100];
const CLIENTS: [usize; 3] = [1, 16, 64];
const LOAD_SECONDS: u64 = 5;
/// Rounds of each machine-cost workload, each timed with and without a guardian.
const MACHINE_ROUNDS: usize = 20;

/// Runs every benchmark and writes the report.
pub fn run(root: &Path, binary: &Path) -> anyhow::Result<()> {
    let runs: usize = std::env::var("NINGEN_SHIKKAKU_BENCH_TRIGGERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    let dir = std::env::temp_dir().join("ningen-shikkaku-bench");
    let _ = fs::remove_dir_all(&dir);
    let mut md = Markdown::default();
    header(&mut md, runs);
    let only = std::env::var("NINGEN_SHIKKAKU_BENCH_ONLY");
    if matches!(only.as_deref(), Ok("requests" | "machine" | "lock")) {
        match only.as_deref() {
            Ok("requests") => drop(request_table(&mut md, binary, &dir)?),
            Ok("lock") => lock_table(&mut md)?,
            _ => cost::table(&mut md, binary, &dir, MACHINE_ROUNDS)?,
        }
        println!("{}", md.0);
        return Ok(());
    }

    eprintln!("bench: trigger latency ({runs} triggers per row)");
    let bench = Bench {
        binary,
        root,
        dir: dir.join("trigger"),
    };
    // `=deaths`: the guardian's death and the kernel-alone floor only;
    // `=triggers`: the eBPF guardian's triggers and that floor only.
    let subjects: &[Subject] = match only.as_deref() {
        Ok("deaths") => &[Subject::Kernel],
        Ok("triggers") => &[Subject::Ebpf, Subject::Kernel, Subject::KernelAfterLeader],
        _ => &[
            Subject::Ebpf,
            Subject::Pidfd,
            Subject::Python,
            Subject::Kernel,
            Subject::KernelAfterLeader,
        ],
    };
    let mut results: Vec<(Subject, usize, Vec<Sample>)> = Vec::new();
    for tree in TREES {
        for &subject in subjects {
            eprintln!("bench:   {} with {tree} holder(s)", subject.label());
            results.push((subject, tree, bench.run(subject, tree, runs)?));
        }
    }
    trigger_tables(&mut md, &results);
    if matches!(only.as_deref(), Ok("triggers")) {
        println!("{}", md.0);
        return Ok(());
    }
    let deaths: usize = std::env::var("NINGEN_SHIKKAKU_BENCH_DEATHS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    death_table(&mut md, &bench, &results, deaths)?;
    if matches!(only.as_deref(), Ok("deaths")) {
        println!("{}", md.0);
        return Ok(());
    }
    let svg = root.join("docs/bench-latency.svg");
    let kill_to_dead: Vec<(String, Vec<u64>)> = results
        .iter()
        .filter(|(_, tree, _)| *tree == 10)
        .map(|(subject, tree, samples)| {
            (
                format!("{}, {tree} holders", subject.label()),
                samples.iter().map(|s| s.kill_to_dead).collect(),
            )
        })
        .collect();
    let series: Vec<Series<'_>> = kill_to_dead
        .iter()
        .map(|(label, values)| Series {
            label: label.clone(),
            values,
        })
        .collect();
    report::histogram(
        &svg,
        "Leader SIGKILL to last holder dead (10 holders)",
        &series,
    )?;
    md.line("![Leader SIGKILL to last holder dead, 10 holders](bench-latency.svg)\n");

    lock_table(&mut md)?;
    eprintln!("bench: request cost");
    let rates = request_table(&mut md, binary, &dir)?;
    report::throughput(
        &root.join("docs/bench-requests.svg"),
        "get against ssh-agent: requests per second",
        &CLIENTS,
        &rates,
    )?;
    md.line("![Requests per second against clients](bench-requests.svg)\n");
    cost::table(&mut md, binary, &dir, MACHINE_ROUNDS)?;

    eprintln!("bench: size");
    let sizes = machine::sizes(binary, &dir.join("size"), 10_000, 1_000)?;
    md.line("## Size\n");
    md.line("| state | VmRSS | VmLck |\n|---|---|---|");
    for (label, (rss, lck)) in [
        ("idle", sizes.idle),
        ("10,000 secrets of 32 bytes", sizes.with_secrets),
        ("1,000 live sessions, one secret each", sizes.with_sessions),
    ] {
        md.line(format!(
            "| {label} | {:.1} MiB | {:.1} MiB |",
            rss as f64 / 1024.0,
            lck as f64 / 1024.0
        ));
    }
    md.line(format!(
        "\nTargets: idle RSS at most 16 MiB; 10,000 secrets add at most 64 MiB (here: {:.1} MiB).",
        (sizes.with_secrets.0.saturating_sub(sizes.idle.0)) as f64 / 1024.0
    ));

    // The sections measured in a VM (`bench --kernel`) stay until rerun there.
    let doc = root.join("docs/BENCHMARKS.md");
    md.0 += &vm_sections::kept(&fs::read_to_string(&doc).unwrap_or_default());
    fs::write(&doc, &md.0)?;
    println!("{}", md.0);
    eprintln!("bench: wrote docs/BENCHMARKS.md and docs/bench-latency.svg");
    let _ = fs::remove_dir_all(&dir);
    Ok(())
}

fn header(md: &mut Markdown, runs: usize) {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    md.line("# Benchmarks\n");
    md.line("Made by `cargo xtask bench` (as root), all rows in one run on one machine.\n");
    md.line(format!(
        "Machine: {cores} cores, kernel {}, HZ=250 (one scheduler tick = 4 ms). {runs} triggers per \
         latency row. Figures are microseconds: median | p99 | max.\n",
        kernel.trim()
    ));
}

fn trigger_tables(md: &mut Markdown, results: &[(Subject, usize, Vec<Sample>)]) {
    md.line("## Trigger latency\n");
    md.line(
        "Measured alike for every row from the moment the harness sends SIGKILL to the leader: to \
         the secret wiped (the guardian's audit record; the reference's own report), and to every \
         holder seen dead through the harness's pidfds. The harness kills only once the leader and \
         every holder are asleep in `sleep` (their execs finished), so no row times leftover \
         start-up work. The kernel-alone row starts at the kill itself, while every switch must \
         first see the leader die (the last column below). The eBPF guardian's newest holder is \
         killed by the kernel at the leader's exit (where the kernel has the kfuncs for it, see \
         `status`), the rest by its cgroup.kill.\n",
    );
    md.line("| implementation | holders | kill to wiped: median | p99 | max | kill to last holder dead: median | p99 | max |");
    md.line("|---|---|---|---|---|---|---|---|");
    for (subject, tree, samples) in results {
        let wiped: Vec<u64> = samples.iter().map(|s| s.kill_to_wiped).collect();
        let dead: Vec<u64> = samples.iter().map(|s| s.kill_to_dead).collect();
        let wiped = match subject.kernel_alone() {
            true => "– | – | –".to_owned(),
            false => Summary::of(&wiped).cells(),
        };
        md.line(format!(
            "| {} | {tree} | {wiped} | {} |",
            subject.label(),
            Summary::of(&dead).cells()
        ));
    }
    kill_target_table(md, results);
    md.line("The eBPF guardian's own figures, from the kernel's exit event (`bpf_ktime_get_ns` in \
             `sched_process_exit`) as its audit log records them; the targets are stated on these.\n");
    md.line("| holders | event to wiped: median | p99 | max | event to last holder exit: median | p99 | max | leader's SIGKILL to its exit event: median | p99 | guardian's CPU from the kill to the last holder dead: median |");
    md.line("|---|---|---|---|---|---|---|---|---|---|");
    for (_, tree, samples) in results
        .iter()
        .filter(|(subject, _, _)| *subject == Subject::Ebpf)
    {
        let wiped: Vec<u64> = samples.iter().filter_map(|s| s.event_to_wiped).collect();
        let dead: Vec<u64> = samples.iter().filter_map(|s| s.event_to_dead).collect();
        // The bench's kill to the kernel's exit event: what no switch
        // reacting to the leader's death can save.
        let leader: Vec<u64> = samples
            .iter()
            .filter_map(|s| Some(s.kill_to_wiped.saturating_sub(s.event_to_wiped?)))
            .collect();
        let leader = Summary::of(&leader);
        let cpu: Vec<u64> = samples.iter().filter_map(|s| s.guardian_cpu).collect();
        md.line(format!(
            "| {tree} | {} | {} | {:.0} | {:.0} | {:.0} |",
            Summary::of(&wiped).cells(),
            Summary::of(&dead).cells(),
            leader.median,
            leader.p99,
            Summary::of(&cpu).median
        ));
    }
    md.line("");
}

/// The kill target: the eBPF guardian's leader SIGKILL to last holder dead
/// against the kernel alone from the leader's death, medians of one run.
fn kill_target_table(md: &mut Markdown, results: &[(Subject, usize, Vec<Sample>)]) {
    let median = |wanted: Subject, tree: usize| {
        let dead: Vec<u64> = results
            .iter()
            .filter(|(subject, size, _)| *subject == wanted && *size == tree)
            .flat_map(|(_, _, samples)| samples.iter().map(|s| s.kill_to_dead))
            .collect();
        (!dead.is_empty()).then(|| Summary::of(&dead).median)
    };
    md.line(
        "\nThe kill target: the eBPF guardian against the kernel doing it alone from the \
         leader's death (the harness SIGKILLs a leader, waits on its pidfd for the exit, then \
         writes cgroup.kill), leader SIGKILL to last holder dead, medians; target at most 1.3x.\n",
    );
    md.line("| holders | eBPF guardian | kernel alone from the leader's death | ratio |");
    md.line("|---|---|---|---|");
    for tree in TREES {
        let (Some(ours), Some(floor)) = (
            median(Subject::Ebpf, tree),
            median(Subject::KernelAfterLeader, tree),
        ) else {
            continue;
        };
        md.line(format!(
            "| {tree} | {ours:.0} | {floor:.0} | {:.2} |",
            ours / floor.max(1.0)
        ));
    }
    md.line(
        "\nWhy ten holders were slow (issue 26). Traced with `perf record -a -e \
         sched:sched_switch -e sched:sched_wakeup` over 40 triggers of ten holders on a guardian \
         of its own: between the leader's exit and the last holder's exit, the guardian's main \
         thread was on a CPU for a median 511 to 589 µs, on two cores where each dying `sleep` \
         needs about 100 µs of CPU to exit, and the holders queued behind it. Most of that was \
         taking the gone leader's session out of the kernel's ward map, right after \
         cgroup.kill: a walk of all 65,536 slots of a BPF hash map. Detaching the syscall \
         programs (which rewrites kernel text and interrupts every CPU) could also start at the \
         last holder's exit event, which comes before that holder has finished dying. Now the \
         walk waits until the trigger's holders are dead, nothing is detached while a trigger \
         waits, and a few holders with handles are signalled rather than their cgroup read \
         back. In the same trace the guardian's CPU in that window fell to a median 248 µs, \
         and the kill to the last holder's exit from 1,336 to 1,028 µs; the last column of the \
         next table measures the guardian's CPU in every run. The trigger record is written \
         after the holders are dead, never before the kill.\n",
    );
}

/// Guardian SIGKILL to the last holder dead, beside the kernel-alone floor
/// (one cgroup.kill) of the same run.
fn death_table(
    md: &mut Markdown,
    bench: &Bench<'_>,
    results: &[(Subject, usize, Vec<Sample>)],
    runs: usize,
) -> anyhow::Result<()> {
    md.line(
        "## Guardian killed to last holder dead
",
    );
    md.line(format!(
        "SIGKILL to the guardian (a fresh one each time, {runs} per row) to the last holder of its \
         one session seen dead through the harness's pidfds. The supervisor is woken by the \
         guardian's exit program, before the kernel tears the guardian's eBPF links down, and \
         writes cgroup.kill. The floor is the kernel-alone row above: one cgroup.kill.\n"
    ));
    md.line("| holders | guardian killed to last holder dead: median | p99 | max | floor: median | ratio of medians |");
    md.line("|---|---|---|---|---|---|");
    for tree in TREES {
        eprintln!("bench:   guardian deaths with {tree} holder(s)");
        let deaths = Summary::of(&bench.guardian_deaths(tree, runs)?);
        let floor: Vec<u64> = results
            .iter()
            .filter(|(subject, size, _)| *subject == Subject::Kernel && *size == tree)
            .flat_map(|(_, _, samples)| samples.iter().map(|s| s.kill_to_dead))
            .collect();
        let floor = Summary::of(&floor).median;
        md.line(format!(
            "| {tree} | {:.0} | {:.0} | {:.0} | {floor:.0} | {:.2} |",
            deaths.median,
            deaths.p99,
            deaths.max,
            deaths.median / floor.max(1.0)
        ));
    }
    md.line("");
    Ok(())
}

/// logind's `Session.Lock` to the secret wiped.
fn lock_table(md: &mut Markdown) -> anyhow::Result<()> {
    let runs: usize = std::env::var("NINGEN_SHIKKAKU_BENCH_LOCKS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200);
    eprintln!("bench: screen lock to wiped ({runs} locks)");
    let samples = lock::locks(runs)?;
    let column = |pick: fn(&lock::LockSample) -> u64| {
        Summary::of(&samples.iter().map(pick).collect::<Vec<_>>()).cells()
    };
    md.line(
        "## Screen lock to wiped
",
    );
    md.line(format!(
        "A fake logind (`tests/dbus/fake_logind.py`) on a private dbus-daemon sends \
         `Session.Lock` for a session holding one secret, {runs} times, a fresh session \
         each. From the moment it sends (its CLOCK_MONOTONIC): to a subscriber of its own, \
         on a connection of its own, having the signal (D-Bus's part, with a Python client's \
         own overhead), to the guardian having it, and to the secret wiped (the guardian's \
         trigger record). The holders then die as in any trigger.\n"
    ));
    md.line("| | median | p99 | max |\n|---|---|---|---|");
    md.line(format!(
        "| signal sent to a Python subscriber having it (D-Bus, for comparison) | {} |",
        column(|s| s.to_subscriber)
    ));
    md.line(format!(
        "| signal sent to the guardian having it | {} |",
        column(|s| s.to_guardian)
    ));
    md.line(format!(
        "| signal sent to the secret wiped | {} |",
        column(|s| s.to_wiped)
    ));
    md.line("");
    Ok(())
}

/// The request rows; returns their rates per client count for the plot:
/// the guardian's, ssh-agent's, and the durable-write floor's.
fn request_table(
    md: &mut Markdown,
    binary: &Path,
    dir: &Path,
) -> anyhow::Result<Vec<(String, Vec<f64>)>> {
    let guardian = guardian::Guardian::start(binary, &dir.join("requests"), true)?;
    let agent = requests::SshAgent::start(&dir.join("agent"))?;
    let duration = Duration::from_secs(LOAD_SECONDS);
    md.line("## Request cost\n");
    md.line(format!(
        "{LOAD_SECONDS} s per row; each client has its own connection. `get` writes and fdatasyncs an \
         audit record before each answer; ssh-agent answers request-identities with one ed25519 key.\n"
    ));
    md.line("| clients | guardian get/s | get µs: median | p99 | max | fdatasyncs/s | gets per fdatasync | main thread CPU µs per get | ssh-agent req/s | agent µs: median | p99 | max | get/agent |");
    md.line("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let (mut ours, mut agents, mut one_client_median) = (Vec::new(), Vec::new(), 0.0);
    let mut busy = Vec::new();
    for clients in CLIENTS {
        let (gets, flushes) = requests::guardian_gets(&guardian, clients, duration)?;
        let agent_load = agent.identities(clients, duration);
        if clients == 1 {
            one_client_median = Summary::of(&gets.latencies).median;
        }
        ours.push(gets.per_second);
        agents.push(agent_load.per_second);
        busy.push(format!(
            "{:.0}% of the time at {clients}",
            gets.per_second * flushes.main_thread_us / 1e4
        ));
        md.line(format!(
            "| {clients} | {:.0} | {} | {:.0} | {:.1} | {:.0} | {:.0} | {} | {:.2} |",
            gets.per_second,
            Summary::of(&gets.latencies).cells(),
            flushes.per_second,
            flushes.answers_each,
            flushes.main_thread_us,
            agent_load.per_second,
            Summary::of(&agent_load.latencies).cells(),
            gets.per_second / agent_load.per_second.max(1.0)
        ));
    }
    let floors = dir.join("floors");
    let appended = Summary::of(&requests::durable_writes(
        &floors,
        Placement::Appended,
        2000,
    )?);
    let floor = Summary::of(&requests::durable_writes(
        &floors,
        Placement::InPlace,
        2000,
    )?);
    let flush_rate = |placement| requests::flushes_under_writes(&floors, placement, duration);
    let (appended_rate, in_place_rate) = (
        flush_rate(Placement::Appended)?,
        flush_rate(Placement::InPlace)?,
    );
    md.line(format!(
        "\nThe least a durable record costs on this disk, 2,000 times in the log's directory: a \
         300-byte record written in place over zeros written ahead and fdatasynced, as the \
         guardian's log does (docs/AUDIT.md), median {:.0} µs, p99 {:.0} µs; appended instead \
         (each fdatasync then also carries the file's new size), median {:.0} µs, p99 {:.0} µs. \
         With one client a `get`'s median is the in-place floor plus {:.0} µs (target: plus 60 \
         µs). The floor's rate in the plot is every client's request riding each such flush: \
         clients / {:.0} µs.\n",
        floor.median,
        floor.p99,
        appended.median,
        appended.p99,
        one_client_median - floor.median,
        floor.median
    ));
    md.line(format!(
        "Why the log writes in place: one thread fdatasyncing in a loop for {LOAD_SECONDS} s while \
         another writes a record every few tens of µs, the guardian's pattern under many \
         clients, made {appended_rate:.0} flushes a second with appended records and \
         {in_place_rate:.0} with records written in place ({:+.0}%).\n",
        (in_place_rate / appended_rate.max(1.0) - 1.0) * 100.0
    ));
    md.line(format!(
        "Where the request targets are missed, the bound is CPU, not the disk: gets per \
         fdatasync grows with the clients (every request that arrives during a flush rides the \
         next one), while the guardian's main thread, which serves every request, was busy \
         (gets/s times its CPU per get) {} clients, on two cores that the clients' own \
         threads share. Counted with `perf record -a -e raw_syscalls:sys_enter` at one client, \
         a get costs that thread 14 system calls: 3 epoll_wait, 2 recvfrom, 2 getsid, 2 preads \
         of /proc/PID/status (the caller's and its leader's, whose tracers are checked at every \
         get), an openat and a close (the leader's status file), a futex wake of the syncer, \
         the record's pwrite and the answer's writev. Each goes through the slow path that the \
         armed syscall tracepoints put every system call of the machine on, and the kernel \
         formats a status file afresh at each read. ssh-agent answers from memory.\n",
        busy.join(", ")
    ));
    let floor_rates = CLIENTS
        .iter()
        .map(|&clients| clients as f64 * 1e6 / floor.median.max(1.0))
        .collect();
    Ok(vec![
        ("guardian get".to_owned(), ours),
        ("ssh-agent request-identities".to_owned(), agents),
        ("durable-write floor".to_owned(), floor_rates),
    ])
}
