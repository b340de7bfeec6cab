//! MessagePack as the forward protocol needs it: measuring a value to split a
//! TCP stream into frames, reading values out of a byte slice without
//! copying, converting them to the agent's JSON records, and writing records
//! back.
//!
//! A msgpack `str` is read as bytes, never checked for UTF-8: fluent-bit puts
//! random bytes in str fields (its handshake salt is 16 raw bytes in a str),
//! and Fluentd's PackedForward entries arrive as a str32. Text becomes UTF-8
//! only in [`to_json`], lossily.

use std::sync::Arc;

use rmp::Marker;

use crate::record::{Key, Record};

/// One msgpack value, borrowing its strings and binaries from the input.
#[derive(Debug, Clone, PartialEq)]
pub enum Value<'a> {
    Nil,
    Bool(bool),
    /// Every integer that fits an i64, whatever its encoding.
    Int(i64),
    /// Only integers above `i64::MAX`.
    UInt(u64),
    F32(f32),
    F64(f64),
    Str(&'a [u8]),
    Bin(&'a [u8]),
    Array(Vec<Value<'a>>),
    Map(Vec<(Value<'a>, Value<'a>)>),
    /// Extension type and data; fixext and ext encodings read alike.
    Ext(i8, &'a [u8]),
}

impl<'a> Value<'a> {
    /// The bytes of a `str` or `bin`.
    pub fn bytes(&self) -> Option<&'a [u8]> {
        match *self {
            Value::Str(b) | Value::Bin(b) => Some(b),
            _ => None,
        }
    }

    /// The value under a `str`/`bin` key of a map (the first, if repeated).
    pub fn get(&self, key: &[u8]) -> Option<&Value<'a>> {
        match self {
            Value::Map(pairs) => pairs
                .iter()
                .find(|(k, _)| k.bytes() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

/// Bounds on one value (for [`value_len`] and [`decode`], the value given;
/// for `message::decode_message`, each event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Arrays and maps nested in one another, the outermost counting 1.
    pub max_depth: usize,
    /// Elements of all arrays and maps in the value together (a map's pair
    /// counts 2). A header claiming more is refused before anything is
    /// allocated for it.
    pub max_items: usize,
}

impl Default for Limits {
    /// Room for any frame of a few MiB (each element takes at least a byte)
    /// and for records nested as deep as JSON parsers allow.
    fn default() -> Self {
        Limits {
            max_depth: 64,
            max_items: 1 << 23,
        }
    }
}

/// Extension type of EventTime: 4-byte big-endian seconds, then 4-byte
/// big-endian nanoseconds.
pub const EVENT_TIME_EXT: i8 = 0;

/// [`decode`] recurses; whatever the limits say, it stops here so that a
/// hostile nesting ends in an error, not a stack overflow.
pub const MAX_DECODE_DEPTH: usize = 512;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("msgpack value cut off: more bytes needed after the {0} given")]
    Truncated(usize),
    #[error("invalid msgpack: reserved byte 0xc1 at offset {0}")]
    Reserved(usize),
    #[error("msgpack nested deeper than {max} levels (at offset {at})")]
    TooDeep { max: usize, at: usize },
    #[error("msgpack value with more than {max} array and map elements (at offset {at})")]
    TooManyItems { max: usize, at: usize },
    #[error("msgpack value longer than {max} bytes (at offset {at})")]
    TooLarge { max: usize, at: usize },
}

/// A value's header: what it is, and for strings, binaries, extensions,
/// arrays and maps how many bytes or elements follow.
#[derive(Debug, Clone, Copy)]
pub(super) enum Head {
    Nil,
    Bool(bool),
    Int(i64),
    UInt(u64),
    F32(f32),
    F64(f64),
    Str(u32),
    Bin(u32),
    Ext(i8, u32),
    Array(u32),
    Map(u32),
}

/// The msgpack str at the start of `buf`: its bytes and the bytes it
/// takes with its header; None if `buf` does not start with a whole str.
pub fn leading_str(buf: &[u8]) -> Option<(&[u8], usize)> {
    match head(buf, 0) {
        Ok(Some((Head::Str(n), used))) => {
            let end = used.checked_add(n as usize)?;
            buf.get(used..end).map(|s| (s, end))
        }
        _ => None,
    }
}

/// The header at `pos` and the offset just after it; None when the header
/// itself is cut off.
pub(super) fn head(buf: &[u8], pos: usize) -> Result<Option<(Head, usize)>, DecodeError> {
    let Some(&byte) = buf.get(pos) else {
        return Ok(None);
    };
    // The one-byte headers, which most elements of a record have, first.
    let quick = match byte {
        0x00..=0x7f => Some(Head::Int(i64::from(byte))),
        0x80..=0x8f => Some(Head::Map(u32::from(byte & 0x0f))),
        0x90..=0x9f => Some(Head::Array(u32::from(byte & 0x0f))),
        0xa0..=0xbf => Some(Head::Str(u32::from(byte & 0x1f))),
        0xc0 => Some(Head::Nil),
        0xe0..=0xff => Some(Head::Int(i64::from(byte as i8))),
        _ => None,
    };
    if let Some(h) = quick {
        return Ok(Some((h, pos + 1)));
    }
    let marker = Marker::from_u8(byte);
    // Bytes of the header after the marker: lengths, the ext type, or the
    // whole payload of a number.
    let extra = match marker {
        Marker::U8 | Marker::I8 | Marker::Str8 | Marker::Bin8 => 1,
        Marker::U16
        | Marker::I16
        | Marker::Str16
        | Marker::Bin16
        | Marker::Array16
        | Marker::Map16 => 2,
        Marker::U32
        | Marker::I32
        | Marker::F32
        | Marker::Str32
        | Marker::Bin32
        | Marker::Array32
        | Marker::Map32 => 4,
        Marker::U64 | Marker::I64 | Marker::F64 => 8,
        Marker::FixExt1
        | Marker::FixExt2
        | Marker::FixExt4
        | Marker::FixExt8
        | Marker::FixExt16 => 1,
        Marker::Ext8 => 2,
        Marker::Ext16 => 3,
        Marker::Ext32 => 5,
        _ => 0,
    };
    let start = pos + 1;
    let Some(b) = buf.get(start..start + extra) else {
        return Ok(None);
    };
    let be = |n: usize| b[..n].iter().fold(0u64, |acc, &x| acc << 8 | u64::from(x));
    // Lengths in headers are at most 32 bits wide.
    let len = |n: usize| be(n) as u32;
    let h = match marker {
        Marker::FixPos(n) => Head::Int(n.into()),
        Marker::FixNeg(n) => Head::Int(n.into()),
        Marker::Null => Head::Nil,
        Marker::True => Head::Bool(true),
        Marker::False => Head::Bool(false),
        Marker::Reserved => return Err(DecodeError::Reserved(pos)),
        Marker::U8 | Marker::U16 | Marker::U32 => Head::Int(be(extra) as i64),
        Marker::U64 => match i64::try_from(be(8)) {
            Ok(i) => Head::Int(i),
            Err(_) => Head::UInt(be(8)),
        },
        Marker::I8 => Head::Int((b[0] as i8).into()),
        Marker::I16 => Head::Int(i16::from_be_bytes([b[0], b[1]]).into()),
        Marker::I32 => Head::Int(i32::from_be_bytes([b[0], b[1], b[2], b[3]]).into()),
        Marker::I64 => Head::Int(be(8) as i64),
        Marker::F32 => Head::F32(f32::from_bits(be(4) as u32)),
        Marker::F64 => Head::F64(f64::from_bits(be(8))),
        Marker::FixStr(n) => Head::Str(n.into()),
        Marker::Str8 | Marker::Str16 | Marker::Str32 => Head::Str(len(extra)),
        Marker::Bin8 | Marker::Bin16 | Marker::Bin32 => Head::Bin(len(extra)),
        Marker::FixArray(n) => Head::Array(n.into()),
        Marker::Array16 | Marker::Array32 => Head::Array(len(extra)),
        Marker::FixMap(n) => Head::Map(n.into()),
        Marker::Map16 | Marker::Map32 => Head::Map(len(extra)),
        Marker::FixExt1 => Head::Ext(b[0] as i8, 1),
        Marker::FixExt2 => Head::Ext(b[0] as i8, 2),
        Marker::FixExt4 => Head::Ext(b[0] as i8, 4),
        Marker::FixExt8 => Head::Ext(b[0] as i8, 8),
        Marker::FixExt16 => Head::Ext(b[0] as i8, 16),
        Marker::Ext8 => Head::Ext(b[1] as i8, len(1)),
        Marker::Ext16 => Head::Ext(b[2] as i8, len(2)),
        Marker::Ext32 => Head::Ext(b[4] as i8, len(4)),
    };
    Ok(Some((h, start + extra)))
}

/// Bytes of payload after a header (strings, binaries, extension data).
fn payload(h: Head) -> usize {
    match h {
        Head::Str(n) | Head::Bin(n) | Head::Ext(_, n) => n as usize,
        _ => 0,
    }
}

/// Length of the first complete msgpack value at the start of `buf`: None if
/// more bytes are needed, an error if it is malformed or over the limits.
/// Nothing is decoded or allocated but one counter per open array or map
/// (at most `max_depth`): this is how a server splits a TCP stream into
/// frames.
pub fn value_len(buf: &[u8], limits: &Limits) -> Result<Option<usize>, DecodeError> {
    frame_len(buf, limits, usize::MAX)
}

/// [`value_len`] for a stream whose frames may not exceed `max_bytes`: a
/// header claiming a string, binary or element count that cannot fit is an
/// error at once, and so is a buffer of `max_bytes` that still holds no
/// complete value, instead of waiting for bytes that must not be buffered.
pub fn frame_len(
    buf: &[u8],
    limits: &Limits,
    max_bytes: usize,
) -> Result<Option<usize>, DecodeError> {
    FrameScan::default().next(buf, limits, max_bytes)
}

/// [`frame_len`] that remembers how far it got: when the buffer did not
/// yet hold the whole frame, the next call (with more bytes appended, none
/// removed) resumes there. A frame that arrives in many reads is scanned
/// once, not once per read (which made a 2 MiB frame cost about four
/// scans of itself).
#[derive(Debug, Default)]
pub struct FrameScan {
    /// Elements still to come in each open array and map, innermost last.
    open: Vec<u64>,
    items: u64,
    pos: usize,
}

impl FrameScan {
    /// The first frame's length once `buf` holds all of it (the scan then
    /// starts afresh for the next frame); None while it does not.
    pub fn next(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        max_bytes: usize,
    ) -> Result<Option<usize>, DecodeError> {
        let result = self.scan(buf, limits, max_bytes);
        if !matches!(result, Ok(None)) {
            *self = FrameScan::default();
        }
        result
    }

    fn scan(
        &mut self,
        buf: &[u8],
        limits: &Limits,
        max_bytes: usize,
    ) -> Result<Option<usize>, DecodeError> {
        let too_large = |at| DecodeError::TooLarge { max: max_bytes, at };
        let more = |at| {
            if buf.len() >= max_bytes {
                Err(too_large(at))
            } else {
                Ok(None)
            }
        };
        loop {
            let pos = self.pos;
            let Some((h, next)) = head(buf, pos)? else {
                return more(pos);
            };
            let end = next.saturating_add(payload(h));
            if end > max_bytes {
                return Err(too_large(pos));
            }
            if end > buf.len() {
                return more(pos);
            }
            let at = pos;
            self.pos = end;
            let count = match h {
                Head::Array(n) => Some(u64::from(n)),
                Head::Map(n) => Some(2 * u64::from(n)),
                _ => None,
            };
            if let Some(count) = count {
                if self.open.len() >= limits.max_depth {
                    return Err(DecodeError::TooDeep {
                        max: limits.max_depth,
                        at,
                    });
                }
                self.items += count;
                if self.items > limits.max_items as u64 {
                    return Err(DecodeError::TooManyItems {
                        max: limits.max_items,
                        at,
                    });
                }
                // Every element takes at least a byte.
                if self.pos as u64 + count > max_bytes as u64 {
                    return Err(too_large(at));
                }
                if count > 0 {
                    self.open.push(count);
                    continue;
                }
            }
            // A value is complete, and with it every container it was the
            // last element of.
            loop {
                match self.open.last_mut() {
                    None => return Ok(Some(self.pos)),
                    Some(left) => {
                        *left -= 1;
                        if *left > 0 {
                            break;
                        }
                        self.open.pop();
                    }
                }
            }
        }
    }
}

/// Length of the first complete value, with no limits on depth or size and
/// in constant memory: a single count of the values still to skip. Used to
/// step over one event that is over the limits and go on with the next.
pub fn skip_len(buf: &[u8]) -> Result<Option<usize>, DecodeError> {
    let mut pending: u64 = 1;
    let mut pos = 0;
    while pending > 0 {
        let Some((h, next)) = head(buf, pos)? else {
            return Ok(None);
        };
        let end = next.saturating_add(payload(h));
        if end > buf.len() {
            return Ok(None);
        }
        pos = end;
        pending -= 1;
        match h {
            Head::Array(n) => pending += u64::from(n),
            Head::Map(n) => pending += 2 * u64::from(n),
            _ => {}
        }
    }
    Ok(Some(pos))
}

/// The first value in `buf` and the bytes it used. Allocation is bounded by
/// `max_items` and by the input (an array claiming 2^32 elements in a short
/// buffer is refused before its vector is made), recursion by `max_depth`
/// and [`MAX_DECODE_DEPTH`].
pub fn decode<'a>(buf: &'a [u8], limits: &Limits) -> Result<(Value<'a>, usize), DecodeError> {
    let mut d = Decoder::new(buf, limits);
    let v = d.value(0)?;
    Ok((v, d.pos))
}

/// Reads values one after another out of a byte slice, counting them
/// against the limits of [`decode`] (which is one `value` of a fresh one).
pub(super) struct Decoder<'a> {
    buf: &'a [u8],
    pos: usize,
    items: u64,
    max_depth: usize,
    max_items: usize,
}

