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

/// Where a chunk read for delivery is read from: its file, opened once
/// (a deleted chunk's file stays readable through it), or a memory chunk's
/// bytes.
pub enum ChunkBytes {
    File(std::fs::File),
    Memory(std::sync::Arc<Vec<u8>>),
}

impl ChunkBytes {
    /// Fills `buf` from byte `at`; a chunk shorter than that (cut while it
    /// was read) is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], at: u64) -> io::Result<()> {
        match self {
            ChunkBytes::File(f) => std::os::unix::fs::FileExt::read_exact_at(f, buf, at),
            ChunkBytes::Memory(bytes) => {
                let from = usize::try_from(at).unwrap_or(usize::MAX);
                match from
                    .checked_add(buf.len())
                    .and_then(|to| bytes.get(from..to))
                {
                    Some(b) => {
                        buf.copy_from_slice(b);
                        Ok(())
                    }
                    None => Err(io::ErrorKind::UnexpectedEof.into()),
                }
            }
        }
    }
}

/// One record's frame in a chunk: where it ends, its payload's length and
/// checksum.
#[derive(Clone, Copy)]
struct Frame {
    end: u64,
    len: u32,
    crc: u32,
}

/// How much of a chunk is read at a time when it is checked.
const SCAN_BLOCK: usize = 64 << 10;

/// A chunk's records, checked and ready for delivery. Only where each
/// record lies is kept in memory; bodies are read from the chunk a piece
/// at a time as they are sent (`read_frames`): a chunk read whole (a MiB
/// by default) was most of what the agent's memory grew by while it
/// shipped.
pub struct ChunkRecords {
    bytes: ChunkBytes,
    frames: Vec<Frame>,
}

impl ChunkRecords {
    /// The first `records` records of a chunk, each frame's checksum
    /// checked, reading it in blocks. A chunk holding fewer intact records
    /// than were written to it (damaged on disk) is an `InvalidData` error.
    pub fn open(bytes: ChunkBytes, records: u64) -> io::Result<ChunkRecords> {
        let wanted = usize::try_from(records).unwrap_or(usize::MAX);
        // The count is known: the list is allocated once (grown by
        // doubling, a MiB chunk's list took twice its size).
        let mut frames = Vec::with_capacity(wanted.min(1 << 20));
        let (valid_len, damaged) = match &bytes {
            ChunkBytes::Memory(b) => scan(&mut &b[..], wanted, &mut frames)?,
            ChunkBytes::File(f) => scan(
                &mut io::BufReader::with_capacity(SCAN_BLOCK, f),
                wanted,
                &mut frames,
            )?,
        };
        if frames.len() < wanted {
            let why = if damaged { "is damaged" } else { "is missing" };
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "{} intact records of {records}: the frame at byte {valid_len} {why}",
                    frames.len()
                ),
            ));
        }
        Ok(ChunkRecords { bytes, frames })
    }

    /// A chunk made of `bytes` (tests).
    #[cfg(test)]
    pub fn decode(bytes: Vec<u8>, records: u64) -> io::Result<ChunkRecords> {
        ChunkRecords::open(ChunkBytes::Memory(bytes.into()), records)
    }

    pub fn len(&self) -> usize {
        self.frames.len()
    }

    /// The length of record `i`'s payload.
    pub fn record_len(&self, i: usize) -> usize {
        self.frames[i].len as usize
    }

    /// Where record `i`'s frame starts in the chunk.
    fn frame_start(&self, i: usize) -> u64 {
        let f = &self.frames[i];
        f.end - f.len as u64 - HEADER as u64
    }

    /// Reads the frames of records `range` (not empty) from the chunk into
    /// `buf`, which it replaces.
    pub fn read_frames(&self, range: Range<usize>, buf: &mut Vec<u8>) -> io::Result<()> {
        let base = self.frame_start(range.start);
        let len = usize::try_from(self.frames[range.end - 1].end - base)
            .map_err(|_| io::Error::other("frames too large for memory"))?;
        // Only bytes the buffer never held are zeroed first: zeroing the
        // whole piece each time was 2% of the slow-log path's
        // instructions, for bytes read over at once.
        if buf.len() < len {
            buf.resize(len, 0);
        } else {
            buf.truncate(len);
        }
        self.bytes.read_exact_at(buf, base)
    }

    /// Where the payloads of records `range` lie in what `read_frames`
    /// read for them.
    pub fn payloads(&self, range: Range<usize>) -> impl Iterator<Item = Range<usize>> + '_ {
        let base = self.frame_start(range.start);
        self.frames[range].iter().map(move |f| {
            let end = (f.end - base) as usize;
            end - f.len as usize..end
        })
    }

    /// How many records from `start` have frames that fit in `max_bytes`
    /// (at least one): a piece of a body read at once.
    pub fn frames_within(&self, start: usize, end: usize, max_bytes: usize) -> usize {
        let base = self.frame_start(start);
        let mut n = 1;
        while start + n < end && (self.frames[start + n].end - base) as usize <= max_bytes {
            n += 1;
        }
        n
    }

    /// Record `i`'s payload, read from the chunk.
    #[cfg(test)]
    pub fn get(&self, i: usize) -> Vec<u8> {
        let mut bytes = Vec::new();
        self.read_frames(i..i + 1, &mut bytes).expect("readable");
        let payload = self.payloads(i..i + 1).next().expect("one record");
        bytes[payload].to_vec()
    }

    /// Where record `i`'s frame ends in the chunk, and its checksum: what
    /// identifies delivery progress up to it.
    pub fn frame_end(&self, i: usize) -> (u64, u32) {
        let f = &self.frames[i];
        (f.end, f.crc)
    }
}

