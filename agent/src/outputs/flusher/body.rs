//! A request's body: records `start..end` of a chunk with what the
//! request format puts around them, read from the chunk a piece at a time
//! while it is sent. A body made whole held the chunk's MiB in memory for
//! each request; pieces hold about `PIECE_BYTES` (and one record, if a
//! record is larger).

use std::io;
use std::ops::Range;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use hyper::body::{Frame, SizeHint};

use crate::buffer::ChunkRecords;

use crate::outputs::RequestFormat;

/// A chunk's records shared by the requests made of them, and whether
/// reading one of those failed (the flusher then checks the chunk again).
pub struct SharedRecords {
    pub records: ChunkRecords,
    read_failed: AtomicBool,
}

impl SharedRecords {
    pub fn new(records: ChunkRecords) -> Arc<SharedRecords> {
        Arc::new(SharedRecords {
            records,
            read_failed: AtomicBool::new(false),
        })
    }

    /// A body's piece could not be read from the chunk.
    pub fn read_failed(&self) -> bool {
        self.read_failed.load(Ordering::Relaxed)
    }
}

pub struct RequestBody {
    shared: Arc<SharedRecords>,
    wrap: Wrapping,
    first: usize,
    next: usize,
    end: usize,
    /// Bytes not yet given out.
    left: usize,
    piece_bytes: usize,
}

impl RequestBody {
    /// The frames read from the chunk for one piece of a body.
    pub const PIECE_BYTES: usize = 64 << 10;

    pub fn new(shared: Arc<SharedRecords>, format: RequestFormat, range: Range<usize>) -> Self {
        let wrap = Wrapping::of(format);
        let records = &shared.records;
        let payloads: usize = range.clone().map(|i| records.record_len(i)).sum();
        let left = wrap.open.len() + payloads + range.len() * wrap.per_record()
            - wrap.between.len()
            + wrap.close.len();
        RequestBody {
            shared,
            wrap,
            first: range.start,
            next: range.start,
            end: range.end,
            left,
            piece_bytes: Self::PIECE_BYTES,
        }
    }

    /// Its length in bytes.
    pub fn len(&self) -> usize {
        self.left
    }

    /// The whole body, for outputs that need it at once.
    pub fn into_vec(mut self) -> io::Result<Vec<u8>> {
        self.piece_bytes = usize::MAX;
        match self.next_piece() {
            Some(Ok(mut piece)) => Ok(std::mem::take(&mut piece.bytes)),
            Some(Err(e)) => Err(e),
            None => Ok(Vec::new()),
        }
    }

    /// The next piece: the frames of the records that fit in `piece_bytes`
    /// read at once, and the body written over them in place.
    fn next_piece(&mut self) -> Option<io::Result<Piece>> {
        if self.next >= self.end {
            return None;
        }
        let records = &self.shared.records;
        let n = records.frames_within(self.next, self.end, self.piece_bytes);
        let range = self.next..self.next + n;
        let mut bytes = if self.piece_bytes == usize::MAX {
            Vec::new()
        } else {
            Piece::spare()
        };
        match records.read_frames(range.clone(), &mut bytes) {
            Ok(()) => {}
            Err(e) => {
                let what = format!(
                    "reading records {}..{} of the buffer chunk",
                    self.next,
                    self.next + n
                );
                self.shared.read_failed.store(true, Ordering::Relaxed);
                self.next = self.end;
                return Some(Err(io::Error::new(e.kind(), format!("{what}: {e}"))));
            }
        };
        let (first, last) = (self.next == self.first, self.next + n == self.end);
        let mut out = InPlace { bytes, written: 0 };
        self.wrap
            .write(records.payloads(range), &mut out, first, last);
        out.bytes.truncate(out.written);
        self.next += n;
        self.left = self.left.saturating_sub(out.bytes.len());
        Some(Ok(Piece {
            bytes: out.bytes,
            at: 0,
        }))
    }
}

/// A piece of a body, held by hyper until it is written. Its buffer is
/// then kept for a next piece: a new 64 KiB buffer per piece was a fresh
/// large allocation each time, and the allocator's returning and
/// re-faulting its pages cost more CPU than the rest of the delivery.
pub struct Piece {
    bytes: Vec<u8>,
    at: usize,
}

