//! Parsing MySQL, Percona Server and MariaDB slow query logs, line by line,
//! with bounded memory. No I/O here: the source feeds lines and gets
//! records; `pending_start` says where the entry being assembled began, the
//! only safe place to resume after a restart.
//!
//! # What the servers write
//!
//! Each entry is written in one piece under the log's lock (`sql/log.cc`,
//! `File_query_log::write_slow`, alike in all three servers):
//!
//! ```text
//! # Time: 2024-05-15T17:02:39.123456Z          optional (5.x: once a second)
//! # User@Host: app[app] @ web1 [10.0.0.5]  Id: 42   absent with --log-short-format
//! # Thread_id: 8  Schema: crm  QC_hit: No       Percona, MariaDB: more `# Key: value` lines
//! # Query_time: 1.5  Lock_time: 0.0001 Rows_sent: 10  Rows_examined: 20000   always
//! use shop;                                     only when the database differs from the last one logged
//! SET timestamp=1715792559;                     also last_insert_id=, insert_id=
//! SELECT ... ;                                  the statement as received, then `;\n`
//! ```
//!
//! An administrator command (`Quit`, `Init DB`) is the line `# administrator
//! command: Quit;` in place of the statement. Opening the log (at start or
//! `FLUSH LOGS`) writes a banner (`/usr/sbin/mysqld, Version: ... started
//! with:`, `Tcp port: ...`, `Time  Id Command  Argument`) and forgets the
//! last database logged.
//!
//! # How the parser reads it
//!
//! A state machine: between entries -> header (`#` lines) -> context (`use`,
//! the server's `SET`) -> statement. The statement's text is opaque: the
//! server escapes nothing, so its lines may look like anything, and a line
//! of it is never a header, a `use` or a `SET`. The statement ends only
//! where the next entry begins, which takes all of:
//!
//! 1. the statement's last line ends with `;` and then at once the line
//!    ending, as the server ends every statement (`;\n`, never `; \n`):
//!    `; ` or `;\r` inside a literal is text, as it is to pt-query-digest,
//!    whose separator is `;\n#`. The line ending is the one the entry's own
//!    header lines have: `\n`, or `\r\n` in a log converted to CRLF, where
//!    every line has it. Lines reach the parser without their ending (the
//!    line framing strips `\r\n`), so it is told by `end - start` against
//!    the text's length;
//! 2. the next line is a header line: `#` and a key (`# Time:`, `# User@Host:`,
//!    `# Query_time:`; not `# a comment`), see `grammar::is_header_line`;
//! 3. the block of `#` lines it begins contains `Query_time:`, which every
//!    server writes in every entry. Until the block ends the previous entry
//!    is held back; if the block has no `Query_time:`, its lines go back into
//!    the previous statement as text.
//!
//! Rule 3, not the form of the first line, is what keeps a literal out:
//! percona-toolkit's sample logs hold real entries with malformed `# Time:`
//! and `User@Host` lines, and a literal made to look like an entry would
//! have well-formed ones anyway.
//!
//! 4. A banner also ends an entry (after a statement, under rule 1), but
//!    only as the block the server writes in one piece
//!    (`grammar::BannerLine`: its lines in order, none missing), and only
//!    when what follows the block is what a server writes after opening
//!    its log: an entry (a header block, under rule 3), another banner, or
//!    nothing yet (the end of the input, or the file quiet for
//!    `entry_timeout`). Until then the entry before it is
//!    held back with the banner's lines; a line out of order, or anything
//!    else after the block, and those lines go back into the statement as
//!    text. So one banner-like line in a literal (`Tcp port: 3306 ...`
//!    after a line ending in `;`) is text, as is a whole banner followed
//!    by more of the literal: neither cuts the statement or forgets the
//!    database. pt-query-digest deletes banner-like lines wherever they
//!    are, which splits a literal where one stood between `;` and `#`, and
//!    misses a banner whose program is not named from `/` or a capital
//!    (`bin/mysqld, Version: ...`, as Percona Server 5.5 wrote it).
//!
//! The format is ambiguous all the same: a string literal with a line
//! ending in `;`, then `#` lines that include `Query_time:` (a whole banner
//! between them or not), is byte for byte what the server writes for two
//! entries, and is read as two: the statement cut after that line, the
//! rest an entry with whatever the literal claims (pt-query-digest splits
//! at any `;\n#` too, but reads one statement where the banner is one it
//! misses). A literal that lacks any of the three never makes an
//! entry: its `# Time:`, `# User@Host:`, `use`, `SET timestamp` and banner
//! lines stay text and claim nothing. One more limit: a line that is not
//! UTF-8 reaches the parser with U+FFFD in place of its bad bytes, so its
//! length no longer tells its line ending; ending in `;`, it ends the
//! statement if its ending may have been the header's.
//!
//! Also: a `# User@Host:` repeated on the next line is the same entry's
//! (old Percona servers); an entry that never gets a statement is dropped,
//! unless it has a `use` line, which was then the statement (`USE db` on
//! servers that write no SET line); blank lines between entries are
//! skipped. Memory is bounded by `max_entry_bytes`, for the statement and
//! for the header lines (beyond it the entry is cut and flagged
//! `truncated`), and by `MAX_CANDIDATE_BYTES`.
//!
//! # Fields
//!
//! `user`, `host`, `host_ip`, `thread_id`, then every header `Key: value`,
//! lowercased and typed by `fields` (one type per field; a value that does
//! not parse goes to `unparsed_fields`, keyed as written), `sql` (or
//! `command`), `explain` (MariaDB), `truncated`, `timestamp` (from `SET
//! timestamp`, else `# Time:`, else the last `# Time:` before it, as 5.x
//! writes `# Time:` only when the second changes).
//!
//! `db` is the entry's `use`, else its `Schema:` (empty: no database),
//! else the database of the entry before it: the server writes `use` only
//! when the database changes, and pt-query-digest carries `db` the same way
//! (`--inherit-attributes db`). A banner forgets it, as the server does.

mod fields;
mod grammar;

use serde_json::{Map, Value};

use crate::record::Record;
use fields::Typed;

/// A finished entry: its record, its time (nanoseconds) and the byte
/// offsets where it starts and just past it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowEntry {
    pub record: Record,
    pub time: Option<i64>,
    pub start: u64,
    pub end: u64,
}

/// Header and banner lines held while deciding whether they begin an entry
/// (rules 3 and 4); real ones are a few hundred bytes.
const MAX_CANDIDATE_BYTES: usize = 64 * 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// No entry: blank lines and banners are skipped.
    Between,
    /// The entry's `#` lines.
    Header,
    /// After the header, before the statement: `use db;`, `SET ...;`.
    Context,
    /// The statement's text.
    Statement,
    /// Lines of a server banner (rule 4), in `candidate`; the entry before
    /// it, if any, is `held`.
    Banner,
}

#[derive(Debug, Default)]
struct Entry {
    start: u64,
    end: u64,
    record: Record,
    unparsed: Map<String, Value>,
    sql: String,
    explain: String,
    header_bytes: usize,
    /// Opened by a `#` line (not a bare `use` or the rest of a statement).
    has_header: bool,
    has_time: bool,
    header_time: Option<i64>,
    has_user: bool,
    /// The last header line held the User@Host: old Percona servers repeat
    /// it on the next line.
    user_on_last_line: bool,
    has_fields: bool,
    has_query_time: bool,
    use_db: Option<String>,
    use_line: Option<String>,
    /// As written; "" is no database.
    schema: Option<String>,
    saw_set: bool,
    set_timestamp: Option<i64>,
    has_statement: bool,
    /// The statement's last line ends with `;` (rule 1).
    statement_ended: bool,
    /// The length of the line ending of the entry's header lines (rule 1):
    /// 1 for `\n`, 2 for `\r\n`; None while unknown.
    newline: Option<u64>,
    truncated: bool,
}

