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

use std::collections::HashMap;
use std::fs::{self, File};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::file_discovery;
use super::position::{FileId, Position, PositionStore};
use super::slow_log::{SlowEntry, SlowLogParser};
use super::Downstream;
use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::event::{now_nanos, Event, Record};
use crate::log;
use crate::metrics::PluginMetrics;
use crate::mysql::option_files::{self, OptionFileError, ResolvedLog, DEFAULT_OPTION_FILES};
use crate::status::{FileStatus, SourceProblem, SourceStatus};
use crate::yaml::NodeKind;

#[derive(Debug, Clone)]
pub struct TailConfig {
    /// `tail` or `mysql_slow_query`, for messages and `/status`.
    pub kind: &'static str,
    /// Globs; with `path: auto`, the one log file the server's option
    /// files name.
    pub paths: Vec<String>,
    /// Set for `path: auto`: the resolved log and where it came from.
    pub auto: Option<ResolvedLog>,
    pub exclude_paths: Vec<String>,
    pub pos_file: Option<PathBuf>,
    pub tag: String,
    pub read_from_head: bool,
    pub refresh_interval: Duration,
    pub rotate_wait: Duration,
    pub max_line_size: usize,
    pub message_key: String,
    /// How often files are checked for new data when idle.
    pub poll_interval: Duration,
    /// Bytes read from one file before its records are handed on.
    pub read_bytes_limit: usize,
    /// Set for `mysql_slow_query`: lines are assembled into slow-log
    /// entries, and positions only ever point at entry boundaries.
    pub slow_log: Option<SlowLogOptions>,
}

/// `path: auto`: the error log (`tail`) or the slow query log
/// (`mysql_slow_query`) that the server's option files name.
fn resolve_auto(slow_log: bool, option_files: &[String]) -> Result<ResolvedLog, OptionFileError> {
    let files: Vec<PathBuf> = if option_files.is_empty() {
        DEFAULT_OPTION_FILES.iter().map(PathBuf::from).collect()
    } else {
        option_files.iter().map(PathBuf::from).collect()
    };
    let options = option_files::read(&files)?;
    let host = crate::event::hostname();
    Ok(if slow_log {
        options.slow_query_log(&host)
    } else {
        options.error_log(&host)
    })
}

#[derive(Debug, Clone)]
pub struct SlowLogOptions {
    /// Longer entries are truncated (and flagged), never fatal.
    pub max_entry_bytes: usize,
    /// An entry at the end of a file is complete once the file has been
    /// quiet this long.
    pub entry_timeout: Duration,
}

