//! Outputs, registered in one table (`TYPES`): `http`, `stdout`, `file`,
//! `discard`, and `copy` (fans out to several). Each leaf output is one module
//! with its settings and an `Output` that delivers a request body; a sink
//! wraps it with a buffer and flushers (`flusher/`, the delivery loop
//! they share: batching, retries, 413 splitting, dead letters, bodies
//! read from the chunk in pieces). A new
//! output is one module and one line in `TYPES`.

pub mod discard;
pub mod flusher;
pub mod forward;
pub mod http;
pub mod local;

use std::future::Future;
use std::pin::Pin;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

pub use flusher::RequestBody;

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
    /// Each stored record after its length (u32, little endian), back to
    /// back: the output cuts them into its own messages (`forward`)
    /// without parsing a record to find where it ends.
    LengthPrefixed,
}

impl RequestFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            RequestFormat::Ndjson => "application/x-ndjson",
            RequestFormat::JsonArray | RequestFormat::Json => "application/json",
            RequestFormat::LengthPrefixed => "application/octet-stream",
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

/// How a sink's buffer holds each record, chosen by its output: records
/// are encoded once, when they are buffered, into what the output sends.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RecordEncoding {
    /// The record as JSON (`http`, `stdout`, `file`, `discard`).
    Json,
    /// The tag as a msgpack str, then the forward entry `[time, record]`
    /// (`forward`): a request is cut into messages without re-encoding.
    Forward { time_as_integer: bool },
    /// Nothing but the frame (`discard`): a record that is dropped is not
    /// encoded first. Encoding into JSON was a seventh of a forward
    /// input's CPU when its records went to `discard`.
    Nothing,
}

impl RecordEncoding {
    /// Appends `event`, tagged `tag`, as this encoding stores it.
    pub fn encode(self, out: &mut Vec<u8>, tag: &str, event: &crate::event::Event) {
        match self {
            RecordEncoding::Json => event.record.write_json(out),
            RecordEncoding::Nothing => {}
            RecordEncoding::Forward { time_as_integer } => {
                rmp::encode::write_str(out, tag).expect("writing to a Vec");
                crate::forward::message::write_entry(
                    out,
                    event.time,
                    time_as_integer,
                    &event.record,
                );
            }
        }
    }

    /// A stored record as one line of JSON, for a dead-letter file: the
    /// record itself, or for `forward` `{"tag", "time_ns", "record"}` so
    /// that `replay` can send it again as it was.
    pub fn dead_letter_line(self, payload: &[u8]) -> Vec<u8> {
        match self {
            RecordEncoding::Json | RecordEncoding::Nothing => payload.to_vec(),
            RecordEncoding::Forward { .. } => {
                let value = match forward::decode_stored(payload) {
                    Ok((tag, time, record)) => serde_json::json!({
                        "tag": tag,
                        "time_ns": time,
                        "record": record,
                    }),
                    Err(e) => serde_json::json!({ "undecodable": e }),
                };
                value.to_string().into_bytes()
            }
        }
    }

