//! Build targets as data (`recipes/targets.toml`): each distribution's glibc
//! ceiling, dist tag, payload compression, systemd flavour, builder image,
//! Vagrant box and zig glibc; plus the pinned zig toolchain.

use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};

use crate::version::Version;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct TargetsFile {
    target: BTreeMap<String, TargetSpec>,
    zig: ZigPin,
    rustup: RustupPin,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct TargetSpec {
    description: String,
    glibc: String,
    dist: Option<String>,
    compression: String,
    compression_level: u32,
    systemd: u32,
    image: Option<String>,
    #[serde(default)]
    prepare: Vec<String>,
    packages: String,
    vagrant_box: Option<String>,
    zig_glibc: Option<String>,
    all: bool,
    /// What its rpm accepts; none for a target with no rules (the host).
    rpm: Option<RpmRules>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
/// What one target's rpm accepts (`[target.NAME.rpm]`); `rpm_rules`
/// holds packages and keys to it.
pub struct RpmRules {
    /// The rpm release the target ships, for messages.
    pub version: String,
    /// The `rpmlib()` features it provides (`rpm --showrc` lists them).
    pub rpmlib: Vec<String>,
    /// Payload compressors it reads: gzip, xz, bzip2, zstd.
    pub payload_compressors: Vec<String>,
    /// File digest algorithms it verifies: md5, sha256, sha384, sha512.
    pub file_digests: Vec<String>,
    /// OpenPGP algorithms whose signatures it verifies: rsa, dsa, eddsa.
    pub signature_algorithms: Vec<String>,
    /// Whether it verifies a signature made by a signing subkey.
    pub signing_subkeys: bool,
    /// Whether it imports a key whose self-signatures use SHA-1.
    pub sha1_self_signatures: bool,
}

impl RpmRules {
    /// "target el7 (rpm 4.11.3)", for messages.
    pub fn name(&self, target: &Target) -> String {
        format!("target {} (rpm {})", target.name, self.version)
    }
}

/// The RPM payload compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    Gzip(u32),
    Xz(u32),
}

/// The package manager of a target's image.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum PackageManager {
    Apt,
    Dnf,
    Yum,
}

/// One distribution an RPM is built for.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub description: String,
    /// The newest GLIBC_ version the target provides; None: no ceiling.
    pub glibc: Option<Version>,
    pub dist: Option<String>,
    pub compression: Compression,
    pub systemd: u32,
    pub image: Option<String>,
    pub prepare: Vec<String>,
    pub packages: PackageManager,
    pub vagrant_box: Option<String>,
    pub zig_glibc: Option<Version>,
    pub in_all: bool,
    /// What its rpm accepts (`[target.NAME.rpm]`); None: not checked.
    pub rpm: Option<RpmRules>,
}

impl Target {
    /// The host target, for callers that need no file (unit tests, benches).
    pub fn host() -> Target {
        Target {
            name: "host".into(),
            description: "the build host".into(),
            glibc: None,
            dist: None,
            compression: Compression::Xz(6),
            systemd: 252,
            image: None,
            prepare: Vec::new(),
            packages: PackageManager::Apt,
            vagrant_box: None,
            zig_glibc: None,
            in_all: false,
            rpm: None,
        }
    }

    pub fn glibc_ceiling(&self) -> Option<&Version> {
        self.glibc.as_ref()
    }
}

/// The pinned zig toolchain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZigPin {
    pub version: String,
    pub wheel: String,
    pub sha256: String,
    pub cargo_zigbuild: String,
}

/// rustup-init for builders that install Rust themselves (Vagrant).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RustupPin {
    pub version: String,
    pub url: String,
    pub sha256: String,
}

pub struct TargetTable {
    pub targets: Vec<Target>,
    pub zig: ZigPin,
    pub rustup: RustupPin,
}

