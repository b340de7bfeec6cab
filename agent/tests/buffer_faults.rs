//! The file buffer under faults, with the real agent and collector: a disk
//! that fills up (a small tmpfs, so these tests need root) and a chunk
//! damaged on disk. Nothing read is lost or sent twice, no file piles up
//! per retry, the agent does not spin, and it says what is wrong.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use serde_json::Value;

use common::*;

/// A tmpfs mounted for one test, unmounted on drop whatever happens.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(at: &Path, size: &str) -> Tmpfs {
        std::fs::create_dir_all(at).unwrap();
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(at)
            .output()
            .expect("mount(8) runs");
        assert!(
            out.status.success(),
            "mounting a {size} tmpfs on {} (these tests need root): {}",
            at.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Tmpfs(at.to_path_buf())
    }

    /// Fills the file system up, then frees `free` bytes: returns the
    /// filler file.
    fn fill_leaving(&self, free: u64) -> PathBuf {
        let filler = self.0.join("filler");
        let mut f = std::fs::File::create(&filler).unwrap();
        let block = vec![0x5a; 4096];
        while f.write_all(&block).is_ok() {}
        let len = f.metadata().unwrap().len();
        f.set_len(len.saturating_sub(free)).unwrap();
        filler
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.0).status();
    }
}

fn chunk_files(dir: &Path) -> Vec<String> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        // The agent creates the directory when it opens its buffer, which
        // may be after a test first looks.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
        Err(e) => panic!("{}: {e}", dir.display()),
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("chunk-"))
        .collect();
    names.sort();
    names
}

/// `my_agent_<name>{plugin="output",...}` from /metrics.
fn output_metric(port: u16, name: &str) -> u64 {
    let text = get_metrics(port);
    let prefix = format!("my_agent_{name}{{plugin=\"output\"");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {prefix}: {text}"))
}

fn source_metric(port: u16, name: &str) -> u64 {
    let text = get_metrics(port);
    let prefix = format!("my_agent_{name}{{plugin=\"source\"");
    text.lines()
        .find(|l| l.starts_with(&prefix))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("/metrics has no {prefix}: {text}"))
}

/// The first output's entry in /status.
fn output_status(port: u16) -> Value {
    get_status(port)["outputs"][0].clone()
}

