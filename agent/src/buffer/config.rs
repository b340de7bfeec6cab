//! A buffer's settings (`buffer:` under an output): which store, the limits
//! of a chunk and of the whole buffer, what a full buffer does, how often
//! and by how many flushers it is delivered.

use std::path::PathBuf;
use std::time::Duration;

use crate::config::fields::{error, Fields, Result as ConfigResult};

#[derive(Debug, Clone, PartialEq)]
pub enum Storage {
    Memory,
    File(PathBuf),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Overflow {
    Block,
    DropOldest,
    Throw,
}

#[derive(Debug, Clone)]
pub struct BufferConfig {
    pub storage: Storage,
    pub chunk_limit_size: u64,
    pub total_limit_size: u64,
    pub flush_interval: Duration,
    pub flush_thread_count: usize,
    pub overflow_action: Overflow,
}

impl BufferConfig {
    pub fn memory_default() -> BufferConfig {
        BufferConfig {
            storage: Storage::Memory,
            chunk_limit_size: 1 << 20,
            total_limit_size: 512 << 20,
            flush_interval: Duration::from_secs(1),
            flush_thread_count: 1,
            overflow_action: Overflow::Block,
        }
    }

    /// `flushers`: the output's default `flush_thread_count`.
    pub fn from_config(f: &mut Fields, flushers: usize) -> ConfigResult<BufferConfig> {
        let kind = f.string("type")?.unwrap_or_else(|| "memory".into());
        let storage = match kind.as_str() {
            "memory" => Storage::Memory,
            "file" => Storage::File(PathBuf::from(f.required_string("path")?)),
            other => {
                return error(
                    f.node(),
                    format!("buffer: unknown type `{other}` (expected memory or file)"),
                )
            }
        };
        let default_total = if storage == Storage::Memory {
            512 << 20
        } else {
            8 << 30
        };
        let cfg = BufferConfig {
            storage,
            chunk_limit_size: f.size("chunk_limit_size", 1 << 20)?,
            total_limit_size: f.size("total_limit_size", default_total)?,
            flush_interval: f.duration("flush_interval", Duration::from_secs(1))?,
            flush_thread_count: f.uint("flush_thread_count", flushers as u64)? as usize,
            overflow_action: match f.string("overflow_action")?.as_deref() {
                None | Some("block") => Overflow::Block,
                Some("drop_oldest") | Some("drop_oldest_chunk") => Overflow::DropOldest,
                Some("throw") | Some("throw_exception") => Overflow::Throw,
                Some(other) => {
                    return error(
                        f.node(),
                        format!(
                        "buffer: overflow_action `{other}` (expected block, drop_oldest or throw)"
                    ),
                    )
                }
            },
        };
        if cfg.chunk_limit_size == 0 || cfg.total_limit_size < cfg.chunk_limit_size {
            return error(
                f.node(),
                "buffer: total_limit_size must be at least chunk_limit_size, which must be > 0",
            );
        }
        if cfg.flush_thread_count == 0 {
            return error(f.node(), "buffer: flush_thread_count must be at least 1");
        }
        Ok(cfg)
    }
}
