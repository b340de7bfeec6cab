//! The forward output and input against the real peers in
//! `../shared/tools`: fluent-bit 5.1.1 and Fluentd 1.15.3. Every record
//! arrives exactly once, with its tag, its time (to the nanosecond where
//! the sender has it) and its fields; acks, gzip, the shared-key handshake
//! and failover are exercised for real, and hostile streams against the
//! input end in a counter and a log line while the agent keeps serving.

mod common;

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

/// The shared pipeline (tail -> record_transformer) with `outputs` instead
/// of the http output.
fn tail_to(dir: &Path, outputs: &str) -> String {
    let base = pipeline_config(dir, "http://127.0.0.1:9/unused");
    let at = base.find("outputs:\n").expect("an outputs section");
    format!("{}{outputs}", &base[..at])
}

/// An agent running `tail_to(dir, outputs)` with `/metrics` on a port of
/// its own; returns it with that port.
fn tailing_agent(dir: &Path, outputs: &str) -> (Agent, u16) {
    let metrics = free_port();
    let config = format!(
        "system:\n  metrics:\n    bind: 127.0.0.1:{metrics}\n{}",
        tail_to(dir, outputs)
    );
    (Agent::start(dir, &config), metrics)
}

fn forward_output(port: u16, extra: &str, buffer: &Path) -> String {
    format!(
        "outputs:\n  - match: \"mysql.**\"\n    type: forward\n    host: 127.0.0.1\n    port: {port}\n    retry_wait: 200ms\n    retry_max_interval: 1s\n{extra}    buffer:\n      type: file\n      path: {}\n      flush_interval: 100ms\n",
        buffer.display()
    )
}

/// fluent-bit tailing `input` (lines under `message`, tag `app.lines`) and
/// sending it to `port` with acks, retrying for ever, plus `extra`.
fn fluent_bit_sender(input: &Path, port: u16, extra: &str) -> String {
    format!(
        "[SERVICE]\n    flush 0.2\n    log_level info\n[INPUT]\n    name tail\n    path {}\n    read_from_head true\n    tag app.lines\n    key message\n[OUTPUT]\n    name forward\n    match *\n    host 127.0.0.1\n    port {port}\n    require_ack_response on\n    retry_limit false\n{extra}",
        input.display()
    )
}

fn fluent_bit_receiver(port: u16, out: &Path, extra: &str) -> String {
    format!(
        "[SERVICE]\n    flush 0.2\n    grace 1\n    log_level info\n[INPUT]\n    name forward\n    listen 127.0.0.1\n    port {port}\n{extra}[OUTPUT]\n    name file\n    match *\n    path {}\n",
        out.display()
    )
}

