//! The options of a `tail` or `mysql_slow_query` source, read from its
//! config section (unknown keys are errors, see `Fields`).

use std::path::PathBuf;
use std::time::Duration;

use crate::config::fields::{error, Fields, Result as ConfigResult};
use crate::mysql::option_files::{self, OptionFileError, ResolvedLog, DEFAULT_OPTION_FILES};
use crate::yaml::NodeKind;

/// A quarter of the usual soft limit (1024): several sources, the buffers,
/// connections and listeners still fit beside it.
const DEFAULT_MAX_OPEN_FILES: usize = 256;

/// Bytes read from a file per batch. A batch lives on as events, frames
/// and buffer writes until it is appended, so its size sets most of the
/// working memory while a backlog is read: 64 KiB held the 1M-line bench's
/// peak RSS 2 MiB under 256 KiB's for the same CPU and time (and the same
/// CPU for the slow log, whose entries span reads anyway).
const DEFAULT_READ_BYTES: usize = 64 << 10;
/// The read buffer is allocated at this size: a config must not make it
/// zero (nothing is ever read) or exhaust memory.
const MIN_READ_BYTES: u64 = 4 << 10;
const MAX_READ_BYTES: u64 = 64 << 20;

#[derive(Debug, Clone)]
pub struct TailConfig {
    /// `tail` or `mysql_slow_query`, for messages and `/status`.
    pub kind: &'static str,
    /// Globs; with `path: auto`, the one log file the server's option
    /// files name.
    pub paths: Vec<String>,
    /// Set for `path: auto`: the resolved log and where it came from.
    pub auto: Option<ResolvedLog>,
    pub exclude_paths: Vec<String>,
    pub pos_file: Option<PathBuf>,
    pub tag: String,
    pub read_from_head: bool,
    pub refresh_interval: Duration,
    pub rotate_wait: Duration,
    pub max_line_size: usize,
    pub message_key: &'static str,
    /// How often files are checked for new data when idle.
    pub poll_interval: Duration,
    /// Bytes read from one file before its records are handed on.
    pub read_bytes_limit: usize,
    /// Descriptors this source may hold: beyond it, files read to their
    /// end are closed (least recently active first) and reopened when they
    /// grow. Files whose path no longer names them keep theirs until read.
    pub max_open_files: usize,
    /// Set for `mysql_slow_query`: lines are assembled into slow-log
    /// entries, and positions only ever point at entry boundaries.
    pub slow_log: Option<SlowLogOptions>,
    /// The field that gets each record's id (`sources::file_key`), so a
    /// collector can drop records sent again after a crash; None: no id.
    pub id_key: Option<&'static str>,
}

/// `path: auto`: the error log (`tail`) or the slow query log
/// (`mysql_slow_query`) that the server's option files name.
fn resolve_auto(slow_log: bool, option_files: &[String]) -> Result<ResolvedLog, OptionFileError> {
    let files: Vec<PathBuf> = if option_files.is_empty() {
        DEFAULT_OPTION_FILES.iter().map(PathBuf::from).collect()
    } else {
        option_files.iter().map(PathBuf::from).collect()
    };
    let options = option_files::read(&files)?;
    let host = crate::event::hostname();
    Ok(if slow_log {
        options.slow_query_log(&host)
    } else {
        options.error_log(&host)
    })
}

#[derive(Debug, Clone)]
pub struct SlowLogOptions {
    /// Longer entries are truncated (and flagged), never fatal.
    pub max_entry_bytes: usize,
    /// An entry at the end of a file is complete once the file has been
    /// quiet this long.
    pub entry_timeout: Duration,
}

