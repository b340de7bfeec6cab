//! Sources, registered in one table: `type:` in the config picks one.

pub mod mysql_query;
pub mod position;
pub mod slow_log;
pub mod tail;

use crate::config::fields::{error, Fields, Result};

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
