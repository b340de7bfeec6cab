//! `my-agent replay DIR`: sends dead letters again once their cause is
//! fixed (a collector that rejected a mapping, an expired credential, an
//! outage that outlasted `retry_timeout`).
//!
//! Each `*.ndjson` file in DIR goes through the output that wrote it (named
//! in its `.meta.json`, or `--output`) with that output's own client,
//! encoding, request limits and 413 splitting: the same flusher as the
//! running agent, over a memory buffer. A file whose records were all
//! accepted is removed with its `.meta.json`; records the collector still
//! refuses for good are dead-lettered again (a new file, with the new
//! reason) and the old file removed, so nothing is lost and nothing is
//! kept twice. When the collector cannot be reached before `--timeout`, the
//! file keeps exactly the records not yet delivered.
//!
//! The operator may run this as root over files the service user wrote:
//! symlinks and anything but regular files are refused, never followed.

use std::fs::{self, OpenOptions};
use std::io::Read;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use tokio::sync::watch;

use crate::buffer::{chunk, BufferConfig};
use crate::config::Config;
use crate::metrics::Registry;
use crate::outputs::{flusher, SinkConfig};

/// How one file went.
#[derive(Debug, PartialEq)]
pub enum Outcome {
    /// Every record accepted (or dead-lettered again for good); removed.
    Delivered { records: usize, refused: u64 },
    /// The collector could not be reached in time; the file now holds
    /// the `left` records not delivered.
    Kept { delivered: usize, left: usize },
}

pub fn run(config_path: &Path, dir: &Path, output: Option<&str>, timeout: Duration) -> i32 {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(replay_dir(config_path, dir, output, timeout)) {
        Ok(results) => {
            let mut code = 0;
            for (path, outcome) in &results {
                match outcome {
                    Ok(Outcome::Delivered { records, refused: 0 }) => {
                        println!("{}: {records} records delivered, removed", path.display())
                    }
                    Ok(Outcome::Delivered { records, refused }) => println!(
                        "{}: {records} records: {} delivered, {refused} refused again (dead-lettered anew), removed",
                        path.display(),
                        *records as u64 - refused
                    ),
                    Ok(Outcome::Kept { delivered, left }) => {
                        code = 1;
                        println!(
                            "{}: {delivered} delivered, {left} kept (collector not reachable before the timeout)",
                            path.display()
                        )
                    }
                    Err(e) => {
                        code = 1;
                        eprintln!("error: {}: {e:#}", path.display());
                    }
                }
            }
            if results.is_empty() {
                println!("{}: no dead letters", dir.display());
            }
            // Records refused again are dead-lettered anew, usually into
            // this same directory: success is an empty directory, not
            // every file having been sent.
            match dead_letters(dir) {
                Ok(left) if !left.is_empty() => {
                    println!(
                        "{}: {} dead-letter files remain (refused again or not sent)",
                        dir.display(),
                        left.len()
                    );
                    1
                }
                Ok(_) => code,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    1
                }
            }
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            2
        }
    }
}

type Results = Vec<(PathBuf, anyhow::Result<Outcome>)>;

async fn replay_dir(
    config_path: &Path,
    dir: &Path,
    output: Option<&str>,
    timeout: Duration,
) -> anyhow::Result<Results> {
    // Usage errors fail early (exit 2): a config that does not load, an
    // --output it does not have.
    sink_config(config_path, output)?;
    let files = dead_letters(dir)?;
    let mut results = Vec::new();
    for path in files {
        let outcome = async {
            let id = match output {
                Some(id) => id.to_string(),
                None => output_of(&path)?,
            };
            let sink = sink_config(config_path, Some(&id))?.expect("asked for one");
            replay_file(&path, sink, timeout).await
        }
        .await;
        results.push((path, outcome));
    }
    Ok(results)
}

/// The dead-letter files in `dir`, oldest first (the file names start with
/// the output and a timestamp).
fn dead_letters(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    Ok(files)
}

/// The leaf output `id` of the configuration (loaded afresh: a sink's
/// settings are consumed when it is built).
fn sink_config(config_path: &Path, id: Option<&str>) -> anyhow::Result<Option<SinkConfig>> {
    let (config, _) = Config::load_with_text(config_path)?;
    let Some(id) = id else { return Ok(None) };
    let mut ids = Vec::new();
    for sink in config.outputs.into_iter().flat_map(|o| o.sinks) {
        if sink.id == id {
            return Ok(Some(sink));
        }
        ids.push(sink.id);
    }
    bail!(
        "output `{id}` is not in {} (its outputs: {}); name one with --output",
        config_path.display(),
        ids.join(", ")
    )
}

