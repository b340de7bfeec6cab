//! A log with CRLF line ends (written on or for Windows) ships its lines
//! without the `\r`; a lone `\r` inside a line is kept.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn crlf_lines_lose_their_carriage_return() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("mysqld.err");
    std::fs::write(&log, b"first line\r\nsecond\rline\r\nthird line\n").unwrap();
    let agent = Agent::start(dir.path(), &pipeline_config(dir.path(), &sink.url));
    sink.wait_for(Duration::from_secs(30), "three lines", |r| r.len() >= 3);
    let messages: Vec<String> = sink
        .state
        .records
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["message"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(messages, ["first line", "second\rline", "third line"]);
    assert!(agent.stop().success());
}
