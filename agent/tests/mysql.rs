//! The MySQL sources against a real MariaDB server started by the test
//! (Debian's mariadb-server): `mysql_query` record shapes, errors and
//! recovery when the server goes away, and `mysql_slow_query` on the
//! server's own slow log.

mod common;

use std::time::Duration;

use common::*;

fn wait_until(what: &str, timeout: Duration, f: impl Fn() -> bool) {
    let start = std::time::Instant::now();
    while !f() {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn mysql_query_shapes_errors_and_recovery() {
    let mut db = MariaDb::start();
    db.sql(
        "CREATE DATABASE app; CREATE TABLE app.jobs (name VARCHAR(20), state VARCHAR(20), n INT); \
         INSERT INTO app.jobs VALUES ('import','running',1),('export',NULL,2),('purge','waiting',3);",
    );
    let hostname = db.sql("SELECT @@hostname").trim().to_string();
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let metrics_port = free_port();
    let config = format!(
        r#"system:
  metrics:
    bind: 127.0.0.1:{metrics_port}
sources:
  - type: mysql_query
    socket: {socket}
    username: root
    database: app
    interval: 1s
    tag: mysql.jobs.${{hostname}}
    query: SELECT name, state, n FROM jobs ORDER BY n
    record_hostname: true
    row_count: true
  - type: mysql_query
    socket: {socket}
    username: root
    interval: 1s
    tag: mysql.nested
    query: SELECT name FROM app.jobs WHERE n > 100
    nest_result: true
    nest_key: data
{outputs}"#,
        socket = db.socket.display(),
        outputs = http_outputs(dir.path(), &sink.url)
    );
    let agent = Agent::start(dir.path(), &config);
    sink.wait_for(Duration::from_secs(30), "both queries", |r| {
        r.iter().filter(|x| x.get("name").is_some()).count() >= 3
            && r.iter().any(|x| x.get("data").is_some())
    });
    let records = sink.state.records.lock().unwrap().clone();
    let flat: Vec<&serde_json::Value> = records
        .iter()
        .filter(|x| x.get("name").is_some())
        .take(3)
        .collect();
    assert_eq!(
        serde_json::to_string(flat[0]).unwrap(),
        format!(
            r#"{{"hostname":"{hostname}","row_count":3,"name":"import","state":"running","n":"1"}}"#
        )
    );
    assert_eq!(flat[1]["state"], serde_json::Value::Null);
    let nested = records.iter().find(|x| x.get("data").is_some()).unwrap();
    assert_eq!(serde_json::to_string(nested).unwrap(), r#"{"data":[]}"#);

    // The server goes away: errors are counted, the agent keeps running.
    db.stop();
    wait_until("errors in /metrics", Duration::from_secs(30), || {
        get_metrics(metrics_port)
            .lines()
            .find(|l| l.starts_with("my_agent_errors_total{plugin=\"source\",id=\"mysql_query0\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .is_some_and(|n| n >= 1)
    });
    assert!(
        agent.log_text().contains("mysql_query"),
        "the failure is logged"
    );

    // It comes back: the source reconnects and rows flow again.
    let before = sink.record_count();
    db.boot();
    sink.wait_for(
        Duration::from_secs(60),
        "rows after the server returned",
        |r| r.len() >= before + 3,
    );
    assert!(agent.stop().success());
}

#[test]
fn mysql_slow_query_on_a_live_server() {
    let db = MariaDb::start();
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let config = slow_query_config(dir.path(), &db.slow_log.display().to_string(), &sink.url);
    db.sql("CREATE DATABASE shop; CREATE DATABASE crm; CREATE TABLE shop.orders (id INT PRIMARY KEY, total INT); \
            CREATE TABLE crm.people (id INT)");
    db.sql("SET SESSION max_recursive_iterations = 5000; INSERT INTO shop.orders WITH RECURSIVE s(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM s WHERE n < 2000) SELECT n, n * 3 FROM s");
    let agent = Agent::start(dir.path(), &config);

    // Known statements, marked so they can be found among the client's own.
    db.sql("USE shop; SELECT /* t1 */ id,\n  total\nFROM orders\nWHERE id <= 5");
    db.sql("USE crm; SELECT /* t2 */ COUNT(*) FROM people");
    db.sql("USE shop; SELECT /* t3 */ * FROM orders");
    let err = db.sql_err("USE shop; SELECT /* t4 */ nope FROM orders");
    assert!(err.contains("Unknown column"), "{err}");

    let marked = |r: &serde_json::Value, m: &str| r["sql"].as_str().is_some_and(|s| s.contains(m));
    sink.wait_for(Duration::from_secs(30), "the four statements", |r| {
        ["/* t1 */", "/* t2 */", "/* t3 */", "/* t4 */"]
            .iter()
            .all(|m| r.iter().any(|x| marked(x, m)))
    });
    std::thread::sleep(Duration::from_millis(500));
    let records = sink.state.records.lock().unwrap().clone();
    let one = |m: &str| {
        let found: Vec<&serde_json::Value> = records.iter().filter(|x| marked(x, m)).collect();
        assert_eq!(found.len(), 1, "{m} exactly once: {found:?}");
        found[0].clone()
    };
    let t1 = one("/* t1 */");
    assert_eq!(
        t1["sql"], "SELECT /* t1 */ id,\n  total\nFROM orders\nWHERE id <= 5;",
        "multi-line text kept"
    );
    assert_eq!(t1["db"], "shop");
    assert_eq!(t1["user"], "root");
    assert_eq!(t1["host"], "localhost");
    assert_eq!(t1["rows_sent"], 5);
    let ts = t1["timestamp"].as_str().unwrap();
    assert!(ts.starts_with("20") && ts.ends_with('Z'), "{ts}");
    let t2 = one("/* t2 */");
    assert_eq!(t2["db"], "crm");
    assert_eq!(t2["rows_sent"], 1);
    let t3 = one("/* t3 */");
    assert_eq!(t3["rows_sent"], 2000, "a large result");
    assert!(
        t3["explain"].as_str().is_some_and(|e| e.contains("orders")),
        "MariaDB's # explain: lines"
    );
    let t4 = one("/* t4 */");
    assert_eq!(t4["db"], "shop");
    assert!(records
        .iter()
        .all(|r| !r["sql"].as_str().unwrap_or("").contains("started with")));
    assert!(agent.stop().success());
}
