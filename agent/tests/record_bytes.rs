//! Records keep their field order, types and values byte for byte through
//! the filters and every JSON output, compared with what the previous
//! version of the agent wrote for the same input.
//!
//! Four phases, one source each, so that the outputs see them in a known
//! order: a tailed error log (escapes, control characters, non-BMP and
//! U+2028 characters, invalid UTF-8, CRLF), a slow log from
//! percona-toolkit's samples (../shared/slowlogs), records posted to the
//! `http` input as JSON (integers at both ends of their range, floats,
//! `-0.0`, nesting, a repeated key), and a forward message built here in
//! msgpack (EventTime, `bin`, a `str` that is not UTF-8, f32, an ext type,
//! a repeated key). Each passes `record_transformer` (added fields,
//! a typed copy, an overwritten field that keeps its place, a removed one)
//! and `grep`, then `copy` to http ndjson, http `json_array`, `file` and
//! `stdout`. The four outputs must agree with each other, and each with
//! `tests/fixtures/record_bytes/<phase>.ndjson`, which the agent of
//! 70b2302 wrote (serde_json maps per record) before records became a
//! list of fields. `MY_AGENT_BLESS=1` writes the fixtures instead.

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

fn fixture(phase: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/record_bytes")
        .join(format!("{phase}.ndjson"))
}

fn slow_sample() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/slowlogs/percona-toolkit/slow002.txt")
}

/// Every record an output wrote so far, each as its JSON bytes.
fn ndjson_lines(bytes: &[u8]) -> Vec<Vec<u8>> {
    bytes
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(<[u8]>::to_vec)
        .collect()
}

fn sink_ndjson(sink: &Sink) -> Vec<Vec<u8>> {
    ndjson_lines(&sink.state.bodies.lock().unwrap().concat())
}

/// A `json_array` body's elements, as the bytes the agent wrote for each.
fn sink_arrays(sink: &Sink) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for body in sink.state.bodies.lock().unwrap().iter() {
        let items: Vec<&serde_json::value::RawValue> =
            serde_json::from_slice(body).expect("a json_array body is a JSON array");
        out.extend(items.iter().map(|r| r.get().as_bytes().to_vec()));
    }
    out
}

fn file_lines(path: &Path) -> Vec<Vec<u8>> {
    ndjson_lines(&std::fs::read(path).unwrap_or_default())
}

struct Outputs<'a> {
    ndjson: &'a Sink,
    array: &'a Sink,
    file: PathBuf,
    stdout: PathBuf,
}