impl<'a> Decoder<'a> {
    pub(super) fn new(buf: &'a [u8], limits: &Limits) -> Self {
        Decoder {
            buf,
            pos: 0,
            items: 0,
            max_depth: limits.max_depth.min(MAX_DECODE_DEPTH),
            max_items: limits.max_items,
        }
    }

    /// Where the next value starts.
    pub(super) fn pos(&self) -> usize {
        self.pos
    }

    /// The next header, consumed; an array or map header is counted
    /// against the limits, at `depth`, before any of its elements is read.
    pub(super) fn head(&mut self, depth: usize) -> Result<Head, DecodeError> {
        let at = self.pos;
        let (h, next) = head(self.buf, at)?.ok_or(DecodeError::Truncated(self.buf.len()))?;
        self.pos = next;
        match h {
            Head::Array(n) => self.open(depth, u64::from(n), at)?,
            Head::Map(n) => self.open(depth, 2 * u64::from(n), at)?,
            _ => {}
        }
        Ok(h)
    }

    fn value(&mut self, depth: usize) -> Result<Value<'a>, DecodeError> {
        Ok(match self.head(depth)? {
            Head::Nil => Value::Nil,
            Head::Bool(b) => Value::Bool(b),
            Head::Int(i) => Value::Int(i),
            Head::UInt(u) => Value::UInt(u),
            Head::F32(f) => Value::F32(f),
            Head::F64(f) => Value::F64(f),
            Head::Str(n) => Value::Str(self.take(n)?),
            Head::Bin(n) => Value::Bin(self.take(n)?),
            Head::Ext(t, n) => Value::Ext(t, self.take(n)?),
            Head::Array(n) => {
                let mut items = Vec::with_capacity((n as usize).min(self.left()));
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Value::Array(items)
            }
            Head::Map(n) => {
                let mut pairs = Vec::with_capacity((n as usize).min(self.left() / 2));
                for _ in 0..n {
                    let k = self.value(depth + 1)?;
                    let v = self.value(depth + 1)?;
                    pairs.push((k, v));
                }
                Value::Map(pairs)
            }
        })
    }

    /// The next value as [`to_json`] makes it, with no [`Value`] between
    /// (the forward input's hot path: a tree per event, then a JSON copy of
    /// it, was a third of its CPU).
    pub(super) fn json(&mut self, depth: usize) -> Result<serde_json::Value, DecodeError> {
        use serde_json::Value as J;
        Ok(match self.head(depth)? {
            Head::Nil => J::Null,
            Head::Bool(b) => J::Bool(b),
            Head::Int(i) => J::from(i),
            Head::UInt(u) => J::from(u),
            Head::F32(f) => float(f64::from(f)),
            Head::F64(f) => float(f),
            Head::Str(n) | Head::Bin(n) => J::String(lossy(self.take(n)?)),
            Head::Ext(t, n) => to_json(&Value::Ext(t, self.take(n)?)),
            Head::Array(n) => {
                let mut items = Vec::with_capacity((n as usize).min(self.left()));
                for _ in 0..n {
                    items.push(self.json(depth + 1)?);
                }
                J::Array(items)
            }
            Head::Map(n) => J::Object(self.json_map(n, depth + 1)?),
        })
    }

    /// The `n` pairs of a map whose header was read, at `depth`, as
    /// [`to_json_map`] makes them.
    pub(super) fn json_map(
        &mut self,
        n: u32,
        depth: usize,
    ) -> Result<serde_json::Map<String, serde_json::Value>, DecodeError> {
        let mut map = serde_json::Map::with_capacity((n as usize).min(self.left() / 2));
        for _ in 0..n {
            let k = self.key(depth)?;
            let v = self.json(depth)?;
            map.insert(k, v);
        }
        Ok(map)
    }

    /// The `n` pairs of a map whose header was read, at `depth`, as
    /// [`to_record`] makes them; keys seen before in `keys` are shared.
    pub(super) fn record(
        &mut self,
        n: u32,
        depth: usize,
        keys: &mut KeyCache,
    ) -> Result<Record, DecodeError> {
        let mut record = Record::with_capacity((n as usize).min(self.left() / 2));
        for _ in 0..n {
            let k = match head(self.buf, self.pos)? {
                Some((Head::Str(len) | Head::Bin(len), next)) => {
                    self.pos = next;
                    keys.key(self.take(len)?)
                }
                _ => Key::Owned(key(&self.value(depth)?)),
            };
            let v = self.json(depth)?;
            record.insert(k, v);
        }
        Ok(record)
    }

    fn key(&mut self, depth: usize) -> Result<String, DecodeError> {
        match head(self.buf, self.pos)? {
            Some((Head::Str(n) | Head::Bin(n), next)) => {
                self.pos = next;
                Ok(lossy(self.take(n)?))
            }
            _ => Ok(key(&self.value(depth)?)),
        }
    }

    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    pub(super) fn take(&mut self, n: u32) -> Result<&'a [u8], DecodeError> {
        let end = self.pos.saturating_add(n as usize);
        let bytes = self
            .buf
            .get(self.pos..end)
            .ok_or(DecodeError::Truncated(self.buf.len()))?;
        self.pos = end;
        Ok(bytes)
    }

    fn open(&mut self, depth: usize, count: u64, at: usize) -> Result<(), DecodeError> {
        if depth >= self.max_depth {
            return Err(DecodeError::TooDeep {
                max: self.max_depth,
                at,
            });
        }
        self.items += count;
        if self.items > self.max_items as u64 {
            return Err(DecodeError::TooManyItems {
                max: self.max_items,
                at,
            });
        }
        // Every element takes at least a byte.
        if count > self.left() as u64 {
            return Err(DecodeError::Truncated(self.buf.len()));
        }
        Ok(())
    }
}