    /// A dead-letter line back into what the buffer stores.
    pub fn parse_dead_letter_line(self, line: &[u8]) -> Result<Vec<u8>, String> {
        let value: serde_json::Value =
            serde_json::from_slice(line).map_err(|e| format!("not a JSON record: {e}"))?;
        match self {
            RecordEncoding::Json => Ok(line.to_vec()),
            RecordEncoding::Nothing => Ok(Vec::new()),
            RecordEncoding::Forward { .. } => {
                let (Some(tag), Some(time), Some(serde_json::Value::Object(record))) = (
                    value.get("tag").and_then(|t| t.as_str()),
                    value.get("time_ns").and_then(|t| t.as_i64()),
                    value.get("record"),
                ) else {
                    return Err("expected {\"tag\", \"time_ns\", \"record\"} as a forward output writes its dead letters".into());
                };
                let event = crate::event::Event {
                    time,
                    record: record.clone().into(),
                };
                let mut out = Vec::new();
                self.encode(&mut out, tag, &event);
                Ok(out)
            }
        }
    }
}

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What a leaf output does: deliver one request body of records.
pub trait Output: Send + Sync {
    /// Its `type:` and where it delivers to (secrets left out), for
    /// `/status`.
    fn describe(&self) -> (&'static str, Option<String>);
    /// How records are joined into a request body.
    fn format(&self) -> RequestFormat {
        RequestFormat::Ndjson
    }
    /// How its buffer holds records.
    fn encoding(&self) -> RecordEncoding {
        RecordEncoding::Json
    }
    /// Delivers one body; the flusher retries, splits or dead-letters by
    /// the answer.
    /// Called once when the pipeline goes live (not for a dry run or a
    /// reload that is given up): starts what runs beside deliveries.
    fn start(&self) {}
    fn deliver(&self, body: RequestBody) -> BoxFuture<'_, Attempt>;
    /// A forward output's receivers, for `/status` and `/metrics`.
    fn forward_servers(&self) -> Option<Arc<forward::servers::Servers>> {
        None
    }
}

/// An output's parsed settings. `build` runs when a pipeline is prepared
/// (client, TLS, directories), while a previous pipeline may still run.
pub trait OutputSettings: Send {
    fn build(self: Box<Self>, id: &str) -> anyhow::Result<Box<dyn Output>>;
    /// Whether the receiver can refuse records for good (and so a
    /// dead-letter directory is needed).
    fn can_reject(&self) -> bool {
        false
    }
    /// The buffer's `flush_thread_count` when the config gives none: how
    /// many requests are in flight at once.
    fn flush_threads(&self) -> usize {
        1
    }
}

type ParseSettings = fn(&mut Fields) -> ConfigResult<Box<dyn OutputSettings>>;

/// Every leaf output `type:`, and the function that reads its settings.
const TYPES: &[(&str, ParseSettings)] = &[
    ("http", http::settings),
    ("forward", forward::settings),
    ("stdout", local::stdout_settings),
    ("file", local::file_settings),
    ("discard", discard::settings),
];

/// A leaf output with its buffer.
pub struct Sink {
    pub id: String,
    pub output: Box<dyn Output>,
    /// `output.encoding()`, asked once.
    pub encoding: RecordEncoding,
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
    pub settings: Box<dyn OutputSettings>,
    pub buffer: BufferConfig,
    pub retry: RetryConfig,
    pub max_request_bytes: usize,
    pub max_request_records: usize,
    pub dead_letter_dir: Option<PathBuf>,
}

impl SinkConfig {
    /// Parses one leaf output (`type` already read). `id` names it in
    /// metrics and logs.
    pub fn from_config(kind: &str, id: String, f: &mut Fields) -> ConfigResult<SinkConfig> {
        let Some((_, parse)) = TYPES.iter().find(|(name, _)| *name == kind) else {
            let names: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
            return error(
                f.node(),
                format!(
                    "unknown output type `{kind}` (expected {} or copy)",
                    names.join(", ")
                ),
            );
        };
        let settings = parse(f)?;
        let buffer = match f.take("buffer") {
            Some(node) => {
                let mut b = Fields::new(node, "buffer")?;
                let cfg = BufferConfig::from_config(&mut b, settings.flush_threads())?;
                b.finish()?;
                cfg
            }
            None => BufferConfig {
                flush_thread_count: settings.flush_threads(),
                ..BufferConfig::memory_default()
            },
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
        if settings.can_reject() && dead_letter_dir.is_none() {
            return error(
                f.node(),
                format!("{kind} output with a memory buffer needs `dead_letter_dir` (where rejected requests are kept)"),
            );
        }
        Ok(SinkConfig {
            id,
            settings,
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
        let output = self.settings.build(&id)?;
        Ok(PreparedSink {
            config: SinkConfig {
                settings: Box::new(Spent),
                ..self
            },
            output,
        })
    }
}

/// A sink ready to open its buffer (see `SinkConfig::prepare`).
pub struct PreparedSink {
    /// The sink's settings; `settings` is spent (built into `output`).
    config: SinkConfig,
    output: Box<dyn Output>,
}

/// What is left of settings once built.
struct Spent;

impl OutputSettings for Spent {
    fn build(self: Box<Self>, id: &str) -> anyhow::Result<Box<dyn Output>> {
        anyhow::bail!("output {id}: built twice")
    }
}

impl PreparedSink {
    /// Opens the buffer, queueing what a previous run left in it. Done only
    /// once the previous pipeline has stopped, as both may use one buffer
    /// directory.
    pub fn open(self, registry: &Registry) -> anyhow::Result<(Sink, Vec<String>)> {
        let PreparedSink { config, output } = self;
        let metrics = registry.register("output", &config.id);
        let (buffer, notes) = Buffer::open(config.buffer, metrics.clone())
            .map_err(|e| anyhow::anyhow!("output {}: cannot open its buffer: {e}", config.id))?;
        let (type_name, endpoint) = output.describe();
        let buffer = Arc::new(buffer);
        output.start();
        let servers = output.forward_servers();
        if let Some(s) = &servers {
            registry.register_forward_servers(&config.id, s.clone());
        }
        let status = Arc::new(
            OutputStatus::new(config.id.clone(), type_name, endpoint, buffer.clone())
                .with_servers(servers),
        );
        Ok((
            Sink {
                id: config.id,
                encoding: output.encoding(),
                output,
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
