//! Sources, registered in one table: `type:` in the config picks one.

pub mod file_discovery;
pub mod file_identity;
pub mod file_key;
pub mod forward;
pub mod http;
pub mod mysql_query;
pub mod position;
pub mod position_journal;
pub mod slow_log;
pub mod tail;

use std::path::Path;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

use crate::buffer::BufferError;
use crate::config::fields::{error, Fields, Result};
use crate::event::Event;
use crate::metrics::PluginMetrics;
use crate::status::SourceStatus;

/// Where a source hands its events: the pipeline's router as seen from
/// below, so that sources never depend on the pipeline that runs them.
pub trait Downstream: Send + Sync {
    /// Filters and buffers a batch of events that share `tag`; they are
    /// durable only after `sync`.
    fn emit(&self, tag: &Arc<str>, events: Vec<Event>) -> std::result::Result<(), BufferError>;
    /// Makes everything emitted so far durable (a source saves its
    /// positions only after this).
    fn sync(&self) -> std::io::Result<()>;
    /// Whether what `emit` returned from is kept if the process is killed
    /// before `sync` (every buffer is a file; the page cache keeps it).
    fn survives_kill(&self) -> bool {
        false
    }
}

/// How a built source runs: on its own thread, handing events downstream,
/// until `stop`.
pub type Run = Box<dyn FnOnce(Arc<dyn Downstream>, Arc<AtomicBool>) + Send>;

/// A source built and ready to run.
pub struct Built {
    /// Its entry in `/status`, kept current by the source.
    pub status: Arc<SourceStatus>,
    pub run: Run,
}

/// A source's parsed settings.
pub trait SourceSettings: Send {
    /// Its `type:`.
    fn kind(&self) -> &'static str;
    /// What can be checked while a previous pipeline, whose sources may
    /// share this one's pos_file, still runs.
    fn prepare(&self) -> anyhow::Result<()> {
        Ok(())
    }
    /// Descriptors it may hold at once (for the RLIMIT_NOFILE check).
    fn max_open_files(&self) -> u64 {
        0
    }
    /// Opens what it needs (positions, ...) once the previous pipeline
    /// has stopped.
    fn build(self: Box<Self>, id: String, metrics: Arc<PluginMetrics>) -> anyhow::Result<Built>;
}

type ParseSettings = fn(&mut Fields) -> Result<Box<dyn SourceSettings>>;

/// Every source `type:`, and the function that reads its settings.
const TYPES: &[(&str, ParseSettings)] = &[
    ("tail", tail::settings),
    ("mysql_slow_query", tail::slow_query_settings),
    ("mysql_query", mysql_query::settings),
    ("forward", forward::settings),
    ("http", http::settings),
];

/// Reads the settings of a source of type `kind`.
pub fn from_config(kind: &str, f: &mut Fields) -> Result<Box<dyn SourceSettings>> {
    match TYPES.iter().find(|(name, _)| *name == kind) {
        Some((_, parse)) => parse(f),
        None => {
            let names: Vec<&str> = TYPES.iter().map(|(n, _)| *n).collect();
            error(
                f.node(),
                format!(
                    "unknown source type `{kind}` (expected {})",
                    names.join(", ")
                ),
            )
        }
    }
}

/// The pos_file's directory is writable and an existing pos_file is a
/// readable regular file: a source reads it when it starts, after the old
/// pipeline stopped, too late to refuse a reload.
pub fn check_pos_file(pos: &Path) -> anyhow::Result<()> {
    crate::writable::ensure_parent(pos, "the directory of pos_file")?;
    if pos.exists() {
        // The type first: opening a FIFO would block the reload.
        std::fs::metadata(pos)
            .and_then(|m| match m.is_file() {
                true => Ok(()),
                false => Err(std::io::Error::other("not a regular file")),
            })
            .and_then(|()| std::fs::File::open(pos).map(drop))
            .map_err(|e| anyhow::anyhow!("pos_file {} is unreadable: {e}", pos.display()))?;
    }
    Ok(())
}
