//! `type: forward`: receives records from Fluentd, fluent-bit or another
//! my-agent over the Fluentd forward protocol (`crate::forward`), on TCP
//! (optionally TLS) and optionally a unix socket.
//!
//! An ack is sent only once the message's records are durable in this
//! agent's buffers (after the file buffer's fsync), never before, so a
//! sender that waits for acks loses nothing when this agent is killed. When
//! a buffer is full the connection stops being read until there is room:
//! the sender is pushed back by TCP instead of being acked and dropped.
//! Frames being read share a memory budget (`frame_memory`): past it,
//! connections stop being read too.
//! Every limit (frame size, also after decompression; connections; idle
//! time; events that do not parse; the frames' memory) is counted in
//! `my_agent_source_errors_total{reason}` and logged with the peer.

mod frame_memory;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use crate::buffer::BufferError;
use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::config::named_file;
use crate::event::Event;
use crate::forward::handshake;
use crate::forward::message::{self, Decoded};
use crate::forward::msgpack::{self, Limits};
use crate::log;
use crate::metrics::PluginMetrics;
use crate::status::{SourceProblem, SourceStatus};

use super::{Built, Downstream, SourceSettings};

pub fn settings(f: &mut Fields) -> ConfigResult<Box<dyn SourceSettings>> {
    Ok(Box::new(ForwardInputConfig::from_config(f)?))
}

#[derive(Debug, Clone)]
pub struct ForwardInputConfig {
    pub bind: Option<SocketAddr>,
    pub unix_path: Option<PathBuf>,
    pub tag_prefix: Option<String>,
    pub source_address_key: Option<String>,
    pub source_hostname_key: Option<String>,
    /// Each record of an acked chunk gets `<chunk id>:<n>`, the same at
    /// whichever receiver a re-sent chunk lands: a key for a collector
    /// that drops duplicates (an Elasticsearch `_id`).
    pub chunk_id_key: Option<&'static str>,
    pub shared_key: Option<String>,
    pub self_hostname: String,
    pub users: Vec<(String, String)>,
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    /// Clients must present a certificate signed by this CA.
    pub tls_client_ca_file: Option<PathBuf>,
    pub max_frame_bytes: usize,
    /// Memory all connections' frames may hold while they are read
    /// (`frame_memory`).
    pub max_buffered_bytes: usize,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    /// How many stored chunks' ids are remembered to drop a re-send.
    pub dedupe_chunk_ids: usize,
}

