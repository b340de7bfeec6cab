//! `type: forward`: records to Fluentd or fluent-bit aggregators over the
//! Fluentd forward protocol (`crate::forward` holds the protocol itself).
//!
//! Records are kept in the buffer already encoded as forward entries (the
//! tag, then `[time, record]` in msgpack: `RecordEncoding::Forward`), so a
//! request is cut into PackedForward messages by copying bytes, one message
//! per run of records with one tag, each under `max_chunk_bytes`. Each
//! message's chunk id is a digest of its bytes: the same records send the
//! same id on every retry and after a restart, so a receiver can drop a
//! re-send. With `require_ack_response` (the default) a request is done
//! only when every message is acked within `ack_timeout`; otherwise it
//! moves on to the next receiver (see `servers`), and the flusher retries
//! as for `http` when none took it. Heartbeats (see `heartbeat`) find a
//! receiver gone before a request does, and one back without spending a
//! request on it.

mod connection;
pub mod heartbeat;
mod phi;
pub mod servers;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context as _;

use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::config::named_file;
use crate::forward::message::{self, Compression};
use crate::forward::msgpack::{self, Limits};
use crate::log;
use crate::yaml::NodeKind;

use super::{
    Attempt, BoxFuture, Output, OutputSettings, RecordEncoding, RequestBody, RequestFormat,
};
use connection::{Connection, Dial};
use servers::{Cause, Server, ServerConfig, Servers, TlsConfig};

/// `type: forward`'s entry in the outputs table.
pub fn settings(f: &mut Fields) -> ConfigResult<Box<dyn OutputSettings>> {
    Ok(Box::new(ForwardConfig::from_config(f)?))
}

#[derive(Debug)]
pub struct ForwardConfig {
    pub servers: Vec<ServerConfig>,
    pub self_hostname: String,
    pub user: Option<(String, String)>,
    pub require_ack_response: bool,
    pub ack_timeout: Duration,
    pub connect_timeout: Duration,
    pub keepalive: bool,
    pub keepalive_timeout: Duration,
    pub recover_wait: Duration,
    /// Zero: no heartbeats.
    pub heartbeat_interval: Duration,
    pub phi_threshold: f64,
    pub compress: Compression,
    pub time_as_integer: bool,
    pub max_chunk_bytes: usize,
}

/// fluent-bit's in_forward closes the connection, without an ack, on a
/// frame over 6,144,000 bytes; Fluentd's default chunk limit is 8 MiB.
const DEFAULT_MAX_CHUNK_BYTES: u64 = 4 << 20;

fn tls_settings(f: &mut Fields, base: &TlsConfig) -> ConfigResult<TlsConfig> {
    let path = |f: &mut Fields, key: &str| f.file(key, named_file::Kind::Certificate);
    let mut tls = base.clone();
    tls.enabled = f.bool("tls", base.enabled)?;
    tls.verify = f.bool("tls_verify", base.verify)?;
    if let Some(p) = path(f, "tls_ca_file")? {
        tls.ca_file = Some(p);
    }
    if let Some(p) = path(f, "tls_cert_file")? {
        tls.cert_file = Some(p);
    }
    if let Some(p) = path(f, "tls_key_file")? {
        tls.key_file = Some(p);
    }
    if tls.cert_file.is_some() != tls.key_file.is_some() {
        return error(
            f.node(),
            "forward: tls_cert_file and tls_key_file go together (a client certificate and its key)",
        );
    }
    Ok(tls)
}

