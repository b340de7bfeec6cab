//! Sources, registered in one table: `type:` in the config picks one.

pub mod file_discovery;
pub mod file_identity;
pub mod mysql_query;
pub mod position;
pub mod slow_log;
pub mod tail;

use std::sync::Arc;

use crate::buffer::BufferError;
use crate::config::fields::{error, Fields, Result};
use crate::event::Event;

/// Where a source hands its events: the pipeline's router as seen from
/// below, so that sources never depend on the pipeline that runs them.
pub trait Downstream: Send + Sync {
    /// Filters and buffers a batch of events that share `tag`; they are
    /// durable only after `sync`.
    fn emit(&self, tag: &Arc<str>, events: Vec<Event>) -> std::result::Result<(), BufferError>;
    /// Makes everything emitted so far durable (a source saves its
    /// positions only after this).
    fn sync(&self) -> std::io::Result<()>;
}

#[derive(Debug, Clone)]
pub enum SourceConfig {
    Tail(tail::TailConfig),
    /// A slow query log: followed like `tail`, framed into entries.
    MysqlSlowQuery(tail::TailConfig),
    MysqlQuery(mysql_query::MysqlQueryConfig),
}

impl SourceConfig {
    /// What can be checked without touching a running pipeline (whose
    /// sources may share this one's pos_file): the pos_file's directory
    /// exists and is writable.
    pub fn prepare(&self) -> anyhow::Result<()> {
        match self {
            SourceConfig::Tail(c) | SourceConfig::MysqlSlowQuery(c) => {
                if let Some(pos) = &c.pos_file {
                    crate::writable::ensure_parent(pos, "the directory of pos_file")?;
                    // A pos_file that exists must be readable: the source
                    // reads it when it starts, after the old one stopped.
                    if pos.exists() {
                        std::fs::File::open(pos)
                            .and_then(|f| f.metadata())
                            .and_then(|m| match m.is_file() {
                                true => Ok(()),
                                false => Err(std::io::Error::other("not a regular file")),
                            })
                            .map_err(|e| {
                                anyhow::anyhow!("pos_file {} is unreadable: {e}", pos.display())
                            })?;
                    }
                }
                Ok(())
            }
            SourceConfig::MysqlQuery(_) => Ok(()),
        }
    }

    pub fn from_config(kind: &str, f: &mut Fields) -> Result<SourceConfig> {
        Ok(match kind {
            "tail" => SourceConfig::Tail(tail::TailConfig::from_config(f, false)?),
            "mysql_slow_query" => {
                SourceConfig::MysqlSlowQuery(tail::TailConfig::from_config(f, true)?)
            }
            "mysql_query" => SourceConfig::MysqlQuery(mysql_query::MysqlQueryConfig::from_config(f)?),
            other => {
                return error(
                    f.node(),
                    format!("unknown source type `{other}` (expected tail, mysql_slow_query or mysql_query)"),
                )
            }
        })
    }
}
