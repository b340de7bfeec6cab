//! The query exporter: registered SQL queries turned into Prometheus
//! metrics on `/metrics`, after the seed's query-exporter YAML (`dsn`,
//! `metrics: {name: {query, type, description, labels, value}}`).
//!
//! Unlike the Go exporter it replaces: connections come from a small pool
//! (not one per scrape), every query has a timeout and runs in parallel, a
//! failing query sets its `query_exporter_up` to 0 without failing the
//! scrape, duplicate label sets and NULL or non-numeric values are skipped
//! and counted instead of causing an HTTP 500 or a fake 0.

use std::collections::{BTreeMap, HashSet};
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::config::fields::{error, string, Fields, Result as ConfigResult};
use crate::mysql::client::{ConnectOptions, Connection, QueryResult};
use crate::yaml::NodeKind;

#[derive(Debug, Clone)]
pub struct MetricSpec {
    pub name: String,
    pub query: String,
    pub kind: &'static str,
    pub description: String,
    pub labels: Vec<String>,
    pub value: String,
}

#[derive(Debug, Clone)]
pub struct ExporterConfig {
    pub bind: SocketAddr,
    pub connect: ConnectOptions,
    pub pool_size: usize,
    pub query_timeout: Duration,
    pub metrics: Vec<MetricSpec>,
}

/// Go-style DSN: `user:password@unix(/path/mysql.sock)/db` or
/// `user:password@tcp(host:port)/db`.
pub fn parse_dsn(dsn: &str) -> Option<ConnectOptions> {
    let (cred, rest) = dsn.rsplit_once('@')?;
    let (user, password) = match cred.split_once(':') {
        Some((u, p)) => (u.to_string(), Some(p.to_string())),
        None => (cred.to_string(), None),
    };
    let (addr, db) = rest
        .split_once(")/")
        .map(|(a, d)| (a, d.split('?').next().unwrap_or("")))
        .unwrap_or((rest.trim_end_matches(')'), ""));
    let mut opts = ConnectOptions {
        host: "localhost".into(),
        port: 3306,
        socket: None,
        username: user,
        password,
        database: (!db.is_empty()).then(|| db.to_string()),
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        write_timeout: Duration::from_secs(5),
        tls: false,
        tls_ca_file: None,
        tls_verify: true,
    };
    if let Some(path) = addr.strip_prefix("unix(") {
        opts.socket = Some(PathBuf::from(path));
    } else if let Some(hp) = addr.strip_prefix("tcp(") {
        let (h, p) = hp.rsplit_once(':').unwrap_or((hp, "3306"));
        opts.host = h.to_string();
        opts.port = p.parse().ok()?;
        opts.tls = !["localhost", "127.0.0.1", "::1"].contains(&h);
    } else {
        return None;
    }
    Some(opts)
}

impl ExporterConfig {
    pub fn from_config(f: &mut Fields) -> ConfigResult<ExporterConfig> {
        let dsn_node = f.required("dsn")?;
        let dsn = string(dsn_node)?;
        let mut connect = parse_dsn(&dsn).ok_or(()).or_else(|_| {
            error(dsn_node, "exporter: dsn must look like user:password@unix(/path/mysql.sock)/ or user:password@tcp(host:3306)/db")
        })?;
        let bind_node = f.take("bind");
        let bind = match bind_node {
            Some(n) => {
                let s = string(n)?;
                s.parse().or_else(|_| {
                    error(
                        n,
                        format!("exporter: bind `{s}` is not an address like 127.0.0.1:9104"),
                    )
                })?
            }
            None => "127.0.0.1:9104".parse().expect("valid default"),
        };
        let query_timeout = f.duration("query_timeout", Duration::from_secs(5))?;
        connect.read_timeout = query_timeout;
        connect.write_timeout = query_timeout;
        if let Some(v) = f.take("tls") {
            connect.tls = crate::config::fields::boolean(v)?;
        }
        if let Some(ca) = f.string("tls_ca_file")? {
            connect.tls = true;
            crate::sources::mysql_query::check_ca_file(f, std::path::Path::new(&ca))?;
            connect.tls_ca_file = Some(PathBuf::from(ca));
        }
        let pool_size = f.uint("pool_size", 2)?.max(1) as usize;
        let metrics_node = f.required("metrics")?;
        let NodeKind::Map(pairs) = &metrics_node.kind else {
            return error(
                metrics_node,
                "exporter: `metrics` must be a mapping of name: {query, type, ...}",
            );
        };
        let mut metrics = Vec::new();
        for (k, v) in pairs {
            let name = string(k)?;
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return error(
                    k,
                    format!("exporter: metric name `{name}` must be letters, digits and `_`"),
                );
            }
            let mut m = Fields::new(v, "exporter metric")?;
            let query = m.required_string("query")?;
            let kind = match m.string("type")?.as_deref() {
                None | Some("gauge") => "gauge",
                Some("counter") => "counter",
                Some(other) => {
                    return error(
                        v,
                        format!("exporter: type `{other}` (expected gauge or counter)"),
                    )
                }
            };
            let description = m.string("description")?.unwrap_or_else(|| name.clone());
            let labels = m.string_list("labels")?;
            let value = m.string("value")?.unwrap_or_else(|| "value".into());
            m.finish()?;
            metrics.push(MetricSpec {
                name,
                query,
                kind,
                description,
                labels,
                value,
            });
        }
        Ok(ExporterConfig {
            bind,
            connect,
            pool_size,
            query_timeout,
            metrics,
        })
    }
}