/// Record keys already made, shared by the records that repeat them (most
/// senders' records share a few keys: `message`, `log`, `hostname`), so
/// that each record does not allocate its own copy of each.
#[derive(Default)]
pub struct KeyCache {
    keys: Vec<Arc<str>>,
}

impl KeyCache {
    /// Keys remembered at most; later ones are owned by their records.
    const MAX: usize = 16;
    /// Longer keys are not remembered.
    const MAX_LEN: usize = 64;

    fn key(&mut self, bytes: &[u8]) -> Key {
        if let Some(k) = self.keys.iter().find(|k| k.as_bytes() == bytes) {
            return Key::Shared(k.clone());
        }
        let s = lossy(bytes);
        // Only keys that are UTF-8 as sent: a lossy one never matches again.
        if self.keys.len() < Self::MAX && bytes.len() <= Self::MAX_LEN && s.len() == bytes.len() {
            let k: Arc<str> = s.into();
            self.keys.push(k.clone());
            return Key::Shared(k);
        }
        Key::Owned(s)
    }
}

/// A value as JSON, the way the agent's records hold it:
/// - `str` and `bin` become strings, lossily (invalid UTF-8 becomes U+FFFD);
/// - map keys become strings: `str`/`bin` keys as above, any other key as
///   its JSON text (`1`, `true`);
/// - NaN and infinite floats become null;
/// - an EventTime (ext type 0, 8 bytes) inside a record becomes its seconds
///   as a float (`1700000000.123456789`, to about 0.2 microseconds), any
///   other extension the base64 of its data: a string, so nothing is lost
///   but the type.
pub fn to_json(v: &Value) -> serde_json::Value {
    use serde_json::Value as J;
    match v {
        Value::Nil => J::Null,
        Value::Bool(b) => J::Bool(*b),
        Value::Int(i) => J::from(*i),
        Value::UInt(u) => J::from(*u),
        Value::F32(f) => float(f64::from(*f)),
        Value::F64(f) => float(*f),
        Value::Str(b) | Value::Bin(b) => J::String(lossy(b)),
        Value::Array(items) => J::Array(items.iter().map(to_json).collect()),
        Value::Map(pairs) => J::Object(to_json_map(pairs)),
        Value::Ext(t, data) => match (*t, <[u8; 8]>::try_from(*data)) {
            (EVENT_TIME_EXT, Ok(d)) => {
                let secs = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
                let nanos = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
                float(f64::from(secs) + f64::from(nanos) / 1e9)
            }
            _ => {
                use base64::Engine;
                J::String(base64::engine::general_purpose::STANDARD.encode(data))
            }
        },
    }
}

