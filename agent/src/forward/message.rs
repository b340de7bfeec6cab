//! Forward-protocol frames: the four event modes read into owned events,
//! keepalives, acks and handshake messages told apart, and the frames a
//! sender writes (PackedForward, optionally compressed, and acks).

use std::borrow::Cow;
use std::io::{self, Read, Write};

use serde_json::{Map, Value as Json};

use crate::record::Record;

use super::handshake::{Helo, Malformed, Ping, Pong};
use super::msgpack::{
    self, decode, head, skip_len, DecodeError, Decoder, Head, KeyCache, Limits, Value,
};

pub use super::msgpack::EVENT_TIME_EXT;

const NANOS: i64 = 1_000_000_000;

/// Which of the four event modes a frame used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// `[tag, time, record, option?]`
    Message,
    /// `[tag, [entry...], option?]`
    Forward,
    /// `[tag, str|bin(entry entry ...), option?]`
    PackedForward,
    /// PackedForward whose entries are gzip or zstd compressed.
    CompressedPackedForward,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Compression {
    #[default]
    None,
    Gzip,
    Zstd,
}

impl Compression {
    /// The `compressed` option's value; None for uncompressed entries
    /// (Fluentd writes `"text"`, fluent-bit nothing).
    pub fn option(self) -> Option<&'static str> {
        match self {
            Compression::None => None,
            Compression::Gzip => Some("gzip"),
            Compression::Zstd => Some("zstd"),
        }
    }
}

/// The option map that may end an event frame. Unknown keys are ignored.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Options {
    /// Number of events, as the sender counted them.
    pub size: Option<u64>,
    /// The chunk id to ack, raw: echo it byte for byte (Fluentd's end in
    /// `\n`, being Ruby's `Base64.encode64`).
    pub chunk: Option<Vec<u8>>,
    pub compressed: Compression,
    /// fluent-bit's kind of payload: 0 logs, 1 metrics, 2 traces.
    pub fluent_signal: Option<i64>,
}

/// One event as it appears on the wire, borrowing from the frame.
#[derive(Debug, Clone, PartialEq)]
pub struct Entry<'a> {
    /// Nanoseconds since the epoch; 0 when the sender sent nil or 0, which
    /// Fluentd replaces with the time it received the event.
    pub time: i64,
    pub record: Value<'a>,
    /// The map of v1.5's `[[time, metadata], record]` form.
    pub metadata: Option<Value<'a>>,
}

/// One event, owned, as the agent keeps records.
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedEntry {
    /// See [`Entry::time`].
    pub time: i64,
    pub record: Record,
    pub metadata: Option<Map<String, Json>>,
}

impl From<&Entry<'_>> for OwnedEntry {
    fn from(e: &Entry) -> Self {
        fn pairs<'v, 'a>(v: &'v Value<'a>) -> &'v [(Value<'a>, Value<'a>)] {
            match v {
                Value::Map(pairs) => pairs,
                _ => &[],
            }
        }
        OwnedEntry {
            time: e.time,
            record: msgpack::to_record(pairs(&e.record)),
            metadata: e.metadata.as_ref().map(|m| msgpack::to_json_map(pairs(m))),
        }
    }
}

/// Why one event was skipped.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    #[error("an event is not a [time, record] array")]
    NotAnEntry,
    #[error("an event's time is not an EventTime, an integer or a float")]
    BadTime,
    #[error("an event's time is out of range")]
    TimeOutOfRange,
    #[error("an event's record is not a map")]
    NotAMap,
    #[error("an event is over the limits: {0}")]
    OverLimits(DecodeError),
    #[error("the rest of the packed events is not msgpack: {0}")]
    Broken(DecodeError),
}