/// Idle connections, at most `size` of them kept.
struct Pool {
    options: ConnectOptions,
    idle: Mutex<Vec<Connection>>,
    size: usize,
}

impl Pool {
    fn run(&self, sql: &str) -> Result<QueryResult, String> {
        let conn = self.idle.lock().unwrap().pop();
        let mut conn = match conn {
            Some(c) => c,
            None => Connection::connect(&self.options).map_err(|e| e.to_string())?,
        };
        match conn.query(sql) {
            Ok(r) => {
                let mut idle = self.idle.lock().unwrap();
                if idle.len() < self.size {
                    idle.push(conn);
                }
                Ok(r)
            }
            // A connection that failed is not trusted again.
            Err(e) => Err(e.to_string()),
        }
    }
}

pub struct Exporter {
    config: ExporterConfig,
    pool: Arc<Pool>,
    /// (query, reason) -> values skipped, over the exporter's life.
    skipped: Mutex<BTreeMap<(String, &'static str), u64>>,
}

enum Outcome {
    Rows(QueryResult),
    Failed(String),
}

impl Exporter {
    pub fn new(config: ExporterConfig) -> Exporter {
        let pool = Arc::new(Pool {
            options: config.connect.clone(),
            idle: Mutex::new(Vec::new()),
            size: config.pool_size,
        });
        Exporter {
            config,
            pool,
            skipped: Mutex::new(BTreeMap::new()),
        }
    }