/// The output named by the file's `.meta.json`.
fn output_of(path: &Path) -> anyhow::Result<String> {
    let meta = path.with_extension("meta.json");
    let (text, _) = read_regular(&meta).with_context(|| {
        format!(
            "no usable {} (name the output with --output)",
            meta.display()
        )
    })?;
    let value: serde_json::Value =
        serde_json::from_slice(&text).with_context(|| format!("{} is not JSON", meta.display()))?;
    value["output"]
        .as_str()
        .map(String::from)
        .with_context(|| format!("{} names no output", meta.display()))
}

/// Reads a regular file without following a symlink at its name; returns
/// its bytes and its owner (uid, gid).
fn read_regular(path: &Path) -> anyhow::Result<(Vec<u8>, (u32, u32))> {
    let mut f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .with_context(|| format!("cannot open {} (symlinks are not followed)", path.display()))?;
    let meta = f.metadata()?;
    if !meta.is_file() {
        bail!("{} is not a regular file", path.display());
    }
    let mut data = Vec::new();
    f.read_to_end(&mut data)?;
    use std::os::unix::fs::MetadataExt;
    Ok((data, (meta.uid(), meta.gid())))
}

async fn replay_file(
    path: &Path,
    config: SinkConfig,
    timeout: Duration,
) -> anyhow::Result<Outcome> {
    let (data, owner) = read_regular(path)?;
    let lines: Vec<&[u8]> = data
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .collect();
    // The configured output, but on a memory buffer with one flusher (so
    // records go in file order) that retries until the deadline.
    let mut sink = SinkConfig {
        buffer: BufferConfig {
            flush_interval: Duration::ZERO,
            flush_thread_count: 1,
            ..BufferConfig::memory_default()
        },
        ..config
    };
    sink.retry.forever = true;
    // Counters of this file alone: they say what was delivered.
    let (sink, _) = sink.prepare()?.open(&Registry::default())?;
    let sink = Arc::new(sink);
    // Checked whole before anything is sent: a bad line leaves the file
    // as it is.
    let mut payloads = Vec::with_capacity(lines.len());
    for (i, line) in lines.iter().enumerate() {
        payloads.push(
            sink.encoding
                .parse_dead_letter_line(line)
                .map_err(|e| anyhow::anyhow!("{}:{}: {e}", path.display(), i + 1))?,
        );
    }
    let mut frames = Vec::with_capacity(data.len() + lines.len() * 16);
    for payload in &payloads {
        chunk::encode_in_place(&mut frames, |out| out.extend_from_slice(payload));
    }
    sink.buffer
        .append_frames(&frames)
        .with_context(|| format!("buffering {}", path.display()))?;
    sink.buffer.request_flush();
    let (stop, stop_rx) = watch::channel(None);
    let task = tokio::spawn(flusher::run(sink.clone(), stop_rx));
    let n = lines.len() as u64;
    let done = |s: &crate::outputs::Sink| {
        s.metrics.records_out.load(Ordering::Relaxed)
            + s.metrics.dead_lettered.load(Ordering::Relaxed)
            >= n
    };
    let deadline = Instant::now() + timeout;
    while !done(&sink) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let _ = stop.send(Some(Instant::now()));
    sink.buffer.close();
    let _ = task.await;
    let delivered = sink.metrics.records_out.load(Ordering::Relaxed);
    let refused = sink.metrics.dead_lettered.load(Ordering::Relaxed);
    // Refused records that could not be written to a new dead-letter
    // file (disk full, permissions) exist only here: keep the file whole.
    if sink.metrics.errors.load(Ordering::Relaxed) > 0 {
        bail!(
            "{}: {refused} records refused again but not saved anew (see the errors above); the file is kept whole",
            path.display()
        );
    }
    if delivered + refused >= n {
        fs::remove_file(path).with_context(|| format!("removing {}", path.display()))?;
        let _ = fs::remove_file(path.with_extension("meta.json"));
        return Ok(Outcome::Delivered {
            records: lines.len(),
            refused,
        });
    }
    // One flusher delivers in order: the first `delivered` records are
    // done, the rest stay (written aside, then renamed over the file, with
    // the owner it had: root may be running this for the service user).
    let handled = (delivered + refused) as usize;
    if handled > 0 {
        let mut rest = Vec::new();
        for line in &lines[handled..] {
            rest.extend_from_slice(line);
            rest.push(b'\n');
        }
        crate::writable::write_atomic(path, &rest)
            .and_then(|()| std::os::unix::fs::chown(path, Some(owner.0), Some(owner.1)))
            .with_context(|| format!("rewriting {}", path.display()))?;
    }
    Ok(Outcome::Kept {
        delivered: handled,
        left: lines.len() - handled,
    })
}
