//! `cargo xtask package`: for each selected target, decide the builder, then
//! build the prefix and the agent once per toolchain (targets that build
//! identically share one build) and write one RPM per target.

use std::collections::BTreeMap;

use anyhow::Result;
use xshell::Shell;

use crate::builder::{self, LocalKind, Plan, Toolchain};
use crate::deps::{self, DepsOptions};
use crate::flags::PackageFlags;
use crate::layout::Layout;
use crate::package::{self, Built, PackageOptions, PackageResult};
use crate::product::Product;
use crate::targets::{Target, TargetTable};
use crate::{agent_build, container, rpm_rules, vagrant};

/// Everything `package` needs besides the flags.
pub struct Context<'a> {
    pub sh: &'a Shell,
    pub product: &'a Product,
    pub layout: &'a Layout,
    pub jobs: usize,
    /// The global flags as given (`--name`, `--prefix`, ...), passed on to
    /// the xtask inside a container or VM.
    pub global_args: Vec<String>,
}

pub fn run(cx: &Context, flags: PackageFlags) -> Result<Vec<PackageResult>> {
    let table = TargetTable::load(&cx.layout.recipes.join("targets.toml"))?;
    let targets = table.select(&flags.target)?;
    // A key a target's rpm cannot verify fails now, not after the build.
    if let Some(key) = &flags.sign_key {
        rpm_rules::check_sign_key(key, &targets)?;
    }
    let host = builder::host_glibc();
    let dist = flags
        .dist_dir
        .clone()
        .unwrap_or_else(|| cx.layout.root.join("target/dist"));

    // Group local targets by toolchain so that el7, el8 and el9 linked
    // against the same glibc build the prefix and the agent once.
    let mut local: BTreeMap<LocalKind, Vec<Target>> = BTreeMap::new();
    let mut results = Vec::new();
    for target in targets {
        let plan = builder::plan(flags.builder, &target, host.as_ref())?;
        eprintln!(
            "==> {}: {} ({})",
            target.name,
            match &plan {
                Plan::Local(k) => format!("builder {}", k.id()),
                Plan::Container(engine) => format!("builder {engine}"),
                Plan::Vagrant => "builder vagrant".into(),
            },
            target.description
        );
        match plan {
            Plan::Local(kind) => local.entry(kind).or_default().push(target),
            Plan::Container(engine) => {
                results.push(container::run(cx, engine, &target, &flags, &dist)?);
            }
            Plan::Vagrant => results.push(vagrant::run(cx, &target, &flags, &dist)?),
        }
    }
    for (kind, targets) in local {
        let toolchain = Toolchain::prepare(cx.sh, &kind, &cx.layout.cache, &table.zig)?;
        let layout = cx.layout.for_toolchain(&kind.id());
        let opts = DepsOptions {
            sources_from: flags.deps.sources_from.clone(),
            only: flags.deps.only.clone(),
            jobs: cx.jobs,
            toolchain: toolchain.clone(),
        };
        let report = deps::run(cx.sh, cx.product, &layout, &opts)?;
        let agent = agent_build::run(
            cx.sh,
            &report.staged,
            &cx.product.name,
            &toolchain,
            &cx.layout.cache,
        )?;
        let built = Built {
            sh: cx.sh,
            product: cx.product,
            layout: &layout,
            deps: &report,
            agent: &agent,
        };
        for target in targets {
            let opts = PackageOptions {
                target,
                rpm_release: flags.rpm_release,
                dist: dist.clone(),
                source_date: flags.source_date_epoch,
                sign_key: flags.sign_key.clone(),
            };
            results.push(package::run(&built, &opts)?);
        }
    }
    Ok(results)
}

/// Prepares, builds the prefix for and builds the agent of `target` with
/// the zig builder, timing the prefix (cold or warm, as the cache has it):
/// for `cargo xtask bench --run targets`.
pub fn build_zig_agent(
    sh: &Shell,
    product: &Product,
    layout: &Layout,
    jobs: usize,
    target: &str,
) -> Result<std::path::PathBuf> {
    let table = TargetTable::load(&layout.recipes.join("targets.toml"))?;
    let target = table.select(target)?.remove(0);
    let Plan::Local(kind) = builder::plan(builder::BuilderKind::Zig, &target, None)? else {
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

/// The `cargo xtask package` arguments that reproduce `flags` for one
/// target inside a container or VM, with the host builder.
pub fn inner_args(flags: &PackageFlags, target: &Target, dist_dir: &str) -> Vec<String> {
    let mut args = vec![
        "package".to_string(),
        "--builder".into(),
        "host".into(),
        "--target".into(),
        target.name.clone(),
        "--rpm-release".into(),
        flags.rpm_release.to_string(),
        "--dist-dir".into(),
        dist_dir.to_string(),
    ];
    for only in &flags.deps.only {
        args.push("--only".into());
        args.push(only.clone());
    }
    args
}

/// A path's UTF-8 form, for command lines.
pub fn utf8(path: &std::path::Path) -> Result<String> {
    path.to_str()
        .map(str::to_string)
        .ok_or_else(|| anyhow::anyhow!("{} is not UTF-8", path.display()))
}
