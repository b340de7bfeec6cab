//! `cargo xtask package`: for each selected target, decide the builder
//! (`plan.rs`), then build the prefix and the agent once per toolchain
//! (targets that build identically share one build) and write one RPM per
//! target with the package step; or have a container (`container.rs`) or a
//! VM (`vagrant.rs`) run that same command with the host builder.
//!
//! Builders use the package step; the package step never reaches back here.

use std::collections::BTreeMap;

use anyhow::Result;

use crate::deps::{self, DepsOptions};
use crate::flags::PackageFlags;
use crate::package::rpm_rules;
use crate::package::{self, agent_build, Built, PackageOptions, PackageResult};
use crate::targets::{Target, TargetTable};
use crate::toolchain::{LocalKind, Toolchain};

pub mod container;
pub mod context;
pub mod plan;
pub mod vagrant;

pub use context::Context;
use plan::Plan;

pub fn run(cx: &Context, flags: PackageFlags) -> Result<Vec<PackageResult>> {
    let table = TargetTable::load(&cx.layout.recipes.join("targets.toml"))?;
    let targets = table.select(&flags.target)?;
    // A key a target's rpm cannot verify fails now, not after the build.
    if let Some(key) = &flags.sign_key {
        rpm_rules::check_sign_key(key, &targets)?;
    }
    let host = plan::host_glibc();
    let dist = flags
        .dist_dir
        .clone()
        .unwrap_or_else(|| cx.layout.root.join("target/dist"));

    // Group local targets by toolchain so that el7, el8 and el9 linked
    // against the same glibc build the prefix and the agent once.
    let mut local: BTreeMap<LocalKind, Vec<Target>> = BTreeMap::new();
    let mut results = Vec::new();
    for target in targets {
        let plan = plan::plan(flags.builder, &target, host.as_ref())?;
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