pub struct SlowLogParser {
    max_entry_bytes: usize,
    /// The database of the last entry (or the last bare `use db;`): the
    /// database of entries that do not name one.
    db: Option<String>,
    /// The last `# Time:`, for entries without one.
    last_time: Option<i64>,
    state: State,
    /// The entry being read (unless `Between`).
    entry: Entry,
    /// The previous entry, while `entry`'s header may still be its text.
    held: Option<Entry>,
    /// The raw lines after `held`'s statement (a header block, rule 3; a
    /// banner, rule 4), joined by '\n', while it is undecided whether they
    /// begin an entry or are its text.
    candidate: String,
    /// Where the last line of `candidate` ends.
    candidate_end: u64,
    /// The last line of `candidate` ends a statement (rule 1).
    candidate_ended: bool,
    /// `candidate` holds a whole banner: if an entry follows, the server
    /// restarted before it.
    candidate_restarts: bool,
    /// In `State::Banner`: the banner line expected next; None when the
    /// block is whole and what follows it decides (rule 4).
    banner_next: Option<grammar::BannerLine>,
    /// Where the banner began, the resume point while no entry is held.
    banner_start: u64,
    /// The line ending of the last entry's header lines, for entries that
    /// have none (rule 1).
    newline: Option<u64>,
    /// The length of the last statement: room to reserve for the next.
    sql_hint: usize,
}

impl SlowLogParser {
    pub fn new(max_entry_bytes: usize, db: Option<String>) -> SlowLogParser {
        SlowLogParser {
            max_entry_bytes,
            db,
            last_time: None,
            state: State::Between,
            entry: Entry::default(),
            held: None,
            candidate: String::new(),
            candidate_end: 0,
            candidate_ended: false,
            candidate_restarts: false,
            banner_next: None,
            banner_start: 0,
            newline: None,
            sql_hint: 0,
        }
    }

    /// The database context to persist with a position: that of the entries
    /// finished so far, so that a restart at `pending_start` reads the
    /// pending entry as it would have been read.
    pub fn db(&self) -> Option<&str> {
        self.db.as_deref()
    }

    /// Where the entry being assembled began, if one is.
    pub fn pending_start(&self) -> Option<u64> {
        match (&self.held, self.state) {
            (Some(held), _) => Some(held.start),
            (None, State::Between) => None,
            // A banner forgets the database only once it is decided: from
            // here a restart reads it again.
            (None, State::Banner) => Some(self.banner_start),
            (None, _) => Some(self.entry.start),
        }
    }

    /// Feeds one line (without its newline) that starts at byte `start` and
    /// ends (newline included) at `end`.
    pub fn push_line(&mut self, line: &str, start: u64, end: u64, out: &mut Vec<SlowEntry>) {
        match self.state {
            State::Between => self.between(line, start, end, out),
            State::Header => self.header(line, start, end, out),
            State::Context => self.context(line, start, end, out),
            State::Statement => self.statement(line, start, end, out),
            State::Banner => self.banner(line, start, end, out),
        }
    }

    /// Emits the entry being assembled (end of input, or the file has been
    /// quiet long enough that it must be complete). An entry that never got
    /// a statement is not a query and is dropped.
    pub fn finish(&mut self, out: &mut Vec<SlowEntry>) {
        if self.state == State::Banner {
            if self.banner_next.is_none() {
                // A whole banner and nothing since: the server restarted
                // (a literal is written in one piece, never left half).
                self.restart_after_banner(out);
                return;
            }
            self.banner_is_text();
        }
        if self.state == State::Between {
            return;
        }
        self.resolve_candidate(out);
        self.end_entry(out);
    }

    fn open(&mut self, start: u64, has_header: bool, state: State) {
        self.entry = Entry {
            start,
            end: start,
            has_header,
            // Room for a MySQL header's fields without growing the map.
            record: Record::with_capacity(16),
            newline: self.newline,
            ..Entry::default()
        };
        self.state = state;
    }

    fn between(&mut self, line: &str, start: u64, end: u64, out: &mut Vec<SlowEntry>) {
        if grammar::is_blank(line) {
            return;
        }
        if let Some(kind) = grammar::banner_line(line) {
            // Lines of a banner without its first are no entry either.
            if kind.is_first() {
                self.begin_banner(kind, line, start, end);
            }
        } else if line.starts_with('#') {
            self.open(start, true, State::Header);
            self.header(line, start, end, out);
        } else {
            // A bare `use db;`, the rest of an entry `finish` emitted early,
            // or a file that begins mid-entry.
            self.open(start, false, State::Context);
            self.context(line, start, end, out);
        }
    }

    fn server_restarted(&mut self) {
        self.db = None;
        self.last_time = None;
    }

    /// The first line of a banner (rule 4): the entry being read, if any,
    /// is held until what follows the banner shows whether it is one.
    fn begin_banner(&mut self, kind: grammar::BannerLine, line: &str, start: u64, end: u64) {
        debug_assert!(self.held.is_none() && self.candidate.is_empty());
        if self.state != State::Between {
            self.held = Some(std::mem::take(&mut self.entry));
        }
        self.banner_start = start;
        self.banner_next = kind.next();
        self.candidate_restarts = false;
        self.push_candidate(line, start, end);
        self.state = State::Banner;
    }

    /// A line after the first of a banner (rule 4).
    fn banner(&mut self, line: &str, start: u64, end: u64, out: &mut Vec<SlowEntry>) {
        let kind = grammar::banner_line(line);
        let fits = self.candidate.len() + 1 + line.len() <= MAX_CANDIDATE_BYTES;
        match self.banner_next {
            Some(next) if kind == Some(next) && fits => {
                self.banner_next = next.next();
                self.push_candidate(line, start, end);
                return;
            }
            // The block is whole: what follows decides.
            None if fits && (grammar::is_blank(line) || kind.is_some_and(|k| k.is_first())) => {
                // Blank lines are kept in case it is text; another banner
                // (the server restarted again) must be whole in turn.
                self.banner_next = kind.and_then(|k| k.next());
                self.push_candidate(line, start, end);
                return;
            }
            None if line.starts_with('#') && grammar::is_header_line(line) => {
                if self.held.is_none() {
                    // No statement for the banner to be part of.
                    self.candidate.clear();
                    self.server_restarted();
                    self.state = State::Between;
                    self.between(line, start, end, out);
                } else {
                    // The banner is real if this header block is (rule 3).
                    self.candidate_restarts = true;
                    self.open(start, true, State::Header);
                    self.header(line, start, end, out);
                }
                return;
            }
            _ => {}
        }
        // Not what the server writes: the banner's lines are text.
        self.banner_is_text();
        self.push_line(line, start, end, out);
    }

    /// A whole banner turned out real: the entry before it, if any, is
    /// over, and the server forgot its database.
    fn restart_after_banner(&mut self, out: &mut Vec<SlowEntry>) {
        self.candidate.clear();
        self.candidate_restarts = false;
        if let Some(held) = self.held.take() {
            self.finish_entry(held, out);
        }
        self.server_restarted();
        self.state = State::Between;
    }

    /// A banner's lines are not one: the held statement's text, or, with
    /// no entry before them, skipped as banner lines are between entries.
    fn banner_is_text(&mut self) {
        match self.held.take() {
            Some(held) => self.restore_candidate(held),
            None => {
                self.candidate.clear();
                self.state = State::Between;
            }
        }
    }

