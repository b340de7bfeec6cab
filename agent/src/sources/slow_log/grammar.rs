//! What one line of a slow query log can be: a header line (`# Time:`,
//! `# User@Host:`, `# Key: value ...`), a server banner, or a context line
//! (`use db;`, `SET timestamp=N;`), and the fields of each. Times and
//! User@Host follow the servers' grammar to the end of the line or are not
//! taken as such; `user_host_lenient` reads what other tools wrote.

use crate::event::days_from_civil;

/// Where the ASCII byte `b` first is in `s` (a character boundary, since
/// `b` is ASCII). `str::find(char)` calls memcmp for each candidate: on
/// these short header fields that was 6% of the slow-log source's CPU.
/// Most fields are a few bytes (`05:43:52.000123`, `app[app]`), shorter
/// than memchr's vectors: a plain loop skips its dispatch and set-up
/// (2.5% of the source's CPU in memchr for these).
pub fn find(s: &str, b: u8) -> Option<usize> {
    let bytes = s.as_bytes();
    if bytes.len() < 32 {
        bytes.iter().position(|&c| c == b)
    } else {
        memchr::memchr(b, bytes)
    }
}

/// Whether `b` is ASCII whitespace as `char::is_whitespace` has it (space,
/// `\t`, `\n`, `\x0b`, `\x0c`, `\r`).
#[inline]
fn ascii_space(b: u8) -> bool {
    b == b' ' || (b'\t'..=b'\r').contains(&b)
}

/// `s.trim_start()`, skipping `str::trim_start`'s lookups in Unicode's
/// whitespace table while the bytes are ASCII, as a header field's almost
/// always are (a field after its key starts with a space: those lookups
/// were a fortieth of the slow-log path's instructions); at a byte above
/// 0x7f, which may begin Unicode whitespace, `str`'s decides.
#[inline]
pub fn trim_start(s: &str) -> &str {
    let b = s.as_bytes();
    let i = b.iter().position(|&c| !ascii_space(c)).unwrap_or(b.len());
    match b.get(i) {
        Some(&c) if c > 0x7f => s.trim_start(),
        // At an ASCII byte or the end: a character boundary.
        _ => &s[i..],
    }
}

/// `s.trim_end()`, as `trim_start`.
#[inline]
pub fn trim_end(s: &str) -> &str {
    let b = s.as_bytes();
    let n = b
        .iter()
        .rposition(|&c| !ascii_space(c))
        .map_or(0, |i| i + 1);
    match n.checked_sub(1).map(|i| b[i]) {
        Some(c) if c > 0x7f => s.trim_end(),
        _ => &s[..n],
    }
}

/// `s.trim()`, as `trim_start`.
#[inline]
pub fn trim(s: &str) -> &str {
    trim_end(trim_start(s))
}

/// `s.trim().is_empty()`, as `trim_start`.
#[inline]
pub fn is_blank(s: &str) -> bool {
    trim_start(s).is_empty()
}

/// `s.split_once(b)` for an ASCII byte, as `find`.
pub fn split_once(s: &str, b: u8) -> Option<(&str, &str)> {
    let i = find(s, b)?;
    Some((&s[..i], &s[i + 1..]))
}

/// `s.split(b)` for an ASCII byte, as `find`.
pub fn split(s: &str, b: u8) -> impl Iterator<Item = &str> {
    let mut rest = Some(s);
    std::iter::from_fn(move || {
        let r = rest?;
        Some(match split_once(r, b) {
            Some((head, tail)) => {
                rest = Some(tail);
                head
            }
            None => {
                rest = None;
                r
            }
        })
    })
}

/// `# Time: ...`: the time alone, or with the `# User@Host:` that old
/// Percona servers put on the same line.
pub struct TimeLine<'a> {
    /// The time as written.
    pub text: &'a str,
    pub time: Option<i64>,
    pub user_host: Option<&'a str>,
}