impl TailConfig {
    /// `slow_log`: read the options of `mysql_slow_query`, which follows
    /// files exactly like `tail` but frames slow-log entries.
    pub fn from_config(f: &mut Fields, slow_log: bool) -> ConfigResult<TailConfig> {
        let kind = if slow_log { "mysql_slow_query" } else { "tail" };
        let path_node = f.required("path")?;
        let option_files = f.string_list("mysql_option_files")?;
        let is_auto = matches!(&path_node.kind, NodeKind::Scalar { value, .. } if value == "auto");
        let (paths, auto) = if is_auto {
            let log = resolve_auto(slow_log, &option_files)
                .or_else(|e| error(path_node, format!("{kind}: path auto: {e}")))?;
            // The server's path is a file name, never a pattern.
            let pattern = glob::Pattern::escape(&log.path.to_string_lossy());
            (vec![pattern], Some(log))
        } else {
            if !option_files.is_empty() {
                return error(
                    f.node(),
                    format!("{kind}: mysql_option_files applies only to `path: auto`"),
                );
            }
            let paths = match &path_node.kind {
                NodeKind::Seq(items) => items
                    .iter()
                    .map(crate::config::fields::string)
                    .collect::<ConfigResult<Vec<_>>>()?,
                _ => crate::config::fields::string(path_node)?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect(),
            };
            for p in &paths {
                if !p.starts_with('/') {
                    return error(
                        path_node,
                        format!("{kind}: path `{p}` must be absolute (or `auto`)"),
                    );
                }
                if let Err(e) = glob::Pattern::new(p) {
                    return error(path_node, format!("{kind}: bad glob `{p}`: {e}"));
                }
            }
            (paths, None)
        };
        let cfg = TailConfig {
            kind,
            paths,
            auto,
            exclude_paths: f.string_list("exclude_path")?,
            pos_file: f.string("pos_file")?.map(PathBuf::from),
            tag: f.required_string("tag")?,
            read_from_head: f.bool("read_from_head", false)?,
            refresh_interval: f.duration("refresh_interval", Duration::from_secs(60))?,
            rotate_wait: f.duration("rotate_wait", Duration::from_secs(5))?,
            max_line_size: f.size("max_line_size", 256 << 10)? as usize,
            message_key: f.string("message_key")?.unwrap_or_else(|| "message".into()),
            poll_interval: f.duration("poll_interval", Duration::from_millis(250))?,
            read_bytes_limit: f.size("read_bytes_limit_per_batch", 256 << 10)? as usize,
            slow_log: None,
        };
        let mut cfg = cfg;
        if slow_log {
            // Half the http output's default max_request_bytes (1 MiB): a
            // cut entry, its header fields and JSON escaping still fit in
            // one ordinary request.
            let max_entry_bytes = f.size("max_entry_size", 512 << 10)? as usize;
            cfg.slow_log = Some(SlowLogOptions {
                max_entry_bytes,
                entry_timeout: f.duration("entry_timeout", Duration::from_secs(1))?,
            });
            // Lines are bounded by the entry size instead.
            cfg.max_line_size = max_entry_bytes.max(16);
        }
        if cfg.max_line_size < 16 {
            return error(f.node(), "tail: max_line_size must be at least 16 bytes");
        }
        Ok(cfg)
    }
}

/// How often a busy source commits its positions.
const COMMIT_INTERVAL: Duration = Duration::from_millis(200);

/// How many bytes before the position the truncation checksum covers.
const WINDOW: usize = 1024;

/// How often a busy source refreshes its entry in `/status`: often enough
/// for a person, rarely enough to cost nothing next to the reading.
const STATUS_INTERVAL: Duration = Duration::from_millis(200);

