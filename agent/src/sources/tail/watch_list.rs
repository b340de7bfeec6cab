//! The files a tail source follows, how they are found, rotated and
//! forgotten, and the descriptors they hold.
//!
//! At most `max_open_files` descriptors are held: beyond that, files read
//! to their end are closed, least recently active first, and reopened by
//! path when their size changes. A glob matching thousands of files then
//! costs a stat per file and round, and never the descriptors the rest of
//! the agent (buffers, connections, `/metrics`) needs. A file whose path no
//! longer names it keeps its descriptor until it is read to its end, since
//! nothing else leads back to it: the one case that may go past the limit
//! when every descriptor is held by a file with unread data.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::config::TailConfig;
use super::followed_file::{siblings_among, FollowedFile, Start};
use crate::log;
use crate::metrics::PluginMetrics;
use crate::sources::file_identity::FileId;
use crate::sources::position::PositionStore;
use crate::sources::Downstream;

/// A matched file not followed yet because no descriptor could be freed
/// for it; tried again every round, in the order found.
struct Waiting {
    path: PathBuf,
    /// The file and its size when found, for a file that starts at its end
    /// (present at the first start): lines written while it waited are
    /// read.
    start_at: Option<(FileId, u64)>,
}

pub(super) struct WatchList {
    files: HashMap<FileId, FollowedFile>,
    max_open: usize,
    /// How many of `files` hold a descriptor.
    open: usize,
    waiting: Vec<Waiting>,
    /// Files that may be closed, least recently active first; checked again
    /// when taken, rebuilt when used up.
    evictable: VecDeque<FileId>,
    /// No file became closable since `evictable` was built: rebuilding it
    /// would find nothing more.
    evictable_complete: bool,
}

/// What a refresh found wrong: files that matched but could not be opened.
pub(super) type OpenErrors = Vec<(PathBuf, std::io::Error)>;

impl WatchList {
    pub(super) fn new(max_open: usize) -> WatchList {
        WatchList {
            files: HashMap::new(),
            max_open,
            open: 0,
            waiting: Vec::new(),
            evictable: VecDeque::new(),
            evictable_complete: false,
        }
    }

    pub(super) fn files(&self) -> impl Iterator<Item = &FollowedFile> {
        self.files.values()
    }

    pub(super) fn get(&self, id: FileId) -> Option<&FollowedFile> {
        self.files.get(&id)
    }

    /// Files with a key not saved yet (see `FollowedFile::key_saved`).
    pub(super) fn unsaved_keys(&self) -> Vec<FileId> {
        self.files
            .values()
            .filter(|f| !f.key_saved())
            .map(|f| f.id)
            .collect()
    }

    pub(super) fn mark_key_saved(&mut self, id: FileId) {
        if let Some(f) = self.files.get_mut(&id) {
            f.mark_key_saved();
        }
    }

    pub(super) fn open_count(&self) -> usize {
        self.open
    }

    /// Followed, and matched but waiting for a descriptor.
    pub(super) fn watched_count(&self) -> usize {
        self.files.len() + self.waiting.len()
    }

