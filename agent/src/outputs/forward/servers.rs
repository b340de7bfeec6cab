//! The forward output's receivers and their health: which one a request
//! goes to, and what happens when one fails.
//!
//! Primaries are chosen by weight among those that are up; a receiver that
//! fails (cannot connect, refuses the handshake, does not ack in
//! `ack_timeout`) is marked down and skipped for `recover_wait` (doubling
//! while it keeps failing, up to 16x), after which the next request tries
//! it again: one success brings it back. Standbys are used only while no
//! primary is up. Unlike fluent-bit's plain round-robin, a dead receiver
//! costs one failed attempt per `recover_wait`, not one per flush.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::phi::Detector;

/// TLS settings, for the output and per server.
#[derive(Debug, Clone, Default)]
pub struct TlsConfig {
    pub enabled: bool,
    pub verify: bool,
    pub ca_file: Option<std::path::PathBuf>,
    pub cert_file: Option<std::path::PathBuf>,
    pub key_file: Option<std::path::PathBuf>,
}

/// One receiver as configured (`servers:` or `host`/`port`).
#[derive(Debug, Clone, Default)]
pub struct ServerConfig {
    pub host: String,
    pub port: u16,
    pub weight: u64,
    pub standby: bool,
    pub shared_key: Option<String>,
    pub tls: TlsConfig,
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum State {
    Up,
    /// Failed once; tried again after its wait.
    Suspected,
    /// Failed more than once in a row.
    Down,
    /// A standby not in use (every primary is up).
    Standby,
}

impl State {
    pub fn name(self) -> &'static str {
        match self {
            State::Up => "up",
            State::Suspected => "suspected",
            State::Down => "down",
            State::Standby => "standby",
        }
    }
}

/// Why a receiver last failed: a heartbeat can vouch for its transport,
/// not for its protocol.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Cause {
    /// Refused, reset, closed, timed out connecting, or heartbeats lost.
    Transport,
    /// A refused handshake or certificate, missing acks, a broken answer.
    Protocol,
}

#[derive(Debug)]
struct Health {
    failures: u32,
    cause: Cause,
    retry_at: Option<Instant>,
    last_error: Option<String>,
    last_ack: Option<std::time::SystemTime>,
    detector: Detector,
}

/// One receiver: its settings, health and counters.
#[derive(Debug)]
pub struct Server {
    pub config: ServerConfig,
    health: Mutex<Health>,
    pub in_flight: AtomicU64,
    pub reconnects: AtomicU64,
    pub chunks_acked: AtomicU64,
    /// How often heartbeats found it gone while it was up: a request
    /// waiting on it gives up when this changes.
    pub heartbeat_losses: AtomicU64,
    /// Whether heartbeats are sent (phi is reported only then).
    pub heartbeats: std::sync::atomic::AtomicBool,
}

/// What `/status` and `/metrics` show of a receiver.
pub struct ServerReport {
    pub address: String,
    pub state: State,
    pub in_flight: u64,
    pub reconnects: u64,
    pub chunks_acked: u64,
    /// Seconds since the epoch of its last ack.
    pub last_ack: Option<f64>,
    pub last_error: Option<String>,
    /// The failure detector's phi now, when heartbeats are sent.
    pub phi: Option<f64>,
}

impl Server {
    pub fn new(config: ServerConfig) -> Server {
        Server {
            config,
            health: Mutex::new(Health {
                failures: 0,
                cause: Cause::Transport,
                retry_at: None,
                last_error: None,
                last_ack: None,
                detector: Detector::default(),
            }),
            in_flight: AtomicU64::new(0),
            reconnects: AtomicU64::new(0),
            chunks_acked: AtomicU64::new(0),
            heartbeat_losses: AtomicU64::new(0),
            heartbeats: std::sync::atomic::AtomicBool::new(false),
        }
    }

    pub fn address(&self) -> String {
        format!("{}:{}", self.config.host, self.config.port)
    }

    pub fn state(&self, any_primary_up: bool) -> State {
        let h = self.health.lock().unwrap();
        match h.failures {
            0 if self.config.standby && any_primary_up => State::Standby,
            0 => State::Up,
            1 => State::Suspected,
            _ => State::Down,
        }
    }

    fn is_up(&self) -> bool {
        self.health.lock().unwrap().failures == 0
    }

    /// Up, or down with its wait over.
    fn may_try(&self, now: Instant) -> bool {
        let h = self.health.lock().unwrap();
        h.failures == 0 || h.retry_at.is_none_or(|t| now >= t)
    }

    pub fn succeeded(&self, acked: u64) {
        let mut h = self.health.lock().unwrap();
        h.failures = 0;
        h.retry_at = None;
        h.last_error = None;
        if acked > 0 {
            h.last_ack = Some(std::time::SystemTime::now());
            self.chunks_acked.fetch_add(acked, Ordering::Relaxed);
        }
    }

