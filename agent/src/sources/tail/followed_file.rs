//! One followed file: where it is read up to, what is durable, and the
//! reading itself, with truncation (copytruncate) and in-place replacement
//! detected and the unread rest of the old content recovered from the
//! rotated copy. Its descriptor may be closed while it is idle and reopened
//! by path when it grows (see `watch_list`); everything else stays in
//! memory, so a closed file resumes exactly where it stopped.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::config::TailConfig;
use super::framing::{frame, identified_entry_event, Origin};
use crate::event::Event;
use crate::log;
use crate::metrics::PluginMetrics;
use crate::sources::file_identity::{FileId, Head};
use crate::sources::file_key::new_file_key;
use crate::sources::position::Position;
use crate::sources::slow_log::SlowLogParser;
use crate::sources::Downstream;
use crate::status::FileStatus;

/// How many bytes before the position the truncation checksum covers.
const WINDOW: usize = 1024;

/// Where a newly followed file starts.
pub(super) enum Start<'a> {
    /// From its saved position, if that still fits the file.
    Saved(Option<&'a Position>),
    /// From this offset (its size when first seen): files present at the
    /// very first start, unless `read_from_head`.
    At(u64),
}

pub(super) struct FollowedFile {
    pub id: FileId,
    /// The configured path it was found under (for messages, `/status`, and
    /// the successor that a rotation puts there).
    pub path: PathBuf,
    tag: Arc<str>,
    /// None while closed to spare descriptors.
    file: Option<File>,
    head: Head,
    /// Its key in record ids (`file_key`): kept while it is this file,
    /// drawn again when it is read from its head as another file.
    key: u64,
    /// The key is where a restart finds it (the journal or the pos_file),
    /// or no record carries it (no `id_key`). Until then nothing is read:
    /// records re-read after a kill would come with another key, and a
    /// collector would store them twice.
    key_saved: bool,
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
    /// The size when last read.
    last_size: u64,
    /// The size its path showed when last looked at (while closed).
    seen_size: u64,
    /// The last read found nothing new.
    at_eof: bool,
    /// Reopened and found not to start with its head any more: rewritten
    /// in place, or its inode recycled for another file.
    replaced: bool,
    /// Reopening failed (the file's permissions changed while it was
    /// closed): tried again on the next full refresh, where the problem is
    /// reported like any file that cannot be opened.
    pub reopen_failed: bool,
    /// When the path stopped pointing at this file (rename or delete).
    pub rotated_at: Option<Instant>,
    /// When data was last read (or the file was found or rotated): rotated
    /// files are released, and closed files chosen, by it.
    pub last_data: Instant,
}

impl FollowedFile {
    /// Starts following `file`, found at `path`.
    pub(super) fn start(
        path: PathBuf,
        id: FileId,
        file: File,
        cfg: &TailConfig,
        start: Start,
    ) -> FollowedFile {
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        let head = Head::read(&file).unwrap_or_default();
        let mut offset = 0;
        let mut db = None;
        let mut key = None;
        match start {
            Start::At(at) => offset = at.min(size),
            Start::Saved(Some(pos))
                if pos.offset <= size
                    && pos.head.is_none_or(|h| h.matches(&file))
                    && window_matches(&file, pos.offset, pos.crc, pos.window as usize) =>
            {
                offset = pos.offset;
                db = pos.db.clone();
                key = pos.key;
            }
            Start::Saved(Some(pos)) => log::warn(&format!(
                "tail: {} changed while the agent was down (size {size}, position {}, or its first bytes differ); reading from the head",
                path.display(),
                pos.offset
            )),
            Start::Saved(None) => {}
        }
        log::info(&format!(
            "tail: following {} from byte {offset}",
            path.display()
        ));
        FollowedFile {
            id,
            tag: Arc::from(expand_tag(&cfg.tag, &path)),
            path,
            recent: read_window(&file, offset),
            file: Some(file),
            head,
            // A key read back from a saved position is durable already.
            key_saved: key.is_some() || cfg.id_key.is_none(),
            key: key.unwrap_or_else(new_file_key),
            offset,
            consumed: offset,
            pending: Vec::new(),
            parser: cfg
                .slow_log
                .as_ref()
                .map(|o| SlowLogParser::new(o.max_entry_bytes, db)),
            last_size: size,
            seen_size: size,
            at_eof: false,
            replaced: false,
            reopen_failed: false,
            rotated_at: None,
            last_data: Instant::now(),
        }
    }