    /// Looks at every followed path (a rename or removal is seen at once,
    /// and so is the growth of a closed file), and follows the files in
    /// `found` (a full discovery) not followed yet. `from_end`: new files
    /// start at their end (the very first start without read_from_head).
    /// Returns whether anything `/status` shows changed, and the files that
    /// could not be opened.
    pub(super) fn refresh(
        &mut self,
        found: Option<Vec<PathBuf>>,
        from_end: bool,
        cfg: &TailConfig,
        positions: &mut PositionStore,
    ) -> (bool, OpenErrors) {
        let mut changed = false;
        let mut errors = Vec::new();
        if found.is_some() {
            self.retry_reopen(&mut errors);
        }
        // Followed paths are looked at every round, not only on a full
        // refresh: after a rename the writer recreates the path on its next
        // write, which can come after this round, and that successor may be
        // rotated away again before the next full refresh (it would never
        // be read).
        let mut paths = found.unwrap_or_default();
        paths.extend(self.files.values().map(|f| f.path.clone()));
        paths.extend(self.waiting.iter().map(|w| w.path.clone()));
        paths.sort();
        paths.dedup();
        let mut current: HashMap<PathBuf, (FileId, u64)> = HashMap::with_capacity(paths.len());
        for path in paths {
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            current.insert(path, (FileId::of(&meta), meta.len()));
        }

        let mut lost_track = Vec::new();
        for f in self.files.values_mut() {
            if f.rotated_at.is_some() {
                continue;
            }
            match current.get(&f.path) {
                Some(&(id, size)) if id == f.id => {
                    if !f.is_open() {
                        f.seen(size);
                    }
                }
                _ if f.is_open() => {
                    f.mark_rotated();
                    changed = true;
                }
                _ => lost_track.push(f.id),
            }
        }
        // Where each file is now, among the matched paths (a rotation may
        // rename to a name the glob matches too); directories are listed
        // once, as logrotate moves many files at once.
        let mut located: HashMap<FileId, (&PathBuf, u64)> = HashMap::new();
        if !lost_track.is_empty() {
            for (path, &(id, size)) in &current {
                located.entry(id).or_insert((path, size));
            }
        }
        let mut listings = HashMap::new();
        for id in lost_track {
            self.follow_moved(id, &located, &mut listings, positions);
            changed = true;
        }

        let waiting: HashSet<&PathBuf> = self.waiting.iter().map(|w| &w.path).collect();
        let mut new: Vec<(&PathBuf, FileId, u64)> = current
            .iter()
            .filter(|(path, (id, _))| !self.files.contains_key(id) && !waiting.contains(path))
            .map(|(path, &(id, size))| (path, id, size))
            .collect();
        new.sort();
        let mut queue = std::mem::take(&mut self.waiting);
        queue.extend(new.into_iter().map(|(path, id, size)| Waiting {
            path: path.clone(),
            start_at: from_end.then_some((id, size)),
        }));
        for w in queue {
            let Some(&(id, _)) = current.get(&w.path) else {
                continue;
            };
            if self.files.contains_key(&id) {
                continue;
            }
            if self.open >= self.max_open && !self.evict_one() {
                self.waiting.push(w);
                continue;
            }
            match self.follow(w, cfg, positions) {
                Ok(true) => changed = true,
                Ok(false) => {}
                Err(e) => errors.push(e),
            }
        }
        (changed, errors)
    }

    /// Files that could not be reopened: tried again (with the problem
    /// reported again, inside the full refresh that decides which problems
    /// are current).
    fn retry_reopen(&mut self, errors: &mut OpenErrors) {
        let failed: Vec<FileId> = self
            .files
            .values()
            .filter(|f| f.reopen_failed)
            .map(|f| f.id)
            .collect();
        for id in failed {
            if self.open >= self.max_open && !self.evict_one() {
                return;
            }
            let f = self.files.get_mut(&id).expect("listed above");
            let path = f.path.clone();
            match f.reopen(&path) {
                Ok(true) => {
                    f.reopen_failed = false;
                    self.open += 1;
                }
                // Another file at the path: the refresh sees where this went.
                Ok(false) => f.reopen_failed = false,
                Err(e) => errors.push((path, e)),
            }
        }
    }

    /// Opens `w.path` and follows the file there.
    fn follow(
        &mut self,
        w: Waiting,
        cfg: &TailConfig,
        positions: &PositionStore,
    ) -> Result<bool, (PathBuf, std::io::Error)> {
        let opened = File::open(&w.path).and_then(|file| {
            let id = FileId::of(&file.metadata()?);
            Ok((file, id))
        });
        let (file, id) = opened.map_err(|e| (w.path.clone(), e))?;
        // Looked at a moment ago, but may have been replaced since.
        if self.files.contains_key(&id) {
            return Ok(false);
        }
        let start = match (positions.entries.get(&id), w.start_at) {
            (Some(pos), _) => Start::Saved(Some(pos)),
            (None, Some((found, size))) if found == id => Start::At(size),
            (None, _) => Start::Saved(None),
        };
        let f = FollowedFile::start(w.path, id, file, cfg, start);
        self.files.insert(id, f);
        self.open += 1;
        Ok(true)
    }

