//! The seed's job end to end: the real agent tails an error log and ships it
//! to an HTTP sink on loopback as ndjson, with hostname and timestamp.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn ships_100k_lines_with_invalid_utf8_and_a_5mb_line() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("mysqld.err");

    // 100,000 lines: every 1000th carries invalid UTF-8, and one is 5 MB.
    let big: String = "X".repeat(5 << 20);
    let mut file = Vec::new();
    for n in 0..100_000u64 {
        file.extend_from_slice(numbered_line(n).as_bytes());
        if n % 1000 == 7 {
            file.extend_from_slice(b" bad:\xff\xfe:");
        }
        if n == 50_000 {
            file.extend_from_slice(b" BIG:");
            file.extend_from_slice(big.as_bytes());
        }
        file.push(b'\n');
    }
    std::fs::write(&log, &file).unwrap();

    let config = pipeline_config(dir.path(), &sink.url);
    let agent = Agent::start(dir.path(), &config);
    sink.wait_for(Duration::from_secs(120), "all 100k lines", |records| {
        records
            .iter()
            .filter(|r| r["message"].as_str().and_then(seq_of).is_some())
            .count()
            >= 100_000
    });

    let counts = sink.seq_counts();
    assert_eq!(counts.len(), 100_000, "every numbered line arrived");
    assert!(
        counts.values().all(|&c| c == 1),
        "no duplicates without a crash"
    );

    let records = sink.state.records.lock().unwrap().clone();
    let hostname = records[0]["hostname"].as_str().unwrap().to_string();
    assert!(!hostname.is_empty());
    for r in &records {
        assert_eq!(r["hostname"], hostname.as_str());
        let ts = r["timestamp"].as_str().expect("timestamp");
        assert!(
            ts.len() == 24 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T',
            "{ts}"
        );
    }
    // Invalid bytes are replaced, never a crash or a stuck chunk.
    let bad = records
        .iter()
        .find(|r| r["message"].as_str().unwrap().contains("seq=00000007"))
        .unwrap();
    assert!(
        bad["message"]
            .as_str()
            .unwrap()
            .ends_with(" bad:\u{fffd}\u{fffd}:"),
        "{bad}"
    );

    // The 5 MB line arrives in order as pieces of max_line_size.
    let start = records
        .iter()
        .position(|r| r["message"].as_str().unwrap().contains("seq=00050000"))
        .unwrap();
    let mut joined = String::new();
    for r in &records[start..] {
        joined.push_str(r["message"].as_str().unwrap());
        if joined.len() >= numbered_line(50_000).len() + 5 + big.len() {
            break;
        }
    }
    assert_eq!(joined, format!("{} BIG:{big}", numbered_line(50_000)));

    let requests = sink.state.requests.lock().unwrap().clone();
    assert!(
        requests.iter().all(|r| r.bytes <= 1 << 20),
        "every request <= 1 MiB"
    );
    assert!(requests
        .iter()
        .all(|r| r.content_type == "application/x-ndjson"));
    assert!(
        requests.len() >= 20,
        "bulk requests, not one per line: {}",
        requests.len()
    );
    assert!(
        sink.state
            .connections
            .load(std::sync::atomic::Ordering::Relaxed)
            < requests.len() as u64 / 2,
        "connections are kept alive"
    );
    assert!(agent.stop().success());
}
