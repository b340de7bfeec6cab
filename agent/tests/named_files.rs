//! Every file the config names (the config itself, `exporter_file`,
//! secrets, CA files) is opened without blocking and read with a size cap:
//! a FIFO, `/dev/zero` or a huge file there is refused at once with the
//! file's name, what it is and what was expected. Sent by SIGHUP, such a
//! config never freezes the running agent: it keeps delivering, `/metrics`
//! answers and SIGTERM stops it. Loading stays linear in the config's size.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

fn mkfifo(path: &Path) {
    let c = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: a valid NUL-terminated path.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
}

/// `--dry-run` of `config`, killed after 10 s: (exit code, stderr, time).
fn dry_run(config: &Path) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let mut child = Command::new(agent_binary())
        .arg("--config")
        .arg(config)
        .arg("--dry-run")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    loop {
        if child.try_wait().unwrap().is_some() {
            break;
        }
        if started.elapsed() > Duration::from_secs(10) {
            child.kill().unwrap();
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let elapsed = started.elapsed();
    let out = child.wait_with_output().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
        elapsed,
    )
}

/// A pipeline to `url` whose file-valued settings point at `file`:
/// `setting` is one of token_file, tls_ca_file, password_file,
/// exporter_file.
fn config_naming(dir: &Path, url: &str, setting: &str, file: &Path) -> String {
    let base = pipeline_config(dir, url);
    let endpoint = format!("    endpoint: {url}\n");
    let file = file.display();
    match setting {
        "token_file" => base.replace(
            &endpoint,
            &format!("{endpoint}    auth:\n      method: bearer\n      token_file: {file}\n"),
        ),
        "tls_ca_file" => base.replace(&endpoint, &format!("{endpoint}    tls_ca_file: {file}\n")),
        "password_file" => base.replacen(
            "sources:\n",
            &format!("sources:\n  - type: mysql_query\n    tag: mysql.query\n    host: 127.0.0.1\n    username: u\n    password_file: {file}\n    query: SELECT 1\n"),
            1,
        ),
        "exporter_file" => format!("exporter_file: {file}\n{base}"),
        other => panic!("{other}"),
    }
}

const SETTINGS: [&str; 4] = [
    "token_file",
    "tls_ca_file",
    "password_file",
    "exporter_file",
];

#[test]
fn fifos_devices_and_huge_files_are_refused_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    let huge = dir.path().join("huge");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(100 << 20)
        .unwrap();
    let url = "http://127.0.0.1:9/bulk";
    let mut cases: Vec<(String, PathBuf, String)> = Vec::new();
    for setting in SETTINGS {
        for (file, found) in [
            (&fifo, "a FIFO, expected"),
            (&PathBuf::from("/dev/zero"), "a character device, expected"),
            (&huge, "larger than"),
        ] {
            let path = dir.path().join(format!(
                "{setting}-{}.yml",
                file.file_name().unwrap().to_string_lossy()
            ));
            let text = config_naming(dir.path(), url, setting, file);
            assert!(text.contains(&file.display().to_string()), "{text}");
            std::fs::write(&path, text).unwrap();
            cases.push((
                path.display().to_string(),
                path,
                format!("{}: {found}", file.display()),
            ));
        }
    }
    // The config itself.
    let config_fifo = dir.path().join("config-fifo.yml");
    mkfifo(&config_fifo);
    cases.push((
        "the config as a FIFO".into(),
        config_fifo.clone(),
        format!("{}: a FIFO, expected a config file", config_fifo.display()),
    ));
    cases.push((
        "the config as /dev/zero".into(),
        "/dev/zero".into(),
        "/dev/zero: a character device, expected a config file".into(),
    ));
    let mut slowest = Duration::ZERO;
    for (what, path, expected) in &cases {
        let (code, stderr, took) = dry_run(path);
        slowest = slowest.max(took);
        assert_eq!(code, Some(1), "{what}: {stderr} after {took:?}");
        assert!(stderr.contains(expected), "{what}: {stderr}");
        assert_eq!(stderr.lines().count(), 1, "{what}: one line: {stderr}");
        assert!(took < Duration::from_secs(1), "{what}: {took:?}");
    }
    eprintln!("{} cases, slowest dry run {slowest:?}", cases.len());
}