fn wait_for_events(
    what: &str,
    limit: Duration,
    read: impl Fn() -> Vec<Received>,
    n: usize,
) -> Vec<Received> {
    let started = Instant::now();
    loop {
        let got = read();
        if got.len() >= n {
            // Anything sent twice would show up soon after.
            std::thread::sleep(Duration::from_millis(500));
            return read();
        }
        assert!(
            started.elapsed() < limit,
            "{what}: {} of {n} events after {limit:?}",
            got.len()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Each numbered line 0..n exactly once, with the tag, and a time that is
/// the record's own `timestamp` (milliseconds) with nanoseconds kept.
fn assert_each_line_once(events: &[Received], n: u64, tag: &str) {
    let mut seen: BTreeMap<u64, usize> = BTreeMap::new();
    let mut sub_ms = 0;
    for e in events {
        assert_eq!(e.tag, tag, "{e:?}");
        let message = e.record["message"].as_str().expect("a message");
        let seq = seq_of(message).expect("a numbered line");
        *seen.entry(seq).or_default() += 1;
        if let Some(ts) = e.record.get("timestamp").and_then(|t| t.as_str()) {
            let secs = e.time.div_euclid(1_000_000_000);
            let millis = e.time.rem_euclid(1_000_000_000) / 1_000_000;
            assert!(
                ts.ends_with(&format!(".{millis:03}Z")),
                "{ts} vs {}",
                e.time
            );
            assert!(secs > 1_700_000_000, "{e:?}");
            if e.time % 1_000_000 != 0 {
                sub_ms += 1;
            }
        }
    }
    let wrong: Vec<_> = (0..n)
        .filter(|i| seen.get(i) != Some(&1))
        .take(10)
        .collect();
    assert!(
        wrong.is_empty(),
        "lines not seen exactly once: {wrong:?} ({} events)",
        events.len()
    );
    assert!(sub_ms > 0 || n < 10, "times lost their nanoseconds");
}

#[test]
fn the_output_delivers_to_fluent_bit_with_acks_gzip_and_a_shared_key() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = dir.path().join("received");
    std::fs::create_dir_all(&out).unwrap();
    let _fb = Peer::fluent_bit(
        &dir.path().join("fb"),
        &fluent_bit_receiver(
            port,
            &out,
            "    shared_key s3cret\n    self_hostname fb-receiver\n",
        ),
    );
    let config = tail_to(
        dir.path(),
        &forward_output(
            port,
            "    compress: gzip\n    shared_key: s3cret\n",
            &dir.path().join("buffer"),
        ),
    );
    let agent = Agent::start(dir.path(), &config);
    append_lines(&dir.path().join("mysqld.err"), (0..3000).map(numbered_line));
    let events = wait_for_events(
        "fluent-bit",
        Duration::from_secs(60),
        || read_fluent_bit_files(&out),
        3000,
    );
    assert_each_line_once(&events, 3000, "mysql.error");
    assert!(agent.stop().success());
}

#[test]
fn the_output_delivers_to_fluentd_and_a_wrong_key_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let port = free_port();
    let out = dir.path().join("received");
    let fluentd_conf = format!(
        "<source>\n  @type forward\n  bind 127.0.0.1\n  port {port}\n  <security>\n    self_hostname aggregator\n    shared_key s3cret\n  </security>\n</source>\n<match mysql.**>\n  @type file\n  path {}/events\n  append true\n  <format>\n    @type json\n  </format>\n  <inject>\n    tag_key tag\n    time_key time\n    time_type string\n    time_format %s.%N\n  </inject>\n  <buffer>\n    flush_mode immediate\n  </buffer>\n</match>\n",
        out.display()
    );
    let _fluentd = Peer::fluentd(&dir.path().join("fluentd"), &fluentd_conf);
    let buffer = dir.path().join("buffer");
    let wrong = tail_to(
        dir.path(),
        &forward_output(port, "    shared_key: wrong\n    compress: gzip\n", &buffer),
    );
    let agent = Agent::start(dir.path(), &wrong);
    append_lines(&dir.path().join("mysqld.err"), (0..500).map(numbered_line));
    wait_until("the handshake refused, in the agent's log", || {
        agent.log_text().contains("shared_key mismatch")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        read_fluentd_files(&out).is_empty(),
        "nothing delivered with a wrong key"
    );

    // Fixed and reloaded: everything buffered arrives, once.
    let right = wrong.replace("shared_key: wrong", "shared_key: s3cret");
    std::fs::write(dir.path().join("agent.yml"), right).unwrap();
    agent.signal(libc::SIGHUP);
    append_lines(
        &dir.path().join("mysqld.err"),
        (500..1000).map(numbered_line),
    );
    let events = wait_for_events(
        "Fluentd",
        Duration::from_secs(60),
        || read_fluentd_files(&out),
        1000,
    );
    assert_each_line_once(&events, 1000, "mysql.error");
    assert!(agent.stop().success());
}

/// An agent whose forward input takes what a sender sends and ships it to
/// the loopback sink; returns it with its metrics port.
fn receiving_agent(dir: &Path, port: u16, sink: &Sink, extra: &str) -> (Agent, u16) {
    let metrics = free_port();
    let config = format!(
        "system:\n  metrics:\n    bind: 127.0.0.1:{metrics}\nsources:\n  - type: forward\n    bind: 127.0.0.1:{port}\n{extra}{}",
        http_outputs(dir, &sink.url).replace("match: \"mysql.**\"", "match: \"**\"")
    );
    let agent = Agent::start(dir, &config);
    wait_until("the forward input listening", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    (agent, metrics)
}

#[test]
fn fluent_bit_sends_100k_records_to_the_input_with_acks_and_gzip() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let port = free_port();
    let (agent, _) = receiving_agent(dir.path(), port, &sink, "");
    let input = dir.path().join("app.log");
    append_lines(&input, (0..100_000).map(numbered_line));
    let fb_conf = fluent_bit_sender(&input, port, "    compress gzip\n");
    let _fb = Peer::fluent_bit(&dir.path().join("fb"), &fb_conf);
    sink.wait_for(Duration::from_secs(120), "100,000 records", |r| {
        r.len() >= 100_000
    });
    std::thread::sleep(Duration::from_millis(500));
    let counts = sink.seq_counts();
    assert_eq!(counts.len(), 100_000);
    assert!(counts.values().all(|&n| n == 1), "each once");
    assert!(agent.stop().success());
}

/// Fluentd sends over TLS with a client certificate the input verifies
/// (`tls_client_ca_file`), and the shared-key handshake; a client without
/// a certificate is refused, counted and logged.
#[test]
fn fluentd_sends_100k_records_to_the_input_with_a_shared_key_over_tls() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let port = free_port();
    // A DNS name: Ruby 3.1's openssl fails on IP subjectAltNames when
    // checking the host ("address family must be specified").
    let (cert, key) = self_signed_certificate(dir.path(), "aggregator", "DNS:localhost");
    // The client's certificate is its own CA: the input trusts just it.
    let (client_cert, client_key) =
        self_signed_certificate(dir.path(), "client", "DNS:fluentd-client");
    let (agent, metrics) = receiving_agent(
        dir.path(),
        port,
        &sink,
        &format!(
            "    shared_key: s3cret\n    self_hostname: my-agent-test\n    tls_cert_file: {}\n    tls_key_file: {}\n    tls_client_ca_file: {}\n",
            cert.display(),
            key.display(),
            client_cert.display()
        ),
    );
    // Without a client certificate: no handshake, no data read.
    let mut refused =
        openssl::ssl::SslConnector::builder(openssl::ssl::SslMethod::tls_client()).unwrap();
    refused.set_verify(openssl::ssl::SslVerifyMode::NONE);
    let tcp = TcpStream::connect(("127.0.0.1", port)).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let outcome = refused
        .build()
        .connect("localhost", tcp)
        .map_err(|e| e.to_string())
        .and_then(|mut tls| {
            // TLS 1.3: the server's refusal arrives after the client's
            // side of the handshake is done, on the first read.
            let mut byte = [0u8; 1];
            match tls.read(&mut byte) {
                Ok(0) => Err("closed".to_string()),
                Ok(_) => Ok(()),
                Err(e) => Err(e.to_string()),
            }
        });
    assert!(
        outcome.is_err(),
        "a client without a certificate was served"
    );
    wait_until("tls_failed counted", || {
        metric(metrics, "my_agent_source_errors_total", "tls_failed") >= 1
    });
    assert!(
        agent.log_text().contains("TLS handshake"),
        "{}",
        agent.log_text()
    );
    let input = dir.path().join("app.log");
    append_lines(&input, (0..100_000).map(numbered_line));
    let conf = format!(
        "<source>\n  @type tail\n  path {}\n  pos_file {}/app.pos\n  read_from_head true\n  tag app.lines\n  <parse>\n    @type none\n  </parse>\n</source>\n<match **>\n  @type forward\n  transport tls\n  tls_cert_path {}\n  tls_client_cert_path {}\n  tls_client_private_key_path {}\n  tls_verify_hostname true\n  require_ack_response true\n  ack_response_timeout 30\n  <security>\n    self_hostname fluentd-test\n    shared_key s3cret\n  </security>\n  <server>\n    host localhost\n    port {port}\n  </server>\n  <buffer>\n    flush_interval 0.2s\n  </buffer>\n</match>\n",
        input.display(),
        dir.path().display(),
        cert.display(),
        client_cert.display(),
        client_key.display()
    );
    let _fluentd = Peer::fluentd(&dir.path().join("fluentd"), &conf);
    sink.wait_for(Duration::from_secs(180), "100,000 records", |r| {
        r.len() >= 100_000
    });
    std::thread::sleep(Duration::from_millis(500));
    let counts = sink.seq_counts();
    assert_eq!(counts.len(), 100_000);
    assert!(counts.values().all(|&n| n == 1), "each once");
    assert!(agent.stop().success());
}

/// A receiver that accepts and reads but never acks: after `ack_timeout`
/// the chunk moves on to the next receiver, which acks it.
#[test]
fn a_receiver_that_never_acks_loses_the_chunk_to_the_next_one() {
    let dir = tempfile::tempdir().unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let took = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let t = took.clone();
    std::thread::spawn(move || {
        for stream in silent.incoming() {
            let Ok(mut s) = stream else { break };
            let t = t.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 65536];
                while let Ok(n) = s.read(&mut buf) {
                    if n == 0 {
                        break;
                    }
                    t.fetch_add(n, std::sync::atomic::Ordering::SeqCst);
                }
            });
        }
    });
    let port = free_port();
    let out = dir.path().join("received");
    std::fs::create_dir_all(&out).unwrap();
    let _fb = Peer::fluent_bit(&dir.path().join("fb"), &fluent_bit_receiver(port, &out, ""));
    let outputs = format!(
        "outputs:\n  - match: \"mysql.**\"\n    type: forward\n    ack_timeout: 1s\n    recover_wait: 60s\n    servers:\n      - host: 127.0.0.1\n        port: {silent_port}\n        weight: 100\n      - host: 127.0.0.1\n        port: {port}\n        weight: 1\n        standby: true\n    buffer:\n      type: file\n      path: {}/buffer\n      flush_interval: 100ms\n",
        dir.path().display()
    );
    let agent = Agent::start(dir.path(), &tail_to(dir.path(), &outputs));
    append_lines(&dir.path().join("mysqld.err"), (0..200).map(numbered_line));
    let events = wait_for_events(
        "the standby",
        Duration::from_secs(30),
        || read_fluent_bit_files(&out),
        200,
    );
    assert_each_line_once(&events, 200, "mysql.error");
    assert!(
        took.load(std::sync::atomic::Ordering::SeqCst) > 0,
        "the silent one got it first"
    );
    assert!(
        agent.log_text().contains("not acked"),
        "{}",
        agent.log_text()
    );
    assert!(agent.stop().success());
}

