//! Sources, registered in one table: `type:` in the config picks one.

pub mod file_discovery;
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
