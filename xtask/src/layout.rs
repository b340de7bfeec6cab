//! Where the xtask reads and writes: the checkout (recipes, templates), the
//! per-product work directory under `target/`, and the cache outside the
//! clone that every checkout on the machine shares.

use std::env;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

pub struct Layout {
    /// The workspace root (the clone).
    pub root: PathBuf,
    pub recipes: PathBuf,
    /// `target/<product name>`: stage, build trees, logs.
    pub work: PathBuf,
    /// Sources and built components, shared by clones (XDG cache dir).
    pub cache: PathBuf,
}

impl Layout {
    pub fn new(
        product_name: &str,
        recipes: Option<PathBuf>,
        work: Option<PathBuf>,
        cache: Option<PathBuf>,
    ) -> Result<Layout> {
        let root = workspace_root();
        let cache = match cache {
            Some(dir) => dir,
            None => default_cache_dir()?,
        };
        Ok(Layout {
            recipes: recipes.unwrap_or_else(|| root.join("recipes")),
            work: work.unwrap_or_else(|| root.join("target").join(product_name)),
            cache,
            root,
        })
    }

    /// The work directory of one toolchain: the host's is `target/<name>`
    /// itself (where plain `cargo build` finds the stage), others nest in
    /// it (`target/<name>/zig-glibc2.17/`), so their stages, build trees and
    /// logs live side by side.
    pub fn for_toolchain(&self, id: &str) -> Layout {
        Layout {
            root: self.root.clone(),
            recipes: self.recipes.clone(),
            work: if id == "host" {
                self.work.clone()
            } else {
                self.work.join(id)
            },
            cache: self.cache.clone(),
        }
    }

    pub fn stage_root(&self) -> PathBuf {
        self.work.join("stage")
    }

    pub fn build_dir(&self, component: &str) -> PathBuf {
        self.work.join("build").join(component)
    }

    pub fn log_dir(&self, component: &str) -> PathBuf {
        self.work.join("logs").join(component)
    }

    pub fn apt_dir(&self) -> PathBuf {
        self.work.join("apt-source")
    }
}

pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_path_buf()
}

fn default_cache_dir() -> Result<PathBuf> {
    if let Some(xdg) = env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
        return Ok(PathBuf::from(xdg).join("my-agent"));
    }
    let home = env::var_os("HOME")
        .filter(|v| !v.is_empty())
        .context("neither XDG_CACHE_HOME nor HOME is set; pass --cache-dir")?;
    Ok(PathBuf::from(home).join(".cache").join("my-agent"))
}

/// The prefix as staged on the build host: `<root><prefix>`, e.g.
/// `target/my-agent/stage/opt/my-agent`. Nothing is ever written to the
/// real prefix.
#[derive(Debug, Clone)]
pub struct StagedPrefix {
    pub root: PathBuf,
    pub prefix: String,
}

impl StagedPrefix {
    pub fn path(&self) -> PathBuf {
        self.root.join(self.prefix.trim_start_matches('/'))
    }
}
