//! Lifetimes and controls: `wipe --all` (per user, root for all) and the
//! policy file (limits, TTLs, tamper response, and clear start-up errors).

use std::{fs, process::Command};

use e2e::{Guardian, Session, bin, scratch_dir};

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn wipe_all_wipes_the_callers_secrets_and_root_wipes_everyones() {
    let guardian = Guardian::start("wipe-all");
    let mut root = Session::start(&guardian);
    let mut nobody = Session::start_as_nobody(&guardian);
    assert_eq!(root.run("printf %s r | $NS put mine").0, 0);
    let (rc, _, err) = nobody.run("printf %s n | $NS put theirs");
    assert_eq!(rc, 0, "{err}");
    let (rc, _, err) = nobody.run("$NS wipe --all");
    assert_eq!(rc, 0, "{err}");
    assert_eq!(
        guardian.status()["secrets"],
        1,
        "nobody's wipe touched root's secret"
    );
    assert_eq!(root.run("$NS get mine").1, b"r");
    assert_eq!(nobody.run("printf %s n | $NS put theirs").0, 0);
    assert_eq!(root.run("$NS wipe --all").0, 0);
    assert_eq!(guardian.status()["secrets"], 0);
}

fn guard_with_config(text: &str) -> std::process::Output {
    let dir = scratch_dir("config");
    let config = dir.join("config.toml");
    fs::write(&config, text).unwrap();
    // The socket needs a directory of its own: the audit log's is made 0700.
    fs::create_dir(dir.join("run")).unwrap();
    let output = Command::new(bin())
        .args(["guard", "--socket"])
        .arg(dir.join("run/s.sock"))
        .arg("--audit")
        .arg(dir.join("audit.jsonl"))
        .arg("--config")
        .arg(&config)
        .output()
        .unwrap();
    fs::remove_dir_all(&dir).unwrap();
    output
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn bad_config_files_stop_the_guardian_with_the_line_named() {
    let unknown = guard_with_config("max_ttl = \"1h\"\nshred_disk = true\n");
    let stderr = String::from_utf8_lossy(&unknown.stderr);
    assert!(!unknown.status.success());
    assert!(
        stderr.contains("line 2") && stderr.contains("shred_disk"),
        "{stderr}"
    );
    let bad = guard_with_config("# policy\n\ndefault_ttl = \"whenever\"\n");
    let stderr = String::from_utf8_lossy(&bad.stderr);
    assert!(
        !bad.status.success() && stderr.contains("line 3"),
        "{stderr}"
    );
    let missing = Command::new(bin())
        .args(["guard", "--config", "/nonexistent.toml"])
        .output()
        .unwrap();
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("/nonexistent.toml"));
}

#[test]
#[ignore = "end-to-end: needs root and a built guardian (cargo xtask test runs it)"]
fn policy_limits_are_enforced() {
    let guardian = Guardian::start_with_config(
        "policy",
        "max_secrets_per_uid = 1\nmax_secret_bytes = 8\nmax_ttl = \"1h\"\ndefault_ttl = \"30m\"\n",
    );
    let mut session = Session::start(&guardian);
    let (rc, _, err) = session.run("printf %s 123456789 | $NS put big");
    assert!(rc != 0 && err.contains("larger than the limit"), "{err}");
    let (rc, _, err) = session.run("printf %s x | $NS put long --ttl 2h");
    assert!(rc != 0 && err.contains("longer than the maximum"), "{err}");
    assert_eq!(session.run("printf %s x | $NS put one").0, 0);
    let (rc, _, err) = session.run("printf %s x | $NS put two");
    assert!(rc != 0 && err.contains("maximum of 1"), "{err}");
    let (_, out, _) = session.run("$NS list --json");
    let list: serde_json::Value = serde_json::from_slice(&out).unwrap();
    let ttl = list[0]["ttl_left_secs"].as_u64().unwrap();
    assert!(
        (1700..=1800).contains(&ttl),
        "default TTL not applied: {ttl}"
    );
}
