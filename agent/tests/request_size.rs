//! Nothing is dropped for its size: a record larger than
//! max_request_bytes goes alone in its own request, and a collector that
//! answers 413 gets smaller requests until they fit; only a single record
//! it still refuses goes to the dead-letter directory.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

fn delivered(sink: &Sink, needle: &str) -> usize {
    sink.state
        .records
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r["message"].as_str().is_some_and(|m| m.contains(needle)))
        .count()
}

#[test]
fn big_records_are_sent_alone_and_413_splits_requests() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("mysqld.err");
    let config = pipeline_config(dir.path(), &sink.url).replace(
        &format!("    endpoint: {}\n", sink.url),
        &format!("    endpoint: {}\n    max_request_bytes: 64k\n", sink.url),
    );
    assert!(config.contains("max_request_bytes: 64k"), "{config}");
    let agent = Agent::start(dir.path(), &config);

    // A 100 KB record, larger than max_request_bytes, among small ones.
    append_lines(&log, (0..10).map(numbered_line));
    append_lines(&log, [format!("BIG {}", "x".repeat(100_000))]);
    append_lines(&log, (10..20).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "21 records", |r| r.len() >= 21);
    assert_eq!(delivered(&sink, "BIG "), 1, "the big record arrives");
    assert!(
        sink.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .any(|r| r.status == 200 && r.bytes > 64 * 1024),
        "in a request of its own"
    );

    // The collector now takes at most 20 KB per request.
    sink.state.max_body.store(20_000, Ordering::SeqCst);
    append_lines(&log, (20..2020).map(numbered_line));
    append_lines(&log, [format!("HUGE {}", "y".repeat(30_000))]);
    append_lines(&log, (2020..2100).map(numbered_line));
    // (The closure gets the records under the sink's lock: count there.)
    sink.wait_for(Duration::from_secs(60), "every small record", |r| {
        r.len() >= 21 + 2080
    });
    assert_eq!(sink.seq_counts().len(), 2100, "every numbered line, once");
    assert_eq!(delivered(&sink, "HUGE "), 0);
    let requests = sink.state.requests.lock().unwrap().clone();
    assert!(
        requests.iter().any(|r| r.status == 413),
        "the collector said 413"
    );
    assert!(
        requests
            .iter()
            .filter(|r| r.status == 200)
            .all(|r| r.bytes <= 20_000 || r.bytes > 64 * 1024),
        "after a 413, requests fit the collector's limit"
    );
    // Only the one record the collector refuses on its own is dead-lettered.
    let dead = dir.path().join("buffer/dead-letter");
    let mut dead_records = String::new();
    let mut reasons = String::new();
    for e in std::fs::read_dir(&dead).unwrap() {
        let p = e.unwrap().path();
        let text = std::fs::read_to_string(&p).unwrap();
        if p.to_string_lossy().ends_with(".meta.json") {
            reasons.push_str(&text);
        } else {
            dead_records.push_str(&text);
        }
    }
    assert_eq!(dead_records.lines().count(), 1, "{reasons}");
    assert!(dead_records.contains("HUGE "));
    assert!(reasons.contains("HTTP 413"), "{reasons}");
    assert!(agent.stop().success());
}

#[test]
fn a_collector_taking_at_most_256_kib_receives_every_record_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    sink.state.max_body.store(256 << 10, Ordering::SeqCst);
    let log = dir.path().join("mysqld.err");
    let config = pipeline_config(dir.path(), &sink.url);
    assert!(!config.contains("max_request"), "defaults: {config}");
    // About 4 MB: the default 1 MiB requests are all refused at first.
    append_lines(&log, (0..20_000).map(numbered_line));
    let agent = Agent::start(dir.path(), &config);
    sink.wait_for(Duration::from_secs(60), "20,000 records", |r| {
        r.len() >= 20_000
    });
    std::thread::sleep(Duration::from_millis(300));
    let counts = sink.seq_counts();
    assert!(
        (0..20_000).all(|n| counts.get(&n) == Some(&1)),
        "every record once"
    );
    let requests = sink.state.requests.lock().unwrap().clone();
    assert!(requests.iter().any(|r| r.status == 413), "refused at first");
    assert!(requests
        .iter()
        .filter(|r| r.status == 200)
        .all(|r| r.bytes <= 256 << 10));
    let dead = dir.path().join("buffer/dead-letter");
    assert!(
        std::fs::read_dir(&dead).map_or(true, |mut d| d.next().is_none()),
        "nothing dead-lettered"
    );
    assert!(agent.stop().success());
}

