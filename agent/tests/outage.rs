//! A collector outage: the sink answers 503, then drops connections, then
//! recovers. Nothing is lost, retries back off, memory stays bounded with
//! a file buffer. And a 400 sends that request to the dead-letter directory
//! while the pipeline goes on.

mod common;

use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn outage_then_recovery_loses_nothing_with_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    sink.set_mode(Mode::Unavailable);
    let log = dir.path().join("mysqld.err");
    let config = pipeline_config(dir.path(), &sink.url);
    let agent = Agent::start(dir.path(), &config);

    // 300k lines (~33 MB) pile up in the file buffer during the outage.
    for batch in 0..30u64 {
        append_lines(
            &log,
            (batch * 10_000..(batch + 1) * 10_000).map(numbered_line),
        );
    }
    thread::sleep(Duration::from_secs(2));
    sink.set_mode(Mode::Close);
    thread::sleep(Duration::from_secs(2));
    let buffered: u64 = std::fs::read_dir(dir.path().join("buffer"))
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .filter(|m| m.is_file())
        .map(|m| m.len())
        .sum();
    assert!(
        buffered > 20 << 20,
        "records wait in the file buffer: {buffered} bytes"
    );
    let peak_during_outage = agent.peak_rss_kib();

    sink.set_mode(Mode::Accept);
    sink.wait_for(Duration::from_secs(120), "300k lines after recovery", |r| {
        r.len() >= 300_000
    });
    let counts = sink.seq_counts();
    assert_eq!(counts.len(), 300_000, "nothing lost");

    let requests = sink.state.requests.lock().unwrap().clone();
    let failed: Vec<_> = requests.iter().filter(|r| r.status == 503).collect();
    assert!(
        failed.len() >= 3,
        "retried during the 503 phase: {}",
        failed.len()
    );
    // Backoff: gaps between failed attempts grow (100ms, 200ms, 400ms, ...).
    let gaps: Vec<Duration> = failed.windows(2).map(|w| w[1].at - w[0].at).collect();
    assert!(
        gaps.last().unwrap() > &(gaps[0] * 2),
        "retries back off: {gaps:?}"
    );
    assert!(agent.log_text().contains("HTTP 503"), "retries are logged");
    // Memory does not follow the backlog: 33 MB waited on disk.
    assert!(
        peak_during_outage < 48 * 1024,
        "peak RSS during the outage: {peak_during_outage} KiB"
    );
    assert!(agent.stop().success());
}

#[test]
fn rejected_request_goes_to_dead_letter_and_pipeline_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    *sink.state.reject_marker.lock().unwrap() = Some("POISON".into());
    let log = dir.path().join("mysqld.err");
    let config = pipeline_config(dir.path(), &sink.url);
    let agent = Agent::start(dir.path(), &config);

    append_lines(&log, (0..100).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "the first 100 lines", |r| {
        r.len() >= 100
    });
    append_lines(&log, ["a POISON line the collector refuses".to_string()]);
    thread::sleep(Duration::from_millis(500));
    append_lines(&log, (100..200).map(numbered_line));
    sink.wait_for(
        Duration::from_secs(30),
        "the lines after the rejected one",
        |r| {
            r.iter().any(|x| {
                x["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("seq=00000199"))
            })
        },
    );

    let dead = dir.path().join("buffer/dead-letter");
    let files: Vec<_> = std::fs::read_dir(&dead)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let data = files
        .iter()
        .find(|p| p.extension().is_some_and(|e| e == "ndjson"))
        .expect("dead-letter records");
    let meta = files
        .iter()
        .find(|p| p.to_string_lossy().ends_with(".meta.json"))
        .expect("dead-letter reason");
    assert!(std::fs::read_to_string(data).unwrap().contains("POISON"));
    assert!(std::fs::read_to_string(meta)
        .unwrap()
        .contains("rejected with HTTP 400"));
    assert!(
        agent.log_text().contains("rejected with HTTP 400"),
        "logged"
    );
    assert_eq!(
        sink.state
            .requests
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.status == 400)
            .count(),
        1,
        "never retried"
    );
    assert!(agent.stop().success());
}
