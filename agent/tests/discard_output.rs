//! `type: discard` (one module and one table line): records are accepted and
//! counted out, nothing is sent anywhere.

mod common;

use common::*;

#[test]
fn discard_output_takes_and_counts_every_record() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let log = dir.path().join("mysqld.err");
    let config = format!(
        r#"system:
  metrics:
    bind: 127.0.0.1:{port}
sources:
  - type: tail
    path: {log}
    tag: mysql.error
    read_from_head: true
    poll_interval: 50ms
outputs:
  - match: "**"
    type: discard
    id: nowhere
    buffer:
      flush_interval: 50ms
"#,
        log = log.display()
    );
    append_lines(&log, (0..100).map(numbered_line));
    let agent = Agent::start(dir.path(), &config);
    wait_until("100 records out", || {
        try_get_metrics(port).is_ok_and(|m| {
            m.contains("my_agent_records_out_total{plugin=\"output\",id=\"nowhere\"} 100")
        })
    });
    let status = std::process::Command::new(agent_binary())
        .args(["status", "--url"])
        .arg(format!("http://127.0.0.1:{port}"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&status.stdout);
    assert!(text.contains("nowhere"), "{text}");
    assert!(agent.stop().success());
}