impl ForwardInputConfig {
    pub fn from_config(f: &mut Fields) -> ConfigResult<ForwardInputConfig> {
        let bind = match f.take("bind") {
            Some(node) => {
                let s = crate::config::fields::string(node)?;
                if s == "none" {
                    None
                } else {
                    Some(s.parse().or_else(|_| {
                        error(node, format!("forward: bind `{s}` is not an address like 127.0.0.1:24224 (or none)"))
                    })?)
                }
            }
            None => Some("127.0.0.1:24224".parse().expect("valid default")),
        };
        let unix_path = f.string("unix_path")?.map(PathBuf::from);
        if bind.is_none() && unix_path.is_none() {
            return error(f.node(), "forward: with `bind: none` give a `unix_path`");
        }
        let mut users = Vec::new();
        if let Some(list) = f.take("users") {
            let crate::yaml::NodeKind::Seq(items) = &list.kind else {
                return error(
                    list,
                    "forward: `users` must be a list of {username, password}",
                );
            };
            for item in items {
                let mut u = Fields::new(item, "forward user")?;
                let name = u.required_string("username")?;
                let Some(password) = u.secret("password")? else {
                    return error(
                        item,
                        "forward user: needs password, password_file or password_env",
                    );
                };
                u.finish()?;
                users.push((name, password));
            }
        }
        let cert = |f: &mut Fields, key: &str| f.file(key, named_file::Kind::Certificate);
        let tls_cert_file = cert(f, "tls_cert_file")?;
        let tls_key_file = cert(f, "tls_key_file")?;
        let tls_client_ca_file = cert(f, "tls_client_ca_file")?;
        if tls_cert_file.is_some() != tls_key_file.is_some() {
            return error(
                f.node(),
                "forward: tls_cert_file and tls_key_file go together",
            );
        }
        if tls_client_ca_file.is_some() && tls_cert_file.is_none() {
            return error(
                f.node(),
                "forward: tls_client_ca_file needs tls_cert_file and tls_key_file",
            );
        }
        let cfg = ForwardInputConfig {
            bind,
            unix_path,
            tag_prefix: f.string("tag_prefix")?,
            source_address_key: f.string("source_address_key")?,
            source_hostname_key: f.string("source_hostname_key")?,
            chunk_id_key: f.string("chunk_id_key")?.map(|k| crate::record::intern(&k)),
            shared_key: f.secret("shared_key")?,
            self_hostname: f
                .string("self_hostname")?
                .unwrap_or_else(crate::event::hostname),
            users,
            tls_cert_file,
            tls_key_file,
            tls_client_ca_file,
            max_frame_bytes: f.size("max_frame_bytes", 16 << 20)? as usize,
            max_buffered_bytes: f.size("max_buffered_bytes", 64 << 20)? as usize,
            max_connections: f.uint("max_connections", 1000)? as usize,
            idle_timeout: f.duration("idle_timeout", Duration::from_secs(120))?,
            dedupe_chunk_ids: f.uint("dedupe_chunk_ids", 4096)? as usize,
        };
        if cfg.max_frame_bytes < 1024 || cfg.max_connections == 0 {
            return error(
                f.node(),
                "forward: max_frame_bytes must be at least 1k and max_connections at least 1",
            );
        }
        if cfg.max_buffered_bytes < 1 << 20 {
            return error(f.node(), "forward: max_buffered_bytes must be at least 1m");
        }
        if !cfg.users.is_empty() && cfg.shared_key.is_none() {
            return error(
                f.node(),
                "forward: `users` needs a shared_key (user auth is part of the handshake)",
            );
        }
        Ok(cfg)
    }

    fn describe(&self) -> Vec<String> {
        let scheme = if self.tls_cert_file.is_some() {
            "tls"
        } else {
            "tcp"
        };
        let mut out: Vec<String> = self
            .bind
            .iter()
            .map(|b| format!("{scheme}://{b}"))
            .collect();
        if let Some(p) = &self.unix_path {
            out.push(format!("unix://{}", p.display()));
        }
        out
    }
}

impl SourceSettings for ForwardInputConfig {
    fn kind(&self) -> &'static str {
        "forward"
    }

    fn max_open_files(&self) -> u64 {
        self.max_connections as u64 + 4
    }

    fn build(self: Box<Self>, id: String, metrics: Arc<PluginMetrics>) -> anyhow::Result<Built> {
        let status = Arc::new(SourceStatus::new(
            id.clone(),
            "forward",
            self.tag_prefix.clone().unwrap_or_default(),
            self.describe(),
        ));
        // Bound here, when the pipeline starts, so that a port in use
        // fails the start (and a reload falls back) instead of a thread.
        let tcp = match self.bind {
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr)
                    .with_context(|| format!("forward input {id}: cannot listen on {addr}"))?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let unix = match &self.unix_path {
            Some(path) => {
                // A socket left by a previous run; never anything else.
                if std::fs::symlink_metadata(path)
                    .is_ok_and(|m| std::os::unix::fs::FileTypeExt::is_socket(&m.file_type()))
                {
                    let _ = std::fs::remove_file(path);
                }
                let l = std::os::unix::net::UnixListener::bind(path).with_context(|| {
                    format!("forward input {id}: cannot listen on {}", path.display())
                })?;
                l.set_nonblocking(true)?;
                Some(l)
            }
            None => None,
        };
        let udp = match self.bind {
            Some(addr) => Some(std::net::UdpSocket::bind(addr).with_context(|| {
                format!("forward input {id}: cannot listen on udp {addr} (heartbeat)")
            })?),
            None => None,
        };
        let tls = match (&self.tls_cert_file, &self.tls_key_file) {
            (Some(cert), Some(key)) => {
                Some(tls_acceptor(cert, key, self.tls_client_ca_file.as_deref())?)
            }
            _ => None,
        };
        let self_dedupe = self.dedupe_chunk_ids;
        let frame_memory = frame_memory::FrameMemory::new(self.max_buffered_bytes);
        let input = Arc::new(ForwardInput {
            frame_memory,
            id,
            config: *self,
            metrics,
            status: status.clone(),
            tls,
            connections: AtomicUsize::new(0),
            logged: Default::default(),
            chunks: RecentChunks::new(self_dedupe),
        });
        Ok(Built {
            status,
            run: Box::new(move |downstream, stop| input.run(tcp, unix, udp, downstream, stop)),
        })
    }
}

