//! An output's buffer: records are appended to the open chunk; full or old
//! chunks are sealed and queued for the output's flushers.
//!
//! This module is the queue, the same for every store: the limits
//! (`chunk_limit_size`, `total_limit_size`, `overflow_action`), sealing by
//! size and age, the due queue, chunks in flight, flush requests, metrics.
//! Where a chunk's bytes live is a `ChunkStore` (`store`): `memory` or
//! `file`, chosen once in `Buffer::open`. The split is there so that the
//! queue's rules are written once and a store's durability once, and a
//! change to one cannot miss a branch of the other.
//!
//! With `type: file`, chunks are files that are fsynced before `sync`
//! returns. Why a SIGKILL loses nothing: a source commits its read position
//! only after `sync`, so every record before a committed position is in a
//! chunk on disk, and every record after it is read again. A chunk is
//! deleted only once all its records are delivered (or dead-lettered), and
//! its progress file (`file::progress`) counts only records the receiver
//! has acknowledged; on start-up every chunk left on disk is queued again
//! from its progress on (torn tails cut off, see `file::recovery`). What
//! can come twice: the requests in flight at the crash, and records
//! appended but not yet under a committed position (the source reads them
//! again). With `type: memory`, chunks live in RAM and what is unsent at
//! exit is lost.

pub mod chunk;
mod config;
mod file;
mod memory;
mod store;
mod write_errors;

use std::collections::VecDeque;
use std::io;
use std::ops::Range;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::metrics::PluginMetrics;

pub use chunk::ChunkRecords;
pub use config::{BufferConfig, Overflow, Storage};
use file::FileStore;
use memory::MemoryStore;
use store::{ChunkStore, StoredChunk, Unsynced};
use write_errors::WriteErrors;

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer is full (total_limit_size reached, overflow_action throw)")]
    Overflow,
    #[error("buffer is shut down")]
    Closed,
    #[error("buffer I/O: {0}")]
    Io(#[from] io::Error),
}

/// A chunk as the queue holds it: its size, records, age and delivery so
/// far; its bytes are in the buffer's store.
pub struct Chunk {
    pub id: u64,
    /// When its first record was appended: the age of its oldest record.
    created: Instant,
    pub bytes: u64,
    pub records: u64,
    /// Its first records already accounted for (delivered or dead-lettered),
    /// by this run or, through its progress file, a previous one.
    delivered: usize,
    data: Box<dyn StoredChunk>,
}

impl Chunk {
    /// Its records. A chunk holding fewer intact records than were written
    /// to it (damaged on disk) is an `InvalidData` error.
    pub fn read(&self) -> io::Result<ChunkRecords> {
        ChunkRecords::open(self.data.open()?, self.records)
    }

    /// How many of its first records are already accounted for: delivery
    /// goes on from there.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// The chunk's file (or "memory chunk N"), for messages.
    pub fn describe(&self) -> String {
        self.data.describe()
    }

    fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        if frames.is_empty() {
            return Ok(());
        }
        self.data.append(frames)
    }
}

struct State {
    open: Option<Chunk>,
    queue: VecDeque<Chunk>,
    total_bytes: u64,
    next_id: u64,
    closed: bool,
    /// Set by SIGUSR1 / shutdown: seal the open chunk regardless of age.
    flush_now: bool,
    /// Sealed chunks' writes since the last `sync`, by chunk id.
    unsynced: Vec<(u64, Unsynced)>,
    /// Chunks taken by flushers and not yet completed (id, created): their
    /// records are still unsent while a delivery is retried.
    in_flight: Vec<(u64, Instant)>,
}

pub struct Buffer {
    pub config: BufferConfig,
    store: Box<dyn ChunkStore>,
    state: Mutex<State>,
    space: Condvar,
    pub ready: tokio::sync::Notify,
    metrics: Arc<PluginMetrics>,
    /// Appends that fail (a full disk): the source waits, nothing is lost.
    append_errors: WriteErrors,
    /// Progress records that fail: only more is sent again after a crash.
    progress_errors: WriteErrors,
}

