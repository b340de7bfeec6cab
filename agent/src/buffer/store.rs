//! Where a buffer keeps its chunks' bytes, behind one trait so that the
//! queue (`Buffer`) never asks which: it decides which chunk is open,
//! sealed, due or in flight and how much each holds; a `ChunkStore` creates
//! chunks and finds those a previous run left, and each `StoredChunk`
//! appends, reads, records delivery progress and goes away. Two stores:
//! `memory` (a byte vector per chunk, lost at exit) and `file` (a file per
//! chunk, fsynced, found again after a crash).

use std::fs::File;
use std::io;
use std::time::Instant;

use super::chunk::{ChunkBytes, ChunkRecords};

pub trait ChunkStore: Send + Sync {
    /// The buffer, for messages ("memory buffer", "buffer DIR").
    fn describe(&self) -> String;

    /// The chunks a previous run left, to be queued again.
    fn recover(&self) -> io::Result<Recovery>;

    /// A new, empty chunk numbered `id`.
    fn create(&self, id: u64) -> io::Result<Box<dyn StoredChunk>>;
}

/// One chunk's bytes: whole frames (see `chunk`), appended while the chunk
/// is open, read back for each delivery.
pub trait StoredChunk: Send + Sync {
    /// The chunk, for messages: its file, or "memory chunk N".
    fn describe(&self) -> String;

    /// Appends frames. On an error part of them may have landed:
    /// `cut_back` takes them off again.
    fn append(&mut self, frames: &[u8]) -> io::Result<()>;

    /// Cuts the chunk back to its first `len` bytes after a failed append.
    fn cut_back(&mut self, len: u64) -> io::Result<()>;

    /// No more appends. Returns its writes not yet durable, for the next
    /// `Buffer::sync`; a sealed chunk holds no descriptor open.
    fn seal(&mut self) -> Option<Unsynced>;

    /// The open chunk's writes not yet durable, for `Buffer::sync`.
    fn unsynced(&mut self) -> io::Result<Option<Unsynced>>;

    /// Its bytes, to be read for a delivery.
    fn open(&self) -> io::Result<ChunkBytes>;

    /// Its records `..upto` (of `records`, read from it) are accounted for:
    /// kept where a restart finds them, if the store survives one.
    fn acknowledge(&mut self, records: &ChunkRecords, upto: usize) -> io::Result<()>;

    /// Delivered: gone from the store.
    fn delete(self: Box<Self>);

    /// Unreadable: set aside (or dropped), with its `records` not sent.
    /// Returns what was done, for the log.
    fn quarantine(self: Box<Self>, why: &str, records: u64) -> String;
}

/// Writes not yet durable. `Buffer::sync` fsyncs them outside its lock, so
/// that flushers go on while the disk catches up.
pub struct Unsynced {
    file: File,
    /// The directory of a file whose name is not yet durable either.
    dir: Option<std::path::PathBuf>,
}

impl Unsynced {
    pub fn new(file: File) -> Unsynced {
        Unsynced { file, dir: None }
    }

    /// Also fsyncs `dir`, which holds the file's new name.
    pub fn with_dir(file: File, dir: std::path::PathBuf) -> Unsynced {
        Unsynced {
            file,
            dir: Some(dir),
        }
    }

    pub fn sync(&self) -> io::Result<()> {
        self.file.sync_data()?;
        if let Some(dir) = &self.dir {
            File::open(dir)?.sync_all()?;
        }
        Ok(())
    }
}

/// What a store found at start-up.
pub struct Recovery {
    /// Oldest first.
    pub chunks: Vec<RecoveredChunk>,
    /// One line per chunk, for the log.
    pub notes: Vec<String>,
    /// The id of the next new chunk.
    pub next_id: u64,
    /// Chunks found unreadable and set aside.
    pub quarantined: u64,
}

/// A chunk a previous run left, sealed.
pub struct RecoveredChunk {
    pub id: u64,
    /// When its first record was written.
    pub created: Instant,
    pub bytes: u64,
    pub records: u64,
    /// Its first records, delivered before the restart.
    pub delivered: usize,
    pub data: Box<dyn StoredChunk>,
}