/// A frame, read.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// Message, Forward, PackedForward and CompressedPackedForward frames,
    /// normalised to entries.
    Events {
        /// As sent; tags are ASCII in practice, but nothing checks.
        tag: Vec<u8>,
        mode: Mode,
        entries: Vec<OwnedEntry>,
        options: Options,
        /// Events that did not parse, skipped one by one; the rest of a
        /// packed stream that is not msgpack counts as one.
        skipped: usize,
        /// Why the first skipped event was skipped.
        skip_reason: Option<EntryError>,
    },
    /// A bare nil, sent to keep a connection open.
    Keepalive,
    /// `{"ack": chunk}`, the chunk id as sent.
    Ack(Vec<u8>),
    Helo(Helo),
    Ping(Ping),
    Pong(Pong),
}

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error(transparent)]
    Msgpack(#[from] DecodeError),
    #[error("not a forward-protocol frame: {0}")]
    Unknown(&'static str),
    #[error("{0} bytes after the frame")]
    Trailing(usize),
    #[error("invalid option map: {0}")]
    BadOptions(&'static str),
    #[error("unknown compression {0:?} (gzip and zstd are supported)")]
    UnknownCompression(String),
    #[error("cannot decompress the {kind} entries: {source}")]
    Decompress {
        kind: &'static str,
        source: io::Error,
    },
    #[error("entries decompress to more than {max} bytes")]
    DecompressedTooLarge { max: usize },
    #[error(transparent)]
    Handshake(#[from] Malformed),
}

/// Reads one frame (as split by `msgpack::value_len`). `limits` apply to
/// each event, and to each handshake message or ack; `max_decompressed`
/// bounds what compressed entries may expand to (a gzip or zstd bomb is an
/// error, not an allocation). Events that do not parse are skipped and
/// counted; a frame that is not msgpack, or not a forward-protocol frame, is
/// an error.
///
/// Memory: the events are converted to JSON maps, about 30 to 80 bytes per
/// msgpack element; bound the frame and the decompressed size accordingly.
pub fn decode_message(
    frame: &[u8],
    limits: &Limits,
    max_decompressed: usize,
) -> Result<Decoded, MessageError> {
    let (h, pos) = head(frame, 0)?.ok_or(DecodeError::Truncated(frame.len()))?;
    match h {
        Head::Nil => {
            at_end(frame, pos)?;
            Ok(Decoded::Keepalive)
        }
        Head::Map(_) => {
            let (v, used) = decode(frame, limits)?;
            at_end(frame, used)?;
            read_ack(&v)
                .map(|chunk| Decoded::Ack(chunk.to_vec()))
                .ok_or(MessageError::Unknown("a map that is not {\"ack\": chunk}"))
        }
        Head::Array(n) => {
            let (first, used) = decode(&frame[pos..], limits)?;
            let handshake = match (first.bytes(), n) {
                (Some(b"HELO"), 2) => Some("HELO"),
                (Some(b"PING"), 6) => Some("PING"),
                (Some(b"PONG"), 5) => Some("PONG"),
                _ => None,
            };
            if let Some(kind) = handshake {
                // HELO's second element is a map: no events frame has one.
                let helo_like = matches!(head(frame, pos + used)?, Some((Head::Map(_), _)));
                if kind != "HELO" || helo_like {
                    let (v, used) = decode(frame, limits)?;
                    at_end(frame, used)?;
                    return Ok(match kind {
                        "HELO" => Decoded::Helo(Helo::from_value(&v)?),
                        "PING" => Decoded::Ping(Ping::from_value(&v)?),
                        _ => Decoded::Pong(Pong::from_value(&v)?),
                    });
                }
            }
            let tag = first
                .bytes()
                .ok_or(MessageError::Unknown("the tag is not a string"))?;
            events(frame, pos + used, n as usize, tag, limits, max_decompressed)
        }
        _ => Err(MessageError::Unknown("neither an array, a map nor nil")),
    }
}

fn at_end(frame: &[u8], pos: usize) -> Result<(), MessageError> {
    match frame.len() - pos {
        0 => Ok(()),
        n => Err(MessageError::Trailing(n)),
    }
}

/// Collects events, counting and remembering the skipped ones.
struct Collected {
    entries: Vec<OwnedEntry>,
    skipped: usize,
    skip_reason: Option<EntryError>,
}

impl Collected {
    fn new() -> Self {
        Collected {
            entries: Vec::new(),
            skipped: 0,
            skip_reason: None,
        }
    }

    fn add(&mut self, entry: Result<Entry, EntryError>) {
        match entry {
            Ok(e) => self.entries.push(OwnedEntry::from(&e)),
            Err(e) => self.skip(e),
        }
    }

    fn skip(&mut self, why: EntryError) {
        self.skipped += 1;
        self.skip_reason.get_or_insert(why);
    }

    /// The event (`[time, record]` or v1.5's `[[time, metadata], record]`)
    /// in `buf` at `pos`, as `next` with [`entry`] reads it; returns where
    /// the next value starts.
    fn next_entry(
        &mut self,
        buf: &[u8],
        pos: usize,
        limits: &Limits,
        keys: &mut KeyCache,
    ) -> Result<usize, DecodeError> {
        match owned_entry(&buf[pos..], limits, keys) {
            Some((e, used)) => {
                self.entries.push(e);
                Ok(pos + used)
            }
            None => self.next(buf, pos, limits, entry),
        }
    }

    /// The value in `buf` at `pos` made an event by `to_entry`, or skipped
    /// if it is over the limits; returns where the next value starts, or the
    /// error that ends the stream.
    fn next<'a>(
        &mut self,
        buf: &'a [u8],
        pos: usize,
        limits: &Limits,
        to_entry: impl FnOnce(Value<'a>) -> Result<Entry<'a>, EntryError>,
    ) -> Result<usize, DecodeError> {
        match decode(&buf[pos..], limits) {
            Ok((v, used)) => {
                self.add(to_entry(v));
                Ok(pos + used)
            }
            Err(e @ (DecodeError::TooDeep { .. } | DecodeError::TooManyItems { .. })) => {
                let len = skip_len(&buf[pos..])?.ok_or(DecodeError::Truncated(buf.len()))?;
                self.skip(EntryError::OverLimits(e));
                Ok(pos + len)
            }
            Err(e) => Err(e),
        }
    }
}

/// The rest of an events frame: `n` elements in all, the tag read, `pos` at
/// the second.
fn events(
    frame: &[u8],
    mut pos: usize,
    n: usize,
    tag: &[u8],
    limits: &Limits,
    max_decompressed: usize,
) -> Result<Decoded, MessageError> {
    if n < 2 {
        return Err(MessageError::Unknown("an array of fewer than two elements"));
    }
    let mut got = Collected::new();
    let mut keys = KeyCache::default();
    let (second, after) = head(frame, pos)?.ok_or(DecodeError::Truncated(frame.len()))?;
    let (mode, packed, rest) = match second {
        Head::Array(count) => {
            pos = after;
            for _ in 0..count {
                pos = got.next_entry(frame, pos, limits, &mut keys)?;
            }
            (Mode::Forward, None, n - 2)
        }
        Head::Str(len) | Head::Bin(len) => {
            let end = after.saturating_add(len as usize);
            let bytes = frame
                .get(after..end)
                .ok_or(DecodeError::Truncated(frame.len()))?;
            pos = end;
            (Mode::PackedForward, Some(bytes), n - 2)
        }
        _ => {
            if n < 3 {
                return Err(MessageError::Unknown("a Message frame without a record"));
            }
            let (time, used) = decode(&frame[pos..], limits)?;
            pos += used;
            pos = got.next(frame, pos, limits, |record| {
                entry_parts(&time, record, None)
            })?;
            (Mode::Message, None, n - 3)
        }
    };
    let mut options = Options::default();
    for i in 0..rest {
        if i == 0 {
            let (v, used) = decode(&frame[pos..], limits)?;
            options = read_options(&v)?;
            pos += used;
        } else {
            // Later elements mean nothing yet; Fluentd ignores them too.
            pos += skip_len(&frame[pos..])?.ok_or(DecodeError::Truncated(frame.len()))?;
        }
    }
    at_end(frame, pos)?;
    let mode = match packed {
        None => mode,
        Some(bytes) => {
            let entries = decompress(bytes, options.compressed, max_decompressed)?;
            let mut at = 0;
            while at < entries.len() {
                match got.next_entry(&entries, at, limits, &mut keys) {
                    Ok(next) => at = next,
                    Err(e) => {
                        got.skip(EntryError::Broken(e));
                        break;
                    }
                }
            }
            match options.compressed {
                Compression::None => Mode::PackedForward,
                _ => Mode::CompressedPackedForward,
            }
        }
    };
    Ok(Decoded::Events {
        tag: tag.to_vec(),
        mode,
        entries: got.entries,
        options,
        skipped: got.skipped,
        skip_reason: got.skip_reason,
    })
}

/// [`entry`] then [`OwnedEntry::from`], read straight from the bytes with
/// no [`Value`] tree between, for the shapes senders send: the event and
/// the bytes it took. None for anything else, and for an event that is cut
/// off, over the limits or wrong: [`entry`] then reads it and says why, so
/// both paths agree on every error.
fn owned_entry(buf: &[u8], limits: &Limits, keys: &mut KeyCache) -> Option<(OwnedEntry, usize)> {
    let mut d = Decoder::new(buf, limits);
    let Head::Array(2) = d.head(0).ok()? else {
        return None;
    };
    let (time, metadata) = match d.head(1).ok()? {
        Head::Array(2) => {
            let h = d.head(2).ok()?;
            let time = time_of(&mut d, h)?;
            let Head::Map(n) = d.head(2).ok()? else {
                return None;
            };
            (time, Some(d.json_map(n, 3).ok()?))
        }
        h => (time_of(&mut d, h)?, None),
    };
    let Head::Map(n) = d.head(1).ok()? else {
        return None;
    };
    let record = d.record(n, 2, keys).ok()?;
    let time = read_time(&time).ok()?;
    Some((
        OwnedEntry {
            time,
            record,
            metadata,
        },
        d.pos(),
    ))
}

/// The time whose header `h` was read, as `read_time` takes it; None for
/// anything that is not a number, nil or an extension.
fn time_of<'a>(d: &mut Decoder<'a>, h: Head) -> Option<Value<'a>> {
    Some(match h {
        Head::Nil => Value::Nil,
        Head::Int(i) => Value::Int(i),
        Head::UInt(u) => Value::UInt(u),
        Head::F32(f) => Value::F32(f),
        Head::F64(f) => Value::F64(f),
        Head::Ext(t, n) => Value::Ext(t, d.take(n).ok()?),
        _ => return None,
    })
}

/// `[time, record]` or v1.5's `[[time, metadata], record]`.
pub fn entry(v: Value) -> Result<Entry, EntryError> {
    let Value::Array(items) = v else {
        return Err(EntryError::NotAnEntry);
    };
    let Ok([time, record]) = <[Value; 2]>::try_from(items) else {
        return Err(EntryError::NotAnEntry);
    };
    match time {
        Value::Array(pair) => {
            let Ok([time, metadata]) = <[Value; 2]>::try_from(pair) else {
                return Err(EntryError::BadTime);
            };
            let metadata = matches!(metadata, Value::Map(_)).then_some(metadata);
            entry_parts(&time, record, metadata)
        }
        time => entry_parts(&time, record, None),
    }
}

fn entry_parts<'a>(
    time: &Value,
    record: Value<'a>,
    metadata: Option<Value<'a>>,
) -> Result<Entry<'a>, EntryError> {
    let time = read_time(time)?;
    if !matches!(record, Value::Map(_)) {
        return Err(EntryError::NotAMap);
    }
    Ok(Entry {
        time,
        record,
        metadata,
    })
}

