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

/// `recipes/tools.toml` (or `test-tools.toml`): tool name -> what provides it.
#[derive(Debug, Deserialize)]
#[serde(transparent)]
pub struct ToolTable(BTreeMap<String, ToolPackages>);

/// A system package for apt and for dnf/yum, or a pinned PyPI wheel.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolPackages {
    pub apt: Option<String>,
    pub dnf: Option<String>,
    /// `name==version`, installed with `pip install --require-hashes`.
    pub pip: Option<String>,
    pub pip_sha256: Option<String>,
    /// Files that prove it installed, for what is not a command on PATH
    /// (libraries a test peer loads, data a wheel ships; relative paths are
    /// inside the wheels' folder); else the entry's name is a command.
    #[serde(default)]
    pub present: Vec<PathBuf>,
}

impl ToolTable {
    pub fn load(path: &Path) -> Result<ToolTable> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let table: ToolTable = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        for (name, p) in &table.0 {
            let system = p.apt.is_some() && p.dnf.is_some();
            let pip = match (&p.pip, &p.pip_sha256) {
                (Some(spec), Some(sha)) => {
                    if !spec.contains("==") {
                        bail!(
                            "{}: [{name}] pip = \"{spec}\": expected name==version",
                            path.display()
                        );
                    }
                    if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                        bail!(
                            "{}: [{name}] pip_sha256 must be 64 hex digits",
                            path.display()
                        );
                    }
                    true
                }
                (None, None) => false,
                _ => bail!("{}: [{name}] needs both pip and pip_sha256", path.display()),
            };
            if system == pip {
                bail!(
                    "{}: [{name}] expected either apt and dnf packages or a pinned pip wheel",
                    path.display()
                );
            }
        }
        Ok(table)
    }

    pub fn contains(&self, tool: &str) -> bool {
        self.0.contains_key(tool)
    }

    /// Every tool's system package for apt (`dnf == false`) or dnf/yum,
    /// sorted, once each: what a builder image installs.
    pub fn all_packages(&self, dnf: bool) -> Vec<String> {
        let mut out: Vec<String> = self
            .0
            .values()
            .filter_map(|p| {
                if dnf {
                    p.dnf.as_deref()
                } else {
                    p.apt.as_deref()
                }
            })
            .flat_map(str::split_whitespace)
            .map(String::from)
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// Every tool in the table.
    pub fn names(&self) -> Vec<String> {
        self.0.keys().cloned().collect()
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
/// when running as root with apt or dnf/yum (pip wheels as any user, checked
/// against their sha256); otherwise the error gives the exact command to run.
/// Wheels go to `pip_dir` (`pip install --target`); their commands are in
/// `pip_dir/bin`, which callers put on PATH.
pub fn ensure(sh: &Shell, table: &ToolTable, needed: &[String], pip_dir: &Path) -> Result<()> {
    let found = |t: &str| match table.0.get(t).map(|p| &p.present) {
        // A wheel's files are named relative to where wheels go.
        Some(files) if !files.is_empty() => files.iter().all(|f| pip_dir.join(f).exists()),
        _ => find_on_path(t).is_some() || is_executable(&pip_dir.join("bin").join(t)),
    };
    let missing: Vec<&String> = needed.iter().filter(|t| !found(t)).collect();
    if missing.is_empty() {
        return Ok(());
    }
    let (wheels, system): (Vec<&String>, Vec<&String>) = missing
        .iter()
        .partition(|t| table.0[t.as_str()].pip.is_some());
    if !system.is_empty() {
        install_system(sh, table, &system)?;
    }
    if !wheels.is_empty() {
        install_wheels(sh, table, &wheels, pip_dir)?;
    }
    let still: Vec<&str> = missing
        .iter()
        .map(|t| t.as_str())
        .filter(|t| !found(t))
        .collect();
    if !still.is_empty() {
        bail!("still missing after installing them: {}", still.join(", "));
    }
    Ok(())
}

fn install_system(sh: &Shell, table: &ToolTable, missing: &[&String]) -> Result<()> {
    let names: Vec<&str> = missing.iter().map(|s| s.as_str()).collect();
    let Some(pm) = PackageManager::detect() else {
        bail!(
            "missing tools: {}; install them with your system's package manager",
            names.join(", ")
        );
    };
    // An entry may name several packages, separated by spaces.
    let mut packages: Vec<&str> = missing
        .iter()
        .filter_map(|t| match pm {
            PackageManager::Apt => table.0[t.as_str()].apt.as_deref(),
            PackageManager::Dnf | PackageManager::Yum => table.0[t.as_str()].dnf.as_deref(),
        })
        .flat_map(str::split_whitespace)
        .collect();
    packages.sort();
    packages.dedup();
    let program = pm.program();
    // No recommends: vagrant would otherwise pull in VirtualBox's world.
    let extra: &[&str] = match pm {
        PackageManager::Apt => &["--no-install-recommends"],
        _ => &[],
    };
    let command = format!(
        "{program} install -y {}{}",
        extra.iter().map(|e| format!("{e} ")).collect::<String>(),
        packages.join(" ")
    );
    if !is_root() {
        bail!(
            "missing tools: {}; install them with:\n    sudo {command}",
            names.join(", ")
        );
    }
    eprintln!(
        "==> missing tools: {}; running: {command}",
        names.join(", ")
    );
    if pm == PackageManager::Apt {
        // A fresh machine may have no package lists at all.
        cmd!(sh, "apt-get update -qq")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .run()?;
    }
    cmd!(sh, "{program} install -y {extra...} {packages...}")
        .env("DEBIAN_FRONTEND", "noninteractive")
        .run()
        .with_context(|| format!("`{command}` failed"))?;
    Ok(())
}

fn install_wheels(
    sh: &Shell,
    table: &ToolTable,
    missing: &[&String],
    pip_dir: &Path,
) -> Result<()> {
    let Some(python) = find_on_path("python3") else {
        bail!("missing tools {missing:?} come from pip, and python3 is not installed");
    };
    // --require-hashes: pip refuses a wheel whose digest is not the pinned one.
    let dir = tempfile::tempdir()?;
    let requirements = dir.path().join("requirements.txt");
    let mut text = String::new();
    for t in missing {
        let p = &table.0[t.as_str()];
        text.push_str(&format!(
            "{} --hash=sha256:{}\n",
            p.pip.as_deref().unwrap_or_default(),
            p.pip_sha256.as_deref().unwrap_or_default()
        ));
    }
    fs::write(&requirements, &text)?;
    eprintln!(
        "==> missing tools from pip: {}",
        text.trim().replace('\n', ", ")
    );
    cmd!(sh, "{python} -m pip install --quiet --no-deps --require-hashes --upgrade --target {pip_dir} -r {requirements}")
        .run()
        .with_context(|| format!("pip could not install:\n{text}"))?;
    Ok(())
}
