//! Records as JSON text, written straight into the buffer's frame.
//!
//! serde_json escapes a string byte by byte; the messages of a log are
//! mostly text with nothing to escape, and that loop was a tenth of the
//! tail -> http path's CPU. Here 32 bytes are checked at a time (AVX2, when
//! the CPU has it), then sixteen (SSE2; eight elsewhere), and copied as
//! they are when none needs escaping. The
//! escapes themselves are serde_json's, byte for byte (`\"`, `\\`, `\b`,
//! `\f`, `\n`, `\r`, `\t`, other control characters as lowercase
//! `\u00xx`, everything else as it is), so the output is what it was
//! (tests/record_bytes.rs). Numbers are written with serde_json's own
//! formatters; arrays and objects go through serde_json.

use serde_json::Value;

use super::Record;

/// What follows a backslash for each byte that needs one; `u` for
/// `\u00xx`, 0 for bytes written as they are.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 0x20 {
        t[c] = b'u';
        c += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

const ONES: u64 = 0x0101_0101_0101_0101;
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes in `v` may need escaping: a control
/// character, `"` or `\`. Never false when one does (it may be true for
/// a byte above one that does; the bytes are then looked at one by one).
#[inline]
fn may_escape(v: u64) -> bool {
    let zero = |x: u64| x.wrapping_sub(ONES) & !x & HIGHS;
    let control = v.wrapping_sub(ONES * 0x20) & !v & HIGHS;
    (control | zero(v ^ (ONES * b'"' as u64)) | zero(v ^ (ONES * b'\\' as u64))) != 0
}

/// From `i` on, past the bytes of `b` that surely need no escaping: to the
/// first that may (exactly, in whole blocks of 16), or to where fewer than
/// eight are left.
#[inline]
fn skip_plain(b: &[u8], mut i: usize) -> usize {
    #[cfg(target_arch = "x86_64")]
    {
        use std::arch::x86_64::*;
        // A message is usually a few blocks of 32; std caches the CPUID
        // answer, so the check is a load and a test.
        if b.len() - i >= 32 && std::arch::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU has AVX2, checked just above.
            i = unsafe { skip_plain_avx2(b, i) };
            if b.get(i).is_some_and(|&c| ESCAPE[usize::from(c)] != 0) {
                return i;
            }
        }
        // SAFETY: SSE2 is part of the x86_64 baseline (every EL target has
        // it); the unaligned loads read 16 bytes within `b`.
        unsafe {
            let quote = _mm_set1_epi8(b'"' as i8);
            let backslash = _mm_set1_epi8(b'\\' as i8);
            let control = _mm_set1_epi8(0x1f);
            while i + 16 <= b.len() {
                let v = _mm_loadu_si128(b.as_ptr().add(i).cast());
                // v <= 0x1f, unsigned: min(v, 0x1f) == v.
                let hits = _mm_or_si128(
                    _mm_cmpeq_epi8(_mm_min_epu8(v, control), v),
                    _mm_or_si128(_mm_cmpeq_epi8(v, quote), _mm_cmpeq_epi8(v, backslash)),
                );
                let mask = _mm_movemask_epi8(hits);
                if mask != 0 {
                    return i + mask.trailing_zeros() as usize;
                }
                i += 16;
            }
        }
    }
    while let Some(word) = b.get(i..i + 8) {
        if may_escape(u64::from_le_bytes(word.try_into().expect("eight bytes"))) {
            break;
        }
        i += 8;
    }
    i
}

/// `skip_plain`'s loop over blocks of 32 bytes: to the first byte that
/// needs escaping, or to where fewer than 32 are left.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
unsafe fn skip_plain_avx2(b: &[u8], mut i: usize) -> usize {
    use std::arch::x86_64::*;
    let quote = _mm256_set1_epi8(b'"' as i8);
    let backslash = _mm256_set1_epi8(b'\\' as i8);
    let control = _mm256_set1_epi8(0x1f);
    while i + 32 <= b.len() {
        // SAFETY: the unaligned load reads 32 bytes within `b`.
        let v = unsafe { _mm256_loadu_si256(b.as_ptr().add(i).cast()) };
        // v <= 0x1f, unsigned: min(v, 0x1f) == v.
        let hits = _mm256_or_si256(
            _mm256_cmpeq_epi8(_mm256_min_epu8(v, control), v),
            _mm256_or_si256(_mm256_cmpeq_epi8(v, quote), _mm256_cmpeq_epi8(v, backslash)),
        );
        let mask = _mm256_movemask_epi8(hits);
        if mask != 0 {
            return i + mask.trailing_zeros() as usize;
        }
        i += 32;
    }
    i
}