/// An event time in nanoseconds: EventTime (fixext 8, or ext 8 with length
/// 8, as Fluentd accepts both), integer seconds, or float seconds; nil is 0.
pub fn read_time(v: &Value) -> Result<i64, EntryError> {
    match *v {
        Value::Ext(EVENT_TIME_EXT, data) => {
            let d = <[u8; 8]>::try_from(data).map_err(|_| EntryError::BadTime)?;
            let secs = u32::from_be_bytes([d[0], d[1], d[2], d[3]]);
            let nanos = u32::from_be_bytes([d[4], d[5], d[6], d[7]]);
            // At most 2^32 seconds: fits an i64 of nanoseconds.
            Ok(i64::from(secs) * NANOS + i64::from(nanos))
        }
        Value::Int(secs) => secs.checked_mul(NANOS).ok_or(EntryError::TimeOutOfRange),
        Value::UInt(_) => Err(EntryError::TimeOutOfRange),
        Value::F32(f) => float_time(f64::from(f)),
        Value::F64(f) => float_time(f),
        Value::Nil => Ok(0),
        _ => Err(EntryError::BadTime),
    }
}

fn float_time(secs: f64) -> Result<i64, EntryError> {
    let nanos = (secs * 1e9).round();
    // i64::MAX as f64 rounds up to 2^63, itself out of range.
    if nanos.is_finite() && nanos >= i64::MIN as f64 && nanos < i64::MAX as f64 {
        Ok(nanos as i64)
    } else {
        Err(EntryError::TimeOutOfRange)
    }
}

fn read_options(v: &Value) -> Result<Options, MessageError> {
    let mut options = Options::default();
    let pairs = match v {
        Value::Map(pairs) => pairs,
        Value::Nil => return Ok(options),
        _ => return Err(MessageError::BadOptions("not a map")),
    };
    for (k, v) in pairs {
        match (k.bytes(), v) {
            (Some(b"size"), Value::Int(n)) => options.size = u64::try_from(*n).ok(),
            (Some(b"size"), Value::UInt(n)) => options.size = Some(*n),
            (Some(b"chunk"), v) => {
                let chunk = v
                    .bytes()
                    .ok_or(MessageError::BadOptions("chunk is not a string"))?;
                options.chunk = Some(chunk.to_vec());
            }
            (Some(b"compressed"), v) => {
                options.compressed = match v.bytes() {
                    Some(b"gzip") => Compression::Gzip,
                    Some(b"zstd") => Compression::Zstd,
                    Some(b"text" | b"") | None => Compression::None,
                    Some(other) => {
                        return Err(MessageError::UnknownCompression(
                            String::from_utf8_lossy(other).into_owned(),
                        ))
                    }
                }
            }
            (Some(b"fluent_signal"), Value::Int(n)) => options.fluent_signal = Some(*n),
            _ => {}
        }
    }
    Ok(options)
}

