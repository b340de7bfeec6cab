//! The package under a real init: systemd as PID 1 in a podman container
//! (a Debian root from debootstrap; no registry is reachable). `rpm -i`,
//! `systemctl enable --now`, an upgrade with `rpm -U` while the server
//! writes and the collector is down (every line arrives, at most once more;
//! the upgrade's restart is prompt), a broken config ending in `failed` with
//! its error in the journal, `rpm -e`; then the SysV script's start, status
//! and stop, and its refusal to signal a pid it does not own.

mod common;

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::*;

const IMAGE: &str = "localhost/my-agent-test-systemd:bookworm";

fn podman(conf: &Path) -> Command {
    let mut c = Command::new("podman");
    c.env("CONTAINERS_CONF", conf);
    c
}

/// A running container, removed when dropped.
struct Container {
    name: String,
    conf: std::path::PathBuf,
}

impl Container {
    fn exec(&self, script: &str) -> Output {
        podman(&self.conf)
            .args(["exec", &self.name, "sh", "-c", script])
            .output()
            .unwrap()
    }

    /// Runs `script`, which must succeed; returns its stdout.
    fn sh(&self, script: &str) -> String {
        let out = self.exec(script);
        assert!(
            out.status.success(),
            "`{script}` failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn journal(&self) -> String {
        String::from_utf8_lossy(
            &self
                .exec("journalctl -u my-agent --no-pager | tail -n 60")
                .stdout,
        )
        .into_owned()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = podman(&self.conf)
            .args(["rm", "-f", "-t", "2", &self.name])
            .output();
    }
}

/// `seq=N` of every accepted line, counted.
fn seq_counts(sink: &NdjsonSink) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for l in sink.lines().iter() {
        if let Some(rest) = l.split("upgrade-test seq=").nth(1) {
            let n: u64 = rest
                .chars()
                .take_while(char::is_ascii_digit)
                .collect::<String>()
                .parse()
                .unwrap();
            *counts.entry(n).or_default() += 1;
        }
    }
    counts
}

