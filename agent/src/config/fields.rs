//! Reading typed values out of YAML nodes, with errors that point at the
//! node. Every mapping is read through `Fields`, which rejects keys nobody
//! asked for: a misspelt option is an error, not silently ignored.

use std::collections::HashMap;
use std::time::Duration;

use crate::yaml::{Mark, Node, NodeKind};

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{column}: {message}", line = mark.line, column = mark.column)]
pub struct ConfigError {
    pub mark: Mark,
    pub message: String,
}

pub type Result<T> = std::result::Result<T, ConfigError>;

pub fn error<T>(node: &Node, message: impl Into<String>) -> Result<T> {
    Err(ConfigError {
        mark: node.mark,
        message: message.into(),
    })
}

pub struct Fields<'a> {
    node: &'a Node,
    what: &'a str,
    pairs: Vec<(&'a str, &'a Node, &'a Node)>,
    used: Vec<bool>,
    /// Where each key is in `pairs`: loading stays linear in the size of
    /// the config (a mapping with 100,000 keys was quadratic).
    index: HashMap<&'a str, usize>,
}

impl<'a> Fields<'a> {
    /// `what` names the section in messages ("tail source", "buffer").
    pub fn new(node: &'a Node, what: &'a str) -> Result<Fields<'a>> {
        let NodeKind::Map(pairs) = &node.kind else {
            return error(
                node,
                format!("{what}: expected a mapping, found {}", node.describe()),
            );
        };
        let mut out = Vec::with_capacity(pairs.len());
        let mut index = HashMap::with_capacity(pairs.len());
        for (k, v) in pairs {
            let NodeKind::Scalar { value, .. } = &k.kind else {
                return error(k, format!("{what}: keys must be plain strings"));
            };
            if index.insert(value.as_str(), out.len()).is_some() {
                return error(k, format!("{what}: duplicate key `{value}`"));
            }
            out.push((value.as_str(), k, v));
        }
        let used = vec![false; out.len()];
        Ok(Fields {
            node,
            what,
            pairs: out,
            used,
            index,
        })
    }

    pub fn node(&self) -> &'a Node {
        self.node
    }

    pub fn take(&mut self, key: &str) -> Option<&'a Node> {
        let i = *self.index.get(key)?;
        self.used[i] = true;
        let v = self.pairs[i].2;
        (!v.is_null()).then_some(v)
    }

    pub fn required(&mut self, key: &str) -> Result<&'a Node> {
        match self.take(key) {
            Some(v) => Ok(v),
            None => error(
                self.node,
                format!("{}: missing required key `{key}`", self.what),
            ),
        }
    }

    pub fn string(&mut self, key: &str) -> Result<Option<String>> {
        self.take(key).map(string).transpose()
    }

    pub fn required_string(&mut self, key: &str) -> Result<String> {
        string(self.required(key)?)
    }

    pub fn bool(&mut self, key: &str, default: bool) -> Result<bool> {
        self.take(key).map_or(Ok(default), boolean)
    }

    pub fn duration(&mut self, key: &str, default: Duration) -> Result<Duration> {
        self.take(key).map_or(Ok(default), duration)
    }

    pub fn size(&mut self, key: &str, default: u64) -> Result<u64> {
        self.take(key).map_or(Ok(default), size)
    }

    pub fn uint(&mut self, key: &str, default: u64) -> Result<u64> {
        self.take(key).map_or(Ok(default), uint)
    }

    pub fn float(&mut self, key: &str, default: f64) -> Result<f64> {
        self.take(key).map_or(Ok(default), |n| {
            string(n)?
                .parse()
                .or_else(|_| error(n, "expected a number"))
        })
    }

    /// A secret given as `key`, `key_file` (kept out of the world-readable
    /// config) or `key_env` (an environment variable); at most one.
    pub fn secret(&mut self, key: &str) -> Result<Option<String>> {
        let inline = self.take(key);
        let file = self.take(&format!("{key}_file"));
        let env = self.take(&format!("{key}_env"));
        match (inline, file, env) {
            (None, None, None) => Ok(None),
            (Some(v), None, None) => string(v).map(Some),
            (None, Some(node), None) => {
                let path = string(node)?;
                crate::config::named_file::read_secret(std::path::Path::new(&path))
                    .map(Some)
                    .or_else(|e| error(node, format!("{}: {key}_file {e}", self.what)))
            }
            (None, None, Some(node)) => {
                let var = string(node)?;
                std::env::var(&var).map(Some).or_else(|_| {
                    error(
                        node,
                        format!("{}: environment variable {var} is not set", self.what),
                    )
                })
            }
            _ => error(
                self.node,
                format!("{}: give one of {key}, {key}_file or {key}_env", self.what),
            ),
        }
    }

    /// A file path, proven a regular file within `kind`'s size (read later,
    /// when the pipeline is built, or by a library).
    pub fn file(
        &mut self,
        key: &str,
        kind: crate::config::named_file::Kind,
    ) -> Result<Option<std::path::PathBuf>> {
        let Some(node) = self.take(key) else {
            return Ok(None);
        };
        let path = std::path::PathBuf::from(string(node)?);
        crate::config::named_file::check(&path, kind)
            .or_else(|e| error(node, format!("{}: {key} {e}", self.what)))?;
        Ok(Some(path))
    }

    /// A list of strings, also accepted as one comma-separated string.
    pub fn string_list(&mut self, key: &str) -> Result<Vec<String>> {
        let Some(node) = self.take(key) else {
            return Ok(Vec::new());
        };
        match &node.kind {
            NodeKind::Seq(items) => items.iter().map(string).collect(),
            NodeKind::Scalar { value, .. } => Ok(value
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect()),
            NodeKind::Map(_) => error(node, format!("`{key}`: expected a list of strings")),
        }
    }

    /// Ends reading: any key not taken is an error at that key.
    pub fn finish(self) -> Result<()> {
        for (i, (name, key, _)) in self.pairs.iter().enumerate() {
            if !self.used[i] {
                return error(key, format!("{}: unknown key `{name}`", self.what));
            }
        }
        Ok(())
    }
}

