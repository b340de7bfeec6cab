//! The agent's slow-log parser judged by pt-query-digest (percona-toolkit),
//! the reference reader of slow logs: the real agent and `pt-query-digest`
//! read the same files, and per file the number of events, the total
//! query_time, rows_examined and rows_sent, and the same per database, must
//! agree. First on the 72 sample logs of percona-toolkit in
//! ../shared/slowlogs (read in place), then on the slow log of a live
//! MariaDB given a workload of string literals that look like log lines,
//! then on logs written here byte for byte as MySQL 8 writes them, one per
//! literal case (`literal_cases`): banner lines, trailing whitespace and
//! `\r` after `;`, a CRLF log.
//!
//! The rule both readers share, and the ambiguity left: a statement ends at
//! `;` at the very end of a line, and a literal holding such a line, then
//! `#` lines with `Query_time:` (a whole banner between them or not), is
//! byte for byte two entries; both read it as two (`PtReading::BothSplit`),
//! unless the banner is one pt-query-digest misses (`bin/mysqld, Version:`,
//! as a server wrote it in slow060.txt), where it reads one statement and
//! the agent a restart and an entry (`PtReading::MissesBanner`).
//! Everywhere else the agent reads the entries as the server wrote them,
//! and where pt-query-digest forges no event, neither does the agent, nor
//! does any entry's database change.
//!
//! pt-query-digest prints each event it parses through a `--filter`
//! (`print ...; 0`, so it aggregates nothing). Two of its documented
//! choices are applied to the agent's side before comparing, because they
//! are policies of the report and not readings of the log:
//! - it zeroes the rows of `administrator command` events (its pipeline
//!   step "zero admin");
//! - it reports an empty `Schema:` as the database "", the agent as none.
//!
//! A value pt-query-digest keeps as text because it is not a number (the
//! agent puts it in `unparsed_fields`) is counted, not summed, on both
//! sides. Every other difference must be listed in `SAMPLE_DIFFERENCES` or
//! `LIVE_DIFFERENCES`, with why pt-query-digest is the one that is wrong;
//! a listed difference that no longer appears fails the test too, so the
//! tables stay true.

mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// Differences on percona-toolkit's sample logs: (file, difference as
/// `Digest::diff` prints it, why pt-query-digest is wrong). None remain:
/// the logs where the agent used to differ (a blank first line, the
/// Windows banner, a repeated `# User@Host`, `Schema:` not carried, a
/// malformed Query_time) are read as pt-query-digest reads them.
const SAMPLE_DIFFERENCES: &[(&str, &str, &str)] = &[];

/// Differences on the live MariaDB's log, which vary in their numbers from
/// run to run and so are checked event by event: (what differs, why
/// pt-query-digest is wrong).
const LIVE_DIFFERENCES: &[(&str, &str)] = &[
    (
        "pt-query-digest has one more event per statement with a string literal \
         that holds `;` at the end of a line and then a `#` line: the event's \
         text ends in LITERAL_SPLIT, it has no Query_time, and it has the user \
         and database the literal claims",
        "it splits at any `;\\n#`, inside a literal too; the server wrote one \
         statement, and the lines after the `;` hold no Query_time, which the \
         server writes for every entry",
    ),
    (
        "db: agent none, pt-query-digest the database of the event before",
        "MariaDB writes `Schema: ` with no name (then `QC_hit:`) for a \
         connection without a default database; pt-query-digest drops the \
         empty attribute and carries the last database over \
         (--inherit-attributes db)",
    ),
];

/// pt-query-digest's `--filter`: one tab-separated line per event.
const FILTER: &str = r#"print join("\t", "EVENT",
    (map { my $v = defined $_ ? $_ : "\\N"; $v =~ s/[\t\n]/ /g; $v }
        @{$event}{qw(Query_time Rows_examined Rows_sent db user)}),
    ($event->{arg} =~ /^administrator command/ ? 1 : 0),
    (index($event->{arg}, "LITERAL_SPLIT") >= 0 ? 1 : 0)), "\n";
0
"#;

/// One event, as either reader saw it.
#[derive(Debug, Clone)]
struct Event {
    query_time: Field<f64>,
    rows_examined: Field<u64>,
    rows_sent: Field<u64>,
    db: Option<String>,
    user: Option<String>,
    admin: bool,
    /// pt-query-digest only: the event's text is the tail of a string
    /// literal of the live workload (it holds LITERAL_SPLIT).
    literal_split: bool,
}

#[derive(Debug, Clone, Copy)]
enum Field<T> {
    Absent,
    Number(T),
    /// Written, but not a number.
    Unparsed,
}

