//! The http output over TLS against a real https sink on loopback: the
//! server certificate is verified against the system trust store by
//! default, `tls_ca_file` replaces that store, a name mismatch is refused,
//! and only an explicit `tls_verify: false` turns verification off.

mod common;

use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use common::*;

fn certificate(dir: &Path, name: &str, san: &str) -> (PathBuf, PathBuf) {
    self_signed_certificate(dir, name, san)
}

/// The seed pipeline with extra keys in the http output.
fn config_with(dir: &Path, url: &str, extra: &str) -> String {
    let endpoint = format!("    endpoint: {url}\n");
    let config = pipeline_config(dir, url);
    assert!(config.contains(&endpoint));
    config.replace(&endpoint, &format!("{endpoint}{extra}"))
}

fn write_lines(dir: &Path, n: u64) {
    append_lines(&dir.join("mysqld.err"), (0..n).map(numbered_line));
}

#[test]
fn ships_over_https_to_a_certificate_from_tls_ca_file() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "collector", "IP:127.0.0.1");
    let sink = Sink::start_tls(&cert, &key);
    assert!(sink.url.starts_with("https://127.0.0.1:"));
    write_lines(dir.path(), 2_000);
    let extra = format!("    tls_ca_file: {}\n", cert.display());
    let _agent = Agent::start(dir.path(), &config_with(dir.path(), &sink.url, &extra));
    sink.wait_for(Duration::from_secs(30), "2,000 lines over TLS", |r| {
        r.len() >= 2_000
    });
    let counts = sink.seq_counts();
    assert_eq!(counts.len(), 2_000);
    assert!(counts.values().all(|&c| c == 1));
}

/// Waits until the agent has logged a retry naming `needle` and checks
/// that nothing reached the sink.
fn refused(agent: &Agent, sink: &Sink, needle: &str) {
    let mut waited = Duration::ZERO;
    while !agent.log_text().contains(needle) {
        assert!(
            waited < Duration::from_secs(20),
            "no `{needle}` in the agent's log:\n{}",
            agent.log_text()
        );
        thread::sleep(Duration::from_millis(100));
        waited += Duration::from_millis(100);
    }
    assert!(
        sink.state
            .connections
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0
    );
    assert_eq!(
        sink.record_count(),
        0,
        "nothing sent to an unverified server"
    );
}

#[test]
fn an_unknown_certificate_is_refused_and_retried() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "collector", "IP:127.0.0.1");
    let sink = Sink::start_tls(&cert, &key);
    write_lines(dir.path(), 100);
    // No tls_ca_file: the system trust store does not know this CA.
    let agent = Agent::start(dir.path(), &config_with(dir.path(), &sink.url, ""));
    refused(&agent, &sink, "certificate verify failed");
    assert!(
        agent.log_text().contains("retry"),
        "the chunk is kept for a retry, not dropped:\n{}",
        agent.log_text()
    );
    assert!(
        std::fs::read_dir(dir.path().join("buffer"))
            .unwrap()
            .next()
            .is_some(),
        "the records wait in the file buffer"
    );
}

#[test]
fn a_certificate_for_another_name_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "other", "DNS:collector.invalid");
    let sink = Sink::start_tls(&cert, &key);
    write_lines(dir.path(), 100);
    let extra = format!("    tls_ca_file: {}\n", cert.display());
    let agent = Agent::start(dir.path(), &config_with(dir.path(), &sink.url, &extra));
    refused(&agent, &sink, "IP address mismatch");
}

#[test]
fn tls_verify_false_accepts_any_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "other", "DNS:collector.invalid");
    let sink = Sink::start_tls(&cert, &key);
    write_lines(dir.path(), 500);
    let _agent = Agent::start(
        dir.path(),
        &config_with(dir.path(), &sink.url, "    tls_verify: false\n"),
    );
    sink.wait_for(Duration::from_secs(30), "500 lines", |r| r.len() >= 500);
}

/// The system trust store, as OpenSSL finds it, is what verifies by
/// default: SSL_CERT_FILE stands in for a distribution's CA bundle here.
#[test]
fn the_system_trust_store_verifies_by_default() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "collector", "IP:127.0.0.1");
    let sink = Sink::start_tls(&cert, &key);
    write_lines(dir.path(), 300);
    let config = config_with(dir.path(), &sink.url, "");
    let _agent = Agent::start_with_env(dir.path(), &config, &[("SSL_CERT_FILE", &cert)]);
    sink.wait_for(Duration::from_secs(30), "300 lines", |r| r.len() >= 300);
}

/// With `tls_ca_file`, the system store no longer counts (like curl's
/// --cacert): a server only the system store trusts is refused.
#[test]
fn tls_ca_file_replaces_the_system_trust_store() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = certificate(dir.path(), "collector", "IP:127.0.0.1");
    let (other, _) = certificate(dir.path(), "private-ca", "DNS:ca.invalid");
    let sink = Sink::start_tls(&cert, &key);
    write_lines(dir.path(), 100);
    let extra = format!("    tls_ca_file: {}\n", other.display());
    let config = config_with(dir.path(), &sink.url, &extra);
    let agent = Agent::start_with_env(dir.path(), &config, &[("SSL_CERT_FILE", &cert)]);
    refused(&agent, &sink, "certificate verify failed");
}
