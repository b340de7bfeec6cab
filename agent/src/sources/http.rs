//! `type: http`: Fluentd's in_http, for applications that post to a
//! td-agent. `POST /<tag>` (`/a/b` is tag `a.b`) with a JSON body (a record
//! or an array of them), ndjson, msgpack, or a form's `json=`, `ndjson=` or
//! `msgpack=`; the time from the `time` query parameter (Unix seconds, 0 is
//! now), else the record's `time` field (taken out of it), else now;
//! `add_http_headers` (`HTTP_<NAME>` fields) and `add_remote_addr`
//! (`REMOTE_ADDR`, the first X-Forwarded-For when there is one); a gzip
//! `Content-Encoding` inflated within `body_size_limit`. 200 only
//! once the records are durable in every buffer; 400 for a body that is not
//! records, 413 over `body_size_limit`, 503 while a buffer is full; GET is
//! answered 200 and takes nothing (health checks), as in_http does. At most
//! `max_requests_in_flight` bodies are read at once.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use axum::body::Bytes;
use axum::extract::{ConnectInfo, DefaultBodyLimit, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use serde_json::{Map, Value};

use super::{Built, Downstream, SourceSettings};
use crate::buffer::BufferError;
use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::event::{now_nanos, Event};
use crate::forward::msgpack;
use crate::log;
use crate::metrics::PluginMetrics;
use crate::status::SourceStatus;

#[derive(Debug, Clone)]
pub struct HttpInputConfig {
    pub bind: SocketAddr,
    pub body_size_limit: usize,
    pub add_http_headers: bool,
    pub add_remote_addr: bool,
    /// Requests read at once: what bounds memory to this many bodies.
    pub max_requests_in_flight: usize,
}

pub fn settings(f: &mut Fields) -> ConfigResult<Box<dyn SourceSettings>> {
    let bind_node = f.node().clone();
    // Loopback unless told otherwise (Fluentd listens on 0.0.0.0).
    let bind = f.string("bind")?.unwrap_or_else(|| "127.0.0.1:9880".into());
    let Ok(bind) = bind.parse::<SocketAddr>() else {
        return error(
            &bind_node,
            format!("http: bind `{bind}`: expected ADDRESS:PORT"),
        );
    };
    Ok(Box::new(HttpInputConfig {
        bind,
        body_size_limit: f.size("body_size_limit", 32 << 20)? as usize,
        add_http_headers: f.bool("add_http_headers", false)?,
        add_remote_addr: f.bool("add_remote_addr", false)?,
        max_requests_in_flight: f.uint("max_requests_in_flight", 16)?.max(1) as usize,
    }))
}

impl SourceSettings for HttpInputConfig {
    fn kind(&self) -> &'static str {
        "http"
    }

    fn max_open_files(&self) -> u64 {
        64
    }

    fn build(self: Box<Self>, id: String, metrics: Arc<PluginMetrics>) -> anyhow::Result<Built> {
        let status = Arc::new(SourceStatus::new(
            id.clone(),
            "http",
            String::new(),
            vec![format!("http://{}", self.bind)],
        ));
        // Bound now: a port in use fails the start (a reload falls back).
        let listener = std::net::TcpListener::bind(self.bind)
            .with_context(|| format!("http input {id}: cannot listen on {}", self.bind))?;
        listener.set_nonblocking(true)?;
        let config = *self;
        Ok(Built {
            status,
            run: Box::new(move |downstream, stop| {
                run(id, config, metrics, listener, downstream, stop)
            }),
        })
    }
}

struct Input {
    /// One permit per request being read and buffered.
    permits: tokio::sync::Semaphore,
    id: String,
    config: HttpInputConfig,
    metrics: Arc<PluginMetrics>,
    downstream: Arc<dyn Downstream>,
}

fn run(
    id: String,
    config: HttpInputConfig,
    metrics: Arc<PluginMetrics>,
    listener: std::net::TcpListener,
    downstream: Arc<dyn Downstream>,
    stop: Arc<AtomicBool>,
) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let input = Arc::new(Input {
        permits: tokio::sync::Semaphore::new(config.max_requests_in_flight),
        id,
        config,
        metrics,
        downstream,
    });
    rt.block_on(async move {
        let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
            return;
        };
        let app = axum::Router::new()
            .fallback(handle)
            // The handler reads the body itself, within body_size_limit and
            // only once it holds a permit.
            .layer(DefaultBodyLimit::disable())
            .with_state(input);
        let stopping = async move {
            while !stop.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        };
        let _ = axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .with_graceful_shutdown(stopping)
        .await;
    });
}