/// A receiver that stops answering heartbeats while the agent waits for
/// its acks (a host gone without closing its sockets): phi accrual marks
/// it down long before `ack_timeout` and the chunk moves to the standby.
/// When a receiver answers on its port again, heartbeats bring it back
/// (no request spent on it, `recover_wait` far off) and it takes the next
/// records.
#[test]
fn heartbeats_move_chunks_off_a_silent_receiver_and_bring_it_back() {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    silent.set_nonblocking(true).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let (took, gone) = (
        Arc::new(AtomicUsize::new(0)),
        Arc::new(AtomicBool::new(false)),
    );
    let (t, g) = (took.clone(), gone.clone());
    let listener = std::thread::spawn(move || {
        while !g.load(SeqCst) {
            match silent.accept() {
                Ok((mut s, _)) => {
                    s.set_nonblocking(false).unwrap();
                    let t = t.clone();
                    // Reads and never acks; the socket stays open.
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 65536];
                        while let Ok(n) = s.read(&mut buf) {
                            if n == 0 {
                                break;
                            }
                            t.fetch_add(n, SeqCst);
                        }
                    });
                }
                Err(_) => std::thread::sleep(Duration::from_millis(10)),
            }
        }
        // The listener closes: heartbeats are refused from here on.
    });
    let standby_port = free_port();
    let standby_out = dir.path().join("standby");
    std::fs::create_dir_all(&standby_out).unwrap();
    let _standby = Peer::fluent_bit(
        &dir.path().join("fb-standby"),
        &fluent_bit_receiver(standby_port, &standby_out, ""),
    );
    let outputs = format!(
        "outputs:\n  - match: \"mysql.**\"\n    type: forward\n    ack_timeout: 120s\n    recover_wait: 120s\n    heartbeat_interval: 200ms\n    servers:\n      - {{host: 127.0.0.1, port: {silent_port}}}\n      - {{host: 127.0.0.1, port: {standby_port}, standby: true}}\n    buffer:\n      type: file\n      path: {}/buffer\n      flush_interval: 100ms\n",
        dir.path().display()
    );
    let (agent, metrics) = tailing_agent(dir.path(), &outputs);
    let log = dir.path().join("mysqld.err");
    append_lines(&log, (0..200).map(numbered_line));
    wait_until("the silent receiver read the chunk", || {
        took.load(SeqCst) > 0
    });
    // Heartbeats answered so far give the detector its intervals.
    std::thread::sleep(Duration::from_secs(1));
    gone.store(true, SeqCst);
    listener.join().unwrap();
    let moved = Instant::now();
    let events = wait_for_events(
        "the standby",
        Duration::from_secs(30),
        || read_fluent_bit_files(&standby_out),
        200,
    );
    eprintln!(
        "the chunk reached the standby {:?} after the heartbeats stopped (ack_timeout 120s)",
        moved.elapsed()
    );
    assert_each_line_once(&events, 200, "mysql.error");
    assert!(
        agent.log_text().contains("no heartbeat answered"),
        "{}",
        agent.log_text()
    );
    let state = |port: u16, state: &str| {
        try_get_metrics(metrics)
            .unwrap_or_default()
            .contains(&format!(
                "server=\"127.0.0.1:{port}\",state=\"{state}\"}} 1"
            ))
    };
    assert!(!state(silent_port, "up"), "{}", get_metrics(metrics));
    // A receiver on the silent one's port again: back with its heartbeats.
    let back_out = dir.path().join("back");
    std::fs::create_dir_all(&back_out).unwrap();
    let _back = Peer::fluent_bit(
        &dir.path().join("fb-back"),
        &fluent_bit_receiver(silent_port, &back_out, ""),
    );
    wait_until("the receiver up again by its heartbeats", || {
        state(silent_port, "up")
    });
    assert!(
        agent.log_text().contains("answers heartbeats again"),
        "{}",
        agent.log_text()
    );
    append_lines(&log, (200..400).map(numbered_line));
    let events = wait_for_events(
        "the primary, back",
        Duration::from_secs(30),
        || read_fluent_bit_files(&back_out),
        200,
    );
    let seqs: Vec<u64> = events
        .iter()
        .filter_map(|e| seq_of(e.record["message"].as_str()?))
        .collect();
    assert!(seqs.iter().all(|&n| (200..400).contains(&n)), "{seqs:?}");
    assert_eq!(
        read_fluent_bit_files(&standby_out).len(),
        200,
        "the standby idle again"
    );
    assert!(agent.stop().success());
}

