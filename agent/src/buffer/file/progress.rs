//! A chunk's delivery progress: `chunk-<id>.ack` beside `chunk-<id>.buf`
//! says how many of its records the receiver has acknowledged (or the
//! dead-letter directory holds), so that after a crash a chunk is sent on
//! from there and only the requests in flight at the crash come again.
//!
//! The file is two slots, each one chunk frame (see `chunk`) holding
//! `[seq: u64][records: u64][end: u64][last_crc: u32]` (little endian).
//! Progress is written in place, alternating slots, each write followed by
//! fdatasync: a write torn by a crash damages only the slot it was writing,
//! the other still holds the progress before it, and the valid slot with
//! the higher `seq` wins. The file never grows past two slots, so once
//! created a full disk cannot fail it. `end` (where the last acknowledged
//! frame ends) and `last_crc` (that frame's checksum) let recovery check
//! that the progress belongs to the chunk beside it.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::buffer::chunk;

const PAYLOAD: usize = 28;
const SLOT: usize = chunk::framed_len(PAYLOAD);

/// How far a chunk has been delivered: its first `records` records, which
/// end at byte `end`, the last of them with checksum `last_crc`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Acked {
    pub records: u64,
    pub end: u64,
    pub last_crc: u32,
}

/// The progress file of the chunk file at `chunk`.
pub fn ack_path(chunk: &Path) -> PathBuf {
    chunk.with_extension("ack")
}

/// The progress recorded at `path`: None when there is none (no file, or
/// no slot intact).
pub fn read(path: &Path) -> io::Result<Option<Acked>> {
    Ok(newest(path)?.map(|(_, acked)| acked))
}

/// The newest intact slot and its `seq`.
fn newest(path: &Path) -> io::Result<Option<(u64, Acked)>> {
    let bytes = match std::fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(bytes
        .chunks(SLOT)
        .filter_map(decode_slot)
        .max_by_key(|(seq, _)| *seq))
}

fn decode_slot(slot: &[u8]) -> Option<(u64, Acked)> {
    let decoded = chunk::decode(slot);
    let payload = &slot[decoded.records.first()?.clone()];
    if payload.len() != PAYLOAD {
        return None;
    }
    let u64_at = |i: usize| u64::from_le_bytes(payload[i..i + 8].try_into().expect("8 bytes"));
    let acked = Acked {
        records: u64_at(8),
        end: u64_at(16),
        last_crc: u32::from_le_bytes(payload[24..28].try_into().expect("4 bytes")),
    };
    Some((u64_at(0), acked))
}

fn encode_slot(seq: u64, acked: Acked) -> Vec<u8> {
    let mut slot = Vec::with_capacity(SLOT);
    chunk::encode_in_place(&mut slot, |p| {
        p.extend_from_slice(&seq.to_le_bytes());
        p.extend_from_slice(&acked.records.to_le_bytes());
        p.extend_from_slice(&acked.end.to_le_bytes());
        p.extend_from_slice(&acked.last_crc.to_le_bytes());
    });
    slot
}

/// An open progress file, kept by the chunk while it is delivered.
pub struct ProgressFile {
    file: File,
    next_seq: u64,
}

impl ProgressFile {
    /// Records `acked` durably at `path`, creating the file (and making its
    /// name durable) the first time.
    pub fn record(this: &mut Option<ProgressFile>, path: &Path, acked: Acked) -> io::Result<()> {
        if this.is_none() {
            // Above what a previous run wrote, so its newest slot loses.
            let next_seq = newest(path)?.map_or(0, |(seq, _)| seq + 1);
            let file = OpenOptions::new()
                .create(true)
                .truncate(false)
                .write(true)
                .open(path)?;
            if let Some(dir) = path.parent() {
                File::open(dir)?.sync_all()?;
            }
            *this = Some(ProgressFile { file, next_seq });
        }
        let p = this.as_mut().expect("opened above");
        let slot = (p.next_seq % 2) as usize;
        p.file
            .write_all_at(&encode_slot(p.next_seq, acked), (slot * SLOT) as u64)?;
        p.file.sync_data()?;
        p.next_seq += 1;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn acked(records: u64) -> Acked {
        Acked {
            records,
            end: records * 100,
            last_crc: records as u32 ^ 0xabcd,
        }
    }

    #[test]
    fn newest_intact_slot_wins_and_a_torn_write_falls_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = ack_path(&dir.path().join("chunk-0000000000000001.buf"));
        assert_eq!(path.file_name().unwrap(), "chunk-0000000000000001.ack");
        assert_eq!(read(&path).unwrap(), None, "no file, no progress");

        let mut file = None;
        for n in 1..=3 {
            ProgressFile::record(&mut file, &path, acked(n * 10)).unwrap();
            assert_eq!(read(&path).unwrap(), Some(acked(n * 10)));
        }
        assert_eq!(std::fs::metadata(&path).unwrap().len(), 2 * SLOT as u64);

        // The third write went to slot 0; tear it at every byte: the second
        // write, intact in slot 1, is what a restart sees.
        let good = std::fs::read(&path).unwrap();
        for cut in 0..SLOT {
            let mut torn = good.clone();
            for b in &mut torn[cut..SLOT] {
                *b = 0xee;
            }
            std::fs::write(&path, &torn).unwrap();
            assert_eq!(read(&path).unwrap(), Some(acked(20)), "torn at {cut}");
        }
        // A slot of zeros (a file extended but not yet written) is no
        // progress either.
        let mut zeroed = good.clone();
        zeroed[..SLOT].fill(0);
        std::fs::write(&path, &zeroed).unwrap();
        assert_eq!(read(&path).unwrap(), Some(acked(20)));
        // Both slots torn: nothing is known, the whole chunk goes again.
        std::fs::write(&path, vec![0xee; 2 * SLOT]).unwrap();
        assert_eq!(read(&path).unwrap(), None);
        // A file cut short keeps what is whole.
        std::fs::write(&path, &good[..SLOT + 5]).unwrap();
        assert_eq!(read(&path).unwrap(), Some(acked(30)));

        // Reopened after a restart, writing goes on above the old seq (the
        // newest slot, 0, is kept until the next write lands in slot 1).
        std::fs::write(&path, &good).unwrap();
        let mut reopened = None;
        ProgressFile::record(&mut reopened, &path, acked(40)).unwrap();
        assert_eq!(read(&path).unwrap(), Some(acked(40)));
        assert_eq!(
            decode_slot(&std::fs::read(&path).unwrap()[..SLOT])
                .unwrap()
                .1,
            acked(30)
        );
        ProgressFile::record(&mut reopened, &path, acked(50)).unwrap();
        assert_eq!(read(&path).unwrap(), Some(acked(50)));
    }
}
