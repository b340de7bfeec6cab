//! The RPM on a root that looks like an EL MySQL host: a `mysql` user and
//! group, `/etc/my.cnf` naming `log-error` and `slow_query_log_file`, the
//! logs `mysql:mysql 0640` in a `0751` datadir. The installed agent runs
//! chrooted there as the service user with the shipped default config (the
//! endpoint and, for the test's isolation, the metrics port changed): what
//! the server logs after the start reaches a loopback collector. Without the
//! mysql group the agent says which file it cannot open and why, on stderr,
//! in /status and in its error counter.

mod common;

use std::fs;
use std::io::{Read, Write};
use std::os::unix::fs::{chown, PermissionsExt};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;

const MY_CNF: &str = "\
# EL's MySQL community server layout, logs kept in the datadir.
[mysqld]
datadir=/var/lib/mysql
socket=/var/lib/mysql/mysql.sock
log-error=/var/lib/mysql/db1.err
slow_query_log=ON
slow_query_log_file=/var/lib/mysql/db1-slow.log
long_query_time=0.5

!includedir /etc/my.cnf.d
";

fn get(port: u16, path: &str) -> Option<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET {path} HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    out.split_once("\r\n\r\n").map(|(_, body)| body.to_string())
}

fn id_of(file: &Path, name: &str) -> (u32, u32) {
    let text = fs::read_to_string(file).unwrap();
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name}:")))
        .unwrap_or_else(|| panic!("{name} in {}", file.display()));
    let f: Vec<&str> = line.split(':').collect();
    (f[2].parse().unwrap(), f[3].parse().unwrap_or(0))
}

/// The installed agent, chrooted, as `uid:gid` with `groups`. The chroot
/// gets its own /proc (the loader resolves `$ORIGIN` through
/// /proc/self/exe) in a private mount namespace that ends with the agent.
fn start_agent(root: &Path, uid: u32, gid: u32, groups: &str, stderr: &Path) -> Child {
    fs::create_dir_all(root.join("proc")).unwrap();
    Command::new("unshare")
        .args(["--mount", "--propagation", "private", "sh", "-c"])
        .arg(
            "mount -t proc proc \"$1/proc\" && exec chroot --userspec=\"$2\" --groups=\"$3\" \"$1\" \
             /opt/my-agent/bin/my-agent --config /etc/my-agent/my-agent.yml",
        )
        .arg("sh")
        .arg(root)
        .arg(format!("{uid}:{gid}"))
        .arg(groups)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(fs::File::create(stderr).unwrap())
        .spawn()
        .unwrap()
}

fn slow_entry(n: u32) -> String {
    format!(
        "# Time: 2026-11-29T10:00:{n:02}.000000Z\n\
         # User@Host: app[app] @ localhost []  Id: {n}\n\
         # Query_time: 1.500000  Lock_time: 0.000010 Rows_sent: 1  Rows_examined: 1000\n\
         SET timestamp=1796032800;\n\
         SELECT el_host_slow_{n} FROM t WHERE x = {n};\n"
    )
}

