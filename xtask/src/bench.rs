//! `cargo xtask bench`: ships a generated MySQL error log (1M lines, ~125 B
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

/// A benchmarked agent that has delivered everything, still running.
struct Delivered {
    agent: Agent,
    /// From process start to the last record at the sink.
    elapsed: Duration,
    cpu: f64,
}

/// Starts the agent at `binary` on `config` in `dir` and waits until the
/// sink has counted `expected` records.
fn run_until_delivered(
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

    let config = format!(
        r#"sources:
  - type: tail
    path: {logs}/*.err
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
        logs = work.join("logs").display(),
        work = work.display(),
        url = sink.url
    );
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
    fs::remove_file(work.join("tail.pos")).ok();
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

/// Runs the agent bench on both builds of `pair`, alternating for `rounds`
/// so that both see the same machine (a shared machine's speed drifts by a
/// quarter within minutes), and prints the ratios round by round and their
/// medians.
pub fn run_pair(pair: &Pair, work: &Path, lines: u64, rounds: usize) -> Result<()> {
    let ((b, base), (o, other)) = (pair.base, pair.other);
    let mut pairs = Vec::new();
    for round in 0..rounds {
        let h = run(base, &work.join(b), lines)?;
        let e = run(other, &work.join(o), lines)?;
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

/// A slow-log entry of the MySQL 8 format, about 400 bytes.
fn slow_entry(n: u64) -> String {
    format!(
        "# Time: 2026-11-21T05:{:02}:{:02}.{:06}Z\n# User@Host: app[app] @ web{} [10.0.{}.{}]  Id: {}\n\
         # Query_time: 0.{:06}  Lock_time: 0.000012 Rows_sent: {}  Rows_examined: {}\n\
         SET timestamp={};\nSELECT o.id, o.total, c.name\n  FROM orders o JOIN customers c ON c.id = o.customer_id\n \
         WHERE o.created_at > '2026-11-01' AND c.city = 'city{}'\n ORDER BY o.total DESC LIMIT 50;\n",
        n / 60_000 % 60,
        n / 1000 % 60,
        n % 1_000_000,
        n % 7,
        n / 256 % 256,
        n % 256,
        n % 5000,
        n % 1_000_000,
        n % 100,
        n % 100_000,
        1_795_000_000 + n / 1000,
        n % 1000
    )
}

/// Slow-log parsing: a generated slow log of `megabytes` through the release
/// agent's `mysql_slow_query` source to the loopback sink. Throughput is
/// reported per CPU-second of the agent (one core's worth of parsing plus
/// shipping), with peak RSS.
pub fn run_slowlog(agent: &Path, work: &Path, megabytes: u64) -> Result<()> {
    if work.exists() {
        fs::remove_dir_all(work)?;
    }
    fs::create_dir_all(work.join("logs"))?;
    let log = work.join("logs/db1-slow.log");
    let mut entries = 0u64;
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&log)?);
        writeln!(
            f,
            "/usr/sbin/mysqld, Version: 8.0.36 (MySQL Community Server - GPL). started with:"
        )?;
        writeln!(
            f,
            "Tcp port: 3306  Unix socket: /var/run/mysqld/mysqld.sock"
        )?;
        writeln!(f, "Time                 Id Command    Argument")?;
        writeln!(f, "use shop;")?;
        let mut written = 0u64;
        while written < megabytes << 20 {
            let e = slow_entry(entries);
            written += e.len() as u64;
            f.write_all(e.as_bytes())?;
            entries += 1;
        }
        // On disk before anything is timed: writeback of 200 MB of dirty
        // pages while the parser runs made its CPU figure vary twofold.
        f.into_inner()?.sync_all()?;
    }
    let bytes = fs::metadata(&log)?.len();
    let sink = Sink::start_counting();
    let config = format!(
            "sources:\n  - type: mysql_slow_query\n    path: {logs}/*-slow.log\n    pos_file: {work}/slow.pos\n    \
             tag: mysql.slow\n    read_from_head: true\n    entry_timeout: 200ms\noutputs:\n  - match: \"**\"\n    \
             type: http\n    endpoint: {url}\n    buffer:\n      type: file\n      path: {work}/buffer\n      \
             flush_interval: 200ms\n",
            logs = work.join("logs").display(),
            work = work.display(),
            url = sink.url
    );
    eprintln!(
        "==> bench: {entries} slow-log entries, {:.0} MB",
        bytes as f64 / 1e6
    );
    let run = run_until_delivered(agent, work, &config, &sink, entries)?;
    let (elapsed, cpu) = (run.elapsed.as_secs_f64(), run.cpu);
    let peak = run.agent.peak_rss_kib();
    drop(run);
    println!(
        "slow-log bench: {entries} entries, {:.1} MB",
        bytes as f64 / 1e6
    );
    println!("  delivered in        {elapsed:.2} s");
    println!(
        "  MB/s per CPU-second {:.1} (parse + ship, {cpu:.2} CPU s)",
        bytes as f64 / 1e6 / cpu
    );
    println!("  entries/s           {:.0}", entries as f64 / elapsed);
    println!("  peak RSS (VmHWM)    {:.1} MiB", peak as f64 / 1024.0);

    // The source side alone: the same log to a `discard` output through a
    // memory buffer, so the CPU is reading, framing, parsing and turning
    // entries into JSON records, with no delivery and no fsync.
    let (elapsed, cpu) =
        run_slowlog_source(agent, &work.join("logs"), &work.join("discard"), entries)?;
    println!(
        "  source side         {:.1} MB per CPU-second ({cpu:.2} CPU s, {elapsed:.2} s; slow-log source -> discard output)",
        bytes as f64 / 1e6 / cpu
    );
    // The parser alone: `my-agent slowlog` reads the file and sums the
    // entries, and reports its own CPU time. A second of CPU on a shared
    // machine varies by a quarter from run to run: the median of five.
    let mut rates = Vec::new();
    for _ in 0..PARSER_RUNS {
        let (parsed, cpu) = parser_alone(agent, &log)?;
        if parsed != entries {
            bail!("my-agent slowlog counted {parsed} of {entries} entries");
        }
        rates.push(bytes as f64 / 1e6 / cpu);
    }
    rates.sort_by(f64::total_cmp);
    let median = rates[rates.len() / 2];
    println!(
        "  parsing alone       {median:.1} MB per CPU-second (median of {PARSER_RUNS}, {:.1} to {:.1}; my-agent slowlog)",
        rates[0],
        rates[rates.len() - 1]
    );
    reference_parser(work, median)?;
    Ok(())
}

const PARSER_RUNS: usize = 5;

/// `my-agent slowlog --json FILE`: (entries, the CPU seconds it reports).
fn parser_alone(agent: &Path, log: &Path) -> Result<(u64, f64)> {
    let out = Command::new(agent)
        .args(["slowlog", "--json"])
        .arg(log)
        .output()?;
    let summary: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| anyhow::anyhow!("my-agent slowlog --json: {e}: {out:?}"))?;
    let parsed = summary["files"][0]["entries"].as_u64().unwrap_or(0);
    Ok((parsed, summary["cpu_seconds"].as_f64().unwrap_or(f64::NAN)))
}

/// The baseline of the parser figure, in the same run: pt-query-digest
/// (percona-toolkit), the reference slow-log parser, over a 10 MB log of
/// the same entries (it reads about 1 MB per second), `--no-report` so it
/// parses and aggregates without printing.
fn reference_parser(work: &Path, agent_rate: f64) -> Result<()> {
    let Ok(tool) = which("pt-query-digest") else {
        println!(
            "  pt-query-digest     not installed (apt-get install percona-toolkit): no baseline"
        );
        return Ok(());
    };
    let slice = work.join("reference-slow.log");
    let mut f = std::io::BufWriter::new(fs::File::create(&slice)?);
    let (mut n, mut written) = (0, 0);
    while written < 10 << 20 {
        let e = slow_entry(n);
        f.write_all(e.as_bytes())?;
        written += e.len();
        n += 1;
    }
    f.into_inner()?.sync_all()?;
    let bytes = fs::metadata(&slice)?.len();
    let before = children_cpu();
    let status = Command::new(tool)
        .args(["--no-report"])
        .arg(&slice)
        .stdout(std::process::Stdio::null())
        .status()?;
    if !status.success() {
        bail!("pt-query-digest --no-report {}: {status}", slice.display());
    }
    let cpu = children_cpu() - before;
    let rate = bytes as f64 / 1e6 / cpu;
    println!(
        "  pt-query-digest     {rate:.1} MB per CPU-second ({n} entries); my-agent slowlog / pt-query-digest = {:.0}x",
        agent_rate / rate
    );
    Ok(())
}

fn which(name: &str) -> Result<std::path::PathBuf> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow::anyhow!("{name} not found on PATH"))
}

/// User + system CPU seconds of the children waited for so far.
fn children_cpu() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let u = unsafe {
        let mut u: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_CHILDREN, &mut u);
        u
    };
    let secs = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    secs(u.ru_utime) + secs(u.ru_stime)
}

/// Runs the slow-log source over `logs` into a `discard` output until
/// `/metrics` counts `entries` records out; returns (seconds, CPU seconds).
fn run_slowlog_source(agent: &Path, logs: &Path, dir: &Path, entries: u64) -> Result<(f64, f64)> {
    fs::create_dir_all(dir)?;
    let port = test_support::free_port();
    let config = format!(
        "system:\n  metrics:\n    bind: 127.0.0.1:{port}\nsources:\n  - type: mysql_slow_query\n    \
         path: {logs}/*-slow.log\n    pos_file: {dir}/slow.pos\n    tag: mysql.slow\n    read_from_head: true\n    \
         entry_timeout: 200ms\noutputs:\n  - match: \"**\"\n    type: discard\n    id: discard\n    buffer:\n      \
         flush_interval: 50ms\n",
        logs = logs.display(),
        dir = dir.display(),
    );
    let series = "my_agent_records_out_total{plugin=\"output\",id=\"discard\"} ";
    let out = |page: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
            .unwrap_or(0)
    };
    let t0 = Instant::now();
    let run = Agent::start_binary(agent, dir, &config);
    let mut cpu = 0.0;
    loop {
        let page = test_support::try_get_metrics(port).unwrap_or_default();
        if out(&page) >= entries {
            break;
        }
        if t0.elapsed() > Duration::from_secs(600) {
            bail!(
                "the discard run counted {} of {entries} records in 10 minutes",
                out(&page)
            );
        }
        cpu = run.cpu_seconds();
        thread::sleep(Duration::from_millis(50));
    }
    Ok((t0.elapsed().as_secs_f64(), run.cpu_seconds().max(cpu)))
}
