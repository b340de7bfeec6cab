//! A real HTTP/1.1 sink on 127.0.0.1 (keep-alive) whose behaviour a test
//! can switch: accept, 503, close, 400 on a marker, 413 above a size, slow
//! answers; or, for benchmarks, a counting-only mode.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
#[cfg(feature = "tls")]
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use crate::lines::seq_of;

/// A connection, plain or TLS.
pub trait Stream: Read + Write + Send {}
impl<T: Read + Write + Send> Stream for T {}

/// Wraps an accepted connection (the TLS handshake); None drops it.
type Accept = Arc<dyn Fn(TcpStream) -> Option<Box<dyn Stream>> + Send + Sync>;

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
    /// Every accepted request's body, byte for byte, in arrival order.
    pub bodies: Mutex<Vec<Vec<u8>>>,
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
    /// Counting mode (`Sink::start_counting`): records and bytes only.
    count_only: AtomicBool,
    counted: AtomicU64,
    counted_bytes: AtomicU64,
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
    #[cfg(feature = "tls")]
    pub fn start_tls(cert: &Path, key: &Path) -> Sink {
        let mut acceptor =
            openssl::ssl::SslAcceptor::mozilla_intermediate_v5(openssl::ssl::SslMethod::tls())
                .unwrap();
        acceptor.set_certificate_chain_file(cert).unwrap();
        acceptor
            .set_private_key_file(key, openssl::ssl::SslFiletype::PEM)
            .unwrap();
        let acceptor = acceptor.build();
        Sink::listen(Some(Arc::new(move |stream| {
            // A client that rejects the certificate ends here.
            let tls = acceptor.accept(stream).ok()?;
            Some(Box::new(tls) as Box<dyn Stream>)
        })))
    }

    /// A sink for benchmarks: records are only counted (`counted`), never
    /// parsed or kept, so the sink costs next to nothing beside the agent.
    pub fn start_counting() -> Sink {
        let sink = Sink::listen(None);
        sink.state.count_only.store(true, Ordering::SeqCst);
        sink
    }

    /// Records received in counting mode.
    pub fn counted(&self) -> u64 {
        self.state.counted.load(Ordering::SeqCst)
    }

    /// Body bytes received in counting mode.
    pub fn counted_bytes(&self) -> u64 {
        self.state.counted_bytes.load(Ordering::SeqCst)
    }

    /// Forgets what was counted (between benchmark rounds).
    pub fn reset_counted(&self) {
        self.state.counted.store(0, Ordering::SeqCst);
        self.state.counted_bytes.store(0, Ordering::SeqCst);
    }

    fn listen(tls: Option<Accept>) -> Sink {
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
                            Some(accept) => {
                                if let Some(stream) = accept(stream) {
                                    serve(stream, s)
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

    /// 503 to everything while `down` (a collector outage), else accept.
    pub fn set_down(&self, down: bool) {
        self.set_mode(if down {
            Mode::Unavailable
        } else {
            Mode::Accept
        });
    }

    /// Every accepted record as a JSON line.
    pub fn lines(&self) -> Vec<String> {
        let records = self.state.records.lock().unwrap();
        records.iter().map(|r| r.to_string()).collect()
    }

    /// Accepted records whose JSON text contains `needle`.
    pub fn count(&self, needle: &str) -> usize {
        self.lines().iter().filter(|l| l.contains(needle)).count()
    }

    /// Messages by their `seq` number (see `numbered_line`): how often each
    /// arrived.
    pub fn seq_counts(&self) -> HashMap<u64, usize> {
        seq_counts_of(&self.state.records.lock().unwrap())
    }

    /// Accepted records grouped by the string value of their `field`, each
    /// group in arrival order; records without it are left out.
    pub fn by_field(&self, field: &str) -> HashMap<String, Vec<serde_json::Value>> {
        let mut groups: HashMap<String, Vec<serde_json::Value>> = HashMap::new();
        for r in self.state.records.lock().unwrap().iter() {
            if let Some(key) = r[field].as_str() {
                groups.entry(key.to_string()).or_default().push(r.clone());
            }
        }
        groups
    }

    /// What a collector that deduplicates by `field` (an Elasticsearch
    /// `_id`, a ClickHouse ReplacingMergeTree key) keeps: the first record
    /// of each value, in arrival order, and every record without one.
    pub fn stored_by(&self, field: &str) -> Vec<serde_json::Value> {
        let mut seen = std::collections::HashSet::new();
        let records = self.state.records.lock().unwrap();
        records
            .iter()
            .filter(|r| {
                r[field]
                    .as_str()
                    .is_none_or(|key| seen.insert(key.to_string()))
            })
            .cloned()
            .collect()
    }

    /// `seq_counts` of what a collector deduplicating by `field` keeps.
    pub fn stored_seq_counts(&self, field: &str) -> HashMap<u64, usize> {
        seq_counts_of(&self.stored_by(field))
    }
}

/// How often each `seq` number (see `numbered_line`) is among `records`.
fn seq_counts_of(records: &[serde_json::Value]) -> HashMap<u64, usize> {
    let mut counts = HashMap::new();
    for r in records {
        if let Some(seq) = r["message"].as_str().and_then(seq_of) {
            *counts.entry(seq).or_insert(0) += 1;
        }
    }
    counts
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
        if state.count_only.load(Ordering::Relaxed) {
            let n = body.iter().filter(|&&c| c == b'\n').count() as u64;
            state.counted_bytes.fetch_add(len as u64, Ordering::Relaxed);
            state.counted.fetch_add(n, Ordering::SeqCst);
            let ok = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: keep-alive\r\n\r\n{}";
            if reader.get_mut().write_all(ok).is_err() {
                return;
            }
            continue;
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
                match serde_json::from_str(l).expect("every ndjson line is JSON") {
                    // A `json_array` body: its elements are the records.
                    serde_json::Value::Array(items) => parsed.extend(items),
                    record => parsed.push(record),
                }
            }
            state.records.lock().unwrap().extend(parsed);
            state.bodies.lock().unwrap().push(body.clone());
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
