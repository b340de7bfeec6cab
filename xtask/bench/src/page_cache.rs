//! A bench's input, and the programs it runs, read into the page cache
//! before each run.
//!
//! The forward bench writes its log once and every tailing sender reads it
//! again. fluent-bit's tail advises the kernel to drop each part of a file
//! it has read (`posix_fadvise(POSIX_FADV_DONTNEED)`, its
//! `file_cache_advise`, on by default), and this machine pages out page
//! cache untouched for a minute (DAMON's reclaim): whichever run came after
//! fluent-bit's read the whole log back from disk, and a quarter of its CPU
//! went to copying the pages in. On a database host the error log was
//! written a moment before it is read and is in the page cache, so every
//! run starts with the log read once, untimed. (Locking it in memory
//! instead made each of fluent-bit's advices walk the whole locked file:
//! 20 CPU-seconds per million records.)

use std::fs::File;
use std::io::Read;
use std::path::Path;

use anyhow::{Context, Result};

/// Reads a program and the shared libraries of its prefix (`../lib` beside
/// its `bin/`, when there is one) into the page cache, so that no timed run
/// reads its own code back from disk (this machine pages out page cache
/// untouched for a minute, and `--against` runs a build kept from earlier).
///
/// Each file is dropped from the page cache first and read back whole, so
/// that two builds' pages came into it the same way. A process's resident
/// pages of its binary are those the kernel maps around each page it
/// touches, and how many that is depends on how the file's pages came into
/// the page cache: the same build mapped 3.5 MiB of itself at idle from a
/// copy made an hour before and read back, 4.1 - 4.3 MiB from a fresh copy,
/// as much as the new build beside it; and a build kept from the start of a
/// session showed 0.19 MiB less of itself at idle than the new one until
/// both were dropped and read back, when they were equal (1.87 - 1.92 MiB
/// against 1.90 - 1.91).
pub fn read_program(binary: &Path) -> Result<()> {
    reread_into_cache(binary)?;
    let Some(lib) = binary
        .parent()
        .and_then(Path::parent)
        .map(|p| p.join("lib"))
    else {
        return Ok(());
    };
    let Ok(entries) = std::fs::read_dir(&lib) else {
        return Ok(());
    };
    for entry in entries {
        let path = entry?.path();
        let shared = path
            .file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.contains(".so"));
        if shared && path.is_file() {
            reread_into_cache(&path)?;
        }
    }
    Ok(())
}

/// Drops `path` from the page cache (what no process maps and is written
/// back), then reads it whole.
fn reread_into_cache(path: &Path) -> Result<()> {
    let file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    file.sync_data()
        .with_context(|| format!("syncing {}", path.display()))?;
    // SAFETY: advice on an open descriptor; it changes no memory of ours.
    unsafe {
        libc::posix_fadvise(
            std::os::fd::AsRawFd::as_raw_fd(&file),
            0,
            0,
            libc::POSIX_FADV_DONTNEED,
        );
    }
    read_into_cache(path)
}

/// Reads `path` to its end, so that its pages are in the page cache.
pub fn read_into_cache(path: &Path) -> Result<()> {
    let mut file = File::open(path).with_context(|| format!("opening {}", path.display()))?;
    let mut block = vec![0u8; 1 << 20];
    while file
        .read(&mut block)
        .with_context(|| format!("reading {}", path.display()))?
        > 0
    {}
    Ok(())
}
