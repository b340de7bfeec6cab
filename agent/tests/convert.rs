//! `my-agent convert`: td-agent configurations written like real ones
//! (`tests/fixtures/fluentd/`: the error log with record_transformer and
//! out_http with a file buffer, the slow log, mysql_query with nest_result,
//! row_count and record_hostname, and `@include`, `<label>`, `copy`, v0.12
//! syntax and `grep`) convert, pass `--dry-run` and run, delivering the
//! records Fluentd's config describes; every part that cannot be converted
//! is an error naming its file and line, or with `--partial` a comment and
//! exit status 3.

mod common;

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use common::*;

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fluentd")
}

/// The fixtures copied under `dir/conf` with `{dir}`, `{url}` and `{port}`
/// filled in.
fn materialize(dir: &Path, url: &str, port: u16) -> PathBuf {
    fn copy(from: &Path, to: &Path, fill: &dyn Fn(String) -> String) {
        fs::create_dir_all(to).unwrap();
        for e in fs::read_dir(from).unwrap() {
            let path = e.unwrap().path();
            let dest = to.join(path.file_name().unwrap());
            if path.is_dir() {
                copy(&path, &dest, fill);
            } else {
                fs::write(&dest, fill(fs::read_to_string(&path).unwrap())).unwrap();
            }
        }
    }
    let conf = dir.join("conf");
    let fill = |s: String| {
        s.replace("{dir}", &dir.display().to_string())
            .replace("{url}", url)
            .replace("{port}", &port.to_string())
    };
    copy(&fixtures(), &conf, &fill);
    conf
}

fn convert(dir: &Path, conf: &Path, extra: &[&str]) -> Output {
    Command::new(agent_binary())
        .arg("convert")
        .arg(conf)
        .arg("--state-dir")
        .arg(dir.join("state"))
        .args(extra)
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Converts `name` (a fixture) and checks the result with `--dry-run`.
fn converted(dir: &Path, conf: &Path, name: &str) -> String {
    let yml = dir.join(format!("{name}.yml"));
    let out = convert(
        dir,
        &conf.join(format!("{name}.conf")),
        &["-o", yml.to_str().unwrap()],
    );
    assert!(out.status.success(), "{name}: {}", text(&out));
    let check = Command::new(agent_binary())
        .arg("--config")
        .arg(&yml)
        .arg("--dry-run")
        .env("MYSQL_MONITOR_PASSWORD", "secret")
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{name}: {}\n{}",
        text(&check),
        fs::read_to_string(&yml).unwrap()
    );
    fs::read_to_string(&yml).unwrap()
}

fn run_dir(base: &Path, name: &str) -> PathBuf {
    let dir = base.join(format!("run-{name}"));
    fs::create_dir_all(dir.join("state")).unwrap();
    dir
}

fn records_with(sink: &Sink, field: &str, value: &str) -> Vec<serde_json::Value> {
    sink.state
        .records
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r[field] == value)
        .cloned()
        .collect()
}

#[test]
fn every_fixture_converts_passes_dry_run_and_maps_what_it_says() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    fs::create_dir_all(dir.join("state")).unwrap();
    let conf = materialize(dir, "http://127.0.0.1:9/api/logs", 3306);
    let state = dir.join("state").display().to_string();

    let y = converted(dir, &conf, "error-log");
    for want in [
        "type: tail",
        "tag: mysql.error",
        "read_from_head: true",
        "hostname: \"${hostname}\"",
        "timestamp: \"${time.to_i}\"",
        "service: \"${tag_parts[0]}\"",
        "format: ndjson",
        "method: post",
        "flush_interval: 1s",
        // td-agent's own state files stay its own.
        &format!("pos_file: {state}/mysql-error.log.pos"),
        &format!("path: {state}/buffer/mysql-error"),
    ] {
        assert!(y.contains(want), "error-log: {want}\n{y}");
    }
    let y = converted(dir, &conf, "slow-log");
    assert!(
        y.contains("type: mysql_slow_query") && y.contains("last_dbname_file: not needed"),
        "{y}"
    );
    let y = converted(dir, &conf, "mysql-query");
    for want in [
        "type: mysql_query",
        "password_env: MYSQL_MONITOR_PASSWORD",
        "record_hostname: true",
        "nest_result: true",
        "nest_key: data",
        "row_count: true",
        "row_count_key: row_count",
        "interval: 10s",
    ] {
        assert!(y.contains(want), "mysql-query: {want}\n{y}");
    }
    let y = converted(dir, &conf, "include");
    assert!(
        y.contains("type: tail") && y.contains("format: json_array"),
        "{y}"
    );
    assert!(
        y.contains("overflow_action: drop_oldest") && y.contains("retry_max_interval: 30s"),
        "{y}"
    );
    assert!(
        y.contains("<system> at ") && y.contains("(log_level, workers)"),
        "{y}"
    );
    let y = converted(dir, &conf, "label");
    assert!(
        y.contains("routed to @MYSQL") && y.contains("origin: \"${tag}\""),
        "{y}"
    );
    let y = converted(dir, &conf, "copy");
    assert!(y.contains("type: copy") && y.contains("type: file"), "{y}");
    let y = converted(dir, &conf, "v012");
    for want in [
        "message_key: log",
        "type: memory",
        "total_limit_size: 32m",
        "retry_forever: true",
        "retry_max_interval: 60s",
    ] {
        assert!(y.contains(want), "v012: {want}\n{y}");
    }
    let y = converted(dir, &conf, "grep");
    assert!(
        y.contains("pattern: \"\\\\[(ERROR|Warning)\\\\]\"") && y.contains("pattern: InnoDB"),
        "{y}"
    );
}

