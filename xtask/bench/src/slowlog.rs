//! `cargo xtask bench --run slowlog`: a generated MySQL 8 slow log through
//! the release agent's `mysql_slow_query` source, against pt-query-digest
//! on the same entries.

use std::fs;
use std::io::Write;
use std::path::Path;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use test_support::{Agent, Sink};

use crate::agent::{in_turn, run_until_delivered};
use crate::spread::Spread;

/// A slow-log entry of the MySQL 8 format, about 400 bytes.
pub fn slow_entry(n: u64) -> String {
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
/// shipping), with peak RSS; with `against` (a previous build), both builds
/// ship the log in turn and this one's figures are also given as ratios to
/// the other's.
pub fn run(agent: &Path, work: &Path, megabytes: u64, against: Option<&Path>) -> Result<()> {
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
    // A second of CPU varies by a tenth from run to run here (four single
    // runs of one build gave 178 - 196 MB per CPU-second), and this
    // machine's speed by half within minutes: the median of three, each
    // from an empty buffer and the head of the log; a previous build, when
    // given, runs in turn with this one (each first in every other round),
    // so that each round's ratio compares the two on the same machine.
    let ship = |binary: &Path| -> Result<Shipped> {
        // Both programs' pages come into the page cache the same way.
        crate::page_cache::read_program(binary)?;
        fs::remove_dir_all(work.join("buffer")).ok();
        fs::remove_file(work.join("slow.pos")).ok();
        sink.reset_counted();
        let run = run_until_delivered(binary, work, &config, &sink, entries)?;
        Ok(Shipped {
            cpu: run.cpu,
            secs: run.elapsed.as_secs_f64(),
            peak_kib: run.agent.peak_rss_kib(),
        })
    };
    let mut runs = Vec::new();
    let mut pairs = Vec::new();
    for round in 0..SHIP_RUNS {
        match against {
            None => runs.push(ship(agent)?),
            Some(previous) => {
                let (this, before) = in_turn(round, || ship(agent), || ship(previous))?;
                runs.push(this);
                pairs.push((this, before));
            }
        }
    }
    let rate = |cpu: f64| bytes as f64 / 1e6 / cpu;
    let mut by_cpu = runs.clone();
    by_cpu.sort_by(|a, b| a.cpu.total_cmp(&b.cpu));
    let Shipped {
        cpu,
        secs: elapsed,
        peak_kib: peak,
    } = by_cpu[by_cpu.len() / 2];
    println!(
        "slow-log bench: {entries} entries, {:.1} MB",
        bytes as f64 / 1e6
    );
    println!("  delivered in        {elapsed:.2} s");
    println!(
        "  MB/s per CPU-second {:.1} (parse + ship, {cpu:.2} CPU s; median of {SHIP_RUNS}, {:.1} to {:.1})",
        rate(cpu),
        rate(by_cpu[by_cpu.len() - 1].cpu),
        rate(by_cpu[0].cpu)
    );
    println!("  entries/s           {:.0}", entries as f64 / elapsed);
    println!("  peak RSS (VmHWM)    {:.1} MiB", peak as f64 / 1024.0);
    if let Some(previous) = against {
        let before = Spread::of(pairs.iter().map(|(_, b)| rate(b.cpu)));
        println!(
            "  against             {} MB per CPU-second ({})",
            before.show(),
            previous.display()
        );
        let ratio = |f: &dyn Fn(&Shipped) -> f64| {
            let r = Spread::of(pairs.iter().map(|(t, b)| f(t) / f(b)));
            format!("{:.3}x ({:.3} - {:.3})", r.median, r.low, r.high)
        };
        println!(
            "  this/against        CPU {}, time {}, peak RSS {} (by round: median, range)",
            ratio(&|r| r.cpu),
            ratio(&|r| r.secs),
            ratio(&|r| r.peak_kib as f64)
        );
    }

    // The source side alone: the same log to a `discard` output through a
    // memory buffer, so the CPU is reading, framing and parsing entries
    // into records, with no encoding (`discard` encodes nothing since this
    // version; before, this figure included encoding JSON), no delivery
    // and no fsync.
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

/// One run of the slow log through an agent to the sink.
#[derive(Clone, Copy)]
struct Shipped {
    cpu: f64,
    secs: f64,
    peak_kib: u64,
}

const PARSER_RUNS: usize = 5;
/// Runs of the slow log through the agent to the sink (parse + ship).
const SHIP_RUNS: usize = 3;

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
    // Installed by `bench` (recipes/test-tools.toml) before any bench runs.
    let tool = xtask::tools::find_on_path("pt-query-digest")
        .ok_or_else(|| anyhow::anyhow!("pt-query-digest not found on PATH"))?;
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
