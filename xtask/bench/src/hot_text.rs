//! `cargo xtask bench --run hot-text`: profiles the release agent under
//! callgrind and rewrites `agent/link/hot-text.txt`, the functions the
//! agent's build lays out first (see `agent/build.rs`).
//!
//! Why: the kernel maps the pages around each page of code a process
//! touches (fault-around, 64 KiB here), and the agent's 4 MB of code has its
//! start-up and idle functions spread over all of it. At idle 2.5 MiB of
//! its code was resident where about 0.5 MiB runs. With the functions that
//! ran laid out together, they share those pages.
//!
//! The runs, each a fresh agent under `valgrind --tool=callgrind`:
//! - idle: start-up, an empty log followed for a few seconds, shutdown;
//! - scraped: the same with `/metrics` and `/status` served and asked for;
//! - shipping: an error log through `record_transformer` to HTTP with a file
//!   buffer, a slow log through `mysql_slow_query`, and the forward tier
//!   (a tailing agent's forward output into another agent's forward input).
//!
//! The file lists the idle run's functions first, then those only the
//! shipping runs ran, then those only the scraped run ran: idle and
//! shipping code side by side for the agent that nobody scrapes, which
//! keeps the fewest pages. Each name is the symbol with its hash (`17h…E`)
//! replaced by `*`: the hash differs between the host and zig builds and
//! with every change of the compiler or of a dependency, the path does not.

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use test_support::{agent_forward_sender, free_port, get_metrics, get_status, Agent, Sink};

use crate::agent::write_error_log;

/// Lines of the shipping runs: enough to run every batch, flush and
/// commit path several times, few enough for callgrind (about 50 times
/// slower than the agent).
const LINES: u64 = 20_000;
const SLOW_ENTRIES: u64 = 3_000;

pub fn run(agent: &Path, work: &Path, out: &Path) -> Result<()> {
    if work.exists() {
        fs::remove_dir_all(work)?;
    }
    fs::create_dir_all(work)?;
    let text = text_symbols(agent)?;

    let idle = ran(&text, &profile_idle(agent, &work.join("idle"), false)?);
    let scraped = ran(&text, &profile_idle(agent, &work.join("scraped"), true)?);
    let mut shipping = BTreeSet::new();
    for file in [
        profile_error_log(agent, &work.join("error-log"))?,
        profile_slow_log(agent, &work.join("slow-log"))?,
    ]
    .into_iter()
    .chain(profile_forward(agent, &work.join("forward"))?)
    {
        shipping.extend(ran(&text, &file));
    }

    let (idle, scraped, shipping) = (
        with_cpu_variants(&text, idle),
        with_cpu_variants(&text, scraped),
        with_cpu_variants(&text, shipping),
    );
    let idle: BTreeSet<String> = idle.iter().map(|s| pattern(s)).collect();
    let shipping: BTreeSet<String> = shipping
        .iter()
        .map(|s| pattern(s))
        .filter(|p| !idle.contains(p))
        .collect();
    let scraped: BTreeSet<String> = scraped
        .iter()
        .map(|s| pattern(s))
        .filter(|p| !idle.contains(p) && !shipping.contains(p))
        .collect();
    let mut f = fs::File::create(out).with_context(|| format!("cannot write {}", out.display()))?;
    writeln!(
        f,
        "# The agent's functions that ran while it started and idled, then those\n\
         # that ran only while it shipped, then those that ran only to answer\n\
         # /metrics and /status: the order `agent/build.rs` lays them out in,\n\
         # ahead of the rest of its code. Written by `cargo xtask bench --run hot-text`\n\
         # (xtask/bench/src/hot_text.rs): regenerate it when the code changes\n\
         # much; a name that no longer matches is only left out.\n\
         # One symbol per line, its hash (17h...E) and LLVM's number (.7226)\n\
         # replaced by `*`."
    )?;
    for (title, group) in [
        ("Start-up and idle", &idle),
        ("Shipping", &shipping),
        ("Scraped: /metrics and /status", &scraped),
    ] {
        writeln!(f, "\n# {title}: {} functions", group.len())?;
        for p in group {
            writeln!(f, "{p}")?;
        }
    }
    println!(
        "hot text: {} start-up and idle functions, {} more while shipping, \
         {} more to answer /metrics and /status, written to {}",
        idle.len(),
        shipping.len(),
        scraped.len(),
        out.display()
    );
    Ok(())
}

/// Crates that pick their code by the CPU at run time (SSE2, AVX2,
/// AVX-512, PCLMULQDQ): valgrind's virtual CPU has no AVX-512, so under it
/// they ran another variant than on the host.
const CPU_DISPATCHED: &[&str] = &[
    "_ZN9crc32fast",
    "_ZN6memchr4arch6x86_64",
    "_ZN8httparse4simd",
];