    pub(super) fn is_open(&self) -> bool {
        self.file.is_some()
    }

    /// See `key_saved`.
    pub(super) fn key_saved(&self) -> bool {
        self.key_saved
    }

    /// Its position (with the key) is in the journal or the pos_file now.
    pub(super) fn mark_key_saved(&mut self) {
        self.key_saved = true;
    }

    /// Open, read to its end and not needed open: the path still names it
    /// (so it can be reopened) and no slow-log entry waits for its timeout.
    pub(super) fn closable(&self) -> bool {
        self.file.is_some() && self.at_eof && self.rotated_at.is_none() && !self.assembling()
    }

    /// A slow-log entry is being assembled (its end may be a timeout away).
    fn assembling(&self) -> bool {
        self.parser
            .as_ref()
            .is_some_and(|p| p.pending_start().is_some())
    }

    pub(super) fn close(&mut self) {
        self.file = None;
        self.seen_size = self.last_size;
    }

    /// Where reading goes on from.
    fn read_pos(&self) -> u64 {
        self.consumed + self.pending.len() as u64
    }

    /// While closed: its path showed it with `size`.
    pub(super) fn seen(&mut self, size: u64) {
        self.seen_size = size;
    }

    /// Closed but with something to read (it grew, or shrank: truncated).
    pub(super) fn wants_reading(&self) -> bool {
        self.file.is_none() && self.seen_size != self.last_size && !self.reopen_failed
    }

    /// Bytes on disk past what was read, as far as known.
    pub(super) fn unread(&self) -> u64 {
        self.seen_size.saturating_sub(self.read_pos())
    }

    /// Opens the file again at `at` (its path, or where a rotation moved
    /// it). False when `at` names another file now; a file that no longer
    /// starts with its head is read again from there (see `replaced`).
    pub(super) fn reopen(&mut self, at: &Path) -> std::io::Result<bool> {
        let file = File::open(at)?;
        if FileId::of(&file.metadata()?) != self.id {
            return Ok(false);
        }
        self.replaced = !self.head.matches(&file);
        self.file = Some(file);
        self.at_eof = false;
        Ok(true)
    }

    pub(super) fn mark_rotated(&mut self) {
        log::info(&format!(
            "tail: {} was rotated or removed; reading the old file to its end",
            self.path.display()
        ));
        self.rotated_at = Some(Instant::now());
        self.last_data = Instant::now();
    }

    /// Rotated, read to its end and idle for `wait`: done.
    pub(super) fn releasable(&self, wait: Duration) -> bool {
        self.rotated_at.is_some() && self.last_data.elapsed() >= wait
    }

    /// Bytes of an unterminated last line held in memory.
    pub(super) fn pending_len(&self) -> usize {
        self.pending.len()
    }

    /// The resume point to save, with what identifies the file and checks
    /// it on the next start.
    pub(super) fn position(&self) -> Position {
        Position {
            path: self.path.clone(),
            offset: self.offset,
            crc: crc32fast::hash(&self.recent),
            window: self.recent.len() as u32,
            db: self.parser.as_ref().and_then(|p| p.db().map(String::from)),
            head: Some(self.head),
            key: Some(self.key),
        }
    }

    pub(super) fn status(&self) -> FileStatus {
        FileStatus {
            path: self.path.clone(),
            position: self.offset,
            size: if self.file.is_some() {
                self.last_size
            } else {
                self.seen_size
            },
            rotated: self.rotated_at.is_some(),
            open: self.file.is_some(),
        }
    }

