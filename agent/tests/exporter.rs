//! The query exporter against a real MariaDB server: the seed's
//! process_count_by_host and process_count_by_user, `promtool check
//! metrics`, a query past its timeout (up 0, scrape not failed), NULL and
//! duplicate label sets skipped and counted; SIGHUP reloads the queries.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn scrape(port: u16) -> String {
    let text = get_metrics(port);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    assert!(
        text.starts_with("HTTP/1.0 200") || text.starts_with("HTTP/1.1 200"),
        "{text}"
    );
    body
}

fn sample(body: &str, series: &str) -> Option<f64> {
    body.lines()
        .find(|l| l.starts_with(series) && l[series.len()..].starts_with(' '))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[test]
fn exporter_metrics_timeouts_skips_and_reload() {
    let db = MariaDb::start();
    db.sql(
        "CREATE USER alice@localhost IDENTIFIED BY 'a'; CREATE USER bob@localhost IDENTIFIED BY 'b'; \
         CREATE USER exporter@localhost IDENTIFIED BY 'e'; GRANT PROCESS ON *.* TO exporter@localhost;",
    );
    // Sessions that stay open while we scrape: two of alice, one of bob.
    let mut sessions = Vec::new();
    for (user, pass) in [("alice", "a"), ("alice", "a"), ("bob", "b")] {
        sessions.push(
            Command::new("mariadb")
                .args(["--no-defaults", &format!("-u{user}"), &format!("-p{pass}")])
                .arg(format!("--socket={}", db.socket.display()))
                .args(["-e", "SELECT SLEEP(30)"])
                .stdout(Stdio::null())
                .spawn()
                .unwrap(),
        );
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while db
        .sql("SELECT COUNT(*) FROM information_schema.processlist WHERE user IN ('alice','bob')")
        .trim()
        != "3"
    {
        assert!(Instant::now() < deadline, "sessions did not connect");
        std::thread::sleep(Duration::from_millis(100));
    }

    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let queries = dir.path().join("queries.yml");
    std::fs::write(
        &queries,
        format!(
            r#"dsn: "exporter:e@unix({socket})/"
bind: 127.0.0.1:{port}
query_timeout: 1s
metrics:
  process_count_by_host:
    query: "SELECT SUBSTRING_INDEX(host, ':', 1) AS host, COUNT(*) AS count FROM information_schema.processlist WHERE user IN ('alice', 'bob') GROUP BY 1"
    type: gauge
    description: "Number of MySQL processes per client host"
    labels: [host]
    value: count
  process_count_by_user:
    query: "SELECT user, COUNT(*) AS count FROM information_schema.processlist WHERE user IN ('alice', 'bob') GROUP BY user"
    type: gauge
    description: "Number of MySQL processes per user"
    labels: [user]
    value: count
  slow_query:
    query: "SELECT SLEEP(5) AS value"
  null_value:
    query: "SELECT NULL AS value"
  duplicate_labels:
    query: "SELECT 'a' AS l, 1 AS value UNION ALL SELECT 'a', 2"
    labels: [l]
"#,
            socket = db.socket.display()
        ),
    )
    .unwrap();
    let agent_config = format!("exporter_file: {}\n", queries.display());
    let dry = Command::new(env!("CARGO_BIN_EXE_my-agent"))
        .arg("-c")
        .arg({
            let p = dir.path().join("dry.yml");
            std::fs::write(&p, &agent_config).unwrap();
            p
        })
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let agent = Agent::start(dir.path(), &agent_config);
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "exporter did not listen: {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let started = Instant::now();
    let body = scrape(port);
    let took = started.elapsed();
    assert_eq!(
        sample(
            &body,
            "query_exporter_process_count_by_user{user=\"alice\"}"
        ),
        Some(2.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "query_exporter_process_count_by_user{user=\"bob\"}"),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(
            &body,
            "query_exporter_process_count_by_host{host=\"localhost\"}"
        ),
        Some(3.0),
        "{body}"
    );
    assert_eq!(
        sample(&body, "query_exporter_up{query=\"process_count_by_user\"}"),
        Some(1.0)
    );
    // The sleeping query is cut at its timeout and marked down; the scrape
    // still answers with everything else.
    assert_eq!(
        sample(&body, "query_exporter_up{query=\"slow_query\"}"),
        Some(0.0),
        "{body}"
    );
    assert!(
        took < Duration::from_secs(4),
        "scrape bounded by the 1 s query timeout, took {took:?}"
    );
    assert!(
        !body
            .lines()
            .any(|l| l.starts_with("query_exporter_null_value")),
        "NULL is not reported as 0: {body}"
    );
    assert_eq!(
        sample(
            &body,
            "query_exporter_skipped_values_total{query=\"null_value\",reason=\"null\"}"
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(&body, "query_exporter_duplicate_labels{l=\"a\"}"),
        Some(1.0),
        "first of a duplicate kept"
    );
    assert_eq!(
        sample(&body, "query_exporter_skipped_values_total{query=\"duplicate_labels\",reason=\"duplicate_labels\"}"),
        Some(1.0)
    );
    assert!(body.contains("query_exporter_build_info{version=\"0.1.0\"} 1"));

    let mut promtool = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool (Debian's prometheus package)");
    use std::io::Write;
    promtool
        .stdin
        .take()
        .unwrap()
        .write_all(body.as_bytes())
        .unwrap();
    let out = promtool.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "promtool: {}{}\n{body}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    for mut s in sessions {
        let _ = s.kill();
        let _ = s.wait();
    }

    // SIGHUP reloads the exporter: a changed query file is served on the
    // same port, and a broken one leaves the running queries in place.
    std::fs::write(
        &queries,
        format!(
            "dsn: \"exporter:e@unix({socket})/\"\nbind: 127.0.0.1:{port}\nmetrics:\n  after_reload:\n    query: \"SELECT 42 AS value\"\n",
            socket = db.socket.display()
        ),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        if let Ok(text) = try_get_metrics(port) {
            if text.contains("query_exporter_after_reload") {
                break scrape(port);
            }
        }
        assert!(
            Instant::now() < deadline,
            "exporter not reloaded: {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(sample(&body, "query_exporter_after_reload"), Some(42.0));
    assert!(!body.contains("process_count_by_user"), "{body}");

    std::fs::write(&queries, "dsn: [unclosed\n").unwrap();
    agent.signal(libc::SIGHUP);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.log_text().contains("new configuration rejected") {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(100));
    }
    let body = scrape(port);
    assert_eq!(sample(&body, "query_exporter_after_reload"), Some(42.0));
    assert!(agent.stop().success());
}
