//! Outputs, registered in one table: `http`, `stdout`, `file`, and `copy`
//! (fans out to several). Each leaf output ("sink") owns a buffer and its
//! flushers; `flusher.rs` holds the delivery loop they share.

pub mod flusher;
pub mod http;
pub mod local;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use crate::buffer::{Buffer, BufferConfig, Storage};
use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::metrics::{PluginMetrics, Registry};
use crate::status::OutputStatus;
use crate::writable;
use crate::yaml::NodeKind;

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RequestFormat {
    /// One JSON record per line.
    Ndjson,
    /// `[r1,r2,...]`
    JsonArray,
    /// One record per request.
    Json,
}

impl RequestFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            RequestFormat::Ndjson => "application/x-ndjson",
            RequestFormat::JsonArray | RequestFormat::Json => "application/json",
        }
    }
}

/// What one delivery attempt came to.
#[derive(Debug)]
pub enum Attempt {
    Done,
    /// Transient (connection error, 408, 429, 5xx): try again later.
    Retry {
        reason: String,
        after: Option<Duration>,
    },
    /// The receiver refused this request for good (other 4xx).
    Reject {
        status: u16,
        body: String,
    },
}

#[derive(Debug, Clone)]
pub struct RetryConfig {
    pub wait: Duration,
    pub exponential_base: f64,
    pub max_interval: Duration,
    pub timeout: Duration,
    pub max_times: Option<u64>,
    pub forever: bool,
    pub randomize: bool,
}

impl RetryConfig {
    fn from_config(f: &mut Fields) -> ConfigResult<RetryConfig> {
        let max_times = f
            .take("retry_max_times")
            .map(crate::config::fields::uint)
            .transpose()?;
        Ok(RetryConfig {
            wait: f.duration("retry_wait", Duration::from_secs(1))?,
            exponential_base: f.float("retry_exponential_backoff_base", 2.0)?,
            max_interval: f.duration("retry_max_interval", Duration::from_secs(300))?,
            timeout: f.duration("retry_timeout", Duration::from_secs(72 * 3600))?,
            max_times,
            forever: f.bool("retry_forever", false)?,
            randomize: f.bool("retry_randomize", true)?,
        })
    }

    /// The wait before retry number `n` (0-based).
    pub fn backoff(&self, n: u32) -> Duration {
        let base = self.wait.as_secs_f64() * self.exponential_base.powi(n as i32);
        let capped = base.min(self.max_interval.as_secs_f64());
        let jitter = if self.randomize {
            0.875 + fastrand::f64() * 0.25
        } else {
            1.0
        };
        Duration::from_secs_f64((capped * jitter).min(self.max_interval.as_secs_f64()))
    }
}

pub enum SinkKind {
    Http(Box<http::HttpSink>),
    Stdout,
    File(local::FileSink),
}

/// A leaf output with its buffer.
pub struct Sink {
    pub id: String,
    pub kind: SinkKind,
    pub buffer: Arc<Buffer>,
    pub metrics: Arc<PluginMetrics>,
    /// Its entry in `/status`, kept current by the flushers.
    pub status: Arc<OutputStatus>,
    pub retry: RetryConfig,
    pub max_request_bytes: usize,
    pub max_request_records: usize,
    pub dead_letter_dir: Option<PathBuf>,
}

/// A configured `outputs:` entry: its tag pattern and its sinks.
pub struct OutputConfig {
    pub pattern: crate::tag_pattern::TagPattern,
    pub sinks: Vec<SinkConfig>,
}

pub struct SinkConfig {
    pub id: String,
    pub kind: SinkKindConfig,
    pub buffer: BufferConfig,
    pub retry: RetryConfig,
    pub max_request_bytes: usize,
    pub max_request_records: usize,
    pub dead_letter_dir: Option<PathBuf>,
}

pub enum SinkKindConfig {
    Http(http::HttpConfig),
    Stdout,
    File(local::FileConfig),
}

impl SinkConfig {
    /// Parses one leaf output (`type` already read). `id` names it in
    /// metrics and logs.
    pub fn from_config(kind: &str, id: String, f: &mut Fields) -> ConfigResult<SinkConfig> {
        let sink = match kind {
            "http" => SinkKindConfig::Http(http::HttpConfig::from_config(f)?),
            "stdout" => SinkKindConfig::Stdout,
            "file" => SinkKindConfig::File(local::FileConfig::from_config(f)?),
            other => {
                return error(
                    f.node(),
                    format!("unknown output type `{other}` (expected http, stdout, file or copy)"),
                )
            }
        };
        let buffer = match f.take("buffer") {
            Some(node) => {
                let mut b = Fields::new(node, "buffer")?;
                let cfg = BufferConfig::from_config(&mut b)?;
                b.finish()?;
                cfg
            }
            None => BufferConfig::memory_default(),
        };
        let retry = RetryConfig::from_config(f)?;
        let max_request_bytes = f.size("max_request_bytes", 1 << 20)? as usize;
        let max_request_records = f.uint("max_request_records", 10_000)? as usize;
        if max_request_bytes == 0 || max_request_records == 0 {
            return error(
                f.node(),
                "max_request_bytes and max_request_records must be > 0",
            );
        }
        let dead_letter_dir = match f.string("dead_letter_dir")? {
            Some(d) => Some(PathBuf::from(d)),
            None => match &buffer.storage {
                Storage::File(dir) => Some(dir.join("dead-letter")),
                Storage::Memory => None,
            },
        };
        if matches!(sink, SinkKindConfig::Http(_)) && dead_letter_dir.is_none() {
            return error(
                f.node(),
                "http output with a memory buffer needs `dead_letter_dir` (where rejected requests are kept)",
            );
        }
        Ok(SinkConfig {
            id,
            kind: sink,
            buffer,
            retry,
            max_request_bytes,
            max_request_records,
            dead_letter_dir,
        })
    }