impl<T: std::str::FromStr> Field<T> {
    fn from_text(v: &str) -> Field<T> {
        match v {
            "\\N" => Field::Absent,
            v => v.parse().map_or(Field::Unparsed, Field::Number),
        }
    }
}

/// Sums over a set of events.
#[derive(Debug, Default, Clone)]
struct Totals {
    events: u64,
    query_time: f64,
    rows_examined: u64,
    rows_sent: u64,
    /// Values that are not numbers, by field.
    unparsed: BTreeMap<&'static str, u64>,
}

impl Totals {
    fn add(&mut self, e: &Event) {
        self.events += 1;
        let mut unparsed = |name| *self.unparsed.entry(name).or_insert(0) += 1;
        match e.query_time {
            Field::Number(v) => self.query_time += v,
            Field::Unparsed => unparsed("Query_time"),
            Field::Absent => {}
        }
        for (name, field, total) in [
            ("Rows_examined", e.rows_examined, &mut self.rows_examined),
            ("Rows_sent", e.rows_sent, &mut self.rows_sent),
        ] {
            match field {
                Field::Number(v) => *total += v,
                Field::Unparsed => *self.unparsed.entry(name).or_insert(0) += 1,
                Field::Absent => {}
            }
        }
    }

    /// `what: agent A, pt P` for each sum that differs.
    fn diff(&self, pt: &Totals, what: &str, out: &mut Vec<String>) {
        let mut line = |field: &str, a: String, p: String| {
            if a != p {
                out.push(format!("{what} {field}: agent {a}, pt {p}"));
            }
        };
        line("events", self.events.to_string(), pt.events.to_string());
        // Six decimals: the servers' resolution, beyond the sums' rounding.
        line(
            "query_time",
            format!("{:.6}", self.query_time),
            format!("{:.6}", pt.query_time),
        );
        line(
            "rows_examined",
            self.rows_examined.to_string(),
            pt.rows_examined.to_string(),
        );
        line(
            "rows_sent",
            self.rows_sent.to_string(),
            pt.rows_sent.to_string(),
        );
        line(
            "unparsed",
            format!("{:?}", self.unparsed),
            format!("{:?}", pt.unparsed),
        );
    }
}

/// Totals of one log, overall and per database ("" for none).
#[derive(Debug, Default)]
struct Digest {
    all: Totals,
    by_db: BTreeMap<String, Totals>,
}

impl Digest {
    fn of(events: &[Event]) -> Digest {
        let mut d = Digest::default();
        for e in events {
            d.all.add(e);
            d.by_db
                .entry(e.db.clone().unwrap_or_default())
                .or_default()
                .add(e);
        }
        d
    }

    /// Every difference between the agent's digest (self) and pt's.
    fn diff(&self, pt: &Digest) -> Vec<String> {
        let mut out = Vec::new();
        self.all.diff(&pt.all, "all", &mut out);
        let dbs: std::collections::BTreeSet<&String> =
            self.by_db.keys().chain(pt.by_db.keys()).collect();
        let none = Totals::default();
        for db in dbs {
            let (a, p) = (
                self.by_db.get(db).unwrap_or(&none),
                pt.by_db.get(db).unwrap_or(&none),
            );
            a.diff(p, &format!("db {db:?}"), &mut out);
        }
        out
    }
}

/// pt-query-digest's events in `log`.
fn pt_events(log: &Path, filter: &Path) -> Vec<Event> {
    let out = Command::new("pt-query-digest")
        .arg("--no-report")
        .arg("--filter")
        .arg(filter)
        .arg(log)
        .output()
        .expect("pt-query-digest runs (percona-toolkit, see recipes/test-tools.toml)");
    assert!(
        out.status.success(),
        "pt-query-digest {}: {}",
        log.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.strip_prefix("EVENT\t"))
        .map(|l| {
            let f: Vec<&str> = l.split('\t').collect();
            assert_eq!(
                f.len(),
                7,
                "{}: pt-query-digest printed {l:?}",
                log.display()
            );
            let text = |v: &str| (v != "\\N").then(|| v.to_string());
            Event {
                query_time: Field::from_text(f[0]),
                rows_examined: Field::from_text(f[1]),
                rows_sent: Field::from_text(f[2]),
                // An empty `Schema:` is "" to pt-query-digest, no database
                // to the agent.
                db: text(f[3]).filter(|d| !d.is_empty()),
                user: text(f[4]),
                admin: f[5] == "1",
                literal_split: f[6] == "1",
            }
        })
        .collect()
}