impl ForwardConfig {
    pub fn from_config(f: &mut Fields) -> ConfigResult<ForwardConfig> {
        let base_tls = tls_settings(
            f,
            &TlsConfig {
                verify: true,
                ..TlsConfig::default()
            },
        )?;
        let shared_key = f.secret("shared_key")?;
        let server_of = |s: &mut Fields| -> ConfigResult<ServerConfig> {
            let host = s.required_string("host")?;
            let port = s.uint("port", 24224)?;
            let port = u16::try_from(port).ok().filter(|&p| p > 0).map_or_else(
                || error(s.node(), format!("forward: port {port} is not a TCP port")),
                Ok,
            )?;
            let weight = s.uint("weight", 60)?;
            Ok(ServerConfig {
                host,
                port,
                weight,
                standby: s.bool("standby", false)?,
                shared_key: s.secret("shared_key")?.or_else(|| shared_key.clone()),
                tls: tls_settings(s, &base_tls)?,
            })
        };
        let servers = match f.take("servers") {
            Some(list) => {
                let NodeKind::Seq(items) = &list.kind else {
                    return error(
                        list,
                        "forward: `servers` must be a list of {host, port, ...}",
                    );
                };
                let mut servers = Vec::new();
                for item in items {
                    let mut s = Fields::new(item, "forward server")?;
                    servers.push(server_of(&mut s)?);
                    s.finish()?;
                }
                if servers.is_empty() {
                    return error(list, "forward: `servers` is empty");
                }
                if servers.iter().all(|s| s.standby) {
                    return error(
                        list,
                        "forward: every server is a standby; make one a primary",
                    );
                }
                servers
            }
            None => {
                if f.node().is_null() {
                    return error(f.node(), "forward: needs `host` or `servers`");
                }
                vec![server_of(f)?]
            }
        };
        let username = f.string("username")?;
        let password = f.secret("password")?;
        let user = match (username, password) {
            (Some(u), Some(p)) => Some((u, p)),
            (None, None) => None,
            _ => return error(f.node(), "forward: username and password go together"),
        };
        let compress = match f.string("compress")?.as_deref() {
            None | Some("none") => Compression::None,
            Some("gzip") => Compression::Gzip,
            Some("zstd") => Compression::Zstd,
            Some(other) => {
                return error(
                    f.node(),
                    format!("forward: compress `{other}` (expected gzip, zstd or none)"),
                )
            }
        };
        let max_chunk_bytes = f.size("max_chunk_bytes", DEFAULT_MAX_CHUNK_BYTES)?;
        if !(1024..=(1 << 30)).contains(&max_chunk_bytes) {
            return error(
                f.node(),
                "forward: max_chunk_bytes must be between 1k and 1g",
            );
        }
        let cfg = ForwardConfig {
            servers,
            self_hostname: f
                .string("self_hostname")?
                .unwrap_or_else(crate::event::hostname),
            user,
            require_ack_response: f.bool("require_ack_response", true)?,
            ack_timeout: f.duration("ack_timeout", Duration::from_secs(30))?,
            connect_timeout: f.duration("connect_timeout", Duration::from_secs(5))?,
            keepalive: f.bool("keepalive", true)?,
            keepalive_timeout: f.duration("keepalive_timeout", Duration::from_secs(60))?,
            recover_wait: f.duration("recover_wait", Duration::from_secs(10))?,
            heartbeat_interval: f.duration("heartbeat_interval", Duration::from_secs(1))?,
            phi_threshold: f.uint("phi_threshold", 16)? as f64,
            compress,
            time_as_integer: f.bool("time_as_integer", false)?,
            max_chunk_bytes: max_chunk_bytes as usize,
        };
        if cfg.phi_threshold < 1.0 {
            return error(
                f.node(),
                "forward: phi_threshold must be at least 1 (16 is Fluentd's default)",
            );
        }
        if cfg.ack_timeout.is_zero() || cfg.connect_timeout.is_zero() {
            return error(
                f.node(),
                "forward: ack_timeout and connect_timeout must be > 0",
            );
        }
        Ok(cfg)
    }
}

/// A message's chunk id: a hash of its tag and records, so that a re-send
/// (after a retry, a restart, to another server) has the id a receiver saw
/// first. BLAKE3, not SHA-256: as cryptographic (no record can be made to
/// collide with another chunk's id and get it dropped as a duplicate) at
/// several times the speed over the entries in one piece (SHA-256 was a
/// fifth of the sender's CPU).
fn chunk_id(tag: &[u8], entries: &[u8]) -> Vec<u8> {
    let mut h = blake3::Hasher::new();
    h.update(&(tag.len() as u64).to_le_bytes());
    h.update(tag);
    h.update(entries);
    let mut id = [0u8; 16];
    id.copy_from_slice(&h.finalize().as_bytes()[..16]);
    message::chunk_id(id)
}