    /// Everything that can fail without touching a running pipeline: the
    /// client (TLS set-up, CA file) is built and the directories the sink
    /// writes are created and proven writable. A reload prepares the new
    /// configuration this way before it stops the old one.
    pub fn prepare(self) -> anyhow::Result<PreparedSink> {
        let id = self.id.clone();
        if let Storage::File(dir) = &self.buffer.storage {
            writable::ensure_dir(dir, &format!("output {id}: buffer path"))?;
        }
        if let Some(dir) = &self.dead_letter_dir {
            writable::ensure_dir(dir, &format!("output {id}: dead_letter_dir"))?;
        }
        let kind = match self.kind {
            SinkKindConfig::Http(c) => SinkKind::Http(Box::new(
                http::HttpSink::new(c).map_err(|e| anyhow::anyhow!("output {id}: {e:#}"))?,
            )),
            SinkKindConfig::Stdout => SinkKind::Stdout,
            SinkKindConfig::File(c) => {
                writable::ensure_parent(&c.path, &format!("output {id}: the directory of path"))?;
                SinkKind::File(local::FileSink::new(c))
            }
        };
        Ok(PreparedSink {
            config: SinkConfig {
                kind: SinkKindConfig::Stdout,
                ..self
            },
            kind,
        })
    }
}

/// A sink ready to open its buffer (see `SinkConfig::prepare`).
pub struct PreparedSink {
    /// The sink's settings; its `kind` is spent (built into `kind` below).
    config: SinkConfig,
    kind: SinkKind,
}

impl PreparedSink {
    /// Opens the buffer, queueing what a previous run left in it. Done only
    /// once the previous pipeline has stopped, as both may use one buffer
    /// directory.
    pub fn open(self, registry: &Registry) -> anyhow::Result<(Sink, Vec<String>)> {
        let PreparedSink { config, kind } = self;
        let metrics = registry.register("output", &config.id);
        let (buffer, notes) = Buffer::open(config.buffer, metrics.clone())
            .map_err(|e| anyhow::anyhow!("output {}: cannot open its buffer: {e}", config.id))?;
        let (type_name, endpoint) = match &kind {
            SinkKind::Http(h) => ("http", Some(h.endpoint_without_secrets())),
            SinkKind::Stdout => ("stdout", None),
            SinkKind::File(f) => ("file", Some(f.path().display().to_string())),
        };
        let buffer = Arc::new(buffer);
        let status = Arc::new(OutputStatus::new(
            config.id.clone(),
            type_name,
            endpoint,
            buffer.clone(),
        ));
        Ok((
            Sink {
                id: config.id,
                kind,
                buffer,
                metrics,
                status,
                retry: config.retry,
                max_request_bytes: config.max_request_bytes,
                max_request_records: config.max_request_records,
                dead_letter_dir: config.dead_letter_dir,
            },
            notes,
        ))
    }
}

impl OutputConfig {
    pub fn from_config(index: usize, f: &mut Fields) -> ConfigResult<OutputConfig> {
        let pattern_node = f.required("match")?;
        let pattern =
            crate::tag_pattern::TagPattern::parse(&crate::config::fields::string(pattern_node)?)
                .or_else(|e| error(pattern_node, e))?;
        let kind = f.required_string("type")?;
        let id = f.string("id")?.unwrap_or_else(|| format!("output{index}"));
        let sinks = if kind == "copy" {
            let list = f.required("outputs")?;
            let NodeKind::Seq(items) = &list.kind else {
                return error(list, "copy: `outputs` must be a list of outputs");
            };
            let mut sinks = Vec::new();
            for (i, item) in items.iter().enumerate() {
                let mut s = Fields::new(item, "copy output")?;
                let kind = s.required_string("type")?;
                let sub_id = s.string("id")?.unwrap_or_else(|| format!("{id}.{i}"));
                sinks.push(SinkConfig::from_config(&kind, sub_id, &mut s)?);
                s.finish()?;
            }
            sinks
        } else {
            vec![SinkConfig::from_config(&kind, id, f)?]
        };
        Ok(OutputConfig { pattern, sinks })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_caps() {
        let r = RetryConfig {
            wait: Duration::from_secs(1),
            exponential_base: 2.0,
            max_interval: Duration::from_secs(10),
            timeout: Duration::from_secs(100),
            max_times: None,
            forever: false,
            randomize: false,
        };
        let waits: Vec<u64> = (0..6).map(|n| r.backoff(n).as_secs()).collect();
        assert_eq!(waits, [1, 2, 4, 8, 10, 10]);
        let jittered = RetryConfig {
            randomize: true,
            ..r
        };
        for n in 0..4 {
            let w = jittered.backoff(n).as_secs_f64();
            let plain = 2f64.powi(n as i32);
            assert!(w >= plain * 0.875 && w <= plain * 1.125, "{n}: {w}");
        }
    }
}
