//! SIGHUP builds before it stops: a configuration that cannot start is
//! refused while the old pipeline keeps delivering, one that fails only
//! when it opens its buffer brings the old one back, and sources without a
//! pos_file keep their positions across a reload.

mod common;

use std::time::Duration;

use common::*;

/// The shared pipeline without a pos_file: positions live in memory only.
fn config_without_pos_file(dir: &std::path::Path, url: &str) -> String {
    let c = pipeline_config(dir, url);
    let pos = format!("    pos_file: {}/tail.pos\n", dir.display());
    assert!(c.contains(&pos));
    c.replace(&pos, "")
}

#[test]
fn a_config_that_cannot_start_leaves_the_old_one_delivering() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("mysqld.err");
    let good = pipeline_config(dir.path(), &sink.url);
    let agent = Agent::start(dir.path(), &good);
    let config_path = dir.path().join("agent.yml");
    append_lines(&log, (0..10).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "10 lines", |r| r.len() >= 10);

    // Valid YAML and valid settings (`--dry-run` accepts it), but the
    // buffer directory cannot be created: its parent is a regular file.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, b"").unwrap();
    let broken = good.replace(
        &format!("path: {}/buffer", dir.path().display()),
        &format!("path: {}/buffer", blocker.display()),
    );
    assert_ne!(broken, good);
    std::fs::write(&config_path, &broken).unwrap();
    let dry = std::process::Command::new(agent_binary())
        .args(["--dry-run", "--config"])
        .arg(&config_path)
        .output()
        .unwrap();
    assert!(dry.status.success(), "{dry:?}");
    agent.signal(libc::SIGHUP);
    wait_until("the refusal in the log", || {
        agent
            .log_text()
            .contains("cannot start, the old one keeps running")
    });
    let text = agent.log_text();
    assert!(text.contains("not-a-dir/buffer"), "names the path: {text}");
    assert!(!text.contains("SIGHUP: reloading"), "{text}");
    append_lines(&log, (10..20).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "lines after the refusal", |r| {
        r.len() >= 20
    });
    std::thread::sleep(Duration::from_millis(300));
    let counts = sink.seq_counts();
    assert!(
        (0..20).all(|n| counts.get(&n) == Some(&1)),
        "each line once: {counts:?}"
    );
    assert!(agent.stop().success());
}

#[test]
fn a_config_whose_buffer_cannot_open_brings_the_old_one_back() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("mysqld.err");
    let good = pipeline_config(dir.path(), &sink.url);
    let agent = Agent::start(dir.path(), &good);
    let config_path = dir.path().join("agent.yml");
    append_lines(&log, (0..10).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "10 lines", |r| r.len() >= 10);

    // The new buffer directory is writable (so the reload goes ahead) but
    // holds damage that opening the buffer cannot get past: a progress
    // record without its chunk that cannot be removed (it is a directory).
    // So the new pipeline fails only once the old one has stopped.
    let other = dir.path().join("other-buffer");
    std::fs::create_dir_all(other.join("chunk-0000000000000001.ack/x")).unwrap();
    let broken = good.replace(
        &format!("path: {}/buffer", dir.path().display()),
        &format!("path: {}", other.display()),
    );
    std::fs::write(&config_path, &broken).unwrap();
    agent.signal(libc::SIGHUP);
    wait_until("the fallback in the log", || {
        agent.log_text().contains("starting the previous one again")
    });
    append_lines(&log, (10..20).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "lines after the fallback", |r| {
        r.len() >= 20
    });
    std::thread::sleep(Duration::from_millis(300));
    let counts = sink.seq_counts();
    assert!(
        (0..20).all(|n| counts.get(&n) == Some(&1)),
        "each line once: {counts:?}"
    );
    assert!(agent.stop().success());
}

#[test]
fn positions_without_a_pos_file_survive_a_reload() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("mysqld.err");
    let config = config_without_pos_file(dir.path(), &sink.url);
    let agent = Agent::start(dir.path(), &config);
    append_lines(&log, (0..50).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "50 lines", |r| r.len() >= 50);
    for round in 0..3 {
        agent.signal(libc::SIGHUP);
        wait_until("the reload", || {
            agent.log_text().matches("SIGHUP: reloading").count() > round
        });
    }
    // A new file created between reloads is read from its head.
    let second = dir.path().join("second.err");
    append_lines(&second, (50..60).map(numbered_line));
    append_lines(&log, (60..70).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "70 lines", |r| r.len() >= 70);
    std::thread::sleep(Duration::from_secs(2));
    let counts = sink.seq_counts();
    assert!(
        (0..70).all(|n| counts.get(&n) == Some(&1)),
        "each line once across three reloads: {counts:?}"
    );
    assert_eq!(sink.record_count(), 70);
    assert!(agent.stop().success());
}

/// Whether `sig` is in the mask of process `pid`'s field `field` of
/// /proc/PID/status (`SigBlk`: blocked, `SigCgt`: has a handler).
fn in_signal_mask(pid: u32, field: &str, sig: i32) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig - 1)) != 0)
}

/// A SIGHUP that arrives while the agent is still starting (a logrotate
/// postrotate racing a restart) is held until the handlers exist and then
/// reloads; it used to kill the agent by SIGHUP's default action. The
/// signal is sent at a moment the agent is seen holding it (SigBlk), which
/// is between main's first steps and the handlers; an attempt that misses
/// that moment (the start was quicker than the look) starts again.
#[test]
fn a_sighup_during_start_waits_for_the_start_and_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("mysqld.err");
    append_lines(&log, (0..10).map(numbered_line));
    let config = pipeline_config(dir.path(), &sink.url);
    let mut agent = None;
    for _ in 0..20 {
        let candidate = Agent::start(dir.path(), &config);
        let pid = candidate.child.id();
        let t0 = std::time::Instant::now();
        let held = loop {
            if in_signal_mask(pid, "SigBlk", libc::SIGHUP) {
                break true;
            }
            if in_signal_mask(pid, "SigCgt", libc::SIGHUP) || t0.elapsed() > Duration::from_secs(10)
            {
                break false;
            }
        };
        if held {
            candidate.signal(libc::SIGHUP);
            agent = Some(candidate);
            break;
        }
        assert!(candidate.stop().success());
    }
    let mut agent = agent.expect("in 20 starts, never saw the agent holding SIGHUP");
    wait_until("the start, then the held SIGHUP's reload", || {
        let text = agent.log_text();
        text.contains("started with") && text.contains("SIGHUP: reloading")
    });
    assert!(
        agent.child.try_wait().unwrap().is_none(),
        "still running: {}",
        agent.log_text()
    );
    append_lines(&log, (10..20).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "20 lines", |r| r.len() >= 20);
    std::thread::sleep(Duration::from_millis(300));
    let counts = sink.seq_counts();
    assert!(
        (0..20).all(|n| counts.get(&n) == Some(&1)),
        "each line once: {counts:?}"
    );
    assert!(agent.stop().success());
}