impl TailConfig {
    /// `slow_log`: read the options of `mysql_slow_query`, which follows
    /// files exactly like `tail` but frames slow-log entries.
    pub fn from_config(f: &mut Fields, slow_log: bool) -> ConfigResult<TailConfig> {
        let kind = if slow_log { "mysql_slow_query" } else { "tail" };
        let path_node = f.required("path")?;
        let option_files = f.string_list("mysql_option_files")?;
        let is_auto = matches!(&path_node.kind, NodeKind::Scalar { value, .. } if value == "auto");
        let (paths, auto) = if is_auto {
            let log = resolve_auto(slow_log, &option_files)
                .or_else(|e| error(path_node, format!("{kind}: path auto: {e}")))?;
            // The server's path is a file name, never a pattern.
            let pattern = glob::Pattern::escape(&log.path.to_string_lossy());
            (vec![pattern], Some(log))
        } else {
            if !option_files.is_empty() {
                return error(
                    f.node(),
                    format!("{kind}: mysql_option_files applies only to `path: auto`"),
                );
            }
            let paths = match &path_node.kind {
                NodeKind::Seq(items) => items
                    .iter()
                    .map(crate::config::fields::string)
                    .collect::<ConfigResult<Vec<_>>>()?,
                _ => crate::config::fields::string(path_node)?
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .collect(),
            };
            for p in &paths {
                if !p.starts_with('/') {
                    return error(
                        path_node,
                        format!("{kind}: path `{p}` must be absolute (or `auto`)"),
                    );
                }
                if let Err(e) = glob::Pattern::new(p) {
                    return error(path_node, format!("{kind}: bad glob `{p}`: {e}"));
                }
            }
            (paths, None)
        };
        let cfg = TailConfig {
            kind,
            paths,
            auto,
            exclude_paths: f.string_list("exclude_path")?,
            pos_file: f.string("pos_file")?.map(PathBuf::from),
            tag: f.required_string("tag")?,
            read_from_head: f.bool("read_from_head", false)?,
            refresh_interval: f.duration("refresh_interval", Duration::from_secs(60))?,
            rotate_wait: f.duration("rotate_wait", Duration::from_secs(5))?,
            max_line_size: f.size("max_line_size", 256 << 10)? as usize,
            message_key: crate::record::intern(
                f.string("message_key")?.as_deref().unwrap_or("message"),
            ),
            poll_interval: f.duration("poll_interval", Duration::from_millis(250))?,
            read_bytes_limit: match f.take("read_bytes_limit_per_batch") {
                None => DEFAULT_READ_BYTES,
                Some(node) => match crate::config::fields::size(node)? {
                    n if (MIN_READ_BYTES..=MAX_READ_BYTES).contains(&n) => n as usize,
                    n => {
                        return error(
                            node,
                            format!(
                                "{kind}: read_bytes_limit_per_batch must be between 4KiB and 64MiB, not {n} bytes"
                            ),
                        )
                    }
                },
            },
            max_open_files: match f.take("max_open_files") {
                None => DEFAULT_MAX_OPEN_FILES,
                Some(node) => match crate::config::fields::uint(node)? {
                    0 => return error(node, format!("{kind}: max_open_files must be at least 1")),
                    n => n as usize,
                },
            },
            slow_log: None,
            id_key: None,
        };
        let mut cfg = cfg;
        if let Some(node) = f.take("id_key") {
            let field = match &node.kind {
                NodeKind::Scalar { value, .. } if !value.is_empty() => value.clone(),
                NodeKind::Scalar { .. } => {
                    return error(
                        node,
                        format!("{kind}: id_key must be a field name, not empty"),
                    )
                }
                _ => {
                    return error(
                        node,
                        format!(
                            "{kind}: id_key: expected a field name, found {}",
                            node.describe()
                        ),
                    )
                }
            };
            if !slow_log && field == cfg.message_key {
                return error(
                    node,
                    format!("{kind}: id_key `{field}` is the message_key; the id would replace the line"),
                );
            }
            cfg.id_key = Some(crate::record::intern(&field));
        }
        if slow_log {
            // Half the http output's default max_request_bytes (1 MiB): a
            // cut entry, its header fields and JSON escaping still fit in
            // one ordinary request.
            let max_entry_bytes = f.size("max_entry_size", 512 << 10)? as usize;
            cfg.slow_log = Some(SlowLogOptions {
                max_entry_bytes,
                entry_timeout: f.duration("entry_timeout", Duration::from_secs(1))?,
            });
            // Lines are bounded by the entry size instead.
            cfg.max_line_size = max_entry_bytes.max(16);
        }
        if cfg.max_line_size < 16 {
            return error(f.node(), "tail: max_line_size must be at least 16 bytes");
        }
        Ok(cfg)
    }
}

/// A source's options from the YAML of its section, for unit tests.
#[cfg(test)]
pub(super) fn parse(text: &str, slow_log: bool) -> ConfigResult<TailConfig> {
    let root = crate::yaml::parse(text).unwrap().unwrap();
    let mut f = Fields::new(&root, "source")?;
    let cfg = TailConfig::from_config(&mut f, slow_log)?;
    f.finish()?;
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_key_is_off_by_default_and_must_name_a_field() {
        let base = "path: /var/log/mysql/*.err\ntag: t\n";
        assert_eq!(parse(base, false).unwrap().id_key, None);
        let on = parse(&format!("{base}id_key: _id\n"), false).unwrap();
        assert_eq!(on.id_key, Some("_id"));
        let slow = parse(&format!("{base}id_key: event_id\n"), true).unwrap();
        assert_eq!(slow.id_key, Some("event_id"));

        let err = |extra: &str| {
            parse(&format!("{base}{extra}"), false)
                .unwrap_err()
                .to_string()
        };
        assert_eq!(
            err("id_key: \"\"\n"),
            "3:9: tail: id_key must be a field name, not empty"
        );
        assert_eq!(
            err("id_key: [a, b]\n"),
            "3:9: tail: id_key: expected a field name, found a list"
        );
        assert_eq!(
            err("message_key: log\nid_key: log\n"),
            "4:9: tail: id_key `log` is the message_key; the id would replace the line"
        );
    }

    #[test]
    fn read_bytes_limit_has_a_default_and_bounds_that_name_the_line() {
        let base = "path: /var/log/mysql/*.err\ntag: t\n";
        assert_eq!(parse(base, false).unwrap().read_bytes_limit, 64 << 10);
        let set = parse(&format!("{base}read_bytes_limit_per_batch: 1MiB\n"), true).unwrap();
        assert_eq!(set.read_bytes_limit, 1 << 20);
        for (value, bytes) in [("0", 0u64), ("100", 100), ("1GiB", 1 << 30)] {
            let err = parse(
                &format!("{base}read_bytes_limit_per_batch: {value}\n"),
                false,
            )
            .unwrap_err()
            .to_string();
            assert_eq!(
                err,
                format!("3:29: tail: read_bytes_limit_per_batch must be between 4KiB and 64MiB, not {bytes} bytes")
            );
        }
    }
}