#[test]
fn install_upgrade_fail_and_erase_under_systemd() {
    let tmp = tempfile::tempdir().unwrap();
    let conf = containers_conf(tmp.path());
    debootstrap_image(
        tmp.path(),
        &conf,
        IMAGE,
        "systemd,systemd-sysv,dbus,rpm,procps",
        &["CMD [\"/sbin/init\"]", "STOPSIGNAL SIGRTMIN+3"],
    );
    let dist = tmp.path().join("dist");
    let rpm1 = package(&dist, "el9", 1, None);
    let rpm2 = package(&dist, "el9", 2, None);
    let name1 = rpm1.file_name().unwrap().to_str().unwrap().to_string();
    let name2 = rpm2.file_name().unwrap().to_str().unwrap().to_string();

    let name = format!("my-agent-systemd-test-{}", std::process::id());
    ok(podman(&conf)
        .args([
            "run",
            "-d",
            "--systemd=always",
            "--network",
            "host",
            "--name",
            &name,
        ])
        .arg("-v")
        .arg(format!("{}:/rpms:ro", dist.display()))
        .arg(IMAGE));
    let c = Container { name, conf };
    wait_until(
        60,
        "systemd running",
        || {
            let state =
                String::from_utf8_lossy(&c.exec("systemctl is-system-running").stdout).into_owned();
            state.starts_with("running") || state.starts_with("degraded")
        },
        || String::from_utf8_lossy(&c.exec("systemctl --failed --no-pager").stdout).into_owned(),
    );

    // A MySQL server's error log, named in its option file.
    c.sh("mkdir -p /var/log/mysql && : > /var/log/mysql/error.log && chmod 0644 /var/log/mysql/error.log \
          && printf '[mysqld]\\nlog-error=/var/log/mysql/error.log\\n' > /etc/my.cnf");
    c.sh(&format!("rpm -i --nodeps /rpms/{name1}"));
    // Installing never starts the service.
    assert!(!c.exec("systemctl is-active my-agent").status.success());

    let sink = NdjsonSink::start();
    let port = free_port();
    c.sh(&format!(
        "sed -i -e 's|https://collector.invalid/api/v1/logs|{}|' -e 's|127.0.0.1:24231|127.0.0.1:{port}|' \
         /etc/my-agent/my-agent.yml",
        sink.url
    ));
    c.sh("systemctl enable --now my-agent");
    wait_until(
        30,
        "the agent active and listening",
        || {
            c.exec("systemctl is-active my-agent").status.success()
                && std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
        },
        || c.journal(),
    );
    // Give the source its first look at the file, so that what follows is
    // "written after the start".
    std::thread::sleep(Duration::from_secs(2));

    // The server writes 3,000 lines while the package is upgraded and the
    // collector is down.
    const LINES: u64 = 3000;
    c.sh(&format!(
        "nohup sh -c 'i=0; while [ $i -lt {LINES} ]; do \
         echo \"2026-11-29 10:00:00 0 [Note] upgrade-test seq=$i end\" >> /var/log/mysql/error.log; \
         i=$((i+1)); case $i in *00) sleep 0.2;; esac; done; touch /tmp/writer-done' \
         >/dev/null 2>&1 &"
    ));
    wait_until(
        60,
        "the first lines at the collector",
        || seq_counts(&sink).len() >= 300,
        || c.journal(),
    );
    sink.set_down(true);
    std::thread::sleep(Duration::from_secs(1));
    let upgrade = Instant::now();
    c.sh(&format!("rpm -U --nodeps /rpms/{name2}"));
    let upgrade_took = upgrade.elapsed();
    println!("rpm -U with the collector down took {upgrade_took:.1?}");
    assert!(
        upgrade_took < Duration::from_secs(10),
        "the upgrade's restart took {upgrade_took:?}\n{}",
        c.journal()
    );
    assert!(c.sh("rpm -q my-agent").contains("-2.el9"));
    wait_until(
        60,
        "the writer to finish",
        || c.exec("test -e /tmp/writer-done").status.success(),
        || c.journal(),
    );
    assert!(
        c.exec("systemctl is-active my-agent").status.success(),
        "{}",
        c.journal()
    );
    sink.set_down(false);
    wait_until(
        120,
        "every line after the collector is back",
        || seq_counts(&sink).len() as u64 == LINES,
        || format!("{} of {LINES}\n{}", seq_counts(&sink).len(), c.journal()),
    );
    let counts = seq_counts(&sink);
    let twice = counts.values().filter(|&&n| n == 2).count();
    assert!(
        counts.values().all(|&n| n <= 2),
        "a line arrived more than twice: {:?}",
        counts
            .iter()
            .filter(|(_, &n)| n > 2)
            .take(5)
            .collect::<Vec<_>>()
    );
    println!("{LINES} lines across the upgrade: 0 lost, {twice} twice");

    // A broken config: the dry-run before each start fails, the start limit
    // ends the restarts, and the journal names the file and line.
    c.sh("printf 'outputs:\\n  - type: http\\n    endpoint: [\\n' > /etc/my-agent/my-agent.yml");
    let _ = c.exec("systemctl restart my-agent");
    wait_until(
        90,
        "the unit to end failed",
        || {
            String::from_utf8_lossy(&c.exec("systemctl is-failed my-agent").stdout).trim()
                == "failed"
        },
        || c.journal(),
    );
    let journal = c.journal();
    assert!(journal.contains("/etc/my-agent/my-agent.yml:"), "{journal}");

    // Erase: stopped, the unit gone, the prefix gone, buffers kept.
    c.sh("rpm -e --nodeps my-agent");
    assert!(!c.exec("test -e /opt/my-agent").status.success());
    assert!(c.exec("test -d /var/lib/my-agent").status.success());
    assert!(
        !c.exec("pgrep -x my-agent").status.success(),
        "no agent left running"
    );

    // The SysV script, where it can run (no chkconfig on Debian): start,
    // status, a subsys lock, stop, and no signal to a pid it does not own.
    c.sh(&format!("rpm -i --nodeps /rpms/{name1}"));
    c.sh(&format!(
        "sed -i -e 's|https://collector.invalid/api/v1/logs|{}|' -e 's|127.0.0.1:24231|127.0.0.1:{port}|' \
         /etc/my-agent/my-agent.yml",
        sink.url
    ));
    let script = "/etc/rc.d/init.d/my-agent";
    // EL's filesystem package provides it; Debian does not.
    c.sh("mkdir -p /var/lock/subsys");
    c.sh(&format!("{script} start"));
    assert!(
        c.exec(&format!("{script} status")).status.success(),
        "{}",
        c.sh("cat /var/log/my-agent/my-agent.log")
    );
    c.sh("test -e /var/lock/subsys/my-agent");
    let pid = c.sh("cat /var/run/my-agent/my-agent.pid");
    let user = c.sh(&format!("ps -o user= -p {}", pid.trim()));
    assert_eq!(
        user.trim(),
        "my-agent",
        "the daemon runs as the service user"
    );
    c.sh(&format!("{script} stop"));
    assert!(!c.exec("test -e /var/lock/subsys/my-agent").status.success());
    assert_eq!(c.exec(&format!("{script} status")).status.code(), Some(3));
    // The service user could write any pid into its pid file: root's script
    // must not signal a process that is not the agent.
    c.sh("nohup sleep 300 >/dev/null 2>&1 & echo $! > /tmp/victim; cp /tmp/victim /var/run/my-agent/my-agent.pid");
    c.sh(&format!("{script} stop"));
    assert!(
        c.exec("kill -0 $(cat /tmp/victim)").status.success(),
        "stop signalled a process that is not the agent"
    );
    c.sh("rpm -e --nodeps my-agent");
}
