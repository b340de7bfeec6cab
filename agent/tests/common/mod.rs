//! Shared helpers for the agent's integration tests: a real HTTP sink on
//! 127.0.0.1 (HTTP/1.1, keep-alive) whose behaviour a test can switch, and
//! the real `my-agent` binary as a child process.

#![allow(dead_code)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq)]
#[repr(u8)]
pub enum Mode {
    Accept = 0,
    /// 503 to everything.
    Unavailable = 1,
    /// Close the connection without answering.
    Close = 2,
}

#[derive(Debug, Clone)]
pub struct RequestInfo {
    pub at: Instant,
    pub bytes: usize,
    pub content_type: String,
    pub status: u16,
    /// When its body had been read, before any `delay_ms`.
    pub received: Instant,
    /// Lines (ndjson records) in its body.
    pub records: usize,
    /// When its answer was written; None if that failed.
    pub answered: Option<Instant>,
}

#[derive(Default)]
pub struct SinkState {
    /// Every record of every accepted request, in arrival order.
    pub records: Mutex<Vec<serde_json::Value>>,
    pub requests: Mutex<Vec<RequestInfo>>,
    mode: AtomicU8,
    /// Requests whose body contains this are answered 400.
    pub reject_marker: Mutex<Option<String>>,
    pub connections: AtomicU64,
    /// Bodies larger than this are answered 413 (0: no limit).
    pub max_body: AtomicU64,
    /// A slow collector: each request is answered this many milliseconds
    /// after its body arrived. Its records are kept even if the client is
    /// gone by then, as a real collector that has read the body would.
    pub delay_ms: AtomicU64,
}

pub struct Sink {
    pub url: String,
    pub state: Arc<SinkState>,
    stop: Arc<AtomicBool>,
}

impl Sink {
    pub fn start() -> Sink {
        Sink::listen(None)
    }

