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
    // A poisoned lock only means another thread panicked while logging; the
    // panic hook below stops the process anyway.
    let target = TARGET.lock().unwrap_or_else(|p| p.into_inner());
    write_to(target, level, msg);
}

fn write_to(
    mut target: std::sync::MutexGuard<'_, Option<(PathBuf, File)>>,
    level: &str,
    msg: &str,
) {
    let line = format!(
        "{} [{level}] {msg}\n",
        crate::event::iso8601(crate::event::now_nanos())
    );
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

/// From now on a panic on any thread is logged as an error (journal and
/// `--log` file) and stops the whole process with SIGABRT. Otherwise a
/// panicking source
/// thread or flusher task would end alone while the service stays
/// "active", silently shipping nothing; stopped, it is restarted by systemd
/// (`Restart=on-failure`) from its buffers and positions, which survive a
/// crash as they survive SIGKILL.
pub fn abort_on_panic() {
    std::panic::set_hook(Box::new(|info| {
        let thread = std::thread::current();
        let msg = format!(
            "thread '{}' panicked at {}: {}; the agent stops (SIGABRT) so that it is restarted{}",
            thread.name().unwrap_or("<unnamed>"),
            info.location()
                .map(|l| l.to_string())
                .unwrap_or_else(|| "an unknown place".into()),
            info.payload_as_str().unwrap_or("(no message)"),
            match std::backtrace::Backtrace::capture() {
                b if b.status() == std::backtrace::BacktraceStatus::Captured => format!("\n{b}"),
                _ => String::new(),
            }
        );
        // Not `lock`: the panic may have come from inside `write` itself,
        // on this thread. Another thread's line is done within moments.
        let mut written = false;
        for _ in 0..200 {
            let target = match TARGET.try_lock() {
                Ok(target) => target,
                Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
                Err(std::sync::TryLockError::WouldBlock) => {
                    std::thread::sleep(std::time::Duration::from_millis(1));
                    continue;
                }
            };
            write_to(target, "error", &msg);
            written = true;
            break;
        }
        if !written {
            let _ = std::io::stderr().write_all(format!("[error] {msg}\n").as_bytes());
        }
        std::process::abort();
    }));
}

#[cfg(test)]
mod tests {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Command;

    const CHILD: &str = "MY_AGENT_TEST_PANIC_CHILD";

    /// Runs in a child copy of the test binary: the hook ends the process.
    #[test]
    fn a_panic_on_any_thread_is_logged_and_stops_the_process() {
        if std::env::var_os(CHILD).is_some() {
            let log = std::env::var_os(CHILD).unwrap();
            super::to_file(log.into()).unwrap();
            super::abort_on_panic();
            let _ = std::thread::Builder::new()
                .name("tail0".into())
                .spawn(|| panic!("a worker's bug"))
                .unwrap()
                .join();
            // Not reached: the panicking thread took the process down.
            std::process::exit(0);
        }
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("agent.log");
        let out = Command::new(std::env::current_exe().unwrap())
            .args([
                "--exact",
                "log::tests::a_panic_on_any_thread_is_logged_and_stops_the_process",
            ])
            .env(CHILD, &log)
            .env_remove("RUST_BACKTRACE")
            .output()
            .unwrap();
        assert_eq!(out.status.signal(), Some(libc::SIGABRT), "{out:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        let logged = std::fs::read_to_string(&log).unwrap();
        for text in [&*stderr, &*logged] {
            assert!(
                text.contains("[error] thread 'tail0' panicked at agent/src/log.rs:")
                    && text.contains(": a worker's bug; the agent stops (SIGABRT)"),
                "{text}"
            );
        }
    }
}
