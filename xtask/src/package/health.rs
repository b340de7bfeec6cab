//! The payload's health check, run before any package is written: every ELF
//! loads its libraries from the prefix or from the base system, carries no
//! RUNPATH into the build tree, and needs no newer glibc than the target
//! distribution has.

use std::collections::BTreeSet;
use std::fs;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

use crate::targets::Target;
use crate::version::Version;

/// Libraries every target system provides (glibc family, libgcc_s,
/// libstdc++, the dynamic loader). Anything else must be in the prefix.
pub const BASE_SYSTEM: &[&str] = &[
    "libc.so.6",
    "libm.so.6",
    "libpthread.so.0",
    "libdl.so.2",
    "librt.so.1",
    "libutil.so.1",
    "libresolv.so.2",
    "libgcc_s.so.1",
    "libstdc++.so.6",
    "ld-linux-x86-64.so.2",
    "ld-linux-aarch64.so.1",
];

/// What one ELF file needs.
#[derive(Debug)]
pub struct ElfInfo {
    /// Path inside the payload, e.g. /opt/my-agent/lib/libssl.so.3.
    pub path: String,
    pub needed: Vec<String>,
    pub runpath: Vec<String>,
    /// (library, version name) pairs from the version-needs section.
    pub versions: Vec<(String, String)>,
}

impl ElfInfo {
    /// The newest GLIBC_ version this one file needs.
    pub fn max_glibc(&self) -> Option<Version> {
        let mut max = None;
        for (_, version) in &self.versions {
            max_version(&mut max, version, "GLIBC_");
        }
        max
    }
}

#[derive(Debug, Default)]
pub struct HealthReport {
    pub elves: Vec<ElfInfo>,
    pub max_glibc: Option<Version>,
    pub max_glibcxx: Option<Version>,
    pub max_openssl: Option<Version>,
    /// The agent binary links jemalloc itself (no LD_PRELOAD needed).
    pub agent_links_jemalloc: bool,
    pub problems: Vec<String>,
}

impl HealthReport {
    /// rpm-style requirements on base-system libraries, e.g.
    /// `libc.so.6()(64bit)` and `libc.so.6(GLIBC_2.17)(64bit)`.
    pub fn requires(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for elf in &self.elves {
            for lib in &elf.needed {
                if BASE_SYSTEM.contains(&lib.as_str()) {
                    out.insert(format!("{lib}()(64bit)"));
                }
            }
            for (lib, version) in &elf.versions {
                if BASE_SYSTEM.contains(&lib.as_str()) {
                    out.insert(format!("{lib}({version})(64bit)"));
                }
            }
        }
        out
    }
}

fn max_version(current: &mut Option<Version>, name: &str, prefix: &str) {
    if let Some(v) = name.strip_prefix(prefix).and_then(Version::parse) {
        if current.as_ref().is_none_or(|c| v > *c) {
            *current = Some(v);
        }
    }
}

/// Checks every ELF under `root` (the payload, laid out as installed).
/// `prefix` is the install prefix; `agent` the agent's installed path.
pub fn check(root: &Path, prefix: &str, agent: &str, target: &Target) -> Result<HealthReport> {
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let prefix_root = root.join(prefix.trim_start_matches('/'));
    let mut report = HealthReport::default();
    let mut elves = Vec::new();
    for file in files {
        let bytes = fs::read(&file).with_context(|| format!("cannot read {}", file.display()))?;
        if bytes.len() < 4 || &bytes[..4] != b"\x7fELF" {
            continue;
        }
        let installed = format!("/{}", file.strip_prefix(root).unwrap_or(&file).display());
        let elf = goblin::elf::Elf::parse(&bytes)
            .with_context(|| format!("{installed}: not a valid ELF file"))?;
        let mut versions = Vec::new();
        if let Some(verneed) = &elf.verneed {
            for need in verneed.iter() {
                let lib = elf.dynstrtab.get_at(need.vn_file).unwrap_or("").to_string();
                for aux in need.iter() {
                    let name = elf.dynstrtab.get_at(aux.vna_name).unwrap_or("").to_string();
                    versions.push((lib.clone(), name));
                }
            }
        }
        let mut runpath: Vec<String> = elf
            .runpaths
            .iter()
            .chain(&elf.rpaths)
            .flat_map(|r| r.split(':'))
            .map(String::from)
            .collect();
        runpath.retain(|r| !r.is_empty());
        elves.push((
            file.clone(),
            ElfInfo {
                path: installed,
                needed: elf.libraries.iter().map(|s| s.to_string()).collect(),
                runpath,
                versions,
            },
        ));
    }

    for (file, info) in &elves {
        for lib in &info.needed {
            if BASE_SYSTEM.contains(&lib.as_str()) {
                continue;
            }
            // A prefix library must be found through an $ORIGIN RUNPATH.
            let found = info.runpath.iter().any(|r| {
                r.starts_with("$ORIGIN")
                    && file
                        .parent()
                        .map(|dir| dir.join(r.replacen("$ORIGIN", ".", 1)).join(lib))
                        .is_some_and(|p| {
                            p.exists()
                                && p.canonicalize().is_ok_and(|c| c.starts_with(&prefix_root))
                        })
            });
            if !found {
                report.problems.push(format!(
                    "{}: NEEDED {lib} is neither a base-system library nor found in the prefix through an $ORIGIN RUNPATH ({})",
                    info.path,
                    if info.runpath.is_empty() { "no RUNPATH".to_string() } else { info.runpath.join(":") }
                ));
            }
        }
        for r in &info.runpath {
            if !r.starts_with("$ORIGIN") && !r.starts_with(prefix) {
                report.problems.push(format!(
                    "{}: RUNPATH {r} points outside the prefix (the build tree?)",
                    info.path
                ));
            }
        }
        for (lib, version) in &info.versions {
            if lib.starts_with("libc.so")
                || lib.starts_with("libm.so")
                || lib.starts_with("libpthread")
                || lib.starts_with("libdl")
                || lib.starts_with("librt")
                || lib.starts_with("ld-linux")
            {
                max_version(&mut report.max_glibc, version, "GLIBC_");
            }
            max_version(&mut report.max_glibcxx, version, "GLIBCXX_");
            max_version(&mut report.max_openssl, version, "OPENSSL_");
            if let (Some(ceiling), Some(v)) = (
                target.glibc_ceiling(),
                version.strip_prefix("GLIBC_").and_then(Version::parse),
            ) {
                if v > *ceiling {
                    report.problems.push(format!(
                        "{}: needs {version} from {lib}, newer than {} provides (glibc {ceiling}); \
                         build with `--builder zig` (or auto) for this target",
                        info.path,
                        target.name,
                    ));
                }
            }
        }
        if info.path == agent && info.needed.iter().any(|l| l.starts_with("libjemalloc")) {
            report.agent_links_jemalloc = true;
        }
    }
    report.elves = elves.into_iter().map(|(_, i)| i).collect();
    Ok(report)
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in fs::read_dir(dir).with_context(|| format!("cannot read {}", dir.display()))? {
        let path = entry?.path();
        let meta = fs::symlink_metadata(&path)?;
        if meta.is_dir() {
            walk(&path, out)?;
        } else if meta.is_file() {
            out.push(path);
        }
    }
    Ok(())
}