    /// A closed file whose path no longer names it. Renamed to another
    /// path the globs match: followed there, as it is. Renamed beside its
    /// path (`name.1`) with bytes not read yet: opened there and read to
    /// its end like any rotated file. Otherwise: forgotten.
    fn follow_moved(
        &mut self,
        id: FileId,
        located: &HashMap<FileId, (&PathBuf, u64)>,
        listings: &mut HashMap<PathBuf, Vec<PathBuf>>,
        positions: &mut PositionStore,
    ) {
        let Some(f) = self.files.get_mut(&id) else {
            return;
        };
        if let Some(&(at, size)) = located.get(&id) {
            log::info(&format!(
                "tail: {} was renamed to {}; following it there",
                f.path.display(),
                at.display()
            ));
            f.path = at.clone();
            f.seen(size);
            return;
        }
        let moved = {
            let dir = f.path.parent().unwrap_or(Path::new("/"));
            let listing = listings.entry(dir.to_path_buf()).or_insert_with(|| {
                fs::read_dir(dir)
                    .map(|entries| entries.flatten().map(|e| e.path()).collect())
                    .unwrap_or_default()
            });
            siblings_among(&f.path, listing)
                .find(|p| fs::metadata(p).is_ok_and(|m| FileId::of(&m) == id))
                .cloned()
        };
        if let Some(at) = moved {
            let size = fs::metadata(&at).map(|m| m.len()).unwrap_or(0);
            let f = self.files.get_mut(&id).expect("looked up above");
            f.seen(size);
            if f.wants_reading() {
                // Unread bytes and nothing else leads to them: worth a
                // descriptor over the limit if none can be freed.
                if self.open >= self.max_open {
                    self.evict_one();
                }
                let f = self.files.get_mut(&id).expect("looked up above");
                if let Ok(true) = f.reopen(&at) {
                    self.open += 1;
                    f.mark_rotated();
                    return;
                }
            }
        }
        let f = self.files.remove(&id).expect("looked up above");
        positions.entries.remove(&id);
        if f.unread() > 0 {
            log::warn(&format!(
                "tail: {} was removed or moved out of reach while closed; {} bytes written to it after byte {} are lost",
                f.path.display(),
                f.unread(),
                f.position().offset,
            ));
        } else if f.pending_len() > 0 {
            log::warn(&format!(
                "tail: {}: released with {} bytes of an unterminated last line",
                f.path.display(),
                f.pending_len()
            ));
        } else {
            log::info(&format!(
                "tail: {} was rotated or removed after it was read to its end",
                f.path.display()
            ));
        }
    }

    /// Which files to read this round: the open ones first, so that those
    /// read to their end can give up their descriptor to the closed ones
    /// that grew.
    pub(super) fn to_read(&self) -> Vec<FileId> {
        let mut ids: Vec<FileId> = self
            .files
            .values()
            .filter(|f| f.is_open())
            .map(|f| f.id)
            .collect();
        let mut waiting: Vec<&FollowedFile> =
            self.files.values().filter(|f| f.wants_reading()).collect();
        waiting.sort_by_key(|f| f.last_data);
        ids.extend(waiting.into_iter().map(|f| f.id));
        ids
    }