/// `s` as a JSON string, quotes included.
#[inline]
pub fn write_str(out: &mut Vec<u8>, s: &str) {
    let b = s.as_bytes();
    // Most strings of a record are short (its keys, a user, a host, a
    // time): checking them a word at a time costs less than setting up
    // the block-wise scan, which was a twentieth of the slow-log path's
    // CPU in calls on strings of a few bytes. (`may_escape` is never
    // false for a word that needs escaping; when it is true, the scan
    // below decides.)
    let plain = match b.len() {
        // Two words, overlapping for fewer than 16 bytes.
        8..=16 => {
            let word = |at: usize| u64::from_le_bytes(b[at..at + 8].try_into().expect("8 bytes"));
            !may_escape(word(0)) && !may_escape(word(b.len() - 8))
        }
        n => n < 8 && b.iter().all(|&c| ESCAPE[usize::from(c)] == 0),
    };
    if plain {
        write_plain(out, b);
        return;
    }
    write_escaped(out, b);
}

/// `"b"` for at most 16 bytes that need no escaping, written by copies of
/// fixed sizes (two overlapping words, or two halves of one) into room
/// made for the longest, then cut to length: appending the bytes
/// themselves was a `memcpy` call of a few bytes for each of a record's
/// keys and short values. The copies go straight into `out`: put together
/// on the stack first, the string was read back as a whole just after its
/// parts were stored, which stalled (stores of parts cannot be forwarded
/// to a load of the whole).
#[inline]
fn write_plain(out: &mut Vec<u8>, b: &[u8]) {
    let n = b.len();
    assert!(n <= 16, "write_plain takes at most 16 bytes");
    let len = out.len();
    out.extend_from_slice(&[0u8; 18]);
    let quoted = &mut out[len..len + 18];
    quoted[0] = b'"';
    if n >= 8 {
        quoted[1..9].copy_from_slice(&b[..8]);
        quoted[n - 7..n + 1].copy_from_slice(&b[n - 8..]);
    } else if n >= 4 {
        quoted[1..5].copy_from_slice(&b[..4]);
        quoted[n - 3..n + 1].copy_from_slice(&b[n - 4..]);
    } else {
        for (i, &c) in b.iter().enumerate() {
            quoted[1 + i] = c;
        }
    }
    quoted[n + 1] = b'"';
    out.truncate(len + n + 2);
}

/// `write_str` for a string that may need escaping or is long. Kept out of
/// line so that `write_str`, with only the short strings' path, is
/// inlined where a record's keys and values are written: as one function
/// with this one in it, each of a record's seventeen strings paid for a
/// call that saved and restored six registers.
#[inline(never)]
fn write_escaped(out: &mut Vec<u8>, b: &[u8]) {
    out.reserve(b.len() + 2);
    out.push(b'"');
    let mut run = 0;
    let mut i = 0;
    while i < b.len() {
        i = skip_plain(b, i);
        let Some(&byte) = b.get(i) else { break };
        let esc = ESCAPE[byte as usize];
        if esc != 0 {
            out.extend_from_slice(&b[run..i]);
            if esc == b'u' {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.extend_from_slice(b"\\u00");
                out.push(HEX[usize::from(byte >> 4)]);
                out.push(HEX[usize::from(byte & 0xf)]);
            } else {
                out.push(b'\\');
                out.push(esc);
            }
            run = i + 1;
        }
        i += 1;
    }
    out.extend_from_slice(&b[run..]);
    out.push(b'"');
}

