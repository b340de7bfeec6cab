//! The podman and docker builders: render the target's Containerfile from
//! `templates/builder/`, build the image once (tagged by a hash of the
//! rendered file), then run `cargo xtask package --builder host` inside with
//! the checkout, the source/build cache, the cargo registry and the host's
//! Rust toolchain mounted. The RPM lands in the host's dist directory,
//! owned by the calling user.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context as _, Result};
use serde::Serialize;
use sha2::{Digest, Sha256};
use xshell::cmd;

use crate::builders::context::{inner_args, utf8, Context};
use crate::flags::PackageFlags;
use crate::package::PackageResult;
use crate::targets::{PackageManager, Target};
use crate::tools::ToolTable;

#[derive(Serialize)]
struct ContainerVars<'a> {
    target: &'a str,
    description: &'a str,
    engine: &'a str,
    image: &'a str,
    prepare: &'a [String],
    packages: PackageManager,
    tool_packages: Vec<String>,
}

/// The Containerfile for `target` (from `image`, or the target's own).
pub fn render(
    templates: &Path,
    recipes: &Path,
    engine: &str,
    target: &Target,
    image: Option<&str>,
) -> Result<String> {
    let Some(image) = image.or(target.image.as_deref()) else {
        bail!(
            "target `{}` names no container image in recipes/targets.toml; pass --image",
            target.name
        );
    };
    let tools = ToolTable::load(&recipes.join("tools.toml"))?;
    let path = templates.join("builder/Containerfile.j2");
    let text =
        fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
    let vars = ContainerVars {
        target: &target.name,
        description: &target.description,
        engine,
        image,
        prepare: &target.prepare,
        packages: target.packages,
        tool_packages: tools.all_packages(target.packages != PackageManager::Apt),
    };
    crate::template::render(&text, &vars).with_context(|| format!("rendering {}", path.display()))
}

/// `localhost/<name>-builder-<target>:<first 12 hex of the file's sha256>`.
pub fn image_tag(product: &str, target: &str, containerfile: &str) -> String {
    let digest = hex::encode(Sha256::digest(containerfile.as_bytes()));
    format!("localhost/{product}-builder-{target}:{}", &digest[..12])
}

