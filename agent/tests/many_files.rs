//! One glob matching 3,000 files, the agent under a 1,024 descriptor limit
//! (soft = hard, as a service's `LimitNOFILE=1024`): every line arrives
//! exactly once, also lines appended to files whose descriptors were
//! closed, to files renamed while closed, and `/metrics` answers all along.
//! The agent never holds more than its `max_open_files` (default 256) plus
//! what it needs for itself.

mod common;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const FILES: u64 = 3000;
const LIMIT: u64 = 1024;
/// The default max_open_files, and the agent's reserve beside it (see
/// `rlimit.rs`).
const MAX_OPEN: u64 = 256;
const RESERVED: u64 = 64;

/// Line `file` of phase `phase`: unique across the test.
fn seq(phase: u64, file: u64) -> u64 {
    phase * FILES + file
}

fn path_of(logs: &Path, file: u64) -> PathBuf {
    logs.join(format!("db{file:04}.err"))
}

fn write_phase(logs: &Path, phase: u64, files: impl IntoIterator<Item = u64>) -> Vec<u64> {
    let mut written = Vec::new();
    for i in files {
        append_lines(&path_of(logs, i), [numbered_line(seq(phase, i))]);
        written.push(seq(phase, i));
    }
    written
}

/// One metric's value for the first source, from a `/metrics` page.
fn gauge(page: &str, name: &str) -> Option<u64> {
    page.lines()
        .find(|l| l.starts_with(&format!("{name}{{source=\"tail0\"}}")))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn http_get(port: u16, path: &str) -> std::io::Result<String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

fn open_descriptors(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

/// What a background poller saw: `/metrics` answers (and failures after
/// the first answer), and the most descriptors the agent held.
#[derive(Default)]
struct Watch {
    answers: u64,
    failures: Vec<String>,
    max_fds: u64,
}

fn wait_for_lines(sink: &Sink, expected: &[u64], what: &str, agent: &Agent) {
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let counts = sink.seq_counts();
        let missing: Vec<u64> = expected
            .iter()
            .copied()
            .filter(|n| !counts.contains_key(n))
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {} of {} lines missing, e.g. {:?}; agent log ends:\n{}",
            missing.len(),
            expected.len(),
            &missing[..missing.len().min(5)],
            tail_of(&agent.log_text(), 30)
        );
        thread::sleep(Duration::from_millis(200));
    }
}

fn tail_of(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}

/// The files whose descriptor is closed now, by `/status` (which also
/// counts the open ones).
fn closed_files(port: u16) -> Vec<u64> {
    let status_doc = || -> serde_json::Value {
        let status = http_get(port, "/status").unwrap();
        let body = &status[status.find("\r\n\r\n").unwrap() + 4..];
        serde_json::from_str(body).unwrap()
    };
    // A source republishes its /status entry at most every 200 ms, so the
    // entry may trail the /metrics gauges by a round.
    wait_until("/status lists every file", || {
        status_doc()["sources"][0]["files"]
            .as_array()
            .is_some_and(|f| f.len() as u64 == FILES)
    });
    let doc = status_doc();
    let files = doc["sources"][0]["files"].as_array().unwrap();
    assert_eq!(files.len() as u64, FILES, "files in /status");
    let closed: Vec<u64> = files
        .iter()
        .filter(|f| f["open"] == false)
        .map(|f| {
            let name = f["path"].as_str().unwrap();
            name[name.len() - 8..name.len() - 4].parse().unwrap()
        })
        .collect();
    assert_eq!(
        doc["sources"][0]["open_files"].as_u64(),
        Some((files.len() - closed.len()) as u64)
    );
    closed
}