fn metric(port: u16, name: &str, reason: &str) -> u64 {
    let page = try_get_metrics(port).unwrap_or_default();
    page.lines()
        .filter(|l| l.starts_with(name) && l.contains(&format!("reason=\"{reason}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

#[test]
fn hostile_streams_end_in_a_counter_and_a_log_line() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let port = free_port();
    let (agent, metrics) = receiving_agent(
        dir.path(),
        port,
        &sink,
        "    max_frame_bytes: 1m\n    max_connections: 200\n    idle_timeout: 2s\n",
    );
    let send = |bytes: &[u8]| {
        let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let _ = s.write_all(bytes);
        let mut rest = Vec::new();
        // The agent closes the connection: read to its end.
        let _ = s.read_to_end(&mut rest);
    };
    let errors = "my_agent_source_errors_total";

    // Random bytes: 0xc1 is never valid msgpack.
    send(&[0xc1, 0x00, 0xff, 0x13, 0x37]);
    wait_until("stream_broken counted", || {
        metric(metrics, errors, "stream_broken") >= 1
    });

    // A frame claiming 4 GiB: an array32 header, then a bin32 of 4 GiB.
    send(&[0x93, 0xa1, b't', 0xc6, 0xff, 0xff, 0xff, 0xff, 0x00]);
    wait_until("frame_too_large counted", || {
        metric(metrics, errors, "frame_too_large") >= 1
    });

    // 10,000-deep nesting.
    send(&vec![0x91; 10_000]);
    wait_until("deep nesting counted", || {
        metric(metrics, errors, "stream_broken") >= 2
    });

    // A gzip bomb: 64 MiB of zeros compressed, in a CompressedPackedForward.
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![0u8; 1 << 20];
    for _ in 0..64 {
        gz.write_all(&zeros).unwrap();
    }
    let bomb = gz.finish().unwrap();
    let mut frame = vec![0x93, 0xa1, b't', 0xc6];
    frame.extend_from_slice(&(bomb.len() as u32).to_be_bytes());
    frame.extend_from_slice(&bomb);
    frame.extend_from_slice(&[0x81, 0xaa]);
    frame.extend_from_slice(b"compressed");
    frame.extend_from_slice(&[0xa4]);
    frame.extend_from_slice(b"gzip");
    let before = agent.peak_rss_kib();
    send(&frame);
    wait_until("the bomb counted", || {
        metric(metrics, errors, "message_unparsable") >= 1
    });

    // 5,000 idle connections against max_connections 200 (this process
    // needs the descriptors: its soft limit raised to the hard one).
    // SAFETY: getrlimit/setrlimit on a valid struct.
    unsafe {
        let mut lim = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim);
        lim.rlim_cur = lim.rlim_max;
        libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
    }
    let idle: Vec<TcpStream> = (0..5_000)
        .filter_map(|_| TcpStream::connect(("127.0.0.1", port)).ok())
        .collect();
    eprintln!("{} idle connections opened", idle.len());
    assert!(idle.len() >= 1000, "{} connections", idle.len());
    wait_until("too_many_connections counted", || {
        metric(metrics, errors, "too_many_connections") >= 1
    });
    assert!(
        try_get_metrics(metrics).is_ok(),
        "/metrics answers meanwhile"
    );
    wait_until("idle connections closed", || {
        metric(metrics, errors, "idle_timeout") >= 150
    });
    drop(idle);

    // The UDP heartbeat of Fluentd's in_forward, answered on the port.
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(&[0], ("127.0.0.1", port)).unwrap();
    let mut answer = [0u8; 8];
    let (n, _) = udp.recv_from(&mut answer).expect("a heartbeat answer");
    assert_eq!(n, 1);

    let text = agent.log_text();
    for needle in [
        "not msgpack",
        "over max_frame_bytes",
        "max_connections",
        "idle for",
    ] {
        assert!(text.contains(needle), "{needle}: {text}");
    }
    let peak = agent.peak_rss_kib();
    eprintln!("peak RSS before the bomb {before} KiB, after everything {peak} KiB");
    assert!(peak < 64 * 1024, "memory bounded: {peak} KiB");
    assert!(try_get_metrics(metrics).is_ok(), "/metrics answers");
    assert!(agent.stop().success());
}

/// fluent-bit sends with acks while the receiving agent is SIGKILLed and
/// started again: what the agent acked was fsynced, what it did not ack
/// fluent-bit sends again, so nothing is lost.
#[test]
fn a_receiving_agent_killed_mid_stream_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let port = free_port();
    let (agent, _) = receiving_agent(dir.path(), port, &sink, "");
    let input = dir.path().join("app.log");
    append_lines(&input, (0..50_000).map(numbered_line));
    let fb_conf = fluent_bit_sender(&input, port, "    net.io_timeout 5s\n");
    let _fb = Peer::fluent_bit(&dir.path().join("fb"), &fb_conf);
    sink.wait_for(Duration::from_secs(60), "some records", |r| {
        r.len() >= 5_000
    });
    agent.kill9();
    let config = std::fs::read_to_string(dir.path().join("agent.yml")).unwrap();
    let agent = Agent::start(dir.path(), &config);
    sink.wait_for(Duration::from_secs(120), "every record", |r| {
        let mut seen = std::collections::HashSet::new();
        for rec in r {
            if let Some(n) = rec["message"].as_str().and_then(seq_of) {
                seen.insert(n);
            }
        }
        seen.len() >= 50_000
    });
    let counts = sink.seq_counts();
    assert!((0..50_000).all(|n| counts.contains_key(&n)), "none lost");
    let twice = counts.values().filter(|&&n| n > 1).count();
    eprintln!("sent twice (in flight at the kill): {twice}");
    assert!(agent.stop().success());
}

/// The output over TLS to fluent-bit's TLS in_forward: a receiver whose
/// certificate the agent does not trust is refused with a clear error and
/// nothing is lost; trusted (tls_ca_file), everything arrives once.
#[test]
fn tls_to_fluent_bit_with_a_test_ca_and_an_untrusted_certificate_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed_certificate(dir.path(), "aggregator", "IP:127.0.0.1");
    let (stranger, _) = self_signed_certificate(dir.path(), "stranger", "IP:127.0.0.1");
    let port = free_port();
    let out = dir.path().join("received");
    std::fs::create_dir_all(&out).unwrap();
    let tls = format!(
        "    tls on\n    tls.verify off\n    tls.crt_file {}\n    tls.key_file {}\n",
        cert.display(),
        key.display()
    );
    let _fb = Peer::fluent_bit(
        &dir.path().join("fb"),
        &fluent_bit_receiver(port, &out, &tls),
    );
    let untrusted = tail_to(
        dir.path(),
        &forward_output(
            port,
            &format!("    tls: true\n    tls_ca_file: {}\n", stranger.display()),
            &dir.path().join("buffer"),
        ),
    );
    let agent = Agent::start(dir.path(), &untrusted);
    append_lines(&dir.path().join("mysqld.err"), (0..300).map(numbered_line));
    wait_until("the untrusted certificate refused", || {
        agent.log_text().contains("TLS handshake")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        read_fluent_bit_files(&out).is_empty(),
        "nothing sent to an untrusted receiver"
    );
    let trusted = untrusted.replace(&stranger.display().to_string(), &cert.display().to_string());
    std::fs::write(dir.path().join("agent.yml"), trusted).unwrap();
    agent.signal(libc::SIGHUP);
    let events = wait_for_events(
        "fluent-bit over TLS",
        Duration::from_secs(60),
        || read_fluent_bit_files(&out),
        300,
    );
    assert_each_line_once(&events, 300, "mysql.error");
    assert!(agent.stop().success());
}

/// Two weighted receivers and a standby; the primary taking most records is
/// SIGKILLed mid-stream and started again: nothing is lost, and what is
/// sent again is bounded by the requests that were in flight.
#[test]
fn failover_to_weighted_receivers_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let ports = [free_port(), free_port(), free_port()];
    let outs: Vec<_> = (0..3)
        .map(|i| dir.path().join(format!("received{i}")))
        .collect();
    for o in &outs {
        std::fs::create_dir_all(o).unwrap();
    }
    // fluent-bit acks once the data is in its input chunk: with filesystem
    // storage a SIGKILLed receiver finds what it acked there again when it
    // restarts (in memory, it would lose it: its issue 9288).
    let start = |i: usize| {
        let conf = fluent_bit_receiver(ports[i], &outs[i], "    storage.type filesystem\n")
            .replace(
                "[SERVICE]\n",
                &format!(
                    "[SERVICE]\n    storage.path {}\n",
                    dir.path().join(format!("fb{i}-storage")).display()
                ),
            );
        Peer::fluent_bit(&dir.path().join(format!("fb{i}")), &conf)
    };
    let mut primary = start(0);
    let _secondary = start(1);
    let _standby = start(2);
    let outputs = format!(
        "outputs:\n  - match: \"mysql.**\"\n    type: forward\n    ack_timeout: 2s\n    recover_wait: 1s\n    max_request_records: 200\n    servers:\n      - {{host: 127.0.0.1, port: {}, weight: 80}}\n      - {{host: 127.0.0.1, port: {}, weight: 20}}\n      - {{host: 127.0.0.1, port: {}, standby: true}}\n    buffer:\n      type: file\n      path: {}/buffer\n      flush_interval: 50ms\n",
        ports[0],
        ports[1],
        ports[2],
        dir.path().display()
    );
    let (agent, metrics) = tailing_agent(dir.path(), &outputs);
    let log = dir.path().join("mysqld.err");
    let all = || -> Vec<Received> { outs.iter().flat_map(|o| read_fluent_bit_files(o)).collect() };
    for batch in 0..30u64 {
        append_lines(&log, (batch * 500..(batch + 1) * 500).map(numbered_line));
        std::thread::sleep(Duration::from_millis(100));
        if batch == 8 {
            primary.kill9();
        }
        if batch == 14 {
            primary = start(0);
        }
    }
    let events = wait_for_events("the receivers", Duration::from_secs(90), all, 15_000);
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    for e in &events {
        let seq = seq_of(e.record["message"].as_str().unwrap()).unwrap();
        *counts.entry(seq).or_default() += 1;
    }
    let lost: Vec<u64> = (0..15_000)
        .filter(|n| !counts.contains_key(n))
        .take(10)
        .collect();
    assert!(lost.is_empty(), "lost: {lost:?}");
    let resent: usize = counts.values().map(|&n| n - 1).sum();
    let per_receiver: Vec<usize> = outs
        .iter()
        .map(|o| read_fluent_bit_files(o).len())
        .collect();
    eprintln!("records per receiver {per_receiver:?}, sent twice {resent}");
    // What a killed receiver may hold without having acked: the requests
    // in flight to it (one per flusher, max_request_records each).
    assert!(resent <= 2 * 200, "{resent} records sent twice");
    // The primary took records before the kill and again once back; the
    // standby none, the secondary being up throughout.
    let primary_seqs: Vec<u64> = read_fluent_bit_files(&outs[0])
        .iter()
        .filter_map(|e| seq_of(e.record["message"].as_str()?))
        .collect();
    assert!(primary_seqs.iter().any(|&n| n < 4000), "before the kill");
    assert!(
        primary_seqs.iter().any(|&n| n >= 8000),
        "back after its restart"
    );
    assert!(per_receiver[1] > 0, "{per_receiver:?}");
    assert_eq!(per_receiver[2], 0, "the standby stays idle");
    // Each receiver in /metrics: all up again, the primary reconnected.
    let page = get_metrics(metrics);
    for port in ports {
        let up = format!("server=\"127.0.0.1:{port}\",state=\"up\"}} 1");
        let standby = format!("server=\"127.0.0.1:{port}\",state=\"standby\"}} 1");
        assert!(
            page.contains(&up) || page.contains(&standby),
            "{port}: {page}"
        );
    }
    let reconnects = format!(
        "my_agent_forward_server_reconnects_total{{output=\"output0\",server=\"127.0.0.1:{}\"}} ",
        ports[0]
    );
    let n: u64 = page
        .lines()
        .find_map(|l| l.strip_prefix(&reconnects)?.parse().ok())
        .unwrap_or_else(|| panic!("{page}"));
    assert!(n >= 2, "the primary was connected to again: {n}");
    drop(primary);
    assert!(agent.stop().success());
}