/// The agent's record as an event, with pt-query-digest's "zero admin".
fn agent_event(r: &Value) -> Event {
    let unparsed = |name: &str| r["unparsed_fields"].get(name).is_some();
    let admin = r.get("command").is_some();
    let count = |key: &str, name: &str| match r.get(key) {
        _ if admin => Field::Number(0),
        Some(v) => Field::Number(
            v.as_u64()
                .unwrap_or_else(|| panic!("{key} is an integer, not {v}, in {}", r["log_tag"])),
        ),
        None if unparsed(name) => Field::Unparsed,
        None => Field::Absent,
    };
    Event {
        query_time: match r.get("query_time") {
            Some(v) => {
                Field::Number(v.as_f64().filter(|_| v.is_f64()).unwrap_or_else(|| {
                    panic!("query_time is a float, not {v}, in {}", r["log_tag"])
                }))
            }
            None if unparsed("Query_time") => Field::Unparsed,
            None => Field::Absent,
        },
        rows_examined: count("rows_examined", "Rows_examined"),
        rows_sent: count("rows_sent", "Rows_sent"),
        db: r["db"].as_str().map(String::from),
        user: r["user"].as_str().map(String::from),
        admin,
        literal_split: false,
    }
}

/// GET /status from the agent's listener.
fn status(port: u16) -> Option<Value> {
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    write!(s, "GET /status HTTP/1.0\r\nHost: localhost\r\n\r\n").ok()?;
    let mut answer = String::new();
    s.read_to_string(&mut answer).ok()?;
    serde_json::from_str(answer.split_once("\r\n\r\n")?.1).ok()
}

