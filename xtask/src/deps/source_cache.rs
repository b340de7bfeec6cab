//! Content-addressed store of source archives: `<cache>/sources/<sha256>`.
//!
//! A file only ever enters under its own digest, through a `.part` file that
//! is hashed while written and renamed into place when the digest matches,
//! so the cache never holds a truncated or tampered archive.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use sha2::{Digest, Sha256};

pub struct SourceCache {
    dir: PathBuf,
}

/// Raised when bytes do not hash to what the recipe pins.
#[derive(Debug, thiserror::Error)]
#[error("checksum mismatch for {what}: expected sha256 {expected}, got {actual}")]
pub struct ChecksumMismatch {
    pub what: String,
    pub expected: String,
    pub actual: String,
}

impl SourceCache {
    pub fn new(dir: PathBuf) -> SourceCache {
        SourceCache { dir }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The cached archive with this digest, if present.
    pub fn get(&self, sha256: &str) -> Option<PathBuf> {
        let path = self.dir.join(sha256);
        path.is_file().then_some(path)
    }

    /// Starts writing an archive that must hash to `sha256`.
    pub fn writer(&self, sha256: &str) -> Result<PendingSource> {
        fs::create_dir_all(&self.dir)
            .with_context(|| format!("cannot create source cache {}", self.dir.display()))?;
        let part = self
            .dir
            .join(format!("{sha256}.{}.part", std::process::id()));
        let file =
            File::create(&part).with_context(|| format!("cannot create {}", part.display()))?;
        Ok(PendingSource {
            final_path: self.dir.join(sha256),
            expected: sha256.to_string(),
            part,
            file: Some(file),
            hasher: Sha256::new(),
            written: 0,
        })
    }

    /// Copies a local file into the cache, verifying its digest.
    pub fn insert_file(&self, sha256: &str, from: &Path) -> Result<PathBuf> {
        let mut input =
            File::open(from).with_context(|| format!("cannot open {}", from.display()))?;
        let mut pending = self.writer(sha256)?;
        io::copy(&mut input, &mut pending)
            .with_context(|| format!("cannot copy {} into the source cache", from.display()))?;
        pending.commit(&from.display().to_string())
    }
}

/// A `.part` file being filled; removed on drop unless committed.
pub struct PendingSource {
    final_path: PathBuf,
    expected: String,
    part: PathBuf,
    file: Option<File>,
    hasher: Sha256,
    written: u64,
}

impl Write for PendingSource {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self
            .file
            .as_mut()
            .expect("file open until commit")
            .write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.as_mut().expect("file open until commit").flush()
    }
}

impl PendingSource {
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Checks the digest and moves the file into place. `what` names the
    /// origin (URL or path) for the mismatch message.
    pub fn commit(mut self, what: &str) -> Result<PathBuf> {
        let file = self.file.take().expect("commit once");
        file.sync_all()
            .with_context(|| format!("cannot write {}", self.part.display()))?;
        drop(file);
        let actual = hex::encode(self.hasher.clone().finalize());
        if actual != self.expected {
            return Err(ChecksumMismatch {
                what: what.to_string(),
                expected: self.expected.clone(),
                actual,
            }
            .into());
        }
        fs::rename(&self.part, &self.final_path)
            .with_context(|| format!("cannot move {} into place", self.part.display()))?;
        Ok(self.final_path.clone())
    }
}

impl Drop for PendingSource {
    fn drop(&mut self) {
        // Committed files were renamed away; anything else is incomplete.
        let _ = fs::remove_file(&self.part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HELLO: &str = "2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824";

    #[test]
    fn stores_under_digest_and_rejects_mismatch() {
        let dir = tempfile::tempdir().unwrap();
        let cache = SourceCache::new(dir.path().join("sources"));
        let mut w = cache.writer(HELLO).unwrap();
        w.write_all(b"hello").unwrap();
        let path = w.commit("test").unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"hello");
        assert_eq!(cache.get(HELLO), Some(path));

        let other = "0".repeat(64);
        let mut w = cache.writer(&other).unwrap();
        w.write_all(b"hello").unwrap();
        let e = w.commit("http://127.0.0.1/x").unwrap_err();
        let m = e.downcast_ref::<ChecksumMismatch>().unwrap();
        assert_eq!(m.actual, HELLO);
        assert!(cache.get(&other).is_none());
        // Only the good entry remains: no `.part` left behind.
        assert_eq!(fs::read_dir(cache.dir()).unwrap().count(), 1);
    }
}
