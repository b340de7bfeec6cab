//! `http` output: bulk requests (ndjson by default) to a collector, with
//! retries for transient failures and a dead-letter directory for requests
//! the collector rejects.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use base64::Engine as _;
use bytes::Buf as _;
use http_body_util::{BodyExt, Limited};
use hyper::body::Incoming;
use hyper::body::{Frame, SizeHint};
use hyper::header::{
    HeaderMap, HeaderName, HeaderValue, AUTHORIZATION, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
    USER_AGENT,
};
use hyper::http::uri::Scheme;
use hyper::{Method, Request, Response, Uri};
use hyper_tls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::{Client, Error as LegacyError};
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::config::named_file;
use crate::yaml::NodeKind;

use super::flusher::Piece;
use super::{Attempt, BoxFuture, Output, OutputSettings, RequestBody, RequestFormat};

/// `type: http`'s entry in the outputs table.
pub fn settings(f: &mut Fields) -> ConfigResult<Box<dyn OutputSettings>> {
    Ok(Box::new(HttpConfig::from_config(f)?))
}

impl OutputSettings for HttpConfig {
    fn build(self: Box<Self>, id: &str) -> anyhow::Result<Box<dyn Output>> {
        let sink = HttpSink::new(*self).map_err(|e| anyhow::anyhow!("output {id}: {e:#}"))?;
        Ok(Box::new(sink))
    }

    fn can_reject(&self) -> bool {
        true
    }
}

impl Output for HttpSink {
    fn describe(&self) -> (&'static str, Option<String>) {
        ("http", Some(self.shown.clone()))
    }

    fn format(&self) -> RequestFormat {
        self.config.format
    }

    fn deliver(&self, body: RequestBody) -> BoxFuture<'_, Attempt> {
        Box::pin(self.send(body))
    }
}

#[derive(Debug)]
pub struct HttpConfig {
    pub endpoint: String,
    pub method: Method,
    pub format: RequestFormat,
    pub headers: HeaderMap,
    pub gzip: bool,
    pub tls_ca_file: Option<PathBuf>,
    pub tls_verify: bool,
    pub connect_timeout: Duration,
    pub request_timeout: Duration,
}

impl HttpConfig {
    pub fn from_config(f: &mut Fields) -> ConfigResult<HttpConfig> {
        let endpoint_node = f.required("endpoint")?;
        let endpoint = crate::config::fields::string(endpoint_node)?;
        match endpoint.parse::<Uri>() {
            Ok(u)
                if (u.scheme() == Some(&Scheme::HTTP) || u.scheme() == Some(&Scheme::HTTPS))
                    && u.host().is_some() => {}
            _ => {
                return error(
                    endpoint_node,
                    format!("http: endpoint `{endpoint}` is not an http:// or https:// URL"),
                )
            }
        }
        let method = match f.string("method")?.as_deref() {
            None | Some("post") | Some("POST") => Method::POST,
            Some("put") | Some("PUT") => Method::PUT,
            Some(other) => {
                return error(
                    f.node(),
                    format!("http: method `{other}` (expected post or put)"),
                )
            }
        };
        let format = match f.string("format")?.as_deref() {
            None | Some("ndjson") => RequestFormat::Ndjson,
            Some("json_array") => RequestFormat::JsonArray,
            Some("json") => RequestFormat::Json,
            Some(other) => {
                return error(
                    f.node(),
                    format!("http: format `{other}` (expected ndjson, json_array or json)"),
                )
            }
        };
        let mut headers = HeaderMap::new();
        if let Some(h) = f.take("headers") {
            let NodeKind::Map(pairs) = &h.kind else {
                return error(h, "http: `headers` must be a mapping of name: value");
            };
            for (k, v) in pairs {
                let name = crate::config::fields::string(k)?;
                let value = crate::config::fields::string(v)?;
                let name = HeaderName::from_bytes(name.as_bytes())
                    .or_else(|_| error(k, format!("http: invalid header name `{name}`")))?;
                let value = HeaderValue::from_str(&value)
                    .or_else(|_| error(v, "http: invalid header value"))?;
                headers.insert(name, value);
            }
        }
        if let Some(auth) = f.take("auth") {
            let mut a = Fields::new(auth, "http auth")?;
            let value = match a.required_string("method")?.as_str() {
                "basic" => {
                    let user = a.required_string("username")?;
                    let password = secret(&mut a)?;
                    let pair = format!("{user}:{password}");
                    let encoded = base64::engine::general_purpose::STANDARD.encode(pair);
                    format!("Basic {encoded}")
                }
                "bearer" => format!("Bearer {}", secret(&mut a)?),
                other => {
                    return error(
                        auth,
                        format!("http auth: method `{other}` (expected basic or bearer)"),
                    )
                }
            };
            a.finish()?;
            let mut v = HeaderValue::from_str(&value)
                .or_else(|_| error(auth, "http auth: invalid credentials"))?;
            v.set_sensitive(true);
            headers.insert(AUTHORIZATION, v);
        }
        let cfg = HttpConfig {
            endpoint,
            method,
            format,
            headers,
            gzip: f.bool("gzip", false)?,
            tls_ca_file: f.string("tls_ca_file")?.map(PathBuf::from),
            tls_verify: f.bool("tls_verify", true)?,
            connect_timeout: f.duration("connect_timeout", Duration::from_secs(5))?,
            request_timeout: f.duration("request_timeout", Duration::from_secs(60))?,
        };
        if let Some(ca) = &cfg.tls_ca_file {
            if let Err(e) = named_file::check(ca, named_file::Kind::Certificate) {
                return error(f.node(), format!("http: tls_ca_file {e}"));
            }
        }
        Ok(cfg)
    }
}

