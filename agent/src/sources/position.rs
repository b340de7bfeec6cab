//! Read positions of tailed files, keyed by (device, inode) and checked
//! against the head of the file they were taken of, written atomically (temporary file, fsync, rename, fsync of the directory) so a
//! crash leaves either the old or the new positions, never a torn file.

use std::collections::BTreeMap;
use std::fs;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::file_identity::{FileId, Head};
use super::position_journal::Journal;
use crate::writable::write_atomic;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Position {
    pub path: PathBuf,
    /// Bytes up to here are durable downstream.
    pub offset: u64,
    /// crc32 of the `window` bytes just before `offset`: if they change, the
    /// file was truncated and rewritten (copytruncate) past our offset.
    pub crc: u32,
    pub window: u32,
    /// Slow logs: the database of the last `use` before `offset`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub db: Option<String>,
    /// The file's fingerprint: a recycled inode with other content is
    /// another file. Absent in pos files of older agents (then only the
    /// checksum before `offset` is checked), and ignored by them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub head: Option<Head>,
    /// The file's key in record ids (see `file_key`): reused when reading
    /// resumes here. Absent in older agents' pos files (a new key is
    /// drawn), and ignored by them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key: Option<u64>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PosFile {
    version: u32,
    files: Vec<(FileId, Position)>,
    /// Counts commits; the journal's entries name the one they follow.
    /// Absent in older agents' pos files, ignored by them.
    #[serde(default)]
    generation: u64,
}

/// Positions of sources without a pos_file, kept for the life of the process
/// (keyed by the source's identity, see `PositionStore::load`) so that a
/// reload does not read their files again from wherever it would start.
static IN_MEMORY: Mutex<BTreeMap<String, BTreeMap<FileId, Position>>> = Mutex::new(BTreeMap::new());

pub struct PositionStore {
    path: Option<PathBuf>,
    /// Without a path: the key in `IN_MEMORY`.
    memory_key: String,
    pub entries: BTreeMap<FileId, Position>,
    /// True when a pos file existed: files that appeared while the agent was
    /// down are then read from their head.
    pub existed: bool,
    /// The pos_file's commit count.
    generation: u64,
    /// Positions handed on since the last commit (see `position_journal`).
    journal: Option<Journal>,
}