/// A full disk or quota: appends wait for deliveries to free space.
fn is_disk_full(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded
    )
}

/// The longest wait between two appends tried on a full disk.
const DISK_FULL_MAX_WAIT: Duration = Duration::from_secs(5);

/// Where a batch of frames goes: the first piece to the open chunk (if
/// any), each further piece to a chunk of its own.
struct Piece {
    frames: Range<usize>,
    records: u64,
}

impl Buffer {
    /// Opens the buffer; a file buffer queues every chunk left from a previous
    /// run (see `file::recovery`). Returns the buffer and a note per
    /// recovered chunk.
    pub fn open(
        config: BufferConfig,
        metrics: Arc<PluginMetrics>,
    ) -> io::Result<(Buffer, Vec<String>)> {
        let store: Box<dyn ChunkStore> = match &config.storage {
            Storage::Memory => Box::new(MemoryStore),
            Storage::File(dir) => Box::new(FileStore::new(dir.clone())),
        };
        let found = store.recover()?;
        PluginMetrics::add(&metrics.chunks_quarantined, found.quarantined);
        let mut state = State {
            open: None,
            queue: VecDeque::new(),
            total_bytes: 0,
            next_id: found.next_id,
            closed: false,
            flush_now: false,
            unsynced: Vec::new(),
            in_flight: Vec::new(),
        };
        for c in found.chunks {
            state.total_bytes += c.bytes;
            state.queue.push_back(Chunk {
                id: c.id,
                created: c.created,
                bytes: c.bytes,
                records: c.records,
                delivered: c.delivered,
                data: c.data,
            });
        }
        let name = store.describe();
        metrics
            .buffer_bytes
            .store(state.total_bytes, Ordering::Relaxed);
        Ok((
            Buffer {
                config,
                store,
                state: Mutex::new(state),
                space: Condvar::new(),
                ready: tokio::sync::Notify::new(),
                metrics,
                append_errors: WriteErrors::new(
                    format!("{name}: cannot write a chunk"),
                    "sources wait (nothing read is lost) and it is tried again",
                ),
                progress_errors: WriteErrors::new(
                    format!("{name}: cannot record delivery progress"),
                    "after a crash more records than those in flight would be sent again",
                ),
            },
            found.notes,
        ))
    }

    /// Appends complete frames (see `chunk`), all of them or, on an error,
    /// none: a source that tries the batch again duplicates nothing. With
    /// overflow `block` this waits for flushers to free space; on a full
    /// disk it waits too (except with `throw`), trying again as deliveries
    /// free space or at most every few seconds.
    pub fn append_frames(&self, frames: &[u8]) -> Result<(), BufferError> {
        if frames.is_empty() {
            return Ok(());
        }
        let mut state = self.state.lock().unwrap();
        let mut disk_full_wait = Duration::from_millis(100);
        loop {
            state = self.wait_for_room(state, frames.len() as u64)?;
            match self.write_frames(&mut state, frames) {
                Ok(sealed_any) => {
                    self.metrics
                        .buffer_bytes
                        .store(state.total_bytes, Ordering::Relaxed);
                    drop(state);
                    self.append_errors.succeeded();
                    if sealed_any {
                        self.ready.notify_waiters();
                    }
                    return Ok(());
                }
                Err(e) => {
                    self.append_errors
                        .failed(e.to_string(), &self.metrics.buffer_write_errors);
                    if !is_disk_full(&e) || self.config.overflow_action == Overflow::Throw {
                        return Err(e.into());
                    }
                    // Deliveries free space (`complete` signals `space`);
                    // the open chunk may be due meanwhile.
                    self.ready.notify_waiters();
                    state = self.space.wait_timeout(state, disk_full_wait).unwrap().0;
                    disk_full_wait = (disk_full_wait * 2).min(DISK_FULL_MAX_WAIT);
                }
            }
        }
    }

