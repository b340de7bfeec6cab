//! 30 SIGKILLs at random moments while the agent tails a log and ships it
//! through a file buffer to a slow collector (0.5 s per request), with
//! chunks that take several requests each: nothing is lost, and what
//! arrives twice is bounded by what was in flight at the kills, not by the
//! size of the chunks that were partly delivered.
//!
//! A request in flight when the agent dies has been (or will be) taken by
//! the collector, and the agent cannot know it: those records come again.
//! So the duplicates have a floor of about `kills x 0.5 s` of delivery;
//! what this test holds the agent to is that nothing beyond it comes again.

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;

const KILLS: usize = 30;
const MAX_REQUEST_RECORDS: usize = 25;
const FLUSH_THREADS: usize = 2;
const COLLECTOR_DELAY_MS: u64 = 500;
/// Between the collector's answer and the agent recording it durably there
/// is a moment (an fsync) in which a killed agent has not yet noted the
/// request as done: it still counts as in flight.
const RECORDING_GRACE: Duration = Duration::from_millis(50);

/// 16 KiB chunks hold about 70 of these lines: three requests each.
fn config(dir: &Path, url: &str) -> String {
    format!(
        r#"sources:
  - type: tail
    path: {dir}/*.err
    pos_file: {dir}/tail.pos
    tag: mysql.error
    read_from_head: true
    poll_interval: 50ms
outputs:
  - match: "mysql.**"
    type: http
    endpoint: {url}
    max_request_records: {MAX_REQUEST_RECORDS}
    retry_wait: 100ms
    retry_max_interval: 1s
    buffer:
      type: file
      path: {dir}/buffer
      chunk_limit_size: 16KiB
      flush_interval: 1s
      flush_thread_count: {FLUSH_THREADS}
"#,
        dir = dir.display()
    )
}

fn chunk_files(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .map(|d| {
            d.filter_map(|e| e.ok())
                .filter(|e| e.file_name().to_string_lossy().ends_with(".buf"))
                .count()
        })
        .unwrap_or(0)
}

#[test]
fn duplicates_after_sigkills_are_bounded_by_requests_in_flight() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    sink.state
        .delay_ms
        .store(COLLECTOR_DELAY_MS, Ordering::SeqCst);
    let log = dir.path().join("mysqld.err");
    append_lines(&log, (0..300).map(numbered_line));
    let config = config(dir.path(), &sink.url);

    // About 60 lines a second: less than the 100 a second two flushers get
    // through this collector, so the backlog drains between kills.
    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(300));
    let writer = {
        let (stop, next, log) = (stop.clone(), next.clone(), log.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(6, Ordering::SeqCst);
                append_lines(&log, (n..n + 6).map(numbered_line));
                thread::sleep(Duration::from_millis(100));
            }
        })
    };

    // (started, killed) per agent.
    let mut lives: Vec<(Instant, Instant)> = Vec::new();
    let mut rng = fastrand::Rng::with_seed(0xd0b1e);
    for _ in 0..KILLS {
        let started = Instant::now();
        let agent = Agent::start(dir.path(), &config);
        thread::sleep(Duration::from_millis(rng.u64(700..2000)));
        let killed = Instant::now();
        agent.kill9();
        lives.push((started, killed));
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let written = next.load(Ordering::SeqCst);

    let last_start = Instant::now();
    let agent = Agent::start(dir.path(), &config);
    let buffer = dir.path().join("buffer");
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let counts = sink.seq_counts();
        let missing = (0..written).filter(|n| !counts.contains_key(n)).count();
        // Everything arrived and nothing is left to send again.
        if missing == 0 && chunk_files(&buffer) == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} of {written} lines lost after {KILLS} SIGKILLs ({} chunk files left); log:\n{}",
            chunk_files(&buffer),
            agent.log_text()
        );
        thread::sleep(Duration::from_millis(200));
    }
    assert!(agent.stop().success());

    let counts = sink.seq_counts();
    let dups: usize = counts.values().map(|c| c - 1).sum();
    // The records of each killed agent's requests that were still open
    // when it died: sent before the kill, answered after it (or never).
    let requests = sink.state.requests.lock().unwrap().clone();
    let mut ends: Vec<Instant> = lives.iter().skip(1).map(|l| l.0).collect();
    ends.push(last_start);
    let in_flight: usize = lives
        .iter()
        .zip(&ends)
        .map(|(&(started, killed), &next_start)| {
            requests
                .iter()
                .filter(|r| r.received >= started && r.received < next_start)
                .filter(|r| r.answered.is_none_or(|a| a + RECORDING_GRACE > killed))
                .map(|r| r.records)
                .sum::<usize>()
        })
        .sum();
    let bound = KILLS * MAX_REQUEST_RECORDS * FLUSH_THREADS;
    println!(
        "{written} lines, {KILLS} SIGKILLs, collector {COLLECTOR_DELAY_MS} ms per request: \
         0 lost, {dups} duplicates ({:.2}%); records in flight at the kills: {in_flight} \
         ({:.2}%); bound {KILLS} x {MAX_REQUEST_RECORDS} x {FLUSH_THREADS} = {bound}",
        dups as f64 * 100.0 / written as f64,
        in_flight as f64 * 100.0 / written as f64,
    );
    assert!(
        dups <= in_flight,
        "{dups} duplicates, more than the {in_flight} records in flight at the kills"
    );
    assert!(dups <= bound, "{dups} duplicates, over {bound}");
}
