//! `my-agent status`: asks a running agent for `/status` and prints a short
//! summary for a person, with an exit code for scripts and service checks:
//! 0 all is well, 1 something is wrong, 2 the agent cannot be reached.
//!
//! A plain HTTP/1.0 GET over a TcpStream: the command runs no runtime and
//! the listener is always local plain HTTP.

use std::io::{Read, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpStream, ToSocketAddrs};
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context as _};
use serde_json::Value;

/// Where the agent serves `/status` unless told otherwise (the port of
/// fluentd's monitor_agent, which operators know).
pub const DEFAULT_URL: &str = "http://127.0.0.1:24231";

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Exit codes.
pub const OK: i32 = 0;
pub const NOT_OK: i32 = 1;
pub const UNREACHABLE: i32 = 2;

/// Runs the command; returns the exit code.
pub fn run(url: Option<&str>, config: Option<&Path>) -> i32 {
    let target = match target(url, config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("error: {e:#}");
            return UNREACHABLE;
        }
    };
    let doc = match fetch(&target) {
        Ok(d) => d,
        Err(e) => {
            eprintln!("cannot reach the agent at {}: {e:#}", target.url());
            return UNREACHABLE;
        }
    };
    let (text, ok) = summary(&doc, &target.url());
    print!("{text}");
    if ok {
        OK
    } else {
        NOT_OK
    }
}

/// A parsed `http://host:port/base` URL.
#[derive(Debug, PartialEq)]
struct Target {
    /// Without brackets for IPv6 (as the resolver takes it).
    host: String,
    port: u16,
    /// The path of the status page.
    path: String,
}

impl Target {
    fn url(&self) -> String {
        format!("http://{}:{}{}", self.host_for_url(), self.port, self.path)
    }

    fn host_for_url(&self) -> String {
        if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        }
    }
}

/// `--url`, else the config's `system.metrics.bind`, else DEFAULT_URL.
fn target(url: Option<&str>, config: Option<&Path>) -> anyhow::Result<Target> {
    if let Some(url) = url {
        return parse_url(url);
    }
    let Some(config) = config else {
        return parse_url(DEFAULT_URL);
    };
    match crate::config::metrics_bind_of(config)? {
        Some(bind) => Ok(Target {
            host: reachable(bind).ip().to_string(),
            port: bind.port(),
            path: "/status".into(),
        }),
        None => bail!(
            "{} has no system.metrics.bind: the agent serves no /status (give --url)",
            config.display()
        ),
    }
}

/// A listener bound to every address (0.0.0.0) is asked on loopback.
fn reachable(bind: SocketAddr) -> SocketAddr {
    let ip = match bind.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bind.port())
}

/// `http://host[:port][/base]`; the status page is `<base>/status` (a URL
/// already ending in `/status` is taken as it is).
fn parse_url(url: &str) -> anyhow::Result<Target> {
    let Some(rest) = url.strip_prefix("http://") else {
        bail!("--url `{url}`: expected http://host:port (the agent serves plain HTTP)");
    };
    let (authority, base) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .with_context(|| format!("--url `{url}`: unclosed `[` in the address"))?;
        (host, after.strip_prefix(':'))
    } else {
        match authority.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        bail!("--url `{url}`: no host");
    }
    let port = match port {
        Some(p) => p
            .parse()
            .with_context(|| format!("--url `{url}`: bad port `{p}`"))?,
        None => 80,
    };
    let base = base.trim_end_matches('/');
    let path = if base.ends_with("/status") {
        base.to_string()
    } else {
        format!("{base}/status")
    };
    Ok(Target {
        host: host.to_string(),
        port,
        path,
    })
}

