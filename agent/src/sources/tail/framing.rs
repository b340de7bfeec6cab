//! Line framing: the bytes read from a file become events, one per line
//! (without its newline, CRLF included), over-long lines cut into pieces
//! of `max_line_size` at a character boundary, or one per slow-log entry;
//! with `id_key`, each with its id (`file_key`) from the offset it starts at.

use std::borrow::Cow;
use std::sync::atomic::Ordering;

use serde_json::Value;

use super::config::TailConfig;
use crate::event::{now_nanos, Event, Record};
use crate::metrics::PluginMetrics;
use crate::sources::file_key::record_id;
use crate::sources::slow_log::{SlowEntry, SlowLogParser};

/// Where bytes handed to `frame` come from.
#[derive(Clone, Copy)]
pub(super) struct Origin {
    /// The file's key, for record ids.
    pub key: u64,
    /// The offset of the first byte in the file.
    pub offset: u64,
}

/// Turns `data`, the bytes of a file from `from.offset` on, into events:
/// one per line, or one per finished slow-log entry when a `parser` frames
/// them. Returns the events and how many bytes were consumed; the rest is
/// an incomplete line. `final_` also ends a slow-log entry still being
/// assembled.
pub(super) fn frame(
    parser: Option<&mut SlowLogParser>,
    from: Origin,
    cfg: &TailConfig,
    metrics: &PluginMetrics,
    data: &[u8],
    final_: bool,
) -> (Vec<Event>, usize) {
    let time = now_nanos();
    let mut events = Vec::new();
    let valid = valid_prefix(data);
    // The text of the line of `len` bytes at `start`: as it lies in the
    // valid prefix (almost always), or checked alone.
    let text_of = |start: usize, len: usize| match valid.get(start..start + len) {
        Some(text) => Cow::Borrowed(text),
        None => lossy(&data[start..start + len], metrics),
    };
    let consumed = match parser {
        None => {
            // About one event per line of an ordinary log: the vector
            // grows once or not at all instead of a dozen times.
            events.reserve(data.len() / 96);
            split_lines(data, cfg.max_line_size, metrics, |line, start, end| {
                // A CRLF line (a log written on or for Windows) ends at its
                // `\r\n`: the message is the text without either.
                let line = match line.strip_suffix(b"\r") {
                    Some(text) if data[end - 1] == b'\n' => text,
                    _ => line,
                };
                let mut event = make_event(time, cfg.message_key, text_of(start, line.len()));
                add_id(&mut event.record, cfg, from.key, from.offset + start as u64);
                events.push(event);
            })
        }
        Some(parser) => {
            // Room for entries of 256 bytes and more (the smallest real
            // ones are about that): the vectors grew by doubling, each
            // time a copy into a new allocation of more than a page.
            let mut entries = Vec::with_capacity(data.len() / 256 + 1);
            let base = from.offset;
            let consumed = split_lines(data, cfg.max_line_size, metrics, |line, start, end| {
                let text = text_of(start, line.len());
                parser.push_line(
                    trim_end_cr(&text),
                    base + start as u64,
                    base + end as u64,
                    &mut entries,
                );
            });
            if final_ {
                parser.finish(&mut entries);
            }
            events.reserve_exact(entries.len());
            events.extend(
                entries
                    .into_iter()
                    .map(|e| identified_entry_event(e, cfg, from.key)),
            );
            consumed
        }
    };
    (events, consumed)
}

/// With `id_key`: the record's id, from the offset where it starts.
fn add_id(record: &mut Record, cfg: &TailConfig, key: u64, offset: u64) {
    if let Some(field) = cfg.id_key {
        record.insert(field, Value::String(record_id(key, offset)));
    }
}

/// A slow-log entry's event, with its id (from the offset of the entry's
/// first line) when `id_key` is set.
pub(super) fn identified_entry_event(e: SlowEntry, cfg: &TailConfig, key: u64) -> Event {
    let start = e.start;
    let mut event = entry_event(e);
    add_id(&mut event.record, cfg, key, start);
    event
}