    /// Reads new bytes (the file must be open) and hands complete lines (or
    /// slow-log entries) on. Returns whether anything was read; `buf` is
    /// the source's one read buffer, so a hundred idle files cost nothing.
    pub(super) fn read(
        &mut self,
        cfg: &TailConfig,
        metrics: &PluginMetrics,
        router: &dyn Downstream,
        buf: &mut Vec<u8>,
    ) -> anyhow::Result<bool> {
        let Some(file) = &self.file else {
            return Ok(false);
        };
        if !self.key_saved {
            return Ok(false);
        }
        let size = file.metadata().map(|m| m.len()).unwrap_or(self.last_size);
        if size != self.last_size || self.replaced {
            let read_pos = self.read_pos();
            let truncated = self.replaced
                || size < read_pos
                || !window_matches(
                    file,
                    self.offset,
                    crc32fast::hash(&self.recent),
                    self.recent.len(),
                );
            if truncated {
                let recovered = recover_from_copy(self);
                log::warn(&format!(
                    "tail: {} was {} (size {size}, position {read_pos}); {}reading from the head",
                    self.path.display(),
                    if size < read_pos {
                        "truncated"
                    } else if self.replaced {
                        "replaced (its first bytes changed)"
                    } else {
                        "truncated (the content before the position changed)"
                    },
                    if recovered.is_empty() {
                        String::new()
                    } else {
                        format!(
                            "recovered {} unread bytes from its rotated copy, ",
                            recovered.len()
                        )
                    }
                ));
                let mut data = std::mem::take(&mut self.pending);
                data.extend_from_slice(&recovered);
                if !data.is_empty() && !data.ends_with(b"\n") {
                    // The old content's last line (or entry) is complete now.
                    data.push(b'\n');
                }
                let from = Origin {
                    key: self.key,
                    offset: self.consumed,
                };
                let (events, _) = frame(self.parser.as_mut(), from, cfg, metrics, &data, true);
                self.emit(router, metrics, events)?;
                self.offset = 0;
                self.consumed = 0;
                self.pending.clear();
                self.recent.clear();
                self.replaced = false;
                self.head = Head::default();
                self.reset_parser(cfg);
                // Its offsets start again at 0: the old key would give the
                // new content the ids of the old.
                self.key = new_file_key();
                self.key_saved = cfg.id_key.is_none();
            }
            if !self.head.is_full() {
                // A young file: its fingerprint grows with it.
                let file = self.file.as_ref().expect("checked open above");
                self.head = Head::read(file).unwrap_or(self.head);
            }
            self.last_size = size;
            if !self.key_saved {
                // Read on once the source has saved the new key.
                return Ok(true);
            }
        }

        let file = self.file.as_ref().expect("checked open above");
        let read_pos = self.read_pos();
        // The partial line left by the last read goes first and the file's
        // next bytes are read in after it, so that lines are split straight
        // out of one buffer: joining the two in a new vector copied every
        // read (the whole log once more, and 64 KiB allocated per read).
        // A partial line is usually short and is copied to the front of
        // the source's shared buffer; one longer than a read (up to
        // `max_line_size`) grows in its own vector instead, as copying it
        // at every read would cost the square of its length.
        let limit = cfg.read_bytes_limit;
        let keep = self.pending.len();
        let long = keep > limit;
        let read = if long {
            self.pending.resize(keep + limit, 0);
            let read = file.read_at(&mut self.pending[keep..], read_pos);
            self.pending
                .truncate(keep + read.as_ref().map_or(0, |&n| n));
            read
        } else {
            let room = keep + limit;
            if buf.len() < room || buf.len() > 2 * limit {
                // Not kept larger than two reads.
                buf.resize(room, 0);
                buf.shrink_to(room);
            }
            buf[..keep].copy_from_slice(&self.pending);
            file.read_at(&mut buf[keep..room], read_pos)
        };
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                log::warn(&format!("tail: cannot read {}: {e}", self.path.display()));
                return Ok(false);
            }
        };
        if n == 0 {
            // A slow-log entry at the end of a quiet file is complete.
            let quiet = cfg
                .slow_log
                .as_ref()
                .is_some_and(|o| self.last_data.elapsed() >= o.entry_timeout);
            if quiet && self.assembling() && self.pending.is_empty() {
                let mut entries = Vec::new();
                self.parser
                    .as_mut()
                    .expect("slow log parser")
                    .finish(&mut entries);
                let events = entries
                    .into_iter()
                    .map(|e| identified_entry_event(e, cfg, self.key))
                    .collect();
                self.emit(router, metrics, events)?;
                self.offset = self.consumed;
                self.recent = read_window(file, self.offset);
                return Ok(true);
            }
            self.at_eof = true;
            return Ok(false);
        }
        self.last_data = Instant::now();
        let data_start = self.consumed;
        let mut joined = Vec::new();
        let data: &[u8] = if long {
            joined = std::mem::take(&mut self.pending);
            &joined
        } else {
            &buf[..keep + n]
        };
        let from = Origin {
            key: self.key,
            offset: self.consumed,
        };
        let (events, consumed) = frame(self.parser.as_mut(), from, cfg, metrics, data, false);
        self.pending.clear();
        if let Err(e) = self.emit(router, metrics, events) {
            // Nothing advanced: re-read from the resume point next round.
            self.consumed = self.offset;
            self.reset_parser(cfg);
            return Err(anyhow::anyhow!("{}: {e}", self.path.display()));
        }
        let rest = &data[consumed..];
        self.consumed += consumed as u64;
        // All there was: the file can give up its descriptor now rather
        // than after one more read that finds nothing.
        self.at_eof = self.consumed + rest.len() as u64 >= size;
        let resume = self
            .parser
            .as_ref()
            .and_then(|p| p.pending_start())
            .unwrap_or(self.consumed);
        if resume != self.offset {
            // From the bytes just read where they reach: read again from
            // the file, they may already be another file's (a copytruncate
            // between the two reads), and a window of the wrong bytes hides
            // the truncation or picks the wrong rotated copy.
            let known = Known {
                start: data_start,
                data,
                before: (self.offset == data_start).then_some(&self.recent[..]),
            };
            self.recent = match known.window_before(resume) {
                Some(w) => w,
                None => read_window(self.file.as_ref().expect("checked open above"), resume),
            };
            self.offset = resume;
        }
        // The partial line, for the next read.
        if long && consumed == 0 {
            self.pending = joined;
        } else {
            self.pending.extend_from_slice(rest);
            if self.pending.capacity() > 2 * self.pending.len().max(4096) {
                self.pending.shrink_to_fit();
            }
        }
        Ok(true)
    }

    /// A fresh parser that keeps the stream's database (`use`).
    fn reset_parser(&mut self, cfg: &TailConfig) {
        if let (Some(p), Some(o)) = (self.parser.as_mut(), &cfg.slow_log) {
            *p = SlowLogParser::new(o.max_entry_bytes, p.db().map(String::from));
        }
    }

    fn emit(
        &self,
        router: &dyn Downstream,
        metrics: &PluginMetrics,
        events: Vec<Event>,
    ) -> anyhow::Result<()> {
        if events.is_empty() {
            return Ok(());
        }
        let n = events.len() as u64;
        router.emit(&self.tag, events)?;
        PluginMetrics::add(&metrics.records_in, n);
        Ok(())
    }
}