/// The receiving agent's buffer is full (its collector is down): the
/// input stops reading, so fluent-bit is pushed back by TCP and waits
/// instead of being acked and dropped; once the collector is back, every
/// record arrives.
#[test]
fn a_full_buffer_pushes_the_sender_back_and_loses_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    sink.set_mode(Mode::Unavailable);
    let port = free_port();
    let metrics = free_port();
    let config = format!(
        "system:\n  metrics:\n    bind: 127.0.0.1:{metrics}\nsources:\n  - type: forward\n    bind: 127.0.0.1:{port}\n{}",
        http_outputs(dir.path(), &sink.url)
            .replace("match: \"mysql.**\"", "match: \"**\"")
            .replace(
                "      flush_interval: 100ms\n",
                "      flush_interval: 100ms\n      chunk_limit_size: 32k\n      total_limit_size: 128k\n",
            )
    );
    assert!(config.contains("total_limit_size: 128k"), "{config}");
    let agent = Agent::start(dir.path(), &config);
    wait_until("the forward input listening", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let input = dir.path().join("app.log");
    append_lines(&input, (0..20_000).map(numbered_line));
    let fb_conf = fluent_bit_sender(&input, port, "");
    let _fb = Peer::fluent_bit(&dir.path().join("fb"), &fb_conf);
    // Full: the buffer holds its limit plus at most the batch that found
    // it empty (a batch is let in whole), far less than was sent, and
    // stops growing: the rest waits in fluent-bit.
    let buffered = || -> u64 {
        get_metrics(metrics)
            .lines()
            .filter(|l| l.starts_with("my_agent_buffer_bytes{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .sum()
    };
    std::thread::sleep(Duration::from_secs(3));
    let first = buffered();
    std::thread::sleep(Duration::from_secs(2));
    let second = buffered();
    eprintln!("buffered while full: {first} then {second} bytes (20,000 records are ~4 MB)");
    assert!(first > 0 && second == first, "{first} then {second}");
    assert!(second < 2 << 20, "{second} bytes buffered");
    assert!(sink.record_count() == 0);
    sink.set_mode(Mode::Accept);
    sink.wait_for(Duration::from_secs(120), "every record", |r| {
        let mut seen = std::collections::HashSet::new();
        for rec in r {
            if let Some(n) = rec["message"].as_str().and_then(seq_of) {
                seen.insert(n);
            }
        }
        seen.len() >= 20_000
    });
    let counts = sink.seq_counts();
    assert!((0..20_000).all(|n| counts.contains_key(&n)), "none lost");
    assert!(agent.stop().success());
}

/// `[tag, bin([time, {"message": text}]...), {"chunk": id}]`, by hand
/// (tag and id under 32 bytes, texts under 64 KiB).
fn packed_forward_of<'a>(tag: &str, texts: impl Iterator<Item = &'a str>, chunk: &str) -> Vec<u8> {
    let mut entries = Vec::new();
    for text in texts {
        entries.extend_from_slice(&[0x92, 0xce]);
        entries.extend_from_slice(&1_800_000_000u32.to_be_bytes());
        entries.extend_from_slice(&[0x81, 0xa7]);
        entries.extend_from_slice(b"message");
        match u8::try_from(text.len()) {
            Ok(len) => entries.extend_from_slice(&[0xd9, len]),
            Err(_) => {
                entries.push(0xda);
                entries.extend_from_slice(&(text.len() as u16).to_be_bytes());
            }
        }
        entries.extend_from_slice(text.as_bytes());
    }
    let mut frame = vec![0x93, 0xa0 | tag.len() as u8];
    frame.extend_from_slice(tag.as_bytes());
    match u8::try_from(entries.len()) {
        Ok(len) => frame.extend_from_slice(&[0xc4, len]),
        Err(_) => {
            frame.push(0xc6);
            frame.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        }
    }
    frame.extend_from_slice(&entries);
    frame.extend_from_slice(&[0x81, 0xa5]);
    frame.extend_from_slice(b"chunk");
    frame.push(0xa0 | chunk.len() as u8);
    frame.extend_from_slice(chunk.as_bytes());
    frame
}

/// One record tagged `app.dups`.
fn packed_forward(text: &str, chunk: &str) -> Vec<u8> {
    packed_forward_of("app.dups", std::iter::once(text), chunk)
}

/// A sender whose ack was lost sends the same chunk, with the same id,
/// again: the input acks it and does not store it twice (the forward
/// output's ids are digests of the chunk's bytes, stable across retries,
/// failover and restarts, so a re-send always carries the first id).
#[test]
fn a_chunk_sent_again_is_acked_and_stored_once() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let port = free_port();
    let (agent, metrics) = receiving_agent(dir.path(), port, &sink, "");
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let ack = |s: &mut TcpStream| {
        // {"ack": "<id>"}: 0x81, fixstr "ack", fixstr id.
        let mut buf = [0u8; 16];
        s.read_exact(&mut buf[..1 + 4 + 1 + 5]).unwrap();
        buf
    };
    let line = numbered_line(1);
    for id in ["chunk", "chunk", "other"] {
        s.write_all(&packed_forward(&line, id)).unwrap();
        let a = ack(&mut s);
        assert_eq!(&a[6..11], id.as_bytes(), "acked with its own id");
    }
    sink.wait_for(Duration::from_secs(30), "two records", |r| r.len() >= 2);
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(
        sink.record_count(),
        2,
        "the re-sent chunk is not stored again"
    );
    assert_eq!(
        metric(metrics, "my_agent_source_errors_total", "duplicate_chunk"),
        1
    );
    assert!(agent.stop().success());
}