pub(super) fn entry_event(e: SlowEntry) -> Event {
    Event {
        time: e.time.unwrap_or_else(now_nanos),
        record: e.record,
    }
}

/// Splits complete lines (without their newline) and pieces of over-long
/// lines off the front of `data`, handing each on with where it starts and
/// ends (past its newline) in `data`; returns how many bytes were
/// consumed. The rest is an incomplete line.
fn split_lines(
    data: &[u8],
    max: usize,
    metrics: &PluginMetrics,
    mut emit: impl FnMut(&[u8], usize, usize),
) -> usize {
    let mut start = 0;
    for newline in Newlines::new(data) {
        if newline - start > max {
            start = cut_pieces(data, start, newline, max, metrics, &mut emit);
        }
        emit(&data[start..newline], start, newline + 1);
        start = newline + 1;
    }
    // No newline in the rest: over-long, it is cut; else it is incomplete.
    cut_pieces(data, start, data.len(), max, metrics, &mut emit)
}

/// Where the newlines of `data` are, in order: found 64 bytes at a time as
/// a mask of bits, one per byte. A `memchr` call per line set up its
/// search again for each line of a few dozen bytes: on a slow log (eight
/// lines an entry) that was 3% of the path's instructions.
struct Newlines<'a> {
    data: &'a [u8],
    /// Where the block of `mask` starts.
    base: usize,
    /// The newlines of that block not yet given out.
    mask: u64,
    /// Where the next block starts.
    next: usize,
}

impl<'a> Newlines<'a> {
    fn new(data: &'a [u8]) -> Self {
        Newlines {
            data,
            base: 0,
            mask: 0,
            next: 0,
        }
    }
}

impl Iterator for Newlines<'_> {
    type Item = usize;

    #[inline]
    fn next(&mut self) -> Option<usize> {
        while self.mask == 0 {
            let block = self.data.get(self.next..).filter(|b| !b.is_empty())?;
            self.mask = newline_mask(block);
            self.base = self.next;
            self.next += 64;
        }
        let i = self.mask.trailing_zeros() as usize;
        self.mask &= self.mask - 1;
        Some(self.base + i)
    }
}

/// Bit i set where byte i of the first 64 of `block` is a newline.
#[inline]
fn newline_mask(block: &[u8]) -> u64 {
    #[cfg(target_arch = "x86_64")]
    if block.len() >= 64 {
        use std::arch::x86_64::*;
        // SAFETY: SSE2 is part of the x86_64 baseline; the four unaligned
        // loads read 64 bytes within `block`.
        unsafe {
            let nl = _mm_set1_epi8(b'\n' as i8);
            let bits = |at: usize| {
                let v = _mm_loadu_si128(block.as_ptr().add(at).cast());
                u64::from(_mm_movemask_epi8(_mm_cmpeq_epi8(v, nl)) as u16)
            };
            return bits(0) | bits(16) << 16 | bits(32) << 32 | bits(48) << 48;
        }
    }
    block
        .iter()
        .take(64)
        .enumerate()
        .filter(|&(_, &c)| c == b'\n')
        .fold(0, |m, (i, _)| m | 1 << i)
}

/// Cuts pieces of `max` bytes (at a character boundary) off the text from
/// `start` to `end` (a newline, or the end of `data`) while it is longer
/// than `max`; returns where the rest starts.
fn cut_pieces(
    data: &[u8],
    mut start: usize,
    end: usize,
    max: usize,
    metrics: &PluginMetrics,
    emit: &mut impl FnMut(&[u8], usize, usize),
) -> usize {
    while end - start > max {
        let rest = &data[start..];
        let cut = utf8_boundary(rest, max);
        emit(&rest[..cut], start, start + cut);
        metrics.lines_split.fetch_add(1, Ordering::Relaxed);
        start += cut;
    }
    start
}

