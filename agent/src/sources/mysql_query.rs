//! `mysql_query` source: runs a query every `interval` through the
//! prefix's libmysqlclient and emits the rows, with the record shapes of
//! fluent-plugin-mysql-query (one event per row, or all rows nested under
//! `nest_key`; `hostname` and `row_count` on request; values as strings).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Map, Value};

use super::{Built, Downstream, SourceSettings};
use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::event::{now_nanos, Event};
use crate::log;
use crate::metrics::PluginMetrics;
use crate::mysql::client::{ConnectOptions, Connection, QueryResult};
use crate::status::{SourceProblem, SourceStatus};

#[derive(Debug, Clone)]
pub struct MysqlQueryConfig {
    pub connect: ConnectOptions,
    pub interval: Duration,
    pub tag: String,
    pub query: String,
    pub record_hostname: bool,
    pub nest_result: bool,
    pub nest_key: String,
    pub row_count: bool,
    pub row_count_key: String,
}

/// A CA file handed to Connector/C: proven a regular PEM-sized file first.
pub fn check_ca_file(f: &Fields, ca: &std::path::Path) -> ConfigResult<()> {
    use crate::config::named_file::{check, Kind};
    check(ca, Kind::Certificate).or_else(|e| error(f.node(), format!("tls_ca_file {e}")))
}

/// Connection options shared by the MySQL plugins: `host`, `port`,
/// `socket`, `username`, `password` (or `password_file`, or
/// `password_env`), `database`, timeouts and TLS.
pub fn connect_options(f: &mut Fields, query_timeout: Duration) -> ConfigResult<ConnectOptions> {
    let password = match (
        f.take("password"),
        f.take("password_file"),
        f.take("password_env"),
    ) {
        (Some(p), None, None) => Some(crate::config::fields::string(p)?),
        (None, Some(file), None) => {
            let path = crate::config::fields::string(file)?;
            Some(
                crate::config::named_file::read_secret(std::path::Path::new(&path))
                    .or_else(|e| error(file, format!("password_file {e}")))?,
            )
        }
        (None, None, Some(var)) => {
            let name = crate::config::fields::string(var)?;
            Some(
                std::env::var(&name)
                    .or_else(|_| error(var, format!("environment variable {name} is not set")))?,
            )
        }
        (None, None, None) => None,
        _ => {
            return error(
                f.node(),
                "give one of password, password_file or password_env",
            )
        }
    };
    let host = f.string("host")?.unwrap_or_else(|| "localhost".into());
    let socket = f.string("socket")?.map(PathBuf::from);
    // TLS by default to other hosts; a unix socket or loopback gains
    // nothing from it.
    let local = socket.is_some() || ["localhost", "127.0.0.1", "::1"].contains(&host.as_str());
    let tls_ca_file = f.string("tls_ca_file")?.map(PathBuf::from);
    if let Some(ca) = &tls_ca_file {
        // Connector/C opens it itself, with a blocking open: a FIFO here
        // would hang the source's connection.
        check_ca_file(f, ca)?;
    }
    let tls = f.bool("tls", !local || tls_ca_file.is_some())?;
    Ok(ConnectOptions {
        host,
        port: f.uint("port", 3306)? as u16,
        socket,
        username: f.string("username")?.unwrap_or_else(|| "root".into()),
        password,
        database: f.string("database")?,
        connect_timeout: f.duration("connect_timeout", Duration::from_secs(5))?,
        read_timeout: query_timeout,
        write_timeout: query_timeout,
        tls,
        tls_ca_file,
        tls_verify: f.bool("tls_verify", true)?,
    })
}

