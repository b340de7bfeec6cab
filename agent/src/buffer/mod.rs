//! An output's buffer: records are appended to the open chunk; full or old
//! chunks are sealed and queued for the output's flushers.
//!
//! With `type: file`, chunks are files that are fsynced before `sync`
//! returns, so a source may commit its read position after `sync` and a
//! SIGKILL loses nothing: on start-up every chunk left on disk is queued
//! again (torn tails cut off). With `type: memory`, chunks live in RAM and
//! what is unsent at exit is lost.

pub mod chunk;

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
    },
}

pub struct Chunk {
    pub id: u64,
    /// When its first record was appended: the age of its oldest record.
    created: Instant,
    pub bytes: u64,
    pub records: u64,
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
    pub fn read(&self) -> io::Result<ChunkRecords> {
        let bytes = match &self.data {
            ChunkData::Memory(b) => b.clone(),
            ChunkData::File { path, .. } => fs::read(path)?,
        };
        let decoded = chunk::decode(&bytes);
        Ok(ChunkRecords {
            bytes,
            ranges: decoded.records,
        })
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
}

/// Chunk file names: `chunk-<id as 16 hex digits>.buf`, so that sorting by
/// name is sorting by age.
fn chunk_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("chunk-{id:016x}.buf"))
}

impl Buffer {
    /// Opens the buffer; a file buffer queues every chunk left from a previous
    /// run. Returns the buffer and a note per recovered chunk.
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
        if let Storage::File(dir) = &config.storage {
            fs::create_dir_all(dir)?;
            let mut found: Vec<(u64, PathBuf)> = Vec::new();
            for entry in fs::read_dir(dir)? {
                let path = entry?.path();
                let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
                if let Some(id) = name
                    .strip_prefix("chunk-")
                    .and_then(|s| s.strip_suffix(".buf"))
                    .and_then(|s| u64::from_str_radix(s, 16).ok())
                {
                    found.push((id, path));
                }
            }
            found.sort();
            for (id, path) in found {
                let bytes = fs::read(&path)?;
                let decoded = chunk::decode(&bytes);
                if decoded.valid_len < bytes.len() {
                    notes.push(format!(
                        "{}: cut a torn tail of {} bytes after {} complete records",
                        path.display(),
                        bytes.len() - decoded.valid_len,
                        decoded.records.len()
                    ));
                    let f = OpenOptions::new().write(true).open(&path)?;
                    f.set_len(decoded.valid_len as u64)?;
                    f.sync_all()?;
                }
                if decoded.records.is_empty() {
                    fs::remove_file(&path)?;
                    continue;
                }
                notes.push(format!(
                    "{}: {} records queued again",
                    path.display(),
                    decoded.records.len()
                ));
                state.total_bytes += decoded.valid_len as u64;
                state.next_id = state.next_id.max(id + 1);
                state.queue.push_back(Chunk {
                    id,
                    created: written_at(&path),
                    bytes: decoded.valid_len as u64,
                    records: decoded.records.len() as u64,
                    data: ChunkData::File {
                        path,
                        file: None,
                        dirty: false,
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

    /// Appends complete frames (see `chunk`). With overflow `block` this
    /// waits for flushers to free space.
    pub fn append_frames(&self, frames: &[u8]) -> Result<(), BufferError> {
        if frames.is_empty() {
            return Ok(());
        }
        let incoming = frames.len() as u64;
        let mut state = self.state.lock().unwrap();
        loop {
            if state.closed {
                return Err(BufferError::Closed);
            }
            // A batch larger than the whole buffer is let in when it is empty,
            // or it could never be written.
            if state.total_bytes == 0
                || state.total_bytes + incoming <= self.config.total_limit_size
            {
                break;
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

        // Runs of whole frames go to the open chunk in one write; a frame
        // that would overflow the chunk starts the next one.
        let mut sealed_any = false;
        let mut run_start = 0;
        let mut pos = 0;
        while pos < frames.len() {
            let len =
                u32::from_le_bytes(frames[pos..pos + 4].try_into().expect("4 bytes")) as usize;
            let size = (len + chunk::HEADER) as u64;
            let full = state
                .open
                .as_ref()
                .is_some_and(|c| c.bytes > 0 && c.bytes + size > self.config.chunk_limit_size);
            if full {
                self.write_open(&mut state, &frames[run_start..pos])?;
                run_start = pos;
                self.seal(&mut state)?;
                sealed_any = true;
            }
            if state.open.is_none() {
                let id = state.next_id;
                state.next_id += 1;
                state.open = Some(self.new_chunk(id)?);
            }
            let open = state.open.as_mut().unwrap();
            open.records += 1;
            // Counted now so the size check above sees frames not yet written.
            open.bytes += size;
            state.total_bytes += size;
            pos += size as usize;
        }
        self.write_open(&mut state, &frames[run_start..])?;
        self.metrics
            .buffer_bytes
            .store(state.total_bytes, Ordering::Relaxed);
        drop(state);
        if sealed_any {
            self.ready.notify_waiters();
        }
        Ok(())
    }

    fn new_chunk(&self, id: u64) -> io::Result<Chunk> {
        let data = match &self.config.storage {
            Storage::Memory => ChunkData::Memory(Vec::new()),
            Storage::File(dir) => {
                let path = chunk_path(dir, id);
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
                }
            }
        };
        Ok(Chunk {
            id,
            created: Instant::now(),
            bytes: 0,
            records: 0,
            data,
        })
    }

    fn write_open(&self, state: &mut State, frame: &[u8]) -> io::Result<()> {
        if frame.is_empty() {
            return Ok(());
        }
        let open = state
            .open
            .as_mut()
            .expect("records were added to an open chunk");
        match &mut open.data {
            ChunkData::Memory(b) => b.extend_from_slice(frame),
            ChunkData::File { file, dirty, .. } => {
                file.as_mut()
                    .expect("open chunk has its file")
                    .write_all(frame)?;
                *dirty = true;
            }
        }
        Ok(())
    }

    /// Moves the open chunk to the queue, fsyncing it first.
    fn seal(&self, state: &mut State) -> io::Result<()> {
        if let Some(mut chunk) = state.open.take() {
            if let ChunkData::File { file, dirty, .. } = &mut chunk.data {
                // fsynced by the next `sync`, off the append path.
                if let Some(f) = file.take() {
                    if *dirty {
                        state.unsynced.push(f);
                    }
                }
                *dirty = false;
            }
            state.queue.push_back(chunk);
        }
        Ok(())
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
                self.seal(&mut state)?;
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

    /// A delivered (or dead-lettered) chunk: delete it and free its space.
    pub fn complete(&self, chunk: Chunk) {
        let mut state = self.state.lock().unwrap();
        state.in_flight.retain(|(id, _)| *id != chunk.id);
        state.total_bytes = state.total_bytes.saturating_sub(chunk.bytes);
        self.metrics
            .buffer_bytes
            .store(state.total_bytes, Ordering::Relaxed);
        drop(state);
        delete(chunk);
        self.space.notify_all();
    }

    /// A chunk that could not be delivered before shutdown goes back to the
    /// front of the queue (it stays on disk either way).
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

    pub fn is_drained(&self) -> bool {
        let state = self.state.lock().unwrap();
        state.queue.is_empty() && state.open.as_ref().is_none_or(|c| c.records == 0)
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
}

impl crate::status::BufferGauge for Buffer {
    fn bytes(&self) -> u64 {
        self.total_bytes()
    }

    fn oldest_unsent(&self) -> Option<Duration> {
        Buffer::oldest_unsent(self)
    }
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

fn delete(chunk: Chunk) {
    if let ChunkData::File { path, .. } = chunk.data {
        if let Err(e) = fs::remove_file(&path) {
            if e.kind() != io::ErrorKind::NotFound {
                crate::log::warn(&format!("cannot delete chunk {}: {e}", path.display()));
            }
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
        assert!(buf.is_drained(), "nothing left but the chunk in flight");
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
        assert!(buf.is_drained());
    }
}