    fn header(&mut self, line: &str, start: u64, end: u64, out: &mut Vec<SlowEntry>) {
        let Some(body) = line.strip_prefix('#') else {
            // The header block has ended.
            if self.resolve_candidate(out) {
                self.state = State::Context;
                self.context(line, start, end, out);
            } else {
                self.statement(line, start, end, out);
            }
            return;
        };
        let body = grammar::trim_start(body);
        if let Some(command) = body.strip_prefix("administrator command:") {
            if self.resolve_candidate(out) {
                self.admin_command(command, line, start, end);
            } else {
                self.statement(line, start, end, out);
            }
            return;
        }
        let e = &self.entry;
        let (time, user) = (body.starts_with("Time:"), body.starts_with("User@Host:"));
        if user && e.user_on_last_line {
            // The same User@Host again (old Percona servers).
            if self.keep_candidate_line(line, start, end, out) {
                self.entry.end = end;
            } else {
                self.statement(line, start, end, out);
            }
            return;
        }
        if (time && (e.has_time || e.has_user || e.has_fields)) || (user && e.has_user) {
            // A new header: the entry so far never got a statement.
            if !self.resolve_candidate(out) {
                self.statement(line, start, end, out);
                return;
            }
            self.end_entry(out);
            self.open(start, true, State::Header);
        }
        if !self.keep_candidate_line(line, start, end, out) {
            // The candidate went back into the previous statement.
            self.statement(line, start, end, out);
            return;
        }
        self.entry.end = end;
        // The server wrote this line: its ending is the log's (rule 1). A
        // line with U+FFFD in it was not UTF-8 and its length tells nothing.
        let past = line_ending(line, start, end);
        if (past == 1 || past == 2) && !has_replacement(line) {
            self.entry.newline = Some(past);
        }
        self.read_header(body);
    }

    /// Records a raw header line of a candidate entry (rule 3); false if
    /// the candidate has grown past its bound and turned out to be text.
    fn keep_candidate_line(
        &mut self,
        line: &str,
        start: u64,
        end: u64,
        out: &mut Vec<SlowEntry>,
    ) -> bool {
        if self.held.is_none() {
            return true;
        }
        if self.candidate.len() + 1 + line.len() > MAX_CANDIDATE_BYTES {
            return self.resolve_candidate(out);
        }
        self.push_candidate(line, start, end);
        true
    }

    fn push_candidate(&mut self, line: &str, start: u64, end: u64) {
        if !self.candidate.is_empty() {
            self.candidate.push('\n');
        }
        self.candidate.push_str(line);
        self.candidate_end = end;
        self.candidate_ended = self
            .held
            .as_ref()
            .is_some_and(|h| ends_statement(line, start, end, h.newline));
    }

    /// Decides a candidate entry (rule 3) now that its header block is
    /// over: with `Query_time:` it is an entry and the held one is emitted
    /// (true); without, its lines are the held statement's text again and
    /// the held entry is the one being read (false). True if nothing is held.
    fn resolve_candidate(&mut self, out: &mut Vec<SlowEntry>) -> bool {
        let Some(held) = self.held.take() else {
            return true;
        };
        if self.entry.has_query_time {
            self.candidate.clear();
            self.finish_entry(held, out);
            if std::mem::take(&mut self.candidate_restarts) {
                // A banner stood between the two (rule 4).
                self.server_restarted();
            }
            return true;
        }
        self.restore_candidate(held);
        false
    }

    /// The held entry is the one being read again, the candidate's lines
    /// the end of its statement.
    fn restore_candidate(&mut self, held: Entry) {
        self.entry = held;
        let text = std::mem::take(&mut self.candidate);
        for l in text.split('\n') {
            self.append_statement(l);
        }
        self.entry.end = self.candidate_end;
        self.entry.statement_ended = self.candidate_ended;
        // Keeps the buffer's capacity for the next candidate.
        self.candidate = text;
        self.candidate.clear();
        self.candidate_restarts = false;
        self.state = State::Statement;
    }

    fn context(&mut self, line: &str, start: u64, end: u64, out: &mut Vec<SlowEntry>) {
        // No statement begins like a banner: the server may have restarted
        // with this entry half written (rule 4 decides).
        if let Some(kind) = grammar::banner_line(line).filter(|k| k.is_first()) {
            self.begin_banner(kind, line, start, end);
            return;
        }
        let e = &mut self.entry;
        if !e.saw_set {
            if e.use_line.is_none() {
                if let Some(db) = grammar::use_statement(line) {
                    e.use_db = Some(db.to_string());
                    e.use_line = Some(line.to_string());
                    e.end = end;
                    return;
                }
            }
            if let Some(set) = grammar::set_line(line) {
                e.saw_set = true;
                e.set_timestamp = set.timestamp;
                for (name, v) in [
                    ("insert_id", set.insert_id),
                    ("last_insert_id", set.last_insert_id),
                ] {
                    if let Some(v) = v {
                        e.record.insert(name, Value::from(v));
                    }
                }
                e.end = end;
                return;
            }
            if grammar::is_blank(line) {
                e.end = end;
                return;
            }
            if line.starts_with('#') && grammar::is_header_line(line) {
                // The next entry: this one had only context.
                self.end_entry(out);
                self.open(start, true, State::Header);
                self.header(line, start, end, out);
                return;
            }
        }
        if let Some(command) = line.strip_prefix("# administrator command:") {
            self.admin_command(command, line, start, end);
            return;
        }
        self.state = State::Statement;
        self.append_statement(line);
        self.entry.end = end;
        self.entry.statement_ended = ends_statement(line, start, end, self.entry.newline);
    }

    fn statement(&mut self, line: &str, start: u64, end: u64, out: &mut Vec<SlowEntry>) {
        if self.entry.statement_ended {
            if line.starts_with('#') && grammar::is_header_line(line) {
                // Rules 1 and 2 hold: a new entry, unless its header block
                // lacks Query_time (rule 3).
                self.held = Some(std::mem::take(&mut self.entry));
                self.open(start, true, State::Header);
                self.header(line, start, end, out);
                return;
            }
            if let Some(kind) = grammar::banner_line(line).filter(|k| k.is_first()) {
                // Rule 4: a banner, if the rest of it follows.
                self.begin_banner(kind, line, start, end);
                return;
            }
        }
        self.append_statement(line);
        self.entry.end = end;
        self.entry.statement_ended = ends_statement(line, start, end, self.entry.newline);
    }

    /// `# administrator command: <command>` (`line`, whole).
    fn admin_command(&mut self, command: &str, line: &str, start: u64, end: u64) {
        let e = &mut self.entry;
        let name = command.trim();
        e.record.insert(
            "command",
            Value::String(
                name.strip_suffix(';')
                    .unwrap_or(name)
                    .trim_end()
                    .to_string(),
            ),
        );
        e.has_statement = true;
        e.statement_ended = ends_statement(line, start, end, e.newline);
        e.end = end;
        self.state = State::Statement;
    }

    fn append_statement(&mut self, line: &str) {
        let e = &mut self.entry;
        let first = !e.has_statement;
        e.has_statement = true;
        if e.truncated {
            return;
        }
        let sep = usize::from(!first);
        if e.sql.len() + sep + line.len() > self.max_entry_bytes {
            e.truncated = true;
            let room = self.max_entry_bytes.saturating_sub(e.sql.len() + sep);
            if room > 0 {
                if !first {
                    e.sql.push('\n');
                }
                let mut cut = room.min(line.len());
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.sql.push_str(&line[..cut]);
            }
            return;
        }
        if first {
            // Most statements span a few lines: one allocation, not one per
            // doubling. A log's statements tend to be alike in length, so
            // the last one's (and a quarter) is the better guess.
            let guess = (4 * line.len()).max(self.sql_hint + self.sql_hint / 4);
            e.sql
                .reserve(guess.clamp(128, 64 << 10).min(self.max_entry_bytes));
        } else {
            e.sql.push('\n');
        }
        e.sql.push_str(line);
    }

