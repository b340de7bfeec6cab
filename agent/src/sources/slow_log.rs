//! Parsing MySQL, Percona Server and MariaDB slow query logs, line by line,
//! with bounded memory. No I/O here: the source feeds lines and gets
//! records; `pending_start` says where the entry being assembled began, the
//! only safe place to resume after a restart.

use serde_json::{Map, Value};

use crate::event::days_from_civil;

/// A finished entry: its record, its time (nanoseconds) and the byte
/// offset just past it.
#[derive(Debug, Clone, PartialEq)]
pub struct SlowEntry {
    pub record: Map<String, Value>,
    pub time: Option<i64>,
    pub end: u64,
}

#[derive(Debug, Default)]
struct Pending {
    start: u64,
    end: u64,
    record: Map<String, Value>,
    sql: String,
    explain: Vec<String>,
    header_time: Option<i64>,
    set_timestamp: Option<i64>,
    has_user: bool,
    has_body: bool,
    truncated: bool,
    use_db: Option<String>,
}

pub struct SlowLogParser {
    max_entry_bytes: usize,
    /// The most recent `use db;` in the stream: the database of entries
    /// that do not name one.
    db: Option<String>,
    pending: Option<Pending>,
}

impl SlowLogParser {
    pub fn new(max_entry_bytes: usize, db: Option<String>) -> SlowLogParser {
        SlowLogParser {
            max_entry_bytes,
            db,
            pending: None,
        }
    }

    /// The database context to persist with a position.
    pub fn db(&self) -> Option<&str> {
        self.db.as_deref()
    }

    /// Where the entry being assembled began, if one is.
    pub fn pending_start(&self) -> Option<u64> {
        self.pending.as_ref().map(|p| p.start)
    }

    /// Feeds one line (without its newline) that starts at byte `start` and
    /// ends (newline included) at `end`.
    pub fn push_line(&mut self, line: &str, start: u64, end: u64, out: &mut Vec<SlowEntry>) {
        if is_banner(line) {
            // A server restart banner ends whatever came before it.
            self.finish(out);
            return;
        }
        if let Some(header) = line.strip_prefix('#') {
            let header = header.trim_start();
            let starts_entry = header.starts_with("Time:")
                || (header.starts_with("User@Host:")
                    && self
                        .pending
                        .as_ref()
                        .is_some_and(|p| p.has_user || p.has_body))
                || self.pending.as_ref().is_some_and(|p| p.has_body);
            if starts_entry || self.pending.is_none() {
                self.finish(out);
                self.pending = Some(Pending {
                    start,
                    ..Pending::default()
                });
            }
            let p = self.pending.as_mut().expect("pending entry");
            p.end = end;
            parse_header(header, p);
            return;
        }
        let p = self.pending.get_or_insert_with(|| Pending {
            start,
            ..Pending::default()
        });
        p.end = end;
        let trimmed = line.trim();
        if let Some(db) = use_statement(trimmed) {
            self.db = Some(db.clone());
            p.use_db = Some(db);
            // A `use` alone is context, not the statement, when SQL follows.
            return;
        }
        if let Some(ts) = set_timestamp(trimmed) {
            p.set_timestamp = Some(ts);
            return;
        }
        p.has_body = true;
        if p.sql.len() + line.len() + 1 > self.max_entry_bytes {
            p.truncated = true;
            let room = self.max_entry_bytes.saturating_sub(p.sql.len() + 1);
            if room > 0 {
                if !p.sql.is_empty() {
                    p.sql.push('\n');
                }
                let mut cut = room.min(line.len());
                while !line.is_char_boundary(cut) {
                    cut -= 1;
                }
                p.sql.push_str(&line[..cut]);
            }
            return;
        }
        if !p.sql.is_empty() {
            p.sql.push('\n');
        }
        p.sql.push_str(line);
    }