/// Splits `Time: <v>[ # User@Host: <w>]` (the text after `# `).
pub fn time_line(body: &str) -> Option<TimeLine<'_>> {
    let v = body.strip_prefix("Time:")?;
    let (time, user_host) = match find(v, b'#') {
        Some(i) => match v[i + 1..].strip_prefix(" User@Host:") {
            Some(uh) if v[..i].ends_with(' ') => (&v[..i - 1], Some(uh)),
            _ => (v, None),
        },
        None => (v, None),
    };
    Some(TimeLine {
        text: trim(time),
        time: parse_time(time),
        user_host,
    })
}

/// `priv_user[user] @ host [ip]`, then `  Id: N` on MySQL 5.6 and later,
/// as `sql/log.cc` writes it: every part may be empty (`[SQL_SLAVE] @  []`).
#[derive(Debug, PartialEq)]
pub struct UserHost<'a> {
    /// The account's user name, else the name the client gave.
    pub user: &'a str,
    pub host: &'a str,
    pub ip: &'a str,
    pub id: Option<&'a str>,
}

/// The text after `User@Host:`, if it matches the server's grammar to the
/// end of the line.
pub fn user_host(v: &str) -> Option<UserHost<'_>> {
    let v = v.strip_prefix(' ').unwrap_or(v);
    let open = find(v, b'[')?;
    let (priv_user, rest) = (&v[..open], &v[open + 1..]);
    let close = find(rest, b']')?;
    let (client_user, rest) = (&rest[..close], rest[close + 1..].strip_prefix(" @ ")?);
    // `host [ip]`: neither holds a space.
    let open = find(rest, b' ')?;
    let host = &rest[..open];
    let rest = rest[open + 1..].strip_prefix('[')?;
    let close = find(rest, b']')?;
    let (ip, rest) = (&rest[..close], trim(&rest[close + 1..]));
    if find(ip, b' ').is_some() {
        return None;
    }
    let id = match rest {
        "" => None,
        r => {
            let id = trim(r.strip_prefix("Id:")?);
            if id.is_empty() || !id.bytes().all(|b| b.is_ascii_digit()) {
                return None;
            }
            Some(id)
        }
    };
    let user = if priv_user.is_empty() {
        client_user
    } else {
        priv_user
    };
    Some(UserHost { user, host, ip, id })
}

/// Reads `User@Host:` text that does not follow the grammar (logs written
/// by other tools): `who @ host [ip]` as far as it goes.
pub fn user_host_lenient(v: &str) -> UserHost<'_> {
    let (who, rest) = v.split_once(" @ ").unwrap_or((v, ""));
    let who = who.trim();
    let user = match who.split_once('[') {
        Some((before, _)) if !before.is_empty() => before,
        Some((_, inside)) => inside.trim_end_matches(']'),
        None => who,
    };
    let host_part = rest.find(']').map_or(rest, |i| &rest[..=i]);
    let (host, ip) = match host_part.split_once('[') {
        Some((h, ip)) => (h.trim(), ip.trim_end_matches(']').trim()),
        None => (host_part.trim(), ""),
    };
    UserHost {
        user,
        host,
        ip,
        id: None,
    }
}

/// `Key: value  Key2: value2` pairs, in order. An empty value (`Schema: `
/// with nothing, or followed by the next key) is "". Tokens that are
/// neither a key nor its value (`Rows_examined:40`, `# No InnoDB
/// statistics ...`) are skipped; `strict` pairs report them instead.
///
/// The tokens are what `split_ascii_whitespace` gives, found by a loop
/// over the bytes with a table of byte classes: with that iterator (a
/// filter over a split, peeked) and a second check of each key after a
/// peek, the header parser ran a tenth more instructions (a line of
/// every entry).
pub struct Pairs<'a> {
    rest: &'a str,
    /// A key read as the last pair's value (which was then empty): the
    /// next pair's.
    next_key: Option<&'a str>,
    /// A token that is not part of a pair was seen.
    pub stray: bool,
}

pub fn pairs(s: &str) -> Pairs<'_> {
    Pairs {
        rest: s,
        next_key: None,
        stray: false,
    }
}