impl TargetTable {
    pub fn load(path: &Path) -> Result<TargetTable> {
        let text =
            fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
        let file: TargetsFile = toml::from_str(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.to_string().trim_end()))?;
        let mut targets = Vec::new();
        for (name, spec) in file.target {
            let t = convert(&name, spec)
                .with_context(|| format!("{}: [target.{name}]", path.display()))?;
            targets.push(t);
        }
        for (what, sha) in [
            ("[zig]", &file.zig.sha256),
            ("[rustup]", &file.rustup.sha256),
        ] {
            if sha.len() != 64 || !sha.bytes().all(|b| b.is_ascii_hexdigit()) {
                bail!("{}: {what} sha256 must be 64 hex digits", path.display());
            }
        }
        Ok(TargetTable {
            targets,
            zig: file.zig,
            rustup: file.rustup,
        })
    }

    /// `--target NAME` or `all`.
    pub fn select(&self, name: &str) -> Result<Vec<Target>> {
        if name == "all" {
            return Ok(self.targets.iter().filter(|t| t.in_all).cloned().collect());
        }
        match self.targets.iter().find(|t| t.name == name) {
            Some(t) => Ok(vec![t.clone()]),
            None => bail!(
                "unknown target `{name}` (expected all, {})",
                self.targets
                    .iter()
                    .map(|t| t.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }
}

fn version(field: &str, s: &str) -> Result<Version> {
    Version::parse(s).with_context(|| format!("`{field} = \"{s}\"`: expected a version like 2.17"))
}

fn convert(name: &str, s: TargetSpec) -> Result<Target> {
    if !name
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        || name == "all"
    {
        bail!("target names are lowercase letters and digits (and not `all`)");
    }
    let glibc = match s.glibc.as_str() {
        "none" => None,
        v => Some(version("glibc", v)?),
    };
    let compression = match s.compression.as_str() {
        "gzip" => Compression::Gzip(s.compression_level.clamp(1, 9)),
        "xz" => Compression::Xz(s.compression_level.clamp(0, 9)),
        other => bail!("`compression = \"{other}\"`: expected gzip or xz (rpm 4.11 reads no zstd)"),
    };
    let packages = match s.packages.as_str() {
        "apt" => PackageManager::Apt,
        "dnf" => PackageManager::Dnf,
        "yum" => PackageManager::Yum,
        other => bail!("`packages = \"{other}\"`: expected apt, dnf or yum"),
    };
    let zig_glibc = s
        .zig_glibc
        .as_deref()
        .map(|v| version("zig_glibc", v))
        .transpose()?;
    if let (Some(z), Some(c)) = (&zig_glibc, &glibc) {
        if z > c {
            bail!("zig_glibc {z} is newer than the target's glibc {c}");
        }
    }
    if let Some(rules) = &s.rpm {
        let payload = match compression {
            Compression::Gzip(_) => "gzip",
            Compression::Xz(_) => "xz",
        };
        if !rules.payload_compressors.iter().any(|c| c == payload) {
            bail!(
                "`compression = \"{payload}\"`: rpm {} reads {}",
                rules.version,
                rules.payload_compressors.join(", ")
            );
        }
    }
    Ok(Target {
        name: name.to_string(),
        description: s.description,
        glibc,
        dist: s.dist,
        compression,
        systemd: s.systemd,
        image: s.image,
        prepare: s.prepare,
        packages,
        vagrant_box: s.vagrant_box,
        zig_glibc,
        in_all: s.all,
        rpm: s.rpm,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_table() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/targets.toml");
        let table = TargetTable::load(&path).unwrap();
        let all: Vec<String> = table
            .select("all")
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
        assert_eq!(all, ["el7", "el8", "el9"]);
        let el7 = &table.select("el7").unwrap()[0];
        assert_eq!(el7.glibc, Some(Version(vec![2, 17])));
        assert_eq!(el7.dist.as_deref(), Some("el7"));
        assert!(
            matches!(el7.compression, Compression::Gzip(_) | Compression::Xz(_)),
            "rpm 4.11 reads only gzip and xz"
        );
        assert_eq!(el7.systemd, 219);
        let host = &table.select("host").unwrap()[0];
        assert!(host.glibc.is_none() && host.dist.is_none());
        let e = table.select("el6").unwrap_err().to_string();
        assert!(e.contains("expected all, el7, el8, el9, host"), "{e}");
    }

    #[test]
    fn bad_entries_are_named() {
        let tmp = tempfile::tempdir().unwrap();
        let path = tmp.path().join("targets.toml");
        let text = fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../recipes/targets.toml"),
        )
        .unwrap()
        .replacen("compression = \"gzip\"", "compression = \"zstd\"", 1);
        fs::write(&path, text).unwrap();
        let e = format!("{:#}", TargetTable::load(&path).err().unwrap());
        assert!(e.contains("[target.el7]") && e.contains("zstd"), "{e}");
    }
}