    /// One `#` line of the entry's header (after the `#`).
    fn read_header(&mut self, body: &str) {
        let max = self.max_entry_bytes;
        let e = &mut self.entry;
        e.user_on_last_line = false;
        e.header_bytes += body.len();
        if e.header_bytes > max {
            e.truncated = true;
            return;
        }
        if let Some(t) = grammar::time_line(body) {
            e.has_time = true;
            e.header_time = t.time;
            if t.time.is_none() {
                e.unparsed
                    .insert("Time".into(), Value::String(t.text.to_string()));
            }
            if let Some(v) = t.user_host {
                read_user_host(e, v);
            }
        } else if let Some(v) = body.strip_prefix("User@Host:") {
            read_user_host(e, v);
        } else if let Some(v) = body.strip_prefix("explain:") {
            if !e.explain.is_empty() {
                e.explain.push('\n');
            }
            e.explain.push_str(v.trim());
        } else {
            for (key, value) in grammar::pairs(body) {
                read_field(e, key, value);
            }
        }
    }

    fn end_entry(&mut self, out: &mut Vec<SlowEntry>) {
        let e = std::mem::take(&mut self.entry);
        self.state = State::Between;
        self.finish_entry(e, out);
    }

    fn finish_entry(&mut self, mut e: Entry, out: &mut Vec<SlowEntry>) {
        if e.has_header {
            self.newline = e.newline.or(self.newline);
        }
        if !e.has_statement {
            match e.use_line.take() {
                // `USE db` itself, on a server that writes no SET line.
                Some(line) if e.has_header => {
                    e.sql = line;
                    e.has_statement = true;
                }
                _ => {
                    if let Some(db) = e.use_db {
                        self.db = Some(db);
                    }
                    return;
                }
            }
        }
        let db = match (e.use_db, e.schema) {
            (Some(db), _) => Some(db),
            (None, Some(schema)) => (!schema.is_empty()).then_some(schema),
            (None, None) => self.db.clone(),
        };
        self.db.clone_from(&db);
        if let Some(db) = db {
            e.record.insert("db", Value::String(db));
        }
        self.sql_hint = e.sql.len();
        if !e.sql.is_empty() || !e.record.contains_key("command") {
            e.record.insert("sql", Value::String(e.sql));
        }
        if !e.explain.is_empty() {
            e.record.insert("explain", Value::String(e.explain));
        }
        if e.truncated {
            e.record.insert("truncated", Value::Bool(true));
        }
        if !e.unparsed.is_empty() {
            e.record
                .insert("unparsed_fields", Value::Object(e.unparsed));
        }
        if e.has_time {
            self.last_time = e.header_time;
        }
        let header_time = if e.has_time {
            e.header_time
        } else {
            self.last_time
        };
        let time = e.set_timestamp.map(|s| s * 1_000_000_000).or(header_time);
        if let Some(t) = time {
            e.record
                .insert("timestamp", Value::String(crate::event::iso8601(t)));
        }
        out.push(SlowEntry {
            record: e.record,
            time,
            start: e.start,
            end: e.end,
        });
    }
}

/// Rule 1: the server ends every statement with `;` and its line ending,
/// nothing between, so `; ` and `;\r` (in a log of `\n` lines) are text.
/// `newline` is the length of the ending of the entry's header lines: 1
/// (`\n`), 2 (`\r\n`), or None if no header line told it, when either
/// does.
fn ends_statement(line: &str, start: u64, end: u64, newline: Option<u64>) -> bool {
    if !line.ends_with(';') {
        return false;
    }
    let past = line_ending(line, start, end);
    // Invalid UTF-8 replaced by U+FFFD makes the text longer than the
    // bytes, so `past` is at most the real ending: any ending it can still
    // be counts.
    let is = |n: u64| past == n || (past < n && has_replacement(line));
    match newline {
        Some(n) => is(n),
        None => is(1) || is(2),
    }
}

/// Whether `line` holds U+FFFD (invalid UTF-8 replaced), looked for by its
/// first byte, 0xEF, with memchr: `str::contains(char)` on every header line
/// searched for the whole character, 1.5% of the slow-log source's CPU.
fn has_replacement(line: &str) -> bool {
    memchr::memchr(0xEF, line.as_bytes())
        .is_some_and(|at| line[at..].contains(char::REPLACEMENT_CHARACTER))
}

/// How many bytes of the file past a line's text are its line ending: 1
/// for `\n`, 2 for `\r\n` (stripped before the parser sees the line),
/// 0 for a piece of an over-long line or a last line without one.
fn line_ending(line: &str, start: u64, end: u64) -> u64 {
    (end - start).saturating_sub(line.len() as u64)
}

fn read_user_host(e: &mut Entry, v: &str) {
    let uh = grammar::user_host(v).unwrap_or_else(|| grammar::user_host_lenient(v));
    e.has_user = true;
    e.user_on_last_line = true;
    e.record.insert("user", Value::String(uh.user.to_string()));
    e.record.insert("host", Value::String(uh.host.to_string()));
    e.record.insert("host_ip", Value::String(uh.ip.to_string()));
    if let Some(id) = uh.id {
        read_field(e, "Id", id);
    }
}

fn read_field(e: &mut Entry, key: &str, value: &str) {
    e.has_fields = true;
    match key {
        "Schema" => {
            e.schema = Some(value.trim_matches('`').to_string());
            return;
        }
        "Query_time" => e.has_query_time = true,
        _ => {}
    }
    match fields::typed(key, value) {
        Typed::Field(name, v) => {
            e.record.insert(name, v);
        }
        Typed::Unparsed => {
            e.unparsed
                .insert(key.to_string(), Value::String(value.to_string()));
        }
    }
}

/// Parses a whole text (tests).
#[cfg(test)]
pub fn parse_all(text: &str, max_entry_bytes: usize) -> Vec<SlowEntry> {
    parse_all_with(text, max_entry_bytes, None)
}

