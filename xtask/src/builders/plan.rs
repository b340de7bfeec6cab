//! Which machine and compiler build a target: `--builder auto|host|zig|
//! podman|docker|vagrant`. `host` and `zig` build here (a
//! [`LocalKind`] of toolchain); the others run `cargo xtask package
//! --builder host` inside a container or a VM of the target's distribution.

use std::ffi::CStr;

use anyhow::{bail, Result};

use crate::flags::BuilderKind;
use crate::targets::Target;
use crate::toolchain::LocalKind;
use crate::version::Version;

/// How a target is built.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Plan {
    /// Here, with the host compiler or zig for this glibc.
    Local(LocalKind),
    /// Inside a container engine (`podman` or `docker`).
    Container(&'static str),
    Vagrant,
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