/// Reads frames from `r` until `wanted` are found, a frame is torn or
/// damaged, or the end: `frames` gets each intact one. Returns where the
/// intact frames end and whether a damaged frame (not just the end) stopped
/// the scan. The same rules as `decode`.
fn scan(
    r: &mut impl io::BufRead,
    wanted: usize,
    frames: &mut Vec<Frame>,
) -> io::Result<(u64, bool)> {
    let mut pos = 0u64;
    while frames.len() < wanted {
        let mut header = [0u8; HEADER];
        match read_full(r, &mut header)? {
            0 => return Ok((pos, false)),
            n if n < HEADER => return Ok((pos, true)),
            _ => {}
        }
        let len = u32::from_le_bytes(header[..4].try_into().expect("4 bytes"));
        let crc = u32::from_le_bytes(header[4..].try_into().expect("4 bytes"));
        let mut hasher = crc32fast::Hasher::new();
        let mut left = len as usize;
        while left > 0 {
            let block = r.fill_buf()?;
            if block.is_empty() {
                return Ok((pos, true));
            }
            let take = block.len().min(left);
            hasher.update(&block[..take]);
            r.consume(take);
            left -= take;
        }
        if hasher.finalize() != crc {
            return Ok((pos, true));
        }
        pos += framed_len(len as usize) as u64;
        frames.push(Frame { end: pos, len, crc });
    }
    Ok((pos, false))
}

/// Reads into `buf` until it is full or the input ends: the bytes read.
fn read_full(r: &mut impl io::Read, buf: &mut [u8]) -> io::Result<usize> {
    let mut n = 0;
    while n < buf.len() {
        match r.read(&mut buf[n..]) {
            Ok(0) => break,
            Ok(k) => n += k,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chunk_opened_for_delivery_keeps_decode_s_rules() {
        // A record longer than a scan block, so its checksum spans blocks.
        let big = vec![b'x'; SCAN_BLOCK * 2 + 5];
        let payloads: [&[u8]; 4] = [b"{\"a\":1}", &big, b"", b"{\"b\":2}"];
        let mut bytes = Vec::new();
        for p in payloads {
            encode_into(&mut bytes, p);
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk");
        let from_file = |b: &[u8]| {
            std::fs::write(&path, b).unwrap();
            ChunkBytes::File(std::fs::File::open(&path).unwrap())
        };
        for source in ["memory", "file"] {
            let open = |b: &[u8], n: u64| match source {
                "memory" => ChunkRecords::open(ChunkBytes::Memory(b.to_vec().into()), n),
                _ => ChunkRecords::open(from_file(b), n),
            };
            let r = open(&bytes, 4).unwrap();
            for (i, p) in payloads.iter().enumerate() {
                assert_eq!(r.get(i), *p, "{source}: record {i}");
                assert_eq!(r.record_len(i), p.len());
            }
            let d = decode(&bytes);
            assert_eq!(
                r.frame_end(3),
                (bytes.len() as u64, frame_crc(&bytes, &d.records[3]))
            );
            // Every cut inside the last frame leaves three records: enough
            // for a chunk that counted three, damage for one that counted
            // four, as `decode` sees it.
            let three = d.records[2].end;
            for cut in (three..bytes.len()).step_by(3) {
                assert_eq!(
                    open(&bytes[..cut], 3).unwrap().len(),
                    3,
                    "{source}: cut at {cut}"
                );
                let e = open(&bytes[..cut], 4).err().expect("torn");
                assert_eq!(e.kind(), io::ErrorKind::InvalidData);
                assert!(e.to_string().starts_with("3 intact records of 4"), "{e}");
            }
            // A bit flipped in the big record: one intact record.
            let mut flipped = bytes.clone();
            flipped[d.records[1].start + SCAN_BLOCK + 1] ^= 1;
            let e = open(&flipped, 4).err().expect("damaged");
            assert!(
                e.to_string()
                    .contains("1 intact records of 4: the frame at byte 15 is damaged"),
                "{e}"
            );
        }
    }

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
