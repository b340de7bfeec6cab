//! Which machine and compiler build a target: `--builder auto|host|zig|
//! podman|docker|vagrant`. `host` and `zig` build here (a [`Toolchain`]);
//! the others run `cargo xtask package --builder host` inside a container
//! or a VM of the target's distribution.

use std::ffi::CStr;

use anyhow::{bail, Result};
use clap::ValueEnum;
use xshell::Shell;

use crate::build_cache::BuilderIdentity;
use crate::health::Version;
use crate::targets::{Target, ZigPin};
use crate::zig::{self, ZigToolchain};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BuilderKind {
    /// host when the host's glibc is within the target's ceiling, else zig
    Auto,
    /// the host's own compiler and glibc
    Host,
    /// zig cc and cargo-zigbuild against the target's glibc: no container, no root
    Zig,
    /// a podman container of the target's distribution
    Podman,
    /// a docker container of the target's distribution
    Docker,
    /// a Vagrant box of the target's distribution
    Vagrant,
}

/// How a target is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Here, with the host compiler or zig for this glibc.
    Local(LocalKind),
    /// Inside a container engine (`podman` or `docker`).
    Container(&'static str),
    Vagrant,
}

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

/// The glibc this process runs on (so the host's), e.g. 2.36.
pub fn host_glibc() -> Option<Version> {
    // SAFETY: gnu_get_libc_version returns a static NUL-terminated string.
    let s = unsafe { CStr::from_ptr(libc::gnu_get_libc_version()) };
    Version::parse(s.to_str().ok()?)
}

/// Decides how `target` is built with `--builder kind` on a host whose
/// glibc is `host`.
pub fn plan(kind: BuilderKind, target: &Target, host: Option<&Version>) -> Result<Plan> {
    let zig = || -> Result<Plan> {
        let glibc = target
            .zig_glibc
            .clone()
            .or_else(|| target.glibc.clone())
            .or_else(|| host.cloned());
        match glibc {
            Some(g) => Ok(Plan::Local(LocalKind::Zig(g))),
            None => bail!(
                "target `{}` names no zig_glibc and the host's glibc is unknown",
                target.name
            ),
        }
    };
    Ok(match kind {
        BuilderKind::Host => Plan::Local(LocalKind::Host),
        BuilderKind::Zig => zig()?,
        BuilderKind::Podman => Plan::Container("podman"),
        BuilderKind::Docker => Plan::Container("docker"),
        BuilderKind::Vagrant => Plan::Vagrant,
        BuilderKind::Auto => match (target.glibc_ceiling(), host) {
            (None, _) => Plan::Local(LocalKind::Host),
            (Some(ceiling), Some(h)) if h <= ceiling => Plan::Local(LocalKind::Host),
            _ => zig()?,
        },
    })
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::targets::TargetTable;

    fn table() -> TargetTable {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/targets.toml");
        TargetTable::load(&path).unwrap()
    }

    #[test]
    fn auto_uses_the_host_only_within_the_ceiling() {
        let t = table();
        let el7 = &t.select("el7").unwrap()[0];
        let el9 = &t.select("el9").unwrap()[0];
        let host = &t.select("host").unwrap()[0];
        let v = |s: &str| Version::parse(s).unwrap();
        // A Debian bookworm host (2.36) builds every EL target through zig.
        assert_eq!(
            plan(BuilderKind::Auto, el7, Some(&v("2.36"))).unwrap(),
            Plan::Local(LocalKind::Zig(v("2.17")))
        );
        // A CentOS 7 host builds el7 natively; an EL9 host builds el9.
        assert_eq!(
            plan(BuilderKind::Auto, el7, Some(&v("2.17"))).unwrap(),
            Plan::Local(LocalKind::Host)
        );
        assert_eq!(
            plan(BuilderKind::Auto, el9, Some(&v("2.34"))).unwrap(),
            Plan::Local(LocalKind::Host)
        );
        assert_eq!(
            plan(BuilderKind::Auto, host, Some(&v("2.36"))).unwrap(),
            Plan::Local(LocalKind::Host)
        );
        assert_eq!(
            plan(BuilderKind::Podman, el7, None).unwrap(),
            Plan::Container("podman")
        );
        assert!(host_glibc().is_some());
    }
}
