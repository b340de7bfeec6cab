//! An output's buffer: records are appended to the open chunk; full or old
//! chunks are sealed and queued for the output's flushers.
//!
//! With `type: file`, chunks are files that are fsynced before `sync`
//! returns. Why a SIGKILL loses nothing: a source commits its read position
//! only after `sync`, so every record before a committed position is in a
//! chunk on disk, and every record after it is read again. A chunk is
//! deleted only once all its records are delivered (or dead-lettered), and
//! its progress file (`progress`) counts only records the receiver has
//! acknowledged; on start-up every chunk left on disk is queued again from
//! its progress on (torn tails cut off, see `recovery`). What can come
//! twice: the requests in flight at the crash, and records appended but not
//! yet under a committed position (the source reads them again). With
//! `type: memory`, chunks live in RAM and what is unsent at exit is lost.

pub mod chunk;
mod progress;
mod quarantine;
mod recovery;
mod write_errors;

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::metrics::PluginMetrics;

use progress::{Acked, ProgressFile};
use write_errors::WriteErrors;

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

    pub fn from_config(f: &mut Fields) -> ConfigResult<BufferConfig> {
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
            flush_thread_count: f.uint("flush_thread_count", 1)? as usize,
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

#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    #[error("buffer is full (total_limit_size reached, overflow_action throw)")]
    Overflow,
    #[error("buffer is shut down")]
    Closed,
    #[error("buffer I/O: {0}")]
    Io(#[from] io::Error),
}

enum ChunkData {
    Memory(Vec<u8>),
    File {
        path: PathBuf,
        file: Option<File>,
        dirty: bool,
        /// Its `.ack` file, once a first request of it was delivered.
        progress: Option<ProgressFile>,
    },
}

pub struct Chunk {
    pub id: u64,
    /// When its first record was appended: the age of its oldest record.
    created: Instant,
    pub bytes: u64,
    pub records: u64,
    /// Its first records already accounted for (delivered or dead-lettered),
    /// by this run or, through its progress file, a previous one.
    delivered: usize,
    data: ChunkData,
}

/// A chunk's records, read back for delivery.
pub struct ChunkRecords {
    bytes: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

impl ChunkRecords {
    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.ranges[i].clone()]
    }
}

impl Chunk {
    /// Its records. A chunk file holding fewer intact records than were
    /// written to it (damaged on disk) is an `InvalidData` error.
    pub fn read(&self) -> io::Result<ChunkRecords> {
        let bytes = match &self.data {
            ChunkData::Memory(b) => b.clone(),
            ChunkData::File { path, .. } => fs::read(path)?,
        };
        let mut decoded = chunk::decode(&bytes);
        if (decoded.records.len() as u64) < self.records {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} intact records of {}: the frame at byte {} is damaged",
                    decoded.records.len(),
                    self.records,
                    decoded.valid_len
                ),
            ));
        }
        // Bytes after them are a write that failed and could not be taken
        // back; they were never counted as records.
        decoded.records.truncate(self.records as usize);
        Ok(ChunkRecords {
            bytes,
            ranges: decoded.records,
        })
    }

    /// How many of its first records are already accounted for: delivery
    /// goes on from there.
    pub fn delivered(&self) -> usize {
        self.delivered
    }

    /// The chunk's file, for messages.
    pub fn describe(&self) -> String {
        match &self.data {
            ChunkData::Memory(_) => format!("memory chunk {}", self.id),
            ChunkData::File { path, .. } => path.display().to_string(),
        }
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
    /// Sealed chunk files written since the last `sync`.
    unsynced: Vec<File>,
    /// Chunks taken by flushers and not yet completed (id, created): their
    /// records are still unsent while a delivery is retried.
    in_flight: Vec<(u64, Instant)>,
}

pub struct Buffer {
    pub config: BufferConfig,
    state: Mutex<State>,
    space: Condvar,
    pub ready: tokio::sync::Notify,
    metrics: Arc<PluginMetrics>,
    /// Appends that fail (a full disk): the source waits, nothing is lost.
    append_errors: WriteErrors,
    /// Progress records that fail: only more is sent again after a crash.
    progress_errors: WriteErrors,
}