#[test]
fn on_an_el_mysql_host_the_default_config_ships_both_logs() {
    let tmp = tempfile::tempdir().unwrap();
    let rpm = package(&tmp.path().join("dist"), "el9", 1, None);
    let root = tmp.path().join("root");
    throwaway_root(&root);

    // The MySQL server was there first: its user, group and files.
    let append = |file: &str, text: &str| {
        let path = root.join(file);
        let mut t = fs::read_to_string(&path).unwrap_or_default();
        t.push_str(text);
        fs::write(path, t).unwrap();
    };
    append(
        "etc/passwd",
        "mysql:x:27:27:MySQL Server:/var/lib/mysql:/sbin/nologin\n",
    );
    append("etc/group", "mysql:x:27:\n");
    append("etc/shadow", "mysql:!!:19000::::::\n");
    append("etc/gshadow", "mysql:!::\n");
    fs::create_dir_all(root.join("etc/my.cnf.d")).unwrap();
    fs::write(root.join("etc/my.cnf"), MY_CNF).unwrap();
    let datadir = root.join("var/lib/mysql");
    fs::create_dir_all(&datadir).unwrap();
    let error_log = datadir.join("db1.err");
    let slow_log = datadir.join("db1-slow.log");
    fs::write(
        &error_log,
        "2026-11-29 10:00:00 0 [Note] before the agent\n",
    )
    .unwrap();
    fs::write(
        &slow_log,
        "/usr/sbin/mysqld, Version: 8.0.36 (MySQL Community Server - GPL). started with:\n\
         Tcp port: 3306  Unix socket: /var/lib/mysql/mysql.sock\n\
         Time                 Id Command    Argument\n",
    )
    .unwrap();
    for f in [&error_log, &slow_log] {
        chown(f, Some(27), Some(27)).unwrap();
        fs::set_permissions(f, fs::Permissions::from_mode(0o640)).unwrap();
    }
    chown(&datadir, Some(27), Some(27)).unwrap();
    fs::set_permissions(&datadir, fs::Permissions::from_mode(0o751)).unwrap();

    ok(rpm_root(&root).arg("--initdb"));
    ok(rpm_root(&root)
        .args(["-i", "--nodeps", "--noplugins"])
        .arg(&rpm));
    let agent = root.join("opt/my-agent/bin/my-agent");
    copy_libraries(&root, &agent);
    let (uid, gid) = id_of(&root.join("etc/passwd"), "my-agent");
    let groups = fs::read_to_string(root.join("etc/group")).unwrap();
    assert!(
        groups
            .lines()
            .any(|l| l.starts_with("mysql:") && l.ends_with("my-agent")),
        "%post adds the service user to the mysql group:\n{groups}"
    );

    // The shipped config, only the endpoint (and the metrics port) changed.
    let sink = NdjsonSink::start();
    let port = free_port();
    let config_path = root.join("etc/my-agent/my-agent.yml");
    let shipped = fs::read_to_string(&config_path).unwrap();
    assert!(shipped.contains("path: auto"), "{shipped}");
    let config = shipped
        .replace("https://collector.invalid/api/v1/logs", &sink.url)
        .replace("127.0.0.1:24231", &format!("127.0.0.1:{port}"));
    assert_ne!(config, shipped);
    fs::write(&config_path, config).unwrap();

    let stderr = tmp.path().join("agent.stderr");
    let mut child = start_agent(&root, uid, gid, &format!("{gid},27"), &stderr);
    let log = || fs::read_to_string(&stderr).unwrap_or_default();
    wait_until(
        30,
        "both logs resolved from /etc/my.cnf",
        || {
            let l = log();
            l.contains("path auto: /var/lib/mysql/db1.err (log_error in /etc/my.cnf")
                && l.contains("path auto: /var/lib/mysql/db1-slow.log")
        },
        log,
    );
    wait_until(
        30,
        "the status endpoint",
        || get(port, "/health").is_some_and(|b| b == "ok\n"),
        log,
    );
    wait_until(
        30,
        "both logs followed",
        || get(port, "/status").is_some_and(|s| s.matches("\"following\"").count() >= 2),
        || get(port, "/status").unwrap_or_default(),
    );

    // The server writes: 20 error-log lines and 5 slow queries.
    for n in 0..20 {
        let mut f = fs::OpenOptions::new()
            .append(true)
            .open(&error_log)
            .unwrap();
        writeln!(
            f,
            "2026-11-29 10:01:{n:02} 0 [Warning] el-host error line {n}"
        )
        .unwrap();
    }
    let mut f = fs::OpenOptions::new().append(true).open(&slow_log).unwrap();
    for n in 0..5 {
        f.write_all(slow_entry(n).as_bytes()).unwrap();
    }
    // The next entry's header ends the last one.
    f.write_all(b"# Time: 2026-11-29T10:02:00.000000Z\n")
        .unwrap();
    drop(f);
    wait_until(
        60,
        "20 error lines and 5 slow queries at the collector",
        || sink.count("el-host error line") >= 20 && sink.count("el_host_slow_") >= 5,
        || format!("{}\n{:?}", log(), sink.lines()),
    );
    assert!(
        sink.count("before the agent") == 0,
        "history before the first start is not shipped"
    );
    let lines = sink.lines();
    let slow: serde_json::Value =
        serde_json::from_str(lines.iter().find(|l| l.contains("el_host_slow_3")).unwrap()).unwrap();
    assert_eq!(slow["query_time"], 1.5, "{slow}");
    assert_eq!(slow["user"], "app", "{slow}");
    let _ = child.kill();
    let _ = child.wait();

    // Access removed: the service user is not in the mysql group.
    let stderr2 = tmp.path().join("agent2.stderr");
    let mut child = start_agent(&root, uid, gid, &gid.to_string(), &stderr2);
    let log2 = || fs::read_to_string(&stderr2).unwrap_or_default();
    wait_until(
        30,
        "the permission problem on stderr",
        || {
            let l = log2();
            l.contains("cannot open /var/lib/mysql/db1.err")
                && l.contains("cannot open /var/lib/mysql/db1-slow.log")
        },
        log2,
    );
    let text = log2();
    assert!(
        text.contains("Permission denied")
            && text.contains("add the my-agent user to the mysql group"),
        "{text}"
    );
    let status = get(port, "/status").unwrap_or_default();
    assert!(
        status.contains("/var/lib/mysql/db1.err")
            && status.contains("permission_denied")
            && status.contains("\"ok\": false"),
        "{status}"
    );
    let metrics = get(port, "/metrics").unwrap_or_default();
    let denied: Vec<&str> = metrics
        .lines()
        .filter(|l| {
            l.starts_with("my_agent_source_errors_total")
                && l.contains("reason=\"permission_denied\"")
        })
        .collect();
    assert_eq!(denied.len(), 2, "one counter per source:\n{metrics}");
    for l in denied {
        let n: u64 = l.rsplit(' ').next().unwrap().parse().unwrap();
        assert!(n >= 1, "{l}");
    }
    let _ = child.kill();
    let _ = child.wait();
}
