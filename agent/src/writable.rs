//! Writing files safely: "can the agent write here?", asked before a
//! reload stops the running pipeline (so that a configuration whose buffer
//! or pos_file directory cannot be created is refused while the old one
//! keeps running), and whole-or-nothing replacement of a file.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `dir` (and its parents) if needed and proves a file can be
/// created in it. The error names the directory and what it is for.
pub fn ensure_dir(dir: &Path, what: &str) -> anyhow::Result<()> {
    let check = || -> io::Result<()> {
        fs::create_dir_all(dir)?;
        // A probe file rather than access(2): it also catches read-only
        // mounts, full inode tables and ACLs the mode bits do not show.
        let probe = dir.join(format!(".my-agent-probe-{}", std::process::id()));
        let create = || OpenOptions::new().write(true).create_new(true).open(&probe);
        if let Err(e) = create() {
            // Left by a process killed between the two steps (in a
            // container the pid is the same at every start).
            if e.kind() != io::ErrorKind::AlreadyExists {
                return Err(e);
            }
            fs::remove_file(&probe)?;
            create()?;
        }
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

/// Replaces `path` with `data` whole: a temporary file beside it, fsync,
/// rename, fsync of the directory. A crash leaves the old or the new
/// content, never a torn file.
pub fn write_atomic(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let dir = path
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir)?;
    let tmp = dir.join(format!(
        ".{}.tmp",
        path.file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    // A leftover (or planted) temporary file is removed, never written
    // through: root writes here too (the pidfile, `replay`), in directories
    // the service user owns, and a symlink there must not redirect it.
    match fs::remove_file(&tmp) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    let mut f = {
        use std::os::unix::fs::OpenOptionsExt;
        fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?
    };
    f.write_all(data)?;
    f.sync_all()?;
    drop(f);
    fs::rename(&tmp, path)?;
    File::open(dir)?.sync_all()
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
    fn a_leftover_probe_is_no_obstacle() {
        let dir = tempfile::tempdir().unwrap();
        let probe = dir
            .path()
            .join(format!(".my-agent-probe-{}", std::process::id()));
        fs::write(&probe, b"").unwrap();
        ensure_dir(dir.path(), "buffer").unwrap();
        assert!(!probe.exists());
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

    #[test]
    fn a_planted_temporary_symlink_is_not_written_through() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, b"keep me").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".out.tmp")).unwrap();
        write_atomic(&dir.path().join("out"), b"data").unwrap();
        assert_eq!(fs::read(&victim).unwrap(), b"keep me");
        assert_eq!(fs::read(dir.path().join("out")).unwrap(), b"data");
    }
}
