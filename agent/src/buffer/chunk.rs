//! Chunk framing, the one place that knows it: each record is
//! `[len: u32 LE][crc32: u32 LE][payload]`.
//!
//! Chunks are append-only. After a crash a chunk may end in a torn frame
//! (short header, short payload or bad checksum); everything before it is
//! intact and is kept, the tail is cut off. Both stores hold these bytes
//! as they are; `ChunkRecords` is a chunk read back for delivery.

use std::io;
use std::ops::Range;

const HEADER: usize = 8;

/// The size of a frame holding `payload_len` bytes.
pub const fn framed_len(payload_len: usize) -> usize {
    HEADER + payload_len
}

#[cfg(test)]
pub fn encode_into(out: &mut Vec<u8>, payload: &[u8]) {
    encode_in_place(out, |o| o.extend_from_slice(payload));
}

/// Frames the payload that `write` appends to `out`, without copying it.
pub fn encode_in_place(out: &mut Vec<u8>, write: impl FnOnce(&mut Vec<u8>)) {
    let start = out.len();
    out.extend_from_slice(&[0u8; HEADER]);
    write(out);
    let payload = &out[start + HEADER..];
    let (len, crc) = (payload.len() as u32, crc32fast::hash(payload));
    out[start..start + 4].copy_from_slice(&len.to_le_bytes());
    out[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

/// The sizes of the whole frames in `frames`, which this process encoded
/// (so they are not checked again), in order.
pub fn frame_sizes(frames: &[u8]) -> impl Iterator<Item = usize> + '_ {
    let mut pos = 0;
    std::iter::from_fn(move || {
        let header = frames.get(pos..pos + HEADER)?;
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes")) as usize;
        let size = framed_len(len);
        pos += size;
        Some(size)
    })
}

/// The checksum stored in the header of the frame whose payload is
/// `record` (a range `decode` returned): it identifies the frame.
pub fn frame_crc(bytes: &[u8], record: &Range<usize>) -> u32 {
    let at = record.start - 4;
    u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"))
}

/// The records of a chunk's bytes and where the last good frame ends.
#[derive(Debug, PartialEq)]
pub struct Decoded {
    pub records: Vec<Range<usize>>,
    pub valid_len: usize,
}

pub fn decode(bytes: &[u8]) -> Decoded {
    let mut records = Vec::new();
    let mut pos = 0;
    while bytes.len() - pos >= HEADER {
        let len = u32::from_le_bytes(bytes[pos..pos + 4].try_into().unwrap()) as usize;
        let crc = u32::from_le_bytes(bytes[pos + 4..pos + 8].try_into().unwrap());
        let start = pos + HEADER;
        let Some(end) = start.checked_add(len).filter(|&e| e <= bytes.len()) else {
            break;
        };
        if crc32fast::hash(&bytes[start..end]) != crc {
            break;
        }
        records.push(start..end);
        pos = end;
    }
    Decoded {
        records,
        valid_len: pos,
    }
}

/// A chunk's records, read back for delivery.
pub struct ChunkRecords {
    bytes: Vec<u8>,
    ranges: Vec<Range<usize>>,
}

impl ChunkRecords {
    /// The first `records` records of a chunk's `bytes`. A chunk holding
    /// fewer intact records than were written to it (damaged on disk) is an
    /// `InvalidData` error.
    pub fn decode(bytes: Vec<u8>, records: u64) -> io::Result<ChunkRecords> {
        let mut decoded = decode(&bytes);
        if (decoded.records.len() as u64) < records {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} intact records of {}: the frame at byte {} is damaged",
                    decoded.records.len(),
                    records,
                    decoded.valid_len
                ),
            ));
        }
        // Bytes after them are a write that failed and could not be taken
        // back; they were never counted as records.
        decoded.records.truncate(records as usize);
        Ok(ChunkRecords {
            bytes,
            ranges: decoded.records,
        })
    }

    pub fn len(&self) -> usize {
        self.ranges.len()
    }

    pub fn get(&self, i: usize) -> &[u8] {
        &self.bytes[self.ranges[i].clone()]
    }

    /// The chunk's bytes and where each record lies in them.
    pub fn parts(&self) -> (&[u8], &[Range<usize>]) {
        (&self.bytes, &self.ranges)
    }

    /// The same, owned: a body can be made in the bytes themselves.
    pub fn into_parts(self) -> (Vec<u8>, Vec<Range<usize>>) {
        (self.bytes, self.ranges)
    }

    /// Where record `i`'s frame ends in the chunk, and its checksum: what
    /// identifies delivery progress up to it.
    pub fn frame_end(&self, i: usize) -> (u64, u32) {
        let record = &self.ranges[i];
        (record.end as u64, frame_crc(&self.bytes, record))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_torn_tails() {
        let mut bytes = Vec::new();
        encode_into(&mut bytes, b"{\"a\":1}");
        encode_into(&mut bytes, b"");
        encode_into(&mut bytes, b"{\"b\":2}");
        let d = decode(&bytes);
        assert_eq!(d.records.len(), 3);
        assert_eq!(&bytes[d.records[2].clone()], b"{\"b\":2}");
        assert_eq!(d.valid_len, bytes.len());
        assert_eq!(frame_sizes(&bytes).collect::<Vec<_>>(), [15, 8, 15]);
        assert_eq!(
            frame_crc(&bytes, &d.records[2]),
            crc32fast::hash(b"{\"b\":2}")
        );

        let good = d.valid_len;
        // Every possible tear of a fourth frame keeps exactly the first three.
        let mut torn = bytes.clone();
        encode_into(&mut torn, b"{\"c\":3}");
        for cut in good..torn.len() {
            let d = decode(&torn[..cut]);
            assert_eq!((d.records.len(), d.valid_len), (3, good), "cut at {cut}");
        }
        // A flipped bit in the payload is caught by the checksum.
        let mut flipped = torn.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert_eq!(decode(&flipped).records.len(), 3);
        // A huge length cannot overflow or over-read.
        let mut junk = bytes.clone();
        junk.extend_from_slice(&u32::MAX.to_le_bytes());
        junk.extend_from_slice(&[0; 4]);
        assert_eq!(decode(&junk).valid_len, good);
    }
}