/// One record the collector refuses for its size (413) among 5,000 short
/// ones costs the bisection's requests and no more: requests widen back
/// to their configured size afterwards (they used to carry one record each
/// from then on, 86 times slower).
#[test]
fn one_refused_record_costs_a_few_requests_not_the_rest_of_the_chunk() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    // Requests of 500 records (~100 KB) fit; a 200 KB record does not.
    sink.state.max_body.store(150_000, Ordering::SeqCst);
    let log = dir.path().join("mysqld.err");
    let config = pipeline_config(dir.path(), &sink.url).replace(
        &format!("    endpoint: {}\n", sink.url),
        &format!("    endpoint: {}\n    max_request_records: 500\n", sink.url),
    );
    assert!(config.contains("max_request_records: 500"), "{config}");
    let agent = Agent::start(dir.path(), &config);
    let requests = |sink: &Sink| sink.state.requests.lock().unwrap().clone();

    // The baseline: 5,000 lines, no refusal.
    let started = std::time::Instant::now();
    append_lines(&log, (0..5000).map(numbered_line));
    sink.wait_for(Duration::from_secs(60), "5,000 records", |r| {
        r.len() >= 5000
    });
    let plain_time = started.elapsed();
    let plain = requests(&sink);
    assert!(plain.iter().all(|r| r.status == 200));

    // The same with one 200 KB record among them.
    let started = std::time::Instant::now();
    append_lines(&log, (5000..5010).map(numbered_line));
    append_lines(&log, [format!("TOO BIG {}", "z".repeat(200_000))]);
    append_lines(&log, (5010..10_000).map(numbered_line));
    sink.wait_for(Duration::from_secs(60), "10,000 records", |r| {
        r.len() >= 10_000
    });
    let refused_time = started.elapsed();
    let all = requests(&sink);
    let second = &all[plain.len()..];
    let counts = sink.seq_counts();
    assert!(
        (0..10_000).all(|n| counts.get(&n) == Some(&1)),
        "every record once"
    );
    assert_eq!(delivered(&sink, "TOO BIG "), 0);
    let refused = second.iter().filter(|r| r.status == 413).count();
    let accepted: Vec<usize> = second
        .iter()
        .filter(|r| r.status == 200)
        .map(|r| r.records)
        .collect();
    eprintln!(
        "no refusal: {} requests in {plain_time:.2?}; one refused record: {} requests ({refused} refused) in {refused_time:.2?}; records per accepted request: {accepted:?}",
        plain.len(),
        second.len()
    );
    // Bisecting 500 records takes 9 halvings: a refused and an accepted
    // request each, plus the record's own refusal.
    assert!(refused <= 10, "{refused} refused requests");
    assert!(
        second.len() <= plain.len() + 2 * 10,
        "{} requests against {} without the refusal",
        second.len(),
        plain.len()
    );
    // After the bisection, requests are full again.
    let last_refused = second.iter().rposition(|r| r.status == 413).unwrap();
    let after: Vec<usize> = second[last_refused + 1..]
        .iter()
        .map(|r| r.records)
        .collect();
    assert!(
        after.iter().filter(|&&n| n == 500).count() >= 5,
        "full requests after the refusal: {after:?}"
    );
    assert!(agent.stop().success());
}
