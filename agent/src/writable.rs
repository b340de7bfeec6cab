//! "Can the agent write here?", asked before a reload stops the running
//! pipeline, so that a configuration whose buffer or pos_file directory
//! cannot be created is refused while the old one keeps running.

use std::fs::{self, OpenOptions};
use std::io;
use std::path::Path;

/// Creates `dir` (and its parents) if needed and proves a file can be
/// created in it. The error names the directory and what it is for.
pub fn ensure_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    let check = || -> io::Result<()> {
        fs::create_dir_all(dir)?;
        // A probe file rather than access(2): it also catches read-only
        // mounts, full inode tables and ACLs the mode bits do not show.
        let probe = dir.join(format!(".my-agent-probe-{}", std::process::id()));
        OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&probe)?;
        fs::remove_file(&probe)
    };
    check().map_err(|e| anyhow::anyhow!("{what} {} is not writable: {e}", dir.display()))
}

/// The directory a file will be written in (`.` for a bare name).
pub fn ensure_parent(file: &Path, what: &str) -> anyhow::Result<()> {
    let dir = file
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    ensure_dir(dir, what)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn creates_and_probes() {
        let dir = tempfile::tempdir().unwrap();
        let sub = dir.path().join("a/b");
        ensure_dir(&sub, "buffer").unwrap();
        assert!(sub.is_dir());
        assert_eq!(fs::read_dir(&sub).unwrap().count(), 0, "probe removed");
    }

    #[test]
    fn names_the_directory_when_it_cannot_exist() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("plain");
        fs::write(&file, b"").unwrap();
        let e = ensure_dir(&file.join("buf"), "buffer path")
            .unwrap_err()
            .to_string();
        assert!(e.contains("buffer path") && e.contains("plain/buf"), "{e}");
    }
}
