//! What the agent's integration tests and `cargo xtask bench` share: a
//! real HTTP sink on loopback, the agent as a child process (with its CPU
//! and memory from /proc), the log lines and configurations they feed it,
//! a private MariaDB, the forward protocol's real peers (fluent-bit,
//! Fluentd), and polling helpers.

mod agent;
mod configs;
mod forward_configs;
mod lines;
mod mariadb;
mod peers;
mod sink;

pub use agent::*;
pub use configs::*;
pub use forward_configs::*;
pub use lines::*;
pub use mariadb::*;
pub use peers::*;
pub use sink::*;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

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

/// The agent's `/status` document, parsed.
pub fn get_status(port: u16) -> serde_json::Value {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).expect("/status answers");
    s.write_all(b"GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n")
        .expect("/status answers");
    let mut answer = String::new();
    s.read_to_string(&mut answer).expect("/status answers");
    let body = answer.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    serde_json::from_str(body).unwrap_or_else(|e| panic!("/status: {e}: {answer}"))
}

/// A self-signed certificate (also its own CA) and its PKCS#8 key for
/// `san` (`IP:127.0.0.1`, `DNS:localhost`), made with the prefix's own
/// `openssl` (the tests run with OPENSSL_DIR pointing at the stage).
pub fn self_signed_certificate(
    dir: &std::path::Path,
    name: &str,
    san: &str,
) -> (std::path::PathBuf, std::path::PathBuf) {
    let staged = std::path::PathBuf::from(std::env::var("OPENSSL_DIR").expect("OPENSSL_DIR"));
    let openssl = staged.join("bin/openssl");
    let (cert, key) = (
        dir.join(format!("{name}.crt")),
        dir.join(format!("{name}.key")),
    );
    let out = std::process::Command::new(&openssl)
        // Its compiled-in OPENSSLDIR is the prefix, not installed here.
        .env("OPENSSL_CONF", staged.join("ssl/openssl.cnf"))
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args(["-subj", &format!("/CN=my-agent test {name}")])
        .arg("-addext")
        .arg(format!("subjectAltName={san}"))
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap_or_else(|e| panic!("running {}: {e}", openssl.display()));
    assert!(
        out.status.success(),
        "openssl req: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (cert, key)
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
