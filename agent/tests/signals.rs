//! Process control on the real binary: /metrics, SIGHUP reload (a bad new
//! config is reported and the old one keeps running), SIGUSR1 reopening the
//! log for logrotate, SIGTERM draining.

mod common;

use std::time::Duration;

use common::*;

#[test]
fn metrics_reload_and_log_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let port = free_port();
    let log = dir.path().join("mysqld.err");
    let base = pipeline_config(dir.path(), &sink.url);
    let with_metrics = format!("system:\n  metrics:\n    bind: 127.0.0.1:{port}\n{base}");
    let agent = Agent::start(dir.path(), &with_metrics);
    let config_path = dir.path().join("agent.yml");

    append_lines(&log, (0..10).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "10 lines", |r| r.len() >= 10);
    wait_until("metrics", || {
        get_metrics(port)
            .contains("my_agent_records_out_total{plugin=\"output\",id=\"output0\"} 10")
    });
    let metrics = get_metrics(port);
    assert!(
        metrics.contains("# TYPE my_agent_buffer_bytes gauge"),
        "{metrics}"
    );
    assert!(
        metrics.contains("my_agent_records_in_total{plugin=\"source\",id=\"tail0\"} 10"),
        "{metrics}"
    );

    // A broken config: reported, the old pipeline keeps shipping.
    std::fs::write(
        &config_path,
        with_metrics.replace("type: tail", "type: tial"),
    )
    .unwrap();
    agent.signal(libc::SIGHUP);
    wait_until("the rejection in the log", || {
        agent.log_text().contains("new configuration rejected")
    });
    assert!(agent.log_text().contains("unknown source type `tial`"));
    append_lines(&log, (10..20).map(numbered_line));
    sink.wait_for(
        Duration::from_secs(30),
        "lines after a rejected reload",
        |r| r.len() >= 20,
    );

    // A good one: applied, and the position carries over (no re-send).
    let reloaded = with_metrics.replace(
        "      timestamp: \"${time}\"\n",
        "      timestamp: \"${time}\"\n      env: reloaded\n",
    );
    std::fs::write(&config_path, reloaded).unwrap();
    agent.signal(libc::SIGHUP);
    wait_until("the reload", || {
        agent.log_text().contains("SIGHUP: reloading")
    });
    std::thread::sleep(Duration::from_millis(300));
    append_lines(&log, (20..30).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "lines after the reload", |r| {
        r.len() >= 30
    });
    let records = sink.state.records.lock().unwrap().clone();
    assert_eq!(records.len(), 30, "nothing sent twice across the reload");
    assert_eq!(records[29]["env"], "reloaded");
    assert!(records[5].get("env").is_none());

    // logrotate moves the log away, then SIGUSR1: a new log file appears.
    let rotated = dir.path().join("agent.log.1");
    std::fs::rename(&agent.log, &rotated).unwrap();
    agent.signal(libc::SIGUSR1);
    wait_until("the reopened log", || agent.log.exists());

    assert!(agent.stop().success());
}

#[test]
fn daemon_mode_writes_pidfile_and_stops_on_term() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let config = pipeline_config(dir.path(), &sink.url);
    let cfg = dir.path().join("agent.yml");
    std::fs::write(&cfg, config).unwrap();
    let pidfile = dir.path().join("run/agent.pid");
    std::fs::create_dir(dir.path().join("run")).unwrap();
    let status = std::process::Command::new(env!("CARGO_BIN_EXE_my-agent"))
        .arg("--config")
        .arg(&cfg)
        .arg("--daemon")
        .arg(&pidfile)
        .arg("--log")
        .arg(dir.path().join("agent.log"))
        .status()
        .unwrap();
    assert!(status.success(), "the foreground process returns at once");
    wait_until("the pid file", || pidfile.exists());
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // SAFETY: kill(2) with signal 0 only checks that the process exists.
    assert_eq!(unsafe { libc::kill(pid, 0) }, 0, "the daemon runs");

    append_lines(&dir.path().join("mysqld.err"), (0..5).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "lines from the daemon", |r| {
        r.len() >= 5
    });

    // SAFETY: as above, with SIGTERM to the daemon we started.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    wait_until("the daemon to exit", || unsafe { libc::kill(pid, 0) } != 0);
    assert!(!pidfile.exists(), "the pid file is removed on exit");
}
