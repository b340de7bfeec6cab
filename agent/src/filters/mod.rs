//! Filters, registered in one table: `type:` in the config picks one.

pub mod grep;
pub mod record_transformer;

use crate::config::fields::{error, Fields, Result};
use crate::event::Event;

#[derive(Debug)]
pub enum Filter {
    RecordTransformer(record_transformer::RecordTransformer),
    Grep(grep::Grep),
}

impl Filter {
    pub fn from_config(kind: &str, f: &mut Fields) -> Result<Filter> {
        Ok(match kind {
            "record_transformer" => {
                Filter::RecordTransformer(record_transformer::RecordTransformer::from_config(f)?)
            }
            "grep" => Filter::Grep(grep::Grep::from_config(f)?),
            other => {
                return error(
                    f.node(),
                    format!("unknown filter type `{other}` (expected record_transformer or grep)"),
                )
            }
        })
    }

    /// Applies the filter to a batch of events tagged `tag`.
    pub fn apply(&self, tag: &str, events: &mut Vec<Event>) {
        match self {
            Filter::RecordTransformer(t) => t.apply(tag, events),
            Filter::Grep(g) => g.apply(events),
        }
    }
}
