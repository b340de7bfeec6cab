//! `cargo xtask bench --run agent`: ships a generated MySQL error log (1M lines, ~125 B
//! each) through the release agent (tail -> record_transformer(hostname) ->
//! http ndjson with a file buffer) to a loopback sink, timed from process
//! start until the sink holds every record.
//!
//! Baseline, in the same run: the same number of records, already
//! serialized as the agent would send them, posted to the same sink in 1 MiB
//! ndjson requests over one keep-alive connection: the cost of the HTTP
//! delivery alone. The agent's time is reported as a ratio to it.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
// The harness the agent's integration tests use too.
use test_support::{error_log_line as log_line, Agent, Sink};

/// Writes the bench's corpus, `lines` MySQL error-log lines, to `log`.
pub fn write_error_log(log: &Path, lines: u64) -> Result<()> {
    eprintln!("==> bench: writing {lines} lines to {}", log.display());
    let mut f = std::io::BufWriter::new(fs::File::create(log)?);
    for n in 0..lines {
        writeln!(f, "{}", log_line(n))?;
    }
    // On disk before anything is timed, so writeback does not compete.
    f.into_inner()?.sync_all()?;
    Ok(())
}

/// The bench's pipeline: tail `work/logs/*.err` -> record_transformer
/// (hostname) -> http to `url` through a file buffer in `work`, flushed
/// every 200 ms.
pub fn bench_config(work: &Path, url: &str) -> String {
    format!(
        r#"sources:
  - type: tail
    path: {work}/logs/*.err
    pos_file: {work}/tail.pos
    tag: mysql.error
    read_from_head: true
filters:
  - match: "mysql.**"
    type: record_transformer
    record:
      hostname: "${{hostname}}"
outputs:
  - match: "mysql.**"
    type: http
    endpoint: {url}
    buffer:
      type: file
      path: {work}/buffer
      flush_interval: 200ms
"#,
        work = work.display(),
    )
}

/// A benchmarked agent that has delivered everything, still running.
pub struct Delivered {
    pub agent: Agent,
    /// From process start to the last record at the sink.
    pub elapsed: Duration,
    pub cpu: f64,
}

/// Starts the agent at `binary` on `config` in `dir` and waits until the
/// sink has counted `expected` records.
pub fn run_until_delivered(
    binary: &Path,
    dir: &Path,
    config: &str,
    sink: &Sink,
    expected: u64,
) -> Result<Delivered> {
    let t0 = Instant::now();
    let agent = Agent::start_binary(binary, dir, config);
    let mut cpu = 0.0;
    while sink.counted() < expected {
        if t0.elapsed() > Duration::from_secs(900) {
            bail!(
                "the agent delivered {} of {expected} records in 15 minutes",
                sink.counted()
            );
        }
        // Sampled while running: /proc is gone once the process exits.
        cpu = agent.cpu_seconds();
        thread::sleep(Duration::from_millis(2));
    }
    let elapsed = t0.elapsed();
    Ok(Delivered {
        cpu: agent.cpu_seconds().max(cpu),
        elapsed,
        agent,
    })
}

/// What one run of the 1M-line bench measured.
#[derive(Debug, Clone, Copy)]
pub struct BenchResult {
    pub secs: f64,
    pub cpu: f64,
    pub peak_kib: u64,
    pub idle_kib: u64,
}

pub fn run(agent: &Path, work: &Path, lines: u64) -> Result<BenchResult> {
    if work.exists() {
        fs::remove_dir_all(work)?;
    }
    fs::create_dir_all(work.join("logs"))?;
    let log = work.join("logs/mysqld.err");
    write_error_log(&log, lines)?;
    crate::page_cache::read_program(agent)?;
    let input_bytes = fs::metadata(&log)?.len();
    let sink = Sink::start_counting();

    // Baseline: the agent's output shape, posted directly.
    let host = String::from_utf8(Command::new("hostname").output()?.stdout)?
        .trim()
        .to_string();
    let mut payload = Vec::with_capacity(input_bytes as usize * 2);
    for n in 0..lines {
        let record = serde_json::json!({"message": log_line(n), "hostname": host});
        payload.extend_from_slice(record.to_string().as_bytes());
        payload.push(b'\n');
    }
    let client = reqwest::blocking::Client::new();
    let t0 = Instant::now();
    let mut start = 0;
    while start < payload.len() {
        let mut end = (start + (1 << 20)).min(payload.len());
        while end < payload.len() && payload[end - 1] != b'\n' {
            end -= 1;
        }
        client
            .post(&sink.url)
            .header("Content-Type", "application/x-ndjson")
            .body(payload[start..end].to_vec())
            .send()?
            .error_for_status()?;
        start = end;
    }
    let baseline = t0.elapsed();
    if sink.counted() != lines {
        bail!("baseline delivered {} of {lines} records", sink.counted());
    }
    drop(payload);
    sink.reset_counted();

    let config = bench_config(work, &sink.url);
    eprintln!(
        "==> bench: running {} (tail -> record_transformer -> http, file buffer)",
        agent.display()
    );
    let run = run_until_delivered(agent, work, &config, &sink, lines)?;
    let (elapsed, cpu) = (run.elapsed, run.cpu);
    let peak_kib = run.agent.peak_rss_kib();
    thread::sleep(Duration::from_secs(3));
    let after_kib = run.agent.rss_kib();
    drop(run);

    // Idle: a fresh agent with nothing to read.
    fs::remove_dir_all(work.join("buffer")).ok();
    for state in ["tail.pos", "tail.pos.journal"] {
        fs::remove_file(work.join(state)).ok();
    }
    fs::write(&log, b"")?;
    let idle = Agent::start_binary(agent, work, &config);
    thread::sleep(Duration::from_secs(3));
    let idle_kib = idle.rss_kib();
    drop(idle);

    let secs = elapsed.as_secs_f64();
    println!(
        "my-agent bench: {lines} lines, {:.1} MB of MySQL error log",
        input_bytes as f64 / 1e6
    );
    println!("  delivered in        {secs:.2} s (process start to last record at the sink)");
    println!("  records/s           {:.0}", lines as f64 / secs);
    println!(
        "  input MB/s          {:.1}",
        input_bytes as f64 / 1e6 / secs
    );
    println!(
        "  sent MB             {:.1}",
        sink.counted_bytes() as f64 / 1e6
    );
    println!(
        "  CPU seconds         {cpu:.2} ({:.2} per million records)",
        cpu * 1e6 / lines as f64
    );
    println!("  peak RSS (VmHWM)    {:.1} MiB", peak_kib as f64 / 1024.0);
    println!("  RSS 3 s after       {:.1} MiB", after_kib as f64 / 1024.0);
    println!("  idle RSS            {:.1} MiB", idle_kib as f64 / 1024.0);
    println!(
        "  baseline (same records pre-serialized, posted directly): {:.2} s; agent/baseline = {:.2}x",
        baseline.as_secs_f64(),
        secs / baseline.as_secs_f64()
    );
    Ok(BenchResult {
        secs,
        cpu,
        peak_kib,
        idle_kib,
    })
}

/// Two builds of the agent on the same bench, e.g. the el7 build (zig,
/// glibc 2.17) against the host build, or this version against a previous
/// one; `other`'s figures are reported as ratios to `base`'s.
pub struct Pair<'a> {
    pub base: (&'a str, &'a Path),
    pub other: (&'a str, &'a Path),
}

/// Runs `a` and `b`, each first in every other round: the one run second
/// found the machine warmer (page cache, CPU frequency), which biased small
/// differences when one always went first.
pub fn in_turn<T>(
    round: usize,
    a: impl FnOnce() -> Result<T>,
    b: impl FnOnce() -> Result<T>,
) -> Result<(T, T)> {
    if round.is_multiple_of(2) {
        let a = a()?;
        Ok((a, b()?))
    } else {
        let b = b()?;
        Ok((a()?, b))
    }
}

/// Runs the agent bench on both builds of `pair`, alternating for `rounds`
/// so that both see the same machine (a shared machine's speed drifts by a
/// quarter within minutes), and prints the ratios round by round and their
/// medians.
pub fn run_pair(pair: &Pair, work: &Path, lines: u64, rounds: usize) -> Result<()> {
    let ((b, base), (o, other)) = (pair.base, pair.other);
    let mut pairs = Vec::new();
    for round in 0..rounds {
        let (h, e) = in_turn(
            round,
            || run(base, &work.join(b), lines),
            || run(other, &work.join(o), lines),
        )?;
        eprintln!("==> bench {o} vs {b}: round {} of {rounds} done", round + 1);
        pairs.push((h, e));
    }
    println!(
        "{o} ({}) vs {b} ({}), {lines} lines, {rounds} rounds:",
        other.display(),
        base.display()
    );
    let r = format!("{o}/{b}");
    println!(
        "  round  {b:>8} s  {o:>8} s  time {r:>13}  CPU {r:>13}  peak RSS {r:>13}  idle RSS {r:>13}"
    );
    for (i, (h, e)) in pairs.iter().enumerate() {
        println!(
            "  {:>5}  {:>10.2}  {:>10.2}  {:>18.3}  {:>17.3}  {:>22.3}  {:>22.3}",
            i + 1,
            h.secs,
            e.secs,
            e.secs / h.secs,
            e.cpu / h.cpu,
            e.peak_kib as f64 / h.peak_kib as f64,
            e.idle_kib as f64 / h.idle_kib as f64
        );
    }
    let median = |f: &dyn Fn(&(BenchResult, BenchResult)) -> f64| {
        let mut v: Vec<f64> = pairs.iter().map(f).collect();
        v.sort_by(|a, b| a.total_cmp(b));
        v[v.len() / 2]
    };
    println!(
        "  median {r}: time {:.3}x, CPU {:.3}x, peak RSS {:.3}x, idle RSS {:.3}x",
        median(&|(h, e)| e.secs / h.secs),
        median(&|(h, e)| e.cpu / h.cpu),
        median(&|(h, e)| e.peak_kib as f64 / h.peak_kib as f64),
        median(&|(h, e)| e.idle_kib as f64 / h.idle_kib as f64),
    );
    Ok(())
}

/// fluent-bit on the agent bench's corpus, configured as my-agent's bench
/// config is: tail with a DB (positions on disk) and filesystem storage
/// (buffered on disk), the host name added by record_modifier, ndjson over
/// HTTP (`json_lines`, no date key: the same records) every 0.2 s.
pub fn run_fluent_bit(binary: &Path, work: &Path, lines: u64) -> Result<BenchResult> {
    if work.exists() {
        fs::remove_dir_all(work)?;
    }
    fs::create_dir_all(work.join("logs"))?;
    let log = work.join("logs/mysqld.err");
    write_error_log(&log, lines)?;
    crate::page_cache::read_program(binary)?;
    let sink = Sink::start_counting();
    let host = String::from_utf8(Command::new("hostname").output()?.stdout)?
        .trim()
        .to_string();
    let (addr, uri) = sink
        .url
        .trim_start_matches("http://")
        .split_once('/')
        .expect("the sink's URL has a path");
    let (ip, port) = addr.split_once(':').expect("the sink's URL has a port");
    let config = format!(
        "[SERVICE]\n    flush 0.2\n    log_level warn\n    storage.path {work}/storage\n\
         [INPUT]\n    name tail\n    path {logs}/*.err\n    db {work}/tail.db\n    \
         read_from_head true\n    tag mysql.error\n    key message\n    storage.type filesystem\n\
         [FILTER]\n    name record_modifier\n    match *\n    record hostname {host}\n\
         [OUTPUT]\n    name http\n    match *\n    host {ip}\n    port {port}\n    uri /{uri}\n    \
         format json_lines\n    json_date_key false\n    retry_limit false\n",
        work = work.display(),
        logs = work.join("logs").display(),
    );
    let conf = work.join("fluent-bit.conf");
    fs::write(&conf, &config)?;
    let start = |conf: &Path| {
        Command::new(binary)
            .arg("-c")
            .arg(conf)
            .arg("-l")
            .arg(work.join("fluent-bit.log"))
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
    };
    eprintln!(
        "==> bench: running {} (the same pipeline)",
        binary.display()
    );
    let t0 = Instant::now();
    let mut child = start(&conf)?;
    let pid = child.id();
    let mut cpu = 0.0;
    while sink.counted() < lines {
        if t0.elapsed() > Duration::from_secs(900) {
            let _ = child.kill();
            bail!(
                "fluent-bit delivered {} of {lines} records in 15 minutes",
                sink.counted()
            );
        }
        cpu = test_support::cpu_seconds(pid);
        thread::sleep(Duration::from_millis(2));
    }
    let secs = t0.elapsed().as_secs_f64();
    let cpu = test_support::cpu_seconds(pid).max(cpu);
    let peak_kib = test_support::status_field(pid, "VmHWM");
    let _ = child.kill();
    let _ = child.wait();

    // Idle: a fresh fluent-bit with nothing to read.
    fs::remove_dir_all(work.join("storage")).ok();
    for state in ["tail.db", "tail.db-wal", "tail.db-shm"] {
        fs::remove_file(work.join(state)).ok();
    }
    fs::write(&log, b"")?;
    let mut idle = start(&conf)?;
    thread::sleep(Duration::from_secs(3));
    let idle_kib = test_support::status_field(idle.id(), "VmRSS");
    let _ = idle.kill();
    let _ = idle.wait();
    Ok(BenchResult {
        secs,
        cpu,
        peak_kib,
        idle_kib,
    })
}

/// my-agent and fluent-bit (`peer`) on the same bench, alternating for
/// `rounds`; prints each round, then each figure's median and range and
/// my-agent/fluent-bit's, with issue 21's goals.
pub fn run_peer(agent: &Path, peer: &Path, work: &Path, lines: u64, rounds: usize) -> Result<()> {
    let mut pairs = Vec::new();
    for round in 0..rounds {
        let (f, m) = in_turn(
            round,
            || run_fluent_bit(peer, &work.join("fluent-bit"), lines),
            || run(agent, &work.join("my-agent"), lines),
        )?;
        eprintln!(
            "==> bench my-agent vs fluent-bit: round {} of {rounds} done",
            round + 1
        );
        pairs.push((f, m));
    }
    let rate = |r: &BenchResult| lines as f64 / r.secs;
    let cpu_per_million = |r: &BenchResult| r.cpu * 1e6 / lines as f64;
    let peak = |r: &BenchResult| r.peak_kib as f64 / 1024.0;
    let idle = |r: &BenchResult| r.idle_kib as f64 / 1024.0;
    println!(
        "my-agent ({}) vs fluent-bit ({}), {lines} lines, {rounds} rounds:",
        agent.display(),
        peer.display()
    );
    println!("  round  records/s fluent-bit  my-agent  ratio   CPU-s/M fluent-bit  my-agent  ratio   peak MiB  fb  mine  ratio   idle MiB  fb  mine  ratio");
    for (i, (f, m)) in pairs.iter().enumerate() {
        println!(
            "  {:>5}  {:>20.0}  {:>8.0}  {:>5.2}  {:>18.2}  {:>8.2}  {:>5.2}  {:>12.1}  {:>4.1}  {:>5.2}  {:>12.1}  {:>4.1}  {:>5.2}",
            i + 1,
            rate(f),
            rate(m),
            rate(m) / rate(f),
            cpu_per_million(f),
            cpu_per_million(m),
            cpu_per_million(m) / cpu_per_million(f),
            peak(f),
            peak(m),
            peak(m) / peak(f),
            idle(f),
            idle(m),
            idle(m) / idle(f),
        );
    }
    type Figure<'a> = (&'static str, &'a dyn Fn(&BenchResult) -> f64, &'static str);
    let figures: [Figure; 4] = [
        ("records/s", &rate, "goal >= 2.5x"),
        ("CPU-s per million", &cpu_per_million, "goal <= 0.2x"),
        ("peak RSS MiB", &peak, "goal <= 0.25x"),
        ("idle RSS MiB", &idle, "goal <= 0.6x"),
    ];
    for (name, figure, goal) in figures {
        let f = crate::spread::Spread::of(pairs.iter().map(|(f, _)| figure(f)));
        let m = crate::spread::Spread::of(pairs.iter().map(|(_, m)| figure(m)));
        let ratio = crate::spread::Spread::of(pairs.iter().map(|(f, m)| figure(m) / figure(f)));
        println!(
            "  median {name:<17}  fluent-bit {}  my-agent {}  my-agent/fluent-bit {:.2}x ({:.2} - {:.2}) {goal}",
            f.show(),
            m.show(),
            ratio.median,
            ratio.low,
            ratio.high
        );
    }
    Ok(())
}