/// GETs the status page and parses it.
fn fetch(target: &Target) -> anyhow::Result<Value> {
    let addrs: Vec<SocketAddr> = (target.host.as_str(), target.port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {}", target.host))?
        .collect();
    let mut last_error = None;
    let mut stream = None;
    for addr in &addrs {
        match TcpStream::connect_timeout(addr, CONNECT_TIMEOUT) {
            Ok(s) => {
                stream = Some(s);
                break;
            }
            Err(e) => last_error = Some(e),
        }
    }
    let mut stream = match (stream, last_error) {
        (Some(s), _) => s,
        (None, Some(e)) => {
            bail!("{e}; is the agent running, with system.metrics.bind at this address?")
        }
        (None, None) => bail!("{} resolves to no address", target.host),
    };
    stream.set_read_timeout(Some(READ_TIMEOUT))?;
    stream.set_write_timeout(Some(READ_TIMEOUT))?;
    // HTTP/1.0: the server closes after answering, so the body ends at EOF
    // (no chunked encoding to undo).
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {}:{}\r\nAccept: application/json\r\n\r\n",
        target.path,
        target.host_for_url(),
        target.port
    );
    stream
        .write_all(request.as_bytes())
        .context("sending the request")?;
    let mut answer = Vec::new();
    stream
        .read_to_end(&mut answer)
        .context("reading the answer")?;
    let text = String::from_utf8_lossy(&answer);
    let (head, body) = text.split_once("\r\n\r\n").context("not an HTTP answer")?;
    let status_line = head.lines().next().unwrap_or_default();
    let code = status_line.split_whitespace().nth(1).unwrap_or_default();
    if code != "200" {
        bail!("answered `{status_line}` (not a my-agent status page?)");
    }
    serde_json::from_str(body).context("the answer is not my-agent's status JSON")
}

/// The summary: a headline, one line per source and per file, problem,
/// output; and whether all is well.
fn summary(doc: &Value, url: &str) -> (String, bool) {
    use std::fmt::Write as _;
    let ok = doc["ok"] == true;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "my-agent {} (pid {}) at {url}: {}",
        text(&doc["version"]),
        text(&doc["pid"]),
        if ok { "ok" } else { "NOT OK" }
    );
    for s in doc["sources"].as_array().into_iter().flatten() {
        let files = s["files"].as_array().map_or(0, Vec::len);
        let problems = s["problems"].as_array().map_or(0, Vec::len);
        let state = if problems > 0 {
            format!("PROBLEM ({problems})")
        } else {
            "ok".to_string()
        };
        let files = match (s["type"].as_str(), files) {
            (Some("mysql_query"), _) => String::new(),
            (_, 1) => ", 1 file".to_string(),
            (_, n) => format!(", {n} files"),
        };
        let _ = writeln!(
            out,
            "source {} ({} {}): {state}{files}",
            text(&s["id"]),
            text(&s["type"]),
            text(&s["tag"])
        );
        for f in s["files"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  file {}: {}, at {} of {} bytes",
                text(&f["path"]),
                text(&f["state"]),
                text(&f["position"]),
                text(&f["size"])
            );
        }
        for p in s["problems"].as_array().into_iter().flatten() {
            let _ = writeln!(
                out,
                "  problem {} ({}): {}",
                text(&p["path"]),
                text(&p["reason"]),
                text(&p["message"])
            );
        }
    }
    for o in doc["outputs"].as_array().into_iter().flatten() {
        let state = match (o["ok"] == true, o["retrying"] == true) {
            (true, _) => "ok".to_string(),
            (false, true) => match o["retries"].as_u64().unwrap_or(0) {
                1 => "FAILING, retrying (1 retry so far)".to_string(),
                n => format!("FAILING, retrying ({n} retries so far)"),
            },
            (false, false) => "FAILED".to_string(),
        };
        let success = match o["last_success_age_seconds"].as_f64() {
            Some(age) => format!("last success {} ago", age_text(age)),
            None => "no delivery yet".to_string(),
        };
        let oldest = match o["oldest_unsent_age_seconds"].as_f64() {
            Some(age) => format!(", oldest record {}", age_text(age)),
            None => String::new(),
        };
        let endpoint = match o["endpoint"].as_str() {
            Some(e) => format!(" {e}"),
            None => String::new(),
        };
        let _ = writeln!(
            out,
            "output {} ({}{endpoint}): {state}; {success}; buffer {}{oldest}",
            text(&o["id"]),
            text(&o["type"]),
            bytes_text(o["buffer_bytes"].as_u64().unwrap_or(0)),
        );
        if let (false, Some(error)) = (o["ok"] == true, o["last_error"].as_str()) {
            let age = o["last_error_age_seconds"].as_f64().unwrap_or(0.0);
            let _ = writeln!(out, "  last error {} ago: {error}", age_text(age));
        }
    }
    (out, ok)
}

/// A JSON value as plain text (strings without their quotes).
fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "?".into(),
        other => other.to_string(),
    }
}