/// The largest cut <= max that does not split a UTF-8 sequence (when the
/// bytes are UTF-8 at all).
fn utf8_boundary(bytes: &[u8], max: usize) -> usize {
    let mut cut = max;
    for _ in 0..3 {
        if cut > 0 && (bytes[cut] & 0xC0) == 0x80 {
            cut -= 1;
        }
    }
    if cut == 0 {
        max
    } else {
        cut
    }
}

/// The longest valid UTF-8 prefix of `data`. Validated once for a whole
/// read: per line, the validator's set-up was most of its cost on lines of
/// a hundred bytes (4% of the slow-log source's CPU).
fn valid_prefix(data: &[u8]) -> &str {
    match simdutf8::compat::from_utf8(data) {
        Ok(text) => text,
        // Valid by the validator's word; "" only sends every line the slow
        // way below.
        Err(e) => std::str::from_utf8(&data[..e.valid_up_to()]).unwrap_or(""),
    }
}

/// A line beyond the valid prefix: itself valid (the prefix ended in a
/// later line), or counted and its invalid bytes replaced by U+FFFD.
fn lossy<'a>(line: &'a [u8], metrics: &PluginMetrics) -> Cow<'a, str> {
    match simdutf8::basic::from_utf8(line) {
        Ok(text) => Cow::Borrowed(text),
        Err(_) => {
            metrics.invalid_utf8.fetch_add(1, Ordering::Relaxed);
            String::from_utf8_lossy(line)
        }
    }
}

/// `text.trim_end_matches('\r')` by byte (`str`'s goes through its
/// pattern searcher, on every line of a slow log).
fn trim_end_cr(text: &str) -> &str {
    let b = text.as_bytes();
    let mut n = b.len();
    while n > 0 && b[n - 1] == b'\r' {
        n -= 1;
    }
    // Before a run of ASCII bytes (or the end): a character boundary.
    &text[..n]
}

fn make_event(time: i64, key: &'static str, text: Cow<str>) -> Event {
    let text = text.into_owned();
    let mut record = Record::with_capacity(4);
    record.insert(key, Value::String(text));
    Event { time, record }
}

#[cfg(test)]
mod tests {
    use super::super::config::parse;
    use super::*;

