//! With default settings nothing is dropped for its size: a 3 MB slow-log
//! entry arrives (its statement cut to `max_entry_size`, flagged
//! `truncated`), and a 3 MB error-log line arrives whole, in pieces of
//! `max_line_size` that concatenate to the original.

mod common;

use std::io::Write;
use std::time::Duration;

use common::*;

const BIG: usize = 3 << 20;

#[test]
fn a_3mb_slow_log_entry_arrives_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let slow = dir.path().join("slow.log");
    let statement = format!(
        "INSERT INTO t VALUES {};",
        (0..)
            .map(|i| format!("({i},'v{i}')"))
            .take_while({
                let mut n = 0;
                move |s: &String| {
                    n += s.len() + 1;
                    n < BIG
                }
            })
            .collect::<Vec<_>>()
            .join(",")
    );
    assert!(statement.len() > BIG - 100);
    let entry = |n: u32, sql: &str| {
        format!(
            "# Time: 2026-11-29T10:00:0{n}.000000Z\n# User@Host: app[app] @ localhost []  Id: 7\n\
             # Query_time: 1.5  Lock_time: 0.0  Rows_sent: 0  Rows_examined: {n}\n\
             SET timestamp=1764410400;\n{sql}\n"
        )
    };
    let mut f = std::fs::File::create(&slow).unwrap();
    f.write_all(entry(1, "SELECT 1;").as_bytes()).unwrap();
    f.write_all(entry(2, &statement).as_bytes()).unwrap();
    f.write_all(entry(3, "SELECT 3;").as_bytes()).unwrap();
    drop(f);
    let config = slow_query_config(dir.path(), &slow.display().to_string(), &sink.url);
    for key in ["max_entry_size", "max_line_size", "max_request"] {
        assert!(!config.contains(key), "defaults only: {config}");
    }
    let agent = Agent::start(dir.path(), &config);
    sink.wait_for(Duration::from_secs(30), "3 entries", |r| r.len() >= 3);
    std::thread::sleep(Duration::from_millis(500));
    let records = sink.state.records.lock().unwrap().clone();
    assert_eq!(records.len(), 3, "each entry once");
    let big = &records[1];
    assert_eq!(big["rows_examined"], 2, "{:?}", big.get("rows_examined"));
    assert_eq!(big["truncated"], true);
    let sql = big["sql"].as_str().unwrap();
    assert!(
        sql.len() >= 256 << 10,
        "a useful part of the statement: {}",
        sql.len()
    );
    assert!(
        statement.starts_with(sql),
        "the statement's head, unchanged"
    );
    let size = serde_json::to_vec(big).unwrap().len();
    assert!(
        size < 1 << 20,
        "fits in a request of the default max_request_bytes: {size}"
    );
    assert_eq!(
        records[2]["sql"], "SELECT 3;",
        "the entry after it is intact"
    );
    assert!(
        !dir.path().join("buffer/dead-letter").exists()
            || std::fs::read_dir(dir.path().join("buffer/dead-letter"))
                .unwrap()
                .next()
                .is_none(),
        "nothing dead-lettered"
    );
    assert!(agent.stop().success());
}

#[test]
fn a_3mb_error_log_line_arrives_whole_with_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("mysqld.err");
    let config = pipeline_config(dir.path(), &sink.url);
    for key in ["max_entry_size", "max_line_size", "max_request"] {
        assert!(!config.contains(key), "defaults only: {config}");
    }
    // Varied text (not one repeated byte) so a lost or reordered piece shows.
    let line: String = (0..)
        .map(|i: u64| format!("{:x} ", i.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40))
        .scan(0usize, |n, s| {
            *n += s.len();
            (*n <= BIG).then_some(s)
        })
        .collect();
    append_lines(&log, [numbered_line(0)]);
    append_lines(&log, [format!("HUGE {line}")]);
    append_lines(&log, [numbered_line(1)]);
    let agent = Agent::start(dir.path(), &config);
    sink.wait_for(Duration::from_secs(30), "the line after it", |r| {
        r.iter()
            .any(|r| r["message"].as_str().is_some_and(|m| seq_of(m) == Some(1)))
    });
    std::thread::sleep(Duration::from_millis(500));
    let records = sink.state.records.lock().unwrap().clone();
    let pieces: Vec<&str> = records
        .iter()
        .filter_map(|r| r["message"].as_str())
        .filter(|m| seq_of(m).is_none())
        .collect();
    assert!(pieces.len() > 1, "split at max_line_size");
    assert_eq!(
        pieces.concat(),
        format!("HUGE {line}"),
        "every byte, in order"
    );
    assert!(agent.stop().success());
}
