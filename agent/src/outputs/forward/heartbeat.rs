//! Heartbeats to the forward output's receivers, read by the phi accrual
//! failure detector (`phi`), as Fluentd's out_forward has them (fluent-bit
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

use std::net::{TcpStream, ToSocketAddrs};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use super::servers::Servers;

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
        servers.list[index].heartbeat(alive, settings.phi_threshold, settings.recover_wait);
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
