//! Record ids (`id_key`) from the `mysql_slow_query` source in the real
//! agent: each entry's id is its file's key and the offset of the entry's
//! first line, and after a SIGKILL the re-sent entries come with the ids
//! they had, and new entries with the same file key.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;

const ENTRIES_BEFORE_KILL: u64 = 30;
const ENTRIES_AFTER_KILL: u64 = 5;

/// A collector taking a second per request of 5 records, so that a kill a
/// few seconds in finds a request in flight, which comes again.
fn config(dir: &Path, url: &str) -> String {
    format!(
        r#"sources:
  - type: mysql_slow_query
    path: {dir}/*-slow.log
    pos_file: {dir}/slow.pos
    tag: mysql.slow
    read_from_head: true
    poll_interval: 50ms
    entry_timeout: 300ms
    id_key: _id
outputs:
  - match: "mysql.**"
    type: http
    endpoint: {url}
    max_request_records: 5
    retry_wait: 100ms
    buffer:
      type: file
      path: {dir}/buffer
      flush_interval: 100ms
      flush_thread_count: 1
"#,
        dir = dir.display()
    )
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
}

fn entries(range: std::ops::RangeInclusive<u64>) -> String {
    range.map(|n| slow_log_entry(n, None)).collect()
}

#[test]
fn slow_log_ids_are_key_and_entry_start_and_survive_a_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    sink.state.delay_ms.store(1000, Ordering::SeqCst);
    let log = dir.path().join("db1-slow.log");
    append(&log, SLOW_LOG_BANNER);
    append(&log, &entries(1..=ENTRIES_BEFORE_KILL));

    let agent = Agent::start(dir.path(), &config(dir.path(), &sink.url));
    sink.wait_for(Duration::from_secs(30), "two requests", |r| r.len() >= 10);
    // Halfway through the third request's second.
    std::thread::sleep(Duration::from_millis(400));
    agent.kill9();
    let before_kill = sink.record_count();

    append(
        &log,
        &entries(ENTRIES_BEFORE_KILL + 1..=ENTRIES_BEFORE_KILL + ENTRIES_AFTER_KILL),
    );
    let total = ENTRIES_BEFORE_KILL + ENTRIES_AFTER_KILL;
    let agent = Agent::start(dir.path(), &config(dir.path(), &sink.url));
    sink.wait_for(Duration::from_secs(60), "every entry", |records| {
        let ids: HashSet<_> = records.iter().map(|r| r["thread_id"].clone()).collect();
        ids.len() as u64 >= total
    });
    assert!(agent.stop().success());

    // Where each entry starts: its `# Time:` line.
    let text = std::fs::read_to_string(&log).unwrap();
    let starts: Vec<usize> = text.match_indices("# Time:").map(|(i, _)| i).collect();
    assert_eq!(starts.len() as u64, total);

    let records = sink.state.records.lock().unwrap().clone();
    let mut ids_of_entry: HashMap<u64, HashSet<String>> = HashMap::new();
    let mut keys = HashSet::new();
    for r in &records {
        let n = r["thread_id"].as_u64().unwrap();
        let id = r["_id"].as_str().unwrap_or_else(|| panic!("no _id in {r}"));
        let (key, offset) = id.split_once('-').unwrap();
        assert_eq!(key.len(), 16, "{id}: the key as 16 hex digits");
        assert_eq!(
            offset.parse::<usize>().unwrap(),
            starts[n as usize - 1],
            "entry {n}'s id {id} is not the offset of its first line"
        );
        keys.insert(key.to_string());
        ids_of_entry.entry(n).or_default().insert(id.to_string());
    }
    assert_eq!(
        keys.len(),
        1,
        "one file, one key, before and after the kill: {keys:?}"
    );
    let resent = records.len() as u64 - total;
    assert!(
        resent > 0,
        "the request in flight at the kill ({before_kill} records had arrived) came again"
    );
    assert!(
        ids_of_entry.values().all(|ids| ids.len() == 1),
        "a re-sent entry came with another id: {ids_of_entry:?}"
    );
    assert_eq!(sink.stored_by("_id").len() as u64, total);
}
