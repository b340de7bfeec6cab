//! The memory store: each chunk a byte vector. No disk I/O, and nothing
//! survives the process: what is unsent at exit is lost, and there is no
//! progress to keep nor anything to find at start-up.

use std::io;
use std::sync::Arc;

use super::chunk::{ChunkBytes, ChunkRecords};
use super::store::{ChunkStore, Recovery, StoredChunk, Unsynced};

pub struct MemoryStore;

impl ChunkStore for MemoryStore {
    fn describe(&self) -> String {
        "memory buffer".to_string()
    }

    fn recover(&self) -> io::Result<Recovery> {
        Ok(Recovery {
            chunks: Vec::new(),
            notes: Vec::new(),
            next_id: 1,
            quarantined: 0,
        })
    }

    fn create(&self, id: u64) -> io::Result<Box<dyn StoredChunk>> {
        Ok(Box::new(MemoryChunk {
            id,
            bytes: Arc::new(Vec::new()),
        }))
    }
}

struct MemoryChunk {
    id: u64,
    /// Shared with the delivery reading it once sealed (a copy per
    /// delivery was a MiB each); only an open chunk is appended to, and
    /// nothing reads an open chunk, so appends never copy it.
    bytes: Arc<Vec<u8>>,
}

impl StoredChunk for MemoryChunk {
    fn describe(&self) -> String {
        format!("memory chunk {}", self.id)
    }

    fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        Arc::make_mut(&mut self.bytes).extend_from_slice(frames);
        Ok(())
    }

    fn cut_back(&mut self, len: u64) -> io::Result<()> {
        Arc::make_mut(&mut self.bytes).truncate(len as usize);
        Ok(())
    }

    fn seal(&mut self) -> Option<Unsynced> {
        None
    }

    fn unsynced(&mut self) -> io::Result<Option<Unsynced>> {
        Ok(None)
    }

    fn open(&self) -> io::Result<ChunkBytes> {
        Ok(ChunkBytes::Memory(Arc::clone(&self.bytes)))
    }

    fn acknowledge(&mut self, _records: &ChunkRecords, _upto: usize) -> io::Result<()> {
        Ok(())
    }

    fn delete(self: Box<Self>) {}

    fn quarantine(self: Box<Self>, why: &str, records: u64) -> String {
        format!(
            "{}: {why}; its {records} records are dropped",
            self.describe()
        )
    }
}