    /// One scrape: every query in parallel, each bounded by query_timeout.
    pub async fn scrape(&self) -> String {
        let started = Instant::now();
        let mut tasks = Vec::new();
        for m in &self.config.metrics {
            let (pool, sql) = (self.pool.clone(), m.query.clone());
            let task = tokio::task::spawn_blocking(move || pool.run(&sql));
            tasks.push(tokio::time::timeout(self.config.query_timeout, task));
        }
        let mut outcomes = Vec::new();
        for t in tasks {
            outcomes.push(match t.await {
                Ok(Ok(Ok(rows))) => Outcome::Rows(rows),
                Ok(Ok(Err(e))) => Outcome::Failed(e),
                Ok(Err(join)) => Outcome::Failed(join.to_string()),
                Err(_) => Outcome::Failed("timed out".into()),
            });
        }

        let mut out = String::new();
        let mut up = Vec::new();
        for (m, outcome) in self.config.metrics.iter().zip(outcomes) {
            let rows = match outcome {
                Outcome::Rows(r) => r,
                Outcome::Failed(e) => {
                    crate::log::warn(&format!("exporter: query {}: {e}", m.name));
                    up.push((m.name.clone(), 0));
                    continue;
                }
            };
            up.push((m.name.clone(), 1));
            let col = |name: &str| rows.columns.iter().position(|c| c == name);
            let (Some(value_at), Some(label_at)) = (
                col(&m.value),
                m.labels
                    .iter()
                    .map(|l| col(l))
                    .collect::<Option<Vec<usize>>>(),
            ) else {
                crate::log::warn(&format!(
                    "exporter: query {} lacks the value or a label column",
                    m.name
                ));
                *up.last_mut().expect("just pushed") = (m.name.clone(), 0);
                continue;
            };
            let _ = writeln!(
                out,
                "# HELP query_exporter_{} {}",
                m.name,
                escape_help(&m.description)
            );
            let _ = writeln!(out, "# TYPE query_exporter_{} {}", m.name, m.kind);
            let mut seen = HashSet::new();
            for row in &rows.rows {
                let value = match row[value_at].as_deref() {
                    None => {
                        self.count_skip(&m.name, "null");
                        continue;
                    }
                    Some(v) => match v.trim().parse::<f64>() {
                        Ok(f) if f.is_finite() => f,
                        _ => {
                            self.count_skip(&m.name, "not_numeric");
                            continue;
                        }
                    },
                };
                let labels: Vec<String> = m
                    .labels
                    .iter()
                    .zip(&label_at)
                    .map(|(l, &i)| {
                        format!("{l}=\"{}\"", escape_label(row[i].as_deref().unwrap_or("")))
                    })
                    .collect();
                let labels = labels.join(",");
                if !seen.insert(labels.clone()) {
                    self.count_skip(&m.name, "duplicate_labels");
                    continue;
                }
                if labels.is_empty() {
                    let _ = writeln!(out, "query_exporter_{} {value}", m.name);
                } else {
                    let _ = writeln!(out, "query_exporter_{}{{{labels}}} {value}", m.name);
                }
            }
        }
        out.push_str(
            "# HELP query_exporter_up Whether the query ran (1) or failed or timed out (0).\n",
        );
        out.push_str("# TYPE query_exporter_up gauge\n");
        for (name, v) in &up {
            let _ = writeln!(out, "query_exporter_up{{query=\"{name}\"}} {v}");
        }
        out.push_str("# HELP query_exporter_skipped_values_total Rows skipped: NULL or non-numeric value, or a duplicate label set.\n");
        out.push_str("# TYPE query_exporter_skipped_values_total counter\n");
        for ((name, reason), n) in self.skipped.lock().unwrap().iter() {
            let _ = writeln!(
                out,
                "query_exporter_skipped_values_total{{query=\"{name}\",reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP query_exporter_scrape_duration_seconds Time this scrape took.\n");
        out.push_str("# TYPE query_exporter_scrape_duration_seconds gauge\n");
        let _ = writeln!(
            out,
            "query_exporter_scrape_duration_seconds {}",
            started.elapsed().as_secs_f64()
        );
        out.push_str("# HELP query_exporter_build_info The exporter's version.\n");
        out.push_str("# TYPE query_exporter_build_info gauge\n");
        let _ = writeln!(
            out,
            "query_exporter_build_info{{version=\"{}\"}} 1",
            env!("CARGO_PKG_VERSION")
        );
        out
    }

    fn count_skip(&self, name: &str, reason: &'static str) {
        *self
            .skipped
            .lock()
            .unwrap()
            .entry((name.to_string(), reason))
            .or_insert(0) += 1;
    }

    /// `/metrics`, answered by running every query (see `scrape`).
    pub fn router(self: Arc<Self>) -> axum::Router {
        crate::http_server::metrics_router(move || {
            let me = self.clone();
            async move { me.scrape().await }
        })
    }
}

fn escape_label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

fn escape_help(v: &str) -> String {
    v.replace('\\', "\\\\").replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dsns() {
        let o = parse_dsn("exporter:s3cret@unix(/var/lib/mysql/mysql.sock)/").unwrap();
        assert_eq!(
            (o.username.as_str(), o.password.as_deref()),
            ("exporter", Some("s3cret"))
        );
        assert_eq!(
            o.socket.as_deref(),
            Some(std::path::Path::new("/var/lib/mysql/mysql.sock"))
        );
        assert!(!o.tls);
        let o = parse_dsn("u:p@tcp(db.example.net:3307)/app?timeout=5s").unwrap();
        assert_eq!(
            (o.host.as_str(), o.port, o.database.as_deref()),
            ("db.example.net", 3307, Some("app"))
        );
        assert!(o.tls, "TLS by default to other hosts");
        assert!(parse_dsn("nonsense").is_none());
    }
}