#[test]
fn converted_tail_configs_deliver_what_fluentd_would() {
    let tmp = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let host = {
        let out = Command::new("hostname").output().unwrap();
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    };
    let lines = [
        "2026-12-03T05:00:00.000000Z 0 [Note] [MY-010914] [Server] Aborted connection 7",
        "2026-12-03T05:00:01.000000Z 0 [Warning] [MY-013360] [Server] Plugin sha256_password is deprecated",
        "2026-12-03T05:00:02.000000Z 0 [ERROR] [MY-012592] [InnoDB] Operating system error number 2",
        "2026-12-03T05:00:03.000000Z 0 [ERROR] [MY-010119] [Server] Aborting",
    ];
    for name in ["error-log", "grep", "copy", "v012", "label", "include"] {
        let dir = run_dir(tmp.path(), name);
        let url = format!("{}/{name}", sink.url);
        let conf = materialize(&dir, &url, 3306);
        let yml = converted(&dir, &conf, name);
        // Most of them tail from the end of a file that exists at start
        // (Fluentd's read_from_head false): the lines come after.
        fs::write(dir.join("mysqld.err"), "").unwrap();
        let agent = Agent::start(&dir, &yml);
        std::thread::sleep(Duration::from_secs(2));
        append_lines(&dir.join("mysqld.err"), lines.iter().map(|l| l.to_string()));
        // What Fluentd's config lets through: all four lines, or for grep
        // the errors and warnings that are not InnoDB's.
        let (key, expected): (&str, Vec<&str>) = match name {
            "grep" => ("message", vec![lines[1], lines[3]]),
            "v012" => ("log", lines.to_vec()),
            _ => ("message", lines.to_vec()),
        };
        sink.wait_for(Duration::from_secs(30), name, |records| {
            records
                .iter()
                .filter(|r| expected.iter().any(|l| r[key] == *l))
                .count()
                >= expected.len()
        });
        // Nothing more arrives for it (grep drops the rest).
        std::thread::sleep(Duration::from_millis(1500));
        let got: Vec<String> = expected
            .iter()
            .flat_map(|l| records_with(&sink, key, l))
            .map(|r| r.to_string())
            .collect();
        assert_eq!(got.len(), expected.len(), "{name}: each line once: {got:?}");
        if name == "grep" {
            assert!(
                records_with(&sink, "message", lines[0]).is_empty(),
                "the Note line never passes grep"
            );
        }
        if name == "error-log" {
            for l in lines {
                let r = &records_with(&sink, "message", l)[0];
                assert_eq!(r["hostname"], host.as_str(), "{r}");
                assert_eq!(r["service"], "mysql", "{r}");
                assert!(r["timestamp"].as_i64().unwrap() > 1_700_000_000, "{r}");
            }
        }
        if name == "label" {
            let r = &records_with(&sink, "message", lines[0])[0];
            assert_eq!(r["origin"], "mysql.error");
            assert_eq!(r["hostname"], host.as_str());
        }
        if name == "copy" {
            let copied = fs::read_to_string(dir.join("copy.log")).unwrap_or_default();
            for l in lines {
                assert!(
                    copied.contains(&serde_json::to_string(l).unwrap()),
                    "copy.log: {copied}"
                );
            }
        }
        assert!(agent.stop().success(), "{name}");
        sink.state.records.lock().unwrap().clear();
    }
}

