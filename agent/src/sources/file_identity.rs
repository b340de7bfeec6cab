//! What makes a followed file the same file: its (device, inode) and a
//! checksum of its head.
//!
//! The inode alone is not enough once files are closed between reads (or
//! the agent was down): a deleted file's inode is handed to the next file
//! created, and that file would inherit the old one's position. Like
//! Vector's and OpenTelemetry's fingerprints, the first bytes tell them
//! apart; unlike Vector's, a file shorter than the fingerprint still has
//! one (a fresh log is short), so the head is remembered as far as it went
//! and a file matches when it still starts with those bytes.

use std::fs::File;
use std::os::unix::fs::{FileExt, MetadataExt};

use serde::{Deserialize, Serialize};

/// How much of a file's start the fingerprint covers.
pub const HEAD_BYTES: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct FileId {
    pub dev: u64,
    pub ino: u64,
}

impl FileId {
    pub fn of(meta: &std::fs::Metadata) -> FileId {
        FileId {
            dev: meta.dev(),
            ino: meta.ino(),
        }
    }
}

/// crc32 of a file's first `len` bytes (`len` <= HEAD_BYTES).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Head {
    pub len: u32,
    pub crc: u32,
}

impl Head {
    /// The fingerprint of `file` as it is now: its first HEAD_BYTES bytes,
    /// or all of it when shorter.
    pub fn read(file: &File) -> std::io::Result<Head> {
        let mut buf = [0u8; HEAD_BYTES];
        let mut len = 0;
        // A short read is not the end of the file until read_at says 0.
        while len < HEAD_BYTES {
            match file.read_at(&mut buf[len..], len as u64)? {
                0 => break,
                n => len += n,
            }
        }
        Ok(Head {
            len: len as u32,
            crc: crc32fast::hash(&buf[..len]),
        })
    }

    /// Whether this fingerprint is still complete (a file that grows past
    /// it needs no new one).
    pub fn is_full(&self) -> bool {
        self.len as usize >= HEAD_BYTES
    }

    /// Whether `file` still starts with the bytes this fingerprint was
    /// taken of. An empty fingerprint matches anything: nothing had been
    /// read, so nothing can be read twice or skipped.
    pub fn matches(&self, file: &File) -> bool {
        if self.len == 0 {
            return true;
        }
        let mut buf = vec![0u8; self.len as usize];
        file.read_exact_at(&mut buf, 0).is_ok() && crc32fast::hash(&buf) == self.crc
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn same_inode_with_another_head_is_another_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.log");
        std::fs::write(&path, "first file's first line\n").unwrap();
        let old = File::open(&path).unwrap();
        let (id, head) = (
            FileId::of(&old.metadata().unwrap()),
            Head::read(&old).unwrap(),
        );
        assert_eq!(head.len, 24);
        assert!(head.matches(&old));

        // Growing keeps the identity: the old head is a prefix of the new.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(&[b'x'; 2000]).unwrap();
        let grown = File::open(&path).unwrap();
        assert!(head.matches(&grown));
        let full = Head::read(&grown).unwrap();
        assert!(full.is_full() && full.matches(&grown));

        // Rewritten in place (what a recycled inode looks like to a
        // follower that holds no descriptor): same (device, inode), other
        // content, even a longer one.
        std::fs::write(&path, format!("another file {}\n", "y".repeat(3000))).unwrap();
        let other = File::open(&path).unwrap();
        assert_eq!(FileId::of(&other.metadata().unwrap()), id);
        assert!(!head.matches(&other));
        assert!(!full.matches(&other));
        // Shorter than the remembered head: not the same file either.
        std::fs::write(&path, "first").unwrap();
        assert!(!head.matches(&File::open(&path).unwrap()));
        // Nothing remembered: nothing to contradict.
        assert!(Head::default().matches(&File::open(&path).unwrap()));
    }
}
