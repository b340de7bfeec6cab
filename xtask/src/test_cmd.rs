//! `cargo xtask test`: the README's test command. Builds the prefix first
//! (cached), then runs the workspace's tests with the -sys crates pointed at
//! the staged prefix, so no test silently links the host's libraries.

use anyhow::Result;
use xshell::{cmd, Shell};

use crate::layout::StagedPrefix;

/// Environment that makes -sys crates build against the stage.
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

pub fn run(sh: &Shell, staged: &StagedPrefix, cargo_args: &[String]) -> Result<()> {
    let env = prefix_env(staged);
    cmd!(sh, "cargo test --workspace {cargo_args...}")
        .envs(env)
        .run()?;
    Ok(())
}