/// Piece buffers kept for reuse: two, one queued in hyper while the next
/// is read.
static SPARE: Mutex<Vec<Vec<u8>>> = Mutex::new(Vec::new());

impl Piece {
    pub fn whole(bytes: Vec<u8>) -> Piece {
        Piece { bytes, at: 0 }
    }

    fn spare() -> Vec<u8> {
        SPARE.lock().unwrap().pop().unwrap_or_default()
    }
}

impl Drop for Piece {
    fn drop(&mut self) {
        let bytes = std::mem::take(&mut self.bytes);
        // A piece of one big record, or a whole body, is not kept.
        if bytes.capacity() > 0 && bytes.capacity() <= RequestBody::PIECE_BYTES {
            let mut spare = SPARE.lock().unwrap();
            if spare.len() < 2 {
                spare.push(bytes);
            }
        }
    }
}

impl bytes::Buf for Piece {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.at
    }

    fn chunk(&self) -> &[u8] {
        &self.bytes[self.at..]
    }

    fn advance(&mut self, n: usize) {
        assert!(n <= self.remaining(), "advanced past the piece");
        self.at += n;
    }
}

impl hyper::body::Body for RequestBody {
    type Data = Piece;
    type Error = io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Piece>, io::Error>>> {
        Poll::Ready(self.next_piece().map(|piece| piece.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.next >= self.end
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left as u64)
    }
}

/// What a request body puts around its records.
pub struct Wrapping {
    pub open: &'static [u8],
    pub between: &'static [u8],
    /// Each record after its length (u32, little endian).
    length_prefix: bool,
    after: &'static [u8],
    pub close: &'static [u8],
}

impl Wrapping {
    pub fn of(format: RequestFormat) -> Wrapping {
        let (open, between, length_prefix, after, close): (&[u8], &[u8], bool, &[u8], &[u8]) =
            match format {
                RequestFormat::Ndjson => (b"", b"", false, b"\n", b""),
                RequestFormat::JsonArray => (b"[", b",", false, b"", b"]"),
                RequestFormat::Json => (b"", b"", false, b"", b""),
                RequestFormat::LengthPrefixed => (b"", b"", true, b"", b""),
            };
        Wrapping {
            open,
            between,
            length_prefix,
            after,
            close,
        }
    }

    /// Bytes a record adds besides its own (the separator before it
    /// counted, as for every record but the first).
    pub fn per_record(&self) -> usize {
        self.between.len() + if self.length_prefix { 4 } else { 0 } + self.after.len()
    }

    /// Writes the records at `payloads` (ranges of `out`'s bytes) to `out`:
    /// one piece of a body, its `first` and/or `last`.
    fn write(
        &self,
        payloads: impl Iterator<Item = Range<usize>>,
        out: &mut InPlace,
        first: bool,
        last: bool,
    ) {
        if first {
            out.literal(self.open);
        }
        for (i, r) in payloads.enumerate() {
            if i > 0 || !first {
                out.literal(self.between);
            }
            if self.length_prefix {
                let len = u32::try_from(r.len()).expect("a stored record is under 4 GiB");
                out.literal(&len.to_le_bytes());
            }
            out.record(r);
            out.literal(self.after);
        }
        if last {
            out.literal(self.close);
        }
    }
}

/// A piece written over the frames' bytes from their start: each record's
/// frame header (8 bytes) is longer than what the body puts before and
/// after it (at most an opening or a separator and a length, 5 bytes), so
/// the writing never reaches a record not yet moved.
struct InPlace {
    bytes: Vec<u8>,
    written: usize,
}

impl InPlace {
    fn literal(&mut self, bytes: &[u8]) {
        let end = self.written + bytes.len();
        if end <= self.bytes.len() {
            self.bytes[self.written..end].copy_from_slice(bytes);
        } else {
            // Past the last record: only the closing `]` can get here.
            self.bytes.truncate(self.written);
            self.bytes.extend_from_slice(bytes);
        }
        self.written = end;
    }