/// Runs the agent over `logs` (each tagged with its path) until every file
/// is read to its end and delivered; returns the records of each file, in
/// order.
fn agent_records(dir: &Path, logs: &[PathBuf]) -> BTreeMap<PathBuf, Vec<Value>> {
    let sink = Sink::start();
    let port = free_port();
    let mut paths = String::new();
    for l in logs {
        writeln!(paths, "      - {}", l.display()).unwrap();
    }
    let config = format!(
        r#"system:
  metrics:
    bind: 127.0.0.1:{port}
sources:
  - type: mysql_slow_query
    path:
{paths}    pos_file: {dir}/slow.pos
    tag: mysql.*
    read_from_head: true
    poll_interval: 50ms
    entry_timeout: 200ms
filters:
  - match: "mysql.**"
    type: record_transformer
    record:
      log_tag: "${{tag}}"
{outputs}"#,
        dir = dir.display(),
        outputs = http_outputs(dir, &sink.url)
    );
    let agent = Agent::start(dir, &config);
    // Where each file is read to in the end: its size, or the start of an
    // unfinished last line, which the agent waits for (slow015.txt ends
    // in a `# User@Host` cut short).
    let ends: BTreeMap<String, u64> = logs
        .iter()
        .map(|l| {
            let text = std::fs::read(l).unwrap();
            let end = match text.last() {
                None | Some(b'\n') => text.len() as u64,
                Some(_) => 0,
            };
            (l.display().to_string(), end)
        })
        .collect();
    let start = Instant::now();
    loop {
        let done = status(port).is_some_and(|s| {
            let files = s["sources"][0]["files"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            files.len() == logs.len()
                && files.iter().all(|f| {
                    let end = ends.get(f["path"].as_str().unwrap_or(""));
                    let position = f["position"].as_u64();
                    end.is_some_and(|&e| e == 0 || Some(e) == position)
                })
                && s["outputs"][0]["buffer_bytes"] == 0
                && s["outputs"][0]["oldest_unsent_age_seconds"].is_null()
        });
        if done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the agent did not read and deliver every log: /status says {:#}; log: {}",
            status(port).unwrap_or_default(),
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success());
    let tag_of = |l: &PathBuf| {
        format!(
            "mysql.{}",
            l.display()
                .to_string()
                .trim_start_matches('/')
                .replace('/', ".")
        )
    };
    let records = sink.state.records.lock().unwrap().clone();
    let mut by_log: BTreeMap<PathBuf, Vec<Value>> =
        logs.iter().map(|l| (l.clone(), Vec::new())).collect();
    for r in records {
        let log = logs
            .iter()
            .find(|l| r["log_tag"] == tag_of(l))
            .unwrap_or_else(|| panic!("a record of no log: {r}"));
        by_log.get_mut(log).unwrap().push(r);
    }
    by_log
}

fn write_filter(dir: &Path) -> PathBuf {
    let filter = dir.join("events.pl");
    std::fs::write(&filter, FILTER).unwrap();
    filter
}

fn samples_dir() -> PathBuf {
    PathBuf::from(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/slowlogs/percona-toolkit"
    ))
}

#[test]
fn percona_toolkit_sample_logs_read_as_pt_query_digest_reads_them() {
    let dir = tempfile::tempdir().unwrap();
    let filter = write_filter(dir.path());
    // The gzipped logs are read decompressed (the agent follows plain
    // files); the others in place.
    let mut logs = Vec::new();
    for entry in std::fs::read_dir(samples_dir()).expect("../shared/slowlogs beside the clone") {
        let path = entry.unwrap().path();
        match path.file_name().unwrap().to_str().unwrap() {
            "COPYING" => {}
            name if name.ends_with(".gz") => {
                let mut text = Vec::new();
                flate2::read::MultiGzDecoder::new(std::fs::File::open(&path).unwrap())
                    .read_to_end(&mut text)
                    .unwrap();
                let plain = dir.path().join(name.trim_end_matches(".gz"));
                std::fs::write(&plain, text).unwrap();
                logs.push(plain);
            }
            _ => logs.push(path),
        }
    }
    logs.sort();
    assert_eq!(logs.len(), 72, "the 72 sample logs");

    // pt-query-digest is a Perl program that starts in ~0.2 s: two at a
    // time, beside the agent.
    let (records, pt) = std::thread::scope(|s| {
        let agent = s.spawn(|| agent_records(dir.path(), &logs));
        let halves: Vec<_> = logs
            .chunks(logs.len() / 2 + 1)
            .map(|part| {
                let filter = &filter;
                s.spawn(move || {
                    part.iter()
                        .map(|l| (l.clone(), pt_events(l, filter)))
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        let pt: BTreeMap<PathBuf, Vec<Event>> =
            halves.into_iter().flat_map(|h| h.join().unwrap()).collect();
        (agent.join().unwrap(), pt)
    });

    let mut found: Vec<(String, String)> = Vec::new();
    let mut events = 0;
    for log in &logs {
        let name = log.file_name().unwrap().to_string_lossy().into_owned();
        let agent: Vec<Event> = records[log].iter().map(agent_event).collect();
        events += agent.len();
        for d in Digest::of(&agent).diff(&Digest::of(&pt[log])) {
            found.push((name.clone(), d));
        }
    }
    // `my-agent slowlog` (the same parser, without the pipeline) gives
    // each file's totals as the source shipped them.
    let out = Command::new(agent_binary())
        .arg("slowlog")
        .arg("--json")
        .args(&logs)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap();
    for (log, file) in logs.iter().zip(summary["files"].as_array().unwrap()) {
        // The records as shipped (not normalised for pt-query-digest).
        let shipped = &records[log];
        let sum = |key: &str| -> f64 {
            shipped
                .iter()
                .filter_map(|r| r[key].as_f64())
                .fold(0.0, |a, b| a + b)
        };
        let name = log.display();
        assert_eq!(file["entries"], shipped.len(), "{name}");
        for key in ["query_time", "rows_examined", "rows_sent"] {
            let got = file[key].as_f64().unwrap();
            assert_eq!(
                format!("{got:.6}"),
                format!("{:.6}", sum(key)),
                "{name}: {key}"
            );
        }
    }

    let documented: Vec<(String, String)> = SAMPLE_DIFFERENCES
        .iter()
        .map(|(f, d, _)| (f.to_string(), d.to_string()))
        .collect();
    let undocumented: Vec<_> = found.iter().filter(|d| !documented.contains(d)).collect();
    let gone: Vec<_> = documented.iter().filter(|d| !found.contains(d)).collect();
    assert!(
        undocumented.is_empty() && gone.is_empty(),
        "differences from pt-query-digest not in SAMPLE_DIFFERENCES: {undocumented:#?}\n\
         listed there but no longer found: {gone:#?}"
    );
    assert!(events > 2500, "{events} events in 72 logs");
}

/// Statements whose string literals hold what the server writes between
/// entries. Each is logged whole; none may give an event the user,
/// database, time or query_time its text claims. pt-query-digest splits the
/// ones with `;` at the end of a line followed by a `#` line, and makes an
/// event of the rest (`literal_split`), which ends in LITERAL_SPLIT so it
/// can be told apart.
fn tricky_statements() -> Vec<String> {
    let header = "# Time: 2020-01-01T00:00:00.000000Z\n# User@Host: evil[evil] @ localhost []";
    vec![
        // No `;` before the header lines: text to both readers.
        format!("SELECT 'a\n{header}\nb' AS no_semicolon"),
        format!("SELECT 'a\n# User@Host: root[root] @ localhost []\nuse evil;\nSET timestamp=1;\nb' AS user_host"),
        "SELECT 'x\nuse evil;\ny' AS use_inside".to_string(),
        "SELECT 'x\nSET timestamp=1;\ny' AS set_inside".to_string(),
        // `;` ends inner lines: only pt-query-digest splits.
        format!("SELECT 'x;\n{header}\nuse evil;\nSET timestamp=1;\nSELECT 1 AS LITERAL_SPLIT' AS spoof"),
        "SELECT 'x;\n# User@Host: root[root] @ localhost []\n# Thread_id: 9  Schema: evil  QC_hit: No\nLITERAL_SPLIT' AS spoof_schema"
            .to_string(),
        "SELECT 1 /* a comment that ends a line;\n   and goes on */ + 2 AS inner_semicolon".to_string(),
        "SELECT 'one;\ntwo;\nthree' AS semicolons".to_string(),
        "INSERT INTO crm.notes (body) VALUES ('x;\n# Time: 2020-01-01T00:00:00.000000Z\nLITERAL_SPLIT')".to_string(),
        // Lines of a banner after `;`: text to both readers, unless `#`
        // lines follow: pt-query-digest deletes banner lines wherever they
        // are, and then splits at the `;\n#` left.
        format!("SELECT 'x;\n{BANNER_STARTED}\nuse evil;\nSET timestamp=1;\ny' AS banner_started"),
        format!("SELECT 'x;\n{BANNER_PORT}\nuse evil;\nSET timestamp=1;\ny' AS banner_port"),
        format!("SELECT 'x;\n{BANNER_COLUMNS}\nuse evil;\nSET timestamp=1;\ny' AS banner_columns"),
        format!("SELECT 'x;\n{BANNER_STARTED}\n{BANNER_PORT}\n{BANNER_COLUMNS}\nuse evil;\nSET timestamp=1;\ny' AS banner_whole"),
        format!("SELECT 'x;\n{BANNER_PORT}\n{BANNER_COLUMNS}\n{header}\nLITERAL_SPLIT' AS banner_pair_header"),
        format!("SELECT 'x;\n{BANNER_STARTED}\n{BANNER_PORT}\n{BANNER_COLUMNS}\n{header}\nLITERAL_SPLIT' AS banner_whole_header"),
        // `;` not at the very end of the line: text to both readers, even
        // before a whole header.
        format!("SELECT 'x; \n{header}\n{QUERY_TIME}\nuse evil;\nSET timestamp=1;\ny' AS trailing_space"),
        format!("SELECT 'x;\r\n{header}\n{QUERY_TIME}\nuse evil;\nSET timestamp=1;\ny' AS trailing_cr"),
    ]
}

const BANNER_STARTED: &str =
    "/usr/sbin/mysqld, Version: 8.0.36 (MySQL Community Server - GPL). started with:";
const BANNER_PORT: &str = "Tcp port: 3306  Unix socket: /tmp/evil.sock";
const BANNER_COLUMNS: &str = "Time                 Id Command    Argument";
const BANNER_EMBEDDED: &str =
    "/usr/sbin/mysqld, Version: 5.7.44 (Source distribution). embedded library";
const QUERY_TIME: &str =
    "# Query_time: 999.000000  Lock_time: 0.000000 Rows_sent: 666  Rows_examined: 666";

/// How pt-query-digest reads a log of `literal_cases`, against the two
/// entries the server wrote.
#[derive(Debug, Clone, Copy, PartialEq)]
enum PtReading {
    /// As written: so must the agent.
    Same,
    /// One event more, cut from the literal, with the database and user it
    /// claims (then carried to the next entry): pt-query-digest is wrong,
    /// the agent reads the two entries.
    Forges,
    /// The ambiguity left: the literal is byte for byte a statement, a
    /// server restart and an entry, and both readers read three events
    /// with the same databases.
    BothSplit,
    /// One event: its separator is `;\n#`, which a CRLF log never has. The
    /// agent reads the two entries.
    Merges,
    /// The same ambiguity, with a banner as a server writes it that
    /// pt-query-digest does not know: it reads the two entries, the agent
    /// three, as for `BothSplit`.
    MissesBanner,
}

struct LiteralCase {
    name: String,
    log: String,
    pt: PtReading,
}

/// An entry as MySQL 8 writes it (no `Schema:`; `use` when the database
/// changes).
fn mysql_entry(use_db: Option<&str>, sql: &str) -> String {
    let use_line = use_db.map(|d| format!("use {d};\n")).unwrap_or_default();
    format!(
        "# Time: 2024-05-15T17:02:39.123456Z\n# User@Host: app[app] @ localhost []  Id:     8\n\
         # Query_time: 0.500000  Lock_time: 0.000020 Rows_sent: 1  Rows_examined: 2\n\
         {use_line}SET timestamp=1715792559;\n{sql}\n"
    )
}

/// A log as the server writes it: its banner, an entry in `shop` whose
/// literal holds `x;{after}` then `lines`, then one that names no
/// database.
fn literal_log(after: &str, lines: &[&str]) -> String {
    let sql = format!(
        "SELECT 'x;{after}\n{}\nuse evil;\nSET timestamp=1;\nSELECT 1 AS LITERAL_SPLIT' AS c;",
        lines.join("\n")
    );
    format!("{BANNER_STARTED}\n{BANNER_PORT}\n{BANNER_COLUMNS}\n")
        + &mysql_entry(Some("shop"), &sql)
        + &mysql_entry(None, "SELECT 2;")
}

/// Literals against the banner and `;` rules, each in a log of its own,
/// with how pt-query-digest reads it.
fn literal_cases() -> Vec<LiteralCase> {
    use PtReading::*;
    let (v, p, c) = (BANNER_STARTED, BANNER_PORT, BANNER_COLUMNS);
    let time = "# Time: 2020-01-01T00:00:00.000000Z";
    let user = "# User@Host: evil[evil] @ evil [6.6.6.6]  Id:   666";
    let relative = "bin/mysqld, Version: 5.5.38-35.2-log (Percona Server (GPL), Release 35.2, Revision 674). started with:";
    let mut cases = Vec::new();
    let mut case = |name: String, log: String, pt| cases.push(LiteralCase { name, log, pt });
    // Every banner line alone, every pair, the whole banner: then more of
    // the literal, a header block without Query_time, one with it; with
    // how pt-query-digest reads the last two (the first it reads as
    // written). It deletes every line that looks like one of a banner,
    // wherever it is, and splits at the `;\n#` that may leave.
    for (name, lines, with_header, with_query_time) in [
        ("started", &[v][..], Forges, Forges),
        ("port", &[p], Forges, Forges),
        ("columns", &[c], Forges, Forges),
        ("started+port", &[v, p], Forges, Forges),
        ("port+columns", &[p, c], Forges, Forges),
        ("started+columns", &[v, c], Forges, Forges),
        ("columns+started", &[c, v], Forges, Forges),
        ("whole", &[v, p, c], Forges, BothSplit),
        ("whole, embedded", &[BANNER_EMBEDDED, c], Forges, BothSplit),
        ("whole twice", &[v, p, c, v, p, c], Forges, BothSplit),
        // As Percona Server 5.5 wrote it (slow060.txt): pt-query-digest's
        // banner pattern wants a `/` or a capital first, and keeps it.
        ("whole, bin/mysqld", &[relative, p, c], Same, MissesBanner),
    ] {
        let with = |extra: &[&'static str]| -> Vec<&'static str> { [lines, extra].concat() };
        case(format!("{name}, then text"), literal_log("", lines), Same);
        case(
            format!("{name}, then # Time, # User@Host"),
            literal_log("", &with(&[time, user])),
            with_header,
        );
        case(
            format!("{name}, then # Time, # User@Host, # Query_time"),
            literal_log("", &with(&[time, user, QUERY_TIME])),
            with_query_time,
        );
    }
    // `;` then whitespace or `\r`, then a whole header.
    for after in [" ", "\t", "\r", " \r", "\r\r"] {
        case(
            format!("`;{}`, then a whole header", after.escape_default()),
            literal_log(after, &[time, user, QUERY_TIME]),
            Same,
        );
    }
    // Where pt-query-digest forges and the agent does not, as before: a
    // `#` line after `;` in a header block without Query_time, or one
    // longer than any header (64 KiB) before its Query_time.
    for line in ["# administrator command: Quit;", time, user] {
        case(line.to_string(), literal_log("", &[line]), Forges);
    }
    let keys: Vec<String> = (0..4000).map(|i| format!("# Key_{i}: {i:09}")).collect();
    let mut many: Vec<&str> = keys.iter().map(String::as_str).collect();
    many.push(QUERY_TIME);
    case("4000 # Key: lines".into(), literal_log("", &many), Forges);
    // A log converted to CRLF: every line ends in `\r\n`, which is the
    // line ending of its statements too.
    case(
        "a CRLF log".into(),
        literal_log("", &["text"]).replace('\n', "\r\n"),
        Merges,
    );
    cases
}

/// Literals in `tricky_statements` that pt-query-digest splits.
const LITERAL_SPLITS: usize = 5;

/// Runs `sql` through the client's standard input (an argument holds at
/// most 128 KiB on Linux).
fn sql_from_stdin(db: &MariaDb, sql: &str) {
    let mut child = Command::new("mariadb")
        .args(["--no-defaults", "-uroot", "--comments"])
        .arg(format!("--socket={}", db.socket.display()))
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(sql.as_bytes())
        .unwrap();
    assert!(
        child.wait().unwrap().success(),
        "mariadb < {} bytes",
        sql.len()
    );
}

#[test]
fn live_mariadb_slow_log_read_as_pt_query_digest_reads_it() {
    let db = MariaDb::start();
    // No default database yet: `Schema:` is empty.
    db.sql("SELECT 1; CREATE DATABASE shop; CREATE DATABASE crm");
    db.sql(
        "USE shop;\nCREATE TABLE orders (id INT PRIMARY KEY AUTO_INCREMENT, total INT, note TEXT);\n\
         INSERT INTO orders (total, note) VALUES (10, 'a'), (20, 'b'), (30, 'c');\n\
         SELECT id, total\n  FROM orders\n WHERE total > 10\n ORDER BY total;\n\
         USE crm;\nCREATE TABLE notes (id INT PRIMARY KEY AUTO_INCREMENT, body TEXT);\n\
         INSERT INTO notes (body) SELECT note FROM shop.orders;\nSELECT COUNT(*) FROM notes;\n\
         USE shop;\nUPDATE orders SET total = total + 1 WHERE id = 2;",
    );
    let tricky = tricky_statements();
    for (i, s) in tricky.iter().enumerate() {
        // Alternate databases, and one session without any.
        let session = match i % 3 {
            0 => format!("USE shop; {s}"),
            1 => format!("USE crm; {s}"),
            _ => s.clone(),
        };
        db.sql(&session);
    }
    // Errors are logged too.
    db.sql_err("SELECT * FROM shop.nope");
    db.sql_err("USE shop; SELEC 1");
    // One statement larger than the server's IO buffer, one larger than the
    // agent's max_entry_size (512 KiB): cut, flagged, still counted.
    let big = |n: usize| format!("USE crm;\nSELECT LENGTH('{}') AS big;\n", "x".repeat(n));
    sql_from_stdin(&db, &big(200 << 10));
    sql_from_stdin(&db, &big(600 << 10));
    db.sql("USE shop; SELECT SUM(total) FROM orders");

    let dir = tempfile::tempdir().unwrap();
    let filter = write_filter(dir.path());
    let log = db.slow_log.clone();
    let records = agent_records(dir.path(), std::slice::from_ref(&log))
        .remove(&log)
        .unwrap();
    let pt = pt_events(&log, &filter);
    let agent: Vec<Event> = records.iter().map(agent_event).collect();

    // Every tricky statement arrives whole, as one event (a `\r` before a
    // line's `\n` is taken off with it).
    for s in &tricky {
        let whole = format!("{s};").replace('\r', "");
        let n = records
            .iter()
            .filter(|r| r["sql"].as_str().map(|q| q.replace('\r', "")) == Some(whole.clone()))
            .count();
        assert_eq!(n, 1, "{whole:?} in {n} events");
    }
    assert!(
        records.iter().any(|r| r["truncated"] == true),
        "the 600 KiB statement is cut"
    );
    for r in &records {
        assert_ne!(r["user"], "evil", "{r}");
        assert_ne!(r["db"], "evil", "{r}");
        let t = r["timestamp"]
            .as_str()
            .unwrap_or_else(|| panic!("a timestamp: {r}"));
        assert!(
            !t.starts_with("1970") && !t.starts_with("2020-01-01"),
            "{t}: {r}"
        );
        assert!(r["query_time"].as_f64().is_some_and(|q| q < 60.0), "{r}");
    }

    // pt-query-digest, event by event, LIVE_DIFFERENCES apart.
    let splits: Vec<&Event> = pt.iter().filter(|e| e.literal_split).collect();
    assert_eq!(
        splits.len(),
        LITERAL_SPLITS,
        "{}: {splits:#?}",
        LIVE_DIFFERENCES[0].0
    );
    assert!(splits.iter().all(|e| matches!(e.query_time, Field::Absent)));
    assert!(splits.iter().any(|e| e.user.as_deref() == Some("evil")));
    let pt_real: Vec<&Event> = pt.iter().filter(|e| !e.literal_split).collect();
    assert_eq!(
        agent.len(),
        pt_real.len(),
        "events: agent {}, pt-query-digest {} (besides its splits)",
        agent.len(),
        pt_real.len()
    );
    let mut inherited = 0;
    let mut pt_last_db: Option<&str> = None;
    let mut agent_events = agent.iter().enumerate();
    for p in &pt {
        if !p.literal_split {
            let (i, a) = agent_events.next().expect("as many events");
            let numbers = |e: &Event| {
                format!(
                    "{:?}",
                    (e.query_time, e.rows_examined, e.rows_sent, e.admin)
                )
            };
            assert_eq!(
                numbers(a),
                numbers(p),
                "event {i}: agent {a:?}, pt-query-digest {p:?}"
            );
            if a.db != p.db {
                assert!(
                    a.db.is_none() && p.db.as_deref() == pt_last_db,
                    "event {i}: agent db {:?}, pt-query-digest {:?} (its last {pt_last_db:?}); \
                     the only documented difference is {:?}",
                    a.db,
                    p.db,
                    LIVE_DIFFERENCES[1].0
                );
                inherited += 1;
            }
        }
        pt_last_db = p.db.as_deref().or(pt_last_db);
    }
    assert!(
        inherited > 0,
        "no longer found: {:?}",
        LIVE_DIFFERENCES[1].0
    );
    // The same, as totals.
    let no_splits: Vec<Event> = pt_real.into_iter().cloned().collect();
    let d = Digest::of(&agent).diff(&Digest::of(&no_splits));
    assert!(
        d.iter().all(|l| l.starts_with("db ")),
        "totals differ beyond {:?}: {d:#?}",
        LIVE_DIFFERENCES[1].0
    );
}

/// The literal cases (`literal_cases`), each in a log written here as MySQL
/// 8 writes it, read by the agent and by pt-query-digest: where
/// pt-query-digest forges no event, the agent forges none and changes no
/// entry's database; where it forges one, the agent reads the entries as
/// written; and both read the ambiguity left alike.
#[test]
fn literal_cases_read_as_written_where_pt_query_digest_forges_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let filter = write_filter(dir.path());
    let cases = literal_cases();
    let logs: Vec<PathBuf> = cases
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let path = dir.path().join(format!("case{i:02}.log"));
            std::fs::write(&path, &c.log).unwrap();
            path
        })
        .collect();
    let records = agent_records(dir.path(), &logs);
    let dbs = |e: &[Event]| -> Vec<String> {
        e.iter()
            .map(|x| x.db.clone().unwrap_or_else(|| "-".into()))
            .collect()
    };
    let mut table = String::new();
    let mut wrong = Vec::new();
    for (case, log) in cases.iter().zip(&logs) {
        let pt = pt_events(log, &filter);
        let shipped = &records[log];
        let agent: Vec<Event> = shipped.iter().map(agent_event).collect();
        writeln!(
            table,
            "{:<58} agent {} {:?}  pt-query-digest {} {:?}  ({:?})",
            case.name,
            agent.len(),
            dbs(&agent),
            pt.len(),
            dbs(&pt),
            case.pt
        )
        .unwrap();
        // The entries as the server wrote them: the literal's whole, in
        // `shop`, then one that carries `shop` on, both app's.
        let plain = case.log.replace('\r', "");
        let literal = plain
            .split("SET timestamp=1715792559;\n")
            .nth(1)
            .and_then(|rest| rest.split("\n# Time: 2024-05-15T17:02:39.123456Z\n").next())
            .unwrap();
        let as_written = agent.len() == 2
            && dbs(&agent) == ["shop", "shop"]
            && agent.iter().all(|e| {
                e.user.as_deref() == Some("app")
                    && matches!(e.query_time, Field::Number(q) if q == 0.5)
            })
            && shipped[0]["sql"].as_str().map(|q| q.replace('\r', "")) == Some(literal.to_string());
        use PtReading::*;
        let pt_forges_none = pt.len() <= 2;
        let holds = match case.pt {
            // The ambiguity: pt-query-digest misses a banner the agent
            // knows, and reads as written what the agent reads as three.
            MissesBanner => pt.len() == 2 && agent.len() == 3,
            _ if pt_forges_none && !as_written => false,
            Same => pt.len() == 2 && dbs(&pt) == ["shop", "shop"],
            Forges => pt.len() == 3 && as_written,
            Merges => pt.len() == 1 && as_written,
            BothSplit => {
                pt.len() == 3
                    && dbs(&agent) == dbs(&pt)
                    && Digest::of(&agent).diff(&Digest::of(&pt)).is_empty()
            }
        };
        if !holds {
            wrong.push(case.name.clone());
        }
    }
    println!("{table}");
    assert!(
        wrong.is_empty(),
        "not read as `literal_cases` says: {wrong:#?}\n{table}"
    );
}