    /// An https sink presenting `cert` (PEM chain) with `key`.
    pub fn start_tls(cert: &Path, key: &Path) -> Sink {
        let mut acceptor =
            openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls())
                .unwrap();
        acceptor.set_certificate_chain_file(cert).unwrap();
        acceptor
            .set_private_key_file(key, openssl::ssl::SslFiletype::PEM)
            .unwrap();
        Sink::listen(Some(Arc::new(acceptor.build())))
    }

    fn listen(tls: Option<Arc<openssl::ssl::SslAcceptor>>) -> Sink {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{}/bulk", listener.local_addr().unwrap());
        let state = Arc::new(SinkState::default());
        let stop = Arc::new(AtomicBool::new(false));
        let (s, st) = (state.clone(), stop.clone());
        listener.set_nonblocking(true).unwrap();
        thread::spawn(move || {
            while !st.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        s.connections.fetch_add(1, Ordering::Relaxed);
                        let (s, tls) = (s.clone(), tls.clone());
                        stream.set_nonblocking(false).unwrap();
                        stream.set_read_timeout(Some(Duration::from_secs(30))).ok();
                        thread::spawn(move || match tls {
                            None => serve(stream, s),
                            Some(acceptor) => {
                                // A client that rejects the certificate ends here.
                                if let Ok(tls_stream) = acceptor.accept(stream) {
                                    serve(tls_stream, s)
                                }
                            }
                        });
                    }
                    Err(_) => thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        Sink { url, state, stop }
    }

    pub fn set_mode(&self, mode: Mode) {
        self.state.mode.store(mode as u8, Ordering::SeqCst);
    }

    pub fn record_count(&self) -> usize {
        self.state.records.lock().unwrap().len()
    }

    /// Waits until `done` holds for the received records, or panics after
    /// `timeout` with `what`.
    pub fn wait_for(
        &self,
        timeout: Duration,
        what: &str,
        done: impl Fn(&[serde_json::Value]) -> bool,
    ) {
        let start = Instant::now();
        loop {
            if done(&self.state.records.lock().unwrap()) {
                return;
            }
            if start.elapsed() > timeout {
                panic!(
                    "timed out after {timeout:?} waiting for {what}; sink holds {} records",
                    self.record_count()
                );
            }
            thread::sleep(Duration::from_millis(50));
        }
    }

    /// Messages by their `seq` number (see `numbered_line`): how often each
    /// arrived.
    pub fn seq_counts(&self) -> HashMap<u64, usize> {
        let mut counts = HashMap::new();
        for r in self.state.records.lock().unwrap().iter() {
            if let Some(seq) = r["message"].as_str().and_then(seq_of) {
                *counts.entry(seq).or_insert(0) += 1;
            }
        }
        counts
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(stream: impl Read + Write, state: Arc<SinkState>) {
    let mut reader = BufReader::new(stream);
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).unwrap_or(0) == 0 {
                return;
            }
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            if let Some((k, v)) = h.split_once(':') {
                headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
            }
        }
        let len: usize = headers
            .get("content-length")
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        let mut body = vec![0u8; len];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let received = Instant::now();
        let delay = state.delay_ms.load(Ordering::SeqCst);
        if delay > 0 {
            thread::sleep(Duration::from_millis(delay));
        }
        let mode = state.mode.load(Ordering::SeqCst);
        if mode == Mode::Close as u8 {
            return;
        }
        let text = String::from_utf8_lossy(&body).into_owned();
        let rejected = state
            .reject_marker
            .lock()
            .unwrap()
            .as_ref()
            .is_some_and(|m| text.contains(m.as_str()));
        let max_body = state.max_body.load(Ordering::SeqCst);
        let status = if mode == Mode::Unavailable as u8 {
            503
        } else if rejected {
            400
        } else if max_body > 0 && body.len() as u64 > max_body {
            413
        } else {
            200
        };
        let index = {
            let mut requests = state.requests.lock().unwrap();
            requests.push(RequestInfo {
                at: Instant::now(),
                bytes: body.len(),
                content_type: headers.get("content-type").cloned().unwrap_or_default(),
                status,
                received,
                records: text.split('\n').filter(|l| !l.is_empty()).count(),
                answered: None,
            });
            requests.len() - 1
        };
        if status == 200 {
            let mut parsed = Vec::new();
            for l in text.split('\n').filter(|l| !l.is_empty()) {
                parsed.push(serde_json::from_str(l).expect("every ndjson line is JSON"));
            }
            state.records.lock().unwrap().extend(parsed);
        }
        let reason = match status {
            200 => "OK",
            400 => "Bad Request",
            413 => "Content Too Large",
            _ => "Service Unavailable",
        };
        let answer = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{{}}"
        );
        let writer = reader.get_mut();
        if writer.write_all(answer.as_bytes()).is_err() || writer.flush().is_err() {
            return;
        }
        state.requests.lock().unwrap()[index].answered = Some(Instant::now());
    }
}

/// `seq=<n> ...` lines let tests count loss and duplication.
pub fn numbered_line(n: u64) -> String {
    format!("2026-11-21T05:00:00.000000Z 0 [Note] seq={n:08} InnoDB: a MySQL error log line of ordinary length")
}

pub fn seq_of(message: &str) -> Option<u64> {
    let i = message.find("seq=")?;
    message[i + 4..i + 12].parse().ok()
}

/// The agent under test: this workspace's build, or `MY_AGENT_BIN` (an
/// agent installed from a package, e.g. by the xtask's fleet test, so the
/// same tests judge an el7 build).
pub fn agent_binary() -> PathBuf {
    std::env::var_os("MY_AGENT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_BIN_EXE_my-agent")))
}

pub struct Agent {
    pub child: Child,
    pub log: PathBuf,
}

impl Agent {
    pub fn start(dir: &Path, config: &str) -> Agent {
        Agent::start_with_env(dir, config, &[])
    }

    /// `start` with extra environment variables.
    pub fn start_with_env(dir: &Path, config: &str, env: &[(&str, &Path)]) -> Agent {
        Agent::spawn(dir, config, |cmd| {
            cmd.envs(env.iter().copied());
        })
    }