impl OutputSettings for ForwardConfig {
    /// Two requests in flight, each waiting for its acks, as fluent-bit's
    /// two out_forward workers have: with one, the sender idled through
    /// each round trip to the receiver and back.
    fn flush_threads(&self) -> usize {
        2
    }

    fn build(self: Box<Self>, id: &str) -> anyhow::Result<Box<dyn Output>> {
        let out = ForwardOutput::new(*self).map_err(|e| anyhow::anyhow!("output {id}: {e:#}"))?;
        Ok(Box::new(out))
    }

    /// A record larger than `max_chunk_bytes` is refused before it is sent
    /// (a receiver would close the connection without an ack, forever).
    fn can_reject(&self) -> bool {
        true
    }
}

fn tls_connector(tls: &TlsConfig) -> anyhow::Result<native_tls::TlsConnector> {
    let mut b = native_tls::TlsConnector::builder();
    if let Some(ca) = &tls.ca_file {
        b.disable_built_in_roots(true);
        let pem = named_file::read(ca, named_file::Kind::Certificate).context("tls_ca_file")?;
        let cert = native_tls::Certificate::from_pem(&pem)
            .with_context(|| format!("tls_ca_file {} is not a PEM certificate", ca.display()))?;
        b.add_root_certificate(cert);
    }
    if let (Some(cert), Some(key)) = (&tls.cert_file, &tls.key_file) {
        let cert_pem = named_file::read(cert, named_file::Kind::Certificate)?;
        let key_pem = named_file::read(key, named_file::Kind::Certificate)?;
        let identity =
            native_tls::Identity::from_pkcs8(&cert_pem, &key_pem).with_context(|| {
                format!(
                    "tls_cert_file {} / tls_key_file {}: not a PEM certificate and PKCS#8 key",
                    cert.display(),
                    key.display()
                )
            })?;
        b.identity(identity);
    }
    if !tls.verify {
        b.danger_accept_invalid_certs(true)
            .danger_accept_invalid_hostnames(true);
    }
    b.build().context("setting up TLS (OpenSSL)")
}

/// A message's bytes and its chunk id (None when no ack is wanted).
pub type Message = (Vec<u8>, Option<Vec<u8>>);

pub struct ForwardOutput {
    config: ForwardConfig,
    servers: Arc<Servers>,
    tls: Vec<Option<native_tls::TlsConnector>>,
    /// Tells the heartbeat threads to stop when the output goes.
    stop_heartbeats: Arc<AtomicBool>,
    /// Idle keepalive connections, by server index.
    idle: Mutex<Vec<(usize, Connection)>>,
}

impl ForwardOutput {
    fn new(config: ForwardConfig) -> anyhow::Result<ForwardOutput> {
        let mut tls = Vec::new();
        for s in &config.servers {
            tls.push(match s.tls.enabled {
                true => Some(
                    tls_connector(&s.tls)
                        .with_context(|| format!("server {}:{}", s.host, s.port))?,
                ),
                false => None,
            });
        }
        let servers = Arc::new(Servers {
            list: config.servers.iter().cloned().map(Server::new).collect(),
        });
        Ok(ForwardOutput {
            config,
            servers,
            tls,
            stop_heartbeats: Arc::new(AtomicBool::new(false)),
            idle: Mutex::new(Vec::new()),
        })
    }

    /// Starts the heartbeats (once).
    fn start_heartbeats(&self) {
        if self.config.heartbeat_interval.is_zero()
            || self.servers.list[0]
                .heartbeats
                .swap(true, Ordering::Relaxed)
        {
            return;
        }
        for s in &self.servers.list[1..] {
            s.heartbeats.store(true, Ordering::Relaxed);
        }
        heartbeat::start(
            &self.servers,
            &self.tls,
            heartbeat::Settings {
                interval: self.config.heartbeat_interval,
                phi_threshold: self.config.phi_threshold,
                connect_timeout: self.config.connect_timeout,
                recover_wait: self.config.recover_wait,
            },
            self.stop_heartbeats.clone(),
        );
    }

