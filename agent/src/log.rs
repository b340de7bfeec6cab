//! The agent's own log: lines to stderr or to `--log FILE`, reopened on
//! SIGUSR1 so logrotate can move the file away.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::PathBuf;
use std::sync::Mutex;

static TARGET: Mutex<Option<(PathBuf, File)>> = Mutex::new(None);

/// Sends the log to `path` from now on.
pub fn to_file(path: PathBuf) -> std::io::Result<()> {
    let file = OpenOptions::new().create(true).append(true).open(&path)?;
    *TARGET.lock().unwrap() = Some((path, file));
    Ok(())
}

/// Reopens the log file (after logrotate renamed it).
pub fn reopen() {
    let mut target = TARGET.lock().unwrap();
    if let Some((path, file)) = target.as_mut() {
        if let Ok(f) = OpenOptions::new().create(true).append(true).open(&*path) {
            *file = f;
        }
    }
}

fn write(level: &str, msg: &str) {
    let line = format!(
        "{} [{level}] {msg}\n",
        crate::event::iso8601(crate::event::now_nanos())
    );
    let mut target = TARGET.lock().unwrap();
    let to_file = target.as_mut().map(|(_, f)| f.write_all(line.as_bytes()));
    // Warnings and errors also go to stderr with a log file: under systemd
    // that is the journal, where an operator looks first
    // (`journalctl -u my-agent`). journald reads the `<N>` syslog priority
    // prefix and keeps its own timestamps.
    if to_file.is_none() || level != "info" {
        let text = if std::env::var_os("JOURNAL_STREAM").is_some() {
            let priority = match level {
                "error" => 3,
                "warn" => 4,
                _ => 6,
            };
            format!("<{priority}>{msg}\n")
        } else {
            line
        };
        let _ = std::io::stderr().write_all(text.as_bytes());
    }
}

pub fn info(msg: &str) {
    write("info", msg);
}

pub fn warn(msg: &str) {
    write("warn", msg);
}

pub fn error(msg: &str) {
    write("error", msg);
}
