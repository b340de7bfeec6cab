//! Log lines the tests and the bench write, and reading them back.

use std::io::Write;
use std::path::Path;

/// `seq=<n> ...` lines let tests count loss and duplication.
pub fn numbered_line(n: u64) -> String {
    format!("2026-11-21T05:00:00.000000Z 0 [Note] seq={n:08} InnoDB: a MySQL error log line of ordinary length")
}

pub fn seq_of(message: &str) -> Option<u64> {
    let i = message.find("seq=")?;
    message.get(i + 4..i + 12)?.parse().ok()
}

pub fn append_lines(path: &Path, lines: impl IntoIterator<Item = String>) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap();
    let mut buf = Vec::new();
    for l in lines {
        buf.extend_from_slice(l.as_bytes());
        buf.push(b'\n');
    }
    f.write_all(&buf).unwrap();
}

/// A MySQL 8 error log line of about 125 bytes (the bench's corpus).
pub fn error_log_line(n: u64) -> String {
    format!(
        "2026-11-21T05:{:02}:{:02}.{:06}Z {} [Note] [MY-010914] [Server] Aborted connection {} to db: 'app' user: 'app' host: '10.0.{}.{}'",
        n / 60_000 % 60,
        n / 1000 % 60,
        n % 1_000_000,
        n % 97 + 8,
        n + 1000,
        n / 256 % 256,
        n % 256
    )
}

/// What a MySQL 8 server writes at the head of its slow log.
pub const SLOW_LOG_BANNER: &str =
    "/usr/sbin/mysqld, Version: 8.0.36 (MySQL Community Server - GPL). started with:\n\
    Tcp port: 3306  Unix socket: /var/run/mysqld/mysqld.sock\n\
    Time                 Id Command    Argument\n";

/// Slow-log entry `n` (thread id, rows sent and the query's literal are
/// `n`), with `use db;` before its statement when `use_db` is given.
pub fn slow_log_entry(n: u64, use_db: Option<&str>) -> String {
    let mut s = format!(
        "# Time: 2024-05-15T17:02:{:02}.000000Z\n# User@Host: app[app] @ web1 [10.0.0.5]  Id:    {n}\n\
         # Query_time: 0.{n:06}  Lock_time: 0.000010 Rows_sent: {n}  Rows_examined: {}\n",
        n % 60,
        n * 10
    );
    if let Some(db) = use_db {
        s.push_str(&format!("use {db};\n"));
    }
    s.push_str(&format!(
        "SET timestamp={};\nSELECT {n}\n  FROM t\n WHERE id = {n};\n",
        1_715_792_559 + n
    ));
    s
}
