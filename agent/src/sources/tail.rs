//! `tail` source: follows files matched by globs, line by line, after
//! fluentd's in_tail.
//!
//! Durability: a file's position advances only after the records read from
//! it are durable in every output buffer (`Router::sync`), so a crash
//! re-reads at most what was not yet safe (at-least-once).
//!
//! Rotation by rename: the old file is read to its end and released only
//! when it has been idle at EOF for `rotate_wait`, so no unread bytes are
//! dropped. Truncation (copytruncate): detected by the size dropping below
//! the position, or by a checksum of the bytes just before the position no
//! longer matching; the unread rest of the old content is recovered from the
//! rotated copy beside the file when one matches, then the file is read from
//! its head.
//!
//! Record ids (`id_key`): each file has a random key, saved with its
//! position before any record carries it (`save_new_keys`); a record's id
//! is that key and the offset where it starts (`sources::file_key`).
//!
//! The parts: `config` (the options), `watch_list` (which files are
//! followed: discovery, rotation, the descriptors they may hold),
//! `followed_file` (reading one file), `framing` (bytes to events) and
//! `problem_log` (what is wrong, logged without flooding).

mod config;
mod followed_file;
mod framing;
mod problem_log;
mod watch_list;

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub use config::TailConfig;

use super::file_discovery;
use super::file_identity::FileId;
use super::position::{Position, PositionStore};
use super::{Built, Downstream, SourceSettings};
use crate::config::fields::{Fields, Result as ConfigResult};
use crate::log;
use crate::metrics::PluginMetrics;
use crate::status::{FileStatus, SourceProblem, SourceStatus};
use problem_log::ProblemLog;
use watch_list::{ReadError, WatchList};

/// How often a busy source commits its positions.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// How often a busy source refreshes its entry in `/status`: often enough
/// for a person, rarely enough to cost nothing next to the reading.
const STATUS_INTERVAL: Duration = Duration::from_millis(200);

/// `type: tail`'s entry in the sources table.
pub fn settings(f: &mut Fields) -> ConfigResult<Box<dyn SourceSettings>> {
    Ok(Box::new(TailConfig::from_config(f, false)?))
}

/// `type: mysql_slow_query`: followed like `tail`, framed into slow-log
/// entries (`framing`, `slow_log`).
pub fn slow_query_settings(f: &mut Fields) -> ConfigResult<Box<dyn SourceSettings>> {
    Ok(Box::new(TailConfig::from_config(f, true)?))
}

impl SourceSettings for TailConfig {
    fn kind(&self) -> &'static str {
        self.kind
    }

    fn prepare(&self) -> anyhow::Result<()> {
        match &self.pos_file {
            Some(pos) => super::check_pos_file(pos),
            None => Ok(()),
        }
    }

    fn max_open_files(&self) -> u64 {
        self.max_open_files as u64
    }

    fn build(self: Box<Self>, id: String, metrics: Arc<PluginMetrics>) -> anyhow::Result<Built> {
        let status = Arc::new(SourceStatus::new(
            id,
            self.kind,
            self.tag.clone(),
            self.paths.clone(),
        ));
        let tail = TailSource::new(*self, metrics, status.clone())?;
        Ok(Built {
            status,
            run: Box::new(move |downstream, stop| tail.run(downstream, stop)),
        })
    }
}

pub struct TailSource {
    config: TailConfig,
    metrics: Arc<PluginMetrics>,
    /// Problems seen (files missing, unreadable), for rate-limited logging
    /// and `/status`.
    problems: ProblemLog,
    status: Arc<SourceStatus>,
    /// Something `/status` shows changed since it was last published.
    status_stale: bool,
    last_status: Option<Instant>,
    /// The agent's user, named in advice about permissions.
    user: String,
    positions: PositionStore,
    files: WatchList,
    last_refresh: Option<Instant>,
    /// Records were handed on since the last position commit.
    dirty: bool,
    /// A busy source's commit under way (see `start_commit`).
    committing: Option<Committing>,
    read_buf: Vec<u8>,
}