/// `ran` with every function of a CPU-dispatched crate one of whose
/// functions ran (17 KiB of code in all).
fn with_cpu_variants(text: &BTreeSet<String>, mut ran: BTreeSet<String>) -> BTreeSet<String> {
    for family in CPU_DISPATCHED {
        if ran.iter().any(|n| n.starts_with(family)) {
            ran.extend(text.iter().filter(|n| n.starts_with(family)).cloned());
        }
    }
    ran
}

/// The symbol `name` as the list names it: a legacy-mangling hash
/// (`17h<16 hex>E`) replaced by `*`, and so is the number LLVM appends to
/// a local function's name to keep it unique (`.7226`), which changes
/// whenever any code around it does: listed with it, a change anywhere in
/// the agent moved such functions out of `.text.hot` until the list was
/// made again. (Where a function has several numbered copies, all of them
/// then go first; they are small.)
fn pattern(name: &str) -> String {
    let (base, numbered) = match name.rsplit_once('.') {
        Some((base, n)) if !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()) => (base, true),
        _ => (name, false),
    };
    match base.strip_suffix('E').and_then(|s| s.rsplit_once("17h")) {
        Some((path, hash)) if hash.len() == 16 && hash.bytes().all(|b| b.is_ascii_hexdigit()) => {
            format!("{path}17h*")
        }
        _ if numbered => format!("{base}.*"),
        _ => name.to_string(),
    }
}

/// The names of the functions `binary` defines in its code, as `nm` lists
/// them.
fn text_symbols(binary: &Path) -> Result<BTreeSet<String>> {
    let out = Command::new("nm")
        .arg("--defined-only")
        .arg(binary)
        .output()
        .context("cannot run nm (binutils)")?;
    if !out.status.success() {
        bail!(
            "nm {}: {}",
            binary.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let names: BTreeSet<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (_, kind, name) = (f.next()?, f.next()?, f.next()?);
            matches!(kind, "t" | "T").then(|| name.to_string())
        })
        .collect();
    if names.len() < 1000 {
        bail!(
            "{} names {} functions: a stripped binary? The profile needs its symbols",
            binary.display(),
            names.len()
        );
    }
    Ok(names)
}

/// The functions of `text` that a callgrind output file says ran.
fn ran(text: &BTreeSet<String>, callgrind_out: &Path) -> BTreeSet<String> {
    let data = fs::read(callgrind_out).unwrap_or_default();
    let data = String::from_utf8_lossy(&data);
    // `fn=(id) name` defines a name and opens its costs, `fn=(id)` reopens
    // it; `cfn=` lines name callees, which have lines of their own when
    // they ran.
    let mut names = std::collections::HashMap::new();
    let mut out = BTreeSet::new();
    for line in data.lines() {
        let (is_fn, rest) = if let Some(r) = line.strip_prefix("fn=(") {
            (true, r)
        } else if let Some(r) = line.strip_prefix("cfn=(") {
            (false, r)
        } else {
            continue;
        };
        let Some((id, name)) = rest.split_once(')') else {
            continue;
        };
        let name = name.trim();
        if !name.is_empty() {
            names.insert(id.to_string(), name.to_string());
        }
        if is_fn {
            if let Some(n) = names.get(id).filter(|n| text.contains(*n)) {
                out.insert(n.clone());
            }
        }
    }
    out
}

/// valgrind's command line writing callgrind's profile to `out`.
fn callgrind(out: &Path) -> Vec<OsString> {
    let mut file = OsString::from("--callgrind-out-file=");
    file.push(out);
    vec![
        "valgrind".into(),
        "--tool=callgrind".into(),
        // Symbols as the linker sees them.
        "--demangle=no".into(),
        file,
    ]
}

fn fresh(dir: &Path) -> Result<PathBuf> {
    fs::create_dir_all(dir.join("logs"))?;
    Ok(dir.join("callgrind.out"))
}

/// Stops `agent` and checks its profile was written.
fn finish(agent: Agent, out: &Path) -> Result<PathBuf> {
    let log = agent.log.clone();
    let status = agent.stop();
    if !status.success() || !out.is_file() {
        bail!(
            "the profiled agent exited with {status} and wrote no {}; its log: {}",
            out.display(),
            log.display()
        );
    }
    Ok(out.to_path_buf())
}