/// What each byte is to a header line's tokens: ASCII whitespace (as
/// `u8::is_ascii_whitespace`: space, `\t`, `\n`, `\x0c`, `\r`), a letter,
/// or a digit or `_` (the rest of a key).
const SPACE: u8 = 1;
const LETTER: u8 = 2;
const KEY_REST: u8 = 4;
static CLASS: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut c = 0;
    while c < 256 {
        let b = c as u8;
        if b.is_ascii_whitespace() {
            t[c] = SPACE;
        } else if b.is_ascii_alphabetic() {
            t[c] = LETTER | KEY_REST;
        } else if b.is_ascii_digit() || b == b'_' {
            t[c] = KEY_REST;
        }
        c += 1;
    }
    t
};

/// The next token of `rest` split at ASCII whitespace (as
/// `split_ascii_whitespace`), and `rest` past it.
#[inline]
fn next_token<'a>(rest: &mut &'a str) -> Option<&'a str> {
    let b = rest.as_bytes();
    let mut start = 0;
    while CLASS[usize::from(*b.get(start)?)] == SPACE {
        start += 1;
    }
    let mut end = start + 1;
    while b.get(end).is_some_and(|&c| CLASS[usize::from(c)] != SPACE) {
        end += 1;
    }
    // Both ends are at ASCII bytes (or the end): character boundaries.
    let token = &rest[start..end];
    *rest = &rest[end..];
    Some(token)
}

/// A token that is a key (`Query_time:`), without its colon: a letter,
/// then letters, digits or `_`.
#[inline]
fn as_key(token: &str) -> Option<&str> {
    let key = token.strip_suffix(':')?;
    let (&first, rest) = key.as_bytes().split_first()?;
    (CLASS[usize::from(first)] & LETTER != 0
        && rest.iter().all(|&b| CLASS[usize::from(b)] & KEY_REST != 0))
    .then_some(key)
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a str, &'a str);

    fn next(&mut self) -> Option<(&'a str, &'a str)> {
        let key = match self.next_key.take() {
            Some(key) => key,
            None => loop {
                let token = next_token(&mut self.rest)?;
                match as_key(token) {
                    Some(key) => break key,
                    None => self.stray = true,
                }
            },
        };
        let value = match next_token(&mut self.rest) {
            Some(token) => match as_key(token) {
                Some(next) => {
                    self.next_key = Some(next);
                    ""
                }
                None => token,
            },
            None => "",
        };
        Some((key, value))
    }
}

/// Whether `line` reads as a header line: `#`, then a first word that is
/// a key (`# Time:`, `# User@Host:`, `# Query_time:`, `# Thread_id:`),
/// not a SQL comment (`# fetch the users`) or `# administrator command:`.
/// Whether the block it begins is a header is decided by its content (see
/// the module's rule 3), not by this line's: the servers' own test logs
/// hold malformed times and User@Host lines in entries that are real.
pub fn is_header_line(line: &str) -> bool {
    let Some(body) = line.strip_prefix('#') else {
        return false;
    };
    let mut rest = body;
    let word = next_token(&mut rest).unwrap_or("");
    word == "User@Host:" || as_key(word).is_some()
}

/// One line of the banner a server writes when it opens the log (at start,
/// and at `FLUSH LOGS`), in one write (`File_query_log::open`):
///
/// ```text
/// /usr/sbin/mysqld, Version: 8.0.36 (MySQL Community Server - GPL). started with:
/// Tcp port: 3306  Unix socket: /var/run/mysqld/mysqld.sock
/// Time                 Id Command    Argument
/// ```
///
/// `TCP Port: 3306, Named Pipe: ...` on Windows, tabs in the last line
/// from MariaDB, and an embedded server writes `..., Version: ... embedded
/// library` and the last line, without a port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BannerLine {
    /// `<program>, Version: ... started with:`, then `Port`, then `Columns`.
    Started,
    /// `<program>, Version: ... embedded library`, then `Columns`.
    Embedded,
    Port,
    /// `Time  Id Command  Argument`: the last line.
    Columns,
}

