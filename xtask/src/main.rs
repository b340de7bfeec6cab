use anyhow::{Context, Result};
use clap::Parser;
use xshell::{cmd, Shell};

use xtask::deps::{self, DepsOptions};
use xtask::flags::{Command, DepsFlags, Global, Xtask};
use xtask::layout::workspace_root;
use xtask::package::{self, agent_build};
use xtask::targets::TargetTable;
use xtask::toolchain::Toolchain;
use xtask::tools::ToolTable;
use xtask::{builders, repo, test_cmd};

fn main() {
    // `cargo run` (the `cargo xtask` alias) gives this process the xtask
    // package's own variables (`CARGO_MANIFEST_DIR`, `CARGO_PKG_NAME`,
    // ...). Inherited by the cargo commands run from here, they changed
    // what cargo recorded for ring's build script: the bench's and the
    // tests' builds rebuilt ring, rustls and reqwest, and the next
    // `cargo xtask` rebuilt them back, about two minutes each time.
    // Removed first thing, while this is the only thread.
    for (name, _) in std::env::vars_os() {
        if name.to_str().is_some_and(is_package_var) {
            std::env::remove_var(name);
        }
    }
    let flags = Xtask::parse();
    if let Err(e) = run(flags) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(flags: Xtask) -> Result<()> {
    let sh = Shell::new()?;
    if let Command::Bench(_) = flags.command {
        return bench(&sh);
    }
    let (product, layout) = flags.global.setup()?;
    let jobs = flags.global.jobs();
    // Every command but `package` builds with the host's compiler: tests
    // run the agent here.
    let deps_options = |d: DepsFlags| DepsOptions {
        sources_from: d.sources_from,
        only: d.only,
        jobs,
        toolchain: Toolchain::Host,
    };
    match flags.command {
        Command::Deps(d) => {
            deps::run(&sh, &product, &layout, &deps_options(d))?;
        }
        Command::Package(p) => {
            let cx = builders::Context {
                sh: &sh,
                product: &product,
                layout: &layout,
                jobs,
                global_args: inner_global_args(&flags.global),
            };
            let results = builders::run(&cx, p)?;
            for r in &results {
                eprintln!("==> wrote {}", r.rpm.display());
            }
        }
        Command::Repo(r) => {
            let table = TargetTable::load(&layout.recipes.join("targets.toml"))?;
            let opts = repo::RepoOptions {
                dist: r
                    .dist_dir
                    .unwrap_or_else(|| layout.root.join("target/dist")),
                add: r.add,
                trust: r.trust,
                out: r.out.unwrap_or_else(|| layout.root.join("target/repo")),
                sign_key: r.sign_key,
                base_url: r.base_url,
                version: package::agent_version()?,
                source_date: package::source_date(&sh, r.source_date_epoch)?,
            };
            let tools = ToolTable::load(&layout.recipes.join("tools.toml"))?;
            let pip_dir = layout.cache.join("tools/pip");
            repo::run(&sh, &product, &table, (&tools, &pip_dir), &opts)?;
        }
        Command::Agent(d) => {
            let report = deps::run(&sh, &product, &layout, &deps_options(d))?;
            agent_build::run(
                &sh,
                &report.staged,
                &product.name,
                &Toolchain::Host,
                &layout.cache,
            )?;
        }
        Command::Test(t) => {
            let report = deps::run(&sh, &product, &layout, &deps_options(t.deps))?;
            test_cmd::run(&sh, &report.staged, &layout, &t.cargo_args)?;
        }
        Command::Bench(_) => unreachable!("handled above"),
    }
    Ok(())
}

/// A variable `cargo run` sets for the package it runs (cargo sets its
/// own for each package it builds).
fn is_package_var(name: &str) -> bool {
    name.starts_with("CARGO_PKG_")
        || matches!(
            name,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
        )
}

/// `cargo xtask bench ...`: the same command line, run by the bench crate,
/// so that the benches and their loopback sink are compiled only here and
/// never into the xtask every other command runs. Paths in the flags stay
/// relative to the caller's directory.
fn bench(sh: &Shell) -> Result<()> {
    let manifest = workspace_root().join("Cargo.toml");
    let args = std::env::args_os().skip(1);
    let bench = cmd!(
        sh,
        "cargo run --quiet --manifest-path {manifest} --package xtask-bench -- {args...}"
    );
    // The bench prints its own errors; pass on its exit code, no more.
    let status = std::process::Command::from(bench)
        .status()
        .context("cannot run cargo")?;
    if !status.success() {
        std::process::exit(status.code().unwrap_or(1));
    }
    Ok(())
}

/// The global flags that a container or VM's own `cargo xtask` needs to
/// build the same product (paths of this machine mean nothing there).
fn inner_global_args(global: &Global) -> Vec<String> {
    let mut args = Vec::new();
    if let Some(name) = &global.name {
        args.extend(["--name".to_string(), name.clone()]);
    }
    if let Some(prefix) = &global.prefix {
        args.extend(["--prefix".to_string(), prefix.display().to_string()]);
    }
    if let Some(jobs) = global.jobs {
        args.extend(["--jobs".to_string(), jobs.to_string()]);
    }
    args
}