    /// Reads one file, reopening it first if it was closed and grew; such
    /// a file waits (Ok(false)) while no descriptor can be freed.
    pub(super) fn read(
        &mut self,
        id: FileId,
        cfg: &TailConfig,
        metrics: &PluginMetrics,
        router: &dyn Downstream,
        buf: &mut Vec<u8>,
    ) -> Result<bool, ReadError> {
        let Some(f) = self.files.get(&id) else {
            return Ok(false);
        };
        if !f.is_open() {
            if !f.wants_reading() {
                return Ok(false);
            }
            if self.open >= self.max_open && !self.evict_one() {
                return Ok(false);
            }
            let f = self.files.get_mut(&id).expect("looked up above");
            let path = f.path.clone();
            match f.reopen(&path) {
                Ok(true) => self.open += 1,
                // The path names another file now: the next refresh
                // finds where this one went.
                Ok(false) => return Ok(false),
                Err(e) => {
                    f.reopen_failed = true;
                    return Err(ReadError::Reopen(path, e));
                }
            }
        }
        let f = self.files.get_mut(&id).expect("looked up above");
        let read = f.read(cfg, metrics, router, buf).map_err(ReadError::Emit)?;
        if f.closable() {
            self.evictable_complete = false;
        }
        Ok(read)
    }

    /// Closes least recently active idle files until at most
    /// `max_open_files` descriptors are held (or none is left to close).
    pub(super) fn trim(&mut self) {
        while self.open > self.max_open && self.evict_one() {}
    }

    /// Closes the least recently active file that can be; false if none.
    fn evict_one(&mut self) -> bool {
        loop {
            let Some(id) = self.evictable.pop_front() else {
                if self.evictable_complete {
                    return false;
                }
                let mut idle: Vec<(Instant, FileId)> = self
                    .files
                    .values()
                    .filter(|f| f.closable())
                    .map(|f| (f.last_data, f.id))
                    .collect();
                idle.sort();
                self.evictable = idle.into_iter().map(|(_, id)| id).collect();
                self.evictable_complete = true;
                continue;
            };
            if let Some(f) = self.files.get_mut(&id).filter(|f| f.closable()) {
                f.close();
                self.open -= 1;
                return true;
            }
        }
    }

    /// Lets go of rotated files that have been idle at their end for
    /// `wait`. Returns whether any was.
    pub(super) fn release_rotated(
        &mut self,
        wait: Duration,
        positions: &mut PositionStore,
    ) -> bool {
        let done: Vec<FileId> = self
            .files
            .values()
            .filter(|f| f.releasable(wait))
            .map(|f| f.id)
            .collect();
        for id in &done {
            let f = self.files.remove(id).expect("listed above");
            if f.is_open() {
                self.open -= 1;
            }
            if f.pending_len() > 0 {
                log::warn(&format!(
                    "tail: {}: released with {} bytes of an unterminated last line",
                    f.path.display(),
                    f.pending_len()
                ));
            }
            positions.entries.remove(id);
            log::info(&format!("tail: released rotated {}", f.path.display()));
        }
        !done.is_empty()
    }
}

pub(super) enum ReadError {
    /// The output refused the records (closed, or full with overflow
    /// throw): nothing advanced.
    Emit(anyhow::Error),
    /// A closed file that grew could not be opened again.
    Reopen(PathBuf, std::io::Error),
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufferError;
    use crate::event::Event;
    use crate::sources::file_identity::Head;
    use crate::sources::position::Position;
    use std::io::Write;
    use std::path::Path;
    use std::sync::{Arc, Mutex};

    /// Collects the messages handed on.
    #[derive(Default)]
    struct Collect(Mutex<Vec<String>>);