impl BannerLine {
    /// The line the server writes after this one, None after the last.
    pub fn next(self) -> Option<BannerLine> {
        match self {
            BannerLine::Started => Some(BannerLine::Port),
            BannerLine::Embedded | BannerLine::Port => Some(BannerLine::Columns),
            BannerLine::Columns => None,
        }
    }

    /// Begins a banner.
    pub fn is_first(self) -> bool {
        matches!(self, BannerLine::Started | BannerLine::Embedded)
    }
}

/// Which line of a server banner `line` is, if it reads as one.
pub fn banner_line(line: &str) -> Option<BannerLine> {
    let t = trim_end(line);
    if t.len() >= 9 && t.as_bytes()[..9].eq_ignore_ascii_case(b"tcp port:") {
        return t[9..]
            .trim_start()
            .starts_with(|c: char| c.is_ascii_digit())
            .then_some(BannerLine::Port);
    }
    if t.starts_with("Time") {
        let mut words = t.split_ascii_whitespace();
        return (words.next() == Some("Time")
            && words.next() == Some("Id")
            && words.next() == Some("Command")
            && words.next() == Some("Argument")
            && words.next().is_none())
        .then_some(BannerLine::Columns);
    }
    let kind = if t.ends_with("started with:") {
        BannerLine::Started
    } else if t.ends_with("embedded library") {
        BannerLine::Embedded
    } else {
        return None;
    };
    t.split_once(", Version: ")
        .is_some_and(|(program, _)| {
            program.ends_with("mysqld")
                || program.ends_with("mariadbd")
                || program.ends_with(".exe")
        })
        .then_some(kind)
}

/// `use db;` (the server writes it before `SET timestamp` when the
/// database differs from the last one it logged): the database, without
/// backquotes.
pub fn use_statement(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("use ")?;
    let db = trim(rest.strip_suffix(';')?);
    let db = db
        .strip_prefix('`')
        .and_then(|d| d.strip_suffix('`'))
        .unwrap_or(db);
    (!db.is_empty()).then_some(db)
}

/// The server's `SET [last_insert_id=N,][insert_id=N,]timestamp=N;` line.
#[derive(Debug, Default, PartialEq)]
pub struct SetLine {
    pub timestamp: Option<i64>,
    pub insert_id: Option<i64>,
    pub last_insert_id: Option<i64>,
}

/// The server's SET line, if every assignment is one it writes.
pub fn set_line(line: &str) -> Option<SetLine> {
    // What nearly every entry has, read without splitting the list.
    if let Some(t) = line
        .strip_prefix("SET timestamp=")
        .and_then(|r| r.strip_suffix(';'))
        .and_then(digits)
    {
        return Some(SetLine {
            timestamp: Some(t),
            ..SetLine::default()
        });
    }
    set_line_list(line)
}

/// `set_line` by its list of assignments.
fn set_line_list(line: &str) -> Option<SetLine> {
    let list = line.strip_prefix("SET ")?.strip_suffix(';')?;
    let mut set = SetLine::default();
    for assignment in split(list, b',') {
        let (name, value) = split_once(assignment, b'=')?;
        let value: i64 = trim(value).parse().ok()?;
        let slot = match trim(name) {
            "timestamp" => &mut set.timestamp,
            "insert_id" => &mut set.insert_id,
            "last_insert_id" => &mut set.last_insert_id,
            _ => return None,
        };
        *slot = Some(value);
    }
    Some(set)
}