impl MysqlQueryConfig {
    pub fn from_config(f: &mut Fields) -> ConfigResult<MysqlQueryConfig> {
        let query_timeout = f.duration("query_timeout", Duration::from_secs(30))?;
        Ok(MysqlQueryConfig {
            connect: connect_options(f, query_timeout)?,
            interval: f.duration("interval", Duration::from_secs(60))?,
            tag: f.required_string("tag")?,
            query: f.required_string("query")?,
            record_hostname: f.bool("record_hostname", false)?,
            nest_result: f.bool("nest_result", false)?,
            nest_key: f.string("nest_key")?.unwrap_or_else(|| "result".into()),
            row_count: f.bool("row_count", false)?,
            row_count_key: f
                .string("row_count_key")?
                .unwrap_or_else(|| "row_count".into()),
        })
    }
}

/// The events of one query result, shaped as fluent-plugin-mysql-query does.
pub fn shape(
    cfg: &MysqlQueryConfig,
    hostname: &str,
    result: &QueryResult,
    time: i64,
) -> Vec<Event> {
    let mut base = Map::new();
    if cfg.record_hostname {
        base.insert("hostname".into(), Value::String(hostname.to_string()));
    }
    if cfg.row_count {
        base.insert(cfg.row_count_key.clone(), Value::from(result.rows.len()));
    }
    let row_record = |row: &Vec<Option<String>>| -> Map<String, Value> {
        result
            .columns
            .iter()
            .zip(row)
            .map(|(c, v)| (c.clone(), v.clone().map_or(Value::Null, Value::String)))
            .collect()
    };
    if cfg.nest_result {
        let mut record = base;
        let rows: Vec<Value> = result
            .rows
            .iter()
            .map(|r| Value::Object(row_record(r)))
            .collect();
        record.insert(cfg.nest_key.clone(), Value::Array(rows));
        vec![Event {
            time,
            record: record.into(),
        }]
    } else {
        result
            .rows
            .iter()
            .map(|r| {
                let mut record = base.clone();
                record.extend(row_record(r));
                Event {
                    time,
                    record: record.into(),
                }
            })
            .collect()
    }
}

/// `type: mysql_query`'s entry in the sources table.
pub fn settings(f: &mut Fields) -> ConfigResult<Box<dyn SourceSettings>> {
    Ok(Box::new(MysqlQueryConfig::from_config(f)?))
}

impl SourceSettings for MysqlQueryConfig {
    fn kind(&self) -> &'static str {
        "mysql_query"
    }

    fn build(self: Box<Self>, id: String, metrics: Arc<PluginMetrics>) -> anyhow::Result<Built> {
        let status = Arc::new(SourceStatus::new(
            id,
            "mysql_query",
            self.tag.clone(),
            Vec::new(),
        ));
        let source = MysqlQuerySource::new(*self, metrics, status.clone());
        Ok(Built {
            status,
            run: Box::new(move |downstream, stop| source.run(downstream, stop)),
        })
    }
}

pub struct MysqlQuerySource {
    config: MysqlQueryConfig,
    metrics: Arc<PluginMetrics>,
    status: Arc<SourceStatus>,
}

impl MysqlQuerySource {
    pub fn new(
        config: MysqlQueryConfig,
        metrics: Arc<PluginMetrics>,
        status: Arc<SourceStatus>,
    ) -> MysqlQuerySource {
        MysqlQuerySource {
            config,
            metrics,
            status,
        }
    }

    /// The server as messages name it: its socket, or host:port.
    fn server(&self) -> String {
        let c = &self.config.connect;
        c.socket.as_ref().map_or_else(
            || format!("{}:{}", c.host, c.port),
            |s| s.display().to_string(),
        )
    }

