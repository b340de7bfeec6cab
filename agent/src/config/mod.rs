//! The agent's configuration: YAML read through the prefix's libyaml into
//! typed structs. Every error names the file, line and column.

pub mod fields;
pub mod named_file;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use fields::{error, Fields};

use crate::filters::Filter;
use crate::outputs::OutputConfig;
use crate::sources::SourceSettings;
use crate::tag_pattern::TagPattern;
use crate::yaml::NodeKind;

pub struct Config {
    pub system: SystemConfig,
    pub sources: Vec<Box<dyn SourceSettings>>,
    pub filters: Vec<(TagPattern, Filter)>,
    pub outputs: Vec<OutputConfig>,
    /// The query exporter, from an `exporter:` section or `exporter_file:`.
    pub exporter: Option<crate::exporter::ExporterConfig>,
}

#[derive(Debug, Clone)]
pub struct SystemConfig {
    /// Where `/metrics` is served; off unless set.
    pub metrics_bind: Option<SocketAddr>,
    /// How long SIGTERM waits for buffers to drain.
    pub shutdown_timeout: Duration,
}

impl Config {
    /// Loads and validates; the error is one line: `file:line:column: what`.
    /// Also returns the text it was parsed from: a reload that fails to
    /// start the new configuration starts this one again from it.
    pub fn load_with_text(path: &Path) -> anyhow::Result<(Config, String)> {
        let text = read_config_text(path)?;
        let config = Config::parse(&text).map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?;
        Ok((config, text))
    }

    pub fn parse(text: &str) -> Result<Config, fields::ConfigError> {
        let root = crate::yaml::parse(text).map_err(|e| fields::ConfigError {
            mark: e.mark,
            message: format!("YAML syntax: {}", e.message),
        })?;
        let Some(root) = root else {
            return Err(fields::ConfigError {
                mark: Default::default(),
                message: "the config is empty".into(),
            });
        };
        let mut top = Fields::new(&root, "config")?;

        let system = match top.take("system") {
            Some(node) => {
                let mut s = Fields::new(node, "system")?;
                let metrics_bind = metrics_bind(&mut s)?;
                let shutdown_timeout = s.duration("shutdown_timeout", Duration::from_secs(60))?;
                s.finish()?;
                SystemConfig {
                    metrics_bind,
                    shutdown_timeout,
                }
            }
            None => SystemConfig {
                metrics_bind: None,
                shutdown_timeout: Duration::from_secs(60),
            },
        };

        let mut sources = Vec::new();
        for item in list(top.take("sources"), "sources")? {
            let mut f = Fields::new(item, "source")?;
            let kind = f.required_string("type")?;
            sources.push(crate::sources::from_config(&kind, &mut f)?);
            f.finish()?;
        }
        let mut filters = Vec::new();
        for item in list(top.take("filters"), "filters")? {
            let mut f = Fields::new(item, "filter")?;
            let pattern_node = f.required("match")?;
            let pattern = TagPattern::parse(&fields::string(pattern_node)?)
                .or_else(|e| error(pattern_node, e))?;
            let kind = f.required_string("type")?;
            filters.push((pattern, Filter::from_config(&kind, &mut f)?));
            f.finish()?;
        }
        let mut outputs = Vec::new();
        let output_nodes = list(top.take("outputs"), "outputs")?;
        for (i, item) in output_nodes.iter().enumerate() {
            let mut f = Fields::new(item, "output")?;
            outputs.push(OutputConfig::from_config(i, &mut f)?);
            f.finish()?;
        }
        let exporter = match (top.take("exporter"), top.take("exporter_file")) {
            (Some(node), None) => {
                let mut f = Fields::new(node, "exporter")?;
                let cfg = crate::exporter::ExporterConfig::from_config(&mut f)?;
                f.finish()?;
                Some(cfg)
            }
            (None, Some(node)) => {
                let path = fields::string(node)?;
                let text = read_config_text(Path::new(&path))
                    .or_else(|e| error(node, format!("exporter_file {e:#}")))?;
                Some(
                    parse_exporter_file(&text)
                        .or_else(|e| error(node, format!("exporter_file {path}:{e}")))?,
                )
            }
            (None, None) => None,
            (Some(node), Some(_)) => {
                return error(node, "give either `exporter` or `exporter_file`, not both")
            }
        };
        top.finish()?;
        if sources.is_empty() && exporter.is_none() {
            return error(&root, "no sources: nothing would be read");
        }
        if outputs.is_empty() && !sources.is_empty() {
            return error(&root, "no outputs: records would have nowhere to go");
        }
        let mut ids = std::collections::HashSet::new();
        for (o, node) in outputs.iter().zip(&output_nodes) {
            for s in &o.sinks {
                if !ids.insert(s.id.clone()) {
                    return error(node, format!("output id `{}` is used twice", s.id));
                }
            }
        }
        Ok(Config {
            system,
            sources,
            filters,
            outputs,
            exporter,
        })
    }
}

/// `system.metrics.bind` of a `system` section.
fn metrics_bind(system: &mut Fields) -> Result<Option<SocketAddr>, fields::ConfigError> {
    let Some(m) = system.take("metrics") else {
        return Ok(None);
    };
    let mut mf = Fields::new(m, "system.metrics")?;
    let bind_node = mf.required("bind")?;
    let bind = fields::string(bind_node)?;
    mf.finish()?;
    let addr = bind.parse().or_else(|_| {
        error(
            bind_node,
            format!("system.metrics.bind `{bind}` is not an address like 127.0.0.1:24231"),
        )
    })?;
    Ok(Some(addr))
}