/// The entries of a packed frame, decompressed into at most `max` bytes.
/// Several gzip members or zstd frames one after another are read as one
/// stream (fluent-bit concatenates gzip members).
pub fn decompress(
    data: &[u8],
    compression: Compression,
    max: usize,
) -> Result<Cow<'_, [u8]>, MessageError> {
    let bounded = |r: &mut dyn Read, kind| {
        let mut out = Vec::new();
        r.take(max as u64 + 1)
            .read_to_end(&mut out)
            .map_err(|source| MessageError::Decompress { kind, source })?;
        if out.len() > max {
            return Err(MessageError::DecompressedTooLarge { max });
        }
        Ok(Cow::Owned(out))
    };
    match compression {
        Compression::None => Ok(Cow::Borrowed(data)),
        Compression::Gzip => bounded(&mut flate2::read::MultiGzDecoder::new(data), "gzip"),
        Compression::Zstd => {
            let err = |source| MessageError::Decompress {
                kind: "zstd",
                source,
            };
            let mut d = zstd::stream::read::Decoder::with_buffer(data).map_err(err)?;
            // A frame may ask for a window of up to 128 MiB (or 2 GiB); none
            // needs more than the output it may produce.
            let window_log = (usize::BITS - max.max(1).leading_zeros()).clamp(10, 27);
            d.window_log_max(window_log).map_err(err)?;
            bounded(&mut d, "zstd")
        }
    }
}

/// A time in the entry forms: EventTime (fixext 8), or integer seconds when
/// `as_integer` (for receivers older than Fluentd 0.14). EventTime cannot
/// hold times before 1970 or after 2106: they are clamped.
pub fn write_time(out: &mut Vec<u8>, nanos: i64, as_integer: bool) {
    let secs = nanos.div_euclid(NANOS);
    if as_integer {
        msgpack::write_int(out, secs);
        return;
    }
    let (secs, sub) = match u32::try_from(secs) {
        Ok(s) => (s, nanos.rem_euclid(NANOS) as u32),
        Err(_) if secs < 0 => (0, 0),
        Err(_) => (u32::MAX, 999_999_999),
    };
    let mut data = [0u8; 8];
    data[..4].copy_from_slice(&secs.to_be_bytes());
    data[4..].copy_from_slice(&sub.to_be_bytes());
    msgpack::write_ext(out, EVENT_TIME_EXT, &data);
}

/// One entry `[time, record]` appended to `out`.
pub fn write_entry(out: &mut Vec<u8>, nanos: i64, as_integer: bool, record: &Record) {
    msgpack::write_array_len(out, 2);
    write_time(out, nanos, as_integer);
    msgpack::write_fields(out, record.len(), record.iter());
}

/// Makes a chunk id from a message's tag and its entries in one piece.
pub type ChunkIdOf<'a> = &'a dyn Fn(&[u8], &[u8]) -> Vec<u8>;

/// A PackedForward frame, or a CompressedPackedForward one:
/// `[tag, bin(entries), {"size": count, "chunk": id, "compressed": "gzip"|"zstd"}]`,
/// `entries` being [`write_entry`] outputs, written one after the other
/// (from wherever they are: uncompressed, no copy gathers them first).
/// `chunk_id`, if any, makes the chunk id from the tag and the entries in
/// one piece (a hash is fastest over long input); without one the receiver
/// sends no ack. Returns the chunk id written.
pub fn write_packed_forward(
    out: &mut Vec<u8>,
    tag: &[u8],
    entries: &[&[u8]],
    count: usize,
    chunk_id: Option<ChunkIdOf>,
    compress: Compression,
) -> io::Result<Option<Vec<u8>>> {
    let too_long = || {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            "a forward frame's entries must be under 4 GiB",
        )
    };
    msgpack::write_array_len(out, 3);
    msgpack::write_str(out, tag);
    let chunk = match compress {
        Compression::None => {
            let len: usize = entries.iter().map(|e| e.len()).sum();
            u32::try_from(len).map_err(|_| too_long())?;
            msgpack::write_bin_len(out, len);
            let start = out.len();
            for e in entries {
                out.extend_from_slice(e);
            }
            chunk_id.map(|id| id(tag, &out[start..]))
        }
        Compression::Gzip | Compression::Zstd => {
            let all = entries.concat();
            let body = match compress {
                Compression::Gzip => {
                    let mut gz =
                        flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
                    gz.write_all(&all)?;
                    gz.finish()?
                }
                _ => zstd::bulk::compress(&all, 3)?,
            };
            u32::try_from(body.len()).map_err(|_| too_long())?;
            msgpack::write_bin(out, &body);
            chunk_id.map(|id| id(tag, &all))
        }
    };
    let name = compress.option();
    msgpack::write_map_len(
        out,
        1 + usize::from(chunk.is_some()) + usize::from(name.is_some()),
    );
    msgpack::write_str(out, b"size");
    msgpack::write_uint(out, count as u64);
    if let Some(chunk) = &chunk {
        msgpack::write_str(out, b"chunk");
        msgpack::write_str(out, chunk);
    }
    if let Some(name) = name {
        msgpack::write_str(out, b"compressed");
        msgpack::write_str(out, name.as_bytes());
    }
    Ok(chunk)
}

/// A keepalive: a bare nil.
pub fn write_keepalive(out: &mut Vec<u8>) {
    msgpack::write_nil(out);
}

/// `{"ack": chunk}`, the chunk id byte for byte as it came.
pub fn write_ack(out: &mut Vec<u8>, chunk: &[u8]) {
    msgpack::write_map_len(out, 1);
    msgpack::write_str(out, b"ack");
    msgpack::write_str(out, chunk);
}

/// The chunk id of an `{"ack": chunk}` response.
pub fn read_ack<'a>(v: &Value<'a>) -> Option<&'a [u8]> {
    v.get(b"ack")?.bytes()
}