    /// The request's records (`RequestFormat::LengthPrefixed`) as
    /// PackedForward messages, each with its chunk id (None without acks).
    /// Err names a record too large to send.
    fn messages(&self, body: &[u8]) -> Result<Vec<Message>, String> {
        let mut out = Vec::new();
        let mut pos = 0;
        let mut current: Option<Gathering> = None;
        let finish = |msg: Gathering, out: &mut Vec<_>| -> Result<(), String> {
            let Gathering {
                tag,
                entries,
                bytes: bytes_len,
            } = msg;
            let ack = self.config.require_ack_response;
            let mut bytes = Vec::with_capacity(bytes_len + tag.len() + 64);
            let chunk = message::write_packed_forward(
                &mut bytes,
                tag,
                &entries,
                entries.len(),
                ack.then_some(&chunk_id as message::ChunkIdOf),
                self.config.compress,
            )
            .map_err(|e| format!("compressing: {e}"))?;
            out.push((bytes, chunk));
            Ok(())
        };
        while pos < body.len() {
            let record = body
                .get(pos..pos + 4)
                .map(|n| u32::from_le_bytes(n.try_into().expect("four bytes")) as usize)
                .and_then(|len| body.get(pos + 4..pos + 4 + len))
                .ok_or("a buffered record: its length runs past the request")?;
            pos += 4 + record.len();
            let (tag, entry) =
                split_stored(record).map_err(|e| format!("a buffered record: {e}"))?;
            if entry.len() + tag.len() + 64 > self.config.max_chunk_bytes {
                return Err(format!(
                    "a record of {} bytes is larger than max_chunk_bytes ({})",
                    entry.len(),
                    self.config.max_chunk_bytes
                ));
            }
            let fits = current.as_ref().is_some_and(|g| {
                g.tag == tag
                    && g.bytes + entry.len() + tag.len() + 64 <= self.config.max_chunk_bytes
            });
            if !fits {
                if let Some(msg) = current.take() {
                    finish(msg, &mut out)?;
                }
                current = Some(Gathering {
                    tag,
                    entries: Vec::new(),
                    bytes: 0,
                });
            }
            let g = current.as_mut().expect("set above");
            g.entries.push(entry);
            g.bytes += entry.len();
        }
        if let Some(msg) = current.take() {
            finish(msg, &mut out)?;
        }
        Ok(out)
    }

    async fn send(&self, body: Vec<u8>) -> Attempt {
        let messages = match self.messages(&body) {
            Ok(m) => m,
            // The flusher halves the request until the record is alone,
            // then dead-letters it.
            Err(reason) => {
                return Attempt::Reject {
                    status: 413,
                    body: reason,
                }
            }
        };
        let mut errors = Vec::new();
        for server in self.servers.order() {
            let index = self
                .servers
                .list
                .iter()
                .position(|s| std::ptr::eq(s, server))
                .expect("one of ours");
            server
                .in_flight
                .fetch_add(messages.len() as u64, Ordering::Relaxed);
            let losses = server.heartbeat_losses.load(Ordering::Relaxed);
            let result = tokio::select! {
                r = self.send_to(index, server, &messages) => r,
                // Heartbeats say it is gone: waiting out ack_timeout on it
                // would only delay the chunks (the connection is dropped,
                // so a late ack cannot be mistaken for another's).
                () = heartbeat_lost(server, losses) => Err(std::io::Error::other(
                    "its heartbeats stopped while chunks waited for its acks"
                ).into()),
            };
            server
                .in_flight
                .fetch_sub(messages.len() as u64, Ordering::Relaxed);
            match result {
                Ok(()) => {
                    let acked = if self.config.require_ack_response {
                        messages.len() as u64
                    } else {
                        0
                    };
                    server.succeeded(acked);
                    return Attempt::Done;
                }
                Err(e) => {
                    let cause = if e.chain().any(|c| c.is::<std::io::Error>()) {
                        Cause::Transport
                    } else {
                        Cause::Protocol
                    };
                    let e = format!("{}: {e:#}", server.address());
                    if server.failed(&e, cause, self.config.recover_wait) {
                        log::warn(&format!("forward: receiver {e}; trying the next one"));
                    }
                    errors.push(e);
                }
            }
        }
        Attempt::Retry {
            reason: format!("no receiver took the records: {}", errors.join("; ")),
            after: None,
        }
    }

