//! No escape for holders: a tree of 200 descendants (double-forked setsid
//! daemons, process-group changers) is gone after the trigger; and if the
//! guardian itself is killed, every holder of every session dies with it.

use std::{fs, time::Duration};

use e2e::{Guardian, Session, escaping_holder, is_alive, wait_until};

/// Live processes whose argv[0] is `tag`.
fn tagged(tag: &str) -> Vec<i32> {
    e2e::processes()
        .filter(|(pid, cmdline)| {
            cmdline.split(|&b| b == 0).next() == Some(tag.as_bytes()) && is_alive(*pid)
        })
        .map(|(pid, _)| pid)
        .collect()
}

#[test]
fn a_tree_of_200_escaping_descendants_is_gone_after_the_trigger() {
    let guardian = Guardian::start("tree");
    assert_eq!(
        guardian.status()["containment"],
        "cgroup",
        "cgroup v2 expected on this machine"
    );
    let mut session = Session::start(&guardian);
    let (rc, _, err) = session.run("printf %s x | $NS put tok");
    assert_eq!(rc, 0, "{err}");
    let tag = format!("ns-tree-{}", std::process::id());
    // 50 rounds of 4 escape styles: a plain child, a double-forked setsid
    // daemon, a double fork without setsid, and a process-group changer.
    let script = format!(
        r#"for i in $(seq 50); do
             (exec -a {tag} sleep 1000) &
             ( setsid bash -c 'exec -a {tag} sleep 1000' & ) &
             ( ( exec -a {tag} sleep 1000 ) & ) &
             python3 -c 'import os; os.setpgid(0, 0); os.execvp("sleep", ["{tag}", "1000"])' &
           done; exec -a {tag}-root sleep 1000"#
    );
    fs::write(session.dir().join("tree.sh"), script).unwrap();
    session.spawn("$NS exec --env T=tok -- bash tree.sh");
    let grown = wait_until(Duration::from_secs(30), || tagged(&tag).len() == 200);
    assert!(
        grown,
        "only {} of 200 descendants started",
        tagged(&tag).len()
    );

    session.signal_leader(libc::SIGKILL);
    let gone = wait_until(Duration::from_secs(2), || tagged(&tag).is_empty());
    assert!(gone, "{} descendants survived", tagged(&tag).len());
    assert!(tagged(&format!("{tag}-root")).is_empty());
}

#[test]
fn killing_the_guardian_kills_every_holder_and_a_restart_starts_empty() {
    let guardian = Guardian::start("guardian-death");
    assert_eq!(guardian.status()["fail_closed"], "supervisor");
    let mut sessions: Vec<Session> = (0..3).map(|_| Session::start(&guardian)).collect();
    let mut holders = Vec::new();
    for (n, session) in sessions.iter_mut().enumerate() {
        let (rc, _, err) = session.run(&format!("printf %s x | $NS put tok{n}"));
        assert_eq!(rc, 0, "{err}");
        let holder = escaping_holder("pids", "T");
        session.spawn(&format!("$NS exec --env T=tok{n} -- {holder}"));
        assert!(wait_until(Duration::from_secs(10), || session
            .pids_in("pids")
            .len()
            == 3));
        holders.extend(session.pids_in("pids"));
    }
    // SAFETY: kill with the pid of the guardian this test started.
    unsafe { libc::kill(guardian.pid(), libc::SIGKILL) };
    let dead = wait_until(Duration::from_secs(1), || {
        holders.iter().all(|&pid| !is_alive(pid))
    });
    let alive: Vec<_> = holders.iter().filter(|&&pid| is_alive(pid)).collect();
    assert!(dead, "holders outlived the guardian: {alive:?}");

    let restarted = Guardian::start("guardian-restart");
    assert_eq!(restarted.status()["secrets"], 0);
    drop(guardian);
}
