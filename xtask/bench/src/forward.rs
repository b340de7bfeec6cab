//! `cargo xtask bench --run forward`: the forward tier against fluent-bit
//! 5.1.1 (`../shared/tools/fluent-bit/fluent-bit`), the baseline, in the
//! same run, on the agent bench's MySQL error log.
//!
//! - Sender side: tail the log -> forward with acks -> a fluent-bit
//!   in_forward (-> `counter`); my-agent (file buffer) against fluent-bit
//!   (tail DB, `Require_ack_response On`) as the sender, the receiver the
//!   same. The sender is measured, twice: against fluent-bit keeping its
//!   chunks in filesystem storage, like for like with my-agent's file
//!   buffer (as the agent bench configures it), and against its default,
//!   chunks in memory only (lost when it stops).
//! - Receiver side: fluent-bit tails the log and sends it with acks to
//!   my-agent's forward input (-> `discard`) against fluent-bit's in_forward
//!   (-> `counter`). The receiver is measured. Both receivers keep pace with
//!   a tailing fluent-bit (~400k records/s), so its records/s are the
//!   sender's.
//! - Receiver side, draining a backlog: the same, but fluent-bit sends from
//!   a backlog in its filesystem storage (filled once, before the rounds, by
//!   tailing the log with no receiver up), as a fleet does after an
//!   aggregator comes back. It sends as fast as the receiver acks, so
//!   records/s are the receiver's: timed from the first records the
//!   receiver counted to the last (fluent-bit's start-up and its loading of
//!   the backlog, ~1 s, are the sender's, not the receiver's).
//!
//! A run is otherwise timed from the sender's start until the receiver has
//! counted every line (my-agent's `/metrics`; fluent-bit's `counter` output,
//! flushed every 100 ms: its monitoring server refreshes its counts once a
//! second, which made every run last a whole number of seconds); CPU and
//! peak RSS are the measured process's over the whole run, from /proc.
//! The two contenders alternate for a few rounds, so both see the same
//! machine, and the report gives medians and ranges of my-agent/fluent-bit.
//! Each run starts after a `sync` (the previous run's files written back
//! then, not during the next) with the log in the page cache (see
//! `page_cache`).

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use test_support::{Agent, Peer};

use crate::agent::write_error_log;
use crate::page_cache;
use crate::spread::Spread;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Contender<'a> {
    /// The agent at `bin`: this build, or the one `--against` names
    /// (`previous`).
    MyAgent {
        bin: &'a Path,
        previous: bool,
    },
    FluentBit,
}

impl Contender<'_> {
    fn name(self) -> &'static str {
        match self {
            Contender::MyAgent {
                previous: false, ..
            } => "my-agent",
            Contender::MyAgent { previous: true, .. } => "previous",
            Contender::FluentBit => "fluent-bit",
        }
    }
}

/// Which end of the forward connection a run measures.
#[derive(Debug, Clone, Copy)]
enum Side {
    Sender,
    Receiver,
}

/// What one run measured of the measured process.
#[derive(Debug, Clone, Copy)]
struct Measured {
    /// Records counted over `secs` (all of them, but when draining a
    /// backlog: those after the first count).
    records: u64,
    secs: f64,
    cpu: f64,
    peak_kib: u64,
}

/// A sender or receiver process, killed on drop.
enum Running {
    MyAgent(Agent),
    FluentBit(Peer),
}

impl Running {
    fn pid(&self) -> u32 {
        match self {
            Running::MyAgent(a) => a.child.id(),
            Running::FluentBit(p) => p.pid(),
        }
    }
}

/// A started receiver, which says how many records arrived.
struct Receiver {
    process: Running,
    /// my-agent's `/metrics` (fluent-bit's `counter` output writes to a file).
    metrics_port: u16,
}

impl Receiver {
    fn start(who: Contender, dir: &Path, port: u16) -> Result<Receiver> {
        let metrics_port = test_support::free_port();
        let process = match who {
            Contender::MyAgent { bin, .. } => Running::MyAgent(Agent::start_binary(
                bin,
                dir,
                &test_support::agent_forward_receiver(port, metrics_port),
            )),
            Contender::FluentBit => Running::FluentBit(Peer::fluent_bit_counting(
                dir,
                &test_support::fluent_bit_forward_receiver(port),
            )),
        };
        let receiver = Receiver {
            process,
            metrics_port,
        };
        let t0 = Instant::now();
        while receiver.arrived().is_none() || TcpStream::connect(("127.0.0.1", port)).is_err() {
            if t0.elapsed() > Duration::from_secs(30) {
                bail!(
                    "the {} receiver in {} did not listen on {port} in 30 s",
                    who.name(),
                    dir.display()
                );
            }
            thread::sleep(Duration::from_millis(20));
        }
        Ok(receiver)
    }

