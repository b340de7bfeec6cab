//! What flows through the pipeline: a time and a record, in batches that
//! share a tag (`Downstream::emit` takes the tag once per batch rather than
//! each event holding a reference to it: two atomic operations per record
//! on the tail path, for a value every event of a batch shares).

use std::cell::Cell;

pub use crate::record::Record;

#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Nanoseconds since the Unix epoch.
    pub time: i64,
    pub record: Record,
}

pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64)
}

/// `2026-11-21T05:48:16.123Z`: ISO 8601 in UTC with milliseconds.
pub fn iso8601(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let millis = nanos.rem_euclid(1_000_000_000) / 1_000_000;
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Written digit by digit: every slow-log entry and every line without
    // a time of its own gets one, and `format!` cost more than the date.
    let mut out = *b"0000-00-00T00:00:00.000Z";
    // The date of the last time written on this thread, kept: times come
    // in order, a day's on one date.
    thread_local! {
        static LAST_DATE: Cell<(i64, [u8; 10])> = const { Cell::new((i64::MIN, [0; 10])) };
    }
    match LAST_DATE.get() {
        (day, date) if day == days => out[..10].copy_from_slice(&date),
        _ => {
            let (y, m, d) = civil_from_days(days);
            // i64 nanoseconds span the years 1677 to 2262: four digits.
            put_digits(&mut out[0..4], y as u64);
            put_digits(&mut out[5..7], m.into());
            put_digits(&mut out[8..10], d.into());
            LAST_DATE.set((days, out[..10].try_into().expect("ten bytes")));
        }
    }
    put_digits(&mut out[11..13], (rem / 3600) as u64);
    put_digits(&mut out[14..16], (rem % 3600 / 60) as u64);
    put_digits(&mut out[17..19], (rem % 60) as u64);
    put_digits(&mut out[20..23], millis as u64);
    // SAFETY: `out` is ASCII: digits and the separators above. (Checking
    // it cost a third of this function.)
    unsafe { String::from_utf8_unchecked(out.to_vec()) }
}

/// The last digits of `n`, as many as `to` holds.
#[inline]
fn put_digits(to: &mut [u8], mut n: u64) {
    for c in to.iter_mut().rev() {
        *c = b'0' + (n % 10) as u8;
        n /= 10;
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian).
pub fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// The inverse of `civil_from_days`: days since the epoch of a date.
pub fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let m = m as i64;
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the buffer is valid for its length; gethostname NUL-terminates
    // within it or truncates.
    let rc = unsafe { libc::gethostname(buf.as_mut_ptr() as *mut libc::c_char, buf.len()) };
    if rc != 0 {
        return "localhost".into();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_iso8601() {
        assert_eq!(iso8601(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            iso8601(1_715_792_559_123_000_000),
            "2024-05-15T17:02:39.123Z"
        );
        assert_eq!(iso8601(951_782_400_000_000_000), "2000-02-29T00:00:00.000Z");
        assert_eq!(iso8601(-1), "1969-12-31T23:59:59.999Z");
        assert_eq!(iso8601(i64::MIN), "1677-09-21T00:12:43.145Z");
        assert_eq!(iso8601(i64::MAX), "2262-04-11T23:47:16.854Z");
        for days in [-1000, 0, 11_016, 19_858, 60_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
    }

    #[test]
    fn a_kept_date_is_only_reused_on_its_day() {
        // Times in order across midnights and month and year ends, then
        // back, then jumping between two days: each against `format!`.
        let start = 1_703_980_800_000_000_000i64; // 2023-12-31T00:00:00Z
        let step = 7 * 3_600_000_000_000 + 123_000_000;
        let mut times: Vec<i64> = (0..200).map(|k| start + k * step).collect();
        times.extend((0..200).rev().map(|k| start + k * step - 1));
        times.extend((0..20).map(|k| start + (k % 2) * 86_400_000_000_000 + k));
        for t in times {
            let secs = t.div_euclid(1_000_000_000);
            let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
            let rem = secs.rem_euclid(86_400);
            let expected = format!(
                "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
                rem / 3600,
                rem % 3600 / 60,
                rem % 60,
                t.rem_euclid(1_000_000_000) / 1_000_000
            );
            assert_eq!(iso8601(t), expected, "{t}");
        }
    }
}
