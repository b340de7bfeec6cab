//! What an operator sees of a running agent on its metrics listener:
//! `/health`, the `/status` document (files followed, problems, delivery
//! state and backlog of each output) and the `my-agent status` summary with
//! its exit code, through delivery, a collector outage, a recovery, a
//! reload and a glob that matches nothing.

mod common;

use std::io::{Read, Write};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde_json::Value;

use common::*;

/// GET `path`: the status code and the body.
fn http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut answer = String::new();
    s.read_to_string(&mut answer)?;
    let (head, body) = answer.split_once("\r\n\r\n").unwrap_or((&answer, ""));
    let code = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((code, body.to_string()))
}

/// `/status` parsed, or why not (the listener is not up yet, or is being
/// restarted by a reload).
fn status(port: u16) -> Result<Value, String> {
    let (code, body) = http_get(port, "/status").map_err(|e| e.to_string())?;
    if code != 200 {
        return Err(format!("HTTP {code}: {body}"));
    }
    serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))
}

/// Waits until `/status` satisfies `f`; returns that document. On a
/// timeout the last answer is in the message.
fn wait_for_status(port: u16, what: &str, f: impl Fn(&Value) -> bool) -> Value {
    let start = std::time::Instant::now();
    loop {
        let last = match status(port) {
            Ok(doc) if f(&doc) => return doc,
            Ok(doc) => format!("{doc:#}"),
            Err(e) => e,
        };
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}; /status says {last}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `my-agent status ARGS`: exit code, stdout, stderr.
fn status_command(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(agent_binary())
        .arg("status")
        .args(args)
        .output()
        .expect("my-agent status runs");
    (
        out.status.code().expect("exited, not killed"),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn with_metrics(port: u16, pipeline: &str) -> String {
    format!("system:\n  metrics:\n    bind: 127.0.0.1:{port}\n{pipeline}")
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

#[test]
fn status_follows_delivery_outage_and_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let port = free_port();
    let log = dir.path().join("mysqld.err");
    let agent = Agent::start(
        dir.path(),
        &with_metrics(port, &pipeline_config(dir.path(), &sink.url)),
    );
    let config_path = dir.path().join("agent.yml");
    let url = format!("http://127.0.0.1:{port}");

    wait_until("/health", || {
        http_get(port, "/health").is_ok_and(|(code, body)| code == 200 && body == "ok\n")
    });

    append_lines(&log, (0..10).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "10 lines", |r| r.len() >= 10);
    let size = std::fs::metadata(&log).unwrap().len();
    let doc = wait_for_status(port, "the file read to its end, delivered", |d| {
        d["sources"][0]["files"][0]["position"] == size
            && d["outputs"][0]["buffer_bytes"] == 0
            && d["ok"] == true
    });
    let source = &doc["sources"][0];
    assert_eq!(
        (&source["id"], &source["type"], &source["tag"]),
        (&"tail0".into(), &"tail".into(), &"mysql.error".into()),
        "{doc:#}"
    );
    let file = &source["files"][0];
    assert_eq!(file["path"], log.display().to_string());
    assert_eq!(
        (&file["state"], &file["size"]),
        (&"following".into(), &size.into())
    );
    assert_eq!(source["problems"], serde_json::json!([]));
    let output = &doc["outputs"][0];
    assert_eq!(
        (&output["id"], &output["type"], &output["endpoint"]),
        (&"output0".into(), &"http".into(), &sink.url.as_str().into()),
        "{doc:#}"
    );
    assert!(
        output["last_success_age_seconds"].as_f64().unwrap() < 30.0,
        "{doc:#}"
    );
    let success = output["last_success_unix"].as_u64().unwrap();
    assert!(success.abs_diff(unix_now()) < 60, "{doc:#}");
    assert_eq!(output["retrying"], false);
    assert_eq!(output["oldest_unsent_age_seconds"], Value::Null);

    let (code, stdout, stderr) = status_command(&["--url", &url]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("file {}: following", log.display())),
        "{stdout}"
    );

    // The collector fails: the backlog and the failure show, and the
    // command says what is wrong.
    sink.set_mode(Mode::Unavailable);
    append_lines(&log, (10..15).map(numbered_line));
    let doc = wait_for_status(port, "the output retrying with a backlog", |d| {
        let o = &d["outputs"][0];
        o["retrying"] == true
            && o["buffer_bytes"].as_u64() > Some(0)
            && o["oldest_unsent_age_seconds"].is_number()
    });
    assert_eq!(doc["ok"], false, "{doc:#}");
    assert_eq!(doc["sources"][0]["ok"], true, "the source is fine: {doc:#}");
    let output = &doc["outputs"][0];
    assert_eq!(output["ok"], false);
    let error = output["last_error"].as_str().unwrap();
    assert!(error.contains("503"), "{doc:#}");
    assert!(
        output["last_error_unix"]
            .as_u64()
            .unwrap()
            .abs_diff(unix_now())
            < 60
    );

    // The address from the configuration this time.
    let (code, stdout, stderr) = status_command(&["--config", config_path.to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    let line = stdout
        .lines()
        .find(|l| l.starts_with("output output0 "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        line.contains("FAILING, retrying") && line.contains("oldest record"),
        "{stdout}"
    );
    assert!(stdout.contains("HTTP 503"), "names the failure: {stdout}");
    assert!(
        stdout.lines().next().unwrap().ends_with("NOT OK"),
        "{stdout}"
    );

    sink.set_mode(Mode::Accept);
    sink.wait_for(Duration::from_secs(30), "15 lines", |r| r.len() >= 15);
    wait_for_status(port, "recovery", |d| {
        d["ok"] == true && d["outputs"][0]["buffer_bytes"] == 0
    });
    let (code, stdout, stderr) = status_command(&["--url", &url]);
    assert_eq!(code, 0, "{stdout}{stderr}");

    assert!(agent.stop().success());
    let (code, stdout, stderr) = status_command(&["--url", &url]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach the agent at {url}/status")),
        "{stderr}"
    );
}

#[test]
fn status_shows_the_reloaded_pipeline() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let port = free_port();
    let config = with_metrics(port, &pipeline_config(dir.path(), &sink.url));
    let agent = Agent::start(dir.path(), &config);
    wait_for_status(port, "the first pipeline", |d| {
        d["outputs"][0]["id"] == "output0"
    });

    let renamed = config.replace("    type: http\n", "    type: http\n    id: collector\n");
    assert_ne!(renamed, config);
    std::fs::write(dir.path().join("agent.yml"), renamed).unwrap();
    agent.signal(libc::SIGHUP);
    let doc = wait_for_status(port, "the new pipeline's entries", |d| {
        d["outputs"][0]["id"] == "collector"
    });
    assert_eq!(doc["outputs"].as_array().unwrap().len(), 1, "{doc:#}");
    assert_eq!(doc["sources"].as_array().unwrap().len(), 1, "{doc:#}");
    assert!(agent.stop().success());
}

#[test]
fn status_names_a_glob_that_matches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let sink = Sink::start();
    let port = free_port();
    let glob = format!("{}/*.err", logs.display());
    let agent = Agent::start(
        dir.path(),
        &with_metrics(port, &pipeline_config_for(dir.path(), &glob, &sink.url)),
    );

    let doc = wait_for_status(port, "the problem", |d| {
        d["sources"][0]["problems"]
            .as_array()
            .is_some_and(|p| !p.is_empty())
    });
    assert_eq!(doc["ok"], false, "{doc:#}");
    let source = &doc["sources"][0];
    assert_eq!(source["ok"], false);
    assert_eq!(source["files"], serde_json::json!([]));
    assert_eq!(source["paths"], serde_json::json!([glob]));
    let problem = &source["problems"][0];
    assert_eq!(
        (&problem["path"], &problem["reason"]),
        (&glob.as_str().into(), &"not_found".into()),
        "{doc:#}"
    );
    let message = problem["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("nothing in {} matches", logs.display())),
        "{message}"
    );

    let (code, stdout, stderr) =
        status_command(&["--config", dir.path().join("agent.yml").to_str().unwrap()]);
    assert_eq!(code, 1, "{stdout}{stderr}");
    assert!(
        stdout.contains(&format!("problem {glob} (not_found): no file matches")),
        "{stdout}"
    );

    // The file appears: the problem is over at the next refresh.
    let file = logs.join("db1.err");
    append_lines(&file, (0..3).map(numbered_line));
    let doc = wait_for_status(port, "the file followed, no problem", |d| {
        d["ok"] == true && d["sources"][0]["files"][0]["state"] == "following"
    });
    assert_eq!(doc["sources"][0]["problems"], serde_json::json!([]));
    sink.wait_for(Duration::from_secs(30), "3 lines", |r| r.len() >= 3);
    assert!(agent.stop().success());
}

#[test]
fn status_command_without_an_agent_exits_2() {
    let port = free_port();
    let (code, stdout, stderr) = status_command(&["--url", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(code, 2, "{stdout}{stderr}");
    assert!(stderr.contains("cannot reach the agent"), "{stderr}");
    assert!(stdout.is_empty(), "{stdout}");

    // A config without a metrics listener: said so, not guessed.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("agent.yml");
    std::fs::write(&cfg, pipeline_config(dir.path(), "http://127.0.0.1:9/")).unwrap();
    let (code, _, stderr) = status_command(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(code, 2);
    assert!(stderr.contains("has no system.metrics.bind"), "{stderr}");
}