fn config(dir: &Path, buffer: &Path, url: &str, port: u16, chunk: &str) -> String {
    format!(
        r#"system:
  metrics:
    bind: 127.0.0.1:{port}
sources:
  - type: tail
    path: {dir}/*.err
    pos_file: {dir}/tail.pos
    tag: mysql.error
    read_from_head: true
    poll_interval: 50ms
outputs:
  - match: "mysql.**"
    type: http
    endpoint: {url}
    retry_wait: 100ms
    retry_max_interval: 300ms
    dead_letter_dir: {dir}/dead-letter
    buffer:
      type: file
      path: {buffer}
      chunk_limit_size: {chunk}
      flush_interval: 100ms
"#,
        dir = dir.display(),
        buffer = buffer.display()
    )
}

#[test]
fn full_disk_waits_without_piling_up_files_and_delivers_each_record_once() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let fs = Tmpfs::mount(&buffer, "1m");
    let room: u64 = 96 << 10;
    let chunk_limit: u64 = 16 << 10;
    let filler = fs.fill_leaving(room);
    let sink = Sink::start();
    sink.set_mode(Mode::Unavailable);
    let port = free_port();
    let log = dir.path().join("mysqld.err");
    let agent = Agent::start(
        dir.path(),
        &config(dir.path(), &buffer, &sink.url, port, "16KiB"),
    );
    // 200 lines fit in the room left; the collector is down, so they stay.
    append_lines(&log, (0..200).map(numbered_line));
    wait_until("200 lines buffered", || {
        try_get_metrics(port).is_ok() && output_metric(port, "records_in_total") == 200
    });
    // 1800 more do not: the disk is full now.
    append_lines(&log, (200..2000).map(numbered_line));
    wait_until("a failed chunk write", || {
        output_metric(port, "buffer_write_errors_total") > 0
    });
    // Watched for 4 s of retries: the files stay those that hold records,
    // none is added per attempt. An attempt writes the source's whole
    // batch, which may span several new chunks, each created and deleted
    // again when the disk fills; a retry creates the same ones (same ids),
    // so the names ever seen are bounded by what the room could hold, not
    // by the number of attempts.
    let before = chunk_files(&buffer);
    let errors_before = output_metric(port, "buffer_write_errors_total");
    let mut seen: std::collections::BTreeSet<String> = before.iter().cloned().collect();
    let watch = Instant::now();
    while watch.elapsed() < Duration::from_secs(4) {
        seen.extend(chunk_files(&buffer));
        thread::sleep(Duration::from_millis(5));
    }
    let after = chunk_files(&buffer);
    let attempts = output_metric(port, "buffer_write_errors_total") - errors_before;
    let transient = seen.len() - before.len();
    println!(
        "full disk for 4 s: {attempts} write attempts, chunk files {} -> {}, \
         {transient} other names seen",
        before.len(),
        after.len()
    );
    assert!(!before.is_empty(), "the first 200 lines are in chunks");
    assert_eq!(before, after, "no chunk file added or left per retry");
    assert!(
        transient as u64 <= room / chunk_limit + 1,
        "only the chunks one attempt could fill, tried again under the same \
         names: {transient} names beside {before:?}: {seen:?}"
    );
    assert!(
        (1..=10).contains(&attempts),
        "tried again with backoff, not in a loop: {attempts} attempts in 4 s"
    );
    let status = output_status(port);
    assert_eq!(status["ok"], false, "{status}");
    assert!(
        status["buffer_error"]
            .as_str()
            .is_some_and(|e| e.contains("No space left on device")),
        "/status says why: {status}"
    );
    let text = agent.log_text();
    assert_eq!(
        text.matches("cannot write a chunk").count(),
        1,
        "logged once, not per attempt:\n{text}"
    );

    // The collector comes back with the disk as full as before: each chunk
    // it takes is deleted, and the room that frees is enough for the rest,
    // a chunk at a time. (A delivered chunk's file used to stay open until
    // the next sync, which a source waiting for room never made: the room
    // stayed taken and the rest waited for the disk to get more.)
    sink.set_mode(Mode::Accept);
    sink.wait_for(Duration::from_secs(60), "2000 lines", |r| r.len() >= 2000);
    assert!(filler.exists(), "the disk is still as full");
    std::fs::remove_file(&filler).unwrap();
    wait_until("the buffer drained", || {
        output_metric(port, "buffer_bytes") == 0
    });
    let counts = sink.seq_counts();
    assert_eq!(counts.len(), 2000, "nothing lost");
    let twice = counts.values().filter(|&&c| c > 1).count();
    assert_eq!(twice, 0, "nothing sent twice");
    assert_eq!(sink.record_count(), 2000);
    assert_eq!(output_metric(port, "records_out_total"), 2000);
    assert_eq!(output_metric(port, "records_in_total"), 2000);
    assert_eq!(source_metric(port, "records_in_total"), 2000);
    assert!(
        output_metric(port, "records_retried_total") >= 200,
        "the 503s were retried and counted apart from records_out"
    );
    let text = agent.log_text();
    assert!(text.contains("works again after"), "{text}");
    assert!(status_ok(port), "{}", output_status(port));
    assert!(agent.stop().success());
}

fn status_ok(port: u16) -> bool {
    output_status(port)["ok"] == true
}

#[test]
fn damaged_chunk_is_quarantined_and_delivery_goes_on() {
    let dir = tempfile::tempdir().unwrap();
    let buffer = dir.path().join("buffer");
    let sink = Sink::start();
    sink.set_mode(Mode::Unavailable);
    let port = free_port();
    let log = dir.path().join("mysqld.err");
    let agent = Agent::start(
        dir.path(),
        &config(dir.path(), &buffer, &sink.url, port, "4KiB"),
    );
    append_lines(&log, (0..100).map(numbered_line));
    wait_until("chunks queued behind a failing collector", || {
        chunk_files(&buffer).len() >= 4 && !sink.state.requests.lock().unwrap().is_empty()
    });
    // The oldest chunk is in the flusher's hands; damage the next one.
    let victim = &chunk_files(&buffer)[1];
    let path = buffer.join(victim);
    let intact = std::fs::read(&path).unwrap();
    let mut damaged = intact.clone();
    damaged[intact.len() / 2] ^= 0x01;
    std::fs::write(&path, &damaged).unwrap();
    sink.set_mode(Mode::Accept);

    let aside = buffer.join("quarantine").join(victim);
    wait_until("the damaged chunk quarantined", || aside.exists());
    assert_eq!(std::fs::read(&aside).unwrap(), damaged, "moved as it was");
    let held = String::from_utf8_lossy(&intact).into_owned();
    // The chunk is moved first, then logged: wait for the line too.
    wait_until("the quarantine logged", || {
        agent.log_text().contains("chunk quarantined")
    });
    let text = agent.log_text();
    assert!(
        text.contains(&path.display().to_string()),
        "the log names the file and why:\n{text}"
    );
    assert!(text.contains("intact records of"), "{text}");
    // The flusher is still there: the other chunks and new lines arrive.
    append_lines(&log, (100..110).map(numbered_line));
    sink.wait_for(Duration::from_secs(30), "the lines after", |r| {
        r.iter().any(|x| {
            x["message"]
                .as_str()
                .is_some_and(|m| m.contains("seq=00000109"))
        })
    });
    let counts = sink.seq_counts();
    let missing: Vec<u64> = (0..110).filter(|n| !counts.contains_key(n)).collect();
    assert!(
        !missing.is_empty(),
        "the quarantined chunk's lines are held back"
    );
    for n in &missing {
        assert!(
            held.contains(&format!("seq={n:08}")),
            "line {n} missing but not in the quarantined chunk"
        );
    }
    assert!(counts.values().all(|&c| c == 1), "each line once");
    assert_eq!(output_metric(port, "chunks_quarantined_total"), 1);
    let status = output_status(port);
    assert!(
        status["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("quarantined")),
        "{status}"
    );
    assert!(agent.stop().success());
}