#[cfg(test)]
fn parse_all_with(text: &str, max_entry_bytes: usize, db: Option<String>) -> Vec<SlowEntry> {
    let mut parser = SlowLogParser::new(max_entry_bytes, db);
    let mut out = Vec::new();
    let mut pos = 0u64;
    for line in text.split_inclusive('\n') {
        let end = pos + line.len() as u64;
        parser.push_line(
            line.trim_end_matches('\n').trim_end_matches('\r'),
            pos,
            end,
            &mut out,
        );
        pos = end;
    }
    parser.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::grammar::parse_time;
    use super::*;

    const MYSQL80: &str = include_str!("../../tests/fixtures/mysql80.log");

    const MYSQL80_EXTRA: &str = include_str!("../../tests/fixtures/mysql80-log-slow-extra.log");

    const PERCONA: &str = include_str!("../../tests/fixtures/percona.log");

    const MARIADB: &str = include_str!("../../tests/fixtures/mariadb.log");

    #[test]
    fn mysql80_entries_field_by_field() {
        let e = parse_all(MYSQL80, 1 << 20);
        assert_eq!(e.len(), 2, "banner lines are skipped, not glued on: {e:#?}");
        let r = &e[0].record;
        assert_eq!(r["user"], "app");
        assert_eq!(r["host"], "web1");
        assert_eq!(r["host_ip"], "10.0.0.5");
        assert_eq!(r["thread_id"], 42);
        assert_eq!(r["query_time"], 1.5);
        assert_eq!(r["lock_time"], 0.0001);
        assert_eq!(r["rows_sent"], 10);
        assert_eq!(r["rows_examined"], 20000);
        assert_eq!(r["db"], "shop");
        assert_eq!(r["sql"], "SELECT *\n  FROM orders\n WHERE total > 100;");
        assert_eq!(
            r["timestamp"], "2024-05-15T17:02:39.000Z",
            "SET timestamp wins over # Time"
        );
        let q = &e[1].record;
        assert_eq!(q["command"], "Quit");
        assert!(q.get("sql").is_none());
        assert_eq!(q["user"], "root");
        assert_eq!(q["host"], "localhost");
        assert_eq!(q["host_ip"], "");
        assert_eq!(q["db"], "shop", "the database of the entry before");
    }

    #[test]
    fn mysql80_log_slow_extra() {
        let e = parse_all(MYSQL80_EXTRA, 1 << 20);
        assert_eq!(e.len(), 1);
        let r = &e[0].record;
        assert_eq!(r["thread_id"], 42);
        assert_eq!(r["errno"], 0);
        assert_eq!(r["bytes_sent"], 56);
        assert_eq!(r["read_key"], 1);
        assert_eq!(r["start"], "2024-05-15T17:02:39.123156Z");
        assert_eq!(r["end"], "2024-05-15T17:02:39.123456Z");
        assert_eq!(r["sql"], "SELECT 1;");
    }

    #[test]
    fn percona_fields() {
        let e = parse_all(PERCONA, 1 << 20);
        assert_eq!(e.len(), 1);
        let r = &e[0].record;
        assert_eq!(r["db"], "inventory");
        assert_eq!(r["last_errno"], 1062);
        assert_eq!(r["rows_affected"], 0);
        assert_eq!(r["bytes_sent"], 66);
        assert_eq!(r["innodb_trx_id"], "1A2B3C");
        assert_eq!(r["qc_hit"], "No");
        assert_eq!(r["innodb_pages_distinct"], 3);
        assert_eq!(r["innodb_io_r_wait"], 0.0);
        assert_eq!(r["sql"], "INSERT INTO items VALUES (1);");
    }

    #[test]
    fn mariadb_fields() {
        let e = parse_all(MARIADB, 1 << 20);
        assert_eq!(e.len(), 2);
        let r = &e[0].record;
        assert_eq!(r["thread_id"], 8);
        assert_eq!(r["db"], "crm");
        assert_eq!(r["qc_hit"], "No");
        assert_eq!(r["bytes_sent"], 420);
        assert!(r["explain"].as_str().unwrap().starts_with("id select_type"));
        assert_eq!(e[0].time, Some(1_715_792_559_000_000_000));
        let r = &e[1].record;
        assert_eq!(r["db"], "other", "the entry's own use comes first");
        assert_eq!(r["sql"], "SELECT 2;");
    }

    #[test]
    fn oversized_entries_are_truncated_with_a_flag() {
        let big = format!(
            "# Time: 240515 17:02:39\n# Query_time: 1\nSELECT '{}';\n",
            "x".repeat(10_000)
        );
        let e = parse_all(&big, 1000);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].record["truncated"], true);
        assert!(e[0].record["sql"].as_str().unwrap().len() <= 1000);
    }

    #[test]
    fn pending_start_is_the_resume_point() {
        let mut p = SlowLogParser::new(1 << 20, None);
        let mut out = Vec::new();
        let mut pos = 0u64;
        for line in MYSQL80.split_inclusive('\n') {
            let end = pos + line.len() as u64;
            p.push_line(line.trim_end_matches('\n'), pos, end, &mut out);
            pos = end;
        }
        let second = MYSQL80.find("# Time: 2024-05-15T19").unwrap() as u64;
        assert_eq!(out.len(), 1);
        assert_eq!(out[0].end, second);
        assert_eq!(p.pending_start(), Some(second));
    }

    /// A header as MariaDB writes it, for `user`.
    fn entry(user: &str, schema: &str, query_time: &str, sql: &str) -> String {
        format!(
            "# Time: 240515 17:02:39\n# User@Host: {user}[{user}] @ localhost []\n\
             # Thread_id: 8  Schema: {schema}  QC_hit: No\n\
             # Query_time: {query_time}  Lock_time: 0.000020  Rows_sent: 1  Rows_examined: 1\n\
             SET timestamp=1715792559;\n{sql}\n"
        )
    }

    fn sqls(e: &[SlowEntry]) -> Vec<&str> {
        e.iter()
            .map(|x| x.record["sql"].as_str().unwrap())
            .collect()
    }

    #[test]
    fn header_lines_inside_a_statement_are_its_text() {
        // Neither `# Time:` follows a line ending in `;`.
        let sql = "SELECT 'a\n# Time: 2020-01-01T00:00:00.000000Z\n# User@Host: evil[evil] @ evil [6.6.6.6]  Id: 666\n\
                   # Query_time: 999.0  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\nb' AS x;";
        let text = entry("app", "shop", "0.5", sql) + &entry("app", "shop", "0.25", "SELECT 2;");
        let e = parse_all(&text, 1 << 20);
        assert_eq!(sqls(&e), [sql, "SELECT 2;"]);
        assert!(e.iter().all(|x| x.record["user"] == "app"));
        assert_eq!(e[0].record["query_time"], 0.5);
    }

    #[test]
    fn a_header_after_a_semicolon_needs_query_time_to_begin_an_entry() {
        // `;` at the end of an inner line, then a well-formed header block
        // without the `# Query_time:` every server writes.
        let sql = "SELECT 'a;\n# Time: 2020-01-01T00:00:00.000000Z\n# User@Host: evil[evil] @ evil [6.6.6.6]  Id: 666\n\
                   use evil;\nSET timestamp=1;\nb;\n# User@Host: root[root] @ localhost []\nc' AS x;";
        let text = entry("app", "shop", "0.5", sql) + &entry("app", "shop", "0.25", "SELECT 2;");
        let e = parse_all(&text, 1 << 20);
        assert_eq!(sqls(&e), [sql, "SELECT 2;"]);
        for x in &e {
            assert_eq!(x.record["user"], "app");
            assert_eq!(x.record["db"], "shop");
            assert_eq!(x.record["timestamp"], "2024-05-15T17:02:39.000Z");
        }
    }

    #[test]
    fn a_complete_header_after_a_semicolon_is_an_entry_even_in_a_literal() {
        // The documented limit: this is byte for byte what the server
        // writes for two entries.
        let sql = "SELECT 'a;\n# Time: 2020-01-01T00:00:00.000000Z\n# User@Host: evil[evil] @ evil [6.6.6.6]  Id: 666\n\
                   # Query_time: 999.0  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\nuse evil;\nSET timestamp=1;\nb' AS x;";
        let e = parse_all(&entry("app", "shop", "0.5", sql), 1 << 20);
        assert_eq!(sqls(&e), ["SELECT 'a;", "b' AS x;"]);
        assert_eq!(e[1].record["user"], "evil");
        assert_eq!(e[1].record["db"], "evil");
        assert_eq!(e[1].record["query_time"], 999.0);
    }

    #[test]
    fn use_and_set_inside_a_statement_are_its_text() {
        let sql = "SELECT 'x\nuse evil;\nSET timestamp=1;\ny';";
        let text = entry("app", "shop", "0.5", sql)
            + "# Time: 240515 17:02:40\n# User@Host: app[app] @ localhost []\n\
               # Query_time: 0.1  Lock_time: 0.0 Rows_sent: 1  Rows_examined: 1\nSET timestamp=1715792560;\nSELECT 2;\n";
        let e = parse_all(&text, 1 << 20);
        assert_eq!(sqls(&e), [sql, "SELECT 2;"]);
        assert_eq!(e[0].record["db"], "shop");
        assert_eq!(e[0].record["timestamp"], "2024-05-15T17:02:39.000Z");
        assert_eq!(e[1].record["db"], "shop", "no Schema: the entry before's");
    }

    #[test]
    fn use_as_the_statement() {
        // `USE db2` itself: the context `use` comes before SET, the
        // statement after it.
        let text = "# Time: 240515 17:02:39\n# User@Host: app[app] @ localhost []\n\
                    # Query_time: 0.1  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\n\
                    use db2;\nSET timestamp=1715792559;\nuse db2;\n";
        let e = parse_all(text, 1 << 20);
        assert_eq!(sqls(&e), ["use db2;"]);
        assert_eq!(e[0].record["db"], "db2");
    }

    #[test]
    fn server_set_line_with_insert_ids() {
        let text = "# Query_time: 0.1  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\n\
                    SET last_insert_id=5,insert_id=6,timestamp=1715792559;\nINSERT INTO t VALUES (NULL);\n";
        let e = parse_all(text, 1 << 20);
        assert_eq!(sqls(&e), ["INSERT INTO t VALUES (NULL);"]);
        assert_eq!(e[0].record["insert_id"], 6);
        assert_eq!(e[0].record["last_insert_id"], 5);
        assert_eq!(e[0].time, Some(1_715_792_559_000_000_000));
    }

    #[test]
    fn init_db_after_use_and_set() {
        // MySQL 8 for a client's COM_INIT_DB.
        let text = "# Time: 2024-05-15T18:21:48.514842Z\n# User@Host: app[app] @ localhost []  Id:    11\n\
                    # Query_time: 0.000060  Lock_time: 0.000000 Rows_sent: 1  Rows_examined: 1\n\
                    use test_jfg1;\nSET timestamp=1715797308;\n# administrator command: Init DB;\n\
                    # Time: 2024-05-15T18:21:48.517127Z\n# User@Host: app[app] @ localhost []  Id:    11\n\
                    # Query_time: 0.000650  Lock_time: 0.000004 Rows_sent: 7  Rows_examined: 29\n\
                    SET timestamp=1715797308;\nshow databases;\n";
        let e = parse_all(text, 1 << 20);
        assert_eq!(e.len(), 2);
        assert_eq!(e[0].record["command"], "Init DB");
        assert_eq!(e[0].record["db"], "test_jfg1");
        assert_eq!(e[1].record["sql"], "show databases;");
        assert_eq!(e[1].record["db"], "test_jfg1");
    }

    #[test]
    fn blank_lines_and_banners_are_not_entries() {
        let text = "\n\nD:\\MySQL\\bin\\mysqld, Version: 5.1.30-community-log (MySQL Community Server (GPL)). started with:\n\
                    TCP Port: 3306, Named Pipe: (null)\nTime                 Id Command    Argument\n"
            .to_string()
            + &entry("app", "shop", "0.5", "SELECT 1;");
        let e = parse_all(&text, 1 << 20);
        assert_eq!(sqls(&e), ["SELECT 1;"]);
    }

    #[test]
    fn a_banner_forgets_the_database() {
        let text = "# Query_time: 0.1  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\nuse shop;\nSELECT 1;\n\
                    /usr/sbin/mysqld, Version: 8.0.36 (MySQL Community Server - GPL). started with:\n\
                    Tcp port: 3306  Unix socket: /tmp/mysql.sock\nTime                 Id Command    Argument\n\
                    # Query_time: 0.1  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\nSELECT 2;\n";
        let e = parse_all(text, 1 << 20);
        assert_eq!(sqls(&e), ["SELECT 1;", "SELECT 2;"]);
        assert_eq!(e[0].record["db"], "shop");
        assert!(e[1].record.get("db").is_none(), "{:?}", e[1].record);
    }

    #[test]
    fn a_banner_ends_a_half_written_entry() {
        let text = "# Time: 240515 17:02:39\n# User@Host: app[app] @ localhost []\n\
                    /usr/sbin/mariadbd, Version: 10.11.6-MariaDB-log (Debian 12). started with:\n\
                    Tcp port: 3306  Unix socket: /run/mysqld/mysqld.sock\nTime\t\t    Id Command\tArgument\n"
            .to_string()
            + &entry("app", "shop", "0.5", "SELECT 1;");
        let e = parse_all(&text, 1 << 20);
        assert_eq!(sqls(&e), ["SELECT 1;"]);
        assert_eq!(e[0].record["query_time"], 0.5);
    }

    #[test]
    fn a_repeated_user_host_is_the_same_entry() {
        let text = "# Time: 071218 11:48:27 # User@Host: [SQL_SLAVE] @  []\n# User@Host: [SQL_SLAVE] @  []\n\
                    # Thread_id: 0\n# Query_time: 0.000000  Lock_time: 0.000000  Rows_sent: 0  Rows_examined: 0\n\
                    INSERT INTO db.v (m, b) VALUES ('', 'Exact');\n";
        let e = parse_all(text, 1 << 20);
        assert_eq!(e.len(), 1, "{e:#?}");
        assert_eq!(e[0].time, parse_time("071218 11:48:27"));
        assert_eq!(e[0].record["user"], "SQL_SLAVE");
    }

    #[test]
    fn database_from_schema_carried_and_emptied() {
        let text = entry("a", "db1", "0.1", "SELECT 1;")
            + "# Query_time: 0.2  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\nSELECT 2;\n"
            + &entry("a", "", "0.3", "SELECT 3;")
            + "# Query_time: 0.4  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\nSELECT 4;\n";
        let e = parse_all(&text, 1 << 20);
        let dbs: Vec<_> = e.iter().map(|x| x.record.get("db").cloned()).collect();
        assert_eq!(
            dbs,
            [Some("db1".into()), Some("db1".into()), None, None],
            "Schema: carries on; an empty Schema: is no database"
        );
    }

    #[test]
    fn numbers_keep_their_type_and_bad_values_are_set_aside() {
        let text = "# Time: 081116 15:07:11 # User@Host: user[user] @ host [10.1.65.120]\n\
                    # Query_time: 18446744073708.796870.000036  Lock_time: 0.000036  Rows_sent: 1  Rows_examined: 127\n\
                    SELECT 1;\n# Query_time: 2  Lock_time: 0  Rows_sent: 1  Rows_examined: 1\nSELECT 2;\n";
        let e = parse_all(text, 1 << 20);
        assert_eq!(e.len(), 2);
        assert!(e[0].record.get("query_time").is_none());
        assert_eq!(
            e[0].record["unparsed_fields"],
            serde_json::json!({"Query_time": "18446744073708.796870.000036"})
        );
        assert_eq!(e[0].record["rows_examined"], 127);
        assert!(e[1].record["query_time"].is_f64());
        assert!(e[1].record["lock_time"].is_f64());
    }

    #[test]
    fn an_entry_without_a_statement_is_not_a_query() {
        let text = "# Time: 081114 13:04:02\n# User@Host: truncated";
        assert_eq!(parse_all(text, 1 << 20), []);
    }

    #[test]
    fn a_held_entry_is_still_the_resume_point() {
        let first = entry("app", "shop", "0.5", "SELECT 1;");
        let text =
            first.clone() + "# Time: 240515 17:02:40\n# User@Host: app[app] @ localhost []\n";
        let mut p = SlowLogParser::new(1 << 20, None);
        let mut out = Vec::new();
        let mut pos = 0u64;
        for line in text.split_inclusive('\n') {
            let end = pos + line.len() as u64;
            p.push_line(line.trim_end_matches('\n'), pos, end, &mut out);
            pos = end;
        }
        assert_eq!(
            out,
            [],
            "the first entry waits for the next header's Query_time"
        );
        assert_eq!(p.pending_start(), Some(0));
        p.finish(&mut out);
        assert_eq!(
            sqls(&out),
            ["SELECT 1;\n# Time: 240515 17:02:40\n# User@Host: app[app] @ localhost []"]
        );
        assert_eq!(out[0].end, text.len() as u64);
    }

    #[test]
    fn db_given_to_a_new_parser_is_the_context() {
        let text = "# Query_time: 0.1  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\nSELECT 1;\n";
        let e = parse_all_with(text, 1 << 20, Some("shop".into()));
        assert_eq!(e[0].record["db"], "shop");
    }

    const BANNER_STARTED: &str =
        "/usr/sbin/mysqld, Version: 8.0.36 (MySQL Community Server - GPL). started with:";
    const BANNER_PORT: &str = "Tcp port: 3306  Unix socket: /tmp/evil.sock";
    const BANNER_COLUMNS: &str = "Time                 Id Command    Argument";

    /// An entry as MySQL writes it (no `Schema:`): its `use` only when the
    /// database changes.
    fn mysql_entry(use_db: Option<&str>, sql: &str) -> String {
        let use_line = use_db.map(|d| format!("use {d};\n")).unwrap_or_default();
        format!(
            "# Time: 2024-05-15T17:02:39.123456Z\n# User@Host: app[app] @ localhost []  Id:     8\n\
             # Query_time: 0.500000  Lock_time: 0.000020 Rows_sent: 1  Rows_examined: 1\n\
             {use_line}SET timestamp=1715792559;\n{sql}\n"
        )
    }

    /// A statement whose literal holds `lines` after a line ending in `;`,
    /// then a `use` and `SET` of its own; logged in `use shop`, then an
    /// entry that names no database. Returns the statement and the parse.
    fn literal_case(lines: &[&str]) -> (String, Vec<SlowEntry>) {
        let sql = format!(
            "SELECT 'x;\n{}\nuse evil;\nSET timestamp=1;\ny' AS c;",
            lines.join("\n")
        );
        let text = mysql_entry(Some("shop"), &sql) + &mysql_entry(None, "SELECT 2;");
        let e = parse_all(&text, 1 << 20);
        (sql, e)
    }

    fn dbs(e: &[SlowEntry]) -> Vec<Option<&str>> {
        e.iter()
            .map(|x| x.record.get("db").and_then(Value::as_str))
            .collect()
    }

    #[test]
    fn a_banner_line_or_two_in_a_literal_is_text() {
        let (v, p, c) = (BANNER_STARTED, BANNER_PORT, BANNER_COLUMNS);
        for lines in [
            &[v][..],
            &[p],
            &[c],
            &[v, p],
            &[p, c],
            &[v, c],
            &[c, v],
            &[v, v, p],
            &[v, p, v, p],
        ] {
            let (sql, e) = literal_case(lines);
            assert_eq!(sqls(&e), [sql.as_str(), "SELECT 2;"], "{lines:?}");
            assert_eq!(dbs(&e), [Some("shop"), Some("shop")], "{lines:?}");
        }
    }

    #[test]
    fn a_whole_banner_in_a_literal_is_text_unless_an_entry_follows() {
        let (v, p, c) = (BANNER_STARTED, BANNER_PORT, BANNER_COLUMNS);
        let embedded = "./mysqld, Version: 5.7.44 (Source distribution). embedded library";
        let fake_header = "# Time: 2020-01-01T00:00:00.000000Z\n# User@Host: evil[evil] @ evil []";
        for lines in [
            &[v, p, c][..],
            &[embedded, c],
            &[v, p, c, "", v, p, c],
            // Followed by a header block without Query_time (rule 3).
            &[v, p, c, fake_header],
            // A lone line before a header block that has it: the line
            // before the `#` does not end in `;` (rule 1).
            &[
                p,
                fake_header,
                "# Query_time: 999.0  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0",
            ],
        ] {
            let (sql, e) = literal_case(lines);
            assert_eq!(sqls(&e), [sql.as_str(), "SELECT 2;"], "{lines:?}");
            assert_eq!(dbs(&e), [Some("shop"), Some("shop")], "{lines:?}");
            assert!(e.iter().all(|x| x.record["user"] == "app"), "{lines:?}");
        }
    }

    #[test]
    fn a_whole_banner_then_an_entry_in_a_literal_reads_as_a_restart() {
        // The documented ambiguity: byte for byte a statement, a server
        // restart and an entry (pt-query-digest splits it too).
        let (sql, e) = literal_case(&[
            BANNER_STARTED,
            BANNER_PORT,
            BANNER_COLUMNS,
            "# Query_time: 999.0  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0",
        ]);
        assert_ne!(sqls(&e)[0], sql);
        assert_eq!(sqls(&e), ["SELECT 'x;", "y' AS c;", "SELECT 2;"]);
        assert_eq!(dbs(&e), [Some("shop"), Some("evil"), Some("evil")]);
        assert_eq!(e[1].record["query_time"], 999.0);
    }

    #[test]
    fn only_a_semicolon_at_the_very_end_of_the_line_ends_a_statement() {
        let header = "# Time: 2020-01-01T00:00:00.000000Z\n# User@Host: evil[evil] @ evil []\n\
                      # Query_time: 999.0  Lock_time: 0.0 Rows_sent: 0  Rows_examined: 0\nuse evil;\nSET timestamp=1;";
        for after in [" ", "\t", "\r", " \r", "\r\r"] {
            let sql = format!("SELECT 'x;{after}\n{header}\ny' AS c;");
            let text = mysql_entry(Some("shop"), &sql) + &mysql_entry(None, "SELECT 2;");
            let e = parse_all(&text, 1 << 20);
            // Framing takes a `\r` before `\n` off the text, not off the
            // offsets, which still tell it.
            let kept = sql.replace(
                &format!("x;{after}\n"),
                &format!("x;{}\n", after.trim_end_matches('\r')),
            );
            assert_eq!(sqls(&e), [kept.as_str(), "SELECT 2;"], "{after:?}");
            assert_eq!(dbs(&e), [Some("shop"), Some("shop")], "{after:?}");
        }
    }

    #[test]
    fn a_crlf_log_splits_its_entries() {
        let text = (mysql_entry(Some("shop"), "SELECT 1;")
            + &mysql_entry(
                None,
                "SELECT 'a;\n# Query_time: 9  Lock_time: 0 Rows_sent: 0  Rows_examined: 0\nb';",
            )
            + &mysql_entry(None, "# administrator command: Quit;")
            + BANNER_STARTED
            + "\n"
            + BANNER_PORT
            + "\n"
            + BANNER_COLUMNS
            + "\n"
            + &mysql_entry(None, "SELECT 3;"))
            .replace('\n', "\r\n");
        // A bare `\n` inside a literal of a CRLF log is not its line ending.
        let text = text.replace("a;\r\n# Query_time", "a;\n# Query_time");
        let e = parse_all(&text, 1 << 20);
        let got: Vec<_> = e
            .iter()
            .map(|x| {
                x.record
                    .get("sql")
                    .or(x.record.get("command"))
                    .unwrap()
                    .as_str()
                    .unwrap()
            })
            .collect();
        assert_eq!(
            got,
            [
                "SELECT 1;",
                "SELECT 'a;\n# Query_time: 9  Lock_time: 0 Rows_sent: 0  Rows_examined: 0\nb';",
                "Quit",
                "SELECT 3;"
            ]
        );
        assert_eq!(dbs(&e), [Some("shop"), Some("shop"), Some("shop"), None]);
    }

    /// Every line of `text` with where it starts and ends, as framing
    /// hands it on.
    fn framed(text: &str) -> Vec<(&str, u64, u64)> {
        let mut pos = 0u64;
        text.split_inclusive('\n')
            .map(|l| {
                let start = pos;
                pos += l.len() as u64;
                (l.trim_end_matches('\n').trim_end_matches('\r'), start, pos)
            })
            .collect()
    }

    #[test]
    fn a_restart_at_the_resume_point_loses_and_doubles_nothing() {
        // Banners real and false, held entries and candidates: stopped
        // after any line and resumed where `pending_start` says with the
        // database `db` gave, the parser reads what it reads in one go.
        let (v, p, c) = (BANNER_STARTED, BANNER_PORT, BANNER_COLUMNS);
        let text = format!("{v}\n{p}\n{c}\n")
            + &mysql_entry(
                Some("shop"),
                &format!("SELECT 'x;\n{v}\n{p}\n{c}\nuse evil;\ny';"),
            )
            + &mysql_entry(
                None,
                &format!("SELECT 'x;\n{p}\n# Time: 2020-01-01T00:00:00Z\ny';"),
            )
            + &mysql_entry(None, "SELECT 2;")
            + &format!("{v}\n{p}\n{c}\n")
            + &mysql_entry(None, "SELECT 3;")
            + &mysql_entry(Some("crm"), "SELECT 4;")
            + &format!("{v}\n{p}\n{c}\n");
        let key = |e: &[SlowEntry]| -> Vec<(u64, u64, String, Option<String>)> {
            e.iter()
                .map(|x| {
                    (
                        x.start,
                        x.end,
                        x.record["sql"].as_str().unwrap().to_string(),
                        x.record.get("db").and_then(Value::as_str).map(String::from),
                    )
                })
                .collect()
        };
        let whole = parse_all(&text, 1 << 20);
        assert_eq!(whole.len(), 5, "{whole:#?}");
        assert_eq!(
            dbs(&whole),
            [Some("shop"), Some("shop"), Some("shop"), None, Some("crm")]
        );
        let lines = framed(&text);
        for cut in 0..=lines.len() {
            let mut first = SlowLogParser::new(1 << 20, None);
            let mut out = Vec::new();
            for &(l, s, e) in &lines[..cut] {
                first.push_line(l, s, e, &mut out);
            }
            let resume = first
                .pending_start()
                .unwrap_or(lines.get(cut).map_or(text.len() as u64, |l| l.1));
            let mut second = SlowLogParser::new(1 << 20, first.db().map(String::from));
            for &(l, s, e) in lines.iter().filter(|l| l.1 >= resume) {
                second.push_line(l, s, e, &mut out);
            }
            second.finish(&mut out);
            assert_eq!(key(&out), key(&whole), "stopped after line {cut}");
        }
    }

    #[test]
    fn a_banner_is_held_until_what_follows_it() {
        let first = mysql_entry(Some("shop"), "SELECT 1;");
        let banner = format!("{BANNER_STARTED}\n{BANNER_PORT}\n{BANNER_COLUMNS}\n");
        let mut p = SlowLogParser::new(1 << 20, None);
        let mut out = Vec::new();
        for (l, s, e) in framed(&(first.clone() + &banner)) {
            p.push_line(l, s, e, &mut out);
        }
        assert_eq!(out, [], "the banner may still be the statement's text");
        assert_eq!(p.pending_start(), Some(0));
        assert_eq!(p.db(), None);
        // Nothing more: the server restarted.
        p.finish(&mut out);
        assert_eq!(sqls(&out), ["SELECT 1;"]);
        assert_eq!(out[0].end, first.len() as u64);
        assert_eq!(p.db(), None, "forgotten with the restart");
        assert_eq!(p.pending_start(), None);
    }
}