    /// Waits until `incoming` bytes fit under total_limit_size, or applies
    /// overflow_action.
    fn wait_for_room<'a>(
        &self,
        mut state: std::sync::MutexGuard<'a, State>,
        incoming: u64,
    ) -> Result<std::sync::MutexGuard<'a, State>, BufferError> {
        loop {
            if state.closed {
                return Err(BufferError::Closed);
            }
            // A batch larger than the whole buffer is let in when it is empty,
            // or it could never be written.
            if state.total_bytes == 0
                || state.total_bytes + incoming <= self.config.total_limit_size
            {
                return Ok(state);
            }
            match self.config.overflow_action {
                Overflow::Throw => return Err(BufferError::Overflow),
                Overflow::DropOldest => match state.queue.pop_front() {
                    Some(old) => {
                        state.total_bytes -= old.bytes;
                        PluginMetrics::add(&self.metrics.dropped, old.records);
                        old.data.delete();
                    }
                    None => {
                        // Only the open chunk or in-flight chunks hold data: wait.
                        state = self
                            .space
                            .wait_timeout(state, Duration::from_millis(100))
                            .unwrap()
                            .0;
                    }
                },
                Overflow::Block => {
                    self.ready.notify_waiters();
                    state = self
                        .space
                        .wait_timeout(state, Duration::from_millis(100))
                        .unwrap()
                        .0;
                }
            }
        }
    }

    /// Writes the frames: runs of whole frames go to the open chunk in one
    /// write; a frame that would overflow it starts the next chunk. The
    /// state changes only once every write succeeded; on an error the bytes
    /// written to the open chunk are cut off again and the chunks created
    /// are deleted. Returns whether a chunk was sealed.
    fn write_frames(&self, state: &mut State, frames: &[u8]) -> io::Result<bool> {
        let limit = self.config.chunk_limit_size;
        let mut pieces = vec![Piece {
            frames: 0..0,
            records: 0,
        }];
        let mut filled = state.open.as_ref().map_or(0, |c| c.bytes);
        let mut pos = 0;
        for size in chunk::frame_sizes(frames) {
            if filled > 0 && filled + size as u64 > limit {
                pieces.push(Piece {
                    frames: pos..pos,
                    records: 0,
                });
                filled = 0;
            }
            let piece = pieces.last_mut().expect("one piece at least");
            piece.frames.end = pos + size;
            piece.records += 1;
            filled += size as u64;
            pos += size;
        }
        // With no open chunk the first piece starts one too.
        let first_to_open = state.open.is_some();
        let open_len = state.open.as_ref().map_or(0, |c| c.bytes);
        let mut created: Vec<Chunk> = Vec::new();
        let written = (|| -> io::Result<()> {
            for (i, piece) in pieces.iter().enumerate() {
                let data = &frames[piece.frames.clone()];
                if i == 0 && first_to_open {
                    let open = state.open.as_mut().expect("checked");
                    open.append(data)?;
                } else if piece.records > 0 {
                    let mut c = self.new_chunk(state.next_id + created.len() as u64)?;
                    let result = c.append(data);
                    created.push(c);
                    result?;
                }
            }
            Ok(())
        })();
        if let Err(e) = written {
            if first_to_open {
                let open = state.open.as_mut().expect("checked");
                if let Err(cut) = open.data.cut_back(open_len) {
                    // What it holds past its records is never read as
                    // records (see `Chunk::read`); it takes no more.
                    crate::log::warn(&format!(
                        "cannot cut a failed write off {}: {cut}; sealing it",
                        open.describe()
                    ));
                    self.seal(state);
                }
            }
            for c in created {
                c.data.delete();
            }
            return Err(e);
        }

        let added: u64 = frames.len() as u64;
        state.total_bytes += added;
        let mut created = created.into_iter();
        let mut sealed_any = false;
        for (i, piece) in pieces.iter().enumerate() {
            if i == 0 && first_to_open {
                let open = state.open.as_mut().expect("checked");
                open.records += piece.records;
                open.bytes += piece.frames.len() as u64;
                continue;
            }
            if piece.records == 0 {
                continue;
            }
            if state.open.is_some() {
                self.seal(state);
                sealed_any = true;
            }
            let mut c = created.next().expect("a chunk per piece");
            c.records = piece.records;
            c.bytes = piece.frames.len() as u64;
            state.next_id = c.id + 1;
            state.open = Some(c);
        }
        Ok(sealed_any)
    }

    fn new_chunk(&self, id: u64) -> io::Result<Chunk> {
        Ok(Chunk {
            id,
            created: Instant::now(),
            bytes: 0,
            records: 0,
            delivered: 0,
            data: self.store.create(id)?,
        })
    }

    /// Moves the open chunk to the queue; its writes are made durable by
    /// the next `sync`, off the append path.
    fn seal(&self, state: &mut State) {
        if let Some(mut chunk) = state.open.take() {
            state
                .unsynced
                .extend(chunk.data.seal().map(|w| (chunk.id, w)));
            state.queue.push_back(chunk);
        }
    }

    /// Makes everything appended so far durable (file buffers). A source
    /// commits its read position only after this returns.
    pub fn sync(&self) -> io::Result<()> {
        let writes = {
            let mut state = self.state.lock().unwrap();
            // First what can fail (a descriptor for the open chunk), so
            // that a failure leaves the sealed chunks' list as it was.
            let open: Vec<_> = match state.open.as_mut() {
                Some(open) => open
                    .data
                    .unsynced()?
                    .into_iter()
                    .map(|w| (open.id, w))
                    .collect(),
                None => Vec::new(),
            };
            let mut writes = std::mem::take(&mut state.unsynced);
            writes.extend(open);
            writes
        };
        // Outside the lock: flushers keep going while the disk catches up.
        // What is not synced stays listed: a later `sync` must not succeed
        // (and let a source commit its position) over unsynced records.
        let mut writes = writes.into_iter();
        while let Some((id, w)) = writes.next() {
            if let Err(e) = w.sync() {
                let mut state = self.state.lock().unwrap();
                state.unsynced.push((id, w));
                state.unsynced.extend(writes);
                return Err(e);
            }
        }
        Ok(())
    }

    /// The next chunk to deliver: a sealed one, or the open one once it is
    /// older than flush_interval (or a flush was requested).
    pub fn take(&self) -> io::Result<Option<Chunk>> {
        let mut state = self.state.lock().unwrap();
        if state.queue.is_empty() {
            let due = state.open.as_ref().is_some_and(|c| {
                c.records > 0
                    && (state.flush_now
                        || state.closed
                        || c.created.elapsed() >= self.config.flush_interval)
            });
            if due {
                self.seal(&mut state);
            }
            if state.open.is_none() {
                state.flush_now = false;
            }
        }
        let chunk = state.queue.pop_front();
        if let Some(c) = &chunk {
            state.in_flight.push((c.id, c.created));
        }
        Ok(chunk)
    }

    /// Time until the open chunk is due, for a flusher's sleep.
    pub fn next_due(&self) -> Duration {
        let state = self.state.lock().unwrap();
        match &state.open {
            Some(c) if c.records > 0 => self
                .config
                .flush_interval
                .saturating_sub(c.created.elapsed()),
            _ => self.config.flush_interval,
        }
    }

    /// Records `..upto` of `chunk` (whose `records` were read from it) are
    /// accounted for. For a file chunk this is made durable, so that after a
    /// crash delivery goes on from there; if that fails it is reported and
    /// delivery goes on (a crash would then send more again, never less).
    pub fn acknowledge(&self, chunk: &mut Chunk, records: &ChunkRecords, upto: usize) {
        if upto <= chunk.delivered {
            return;
        }
        chunk.delivered = upto;
        match chunk.data.acknowledge(records, upto) {
            Ok(()) => self.progress_errors.succeeded(),
            Err(e) => self
                .progress_errors
                .failed(e.to_string(), &self.metrics.buffer_write_errors),
        }
    }

    /// A delivered (or dead-lettered) chunk: delete it and free its space.
    /// Its writes are no longer made durable: nothing is lost if they never
    /// reach the disk, and a backlog's chunks are mostly delivered before
    /// the next `sync`, so their pages are dropped unwritten.
    pub fn complete(&self, chunk: Chunk) {
        self.state
            .lock()
            .unwrap()
            .unsynced
            .retain(|(id, _)| *id != chunk.id);
        self.release(&chunk);
        chunk.data.delete();
        self.space.notify_all();
        // Flushers waiting for a stop to drain look again.
        self.ready.notify_waiters();
    }

    /// A chunk that cannot be read: out of the buffer, set aside by its
    /// store (a file chunk to the `quarantine` directory beside the chunks).
    /// Returns what was done, for the log.
    pub fn quarantine(&self, chunk: Chunk, why: &str) -> String {
        self.release(&chunk);
        PluginMetrics::add(&self.metrics.chunks_quarantined, 1);
        let message = chunk.data.quarantine(why, chunk.records);
        self.space.notify_all();
        self.ready.notify_waiters();
        message
    }

    fn release(&self, chunk: &Chunk) {
        let mut state = self.state.lock().unwrap();
        state.in_flight.retain(|(id, _)| *id != chunk.id);
        state.total_bytes = state.total_bytes.saturating_sub(chunk.bytes);
        self.metrics
            .buffer_bytes
            .store(state.total_bytes, Ordering::Relaxed);
    }

    /// A chunk that could not be delivered before shutdown goes back to the
    /// front of the queue (it stays on disk either way, with its progress).
    pub fn put_back(&self, chunk: Chunk) {
        let mut state = self.state.lock().unwrap();
        state.in_flight.retain(|(id, _)| *id != chunk.id);
        state.queue.push_front(chunk);
    }

    /// Seal the open chunk at the next `take` (SIGUSR1).
    pub fn request_flush(&self) {
        self.state.lock().unwrap().flush_now = true;
        self.ready.notify_waiters();
    }

    /// Refuse new records; flushers drain what is left.
    pub fn close(&self) {
        self.state.lock().unwrap().closed = true;
        self.space.notify_all();
        self.ready.notify_waiters();
    }

    /// Nothing left to deliver: no open records, nothing queued and no
    /// chunk being delivered.
    pub fn is_drained(&self) -> bool {
        let state = self.state.lock().unwrap();
        state.queue.is_empty()
            && state.in_flight.is_empty()
            && state.open.as_ref().is_none_or(|c| c.records == 0)
    }

    pub fn total_bytes(&self) -> u64 {
        self.state.lock().unwrap().total_bytes
    }

    /// How long the oldest record not yet delivered has waited: the age of
    /// the oldest chunk still holding one (open, queued or being
    /// delivered). A chunk partly delivered counts from its first record.
    pub fn oldest_unsent(&self) -> Option<Duration> {
        let state = self.state.lock().unwrap();
        let open = state
            .open
            .as_ref()
            .filter(|c| c.records > 0)
            .map(|c| c.created);
        let queued = state.queue.iter().map(|c| c.created);
        let in_flight = state.in_flight.iter().map(|(_, created)| *created);
        open.into_iter()
            .chain(queued)
            .chain(in_flight)
            .min()
            .map(|oldest| oldest.elapsed())
    }

    /// The buffer's current write failure, if any.
    pub fn write_error(&self) -> Option<String> {
        self.append_errors
            .current()
            .or_else(|| self.progress_errors.current())
    }
}

impl crate::status::BufferGauge for Buffer {
    fn bytes(&self) -> u64 {
        self.total_bytes()
    }

    fn oldest_unsent(&self) -> Option<Duration> {
        Buffer::oldest_unsent(self)
    }

    fn write_error(&self) -> Option<String> {
        Buffer::write_error(self)
    }
}

#[cfg(test)]
mod tests;
