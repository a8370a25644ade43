//! The README's quick start, followed literally: each `$` line of its
//! marked block runs, in order, in a shell that leads its own session, with
//! `ningen-shikkaku` on PATH, and prints what the README says it prints
//! (numbers aside: pids and ages differ). Its `exit` ends the shell, after
//! which the secret must be gone.

use std::{fs, path::Path, time::Duration};

use e2e::{Guardian, Session, bin, is_alive, wait_until};

/// One `$` line of the README and the lines it shows after it.
struct Step {
    command: String,
    shows: Vec<String>,
}

/// The steps of the block between the quick-start markers.
fn quick_start() -> Vec<Step> {
    let readme = Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md");
    let text = fs::read_to_string(readme).expect("README.md");
    let start = text
        .find("<!-- quick start")
        .expect("the quick start's marker");
    let end = text
        .find("<!-- end of quick start -->")
        .expect("its end marker");
    let mut steps: Vec<Step> = Vec::new();
    for line in text[start..end].lines().skip(1) {
        match (line.strip_prefix("$ "), steps.last_mut()) {
            (Some(command), _) => steps.push(Step {
                command: command.to_owned(),
                shows: Vec::new(),
            }),
            (None, Some(step)) if !line.starts_with("```") => step.shows.push(line.to_owned()),
            _ => {}
        }
    }
    steps
}

/// A line with each run of digits as `N` and each run of spaces as one, so
/// that pids, ages and the column widths they cause compare equal.
fn shape(line: &str) -> String {
    let mut shaped = String::new();
    for c in line.trim().chars() {
        let c = match c {
            '0'..='9' => 'N',
            ' ' => ' ',
            c => c,
        };
        let repeat = matches!(c, 'N' | ' ') && shaped.ends_with(c);
        if !repeat {
            shaped.push(c);
        }
    }
    shaped
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn the_readme_quick_start_does_what_it_says() {
    let steps = quick_start();
    assert!(steps.len() >= 4, "the quick start was not found");
    let guardian = Guardian::start("quick-start");
    let mut shell = Session::start(&guardian);
    let dir = bin().parent().expect("the binary's directory").to_owned();
    assert_eq!(
        shell.run(&format!("export PATH={}:$PATH", dir.display())).0,
        0
    );
    let leader = shell.leader();
    for step in &steps {
        if step.command.starts_with("exit") {
            shell.type_line(&step.command);
            break;
        }
        let (code, out, err) = shell.run(&step.command);
        assert_eq!(code, 0, "{}: {err}", step.command);
        let said = format!("{}{err}", String::from_utf8_lossy(&out));
        let said: Vec<String> = said.lines().map(shape).collect();
        let shows: Vec<String> = step.shows.iter().map(|line| shape(line)).collect();
        assert_eq!(said, shows, "{}", step.command);
        if step.command.contains(" put ") {
            assert!(
                said[0].ends_with("PID N") && err.contains(&leader.to_string()),
                "{err}"
            );
        }
    }
    assert!(
        wait_until(Duration::from_secs(5), || !is_alive(leader)),
        "exit did not end the shell"
    );
    assert!(
        wait_until(Duration::from_secs(5), || guardian.status()["secrets"] == 0),
        "the secret outlived its shell"
    );
    let listed = guardian.cli(["list"]);
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout),
        "NAME  LEADER  HOLDERS  AGE  TTL LEFT\n(no secrets)\n"
    );
}