/// A TCP relay on a port of its own to the receiver at `to`: what the
/// sender sends passes; what comes back (the acks) passes too until
/// `drop_acks` is set, then is read and thrown away, as a network that
/// loses the return path would. A refused connection to `to` closes the
/// client's.
struct AckDropper {
    port: u16,
    drop_acks: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn ack_dropper(to: u16) -> AckDropper {
    use std::net::Shutdown;
    use std::sync::atomic::{AtomicBool, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let drop_acks = std::sync::Arc::new(AtomicBool::new(false));
    let dropping = drop_acks.clone();
    std::thread::spawn(move || {
        for client in listener.incoming() {
            let Ok(client) = client else { continue };
            let Ok(upstream) = TcpStream::connect(("127.0.0.1", to)) else {
                continue;
            };
            let (client2, upstream2) = (client.try_clone().unwrap(), upstream.try_clone().unwrap());
            std::thread::spawn(move || {
                let _ = std::io::copy(&mut &client, &mut &upstream);
                let _ = upstream.shutdown(Shutdown::Both);
                let _ = client.shutdown(Shutdown::Both);
            });
            let dropping = dropping.clone();
            std::thread::spawn(move || {
                let mut buf = [0u8; 64 << 10];
                while let Ok(n @ 1..) = (&upstream2).read(&mut buf) {
                    if !dropping.load(Ordering::SeqCst) && (&client2).write_all(&buf[..n]).is_err()
                    {
                        break;
                    }
                }
                let _ = client2.shutdown(Shutdown::Both);
                let _ = upstream2.shutdown(Shutdown::Both);
            });
        }
    });
    AckDropper { port, drop_acks }
}

/// Failover between two of my-agent's inputs, both shipping to one
/// collector: the primary's acks are lost for a while (it stores chunks
/// the sender then re-sends to the standby), and later it is SIGKILLed
/// mid-stream and restarted. Nothing is lost, the records sent twice are
/// bounded by the chunks in flight, and because a re-sent chunk keeps its
/// id, a collector keeping one record per `chunk_id_key` value stores
/// each record once.
#[test]
fn chunks_resent_to_another_receiver_are_stored_once_by_chunk_id() {
    use std::sync::atomic::Ordering;
    let dir = tempfile::tempdir().unwrap();
    let collector = Sink::start();
    let (p_dir, s_dir) = (dir.path().join("primary"), dir.path().join("standby"));
    std::fs::create_dir_all(&p_dir).unwrap();
    std::fs::create_dir_all(&s_dir).unwrap();
    let (p_port, s_port) = (free_port(), free_port());
    let extra = "    chunk_id_key: _chunk\n";
    let mut primary = Some(receiving_agent(&p_dir, p_port, &collector, extra).0);
    let (standby, _) = receiving_agent(&s_dir, s_port, &collector, extra);
    let relay = ack_dropper(p_port);
    let outputs = format!(
        "outputs:\n  - match: \"mysql.**\"\n    type: forward\n    ack_timeout: 1s\n    recover_wait: 1s\n    max_request_records: 200\n    servers:\n      - {{host: 127.0.0.1, port: {}, weight: 100}}\n      - {{host: 127.0.0.1, port: {s_port}, standby: true}}\n    buffer:\n      type: file\n      path: {}/buffer\n      flush_interval: 50ms\n",
        relay.port,
        dir.path().display()
    );
    let (sender, _) = tailing_agent(dir.path(), &outputs);
    let log = dir.path().join("mysqld.err");
    let total = 15_000u64;
    for batch in 0..total / 500 {
        append_lines(&log, (batch * 500..(batch + 1) * 500).map(numbered_line));
        std::thread::sleep(Duration::from_millis(100));
        match batch {
            // Records 3,000-4,999 reach the primary, whose acks are lost.
            5 => relay.drop_acks.store(true, Ordering::SeqCst),
            9 => {
                std::thread::sleep(Duration::from_secs(2));
                relay.drop_acks.store(false, Ordering::SeqCst);
            }
            15 => primary.take().expect("running").kill9(),
            21 => primary = Some(receiving_agent(&p_dir, p_port, &collector, extra).0),
            _ => {}
        }
    }
    wait_until("every record at the collector", || {
        collector.seq_counts().len() as u64 == total
    });
    std::thread::sleep(Duration::from_secs(1));
    let counts = collector.seq_counts();
    assert!((0..total).all(|n| counts.contains_key(&n)), "lost records");
    let resent: usize = counts.values().map(|&n| n - 1).sum();
    let records = collector.state.records.lock().unwrap().clone();
    assert!(
        records.iter().all(|r| r["_chunk"].is_string()),
        "every record has its chunk id"
    );
    eprintln!(
        "records at the collector {}, sent twice {resent}",
        records.len()
    );
    assert!(
        resent > 0,
        "the lost acks made the sender send chunks again"
    );
    // Two faults, each with at most the requests in flight to the primary
    // (one per flusher, max_request_records each) stored there but not
    // acked.
    assert!(resent <= 2 * 2 * 200, "{resent} records sent twice");
    let stored = collector.stored_seq_counts("_chunk");
    let twice: Vec<_> = stored.iter().filter(|(_, &n)| n != 1).take(10).collect();
    assert!(
        twice.is_empty(),
        "stored more than once by chunk id: {twice:?}"
    );
    assert_eq!(stored.len() as u64, total);
    assert!(sender.stop().success());
    drop((primary, standby));
}

/// `records` records of 1000 bytes tagged `t`: about a megabyte per
/// thousand.
fn big_packed_forward(records: usize, id: &str) -> Vec<u8> {
    let text = "x".repeat(1000);
    packed_forward_of("t", std::iter::repeat_n(text.as_str(), records), id)
}

/// 32 senders each send a 2 MiB frame at once, as a fluent-bit draining
/// its backlog does: with `max_buffered_bytes` the input reads only as many
/// as fit and pushes the others back, each frame is acked and stored, and
/// the agent's peak RSS is less than half of what it is with no such bound
/// (every frame read at once).
#[test]
fn frames_arriving_at_once_share_a_memory_budget() {
    const SENDERS: usize = 32;
    const RECORDS: usize = 2000;
    let run = |budget: &str| -> (u64, u64) {
        let dir = tempfile::tempdir().unwrap();
        let sink = Sink::start();
        let port = free_port();
        let (agent, metrics) = receiving_agent(
            dir.path(),
            port,
            &sink,
            &format!("    max_buffered_bytes: {budget}\n"),
        );
        let senders: Vec<_> = (0..SENDERS)
            .map(|i| {
                std::thread::spawn(move || {
                    let id = format!("chunk{i:02}");
                    let frame = big_packed_forward(RECORDS, &id);
                    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
                    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                    s.write_all(&frame).unwrap();
                    // {"ack": id}: 0x81, fixstr "ack", fixstr id.
                    let mut ack = vec![0u8; 1 + 4 + 1 + id.len()];
                    s.read_exact(&mut ack).unwrap();
                    assert_eq!(&ack[6..], id.as_bytes(), "acked with its own id");
                })
            })
            .collect();
        for s in senders {
            s.join().expect("each frame acked");
        }
        let total = SENDERS * RECORDS;
        sink.wait_for(Duration::from_secs(120), "every record", |r| {
            r.len() >= total
        });
        assert_eq!(sink.record_count(), total, "each record once");
        let peak = agent.peak_rss_kib();
        let waits = metric(metrics, "my_agent_source_errors_total", "frame_memory_full");
        if waits > 0 {
            let text = agent.log_text();
            assert!(text.contains("hold max_buffered_bytes"), "{text}");
        }
        // Pushing senders back is no fault: the input stays ok.
        let status = get_status(metrics);
        assert!(
            status["sources"]
                .as_array()
                .is_some_and(|s| s.iter().all(|s| s["ok"] == true)),
            "{status}"
        );
        assert!(agent.stop().success());
        (peak, waits)
    };
    let (unbounded, none) = run("4g");
    let (bounded, waits) = run("4m");
    eprintln!(
        "peak RSS: {unbounded} KiB with no bound, {bounded} KiB with 4m ({waits} waits counted)"
    );
    assert_eq!(none, 0, "4g is never reached");
    assert!(waits >= 1, "senders waited for memory");
    assert!(
        bounded * 2 < unbounded,
        "memory bounded: {bounded} KiB against {unbounded} KiB"
    );
}