    fn record(&mut self, range: Range<usize>) {
        assert!(
            range.start >= self.written,
            "a body never overtakes its records"
        );
        let len = range.len();
        self.bytes.copy_within(range, self.written);
        self.written += len;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::chunk;

    fn chunk_of(records: &[&[u8]]) -> Arc<SharedRecords> {
        let mut bytes = Vec::new();
        for r in records {
            chunk::encode_into(&mut bytes, r);
        }
        SharedRecords::new(ChunkRecords::decode(bytes, records.len() as u64).unwrap())
    }

    /// The pieces of a body read `piece_bytes` of frames at a time, and
    /// what its length said.
    fn pieces(
        shared: &Arc<SharedRecords>,
        format: RequestFormat,
        range: Range<usize>,
        piece_bytes: usize,
    ) -> (Vec<Vec<u8>>, usize) {
        let mut body = RequestBody::new(shared.clone(), format, range);
        body.piece_bytes = piece_bytes;
        let len = body.len();
        let mut out = Vec::new();
        while let Some(piece) = body.next_piece() {
            out.push(bytes::Buf::chunk(&piece.unwrap()).to_vec());
        }
        assert_eq!(body.len(), 0, "every byte given out");
        (out, len)
    }

    #[test]
    fn a_body_read_in_pieces_is_the_body_read_whole() {
        let records: [&[u8]; 6] = [
            b"{\"a\":1}",
            b"",
            b"x",
            b"{\"long\":\"0123456789abcdef\"}",
            b"y",
            b"{}",
        ];
        let shared = chunk_of(&records);
        let formats = [
            RequestFormat::Ndjson,
            RequestFormat::JsonArray,
            RequestFormat::Json,
            RequestFormat::LengthPrefixed,
        ];
        for format in formats {
            for start in 0..records.len() {
                for end in start + 1..=records.len() {
                    let whole = RequestBody::new(shared.clone(), format, start..end);
                    let len = whole.len();
                    let whole = whole.into_vec().unwrap();
                    assert_eq!(whole.len(), len, "{format:?} {start}..{end}: length");
                    // Pieces of one frame, of a few, and of every one.
                    for piece_bytes in [1, 20, 50, usize::MAX] {
                        let (pieces, said) = pieces(&shared, format, start..end, piece_bytes);
                        assert_eq!(said, len);
                        assert_eq!(
                            pieces.concat(),
                            whole,
                            "{format:?} {start}..{end} by {piece_bytes}"
                        );
                    }
                }
            }
        }
        // What each format makes of the last three records.
        let body = |format| {
            let b = RequestBody::new(shared.clone(), format, 3..6);
            String::from_utf8_lossy(&b.into_vec().unwrap()).into_owned()
        };
        assert_eq!(
            body(RequestFormat::Ndjson),
            "{\"long\":\"0123456789abcdef\"}\ny\n{}\n"
        );
        assert_eq!(
            body(RequestFormat::JsonArray),
            "[{\"long\":\"0123456789abcdef\"},y,{}]"
        );
        let (one_by_one, _) = pieces(&shared, RequestFormat::JsonArray, 3..6, 1);
        assert_eq!(
            one_by_one,
            [
                b"[{\"long\":\"0123456789abcdef\"}".to_vec(),
                b",y".to_vec(),
                b",{}]".to_vec()
            ]
        );
        assert_eq!(
            RequestBody::new(shared.clone(), RequestFormat::LengthPrefixed, 4..6)
                .into_vec()
                .unwrap(),
            b"\x01\0\0\0y\x02\0\0\0{}".to_vec()
        );
    }

    #[test]
    fn a_chunk_cut_while_it_is_sent_fails_the_body_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("chunk");
        let mut bytes = Vec::new();
        for r in [&b"{\"a\":1}"[..], b"{\"b\":2}"] {
            chunk::encode_into(&mut bytes, r);
        }
        std::fs::write(&path, &bytes).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let shared = SharedRecords::new(
            ChunkRecords::open(crate::buffer::chunk::ChunkBytes::File(file), 2).unwrap(),
        );
        // Cut after it was checked: the second frame is gone.
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .unwrap()
            .set_len(10)
            .unwrap();
        let mut body = RequestBody::new(shared.clone(), RequestFormat::Ndjson, 0..2);
        body.piece_bytes = 1;
        assert!(!shared.read_failed());
        assert!(body.next_piece().unwrap().is_err());
        assert!(shared.read_failed());
        assert!(body.next_piece().is_none(), "a failed body ends");
    }
}