/// A commit under way: the output buffers syncing on a thread of their
/// own, and the positions that are durable once they have synced.
struct Committing {
    synced: std::thread::JoinHandle<std::io::Result<()>>,
    positions: Vec<(FileId, Position)>,
}

impl TailSource {
    pub fn new(
        config: TailConfig,
        metrics: Arc<PluginMetrics>,
        status: Arc<SourceStatus>,
    ) -> anyhow::Result<TailSource> {
        // Without a pos_file, positions live in memory across reloads.
        let memory_key = format!("{} {} {:?}", config.kind, config.tag, config.paths);
        let positions = PositionStore::load(config.pos_file.clone(), &memory_key)?;
        if let Some(auto) = &config.auto {
            log::info(&format!(
                "{} {}: path auto: {} ({})",
                config.kind,
                config.tag,
                auto.path.display(),
                auto.origin
            ));
        }
        Ok(TailSource {
            files: WatchList::new(config.max_open_files),
            config,
            metrics,
            problems: ProblemLog::default(),
            status,
            status_stale: true,
            last_status: None,
            user: file_discovery::effective_user(),
            positions,
            last_refresh: None,
            dirty: false,
            committing: None,
            read_buf: Vec::new(),
        })
    }

    /// Runs until `stop`: reads, hands records on, and commits positions
    /// only after the buffers holding those records are synced.
    pub fn run(mut self, router: Arc<dyn Downstream>, stop: Arc<AtomicBool>) {
        let mut last_commit = Instant::now();
        // With a memory buffer a kill loses what was handed on anyway.
        let journal = router.survives_kill();
        while !stop.load(Ordering::Relaxed) {
            self.finish_commit(false, journal);
            self.refresh();
            self.save_new_keys(&*router);
            let mut progressed = false;
            for id in self.files.to_read() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match self.files.read(
                    id,
                    &self.config,
                    &self.metrics,
                    &*router,
                    &mut self.read_buf,
                ) {
                    Ok(read) => {
                        progressed |= read;
                        // What was just handed on is in the buffers' files
                        // (page cache): a kill from here on re-reads none of it.
                        let kept = read && journal;
                        if let Some(f) = self.files.get(id).filter(|_| kept) {
                            self.positions.journal(f.id, &f.position());
                        }
                    }
                    Err(ReadError::Emit(e)) => {
                        // Output refused (closed or full with overflow throw):
                        // nothing advanced; try again after a pause.
                        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        log::warn(&format!("tail: {e}"));
                        std::thread::sleep(self.config.poll_interval);
                    }
                    Err(ReadError::Reopen(path, e)) => self.report_open(&path, &e),
                }
            }
            self.files.trim();
            self.publish_gauges();
            self.status_stale |= progressed;
            self.publish_status();
            // Positions are committed (buffers fsynced first) every
            // COMMIT_INTERVAL while busy and at once when idle: committing
            // less often only means more re-reading after a crash, never loss.
            self.dirty |= progressed;
            if self.dirty && (!progressed || last_commit.elapsed() >= COMMIT_INTERVAL) {
                if progressed {
                    // Busy: the buffers sync while reading goes on.
                    if self.committing.is_none() {
                        self.start_commit(&router);
                        last_commit = Instant::now();
                    }
                } else if self.commit(&*router) {
                    last_commit = Instant::now();
                } else {
                    std::thread::sleep(self.config.poll_interval);
                    continue;
                }
            }
            if !progressed {
                if self
                    .files
                    .release_rotated(self.config.rotate_wait, &mut self.positions)
                {
                    self.status_stale = true;
                }
                std::thread::sleep(self.config.poll_interval);
            }
        }
        self.finish_commit(true, journal);
        if self.dirty {
            self.commit(&*router);
        }
    }

    fn publish_gauges(&self) {
        let m = &self.metrics;
        m.open_files
            .store(self.files.open_count() as u64, Ordering::Relaxed);
        m.watched_files
            .store(self.files.watched_count() as u64, Ordering::Relaxed);
    }

    /// Shows the files followed and the current problems in `/status`, at
    /// most every STATUS_INTERVAL and only when something changed.
    fn publish_status(&mut self) {
        if !self.status_stale
            || self
                .last_status
                .is_some_and(|t| t.elapsed() < STATUS_INTERVAL)
        {
            return;
        }
        self.status_stale = false;
        self.last_status = Some(Instant::now());
        let mut files: Vec<FileStatus> = self.files.files().map(|f| f.status()).collect();
        files.sort_by(|a, b| (&a.path, a.rotated).cmp(&(&b.path, b.rotated)));
        let mut problems: Vec<SourceProblem> = self
            .problems
            .current()
            .map(|p| SourceProblem {
                path: p.path.display().to_string(),
                reason: p.reason.as_str(),
                message: p.message(&self.user, self.config.auto.as_ref()),
            })
            .collect();
        problems.sort_by(|a, b| (&a.path, a.reason).cmp(&(&b.path, b.reason)));
        self.status.set_files(files);
        self.status.set_problems(problems);
    }

    /// Starts a commit of the positions as they are now: the output
    /// buffers sync on another thread (everything handed on so far, so
    /// every record before these positions), and `finish_commit` saves the
    /// positions once they have. Reading goes on meanwhile: done here, the
    /// fsyncs kept the tail thread from reading for tens of milliseconds
    /// at each commit.
    fn start_commit(&mut self, router: &Arc<dyn Downstream>) {
        let positions = self.files.files().map(|f| (f.id, f.position())).collect();
        let r = router.clone();
        match std::thread::Builder::new()
            .name("tail-commit".into())
            .spawn(move || r.sync())
        {
            Ok(synced) => {
                self.committing = Some(Committing { synced, positions });
                self.dirty = false;
            }
            // No thread: the commit is made here, as when idle.
            Err(_) => {
                self.commit(&**router);
            }
        }
    }

    /// Ends the commit under way, if any, once its buffers have synced (at
    /// once with `wait`): saves the positions it started with. Those of
    /// files read since are noted again in the journal, which the save
    /// cleared (`journal`: the source keeps one), so that a kill re-reads no
    /// more than it would have. False when the sync failed: the records are
    /// still to be committed.
    fn finish_commit(&mut self, wait: bool, journal: bool) -> bool {
        let Some(c) = self.committing.take_if(|c| wait || c.synced.is_finished()) else {
            return true;
        };
        match c.synced.join() {
            Ok(Ok(())) => {
                for (id, p) in c.positions {
                    // Not a file released meanwhile (nor another one that
                    // took its inode since).
                    if self
                        .files
                        .get(id)
                        .is_some_and(|f| f.position().head == p.head)
                    {
                        self.positions.entries.insert(id, p);
                    }
                }
                if let Err(e) = self.positions.save() {
                    log::error(&format!("tail: cannot save pos_file: {e}"));
                }
                if journal {
                    for f in self.files.files() {
                        self.positions.journal(f.id, &f.position());
                    }
                }
                true
            }
            Ok(Err(e)) => {
                log::error(&format!(
                    "tail: cannot sync output buffers: {e}; positions not saved"
                ));
                self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                self.dirty = true;
                false
            }
            Err(panic) => std::panic::resume_unwind(panic),
        }
    }

    /// Syncs the output buffers, then saves positions. False on failure.
    fn commit(&mut self, router: &dyn Downstream) -> bool {
        // A commit under way first: positions are saved in order.
        self.finish_commit(true, router.survives_kill());
        if let Err(e) = router.sync() {
            log::error(&format!(
                "tail: cannot sync output buffers: {e}; positions not saved"
            ));
            self.metrics.errors.fetch_add(1, Ordering::Relaxed);
            return false;
        }
        self.save_positions();
        self.dirty = false;
        true
    }

    /// Saves the keys of files that got one since the last round (newly
    /// followed, or read again from their head as another file) before any
    /// record carrying them is handed on; until then they are not read
    /// (`FollowedFile::key_saved`). Otherwise a crash after their first
    /// batch reached the buffers, but before a commit, would re-read the
    /// batch under a new key, and the collector would store it twice.
    /// Their position at this point is where reading starts, so it claims
    /// nothing read. A commit, not a journal entry: the journal is ignored
    /// after a reboot, and the buffers' fsynced records would then be read
    /// again under a new key. New keys come with new files (a start, a
    /// rotation), so this is one fsync now and then. Without a pos_file
    /// nothing survives a restart, and a reload commits first.
    fn save_new_keys(&mut self, router: &dyn Downstream) {
        let new = self.files.unsaved_keys();
        if new.is_empty() {
            return;
        }
        if self.config.pos_file.is_some() && !self.commit(router) {
            return;
        }
        for id in new {
            self.files.mark_key_saved(id);
        }
    }

    fn save_positions(&mut self) {
        for f in self.files.files() {
            self.positions.entries.insert(f.id, f.position());
        }
        if let Err(e) = self.positions.save() {
            log::error(&format!("tail: cannot save pos_file: {e}"));
        }
    }

    /// Finds new files (every refresh_interval) and notices rotation and
    /// growth of the followed ones (every round).
    fn refresh(&mut self) {
        let first = self.last_refresh.is_none();
        let full = self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= self.config.refresh_interval);
        let mut found: Option<Vec<PathBuf>> = None;
        if full {
            self.last_refresh = Some(Instant::now());
            self.status_stale = true;
            self.problems.begin_round();
            let discovered =
                file_discovery::discover(&self.config.paths, &self.config.exclude_paths);
            found = Some(discovered.files);
            for p in discovered.problems {
                self.report(p);
            }
        }
        // Files present at the very first start are followed from their end
        // unless read_from_head; files that appear later (or while the agent
        // was down) are read whole.
        let from_end = first && !self.config.read_from_head && !self.positions.existed;
        let (changed, errors) =
            self.files
                .refresh(found, from_end, &self.config, &mut self.positions);
        self.status_stale |= changed;
        for (path, e) in errors {
            self.report_open(&path, &e);
        }
        // After the files were opened too: a file that cannot be opened is
        // as current a problem as a glob that matches nothing.
        if full {
            self.problems.settle(&self.config);
        }
    }

    fn report_open(&mut self, path: &Path, e: &std::io::Error) {
        let pattern = self.pattern_of(path);
        self.report(file_discovery::Problem::open(&pattern, path, e));
    }

    /// Counts a problem under its reason in `/metrics` and logs it, at most
    /// once per `PROBLEM_LOG_INTERVAL` for the same path and reason.
    fn report(&mut self, p: file_discovery::Problem) {
        self.status_stale = true;
        self.metrics.count_error(p.reason.as_str());
        if self.problems.should_log(&p) {
            log::warn(&format!(
                "{} {}: {}",
                self.config.kind,
                self.config.tag,
                p.message(&self.user, self.config.auto.as_ref())
            ));
        }
    }

    /// The configured glob that names `path` (for messages).
    fn pattern_of(&self, path: &Path) -> String {
        self.config
            .paths
            .iter()
            .find(|p| glob::Pattern::new(p).is_ok_and(|g| g.matches_path(path)))
            .cloned()
            .unwrap_or_else(|| path.display().to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::BufferError;
    use crate::event::Event;
    use std::collections::HashSet;
    use std::io::Write;
    use std::sync::Mutex;

    /// Takes records as a file buffer would (kept across a kill), and
    /// checks at each batch that the file key in every record's id is
    /// already where a restarted agent finds it: the pos_file or its
    /// journal.
    struct KeysMustBeSaved {
        pos_file: PathBuf,
        /// (message, _id) in arrival order.
        got: Mutex<Vec<(String, String)>>,
        /// Ids whose key a restart would not have found.
        unsaved: Mutex<Vec<String>>,
    }

    impl Downstream for KeysMustBeSaved {
        fn emit(&self, _: &Arc<str>, events: Vec<Event>) -> Result<(), BufferError> {
            let saved: HashSet<u64> = PositionStore::load(Some(self.pos_file.clone()), "check")
                .unwrap()
                .entries
                .values()
                .filter_map(|p| p.key)
                .collect();
            for e in events {
                let id = e.record["_id"].as_str().unwrap().to_string();
                let key = u64::from_str_radix(&id[..16], 16).unwrap();
                if !saved.contains(&key) {
                    self.unsaved.lock().unwrap().push(id.clone());
                }
                let message = e.record["message"].as_str().unwrap().to_string();
                self.got.lock().unwrap().push((message, id));
            }
            Ok(())
        }
        fn sync(&self) -> std::io::Result<()> {
            Ok(())
        }
        fn survives_kill(&self) -> bool {
            true
        }
    }

    impl KeysMustBeSaved {
        fn wait_for(&self, n: usize) -> Vec<(String, String)> {
            let start = Instant::now();
            loop {
                let got = self.got.lock().unwrap().clone();
                if got.len() >= n {
                    return got;
                }
                assert!(start.elapsed() < Duration::from_secs(10), "got {got:?}");
                std::thread::sleep(Duration::from_millis(10));
            }
        }
    }

    fn start(
        dir: &Path,
        out: &Arc<KeysMustBeSaved>,
    ) -> (Arc<AtomicBool>, std::thread::JoinHandle<()>) {
        let config = config::parse(
            &format!(
                "path: {0}/*.log\npos_file: {0}/tail.pos\ntag: t\nread_from_head: true\npoll_interval: 10ms\nid_key: _id\n",
                dir.display()
            ),
            false,
        )
        .unwrap();
        let status = Arc::new(SourceStatus::new(
            "t".into(),
            "tail",
            "t".into(),
            config.paths.clone(),
        ));
        let source = TailSource::new(config, Arc::default(), status).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let (router, s): (Arc<dyn Downstream>, _) = (out.clone(), stop.clone());
        (stop, std::thread::spawn(move || source.run(router, s)))
    }

    #[test]
    fn a_key_is_saved_before_records_carry_it_and_outlives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("a.log");
        std::fs::write(&log, "1\n2\n3\n").unwrap();
        let out = Arc::new(KeysMustBeSaved {
            pos_file: dir.path().join("tail.pos"),
            got: Mutex::default(),
            unsaved: Mutex::default(),
        });
        let (stop, source) = start(dir.path(), &out);
        let first = out.wait_for(3);
        // Truncated and rewritten: another file from byte 0, another key.
        std::fs::write(&log, "x\n").unwrap();
        out.wait_for(4);
        stop.store(true, Ordering::Relaxed);
        source.join().unwrap();

        // A restart resumes with the key the file had.
        std::fs::OpenOptions::new()
            .append(true)
            .open(&log)
            .unwrap()
            .write_all(b"y\n")
            .unwrap();
        let (stop, source) = start(dir.path(), &out);
        let got = out.wait_for(5);
        stop.store(true, Ordering::Relaxed);
        source.join().unwrap();

        assert_eq!(*out.unsaved.lock().unwrap(), Vec::<String>::new());
        let key = |id: &str| id[..16].to_string();
        let (k1, k2) = (key(&first[0].1), key(&got[3].1));
        assert_ne!(k1, k2, "the rewritten file has a key of its own");
        let want: Vec<(String, String)> = [
            ("1", &k1, 0),
            ("2", &k1, 2),
            ("3", &k1, 4),
            ("x", &k2, 0),
            ("y", &k2, 2),
        ]
        .iter()
        .map(|(m, k, at)| (m.to_string(), format!("{k}-{at}")))
        .collect();
        assert_eq!(got, want);
    }
}
