//! One connection to a forward receiver: TCP or TLS, the shared-key
//! handshake when configured, then PackedForward messages written back to
//! back and their acks read and matched by chunk id. A connection is
//! reused (keepalive) only after every ack it waited for has arrived: one
//! that timed out is closed, so a late ack can never be taken for the next
//! request's (Fluentd's stale-ack problem on reused sockets).

use std::collections::HashSet;
use std::pin::Pin;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context as _};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::forward::handshake;
use crate::forward::message;
use crate::forward::msgpack::{self, Limits};

/// A TCP or TLS stream.
pub trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// Answers from a receiver are small (acks, a PONG): anything bigger or
/// deeper is a broken or hostile peer.
const ANSWER_LIMITS: Limits = Limits {
    max_depth: 8,
    max_items: 64,
};
const MAX_ANSWER_BYTES: usize = 64 << 10;

pub struct Connection {
    stream: Pin<Box<dyn Stream>>,
    buf: Vec<u8>,
    pub last_used: Instant,
}

/// How to reach and greet one receiver.
pub struct Dial<'a> {
    pub host: &'a str,
    pub port: u16,
    pub tls: Option<&'a tokio_native_tls::TlsConnector>,
    pub connect_timeout: Duration,
    pub shared_key: Option<&'a str>,
    pub self_hostname: &'a str,
    pub user: Option<(&'a str, &'a str)>,
}

impl Connection {
    pub async fn open(dial: &Dial<'_>) -> anyhow::Result<Connection> {
        let tcp = tokio::time::timeout(
            dial.connect_timeout,
            TcpStream::connect((dial.host, dial.port)),
        )
        .await
        .map_err(|_| {
            std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("no connection within {:?}", dial.connect_timeout),
            )
        })?
        .context("cannot connect")?;
        let _ = tcp.set_nodelay(true);
        let stream: Pin<Box<dyn Stream>> = match dial.tls {
            Some(tls) => Box::pin(
                tokio::time::timeout(dial.connect_timeout, tls.connect(dial.host, tcp))
                    .await
                    .map_err(|_| anyhow!("no TLS handshake within {:?}", dial.connect_timeout))?
                    .context(
                        "TLS handshake (is the receiver's certificate trusted? see tls_ca_file)",
                    )?,
            ),
            None => Box::pin(tcp),
        };
        let mut conn = Connection {
            stream,
            buf: Vec::new(),
            last_used: Instant::now(),
        };
        if let Some(key) = dial.shared_key {
            conn.handshake(dial, key).await?;
        }
        Ok(conn)
    }

    /// HELO from the receiver, PING from us, PONG back.
    async fn handshake(&mut self, dial: &Dial<'_>, shared_key: &str) -> anyhow::Result<()> {
        let deadline = Instant::now() + dial.connect_timeout;
        let helo = self
            .next_answer(deadline, |v| {
                handshake::Helo::from_value(v).map_err(|e| anyhow!("{e}"))
            })
            .await
            .context("waiting for the receiver's HELO (is shared_key set on the receiver?)")?;
        let ping = handshake::ping(&helo, dial.self_hostname, shared_key, dial.user)
            .map_err(|e| anyhow!("handshake: {e}"))?;
        self.stream
            .write_all(&ping.bytes)
            .await
            .context("sending PING")?;
        let pong = self
            .next_answer(deadline, |v| {
                handshake::Pong::from_value(v).map_err(|e| anyhow!("{e}"))
            })
            .await
            .context("waiting for the receiver's PONG")?;
        ping.check_pong(&pong, shared_key)
            .map_err(|e| anyhow!("handshake refused: {e}"))?;
        Ok(())
    }

    /// Writes `messages` (each with its chunk id, or none when no ack is
    /// wanted) and, for those with an id, waits until every ack has come
    /// or `deadline` passes. Err leaves the connection unusable.
    pub async fn send(
        &mut self,
        messages: &[super::Message],
        deadline: Instant,
    ) -> anyhow::Result<()> {
        let mut waiting: HashSet<&[u8]> = HashSet::new();
        for (bytes, chunk) in messages {
            let left = deadline.saturating_duration_since(Instant::now());
            tokio::time::timeout(left, self.stream.write_all(bytes))
                .await
                .map_err(|_| anyhow!("the receiver took no data for {left:?}"))?
                .context("sending")?;
            if let Some(c) = chunk {
                waiting.insert(c);
            }
        }
        tokio::time::timeout(
            deadline.saturating_duration_since(Instant::now()),
            self.stream.flush(),
        )
        .await
        .map_err(|_| anyhow!("the receiver took no data"))?
        .context("sending")?;
        while !waiting.is_empty() {
            let acked = self
                .next_answer(deadline, |v| {
                    message::read_ack(v)
                        .map(<[u8]>::to_vec)
                        .ok_or_else(|| anyhow!("expected an ack, received something else"))
                })
                .await
                .map_err(|e| anyhow!("{} chunks not acked: {e:#}", waiting.len()))?;
            // An ack for a chunk not sent on this connection is ignored.
            waiting.remove(acked.as_slice());
        }
        self.last_used = Instant::now();
        Ok(())
    }

    /// Reads the next msgpack value the receiver sends and hands it to
    /// `take`, by `deadline`.
    async fn next_answer<T>(
        &mut self,
        deadline: Instant,
        take: impl Fn(&msgpack::Value) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        loop {
            if let Some(len) =
                msgpack::value_len(&self.buf, &ANSWER_LIMITS).map_err(|e| anyhow!("{e}"))?
            {
                let result = {
                    let (value, _) = msgpack::decode(&self.buf[..len], &ANSWER_LIMITS)
                        .map_err(|e| anyhow!("{e}"))?;
                    take(&value)
                };
                self.buf.drain(..len);
                return result;
            }
            if self.buf.len() > MAX_ANSWER_BYTES {
                bail!(
                    "the receiver sent {} bytes that are not an answer",
                    self.buf.len()
                );
            }
            let mut chunk = [0u8; 4096];
            let left = deadline.saturating_duration_since(Instant::now());
            let n = tokio::time::timeout(left, self.stream.read(&mut chunk))
                .await
                .map_err(|_| anyhow!("no answer within the timeout"))?
                .context("reading the answer")?;
            if n == 0 {
                // An io::Error: a transport failure, which a heartbeat can
                // see mended (see `servers::Cause`).
                return Err(std::io::Error::new(
                    std::io::ErrorKind::UnexpectedEof,
                    "the receiver closed the connection",
                )
                .into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Whether the receiver closed the idle connection (or sent something
    /// unasked): such a connection is not reused.
    pub fn is_stale(&mut self) -> bool {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut byte = [0u8; 1];
        let mut rb = tokio::io::ReadBuf::new(&mut byte);
        match self.stream.as_mut().poll_read(&mut cx, &mut rb) {
            std::task::Poll::Pending => !self.buf.is_empty(),
            std::task::Poll::Ready(_) => true,
        }
    }
}
