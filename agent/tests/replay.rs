//! `my-agent replay DIR` re-sends dead letters once their cause is fixed,
//! through the output that wrote them, and removes what it delivered;
//! records still refused are dead-lettered anew, an unreachable collector
//! leaves the files as they were, and a symlink is never followed.

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;

use common::*;

fn replay(config: &Path, dir: &Path, extra: &[&str]) -> Output {
    let out = std::process::Command::new(agent_binary())
        .arg("--config")
        .arg(config)
        .arg("replay")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap();
    eprintln!(
        "replay: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn dead_letters(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "ndjson"));
    files.sort();
    files
}

/// Runs the agent against a collector that rejects every request (HTTP
/// 400) until 30 records sit in dead-letter files; returns the config path
/// and the dead-letter directory. The agent is stopped.
fn make_dead_letters(dir: &Path, sink: &Sink) -> (PathBuf, PathBuf) {
    *sink.state.reject_marker.lock().unwrap() = Some("seq=".into());
    let config = pipeline_config(dir, &sink.url).replace(
        &format!("    endpoint: {}\n", sink.url),
        &format!("    endpoint: {}\n    max_request_records: 7\n", sink.url),
    );
    let agent = Agent::start(dir, &config);
    let log = dir.join("mysqld.err");
    append_lines(&log, (0..30).map(numbered_line));
    let dead = dir.join("buffer/dead-letter");
    wait_until("30 dead-lettered records", || {
        dead_letters(&dead)
            .iter()
            .map(|p| {
                std::fs::read_to_string(p)
                    .unwrap_or_default()
                    .lines()
                    .count()
            })
            .sum::<usize>()
            == 30
    });
    assert!(agent.stop().success());
    assert_eq!(sink.record_count(), 0);
    (dir.join("agent.yml"), dead)
}

#[test]
fn replay_delivers_and_removes_dead_letters() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let (config, dead) = make_dead_letters(dir.path(), &sink);
    assert!(dead_letters(&dead).len() >= 5, "7 records per request");

    // The collector is still down: nothing is lost, every file stays.
    *sink.state.reject_marker.lock().unwrap() = None;
    sink.set_mode(Mode::Unavailable);
    let before: Vec<(PathBuf, String)> = dead_letters(&dead)
        .into_iter()
        .map(|p| (p.clone(), std::fs::read_to_string(&p).unwrap()))
        .collect();
    let out = replay(&config, &dead, &["--timeout", "1"]);
    assert_eq!(out.status.code(), Some(1), "some remain");
    for (path, text) in &before {
        assert_eq!(&std::fs::read_to_string(path).unwrap(), text, "kept whole");
    }

    // Fixed, except that one record is refused for good: the request that
    // holds it is sent again in halves, and only that record is refused.
    sink.set_mode(Mode::Accept);
    *sink.state.reject_marker.lock().unwrap() = Some("seq=00000013".into());
    let out = replay(&config, &dead, &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "the record refused again remains in the directory"
    );
    let counts = sink.seq_counts();
    for n in 0..30 {
        let want = usize::from(n != 13);
        assert_eq!(
            counts.get(&n).copied().unwrap_or(0),
            want,
            "seq {n}: {counts:?}"
        );
    }
    let left = dead_letters(&dead);
    assert_eq!(
        left.len(),
        1,
        "only the refused request, in a new file: {left:?}"
    );
    let text = std::fs::read_to_string(&left[0]).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.contains("seq=00000013"));
    assert!(!before.iter().any(|(p, _)| p == &left[0]), "a new file");
    let meta = std::fs::read_to_string(left[0].with_extension("meta.json")).unwrap();
    assert!(meta.contains("HTTP 400"), "{meta}");

    // Once the collector takes it, the directory empties.
    *sink.state.reject_marker.lock().unwrap() = None;
    let out = replay(&config, &dead, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert!(dead_letters(&dead).is_empty());
    let counts = sink.seq_counts();
    assert!((0..30).all(|n| counts.get(&n) == Some(&1)), "{counts:?}");
    assert_eq!(sink.record_count(), 30, "nothing sent twice");
    let leftovers: Vec<_> = std::fs::read_dir(&dead).unwrap().collect();
    assert!(
        leftovers.is_empty(),
        "meta files removed too: {leftovers:?}"
    );
}

#[test]
fn replay_refuses_symlinks_and_names_bad_lines() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let config = dir.path().join("agent.yml");
    std::fs::write(&config, pipeline_config(dir.path(), &sink.url)).unwrap();
    let dead = dir.path().join("dead");
    std::fs::create_dir(&dead).unwrap();
    // A secret the service user could point a dead letter at.
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "{\"password\":\"hunter2\"}\n").unwrap();
    std::os::unix::fs::symlink(&secret, dead.join("evil.ndjson")).unwrap();
    std::fs::write(dead.join("bad.ndjson"), "{\"ok\":1}\nnot json\n").unwrap();
    let out = replay(&config, &dead, &["--output", "output0"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("evil.ndjson") && err.contains("symlink"),
        "{err}"
    );
    assert!(err.contains("bad.ndjson:2: not a JSON record"), "{err}");
    assert_eq!(sink.record_count(), 0, "nothing sent");
    assert!(secret.exists() && dead.join("bad.ndjson").exists());

    let out = replay(&config, &dead, &["--output", "nope"]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("output `nope` is not in"));
    let out = replay(&config, &dir.path().join("no-such-dir"), &[]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    let out = replay(&dir.path().join("no-such.yml"), &dead, &[]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
}

#[test]
fn replay_waits_for_slow_collectors() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let (config, dead) = make_dead_letters(dir.path(), &sink);
    *sink.state.reject_marker.lock().unwrap() = None;
    sink.state
        .delay_ms
        .store(300, std::sync::atomic::Ordering::SeqCst);
    let out = replay(&config, &dead, &[]);
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(sink.record_count(), 30);
    assert!(dead_letters(&dead).is_empty());
    let counts = sink.seq_counts();
    assert!((0..30).all(|n| counts.get(&n) == Some(&1)), "{counts:?}");
}
