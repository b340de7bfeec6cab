//! The zig builder's toolchain, installed into the cache's tools directory
//! on first use: zig from the PyPI wheel `ziglang` (pinned by sha256 in
//! `recipes/targets.toml`, verified before it is unpacked) and
//! cargo-zigbuild (`cargo install --locked --version X`). Nothing needs root
//! and nothing outside the cache is written.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use xshell::{cmd, Shell};

use crate::file_tree::sha256_file;
use crate::targets::ZigPin;
use crate::tools::find_on_path;
use crate::version::Version;

/// An installed zig and cargo-zigbuild, and the wrappers that make `zig cc`
/// look like a plain C compiler to configure, libtool and cmake.
#[derive(Debug, Clone)]
pub struct ZigToolchain {
    pub version: String,
    /// The `zig` executable.
    pub zig: PathBuf,
    /// `cargo-zigbuild`'s directory, put on PATH for cargo.
    pub cargo_zigbuild_bin: PathBuf,
    /// Holds `cc`, `gcc`, `c++`, `g++` wrappers for `glibc`.
    pub wrappers: PathBuf,
    pub glibc: Version,
    /// ZIG_GLOBAL_CACHE_DIR: kept in the cache so glibc stubs and compiled
    /// libc start files are reused between builds and clones.
    pub zig_cache: PathBuf,
}

impl ZigToolchain {
    /// `x86_64-linux-gnu.2.17`: zig's target triple with the glibc version.
    pub fn c_target(&self) -> String {
        format!("x86_64-linux-gnu.{}", self.glibc)
    }

    /// `x86_64-unknown-linux-gnu.2.17`: cargo-zigbuild's.
    pub fn rust_target(&self) -> String {
        format!("x86_64-unknown-linux-gnu.{}", self.glibc)
    }

    /// Environment for a recipe's build steps: the wrappers first on PATH
    /// and as CC/CXX, so every `cc` a build system runs is zig's.
    pub fn c_env(&self) -> Vec<(String, String)> {
        let path = std::env::var("PATH").unwrap_or_default();
        vec![
            ("CC".into(), self.wrappers.join("cc").display().to_string()),
            (
                "CXX".into(),
                self.wrappers.join("c++").display().to_string(),
            ),
            ("PATH".into(), format!("{}:{path}", self.wrappers.display())),
            (
                "ZIG_GLOBAL_CACHE_DIR".into(),
                self.zig_cache.display().to_string(),
            ),
            (
                "ZIG_LOCAL_CACHE_DIR".into(),
                self.zig_cache.display().to_string(),
            ),
        ]
    }

    /// Environment for cargo-zigbuild: zig and cargo-zigbuild on PATH.
    pub fn cargo_env(&self) -> Vec<(String, String)> {
        let path = std::env::var("PATH").unwrap_or_default();
        let zig_dir = self.zig.parent().expect("zig lives in a directory");
        vec![
            (
                "PATH".into(),
                format!(
                    "{}:{}:{path}",
                    self.cargo_zigbuild_bin.display(),
                    zig_dir.display()
                ),
            ),
            (
                "ZIG_GLOBAL_CACHE_DIR".into(),
                self.zig_cache.display().to_string(),
            ),
            (
                "ZIG_LOCAL_CACHE_DIR".into(),
                self.zig_cache.display().to_string(),
            ),
        ]
    }
}

/// Installs (once) and returns the pinned zig toolchain for `glibc`.
pub fn ensure(sh: &Shell, cache: &Path, pin: &ZigPin, glibc: &Version) -> Result<ZigToolchain> {
    let tools = cache.join("tools");
    let zig_dir = tools.join(format!("zig-{}", pin.version));
    let zig = zig_dir.join("ziglang/zig");
    if !zig_dir.join(".installed").exists() {
        install_zig(sh, &tools, &zig_dir, pin)?;
    }
    let zigbuild_root = tools.join(format!("cargo-zigbuild-{}", pin.cargo_zigbuild));
    let zigbuild_bin = zigbuild_root.join("bin");
    if !zigbuild_bin.join("cargo-zigbuild").exists() {
        let version = &pin.cargo_zigbuild;
        eprintln!(
            "==> zig: installing cargo-zigbuild {version} into {}",
            zigbuild_root.display()
        );
        cmd!(
            sh,
            "cargo install --locked --quiet --version {version} --root {zigbuild_root} cargo-zigbuild"
        )
        .run()
        .with_context(|| format!("cannot install cargo-zigbuild {version}"))?;
    }
    let wrappers = zig_dir.join(format!("cc-glibc{glibc}"));
    let toolchain = ZigToolchain {
        version: pin.version.clone(),
        zig,
        cargo_zigbuild_bin: zigbuild_bin,
        wrappers,
        glibc: glibc.clone(),
        zig_cache: tools.join("zig-cache"),
    };
    write_wrappers(&toolchain)?;
    Ok(toolchain)
}

