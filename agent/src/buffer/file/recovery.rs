//! A file buffer's start-up: the chunks a previous run left are queued
//! again, each from where its delivery had got to (its progress file),
//! with a torn tail cut off. Chunks that cannot be read are quarantined,
//! chunks already delivered deleted, progress files without a chunk
//! removed.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::path::{Path, PathBuf};

use super::progress::{self, Acked};
use super::quarantine;
use crate::buffer::chunk::{self, Decoded};

pub struct Recovered {
    pub id: u64,
    pub path: PathBuf,
    pub bytes: u64,
    pub records: u64,
    /// Its first records, delivered before the restart.
    pub delivered: usize,
}

pub struct Found {
    /// Oldest first.
    pub chunks: Vec<Recovered>,
    /// One line per chunk, for the log.
    pub notes: Vec<String>,
    /// Above every id seen, so that no new chunk meets an old progress file.
    pub next_id: u64,
    pub quarantined: u64,
}

/// `chunk-<16 hex digits>.<ext>`: the id.
fn id_of(name: &str, ext: &str) -> Option<u64> {
    name.strip_prefix("chunk-")?
        .strip_suffix(ext)
        .and_then(|s| u64::from_str_radix(s, 16).ok())
}

pub fn recover(dir: &Path) -> io::Result<Found> {
    fs::create_dir_all(dir)?;
    let mut chunks: Vec<(u64, PathBuf)> = Vec::new();
    let mut acks: Vec<(u64, PathBuf)> = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if let Some(id) = id_of(name, ".buf") {
            chunks.push((id, path));
        } else if let Some(id) = id_of(name, ".ack") {
            acks.push((id, path));
        }
    }
    let next_id = chunks
        .iter()
        .chain(&acks)
        .map(|(id, _)| id + 1)
        .max()
        .unwrap_or(1);
    let mut found = Found {
        chunks: Vec::new(),
        notes: Vec::new(),
        next_id,
        quarantined: 0,
    };

    // A crash between deleting a chunk and its progress file.
    let orphans: Vec<&PathBuf> = acks
        .iter()
        .filter(|(id, _)| !chunks.iter().any(|(c, _)| c == id))
        .map(|(_, p)| p)
        .collect();
    for ack in &orphans {
        fs::remove_file(ack)?;
    }
    if !orphans.is_empty() {
        File::open(dir)?.sync_all()?;
    }

    chunks.sort();
    for (id, path) in chunks {
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) => {
                found.quarantined += 1;
                found.notes.push(quarantine::move_aside(
                    &path,
                    &format!("cannot read it: {e}"),
                ));
                continue;
            }
        };
        let decoded = chunk::decode(&bytes);
        if decoded.valid_len < bytes.len() {
            found.notes.push(format!(
                "{}: cut a torn tail of {} bytes after {} complete records",
                path.display(),
                bytes.len() - decoded.valid_len,
                decoded.records.len()
            ));
            let f = OpenOptions::new().write(true).open(&path)?;
            f.set_len(decoded.valid_len as u64)?;
            f.sync_all()?;
        }
        let ack_path = progress::ack_path(&path);
        let delivered = match progress::read(&ack_path) {
            Ok(None) => 0,
            Ok(Some(acked)) => delivered_records(&acked, &bytes, &decoded).unwrap_or_else(|why| {
                found.notes.push(format!(
                    "{}: {why}; all of the chunk is sent again",
                    ack_path.display()
                ));
                0
            }),
            Err(e) => {
                found.notes.push(format!(
                    "{}: cannot read it: {e}; all of the chunk is sent again",
                    ack_path.display()
                ));
                0
            }
        };
        let total = decoded.records.len();
        if delivered >= total {
            if total > 0 {
                found.notes.push(format!(
                    "{}: its {total} records were delivered before; deleted",
                    path.display()
                ));
            }
            fs::remove_file(&path)?;
            if let Err(e) = fs::remove_file(&ack_path) {
                if e.kind() != io::ErrorKind::NotFound {
                    return Err(e);
                }
            }
            continue;
        }
        found.notes.push(if delivered > 0 {
            format!(
                "{}: {} records queued again (the first {delivered} were delivered before)",
                path.display(),
                total - delivered
            )
        } else {
            format!("{}: {total} records queued again", path.display())
        });
        found.chunks.push(Recovered {
            id,
            path,
            bytes: decoded.valid_len as u64,
            records: total as u64,
            delivered,
        });
    }
    Ok(found)
}

/// How many of the chunk's records `acked` says were delivered, after
/// checking that it describes this chunk: its last delivered frame ends at
/// `end` with checksum `last_crc`.
fn delivered_records(acked: &Acked, bytes: &[u8], decoded: &Decoded) -> Result<usize, String> {
    let n = acked.records as usize;
    if n == 0 {
        return Ok(0);
    }
    let matches = match decoded.records.get(n - 1) {
        Some(last) => {
            last.end as u64 == acked.end && chunk::frame_crc(bytes, last) == acked.last_crc
        }
        // Fewer intact records than were delivered: records are delivered
        // before the source's `sync` makes them durable, so a crash of the
        // machine can take a chunk's end that was already sent.
        None => acked.end >= decoded.valid_len as u64,
    };
    if matches {
        Ok(n.min(decoded.records.len()))
    } else {
        Err(format!(
            "progress ({n} records, to byte {}) does not match the chunk",
            acked.end
        ))
    }
}