/// A chunk id: the base64 of 16 bytes, random for a one-off request or
/// derived from the buffer for one that is stable across re-sends (Fluentd
/// makes the same but adds a `\n`; receivers echo either).
pub fn chunk_id(bytes16: [u8; 16]) -> Vec<u8> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .encode(bytes16)
        .into_bytes()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::forward::msgpack::{
        value_len, write_array_len, write_bin, write_json_map, write_str,
    };
    use serde_json::json;

    const MAX: usize = 1 << 20;

    /// The event in `buf` as the generic path reads it: `entry` over a
    /// decoded value, then owned.
    fn generic(buf: &[u8], limits: &Limits) -> Option<(Result<OwnedEntry, EntryError>, usize)> {
        let (v, used) = decode(buf, limits).ok()?;
        Some((entry(v).map(|e| OwnedEntry::from(&e)), used))
    }

    #[test]
    fn events_read_straight_from_bytes_equal_the_generic_reading() {
        let mut shapes: Vec<Vec<u8>> = Vec::new();
        let mut record = Vec::new();
        msgpack::write_map_len(&mut record, 9);
        write_str(&mut record, b"message");
        write_str(&mut record, b"caf\xc3\xa9 \xff bad \"q\"");
        write_str(&mut record, b"n");
        rmp::encode::write_uint(&mut record, u64::MAX).unwrap();
        write_str(&mut record, b"neg");
        rmp::encode::write_sint(&mut record, i64::MIN).unwrap();
        write_str(&mut record, b"f");
        rmp::encode::write_f32(&mut record, f32::NAN).unwrap();
        rmp::encode::write_uint(&mut record, 7).unwrap(); // a key that is not a string
        write_bin(&mut record, b"\x00\x01");
        write_str(&mut record, b"\xfe\xfd"); // a key that is not UTF-8
        rmp::encode::write_nil(&mut record).unwrap();
        write_str(&mut record, b"nested");
        write_array_len(&mut record, 3);
        msgpack::write_map_len(&mut record, 1);
        write_str(&mut record, b"a");
        rmp::encode::write_bool(&mut record, true).unwrap();
        rmp::encode::write_f64(&mut record, 2.5).unwrap();
        msgpack::write_ext(&mut record, EVENT_TIME_EXT, &[0, 0, 0, 1, 0, 0, 0, 2]);
        write_str(&mut record, b"ext");
        msgpack::write_ext(&mut record, 9, b"xyz");
        write_str(&mut record, b"message"); // repeated: first place, last value
        write_str(&mut record, b"again");
        let times: Vec<Vec<u8>> = vec![
            vec![0xd7, 0x00, 0x65, 0x53, 0xf1, 0x00, 0x07, 0x5b, 0xcd, 0x15],
            vec![
                0xc7, 0x08, 0x00, 0x65, 0x53, 0xf1, 0x00, 0x07, 0x5b, 0xcd, 0x15,
            ],
            vec![0xce, 0x65, 0x53, 0xf1, 0x00],
            vec![0xcb, 0x41, 0xd9, 0x54, 0xfc, 0x40, 0x07, 0xe9, 0x00],
            vec![0xc0],
            vec![0xcf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff],
            vec![0xa1, b'x'],
        ];
        for time in &times {
            for metadata in [
                None,
                Some(&b"\x80"[..]),
                Some(b"\x81\xa1k\x01"),
                Some(b"\x01"),
            ] {
                let mut e = vec![0x92];
                match metadata {
                    None => e.extend_from_slice(time),
                    Some(m) => {
                        e.push(0x92);
                        e.extend_from_slice(time);
                        e.extend_from_slice(m);
                    }
                }
                e.extend_from_slice(&record);
                shapes.push(e);
            }
        }
        shapes.push(b"\x93\x01\x80\x80".to_vec()); // three elements
        shapes.push(b"\x92\x01\x91\x01".to_vec()); // a record that is no map
        let limits = Limits::default();
        let tight = Limits {
            max_depth: 2,
            max_items: 12,
        };
        let mut compared = 0;
        let mut fast = 0;
        for shape in &shapes {
            // Every shape whole, cut short, and with each byte changed.
            let mut variants = vec![shape.clone()];
            for cut in 0..shape.len() {
                variants.push(shape[..cut].to_vec());
            }
            for (i, byte) in [0x00u8, 0xc1, 0xdf, 0x7f, 0xa5]
                .iter()
                .cycle()
                .take(shape.len() * 2)
                .enumerate()
            {
                let mut v = shape.clone();
                v[i % shape.len()] = *byte;
                variants.push(v);
            }
            for v in &variants {
                for limits in [&limits, &tight] {
                    let mut keys = KeyCache::default();
                    if let Some((e, used)) = owned_entry(v, limits, &mut keys) {
                        let (g, g_used) =
                            generic(v, limits).expect("the generic path reads it too");
                        assert_eq!((Ok(e), used), (g, g_used), "{v:02x?}");
                        fast += 1;
                    }
                    compared += 1;
                }
            }
        }
        // The common shapes take the fast path.
        assert!(fast > shapes.len(), "{fast} of {compared}");
    }

    fn record(v: Json) -> Map<String, Json> {
        match v {
            Json::Object(m) => m,
            _ => panic!("not an object"),
        }
    }

    fn read(frame: &[u8]) -> Decoded {
        assert_eq!(
            value_len(frame, &Limits::default()).unwrap(),
            Some(frame.len())
        );
        decode_message(frame, &Limits::default(), MAX).unwrap()
    }

    /// tag, (time, record) pairs, options, skipped.
    fn events(frame: &[u8]) -> (Vec<u8>, Mode, Vec<(i64, Json)>, Options, usize) {
        match read(frame) {
            Decoded::Events {
                tag,
                mode,
                entries,
                options,
                skipped,
                ..
            } => (
                tag,
                mode,
                entries
                    .into_iter()
                    .map(|e| (e.time, Json::Object(e.record.into_map())))
                    .collect(),
                options,
                skipped,
            ),
            other => panic!("not events: {other:?}"),
        }
    }

    const T: i64 = 1_700_000_000_123_456_789;

    fn packed_entries(n: usize) -> Vec<u8> {
        let mut out = Vec::new();
        for i in 0..n {
            write_entry(
                &mut out,
                T + i as i64,
                false,
                &Record::from(record(json!({"i": i}))),
            );
        }
        out
    }

    #[test]
    fn event_time_both_encodings_integer_and_float() {
        let fixext = b"\xd7\x00\x65\x53\xf1\x00\x07\x5b\xcd\x15";
        let ext8 = b"\xc7\x08\x00\x65\x53\xf1\x00\x07\x5b\xcd\x15";
        let want = 1_700_000_000_123_456_789;
        for bytes in [&fixext[..], &ext8[..]] {
            let v = decode(bytes, &Limits::default()).unwrap().0;
            assert_eq!(read_time(&v), Ok(want));
        }
        assert_eq!(
            read_time(&Value::Int(1_700_000_000)),
            Ok(1_700_000_000 * NANOS)
        );
        assert_eq!(
            read_time(&Value::F64(1_700_000_000.5)),
            Ok(1_700_000_000_500_000_000)
        );
        assert_eq!(read_time(&Value::F32(2.5)), Ok(2_500_000_000));
        assert_eq!(read_time(&Value::Nil), Ok(0));
        assert_eq!(
            read_time(&Value::Int(i64::MAX)),
            Err(EntryError::TimeOutOfRange)
        );
        assert_eq!(
            read_time(&Value::UInt(u64::MAX)),
            Err(EntryError::TimeOutOfRange)
        );
        assert_eq!(
            read_time(&Value::F64(f64::NAN)),
            Err(EntryError::TimeOutOfRange)
        );
        assert_eq!(
            read_time(&Value::F64(1e300)),
            Err(EntryError::TimeOutOfRange)
        );
        assert_eq!(read_time(&Value::Ext(0, b"1234")), Err(EntryError::BadTime));
        assert_eq!(
            read_time(&Value::Ext(1, b"12345678")),
            Err(EntryError::BadTime)
        );
        assert_eq!(read_time(&Value::Str(b"now")), Err(EntryError::BadTime));

        let mut out = Vec::new();
        write_time(&mut out, want, false);
        assert_eq!(out, fixext);
        out.clear();
        write_time(&mut out, want, true);
        assert_eq!(out, b"\xce\x65\x53\xf1\x00");
        out.clear();
        write_time(&mut out, -1, false);
        assert_eq!(out, b"\xd7\x00\0\0\0\0\0\0\0\0");
        out.clear();
        write_time(&mut out, -1, true);
        assert_eq!(out, b"\xff");
    }

    #[test]
    fn message_mode() {
        let mut f = Vec::new();
        write_array_len(&mut f, 4);
        write_str(&mut f, b"app.msg");
        write_time(&mut f, T, false);
        write_json_map(&mut f, &record(json!({"k": "v"})));
        f.extend_from_slice(b"\x81\xa5chunk\xa3id\n");
        let (tag, mode, got, options, skipped) = events(&f);
        assert_eq!(
            (tag.as_slice(), mode, skipped),
            (&b"app.msg"[..], Mode::Message, 0)
        );
        assert_eq!(got, [(T, json!({"k": "v"}))]);
        assert_eq!(options.chunk.as_deref(), Some(&b"id\n"[..]));

        // Integer seconds, no options.
        let mut f = Vec::new();
        write_array_len(&mut f, 3);
        write_str(&mut f, b"app.msg");
        write_time(&mut f, T, true);
        write_json_map(&mut f, &record(json!({"k": 1})));
        let (_, _, got, options, _) = events(&f);
        assert_eq!(got, [(1_700_000_000 * NANOS, json!({"k": 1}))]);
        assert_eq!(options, Options::default());
    }

    #[test]
    fn forward_mode_with_both_entry_forms_and_skips() {
        let mut f = Vec::new();
        write_array_len(&mut f, 3);
        write_str(&mut f, b"app.fwd");
        write_array_len(&mut f, 5);
        write_entry(&mut f, T, false, &Record::from(record(json!({"a": 1}))));
        // v1.5: [[time, metadata], record]
        write_array_len(&mut f, 2);
        write_array_len(&mut f, 2);
        write_time(&mut f, T + 1, false);
        write_json_map(&mut f, &record(json!({"otel": true})));
        write_json_map(&mut f, &record(json!({"b": 2})));
        // Skipped: a record that is a string, a time that is a string, and a
        // bare integer.
        f.extend_from_slice(b"\x92\x01\xa1x");
        f.extend_from_slice(b"\x92\xa1t\x80");
        f.push(0x07);
        f.extend_from_slice(b"\x82\xa4size\x05\xadfluent_signal\x00");
        let msg = read(&f);
        let Decoded::Events {
            tag,
            mode,
            entries,
            options,
            skipped,
            skip_reason,
        } = msg
        else {
            panic!("{msg:?}")
        };
        assert_eq!((tag.as_slice(), mode), (&b"app.fwd"[..], Mode::Forward));
        assert_eq!(entries.len(), 2);
        assert_eq!((entries[0].time, &entries[0].metadata), (T, &None));
        assert_eq!(entries[1].time, T + 1);
        assert_eq!(entries[1].record, Record::from(record(json!({"b": 2}))));
        assert_eq!(entries[1].metadata, Some(record(json!({"otel": true}))));
        assert_eq!((skipped, skip_reason), (3, Some(EntryError::NotAMap)));
        assert_eq!(options.size, Some(5));
        assert_eq!(options.fluent_signal, Some(0));
        assert_eq!(options.chunk, None);
    }

    #[test]
    fn packed_forward_str_and_bin_and_compressed() {
        let packed = packed_entries(3);
        let want: Vec<(i64, Json)> = (0..3).map(|i| (T + i, json!({"i": i}))).collect();
        for compress in [Compression::None, Compression::Gzip, Compression::Zstd] {
            let mut f = Vec::new();
            write_packed_forward(
                &mut f,
                b"app.packed",
                &[&packed],
                3,
                Some(&|_: &[u8], _: &[u8]| b"abc\n".to_vec()),
                compress,
            )
            .unwrap();
            let (tag, mode, got, options, skipped) = events(&f);
            assert_eq!(tag, b"app.packed");
            let mode_want = match compress {
                Compression::None => Mode::PackedForward,
                _ => Mode::CompressedPackedForward,
            };
            assert_eq!((mode, skipped), (mode_want, 0));
            assert_eq!(got, want);
            assert_eq!(
                options,
                Options {
                    size: Some(3),
                    chunk: Some(b"abc\n".to_vec()),
                    compressed: compress,
                    fluent_signal: None,
                }
            );
        }
        // Fluentd's form: entries in a str32, "compressed": "text".
        let mut f = b"\x93\xa3tag\xdb".to_vec();
        f.extend_from_slice(&(packed.len() as u32).to_be_bytes());
        f.extend_from_slice(&packed);
        f.extend_from_slice(b"\x81\xaacompressed\xa4text");
        let (_, mode, got, _, _) = events(&f);
        assert_eq!((mode, got), (Mode::PackedForward, want));
    }

    #[test]
    fn two_gzip_members_are_one_stream() {
        let packed = packed_entries(4);
        let (a, b) = packed.split_at(packed.len() / 2 + 3);
        let mut gz = Vec::new();
        for part in [a, b] {
            let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            e.write_all(part).unwrap();
            gz.extend(e.finish().unwrap());
        }
        let mut f = Vec::new();
        write_array_len(&mut f, 3);
        write_str(&mut f, b"gz");
        write_bin(&mut f, &gz);
        f.extend_from_slice(b"\x81\xaacompressed\xa4gzip");
        let (_, mode, got, _, skipped) = events(&f);
        assert_eq!(
            (mode, skipped, got.len()),
            (Mode::CompressedPackedForward, 0, 4)
        );
        assert_eq!(got[3], (T + 3, json!({"i": 3})));
    }

    #[test]
    fn decompression_bombs_are_errors() {
        let zeros = vec![0u8; 8 << 20];
        for compress in [Compression::Gzip, Compression::Zstd] {
            let mut f = Vec::new();
            write_packed_forward(&mut f, b"bomb", &[&zeros], 1, None, compress).unwrap();
            assert!(f.len() < 16 << 10, "{compress:?}: {} bytes", f.len());
            let err = decode_message(&f, &Limits::default(), 1 << 20).unwrap_err();
            assert!(
                matches!(err, MessageError::DecompressedTooLarge { max: 1048576 }),
                "{compress:?}: {err}"
            );
        }
    }

    #[test]
    fn broken_compression_is_an_error() {
        let mut f = Vec::new();
        write_array_len(&mut f, 3);
        write_str(&mut f, b"t");
        write_bin(&mut f, b"\x1f\x8b\x08not gzip at all");
        f.extend_from_slice(b"\x81\xaacompressed\xa4gzip");
        assert!(matches!(
            decode_message(&f, &Limits::default(), MAX),
            Err(MessageError::Decompress { kind: "gzip", .. })
        ));
        let mut f = Vec::new();
        write_array_len(&mut f, 3);
        write_str(&mut f, b"t");
        write_bin(&mut f, b"x");
        f.extend_from_slice(b"\x81\xaacompressed\xa3lz4");
        assert!(matches!(
            decode_message(&f, &Limits::default(), MAX),
            Err(MessageError::UnknownCompression(c)) if c == "lz4"
        ));
    }

    #[test]
    fn packed_events_skip_one_by_one_and_a_broken_tail_counts_once() {
        let mut packed = packed_entries(1);
        // Over the depth limit: skipped alone.
        packed.extend_from_slice(b"\x92\x01");
        packed.extend(std::iter::repeat_n(0x91, 100));
        packed.push(0xc0);
        packed.extend(packed_entries(2));
        // Not msgpack.
        packed.extend_from_slice(b"\xc1\x00");
        let mut f = Vec::new();
        write_array_len(&mut f, 2);
        write_str(&mut f, b"t");
        write_bin(&mut f, &packed);
        let Decoded::Events {
            entries,
            skipped,
            skip_reason,
            ..
        } = decode_message(&f, &Limits::default(), MAX).unwrap()
        else {
            panic!()
        };
        assert_eq!(entries.len(), 3);
        assert_eq!(skipped, 2);
        assert!(matches!(
            skip_reason,
            Some(EntryError::OverLimits(DecodeError::TooDeep { .. }))
        ));
    }

    #[test]
    fn over_limit_events_are_skipped_in_message_and_forward_modes() {
        let deep: Vec<u8> = std::iter::repeat_n(0x91, 100).chain([0xc0]).collect();
        let mut record = b"\x81\xa1k".to_vec();
        record.extend(&deep);
        let mut f = Vec::new();
        write_array_len(&mut f, 3);
        write_str(&mut f, b"t");
        write_time(&mut f, T, false);
        f.extend(&record);
        let Decoded::Events {
            entries,
            skipped,
            skip_reason,
            ..
        } = decode_message(&f, &Limits::default(), MAX).unwrap()
        else {
            panic!()
        };
        assert_eq!((entries.len(), skipped), (0, 1));
        assert!(matches!(
            skip_reason,
            Some(EntryError::OverLimits(DecodeError::TooDeep { .. }))
        ));

        let mut f = Vec::new();
        write_array_len(&mut f, 2);
        write_str(&mut f, b"t");
        write_array_len(&mut f, 3);
        f.extend(packed_entries(1));
        f.push(0x92);
        write_time(&mut f, T, false);
        f.extend(&record);
        f.extend(packed_entries(1));
        // (value_len, with the same limits over the whole frame, refuses it.)
        assert!(value_len(&f, &Limits::default()).is_err());
        let Decoded::Events {
            mode,
            entries,
            skipped,
            ..
        } = decode_message(&f, &Limits::default(), MAX).unwrap()
        else {
            panic!()
        };
        assert_eq!((mode, entries.len(), skipped), (Mode::Forward, 2, 1));
    }

    #[test]
    fn keepalive_ack_and_unknown_frames() {
        assert_eq!(read(&[0xc0]), Decoded::Keepalive);
        let mut ack = Vec::new();
        write_ack(&mut ack, b"ZhqeKy5o0JY2AthGSZ4gpQ==\n");
        assert_eq!(ack, b"\x81\xa3ack\xb9ZhqeKy5o0JY2AthGSZ4gpQ==\n");
        assert_eq!(
            read(&ack),
            Decoded::Ack(b"ZhqeKy5o0JY2AthGSZ4gpQ==\n".to_vec())
        );
        let v = decode(&ack, &Limits::default()).unwrap().0;
        assert_eq!(read_ack(&v), Some(&b"ZhqeKy5o0JY2AthGSZ4gpQ==\n"[..]));

        // A number, a map that is not an ack, no entries, a tag that is a
        // number, a Message without a record, options that are a string.
        let bad: &[&[u8]] = &[
            b"\x01",
            b"\x81\xa1x\x01",
            b"\x91\xa1t",
            b"\x92\x01\x90",
            b"\x92\xa1t\x01",
            b"\x93\xa1t\x90\xa1o",
        ];
        for f in bad {
            let got = decode_message(f, &Limits::default(), MAX);
            assert!(
                matches!(
                    got,
                    Err(MessageError::Unknown(_) | MessageError::BadOptions(_))
                ),
                "{f:?}: {got:?}"
            );
        }
        // The smallest Message: a time of 1 s and an empty record; and one
        // whose record is not a map, skipped.
        let (_, mode, got, _, skipped) = events(b"\x93\xa1t\x01\x80");
        assert_eq!(
            (mode, got, skipped),
            (Mode::Message, vec![(NANOS, json!({}))], 0)
        );
        let (_, _, got, _, skipped) = events(b"\x93\xa1t\x01\xa1x");
        assert_eq!((got.len(), skipped), (0, 1));
        assert!(matches!(
            decode_message(b"\xc0\xc0", &Limits::default(), MAX),
            Err(MessageError::Trailing(1))
        ));
        assert!(matches!(
            decode_message(b"\x92\xa1t\x91", &Limits::default(), MAX),
            Err(MessageError::Msgpack(DecodeError::Truncated(_)))
        ));
    }

    #[test]
    fn a_tag_named_like_a_handshake_message_is_still_events() {
        let mut f = Vec::new();
        write_array_len(&mut f, 2);
        write_str(&mut f, b"HELO");
        write_array_len(&mut f, 1);
        write_entry(&mut f, T, false, &Record::from(record(json!({"x": 1}))));
        let (tag, mode, got, _, _) = events(&f);
        assert_eq!(
            (tag.as_slice(), mode, got.len()),
            (&b"HELO"[..], Mode::Forward, 1)
        );
    }

    #[test]
    fn chunk_ids_are_base64_of_16_bytes() {
        assert_eq!(chunk_id([0; 16]), b"AAAAAAAAAAAAAAAAAAAAAA==");
        assert_eq!(chunk_id([0xff; 16]).len(), 24);
    }

    /// A frame taken from a real peer, split by `value_len` from a stream.
    fn frames(stream: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut rest = stream;
        while !rest.is_empty() {
            for cut in 0..rest.len().min(400) {
                let short = &rest[..cut];
                if let Some(n) = value_len(short, &Limits::default()).unwrap() {
                    panic!("a prefix of {cut} bytes claims a frame of {n}");
                }
            }
            let n = value_len(rest, &Limits::default())
                .unwrap()
                .expect("a complete frame");
            out.push(&rest[..n]);
            rest = &rest[n..];
        }
        out
    }

    fn fixture_events(frame: &[u8]) -> (Vec<u8>, Mode, Vec<OwnedEntry>, Options) {
        match decode_message(frame, &Limits::default(), MAX).unwrap() {
            Decoded::Events {
                tag,
                mode,
                entries,
                options,
                skipped: 0,
                ..
            } => (tag, mode, entries, options),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn fixture_fluent_bit_forward_with_metadata() {
        let stream = include_bytes!("fixtures/fluent-bit-forward-metadata.bin");
        let [frame] = frames(stream)[..] else {
            panic!()
        };
        let (tag, mode, entries, options) = fixture_events(frame);
        assert_eq!((tag.as_slice(), mode), (&b"app.log"[..], Mode::Forward));
        assert_eq!(options, Options::default());
        let times: Vec<i64> = entries.iter().map(|e| e.time).collect();
        assert_eq!(
            times,
            [
                1_796_231_369_354_325_200,
                1_796_231_369_361_754_782,
                1_796_231_369_381_784_314
            ]
        );
        for e in &entries {
            assert_eq!(
                Json::Object(e.record.clone().into_map()),
                json!({"message": "hi", "n": 1, "nested": {"a": [1, 2.5, null, true]}})
            );
            assert_eq!(e.metadata, Some(Map::new()));
        }
    }

    #[test]
    fn fixture_fluent_bit_gzip_with_ack() {
        let stream = include_bytes!("fixtures/fluent-bit-gzip-ack.bin");
        let [frame] = frames(stream)[..] else {
            panic!()
        };
        let (tag, mode, entries, options) = fixture_events(frame);
        assert_eq!(
            (tag.as_slice(), mode),
            (&b"app.gz"[..], Mode::CompressedPackedForward)
        );
        assert_eq!(
            options,
            Options {
                size: Some(3),
                chunk: Some(b"s4y7cOZhaFnKI42vh46TYQ==".to_vec()),
                compressed: Compression::Gzip,
                fluent_signal: Some(0),
            }
        );
        let times: Vec<i64> = entries.iter().map(|e| e.time).collect();
        assert_eq!(
            times,
            [
                1_796_231_375_827_800_964,
                1_796_231_375_841_863_876,
                1_796_231_375_861_811_135
            ]
        );
        for e in &entries {
            assert_eq!(
                Json::Object(e.record.clone().into_map()),
                json!({"message": "héllo", "n": 2})
            );
            assert_eq!(e.metadata, Some(Map::new()));
        }
        let mut ack = Vec::new();
        write_ack(&mut ack, options.chunk.as_deref().unwrap());
        assert_eq!(ack, b"\x81\xa3ack\xb8s4y7cOZhaFnKI42vh46TYQ==");
    }

    #[test]
    fn fixture_fluentd_packed_forward_with_ack() {
        let stream = include_bytes!("fixtures/fluentd-packed-ack.bin");
        let [frame] = frames(stream)[..] else {
            panic!()
        };
        // Fluentd's out_forward writes the entries as a str32.
        assert_eq!(frame[13], 0xdb);
        let (tag, mode, entries, options) = fixture_events(frame);
        assert_eq!(
            (tag.as_slice(), mode),
            (&b"app.fluentd"[..], Mode::PackedForward)
        );
        assert_eq!(options.size, Some(6));
        assert_eq!(options.compressed, Compression::None);
        let chunk = options
            .chunk
            .expect("require_ack_response sends a chunk id");
        assert_eq!(chunk, b"ZhqeKy5o0JY2AthGSZ4gpQ==\n");
        let times: Vec<i64> = entries.iter().map(|e| e.time).collect();
        assert_eq!(
            times,
            [
                1_796_232_141_006_222_555,
                1_796_232_141_006_236_806,
                1_796_232_141_006_238_122,
                1_796_232_142_011_713_639,
                1_796_232_142_011_726_278,
                1_796_232_142_011_727_151,
            ]
        );
        for e in &entries {
            assert_eq!(
                Json::Object(e.record.clone().into_map()),
                json!({"message": "hi from fluentd", "n": 3})
            );
            assert_eq!(e.metadata, None);
        }
        let mut ack = Vec::new();
        write_ack(&mut ack, &chunk);
        assert_eq!(ack, b"\x81\xa3ack\xb9ZhqeKy5o0JY2AthGSZ4gpQ==\n");
    }
}