fn wait(what: &str, mut done: impl FnMut() -> bool) -> Result<()> {
    let t0 = Instant::now();
    while !done() {
        if t0.elapsed() > Duration::from_secs(300) {
            bail!("profiling: {what} did not happen in 5 minutes");
        }
        thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

/// The agent bench's pipeline (tail -> record_transformer -> http with a
/// file buffer), as most hosts run it; with a port, `/metrics` and
/// `/status` served on it.
fn error_log_config(dir: &Path, url: &str, metrics_port: Option<u16>) -> String {
    let system = metrics_port.map_or(String::new(), |port| {
        format!("system:\n  metrics:\n    bind: 127.0.0.1:{port}\n")
    });
    format!("{system}{}", crate::agent::bench_config(dir, url))
}

/// Start-up, a few seconds of following an empty log, shutdown; with
/// `scrape`, `/metrics` and `/status` served and asked for, as Prometheus
/// and an operator do.
fn profile_idle(binary: &Path, dir: &Path, scrape: bool) -> Result<PathBuf> {
    let out = fresh(dir)?;
    fs::write(dir.join("logs/mysqld.err"), b"")?;
    let sink = Sink::start_counting();
    let port = free_port();
    let config = error_log_config(dir, &sink.url, scrape.then_some(port));
    eprintln!("==> hot text: start-up and idle (scraped: {scrape}) under callgrind");
    let agent = Agent::start_binary_under(&callgrind(&out), binary, dir, &config);
    if scrape {
        wait("/metrics answering", || {
            test_support::try_get_metrics(port).is_ok()
        })?;
    }
    thread::sleep(Duration::from_secs(3));
    if scrape {
        get_metrics(port);
        get_status(port);
        thread::sleep(Duration::from_secs(1));
    }
    finish(agent, &out)
}

fn profile_error_log(binary: &Path, dir: &Path) -> Result<PathBuf> {
    let out = fresh(dir)?;
    write_error_log(&dir.join("logs/mysqld.err"), LINES)?;
    let sink = Sink::start_counting();
    eprintln!("==> hot text: {LINES} error-log lines to HTTP under callgrind");
    let agent = Agent::start_binary_under(
        &callgrind(&out),
        binary,
        dir,
        &error_log_config(dir, &sink.url, None),
    );
    wait("delivery of the error log", || sink.counted() >= LINES)?;
    finish(agent, &out)
}

fn profile_slow_log(binary: &Path, dir: &Path) -> Result<PathBuf> {
    let out = fresh(dir)?;
    let mut log = String::new();
    for n in 0..SLOW_ENTRIES {
        log.push_str(&crate::slowlog::slow_entry(n));
    }
    fs::write(dir.join("logs/db1-slow.log"), log)?;
    let sink = Sink::start_counting();
    eprintln!("==> hot text: {SLOW_ENTRIES} slow-log entries to HTTP under callgrind");
    let config = test_support::slow_query_config(
        dir,
        &format!("{}/logs/*-slow.log", dir.display()),
        &sink.url,
    );
    let agent = Agent::start_binary_under(&callgrind(&out), binary, dir, &config);
    wait("delivery of the slow log", || {
        sink.counted() >= SLOW_ENTRIES
    })?;
    finish(agent, &out)
}

/// One agent tails the error log into its forward output, another takes it
/// in with its forward input: both profiled.
fn profile_forward(binary: &Path, dir: &Path) -> Result<[PathBuf; 2]> {
    let (send_dir, receive_dir) = (dir.join("sender"), dir.join("receiver"));
    let (send_out, receive_out) = (fresh(&send_dir)?, fresh(&receive_dir)?);
    let port = free_port();
    let sink = Sink::start_counting();
    eprintln!("==> hot text: {LINES} lines over forward, both agents under callgrind");
    // Counted at a sink rather than on /metrics: serving it is the
    // scraped run's code.
    let receiver_config = format!(
        "sources:\n  - type: forward\n    bind: 127.0.0.1:{port}\n{}",
        test_support::http_outputs(&receive_dir, &sink.url)
    );
    let receiver = Agent::start_binary_under(
        &callgrind(&receive_out),
        binary,
        &receive_dir,
        &receiver_config,
    );
    wait("the forward input listening", || {
        std::net::TcpStream::connect(("127.0.0.1", port)).is_ok()
    })?;
    let log = send_dir.join("logs/mysqld.err");
    write_error_log(&log, LINES)?;
    let sender = Agent::start_binary_under(
        &callgrind(&send_out),
        binary,
        &send_dir,
        &agent_forward_sender(&send_dir, &log, port),
    );
    wait("delivery over forward", || sink.counted() >= LINES)?;
    Ok([finish(sender, &send_out)?, finish(receiver, &receive_out)?])
}

#[cfg(test)]
mod tests {
    use super::pattern;

    #[test]
    fn hashes_and_llvm_numbers_become_wildcards() {
        let legacy = "_ZN4http6header4name14StandardHeader6as_str17hc0d0c32fca8a7111E";
        let path = "_ZN4http6header4name14StandardHeader6as_str17h*";
        assert_eq!(pattern(legacy), path);
        assert_eq!(pattern(&format!("{legacy}.5852")), path);
        let v0 = "_RNvNtNtNtCsgEmfK2I1SDS_4core9core_arch3x865xsave7__xgetbv";
        assert_eq!(pattern(v0), v0);
        assert_eq!(pattern(&format!("{v0}.7226")), format!("{v0}.*"));
        // Not a number, not a hash: kept as it is.
        for name in ["_ZN3foo17hnothexnothexnothE", "a.b", "a.", "a.12x"] {
            assert_eq!(pattern(name), name);
        }
    }
}