impl Outputs<'_> {
    fn all(&self) -> [(&'static str, Vec<Vec<u8>>); 4] {
        [
            ("http ndjson", sink_ndjson(self.ndjson)),
            ("http json_array", sink_arrays(self.array)),
            ("file", file_lines(&self.file)),
            ("stdout", file_lines(&self.stdout)),
        ]
    }

    /// Waits until every output has `done + want` records (or, blessing,
    /// until they agree and nothing new came for 2 s), then checks that
    /// the phase's records are the same bytes in all four, and returns
    /// them.
    fn phase(&self, done: usize, want: Option<usize>) -> Vec<Vec<u8>> {
        let t0 = Instant::now();
        let mut last = (0, Instant::now());
        loop {
            let all = self.all();
            let counts: Vec<usize> = all.iter().map(|(_, l)| l.len()).collect();
            let total: usize = counts.iter().sum();
            if total != last.0 {
                last = (total, Instant::now());
            }
            let ready = match want {
                Some(n) => counts.iter().all(|&c| c >= done + n),
                None => {
                    counts.iter().all(|&c| c == counts[0] && c > done)
                        && last.1.elapsed() > Duration::from_secs(2)
                }
            };
            if ready {
                let n = want.unwrap_or(counts[0] - done);
                let first = all[0].1[done..done + n].to_vec();
                for (name, lines) in &all[1..] {
                    for (i, (a, b)) in first.iter().zip(&lines[done..done + n]).enumerate() {
                        assert_eq!(
                            String::from_utf8_lossy(b),
                            String::from_utf8_lossy(a),
                            "record {i}: {name} differs from http ndjson"
                        );
                    }
                }
                return first;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "outputs have {counts:?} records after 60 s, expected {done} + {want:?}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

fn post(port: u16, path: &str, body: &[u8]) {
    use std::io::Read;
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    write!(
        s,
        "POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}

/// A Forward-mode message: `[tag, [[EventTime, record], ...]]`, with no
/// chunk id (no ack): the test waits for the outputs instead.
fn forward_message() -> Vec<u8> {
    use rmp::encode::*;
    let mut m = Vec::new();
    let time = |m: &mut Vec<u8>, secs: u32, nanos: u32| {
        let mut d = secs.to_be_bytes().to_vec();
        d.extend(nanos.to_be_bytes());
        write_ext_meta(m, 8, 0).unwrap();
        m.extend(d);
    };
    write_array_len(&mut m, 2).unwrap();
    write_str(&mut m, "fwd.events").unwrap();
    write_array_len(&mut m, 4).unwrap();

    write_array_len(&mut m, 2).unwrap();
    time(&mut m, 1_764_633_600, 123_456_789);
    write_map_len(&mut m, 13).unwrap();
    write_str(&mut m, "message").unwrap();
    write_str(&mut m, "from forward").unwrap();
    write_str(&mut m, "n").unwrap();
    write_sint(&mut m, 7).unwrap();
    write_str(&mut m, "i64min").unwrap();
    write_i64(&mut m, i64::MIN).unwrap();
    write_str(&mut m, "u64max").unwrap();
    write_u64(&mut m, u64::MAX).unwrap();
    write_str(&mut m, "f64").unwrap();
    write_f64(&mut m, 0.1).unwrap();
    write_str(&mut m, "f32").unwrap();
    write_f32(&mut m, 1.5).unwrap();
    write_str(&mut m, "bool").unwrap();
    write_bool(&mut m, false).unwrap();
    write_str(&mut m, "nil").unwrap();
    write_nil(&mut m).unwrap();
    write_str(&mut m, "bin").unwrap();
    write_bin(&mut m, b"raw \x00 bytes").unwrap();
    // A str field that is not UTF-8, as fluent-bit may send.
    write_str(&mut m, "not_utf8").unwrap();
    write_str_len(&mut m, 6).unwrap();
    m.extend(b"bad\xff\xfeX");
    write_str(&mut m, "nested").unwrap();
    write_map_len(&mut m, 2).unwrap();
    write_str(&mut m, "z").unwrap();
    write_array_len(&mut m, 3).unwrap();
    write_sint(&mut m, 1).unwrap();
    write_str(&mut m, "two").unwrap();
    write_map_len(&mut m, 0).unwrap();
    write_str(&mut m, "a").unwrap();
    write_nil(&mut m).unwrap();
    write_str(&mut m, "ext").unwrap();
    write_ext_meta(&mut m, 5, 3).unwrap();
    m.extend(b"\x01\x02\x03\x04\x05");
    // A repeated key: its first place, its last value.
    write_str(&mut m, "n").unwrap();
    write_sint(&mut m, 8).unwrap();

    write_array_len(&mut m, 2).unwrap();
    time(&mut m, 1_764_633_601, 0);
    write_map_len(&mut m, 1).unwrap();
    write_str(&mut m, "message").unwrap();
    write_str(&mut m, "EXCLUDED by grep").unwrap();

    write_array_len(&mut m, 2).unwrap();
    write_uint(&mut m, 1_764_633_602).unwrap();
    write_map_len(&mut m, 3).unwrap();
    write_str(&mut m, "drop").unwrap();
    write_sint(&mut m, 1).unwrap();
    write_str(&mut m, "n").unwrap();
    write_str(&mut m, "a string n").unwrap();
    write_str(&mut m, "message").unwrap();
    write_str(&mut m, "the field `drop` is removed").unwrap();

    write_array_len(&mut m, 2).unwrap();
    write_uint(&mut m, 1_764_633_603).unwrap();
    write_map_len(&mut m, 0).unwrap();
    m
}

const HTTP_BODY: &str = r#"[
 {"message": "from http", "n": 2, "one": 1.0, "big": 1e300, "neg_zero": -0.0,
  "small": 2.5e-8, "i64min": -9223372036854775808, "u64max": 18446744073709551615,
  "esc": "tab\t nl\n quote\" bs\\ ctl\u0001 \u00e9 \ud83d\ude00 \u2028 /",
  "nested": {"z": {"y": []}, "a": {}}, "dup": 1, "list": [true, null, "x", 3.25],
  "dup": 2},
 {"message": "EXCLUDED too"},
 {"n": {"kept": "as an object"}, "drop": "x"}
]"#;

#[test]
fn records_keep_their_bytes_through_filters_and_every_output() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    std::fs::create_dir_all(d.join("logs")).unwrap();
    std::fs::create_dir_all(d.join("slow")).unwrap();
    let (ndjson, array) = (Sink::start(), Sink::start());
    let (http_port, forward_port) = (free_port(), free_port());
    let outputs = Outputs {
        ndjson: &ndjson,
        array: &array,
        file: d.join("out/records.json"),
        stdout: d.join("stdout.json"),
    };
    let config = format!(
        r#"sources:
  - type: tail
    path: {d}/logs/*.log
    pos_file: {d}/tail.pos
    tag: app.lines
    read_from_head: true
    poll_interval: 50ms
    refresh_interval: 100ms
  - type: mysql_slow_query
    path: {d}/slow/*.log
    pos_file: {d}/slow.pos
    tag: mysql.slow
    read_from_head: true
    poll_interval: 50ms
    refresh_interval: 100ms
    entry_timeout: 300ms
  - type: http
    bind: 127.0.0.1:{http_port}
  - type: forward
    bind: 127.0.0.1:{forward_port}
filters:
  - match: "**"
    type: record_transformer
    record:
      tag: "${{tag}}"
      first_part: "${{tag_parts[0]}}"
      constant: "é \" \\ text"
      copy_of_n: '${{record["n"]}}'
      n_in_text: 'n=${{record["n"]}}'
      message: '[${{record["message"]}}]'
    remove_keys: [drop]
  - match: "**"
    type: grep
    exclude:
      - {{key: message, pattern: '^\[EXCLUDED'}}
outputs:
  - match: "**"
    type: copy
    outputs:
      - type: http
        endpoint: {ndjson_url}
        buffer: {{type: file, path: {d}/buffer0, flush_interval: 100ms}}
      - type: http
        endpoint: {array_url}
        format: json_array
        buffer: {{type: file, path: {d}/buffer1, flush_interval: 100ms}}
      - type: file
        path: {file}
        buffer: {{type: file, path: {d}/buffer2, flush_interval: 100ms}}
      - type: stdout
        buffer: {{type: file, path: {d}/buffer3, flush_interval: 100ms}}
"#,
        d = d.display(),
        ndjson_url = ndjson.url,
        array_url = array.url,
        file = outputs.file.display(),
    );
    let mut agent = Agent::start_with_stdout(d, &config, &outputs.stdout);
    let t0 = Instant::now();
    while TcpStream::connect(("127.0.0.1", http_port)).is_err()
        || TcpStream::connect(("127.0.0.1", forward_port)).is_err()
    {
        if let Ok(Some(status)) = agent.child.try_wait() {
            panic!("the agent exited ({status}): {}", agent.log_text());
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "the inputs are not listening after 30 s: {}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    let bless = std::env::var_os("MY_AGENT_BLESS").is_some();
    let mut done = 0;
    let mut check = |phase: &str, start: &dyn Fn()| {
        let want = if bless {
            None
        } else {
            let expected = std::fs::read(fixture(phase)).expect("the fixture");
            Some(ndjson_lines(&expected).len())
        };
        start();
        let got = outputs.phase(done, want);
        done += got.len();
        let mut text = got.join(&b'\n');
        text.push(b'\n');
        if bless {
            std::fs::create_dir_all(fixture(phase).parent().unwrap()).unwrap();
            std::fs::write(fixture(phase), &text).unwrap();
            return;
        }
        let expected = std::fs::read(fixture(phase)).unwrap();
        for (i, (a, b)) in ndjson_lines(&expected).iter().zip(&got).enumerate() {
            assert_eq!(
                String::from_utf8_lossy(b),
                String::from_utf8_lossy(a),
                "{phase}: record {i} differs from the previous version's"
            );
        }
        assert_eq!(text, expected, "{phase}: the bytes differ");
    };

    check("tail", &|| {
        let mut lines: Vec<u8> = Vec::new();
        for l in [
            &b"plain line"[..],
            b"quotes \" and \\ backslash\ttab",
            b"control \x01\x1f\x7f bytes",
            "unicode \u{e9} \u{1F600} \u{2028} \u{FEFF}".as_bytes(),
            b"invalid \xff\xfe utf-8 \xe2\x82",
            b"crlf line\r",
            b"EXCLUDED line",
            br#"{"looks": "like json", "n": 1}"#,
            b"",
            b"   leading and trailing spaces   ",
        ] {
            lines.extend_from_slice(l);
            lines.push(b'\n');
        }
        std::fs::write(d.join("logs/app.log"), lines).unwrap();
    });
    check("slow", &|| {
        std::fs::copy(slow_sample(), d.join("slow/db-slow.log"))
            .expect("../shared/slowlogs beside the clone");
    });
    check("http", &|| {
        post(http_port, "/web.requests", HTTP_BODY.as_bytes())
    });
    check("forward", &|| {
        let mut s = TcpStream::connect(("127.0.0.1", forward_port)).unwrap();
        s.write_all(&forward_message()).unwrap();
    });

    // Nothing more than the phases' records.
    std::thread::sleep(Duration::from_millis(500));
    for (name, lines) in outputs.all() {
        assert_eq!(lines.len(), done, "{name}: records beyond the phases'");
    }
    agent.stop();
}