/// A msgpack map's pairs as a JSON object, in order (a repeated key keeps
/// its first place and its last value).
pub fn to_json_map(pairs: &[(Value, Value)]) -> serde_json::Map<String, serde_json::Value> {
    pairs.iter().map(|(k, v)| (key(k), to_json(v))).collect()
}

/// A msgpack map's pairs as a record, as `to_json_map` orders them.
pub fn to_record(pairs: &[(Value, Value)]) -> Record {
    pairs.iter().map(|(k, v)| (key(k), to_json(v))).collect()
}

fn key(k: &Value) -> String {
    match k.bytes() {
        Some(b) => lossy(b),
        None => to_json(k).to_string(),
    }
}

fn lossy(b: &[u8]) -> String {
    // `from_utf8` checks ASCII a word at a time; `from_utf8_lossy` walks
    // byte by byte even when all is well (8% of the input's CPU).
    match std::str::from_utf8(b) {
        Ok(s) => s.to_owned(),
        Err(_) => String::from_utf8_lossy(b).into_owned(),
    }
}

fn float(f: f64) -> serde_json::Value {
    serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, serde_json::Value::Number)
}

// Writing. rmp's writers over a Vec<u8> go through `io::Write`, which never
// fails for a Vec: the results are dropped here, once. Lengths above
// u32::MAX cannot be written in msgpack; the callers' records and chunks are
// bounded far below (the forward output's max_chunk_bytes).

