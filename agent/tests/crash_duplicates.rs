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
//!
//! Those re-sent records come with the id they had the first time
//! (`id_key`), so a collector that deduplicates by it stores each line
//! once: ids are checked to be stable across the kills and never reused
//! for another line.

mod common;

use std::collections::{HashMap, HashSet};
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
    id_key: _id
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

    // A collector deduplicating by _id: an id always names the same line,
    // a line always comes with the same id, and each line is stored once.
    let by_id = sink.by_field("_id");
    assert_eq!(
        by_id.values().map(Vec::len).sum::<usize>(),
        sink.record_count(),
        "every record has an _id"
    );
    let mut ids_of_line: HashMap<String, HashSet<&str>> = HashMap::new();
    for (id, records) in &by_id {
        let line = records[0]["message"].as_str().unwrap();
        let other = records.iter().find(|r| r["message"] != line);
        assert!(other.is_none(), "_id {id} came with `{line}` and {other:?}");
        ids_of_line
            .entry(line.to_string())
            .or_default()
            .insert(id.as_str());
    }
    let unstable: Vec<_> = ids_of_line
        .iter()
        .filter(|(_, ids)| ids.len() > 1)
        .collect();
    assert!(
        unstable.is_empty(),
        "{} lines came with more than one _id across the kills, e.g. {:?}",
        unstable.len(),
        unstable.first()
    );
    let stored = sink.stored_seq_counts("_id");
    assert_eq!(
        stored.len() as u64,
        written,
        "the collector keeps every line"
    );
    let stored_twice: usize = stored.values().map(|c| c - 1).sum();

    println!(
        "{written} lines, {KILLS} SIGKILLs, collector {COLLECTOR_DELAY_MS} ms per request: \
         0 lost, {dups} re-sent ({:.2}%), stored twice when deduplicated by _id: \
         {stored_twice} ({:.2}%); records in flight at the kills: {in_flight} \
         ({:.2}%); bound {KILLS} x {MAX_REQUEST_RECORDS} x {FLUSH_THREADS} = {bound}",
        dups as f64 * 100.0 / written as f64,
        stored_twice as f64 * 100.0 / written as f64,
        in_flight as f64 * 100.0 / written as f64,
    );
    assert!(
        dups <= in_flight,
        "{dups} duplicates, more than the {in_flight} records in flight at the kills"
    );
    assert!(dups <= bound, "{dups} duplicates, over {bound}");
    assert!(
        stored_twice * 50 < written as usize,
        "{stored_twice} of {written} lines stored twice by a collector deduplicating by _id (2% or more)"
    );
}