    /// Marks it failed; true when it was up before (worth a log line).
    pub fn failed(&self, error: &str, cause: Cause, recover_wait: Duration) -> bool {
        let mut h = self.health.lock().unwrap();
        let was_up = h.failures == 0;
        h.failures = h.failures.saturating_add(1);
        h.cause = cause;
        let factor = 1u32 << (h.failures - 1).min(4);
        h.retry_at = Some(Instant::now() + recover_wait * factor);
        h.last_error = Some(error.to_string());
        was_up
    }

    /// One heartbeat's outcome (see `heartbeat`): above `phi_threshold`
    /// an up receiver is marked down for `recover_wait`.
    pub fn heartbeat(&self, alive: bool, phi_threshold: f64, recover_wait: Duration) {
        let now = Instant::now();
        let mut h = self.health.lock().unwrap();
        if alive {
            h.detector.arrived(now);
            if h.failures > 0 && h.cause == Cause::Transport {
                h.failures = 0;
                h.retry_at = None;
                h.last_error = None;
                drop(h);
                crate::log::info(&format!(
                    "forward: receiver {} answers heartbeats again: back in use",
                    self.address()
                ));
            }
            return;
        }
        if h.failures > 0 {
            return;
        }
        let phi = h.detector.phi(now);
        if phi <= phi_threshold {
            return;
        }
        let silent = h
            .detector
            .last()
            .map_or(Duration::ZERO, |t| now.saturating_duration_since(t));
        let error = format!(
            "{}: no heartbeat answered for {:.1}s (phi {phi:.1} > phi_threshold {})",
            self.address(),
            silent.as_secs_f64(),
            phi_threshold
        );
        h.failures = 1;
        h.cause = Cause::Transport;
        h.retry_at = Some(now + recover_wait);
        h.last_error = Some(error.clone());
        drop(h);
        self.heartbeat_losses.fetch_add(1, Ordering::Relaxed);
        crate::log::warn(&format!(
            "forward: receiver {error}; marked down, its unacked chunks move to the next receiver"
        ));
    }

    pub fn report(&self, any_primary_up: bool) -> ServerReport {
        let state = self.state(any_primary_up);
        let h = self.health.lock().unwrap();
        let phi = self
            .heartbeats
            .load(Ordering::Relaxed)
            .then(|| h.detector.phi(Instant::now()));
        ServerReport {
            address: self.address(),
            state,
            in_flight: self.in_flight.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
            chunks_acked: self.chunks_acked.load(Ordering::Relaxed),
            last_ack: h.last_ack.and_then(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .ok()
                    .map(|d| d.as_secs_f64())
            }),
            last_error: h.last_error.clone(),
            phi,
        }
    }
}

/// The receivers of one output.
#[derive(Debug)]
pub struct Servers {
    pub list: Vec<Server>,
}

impl Servers {
    pub fn any_primary_up(&self) -> bool {
        self.list.iter().any(|s| !s.config.standby && s.is_up())
    }

    /// The order to try the receivers in for one request: primaries whose
    /// wait after a failure is over (probed), then primaries that are up,
    /// by weighted random choice; then standbys likewise. Receivers still waiting come last, so
    /// that a request is never refused while some receiver might take it.
    pub fn order(&self) -> Vec<&Server> {
        let now = Instant::now();
        let mut groups: [Vec<&Server>; 5] = Default::default();
        for s in &self.list {
            let group = match (s.config.standby, s.is_up(), s.may_try(now)) {
                // A down primary whose wait is over is probed with the
                // next request (a failure falls through to the others at
                // once): that is how a recovered one comes back.
                (false, false, true) => 0,
                (false, true, _) => 1,
                (true, true, _) => 2,
                (true, false, true) => 3,
                (_, false, false) => 4,
            };
            groups[group].push(s);
        }
        let mut order = Vec::with_capacity(self.list.len());
        for mut group in groups {
            while !group.is_empty() {
                let total: u64 = group.iter().map(|s| s.config.weight.max(1)).sum();
                let mut pick = fastrand::u64(0..total);
                let i = group
                    .iter()
                    .position(|s| {
                        let w = s.config.weight.max(1);
                        if pick < w {
                            true
                        } else {
                            pick -= w;
                            false
                        }
                    })
                    .expect("pick < total");
                order.push(group.remove(i));
            }
        }
        order
    }

    pub fn reports(&self) -> Vec<ServerReport> {
        let up = self.any_primary_up();
        self.list.iter().map(|s| s.report(up)).collect()
    }