    async fn send_to(
        &self,
        index: usize,
        server: &Server,
        messages: &[Message],
    ) -> anyhow::Result<()> {
        let mut conn = match self.idle_connection(index) {
            Some(c) => c,
            None => {
                let c = &server.config;
                let tls = self.tls[index]
                    .clone()
                    .map(tokio_native_tls::TlsConnector::from);
                let dial = Dial {
                    host: &c.host,
                    port: c.port,
                    tls: tls.as_ref(),
                    connect_timeout: self.config.connect_timeout,
                    shared_key: c.shared_key.as_deref(),
                    self_hostname: &self.config.self_hostname,
                    user: self
                        .config
                        .user
                        .as_ref()
                        .map(|(u, p)| (u.as_str(), p.as_str())),
                };
                server.reconnects.fetch_add(1, Ordering::Relaxed);
                Connection::open(&dial).await?
            }
        };
        let deadline = Instant::now() + self.config.ack_timeout;
        conn.send(messages, deadline).await?;
        if self.config.keepalive {
            self.idle.lock().unwrap().push((index, conn));
        }
        Ok(())
    }

    /// An idle connection to server `index` that is still open and young
    /// enough.
    fn idle_connection(&self, index: usize) -> Option<Connection> {
        let mut idle = self.idle.lock().unwrap();
        let timeout = self.config.keepalive_timeout;
        idle.retain(|(_, c)| c.last_used.elapsed() < timeout);
        while let Some(i) = idle.iter().position(|(s, _)| *s == index) {
            let (_, mut conn) = idle.swap_remove(i);
            if !conn.is_stale() {
                return Some(conn);
            }
        }
        None
    }
}

impl Output for ForwardOutput {
    fn describe(&self) -> (&'static str, Option<String>) {
        let list: Vec<String> = self
            .servers
            .list
            .iter()
            .map(|s| {
                let standby = if s.config.standby { " (standby)" } else { "" };
                let scheme = if s.config.tls.enabled { "tls" } else { "tcp" };
                format!("{scheme}://{}{standby}", s.address())
            })
            .collect();
        ("forward", Some(list.join(", ")))
    }

    fn format(&self) -> RequestFormat {
        RequestFormat::LengthPrefixed
    }

    fn encoding(&self) -> RecordEncoding {
        RecordEncoding::Forward {
            time_as_integer: self.config.time_as_integer,
        }
    }

    fn deliver(&self, body: RequestBody) -> BoxFuture<'_, Attempt> {
        match body.into_vec() {
            Ok(body) => Box::pin(self.send(body)),
            Err(e) => Box::pin(std::future::ready(Attempt::Retry {
                reason: e.to_string(),
                after: None,
            })),
        }
    }

    fn start(&self) {
        self.start_heartbeats();
    }

    fn forward_servers(&self) -> Option<std::sync::Arc<Servers>> {
        Some(self.servers.clone())
    }
}

impl Drop for ForwardOutput {
    fn drop(&mut self) {
        self.stop_heartbeats.store(true, Ordering::Relaxed);
    }
}

