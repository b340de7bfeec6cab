//! A collector that refuses a request for its content (HTTP 400) refuses
//! it for some records in it: the output sends the request again in halves
//! and dead-letters only the records refused on their own, while the good
//! ones in the same request are delivered. A collector that refuses
//! everything costs a bounded number of requests, not one per record.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;

const LINES: u64 = 1000;

/// All LINES lines are in the log before the agent starts: one chunk, sent
/// in requests of up to 1000 records.
fn start(dir: &Path, sink: &Sink, poison: &[u64]) -> Agent {
    let log = dir.join("mysqld.err");
    append_lines(
        &log,
        (0..LINES).map(|n| {
            let line = numbered_line(n);
            if poison.contains(&n) {
                format!("{line} POISON")
            } else {
                line
            }
        }),
    );
    Agent::start(dir, &pipeline_config(dir, &sink.url))
}

/// The records in the dead-letter directory's files.
fn dead_lettered(dir: &Path) -> Vec<String> {
    let dead = dir.join("buffer/dead-letter");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dead)
        .map(|d| d.filter_map(|e| e.ok().map(|e| e.path())).collect())
        .unwrap_or_default();
    files.retain(|p| p.extension().is_some_and(|x| x == "ndjson"));
    files
        .iter()
        .flat_map(|p| {
            std::fs::read_to_string(p)
                .unwrap_or_default()
                .lines()
                .map(String::from)
                .collect::<Vec<_>>()
        })
        .collect()
}

fn refusals(sink: &Sink) -> usize {
    let requests = sink.state.requests.lock().unwrap();
    requests.iter().filter(|r| r.status == 400).count()
}

#[test]
fn only_the_refused_records_are_dead_lettered() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    *sink.state.reject_marker.lock().unwrap() = Some("POISON".into());
    let poison = [3, 500, 501, 998];
    let agent = start(dir.path(), &sink, &poison);
    wait_until("every line delivered or dead-lettered", || {
        sink.record_count() + dead_lettered(dir.path()).len() >= LINES as usize
    });
    std::thread::sleep(Duration::from_millis(300));
    let counts = sink.seq_counts();
    for n in 0..LINES {
        let want = usize::from(!poison.contains(&n));
        assert_eq!(counts.get(&n).copied().unwrap_or(0), want, "seq {n}");
    }
    let dead = dead_lettered(dir.path());
    assert_eq!(dead.len(), poison.len(), "only the refused: {dead:?}");
    assert!(dead.iter().all(|r| r.contains("POISON")), "{dead:?}");
    let refused = refusals(&sink);
    eprintln!(
        "{} refused of {LINES}: {refused} requests refused, {} in all",
        poison.len(),
        sink.state.requests.lock().unwrap().len()
    );
    // Each poisoned record costs at most one refusal per halving (10 for
    // 1000 records), fewer where they sit close; the good records around
    // them go in requests that widen again.
    assert!(refused <= 4 * 10, "{refused} refusals");
    let requests = sink.state.requests.lock().unwrap().len();
    assert!(requests <= 100, "{requests} requests for 1000 records");
    assert!(agent.log_text().contains("sending them again in halves"));
    assert!(agent.stop().success());
}

#[test]
fn a_collector_that_refuses_everything_costs_a_bounded_number_of_requests() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    *sink.state.reject_marker.lock().unwrap() = Some("seq=".into());
    let agent = start(dir.path(), &sink, &[]);
    wait_until("every line dead-lettered", || {
        dead_lettered(dir.path()).len() >= LINES as usize
    });
    std::thread::sleep(Duration::from_millis(300));
    let dead = dead_lettered(dir.path());
    assert_eq!(dead.len(), LINES as usize, "each record once");
    let seqs: std::collections::BTreeSet<u64> = dead.iter().filter_map(|r| seq_of(r)).collect();
    assert_eq!(seqs.len(), LINES as usize);
    assert_eq!(sink.record_count(), 0);
    let requests = sink.state.requests.lock().unwrap().len();
    eprintln!("all {LINES} refused: {requests} requests");
    // 4 refusals per halving of 1000 records (10), then the rest at once.
    assert!(requests <= 41, "{requests} requests for one chunk");
    assert!(agent.stop().success());
}
