//! The file store: each chunk a file `chunk-<id>.buf` in the buffer's
//! directory, appended to and fsynced by `Buffer::sync`, so that a SIGKILL
//! loses nothing a source has committed. Beside each chunk its delivery
//! progress (`progress`); at start-up the chunks left are found again
//! (`recovery`); chunks that cannot be read are moved aside
//! (`quarantine`).

mod progress;
mod quarantine;
mod recovery;

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use super::chunk::{ChunkBytes, ChunkRecords};
use super::store::{ChunkStore, RecoveredChunk, Recovery, StoredChunk, Unsynced};
use progress::{Acked, ProgressFile};

pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    pub fn new(dir: PathBuf) -> FileStore {
        FileStore { dir }
    }
}

/// Chunk file names: `chunk-<id as 16 hex digits>.buf`, so that sorting by
/// name is sorting by age.
pub fn chunk_path(dir: &Path, id: u64) -> PathBuf {
    dir.join(format!("chunk-{id:016x}.buf"))
}

impl ChunkStore for FileStore {
    fn describe(&self) -> String {
        format!("buffer {}", self.dir.display())
    }

    fn recover(&self) -> io::Result<Recovery> {
        let found = recovery::recover(&self.dir)?;
        let chunks = found
            .chunks
            .into_iter()
            .map(|c| RecoveredChunk {
                id: c.id,
                created: written_at(&c.path),
                bytes: c.bytes,
                records: c.records,
                delivered: c.delivered,
                data: Box::new(FileChunk {
                    path: c.path,
                    file: None,
                    dirty: false,
                    name_unsynced: false,
                    progress: None,
                }),
            })
            .collect();
        Ok(Recovery {
            chunks,
            notes: found.notes,
            next_id: found.next_id,
            quarantined: found.quarantined,
        })
    }

    fn create(&self, id: u64) -> io::Result<Box<dyn StoredChunk>> {
        let path = chunk_path(&self.dir, id);
        // Progress of an earlier chunk of this id must not apply.
        remove_if_present(&progress::ack_path(&path));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&path)?;
        // The new name must survive a crash too: the directory is fsynced
        // with the chunk's first write (`Buffer::sync`, off the appending
        // thread), not here, where each new chunk stopped the source.
        Ok(Box::new(FileChunk {
            path,
            file: Some(file),
            dirty: false,
            name_unsynced: true,
            progress: None,
        }))
    }
}

struct FileChunk {
    path: PathBuf,
    /// Open for appends until the chunk is sealed.
    file: Option<File>,
    /// Written since the last fsync.
    dirty: bool,
    /// Created and its directory not fsynced since.
    name_unsynced: bool,
    /// Its `.ack` file, once a first request of it was delivered.
    progress: Option<ProgressFile>,
}

impl FileChunk {
    /// `file`'s writes to make durable, and with the first of them the
    /// chunk's name.
    fn writes_to_sync(&mut self, file: File) -> Unsynced {
        match self.path.parent() {
            Some(dir) if std::mem::take(&mut self.name_unsynced) => {
                Unsynced::with_dir(file, dir.to_path_buf())
            }
            _ => Unsynced::new(file),
        }
    }
}

impl StoredChunk for FileChunk {
    fn describe(&self) -> String {
        self.path.display().to_string()
    }

    fn append(&mut self, frames: &[u8]) -> io::Result<()> {
        // Dirty first: a partial write must be fsynced like a whole one.
        self.dirty = true;
        self.file
            .as_mut()
            .expect("open chunk has its file")
            .write_all(frames)
    }

    fn cut_back(&mut self, len: u64) -> io::Result<()> {
        self.file
            .as_mut()
            .expect("open chunk has its file")
            .set_len(len)
    }

    /// No writeback is started here: a chunk delivered before the next
    /// `sync` is deleted with its pages never written, and while the
    /// output keeps up that is nearly every chunk (97% of the bytes of the
    /// 210 MB slow-log bench). The `sync` runs beside the reading.
    fn seal(&mut self) -> Option<Unsynced> {
        let dirty = std::mem::take(&mut self.dirty);
        self.file
            .take()
            .filter(|_| dirty)
            .map(|f| self.writes_to_sync(f))
    }

    fn unsynced(&mut self) -> io::Result<Option<Unsynced>> {
        match &self.file {
            Some(f) if self.dirty => {
                let handle = f.try_clone()?;
                self.dirty = false;
                Ok(Some(self.writes_to_sync(handle)))
            }
            _ => Ok(None),
        }
    }

    fn open(&self) -> io::Result<ChunkBytes> {
        File::open(&self.path).map(ChunkBytes::File)
    }

    fn acknowledge(&mut self, records: &ChunkRecords, upto: usize) -> io::Result<()> {
        let (end, last_crc) = records.frame_end(upto - 1);
        let acked = Acked {
            records: upto as u64,
            end,
            last_crc,
        };
        let ack_path = progress::ack_path(&self.path);
        ProgressFile::record(&mut self.progress, &ack_path, acked).map_err(|e| {
            // Reopened at the next record: its newest intact slot is
            // still the last progress that was made durable.
            self.progress = None;
            io::Error::new(e.kind(), format!("{}: {e}", ack_path.display()))
        })
    }

    /// Deletes the chunk's file, then its progress: a crash between the two
    /// leaves a progress file without a chunk, which the next start removes.
    fn delete(self: Box<Self>) {
        remove_if_present(&self.path);
        remove_if_present(&progress::ack_path(&self.path));
    }

    fn quarantine(self: Box<Self>, why: &str, _records: u64) -> String {
        quarantine::move_aside(&self.path, why)
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

fn remove_if_present(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != io::ErrorKind::NotFound {
            crate::log::warn(&format!("cannot delete {}: {e}", path.display()));
        }
    }
}
