//! `cargo xtask agent`: builds the agent in release mode against the staged
//! prefix and installs it as `<stage>/<prefix>/bin/<name>`, where its
//! `$ORIGIN/../lib` RUNPATH finds the prefix's libraries.

use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::layout::{workspace_root, StagedPrefix};
use crate::toolchain::Toolchain;

/// Environment that makes -sys crates build against the stage (the
/// agent here, every test of the workspace in `cargo xtask test`).
pub fn prefix_env(staged: &StagedPrefix) -> Vec<(String, String)> {
    let p = staged.path().display().to_string();
    vec![
        ("OPENSSL_DIR".into(), p.clone()),
        ("OPENSSL_NO_VENDOR".into(), "1".into()),
        ("PKG_CONFIG_PATH".into(), format!("{p}/lib/pkgconfig")),
        // The .pc files say /opt/my-agent; the sysroot maps that to the stage.
        (
            "PKG_CONFIG_SYSROOT_DIR".into(),
            staged.root.display().to_string(),
        ),
        (
            "JEMALLOC_OVERRIDE".into(),
            format!("{p}/lib/libjemalloc.so"),
        ),
        ("MY_AGENT_STAGED_PREFIX".into(), p),
    ]
}

/// Builds the agent with `toolchain` and installs it in the stage.
/// `cache` holds the zig builder's cargo target directory, so a fresh clone
/// reuses the compiled dependencies.
pub fn run(
    sh: &Shell,
    staged: &StagedPrefix,
    name: &str,
    toolchain: &Toolchain,
    cache: &Path,
) -> Result<PathBuf> {
    let _dir = sh.push_dir(workspace_root());
    let built = match toolchain {
        Toolchain::Host => {
            eprintln!(
                "==> agent: cargo build --release -p my-agent (against {})",
                staged.path().display()
            );
            cmd!(sh, "cargo build --release --locked -p my-agent")
                .envs(prefix_env(staged))
                .run()
                .context("building the agent failed")?;
            // Inside a builder container CARGO_TARGET_DIR points at the
            // cache, so each image keeps its own compiled dependencies.
            std::env::var_os("CARGO_TARGET_DIR")
                .map(PathBuf::from)
                .unwrap_or_else(|| workspace_root().join("target"))
                .join("release/my-agent")
        }
        Toolchain::Zig(zig) => {
            let target = zig.rust_target();
            let target_dir = cache.join("cargo-target").join(toolchain.kind().id());
            eprintln!(
                "==> agent: cargo zigbuild --release --target {target} -p my-agent (against {})",
                staged.path().display()
            );
            cmd!(
                sh,
                "cargo zigbuild --release --locked -p my-agent --target {target} --target-dir {target_dir}"
            )
            .envs(prefix_env(staged))
            .envs(zig.cargo_env())
            .run()
            .context("building the agent with cargo-zigbuild failed")?;
            target_dir.join("x86_64-unknown-linux-gnu/release/my-agent")
        }
    };
    let bin_dir = staged.path().join("bin");
    fs::create_dir_all(&bin_dir)?;
    let installed = bin_dir.join(name);
    install_replacing(&built, &installed)?;
    eprintln!("==> agent: installed {}", installed.display());
    Ok(installed)
}

/// Copies `from` beside `to` and renames it over `to`: a running staged
/// agent keeps its (old) file, where copying onto it fails with "Text file
/// busy".
pub fn install_replacing(from: &Path, to: &Path) -> Result<()> {
    let tmp = to.with_file_name(format!(
        ".{}.tmp",
        to.file_name().unwrap_or_default().to_string_lossy()
    ));
    let _ = fs::remove_file(&tmp);
    fs::copy(from, &tmp)
        .with_context(|| format!("cannot copy {} to {}", from.display(), tmp.display()))?;
    fs::rename(&tmp, to)
        .with_context(|| format!("cannot rename {} to {}", tmp.display(), to.display()))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    /// Spawns `bin`, retrying while exec fails with ETXTBSY: another test
    /// thread that forks while `bin` is still open for writing (just copied)
    /// hands its child that descriptor until the child execs, so exec fails
    /// for a moment (a known race of tests that write and run executables
    /// in one process).
    fn spawn_when_not_busy(bin: &Path, args: &[&str]) -> std::process::Child {
        let mut tries = 0;
        loop {
            match Command::new(bin).args(args).spawn() {
                Err(e) if e.raw_os_error() == Some(libc::ETXTBSY) && tries < 200 => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                other => break other.unwrap(),
            }
        }
    }

    #[test]
    fn replaces_a_running_executable() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("agent");
        fs::copy("/bin/sleep", &bin).unwrap();
        let mut running = spawn_when_not_busy(&bin, &["30"]);
        // Writing onto a running executable fails with ETXTBSY.
        let busy = fs::write(&bin, b"x").unwrap_err();
        assert_eq!(busy.raw_os_error(), Some(libc::ETXTBSY), "{busy}");
        install_replacing(Path::new("/bin/true"), &bin).unwrap();
        let status = spawn_when_not_busy(&bin, &[]).wait().unwrap();
        assert!(status.success());
        running.kill().unwrap();
        running.wait().unwrap();
    }
}
