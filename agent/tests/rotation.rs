//! Rotation while lines are being written: rename-and-create (logrotate's
//! default) and copytruncate. Every line must arrive.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use common::*;

/// Writes numbered lines to `path` until stopped, a few at a time, reopening
/// the path for each write as MySQL does after FLUSH ERROR LOGS.
fn writer(
    path: std::path::PathBuf,
    stop: Arc<AtomicBool>,
    next: Arc<AtomicU64>,
    lock: Arc<Mutex<()>>,
) -> thread::JoinHandle<()> {
    thread::spawn(move || {
        while !stop.load(Ordering::Relaxed) {
            let _held = lock.lock().unwrap();
            let n = next.fetch_add(20, Ordering::SeqCst);
            append_lines(&path, (n..n + 20).map(numbered_line));
            drop(_held);
            thread::sleep(Duration::from_millis(2));
        }
    })
}

/// A logs/ folder with mysqld.err holding lines 0..100, a sink, and the
/// seed pipeline on logs/*.err.
struct Setup {
    dir: tempfile::TempDir,
    logs: std::path::PathBuf,
    log: std::path::PathBuf,
    sink: Sink,
    config: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().unwrap();
    let logs = dir.path().join("logs");
    std::fs::create_dir(&logs).unwrap();
    let sink = Sink::start();
    let log = logs.join("mysqld.err");
    append_lines(&log, (0..100).map(numbered_line));
    let config = pipeline_config_for(dir.path(), &format!("{}/*.err", logs.display()), &sink.url);
    Setup {
        dir,
        logs,
        log,
        sink,
        config,
    }
}

fn run(rotate: impl Fn(&std::path::Path, &std::path::Path)) {
    let Setup {
        dir,
        logs,
        log,
        sink,
        config,
    } = setup();
    let next = Arc::new(AtomicU64::new(100));
    let agent = Agent::start(dir.path(), &config);

    let stop = Arc::new(AtomicBool::new(false));
    let lock = Arc::new(Mutex::new(()));
    let w = writer(log.clone(), stop.clone(), next.clone(), lock.clone());
    for i in 0..3 {
        thread::sleep(Duration::from_millis(300));
        // Between two writes, as logrotate runs between two of MySQL's.
        let _held = lock.lock().unwrap();
        rotate(&log, &logs.join(format!("mysqld.err.{i}")));
    }
    thread::sleep(Duration::from_millis(300));
    stop.store(true, Ordering::Relaxed);
    w.join().unwrap();
    // The writer's counter may have run ahead of what it wrote by one batch.
    let written = {
        let mut total = 0;
        for entry in std::fs::read_dir(&logs).unwrap() {
            total += std::fs::read_to_string(entry.unwrap().path())
                .unwrap()
                .lines()
                .count();
        }
        total as u64
    };
    assert!(
        written > 1000,
        "the writer kept writing during rotation: {written}"
    );

    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let counts = sink.seq_counts();
        let missing: Vec<u64> = (0..written)
            .filter(|n| !counts.contains_key(n))
            .take(5)
            .collect();
        if missing.is_empty() {
            assert!(counts.values().all(|&c| c == 1), "no duplicates");
            let records = sink.record_count();
            assert_eq!(
                records,
                counts.len(),
                "every record is one of the lines, none empty: {:?}",
                sink.lines()
                    .iter()
                    .filter(|l| !l.contains("seq="))
                    .take(3)
                    .collect::<Vec<_>>()
            );
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "lines missing after rotation, e.g. {missing:?}; log:\n{}",
                agent.log_text()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success());
}

#[test]
fn rename_and_create_loses_nothing() {
    run(|log, rotated| {
        std::fs::rename(log, rotated).unwrap();
        // The writer reopens by path, so the next write creates a new file.
    });
}

#[test]
fn copytruncate_loses_nothing() {
    run(|log, rotated| {
        // logrotate's copytruncate: copy, then truncate in place. A line
        // written between the two steps would be in neither file (with
        // logrotate too), so the writer is held off for them; lines the agent
        // had not read yet before the truncation are in the copy only.
        std::fs::copy(log, rotated).unwrap();
        std::fs::OpenOptions::new()
            .write(true)
            .open(log)
            .unwrap()
            .set_len(0)
            .unwrap();
    });
}

/// The path is recreated only a while after a rename (MySQL reopens its
/// log on the next write) and that file is rotated away again well before
/// the next full refresh: the agent must still find it by its path.
#[test]
fn a_file_recreated_late_and_rotated_before_a_refresh_is_read() {
    let Setup {
        dir,
        logs,
        log,
        sink,
        config,
    } = setup();
    let config = config.replace("refresh_interval: 1s", "refresh_interval: 1h");
    let agent = Agent::start(dir.path(), &config);
    sink.wait_for(Duration::from_secs(20), "the first 100 lines", |r| {
        r.len() >= 100
    });

    std::fs::rename(&log, logs.join("mysqld.err.0")).unwrap();
    // Several poll rounds see no file at the path.
    thread::sleep(Duration::from_millis(300));
    append_lines(&log, (100..200).map(numbered_line));
    thread::sleep(Duration::from_millis(300));
    std::fs::rename(&log, logs.join("mysqld.err.1")).unwrap();
    append_lines(&log, (200..300).map(numbered_line));

    sink.wait_for(Duration::from_secs(20), "all 300 lines", |r| r.len() >= 300);
    let counts = sink.seq_counts();
    assert!((0..300).all(|n| counts.get(&n) == Some(&1)), "{counts:?}");
    assert!(agent.stop().success());
}