struct Watched {
    id: FileId,
    path: PathBuf,
    tag: Arc<str>,
    file: File,
    /// Bytes before this are durable downstream: the resume point.
    offset: u64,
    /// Bytes before this were handed to the framing (equal to `offset` for
    /// lines; for slow logs the entry being assembled lies in between).
    consumed: u64,
    /// Read past `consumed`: an incomplete last line waiting for its newline.
    pending: Vec<u8>,
    parser: Option<SlowLogParser>,
    /// The last bytes before `offset`, for the truncation checksum.
    recent: Vec<u8>,
    last_size: u64,
    /// When the path stopped pointing at this file (rename or delete).
    rotated_at: Option<Instant>,
    /// When this rotated file was last found to have new data.
    last_data: Instant,
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
    watched: HashMap<FileId, Watched>,
    last_refresh: Option<Instant>,
    /// Records were handed on since the last position commit.
    dirty: bool,
    read_buf: Vec<u8>,
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
            config,
            metrics,
            problems: ProblemLog::default(),
            status,
            status_stale: true,
            last_status: None,
            user: file_discovery::effective_user(),
            positions,
            watched: HashMap::new(),
            last_refresh: None,
            dirty: false,
            read_buf: Vec::new(),
        })
    }

    /// Runs until `stop`: reads, hands records on, and commits positions
    /// only after the buffers holding those records are synced.
    pub fn run(mut self, router: Arc<dyn Downstream>, stop: Arc<AtomicBool>) {
        let mut last_commit = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            self.refresh();
            let mut progressed = false;
            let ids: Vec<FileId> = self.watched.keys().copied().collect();
            for id in ids {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                match self.read_file(id, &*router) {
                    Ok(read) => progressed |= read,
                    Err(e) => {
                        // Output refused (closed or full with overflow throw):
                        // nothing advanced; try again after a pause.
                        self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                        log::warn(&format!("tail: {e}"));
                        std::thread::sleep(self.config.poll_interval);
                    }
                }
            }
            self.status_stale |= progressed;
            self.publish_status();
            // Positions are committed (buffers fsynced first) every
            // COMMIT_INTERVAL while busy and at once when idle: committing
            // less often only means more re-reading after a crash, never loss.
            self.dirty |= progressed;
            if self.dirty && (!progressed || last_commit.elapsed() >= COMMIT_INTERVAL) {
                if self.commit(&*router) {
                    last_commit = Instant::now();
                } else {
                    std::thread::sleep(self.config.poll_interval);
                    continue;
                }
            }
            if !progressed {
                self.release_rotated();
                std::thread::sleep(self.config.poll_interval);
            }
        }
        if self.dirty {
            self.commit(&*router);
        }
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
        let mut files: Vec<FileStatus> = self
            .watched
            .values()
            .map(|w| FileStatus {
                path: w.path.clone(),
                position: w.offset,
                size: w.last_size,
                rotated: w.rotated_at.is_some(),
            })
            .collect();
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

    /// Syncs the output buffers, then saves positions. False on failure.
    fn commit(&mut self, router: &dyn Downstream) -> bool {
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

    fn save_positions(&mut self) {
        for w in self.watched.values() {
            self.positions.entries.insert(
                w.id,
                Position {
                    path: w.path.clone(),
                    offset: w.offset,
                    crc: crc32fast::hash(&w.recent),
                    window: w.recent.len() as u32,
                    db: w.parser.as_ref().and_then(|p| p.db().map(String::from)),
                },
            );
        }
        if let Err(e) = self.positions.save() {
            log::error(&format!("tail: cannot save pos_file: {e}"));
        }
    }

    /// Finds new files (every refresh_interval) and notices rotation of the
    /// watched ones (every round).
    fn refresh(&mut self) {
        let first = self.last_refresh.is_none();
        let full = self
            .last_refresh
            .is_none_or(|t| t.elapsed() >= self.config.refresh_interval);
        let mut candidates: Vec<PathBuf> = Vec::new();
        if full {
            self.last_refresh = Some(Instant::now());
            self.status_stale = true;
            self.problems.begin_round();
            let found = file_discovery::discover(&self.config.paths, &self.config.exclude_paths);
            candidates = found.files;
            for p in found.problems {
                self.report(p);
            }
        }
        // Watched paths are checked every round so a rename is seen at once,
        // and so is the successor of a rotated file: after a rename the
        // writer recreates the path on its next write, which can come after
        // this round, and that file may be rotated away again before the next
        // full refresh (it would never be read).
        for w in self.watched.values() {
            candidates.push(w.path.clone());
        }
        candidates.sort();
        candidates.dedup();

        let mut current: HashMap<PathBuf, FileId> = HashMap::new();
        for path in candidates {
            let Ok(meta) = fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() {
                continue;
            }
            let id = FileId {
                dev: meta.dev(),
                ino: meta.ino(),
            };
            current.insert(path.clone(), id);
            if !self.watched.contains_key(&id) {
                self.watch(path, id, first);
            }
        }
        for w in self.watched.values_mut() {
            if w.rotated_at.is_none() && current.get(&w.path) != Some(&w.id) {
                log::info(&format!(
                    "tail: {} was rotated or removed; reading the old file to its end",
                    w.path.display()
                ));
                w.rotated_at = Some(Instant::now());
                w.last_data = Instant::now();
                self.status_stale = true;
            }
        }
        // After the files were opened too: a file that cannot be opened is
        // as current a problem as a glob that matches nothing.
        if full {
            self.problems.settle(&self.config);
        }
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

    fn watch(&mut self, path: PathBuf, id: FileId, at_startup: bool) {
        self.status_stale = true;
        let file = match File::open(&path) {
            Ok(f) => f,
            Err(e) => {
                let pattern = self.pattern_of(&path);
                self.report(file_discovery::Problem::open(&pattern, &path, &e));
                return;
            }
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let mut offset = 0;
        let mut recent = Vec::new();
        let mut db = None;
        match self.positions.entries.get(&id) {
            Some(pos) if pos.offset <= size && window_matches(&file, pos.offset, pos.crc, pos.window as usize) => {
                offset = pos.offset;
                recent = read_window(&file, offset);
                db = pos.db.clone();
            }
            Some(pos) => log::warn(&format!(
                "tail: {} changed while the agent was down (size {size}, position {}); reading from the head",
                path.display(),
                pos.offset
            )),
            // Files present at the very first start are followed from their
            // end unless read_from_head; files that appear later (or while
            // the agent was down) are read whole.
            None if at_startup && !self.config.read_from_head && !self.positions.existed => {
                offset = size;
                recent = read_window(&file, offset);
            }
            None => {}
        }
        log::info(&format!(
            "tail: following {} from byte {offset}",
            path.display()
        ));
        let tag = Arc::from(expand_tag(&self.config.tag, &path));
        self.watched.insert(
            id,
            Watched {
                id,
                path,
                tag,
                file,
                offset,
                consumed: offset,
                pending: Vec::new(),
                parser: self
                    .config
                    .slow_log
                    .as_ref()
                    .map(|o| SlowLogParser::new(o.max_entry_bytes, db)),
                recent,
                last_size: size,
                rotated_at: None,
                last_data: Instant::now(),
            },
        );
    }

    /// Reads new bytes of one file and hands complete lines (or slow-log
    /// entries) on. Returns whether anything was read.
    fn read_file(&mut self, id: FileId, router: &dyn Downstream) -> anyhow::Result<bool> {
        let cfg = &self.config;
        let metrics = &self.metrics;
        let w = self.watched.get_mut(&id).expect("watched id");
        let size = w.file.metadata().map(|m| m.len()).unwrap_or(w.last_size);
        if size != w.last_size {
            self.status_stale = true;
            let read_pos = w.consumed + w.pending.len() as u64;
            let truncated = size < read_pos || !window_matches_recent(&w.file, w.offset, &w.recent);
            if truncated {
                let recovered = recover_from_copy(w);
                log::warn(&format!(
                    "tail: {} was truncated (size {size} < position {read_pos} or content changed); {}reading from the head",
                    w.path.display(),
                    if recovered.is_empty() {
                        String::new()
                    } else {
                        format!("recovered {} unread bytes from its rotated copy, ", recovered.len())
                    }
                ));
                let mut data = std::mem::take(&mut w.pending);
                data.extend_from_slice(&recovered);
                if !data.is_empty() {
                    // The old content's last line (or entry) is complete now.
                    data.push(b'\n');
                }
                let (events, _) = frame(w, cfg, metrics, &data, true);
                emit(router, metrics, w, events)?;
                w.offset = 0;
                w.consumed = 0;
                w.pending.clear();
                w.recent.clear();
                if let (Some(p), Some(o)) = (w.parser.as_mut(), &cfg.slow_log) {
                    *p = SlowLogParser::new(o.max_entry_bytes, p.db().map(String::from));
                }
            }
            w.last_size = size;
        }

        let read_pos = w.consumed + w.pending.len() as u64;
        // One read buffer per source, not per file: a hundred idle logs
        // cost nothing.
        let buf = &mut self.read_buf;
        if buf.len() != cfg.read_bytes_limit {
            buf.resize(cfg.read_bytes_limit, 0);
        }
        let n = match w.file.read_at(buf, read_pos) {
            Ok(n) => n,
            Err(e) => {
                log::warn(&format!("tail: cannot read {}: {e}", w.path.display()));
                return Ok(false);
            }
        };
        if n == 0 {
            // A slow-log entry at the end of a quiet file is complete.
            let quiet = cfg
                .slow_log
                .as_ref()
                .is_some_and(|o| w.last_data.elapsed() >= o.entry_timeout);
            let assembling = w
                .parser
                .as_ref()
                .is_some_and(|p| p.pending_start().is_some());
            if quiet && assembling && w.pending.is_empty() {
                let mut entries = Vec::new();
                w.parser
                    .as_mut()
                    .expect("slow log parser")
                    .finish(&mut entries);
                let events = entries
                    .into_iter()
                    .map(|e| entry_event(&w.tag, e))
                    .collect();
                emit(router, metrics, w, events)?;
                w.offset = w.consumed;
                w.recent = read_window(&w.file, w.offset);
                return Ok(true);
            }
            return Ok(false);
        }
        w.last_data = Instant::now();
        // Usually no partial line is pending and lines are split straight
        // out of the read buffer.
        let pending = std::mem::take(&mut w.pending);
        let joined: Vec<u8>;
        let data: &[u8] = if pending.is_empty() {
            &buf[..n]
        } else {
            let mut all = pending;
            all.extend_from_slice(&buf[..n]);
            joined = all;
            &joined
        };
        let (events, consumed) = frame(w, cfg, metrics, data, false);
        let rest = data[consumed..].to_vec();
        if let Err(e) = emit(router, metrics, w, events) {
            // Nothing advanced: re-read from the resume point next round.
            w.consumed = w.offset;
            if let (Some(p), Some(o)) = (w.parser.as_mut(), &cfg.slow_log) {
                *p = SlowLogParser::new(o.max_entry_bytes, p.db().map(String::from));
            }
            return Err(anyhow::anyhow!("{}: {e}", w.path.display()));
        }
        w.pending = rest;
        w.consumed += consumed as u64;
        let resume = w
            .parser
            .as_ref()
            .and_then(|p| p.pending_start())
            .unwrap_or(w.consumed);
        if resume != w.offset {
            w.offset = resume;
            w.recent = read_window(&w.file, w.offset);
        }
        Ok(true)
    }

    /// Lets go of rotated files that have been idle at EOF for rotate_wait.
    fn release_rotated(&mut self) {
        let wait = self.config.rotate_wait;
        let done: Vec<FileId> = self
            .watched
            .values()
            .filter(|w| w.rotated_at.is_some() && w.last_data.elapsed() >= wait)
            .map(|w| w.id)
            .collect();
        for id in done {
            if let Some(w) = self.watched.remove(&id) {
                self.status_stale = true;
                if !w.pending.is_empty() {
                    log::warn(&format!(
                        "tail: {}: released with {} bytes of an unterminated last line",
                        w.path.display(),
                        w.pending.len()
                    ));
                }
                self.positions.entries.remove(&id);
                log::info(&format!("tail: released rotated {}", w.path.display()));
            }
        }
    }
}

/// Splits complete lines off the front of `data` (without their newline),
/// and pieces of over-long lines; leaves the incomplete rest in `data`.
/// Turns the bytes after `w.consumed` into events: one per line, or one per
/// finished slow-log entry. Returns the events and the bytes consumed.
/// `final_` also ends a slow-log entry still being assembled.
fn frame(
    w: &mut Watched,
    cfg: &TailConfig,
    metrics: &PluginMetrics,
    data: &[u8],
    final_: bool,
) -> (Vec<Event>, usize) {
    let time = now_nanos();
    let mut events = Vec::new();
    let base = w.consumed;
    let consumed = match w.parser.as_mut() {
        None => split_lines(data, cfg.max_line_size, metrics, |line, end| {
            // A CRLF line (a log written on or for Windows) ends at its
            // `\r\n`: the message is the text without either.
            let line = match line.strip_suffix(b"\r") {
                Some(text) if data[end - 1] == b'\n' => text,
                _ => line,
            };
            events.push(make_event(&w.tag, time, &cfg.message_key, line, metrics));
        }),
        Some(parser) => {
            let mut entries = Vec::new();
            let consumed = split_lines(data, cfg.max_line_size, metrics, |line, end| {
                let newline = usize::from(data[end - 1] == b'\n');
                let start = end - line.len() - newline;
                let text = match std::str::from_utf8(line) {
                    Ok(t) => std::borrow::Cow::Borrowed(t),
                    Err(_) => {
                        metrics.invalid_utf8.fetch_add(1, Ordering::Relaxed);
                        String::from_utf8_lossy(line)
                    }
                };
                parser.push_line(
                    text.trim_end_matches('\r'),
                    base + start as u64,
                    base + end as u64,
                    &mut entries,
                );
            });
            if final_ {
                parser.finish(&mut entries);
            }
            events.extend(entries.into_iter().map(|e| entry_event(&w.tag, e)));
            consumed
        }
    };
    (events, consumed)
}

fn entry_event(tag: &Arc<str>, e: SlowEntry) -> Event {
    Event {
        tag: tag.clone(),
        time: e.time.unwrap_or_else(now_nanos),
        record: e.record,
    }
}

fn emit(
    router: &dyn Downstream,
    metrics: &PluginMetrics,
    w: &Watched,
    events: Vec<Event>,
) -> anyhow::Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let n = events.len() as u64;
    router.emit(&w.tag, events)?;
    PluginMetrics::add(&metrics.records_in, n);
    Ok(())
}

/// Splits complete lines (without their newline) and pieces of over-long
/// lines off the front of `data`; returns how many bytes were consumed. The
/// rest is an incomplete line.
fn split_lines(
    data: &[u8],
    max: usize,
    metrics: &PluginMetrics,
    mut emit: impl FnMut(&[u8], usize),
) -> usize {
    let mut start = 0;
    loop {
        let rest = &data[start..];
        match memchr(b'\n', rest) {
            Some(i) if i <= max => {
                emit(&rest[..i], start + i + 1);
                start += i + 1;
            }
            _ if rest.len() > max => {
                let cut = utf8_boundary(rest, max);
                emit(&rest[..cut], start + cut);
                metrics.lines_split.fetch_add(1, Ordering::Relaxed);
                start += cut;
            }
            _ => return start,
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    hay.iter().position(|&b| b == needle)
}

/// The largest cut <= max that does not split a UTF-8 sequence (when the
/// bytes are UTF-8 at all).
fn utf8_boundary(bytes: &[u8], max: usize) -> usize {
    let mut cut = max;
    for _ in 0..3 {
        if cut > 0 && (bytes[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
    }
    if cut == 0 {
        max
    } else {
        cut
    }
}

fn make_event(tag: &Arc<str>, time: i64, key: &str, line: &[u8], metrics: &PluginMetrics) -> Event {
    let text = match std::str::from_utf8(line) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            metrics.invalid_utf8.fetch_add(1, Ordering::Relaxed);
            String::from_utf8_lossy(line).into_owned()
        }
    };
    let mut record = Record::new();
    record.insert(key.to_owned(), Value::String(text));
    Event {
        tag: tag.clone(),
        time,
        record,
    }
}

fn read_window(file: &File, offset: u64) -> Vec<u8> {
    let len = (offset as usize).min(WINDOW);
    let mut v = vec![0u8; len];
    match file.read_exact_at(&mut v, offset - len as u64) {
        Ok(()) => v,
        Err(_) => Vec::new(),
    }
}

fn window_matches(file: &File, offset: u64, crc: u32, window: usize) -> bool {
    if window == 0 || offset < window as u64 {
        return window == 0;
    }
    let mut v = vec![0u8; window];
    file.read_exact_at(&mut v, offset - window as u64).is_ok() && crc32fast::hash(&v) == crc
}

fn window_matches_recent(file: &File, offset: u64, recent: &[u8]) -> bool {
    window_matches(file, offset, crc32fast::hash(recent), recent.len())
}

/// After a copytruncate, the bytes between our position and the end of the
/// old content live only in the copy logrotate made beside the file
/// (`name.1`, `name-20240101`, ...). Finds the copy whose bytes before our
/// position match what we read, and returns its unread rest.
fn recover_from_copy(w: &Watched) -> Vec<u8> {
    let Some(dir) = w.path.parent() else {
        return Vec::new();
    };
    let Some(name) = w.path.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let crc = crc32fast::hash(&w.recent);
    let read_pos = w.offset + w.pending.len() as u64;
    for entry in entries.flatten() {
        let path = entry.path();
        let other = entry.file_name().to_string_lossy().into_owned();
        if path == w.path || !other.starts_with(&name) || other.ends_with(".gz") {
            continue;
        }
        let Ok(file) = File::open(&path) else {
            continue;
        };
        let Ok(meta) = file.metadata() else { continue };
        if meta.len() < read_pos || !window_matches(&file, w.offset, crc, w.recent.len()) {
            continue;
        }
        let mut rest = vec![0u8; (meta.len() - read_pos) as usize];
        if file.read_exact_at(&mut rest, read_pos).is_ok() {
            return rest;
        }
    }
    Vec::new()
}

/// fluentd's `*` in a tail tag: replaced by the path with `/` as `.`.
fn expand_tag(tag: &str, path: &Path) -> String {
    if !tag.contains('*') {
        return tag.to_string();
    }
    let p = path
        .to_string_lossy()
        .trim_start_matches('/')
        .replace('/', ".");
    tag.replacen('*', &p, 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_long_pieces() {
        let m = PluginMetrics::default();
        let long = format!("three{}", "e".repeat(45));
        let data = format!("one\ntwo\n{long}\npart").into_bytes();
        let mut out = Vec::new();
        let consumed = split_lines(&data, 20, &m, |l, _| {
            out.push(String::from_utf8_lossy(l).into_owned())
        });
        assert_eq!(out[..2], ["one", "two"]);
        assert_eq!(
            out[2..].iter().map(|p| p.len()).collect::<Vec<_>>(),
            [20, 20, 10]
        );
        assert_eq!(out[2..].concat(), long);
        assert_eq!(&data[consumed..], b"part");
        assert_eq!(m.lines_split.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn long_pieces_do_not_split_characters() {
        let m = PluginMetrics::default();
        let data = "aé".repeat(20).into_bytes();
        let mut out = Vec::new();
        let consumed = split_lines(&data, 16, &m, |l, _| {
            out.push(std::str::from_utf8(l).unwrap().to_string())
        });
        assert!(out.iter().all(|p| p.len() <= 16));
        assert_eq!(
            out.concat() + std::str::from_utf8(&data[consumed..]).unwrap(),
            "aé".repeat(20)
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let m = PluginMetrics::default();
        let e = make_event(&Arc::from("t"), 0, "message", b"bad \xff byte", &m);
        assert_eq!(e.record["message"], "bad \u{fffd} byte");
        assert_eq!(m.invalid_utf8.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn tag_star_expands_to_path() {
        assert_eq!(
            expand_tag("mysql.*", Path::new("/data/mysql/a.err")),
            "mysql.data.mysql.a.err"
        );
        assert_eq!(expand_tag("mysql.error", Path::new("/x")), "mysql.error");
    }
}

/// How often the same problem (path and reason) is logged again while it
/// lasts; every occurrence is counted in `/metrics`.
const PROBLEM_LOG_INTERVAL: Duration = Duration::from_secs(600);

/// The current problems (by path and reason) and when each was last
/// logged; problems that went away are logged as resolved.
#[derive(Default)]
struct ProblemLog {
    current: HashMap<(PathBuf, &'static str), (Instant, file_discovery::Problem)>,
    seen_this_round: Vec<(PathBuf, &'static str)>,
}

impl ProblemLog {
    /// Notes `p` as current; true when it is to be logged now.
    fn should_log(&mut self, p: &file_discovery::Problem) -> bool {
        let key = (p.path.clone(), p.reason.as_str());
        self.seen_this_round.push(key.clone());
        match self.current.get_mut(&key) {
            Some((logged, known)) if logged.elapsed() < PROBLEM_LOG_INTERVAL => {
                // The system's words may change (ENOENT for another part).
                *known = p.clone();
                false
            }
            _ => {
                self.current.insert(key, (Instant::now(), p.clone()));
                true
            }
        }
    }

    /// Before a full refresh: it decides alone which problems remain.
    fn begin_round(&mut self) {
        self.seen_this_round.clear();
    }

    fn current(&self) -> impl Iterator<Item = &file_discovery::Problem> {
        self.current.values().map(|(_, p)| p)
    }

    /// After a full refresh: problems not seen again are over.
    fn settle(&mut self, cfg: &TailConfig) {
        let seen = std::mem::take(&mut self.seen_this_round);
        self.current.retain(|key, _| {
            let still = seen.contains(key);
            if !still {
                log::info(&format!(
                    "{} {}: {} is readable now",
                    cfg.kind,
                    cfg.tag,
                    key.0.display()
                ));
            }
            still
        });
    }
}