/// The same config and the same lines through the real Fluentd and,
/// converted, through my-agent: the same records, field by field, but for
/// the ingestion time each takes (`${time.to_i}` of `format none` is when
/// the line was read).
#[test]
fn fluentd_and_my_agent_give_the_same_records_from_one_config() {
    let tmp = tempfile::tempdir().unwrap();
    let lines: Vec<String> = (0..50)
        .map(|n| match n % 5 {
            0 => format!("2026-12-03T05:00:{n:02}.000000Z 0 [Note] [MY-012345] [InnoDB] page cleaner {n}"),
            1 => format!("2026-12-03T05:00:{n:02}.000000Z 0 [Warning] [MY-013360] [Server] \"quoted\" \\ {n} é"),
            _ => error_log_line(n),
        })
        .collect();
    let run = |name: &str, sink: &Sink| -> PathBuf {
        let dir = run_dir(tmp.path(), name);
        let conf = materialize(&dir, &sink.url, 3306);
        append_lines(&dir.join("mysqld.err"), lines.iter().cloned());
        conf.join("side-by-side.conf")
    };
    let fluentd_sink = Sink::start();
    let conf = run("fluentd", &fluentd_sink);
    let text = fs::read_to_string(&conf).unwrap();
    let mut fluentd = Peer::fluentd(&tmp.path().join("fluentd-peer"), &text);

    let agent_sink = Sink::start();
    let conf = run("my-agent", &agent_sink);
    let dir = conf.parent().unwrap().parent().unwrap().to_path_buf();
    let yml = converted(&dir, conf.parent().unwrap(), "side-by-side");
    let agent = Agent::start(&dir, &yml);

    let expected = lines.iter().filter(|l| !l.contains("InnoDB")).count();
    for (sink, who) in [(&fluentd_sink, "Fluentd"), (&agent_sink, "my-agent")] {
        sink.wait_for(Duration::from_secs(60), who, |r| r.len() >= expected);
    }
    std::thread::sleep(Duration::from_millis(1500));
    fluentd.stop();
    assert!(agent.stop().success());
    let from_fluentd = fluentd_sink.state.records.lock().unwrap().clone();
    let from_agent = agent_sink.state.records.lock().unwrap().clone();
    assert_eq!(from_fluentd.len(), expected, "{}", fluentd.log_text());
    assert_eq!(from_agent.len(), expected);
    eprintln!(
        "first pair:\n  Fluentd:  {}\n  my-agent: {}",
        from_fluentd[0], from_agent[0]
    );
    for (f, a) in from_fluentd.iter().zip(&from_agent) {
        let (fo, ao) = (f.as_object().unwrap(), a.as_object().unwrap());
        let fk: Vec<&String> = fo.keys().collect();
        let ak: Vec<&String> = ao.keys().collect();
        assert_eq!(fk, ak, "the same fields\nFluentd:  {f}\nmy-agent: {a}");
        for key in ["message", "hostname", "service", "tag"] {
            assert_eq!(f[key], a[key], "{key}\nFluentd:  {f}\nmy-agent: {a}");
        }
        // The listed difference: each stamps the time it read the line.
        let (ft, at) = (
            f["timestamp"].as_i64().unwrap(),
            a["timestamp"].as_i64().unwrap(),
        );
        assert!((ft - at).abs() <= 120, "Fluentd {ft}, my-agent {at}");
    }
}

#[test]
fn converted_mysql_configs_run_against_a_live_server() {
    let tmp = tempfile::tempdir().unwrap();
    let db = MariaDb::start();
    db.sql("CREATE USER 'monitor'@'127.0.0.1' IDENTIFIED BY 'secret'");
    db.sql("GRANT SELECT ON mysql.* TO 'monitor'@'127.0.0.1'");
    let sink = Sink::start();

    let dir = run_dir(tmp.path(), "mysql-query");
    let conf = materialize(&dir, &sink.url, db.port);
    let yml = converted(&dir, &conf, "mysql-query");
    let agent = Agent::start_with_env(
        &dir,
        &yml,
        &[("MYSQL_MONITOR_PASSWORD", Path::new("secret"))],
    );
    sink.wait_for(Duration::from_secs(30), "a status record", |r| {
        !r.is_empty()
    });
    let r = sink.state.records.lock().unwrap()[0].clone();
    // fluent-plugin-mysql-query's shape: rows under nest_key, the count,
    // the server's host name.
    let rows = r["data"].as_array().unwrap_or_else(|| panic!("{r}"));
    assert!(
        !rows.is_empty()
            && rows[0]["VARIABLE_NAME"]
                .as_str()
                .unwrap()
                .starts_with("THREADS_"),
        "{r}"
    );
    assert_eq!(r["row_count"], rows.len(), "{r}");
    assert!(r["hostname"].is_string(), "{r}");
    assert!(agent.stop().success());

    let dir = run_dir(tmp.path(), "slow-log");
    let conf = materialize(&dir, &sink.url, db.port);
    let yml = converted(&dir, &conf, "slow-log");
    let mut log = String::from(SLOW_LOG_BANNER);
    for n in 1..=3 {
        log.push_str(&slow_log_entry(n, Some("app")));
    }
    // The source starts at the end of a file it finds at start-up, as
    // Fluentd's does: the entries are written after.
    fs::write(dir.join("mysql-slow.log"), "").unwrap();
    let agent = Agent::start(&dir, &yml);
    std::thread::sleep(Duration::from_secs(2));
    fs::write(dir.join("mysql-slow.log"), &log).unwrap();
    sink.wait_for(Duration::from_secs(30), "three slow-log entries", |r| {
        r.iter().filter(|r| r["db"] == "app").count() >= 3
    });
    assert!(agent.stop().success());
}

