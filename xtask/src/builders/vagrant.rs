//! The vagrant builder: render a Vagrantfile for the target's box from
//! `templates/builder/Vagrantfile.j2`, `vagrant up` (provisioning installs
//! the same packages as the builder image, then a pinned Rust), run
//! `cargo xtask package --builder host` inside over the synced checkout,
//! copy the RPM and its manifest out with scp, then `vagrant halt` (or
//! `destroy` with `--destroy`).

use std::fs;
use std::path::Path;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use xshell::cmd;

use crate::builders::context::{inner_args, utf8, Context};
use crate::flags::PackageFlags;
use crate::package::PackageResult;
use crate::targets::{PackageManager, Target, TargetTable};
use crate::tools::ToolTable;

#[derive(Serialize)]
struct VagrantVars<'a> {
    name: &'a str,
    target: &'a str,
    description: &'a str,
    vagrant_box: &'a str,
    root: String,
    cpus: usize,
    prepare: &'a [String],
    packages: PackageManager,
    tool_packages: Vec<String>,
    rustup_version: &'a str,
    rustup_url: &'a str,
    rustup_sha256: &'a str,
    rust_version: String,
}

/// The Vagrantfile for `target`, syncing `root` to /work.
pub fn render(
    templates: &Path,
    recipes: &Path,
    product: &str,
    target: &Target,
    root: &Path,
    cpus: usize,
    rust_version: &str,
) -> Result<String> {
    let Some(vagrant_box) = target.vagrant_box.as_deref() else {
        bail!(
            "target `{}` names no vagrant_box in {}",
            target.name,
            recipes.join("targets.toml").display()
        );
    };
    let table = TargetTable::load(&recipes.join("targets.toml"))?;
    let tools = ToolTable::load(&recipes.join("tools.toml"))?;
    let path = templates.join("builder/Vagrantfile.j2");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let vars = VagrantVars {
        name: product,
        target: &target.name,
        description: &target.description,
        vagrant_box,
        root: utf8(root)?,
        cpus,
        prepare: &target.prepare,
        packages: target.packages,
        tool_packages: tools.all_packages(target.packages != PackageManager::Apt),
        rustup_version: &table.rustup.version,
        rustup_url: &table.rustup.url,
        rustup_sha256: &table.rustup.sha256,
        rust_version: rust_version.to_string(),
    };
    crate::template::render(&text, &vars).with_context(|| format!("rendering {}", path.display()))
}

/// `rustc 1.95.0 (...)` -> `1.95.0`: the box installs the host's version.
pub fn host_rust_version(sh: &xshell::Shell) -> Result<String> {
    let out = cmd!(sh, "rustc --version").quiet().read()?;
    out.split_whitespace()
        .nth(1)
        .map(str::to_string)
        .with_context(|| format!("cannot read a version from `{out}`"))
}

pub fn run(
    cx: &Context,
    target: &Target,
    flags: &PackageFlags,
    dist: &Path,
) -> Result<PackageResult> {
    let sh = cx.sh;
    if crate::tools::find_on_path("vagrant").is_none() {
        bail!("--builder vagrant: `vagrant` is not installed");
    }
    let dir = cx.layout.work.join("vagrant").join(&target.name);
    fs::create_dir_all(&dir)?;
    let file = render(
        &cx.layout.root.join("templates"),
        &cx.layout.recipes,
        &cx.product.name,
        target,
        &cx.layout.root,
        cx.jobs,
        &host_rust_version(sh)?,
    )?;
    fs::write(dir.join("Vagrantfile"), file)?;
    let _dir = sh.push_dir(&dir);
    eprintln!("==> vagrant: vagrant up in {}", dir.display());
    cmd!(sh, "vagrant up --provision")
        .run()
        .context("vagrant up failed")?;

    let mut args = cx.global_args.clone();
    args.extend(inner_args(flags, target, "/home/vagrant/dist"));
    let source_date = match flags.source_date_epoch {
        Some(t) => t.to_string(),
        None => {
            let root = &cx.layout.root;
            cmd!(sh, "git -C {root} log -1 --format=%ct")
                .quiet()
                .read()?
        }
    };
    // The cache lives in the box's /cache across `vagrant up`s; the work
    // directory stays inside the box (rsync does not sync back).
    let inner = format!(
        "cd /work && MY_AGENT_CACHE_DIR=/cache SOURCE_DATE_EPOCH={} CARGO_TARGET_DIR=$HOME/cargo-target \
         $HOME/.cargo/bin/cargo xtask --work-dir $HOME/work {}",
        source_date.trim(),
        args.iter()
            .map(|a| format!("'{}'", a.replace('\'', "'\\''")))
            .collect::<Vec<_>>()
            .join(" ")
    );
    let built = cmd!(sh, "vagrant ssh -c {inner}").run();
    let result = built
        .with_context(|| format!("the {} build in the Vagrant box failed", target.name))
        .and_then(|()| copy_out(cx, target, flags, dist, &dir));
    let stop = if flags.destroy {
        cmd!(sh, "vagrant destroy -f").run()
    } else {
        cmd!(sh, "vagrant halt").run()
    };
    let out = result?;
    stop.context("could not stop the Vagrant box")?;
    Ok(out)
}

fn copy_out(
    cx: &Context,
    target: &Target,
    flags: &PackageFlags,
    dist: &Path,
    dir: &Path,
) -> Result<PackageResult> {
    let sh = cx.sh;
    let version = crate::package::agent_version()?;
    let release = match &target.dist {
        Some(d) => format!("{}.{d}", flags.rpm_release),
        None => flags.rpm_release.to_string(),
    };
    let name = &cx.product.name;
    let rpm_name = format!("{name}-{version}-{release}.x86_64.rpm");
    let manifest_name = format!("{name}-{version}-{release}.manifest.json");
    let debug_name = format!("{name}-debuginfo-{version}-{release}.x86_64.rpm");
    let ssh_config = dir.join("ssh-config");
    let config = cmd!(sh, "vagrant ssh-config").read()?;
    fs::write(&ssh_config, config)?;
    fs::create_dir_all(dist)?;
    for file in [&rpm_name, &debug_name, &manifest_name] {
        let from = format!("default:/home/vagrant/dist/{file}");
        let to = dist.join(file);
        cmd!(sh, "scp -F {ssh_config} {from} {to}")
            .run()
            .with_context(|| format!("cannot copy {file} out of the box"))?;
    }
    Ok(PackageResult {
        rpm: dist.join(rpm_name),
        manifest: dist.join(manifest_name),
    })
}