    /// Its receivers for `/status`.
    pub fn to_json(&self) -> serde_json::Value {
        let list: Vec<serde_json::Value> = self
            .reports()
            .into_iter()
            .map(|r| {
                serde_json::json!({
                    "server": r.address,
                    "state": r.state.name(),
                    "in_flight_chunks": r.in_flight,
                    "chunks_acked": r.chunks_acked,
                    "reconnects": r.reconnects,
                    "last_ack_unix": r.last_ack,
                    "last_error": r.last_error,
                    "heartbeat_phi": r.phi,
                })
            })
            .collect();
        serde_json::Value::Array(list)
    }
}

/// Every forward output's receivers for `/metrics`, one family at a time
/// (the text format wants a family's lines together); `outputs` holds
/// each output's id, already escaped for a label.
pub fn render_metrics(outputs: &[(String, std::sync::Arc<Servers>)], out: &mut String) {
    use std::fmt::Write as _;
    let reports: Vec<(String, ServerReport)> = outputs
        .iter()
        .flat_map(|(id, servers)| {
            servers
                .reports()
                .into_iter()
                .map(move |r| (format!("output=\"{id}\",server=\"{}\"", r.address), r))
        })
        .collect();
    if reports.is_empty() {
        return;
    }
    type Family = (
        &'static str,
        &'static str,
        &'static str,
        fn(&ServerReport) -> Option<f64>,
    );
    let families: [Family; 5] = [
        (
            "in_flight_chunks",
            "gauge",
            "Chunks sent to the receiver and not yet acked",
            |r| Some(r.in_flight as f64),
        ),
        (
            "chunks_acked_total",
            "counter",
            "Chunks the receiver acked",
            |r| Some(r.chunks_acked as f64),
        ),
        (
            "reconnects_total",
            "counter",
            "Connections opened to the receiver",
            |r| Some(r.reconnects as f64),
        ),
        (
            "last_ack_timestamp_seconds",
            "gauge",
            "When the receiver last acked a chunk",
            |r| r.last_ack,
        ),
        (
            "heartbeat_phi",
            "gauge",
            "The failure detector's phi for the receiver's heartbeats (down above phi_threshold)",
            |r| r.phi,
        ),
    ];
    let _ = writeln!(out, "# HELP my_agent_forward_server_state A forward output's receiver: 1 for its current state (up, suspected, down, standby)");
    let _ = writeln!(out, "# TYPE my_agent_forward_server_state gauge");
    for (labels, r) in &reports {
        for state in [State::Up, State::Suspected, State::Down, State::Standby] {
            let _ = writeln!(
                out,
                "my_agent_forward_server_state{{{labels},state=\"{}\"}} {}",
                state.name(),
                u8::from(r.state == state)
            );
        }
    }
    for (name, kind, help, value) in families {
        let _ = writeln!(out, "# HELP my_agent_forward_server_{name} {help}");
        let _ = writeln!(out, "# TYPE my_agent_forward_server_{name} {kind}");
        for (labels, r) in &reports {
            if let Some(v) = value(r) {
                let _ = writeln!(out, "my_agent_forward_server_{name}{{{labels}}} {v}");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server(port: u16, weight: u64, standby: bool) -> Server {
        Server::new(ServerConfig {
            host: "127.0.0.1".into(),
            port,
            weight,
            standby,
            ..ServerConfig::default()
        })
    }

    #[test]
    fn weights_standby_and_failover() {
        let servers = Servers {
            list: vec![
                server(1, 90, false),
                server(2, 10, false),
                server(3, 1, true),
            ],
        };
        let mut first = [0; 3];
        for _ in 0..2000 {
            first[servers.order()[0].config.port as usize - 1] += 1;
        }
        assert!(
            first[0] > 1600 && first[1] > 100 && first[2] == 0,
            "{first:?}"
        );
        assert_eq!(servers.list[2].state(true), State::Standby);

        servers.list[0].failed("refused", Cause::Transport, Duration::from_secs(60));
        servers.list[1].failed("refused", Cause::Transport, Duration::from_secs(60));
        let order: Vec<u16> = servers.order().iter().map(|s| s.config.port).collect();
        assert_eq!(order[0], 3, "the standby takes over: {order:?}");
        assert_eq!(servers.list[2].state(false), State::Up);
        assert_eq!(servers.list[0].state(false), State::Suspected);
        servers.list[0].failed("refused", Cause::Transport, Duration::from_secs(60));
        assert_eq!(servers.list[0].state(false), State::Down);

        servers.list[0].succeeded(1);
        assert_eq!(servers.order()[0].config.port, 1, "recovered");
        assert_eq!(servers.list[0].chunks_acked.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_failed_receiver_is_tried_again_after_its_wait() {
        let servers = Servers {
            list: vec![server(1, 1, false), server(2, 1, false)],
        };
        servers.list[0].failed("timeout", Cause::Protocol, Duration::ZERO);
        let order: Vec<u16> = servers.order().iter().map(|s| s.config.port).collect();
        assert_eq!(order, [1, 2], "the one whose wait is over is probed first");
    }
}