fn len32(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub fn write_nil(out: &mut Vec<u8>) {
    let _ = rmp::encode::write_nil(out);
}

pub fn write_bool(out: &mut Vec<u8>, b: bool) {
    let _ = rmp::encode::write_bool(out, b);
}

/// In the fewest bytes (non-negative values as unsigned types).
pub fn write_int(out: &mut Vec<u8>, i: i64) {
    let _ = rmp::encode::write_sint(out, i);
}

pub fn write_uint(out: &mut Vec<u8>, u: u64) {
    let _ = rmp::encode::write_uint(out, u);
}

pub fn write_f64(out: &mut Vec<u8>, f: f64) {
    let _ = rmp::encode::write_f64(out, f);
}

/// A `str` of raw bytes (the protocol echoes ids and salts byte for byte).
pub fn write_str(out: &mut Vec<u8>, s: &[u8]) {
    let _ = rmp::encode::write_str_len(out, len32(s.len()));
    out.extend_from_slice(s);
}

pub fn write_bin(out: &mut Vec<u8>, b: &[u8]) {
    write_bin_len(out, b.len());
    out.extend_from_slice(b);
}

pub fn write_bin_len(out: &mut Vec<u8>, n: usize) {
    let _ = rmp::encode::write_bin_len(out, len32(n));
}

pub fn write_array_len(out: &mut Vec<u8>, n: usize) {
    let _ = rmp::encode::write_array_len(out, len32(n));
}

pub fn write_map_len(out: &mut Vec<u8>, n: usize) {
    let _ = rmp::encode::write_map_len(out, len32(n));
}

/// An extension in the shortest form (fixext for 1, 2, 4, 8 and 16 bytes).
pub fn write_ext(out: &mut Vec<u8>, ty: i8, data: &[u8]) {
    let _ = rmp::encode::write_ext_meta(out, len32(data.len()), ty);
    out.extend_from_slice(data);
}

/// A JSON value as msgpack: strings as `str`, integers in the fewest bytes
/// (u64 above i64::MAX as uint 64), other numbers as float 64, objects as
/// maps in their order.
pub fn write_json(out: &mut Vec<u8>, v: &serde_json::Value) {
    use serde_json::Value as J;
    match v {
        J::Null => write_nil(out),
        J::Bool(b) => write_bool(out, *b),
        J::Number(n) => {
            if let Some(i) = n.as_i64() {
                write_int(out, i);
            } else if let Some(u) = n.as_u64() {
                write_uint(out, u);
            } else if let Some(f) = n.as_f64() {
                write_f64(out, f);
            } else {
                write_nil(out);
            }
        }
        J::String(s) => write_str(out, s.as_bytes()),
        J::Array(items) => {
            write_array_len(out, items.len());
            for item in items {
                write_json(out, item);
            }
        }
        J::Object(map) => write_json_map(out, map),
    }
}

/// A record as a msgpack map.
pub fn write_json_map(out: &mut Vec<u8>, map: &serde_json::Map<String, serde_json::Value>) {
    write_fields(out, map.len(), map.iter().map(|(k, v)| (k.as_str(), v)));
}

/// A map of `len` fields, in order: a record's or a JSON object's.
pub fn write_fields<'a>(
    out: &mut Vec<u8>,
    len: usize,
    fields: impl Iterator<Item = (&'a str, &'a serde_json::Value)>,
) {
    write_map_len(out, len);
    for (k, v) in fields {
        write_str(out, k.as_bytes());
        write_json(out, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn limits() -> Limits {
        Limits::default()
    }

    fn one(buf: &[u8]) -> Value<'_> {
        let (v, used) = decode(buf, &limits()).unwrap();
        assert_eq!(used, buf.len());
        v
    }

    #[test]
    fn scalars_in_every_encoding() {
        assert_eq!(one(&[0xc0]), Value::Nil);
        assert_eq!(one(&[0xc3]), Value::Bool(true));
        assert_eq!(one(&[0x7f]), Value::Int(127));
        assert_eq!(one(&[0xe0]), Value::Int(-32));
        assert_eq!(one(&[0xcc, 0xff]), Value::Int(255));
        assert_eq!(one(&[0xcd, 0x01, 0x00]), Value::Int(256));
        assert_eq!(
            one(&[0xce, 0xff, 0xff, 0xff, 0xff]),
            Value::Int(u32::MAX.into())
        );
        assert_eq!(one(&[0xcf, 0, 0, 0, 1, 0, 0, 0, 0]), Value::Int(1 << 32));
        assert_eq!(
            one(&[0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]),
            Value::UInt(u64::MAX)
        );
        assert_eq!(one(&[0xd0, 0x80]), Value::Int(-128));
        assert_eq!(one(&[0xd1, 0x80, 0x00]), Value::Int(-32768));
        assert_eq!(one(&[0xd2, 0x80, 0, 0, 0]), Value::Int(i32::MIN.into()));
        assert_eq!(
            one(&[0xd3, 0x80, 0, 0, 0, 0, 0, 0, 0]),
            Value::Int(i64::MIN)
        );
        assert_eq!(one(&[0xca, 0x40, 0x20, 0, 0]), Value::F32(2.5));
        assert_eq!(one(&[0xcb, 0x40, 0x04, 0, 0, 0, 0, 0, 0]), Value::F64(2.5));
        assert_eq!(one(b"\xa2hi"), Value::Str(b"hi"));
        assert_eq!(one(b"\xd9\x02hi"), Value::Str(b"hi"));
        assert_eq!(one(b"\xda\x00\x02hi"), Value::Str(b"hi"));
        assert_eq!(one(b"\xdb\x00\x00\x00\x02hi"), Value::Str(b"hi"));
        assert_eq!(one(b"\xc4\x02hi"), Value::Bin(b"hi"));
        assert_eq!(one(b"\xc5\x00\x02hi"), Value::Bin(b"hi"));
        assert_eq!(one(b"\xc6\x00\x00\x00\x02hi"), Value::Bin(b"hi"));
        assert_eq!(one(b"\xd4\x05x"), Value::Ext(5, b"x"));
        assert_eq!(one(b"\xc7\x02\xffhi"), Value::Ext(-1, b"hi"));
        assert_eq!(one(b"\xc8\x00\x02\x01hi"), Value::Ext(1, b"hi"));
        assert_eq!(one(b"\xc9\x00\x00\x00\x02\x01hi"), Value::Ext(1, b"hi"));
    }

    #[test]
    fn containers_in_every_encoding() {
        let arr = Value::Array(vec![Value::Int(1), Value::Nil]);
        assert_eq!(one(&[0x92, 0x01, 0xc0]), arr);
        assert_eq!(one(&[0xdc, 0x00, 0x02, 0x01, 0xc0]), arr);
        assert_eq!(one(&[0xdd, 0, 0, 0, 0x02, 0x01, 0xc0]), arr);
        let map = Value::Map(vec![(Value::Str(b"a"), Value::Int(1))]);
        assert_eq!(one(b"\x81\xa1a\x01"), map);
        assert_eq!(one(b"\xde\x00\x01\xa1a\x01"), map);
        assert_eq!(one(b"\xdf\x00\x00\x00\x01\xa1a\x01"), map);
        assert_eq!(map.get(b"a"), Some(&Value::Int(1)));
    }

    #[test]
    fn invalid_utf8_in_str_is_read_as_bytes_and_converted_lossily() {
        let buf = b"\x81\xa2k\xff\xa3a\xfeb";
        let v = one(buf);
        assert_eq!(
            v,
            Value::Map(vec![(Value::Str(b"k\xff"), Value::Str(b"a\xfeb"))])
        );
        assert_eq!(to_json(&v), json!({"k\u{fffd}": "a\u{fffd}b"}));
    }

    #[test]
    fn reserved_byte_is_an_error() {
        assert_eq!(
            decode(&[0x91, 0xc1], &limits()),
            Err(DecodeError::Reserved(1))
        );
        assert_eq!(
            value_len(&[0x91, 0xc1], &limits()),
            Err(DecodeError::Reserved(1))
        );
    }

    #[test]
    fn value_len_needs_more_for_every_prefix() {
        let mut buf = Vec::new();
        write_json(
            &mut buf,
            &json!({"a": [1, -2, 3.5, "x", null, true, {"b": u64::MAX}], "c": "d".repeat(300)}),
        );
        buf.extend_from_slice(b"\xc4\x03abc");
        let first = buf.len() - 5;
        for cut in 0..first {
            assert_eq!(
                value_len(&buf[..cut], &limits()),
                Ok(None),
                "prefix of {cut}"
            );
            assert!(matches!(
                decode(&buf[..cut], &limits()),
                Err(DecodeError::Truncated(_))
            ));
        }
        assert_eq!(value_len(&buf, &limits()), Ok(Some(first)));
        assert_eq!(skip_len(&buf), Ok(Some(first)));
        assert_eq!(decode(&buf, &limits()).unwrap().1, first);
    }

    #[test]
    fn a_frame_scan_resumes_where_it_stopped() {
        // [[1, {"a": [2, 3]}], "xyz"] then the next frame, 7.
        let frame = b"\x92\x92\x01\x81\xa1a\x92\x02\x03\xa3xyz";
        let mut stream = frame.to_vec();
        stream.push(0x07);
        let limits = Limits {
            max_depth: 8,
            max_items: 100,
        };
        let mut scan = FrameScan::default();
        for n in 1..frame.len() {
            assert_eq!(
                scan.next(&stream[..n], &limits, 1024),
                Ok(None),
                "{n} bytes"
            );
        }
        assert_eq!(scan.next(&stream, &limits, 1024), Ok(Some(frame.len())));
        // Afresh for the next frame.
        assert_eq!(
            scan.next(&stream[frame.len()..], &limits, 1024),
            Ok(Some(1))
        );
        assert_eq!(frame_len(&stream, &limits, 1024), Ok(Some(frame.len())));
    }

    #[test]
    fn ten_thousand_deep_nesting_is_an_error() {
        let mut buf = vec![0x91; 10_000];
        buf.push(0xc0);
        let err = DecodeError::TooDeep { max: 64, at: 64 };
        assert_eq!(value_len(&buf, &limits()), Err(err.clone()));
        assert_eq!(decode(&buf, &limits()).unwrap_err(), err);
        // Even when the caller's limit is absurd, decoding does not recurse
        // past its own bound.
        let absurd = Limits {
            max_depth: usize::MAX,
            max_items: usize::MAX,
        };
        assert!(matches!(
            decode(&buf, &absurd),
            Err(DecodeError::TooDeep {
                max: MAX_DECODE_DEPTH,
                ..
            })
        ));
        assert_eq!(value_len(&buf, &absurd), Ok(Some(buf.len())));
        assert_eq!(skip_len(&buf), Ok(Some(buf.len())));
    }

    #[test]
    fn headers_claiming_four_billion_are_refused_before_allocating() {
        let arr = [0xdd, 0xff, 0xff, 0xff, 0xff, 0xc0];
        let map = [0xdf, 0xff, 0xff, 0xff, 0xff, 0xc0];
        for buf in [&arr[..], &map[..]] {
            assert!(matches!(
                value_len(buf, &limits()),
                Err(DecodeError::TooManyItems { .. })
            ));
            assert!(matches!(
                decode(buf, &limits()),
                Err(DecodeError::TooManyItems { .. })
            ));
            // Within the item limit, the bytes given still bound the vector.
            let loose = Limits {
                max_depth: 8,
                max_items: usize::MAX,
            };
            assert!(matches!(
                decode(buf, &loose),
                Err(DecodeError::Truncated(_))
            ));
            assert!(matches!(
                frame_len(buf, &loose, 1 << 20),
                Err(DecodeError::TooLarge { .. })
            ));
        }
        // A 4 GiB binary: a stream limited to 6 MB refuses it at its header.
        let bin = [0xc6, 0xff, 0xff, 0xff, 0xff, 0x00];
        assert_eq!(value_len(&bin, &limits()), Ok(None));
        assert_eq!(
            frame_len(&bin, &limits(), 6_144_000),
            Err(DecodeError::TooLarge {
                max: 6_144_000,
                at: 0
            })
        );
        assert!(matches!(
            decode(&bin, &limits()),
            Err(DecodeError::Truncated(_))
        ));
        assert_eq!(
            frame_len(b"\xa5abc", &limits(), 4),
            Err(DecodeError::TooLarge { max: 4, at: 0 })
        );
        // And a stream that reaches its limit inside a header.
        assert_eq!(
            frame_len(b"\x91\xcd\x01", &limits(), 3),
            Err(DecodeError::TooLarge { max: 3, at: 1 })
        );
        assert_eq!(frame_len(b"\x91\xcd\x01", &limits(), 4), Ok(None));
    }

    #[test]
    fn item_limit_counts_every_element() {
        let tight = Limits {
            max_depth: 8,
            max_items: 4,
        };
        // [[1, 2], {"a": 3}]: 2 + 2 + 2 elements.
        let buf = b"\x92\x92\x01\x02\x81\xa1a\x03";
        assert!(matches!(
            value_len(buf, &tight),
            Err(DecodeError::TooManyItems { max: 4, at: 4 })
        ));
        assert!(matches!(
            decode(buf, &tight),
            Err(DecodeError::TooManyItems { max: 4, at: 4 })
        ));
        let enough = Limits {
            max_depth: 8,
            max_items: 6,
        };
        assert_eq!(value_len(buf, &enough), Ok(Some(buf.len())));
    }

    #[test]
    fn json_round_trip_keeps_order_and_types() {
        let record = json!({"z": 1, "a": -1, "big": u64::MAX, "min": i64::MIN, "f": 0.5, "s": "é", "n": null, "l": [true, false], "o": {"k": "v"}});
        let mut buf = Vec::new();
        write_json(&mut buf, &record);
        let v = one(&buf);
        assert_eq!(to_json(&v), record);
        let serde_json::Value::Object(map) = to_json(&v) else {
            panic!()
        };
        assert_eq!(
            map.keys().collect::<Vec<_>>(),
            ["z", "a", "big", "min", "f", "s", "n", "l", "o"]
        );
        // Integers take the fewest bytes.
        let mut small = Vec::new();
        write_json(&mut small, &json!([1, 300, -1]));
        assert_eq!(small, [0x93, 0x01, 0xcd, 0x01, 0x2c, 0xff]);
    }

    #[test]
    fn json_of_odd_values() {
        let v = Value::Map(vec![
            (Value::Int(1), Value::F64(f64::NAN)),
            (Value::Bin(b"b"), Value::F32(f32::INFINITY)),
            (
                Value::Str(b"t"),
                Value::Ext(0, &[0x65, 0x53, 0xf1, 0x00, 0x1d, 0xcd, 0x65, 0x00]),
            ),
            (Value::Str(b"x"), Value::Ext(7, b"hi")),
        ]);
        assert_eq!(
            to_json(&v),
            json!({"1": null, "b": null, "t": 1700000000.5, "x": "aGk="})
        );
    }
}
