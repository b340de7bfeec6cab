//! The `http` input against Fluentd's in_http: the same requests (a JSON
//! record with `?time=`, a JSON array with a `time` field, ndjson, msgpack,
//! a form's `json=`, a gzip body, X-Forwarded-For, headers) sent to the real
//! Fluentd 1.15.3 and to my-agent, each configured from one td-agent config
//! (my-agent's converted by `my-agent convert`), give the same records and
//! the same status codes. Then what Fluentd does not check: a body over the
//! limit, a gzip bomb, a body that is not records, and a 200 that comes only
//! once the records are in the file buffer.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

const CONF: &str = r#"<source>
  @type http
  bind 127.0.0.1
  port {port}
  add_http_headers true
  add_remote_addr true
</source>

<filter app.**>
  @type record_transformer
  enable_ruby true
  <record>
    event_time ${time.to_i}
    tag ${tag}
  </record>
</filter>

<match app.**>
  @type http
  endpoint {url}
  <format>
    @type json
  </format>
  <buffer>
    @type file
    path {dir}/buffer
    flush_interval 1s
  </buffer>
</match>
"#;

/// One request on its own connection: the status code.
fn send(port: u16, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    request(port, "POST", path, headers, body)
}

fn request(port: u16, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> u16 {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nUser-Agent: convert-test\r\nContent-Length: {}\r\nConnection: close\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    s.write_all(req.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut answer = String::new();
    let _ = s.read_to_string(&mut answer);
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status in {answer:?}"))
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// The requests, and the status each must get.
fn requests(port: u16) -> Vec<u16> {
    let json = [("Content-Type", "application/json")];
    vec![
        send(
            port,
            "/app.access?time=1700000000.5",
            &json,
            br#"{"a":1,"b":"x","nested":{"k":[1,2]}}"#,
        ),
        send(
            port,
            "/app/batch",
            &json,
            br#"[{"n":1,"time":1700000001},{"n":2,"time":1700000002.25}]"#,
        ),
        send(
            port,
            "/app.nd?time=1700000003",
            &[("Content-Type", "application/x-ndjson")],
            b"{\"l\":1}\n{\"l\":2}\n",
        ),
        // {"m": true, "s": "\xc3\xa9"} as msgpack.
        send(
            port,
            "/app.mp?time=1700000004",
            &[("Content-Type", "application/msgpack")],
            b"\x82\xa1m\xc3\xa1s\xa2\xc3\xa9",
        ),
        send(
            port,
            "/app.form",
            &[("Content-Type", "application/x-www-form-urlencoded")],
            b"json=%7B%22f%22%3A%22v+w%22%7D&time=1700000005",
        ),
        send(
            port,
            "/app.gz?time=1700000006",
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip"),
            ],
            &gzip(br#"{"zipped":true}"#),
        ),
        send(
            port,
            "/app.xff?time=1700000007",
            &[
                ("Content-Type", "application/json"),
                ("X-Forwarded-For", "10.1.2.3, 10.0.0.1"),
            ],
            br#"{"via":"proxy"}"#,
        ),
        send(port, "/app.bad", &json, b"not json"),
        // A health check: 200, and no record.
        request(port, "GET", "/app.health?json=%7B%22g%22%3A1%7D", &[], b""),
        send(
            port,
            "/app.zlib?time=1700000008",
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "deflate"),
            ],
            &{
                let mut e =
                    flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
                e.write_all(br#"{"deflated":true,"time":null}"#).unwrap();
                e.finish().unwrap()
            },
        ),
    ]
}

#[test]
fn fluentd_and_my_agent_take_the_same_requests_to_the_same_records() {
    let tmp = tempfile::tempdir().unwrap();
    let fill = |dir: &Path, port: u16, url: &str| {
        std::fs::create_dir_all(dir).unwrap();
        CONF.replace("{port}", &port.to_string())
            .replace("{url}", url)
            .replace("{dir}", &dir.display().to_string())
    };

    let fluentd_sink = Sink::start();
    let fluentd_port = free_port();
    let fdir = tmp.path().join("fluentd");
    let mut fluentd = Peer::fluentd(&fdir, &fill(&fdir, fluentd_port, &fluentd_sink.url));
    let fluentd_codes = requests(fluentd_port);

    let agent_sink = Sink::start();
    let agent_port = free_port();
    let adir = tmp.path().join("my-agent");
    let conf = adir.join("td-agent.conf");
    let text = fill(&adir, agent_port, &agent_sink.url);
    std::fs::write(&conf, text).unwrap();
    let out = Command::new(agent_binary())
        .arg("convert")
        .arg(&conf)
        .args(["--state-dir"])
        .arg(adir.join("state"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let yml = String::from_utf8(out.stdout).unwrap();
    std::fs::create_dir_all(adir.join("state")).unwrap();
    let agent = Agent::start(&adir, &yml);
    wait_until("the http input listens", || {
        TcpStream::connect(("127.0.0.1", agent_port)).is_ok()
    });
    let agent_codes = requests(agent_port);

    // One difference, on purpose: Fluentd answers 200 to a body that is
    // not JSON and drops it (a debug line only); my-agent says 400, so the
    // client knows its record went nowhere.
    assert_eq!(
        fluentd_codes,
        [200, 200, 200, 200, 200, 200, 200, 200, 200, 200]
    );
    assert_eq!(
        agent_codes,
        [200, 200, 200, 200, 200, 200, 200, 400, 200, 200]
    );
    let expected = 10;
    fluentd_sink.wait_for(Duration::from_secs(30), "Fluentd", |r| r.len() >= expected);
    agent_sink.wait_for(Duration::from_secs(30), "my-agent", |r| r.len() >= expected);
    std::thread::sleep(Duration::from_millis(1500));
    fluentd.stop();
    assert!(agent.stop().success());

    let from_fluentd = fluentd_sink.state.records.lock().unwrap().clone();
    let from_agent = agent_sink.state.records.lock().unwrap().clone();
    assert_eq!(from_fluentd.len(), expected, "{from_fluentd:?}");
    assert_eq!(from_agent.len(), expected, "{from_agent:?}");
    eprintln!(
        "first pair:\n  Fluentd:  {}\n  my-agent: {}",
        from_fluentd[0], from_agent[0]
    );
    // Field by field: the record's own, HTTP_* headers, REMOTE_ADDR, and the
    // time and tag record_transformer added.
    for (f, a) in from_fluentd.iter().zip(&from_agent) {
        assert_eq!(f, a, "\nFluentd:  {f}\nmy-agent: {a}");
    }
    // The times: from ?time=, from the record's `time` (taken out of it).
    let times: Vec<i64> = from_agent
        .iter()
        .map(|r| r["event_time"].as_i64().unwrap())
        .collect();
    assert_eq!(
        times,
        [
            1700000000, 1700000001, 1700000002, 1700000003, 1700000003, 1700000004, 1700000005,
            1700000006, 1700000007, 1700000008
        ]
    );
    assert_eq!(from_agent[8]["REMOTE_ADDR"], "10.1.2.3");
    assert_eq!(from_agent[0]["HTTP_USER_AGENT"], "convert-test");
}

#[test]
fn hostile_bodies_are_refused_and_a_200_means_buffered() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let sink = Sink::start();
    sink.set_down(true);
    let port = free_port();
    let config = format!(
        "sources:\n  - type: http\n    bind: 127.0.0.1:{port}\n    body_size_limit: 64k\noutputs:\n  - match: \"**\"\n    type: http\n    endpoint: {}\n    buffer:\n      type: file\n      path: {}/buffer\n      flush_interval: 100ms\n",
        sink.url,
        dir.display()
    );
    let agent = Agent::start(dir, &config);
    wait_until("the http input listens", || {
        TcpStream::connect(("127.0.0.1", port)).is_ok()
    });
    let json = [("Content-Type", "application/json")];
    // Over the limit, as sent and once inflated (a gzip bomb).
    let big = format!("{{\"x\":\"{}\"}}", "a".repeat(100 << 10));
    assert_eq!(send(port, "/t", &json, big.as_bytes()), 413);
    let bomb = gzip(&vec![b' '; 64 << 20]);
    assert!(bomb.len() < 64 << 10);
    assert_eq!(
        send(
            port,
            "/t",
            &[
                ("Content-Type", "application/json"),
                ("Content-Encoding", "gzip")
            ],
            &bomb
        ),
        400
    );
    for bad in [&b"[1,2]"[..], b"\"text\"", b"{\"time\":\"noon\"}", b"{"] {
        assert_eq!(
            send(port, "/t", &json, bad),
            400,
            "{}",
            String::from_utf8_lossy(bad)
        );
    }
    assert_eq!(send(port, "/", &json, b"{}"), 400, "no tag");
    // Accepted while the collector is down: held in the file buffer, and
    // delivered once it is back, across a SIGKILL of the agent.
    for n in 0..20 {
        assert_eq!(
            send(port, "/t", &json, format!("{{\"n\":{n}}}").as_bytes()),
            200
        );
    }
    agent.kill9();
    sink.set_down(false);
    let agent = Agent::start(dir, &config);
    sink.wait_for(Duration::from_secs(30), "the 20 records", |r| r.len() >= 20);
    let log = agent.log_text();
    assert!(agent.stop().success(), "{log}");
    let mut got: Vec<i64> = sink
        .state
        .records
        .lock()
        .unwrap()
        .iter()
        .map(|r| r["n"].as_i64().unwrap())
        .collect();
    got.sort();
    got.dedup();
    assert_eq!(got, (0..20).collect::<Vec<_>>());
}