/// Twenty-odd configurations with a part that cannot be converted: each an
/// error naming its file and line, and with --partial a comment (exit 3).
#[test]
fn unconvertible_parts_are_named_by_file_and_line() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let tail = "<source>\n  @type tail\n  path /var/log/mysql/error.log\n  tag mysql.error\n  format none\n</source>\n";
    let out = "<match mysql.**>\n  @type http\n  endpoint http://127.0.0.1:9/\n</match>\n";
    let cases: Vec<(String, usize, &str)> = vec![
        (format!("{tail}<match **>\n  @type elasticsearch\n</match>\n"), 7, "`@type elasticsearch` is not supported: keep it on a Fluentd aggregator and forward to it"),
        (format!("<source>\n  @type syslog\n  tag s\n</source>\n{out}"), 1, "`@type syslog` sources are not supported"),
        (format!("<source>\n  @type tail\n  path /x\n  tag t\n  <parse>\n    @type regexp\n  </parse>\n</source>\n{out}"), 5, "<parse> @type regexp: only `none`"),
        (format!("<source>\n  @type tail\n  path /x\n  tag t\n  format json\n</source>\n{out}"), 5, "`format json`: only `none`"),
        (format!("{tail}<filter **>\n  @type parser\n</filter>\n{out}"), 7, "`@type parser` filters are not supported"),
        (format!("{tail}<filter **>\n  @type record_transformer\n  enable_ruby true\n  <record>\n    up ${{record[\"a\"].upcase}}\n  </record>\n</filter>\n{out}"), 11, "cannot be converted (supported: hostname"),
        (format!("{tail}<filter **>\n  @type record_transformer\n  renew_record true\n</filter>\n{out}"), 9, "`renew_record true` is not supported"),
        (format!("{tail}<match **>\n  @type http\n  endpoint_url http://x/\n  serializer form\n</match>\n"), 10, "`serializer form`: only json"),
        (format!("{tail}<match **>\n  @type http\n  endpoint http://x/\n  <buffer time>\n    timekey 1h\n  </buffer>\n</match>\n"), 10, "chunk keys other than tag"),
        (format!("{tail}{out}<label @ERROR>\n  <match **>\n    @type null\n  </match>\n</label>\n"), 11, "<label @ERROR>"),
        (format!("<source>\n  @type tail\n  path /var/log/app/*.log\n  tag app.*\n</source>\n{out}"), 4, "a `*` expanded from the file's path"),
        (format!("<source>\n  @type tail\n  path /x\n  tag t\n  path_key file\n</source>\n{out}"), 5, "`path_key` of the tail source is not supported"),
        (format!("{tail}<match **>\n  @type http\n  endpoint http://x/\n  <buffer>\n    retry_type periodic\n  </buffer>\n</match>\n"), 11, "`retry_type periodic`"),
        (format!("{tail}<match **>\n  @type http\n  endpoint http://x/\n  <buffer>\n    flush_mode lazy\n  </buffer>\n</match>\n"), 11, "`flush_mode lazy` is not supported"),
        (format!("<source>\n  @type http\n  port 9880\n  cors_allow_origins [\"*\"]\n</source>\n{out}"), 4, "`cors_allow_origins` of the http source is not supported"),
        (format!("{tail}<match **>\n  @type http\n  endpoint \"#{{File.read('/etc/url')}}\"\n</match>\n"), 9, "embedded Ruby"),
        (format!("{tail}<match **>\n  @type copy\n  <store ignore_error>\n    @type null\n  </store>\n</match>\n"), 9, "<store ignore_error>"),
        (format!("<source>\n  @type tail\n  @label @A\n  path /x\n  tag a.log\n</source>\n{tail}<label @A>\n  <match **>\n    @type null\n  </match>\n</label>\n{out}"), 14, "also matches tag `mysql.error`"),
        (format!("{tail}<match **>\n  @type forward\n  heartbeat_type udp\n  <server>\n    host 127.0.0.1\n  </server>\n</match>\n"), 9, "`heartbeat_type udp`"),
        (format!("{tail}<filter **>\n  @type grep\n  <and>\n    <regexp>\n      key a\n      pattern b\n    </regexp>\n  </and>\n</filter>\n{out}"), 9, "<and> in grep is not supported"),
        (format!("@include https://example.com/td-agent.conf\n{tail}{out}"), 1, "including a URL is not supported"),
        (format!("{tail}<match **>\n  @type http\n  endpoint http://x/\n  <buffer>\n    chunk_limit_size 8t\n  </buffer>\n</match>\n"), 11, "expected a size like 8m"),
        (format!("{tail}{out}<source>\n  @type tail\n  path /x\n"), 11, "`<source>` is never closed"),
        (format!("{tail}<filter **>\n  @type record_transformer\n  <record>\n    copy ${{message}}\n  </record>\n</filter>\n{out}"), 10, "expands a bare `${field}` to nothing"),
        (format!("{tail}{out}<filter mysql.**>\n  @type grep\n  <exclude>\n    key message\n    pattern x\n  </exclude>\n</filter>\n"), 11, "this filter comes after <match mysql.**>"),
        (format!("{tail}<filter **>\n  @type grep\n  <regexp>\n    key $.a.b\n    pattern x\n  </regexp>\n</filter>\n{out}"), 11, "a record accessor"),
        (format!("<source>\n  @type forward\n  @label @IN\n</source>\n<label @IN>\n  <match **>\n    @type null\n  </match>\n</label>\n{tail}{out}"), 16, "also matches the tags of a source routed to @IN"),
        (format!("<source>\n  @type tail\n  path /var/log/app-%Y%m%d.log\n  tag a\n</source>\n{out}"), 3, "strftime patterns in paths"),
        (format!("{tail}<filter **>\n  @type record_transformer\n  auto_typecast false\n</filter>\n{out}"), 9, "`auto_typecast false` is not supported"),
    ];
    assert!(cases.len() >= 20);
    for (i, (conf, line, what)) in cases.iter().enumerate() {
        let path = dir.join(format!("case{i}.conf"));
        fs::write(&path, conf).unwrap();
        let out = convert(dir, &path, &[]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(1), "case {i}: {t}");
        let at = format!("{}:{line}: ", path.display());
        assert!(
            t.lines().any(|l| l.contains(&at) && l.contains(what)),
            "case {i}: expected `{at}...{what}` in\n{t}"
        );
        if what.contains("never closed") || what.contains("URL") {
            continue;
        }
        // --partial: the rest converted, the part kept as a comment.
        let yml = dir.join(format!("case{i}.yml"));
        let out = convert(dir, &path, &["--partial", "-o", yml.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(3), "case {i}: {}", text(&out));
        let y = fs::read_to_string(&yml).unwrap();
        assert!(
            y.lines()
                .any(|l| l.starts_with("# NOT CONVERTED") && l.contains(&at) && l.contains(what)),
            "case {i}:\n{y}"
        );
    }
    // Ruby's regexp flags become Rust's; a later parameter wins.
    let path = dir.join("flags.conf");
    fs::write(
        &path,
        "<source>\n  @type tail\n  path /x\n  tag t\n  tag mysql.error\n</source>\n<filter **>\n  @type grep\n  <regexp>\n    key message\n    pattern /^error/im\n  </regexp>\n</filter>\n<match **>\n  @type null\n</match>\n",
    )
    .unwrap();
    let out = convert(dir, &path, &[]);
    let y = text(&out);
    assert!(out.status.success(), "{y}");
    assert!(
        y.contains("pattern: \"(?is)^error\"") && y.contains("tag: mysql.error"),
        "{y}"
    );
    // Hostile files: a FIFO, a device, a include loop.
    let fifo = dir.join("fifo.conf");
    assert!(Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    for bad in [fifo.as_path(), Path::new("/dev/zero")] {
        let out = convert(dir, bad, &[]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out).contains("not a regular file"), "{}", text(&out));
    }
}