#[test]
fn a_reload_naming_a_fifo_never_freezes_the_agent() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let port = free_port();
    let metrics = format!("system:\n  metrics:\n    bind: 127.0.0.1:{port}\n");
    let good = format!("{metrics}{}", pipeline_config(dir.path(), &sink.url));
    let agent = Agent::start(dir.path(), &good);
    let config_path = dir.path().join("agent.yml");
    let log = dir.path().join("mysqld.err");
    let mut seq = 0;
    let mut deliver_and_scrape = |what: &str| {
        append_lines(&log, (seq..seq + 10).map(numbered_line));
        seq += 10;
        let want = seq as usize;
        sink.wait_for(Duration::from_secs(30), what, |r| r.len() >= want);
        let page = try_get_metrics(port).expect("/metrics answers");
        assert!(page.contains("my_agent_"), "{what}: {page}");
    };
    deliver_and_scrape("lines before the reloads");

    let fifo = dir.path().join("fifo");
    mkfifo(&fifo);
    for (done, setting) in SETTINGS.into_iter().enumerate() {
        let text = format!(
            "{metrics}{}",
            config_naming(dir.path(), &sink.url, setting, &fifo)
        );
        std::fs::write(&config_path, text).unwrap();
        agent.signal(libc::SIGHUP);
        wait_until(&format!("{setting}: the refusal in the log"), || {
            agent
                .log_text()
                .matches("the old one keeps running")
                .count()
                > done
        });
        deliver_and_scrape(&format!("lines after a FIFO as {setting}"));
    }
    // The config file itself replaced by a FIFO.
    std::fs::remove_file(&config_path).unwrap();
    mkfifo(&config_path);
    agent.signal(libc::SIGHUP);
    wait_until("the config FIFO refused", || {
        agent
            .log_text()
            .contains("agent.yml: a FIFO, expected a config file")
    });
    deliver_and_scrape("lines after a FIFO as the config");
    let text = agent.log_text();
    assert!(!text.contains("SIGHUP: reloading"), "{text}");
    assert!(agent.stop().success(), "SIGTERM stops it");
    let counts = sink.seq_counts();
    assert!((0..seq).all(|n| counts.get(&n) == Some(&1)), "{counts:?}");
}

/// A config with a mapping of many keys: its load time grows linearly (it
/// was quadratic: 49,000 keys cost 2.9 CPU-seconds).
#[test]
fn many_keys_load_in_linear_time() {
    let dir = tempfile::tempdir().unwrap();
    let url = "http://127.0.0.1:9/bulk";
    let with_keys = |n: usize| {
        let mut record = String::new();
        for i in 0..n {
            record.push_str(&format!("      k{i}: v\n"));
        }
        pipeline_config(dir.path(), url).replace(
            "      hostname: \"${hostname}\"\n",
            &format!("      hostname: \"${{hostname}}\"\n{record}"),
        )
    };
    let mut times = Vec::new();
    for n in [4_500, 45_000, 100_000] {
        let path = dir.path().join(format!("keys-{n}.yml"));
        let text = with_keys(n);
        assert!(text.contains(&format!("k{}: v", n - 1)));
        std::fs::write(&path, text).unwrap();
        let (code, stderr, took) = dry_run(&path);
        assert_eq!(code, Some(0), "{n} keys: {stderr}");
        times.push(took);
    }
    // Past the node limit: refused, just as fast.
    let path = dir.path().join("keys-200000.yml");
    std::fs::write(&path, with_keys(200_000)).unwrap();
    let (code, stderr, took) = dry_run(&path);
    assert_eq!(code, Some(1), "{stderr}");
    assert!(stderr.contains("more than 300000 nodes"), "{stderr}");
    eprintln!(
        "dry run: 4,500 keys {:?}, 45,000 keys {:?}, 100,000 keys {:?}, 200,000 keys (refused) {took:?}",
        times[0], times[1], times[2]
    );
    assert!(times[2] < Duration::from_secs(1), "{times:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
}
