//! `my-agent slowlog FILE...`: reads slow query logs with the parser the
//! `mysql_slow_query` source uses and says what it found, per file and per
//! database: entries, total query_time, rows examined and sent (the totals
//! pt-query-digest's report starts with). For a DBA checking what the agent
//! makes of a log before shipping it, and for `cargo xtask bench`, which
//! reads `--json`'s `cpu_seconds` to measure the parser alone.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use crate::sources::slow_log::{SlowEntry, SlowLogParser};

/// The source's default `max_entry_size`.
const MAX_ENTRY_BYTES: usize = 512 << 10;

#[derive(Default)]
struct Totals {
    entries: u64,
    query_time: f64,
    rows_examined: u64,
    rows_sent: u64,
}

impl Totals {
    /// One entry's figures, as a Totals of one.
    fn of(e: &SlowEntry) -> Totals {
        let r = &e.record;
        Totals {
            entries: 1,
            query_time: r.get("query_time").and_then(Value::as_f64).unwrap_or(0.0),
            rows_examined: r.get("rows_examined").and_then(Value::as_u64).unwrap_or(0),
            rows_sent: r.get("rows_sent").and_then(Value::as_u64).unwrap_or(0),
        }
    }

    fn add(&mut self, one: &Totals) {
        self.entries += one.entries;
        self.query_time += one.query_time;
        self.rows_examined += one.rows_examined;
        self.rows_sent += one.rows_sent;
    }

    fn json(&self) -> Value {
        json!({
            "entries": self.entries,
            "query_time": self.query_time,
            "rows_examined": self.rows_examined,
            "rows_sent": self.rows_sent,
        })
    }

    fn line(&self) -> String {
        format!(
            "{} entries, query_time {:.6} s, rows_examined {}, rows_sent {}",
            self.entries, self.query_time, self.rows_examined, self.rows_sent
        )
    }
}

#[derive(Default)]
struct FileSummary {
    bytes: u64,
    all: Totals,
    /// By `db` (entries without one under "").
    by_db: BTreeMap<String, Totals>,
    invalid_utf8_lines: u64,
}

/// Exit 0 when every file was read, 1 otherwise.
pub fn run(files: &[PathBuf], as_json: bool) -> i32 {
    let mut code = 0;
    let mut reports = Vec::new();
    let mut bytes = 0;
    for path in files {
        match summarize(path) {
            Ok(s) => {
                bytes += s.bytes;
                reports.push((path, s));
            }
            Err(e) => {
                eprintln!("error: {}: {e}", path.display());
                code = 1;
            }
        }
    }
    let cpu = cpu_seconds();
    if as_json {
        let files: Vec<Value> = reports
            .iter()
            .map(|(path, s)| {
                let mut v = s.all.json();
                v["path"] = json!(path.display().to_string());
                v["bytes"] = json!(s.bytes);
                v["invalid_utf8_lines"] = json!(s.invalid_utf8_lines);
                v["databases"] = s
                    .by_db
                    .iter()
                    .map(|(db, t)| (db.clone(), t.json()))
                    .collect::<serde_json::Map<_, _>>()
                    .into();
                v
            })
            .collect();
        println!(
            "{}",
            json!({"files": files, "bytes": bytes, "cpu_seconds": cpu})
        );
    } else {
        for (path, s) in &reports {
            println!("{}: {}", path.display(), s.all.line());
            for (db, t) in &s.by_db {
                let name = if db.is_empty() { "(none)" } else { db };
                println!("  db {name}: {}", t.line());
            }
            if s.invalid_utf8_lines > 0 {
                println!(
                    "  {} lines with invalid UTF-8 (replaced)",
                    s.invalid_utf8_lines
                );
            }
        }
    }
    code
}

