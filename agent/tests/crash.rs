//! SIGKILL the agent 20 times at random moments while it tails and ships:
//! after every restart, every line arrives at least once. Duplicates are
//! allowed (at-least-once) and reported.

mod common;

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;

#[test]
fn twenty_sigkills_lose_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let sink = Sink::start();
    let log = dir.path().join("mysqld.err");
    append_lines(&log, (0..5000).map(numbered_line));
    let config = pipeline_config(dir.path(), &sink.url);

    let stop = Arc::new(AtomicBool::new(false));
    let next = Arc::new(AtomicU64::new(5000));
    let writer = {
        let (stop, next, log) = (stop.clone(), next.clone(), log.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let n = next.fetch_add(200, Ordering::SeqCst);
                append_lines(&log, (n..n + 200).map(numbered_line));
                thread::sleep(Duration::from_millis(3));
            }
        })
    };

    let mut rng = fastrand::Rng::with_seed(0x5eed);
    for _ in 0..20 {
        let agent = Agent::start(dir.path(), &config);
        thread::sleep(Duration::from_millis(rng.u64(50..400)));
        agent.kill9();
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let written = next.load(Ordering::SeqCst);

    let agent = Agent::start(dir.path(), &config);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let counts = sink.seq_counts();
        let missing = (0..written).filter(|n| !counts.contains_key(n)).count();
        if missing == 0 {
            let dups: usize = counts.values().map(|c| c - 1).sum();
            println!(
                "{written} lines, 20 SIGKILLs: 0 lost, {dups} duplicates ({:.2}%)",
                dups as f64 * 100.0 / written as f64
            );
            break;
        }
        if std::time::Instant::now() > deadline {
            panic!(
                "{missing} of {written} lines lost after 20 SIGKILLs; log:\n{}",
                agent.log_text()
            );
        }
        thread::sleep(Duration::from_millis(100));
    }
    assert!(agent.stop().success());
}
