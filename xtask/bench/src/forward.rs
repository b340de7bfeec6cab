//! `cargo xtask bench --run forward`: the forward tier against fluent-bit
//! 5.1.1 (`../shared/tools/fluent-bit/fluent-bit`), the baseline, in the
//! same run, on the agent bench's MySQL error log.
//!
//! - Sender side: tail the log -> forward with acks -> a fluent-bit
//!   in_forward (-> `counter`); my-agent (file buffer) against fluent-bit
//!   (tail DB, `Require_ack_response On`) as the sender, the receiver the
//!   same. The sender is measured.
//! - Receiver side: fluent-bit tails the log and sends it with acks to
//!   my-agent's forward input (-> `discard`) against fluent-bit's in_forward
//!   (-> `counter`). The receiver is measured.
//!
//! A run is timed from the sender's start until the receiver has counted
//! every line (my-agent's `/metrics`; fluent-bit's `counter` output, flushed
//! every 100 ms: its monitoring server refreshes its counts once a second,
//! which made every run last a whole number of seconds); CPU and peak RSS
//! are the measured process's, from /proc.
//! The two contenders alternate for a few rounds, so both see the same
//! machine, and the report gives medians and ranges of my-agent/fluent-bit.

use std::fs;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use test_support::{Agent, Peer};

use crate::agent::write_error_log;
use crate::spread::Spread;

#[derive(Debug, Clone, Copy, PartialEq)]
enum Contender {
    MyAgent,
    FluentBit,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Contender::MyAgent => "my-agent",
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
    fn start(who: Contender, agent_bin: &Path, dir: &Path, port: u16) -> Result<Receiver> {
        let metrics_port = test_support::free_port();
        let process = match who {
            Contender::MyAgent => Running::MyAgent(Agent::start_binary(
                agent_bin,
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

fn start_sender(
    who: Contender,
    agent_bin: &Path,
    dir: &Path,
    log: &Path,
    port: u16,
) -> Result<Running> {
    Ok(match who {
        Contender::MyAgent => Running::MyAgent(Agent::start_binary(
            agent_bin,
            dir,
            &test_support::agent_forward_sender(dir, log, port),
        )),
        Contender::FluentBit => Running::FluentBit(Peer::fluent_bit(
            dir,
            &test_support::fluent_bit_forward_sender(dir, log, port),
        )),
    })
}

/// One run: `sender` tails `log` (of `lines` lines) to `receiver`, both
/// fresh in `dir`; measures the process on `side`.
fn run_once(
    agent_bin: &Path,
    dir: &Path,
    log: &Path,
    lines: u64,
    (sender, receiver): (Contender, Contender),
    side: Side,
) -> Result<Measured> {
    if dir.exists() {
        fs::remove_dir_all(dir).with_context(|| format!("emptying {}", dir.display()))?;
    }
    let (send_dir, receive_dir) = (dir.join("sender"), dir.join("receiver"));
    fs::create_dir_all(&send_dir)?;
    fs::create_dir_all(&receive_dir)?;
    let port = test_support::free_port();
    let rx = Receiver::start(receiver, agent_bin, &receive_dir, port)?;
    let t0 = Instant::now();
    let tx = start_sender(sender, agent_bin, &send_dir, log, port)?;
    let pid = match side {
        Side::Sender => tx.pid(),
        Side::Receiver => rx.process.pid(),
    };
    let (mut cpu, mut peak_kib) = (0.0f64, 0u64);
    loop {
        // Sampled while running: /proc forgets a process once it exits.
        cpu = cpu.max(test_support::cpu_seconds(pid));
        peak_kib = peak_kib.max(test_support::status_field(pid, "VmHWM"));
        let arrived = rx.arrived().unwrap_or(0);
        if arrived >= lines {
            break;
        }
        if t0.elapsed() > Duration::from_secs(900) {
            bail!(
                "{} -> {}: {arrived} of {lines} records arrived in 15 minutes (logs in {})",
                sender.name(),
                receiver.name(),
                dir.display()
            );
        }
        // A look at the receiver's count every 20 ms: next to nothing beside
        // the records.
        thread::sleep(Duration::from_millis(20));
    }
    let secs = t0.elapsed().as_secs_f64();
    cpu = cpu.max(test_support::cpu_seconds(pid));
    peak_kib = peak_kib.max(test_support::status_field(pid, "VmHWM"));
    drop(tx);
    drop(rx);
    Ok(Measured {
        secs,
        cpu,
        peak_kib,
    })
}

/// Both sides, `rounds` times, my-agent and fluent-bit alternating;
/// prints each round and the medians and ranges.
pub fn run(agent_bin: &Path, work: &Path, lines: u64, rounds: usize) -> Result<()> {
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
    let run_dir = |name: &str| -> PathBuf { work.join(name) };

    let (mut sending, mut receiving) = (Vec::new(), Vec::new());
    for round in 0..rounds {
        let pair = |side: Side, run: fn(Contender) -> (Contender, Contender)| {
            let one = |who: Contender| {
                let name = match side {
                    Side::Sender => format!("send-{}", who.name()),
                    Side::Receiver => format!("receive-{}", who.name()),
                };
                eprintln!("==> bench forward: round {} of {rounds}, {name}", round + 1);
                run_once(agent_bin, &run_dir(&name), &log, lines, run(who), side)
            };
            Ok::<_, anyhow::Error>((one(Contender::FluentBit)?, one(Contender::MyAgent)?))
        };
        sending.push(pair(Side::Sender, |who| (who, Contender::FluentBit))?);
        receiving.push(pair(Side::Receiver, |who| (Contender::FluentBit, who))?);
    }
    let bytes = fs::metadata(&log)?.len();
    println!(
        "forward bench: {lines} lines ({:.1} MB of MySQL error log), {rounds} rounds, fluent-bit {}",
        bytes as f64 / 1e6,
        fluent_bit.display()
    );
    report(
        "sender side: tail -> forward (acks) -> fluent-bit in_forward -> counter; the sender measured",
        lines,
        &sending,
    );
    report(
        "receiver side: fluent-bit tail -> out_forward (acks) -> the receiver's forward input -> discard/counter; the receiver measured",
        lines,
        &receiving,
    );
    Ok(())
}

/// A figure's name, how it is read from a run, and the goal for
/// my-agent/fluent-bit.
type Figure<'a> = (&'static str, &'a dyn Fn(&Measured) -> f64, &'static str);

/// Prints `pairs` (fluent-bit, my-agent) round by round, then each
/// figure's median and range and my-agent/fluent-bit's.
fn report(title: &str, lines: u64, pairs: &[(Measured, Measured)]) {
    let rate = |m: &Measured| lines as f64 / m.secs;
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
    for (name, figure, goal) in figures {
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
}