    /// `start` with RLIMIT_NOFILE set to `soft` and `hard` in the agent's
    /// process, as a service's `LimitNOFILE=` (or `prlimit`) would.
    pub fn start_with_nofile_limit(dir: &Path, config: &str, soft: u64, hard: u64) -> Agent {
        Agent::spawn(dir, config, |cmd| {
            use std::os::unix::process::CommandExt;
            let limit = libc::rlimit {
                rlim_cur: soft,
                rlim_max: hard,
            };
            // SAFETY: between fork and exec only setrlimit runs, which is
            // async-signal-safe and allocates nothing.
            unsafe {
                cmd.pre_exec(move || {
                    if libc::setrlimit(libc::RLIMIT_NOFILE, &limit) == 0 {
                        Ok(())
                    } else {
                        Err(std::io::Error::last_os_error())
                    }
                });
            }
        })
    }

    /// Writes `config` to `dir/agent.yml` and runs the agent on it, logging
    /// to `dir/agent.log`; `adjust` adds to the command.
    fn spawn(dir: &Path, config: &str, adjust: impl FnOnce(&mut Command)) -> Agent {
        let cfg = dir.join("agent.yml");
        std::fs::write(&cfg, config).unwrap();
        let log = dir.join("agent.log");
        let mut cmd = Command::new(agent_binary());
        cmd.arg("--config")
            .arg(&cfg)
            .arg("--log")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        adjust(&mut cmd);
        let child = cmd.spawn().expect("my-agent starts");
        Agent { child, log }
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe {
            libc::kill(self.child.id() as i32, sig);
        }
    }

    pub fn kill9(mut self) {
        self.signal(libc::SIGKILL);
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        self.child.wait().unwrap()
    }

