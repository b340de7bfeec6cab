//! A stop with a durable (file) buffer does not wait out shutdown_timeout
//! for a collector that is down: a package upgrade restarts the agent on
//! every host inside the yum/dnf transaction. Nothing is lost: the next
//! start sends what was left.

mod common;

use std::time::{Duration, Instant};

use common::*;

#[test]
fn stop_with_the_collector_down_is_prompt_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    sink.set_mode(Mode::Unavailable);
    let log = dir.path().join("mysqld.err");
    append_lines(&log, (0..500).map(numbered_line));
    let config = format!(
        "system:\n  shutdown_timeout: 60s\n{}",
        pipeline_config(dir.path(), &sink.url)
    );
    let agent = Agent::start(dir.path(), &config);
    // The collector has refused at least one request: records wait in the
    // buffer and the output is retrying.
    let start = Instant::now();
    while sink.state.requests.lock().unwrap().is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "no request reached the sink"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    std::thread::sleep(Duration::from_millis(500));
    let stopping = Instant::now();
    let status = agent.stop();
    let took = stopping.elapsed();
    assert!(status.success(), "{status:?}");
    assert!(
        took < Duration::from_secs(20),
        "SIGTERM with a file buffer took {took:?}, not a few seconds (shutdown_timeout is 60s)"
    );

    sink.set_mode(Mode::Accept);
    let agent = Agent::start(dir.path(), &config);
    let deadline = Instant::now() + Duration::from_secs(60);
    while sink.seq_counts().len() < 500 {
        assert!(
            Instant::now() < deadline,
            "{} of 500 delivered",
            sink.seq_counts().len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success());
}