    impl Downstream for Collect {
        fn emit(&self, _: &Arc<str>, events: Vec<Event>) -> Result<(), BufferError> {
            let mut got = self.0.lock().unwrap();
            got.extend(
                events
                    .iter()
                    .map(|e| e.record["message"].as_str().unwrap().to_string()),
            );
            Ok(())
        }
        fn sync(&self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl Collect {
        fn take(&self) -> Vec<String> {
            let mut got = std::mem::take(&mut *self.0.lock().unwrap());
            got.sort();
            got
        }
    }

    fn config(dir: &Path, max_open_files: usize) -> TailConfig {
        TailConfig {
            kind: "tail",
            paths: vec![format!("{}/*.log", dir.display())],
            auto: None,
            exclude_paths: Vec::new(),
            pos_file: None,
            tag: "t".into(),
            read_from_head: true,
            refresh_interval: Duration::from_secs(60),
            rotate_wait: Duration::from_secs(5),
            max_line_size: 1 << 16,
            message_key: "message",
            poll_interval: Duration::from_millis(10),
            read_bytes_limit: 1 << 16,
            max_open_files,
            slow_log: None,
            id_key: None,
        }
    }

    /// What the source's loop does in one round.
    fn round(list: &mut WatchList, cfg: &TailConfig, positions: &mut PositionStore, out: &Collect) {
        let found = crate::sources::file_discovery::discover(&cfg.paths, &[]).files;
        let (_, errors) = list.refresh(Some(found), false, cfg, positions);
        assert!(errors.is_empty(), "open errors: {errors:?}");
        let metrics = PluginMetrics::default();
        let mut buf = Vec::new();
        for id in list.to_read() {
            assert!(list.read(id, cfg, &metrics, out, &mut buf).is_ok());
        }
        list.trim();
    }

    fn append(path: &Path, text: &str) {
        let mut f = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .unwrap();
        f.write_all(text.as_bytes()).unwrap();
    }

    #[test]
    fn lines_longer_than_a_read_come_out_whole_from_files_read_in_turns() {
        // A read buffer of 4 KiB shared by two files: each read starts
        // with that file's partial line, never the other's; one longer
        // than a read grows in its own vector (15 reads for 60000 bytes).
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = config(dir.path(), 2);
        cfg.read_bytes_limit = 4096;
        let mut positions = PositionStore::load(None, "watch_list test long lines").unwrap();
        let mut list = WatchList::new(2);
        let out = Collect::default();
        let metrics = PluginMetrics::default();
        let mut buf = Vec::new();
        let mut want = Vec::new();
        let mut rounds = |list: &mut WatchList, buf: &mut Vec<u8>| {
            for _ in 0..40 {
                let found = crate::sources::file_discovery::discover(&cfg.paths, &[]).files;
                list.refresh(Some(found), false, &cfg, &mut positions);
                for id in list.to_read() {
                    assert!(list.read(id, &cfg, &metrics, &out, buf).is_ok());
                }
            }
        };
        for (name, fill) in [("a", 'a'), ("b", 'b')] {
            let mut text = String::new();
            for (i, len) in [10, 5000, 3, 4095, 4096, 4097, 12000, 1, 60000, 2]
                .into_iter()
                .enumerate()
            {
                let line = format!("{name}{i} {}", fill.to_string().repeat(len));
                text.push_str(&line);
                text.push('\n');
                want.push(line);
            }
            // The last line unfinished: held until its end is written.
            text.push_str(&format!("{name} half"));
            append(&dir.path().join(format!("{name}.log")), &text);
        }
        rounds(&mut list, &mut buf);
        want.sort();
        assert_eq!(out.take(), want);
        assert!(
            buf.len() <= 2 * 4096,
            "the read buffer kept {} bytes",
            buf.len()
        );
        for name in ["a", "b"] {
            append(&dir.path().join(format!("{name}.log")), " done\n");
        }
        rounds(&mut list, &mut buf);
        assert_eq!(out.take(), ["a half done", "b half done"]);
    }

    #[test]
    fn more_files_than_descriptors_are_read_in_turns_and_reopened_as_they_grow() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 2);
        let mut positions = PositionStore::load(None, "watch_list test 1").unwrap();
        let mut list = WatchList::new(2);
        let out = Collect::default();
        for i in 0..7 {
            append(
                &dir.path().join(format!("{i}.log")),
                &format!("{i} first\n"),
            );
        }
        for _ in 0..8 {
            round(&mut list, &cfg, &mut positions, &out);
            assert!(list.open_count() <= 2, "{} open", list.open_count());
        }
        let want: Vec<String> = (0..7).map(|i| format!("{i} first")).collect();
        assert_eq!(out.take(), want);
        assert_eq!(list.files().filter(|f| f.is_open()).count(), 2);

