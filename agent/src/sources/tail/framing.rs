//! Line framing: the bytes read from a file become events, one per line
//! (without its newline, CRLF included), over-long lines cut into pieces
//! of `max_line_size` at a character boundary, or one per slow-log entry.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use serde_json::Value;

use super::config::TailConfig;
use crate::event::{now_nanos, Event, Record};
use crate::metrics::PluginMetrics;
use crate::sources::slow_log::{SlowEntry, SlowLogParser};

/// Turns `data`, the bytes of a file from offset `base` on, into events:
/// one per line, or one per finished slow-log entry when a `parser` frames
/// them. Returns the events and how many bytes were consumed; the rest is
/// an incomplete line. `final_` also ends a slow-log entry still being
/// assembled.
pub(super) fn frame(
    tag: &Arc<str>,
    parser: Option<&mut SlowLogParser>,
    base: u64,
    cfg: &TailConfig,
    metrics: &PluginMetrics,
    data: &[u8],
    final_: bool,
) -> (Vec<Event>, usize) {
    let time = now_nanos();
    let mut events = Vec::new();
    let consumed = match parser {
        None => split_lines(data, cfg.max_line_size, metrics, |line, end| {
            // A CRLF line (a log written on or for Windows) ends at its
            // `\r\n`: the message is the text without either.
            let line = match line.strip_suffix(b"\r") {
                Some(text) if data[end - 1] == b'\n' => text,
                _ => line,
            };
            events.push(make_event(tag, time, &cfg.message_key, line, metrics));
        }),
        Some(parser) => {
            let mut entries = Vec::new();
            let consumed = split_lines(data, cfg.max_line_size, metrics, |line, end| {
                let newline = usize::from(data[end - 1] == b'\n');
                let start = end - line.len() - newline;
                let text = match std::str::from_utf8(line) {
                    Ok(t) => std::borrow::Cow::Borrowed(t),
                    Err(_) => {
                        metrics.invalid_utf8.fetch_add(1, Ordering::Relaxed);
                        String::from_utf8_lossy(line)
                    }
                };
                parser.push_line(
                    text.trim_end_matches('\r'),
                    base + start as u64,
                    base + end as u64,
                    &mut entries,
                );
            });
            if final_ {
                parser.finish(&mut entries);
            }
            events.extend(entries.into_iter().map(|e| entry_event(tag, e)));
            consumed
        }
    };
    (events, consumed)
}

pub(super) fn entry_event(tag: &Arc<str>, e: SlowEntry) -> Event {
    Event {
        tag: tag.clone(),
        time: e.time.unwrap_or_else(now_nanos),
        record: e.into_record(),
    }
}

/// Splits complete lines (without their newline) and pieces of over-long
/// lines off the front of `data`; returns how many bytes were consumed. The
/// rest is an incomplete line.
fn split_lines(
    data: &[u8],
    max: usize,
    metrics: &PluginMetrics,
    mut emit: impl FnMut(&[u8], usize),
) -> usize {
    let mut start = 0;
    loop {
        let rest = &data[start..];
        match memchr(b'\n', rest) {
            Some(i) if i <= max => {
                emit(&rest[..i], start + i + 1);
                start += i + 1;
            }
            _ if rest.len() > max => {
                let cut = utf8_boundary(rest, max);
                emit(&rest[..cut], start + cut);
                metrics.lines_split.fetch_add(1, Ordering::Relaxed);
                start += cut;
            }
            _ => return start,
        }
    }
}

fn memchr(needle: u8, hay: &[u8]) -> Option<usize> {
    memchr::memchr(needle, hay)
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

fn make_event(tag: &Arc<str>, time: i64, key: &str, line: &[u8], metrics: &PluginMetrics) -> Event {
    let text = match std::str::from_utf8(line) {
        Ok(s) => s.to_owned(),
        Err(_) => {
            metrics.invalid_utf8.fetch_add(1, Ordering::Relaxed);
            String::from_utf8_lossy(line).into_owned()
        }
    };
    let mut record = Record::new();
    record.insert(key.to_owned(), Value::String(text));
    Event {
        tag: tag.clone(),
        time,
        record,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_lines_and_long_pieces() {
        let m = PluginMetrics::default();
        let long = format!("three{}", "e".repeat(45));
        let data = format!("one\ntwo\n{long}\npart").into_bytes();
        let mut out = Vec::new();
        let consumed = split_lines(&data, 20, &m, |l, _| {
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
        let consumed = split_lines(&data, 16, &m, |l, _| {
            out.push(std::str::from_utf8(l).unwrap().to_string())
        });
        assert!(out.iter().all(|p| p.len() <= 16));
        assert_eq!(
            out.concat() + std::str::from_utf8(&data[consumed..]).unwrap(),
            "aé".repeat(20)
        );
    }

    #[test]
    fn invalid_utf8_is_replaced_and_counted() {
        let m = PluginMetrics::default();
        let e = make_event(&Arc::from("t"), 0, "message", b"bad \xff byte", &m);
        assert_eq!(e.record["message"], "bad \u{fffd} byte");
        assert_eq!(m.invalid_utf8.load(Ordering::Relaxed), 1);
    }
}