fn age_text(seconds: f64) -> String {
    let s = seconds.max(0.0);
    let whole = s as u64;
    match whole {
        0..=59 => format!("{s:.1}s"),
        60..=3599 => format!("{}m{:02}s", whole / 60, whole % 60),
        3600..=86_399 => format!("{}h{:02}m", whole / 3600, whole % 3600 / 60),
        _ => format!("{}d{:02}h", whole / 86_400, whole % 86_400 / 3600),
    }
}

fn bytes_text(n: u64) -> String {
    const UNITS: [&str; 4] = ["KiB", "MiB", "GiB", "TiB"];
    if n < 1024 {
        return format!("{n} bytes");
    }
    let mut v = n as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    format!("{v:.1} {}", UNITS[unit])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::{
        BufferGauge, FileStatus, OutputStatus, PipelineStatus, SourceProblem, SourceStatus,
        StatusBoard,
    };
    use std::sync::Arc;

    #[test]
    fn status_urls() {
        let t = |u: &str| parse_url(u).map(|t| (t.host, t.port, t.path));
        assert_eq!(
            t("http://127.0.0.1:24231").unwrap(),
            ("127.0.0.1".into(), 24231, "/status".into())
        );
        assert_eq!(
            t("http://[::1]:9/agent/").unwrap(),
            ("::1".into(), 9, "/agent/status".into())
        );
        assert_eq!(
            t("http://host/status").unwrap(),
            ("host".into(), 80, "/status".into())
        );
        assert!(t("https://host:1").is_err());
        assert!(t("http://host:x").is_err());
        assert_eq!(
            parse_url("http://[::1]:9").unwrap().url(),
            "http://[::1]:9/status"
        );
        assert_eq!(
            reachable("0.0.0.0:24231".parse().unwrap()),
            "127.0.0.1:24231".parse().unwrap()
        );
    }

    struct Backlog;
    impl BufferGauge for Backlog {
        fn bytes(&self) -> u64 {
            3 << 20
        }
        fn oldest_unsent(&self) -> Option<Duration> {
            Some(Duration::from_secs(75))
        }
    }

    #[test]
    fn status_summary_names_files_problems_and_failures() {
        let board = StatusBoard::default();
        let tail = Arc::new(SourceStatus::new(
            "tail0".into(),
            "tail",
            "mysql.error".into(),
            vec![],
        ));
        tail.set_files(vec![FileStatus {
            path: "/var/log/mysql/db1.err".into(),
            position: 10,
            size: 12,
            rotated: false,
            open: true,
        }]);
        let slow = Arc::new(SourceStatus::new(
            "mysql_slow_query1".into(),
            "mysql_slow_query",
            "mysql.slow".into(),
            vec![],
        ));
        slow.set_problems(vec![SourceProblem {
            path: "/var/log/mysql/slow.log".into(),
            reason: "not_found",
            message: "cannot find /var/log/mysql/slow.log".into(),
        }]);
        let out = Arc::new(OutputStatus::new(
            "output0".into(),
            "http",
            Some("http://collector/bulk".into()),
            Arc::new(Backlog),
        ));
        board.publish(PipelineStatus {
            sources: vec![tail, slow],
            outputs: vec![out.clone()],
        });
        out.delivered();
        out.retrying("http://collector/bulk: HTTP 503 Service Unavailable");
        let (text, ok) = summary(&board.render(), "http://127.0.0.1:24231/status");
        assert!(!ok);
        // Ages of what just happened depend on the machine's speed.
        let text = regex::Regex::new(r"\d+\.\ds ago")
            .unwrap()
            .replace_all(&text, "Ns ago");
        let lines: Vec<&str> = text.lines().collect();
        assert!(
            lines[0].ends_with("at http://127.0.0.1:24231/status: NOT OK"),
            "{text}"
        );
        assert_eq!(
            lines[1..].join("\n"),
            "source tail0 (tail mysql.error): ok, 1 file
  file /var/log/mysql/db1.err: following, at 10 of 12 bytes
source mysql_slow_query1 (mysql_slow_query mysql.slow): PROBLEM (1), 0 files
  problem /var/log/mysql/slow.log (not_found): cannot find /var/log/mysql/slow.log
output output0 (http http://collector/bulk): FAILING, retrying (1 retry so far); last success Ns ago; buffer 3.0 MiB, oldest record 1m15s
  last error Ns ago: http://collector/bulk: HTTP 503 Service Unavailable"
        );
    }
}