async fn handle(
    State(input): State<Arc<Input>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: axum::http::Method,
    uri: Uri,
    headers: HeaderMap,
    body: axum::body::Body,
) -> (StatusCode, String) {
    // in_http answers GET (load balancers' health checks) with 200 and
    // takes nothing from it.
    if method == axum::http::Method::GET {
        return (StatusCode::OK, String::new());
    }
    if method != axum::http::Method::POST {
        return (StatusCode::METHOD_NOT_ALLOWED, "POST /<tag>\n".into());
    }
    let Ok(_permit) = input.permits.acquire().await else {
        return (StatusCode::SERVICE_UNAVAILABLE, "stopping\n".into());
    };
    let limit = input.config.body_size_limit;
    let body: Bytes = match axum::body::to_bytes(body, limit).await {
        Ok(b) => b,
        Err(_) => {
            input.metrics.count_error("too_large");
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("413 larger than body_size_limit ({limit} bytes)\n"),
            );
        }
    };
    let events = match events_of(&input.config, peer, &uri, &headers, &body) {
        Ok(e) => e,
        Err(why) => {
            input.metrics.count_error("bad_request");
            log::warn(&format!(
                "http input {}: {peer} {}: 400: {why}",
                input.id,
                uri.path()
            ));
            return (StatusCode::BAD_REQUEST, format!("400 Bad Request\n{why}\n"));
        }
    };
    let Some((tag, events)) = events else {
        return (StatusCode::OK, String::new());
    };
    let n = events.len() as u64;
    let downstream = input.downstream.clone();
    let result = tokio::task::spawn_blocking(move || {
        downstream.emit(&tag, events)?;
        downstream.sync().map_err(BufferError::Io)
    })
    .await
    .expect("buffering does not panic");
    match result {
        Ok(()) => {
            PluginMetrics::add(&input.metrics.records_in, n);
            (StatusCode::OK, String::new())
        }
        Err(BufferError::Overflow) => {
            input.metrics.count_error("buffer_full");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                "503 buffer full: retry later\n".into(),
            )
        }
        Err(e) => {
            input.metrics.count_error("buffer_failed");
            log::warn(&format!("http input {}: cannot buffer: {e}", input.id));
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("500 Internal Server Error\n{e}\n"),
            )
        }
    }
}

/// Query or form parameters, percent-decoded (`+` is a space).
fn parse_query(text: &str) -> HashMap<String, Vec<u8>> {
    fn decode(s: &str) -> Vec<u8> {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = std::str::from_utf8(&b[i + 1..i + 3])
                        .ok()
                        .and_then(|h| u8::from_str_radix(h, 16).ok());
                    match hex {
                        Some(v) => {
                            out.push(v);
                            i += 2;
                        }
                        None => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        out
    }
    text.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (String::from_utf8_lossy(&decode(k)).into_owned(), decode(v)),
            None => (String::from_utf8_lossy(&decode(p)).into_owned(), Vec::new()),
        })
        .collect()
}

type Tagged = Option<(Arc<str>, Vec<Event>)>;