/// The input's TLS server: OpenSSL directly (the prefix's, as native-tls
/// uses), because native-tls cannot verify client certificates. With
/// `tls_client_ca_file` a client must present a certificate that chains to
/// one of its CAs, or the handshake fails (counted as `tls_failed`).
fn tls_acceptor(
    cert: &std::path::Path,
    key: &std::path::Path,
    client_ca: Option<&std::path::Path>,
) -> anyhow::Result<openssl::ssl::SslAcceptor> {
    use openssl::ssl::{SslAcceptor, SslMethod, SslVerifyMode};
    use openssl::x509::{store::X509StoreBuilder, X509};
    let cert_pem = named_file::read(cert, named_file::Kind::Certificate)?;
    let key_pem = named_file::read(key, named_file::Kind::Certificate)?;
    let chain = X509::stack_from_pem(&cert_pem)
        .ok()
        .filter(|c| !c.is_empty())
        .with_context(|| format!("tls_cert_file {}: no PEM certificate in it", cert.display()))?;
    let pkey = openssl::pkey::PKey::private_key_from_pem(&key_pem)
        .with_context(|| format!("tls_key_file {}: not a PEM private key", key.display()))?;
    let mut b = SslAcceptor::mozilla_intermediate_v5(SslMethod::tls_server())
        .context("setting up TLS (OpenSSL)")?;
    b.set_certificate(&chain[0])?;
    for extra in chain.iter().skip(1) {
        b.add_extra_chain_cert(extra.clone())?;
    }
    b.set_private_key(&pkey)?;
    b.check_private_key().with_context(|| {
        format!(
            "tls_key_file {} is not the key of tls_cert_file {}",
            key.display(),
            cert.display()
        )
    })?;
    if let Some(ca) = client_ca {
        let ca_pem = named_file::read(ca, named_file::Kind::Certificate)?;
        let cas = X509::stack_from_pem(&ca_pem)
            .ok()
            .filter(|c| !c.is_empty())
            .with_context(|| {
                format!(
                    "tls_client_ca_file {}: no PEM certificate in it",
                    ca.display()
                )
            })?;
        let mut store = X509StoreBuilder::new()?;
        for c in &cas {
            store.add_cert(c.clone())?;
            b.add_client_ca(c)?;
        }
        b.set_verify_cert_store(store.build())?;
        b.set_verify(SslVerifyMode::PEER | SslVerifyMode::FAIL_IF_NO_PEER_CERT);
    }
    Ok(b.build())
}

/// Runs the server side of a TLS handshake on `stream`.
async fn tls_accept(
    acceptor: &openssl::ssl::SslAcceptor,
    stream: Box<dyn Io>,
) -> anyhow::Result<tokio_openssl::SslStream<Box<dyn Io>>> {
    let ssl = openssl::ssl::Ssl::new(acceptor.context())?;
    let mut tls = tokio_openssl::SslStream::new(ssl, stream)?;
    std::pin::Pin::new(&mut tls).accept().await?;
    Ok(tls)
}

struct ForwardInput {
    id: String,
    config: ForwardInputConfig,
    metrics: Arc<PluginMetrics>,
    status: Arc<SourceStatus>,
    tls: Option<openssl::ssl::SslAcceptor>,
    connections: AtomicUsize,
    frame_memory: Arc<frame_memory::FrameMemory>,
    chunks: RecentChunks,
    /// Per reason: when it was last logged, and how often since.
    logged: std::sync::Mutex<
        std::collections::HashMap<&'static str, (Option<std::time::Instant>, u64)>,
    >,
}

const LOG_EVERY: Duration = Duration::from_secs(10);
/// How long `/status` shows the input's last problem (a hostile or broken
/// peer) when no other follows: long enough to be seen by a check polling
/// every few minutes, short enough that "not ok" means "lately".
const PROBLEM_SHOWN: Duration = Duration::from_secs(15 * 60);