/// libtool and configure want one executable as the compiler, not
/// `zig cc -target ...` (nor `python3 -m ziglang cc`): small scripts.
fn write_wrappers(t: &ZigToolchain) -> Result<()> {
    fs::create_dir_all(&t.wrappers)?;
    let target = t.c_target();
    for (name, mode) in [("cc", "cc"), ("gcc", "cc"), ("c++", "c++"), ("g++", "c++")] {
        let body = format!(
            "#!/bin/sh\n# zig {} as a C{} compiler for glibc {}\nexec '{}' {mode} -target {target} \"$@\"\n",
            t.version,
            if mode == "c++" { "++" } else { "" },
            t.glibc,
            t.zig.display()
        );
        let path = t.wrappers.join(name);
        if fs::read_to_string(&path).ok().as_deref() != Some(body.as_str()) {
            let tmp = t.wrappers.join(format!(".{name}.tmp"));
            fs::write(&tmp, &body)?;
            fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
            fs::rename(&tmp, &path)?;
        }
    }
    Ok(())
}

fn install_zig(sh: &Shell, tools: &Path, zig_dir: &Path, pin: &ZigPin) -> Result<()> {
    fs::create_dir_all(tools)?;
    let downloads = tools.join("downloads");
    fs::create_dir_all(&downloads)?;
    let wheel = downloads.join(&pin.wheel);
    let verified = wheel.exists() && sha256_file(&wheel)? == pin.sha256;
    if !verified {
        let _ = fs::remove_file(&wheel);
        let Some(python) = find_on_path("python3") else {
            bail!(
                "the zig builder needs python3 with pip to fetch zig {} (the PyPI wheel `ziglang`); \
                 install python3-pip, or use --builder podman",
                pin.version
            );
        };
        let spec = format!("ziglang=={}", pin.version);
        eprintln!("==> zig: downloading {spec} with pip");
        // Only the pinned file: the platform and Python tags select exactly
        // the wheel named in targets.toml, and its digest is checked below.
        cmd!(
            sh,
            "{python} -m pip download --quiet --no-deps --only-binary :all: --platform manylinux_2_12_x86_64 --python-version 3.9 --implementation py --dest {downloads} {spec}"
        )
        .run()
        .with_context(|| format!("`pip download {spec}` failed"))?;
        if !wheel.exists() {
            bail!(
                "pip did not produce {} in {}",
                pin.wheel,
                downloads.display()
            );
        }
        let got = sha256_file(&wheel)?;
        if got != pin.sha256 {
            let _ = fs::remove_file(&wheel);
            bail!(
                "{}: sha256 mismatch: expected {} (recipes/targets.toml), got {got}; the file was removed",
                pin.wheel,
                pin.sha256
            );
        }
    }
    eprintln!(
        "==> zig: unpacking {} into {}",
        pin.wheel,
        zig_dir.display()
    );
    let tmp = tools.join(format!(".zig-{}.tmp", pin.version));
    let _ = fs::remove_dir_all(&tmp);
    fs::create_dir_all(&tmp)?;
    let file = fs::File::open(&wheel)?;
    let mut archive = zip::ZipArchive::new(file)
        .with_context(|| format!("{} is not a zip archive", wheel.display()))?;
    // A wheel is a zip: entries are checked like any archive's (no absolute
    // paths, no `..`), though its digest was verified already.
    archive
        .extract(&tmp)
        .with_context(|| format!("cannot unpack {}", wheel.display()))?;
    let zig = tmp.join("ziglang/zig");
    fs::set_permissions(&zig, fs::Permissions::from_mode(0o755))
        .with_context(|| format!("{}: no ziglang/zig inside", wheel.display()))?;
    let out = cmd!(sh, "{zig} version").quiet().read()?;
    if out.trim() != pin.version {
        bail!(
            "unpacked zig says version `{}`, expected {}",
            out.trim(),
            pin.version
        );
    }
    fs::write(tmp.join(".installed"), &pin.sha256)?;
    let _ = fs::remove_dir_all(zig_dir);
    fs::rename(&tmp, zig_dir)?;
    Ok(())
}