/// Resolves once heartbeats have found `server` gone since `losses` was read.
async fn heartbeat_lost(server: &Server, losses: u64) {
    while server.heartbeat_losses.load(Ordering::Relaxed) == losses {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A message being gathered: its tag, and its entries where they are in the
/// request (they are copied once, when the message is written), with their
/// bytes.
struct Gathering<'a> {
    tag: &'a [u8],
    entries: Vec<&'a [u8]>,
    bytes: usize,
}

/// Stored forward records are small, flat values written by this agent;
/// these limits only keep a damaged chunk from costing much.
const STORED_LIMITS: Limits = Limits {
    max_depth: 512,
    max_items: usize::MAX,
};

/// A stored record (`RecordEncoding::Forward`, one buffer frame): its tag
/// (the msgpack str's bytes) and its entry (the msgpack `[time, record]`),
/// which is the rest of the frame. The entry is not walked here: the
/// frame's checksum vouches for it, and a receiver checks what it reads.
pub fn split_stored(payload: &[u8]) -> Result<(&[u8], &[u8]), String> {
    let (tag, tag_len) = msgpack::leading_str(payload).ok_or("expected a tag")?;
    match &payload[tag_len..] {
        [] => Err("a tag without an entry".into()),
        entry => Ok((tag, entry)),
    }
}

/// A stored record as (tag, time in nanoseconds, record), for dead letters.
pub fn decode_stored(payload: &[u8]) -> Result<(String, i64, serde_json::Value), String> {
    let (tag, entry) = split_stored(payload)?;
    let (value, _) = msgpack::decode(entry, &STORED_LIMITS).map_err(|e| e.to_string())?;
    let msgpack::Value::Array(items) = &value else {
        return Err("expected an entry [time, record]".into());
    };
    let [time, record] = items.as_slice() else {
        return Err("expected an entry [time, record]".into());
    };
    let time = message::read_time(time).map_err(|e| e.to_string())?;
    Ok((
        String::from_utf8_lossy(tag).into_owned(),
        time,
        msgpack::to_json(record),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn output() -> ForwardOutput {
        let config = ForwardConfig {
            servers: vec![ServerConfig {
                host: "127.0.0.1".into(),
                port: 24224,
                weight: 60,
                ..ServerConfig::default()
            }],
            self_hostname: "h".into(),
            user: None,
            require_ack_response: true,
            ack_timeout: Duration::from_secs(1),
            connect_timeout: Duration::from_secs(1),
            keepalive: true,
            keepalive_timeout: Duration::from_secs(1),
            recover_wait: Duration::from_secs(1),
            heartbeat_interval: Duration::ZERO,
            phi_threshold: 16.0,
            compress: Compression::Gzip,
            time_as_integer: false,
            max_chunk_bytes: 1024,
        };
        ForwardOutput::new(config).unwrap()
    }

    fn stored(tag: &str, n: i64) -> Vec<u8> {
        let event = crate::event::Event {
            time: 1_800_000_000_123_456_789 + n,
            record: serde_json::json!({"message": format!("line {n}")})
                .as_object()
                .unwrap()
                .clone()
                .into(),
        };
        let mut out = Vec::new();
        RecordEncoding::Forward {
            time_as_integer: false,
        }
        .encode(&mut out, tag, &event);
        out
    }

    /// Stored records as the flusher hands them over.
    fn request(records: impl IntoIterator<Item = Vec<u8>>) -> Vec<u8> {
        let mut body = Vec::new();
        for r in records {
            body.extend((r.len() as u32).to_le_bytes());
            body.extend(r);
        }
        body
    }

    /// A request is cut into one message per run of one tag, each under
    /// max_chunk_bytes; the same records give the same chunk ids every
    /// time (a retry, a restart), other records other ids.
    #[test]
    fn messages_per_tag_with_stable_chunk_ids() {
        let out = output();
        let body = request(
            (0..3)
                .map(|n| stored("a", n))
                .chain((3..5).map(|n| stored("b", n))),
        );
        let first = out.messages(&body).unwrap();
        let again = out.messages(&body).unwrap();
        assert_eq!(first.len(), 2, "one message per tag run");
        assert_eq!(first, again, "stable ids and bytes");
        assert_ne!(first[0].1, first[1].1);
        let (tag, time, record) = decode_stored(&stored("a", 7)).unwrap();
        assert_eq!((tag.as_str(), time), ("a", 1_800_000_000_123_456_796));
        assert_eq!(record["message"], "line 7");

        // Over max_chunk_bytes: several messages; one record too large on
        // its own is refused before it is sent.
        let many = request((0..100).map(|n| stored("a", n)));
        let messages = out.messages(&many).unwrap();
        assert!(messages.len() > 1);
        let mut big_event = Vec::new();
        let event = crate::event::Event {
            time: 1,
            record: serde_json::json!({"message": "x".repeat(2000)})
                .as_object()
                .unwrap()
                .clone()
                .into(),
        };
        RecordEncoding::Forward {
            time_as_integer: false,
        }
        .encode(&mut big_event, "a", &event);
        assert!(out
            .messages(&request([big_event]))
            .unwrap_err()
            .contains("larger than max_chunk_bytes"));
    }
}