/// The ids of the last chunks stored (`dedupe_chunk_ids` of them). A sender
/// whose ack was lost or late sends the same chunk with the same id again
/// (my-agent's ids are digests of the chunk's bytes, Fluentd's are its
/// buffer chunk's id): it is acked and not stored twice.
struct RecentChunks {
    capacity: usize,
    /// The ids, and the order they came in (oldest first, to forget).
    ids: std::sync::Mutex<ChunkIds>,
}

type ChunkIds = (
    std::collections::HashSet<Vec<u8>>,
    std::collections::VecDeque<Vec<u8>>,
);

impl RecentChunks {
    fn new(capacity: usize) -> RecentChunks {
        RecentChunks {
            capacity,
            ids: Default::default(),
        }
    }

    fn seen(&self, id: &[u8]) -> bool {
        self.capacity > 0 && self.ids.lock().unwrap().0.contains(id)
    }

    fn remember(&self, id: &[u8]) {
        if self.capacity == 0 {
            return;
        }
        let mut ids = self.ids.lock().unwrap();
        let (set, order) = &mut *ids;
        if set.insert(id.to_vec()) {
            order.push_back(id.to_vec());
            while order.len() > self.capacity {
                if let Some(old) = order.pop_front() {
                    set.remove(&old);
                }
            }
        }
    }
}

trait Io: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Io for T {}