        for i in 0..7 {
            append(
                &dir.path().join(format!("{i}.log")),
                &format!("{i} second\n"),
            );
        }
        for _ in 0..8 {
            round(&mut list, &cfg, &mut positions, &out);
            assert!(list.open_count() <= 2, "{} open", list.open_count());
        }
        let want: Vec<String> = (0..7).map(|i| format!("{i} second")).collect();
        assert_eq!(out.take(), want, "each closed file's new line, once");

        // A closed file renamed to a name the globs match too: followed
        // there, nothing read twice, what is appended there read once.
        let closed = list.files().find(|f| !f.is_open()).unwrap().path.clone();
        let renamed = dir.path().join("renamed.log");
        fs::rename(&closed, &renamed).unwrap();
        append(&renamed, "renamed third\n");
        for _ in 0..4 {
            round(&mut list, &cfg, &mut positions, &out);
        }
        assert_eq!(out.take(), ["renamed third"]);
        assert_eq!(list.watched_count(), 7);

        // A closed file read to its end and deleted is forgotten.
        let closed = list.files().find(|f| !f.is_open()).unwrap().path.clone();
        fs::remove_file(&closed).unwrap();
        round(&mut list, &cfg, &mut positions, &out);
        assert_eq!(list.watched_count(), 6);
        assert!(out.take().is_empty());
    }

    #[test]
    fn a_closed_file_rewritten_in_place_is_read_from_its_head() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 1);
        let mut positions = PositionStore::load(None, "watch_list test 2").unwrap();
        let mut list = WatchList::new(1);
        let out = Collect::default();
        let body = "z".repeat(1100);
        let (a, b) = (dir.path().join("a.log"), dir.path().join("b.log"));
        append(&a, &format!("first\n{body}\n"));
        append(&b, "b\n");
        for _ in 0..4 {
            round(&mut list, &cfg, &mut positions, &out);
        }
        assert_eq!(out.take().len(), 3);
        let a_file = list.files().find(|f| f.path == a).unwrap();
        let a_id = a_file.id;
        if a_file.is_open() {
            // Make b the most recent so that a is the one closed.
            append(&b, "b again\n");
            round(&mut list, &cfg, &mut positions, &out);
            out.take();
        }
        assert!(!list.files().find(|f| f.path == a).unwrap().is_open());

        // The same inode (written through, not replaced), another file: its
        // bytes before the old position are even the same, so only the head
        // tells.
        fs::write(&a, format!("other\n{body}\nnew line\n")).unwrap();
        assert_eq!(FileId::of(&fs::metadata(&a).unwrap()), a_id);
        for _ in 0..4 {
            round(&mut list, &cfg, &mut positions, &out);
        }
        assert_eq!(
            out.take(),
            ["new line".to_string(), "other".into(), body.clone()]
        );
    }

    #[test]
    fn a_saved_position_of_another_file_on_the_same_inode_is_not_used() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = config(dir.path(), 4);
        let mut positions = PositionStore::load(None, "watch_list test 3").unwrap();
        let path = dir.path().join("a.log");
        fs::write(&path, "old file's line\n").unwrap();
        let old_head = Head::read(&File::open(&path).unwrap()).unwrap();
        fs::write(&path, "new file, line 1\nnew file, line 2\n").unwrap();
        let id = FileId::of(&fs::metadata(&path).unwrap());
        // As the old file left it: read to byte 16, and the new file's
        // bytes before 16 are not checked (no window saved).
        positions.entries.insert(
            id,
            Position {
                path: path.clone(),
                offset: 16,
                crc: 0,
                window: 0,
                db: None,
                head: Some(old_head),
                key: Some(1),
            },
        );
        let mut list = WatchList::new(4);
        let out = Collect::default();
        round(&mut list, &cfg, &mut positions, &out);
        round(&mut list, &cfg, &mut positions, &out);
        assert_eq!(out.take(), ["new file, line 1", "new file, line 2"]);
    }
}
