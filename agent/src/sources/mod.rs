//! Sources, registered in one table: `type:` in the config picks one.

pub mod position;
pub mod slow_log;
pub mod tail;

use crate::config::fields::{error, Fields, Result};

#[derive(Debug, Clone)]
pub enum SourceConfig {
    Tail(tail::TailConfig),
}

impl SourceConfig {
    pub fn from_config(kind: &str, f: &mut Fields) -> Result<SourceConfig> {
        Ok(match kind {
            "tail" => SourceConfig::Tail(tail::TailConfig::from_config(f)?),
            other => {
                return error(
                    f.node(),
                    format!("unknown source type `{other}` (expected tail)"),
                )
            }
        })
    }
}
