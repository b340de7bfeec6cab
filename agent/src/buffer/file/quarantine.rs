//! Chunks that cannot be read are moved aside, to `quarantine/` beside the
//! chunks, so that delivery goes on with the others. Each keeps its name
//! (and its progress file, if any); a `<name>.why` says what was wrong. An
//! operator can inspect them, or move one back to be sent at the next start.

use std::fs;
use std::path::Path;

use super::progress;

/// Moves the chunk file at `path` into quarantine because of `why`;
/// returns what was done, for the log.
pub fn move_aside(path: &Path, why: &str) -> String {
    let Some((dir, name)) = path.parent().zip(path.file_name()) else {
        return format!("{}: {why}", path.display());
    };
    let aside = dir.join("quarantine");
    let dest = aside.join(name);
    let moved = fs::create_dir_all(&aside)
        .and_then(|()| fs::rename(path, &dest))
        // The move must survive a crash, or the chunk comes back.
        .and_then(|()| fs::File::open(dir)?.sync_all());
    match moved {
        Ok(()) => {
            let ack = progress::ack_path(path);
            if ack.exists() {
                let _ = fs::rename(&ack, progress::ack_path(&dest));
            }
            let note = format!("{why}\n");
            let _ = fs::write(aside.join(format!("{}.why", name.to_string_lossy())), note);
            format!("{}: {why}; moved to {}", path.display(), dest.display())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !path.exists() => {
            format!("{}: {why}; the file is gone", path.display())
        }
        Err(e) => format!(
            "{}: {why}; cannot move it to {}: {e}; left in place until the next start",
            path.display(),
            aside.display()
        ),
    }
}
