//! The `mysql_slow_query` source in the real agent: entries from a slow log
//! arrive as records, positions only ever point at entry boundaries, and a
//! restart after SIGKILL re-sends nothing that was committed, keeping the
//! stream's `use` context.

mod common;

use std::time::Duration;

use common::*;

fn config(dir: &std::path::Path, url: &str) -> String {
    slow_query_config(dir, &format!("{}/*-slow.log", dir.display()), url)
}

fn append(path: &std::path::Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

#[test]
fn slow_log_entries_and_restart_after_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("db1-slow.log");
    append(&log, SLOW_LOG_BANNER);
    let mut text = String::new();
    for n in 1..=50 {
        text.push_str(&slow_log_entry(n, if n == 1 { Some("shop") } else { None }));
    }
    append(&log, &text);

    let agent = Agent::start(dir.path(), &config(dir.path(), &sink.url));
    sink.wait_for(Duration::from_secs(30), "50 entries", |r| r.len() >= 50);
    let records = sink.state.records.lock().unwrap().clone();
    let first = &records[0];
    assert_eq!(first["user"], "app");
    assert_eq!(first["host_ip"], "10.0.0.5");
    assert_eq!(first["thread_id"], 1);
    assert_eq!(first["rows_sent"], 1);
    assert_eq!(first["db"], "shop");
    assert_eq!(first["sql"], "SELECT 1\n  FROM t\n WHERE id = 1;");
    assert_eq!(first["timestamp"], "2024-05-15T17:02:40.000Z");
    assert!(
        records.iter().all(|r| r["db"] == "shop"),
        "use carries through the stream"
    );

    // Let the position be committed, then kill without warning.
    std::thread::sleep(Duration::from_millis(800));
    let pos = std::fs::read_to_string(dir.path().join("slow.pos")).unwrap();
    assert!(
        pos.contains("\"db\":\"shop\""),
        "the use context is saved with the position: {pos}"
    );
    agent.kill9();

    let mut more = String::new();
    for n in 51..=60 {
        more.push_str(&slow_log_entry(n, None));
    }
    append(&log, &more);
    let agent = Agent::start(dir.path(), &config(dir.path(), &sink.url));
    sink.wait_for(Duration::from_secs(30), "60 entries", |r| r.len() >= 60);
    std::thread::sleep(Duration::from_millis(500));
    let records = sink.state.records.lock().unwrap().clone();
    assert_eq!(
        records.len(),
        60,
        "nothing committed before the kill is sent again"
    );
    assert_eq!(records[59]["thread_id"], 60);
    assert_eq!(records[59]["db"], "shop", "db context survives the restart");
    assert!(agent.stop().success());
}
