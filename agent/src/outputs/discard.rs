//! `type: discard` (fluent-bit's `null`, Vector's `blackhole`; a plain
//! `null` would be YAML's null): accepts and drops every record. For
//! measuring a pipeline without a collector, and for routing a tag nowhere
//! on purpose (records no output matches are dropped too, but warned
//! about).

use crate::config::fields::{Fields, Result as ConfigResult};

use super::{Attempt, BoxFuture, Output, OutputSettings, RecordEncoding, RequestBody};

pub fn settings(_: &mut Fields) -> ConfigResult<Box<dyn OutputSettings>> {
    Ok(Box::new(Discard))
}

struct Discard;

impl OutputSettings for Discard {
    fn build(self: Box<Self>, _: &str) -> anyhow::Result<Box<dyn Output>> {
        Ok(Box::new(Discard))
    }
}

impl Output for Discard {
    fn describe(&self) -> (&'static str, Option<String>) {
        ("discard", None)
    }

    /// Its buffer counts records and keeps none of their fields.
    fn encoding(&self) -> RecordEncoding {
        RecordEncoding::Nothing
    }

    fn deliver(&self, _: RequestBody) -> BoxFuture<'_, Attempt> {
        Box::pin(std::future::ready(Attempt::Done))
    }
}