    /// Emits the entry being assembled (end of input, or the file has been
    /// quiet long enough that it must be complete).
    pub fn finish(&mut self, out: &mut Vec<SlowEntry>) {
        let Some(mut p) = self.pending.take() else {
            return;
        };
        if !p.has_body && !p.has_user && p.record.is_empty() {
            return;
        }
        if !p.record.contains_key("db") {
            if let Some(db) = p.use_db.clone().or_else(|| self.db.clone()) {
                p.record.insert("db".into(), Value::String(db));
            }
        }
        if !p.sql.is_empty() || !p.record.contains_key("command") {
            p.record
                .insert("sql".into(), Value::String(std::mem::take(&mut p.sql)));
        }
        if !p.explain.is_empty() {
            p.record
                .insert("explain".into(), Value::String(p.explain.join("\n")));
        }
        if p.truncated {
            p.record.insert("truncated".into(), Value::Bool(true));
        }
        let time = p.set_timestamp.map(|s| s * 1_000_000_000).or(p.header_time);
        if let Some(t) = time {
            p.record
                .insert("timestamp".into(), Value::String(crate::event::iso8601(t)));
        }
        out.push(SlowEntry {
            record: p.record,
            time,
            end: p.end,
        });
    }
}

fn is_banner(line: &str) -> bool {
    (line.contains(", Version: ") && line.trim_end().ends_with("started with:"))
        || line.starts_with("Tcp port: ")
        // MySQL pads this header with spaces, MariaDB with tabs.
        || (line.starts_with("Time") && line.contains("Id") && line.contains("Command") && line.contains("Argument"))
}

fn use_statement(line: &str) -> Option<String> {
    let rest = line.get(..4).filter(|p| p.eq_ignore_ascii_case("use "))?;
    let _ = rest;
    let db = line[4..].trim().strip_suffix(';')?.trim().trim_matches('`');
    (!db.is_empty() && !db.contains(char::is_whitespace)).then(|| db.to_string())
}

fn set_timestamp(line: &str) -> Option<i64> {
    let lower = line.get(..14)?;
    if !lower.eq_ignore_ascii_case("SET timestamp=") {
        return None;
    }
    line[14..].trim().strip_suffix(';')?.trim().parse().ok()
}

/// One `#` line: possibly several segments (`# Time: ... # User@Host: ...`
/// in old logs), each a `Time:`, `User@Host:`, `administrator command:`,
/// `explain:` or a run of `Key: value` pairs.
fn parse_header(header: &str, p: &mut Pending) {
    for segment in header.split(" # ") {
        let segment = segment.trim().trim_start_matches('#').trim();
        if let Some(v) = segment.strip_prefix("Time:") {
            p.header_time = parse_time(v.trim());
        } else if let Some(v) = segment.strip_prefix("User@Host:") {
            p.has_user = true;
            parse_user_host(v, p);
        } else if let Some(v) = segment.strip_prefix("administrator command:") {
            let cmd = v.trim().trim_end_matches(';').trim();
            p.record
                .insert("command".into(), Value::String(cmd.to_string()));
            p.has_body = true;
        } else if let Some(v) = segment.strip_prefix("explain:") {
            p.explain.push(v.trim().to_string());
        } else {
            parse_pairs(segment, p);
        }
    }
}

/// `root[root] @ localhost [127.0.0.1]  Id:     3`
fn parse_user_host(v: &str, p: &mut Pending) {
    let (who, rest) = v.split_once(" @ ").unwrap_or((v, ""));
    let who = who.trim();
    let user = match who.split_once('[') {
        Some((before, _)) if !before.is_empty() => before.to_string(),
        Some((_, inside)) => inside.trim_end_matches(']').to_string(),
        None => who.to_string(),
    };
    p.record.insert("user".into(), Value::String(user));
    let (host_part, tail) = match rest.find(']') {
        Some(i) => (&rest[..=i], &rest[i + 1..]),
        None => (rest, ""),
    };
    let (host, ip) = match host_part.split_once('[') {
        Some((h, ip)) => (h.trim(), ip.trim_end_matches(']').trim()),
        None => (host_part.trim(), ""),
    };
    p.record
        .insert("host".into(), Value::String(host.to_string()));
    p.record
        .insert("host_ip".into(), Value::String(ip.to_string()));
    parse_pairs(tail, p);
}

/// `Key: value  Key2: value2` with empty values allowed (`Schema: `).
fn parse_pairs(s: &str, p: &mut Pending) {
    let tokens: Vec<&str> = s.split_whitespace().collect();
    let mut i = 0;
    while i < tokens.len() {
        let Some(key) = tokens[i].strip_suffix(':') else {
            i += 1;
            continue;
        };
        let value = tokens
            .get(i + 1)
            .filter(|t| !t.ends_with(':') || t.len() == 1)
            .copied();
        i += if value.is_some() { 2 } else { 1 };
        let name = match key {
            "Id" | "Thread_id" => "thread_id".to_string(),
            "Schema" => {
                if let Some(v) = value.filter(|v| !v.is_empty()) {
                    p.record.insert("db".into(), Value::String(v.to_string()));
                }
                continue;
            }
            k => k.to_ascii_lowercase(),
        };
        p.record.insert(name, typed(value.unwrap_or("")));
    }
}

