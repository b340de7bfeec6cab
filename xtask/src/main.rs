use std::path::PathBuf;

use anyhow::{Context, Result};
use clap::Parser;
use xshell::Shell;

use xtask::builder::Toolchain;
use xtask::deps::{self, DepsOptions};
use xtask::flags::{Command, DepsFlags, Global, Xtask};
use xtask::layout::{workspace_root, Layout};
use xtask::product::Product;
use xtask::targets::Target;
use xtask::{agent_build, bench, bench_forward, package, package_cmd, repo, test_cmd};

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
    // Every command but `package` builds with the host's compiler: tests
    // and benches run the agent here.
    let deps_options = |d: DepsFlags| DepsOptions {
        sources_from: d.sources_from,
        only: d.only,
        jobs,
        toolchain: Toolchain::Host,
    };
    let cache = layout.cache.clone();
    let build_agent = |sh: &Shell, report: &deps::DepsReport| {
        agent_build::run(sh, &report.staged, &product.name, &Toolchain::Host, &cache)
    };
    match flags.command {
        Command::Deps(d) => {
            deps::run(&sh, &product, &layout, &deps_options(d))?;
        }
        Command::Package(p) => {
            let cx = package_cmd::Context {
                sh: &sh,
                product: &product,
                layout: &layout,
                jobs,
                global_args: inner_global_args(&flags.global),
            };
            let results = package_cmd::run(&cx, p)?;
            for r in &results {
                eprintln!("==> wrote {}", r.rpm.display());
            }
        }
        Command::Repo(r) => {
            let table = xtask::targets::TargetTable::load(&layout.recipes.join("targets.toml"))?;
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
            let tools = xtask::tools::ToolTable::load(&layout.recipes.join("tools.toml"))?;
            let pip_dir = layout.cache.join("tools/pip");
            repo::run(&sh, &product, &table, (&tools, &pip_dir), &opts)?;
        }
        Command::Agent(d) => {
            let report = deps::run(&sh, &product, &layout, &deps_options(d))?;
            build_agent(&sh, &report)?;
        }
        Command::Bench(b) => {
            let only = b.run.clone();
            if let Some(o) = only
                .as_deref()
                .filter(|o| !["agent", "forward", "rpm", "slowlog", "targets"].contains(o))
            {
                anyhow::bail!("--run `{o}`: expected agent, forward, rpm, slowlog or targets");
            }
            let report = deps::run(&sh, &product, &layout, &deps_options(b.deps))?;
            let agent = build_agent(&sh, &report)?;
            let wants = |name: &str| only.as_deref().is_none_or(|o| o == name);
            if wants("agent") {
                bench::run(&agent, &layout.work.join("bench"), b.lines)?;
            }
            if only.as_deref() == Some("targets") {
                let el7 = package_cmd::build_zig_agent(&sh, &product, &layout, jobs, "el7")?;
                let pair = bench::Pair {
                    base: ("host", &agent),
                    other: ("el7", &el7),
                };
                bench::run_pair(&pair, &layout.work.join("bench-targets"), b.lines, 3)?;
            }
            if let Some(previous) = &b.against {
                if !previous.is_file() {
                    anyhow::bail!("--against {}: no such file", previous.display());
                }
                let pair = bench::Pair {
                    base: ("against", previous),
                    other: ("this", &agent),
                };
                bench::run_pair(&pair, &layout.work.join("bench-against"), b.lines, 3)?;
            }
            if only.as_deref() == Some("forward") {
                bench_forward::run(&agent, &layout.work.join("bench-forward"), b.lines, 3)?;
            }
            if wants("slowlog") {
                bench::run_slowlog(&agent, &layout.work.join("bench-slowlog"), 200)?;
            }
            if wants("rpm") {
                let opts = xtask::package::PackageOptions {
                    target: Target::host(),
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
                let spec = prepared.spec(&product, &opts.target, None);
                xtask::bench_rpm::run(
                    &spec,
                    &prepared.payload.root,
                    &layout.work.join("bench-rpm"),
                )?;
            }
        }
        Command::Test(t) => {
            let report = deps::run(&sh, &product, &layout, &deps_options(t.deps))?;
            test_cmd::run(&sh, &report.staged, &layout, &t.cargo_args)?;
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