    /// Runs until `stop`. A failing server is retried with backoff (never
    /// more often than every second, never less than every interval),
    /// counted in `errors` and logged; other sources carry on.
    pub fn run(self, router: Arc<dyn Downstream>, stop: Arc<AtomicBool>) {
        let cfg = &self.config;
        let mut conn: Option<Connection> = None;
        let mut hostname: Option<String> = None;
        let mut failures: u32 = 0;
        while !stop.load(Ordering::Relaxed) {
            let started = Instant::now();
            match self.once(&mut conn, &mut hostname, &*router) {
                Ok(()) => {
                    if failures > 0 {
                        self.status.set_problems(Vec::new());
                    }
                    failures = 0;
                }
                Err(e) => {
                    conn = None;
                    failures += 1;
                    self.metrics.errors.fetch_add(1, Ordering::Relaxed);
                    let server = self.server();
                    log::warn(&format!("mysql_query {server}: {e}; retry {failures}"));
                    self.status.set_problems(vec![SourceProblem {
                        path: server,
                        reason: "query_failed",
                        message: format!("{e:#}"),
                    }]);
                }
            }
            let wait = if failures == 0 {
                cfg.interval.saturating_sub(started.elapsed())
            } else {
                Duration::from_secs(1u64 << failures.min(6))
                    .min(cfg.interval.max(Duration::from_secs(1)))
            };
            let until = Instant::now() + wait;
            while !stop.load(Ordering::Relaxed) && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(50).min(until - Instant::now()));
            }
        }
    }

    fn once(
        &self,
        conn: &mut Option<Connection>,
        hostname: &mut Option<String>,
        router: &dyn Downstream,
    ) -> anyhow::Result<()> {
        let cfg = &self.config;
        if conn.is_none() {
            *conn = Some(Connection::connect(&cfg.connect)?);
        }
        let c = conn.as_mut().expect("connected");
        if hostname.is_none() {
            let r = c.query("SELECT @@hostname")?;
            *hostname = Some(
                r.rows
                    .first()
                    .and_then(|row| row[0].clone())
                    .unwrap_or_default(),
            );
        }
        let host = hostname.as_deref().unwrap_or_default();
        let result = c.query(&cfg.query)?;
        let tag: Arc<str> = Arc::from(
            cfg.tag
                .replace("${hostname}", host)
                .replace("__HOSTNAME__", host),
        );
        let events = shape(cfg, host, &result, now_nanos());
        let n = events.len() as u64;
        if n > 0 {
            router.emit(&tag, events)?;
            router.sync()?;
            PluginMetrics::add(&self.metrics.records_in, n);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(nest: bool, host: bool, count: bool) -> MysqlQueryConfig {
        let node = crate::yaml::parse(&format!(
            "tag: t\nquery: q\nnest_result: {nest}\nrecord_hostname: {host}\nrow_count: {count}\nnest_key: data\n"
        ))
        .unwrap()
        .unwrap();
        let mut f = Fields::new(&node, "mysql_query").unwrap();
        let c = MysqlQueryConfig::from_config(&mut f).unwrap();
        f.finish().unwrap();
        c
    }

    #[test]
    fn shapes_match_fluent_plugin_mysql_query() {
        let result = QueryResult {
            columns: vec!["Variable_name".into(), "Value".into()],
            rows: vec![
                vec![Some("thread_cache_size".into()), Some("16".into())],
                vec![Some("thread_stack".into()), None],
            ],
        };
        let flat = shape(&cfg(false, true, true), "db1", &result, 0);
        assert_eq!(flat.len(), 2);
        assert_eq!(
            serde_json::to_string(&flat[0].record).unwrap(),
            r#"{"hostname":"db1","row_count":2,"Variable_name":"thread_cache_size","Value":"16"}"#
        );
        assert_eq!(flat[1].record["Value"], Value::Null);
        let nested = shape(&cfg(true, true, false), "db1", &result, 0);
        assert_eq!(nested.len(), 1);
        assert_eq!(
            serde_json::to_string(&nested[0].record).unwrap(),
            r#"{"hostname":"db1","data":[{"Variable_name":"thread_cache_size","Value":"16"},{"Variable_name":"thread_stack","Value":null}]}"#
        );
        let empty = shape(&cfg(true, false, true), "db1", &QueryResult::default(), 0);
        assert_eq!(
            serde_json::to_string(&empty[0].record).unwrap(),
            r#"{"row_count":0,"data":[]}"#
        );
        assert!(shape(&cfg(false, false, false), "db1", &QueryResult::default(), 0).is_empty());
    }
}