pub fn string(node: &Node) -> Result<String> {
    match &node.kind {
        NodeKind::Scalar { value, .. } => Ok(value.clone()),
        _ => error(
            node,
            format!("expected a string, found {}", node.describe()),
        ),
    }
}

pub fn boolean(node: &Node) -> Result<bool> {
    match string(node)?.as_str() {
        "true" | "yes" | "on" => Ok(true),
        "false" | "no" | "off" => Ok(false),
        other => error(node, format!("expected true or false, found `{other}`")),
    }
}

pub fn uint(node: &Node) -> Result<u64> {
    let s = string(node)?;
    s.parse()
        .or_else(|_| error(node, format!("expected a whole number, found `{s}`")))
}

/// `500ms`, `1s`, `30s`, `5m`, `72h`, `1d`; a bare number is seconds.
pub fn duration(node: &Node) -> Result<Duration> {
    let s = string(node)?;
    parse_duration(&s).ok_or(()).or_else(|_| {
        error(
            node,
            format!("expected a duration like 1s, 30s, 5m or 72h, found `{s}`"),
        )
    })
}

pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let secs = match unit.trim() {
        "" | "s" => n,
        "ms" => n / 1000.0,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        "d" => n * 86400.0,
        _ => return None,
    };
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs))
}

/// `512`, `64k`, `1m`, `8g` (powers of 1024; a trailing `b`/`ib` allowed).
pub fn size(node: &Node) -> Result<u64> {
    let s = string(node)?;
    parse_size(&s).ok_or(()).or_else(|_| {
        error(
            node,
            format!("expected a size like 512k, 1m or 8g, found `{s}`"),
        )
    })
}

pub fn parse_size(s: &str) -> Option<u64> {
    let lower = s.trim().to_ascii_lowercase();
    let t = lower.trim_end_matches("ib").trim_end_matches('b');
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim() {
        "" => 1,
        "k" => 1 << 10,
        "m" => 1 << 20,
        "g" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("1s"), Some(Duration::from_secs(1)));
        assert_eq!(parse_duration("30s"), Some(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Some(Duration::from_secs(300)));
        assert_eq!(parse_duration("72h"), Some(Duration::from_secs(72 * 3600)));
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0.5"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("5 parsecs"), None);
        assert_eq!(parse_duration("-1s"), None);
        assert_eq!(parse_size("1m"), Some(1 << 20));
        assert_eq!(parse_size("64KiB"), Some(64 << 10));
        assert_eq!(parse_size("8g"), Some(8 << 30));
        assert_eq!(parse_size("12"), Some(12));
        assert_eq!(parse_size("1t"), None);
    }

    #[test]
    fn unknown_and_missing_keys_point_at_the_node() {
        let root = crate::yaml::parse("type: tail\npth: /x\n")
            .unwrap()
            .unwrap();
        let mut f = Fields::new(&root, "tail source").unwrap();
        f.required_string("type").unwrap();
        let e = f.required_string("path").unwrap_err();
        assert_eq!(
            e.to_string(),
            "1:1: tail source: missing required key `path`"
        );
        let e = f.finish().unwrap_err();
        assert_eq!(e.to_string(), "2:1: tail source: unknown key `pth`");
    }
}