/// A value as serde_json writes it. Strings, numbers and literals are
/// written here, numbers with the formatters serde_json uses (itoa, zmij):
/// its serializer, set up for each of an entry's five numbers, added 1%
/// to the slow-log path's instructions. Arrays and objects go through
/// serde_json.
#[inline]
fn write_value(out: &mut Vec<u8>, v: &Value) {
    match v {
        Value::String(s) => write_str(out, s),
        Value::Number(n) => {
            // serde_json's `Number` is a u64, else an i64, else an f64.
            if let Some(u) = n.as_u64() {
                out.extend_from_slice(itoa::Buffer::new().format(u).as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.extend_from_slice(itoa::Buffer::new().format(i).as_bytes());
            } else {
                match n.as_f64().filter(|f| f.is_finite()) {
                    Some(f) => {
                        out.extend_from_slice(zmij::Buffer::new().format_finite(f).as_bytes())
                    }
                    None => out.extend_from_slice(b"null"),
                }
            }
        }
        Value::Bool(true) => out.extend_from_slice(b"true"),
        Value::Bool(false) => out.extend_from_slice(b"false"),
        Value::Null => out.extend_from_slice(b"null"),
        other => serde_json::to_writer(&mut *out, other).expect("JSON values serialize"),
    }
}

impl Record {
    /// The record as one JSON object, fields in order.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.push(b'{');
        for (i, (k, v)) in self.iter().enumerate() {
            if i > 0 {
                out.push(b',');
            }
            write_str(out, k);
            out.push(b':');
            write_value(out, v);
        }
        out.push(b'}');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strings_are_escaped_as_serde_json_escapes_them() {
        let mut cases: Vec<String> = vec![
            String::new(),
            "plain ascii text longer than one word".into(),
            "\"\\/".into(),
            "é 😀 \u{2028} \u{7f} \u{FEFF}".into(),
        ];
        // Every byte value below 0x80 at every position of two 32-byte
        // blocks and the tail after them, alone and beside multi-byte
        // characters (whose bytes are all >= 0x80).
        let base = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_+=";
        for c in 0u8..0x80 {
            for at in 0..=base.len() {
                let mut s = base.to_string();
                s.insert(at, char::from(c));
                cases.push(s.clone());
                s.insert_str(at, "é€😀");
                cases.push(s);
            }
        }
        // And in short strings (checked by byte or by word), up to the
        // block-wise scan's length, alone and beside a multi-byte one.
        for c in 0u8..0x80 {
            for len in 0..17 {
                for at in 0..=len {
                    let mut s = base[..len].to_string();
                    s.insert(at, char::from(c));
                    cases.push(s.clone());
                    s.insert(if at > 0 { at - 1 } else { at + 1 }, 'é');
                    cases.push(s);
                }
            }
        }
        for s in cases {
            let mut ours = Vec::new();
            write_str(&mut ours, &s);
            assert_eq!(
                String::from_utf8(ours).unwrap(),
                serde_json::to_string(&s).unwrap(),
                "{s:?}"
            );
        }
    }

    #[test]
    fn records_are_written_as_serde_json_writes_them() {
        let v = serde_json::json!({
            "message": "a \"quoted\"\tline\n", "n": -1, "f": 1.0, "big": 1e300,
            "u": u64::MAX, "null": null, "b": true, "nested": {"z": [1, "\u{1}"], "a": {}},
            "k\"ey": "v"
        });
        let r = Record::from(v.as_object().unwrap().clone());
        let mut ours = Vec::new();
        r.write_json(&mut ours);
        assert_eq!(String::from_utf8(ours).unwrap(), v.to_string());
    }

    #[test]
    fn numbers_are_written_as_serde_json_writes_them() {
        let mut numbers: Vec<Value> = vec![
            0.into(),
            1.into(),
            (-1).into(),
            i64::MIN.into(),
            i64::MAX.into(),
            (i64::MAX as u64 + 1).into(),
            u64::MAX.into(),
            0.0.into(),
            (-0.0).into(),
            1.0.into(),
            0.5.into(),
            0.000012.into(),
            1e-7.into(),
            1e15.into(),
            1e16.into(),
            1e21.into(),
            1e300.into(),
            f64::MIN_POSITIVE.into(),
            5e-324.into(),
            f64::MAX.into(),
            f64::MIN.into(),
            123456.789.into(),
            (-2.5).into(),
        ];
        // A slow log's seconds: every count of microseconds up to ten
        // thousand, and some larger.
        for us in (0..10_000).chain((10_000..100_000_000).step_by(9_973)) {
            numbers.push((us as f64 / 1e6).into());
        }
        for n in numbers {
            let r: Record = [("n", n.clone())].into_iter().collect();
            let mut ours = Vec::new();
            r.write_json(&mut ours);
            let theirs = serde_json::json!({ "n": n }).to_string();
            assert_eq!(String::from_utf8(ours).unwrap(), theirs, "{n:?}");
        }
    }
}