    /// Records its forward input has taken (my-agent: stored in its buffer;
    /// fluent-bit: flushed to `counter`); None while it does not answer.
    fn arrived(&self) -> Option<u64> {
        match &self.process {
            Running::MyAgent(_) => test_support::try_get_metrics(self.metrics_port)
                .ok()
                .map(|page| test_support::agent_forward_records_in(&page)),
            Running::FluentBit(peer) => Some(peer.counted()),
        }
    }
}

/// What the sender sends from.
#[derive(Clone, Copy)]
enum Feed<'a> {
    /// The log, tailed from its head; a fluent-bit sender keeps its chunks
    /// in filesystem storage if `stored`, in memory otherwise.
    Tail { stored: bool },
    /// fluent-bit's backlog made by `fill_backlog` in this directory.
    Backlog(&'a Path),
}

fn start_sender(who: Contender, dir: &Path, log: &Path, port: u16, feed: Feed) -> Result<Running> {
    Ok(match (who, feed) {
        (Contender::MyAgent { bin, .. }, Feed::Tail { .. }) => {
            Running::MyAgent(Agent::start_binary(
                bin,
                dir,
                &test_support::agent_forward_sender(dir, log, port),
            ))
        }
        (Contender::FluentBit, Feed::Tail { stored }) => Running::FluentBit(Peer::fluent_bit(
            dir,
            &test_support::fluent_bit_forward_sender(dir, log, port, stored),
        )),
        (Contender::FluentBit, Feed::Backlog(seed)) => {
            copy_dir(seed, dir)?;
            Running::FluentBit(Peer::fluent_bit(
                dir,
                &test_support::fluent_bit_backlog_sender(dir, log, port, false),
            ))
        }
        (Contender::MyAgent { .. }, Feed::Backlog(_)) => bail!("the backlog is fluent-bit's"),
    })
}

/// fluent-bit tails `log` into its filesystem storage with no receiver up
/// and exits at the end of the log: its storage and tail DB, in
/// `work/backlog`, are a backlog of every line for `Feed::Backlog`.
fn fill_backlog(work: &Path, log: &Path) -> Result<PathBuf> {
    let dir = work.join("backlog");
    eprintln!(
        "==> bench forward: filling fluent-bit's backlog in {}",
        dir.display()
    );
    // Nothing listens there: every chunk stays in storage.
    let nobody = test_support::free_port();
    let mut peer = Peer::fluent_bit(
        &dir,
        &test_support::fluent_bit_backlog_sender(&dir, log, nobody, true),
    );
    if !peer.wait_exit(Duration::from_secs(300)) {
        bail!(
            "fluent-bit did not reach the end of {} in 5 minutes (its log: {})",
            log.display(),
            peer.log.display()
        );
    }
    let stored = fs::read_dir(dir.join("storage"))
        .map(|d| d.count())
        .unwrap_or(0);
    if stored == 0 {
        bail!(
            "fluent-bit left no storage in {} (its log: {})",
            dir.display(),
            peer.log.display()
        );
    }
    Ok(dir)
}

/// `cp -a from/. to`: fluent-bit's storage tree and tail DB, as they are.
fn copy_dir(from: &Path, to: &Path) -> Result<()> {
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(from.join("."))
        .arg(to)
        .status()
        .context("running cp")?;
    if !status.success() {
        bail!("cp -a {} {}: {status}", from.display(), to.display());
    }
    Ok(())
}