/// Bytes of the file known without reading it again: `data` from offset
/// `start`, and the window `before` it when that is known.
struct Known<'a> {
    start: u64,
    data: &'a [u8],
    before: Option<&'a [u8]>,
}

impl Known<'_> {
    /// The WINDOW bytes before `offset` (fewer at the file's head), if
    /// they are all known.
    fn window_before(&self, offset: u64) -> Option<Vec<u8>> {
        let upto = usize::try_from(offset.checked_sub(self.start)?).ok()?;
        let in_data = self.data.get(..upto)?;
        if in_data.len() >= WINDOW {
            return Some(in_data[in_data.len() - WINDOW..].to_vec());
        }
        let need = (offset as usize).min(WINDOW) - in_data.len();
        let before = self.before?;
        if before.len() < need {
            return None;
        }
        let mut w = before[before.len() - need..].to_vec();
        w.extend_from_slice(in_data);
        Some(w)
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

/// After a copytruncate, the bytes between our position and the end of the
/// old content live only in the copy logrotate made beside the file
/// (`name.1`, `name-20240101`, ...). Finds the copy whose bytes before our
/// position match what we read, and returns its unread rest.
fn recover_from_copy(w: &FollowedFile) -> Vec<u8> {
    let crc = crc32fast::hash(&w.recent);
    let read_pos = w.read_pos();
    if w.recent.is_empty() && w.offset > 0 {
        // Nothing to tell the copies apart by: taking one at random could
        // send old content twice and leave the right copy unread.
        return Vec::new();
    }
    for path in siblings(&w.path) {
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

/// Where logrotate puts a file's old content: beside it, under its name
/// plus a suffix (`name.1`, `name-20240101`), compressed copies left out.
fn siblings(path: &Path) -> Vec<PathBuf> {
    let Some(dir) = path.parent() else {
        return Vec::new();
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let listing: Vec<PathBuf> = entries.flatten().map(|e| e.path()).collect();
    siblings_among(path, &listing).cloned().collect()
}

/// `siblings` of `path` among `listing`, the entries of its directory.
pub(super) fn siblings_among<'a>(
    path: &'a Path,
    listing: &'a [PathBuf],
) -> impl Iterator<Item = &'a PathBuf> {
    let name = path.file_name().map(|n| n.to_string_lossy());
    listing.iter().filter(move |other| {
        let (Some(name), Some(other)) = (&name, other.file_name()) else {
            return false;
        };
        let other = other.to_string_lossy();
        other != *name && other.starts_with(&**name) && !other.ends_with(".gz")
    })
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
    fn the_window_comes_from_the_bytes_read() {
        let file: Vec<u8> = (0..5000u32).map(|i| (i % 251) as u8).collect();
        let window = |at: usize| file[at.saturating_sub(WINDOW)..at].to_vec();
        // All in what was just read.
        let k = Known {
            start: 1000,
            data: &file[1000..4000],
            before: None,
        };
        assert_eq!(k.window_before(3000), Some(window(3000)));
        // Partly before it: from the window kept at its start.
        let before = window(3000);
        let k = Known {
            start: 3000,
            data: &file[3000..3500],
            before: Some(&before),
        };
        assert_eq!(k.window_before(3200), Some(window(3200)));
        // At the file's head, shorter.
        let k = Known {
            start: 0,
            data: &file[..300],
            before: Some(&[]),
        };
        assert_eq!(k.window_before(200), Some(window(200)));
        let k = Known {
            start: 100,
            data: &file[100..300],
            before: Some(&file[..100]),
        };
        assert_eq!(k.window_before(250), Some(window(250)));
        // Not known: before the bytes read (a slow-log entry begun in an
        // earlier read), or no window at their start.
        let k = Known {
            start: 3000,
            data: &file[3000..3500],
            before: None,
        };
        assert_eq!(k.window_before(3200), None);
        assert_eq!(k.window_before(2900), None);
    }

    /// A copytruncate between reading a file and taking the window before
    /// the new position used to leave the window empty (the file was
    /// shorter than the position by then), and an empty window matched
    /// any rotated copy: the oldest copy's tail was sent again and the
    /// right copy's was lost.
    #[test]
    fn no_window_no_copy() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("mysqld.err");
        std::fs::write(&path, "").unwrap();
        std::fs::write(dir.path().join("mysqld.err.0"), "x\n".repeat(1000)).unwrap();
        let cfg =
            super::super::config::parse(&format!("path: {}\ntag: t\n", path.display()), false)
                .unwrap();
        let file = File::open(&path).unwrap();
        let id = FileId::of(&file.metadata().unwrap());
        let mut f = FollowedFile::start(path.clone(), id, file, &cfg, Start::At(0));
        f.offset = 500;
        f.consumed = 500;
        assert!(recover_from_copy(&f).is_empty());
        f.recent = b"x\n".repeat(10);
        assert_eq!(
            recover_from_copy(&f).len(),
            1500,
            "with a window, the copy that matches"
        );
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
