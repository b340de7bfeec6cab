//! Build tools that recipes need, and checking (or installing) them before
//! anything is built, so a missing `cmake` fails in the first second and not
//! twenty minutes into a build.

use std::collections::BTreeMap;
use std::env;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;
use xshell::{cmd, Shell};

/// `recipes/tools.toml`: tool name -> packages that provide it.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct ToolTable(BTreeMap<String, ToolPackages>);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPackages {
    pub apt: String,
    pub dnf: String,
}

impl ToolTable {
    pub fn load(path: &Path) -> Result<ToolTable> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))
    }

    pub fn contains(&self, tool: &str) -> bool {
        self.0.contains_key(tool)
    }
}

pub fn find_on_path(program: &str) -> Option<PathBuf> {
    let path = env::var_os("PATH")?;
    env::split_paths(&path)
        .map(|dir| dir.join(program))
        .find(|candidate| is_executable(candidate))
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[derive(Debug, Clone, Copy, PartialEq)]
enum PackageManager {
    Apt,
    Dnf,
    Yum,
}

impl PackageManager {
    fn detect() -> Option<PackageManager> {
        if find_on_path("apt-get").is_some() {
            Some(PackageManager::Apt)
        } else if find_on_path("dnf").is_some() {
            Some(PackageManager::Dnf)
        } else if find_on_path("yum").is_some() {
            Some(PackageManager::Yum)
        } else {
            None
        }
    }

    fn program(self) -> &'static str {
        match self {
            PackageManager::Apt => "apt-get",
            PackageManager::Dnf => "dnf",
            PackageManager::Yum => "yum",
        }
    }
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() == 0 }
}

/// Makes sure every tool in `needed` is on PATH. Missing tools are installed
/// when running as root with apt or dnf/yum; otherwise the error gives the
/// exact command to run.
pub fn ensure(sh: &Shell, table: &ToolTable, needed: &[String]) -> Result<()> {
    let missing: Vec<&String> = needed
        .iter()
        .filter(|t| find_on_path(t).is_none())
        .collect();
    if missing.is_empty() {
        return Ok(());
    }
    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    let Some(pm) = PackageManager::detect() else {
        bail!(
            "missing build tools: {}; install them with your system's package manager",
            names.join(", ")
        );
    };
    let mut packages: Vec<&str> = missing
        .iter()
        .map(|t| match pm {
            PackageManager::Apt => table.0[t.as_str()].apt.as_str(),
            PackageManager::Dnf | PackageManager::Yum => table.0[t.as_str()].dnf.as_str(),
        })
        .collect();
    packages.sort();
    packages.dedup();
    let program = pm.program();
    let command = format!("{program} install -y {}", packages.join(" "));
    if !is_root() {
        bail!(
            "missing build tools: {}; install them with:\n    sudo {command}",
            names.join(", ")
        );
    }
    eprintln!(
        "==> missing build tools: {}; running: {command}",
        names.join(", ")
    );
    if pm == PackageManager::Apt {
        // A fresh machine may have no package lists at all.
        cmd!(sh, "apt-get update -qq")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()?;
    }
    cmd!(sh, "{program} install -y {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .with_context(|| format!("`{command}` failed"))?;
    let still: Vec<&str> = names
        .iter()
        .copied()
        .filter(|t| find_on_path(t).is_none())
        .collect();
    if !still.is_empty() {
        bail!("still missing after `{command}`: {}", still.join(", "));
    }
    Ok(())
}