/// `password`/`token`, or `password_file`/`token_file` (kept out of the
/// world-readable config), or `password_env`/`token_env`.
fn secret(a: &mut Fields) -> ConfigResult<String> {
    for key in ["password", "token"] {
        if let Some(v) = a.string(key)? {
            return Ok(v);
        }
        if let Some(node) = a.take(&format!("{key}_file")) {
            let path = crate::config::fields::string(node)?;
            return crate::config::named_file::read_secret(std::path::Path::new(&path))
                .or_else(|e| error(node, format!("http auth: {key}_file {e}")));
        }
        if let Some(node) = a.take(&format!("{key}_env")) {
            let var = crate::config::fields::string(node)?;
            return std::env::var(&var).or_else(|_| {
                error(
                    node,
                    format!("http auth: environment variable {var} is not set"),
                )
            });
        }
    }
    error(
        a.node(),
        "http auth: needs password/token, a *_file or a *_env",
    )
}

/// A request's body: read from the buffer chunk while it is sent, or made
/// whole first when it is compressed.
enum Body {
    Records(RequestBody),
    Whole(Option<Piece>),
}

impl hyper::body::Body for Body {
    type Data = Piece;
    type Error = std::io::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Piece>, std::io::Error>>> {
        match self.get_mut() {
            Body::Records(r) => std::pin::Pin::new(r).poll_frame(cx),
            Body::Whole(b) => std::task::Poll::Ready(b.take().map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            Body::Records(r) => r.is_end_stream(),
            Body::Whole(b) => b.is_none(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            Body::Records(r) => r.size_hint(),
            Body::Whole(b) => SizeHint::with_exact(b.as_ref().map_or(0, |b| b.remaining() as u64)),
        }
    }
}

/// The connection pool. A plain-http endpoint gets a connector without TLS,
/// so an agent shipping to a local or in-cluster collector over http never
/// initialises OpenSSL (its CA store and providers cost ~5 MiB resident).
enum Transport {
    Plain(Client<HttpConnector, Body>),
    Tls(Client<HttpsConnector<HttpConnector>, Body>),
}

impl Transport {
    async fn request(&self, req: Request<Body>) -> Result<Response<Incoming>, LegacyError> {
        match self {
            Transport::Plain(c) => c.request(req).await,
            Transport::Tls(c) => c.request(req).await,
        }
    }
}

pub struct HttpSink {
    config: HttpConfig,
    uri: Uri,
    /// The endpoint for messages and `/status`, which must not carry
    /// credentials.
    shown: String,
    transport: Transport,
}

/// How much of a response body is read: enough for a collector's error
/// message, and the body must be read for the connection to be reused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

impl HttpSink {
    pub fn new(config: HttpConfig) -> anyhow::Result<HttpSink> {
        let uri: Uri = config.endpoint.parse()?;
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(config.connect_timeout));
        http.set_nodelay(true);
        let mut pool = Client::builder(TokioExecutor::new());
        pool.pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            // hyper takes pieces of a body while it has less than this
            // queued (400 KiB by default): one piece at a time, so that a
            // body read in pieces holds one in memory, not six. (It also
            // bounds a response's head: 32 KiB.)
            .http1_max_buf_size(RequestBody::PIECE_BYTES / 2);
        let transport = if uri.scheme() == Some(&Scheme::HTTPS) {
            http.enforce_http(false);
            let mut tls = native_tls::TlsConnector::builder();
            // Like curl's --cacert and fluent-bit's tls.ca_file: a given CA
            // file is the whole trust store, so a private collector's CA
            // does not also trust every public CA (and the system bundle
            // is not parsed into memory at all).
            if let Some(ca) = &config.tls_ca_file {
                tls.disable_built_in_roots(true);
                let pem =
                    named_file::read(ca, named_file::Kind::Certificate).context("tls_ca_file")?;
                let cert = native_tls::Certificate::from_pem(&pem).with_context(|| {
                    format!("tls_ca_file {} is not a PEM certificate", ca.display())
                })?;
                tls.add_root_certificate(cert);
            }
            if !config.tls_verify {
                tls.danger_accept_invalid_certs(true)
                    .danger_accept_invalid_hostnames(true);
            }
            let tls = tls.build().context("setting up TLS (OpenSSL)")?;
            Transport::Tls(pool.build(HttpsConnector::from((http, tls.into()))))
        } else {
            Transport::Plain(pool.build(http))
        };
        Ok(HttpSink {
            config,
            shown: without_secrets(&uri),
            uri,
            transport,
        })
    }

    fn request(&self, body: RequestBody) -> std::io::Result<Request<Body>> {
        let mut req = Request::new(Body::Whole(None));
        *req.method_mut() = self.config.method.clone();
        *req.uri_mut() = self.uri.clone();
        let headers = req.headers_mut();
        headers.insert(
            USER_AGENT,
            HeaderValue::from_static(concat!("my-agent/", env!("CARGO_PKG_VERSION"))),
        );
        headers.extend(self.config.headers.clone());
        headers.insert(
            CONTENT_TYPE,
            HeaderValue::from_static(self.config.format.content_type()),
        );
        *req.body_mut() = if self.config.gzip {
            use std::io::Write;
            let body = body.into_vec()?;
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            let _ = gz.write_all(&body);
            headers.insert(CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            Body::Whole(Some(Piece::whole(gz.finish().unwrap_or_default())))
        } else {
            Body::Records(body)
        };
        Ok(req)
    }

    pub async fn send(&self, body: RequestBody) -> Attempt {
        let req = match self.request(body) {
            Ok(req) => req,
            Err(e) => {
                return Attempt::Retry {
                    reason: e.to_string(),
                    after: None,
                }
            }
        };
        // Redirects are not followed: a redirected POST would turn into a GET.
        let exchange = async {
            let resp = self.transport.request(req).await?;
            let (parts, body) = resp.into_parts();
            let text = match Limited::new(body, MAX_RESPONSE_BYTES).collect().await {
                Ok(b) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                Err(_) => String::new(),
            };
            Ok::<_, LegacyError>((parts, text))
        };
        let (parts, text) = match tokio::time::timeout(self.config.request_timeout, exchange).await
        {
            Err(_) => {
                return Attempt::Retry {
                    reason: format!(
                        "{}: no response within request_timeout {:?}",
                        self.shown, self.config.request_timeout
                    ),
                    after: None,
                }
            }
            Ok(Err(e)) => {
                return Attempt::Retry {
                    reason: format!("{}: {}", self.shown, error_chain(&e)),
                    after: None,
                }
            }
            Ok(Ok(r)) => r,
        };
        let status = parts.status;
        if status.is_success() {
            return Attempt::Done;
        }
        let after = parts
            .headers
            .get(RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|s| s.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let code = status.as_u16();
        if code == 408 || code == 429 || status.is_server_error() {
            Attempt::Retry {
                reason: format!("{}: HTTP {status}", self.shown),
                after,
            }
        } else {
            Attempt::Reject {
                status: code,
                body: text.chars().take(2048).collect(),
            }
        }
    }
}

fn without_secrets(uri: &Uri) -> String {
    let scheme = uri.scheme_str().unwrap_or("http");
    let host = uri.host().unwrap_or_default();
    let port = uri.port().map(|p| format!(":{p}")).unwrap_or_default();
    format!("{scheme}://{host}{port}{}", uri.path())
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        // Wrappers often repeat their cause's text; say it once.
        let text = inner.to_string();
        if !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
        }
        source = inner.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_shows_endpoints_without_secrets() {
        let shown = |u: &str| without_secrets(&u.parse().unwrap());
        assert_eq!(
            shown("https://ingest:s3cret@collector.example:8443/bulk?api_key=abc"),
            "https://collector.example:8443/bulk"
        );
        assert_eq!(shown("http://[::1]:9200/_bulk"), "http://[::1]:9200/_bulk");
        assert_eq!(shown("http://collector"), "http://collector/");
    }
}