fn events_of(
    config: &HttpInputConfig,
    peer: SocketAddr,
    uri: &Uri,
    headers: &HeaderMap,
    body: &[u8],
) -> Result<Tagged, String> {
    let path = uri.path().trim_start_matches('/');
    let tag: String = path
        .split('/')
        .filter(|p| !p.is_empty())
        .collect::<Vec<_>>()
        .join(".");
    if tag.is_empty() {
        return Err("the path is the tag: POST /<tag>".into());
    }
    let inflated;
    let body = match headers
        .get("content-encoding")
        .and_then(|v| v.to_str().ok())
    {
        None | Some("identity") => body,
        Some(e) if e.eq_ignore_ascii_case("gzip") || e.eq_ignore_ascii_case("deflate") => {
            inflated = inflate(body, e.eq_ignore_ascii_case("gzip"), config.body_size_limit)?;
            &inflated[..]
        }
        Some(other) => return Err(format!("Content-Encoding {other}: expected gzip or none")),
    };
    let mut params = parse_query(uri.query().unwrap_or(""));
    let content_type = headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        params.extend(parse_query(&String::from_utf8_lossy(body)));
    } else if content_type.starts_with("application/json") {
        params.insert("json".into(), body.to_vec());
    } else if content_type.starts_with("application/msgpack") {
        params.insert("msgpack".into(), body.to_vec());
    } else if content_type.starts_with("application/x-ndjson") {
        params.insert("ndjson".into(), body.to_vec());
    } else if content_type.starts_with("multipart/") {
        return Err("multipart bodies are not supported: send JSON, ndjson or msgpack".into());
    }
    let records: Vec<Value> = if let Some(m) = params.get("msgpack") {
        let (v, _) = msgpack::decode(m, &msgpack::Limits::default())
            .map_err(|e| format!("msgpack: {e:?}"))?;
        match msgpack::to_json(&v) {
            Value::Array(items) => items,
            other => vec![other],
        }
    } else if let Some(j) = params.get("json") {
        match serde_json::from_slice::<Value>(j).map_err(|e| format!("json: {e}"))? {
            Value::Array(items) => items,
            other => vec![other],
        }
    } else if let Some(nd) = params.get("ndjson") {
        let mut out = Vec::new();
        for line in nd.split(|&b| b == b'\n') {
            let line = line.strip_suffix(b"\r").unwrap_or(line);
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            out.push(serde_json::from_slice(line).map_err(|e| format!("ndjson: {e}"))?);
        }
        out
    } else {
        return Err("'json', 'ndjson' or 'msgpack' parameter is required".into());
    };
    let param_time = match params.get("time") {
        Some(t) => {
            let text = String::from_utf8_lossy(t);
            let secs: f64 = text
                .trim()
                .parse()
                .map_err(|_| format!("time `{text}`: expected Unix seconds"))?;
            Some(if secs == 0.0 {
                now_nanos()
            } else {
                (secs * 1e9) as i64
            })
        }
        None => None,
    };
    let remote = config.add_remote_addr.then(|| {
        headers
            .get("x-forwarded-for")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(',').next())
            .map(|v| v.trim().to_string())
            .unwrap_or_else(|| peer.ip().to_string())
    });
    let mut events = Vec::with_capacity(records.len());
    for r in records {
        let Value::Object(mut record) = r else {
            return Err("expected a record (a JSON object) or an array of them".into());
        };
        let time = match param_time {
            Some(t) => t,
            None => match record.remove("time") {
                Some(Value::Number(n)) => n.as_f64().map_or(now_nanos(), |s| (s * 1e9) as i64),
                Some(Value::String(s)) => s
                    .trim()
                    .parse::<f64>()
                    .map(|s| (s * 1e9) as i64)
                    .map_err(|_| format!("time `{s}`: expected Unix seconds"))?,
                Some(Value::Null) | None => now_nanos(),
                Some(other) => return Err(format!("time {other}: expected Unix seconds")),
            },
        };
        if config.add_http_headers {
            add_headers(&mut record, headers);
        }
        if let Some(addr) = &remote {
            record.insert("REMOTE_ADDR".into(), Value::String(addr.clone()));
        }
        events.push(Event {
            time,
            record: record.into(),
        });
    }
    if events.is_empty() {
        return Ok(None);
    }
    Ok(Some((Arc::from(tag.as_str()), events)))
}

/// A gzip or deflate (zlib) body, refused once it inflates past `limit`
/// (a bomb costs `limit` bytes, not all of memory).
fn inflate(body: &[u8], gzip: bool, limit: usize) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let mut out = Vec::new();
    let reader: Box<dyn Read + '_> = if gzip {
        Box::new(flate2::read::MultiGzDecoder::new(body))
    } else {
        Box::new(flate2::read::ZlibDecoder::new(body))
    };
    reader
        .take(limit as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| format!("{}: {e}", if gzip { "gzip" } else { "deflate" }))?;
    if out.len() > limit {
        return Err(format!(
            "the body inflates past body_size_limit ({limit} bytes)"
        ));
    }
    Ok(out)
}

/// Each request header as `HTTP_<NAME>` (`-` as `_`, upper case), as
/// Fluentd's in_http adds them.
fn add_headers(record: &mut Map<String, Value>, headers: &HeaderMap) {
    for (name, value) in headers {
        let key = format!(
            "HTTP_{}",
            name.as_str().replace('-', "_").to_ascii_uppercase()
        );
        record.insert(
            key,
            Value::String(String::from_utf8_lossy(value.as_bytes()).into_owned()),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queries_decode_like_forms() {
        let q = parse_query("json=%7B%22a%22%3A1%7D&time=1.5&x=a+b&bad=%zz&end=%4");
        assert_eq!(q["json"], b"{\"a\":1}");
        assert_eq!(q["time"], b"1.5");
        assert_eq!(q["x"], b"a b");
        assert_eq!(q["bad"], b"%zz");
        assert_eq!(q["end"], b"%4");
    }
}
