//! `cargo xtask agent`: builds the agent in release mode against the staged
//! prefix and installs it as `<stage>/<prefix>/bin/<name>`, where its
//! `$ORIGIN/../lib` RUNPATH finds the prefix's libraries.

use std::fs;
use std::path::PathBuf;

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::layout::{workspace_root, StagedPrefix};
use crate::test_cmd::prefix_env;

pub fn run(sh: &Shell, staged: &StagedPrefix, name: &str) -> Result<PathBuf> {
    let _dir = sh.push_dir(workspace_root());
    eprintln!(
        "==> agent: cargo build --release -p my-agent (against {})",
        staged.path().display()
    );
    cmd!(sh, "cargo build --release --locked -p my-agent")
        .envs(prefix_env(staged))
        .run()
        .context("building the agent failed")?;
    let built = workspace_root().join("target/release/my-agent");
    let bin_dir = staged.path().join("bin");
    fs::create_dir_all(&bin_dir)?;
    let installed = bin_dir.join(name);
    fs::copy(&built, &installed).with_context(|| {
        format!(
            "cannot install {} as {}",
            built.display(),
            installed.display()
        )
    })?;
    eprintln!("==> agent: installed {}", installed.display());
    Ok(installed)
}