#[test]
fn three_thousand_files_under_a_limit_of_1024() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let sink = Sink::start();
    let port = free_port();
    let mut expected = write_phase(&logs, 0, 0..FILES);

    let pipeline = pipeline_config_for(dir.path(), &format!("{}/*.err", logs.display()), &sink.url);
    let config = format!("system:\n  metrics:\n    bind: 127.0.0.1:{port}\n{pipeline}");
    let started = Instant::now();
    let agent = Agent::start_with_nofile_limit(dir.path(), &config, LIMIT, LIMIT);
    let pid = agent.child.id();

    let watch = Arc::new(Mutex::new(Watch::default()));
    let stop = Arc::new(AtomicBool::new(false));
    let poller = {
        let (watch, stop) = (watch.clone(), stop.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let fds = open_descriptors(pid);
                let answer = http_get(port, "/metrics");
                let mut w = watch.lock().unwrap();
                w.max_fds = w.max_fds.max(fds);
                match answer {
                    Ok(page) if page.split(' ').nth(1) == Some("200") => w.answers += 1,
                    Ok(page) => w.failures.push(page.lines().next().unwrap_or("").into()),
                    // Before the listener is up: not a failure yet.
                    Err(e) if w.answers > 0 => w.failures.push(e.to_string()),
                    Err(_) => {}
                }
                drop(w);
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // While the agent opens them.
    expected.extend(write_phase(&logs, 1, 0..FILES));
    wait_for_lines(
        &sink,
        &expected,
        "lines written before and at start",
        &agent,
    );
    eprintln!(
        "many_files: {} lines of {FILES} files shipped {:?} after start",
        expected.len(),
        started.elapsed()
    );

    // Settled: every file followed, at most max_open_files of them open.
    wait_until("all files followed within max_open_files", || {
        let page = http_get(port, "/metrics").unwrap_or_default();
        gauge(&page, "my_agent_source_files") == Some(FILES)
            && gauge(&page, "my_agent_source_open_files").is_some_and(|n| n <= MAX_OPEN)
    });

    let closed = closed_files(port);
    assert!(
        closed.len() as u64 >= FILES - MAX_OPEN,
        "{} of {FILES} files closed",
        closed.len()
    );

    // Appended to every file, most of them closed.
    expected.extend(write_phase(&logs, 2, 0..FILES));
    wait_for_lines(&sink, &expected, "lines appended to closed files", &agent);

    wait_until("descriptors closed again", || {
        let page = http_get(port, "/metrics").unwrap_or_default();
        gauge(&page, "my_agent_source_open_files").is_some_and(|n| n <= MAX_OPEN)
    });
    let closed = closed_files(port);

    // Renamed while closed, as logrotate does, right after a last line:
    // the old file is found beside its path and read to its end, and the
    // new one at the path is followed.
    let rotated: Vec<u64> = closed.iter().copied().take(20).collect();
    expected.extend(write_phase(&logs, 3, rotated.iter().copied()));
    for &i in &rotated {
        let path = path_of(&logs, i);
        std::fs::rename(&path, path.with_extension("err.1")).unwrap();
    }
    expected.extend(write_phase(&logs, 4, rotated.iter().copied()));
    // Read to their end and closed, then removed: forgotten.
    let removed: Vec<u64> = closed.iter().copied().skip(20).take(20).collect();
    for &i in &removed {
        std::fs::remove_file(path_of(&logs, i)).unwrap();
    }
    wait_for_lines(
        &sink,
        &expected,
        "lines of files rotated while closed",
        &agent,
    );
    wait_until("removed files forgotten", || {
        let page = http_get(port, "/metrics").unwrap_or_default();
        gauge(&page, "my_agent_source_files") == Some(FILES - removed.len() as u64)
    });

    stop.store(true, Ordering::Relaxed);
    poller.join().unwrap();
    let counts = sink.seq_counts();
    let twice: HashMap<&u64, &usize> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "lines that arrived twice: {twice:?}");
    assert_eq!(
        counts.len(),
        expected.len(),
        "no line arrives that was not written"
    );

    let w = watch.lock().unwrap();
    assert!(
        w.failures.is_empty(),
        "/metrics failed {} times: {:?}",
        w.failures.len(),
        &w.failures[..w.failures.len().min(3)]
    );
    assert!(
        w.answers >= 10,
        "/metrics answered only {} times",
        w.answers
    );
    assert!(
        w.max_fds <= MAX_OPEN + RESERVED,
        "the agent held up to {} descriptors (max_open_files {MAX_OPEN} + {RESERVED})",
        w.max_fds
    );
    let log = agent.log_text();
    assert!(
        !log.contains("Too many open files"),
        "{}",
        tail_of(&log, 30)
    );
    assert!(!log.contains("are lost"), "{}", tail_of(&log, 30));
    eprintln!(
        "many_files: /metrics answered {} times; at most {} descriptors",
        w.answers, w.max_fds
    );
    assert!(agent.stop().success());
}

#[test]
fn raises_the_soft_limit_and_warns_when_the_hard_one_is_too_low() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    std::fs::write(dir.path().join("a.err"), "").unwrap();
    let config = pipeline_config(dir.path(), &sink.url).replace(
        "    poll_interval: 50ms\n",
        "    poll_interval: 50ms\n    max_open_files: 2000\n",
    );
    assert!(config.contains("max_open_files: 2000"));
    let agent = Agent::start_with_nofile_limit(dir.path(), &config, 512, LIMIT);
    // Then the start: the warning comes before the signal handlers exist,
    // and stopping the agent before them would kill it.
    wait_until("the limit warning, then the start", || {
        let log = agent.log_text();
        log.contains(
            "the open files limit is 1024 (hard 1024), below the 2064 this configuration may need",
        ) && log.contains("started with")
    });
    let log = agent.log_text();
    assert!(
        log.contains("open files limit raised from 512 to the hard limit 1024"),
        "{log}"
    );
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.child.id())).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    assert_eq!(
        line.split_whitespace().collect::<Vec<_>>()[3..5],
        ["1024", "1024"],
        "{line}"
    );
    assert!(agent.stop().success());
}
