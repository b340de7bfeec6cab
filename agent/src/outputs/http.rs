//! `http` output: bulk requests (ndjson by default) to a collector, with
//! retries for transient failures and a dead-letter directory for requests
//! the collector rejects.

use std::path::PathBuf;
use std::time::Duration;

use reqwest::header::{
    HeaderMap, HeaderName, HeaderValue, CONTENT_ENCODING, CONTENT_TYPE, RETRY_AFTER,
};

use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::yaml::NodeKind;

use super::{Attempt, RequestFormat};

#[derive(Debug)]
pub struct HttpConfig {
    pub endpoint: String,
    pub method: reqwest::Method,
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
        match reqwest::Url::parse(&endpoint) {
            Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {}
            _ => {
                return error(
                    endpoint_node,
                    format!("http: endpoint `{endpoint}` is not an http:// or https:// URL"),
                )
            }
        }
        let method = match f.string("method")?.as_deref() {
            None | Some("post") | Some("POST") => reqwest::Method::POST,
            Some("put") | Some("PUT") => reqwest::Method::PUT,
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
                    use base64_lite::encode;
                    format!("Basic {}", encode(format!("{user}:{password}").as_bytes()))
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
            headers.insert(reqwest::header::AUTHORIZATION, v);
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
            if !ca.is_file() {
                return error(
                    f.node(),
                    format!("http: tls_ca_file {} does not exist", ca.display()),
                );
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
            return std::fs::read_to_string(&path)
                .map(|s| s.trim_end_matches(['\n', '\r']).to_string())
                .or_else(|e| error(node, format!("http auth: cannot read {path}: {e}")));
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

pub struct HttpSink {
    config: HttpConfig,
    client: reqwest::Client,
}

impl HttpSink {
    pub fn new(config: HttpConfig) -> anyhow::Result<HttpSink> {
        let mut builder = reqwest::Client::builder()
            .connect_timeout(config.connect_timeout)
            .timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(60))
            // A redirected POST would silently turn into a GET.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("my-agent/", env!("CARGO_PKG_VERSION")));
        if let Some(ca) = &config.tls_ca_file {
            let pem = std::fs::read(ca)?;
            builder = builder.add_root_certificate(reqwest::Certificate::from_pem(&pem)?);
        }
        if !config.tls_verify {
            builder = builder
                .danger_accept_invalid_certs(true)
                .danger_accept_invalid_hostnames(true);
        }
        Ok(HttpSink {
            client: builder.build()?,
            config,
        })
    }

    pub fn format(&self) -> RequestFormat {
        self.config.format
    }

    pub async fn send(&self, body: Vec<u8>) -> Attempt {
        let mut req = self
            .client
            .request(self.config.method.clone(), &self.config.endpoint)
            .headers(self.config.headers.clone())
            .header(CONTENT_TYPE, self.config.format.content_type());
        let body = if self.config.gzip {
            use std::io::Write;
            let mut gz = flate2::write::GzEncoder::new(
                Vec::with_capacity(body.len() / 4),
                flate2::Compression::fast(),
            );
            let _ = gz.write_all(&body);
            req = req.header(CONTENT_ENCODING, "gzip");
            gz.finish().unwrap_or_default()
        } else {
            body
        };
        match req.body(body).send().await {
            Err(e) => Attempt::Retry {
                reason: format!("{}: {}", self.config.endpoint, error_chain(&e)),
                after: None,
            },
            Ok(resp) => {
                let status = resp.status();
                if status.is_success() {
                    return Attempt::Done;
                }
                let after = resp
                    .headers()
                    .get(RETRY_AFTER)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|s| s.trim().parse::<u64>().ok())
                    .map(Duration::from_secs);
                let text = resp.text().await.unwrap_or_default();
                let snippet: String = text.chars().take(2048).collect();
                let code = status.as_u16();
                if code == 408 || code == 429 || status.is_server_error() {
                    Attempt::Retry {
                        reason: format!("{}: HTTP {status}", self.config.endpoint),
                        after,
                    }
                } else {
                    Attempt::Reject {
                        status: code,
                        body: snippet,
                    }
                }
            }
        }
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        s.push_str(": ");
        s.push_str(&inner.to_string());
        source = inner.source();
    }
    s
}

/// Standard base64 for the Basic auth header (no crate needed for 20 lines).
mod base64_lite {
    const TABLE: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(input: &[u8]) -> String {
        let mut out = String::with_capacity(input.len().div_ceil(3) * 4);
        for chunk in input.chunks(3) {
            let b = [
                chunk[0],
                *chunk.get(1).unwrap_or(&0),
                *chunk.get(2).unwrap_or(&0),
            ];
            let n = (b[0] as u32) << 16 | (b[1] as u32) << 8 | b[2] as u32;
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(TABLE[(n >> (18 - 6 * i) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }

    #[test]
    fn rfc4648_vectors() {
        assert_eq!(encode(b""), "");
        assert_eq!(encode(b"f"), "Zg==");
        assert_eq!(encode(b"fo"), "Zm8=");
        assert_eq!(encode(b"foo"), "Zm9v");
        assert_eq!(encode(b"foobar"), "Zm9vYmFy");
    }
}