/// Feeds the file to the parser line by line, as the source does, with
/// bounded memory: 1 MiB reads, a line longer than an entry may be cut.
fn summarize(path: &Path) -> std::io::Result<FileSummary> {
    const READ: usize = 1 << 20;
    let mut file = File::open(path)?;
    let mut parser = SlowLogParser::new(MAX_ENTRY_BYTES, None);
    let mut summary = FileSummary::default();
    let mut entries = Vec::new();
    let mut buf: Vec<u8> = Vec::with_capacity(2 * READ);
    let mut offset = 0u64; // of buf[0] in the file
    loop {
        // Read straight onto the end of what is left of the last read.
        let filled = buf.len();
        buf.resize(filled + READ, 0);
        let n = file.read(&mut buf[filled..])?;
        buf.truncate(filled + n);
        summary.bytes += n as u64;
        let at_eof = n == 0;
        // The complete lines are checked as UTF-8 in one pass: per line, the
        // check cost more than finding the line.
        let complete = if at_eof {
            buf.len()
        } else {
            memchr::memrchr(b'\n', &buf).map_or(0, |i| i + 1)
        };
        let valid = std::str::from_utf8(&buf[..complete]).is_ok();
        let mut start = 0;
        while start < buf.len() {
            let rest = &buf[start..];
            let end = match memchr::memchr(b'\n', rest) {
                Some(i) => start + i + 1,
                None if at_eof || rest.len() > MAX_ENTRY_BYTES => buf.len(),
                None => break,
            };
            let mut line = &buf[start..end];
            line = line.strip_suffix(b"\n").unwrap_or(line);
            line = line.strip_suffix(b"\r").unwrap_or(line);
            let text = match valid && end <= complete {
                // SAFETY: a whole line of a range just checked as UTF-8 (it
                // ends at a newline, which is never inside a character).
                true => std::borrow::Cow::Borrowed(unsafe { std::str::from_utf8_unchecked(line) }),
                false => match std::str::from_utf8(line) {
                    Ok(t) => std::borrow::Cow::Borrowed(t),
                    Err(_) => {
                        summary.invalid_utf8_lines += 1;
                        String::from_utf8_lossy(line)
                    }
                },
            };
            parser.push_line(
                &text,
                offset + start as u64,
                offset + end as u64,
                &mut entries,
            );
            start = end;
        }
        buf.drain(..start);
        offset += start as u64;
        if at_eof {
            parser.finish(&mut entries);
        }
        for e in entries.drain(..) {
            let one = Totals::of(&e);
            summary.all.add(&one);
            let db = e.record.get("db").and_then(Value::as_str).unwrap_or("");
            match summary.by_db.get_mut(db) {
                Some(t) => t.add(&one),
                None => summary.by_db.entry(db.to_string()).or_default().add(&one),
            }
        }
        if at_eof {
            return Ok(summary);
        }
    }
}

/// User + system CPU of this process so far.
fn cpu_seconds() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let usage = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(usage.ru_utime) + secs(usage.ru_stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_per_file_and_database() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("slow.log");
        let entry = |db: &str, qt: &str, rows: u32| {
            format!(
                "# Time: 2026-11-29T10:00:00.000000Z\n# User@Host: app[app] @ localhost []  Id: 7\n\
                 # Query_time: {qt}  Lock_time: 0.0  Rows_sent: 1  Rows_examined: {rows}\n\
                 use {db};\nSET timestamp=1764410400;\nSELECT 1;\n"
            )
        };
        let text = [
            entry("shop", "1.5", 10),
            entry("shop", "0.5", 5),
            entry("crm", "2.0", 1),
        ]
        .concat();
        std::fs::write(&log, text).unwrap();
        let s = summarize(&log).unwrap();
        assert_eq!(s.all.entries, 3);
        assert!((s.all.query_time - 4.0).abs() < 1e-9);
        assert_eq!(s.all.rows_examined, 16);
        assert_eq!(s.by_db["shop"].entries, 2);
        assert_eq!(s.by_db["shop"].rows_examined, 15);
        assert_eq!(s.by_db["crm"].rows_sent, 1);
    }

    #[test]
    fn invalid_utf8_is_counted_per_line_and_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("slow.log");
        let mut text = Vec::new();
        for i in 0..3 {
            text.extend_from_slice(
                format!(
                    "# Time: 2026-11-29T10:00:00.000000Z\n# User@Host: app[app] @ localhost []  Id: 7\n\
                     # Query_time: 1.0  Lock_time: 0.0  Rows_sent: 1  Rows_examined: 2\n\
                     SET timestamp=1764410400;\nSELECT '{i}"
                )
                .as_bytes(),
            );
            if i == 1 {
                text.extend_from_slice(b"\xff\xfe");
            }
            text.extend_from_slice(b"';\n");
        }
        std::fs::write(&log, text).unwrap();
        let s = summarize(&log).unwrap();
        assert_eq!(s.all.entries, 3);
        assert_eq!(s.invalid_utf8_lines, 1);
        assert_eq!(s.all.rows_examined, 6);
    }
}