pub fn run(
    cx: &Context,
    engine: &'static str,
    target: &Target,
    flags: &PackageFlags,
    dist: &Path,
) -> Result<PackageResult> {
    let sh = cx.sh;
    if crate::tools::find_on_path(engine).is_none() {
        bail!("--builder {engine}: `{engine}` is not installed");
    }
    let root = &cx.layout.root;
    let file = render(
        &root.join("templates"),
        &cx.layout.recipes,
        engine,
        target,
        flags.image.as_deref(),
    )?;
    let tag = image_tag(&cx.product.name, &target.name, &file);
    let dir = cx.layout.work.join("containers").join(&target.name);
    fs::create_dir_all(&dir)?;
    fs::write(dir.join("Containerfile"), &file)?;

    let exists = match engine {
        "podman" => cmd!(sh, "podman image exists {tag}").quiet().run().is_ok(),
        _ => cmd!(sh, "{engine} image inspect {tag}")
            .quiet()
            .ignore_stdout()
            .ignore_stderr()
            .run()
            .is_ok(),
    };
    if exists {
        eprintln!("==> {engine}: reusing image {tag}");
    } else {
        eprintln!(
            "==> {engine}: building image {tag} from {}",
            dir.join("Containerfile").display()
        );
        cmd!(
            sh,
            "{engine} build --network host -t {tag} -f {dir}/Containerfile {dir}"
        )
        .run()
        .with_context(|| format!("{engine} could not build the builder image {tag}"))?;
    }

    // The host's Rust toolchain, mounted read-only like cross-rs does: the
    // same compiler builds every target, and rustup's builds run on glibc
    // 2.17. The registry is shared so crates are downloaded once.
    let sysroot = cmd!(sh, "rustc --print sysroot").quiet().read()?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let registry = cargo_home.join("registry");
    fs::create_dir_all(&registry)?;
    fs::create_dir_all(&cx.layout.cache)?;
    fs::create_dir_all(dist)?;

    let inner_work = format!("/work/target/{}/{engine}-{}", cx.product.name, target.name);
    let mut args = cx.global_args.clone();
    args.push("--work-dir".into());
    args.push(inner_work);
    args.extend(inner_args(flags, target, "/dist"));
    // Files written by the container's root: rootless podman maps them to
    // the caller already; otherwise hand them to the caller.
    // SAFETY: getuid/getgid cannot fail.
    let (uid, gid) = unsafe { (libc::getuid(), libc::getgid()) };
    let owner = if engine == "podman" && uid != 0 {
        "0:0".to_string()
    } else {
        format!("{uid}:{gid}")
    };
    let script = "cargo xtask \"$@\"; rc=$?; chown -R \"$OWNER\" /dist \"$CARGO_TARGET_DIR\" /work/target 2>/dev/null; exit $rc";
    let source_date = match flags.source_date_epoch {
        Some(t) => t.to_string(),
        None => cmd!(sh, "git -C {root} log -1 --format=%ct")
            .quiet()
            .read()?,
    };
    let mount = |host: &Path, inside: &str, ro: bool| -> Result<String> {
        Ok(format!(
            "{}:{inside}{}",
            utf8(host)?,
            if ro { ":ro" } else { "" }
        ))
    };
    let mut command = Command::new(engine);
    command.args(["run", "--rm", "--network", "host"]);
    for v in [
        mount(root, "/work", false)?,
        mount(&cx.layout.cache, "/cache", false)?,
        mount(Path::new(sysroot.trim()), "/opt/rust", true)?,
        mount(&registry, "/cargo-home/registry", false)?,
        mount(dist, "/dist", false)?,
    ] {
        command.args(["-v", &v]);
    }
    if let Some(key) = &flags.sign_key {
        let key = key
            .canonicalize()
            .with_context(|| format!("signing key {}", key.display()))?;
        command.args(["-v", &mount(&key, "/run/sign-key.asc", true)?]);
        args.push("--sign-key".into());
        args.push("/run/sign-key.asc".into());
    }
    command.args([
        "-e",
        &format!("OWNER={owner}"),
        "-e",
        &format!("SOURCE_DATE_EPOCH={}", source_date.trim()),
        "-e",
        // Per image: objects built against one distribution's glibc never
        // mix with another's; kept in the cache so the next run, from any
        // clone, reuses them.
        &format!(
            "CARGO_TARGET_DIR=/cache/cargo-target/{}",
            tag.trim_start_matches("localhost/")
                .replace([':', '/'], "-")
        ),
        "-w",
        "/work",
        &tag,
        "sh",
        "-c",
        script,
        "sh",
    ]);
    command.args(&args);
    eprintln!(
        "==> {engine}: cargo xtask {} (in {tag}; /work is {})",
        args.join(" "),
        root.display()
    );
    let status = command
        .status()
        .with_context(|| format!("cannot run {engine}"))?;
    if !status.success() {
        bail!(
            "the {} build in {engine} failed ({status}); paths above under /work are in {}",
            target.name,
            root.display()
        );
    }
    let release = match &target.dist {
        Some(d) => format!("{}.{d}", flags.rpm_release),
        None => flags.rpm_release.to_string(),
    };
    let version = crate::package::agent_version()?;
    let name = &cx.product.name;
    let rpm = dist.join(format!("{name}-{version}-{release}.x86_64.rpm"));
    if !rpm.is_file() {
        bail!("the {engine} build succeeded but left no {}", rpm.display());
    }
    Ok(PackageResult {
        rpm,
        manifest: dist.join(format!("{name}-{version}-{release}.manifest.json")),
    })
}