/// One run: `sender` sends `log` (of `lines` lines) from `feed` to
/// `receiver`, both fresh in `dir`; measures the process on `side`.
fn run_once(
    dir: &Path,
    (log, lines, feed): (&Path, u64, Feed),
    (sender, receiver): (Contender, Contender),
    side: Side,
) -> Result<Measured> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    let (send_dir, receive_dir) = (dir.join("sender"), dir.join("receiver"));
    fs::create_dir_all(&send_dir)?;
    fs::create_dir_all(&receive_dir)?;
    let synced = std::process::Command::new("sync")
        .status()
        .context("running sync")?;
    if !synced.success() {
        bail!("sync: {synced}");
    }
    page_cache::read_into_cache(log)?;
    let port = test_support::free_port();
    let rx = Receiver::start(receiver, &receive_dir, port)?;
    let t0 = Instant::now();
    let tx = start_sender(sender, &send_dir, log, port, feed)?;
    let pid = match side {
        Side::Sender => tx.pid(),
        Side::Receiver => rx.process.pid(),
    };
    let (mut cpu, mut peak_kib) = (0.0f64, 0u64);
    // When and how many the receiver had first counted.
    let mut first: Option<(Instant, u64)> = None;
    let mut progress = (Instant::now(), 0u64);
    loop {
        // Sampled while running: /proc forgets a process once it exits.
        cpu = cpu.max(test_support::cpu_seconds(pid));
        peak_kib = peak_kib.max(test_support::status_field(pid, "VmHWM"));
        let arrived = rx.arrived().unwrap_or(0);
        if arrived > 0 && first.is_none() {
            first = Some((Instant::now(), arrived));
        }
        if arrived >= lines {
            break;
        }
        if arrived > progress.1 {
            progress = (Instant::now(), arrived);
        }
        // A sender that stopped short (a backlog that lacks lines) ends the
        // run in a minute, not at the 15-minute limit.
        let stalled = progress.0.elapsed() > Duration::from_secs(60);
        if stalled || t0.elapsed() > Duration::from_secs(900) {
            bail!(
                "{} -> {}: {arrived} of {lines} records arrived in {:.0?}, none in the last {:.0?} (logs in {})",
                sender.name(),
                receiver.name(),
                t0.elapsed(),
                progress.0.elapsed(),
                dir.display()
            );
        }
        // A look at the receiver's count every 20 ms: next to nothing beside
        // the records.
        thread::sleep(Duration::from_millis(20));
    }
    let (records, secs) = match (feed, first) {
        // Drained from the first count to the last, unless it all came at
        // once (then over the whole run, which is fewer records/s).
        (Feed::Backlog(_), Some((t1, counted))) if counted < lines => {
            (lines - counted, t1.elapsed().as_secs_f64())
        }
        _ => (lines, t0.elapsed().as_secs_f64()),
    };
    cpu = cpu.max(test_support::cpu_seconds(pid));
    peak_kib = peak_kib.max(test_support::status_field(pid, "VmHWM"));
    drop(tx);
    drop(rx);
    Ok(Measured {
        records,
        secs,
        cpu,
        peak_kib,
    })
}

/// Both sides, `rounds` times, my-agent and fluent-bit alternating (and
/// the `against` build, when given, in turn with this one); prints each
/// round and the medians and ranges.
pub fn run(
    agent_bin: &Path,
    against: Option<&Path>,
    work: &Path,
    lines: u64,
    rounds: usize,
) -> Result<()> {
    let fluent_bit = test_support::fluent_bit_binary();
    let Ok(fluent_bit) = fs::canonicalize(&fluent_bit) else {
        bail!(
            "{}: no such file; the forward bench needs fluent-bit 5.1.1 in ../shared/tools (see its README)",
            fluent_bit.display()
        );
    };
    if work.exists() {
        fs::remove_dir_all(work)?;
    }
    fs::create_dir_all(work.join("logs"))?;
    let log = work.join("logs/mysqld.err");
    write_error_log(&log, lines)?;
    let backlog = fill_backlog(work, &log)?;
    let run_dir = |name: &str| -> PathBuf { work.join(name) };

    let (mut sending, mut sending_memory, mut receiving, mut draining) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let pair = |side: Side, feed: Feed, run: fn(Contender) -> (Contender, Contender)| {
            let one = |who: Contender| {
                let name = match (side, feed) {
                    (Side::Sender, Feed::Tail { stored: false }) => {
                        format!("send-{}-memory", who.name())
                    }
                    (Side::Sender, _) => format!("send-{}", who.name()),
                    (Side::Receiver, Feed::Tail { .. }) => format!("receive-{}", who.name()),
                    (Side::Receiver, Feed::Backlog(_)) => format!("drain-{}", who.name()),
                };
                eprintln!("==> bench forward: round {} of {rounds}, {name}", round + 1);
                run_once(&run_dir(&name), (&log, lines, feed), run(who), side)
            };
            let fluent_bit = one(Contender::FluentBit)?;
            let this = Contender::MyAgent {
                bin: agent_bin,
                previous: false,
            };
            Ok::<_, anyhow::Error>(match against {
                None => (fluent_bit, one(this)?, None),
                Some(bin) => {
                    let previous = Contender::MyAgent {
                        bin,
                        previous: true,
                    };
                    let (m, p) = crate::agent::in_turn(round, || one(this), || one(previous))?;
                    (fluent_bit, m, Some(p))
                }
            })
        };
        fn to_fluent_bit(who: Contender) -> (Contender, Contender) {
            (who, Contender::FluentBit)
        }
        fn from_fluent_bit(who: Contender) -> (Contender, Contender) {
            (Contender::FluentBit, who)
        }
        let (stored, memory) = (Feed::Tail { stored: true }, Feed::Tail { stored: false });
        sending.push(pair(Side::Sender, stored, to_fluent_bit)?);
        sending_memory.push(pair(Side::Sender, memory, to_fluent_bit)?);
        receiving.push(pair(Side::Receiver, memory, from_fluent_bit)?);
        draining.push(pair(
            Side::Receiver,
            Feed::Backlog(&backlog),
            from_fluent_bit,
        )?);
    }
    let bytes = fs::metadata(&log)?.len();
    println!(
        "forward bench: {lines} lines ({:.1} MB of MySQL error log), {rounds} rounds, fluent-bit {}",
        bytes as f64 / 1e6,
        fluent_bit.display()
    );
    report(
        "sender side: tail -> forward (acks) -> fluent-bit in_forward -> counter; the sender measured, its chunks on disk (my-agent's file buffer, fluent-bit's filesystem storage)",
        lines,
        &sending,
    );
    report(
        "sender side, fluent-bit's chunks in memory only (its default; my-agent's still in its file buffer)",
        lines,
        &sending_memory,
    );
    report(
        "receiver side: fluent-bit tail -> out_forward (acks) -> the receiver's forward input -> discard/counter; the receiver measured (records/s: the tailing sender's pace)",
        lines,
        &receiving,
    );
    report(
        "receiver side, draining a backlog: fluent-bit storage -> out_forward (acks) -> the receiver's forward input -> discard/counter; the receiver measured (records/s from its first count to its last)",
        lines,
        &draining,
    );
    Ok(())
}

