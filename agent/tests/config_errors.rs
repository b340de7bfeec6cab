//! `my-agent --dry-run` on bad configs: exit 1 and one clear line naming
//! file:line:column and what was expected. A good config exits 0.

mod common;

use std::process::Command;

fn dry_run(dir: &std::path::Path, name: &str, text: &str) -> (i32, String) {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_my-agent"))
        .arg("--config")
        .arg(&path)
        .arg("--dry-run")
        .output()
        .unwrap();
    (
        out.status.code().unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const GOOD: &str = "sources:
  - type: tail
    path: /var/log/mysql/*.err
    pos_file: /var/lib/my-agent/error.pos
    tag: mysql.error
outputs:
  - match: \"**\"
    type: http
    endpoint: https://collector.example/api/bulk
    buffer:
      type: file
      path: /var/lib/my-agent/buffer
      flush_interval: 1s
";

#[test]
fn bad_configs_give_one_line_with_position() {
    let dir = tempfile::tempdir().unwrap();
    let (code, _) = dry_run(dir.path(), "good.yml", GOOD);
    assert_eq!(code, 0);

    let cases = [
        (
            "syntax.yml",
            GOOD.replace("    tag: mysql.error", "    tag: [mysql.error"),
            "YAML syntax",
        ),
        (
            "unknown.yml",
            GOOD.replace(
                "    tag: mysql.error",
                "    tag: mysql.error\n    colour: red",
            ),
            "6:5: source: unknown key `colour`",
        ),
        (
            "duration.yml",
            GOOD.replace("flush_interval: 1s", "flush_interval: 1 fortnight"),
            "13:23: expected a duration like 1s, 30s, 5m or 72h, found `1 fortnight`",
        ),
        (
            "max_open_files.yml",
            GOOD.replace(
                "    tag: mysql.error",
                "    tag: mysql.error\n    max_open_files: 0",
            ),
            "6:21: tail: max_open_files must be at least 1",
        ),
        (
            "id_key.yml",
            GOOD.replace(
                "    tag: mysql.error",
                "    tag: mysql.error\n    id_key: \"\"",
            ),
            "6:13: tail: id_key must be a field name, not empty",
        ),
        (
            "missing.yml",
            GOOD.replace("    path: /var/log/mysql/*.err\n", ""),
            "2:5: source: missing required key `path`",
        ),
    ];
    for (name, text, expected) in cases {
        let (code, stderr) = dry_run(dir.path(), name, &text);
        assert_eq!(code, 1, "{name}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{name}: one line: {stderr}");
        let path = dir.path().join(name).display().to_string();
        assert!(
            stderr.starts_with(&format!("error: {path}:")),
            "{name}: {stderr}"
        );
        assert!(
            stderr.contains(expected),
            "{name}: expected `{expected}` in {stderr}"
        );
        // file:line:column, all three.
        let rest = &stderr[format!("error: {path}:").len()..];
        let mut parts = rest.splitn(3, ':');
        assert!(
            parts.next().unwrap().parse::<usize>().is_ok(),
            "{name}: line in {stderr}"
        );
        assert!(
            parts.next().unwrap().parse::<usize>().is_ok(),
            "{name}: column in {stderr}"
        );
    }
}

/// Configs built to explode: each is an error naming file:line:column at
/// `--dry-run`, and sent with SIGHUP it leaves the running agent as it was.
#[test]
fn hostile_configs_are_errors_and_do_not_hurt_a_running_agent() {
    let dir = tempfile::tempdir().unwrap();
    let mut laughs = String::from("a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol]\n");
    for i in 1..9 {
        let p = i - 1;
        laughs.push_str(&format!(
            "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let deep = format!("{}{}\n", "[".repeat(200_000), "]".repeat(200_000));
    let mut bad_utf8 = GOOD.as_bytes().to_vec();
    let at = GOOD.find("mysql.error").unwrap();
    bad_utf8.splice(at..at, [0xff, 0xfe]);
    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "laughs.yml",
            laughs.into_bytes(),
            "aliases expand to more than 100000 nodes",
        ),
        (
            "deep.yml",
            deep.into_bytes(),
            "nested deeper than 64 levels",
        ),
        (
            "two.yml",
            format!("{GOOD}---\n{GOOD}").into_bytes(),
            "second YAML document",
        ),
        ("utf8.yml", bad_utf8, "5:10: not UTF-8"),
        ("huge.yml", vec![b'#'; (4 << 20) + 1], "larger than 4 MiB"),
    ];
    for (name, bytes, expected) in &cases {
        let path = dir.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        let before = children_usage();
        let out = Command::new(env!("CARGO_BIN_EXE_my-agent"))
            .arg("--config")
            .arg(&path)
            .arg("--dry-run")
            .output()
            .unwrap();
        let after = children_usage();
        // Not a speed target: a bomb that is expanded takes minutes and
        // gigabytes; refused, it takes milliseconds and a few MiB. The
        // children waited for so far are this test's dry runs and the
        // other test's, all small: the peak is this one's or below it.
        let cpu = after.cpu - before.cpu;
        eprintln!(
            "{name}: {cpu:.3} CPU s, peak RSS of dry runs so far {} KiB",
            after.max_rss_kib
        );
        assert!(cpu < 1.0, "{name}: {cpu} CPU seconds");
        assert!(
            after.max_rss_kib < 50 << 10,
            "{name}: {} KiB",
            after.max_rss_kib
        );
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(expected),
            "{name}: expected `{expected}` in {stderr}"
        );
        assert!(
            stderr.starts_with(&format!("error: {}:", path.display())),
            "{name}: {stderr}"
        );
    }

    // A running agent gets each of them by SIGHUP and keeps shipping.
    let sink = common::Sink::start();
    let log = dir.path().join("mysqld.err");
    common::append_lines(&log, (0..10).map(common::numbered_line));
    let config = common::pipeline_config(dir.path(), &sink.url);
    let agent = common::Agent::start(dir.path(), &config);
    sink.wait_for(
        std::time::Duration::from_secs(30),
        "the first 10 lines",
        |r| r.len() >= 10,
    );
    let cfg = dir.path().join("agent.yml");
    for (_, bytes, _) in &cases {
        std::fs::write(&cfg, bytes).unwrap();
        agent.signal(libc::SIGHUP);
        std::thread::sleep(std::time::Duration::from_millis(300));
    }
    common::append_lines(&log, (10..20).map(common::numbered_line));
    sink.wait_for(
        std::time::Duration::from_secs(30),
        "10 more lines after the hostile reloads",
        |r| r.len() >= 20,
    );
    let text = agent.log_text();
    assert_eq!(
        text.matches("new configuration rejected").count(),
        cases.len(),
        "{text}"
    );
    let peak = agent.peak_rss_kib();
    assert!(peak < 50 << 10, "the agent peaked at {peak} KiB");
    assert!(agent.stop().success());
}

struct Usage {
    cpu: f64,
    max_rss_kib: i64,
}

/// CPU seconds of the children waited for so far, and the largest peak
/// RSS among them.
fn children_usage() -> Usage {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    Usage {
        cpu: secs(u.ru_utime) + secs(u.ru_stime),
        max_rss_kib: u.ru_maxrss,
    }
}