    #[test]
    fn splits_lines_and_long_pieces() {
        let m = PluginMetrics::default();
        let long = format!("three{}", "e".repeat(45));
        let data = format!("one\ntwo\n{long}\npart").into_bytes();
        let mut out = Vec::new();
        let consumed = split_lines(&data, 20, &m, |l, _, _| {
            out.push(String::from_utf8_lossy(l).into_owned())
        });
        assert_eq!(out[..2], ["one", "two"]);
        assert_eq!(
            out[2..].iter().map(|p| p.len()).collect::<Vec<_>>(),
            [20, 20, 10]
        );
        assert_eq!(out[2..].concat(), long);
        assert_eq!(&data[consumed..], b"part");
        assert_eq!(m.lines_split.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn long_pieces_do_not_split_characters() {
        let m = PluginMetrics::default();
        let data = "aé".repeat(20).into_bytes();
        let mut out = Vec::new();
        let consumed = split_lines(&data, 16, &m, |l, _, _| {
            out.push(std::str::from_utf8(l).unwrap().to_string())
        });
        assert!(out.iter().all(|p| p.len() <= 16));
        assert_eq!(
            out.concat() + std::str::from_utf8(&data[consumed..]).unwrap(),
            "aé".repeat(20)
        );
    }

    /// `split_lines` as it was, a `memchr` call per line.
    fn split_lines_by_call(data: &[u8], max: usize) -> (Vec<(Vec<u8>, usize, usize)>, usize) {
        let (mut out, mut start) = (Vec::new(), 0);
        loop {
            let rest = &data[start..];
            match memchr::memchr(b'\n', rest) {
                Some(i) if i <= max => {
                    out.push((rest[..i].to_vec(), start, start + i + 1));
                    start += i + 1;
                }
                _ if rest.len() > max => {
                    let cut = utf8_boundary(rest, max);
                    out.push((rest[..cut].to_vec(), start, start + cut));
                    start += cut;
                }
                _ => return (out, start),
            }
        }
    }

    #[test]
    fn lines_are_split_as_by_a_search_per_line() {
        // Lines of every length around the limits, empty ones, characters
        // of two and three bytes, with and without a last newline.
        let mut inputs = Vec::new();
        for len in 0..40 {
            let line = "aé€".repeat(len).into_bytes()[..len * 2].to_vec();
            let mut data = Vec::new();
            for k in 0..5 {
                data.extend_from_slice(&line[..len.saturating_sub(k * 3)]);
                data.push(b'\n');
                if k % 2 == 0 {
                    data.push(b'\n');
                }
            }
            inputs.push(data.clone());
            data.extend_from_slice(&line);
            inputs.push(data);
        }
        // And a long read: lines of pseudo-random lengths across many
        // 64-byte blocks, newlines at every place in a block.
        let mut x = 7u32;
        let mut data = Vec::new();
        while data.len() < 20_000 {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            let len = (x >> 16) as usize % 150;
            data.extend(std::iter::repeat_n(b'x', len));
            data.push(b'\n');
        }
        inputs.push(data);
        for data in &inputs {
            for max in [1, 2, 3, 4, 7, 16, 33, 64, 80, 1 << 20] {
                let m = PluginMetrics::default();
                let mut got = Vec::new();
                let consumed = split_lines(data, max, &m, |l, start, end| {
                    got.push((l.to_vec(), start, end))
                });
                assert_eq!(
                    (got, consumed),
                    split_lines_by_call(data, max),
                    "{data:?} {max}"
                );
            }
        }
    }

    #[test]
    fn carriage_returns_trimmed_as_str_trims_them() {
        for s in [
            "", "\r", "\r\r", "a\r", "a\r\r", "\ra", "é\r", "a\rb\r", "ab",
        ] {
            assert_eq!(trim_end_cr(s), s.trim_end_matches('\r'), "{s:?}");
        }
    }

    fn ids(events: &[Event]) -> Vec<&str> {
        events
            .iter()
            .map(|e| e.record["_id"].as_str().expect("an id"))
            .collect()
    }

    #[test]
    fn lines_and_pieces_of_long_lines_get_ids_from_where_they_start() {
        let cfg = parse(
            "path: /x/*.log\ntag: t\nmax_line_size: 16\nid_key: _id\n",
            false,
        )
        .unwrap();
        let m = PluginMetrics::default();
        // Bytes 1000..1005, a 40-byte line cut in pieces of 16, 16 and 8
        // from 1005, then 1046; the unterminated rest has no id yet.
        let data = format!("one\r\n{}\ntwo\nthr", "x".repeat(40));
        let from = Origin {
            key: 0xab,
            offset: 1000,
        };
        let (events, consumed) = frame(None, from, &cfg, &m, data.as_bytes(), false);
        assert_eq!(consumed, data.len() - 3);
        assert_eq!(
            ids(&events),
            [
                "00000000000000ab-1000",
                "00000000000000ab-1005",
                "00000000000000ab-1021",
                "00000000000000ab-1037",
                "00000000000000ab-1046",
            ]
        );
        assert_eq!(events[0].record["message"], "one");
        assert_eq!(events[3].record["message"], "x".repeat(8));

        // Off by default: the record is the line alone.
        let plain = parse("path: /x/*.log\ntag: t\n", false).unwrap();
        let (events, _) = frame(None, from, &plain, &m, b"one\n", false);
        assert_eq!(events[0].record.len(), 1);
    }

    #[test]
    fn lines_after_an_invalid_one_or_before_a_cut_character_keep_their_text() {
        let cfg = parse("path: /x/*.log\ntag: t\n", false).unwrap();
        let m = PluginMetrics::default();
        let from = Origin { key: 1, offset: 0 };
        // The read ends inside "é" (0xC3 0xA9), after an invalid line.
        let data = b"caf\xc3\xa9\nbad \xff\nafter \xc3\xa9\nnext \xc3";
        let (events, consumed) = frame(None, from, &cfg, &m, data, false);
        let texts: Vec<&str> = events
            .iter()
            .map(|e| e.record["message"].as_str().unwrap())
            .collect();
        assert_eq!(texts, ["caf\u{e9}", "bad \u{fffd}", "after \u{e9}"]);
        assert_eq!(&data[consumed..], b"next \xc3");
        assert_eq!(m.invalid_utf8.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn a_statement_with_invalid_utf8_still_ends_at_its_semicolon() {
        let cfg = parse("path: /x/*.log\ntag: t\n", true).unwrap();
        let m = PluginMetrics::default();
        let max = cfg.slow_log.as_ref().unwrap().max_entry_bytes;
        let mut parser = SlowLogParser::new(max, None);
        let from = Origin { key: 1, offset: 0 };
        // Replaced by U+FFFD, the line's text is longer than its bytes:
        // its line ending cannot be told from its length.
        let entry = |n: u32, sql: &[u8]| {
            let mut e = format!(
                "# Time: 2024-05-15T17:02:0{n}.000000Z\n# User@Host: app[app] @ web1 [10.0.0.5]  Id: {n}\n\
                 # Query_time: 0.5  Lock_time: 0.0 Rows_sent: 1  Rows_examined: 1\nSET timestamp=1715792559;\n"
            )
            .into_bytes();
            e.extend_from_slice(sql);
            e
        };
        let data = [entry(1, b"SELECT '\xff\xfe';\n"), entry(2, b"SELECT 2;\n")].concat();
        let (events, _) = frame(Some(&mut parser), from, &cfg, &m, &data, true);
        let sqls: Vec<&str> = events
            .iter()
            .map(|e| e.record["sql"].as_str().unwrap())
            .collect();
        assert_eq!(sqls, ["SELECT '\u{fffd}\u{fffd}';", "SELECT 2;"]);
        assert_eq!(m.invalid_utf8.load(Ordering::Relaxed), 1);
    }

    #[test]
    fn slow_log_entries_get_ids_from_their_first_line() {
        let cfg = parse("path: /x/*.log\ntag: t\nid_key: _id\n", true).unwrap();
        let m = PluginMetrics::default();
        let entry = |n: u32| {
            format!(
                "# Time: 2024-05-15T17:02:0{n}.000000Z\n# User@Host: app[app] @ web1 [10.0.0.5]  Id: {n}\n\
                 # Query_time: 0.5  Lock_time: 0.0 Rows_sent: 1  Rows_examined: 1\nSET timestamp=1715792559;\nSELECT {n};\n"
            )
        };
        let banner = "/usr/sbin/mysqld, Version: 8.0.36. started with:\nTcp port: 3306  Unix socket: /tmp/s\nTime                 Id Command    Argument\n";
        let data = format!("{banner}{}{}", entry(1), entry(2));
        let starts: Vec<usize> = data.match_indices("# Time:").map(|(i, _)| i).collect();
        let base = 500;
        let max = cfg.slow_log.as_ref().unwrap().max_entry_bytes;
        let mut parser = SlowLogParser::new(max, None);
        let from = Origin {
            key: 7,
            offset: base,
        };
        let (events, _) = frame(Some(&mut parser), from, &cfg, &m, data.as_bytes(), true);
        let want: Vec<String> = starts
            .iter()
            .map(|s| format!("0000000000000007-{}", base + *s as u64))
            .collect();
        assert_eq!(ids(&events), want);
        assert_eq!(events[1].record["sql"], "SELECT 2;");
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let m = PluginMetrics::default();
        let e = make_event(0, "message", lossy(b"bad \xff byte", &m));
        assert_eq!(e.record["message"], "bad \u{fffd} byte");
        assert_eq!(m.invalid_utf8.load(Ordering::Relaxed), 1);
    }
}