/// A broken stream ends its connection; anything else is one skipped
/// event or message.
enum Broken {
    /// Logged and counted under `reason`.
    Limit(&'static str, String),
    Closed,
}

impl ForwardInput {
    fn run(
        self: Arc<Self>,
        tcp: Option<std::net::TcpListener>,
        unix: Option<std::os::unix::net::UnixListener>,
        udp: Option<std::net::UdpSocket>,
        downstream: Arc<dyn Downstream>,
        stop: Arc<AtomicBool>,
    ) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("tokio runtime");
        let me = self.clone();
        rt.block_on(async move {
            let this = me;
            if let Some(udp) = udp {
                if let Ok(udp) = udp.set_nonblocking(true).and_then(|()| tokio::net::UdpSocket::from_std(udp)) {
                    tokio::spawn(heartbeat(udp));
                }
            }
            let tcp = tcp.and_then(|l| tokio::net::TcpListener::from_std(l).ok());
            let unix = unix.and_then(|l| tokio::net::UnixListener::from_std(l).ok());
            loop {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                let accepted: Option<(Box<dyn Io>, String, bool)> = tokio::select! {
                    r = async { tcp.as_ref().expect("guarded").accept().await }, if tcp.is_some() => match r {
                        Ok((s, peer)) => {
                            let _ = s.set_nodelay(true);
                            Some((Box::new(s), peer.to_string(), true))
                        }
                        Err(e) => {
                            this.count("accept_failed", &format!("accept: {e}"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            None
                        }
                    },
                    r = async { unix.as_ref().expect("guarded").accept().await }, if unix.is_some() => match r {
                        Ok((s, _)) => Some((Box::new(s), "unix".to_string(), false)),
                        Err(e) => {
                            this.count("accept_failed", &format!("accept: {e}"));
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            None
                        }
                    },
                    _ = tokio::time::sleep(Duration::from_millis(100)) => None,
                };
                let Some((stream, peer, is_tcp)) = accepted else { continue };
                if this.connections.load(Ordering::Relaxed) >= this.config.max_connections {
                    this.count(
                        "too_many_connections",
                        &format!("{peer}: refused, max_connections ({}) open", this.config.max_connections),
                    );
                    continue;
                }
                this.connections.fetch_add(1, Ordering::Relaxed);
                let me = this.clone();
                let downstream = downstream.clone();
                let stop = stop.clone();
                tokio::spawn(async move {
                    me.serve(stream, &peer, is_tcp, downstream, stop).await;
                    me.connections.fetch_sub(1, Ordering::Relaxed);
                });
            }
        });
        // Dropping the runtime ends every connection: unacked messages are
        // sent again by their senders.
        if let Some(p) = &self.config.unix_path {
            let _ = std::fs::remove_file(p);
        }
    }

    /// Counts a problem, logs it (`tally`) and shows it in `/status` for
    /// PROBLEM_SHOWN after the last one: a peer's bad frame is an event,
    /// and the input serves others meanwhile.
    fn count(&self, reason: &'static str, message: &str) {
        self.tally(reason, message);
        self.status.show_problems_for(
            vec![SourceProblem {
                path: self.config.describe().join(", "),
                reason,
                message: message.to_string(),
            }],
            PROBLEM_SHOWN,
        );
    }

    /// Counts and logs: each reason at most once per LOG_EVERY, with how
    /// many more there were (a flood of refused connections must not flood
    /// the log). Alone, for what is no fault of the input's (senders
    /// pushed back while frames hold its memory): `/status` stays ok.
    fn tally(&self, reason: &'static str, message: &str) {
        self.metrics.count_error(reason);
        let mut logged = self.logged.lock().unwrap();
        let now = std::time::Instant::now();
        let entry = logged.entry(reason).or_insert((None, 0));
        if entry
            .0
            .is_none_or(|at: std::time::Instant| now.duration_since(at) >= LOG_EVERY)
        {
            let more = match entry.1 {
                0 => String::new(),
                n => format!(" ({n} more like it since the last such line)"),
            };
            log::warn(&format!("forward input {}: {message}{more}", self.id));
            *entry = (Some(now), 0);
        } else {
            entry.1 += 1;
        }
    }

    async fn serve(
        &self,
        stream: Box<dyn Io>,
        peer: &str,
        is_tcp: bool,
        downstream: Arc<dyn Downstream>,
        stop: Arc<AtomicBool>,
    ) {
        let mut stream: Box<dyn Io> = match &self.tls {
            Some(tls) if is_tcp => {
                match tokio::time::timeout(Duration::from_secs(10), tls_accept(tls, stream)).await {
                    Ok(Ok(s)) => Box::new(s),
                    Ok(Err(e)) => {
                        self.count("tls_failed", &format!("{peer}: TLS handshake: {e}"));
                        return;
                    }
                    Err(_) => {
                        self.count("tls_failed", &format!("{peer}: no TLS handshake in 10s"));
                        return;
                    }
                }
            }
            _ => stream,
        };
        let mut conn = Conn {
            buf: Vec::new(),
            held: self.frame_memory.hold(),
            frame_len: 0,
            scan: msgpack::FrameScan::default(),
            peer: peer.to_string(),
        };
        let hostname = peer.rsplit_once(':').map_or(peer, |(h, _)| h).to_string();
        if let Some(key) = &self.config.shared_key {
            if let Err(e) = self.handshake(&mut stream, &mut conn, key).await {
                match e {
                    Broken::Limit(reason, m) => self.count(reason, &format!("{peer}: {m}")),
                    Broken::Closed => {}
                }
                return;
            }
        }
        loop {
            let frame = match conn.next_frame(&mut stream, self, &stop).await {
                Ok(()) => conn.frame(),
                Err(Broken::Closed) => return,
                Err(Broken::Limit(reason, m)) => {
                    self.count(reason, &format!("{peer}: {m}"));
                    return;
                }
            };
            let limits = Limits {
                max_depth: 64,
                max_items: self.config.max_frame_bytes,
            };
            let decoded = match message::decode_message(frame, &limits, self.config.max_frame_bytes)
            {
                Ok(d) => d,
                Err(e) => {
                    // One whole msgpack value that is not a message: skip
                    // it, the stream itself is intact.
                    self.count(
                        "message_unparsable",
                        &format!("{peer}: skipped a message: {e}"),
                    );
                    continue;
                }
            };
            match decoded {
                Decoded::Events {
                    tag,
                    entries,
                    options,
                    skipped,
                    skip_reason,
                    ..
                } => {
                    if skipped > 0 {
                        for _ in 0..skipped {
                            self.metrics.count_error("event_unparsable");
                        }
                        log::warn(&format!(
                            "forward input {}: {peer}: {skipped} events that do not parse skipped ({})",
                            self.id,
                            skip_reason.map_or_else(String::new, |r| r.to_string())
                        ));
                    }
                    let tag = String::from_utf8_lossy(&tag);
                    let tag: Arc<str> = match &self.config.tag_prefix {
                        Some(p) => format!("{p}.{tag}").into(),
                        None => tag.into(),
                    };
                    let received = crate::event::now_nanos();
                    let chunk = options.chunk.as_deref();
                    let events = self.events(entries, &hostname, received, chunk);
                    let n = events.len() as u64;
                    let seen = options
                        .chunk
                        .as_deref()
                        .is_some_and(|c| self.chunks.seen(c));
                    if seen {
                        // Stored already: its ack was lost or late, and the
                        // sender sent the same chunk again. Acked, not kept
                        // twice.
                        self.metrics.count_error("duplicate_chunk");
                    } else {
                        // On a full buffer the batch is decoded again from
                        // the frame rather than kept twice all along.
                        let again = || match message::decode_message(
                            frame,
                            &limits,
                            self.config.max_frame_bytes,
                        ) {
                            Ok(Decoded::Events { entries, .. }) => {
                                self.events(entries, &hostname, received, chunk)
                            }
                            _ => Vec::new(),
                        };
                        if n > 0 && !self.store(&tag, events, again, &downstream, &stop).await {
                            // Stopping: no ack, the sender sends it again.
                            return;
                        }
                        PluginMetrics::add(&self.metrics.records_in, n);
                        if let Some(c) = &options.chunk {
                            self.chunks.remember(c);
                        }
                    }
                    if let Some(chunk) = options.chunk {
                        let mut ack = Vec::new();
                        message::write_ack(&mut ack, &chunk);
                        if stream.write_all(&ack).await.is_err() {
                            return;
                        }
                    }
                }
                Decoded::Keepalive => {}
                _ => {
                    self.count(
                        "message_unparsable",
                        &format!("{peer}: an unexpected handshake message"),
                    );
                }
            }
        }
    }

    /// The agent's events of a message's entries.
    fn events(
        &self,
        entries: Vec<message::OwnedEntry>,
        peer_host: &str,
        received: i64,
        chunk: Option<&[u8]>,
    ) -> Vec<Event> {
        // Fluentd's chunk ids are base64 with a newline (`encode64`).
        let chunk = chunk.map(|c| String::from_utf8_lossy(c.trim_ascii_end()));
        entries
            .into_iter()
            .enumerate()
            .map(|(i, e)| {
                let mut record = e.record;
                if let (Some(k), Some(c)) = (self.config.chunk_id_key, &chunk) {
                    record.insert(k, format!("{c}:{i}").into());
                }
                if let Some(k) = &self.config.source_address_key {
                    record.insert(k.clone(), peer_host.into());
                }
                if let Some(k) = &self.config.source_hostname_key {
                    record.insert(k.clone(), peer_host.into());
                }
                // nil or 0: the time it arrived, as Fluentd does.
                let time = if e.time == 0 { received } else { e.time };
                Event { time, record }
            })
            .collect()
    }

    /// Buffers and syncs the events (on a blocking thread: buffers write
    /// and fsync files); while a buffer is full (`overflow_action: throw`)
    /// waits and tries again with the batch `again` makes. False when the
    /// source is stopping first.
    async fn store(
        &self,
        tag: &Arc<str>,
        events: Vec<Event>,
        again: impl Fn() -> Vec<Event>,
        downstream: &Arc<dyn Downstream>,
        stop: &AtomicBool,
    ) -> bool {
        let mut events = Some(events);
        let mut warned = false;
        loop {
            let batch = events.take().unwrap_or_else(&again);
            let d = downstream.clone();
            let t = tag.clone();
            let result = tokio::task::spawn_blocking(move || {
                d.emit(&t, batch)?;
                d.sync().map_err(BufferError::Io)
            })
            .await
            .expect("buffering does not panic");
            match result {
                Ok(()) => return true,
                Err(BufferError::Overflow) => {
                    if !warned {
                        self.count(
                            "buffer_full",
                            "a buffer is full: not reading more until there is room (senders wait)",
                        );
                        warned = true;
                    }
                }
                Err(e) => {
                    // Not acked: the sender sends it again.
                    self.count("buffer_failed", &format!("cannot buffer: {e}; not acked"));
                    return false;
                }
            }
            if stop.load(Ordering::Relaxed) {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    async fn handshake(
        &self,
        stream: &mut Box<dyn Io>,
        conn: &mut Conn,
        shared_key: &str,
    ) -> Result<(), Broken> {
        let nonce: [u8; 16] = std::array::from_fn(|_| fastrand::u8(..));
        let auth_salt: Vec<u8> = if self.config.users.is_empty() {
            Vec::new()
        } else {
            (0..16).map(|_| fastrand::u8(..)).collect()
        };
        let helo = handshake::helo(&nonce, &auth_salt, true);
        stream.write_all(&helo).await.map_err(|_| Broken::Closed)?;
        let stop = AtomicBool::new(false);
        conn.next_frame(stream, self, &stop).await?;
        let limits = Limits {
            max_depth: 4,
            max_items: 16,
        };
        let (value, _) = msgpack::decode(conn.frame(), &limits)
            .map_err(|e| Broken::Limit("handshake_failed", format!("PING: {e}")))?;
        let ping = handshake::Ping::from_value(&value)
            .map_err(|e| Broken::Limit("handshake_failed", format!("expected a PING: {e}")))?;
        let users: Vec<(&str, &str)> = self
            .config
            .users
            .iter()
            .map(|(u, p)| (u.as_str(), p.as_str()))
            .collect();
        let verdict = handshake::check_ping(&ping, &nonce, &auth_salt, shared_key, &users);
        let pong = handshake::pong(
            &ping,
            &verdict,
            &nonce,
            &self.config.self_hostname,
            shared_key,
        );
        stream.write_all(&pong).await.map_err(|_| Broken::Closed)?;
        if let Err(why) = verdict {
            return Err(Broken::Limit(
                "handshake_failed",
                format!("handshake refused: {why}"),
            ));
        }
        Ok(())
    }
}

/// What has been read of a connection and not yet used.
struct Conn {
    buf: Vec<u8>,
    /// What `buf`'s capacity holds of the input's frame memory.
    held: frame_memory::Held,
    /// The frame `next_frame` returned last, at the start of `buf`: used
    /// where it lies, it is removed when the next is asked for.
    frame_len: usize,
    /// How far the frame at the start of `buf` has been scanned.
    scan: msgpack::FrameScan,
    peer: String,
}

impl Conn {
    /// The frame the last `next_frame` found.
    fn frame(&self) -> &[u8] {
        &self.buf[..self.frame_len]
    }

    /// Makes the next whole msgpack value of the stream, at most
    /// `max_frame_bytes`, the `frame()`; Closed at the end of the stream
    /// (or idle too long, counted). Frames are not copied out: a busy
    /// connection keeps its buffer's capacity, an idle one gives it back.
    async fn next_frame(
        &mut self,
        stream: &mut Box<dyn Io>,
        input: &ForwardInput,
        stop: &AtomicBool,
    ) -> Result<(), Broken> {
        self.buf.drain(..std::mem::take(&mut self.frame_len));
        if self.held.others_wait() {
            // The capacity kept for the next frame goes to a connection
            // that waits for memory.
            self.buf.shrink_to(self.buf.len().max(4 << 10));
            self.held.shrink(self.buf.capacity());
        }
        let max = input.config.max_frame_bytes;
        // Only for finding where a frame ends: depth is bounded, items
        // are bounded by the frame size (each takes a byte at least).
        let limits = Limits {
            max_depth: 64,
            max_items: max,
        };
        let mut idle = Duration::ZERO;
        loop {
            match self.scan.next(&self.buf, &limits, max) {
                Ok(Some(len)) if len <= max => {
                    self.frame_len = len;
                    return Ok(());
                }
                Ok(Some(len)) => {
                    return Err(Broken::Limit(
                        "frame_too_large",
                        format!(
                        "a frame of {len} bytes is over max_frame_bytes ({max}); connection closed"
                    ),
                    ))
                }
                Ok(None) if self.buf.len() > max => {
                    return Err(Broken::Limit(
                        "frame_too_large",
                        format!("a frame over max_frame_bytes ({max}); connection closed"),
                    ))
                }
                Ok(None) => {}
                Err(
                    e @ (msgpack::DecodeError::TooLarge { .. }
                    | msgpack::DecodeError::TooManyItems { .. }),
                ) => {
                    return Err(Broken::Limit(
                        "frame_too_large",
                        format!("a frame over max_frame_bytes ({max}): {e}; connection closed"),
                    ))
                }
                Err(e @ msgpack::DecodeError::TooDeep { .. }) => {
                    return Err(Broken::Limit(
                        "stream_broken",
                        format!("not a frame ({e}); connection closed"),
                    ))
                }
                Err(e) => {
                    return Err(Broken::Limit(
                        "stream_broken",
                        format!("not msgpack ({e}); connection closed"),
                    ))
                }
            }
            if stop.load(Ordering::Relaxed) {
                return Err(Broken::Closed);
            }
            // Reads grow with what a frame has shown so far: an idle or
            // small-talking connection holds 4 KiB, not a frame's worth.
            let step = self.buf.len().clamp(4 << 10, 256 << 10);
            let want = (max + 1 - self.buf.len()).clamp(1, step);
            let start = self.buf.len();
            if start + want > self.buf.capacity() {
                // Grown by doubling, as `reserve` would, once the frames'
                // memory allows it.
                let capacity = (start + want).max(self.buf.capacity() * 2).min(max + 1);
                let limit = input.config.max_buffered_bytes;
                let waits = || {
                    input.tally(
                        "frame_memory_full",
                        &format!(
                            "{}: frames being read hold max_buffered_bytes ({limit}): not reading more until one is done (senders wait)",
                            self.peer
                        ),
                    )
                };
                if self
                    .held
                    .grow(capacity, waits, || stop.load(Ordering::Relaxed))
                    .await
                    .is_err()
                {
                    return Err(Broken::Closed);
                }
                self.buf.reserve_exact(capacity - start);
            }
            // Into capacity that is not zeroed first (zeroing 256 KiB per
            // read was 2% of the input's CPU), at most `want` bytes.
            self.buf.reserve(want);
            let read = if start == 0 && self.held.holds() {
                // Between frames, with capacity kept for the next one: it
                // goes back the moment another connection waits for memory,
                // not when this sender next writes.
                let memory = self.held.memory();
                let wanted = memory.wanted();
                tokio::pin!(wanted);
                wanted.as_mut().enable();
                let read = match self.held.others_wait() {
                    true => None,
                    false => {
                        let mut room = bytes::BufMut::limit(&mut self.buf, want);
                        let read = stream.read_buf(&mut room);
                        tokio::select! {
                            read = tokio::time::timeout(Duration::from_secs(1), read) => Some(read),
                            // `read_buf` is cancel safe: nothing read is lost.
                            () = &mut wanted => None,
                        }
                    }
                };
                let Some(read) = read else {
                    self.buf.shrink_to(4 << 10);
                    self.held.shrink(self.buf.capacity());
                    continue;
                };
                read
            } else {
                let mut room = bytes::BufMut::limit(&mut self.buf, want);
                tokio::time::timeout(Duration::from_secs(1), stream.read_buf(&mut room)).await
            };
            match read {
                Ok(Ok(0)) => {
                    if start > 0 {
                        return Err(Broken::Limit(
                            "stream_broken",
                            format!("closed in the middle of a frame ({start} bytes)"),
                        ));
                    }
                    return Err(Broken::Closed);
                }
                Ok(Ok(_)) => idle = Duration::ZERO,
                Ok(Err(_)) => return Err(Broken::Closed),
                Err(_) => {
                    // A second without a byte: the frame-sized capacity of
                    // a burst goes back.
                    self.buf.shrink_to(self.buf.len().max(4 << 10));
                    self.held.shrink(self.buf.capacity());
                    idle += Duration::from_secs(1);
                    if idle >= input.config.idle_timeout {
                        return Err(Broken::Limit(
                            "idle_timeout",
                            format!(
                                "idle for {:?}; connection closed ({})",
                                input.config.idle_timeout, self.peer
                            ),
                        ));
                    }
                }
            }
        }
    }
}

/// Fluentd's UDP heartbeat: whatever arrives is answered with one byte,
/// so a sender's `heartbeat_type udp` sees this receiver alive.
async fn heartbeat(udp: tokio::net::UdpSocket) {
    let mut buf = [0u8; 64];
    loop {
        match udp.recv_from(&mut buf).await {
            Ok((_, peer)) => {
                let _ = udp.send_to(&[0], peer).await;
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}