fn typed(v: &str) -> Value {
    if let Ok(i) = v.parse::<i64>() {
        return Value::from(i);
    }
    if v.contains('.') && !v.contains(':') {
        if let Ok(f) = v.parse::<f64>() {
            return serde_json::Number::from_f64(f)
                .map_or(Value::String(v.to_string()), Value::Number);
        }
    }
    Value::String(v.to_string())
}

/// `2024-05-15T17:02:39.123456Z`, `...+02:00`, or `240515 17:02:39`
/// (MariaDB and MySQL 5.x, server-local time, read as UTC).
pub fn parse_time(v: &str) -> Option<i64> {
    let v = v.trim();
    if v.len() >= 19 && v.as_bytes()[4] == b'-' && v.as_bytes()[10] == b'T' {
        let date = &v[..10];
        let (y, m, d) = (
            date[..4].parse().ok()?,
            date[5..7].parse().ok()?,
            date[8..10].parse().ok()?,
        );
        let rest = &v[11..];
        let tz_at = rest.find(['Z', '+', '-']).unwrap_or(rest.len());
        let (clock, tz) = rest.split_at(tz_at);
        let secs = clock_secs(clock)?;
        let offset = match tz {
            "" | "Z" => 0,
            tz => {
                let sign = if tz.starts_with('-') { -1 } else { 1 };
                let hm = tz[1..].replace(':', "");
                let h: i64 = hm.get(..2)?.parse().ok()?;
                let m: i64 = hm.get(2..4).unwrap_or("00").parse().ok()?;
                sign * (h * 3600 + m * 60)
            }
        };
        let day = days_from_civil(y, m, d);
        return Some((day * 86_400 + secs.0 - offset) * 1_000_000_000 + secs.1);
    }
    // YYMMDD H:MM:SS
    let mut parts = v.split_whitespace();
    let date = parts.next()?;
    let clock = parts.next()?;
    if date.len() != 6 {
        return None;
    }
    let y = 2000 + date[..2].parse::<i64>().ok()?;
    let (m, d) = (date[2..4].parse().ok()?, date[4..6].parse().ok()?);
    let secs = clock_secs(clock)?;
    Some((days_from_civil(y, m, d) * 86_400 + secs.0) * 1_000_000_000 + secs.1)
}

/// `H:MM:SS[.ffffff]` -> (seconds of day, nanoseconds).
fn clock_secs(clock: &str) -> Option<(i64, i64)> {
    let (hms, frac) = clock.split_once('.').unwrap_or((clock, ""));
    let mut it = hms.split(':');
    let h: i64 = it.next()?.trim().parse().ok()?;
    let m: i64 = it.next()?.parse().ok()?;
    let s: i64 = it.next()?.parse().ok()?;
    let nanos = if frac.is_empty() {
        0
    } else {
        let digits: String = frac.chars().take(9).collect();
        digits.parse::<i64>().ok()? * 10_i64.pow(9 - digits.len() as u32)
    };
    Some((h * 3600 + m * 60 + s, nanos))
}

/// Parses a whole text (tests).
#[cfg(test)]
pub fn parse_all(text: &str, max_entry_bytes: usize) -> Vec<SlowEntry> {
    let mut parser = SlowLogParser::new(max_entry_bytes, None);
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
        assert_eq!(q["db"], "shop", "the stream's last `use`");
        assert_eq!(
            parse_time("2024-05-15T19:02:40.000001+02:00"),
            parse_time("2024-05-15T17:02:40.000001Z")
        );
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
        assert_eq!(
            parse_time("240515 17:02:39"),
            Some(1_715_792_559_000_000_000)
        );
        let r = &e[1].record;
        assert_eq!(r["db"], "other", "empty Schema: falls back to use");
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
}

/// The parser on the 72 real slow logs from percona-toolkit in
/// ../shared/slowlogs (read in place, never copied): every file parses
/// without a panic, and a handful of fields are checked by hand.
#[cfg(test)]
mod shared_logs {
    use std::io::Read;
    use std::path::PathBuf;

    use super::{parse_all, parse_time};

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
    }
}