/// Chunk file names: `chunk-<id as 16 hex digits>.buf`, so that sorting by
/// name is sorting by age.
fn chunk_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("chunk-{id:016x}.buf"))
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
    /// run (see `recovery`). Returns the buffer and a note per recovered chunk.
    pub fn open(
        config: BufferConfig,
        metrics: Arc<PluginMetrics>,
    ) -> io::Result<(Buffer, Vec<String>)> {
        let mut state = State {
            open: None,
            queue: VecDeque::new(),
            total_bytes: 0,
            next_id: 1,
            closed: false,
            flush_now: false,
            unsynced: Vec::new(),
            in_flight: Vec::new(),
        };
        let mut notes = Vec::new();
        let name = match &config.storage {
            Storage::Memory => "memory buffer".to_string(),
            Storage::File(dir) => format!("buffer {}", dir.display()),
        };
        if let Storage::File(dir) = &config.storage {
            let found = recovery::recover(dir)?;
            notes = found.notes;
            state.next_id = found.next_id;
            PluginMetrics::add(&metrics.chunks_quarantined, found.quarantined);
            for c in found.chunks {
                state.total_bytes += c.bytes;
                state.queue.push_back(Chunk {
                    id: c.id,
                    created: written_at(&c.path),
                    bytes: c.bytes,
                    records: c.records,
                    delivered: c.delivered,
                    data: ChunkData::File {
                        path: c.path,
                        file: None,
                        dirty: false,
                        progress: None,
                    },
                });
            }
        }
        metrics
            .buffer_bytes
            .store(state.total_bytes, Ordering::Relaxed);
        Ok((
            Buffer {
                config,
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
            notes,
        ))
    }

    /// Appends serialized records, framing them first (tests; the pipeline
    /// frames while serializing and calls `append_frames`).
    #[cfg(test)]
    pub fn append(&self, records: &[Vec<u8>]) -> Result<(), BufferError> {
        let mut frames = Vec::new();
        for r in records {
            chunk::encode_into(&mut frames, r);
        }
        self.append_frames(&frames)
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
                        delete(old);
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
                    write_chunk(open, data)?;
                } else if piece.records > 0 {
                    let mut c = self.new_chunk(state.next_id + created.len() as u64)?;
                    let result = write_chunk(&mut c, data);
                    created.push(c);
                    result?;
                }
            }
            Ok(())
        })();
        if let Err(e) = written {
            if first_to_open {
                let open = state.open.as_mut().expect("checked");
                if let Err(cut) = truncate_chunk(open, open_len) {
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
                delete(c);
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
        let data = match &self.config.storage {
            Storage::Memory => ChunkData::Memory(Vec::new()),
            Storage::File(dir) => {
                let path = chunk_path(dir, id);
                // Progress of an earlier chunk of this id must not apply.
                remove_if_present(&progress::ack_path(&path));
                let file = OpenOptions::new()
                    .create_new(true)
                    .append(true)
                    .open(&path)?;
                // The new name must survive a crash too.
                File::open(dir)?.sync_all()?;
                ChunkData::File {
                    path,
                    file: Some(file),
                    dirty: false,
                    progress: None,
                }
            }
        };
        Ok(Chunk {
            id,
            created: Instant::now(),
            bytes: 0,
            records: 0,
            delivered: 0,
            data,
        })
    }

    /// Moves the open chunk to the queue; its file is fsynced by the next
    /// `sync`, off the append path.
    fn seal(&self, state: &mut State) {
        if let Some(mut chunk) = state.open.take() {
            if let ChunkData::File { file, dirty, .. } = &mut chunk.data {
                if let Some(f) = file.take() {
                    if *dirty {
                        state.unsynced.push(f);
                    }
                }
                *dirty = false;
            }
            state.queue.push_back(chunk);
        }
    }

    /// Makes everything appended so far durable (file buffers). A source
    /// commits its read position only after this returns.
    pub fn sync(&self) -> io::Result<()> {
        let mut files = {
            let mut state = self.state.lock().unwrap();
            let mut files = std::mem::take(&mut state.unsynced);
            if let Some(Chunk {
                data:
                    ChunkData::File {
                        file: Some(f),
                        dirty,
                        ..
                    },
                ..
            }) = state.open.as_mut()
            {
                if *dirty {
                    files.push(f.try_clone()?);
                    *dirty = false;
                }
            }
            files
        };
        // Outside the lock: flushers keep going while the disk catches up.
        for f in files.drain(..) {
            f.sync_data()?;
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
        let ChunkData::File { path, progress, .. } = &mut chunk.data else {
            return;
        };
        let last = &records.ranges[upto - 1];
        let acked = Acked {
            records: upto as u64,
            end: last.end as u64,
            last_crc: chunk::frame_crc(&records.bytes, last),
        };
        let ack_path = progress::ack_path(path);
        match ProgressFile::record(progress, &ack_path, acked) {
            Ok(()) => self.progress_errors.succeeded(),
            Err(e) => {
                // Reopened at the next record: its newest intact slot is
                // still the last progress that was made durable.
                *progress = None;
                self.progress_errors.failed(
                    format!("{}: {e}", ack_path.display()),
                    &self.metrics.buffer_write_errors,
                );
            }
        }
    }

    /// A delivered (or dead-lettered) chunk: delete it and free its space.
    pub fn complete(&self, chunk: Chunk) {
        self.release(&chunk);
        delete(chunk);
        self.space.notify_all();
        // Flushers waiting for a stop to drain look again.
        self.ready.notify_waiters();
    }

    /// A chunk that cannot be read: moved to the `quarantine` directory
    /// beside the chunks and out of the buffer. Returns what was done, for
    /// the log.
    pub fn quarantine(&self, chunk: Chunk, why: &str) -> String {
        self.release(&chunk);
        PluginMetrics::add(&self.metrics.chunks_quarantined, 1);
        let message = match &chunk.data {
            ChunkData::Memory(_) => format!(
                "{}: {why}; its {} records are dropped",
                chunk.describe(),
                chunk.records
            ),
            ChunkData::File { path, .. } => quarantine::move_aside(path, why),
        };
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

fn write_chunk(chunk: &mut Chunk, data: &[u8]) -> io::Result<()> {
    if data.is_empty() {
        return Ok(());
    }
    match &mut chunk.data {
        ChunkData::Memory(b) => b.extend_from_slice(data),
        ChunkData::File { file, dirty, .. } => {
            // Dirty first: a partial write must be fsynced like a whole one.
            *dirty = true;
            file.as_mut()
                .expect("open chunk has its file")
                .write_all(data)?;
        }
    }
    Ok(())
}

/// Cuts a chunk back to `len` bytes after a failed write.
fn truncate_chunk(chunk: &mut Chunk, len: u64) -> io::Result<()> {
    match &mut chunk.data {
        ChunkData::Memory(b) => b.truncate(len as usize),
        ChunkData::File { file, .. } => {
            file.as_mut()
                .expect("open chunk has its file")
                .set_len(len)?;
        }
    }
    Ok(())
}

/// When a chunk file left by a previous run got its first record, as far as
/// the file system tells (its birth time, else its last write), so that a
/// restart does not make a backlog look fresh.
fn written_at(path: &Path) -> Instant {
    let now = Instant::now();
    let Ok(meta) = fs::metadata(path) else {
        return now;
    };
    let Ok(when) = meta.created().or_else(|_| meta.modified()) else {
        return now;
    };
    when.elapsed()
        .ok()
        .and_then(|age| now.checked_sub(age))
        .unwrap_or(now)
}

/// Deletes a chunk's file, then its progress: a crash between the two
/// leaves a progress file without a chunk, which the next start removes.
fn delete(chunk: Chunk) {
    if let ChunkData::File { path, .. } = chunk.data {
        remove_if_present(&path);
        remove_if_present(&progress::ack_path(&path));
    }
}

fn remove_if_present(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            crate::log::warn(&format!("cannot delete {}: {e}", path.display()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file_config(dir: &Path) -> BufferConfig {
        BufferConfig {
            storage: Storage::File(dir.to_path_buf()),
            chunk_limit_size: 100,
            total_limit_size: 10_000,
            flush_interval: Duration::from_secs(3600),
            flush_thread_count: 1,
            overflow_action: Overflow::Throw,
        }
    }

    fn records(n: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| format!("{{\"n\":{i:04}}}").into_bytes())
            .collect()
    }

    #[test]
    fn seals_at_chunk_limit_and_recovers_after_crash() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(PluginMetrics::default());
        let (buf, notes) = Buffer::open(file_config(dir.path()), m.clone()).unwrap();
        assert!(notes.is_empty());
        buf.append(&records(10)).unwrap(); // 10 x (10 + 8) bytes = 180: two chunks
        buf.sync().unwrap();
        let first = buf.take().unwrap().expect("a sealed chunk");
        assert_eq!(first.records, 5);
        let r = first.read().unwrap();
        assert_eq!(r.get(0), b"{\"n\":0000}");
        // Simulate a crash: the process is gone with one chunk in flight and
        // one open, plus a torn frame at the end of the open one.
        let open_path = chunk_path(dir.path(), 2);
        let mut f = OpenOptions::new().append(true).open(&open_path).unwrap();
        f.write_all(&[42, 0, 0, 0, 1, 2]).unwrap();
        drop(f);
        std::mem::forget(buf);
        std::mem::forget(first);

        let (buf, notes) = Buffer::open(file_config(dir.path()), m).unwrap();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("cut a torn tail of 6 bytes")),
            "{notes:?}"
        );
        let mut all = Vec::new();
        while let Some(c) = buf.take().unwrap() {
            let r = c.read().unwrap();
            for i in 0..r.len() {
                all.push(String::from_utf8(r.get(i).to_vec()).unwrap());
            }
            buf.complete(c);
        }
        let expected: Vec<String> = records(10)
            .into_iter()
            .map(|r| String::from_utf8(r).unwrap())
            .collect();
        assert_eq!(all, expected, "every record once, in order");
        assert_eq!(buf.total_bytes(), 0);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            0,
            "delivered chunks deleted"
        );
    }

    #[test]
    fn overflow_actions() {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = file_config(dir.path());
        cfg.total_limit_size = 200;
        let (buf, _) = Buffer::open(cfg.clone(), Arc::new(PluginMetrics::default())).unwrap();
        buf.append(&records(10)).unwrap();
        assert!(matches!(
            buf.append(&records(3)),
            Err(BufferError::Overflow)
        ));

        cfg.overflow_action = Overflow::DropOldest;
        cfg.storage = Storage::Memory;
        let m = Arc::new(PluginMetrics::default());
        let (buf, _) = Buffer::open(cfg, m.clone()).unwrap();
        buf.append(&records(10)).unwrap();
        buf.append(&records(3)).unwrap();
        assert_eq!(
            m.dropped.load(Ordering::Relaxed),
            5,
            "the oldest chunk went"
        );
    }

    #[test]
    fn oldest_unsent_covers_chunks_in_flight() {
        let (buf, _) = Buffer::open(
            BufferConfig::memory_default(),
            Arc::new(PluginMetrics::default()),
        )
        .unwrap();
        assert_eq!(buf.oldest_unsent(), None);
        buf.append(&records(2)).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(buf.oldest_unsent().unwrap() >= Duration::from_millis(20));
        buf.request_flush();
        let c = buf.take().unwrap().expect("flush requested");
        assert!(!buf.is_drained(), "a chunk in flight is not delivered yet");
        assert!(buf.oldest_unsent().unwrap() >= Duration::from_millis(20));
        buf.put_back(c);
        let c = buf.take().unwrap().expect("queued again");
        buf.complete(c);
        assert_eq!(buf.oldest_unsent(), None);
    }

    #[test]
    fn open_chunk_is_due_after_flush_interval() {
        let mut cfg = BufferConfig::memory_default();
        cfg.flush_interval = Duration::from_millis(0);
        let (buf, _) = Buffer::open(cfg, Arc::new(PluginMetrics::default())).unwrap();
        assert!(buf.take().unwrap().is_none());
        buf.append(&records(2)).unwrap();
        let c = buf.take().unwrap().expect("due");
        assert_eq!(c.records, 2);
        assert!(!buf.is_drained(), "its chunk is in flight");
        buf.complete(c);
        assert!(buf.is_drained());
    }

    /// The records of every chunk left, as delivery would send them (from
    /// each chunk's progress on).
    fn drain(buf: &Buffer) -> Vec<String> {
        let mut all = Vec::new();
        while let Some(c) = buf.take().unwrap() {
            let r = c.read().unwrap();
            for i in c.delivered()..r.len() {
                all.push(String::from_utf8(r.get(i).to_vec()).unwrap());
            }
            buf.complete(c);
        }
        all
    }

    fn texts(range: std::ops::Range<usize>) -> Vec<String> {
        records(range.end)[range]
            .iter()
            .map(|r| String::from_utf8(r.clone()).unwrap())
            .collect()
    }

    fn names(dir: &Path) -> Vec<String> {
        let mut n: Vec<String> = fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        n.sort();
        n
    }

    #[test]
    fn restart_goes_on_from_the_recorded_progress() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(PluginMetrics::default());
        let mut cfg = file_config(dir.path());
        cfg.chunk_limit_size = 1000;
        let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
        buf.append(&records(10)).unwrap();
        buf.sync().unwrap();
        buf.request_flush();
        let mut c = buf.take().unwrap().expect("flush requested");
        let r = c.read().unwrap();
        // Two requests of 3 records went through; the third was in flight
        // when the process died.
        buf.acknowledge(&mut c, &r, 3);
        buf.acknowledge(&mut c, &r, 6);
        assert_eq!(c.delivered(), 6);
        assert_eq!(
            names(dir.path()),
            ["chunk-0000000000000001.ack", "chunk-0000000000000001.buf"]
        );
        std::mem::forget(c);
        std::mem::forget(buf);

        let (buf, notes) = Buffer::open(cfg.clone(), m.clone()).unwrap();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("4 records queued again (the first 6 were delivered before)")),
            "{notes:?}"
        );
        assert!(!buf.is_drained());
        assert_eq!(drain(&buf), texts(6..10), "only what was not acknowledged");
        assert!(names(dir.path()).is_empty(), "chunk and progress deleted");

        // A progress write torn by the crash: the one before it counts.
        let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
        buf.append(&records(10)).unwrap();
        buf.request_flush();
        let mut c = buf.take().unwrap().unwrap();
        let r = c.read().unwrap();
        buf.acknowledge(&mut c, &r, 2);
        buf.acknowledge(&mut c, &r, 5);
        let ack = dir.path().join(format!("chunk-{:016x}.ack", c.id));
        let mut bytes = fs::read(&ack).unwrap();
        // The second write went to slot 1, at byte 36: half of it landed.
        bytes.truncate(36 + 18);
        fs::write(&ack, &bytes).unwrap();
        std::mem::forget(c);
        std::mem::forget(buf);
        let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
        assert_eq!(drain(&buf), texts(2..10), "back to the intact progress");

        // Progress that does not belong to the chunk beside it (another
        // chunk's, say) is not trusted: the whole chunk goes again.
        let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
        buf.append(&records(10)).unwrap();
        buf.request_flush();
        let mut c = buf.take().unwrap().unwrap();
        let r = c.read().unwrap();
        buf.acknowledge(&mut c, &r, 4);
        let path = dir.path().join(format!("chunk-{:016x}.buf", c.id));
        std::mem::forget(c);
        std::mem::forget(buf);
        let mut other = Vec::new();
        for i in 0..10 {
            chunk::encode_into(&mut other, format!("{{\"other\":{i:03}}}").as_bytes());
        }
        fs::write(&path, &other).unwrap();
        let (buf, notes) = Buffer::open(cfg.clone(), m.clone()).unwrap();
        assert!(
            notes.iter().any(|n| n.contains("does not match the chunk")),
            "{notes:?}"
        );
        assert_eq!(drain(&buf).len(), 10);

        // A progress file whose chunk was deleted (a crash between the two
        // deletions) is removed, and new chunks get ids above it.
        fs::write(dir.path().join("chunk-00000000000000ff.ack"), b"stale").unwrap();
        let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
        assert!(names(dir.path()).is_empty());
        buf.append(&records(1)).unwrap();
        assert_eq!(names(dir.path()), ["chunk-0000000000000100.buf"]);
    }

    #[test]
    fn unreadable_chunks_are_quarantined() {
        let dir = tempfile::tempdir().unwrap();
        let m = Arc::new(PluginMetrics::default());
        let cfg = file_config(dir.path());
        let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
        buf.append(&records(10)).unwrap(); // two chunks of 5
        buf.request_flush();
        let first = buf.take().unwrap().unwrap();
        let path = dir.path().join("chunk-0000000000000001.buf");
        // A bit flipped on disk in its second record.
        let mut bytes = fs::read(&path).unwrap();
        bytes[30] ^= 0x40;
        fs::write(&path, &bytes).unwrap();
        let e = first.read().err().expect("damaged");
        assert_eq!(e.kind(), io::ErrorKind::InvalidData);
        assert!(e.to_string().contains("1 intact records of 5"), "{e}");
        let message = buf.quarantine(first, "cannot read it");
        let aside = dir.path().join("quarantine/chunk-0000000000000001.buf");
        assert!(message.contains(&aside.display().to_string()), "{message}");
        assert_eq!(fs::read(&aside).unwrap(), bytes);
        assert!(
            fs::read_to_string(dir.path().join("quarantine/chunk-0000000000000001.buf.why"))
                .unwrap()
                .contains("cannot read it")
        );
        assert_eq!(m.chunks_quarantined.load(Ordering::Relaxed), 1);
        // The rest is delivered as usual.
        assert_eq!(drain(&buf), texts(5..10));
        assert!(buf.is_drained());
        assert_eq!(buf.total_bytes(), 0);

        // At start-up, a chunk that cannot be read does not stop the
        // buffer from opening.
        fs::create_dir(dir.path().join("chunk-0000000000000009.buf")).unwrap();
        let (buf, notes) = Buffer::open(cfg, m.clone()).unwrap();
        assert!(
            notes
                .iter()
                .any(|n| n.contains("cannot read it") && n.contains("quarantine")),
            "{notes:?}"
        );
        assert!(dir
            .path()
            .join("quarantine/chunk-0000000000000009.buf")
            .is_dir());
        assert!(buf.is_drained());
        assert_eq!(m.chunks_quarantined.load(Ordering::Relaxed), 2);
    }
}
