//! Positions between two commits, so that a SIGKILL re-reads (and so
//! re-sends) only what was in flight, not what was read since the last
//! commit.
//!
//! A commit (`PositionStore::save`) fsyncs the output buffers and then the
//! pos_file, a few times a second at most: fsyncs are what cost. Between
//! commits, every batch a source hands on is appended to the buffer files
//! with write(2), and its position is appended here, also with write(2) and
//! no fsync. After the process is killed both are in the page cache, so the
//! positions here are good: they point just past records the buffers hold.
//! After a reboot (power loss, kernel panic) neither is safe, so entries
//! carry the boot id and count only in the boot that wrote them; the
//! fsynced pos_file is used alone. Entries also carry the pos_file's
//! generation: after a crash between a commit and the journal's truncation,
//! entries older than the pos_file are ignored.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use super::file_identity::FileId;

/// A journal larger than this is ignored on load (the pos_file is used
/// alone): it is truncated at every commit, so it never gets near it.
const MAX_REPLAY_BYTES: u64 = 64 << 20;

/// One line: a file's position (whatever the position store keeps).
#[derive(Serialize, Deserialize)]
struct Entry<P> {
    boot: String,
    generation: u64,
    id: FileId,
    position: P,
}

pub struct Journal {
    path: PathBuf,
    boot: String,
    file: Option<File>,
    /// Failing to write is not an error (the pos_file is still committed),
    /// but it is said once.
    warned: bool,
    /// Bytes appended since the last `clear`: while commits fail the
    /// journal stops at MAX_REPLAY_BYTES (more re-reading after a crash,
    /// never a disk filled by it).
    written: u64,
}

/// This boot's id: entries of another boot are never trusted.
fn boot_id() -> Option<String> {
    let id = fs::read_to_string("/proc/sys/kernel/random/boot_id").ok()?;
    let id = id.trim();
    (!id.is_empty()).then(|| id.to_string())
}

impl Journal {
    /// The journal of `pos_file` (`<pos_file>.journal`); None where the
    /// boot id cannot be read (then commits alone count).
    pub fn beside(pos_file: &Path) -> Option<Journal> {
        let mut name = pos_file.as_os_str().to_owned();
        name.push(".journal");
        Some(Journal {
            path: PathBuf::from(name),
            boot: boot_id()?,
            file: None,
            warned: false,
            written: 0,
        })
    }

    /// Applies this boot's entries of `generation` to `entries`, in order;
    /// a torn last line is skipped. Returns how many were applied.
    pub fn replay<P: DeserializeOwned>(
        &self,
        generation: u64,
        entries: &mut BTreeMap<FileId, P>,
    ) -> usize {
        // An empty journal (a commit truncates it, and a kill can leave it
        // so) is not read: parsing its one empty line ran the decoder and
        // its error path, code an idle agent otherwise never maps, and kept
        // 0.4 MiB more of a restarted idle agent resident.
        let fits =
            fs::metadata(&self.path).is_ok_and(|m| (1..=MAX_REPLAY_BYTES).contains(&m.len()));
        let Some(text) = fits.then(|| fs::read(&self.path).ok()).flatten() else {
            return 0;
        };
        let mut applied = 0;
        for line in text.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
            let Ok(e) = serde_json::from_slice::<Entry<P>>(line) else {
                continue;
            };
            if e.boot == self.boot && e.generation == generation {
                entries.insert(e.id, e.position);
                applied += 1;
            }
        }
        applied
    }

    /// Records that `id` has been handed on up to `position`. False when
    /// the entry was not written (an error, or the journal is full).
    pub fn append<P: Serialize>(&mut self, generation: u64, id: FileId, position: &P) -> bool {
        let entry = Entry {
            boot: self.boot.clone(),
            generation,
            id,
            position,
        };
        let mut line = serde_json::to_vec(&entry).expect("positions serialize");
        line.push(b'\n');
        if self.written + line.len() as u64 > MAX_REPLAY_BYTES {
            return false;
        }
        self.written += line.len() as u64;
        let result = match &mut self.file {
            Some(f) => f.write_all(&line),
            None => OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .and_then(|mut f| {
                    // One write(2) per entry: a kill tears at most the last.
                    f.write_all(&line)?;
                    self.file = Some(f);
                    Ok(())
                }),
        };
        if let Err(e) = &result {
            self.file = None;
            if !self.warned {
                self.warned = true;
                crate::log::warn(&format!(
                    "cannot write {}: {e}; after a crash, what was read since the last commit is read again",
                    self.path.display()
                ));
            }
        }
        result.is_ok()
    }

    /// After a commit: everything here is in the pos_file now.
    pub fn clear(&mut self) {
        self.written = 0;
        let result = match &self.file {
            Some(f) => f.set_len(0),
            None => match fs::remove_file(&self.path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
                _ => Ok(()),
            },
        };
        if result.is_err() {
            // A journal that cannot be emptied must not be replayed later
            // over newer positions: the generation check guards that too.
            self.file = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sources::position::Position;

    fn position(offset: u64) -> Position {
        Position {
            path: "/var/log/x".into(),
            offset,
            crc: 0,
            window: 0,
            db: None,
            head: None,
            key: None,
        }
    }

    #[test]
    fn replays_this_boot_and_generation_only() {
        let dir = tempfile::tempdir().unwrap();
        let pos = dir.path().join("tail.pos");
        let Some(mut j) = Journal::beside(&pos) else {
            return; // no /proc: nothing to test
        };
        let (a, b) = (FileId { dev: 1, ino: 1 }, FileId { dev: 1, ino: 2 });
        j.append(3, a, &position(10));
        j.append(3, a, &position(20));
        j.append(2, b, &position(99)); // before the last commit
        j.append(3, b, &position(5));
        let mut entries: BTreeMap<FileId, Position> = BTreeMap::new();
        assert_eq!(j.replay(3, &mut entries), 3);
        assert_eq!(entries[&a].offset, 20, "the latest wins");
        assert_eq!(entries[&b].offset, 5, "older generations are ignored");

        // Another boot's entries, and a torn last line, count for nothing.
        let other = Journal {
            boot: "another-boot".into(),
            ..Journal::beside(&pos).unwrap()
        };
        let mut entries: BTreeMap<FileId, Position> = BTreeMap::new();
        assert_eq!(other.replay(3, &mut entries), 0);
        let mut text = fs::read(&j.path).unwrap();
        text.truncate(text.len() - 20);
        fs::write(&j.path, &text).unwrap();
        let mut entries: BTreeMap<FileId, Position> = BTreeMap::new();
        assert_eq!(j.replay(3, &mut entries), 2);
        assert_eq!(entries[&a].offset, 20);

        j.clear();
        let mut entries: BTreeMap<FileId, Position> = BTreeMap::new();
        assert_eq!(j.replay(3, &mut entries), 0);
    }
}