/// `2024-05-15T17:02:39.123456Z` or `...+02:00` (MySQL 5.7 and later),
/// `240515 17:02:39` or `090127  1:23:34` (MySQL 5.x, MariaDB: server-local
/// time, read as UTC), in nanoseconds. The whole text must be a time.
pub fn parse_time(v: &str) -> Option<i64> {
    let v = trim(v);
    let b = v.as_bytes();
    if b.len() >= 19 && b[4] == b'-' && b[7] == b'-' && b[10] == b'T' {
        let (y, m, d) = (digits(&v[..4])?, digits(&v[5..7])?, digits(&v[8..10])?);
        let rest = &v[11..];
        // By byte: a `char` pattern's search was most of this function.
        let tz_at = rest
            .bytes()
            .position(|c| matches!(c, b'Z' | b'+' | b'-'))
            .unwrap_or(rest.len());
        let (clock, tz) = rest.split_at(tz_at);
        let (secs, nanos) = clock_secs(clock, false)?;
        let offset = match tz {
            "" | "Z" => 0,
            tz => {
                let sign = if tz.starts_with('-') { -1 } else { 1 };
                let hm = &tz[1..];
                let (h, m) = match split_once(hm, b':') {
                    Some((h, m)) => (h, m),
                    None => hm.split_at(hm.len().min(2)),
                };
                let (h, m) = (
                    two_digits(h)?,
                    if m.is_empty() { 0 } else { two_digits(m)? },
                );
                if h > 23 || m > 59 {
                    return None;
                }
                sign * (h * 3600 + m * 60)
            }
        };
        let day = civil_day(y, m, d)?;
        return Some((day * 86_400 + secs - offset) * 1_000_000_000 + nanos);
    }
    let (date, clock) = split_once(v, b' ')?;
    if date.len() != 6 {
        return None;
    }
    let y = 2000 + digits(&date[..2])?;
    let (m, d) = (digits(&date[2..4])?, digits(&date[4..6])?);
    // The hour is padded with a space (`%2d`), hence one or two spaces.
    let (secs, nanos) = clock_secs(clock.strip_prefix(' ').unwrap_or(clock), true)?;
    Some((civil_day(y, m, d)? * 86_400 + secs) * 1_000_000_000 + nanos)
}

/// A run of ASCII digits (at most 18, which cannot overflow). Folded by
/// hand: every entry's time has seven of these and most of its fields
/// one, and `str::parse` (its generic radix loop) was 1.5% of the
/// slow-log source's CPU for the times alone.
pub fn digits(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.is_empty() || b.len() > 18 {
        return None;
    }
    b.iter().try_fold(0i64, |n, &c| {
        c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
    })
}

fn two_digits(s: &str) -> Option<i64> {
    (s.len() == 2).then_some(())?;
    digits(s)
}

fn civil_day(y: i64, m: i64, d: i64) -> Option<i64> {
    ((1..=12).contains(&m) && (1..=31).contains(&d)).then(|| days_from_civil(y, m as u32, d as u32))
}

/// `HH:MM:SS[.ffffff]` (`H:MM:SS` when `short_hour`) -> (seconds of day,
/// nanoseconds). The servers' `HH:MM:SS` is read by place, its digits by
/// byte; anything else by splitting (`clock_secs_split`): splitting every
/// entry's time at its colons was a fiftieth of the slow-log path's
/// instructions.
fn clock_secs(clock: &str, short_hour: bool) -> Option<(i64, i64)> {
    let b = clock.as_bytes();
    let digit = |i: usize| b[i].is_ascii_digit().then(|| i64::from(b[i] - b'0'));
    let by_place = || {
        if b.len() < 8 || b[2] != b':' || b[5] != b':' || (b.len() > 8 && b[8] != b'.') {
            return None;
        }
        Some((
            digit(0)? * 10 + digit(1)?,
            digit(3)? * 10 + digit(4)?,
            digit(6)? * 10 + digit(7)?,
        ))
    };
    let Some((h, m, s)) = by_place() else {
        return clock_secs_split(clock, short_hour);
    };
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let nanos = match clock.get(9..) {
        None => 0,
        Some(f) if f.is_empty() || f.len() > 9 => return None,
        Some(f) => digits(f)? * 10_i64.pow(9 - f.len() as u32),
    };
    Some((h * 3600 + m * 60 + s, nanos))
}

