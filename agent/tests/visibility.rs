//! A source that cannot read what it was told to is never silent: the agent,
//! run as an unprivileged user (as the service runs), names the path, the
//! reason and what to do on stderr (the journal under systemd) and counts it
//! in /metrics by reason; once access is granted, the lines are shipped.

mod common;

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::*;

#[test]
fn unreadable_logs_are_reported_counted_and_recovered() {
    // SAFETY: geteuid cannot fail.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "this test drops to the nobody user with setpriv, which needs root"
    );
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::set_permissions(dir, fs::Permissions::from_mode(0o755)).unwrap();
    // A datadir the agent may not search (MySQL's is often 0751 or 0750),
    // and a log it may not open (mysql:mysql 0640).
    let datadir = dir.join("datadir");
    fs::create_dir(&datadir).unwrap();
    append_lines(&datadir.join("db1.err"), (0..10).map(numbered_line));
    fs::set_permissions(&datadir, fs::Permissions::from_mode(0o700)).unwrap();
    let logdir = dir.join("log");
    fs::create_dir(&logdir).unwrap();
    let closed = logdir.join("mysqld.err");
    append_lines(&closed, (10..20).map(numbered_line));
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o600)).unwrap();
    // The agent's own directory, writable by nobody.
    let state = dir.join("state");
    fs::create_dir(&state).unwrap();
    fs::set_permissions(&state, fs::Permissions::from_mode(0o777)).unwrap();

    let sink = Sink::start();
    let port = free_port();
    let config = format!(
        "system:\n  metrics:\n    bind: 127.0.0.1:{port}\n{}",
        pipeline_config_for(
            &state,
            &format!("{}/*.err, {}/*.err", datadir.display(), logdir.display()),
            &sink.url
        )
    );
    let cfg = dir.join("agent.yml");
    fs::write(&cfg, config).unwrap();
    fs::set_permissions(&cfg, fs::Permissions::from_mode(0o644)).unwrap();
    let stderr_path = dir.join("stderr.txt");
    let mut child = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .arg(agent_binary())
        .arg("--config")
        .arg(&cfg)
        .arg("--log")
        .arg(state.join("agent.log"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(&stderr_path).unwrap())
        .spawn()
        .unwrap();

    // With --log, warnings still reach stderr: the journal under systemd.
    wait_until("both problems on stderr", || {
        let text = fs::read_to_string(&stderr_path).unwrap_or_default();
        text.contains(&format!("cannot search {}", dir.display()))
            || text.contains(&format!("cannot list {}", datadir.display()))
    });
    wait_until("the unopenable file on stderr", || {
        fs::read_to_string(&stderr_path)
            .unwrap_or_default()
            .contains(&format!("cannot open {}", closed.display()))
    });
    let text = fs::read_to_string(&stderr_path).unwrap();
    assert!(
        text.contains("Permission denied")
            && text.contains("add the nobody user to the mysql group"),
        "{text}"
    );
    let metrics = get_metrics(port);
    let denied = metrics
        .lines()
        .find(|l| {
            l.starts_with(
                "my_agent_source_errors_total{source=\"tail0\",reason=\"permission_denied\"}",
            )
        })
        .unwrap_or_else(|| panic!("{metrics}"));
    let count: u64 = denied.split_whitespace().nth(1).unwrap().parse().unwrap();
    assert!(count >= 2, "{denied}");
    // Logged once per problem, not once per refresh.
    std::thread::sleep(Duration::from_secs(3));
    let text = fs::read_to_string(&stderr_path).unwrap();
    assert_eq!(
        text.matches(&format!("cannot open {}", closed.display()))
            .count(),
        1,
        "{text}"
    );

    // Access granted (as `usermod -aG mysql` would): everything is shipped.
    fs::set_permissions(&datadir, fs::Permissions::from_mode(0o755)).unwrap();
    fs::set_permissions(datadir.join("db1.err"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&closed, fs::Permissions::from_mode(0o644)).unwrap();
    sink.wait_for(Duration::from_secs(30), "all 20 lines", |records| {
        records.len() >= 20
    });
    assert_eq!(sink.seq_counts().len(), 20);
    let _ = child.kill();
    let _ = child.wait();
}