    pub fn peak_rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmHWM")
    }

    pub fn rss_kib(&self) -> u64 {
        status_field(self.child.id(), "VmRSS")
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn status_field(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The `outputs:` section the tests share: everything tagged `mysql.**` to
/// the sink over HTTP, through a file buffer in `dir` flushed every 100 ms.
pub fn http_outputs(dir: &Path, url: &str) -> String {
    format!(
        r#"outputs:
  - match: "mysql.**"
    type: http
    endpoint: {url}
    retry_wait: 100ms
    retry_max_interval: 1s
    buffer:
      type: file
      path: {dir}/buffer
      flush_interval: 100ms
"#,
        dir = dir.display()
    )
}

/// The seed's pipeline: tail `glob` -> record_transformer (hostname,
/// timestamp) -> http with a file buffer.
pub fn pipeline_config_for(dir: &Path, glob: &str, url: &str) -> String {
    format!(
        r#"sources:
  - type: tail
    path: {glob}
    pos_file: {dir}/tail.pos
    tag: mysql.error
    read_from_head: true
    refresh_interval: 1s
    rotate_wait: 1s
    poll_interval: 50ms
filters:
  - match: "mysql.**"
    type: record_transformer
    record:
      hostname: "${{hostname}}"
      timestamp: "${{time}}"
{outputs}"#,
        dir = dir.display(),
        outputs = http_outputs(dir, url)
    )
}

/// A `mysql_slow_query` source on `path` (a file or glob) -> the http
/// outputs, with short poll and entry timeouts for tests.
pub fn slow_query_config(dir: &Path, path: &str, url: &str) -> String {
    format!(
        r#"sources:
  - type: mysql_slow_query
    path: {path}
    pos_file: {dir}/slow.pos
    tag: mysql.slow
    read_from_head: true
    poll_interval: 50ms
    entry_timeout: 300ms
{outputs}"#,
        dir = dir.display(),
        outputs = http_outputs(dir, url)
    )
}

/// `pipeline_config_for` on `dir/*.err`.
pub fn pipeline_config(dir: &Path, url: &str) -> String {
    pipeline_config_for(dir, &format!("{}/*.err", dir.display()), url)
}

pub fn append_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    f.write_all(&buf).unwrap();
}

/// A private MariaDB server for one test: its own data directory, socket
/// and loopback port in a temporary directory, the slow log on with
/// long_query_time=0. Stopped (and waited for) on drop, whatever happens.
pub struct MariaDb {
    pub dir: tempfile::TempDir,
    pub socket: PathBuf,
    pub port: u16,
    pub slow_log: PathBuf,
    child: Option<Child>,
}

impl MariaDb {
    pub fn start() -> MariaDb {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        // Two bootstraps at once collide on temporary tables in /tmp.
        static INSTALL: Mutex<()> = Mutex::new(());
        let _one_at_a_time = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
        let out = Command::new("mariadb-install-db")
            .args([
                "--no-defaults",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--user=root",
            ])
            .arg(format!("--datadir={}", data.display()))
            .output()
            .expect("mariadb-install-db (Debian's mariadb-server) runs");
        assert!(
            out.status.success(),
            "mariadb-install-db: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut db = MariaDb {
            socket: dir.path().join("mysql.sock"),
            slow_log: dir.path().join("slow.log"),
            port,
            dir,
            child: None,
        };
        db.boot();
        db
    }

    /// Starts mariadbd on the existing data directory and waits until it
    /// answers.
    pub fn boot(&mut self) {
        let d = self.dir.path();
        let child = Command::new("/usr/sbin/mariadbd")
            .arg("--no-defaults")
            .arg(format!("--datadir={}", d.join("data").display()))
            .arg(format!("--socket={}", self.socket.display()))
            .arg(format!("--port={}", self.port))
            .args([
                "--bind-address=127.0.0.1",
                "--user=root",
                "--skip-name-resolve",
            ])
            .arg(format!("--tmpdir={}", d.display()))
            .arg(format!("--pid-file={}", d.join("mariadbd.pid").display()))
            .arg(format!("--log-error={}", d.join("error.log").display()))
            .args([
                "--slow_query_log=1",
                "--long_query_time=0",
                "--log_slow_verbosity=query_plan,explain",
            ])
            .arg(format!("--slow_query_log_file={}", self.slow_log.display()))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mariadbd starts");
        self.child = Some(child);
        let start = Instant::now();
        loop {
            let ok = Command::new("mariadb-admin")
                .args(["--no-defaults", "-uroot"])
                .arg(format!("--socket={}", self.socket.display()))
                .arg("ping")
                .output()
                .is_ok_and(|o| o.status.success());
            if ok {
                return;
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "mariadbd did not come up: {}",
                std::fs::read_to_string(d.join("error.log")).unwrap_or_default()
            );
            thread::sleep(Duration::from_millis(100));
        }
    }

    /// Runs SQL with the command-line client (comments kept, so statements
    /// can be marked); returns its tab-separated output.
    pub fn sql(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "-N", "-B", "--comments"])
            .arg(format!("--socket={}", self.socket.display()))
            .arg("-e")
            .arg(sql)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{sql}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Runs SQL that is expected to fail; returns the client's error text.
    pub fn sql_err(&self, sql: &str) -> String {
        let out = Command::new("mariadb")
            .args(["--no-defaults", "-uroot", "--comments"])
            .arg(format!("--socket={}", self.socket.display()))
            .arg("-e")
            .arg(sql)
            .output()
            .unwrap();
        assert!(!out.status.success(), "{sql} should fail");
        String::from_utf8_lossy(&out.stderr).into_owned()
    }

    /// SIGTERM, then wait for the server to exit.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            // SAFETY: kill(2) on our own child.
            unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
            let start = Instant::now();
            while child.try_wait().ok().flatten().is_none() {
                if start.elapsed() > Duration::from_secs(60) {
                    let _ = child.kill();
                }
                thread::sleep(Duration::from_millis(50));
            }
        }
    }
}

impl Drop for MariaDb {
    fn drop(&mut self) {
        self.stop();
    }
}

/// GET /metrics from a running agent.
pub fn get_metrics(port: u16) -> String {
    try_get_metrics(port).unwrap()
}

/// The raw answer to `GET /metrics`, or the error of a port not (yet) served.
pub fn try_get_metrics(port: u16) -> std::io::Result<String> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out)
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Polls `f` every 50 ms for up to 30 s; panics naming `what`.
pub fn wait_until(what: &str, f: impl Fn() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}
