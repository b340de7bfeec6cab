//! Directory trees as data: walking them into a sorted listing with digests
//! (the build cache's manifest) and copying them with symlinks and modes
//! intact (cache -> stage); and the sha256 of one file, which every stage
//! checks something with (sources, wheels, trees, RPMs).

use std::fs::{self, File};
use std::io::Read;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum TreeEntry {
    Dir {
        path: String,
        mode: u32,
    },
    File {
        path: String,
        mode: u32,
        size: u64,
        sha256: String,
    },
    Symlink {
        path: String,
        target: String,
    },
}

impl TreeEntry {
    pub fn path(&self) -> &str {
        match self {
            TreeEntry::Dir { path, .. }
            | TreeEntry::File { path, .. }
            | TreeEntry::Symlink { path, .. } => path,
        }
    }
}

/// Every entry below `root`, sorted by path, files with their sha256.
pub fn list(root: &Path) -> Result<Vec<TreeEntry>> {
    let mut out = Vec::new();
    walk(root, Path::new(""), &mut out)?;
    out.sort_by(|a, b| a.path().cmp(b.path()));
    Ok(out)
}

fn walk(root: &Path, rel: &Path, out: &mut Vec<TreeEntry>) -> Result<()> {
    let dir = root.join(rel);
    let entries = fs::read_dir(&dir).with_context(|| format!("cannot read {}", dir.display()))?;
    for entry in entries {
        let entry = entry?;
        let rel_path = rel.join(entry.file_name());
        let full = root.join(&rel_path);
        let meta = fs::symlink_metadata(&full)?;
        let path = rel_path
            .to_str()
            .with_context(|| format!("{}: file name is not UTF-8", full.display()))?
            .to_string();
        let mode = meta.permissions().mode() & 0o7777;
        if meta.file_type().is_symlink() {
            let target = fs::read_link(&full)?.to_string_lossy().into_owned();
            out.push(TreeEntry::Symlink { path, target });
        } else if meta.is_dir() {
            out.push(TreeEntry::Dir { path, mode });
            walk(root, &rel_path, out)?;
        } else {
            out.push(TreeEntry::File {
                path,
                mode,
                size: meta.len(),
                sha256: sha256_file(&full)?,
            });
        }
    }
    Ok(())
}

/// Copies the contents of `from` into `to` (created if needed), replacing
/// files that exist in both.
pub fn copy_into(from: &Path, to: &Path) -> Result<()> {
    fs::create_dir_all(to).with_context(|| format!("cannot create {}", to.display()))?;
    let entries = fs::read_dir(from).with_context(|| format!("cannot read {}", from.display()))?;
    for entry in entries {
        let entry = entry?;
        let src: PathBuf = entry.path();
        let dst = to.join(entry.file_name());
        let meta = fs::symlink_metadata(&src)?;
        if meta.file_type().is_symlink() {
            let _ = fs::remove_file(&dst);
            symlink(fs::read_link(&src)?, &dst)
                .with_context(|| format!("cannot create symlink {}", dst.display()))?;
        } else if meta.is_dir() {
            copy_into(&src, &dst)?;
            fs::set_permissions(&dst, meta.permissions())?;
        } else {
            let _ = fs::remove_file(&dst);
            fs::copy(&src, &dst)
                .with_context(|| format!("cannot copy {} to {}", src.display(), dst.display()))?;
        }
    }
    Ok(())
}

/// sha256 of a file, hex encoded.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut file = File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_lists_identically() {
        let a = tempfile::tempdir().unwrap();
        fs::create_dir_all(a.path().join("lib/pkgconfig")).unwrap();
        fs::write(a.path().join("lib/libx.so.1"), b"elf").unwrap();
        fs::set_permissions(
            a.path().join("lib/libx.so.1"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        symlink("libx.so.1", a.path().join("lib/libx.so")).unwrap();
        let b = tempfile::tempdir().unwrap();
        copy_into(a.path(), b.path()).unwrap();
        let (la, lb) = (list(a.path()).unwrap(), list(b.path()).unwrap());
        assert_eq!(la, lb);
        assert_eq!(la.len(), 4);
        assert!(matches!(&la[1], TreeEntry::Symlink { target, .. } if target == "libx.so.1"));
        assert!(matches!(
            &la[2],
            TreeEntry::File {
                mode: 0o755,
                size: 3,
                ..
            }
        ));
    }
}