/// A figure's name, how it is read from a run, and the goal for
/// my-agent/fluent-bit.
type Figure<'a> = (&'static str, &'a dyn Fn(&Measured) -> f64, &'static str);

/// What a scenario measured in one round: fluent-bit, my-agent and the
/// `--against` build if any.
type Round = (Measured, Measured, Option<Measured>);

/// Prints `rounds` round by round, then each figure's median and range
/// and my-agent/fluent-bit's (and my-agent/previous's).
fn report(title: &str, lines: u64, rounds: &[Round]) {
    let pairs: Vec<(Measured, Measured)> = rounds.iter().map(|&(f, m, _)| (f, m)).collect();
    let rate = |m: &Measured| m.records as f64 / m.secs;
    let cpu_per_million = |m: &Measured| m.cpu * 1e6 / lines as f64;
    let peak_mib = |m: &Measured| m.peak_kib as f64 / 1024.0;
    println!("  {title}");
    println!(
        "    round  records/s fluent-bit  my-agent  ratio   CPU-s per million fluent-bit  my-agent  ratio   peak RSS MiB fluent-bit  my-agent  ratio"
    );
    for (i, (f, m)) in pairs.iter().enumerate() {
        println!(
            "    {:>5}  {:>20.0}  {:>8.0}  {:>5.2}  {:>28.2}  {:>8.2}  {:>5.2}  {:>23.1}  {:>8.1}  {:>5.2}",
            i + 1,
            rate(f),
            rate(m),
            rate(m) / rate(f),
            cpu_per_million(f),
            cpu_per_million(m),
            cpu_per_million(m) / cpu_per_million(f),
            peak_mib(f),
            peak_mib(m),
            peak_mib(m) / peak_mib(f),
        );
    }
    let figures: [Figure; 3] = [
        ("records/s", &rate, "goal >= 2x"),
        ("CPU-s per million", &cpu_per_million, "goal <= 0.5x"),
        ("peak RSS MiB", &peak_mib, ""),
    ];
    for (name, figure, goal) in &figures {
        let f = Spread::of(pairs.iter().map(|(f, _)| figure(f)));
        let m = Spread::of(pairs.iter().map(|(_, m)| figure(m)));
        let ratio = Spread::of(pairs.iter().map(|(f, m)| figure(m) / figure(f)));
        println!(
            "    median {name:<17}  fluent-bit {}  my-agent {}  my-agent/fluent-bit {:.2}x ({:.2} - {:.2}) {goal}",
            f.show(),
            m.show(),
            ratio.median,
            ratio.low,
            ratio.high
        );
    }
    let previous: Vec<(Measured, Measured)> = rounds
        .iter()
        .filter_map(|&(_, m, p)| Some((p?, m)))
        .collect();
    if previous.is_empty() {
        return;
    }
    for (name, figure, _) in &figures {
        let p = Spread::of(previous.iter().map(|(p, _)| figure(p)));
        let ratio = Spread::of(previous.iter().map(|(p, m)| figure(m) / figure(p)));
        println!(
            "    median {name:<17}  previous {}  my-agent/previous {:.3}x ({:.3} - {:.3})",
            p.show(),
            ratio.median,
            ratio.low,
            ratio.high
        );
    }
}
