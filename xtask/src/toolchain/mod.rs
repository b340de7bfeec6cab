//! The compilers that build here: the host's own, or zig for a target's
//! glibc (`zig.rs`). Both the prefix's libraries and the agent are built
//! with one, and the build cache keys on which.

use anyhow::{Context, Result};
use xshell::{cmd, Shell};

use crate::targets::ZigPin;
use crate::version::Version;

pub mod zig;

use zig::ZigToolchain;

/// Which local toolchain: the host's compiler, or zig for this glibc.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum LocalKind {
    Host,
    Zig(Version),
}

impl LocalKind {
    /// Names the work directory and the agent's cargo target directory.
    pub fn id(&self) -> String {
        match self {
            LocalKind::Host => "host".into(),
            LocalKind::Zig(glibc) => format!("zig-glibc{glibc}"),
        }
    }
}

/// A compiler set-up on this machine.
#[derive(Debug, Clone)]
pub enum Toolchain {
    Host,
    Zig(ZigToolchain),
}

impl Toolchain {
    /// Installs what `kind` needs (zig, cargo-zigbuild) on first use.
    pub fn prepare(
        sh: &Shell,
        kind: &LocalKind,
        cache: &std::path::Path,
        pin: &ZigPin,
    ) -> Result<Toolchain> {
        Ok(match kind {
            LocalKind::Host => Toolchain::Host,
            LocalKind::Zig(glibc) => Toolchain::Zig(zig::ensure(sh, cache, pin, glibc)?),
        })
    }

    pub fn kind(&self) -> LocalKind {
        match self {
            Toolchain::Host => LocalKind::Host,
            Toolchain::Zig(z) => LocalKind::Zig(z.glibc.clone()),
        }
    }

    /// What the build cache keys on: a different compiler or glibc never
    /// reuses another's objects; targets built identically share them.
    pub fn identity(&self, sh: &Shell) -> Result<BuilderIdentity> {
        match self {
            Toolchain::Host => BuilderIdentity::detect(sh),
            Toolchain::Zig(z) => Ok(BuilderIdentity {
                compiler: format!("zig {}", z.version),
                target: z.c_target(),
            }),
        }
    }

    /// Environment for every recipe step.
    pub fn c_env(&self) -> Vec<(String, String)> {
        match self {
            Toolchain::Host => Vec::new(),
            Toolchain::Zig(z) => z.c_env(),
        }
    }
}

/// Which compiler builds for which target: a different one must not reuse
/// another's objects.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BuilderIdentity {
    pub compiler: String,
    pub target: String,
}

impl BuilderIdentity {
    pub fn detect(sh: &Shell) -> Result<BuilderIdentity> {
        let version = cmd!(sh, "cc --version")
            .quiet()
            .read()
            .context("cannot run `cc --version`")?;
        let target = cmd!(sh, "cc -dumpmachine")
            .quiet()
            .read()
            .context("cannot run `cc -dumpmachine`")?;
        Ok(BuilderIdentity {
            compiler: version.lines().next().unwrap_or_default().to_string(),
            target: target.trim().to_string(),
        })
    }
}
