//! Heartbeats to the forward output's receivers, and the phi accrual
//! failure detector that reads them (as Fluentd's out_forward has; fluent-bit
//! has neither).
//!
//! Each receiver gets a TCP connect every `heartbeat_interval` from a small
//! thread of its own (a connect that hangs delays only its receiver). The
//! detector keeps the intervals between successful heartbeats; `phi` is how
//! unlikely the silence since the last one is under their distribution
//! (-log10 of the chance it is still alive). Above `phi_threshold` an up
//! receiver is marked down: requests skip it, and chunks waiting for its
//! acks move on at once instead of after `ack_timeout` (a host that died
//! without closing its sockets). A heartbeat to a receiver that failed for
//! a transport reason (refused, reset, timed out) brings it back without
//! spending a request on it; one that failed at the protocol level (a wrong
//! shared key, no ack) still waits for `recover_wait`: its port answering
//! says nothing of that.

use std::collections::VecDeque;
use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::servers::Servers;

/// How many intervals the detector remembers.
const WINDOW: usize = 100;

/// Successful heartbeats of one receiver.
#[derive(Debug, Default)]
pub struct Detector {
    last: Option<Instant>,
    intervals: VecDeque<f64>,
}

impl Detector {
    pub fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last {
            if self.intervals.len() == WINDOW {
                self.intervals.pop_front();
            }
            self.intervals
                .push_back(now.saturating_duration_since(last).as_secs_f64());
        }
        self.last = Some(now);
    }

    /// phi for the silence from the last heartbeat to `now`; 0 until two
    /// heartbeats have been seen.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        if self.intervals.is_empty() {
            return 0.0;
        }
        let n = self.intervals.len() as f64;
        let mean = self.intervals.iter().sum::<f64>() / n;
        let var = self
            .intervals
            .iter()
            .map(|x| (x - mean).powi(2))
            .sum::<f64>()
            / n;
        // Heartbeats on a quiet loopback are nearly regular: without a
        // floor on the deviation a few milliseconds of scheduling delay
        // would read as a death.
        let sd = var.sqrt().max(mean / 4.0).max(0.01);
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        phi(elapsed, mean, sd)
    }

    pub fn last(&self) -> Option<Instant> {
        self.last
    }
}

/// -log10(1 - F(elapsed)) for a normal distribution (mean, sd), with the
/// logistic approximation of its CDF that Akka and Cassandra use (exact to
/// 1e-3, and without the cancellation that makes 1 - F round to 0).
fn phi(elapsed: f64, mean: f64, sd: f64) -> f64 {
    let y = (elapsed - mean) / sd;
    let e = (-y * (1.5976 + 0.070566 * y * y)).exp();
    let p_alive = if elapsed > mean {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    // A long silence underflows to 0: keep phi finite (about 308) for
    // /metrics and /status.
    -p_alive.max(f64::MIN_POSITIVE).log10()
}

/// What the heartbeat threads are told.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    pub interval: Duration,
    pub phi_threshold: f64,
    pub connect_timeout: Duration,
    pub recover_wait: Duration,
}

/// Starts one heartbeat thread per receiver; they stop when `stop` is set
/// or the receivers are dropped.
/// `tls` holds each receiver's TLS connector (a TLS receiver gets a full
/// handshake: a bare connect would read as a failed handshake there).
pub fn start(
    servers: &Arc<Servers>,
    tls: &[Option<native_tls::TlsConnector>],
    settings: Settings,
    stop: Arc<AtomicBool>,
) {
    for index in 0..servers.list.len() {
        let servers = Arc::downgrade(servers);
        let stop = stop.clone();
        let tls = tls[index].clone();
        let name = format!("fwd-heartbeat-{index}");
        let spawned = std::thread::Builder::new()
            .name(name)
            .spawn(move || run(servers, index, tls, settings, stop));
        if let Err(e) = spawned {
            crate::log::warn(&format!(
                "forward: cannot start a heartbeat thread ({e}): receivers' health is learned from requests only"
            ));
            return;
        }
    }
}

fn run(
    servers: Weak<Servers>,
    index: usize,
    tls: Option<native_tls::TlsConnector>,
    settings: Settings,
    stop: Arc<AtomicBool>,
) {
    // Spread the threads' first beats so they do not all connect at once.
    let mut next = Instant::now() + settings.interval.mul_f64(fastrand::f64());
    // A connect is bounded by the interval too: a receiver that does not
    // answer within it has missed its beat anyway.
    let timeout = settings
        .connect_timeout
        .min(settings.interval)
        .max(Duration::from_millis(10));
    loop {
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return;
            }
            std::thread::sleep(
                next.saturating_duration_since(Instant::now())
                    .min(Duration::from_millis(100)),
            );
        }
        // A beat that took longer than the interval is not made up for.
        next = (next + settings.interval).max(Instant::now());
        let (host, port) = {
            let Some(servers) = servers.upgrade() else {
                return;
            };
            let c = &servers.list[index].config;
            // Connect without holding the receivers (a reload drops them).
            (c.host.clone(), c.port)
        };
        let alive = beat(&host, port, tls.as_ref(), timeout);
        let Some(servers) = servers.upgrade() else {
            return;
        };
        if stop.load(Ordering::Relaxed) {
            return;
        }
        servers.list[index].heartbeat(alive, &settings);
    }
}

/// One heartbeat: a TCP connect (and TLS handshake), closed at once.
fn beat(host: &str, port: u16, tls: Option<&native_tls::TlsConnector>, timeout: Duration) -> bool {
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs.into_iter().any(|a| {
        let Ok(tcp) = TcpStream::connect_timeout(&a, timeout) else {
            return false;
        };
        match tls {
            None => true,
            Some(tls) => {
                let _ = tcp.set_read_timeout(Some(timeout));
                let _ = tcp.set_write_timeout(Some(timeout));
                tls.connect(host, tcp).is_ok()
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phi_grows_with_the_silence() {
        let mut d = Detector::default();
        let t0 = Instant::now();
        assert_eq!(d.phi(t0), 0.0);
        for i in 0..10 {
            d.arrived(t0 + Duration::from_secs(i));
        }
        let last = t0 + Duration::from_secs(9);
        let at = |s: f64| d.phi(last + Duration::from_secs_f64(s));
        assert!(at(0.5) < 1.0, "{}", at(0.5));
        assert!(at(1.0) < 1.0, "on time: {}", at(1.0));
        assert!(at(2.0) > 1.0 && at(2.0) < 16.0, "{}", at(2.0));
        assert!(at(4.0) > 16.0, "three beats missed: {}", at(4.0));
        assert!(at(2.0) < at(3.0) && at(3.0) < at(4.0));
        assert!(
            at(1000.0).is_finite() && at(1000.0) > 300.0,
            "{}",
            at(1000.0)
        );
    }
}