/// `clock_secs` by splitting at `.` and `:`.
fn clock_secs_split(clock: &str, short_hour: bool) -> Option<(i64, i64)> {
    let (hms, frac) = match split_once(clock, b'.') {
        Some((hms, frac)) => (hms, Some(frac)),
        None => (clock, None),
    };
    let mut it = split(hms, b':');
    let (h, m, s) = (it.next()?, it.next()?, it.next()?);
    if it.next().is_some() || !(h.len() == 2 || (short_hour && h.len() == 1)) {
        return None;
    }
    let (h, m, s) = (digits(h)?, two_digits(m)?, two_digits(s)?);
    if h > 23 || m > 59 || s > 60 {
        return None;
    }
    let nanos = match frac {
        None => 0,
        Some(f) if f.is_empty() || f.len() > 9 => return None,
        Some(f) => digits(f)? * 10_i64.pow(9 - f.len() as u32),
    };
    Some((h * 3600 + m * 60 + s, nanos))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every string of `n` of `pieces`, each piece anywhere.
    fn joined(pieces: &[&str], n: usize) -> Vec<String> {
        let mut cases = vec![String::new()];
        for _ in 0..n {
            let mut next = Vec::new();
            for c in &cases {
                for p in pieces {
                    next.push(format!("{c}{p}"));
                }
            }
            cases = next;
        }
        cases
    }

    #[test]
    fn trims_are_str_trims() {
        let pieces = [
            "", " ", "\t", "\r", "\n", "\x0b", "\x0c", "\x1f", "\x7f", "a", "~", "!", "é",
            "\u{85}", "\u{a0}", "\u{3000}", "\u{2028}", "😀",
        ];
        let cases = joined(&pieces, 3);
        for s in &cases {
            assert_eq!(trim(s), s.trim(), "{s:?}");
            assert_eq!(trim_start(s), s.trim_start(), "{s:?}");
            assert_eq!(trim_end(s), s.trim_end(), "{s:?}");
            assert_eq!(is_blank(s), s.trim().is_empty(), "{s:?}");
        }
    }

    #[test]
    fn digits_agree_with_str_parse() {
        for s in [
            "",
            "0",
            "07",
            "2024",
            "999999999",
            "123456789012345678",
            "1234567890123456789",
            "1a",
            " 1",
            "+1",
            "-1",
            "١",
        ] {
            let parsed = (!s.is_empty() && s.len() <= 18 && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse::<i64>().unwrap());
            assert_eq!(digits(s), parsed, "{s:?}");
        }
    }

    #[test]
    fn byte_searches_agree_with_str_methods() {
        let long = "a".repeat(31) + ",é," + &"b".repeat(40);
        for s in [
            "",
            ",",
            "a,b",
            "a,,b,",
            "é,ü,",
            "no separator",
            &long,
            &long[..32],
            &"c".repeat(70),
        ] {
            assert_eq!(
                split(s, b',').collect::<Vec<_>>(),
                s.split(',').collect::<Vec<_>>()
            );
            assert_eq!(split_once(s, b','), s.split_once(','));
            assert_eq!(find(s, b','), s.find(','));
        }
    }

    #[test]
    fn times_of_every_server() {
        assert_eq!(
            parse_time("240515 17:02:39"),
            Some(1_715_792_559_000_000_000)
        );
        assert_eq!(
            parse_time("090127  1:23:34"),
            parse_time("2009-01-27T01:23:34Z"),
            "MySQL 5.x pads the hour with a space"
        );
        assert_eq!(
            parse_time("2024-05-15T19:02:40.000001+02:00"),
            parse_time("2024-05-15T17:02:40.000001Z")
        );
        assert_eq!(
            parse_time("2024-05-15T17:02:40.5Z").map(|t| t % 1_000_000_000),
            Some(500_000_000)
        );
        for bad in [
            "2020",
            "yesterday",
            "2020-01-01T00:00:00Z and more",
            "2020-13-01T00:00:00Z",
            "2020-01-01T24:00:00Z",
            "240515 17:02",
            "240515 17:02:39 x",
            "2405151 7:02:39",
            "2024-05-15T17:02:40.Z",
        ] {
            assert_eq!(parse_time(bad), None, "{bad:?} is not a time");
        }
    }

    #[test]
    fn user_host_grammar() {
        assert_eq!(
            user_host(" app[app] @ web1 [10.0.0.5]  Id:    42"),
            Some(UserHost {
                user: "app",
                host: "web1",
                ip: "10.0.0.5",
                id: Some("42")
            })
        );
        assert_eq!(
            user_host(" [SQL_SLAVE] @  []"),
            Some(UserHost {
                user: "SQL_SLAVE",
                host: "",
                ip: "",
                id: None
            })
        );
        assert_eq!(
            user_host(" skip-grants user[] @  []  Id:    28").map(|u| u.user),
            Some("skip-grants user")
        );
        for bad in [
            " root",
            " root[root] @ localhost",
            " root[root] @ localhost [] hello",
            " root[root] @ localhost []  Id: x",
        ] {
            assert_eq!(user_host(bad), None, "{bad:?}");
        }
        let loose = user_host_lenient(" meow @ somewhere [1.2.3.4] trailing");
        assert_eq!(
            (loose.user, loose.host, loose.ip),
            ("meow", "somewhere", "1.2.3.4")
        );
    }

    #[test]
    fn header_lines_begin_with_a_key() {
        for header in [
            "# Time: 2024-05-15T17:02:39.123456Z",
            "# Time: margdl 11:48:27 # User@Host: [SQL_SLAVE] @  []",
            "# User@Host: foo[foo] @ [host]",
            "# User: user[user] @ [1.2.3.4]",
            "#   InnoDB_IO_r_ops: 0  InnoDB_IO_r_bytes: 0",
            "# Thread_id: 47  Schema: ",
        ] {
            assert!(is_header_line(header), "{header:?}");
        }
        for text in [
            "# fetch the users",
            "#",
            "# No InnoDB statistics available for this query",
            "# administrator command: Quit;",
            "#: x",
            "SELECT 1;",
        ] {
            assert!(!is_header_line(text), "{text:?}");
        }
    }

    #[test]
    fn banners_of_every_server() {
        use BannerLine::*;
        for (line, kind) in [
            ("/usr/sbin/mysqld, Version: 8.0.36 (MySQL Community Server - GPL). started with:", Started),
            ("/usr/sbin/mariadbd, Version: 10.11.6-MariaDB-0+deb12u1-log (Debian 12). started with:", Started),
            ("D:\\MySQL\\MySQL Server 5.1\\bin\\mysqld, Version: 5.1.30-community-log (MySQL Community Server (GPL)). started with:", Started),
            ("./mysqld, Version: 5.7.44 (Source distribution). embedded library", Embedded),
            ("Tcp port: 3306  Unix socket: /var/run/mysqld/mysqld.sock", Port),
            ("TCP Port: 3306, Named Pipe: (null)", Port),
            ("Time                 Id Command    Argument", Columns),
            ("Time\t\t    Id Command\tArgument", Columns),
        ] {
            assert_eq!(banner_line(line), Some(kind), "{line:?}");
        }
        for text in [
            "Time is money",
            "Time Id Command Argument;",
            "TCP port: none",
            "Version: 1 started with:",
        ] {
            assert_eq!(banner_line(text), None, "{text:?}");
        }
        let mut order = vec![Started];
        while let Some(next) = order.last().unwrap().next() {
            order.push(next);
        }
        assert_eq!(order, [Started, Port, Columns]);
        assert_eq!(Embedded.next(), Some(Columns));
    }

    #[test]
    fn context_lines() {
        assert_eq!(use_statement("use `shop`;"), Some("shop"));
        assert_eq!(use_statement("use shop"), None);
        assert_eq!(
            set_line("SET last_insert_id=5,insert_id=6,timestamp=1715792559;"),
            Some(SetLine {
                timestamp: Some(1_715_792_559),
                insert_id: Some(6),
                last_insert_id: Some(5)
            })
        );
        assert_eq!(set_line("SET NAMES utf8;"), None);
        assert_eq!(set_line("SET timestamp=now();"), None);
        for line in [
            "SET timestamp=1715792559;",
            "SET timestamp=0;",
            "SET timestamp=;",
            "SET timestamp= 17;",
            "SET timestamp=+17;",
            "SET timestamp=-17;",
            "SET timestamp=17",
            "SET timestamp=17;;",
            "SET timestamp=9223372036854775807;",
            "SET timestamp=9223372036854775808;",
            "SET timestamp=1715792559,insert_id=6;",
            "SET  timestamp=17;",
            "SET timestamp=1é;",
        ] {
            assert_eq!(set_line(line), set_line_list(line), "{line:?}");
        }
    }

    #[test]
    fn clocks_read_by_place_as_by_splitting() {
        let mut cases = Vec::new();
        for hms in [
            "00:00:00",
            "23:59:60",
            "24:00:00",
            "12:60:00",
            "12:00:61",
            "1:02:03",
            "01:2:03",
            "01:02:3",
            "0a:00:00",
            "00:0a:00",
            "00:00:0a",
            "00-00:00",
            "00:00-00",
            "00:00:00:00",
            "é0:00:00",
            "00:00:0é",
            "",
            "0",
            "00:00",
        ] {
            cases.push(hms.to_string());
            for frac in [
                "",
                "0",
                "000001",
                "123456789",
                "1234567890",
                "12a",
                "é",
                ".5",
                " ",
            ] {
                cases.push(format!("{hms}.{frac}"));
            }
            cases.push(format!("{hms}x"));
            cases.push(format!("{hms} "));
        }
        for c in &cases {
            for short_hour in [false, true] {
                assert_eq!(
                    clock_secs(c, short_hour),
                    clock_secs_split(c, short_hour),
                    "{c:?} {short_hour}"
                );
            }
        }
    }

    #[test]
    fn pairs_with_empty_values_and_strays() {
        let got: Vec<_> = pairs("Thread_id: 8  Schema:   QC_hit: No").collect();
        assert_eq!(got, [("Thread_id", "8"), ("Schema", ""), ("QC_hit", "No")]);
        let mut p = pairs("Rows_sent: 7  Rows_examined:40 ");
        assert_eq!(p.by_ref().collect::<Vec<_>>(), [("Rows_sent", "7")]);
        assert!(p.stray);
    }

    /// What `pairs` was, on `split_ascii_whitespace`: the pairs and
    /// whether a stray token was seen.
    fn pairs_by_split(s: &str) -> (Vec<(&str, &str)>, bool) {
        let mut tokens = s.split_ascii_whitespace().peekable();
        let (mut out, mut stray) = (Vec::new(), false);
        while let Some(token) = tokens.next() {
            let Some(key) = as_key(token) else {
                stray = true;
                continue;
            };
            let value = match tokens.peek() {
                Some(next) if as_key(next).is_none() => tokens.next().unwrap_or(""),
                _ => "",
            };
            out.push((key, value));
        }
        (out, stray)
    }

    #[test]
    fn pairs_split_as_split_ascii_whitespace_splits() {
        let pieces = [
            "Query_time:",
            "User@Host:",
            "0.5",
            "Schema:",
            "x:",
            ":",
            "1a:",
            "é:",
            "a_b9:",
            "v",
            "é",
            " ",
            "  ",
            "\t",
            "\r",
            "\n",
            "\x0c",
            "\x0b",
            "\u{a0}",
        ];
        let cases = joined(&pieces, 4);
        for s in &cases {
            let mut p = pairs(s);
            let got: Vec<_> = p.by_ref().collect();
            assert_eq!((got, p.stray), pairs_by_split(s), "{s:?}");
            let first = s.split_ascii_whitespace().next().unwrap_or("");
            assert_eq!(
                is_header_line(&format!("#{s}")),
                first == "User@Host:" || as_key(first).is_some(),
                "{s:?}"
            );
        }
    }
}