/// A config file's text: at most 4 MiB, UTF-8 (else the line and column
/// of the first invalid byte), never waited on (see `named_file`).
fn read_config_text(path: &Path) -> anyhow::Result<String> {
    let bytes = named_file::read(path, named_file::Kind::Config)?;
    String::from_utf8(bytes).map_err(|e| {
        let good = &e.as_bytes()[..e.utf8_error().valid_up_to()];
        let line = good.iter().filter(|&&b| b == b'\n').count() + 1;
        let line_start = good.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
        let column = String::from_utf8_lossy(&good[line_start..]).chars().count() + 1;
        anyhow::anyhow!("{}:{line}:{column}: not UTF-8", path.display())
    })
}

/// Only `system.metrics.bind` of a config file, for `my-agent status`: an
/// operator's shell may not read the secrets or the server's option files
/// that a full load needs, and has no use for them here.
pub fn metrics_bind_of(path: &Path) -> anyhow::Result<Option<SocketAddr>> {
    let text = read_config_text(path)?;
    let at = |e: fields::ConfigError| anyhow::anyhow!("{}:{e}", path.display());
    let root = crate::yaml::parse(&text)
        .map_err(|e| anyhow::anyhow!("{}:{e}", path.display()))?
        .ok_or_else(|| anyhow::anyhow!("{}: the config is empty", path.display()))?;
    let mut top = Fields::new(&root, "config").map_err(at)?;
    match top.take("system") {
        Some(node) => metrics_bind(&mut Fields::new(node, "system").map_err(at)?).map_err(at),
        None => Ok(None),
    }
}

/// A query-exporter file on its own, read with the same loader.
fn parse_exporter_file(text: &str) -> Result<crate::exporter::ExporterConfig, fields::ConfigError> {
    let root = crate::yaml::parse(text)
        .map_err(|e| fields::ConfigError {
            mark: e.mark,
            message: format!("YAML syntax: {}", e.message),
        })?
        .ok_or(fields::ConfigError {
            mark: Default::default(),
            message: "the file is empty".into(),
        })?;
    let mut f = Fields::new(&root, "exporter")?;
    let cfg = crate::exporter::ExporterConfig::from_config(&mut f)?;
    f.finish()?;
    Ok(cfg)
}

fn list<'a>(
    node: Option<&'a crate::yaml::Node>,
    what: &str,
) -> Result<Vec<&'a crate::yaml::Node>, fields::ConfigError> {
    match node {
        None => Ok(Vec::new()),
        Some(n) => match &n.kind {
            NodeKind::Seq(items) => Ok(items.iter().collect()),
            _ => error(n, format!("`{what}` must be a list")),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
sources:
  - type: tail
    path: /data/mysql/*.err
    pos_file: /var/lib/my-agent/error.pos
    tag: mysql.error
filters:
  - match: "mysql.**"
    type: record_transformer
    record:
      hostname: "${hostname}"
      timestamp: "${time}"
outputs:
  - match: "mysql.**"
    type: http
    endpoint: http://127.0.0.1:9200/_bulk
    buffer:
      type: file
      path: /var/lib/my-agent/buffer/es
      flush_interval: 5s
"#;

    fn err(text: &str) -> String {
        match Config::parse(text) {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[test]
    fn parses_a_pipeline() {
        let c = Config::parse(GOOD).unwrap();
        assert_eq!(c.sources.len(), 1);
        assert_eq!(c.filters.len(), 1);
        assert_eq!(
            c.outputs[0].sinks[0].buffer.flush_interval,
            Duration::from_secs(5)
        );
        assert_eq!(
            c.outputs[0].sinks[0].dead_letter_dir.as_deref(),
            Some(Path::new("/var/lib/my-agent/buffer/es/dead-letter"))
        );
    }

    #[test]
    fn status_command_reads_only_the_metrics_bind() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.yml");
        // The rest would not load here (no such password file): not read.
        std::fs::write(
            &path,
            "system:\n  metrics:\n    bind: 0.0.0.0:9999\nsources:\n  - type: mysql_query\n    password_file: /nonexistent\n",
        )
        .unwrap();
        assert_eq!(
            metrics_bind_of(&path).unwrap(),
            Some("0.0.0.0:9999".parse().unwrap())
        );
        std::fs::write(&path, GOOD).unwrap();
        assert_eq!(metrics_bind_of(&path).unwrap(), None);
        std::fs::write(&path, "system:\n  metrics:\n    bind: localhost\n").unwrap();
        let e = metrics_bind_of(&path).unwrap_err().to_string();
        assert!(e.ends_with("agent.yml:3:11: system.metrics.bind `localhost` is not an address like 127.0.0.1:24231"), "{e}");
    }

    #[test]
    fn errors_name_line_and_column() {
        assert_eq!(
            err(&GOOD.replace("flush_interval: 5s", "flush_interval: 5 parsecs")),
            "20:23: expected a duration like 1s, 30s, 5m or 72h, found `5 parsecs`"
        );
        assert_eq!(
            err(&GOOD.replace(
                "    tag: mysql.error\n",
                "    tag: mysql.error\n    colour: red\n"
            )),
            "7:5: source: unknown key `colour`"
        );
        assert_eq!(
            err(&GOOD.replace("    path: /data/mysql/*.err\n", "")),
            "3:5: source: missing required key `path`"
        );
        assert!(err(&GOOD.replace("type: http", "type: [http")).contains(": YAML syntax: "));
        assert_eq!(
            err(&GOOD.replace("endpoint: http://", "endpoint: ftp://")),
            "16:15: http: endpoint `ftp://127.0.0.1:9200/_bulk` is not an http:// or https:// URL"
        );
    }
}
