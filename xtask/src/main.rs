use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use xshell::Shell;

use xtask::deps::{self, DepsOptions};
use xtask::flags::{Command, DepsFlags, Global, Xtask};
use xtask::layout::{workspace_root, Layout};
use xtask::product::Product;
use xtask::test_cmd;
use xtask::{agent_build, bench};

fn main() {
    let flags = Xtask::parse();
    if let Err(e) = run(flags) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

fn run(flags: Xtask) -> Result<()> {
    let sh = Shell::new()?;
    let (product, layout) = setup(&flags.global)?;
    let jobs = flags
        .global
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get()));
    let deps_options = |d: DepsFlags| DepsOptions {
        sources_from: d.sources_from,
        only: d.only,
        jobs,
    };
    match flags.command {
        Command::Deps(d) => {
            deps::run(&sh, &product, &layout, &deps_options(d))?;
        }
        Command::Package(p) => {
            let target = xtask::health::Target::parse(&p.target)?;
            let report = deps::run(&sh, &product, &layout, &deps_options(p.deps))?;
            let agent = agent_build::run(&sh, &report.staged, &product.name)?;
            let opts = xtask::package::PackageOptions {
                target,
                rpm_release: p.rpm_release,
                dist: p
                    .dist_dir
                    .unwrap_or_else(|| layout.root.join("target/dist")),
                source_date: p.source_date_epoch,
                sign_key: p.sign_key,
            };
            let built = xtask::package::Built {
                sh: &sh,
                product: &product,
                layout: &layout,
                deps: &report,
                agent: &agent,
            };
            xtask::package::run(&built, &opts)?;
        }
        Command::Agent(d) => {
            let report = deps::run(&sh, &product, &layout, &deps_options(d))?;
            agent_build::run(&sh, &report.staged, &product.name)?;
        }
        Command::Bench(b) => {
            let only = b.run.clone();
            if let Some(o) = only
                .as_deref()
                .filter(|o| !["agent", "rpm", "slowlog"].contains(o))
            {
                anyhow::bail!("--run `{o}`: expected agent, rpm or slowlog");
            }
            let report = deps::run(&sh, &product, &layout, &deps_options(b.deps))?;
            let agent = agent_build::run(&sh, &report.staged, &product.name)?;
            let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
            if wants("agent") {
                bench::run(&agent, &layout.work.join("bench"), b.lines)?;
            }
            if wants("slowlog") {
                bench::run_slowlog(&agent, &layout.work.join("bench-slowlog"), 200)?;
            }
            if wants("rpm") {
                let opts = xtask::package::PackageOptions {
                    target: xtask::health::Target::Host,
                    rpm_release: 1,
                    dist: layout.work.join("bench-rpm"),
                    source_date: Some(1_700_000_000),
                    sign_key: None,
                };
                let built = xtask::package::Built {
                    sh: &sh,
                    product: &product,
                    layout: &layout,
                    deps: &report,
                    agent: &agent,
                };
                let prepared = xtask::package::prepare(&built, &opts)?;
                let spec = prepared.spec(&product, opts.target, None);
                xtask::bench_rpm::run(
                    &spec,
                    &prepared.payload.root,
                    &layout.work.join("bench-rpm"),
                )?;
            }
        }
        Command::Test(t) => {
            let report = deps::run(&sh, &product, &layout, &deps_options(t.deps))?;
            test_cmd::run(&sh, &report.staged, &t.cargo_args)?;
        }
    }
    Ok(())
}

fn setup(global: &Global) -> Result<(Product, Layout)> {
    let product_file = global
        .product
        .clone()
        .unwrap_or_else(|| workspace_root().join("recipes/my-agent.toml"));
    let prefix = global
        .prefix
        .as_ref()
        .map(|p| {
            p.to_str()
                .map(str::to_string)
                .context("--prefix is not UTF-8")
        })
        .transpose()?;
    let product = Product::load(&product_file)?.with_overrides(global.name.clone(), prefix)?;
    let recipes = global.recipes.clone().or_else(|| {
        global
            .product
            .as_ref()
            .and_then(|p| p.parent().map(PathBuf::from))
    });
    let layout = Layout::new(
        &product.name,
        recipes,
        global.work_dir.clone(),
        global.cache_dir.clone(),
    )?;
    Ok((product, layout))
}
