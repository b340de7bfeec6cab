//! An exclusive lock on the shared cache while components are built, so two
//! builds (two clones, or a test beside a user's build) never write the same
//! entry at once.

use std::fs::{self, File};
use std::os::fd::AsRawFd;
use std::path::Path;

use anyhow::{Context, Result};

pub struct CacheLock {
    // The lock is held while the file stays open.
    _file: File,
}

impl CacheLock {
    pub fn acquire(cache: &Path) -> Result<CacheLock> {
        fs::create_dir_all(cache).with_context(|| format!("cannot create {}", cache.display()))?;
        let path = cache.join("lock");
        let file =
            File::create(&path).with_context(|| format!("cannot open {}", path.display()))?;
        let fd = file.as_raw_fd();
        // SAFETY: flock on a descriptor we own; no memory is involved.
        if unsafe { libc::flock(fd, libc::LOCK_EX | libc::LOCK_NB) } != 0 {
            eprintln!(
                "==> waiting for another build that holds {}",
                path.display()
            );
            // SAFETY: as above.
            if unsafe { libc::flock(fd, libc::LOCK_EX) } != 0 {
                return Err(std::io::Error::last_os_error())
                    .with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        Ok(CacheLock { _file: file })
    }
}
