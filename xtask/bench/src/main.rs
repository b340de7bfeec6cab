//! `cargo xtask bench`: the xtask runs this crate with its own command
//! line, so the benches and the tests' loopback sink (agent/test-support)
//! are compiled only when benching, never into `cargo xtask package`.
//! The flags are the xtask's (`xtask::flags`), parsed the same way.
//!
//! The prefix and the agent are built with the host's compiler, as
//! `cargo xtask agent` does, then each selected bench runs: `agent.rs`,
//! `slowlog.rs`, `rpm.rs`, `forward.rs`.

use std::path::PathBuf;

use anyhow::{bail, Result};
use clap::Parser;
use xshell::Shell;

use xtask::builders::plan::{self, Plan};
use xtask::deps::{self, DepsOptions};
use xtask::flags::{BenchFlags, BuilderKind, Command, Xtask};
use xtask::layout::Layout;
use xtask::package::{self, agent_build, Built, PackageOptions};
use xtask::product::Product;
use xtask::targets::{Target, TargetTable};
use xtask::toolchain::Toolchain;
use xtask::tools::{self, ToolTable};

mod agent;
mod forward;
mod hot_text;
mod page_cache;
mod rpm;
mod slowlog;
mod spread;

fn main() {
    let flags = Xtask::parse();
    if let Err(e) = run(flags) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(flags: Xtask) -> Result<()> {
    let Command::Bench(b) = flags.command else {
        bail!("xtask-bench runs `cargo xtask bench` only");
    };
    let sh = Shell::new()?;
    let (product, layout) = flags.global.setup()?;
    bench(&sh, &product, &layout, flags.global.jobs(), b)
}

fn bench(sh: &Shell, product: &Product, layout: &Layout, jobs: usize, b: BenchFlags) -> Result<()> {
    let only = b.run.clone();
    if let Some(o) = only
        .as_deref()
        .filter(|o| !["agent", "forward", "hot-text", "rpm", "slowlog", "targets"].contains(o))
    {
        bail!("--run `{o}`: expected agent, forward, hot-text, rpm, slowlog or targets");
    }
    let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
    if let Some(previous) = &b.against {
        if !previous.is_file() {
            bail!("--against {}: no such file", previous.display());
        }
        if !(wants("agent") || wants("slowlog") || wants("forward")) {
            bail!(
                "--against compares the agent, slowlog and forward benches only, not `--run {}`",
                only.as_deref().unwrap_or_default()
            );
        }
    }
    // The host's compiler: the benches run the agent here.
    let opts = DepsOptions {
        sources_from: b.deps.sources_from,
        only: b.deps.only,
        jobs,
        toolchain: Toolchain::Host,
    };
    let report = deps::run(sh, product, layout, &opts)?;
    let agent = agent_build::run(
        sh,
        &report.staged,
        &product.name,
        &Toolchain::Host,
        &layout.cache,
    )?;
    if wants("slowlog") {
        // The slow-log figure's baseline, installed (as root) or named
        // exactly as the test command does: no figure without it.
        let table = ToolTable::load(&layout.recipes.join("test-tools.toml"))?;
        let needed = ["pt-query-digest".to_string()];
        tools::ensure(sh, &table, &needed, &layout.cache.join("tools/pip"))?;
    }
    if wants("agent") {
        agent::run(&agent, &layout.work.join("bench"), b.lines)?;
    }
    if only.as_deref() == Some("targets") {
        let el7 = build_zig_agent(sh, product, layout, jobs, "el7")?;
        let pair = agent::Pair {
            base: ("host", &agent),
            other: ("el7", &el7),
        };
        agent::run_pair(&pair, &layout.work.join("bench-targets"), b.lines, 3)?;
    }
    if let Some(previous) = b.against.as_deref().filter(|_| wants("agent")) {
        let pair = agent::Pair {
            base: ("against", previous),
            other: ("this", &agent),
        };
        agent::run_pair(&pair, &layout.work.join("bench-against"), b.lines, 3)?;
    }
    if let Some(peer) = &b.peer {
        let peer = peer.clone().unwrap_or_else(test_support::fluent_bit_binary);
        let Ok(peer) = std::fs::canonicalize(&peer) else {
            bail!(
                "--peer {}: no such file; fluent-bit 5.1.1 is in ../shared/tools (see its README)",
                peer.display()
            );
        };
        agent::run_peer(&agent, &peer, &layout.work.join("bench-peer"), b.lines, 3)?;
    }
    if only.as_deref() == Some("hot-text") {
        let table = ToolTable::load(&layout.recipes.join("test-tools.toml"))?;
        let needed = ["valgrind".to_string(), "nm".to_string()];
        tools::ensure(sh, &table, &needed, &layout.cache.join("tools/pip"))?;
        let out = xtask::layout::workspace_root().join("agent/link/hot-text.txt");
        hot_text::run(&agent, &layout.work.join("hot-text"), &out)?;
    }
    if only.as_deref() == Some("forward") {
        forward::run(
            &agent,
            b.against.as_deref(),
            &layout.work.join("bench-forward"),
            b.lines,
            3,
        )?;
    }
    if wants("slowlog") {
        slowlog::run(
            &agent,
            &layout.work.join("bench-slowlog"),
            200,
            b.against.as_deref(),
        )?;
    }
    if wants("rpm") {
        let opts = PackageOptions {
            target: Target::host(),
            rpm_release: 1,
            dist: layout.work.join("bench-rpm"),
            source_date: Some(1_700_000_000),
            sign_key: None,
        };
        let built = Built {
            sh,
            product,
            layout,
            deps: &report,
            agent: &agent,
        };
        let prepared = package::prepare(&built, &opts)?;
        let spec = prepared.spec(product, &opts.target, None);
        rpm::run(
            &spec,
            &prepared.payload.root,
            &layout.work.join("bench-rpm"),
        )?;
    }
    Ok(())
}

/// Prepares, builds the prefix for and builds the agent of `target` with
/// the zig builder, timing the prefix (cold or warm, as the cache has it):
/// for `cargo xtask bench --run targets`.
fn build_zig_agent(
    sh: &Shell,
    product: &Product,
    layout: &Layout,
    jobs: usize,
    target: &str,
) -> Result<PathBuf> {
    let table = TargetTable::load(&layout.recipes.join("targets.toml"))?;
    let target = table.select(target)?.remove(0);
    let Plan::Local(kind) = plan::plan(BuilderKind::Zig, &target, None)? else {
        unreachable!("the zig builder is local");
    };
    let toolchain = Toolchain::prepare(sh, &kind, &layout.cache, &table.zig)?;
    let zig_layout = layout.for_toolchain(&kind.id());
    let opts = DepsOptions {
        sources_from: None,
        only: Vec::new(),
        jobs,
        toolchain: toolchain.clone(),
    };
    let started = std::time::Instant::now();
    let report = deps::run(sh, product, &zig_layout, &opts)?;
    eprintln!(
        "==> bench: {} prefix ready in {:.1} s",
        kind.id(),
        started.elapsed().as_secs_f64()
    );
    agent_build::run(sh, &report.staged, &product.name, &toolchain, &layout.cache)
}