/// The parser on the 72 real slow logs from percona-toolkit in
/// ../shared/slowlogs (read in place, never copied): every file parses
/// without a panic, and a handful of fields are checked by hand.
#[cfg(test)]
mod shared_logs {
    use std::io::Read;
    use std::path::PathBuf;

    use super::grammar::parse_time;
    use super::parse_all;

    fn dir() -> PathBuf {
        PathBuf::from(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../shared/slowlogs/percona-toolkit"
        ))
    }

    fn read(name: &str) -> String {
        let path = dir().join(name);
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        let bytes = if name.ends_with(".gz") {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(&bytes[..])
                .read_to_end(&mut out)
                .unwrap();
            out
        } else {
            bytes
        };
        String::from_utf8_lossy(&bytes).into_owned()
    }

    #[test]
    fn every_shared_slow_log_parses() {
        let mut files = 0;
        let mut entries = 0;
        for entry in std::fs::read_dir(dir()).expect("../shared/slowlogs beside the clone") {
            let name = entry.unwrap().file_name().to_string_lossy().into_owned();
            if name == "COPYING" {
                continue;
            }
            let parsed = parse_all(&read(&name), 1 << 20);
            for e in &parsed {
                assert!(
                    e.record.contains_key("sql") || e.record.contains_key("command"),
                    "{name}: {e:?}"
                );
            }
            entries += parsed.len();
            files += 1;
        }
        assert_eq!(files, 72);
        println!("{files} files, {entries} entries");
        assert!(entries > 1000, "{entries}");
    }

    #[test]
    fn fields_checked_by_hand() {
        // slow002.txt: old Percona format, `# Time:` and `# User@Host:` on one line.
        let e = parse_all(&read("slow002.txt"), 1 << 20);
        assert_eq!(e[0].record["user"], "SQL_SLAVE");
        assert_eq!(e[0].record["thread_id"], 10);
        assert_eq!(e[0].record["sql"], "BEGIN;");
        assert_eq!(e[0].time, parse_time("071218 11:48:27"));
        assert_eq!(e[1].record["db"], "db1");
        assert_eq!(e[1].record["rows_examined"], 62951);
        assert_eq!(e[1].record["full_scan"], "Yes");
        assert!(e[1].record["sql"]
            .as_str()
            .unwrap()
            .starts_with("update db2.tuningdetail_21_265507 n\n"));
        assert_eq!(
            e[1].record["timestamp"], "2007-12-18T16:48:27.000Z",
            "from SET timestamp=1197996507"
        );
        assert_eq!(e[2].record["innodb_pages_distinct"], 24);

        // mysql5.7.log: banners skipped, ISO times, Id.
        let e = parse_all(&read("mysql5.7.log"), 1 << 20);
        assert_eq!(e[0].record["user"], "root");
        assert_eq!(e[0].record["host"], "localhost");
        assert_eq!(e[0].record["host_ip"], "127.0.0.1");
        assert_eq!(e[0].record["thread_id"], 3);
        assert_eq!(e[0].record["rows_sent"], 1000);
        assert_eq!(
            e[0].record["sql"],
            "SELECT * FROM db_facturacion.facturas LIMIT 0, 1000;"
        );
        assert!(e.iter().all(|x| !x.record["sql"]
            .as_str()
            .unwrap_or("")
            .contains("started with")));

        // slow-pt-243.txt: `Schema: ` empty and an administrator command.
        let e = parse_all(&read("slow-pt-243.txt"), 1 << 20);
        assert_eq!(e[0].record["command"], "Refresh");
        assert_eq!(e[0].record["host"], "alonghotnamelikelocalhost");
        assert!(e[0].record.get("db").is_none());

        // slow033.txt: `use db2;` carries to later entries of the stream.
        let e = parse_all(&read("slow033.txt"), 1 << 20);
        assert_eq!(e[0].record["db"], "db1");
        assert_eq!(e[3].record["db"], "db2");

        // slow022.txt: a time that is not one, kept as written.
        let e = parse_all(&read("slow022.txt"), 1 << 20);
        assert_eq!(e.len(), 6);
        assert_eq!(
            e[0].record["unparsed_fields"],
            serde_json::json!({"Time": "margdl 11:48:27"})
        );
        assert_eq!(e[0].record["user"], "SQL_SLAVE");
        assert_eq!(e[0].time, None);
        let dbs: Vec<_> = e.iter().map(|x| x.record["db"].as_str().unwrap()).collect();
        assert_eq!(dbs, ["foo", "foo", "bar", "bar", "bar", "foo"]);

        // slow031.txt: the Windows banner is no entry.
        let e = parse_all(&read("slow031.txt"), 1 << 20);
        assert_eq!(e.len(), 1);
        assert_eq!(e[0].record["db"], "myplace");
        assert_eq!(e[0].record["sql"], "SELECT * FROM cottages;");

        // slow034.txt: entries of `# Query_time:` alone take the last
        // `Schema:` and `# Time:`.
        let e = parse_all(&read("slow034.txt"), 1 << 20);
        assert_eq!(e.len(), 9);
        assert_eq!(e[1].record["db"], "db1");
        assert_eq!(e[1].time, parse_time("090805 11:00:27"));
        assert_eq!(e[8].record["db"], "db3");
        assert_eq!(e[8].record["rows_sent"], 7);

        // slow017.txt: a Query_time that is not a number.
        let e = parse_all(&read("slow017.txt"), 1 << 20);
        assert_eq!(
            e[0].record["unparsed_fields"]["Query_time"],
            "18446744073708.796870.000036"
        );
        assert_eq!(e[0].record["db"], "mydb");
    }
}