impl PositionStore {
    /// Loads the pos_file at `path`; without one, the positions the same
    /// source (`memory_key`: its kind, tag and paths) had before a reload.
    pub fn load(path: Option<PathBuf>, memory_key: &str) -> anyhow::Result<PositionStore> {
        let mut store = PositionStore {
            path: path.clone(),
            memory_key: memory_key.to_string(),
            entries: BTreeMap::new(),
            existed: false,
            generation: 0,
            journal: path.as_deref().and_then(Journal::beside),
        };
        let Some(path) = path else {
            if let Some(entries) = IN_MEMORY.lock().unwrap().get(memory_key) {
                store.entries = entries.clone();
                store.existed = true;
            }
            return Ok(store);
        };
        match fs::read(&path) {
            Ok(bytes) => {
                store.existed = true;
                match serde_json::from_slice::<PosFile>(&bytes) {
                    Ok(p) => {
                        store.entries = p.files.into_iter().collect();
                        store.generation = p.generation;
                    }
                    // Renames are atomic, so this is damage from outside;
                    // reading from the start again is the safe recovery.
                    Err(e) => crate::log::warn(&format!(
                        "pos_file {} is unreadable ({e}); starting over from the files' heads",
                        path.display()
                    )),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => anyhow::bail!("cannot read pos_file {}: {e}", path.display()),
        }
        if let Some(journal) = &store.journal {
            let applied = journal.replay(store.generation, &mut store.entries);
            if applied > 0 {
                store.existed = true;
                crate::log::info(&format!(
                    "pos_file {}: {applied} positions from after the last commit (the agent was killed, the machine kept running)",
                    path.display()
                ));
            }
        }
        Ok(store)
    }

    /// Notes, without an fsync, that `id` was handed on up to `position`
    /// (the buffers hold the records: see `position_journal`). Sources
    /// without a pos_file keep nothing across a kill anyway. False when
    /// nothing was written (no journal, or it failed): only a commit then
    /// makes `position` survive a kill.
    pub fn journal(&mut self, id: FileId, position: &Position) -> bool {
        match &mut self.journal {
            Some(j) => j.append(self.generation, id, position),
            None => false,
        }
    }

    /// Commits the positions (call only after the buffers are synced).
    pub fn save(&mut self) -> std::io::Result<()> {
        let Some(path) = &self.path else {
            IN_MEMORY
                .lock()
                .unwrap()
                .insert(self.memory_key.clone(), self.entries.clone());
            return Ok(());
        };
        let file = PosFile {
            version: 1,
            files: self.entries.iter().map(|(k, v)| (*k, v.clone())).collect(),
            generation: self.generation + 1,
        };
        write_atomic(
            path,
            &serde_json::to_vec(&file).expect("positions serialize"),
        )?;
        self.generation += 1;
        if let Some(j) = &mut self.journal {
            j.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn saves_and_loads() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/tail.pos");
        let mut s = PositionStore::load(Some(path.clone()), "k").unwrap();
        assert!(!s.existed);
        s.entries.insert(
            FileId { dev: 1, ino: 2 },
            Position {
                path: "/x".into(),
                offset: 10,
                crc: 3,
                window: 4,
                db: Some("shop".into()),
                head: Some(Head { len: 5, crc: 6 }),
                key: Some(0xfeed_f00d_dead_beef),
            },
        );
        s.save().unwrap();
        let s2 = PositionStore::load(Some(path.clone()), "k").unwrap();
        assert!(s2.existed);
        assert_eq!(s2.entries, s.entries);
        assert_eq!(
            s2.entries[&FileId { dev: 1, ino: 2 }].key,
            Some(0xfeed_f00d_dead_beef),
            "the file key survives a save and a load"
        );
        // An older agent's file (no head, no key) still loads.
        fs::write(
            &path,
            br#"{"version":1,"files":[[{"dev":1,"ino":2},{"path":"/x","offset":10,"crc":3,"window":4}]]}"#,
        )
        .unwrap();
        let old = PositionStore::load(Some(path.clone()), "k").unwrap();
        assert_eq!(old.entries[&FileId { dev: 1, ino: 2 }].head, None);
        assert_eq!(old.entries[&FileId { dev: 1, ino: 2 }].key, None);
        fs::write(&path, b"{garbage").unwrap();
        let s3 = PositionStore::load(Some(path), "k").unwrap();
        assert!(s3.entries.is_empty());
    }

    #[test]
    fn a_journaled_key_is_there_after_a_kill() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tail.pos");
        let mut s = PositionStore::load(Some(path.clone()), "k").unwrap();
        let id = FileId { dev: 3, ino: 4 };
        let position = Position {
            path: "/x".into(),
            offset: 0,
            crc: 0,
            window: 0,
            db: None,
            head: None,
            key: Some(7),
        };
        assert!(
            s.journal(id, &position),
            "journal written (it needs /proc's boot id)"
        );
        // No commit: the next start finds the key in the journal alone.
        let after = PositionStore::load(Some(path), "k").unwrap();
        assert!(after.existed);
        assert_eq!(after.entries[&id].key, Some(7));
    }

    #[test]
    fn without_a_file_positions_outlive_the_store() {
        let key = "tail t [\"/var/log/x\"] (test)";
        let mut s = PositionStore::load(None, key).unwrap();
        assert!(!s.existed, "first start");
        let id = FileId { dev: 9, ino: 9 };
        s.entries.insert(
            id,
            Position {
                path: "/var/log/x".into(),
                offset: 77,
                crc: 0,
                window: 0,
                db: None,
                head: None,
                key: Some(42),
            },
        );
        s.save().unwrap();
        // The next pipeline (a reload) picks them up; another source does not.
        let again = PositionStore::load(None, key).unwrap();
        assert!(again.existed);
        assert_eq!(again.entries[&id].offset, 77);
        assert_eq!(again.entries[&id].key, Some(42));
        assert!(PositionStore::load(None, "another")
            .unwrap()
            .entries
            .is_empty());
    }
}
