//! `cargo xtask test`: the README's test command. Builds the prefix first
//! (cached), then runs the workspace's tests with the -sys crates pointed at
//! the staged prefix, so no test silently links the host's libraries.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::layout::{Layout, StagedPrefix};
use crate::package::agent_build::prefix_env;
use crate::tools::{self, ToolTable};

/// Installs what the tests need (`recipes/test-tools.toml`) when it is
/// missing, then runs every test of the workspace against the stage.
pub fn run(
    sh: &Shell,
    staged: &StagedPrefix,
    layout: &Layout,
    cargo_args: &[String],
) -> Result<()> {
    let table = ToolTable::load(&layout.recipes.join("test-tools.toml"))?;
    let pip_dir = layout.cache.join("tools/pip");
    tools::ensure(sh, &table, &table.names(), &pip_dir)?;
    let path = format!(
        "{}:{}",
        pip_dir.join("bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let mut env = prefix_env(staged);
    env.push(("PATH".into(), path));
    // pip's --target puts the wheel's modules beside its scripts.
    env.push(("PYTHONPATH".into(), pip_dir.display().to_string()));
    // Every test binary runs even after one fails: CI shows all failures.
    cmd!(sh, "cargo test --workspace --no-fail-fast {cargo_args...}")
        .envs(env)
        .run()?;
    Ok(())
}
