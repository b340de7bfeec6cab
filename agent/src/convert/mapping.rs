//! Fluentd directives to my-agent's configuration, one mapping per plugin.
//! Each parameter is either mapped, noted in a comment where it has no
//! effect here (with why), or reported as unmapped with its file and line:
//! nothing is dropped without a word.

use std::collections::HashSet;
use std::path::Path;

use super::fluentd_conf::{At, Param, Section, Value};
use super::yaml_out::Node;
use crate::config::fields::{parse_duration, parse_size};
use crate::tag_pattern::TagPattern;

/// A part of the Fluentd configuration that has no my-agent equivalent.
#[derive(Debug, Clone)]
pub struct Unmapped {
    pub at: At,
    pub what: String,
}

impl std::fmt::Display for Unmapped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.at, self.what)
    }
}

pub struct Converted {
    pub doc: Node,
    pub unmapped: Vec<Unmapped>,
}

#[derive(Default)]
struct Cx {
    sources: Vec<Node>,
    filters: Vec<Node>,
    outputs: Vec<Node>,
    unmapped: Vec<Unmapped>,
    /// Tags of the sources, with the label each sends to.
    /// None: the source's events carry the sender's tags (forward, http).
    source_tags: Vec<(Option<String>, Option<String>, At)>,
    /// Filter and match patterns, with the label they are in.
    /// In file order; `true` for a `<match>`, `false` for a `<filter>`.
    patterns: Vec<(String, Option<String>, At, bool)>,
    /// Comments for the top of the converted file.
    notes: Vec<String>,
    /// Where my-agent keeps positions and buffers (`--state-dir`).
    state_dir: String,
    buffers: usize,
    state_paths: HashSet<String>,
}

impl Cx {
    /// A Fluentd state path (pos_file, buffer_path) moved under my-agent's
    /// state directory: the formats differ, and the service user cannot
    /// (and must not) write td-agent's files.
    /// Two Fluentd paths with one file name get two names here.
    fn state_path(&mut self, sub: &str, fluentd: &str) -> String {
        let base = Path::new(fluentd.trim_end_matches(['*', '.']))
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "state".into());
        let dir = self.state_dir.trim_end_matches('/');
        let mut n = 1;
        loop {
            let name = if n == 1 {
                base.clone()
            } else {
                format!("{base}-{n}")
            };
            let path = if sub.is_empty() {
                format!("{dir}/{name}")
            } else {
                format!("{dir}/{sub}/{name}")
            };
            if self.state_paths.insert(path.clone()) {
                return path;
            }
            n += 1;
        }
    }
}

impl Cx {
    fn unmapped(&mut self, at: &At, what: impl Into<String>) {
        self.unmapped.push(Unmapped {
            at: at.clone(),
            what: what.into(),
        });
    }
}

/// A section's parameters, each taken once; what is left is reported.
struct Params<'a> {
    s: &'a Section,
    taken: HashSet<&'a str>,
    what: String,
}

impl<'a> Params<'a> {
    fn new(s: &'a Section, what: impl Into<String>) -> Params<'a> {
        let mut taken = HashSet::new();
        // The type is read by whoever dispatched here; ids and per-plugin
        // log levels name nothing my-agent needs.
        for k in ["@type", "type", "@id", "id", "@log_level", "log_level"] {
            taken.insert(k);
        }
        Params {
            s,
            taken,
            what: what.into(),
        }
    }

    fn take(&mut self, key: &'a str) -> Option<&'a Param> {
        let p = self.s.param(key)?;
        self.taken.insert(key);
        Some(p)
    }

    fn finish(self, cx: &mut Cx) {
        for p in &self.s.params {
            if !self.taken.contains(p.key.as_str()) {
                cx.unmapped(
                    &p.at,
                    format!("`{}` of {} is not supported", p.key, self.what),
                );
            }
        }
    }
}

fn boolean(cx: &mut Cx, p: &Param) -> Option<bool> {
    // Fluentd's own reading: exactly these words.
    match p.value.text() {
        "true" | "yes" | "" => Some(true),
        "false" | "no" => Some(false),
        other => {
            cx.unmapped(
                &p.at,
                format!("`{}`: expected true or false, found `{other}`", p.key),
            );
            None
        }
    }
}

/// Fluentd's times (`30`, `1s`, `0.5`, `5m`, `1h`, `1d`) as my-agent writes
/// them.
fn duration(cx: &mut Cx, p: &Param) -> Option<Node> {
    let text = p.value.text().trim();
    match parse_duration(text) {
        Some(_) if text.ends_with(|c: char| c.is_ascii_digit()) => {
            Some(Node::str(format!("{text}s")))
        }
        Some(_) => Some(Node::str(text)),
        None => {
            cx.unmapped(
                &p.at,
                format!(
                    "`{}`: expected a time like 30s, 5m or 1h, found `{text}`",
                    p.key
                ),
            );
            None
        }
    }
}

fn size(cx: &mut Cx, p: &Param) -> Option<(Node, u64)> {
    let text = p.value.text().trim().to_ascii_lowercase();
    match parse_size(&text) {
        Some(n) => Some((Node::str(text), n)),
        None => {
            cx.unmapped(
                &p.at,
                format!("`{}`: expected a size like 8m or 1g, found `{text}`", p.key),
            );
            None
        }
    }
}

fn integer(cx: &mut Cx, p: &Param) -> Option<Node> {
    match p.value.text().trim().parse::<i64>() {
        Ok(n) => Some(Node::Int(n)),
        Err(_) => {
            cx.unmapped(
                &p.at,
                format!(
                    "`{}`: expected a whole number, found `{}`",
                    p.key,
                    p.value.text()
                ),
            );
            None
        }
    }
}

/// A plain string value: embedded Ruby (`#{...}`) has no meaning here.
fn plain(cx: &mut Cx, p: &Param) -> Option<Node> {
    if let Value::Quoted(s) = &p.value {
        if s.contains("#{") {
            cx.unmapped(
                &p.at,
                format!("`{}`: embedded Ruby `{s}` cannot be converted here", p.key),
            );
            return None;
        }
    }
    Some(Node::str(p.value.text()))
}

/// `"#{Socket.gethostname}"` becomes `${hostname}` where my-agent expands
/// it (record values, a mysql_query tag); other Ruby cannot be converted.
fn with_hostname(cx: &mut Cx, p: &Param) -> Option<Node> {
    let text = p.value.text();
    let text = match &p.value {
        Value::Quoted(_) => text
            .replace("#{Socket.gethostname}", "${hostname}")
            .replace("#{Socket.gethostname()}", "${hostname}"),
        Value::Plain(_) => text.to_string(),
    };
    if text.contains("#{") {
        cx.unmapped(
            &p.at,
            format!(
                "`{}`: embedded Ruby in `{text}` cannot be converted (only Socket.gethostname)",
                p.key
            ),
        );
        return None;
    }
    Some(Node::str(text))
}

/// `ENV['X']` / `ENV["X"]` alone in a quoted value: the variable's name.
fn env_name(p: &Param) -> Option<String> {
    let Value::Quoted(s) = &p.value else {
        return None;
    };
    let inner = s.strip_prefix("#{ENV[")?.strip_suffix("]}")?;
    let name = inner.trim_matches(|c| c == '\'' || c == '"');
    (!name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'))
        .then(|| name.to_string())
}

/// A secret: written as given, or from the environment when Fluentd read
/// it from there (`<key>_env`).
fn secret(cx: &mut Cx, p: &Param, key: &str, into: &mut Node) {
    if let Some(name) = env_name(p) {
        into.set(&format!("{key}_env"), Node::str(name));
    } else if let Some(v) = plain(cx, p) {
        into.set(key, v);
    }
}

fn copy_param(
    cx: &mut Cx,
    params: &mut Params,
    from: &'static str,
    to: &str,
    into: &mut Node,
    kind: Kind,
) {
    let Some(p) = params.take(from) else {
        return;
    };
    let value = match kind {
        Kind::Str => plain(cx, p),
        Kind::Bool => boolean(cx, p).map(Node::Bool),
        Kind::Duration => duration(cx, p),
        Kind::Int => integer(cx, p),
        Kind::Size => size(cx, p).map(|(n, _)| n),
    };
    if let Some(v) = value {
        into.set(to, v);
    }
}

/// `copy_param` for each `(fluentd key, my-agent key, kind)` in `table`.
fn copy_params(
    cx: &mut Cx,
    params: &mut Params,
    out: &mut Node,
    table: &[(&'static str, &str, Kind)],
) {
    for &(from, to, kind) in table {
        copy_param(cx, params, from, to, out, kind);
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Bool,
    Duration,
    Int,
    Size,
}

fn kind_of(s: &Section) -> Option<String> {
    s.kind().map(|p| p.value.text().to_string())
}

/// Converts a parsed Fluentd configuration.
pub fn convert(root: &Section, state_dir: &str) -> Converted {
    let mut cx = Cx {
        state_dir: state_dir.to_string(),
        ..Cx::default()
    };
    top_level(&mut cx, root, None);
    check_labels(&mut cx);
    let mut doc = Node::map();
    doc.comment("Converted from a Fluentd configuration by `my-agent convert`.\nCheck it with: my-agent --config FILE --dry-run");
    for note in std::mem::take(&mut cx.notes) {
        doc.comment(note);
    }
    doc.set("sources", Node::List(std::mem::take(&mut cx.sources)));
    doc.set("filters", Node::List(std::mem::take(&mut cx.filters)));
    doc.set("outputs", Node::List(std::mem::take(&mut cx.outputs)));
    Converted {
        doc,
        unmapped: cx.unmapped,
    }
}

fn top_level(cx: &mut Cx, root: &Section, label: Option<&str>) {
    for p in &root.params {
        cx.unmapped(
            &p.at,
            format!("`{}` outside a section is not supported", p.key),
        );
    }
    for s in &root.sections {
        match (s.name.as_str(), label) {
            ("source", None) => source(cx, s),
            ("filter", _) => filter(cx, s, label),
            ("match", _) => {
                let patterns = pattern_of(s);
                cx.patterns.push((
                    patterns.clone(),
                    label.map(String::from),
                    s.at.clone(),
                    true,
                ));
                if let Some(mut out) = output(cx, s) {
                    let mut entry = Node::map();
                    entry.comment(format!("<match {}> at {}", s.arg, s.at));
                    entry.set("match", Node::str(patterns));
                    if let Node::Map(fields) = &mut out {
                        if let Node::Map(e) = &mut entry {
                            e.append(fields);
                        }
                    }
                    cx.outputs.push(entry);
                }
            }
            ("label", None) => {
                let name = s.arg.trim();
                if name == "@ERROR" || name == "@FLUENT_LOG" {
                    cx.unmapped(&s.at, format!("<label {name}>: Fluentd's own events have no my-agent equivalent (failed records go to each output's dead_letter_dir)"));
                    continue;
                }
                top_level(cx, s, Some(name));
            }
            ("system", None) => {
                // Fluentd's own process settings: none changes a record.
                let keys: Vec<&str> = s.params.iter().map(|p| p.key.as_str()).collect();
                cx.notes.push(format!(
                    "<system> at {} not converted ({}): settings of Fluentd's own process; my-agent's are under `system:`",
                    s.at,
                    keys.join(", ")
                ));
            }
            (name, _) => cx.unmapped(&s.at, format!("<{name}> is not supported here")),
        }
    }
}

/// `<match a.** b.*>`: my-agent reads the same patterns, space-separated;
/// none means every tag.
fn pattern_of(s: &Section) -> String {
    let p = s.arg.split_whitespace().collect::<Vec<_>>().join(" ");
    if p.is_empty() {
        "**".into()
    } else {
        p
    }
}

/// my-agent has one routing table: a label's filters and matches are kept
/// only when no source outside the label has a tag they match, and no
/// pattern outside it matches a tag its sources emit first.
fn check_labels(cx: &mut Cx) {
    let mut problems = Vec::new();
    let routed = |l: &Option<String>| {
        l.as_deref()
            .map_or("outside any label".to_string(), |l| format!("to {l}"))
    };
    for (pattern, in_label, at, _) in &cx.patterns {
        let Ok(p) = TagPattern::parse(pattern) else {
            continue;
        };
        for (tag, to_label, _) in &cx.source_tags {
            if in_label == to_label {
                continue;
            }
            // A forward or http source takes whatever tags it is sent.
            let (hit, shown) = match tag {
                Some(t) => (p.matches(t), format!("tag `{t}`")),
                None => (true, "the tags".to_string()),
            };
            if hit {
                problems.push((
                    at.clone(),
                    format!(
                        "`{pattern}` ({}) also matches {shown} of a source routed {}: my-agent routes by tag alone; give the sources distinct tags",
                        in_label.as_deref().map_or("outside any label".to_string(), |l| format!("in <label {l}>")),
                        routed(to_label),
                    ),
                ));
            }
        }
    }
    // Fluentd never applies a filter to a tag that a <match> before it
    // took; my-agent applies every filter that matches.
    for (i, (filter, label, at, is_match)) in cx.patterns.iter().enumerate() {
        if *is_match {
            continue;
        }
        let Ok(f) = TagPattern::parse(filter) else {
            continue;
        };
        for (pattern, other_label, match_at, is_match) in &cx.patterns[..i] {
            if !*is_match || other_label != label {
                continue;
            }
            let Ok(m) = TagPattern::parse(pattern) else {
                continue;
            };
            let taken = cx.source_tags.iter().find_map(|(tag, to, _)| match tag {
                Some(t) if to == label && m.matches(t) && f.matches(t) => {
                    Some(format!("tag `{t}`"))
                }
                None if to == label && pattern == "**" => Some("every tag".to_string()),
                _ => None,
            });
            if let Some(what) = taken {
                problems.push((
                    at.clone(),
                    format!("this filter comes after <match {pattern}> at {match_at}, which takes {what}: Fluentd never applies it there, my-agent would; move or drop it"),
                ));
                break;
            }
        }
    }
    for (at, what) in problems {
        cx.unmapped(&at, what);
    }
}

fn source(cx: &mut Cx, s: &Section) {
    let Some(kind) = kind_of(s) else {
        cx.unmapped(&s.at, "<source> without @type");
        return;
    };
    let mut params = Params::new(s, format!("the {kind} source"));
    let mut out = Node::map();
    out.comment(format!("<source> @type {kind} at {}", s.at));
    let label = params.take("@label").map(|p| p.value.text().to_string());
    match kind.as_str() {
        "tail" | "mysql_slow_query" | "mysqlslowquery" => {
            let my_kind = if kind == "tail" {
                "tail"
            } else {
                "mysql_slow_query"
            };
            out.set("type", Node::str(my_kind));
            if let Some(p) = params.take("path").filter(|p| {
                if p.value.text().contains('%') {
                    cx.unmapped(
                        &p.at,
                        format!(
                            "`path {}`: strftime patterns in paths are not supported; use a glob",
                            p.value.text()
                        ),
                    );
                    false
                } else {
                    true
                }
            }) {
                let paths: Vec<Node> = p
                    .value
                    .text()
                    .split(',')
                    .map(|x| Node::str(x.trim()))
                    .filter(|n| *n != Node::str(""))
                    .collect();
                out.set("path", Node::List(paths));
            } else {
                cx.unmapped(&s.at, format!("the {kind} source needs `path`"));
            }
            if let Some(p) = params.take("exclude_path") {
                match serde_json::from_str::<Vec<String>>(p.value.text()) {
                    Ok(list) => out.set(
                        "exclude_path",
                        Node::List(list.into_iter().map(Node::str).collect()),
                    ),
                    Err(_) => cx.unmapped(&p.at, "`exclude_path`: expected a JSON array of globs"),
                }
            }
            if let Some(p) = params.take("pos_file") {
                // Another format, and td-agent's file: my-agent keeps its own.
                out.comment(format!(
                    "pos_file {}: Fluentd's format; my-agent keeps its own",
                    p.value.text()
                ));
                out.set("pos_file", Node::str(cx.state_path("", p.value.text())));
            }
            tag(cx, &mut params, &mut out, false);
            copy_params(
                cx,
                &mut params,
                &mut out,
                &[
                    ("read_from_head", "read_from_head", Kind::Bool),
                    ("rotate_wait", "rotate_wait", Kind::Duration),
                    ("refresh_interval", "refresh_interval", Kind::Duration),
                ],
            );
            for (key, why) in [
                ("enable_watch_timer", "my-agent polls and watches on its own"),
                ("enable_stat_watcher", "my-agent polls and watches on its own"),
                ("follow_inodes", "my-agent always follows a file by its inode and content"),
                ("open_on_every_update", "my-agent keeps files open while they are read"),
                ("last_dbname_file", "my-agent carries the database from entry to entry in memory and from the log itself"),
                ("pos_file_compaction_interval", "my-agent's pos_file holds one line per file"),
            ] {
                if params.take(key).is_some() {
                    out.comment(format!("{key}: not needed: {why}"));
                }
            }
            if kind == "tail" {
                // v0.12 `format none`, v1 `<parse> @type none`: the line as
                // `message` (or message_key).
                if let Some(p) = params.take("format") {
                    if p.value.text() != "none" {
                        cx.unmapped(&p.at, format!("`format {}`: only `none` is supported (the line as a message); parse it on the aggregator", p.value.text()));
                    }
                }
                copy_param(
                    cx,
                    &mut params,
                    "message_key",
                    "message_key",
                    &mut out,
                    Kind::Str,
                );
                for sub in &s.sections {
                    if sub.name != "parse" {
                        cx.unmapped(
                            &sub.at,
                            format!("<{}> in a tail source is not supported", sub.name),
                        );
                        continue;
                    }
                    let kind = kind_of(sub).unwrap_or_default();
                    let mut pp = Params::new(sub, "<parse>");
                    if kind != "none" {
                        cx.unmapped(&sub.at, format!("<parse> @type {kind}: only `none` is supported (the line as a message); parse it on the aggregator"));
                        continue;
                    }
                    copy_param(
                        cx,
                        &mut pp,
                        "message_key",
                        "message_key",
                        &mut out,
                        Kind::Str,
                    );
                    pp.finish(cx);
                }
            } else {
                for sub in &s.sections {
                    cx.unmapped(
                        &sub.at,
                        format!("<{}> in a {kind} source is not supported", sub.name),
                    );
                }
            }
        }
        "mysql_query" => {
            out.set("type", Node::str("mysql_query"));
            copy_params(
                cx,
                &mut params,
                &mut out,
                &[
                    ("host", "host", Kind::Str),
                    ("port", "port", Kind::Int),
                    ("username", "username", Kind::Str),
                ],
            );
            if let Some(p) = params.take("password") {
                secret(cx, p, "password", &mut out);
            }
            copy_param(cx, &mut params, "database", "database", &mut out, Kind::Str);
            if let Some(p) = params.take("encoding") {
                out.comment(format!(
                    "encoding {}: my-agent always talks utf8mb4 to the server",
                    p.value.text()
                ));
            }
            copy_param(
                cx,
                &mut params,
                "interval",
                "interval",
                &mut out,
                Kind::Duration,
            );
            tag(cx, &mut params, &mut out, true);
            copy_params(
                cx,
                &mut params,
                &mut out,
                &[
                    ("query", "query", Kind::Str),
                    ("record_hostname", "record_hostname", Kind::Bool),
                    ("nest_result", "nest_result", Kind::Bool),
                    ("nest_key", "nest_key", Kind::Str),
                    ("row_count", "row_count", Kind::Bool),
                    ("row_count_key", "row_count_key", Kind::Str),
                ],
            );
        }
        "forward" => {
            out.set("type", Node::str("forward"));
            let port = params
                .take("port")
                .map(|p| p.value.text().to_string())
                .unwrap_or_else(|| "24224".into());
            let bind = params
                .take("bind")
                .map(|p| p.value.text().to_string())
                .unwrap_or_else(|| "0.0.0.0".into());
            out.set("bind", Node::str(format!("{bind}:{port}")));
            for sub in &s.sections {
                match sub.name.as_str() {
                    "security" => security(cx, sub, &mut out),
                    "transport" if sub.arg == "tls" => {
                        let mut tp = Params::new(sub, "<transport tls>");
                        copy_params(
                            cx,
                            &mut tp,
                            &mut out,
                            &[
                                ("cert_path", "tls_cert_file", Kind::Str),
                                ("private_key_path", "tls_key_file", Kind::Str),
                            ],
                        );
                        // Clients must present a certificate only with
                        // client_cert_auth; ca_path alone checks nothing.
                        let client_auth = tp
                            .take("client_cert_auth")
                            .and_then(|p| boolean(cx, p))
                            .unwrap_or(false);
                        match (tp.take("ca_path"), client_auth) {
                            (Some(ca), true) => {
                                out.set("tls_client_ca_file", Node::str(ca.value.text()))
                            }
                            (None, true) => cx.unmapped(
                                &sub.at,
                                "client_cert_auth without ca_path: name the CA clients' certificates must chain to",
                            ),
                            (Some(ca), false) => out.comment(format!(
                                "ca_path {}: no effect without client_cert_auth",
                                ca.value.text()
                            )),
                            (None, false) => {}
                        }
                        tp.finish(cx);
                    }
                    other => cx.unmapped(
                        &sub.at,
                        format!("<{other}> in a forward source is not supported"),
                    ),
                }
            }
        }
        "http" => {
            out.set("type", Node::str("http"));
            let port = params
                .take("port")
                .map(|p| p.value.text().to_string())
                .unwrap_or_else(|| "9880".into());
            let bind = params
                .take("bind")
                .map(|p| p.value.text().to_string())
                .unwrap_or_else(|| "0.0.0.0".into());
            out.set("bind", Node::str(format!("{bind}:{port}")));
            copy_params(
                cx,
                &mut params,
                &mut out,
                &[
                    ("body_size_limit", "body_size_limit", Kind::Size),
                    ("add_http_headers", "add_http_headers", Kind::Bool),
                    ("add_remote_addr", "add_remote_addr", Kind::Bool),
                ],
            );
            for (key, why) in [
                (
                    "keepalive_timeout",
                    "my-agent keeps idle connections as its HTTP server does",
                ),
                ("blocking_timeout", "not needed"),
                (
                    "dump_error_log",
                    "my-agent logs each refused request (400) and counts it",
                ),
            ] {
                if params.take(key).is_some() {
                    out.comment(format!("{key}: {why}"));
                }
            }
            for sub in &s.sections {
                cx.unmapped(&sub.at, format!("<{}> in an http source is not supported (JSON, ndjson and msgpack bodies are read as in_http's default)", sub.name));
            }
        }
        other => {
            cx.unmapped(&s.at, format!("`@type {other}` sources are not supported: keep them on a Fluentd or fluent-bit and forward to my-agent's forward input"));
            return;
        }
    }
    let tag = match out.get_mut("tag") {
        Some(Node::Str(t)) => Some(t.clone()),
        _ => None,
    };
    cx.source_tags.push((tag, label.clone(), s.at.clone()));
    if label.is_some() {
        out.comment(format!(
            "routed to {} in Fluentd: my-agent routes by tag",
            label.as_deref().unwrap_or_default()
        ));
    }
    params.finish(cx);
    cx.sources.push(out);
}

fn tag(cx: &mut Cx, params: &mut Params, out: &mut Node, hostname: bool) {
    let Some(p) = params.take("tag") else {
        cx.unmapped(&params.s.at, "a source needs `tag`");
        return;
    };
    let value = if hostname {
        with_hostname(cx, p)
    } else {
        plain(cx, p)
    };
    if let Some(Node::Str(t)) = &value {
        if t.contains('*') {
            cx.unmapped(&p.at, format!("`tag {t}`: a `*` expanded from the file's path is not supported; give each path its own source and tag"));
            return;
        }
    }
    if let Some(v) = value {
        out.set("tag", v);
    }
}

fn filter(cx: &mut Cx, s: &Section, label: Option<&str>) {
    let patterns = pattern_of(s);
    cx.patterns.push((
        patterns.clone(),
        label.map(String::from),
        s.at.clone(),
        false,
    ));
    let Some(kind) = kind_of(s) else {
        cx.unmapped(&s.at, "<filter> without @type");
        return;
    };
    let mut params = Params::new(s, format!("the {kind} filter"));
    let mut out = Node::map();
    out.comment(format!("<filter {}> @type {kind} at {}", s.arg, s.at));
    out.set("match", Node::str(patterns));
    match kind.as_str() {
        "record_transformer" => {
            out.set("type", Node::str("record_transformer"));
            let ruby = params
                .take("enable_ruby")
                .map(|p| boolean(cx, p).unwrap_or(false))
                .unwrap_or(false);
            let mut record = Node::map();
            for sub in &s.sections {
                if sub.name != "record" {
                    cx.unmapped(
                        &sub.at,
                        format!("<{}> in record_transformer is not supported", sub.name),
                    );
                    continue;
                }
                for p in &sub.params {
                    if let Some(v) = record_value(cx, p, ruby) {
                        if p.value.text().contains("${time}") {
                            out.comment(format!("{}: ${{time}} is ISO 8601 UTC with milliseconds here; Fluentd wrote Time#to_s (2024-05-15 17:02:39 +0000)", p.key));
                        }
                        record.set(&p.key, v);
                    }
                }
            }
            out.set("record", record);
            if let Some(p) = params.take("remove_keys") {
                let keys = p
                    .value
                    .text()
                    .split(',')
                    .map(|k| Node::str(k.trim()))
                    .collect();
                out.set("remove_keys", Node::List(keys));
            }
            if let Some(p) = params.take("renew_record") {
                if boolean(cx, p) == Some(true) {
                    cx.unmapped(&p.at, "`renew_record true` is not supported");
                }
            }
            // Fluentd's default, true, is what my-agent does: a value that is
            // one placeholder keeps its type.
            if let Some(p) = params.take("auto_typecast") {
                if boolean(cx, p) == Some(false) {
                    cx.unmapped(&p.at, "`auto_typecast false` is not supported: my-agent keeps a lone placeholder's type");
                }
            }
        }
        "grep" => {
            out.set("type", Node::str("grep"));
            let mut regexp = Vec::new();
            let mut exclude = Vec::new();
            for sub in &s.sections {
                let into = match sub.name.as_str() {
                    "regexp" => &mut regexp,
                    "exclude" => &mut exclude,
                    other => {
                        cx.unmapped(
                            &sub.at,
                            format!(
                                "<{other}> in grep is not supported (only <regexp> and <exclude>)"
                            ),
                        );
                        continue;
                    }
                };
                let mut sp = Params::new(sub, format!("<{}>", sub.name));
                match (sp.take("key"), sp.take("pattern")) {
                    (Some(k), Some(p)) => {
                        if let Some(rule) = grep_rule(cx, &p.at, k.value.text(), p.value.text()) {
                            into.push(rule);
                        }
                    }
                    _ => cx.unmapped(&sub.at, format!("<{}> needs `key` and `pattern`", sub.name)),
                }
                sp.finish(cx);
            }
            // v0.12: `regexp1 message ERROR`, `exclude1 message debug`.
            for p in &s.params {
                for (prefix, into) in [("regexp", &mut regexp), ("exclude", &mut exclude)] {
                    if p.key
                        .strip_prefix(prefix)
                        .is_some_and(|n| n.parse::<u32>().is_ok())
                    {
                        params.taken.insert(p.key.as_str());
                        match p.value.text().split_once(char::is_whitespace) {
                            Some((k, pat)) => {
                                if let Some(rule) = grep_rule(cx, &p.at, k, pat.trim()) {
                                    into.push(rule);
                                }
                            }
                            None => {
                                cx.unmapped(&p.at, format!("`{}`: expected `KEY PATTERN`", p.key))
                            }
                        }
                    }
                }
            }
            if !regexp.is_empty() {
                out.set("regexp", Node::List(regexp));
            }
            if !exclude.is_empty() {
                out.set("exclude", Node::List(exclude));
            }
        }
        other => {
            cx.unmapped(&s.at, format!("`@type {other}` filters are not supported: keep them on a Fluentd aggregator and forward to it"));
            return;
        }
    }
    params.finish(cx);
    cx.filters.push(out);
}

/// `/^ERROR/i` (v1, with Ruby's flags) or `^ERROR` (v0.12): the regular
/// expression as my-agent writes it (`(?i)^ERROR`).
fn grep_rule(cx: &mut Cx, at: &At, key: &str, pattern: &str) -> Option<Node> {
    if key.starts_with('$') {
        cx.unmapped(
            at,
            format!("grep key `{key}`: a record accessor; my-agent matches top-level fields only"),
        );
        return None;
    }
    let pattern = match pattern.strip_prefix('/').and_then(|p| p.rsplit_once('/')) {
        Some((re, flags)) if flags.chars().all(|c| "imx".contains(c)) => {
            // Ruby's m is "dot matches newline": Rust's s.
            let flags: String = flags
                .chars()
                .map(|c| if c == 'm' { 's' } else { c })
                .collect();
            if flags.is_empty() {
                re.to_string()
            } else {
                format!("(?{flags}){re}")
            }
        }
        Some((_, flags)) => {
            cx.unmapped(
                at,
                format!("grep pattern flags `{flags}`: expected i, m or x"),
            );
            return None;
        }
        None => pattern.to_string(),
    };
    let mut rule = Node::map();
    rule.set("key", Node::str(key));
    rule.set("pattern", Node::str(pattern));
    Some(rule)
}

/// A `<record>` value: the placeholders my-agent expands as Fluentd does.
fn record_value(cx: &mut Cx, p: &Param, ruby: bool) -> Option<Node> {
    // Fluentd reads a value that is JSON as that JSON.
    let raw = p.value.text().trim_start();
    if (raw.starts_with('[') || raw.starts_with('{'))
        && serde_json::from_str::<serde_json::Value>(p.value.text()).is_ok()
    {
        cx.unmapped(&p.at, format!("`{}`: a JSON value in <record> is not supported (my-agent's values are text with placeholders)", p.key));
        return None;
    }
    let text = with_hostname(cx, p)?;
    let Node::Str(text) = text else {
        return Some(text);
    };
    let mut out = String::new();
    let mut rest = text.as_str();
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(len) = rest[start..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + len];
        let known = matches!(inner, "hostname" | "tag" | "time")
            || inner
                .strip_prefix("tag_parts[")
                .and_then(|n| n.strip_suffix(']'))
                .is_some_and(|n| n.parse::<i64>().is_ok());
        let mapped = if known {
            Some(format!("${{{inner}}}"))
        } else if ruby && inner == "time.to_i" {
            Some("${time.to_i}".to_string())
        } else if inner.starts_with("record[\"")
            && inner.ends_with("\"]")
            && inner[8..inner.len() - 2].chars().all(|c| c != '"')
        {
            Some(format!("${{{inner}}}"))
        } else {
            // Fluentd v1 expands `${field}` to nothing (an unknown
            // placeholder): better said than copied.
            None
        };
        match mapped {
            Some(m) => out.push_str(&m),
            None => {
                cx.unmapped(&p.at, format!("`{}`: `${{{inner}}}` cannot be converted (supported: hostname, tag, tag_parts[N], time, record[\"key\"], and with enable_ruby time.to_i; Fluentd v1 expands a bare `${{field}}` to nothing)", p.key));
                return None;
            }
        }
        rest = &rest[start + len + 1..];
    }
    out.push_str(rest);
    Some(Node::str(out))
}

/// A `<match>` (or a copy's `<store>`): the output's settings without
/// `match`.
fn output(cx: &mut Cx, s: &Section) -> Option<Node> {
    let Some(kind) = kind_of(s) else {
        cx.unmapped(&s.at, format!("<{}> without @type", s.name));
        return None;
    };
    let mut params = Params::new(s, format!("the {kind} output"));
    let mut out = Node::map();
    let mut buffer_done = false;
    match kind.as_str() {
        "http" if s.param("endpoint_url").is_some() => {
            // fluent-plugin-out-http.
            out.set("type", Node::str("http"));
            copy_param(
                cx,
                &mut params,
                "endpoint_url",
                "endpoint",
                &mut out,
                Kind::Str,
            );
            let serializer_param = params.take("serializer");
            let serializer_at = serializer_param.map_or(&s.at, |p| &p.at);
            let serializer = serializer_param
                .map(|p| p.value.text().to_string())
                .unwrap_or_else(|| "form".into());
            let bulk = params
                .take("bulk_request")
                .map(|p| boolean(cx, p).unwrap_or(false))
                .unwrap_or(false);
            match (serializer.as_str(), bulk) {
                ("json", true) => out.set("format", Node::str("ndjson")),
                ("json", false) => out.set("format", Node::str("json")),
                (other, _) => cx.unmapped(
                    serializer_at,
                    format!("`serializer {other}`: only json is supported"),
                ),
            }
            method(cx, &mut params, &mut out);
            if let Some(p) = params.take("authentication") {
                match p.value.text() {
                    "none" => {}
                    "basic" => {
                        let mut auth = Node::map();
                        auth.set("method", Node::str("basic"));
                        if let Some(u) = params.take("username") {
                            auth.set("username", Node::str(u.value.text()));
                        }
                        if let Some(pw) = params.take("password") {
                            secret(cx, pw, "password", &mut auth);
                        }
                        out.set("auth", auth);
                    }
                    "bearer" => {
                        let mut auth = Node::map();
                        auth.set("method", Node::str("bearer"));
                        if let Some(t) = params.take("token") {
                            secret(cx, t, "token", &mut auth);
                        }
                        out.set("auth", auth);
                    }
                    other => {
                        cx.unmapped(&p.at, format!("`authentication {other}` is not supported"))
                    }
                }
            }
            if let Some(p) = params.take("raise_on_error") {
                let _ = boolean(cx, p);
                out.comment("raise_on_error: my-agent retries 408, 429 and 5xx, and dead-letters what the collector refuses");
            }
            if let Some(p) = params.take("ssl_no_verify") {
                if boolean(cx, p) == Some(true) {
                    out.set("tls_verify", Node::Bool(false));
                }
            }
            copy_params(
                cx,
                &mut params,
                &mut out,
                &[
                    ("cacert_file", "tls_ca_file", Kind::Str),
                    ("open_timeout", "connect_timeout", Kind::Duration),
                    ("read_timeout", "request_timeout", Kind::Duration),
                ],
            );
            headers(cx, &mut params, "custom_headers", &mut out);
        }
        "http" => {
            out.set("type", Node::str("http"));
            copy_param(cx, &mut params, "endpoint", "endpoint", &mut out, Kind::Str);
            method(cx, &mut params, &mut out);
            let array = params
                .take("json_array")
                .map(|p| boolean(cx, p).unwrap_or(false))
                .unwrap_or(false);
            out.set(
                "format",
                Node::str(if array { "json_array" } else { "ndjson" }),
            );
            if let Some(p) = params.take("content_type") {
                out.comment(format!(
                    "content_type {}: my-agent sends the format's own",
                    p.value.text()
                ));
            }
            headers(cx, &mut params, "headers", &mut out);
            copy_param(
                cx,
                &mut params,
                "tls_ca_cert_path",
                "tls_ca_file",
                &mut out,
                Kind::Str,
            );
            if let Some(p) = params.take("tls_verify_mode") {
                if p.value.text() == "none" {
                    out.set("tls_verify", Node::Bool(false));
                }
            }
            copy_params(
                cx,
                &mut params,
                &mut out,
                &[
                    ("open_timeout", "connect_timeout", Kind::Duration),
                    ("read_timeout", "request_timeout", Kind::Duration),
                ],
            );
            for sub in &s.sections {
                match sub.name.as_str() {
                    "format" if kind_of(sub).as_deref().unwrap_or("json") != "json" => {
                        cx.unmapped(&sub.at, "<format>: only json is supported");
                    }
                    "format" => Params::new(sub, "<format>").finish(cx),
                    "auth" => {
                        let mut ap = Params::new(sub, "<auth>");
                        let mut auth = Node::map();
                        // Fluentd's default method.
                        auth.set("method", Node::str("basic"));
                        copy_params(
                            cx,
                            &mut ap,
                            &mut auth,
                            &[
                                ("method", "method", Kind::Str),
                                ("username", "username", Kind::Str),
                            ],
                        );
                        if let Some(pw) = ap.take("password") {
                            secret(cx, pw, "password", &mut auth);
                        }
                        ap.finish(cx);
                        out.set("auth", auth);
                    }
                    "buffer" => {}
                    other => cx.unmapped(
                        &sub.at,
                        format!("<{other}> in this output is not supported"),
                    ),
                }
            }
        }
        "forward" => {
            out.set("type", Node::str("forward"));
            let mut servers = Vec::new();
            for sub in &s.sections {
                match sub.name.as_str() {
                    "server" => {
                        let mut sp = Params::new(sub, "<server>");
                        let mut server = Node::map();
                        copy_params(
                            cx,
                            &mut sp,
                            &mut server,
                            &[
                                ("host", "host", Kind::Str),
                                ("port", "port", Kind::Int),
                                ("weight", "weight", Kind::Int),
                                ("standby", "standby", Kind::Bool),
                            ],
                        );
                        if let Some(n) = sp.take("name") {
                            server.comment(format!("name {}", n.value.text()));
                        }
                        if let Some(k) = sp.take("shared_key") {
                            secret(cx, k, "shared_key", &mut server);
                        }
                        sp.finish(cx);
                        servers.push(server);
                    }
                    "security" => security(cx, sub, &mut out),
                    "buffer" => {}
                    other => cx.unmapped(
                        &sub.at,
                        format!("<{other}> in this output is not supported"),
                    ),
                }
            }
            out.set("servers", Node::List(servers));
            copy_params(
                cx,
                &mut params,
                &mut out,
                &[
                    ("require_ack_response", "require_ack_response", Kind::Bool),
                    ("ack_response_timeout", "ack_timeout", Kind::Duration),
                    ("heartbeat_interval", "heartbeat_interval", Kind::Duration),
                ],
            );
            if let Some(p) = params.take("heartbeat_type") {
                match p.value.text() {
                    "none" => out.set("heartbeat_interval", Node::str("0")),
                    "transport" | "tcp" => {}
                    other => cx.unmapped(&p.at, format!("`heartbeat_type {other}`: my-agent's heartbeats are TCP (and TLS) connects")),
                }
            }
            copy_params(
                cx,
                &mut params,
                &mut out,
                &[
                    ("phi_threshold", "phi_threshold", Kind::Int),
                    ("recover_wait", "recover_wait", Kind::Duration),
                    ("compress", "compress", Kind::Str),
                    ("time_as_integer", "time_as_integer", Kind::Bool),
                    ("keepalive", "keepalive", Kind::Bool),
                    ("keepalive_timeout", "keepalive_timeout", Kind::Duration),
                    ("connect_timeout", "connect_timeout", Kind::Duration),
                ],
            );
            if let Some(p) = params.take("transport") {
                if p.value.text() == "tls" {
                    out.set("tls", Node::Bool(true));
                }
            }
            copy_params(
                cx,
                &mut params,
                &mut out,
                &[
                    ("tls_cert_path", "tls_ca_file", Kind::Str),
                    ("tls_client_cert_path", "tls_cert_file", Kind::Str),
                    ("tls_client_private_key_path", "tls_key_file", Kind::Str),
                ],
            );
            if let Some(p) = params.take("tls_insecure_mode") {
                if boolean(cx, p) == Some(true) {
                    out.set("tls_verify", Node::Bool(false));
                }
            }
        }
        "stdout" => {
            out.set("type", Node::str("stdout"));
            out.comment("stdout: my-agent prints each record as one JSON line (Fluentd: time, tag and record)");
        }
        "file" => {
            out.set("type", Node::str("file"));
            if let Some(p) = params.take("path") {
                out.comment("file: my-agent appends to this one file (Fluentd writes time-sliced files named from it)");
                out.set("path", Node::str(p.value.text()));
            }
            for key in ["append", "compress"] {
                if let Some(p) = params.take(key) {
                    out.comment(format!(
                        "{key} {}: my-agent appends ndjson, uncompressed",
                        p.value.text()
                    ));
                }
            }
        }
        "null" => {
            out.set("type", Node::str("discard"));
        }
        "copy" => {
            out.set("type", Node::str("copy"));
            let mut stores = Vec::new();
            for sub in &s.sections {
                if sub.name != "store" {
                    cx.unmapped(&sub.at, format!("<{}> in copy is not supported", sub.name));
                    continue;
                }
                if !sub.arg.is_empty() {
                    cx.unmapped(&sub.at, format!("<store {}>: my-agent buffers and retries each copy on its own, so one failing never stops the others", sub.arg));
                }
                if let Some(o) = output(cx, sub) {
                    stores.push(o);
                }
            }
            out.set("outputs", Node::List(stores));
            buffer_done = true;
        }
        other => {
            cx.unmapped(&s.at, format!("`@type {other}` is not supported: keep it on a Fluentd aggregator and forward to it"));
            return None;
        }
    }
    if !buffer_done {
        buffer(cx, s, &mut params, &mut out);
    }
    // Requests a collector refuses are kept: beside a file buffer by
    // default, else under the state directory.
    let file_buffer = matches!(out.get_mut("buffer").and_then(|b| b.get_mut("type")), Some(Node::Str(t)) if t == "file");
    if matches!(kind.as_str(), "http" | "forward") && !file_buffer {
        cx.buffers += 1;
        let dir = cx.state_path("dead-letter", &format!("output{}", cx.buffers));
        out.set("dead_letter_dir", Node::str(dir));
    }
    // Outputs whose arms read no sections but <buffer>.
    let reads_sections = matches!(kind.as_str(), "forward" | "copy")
        || (kind == "http" && s.param("endpoint_url").is_none());
    if !reads_sections {
        for sub in s.sections.iter().filter(|b| b.name != "buffer") {
            cx.unmapped(
                &sub.at,
                format!("<{}> in a {kind} output is not supported", sub.name),
            );
        }
    }
    params.finish(cx);
    Some(out)
}

/// `<security>` of forward, either side: the handshake's host name and
/// shared key (`<user>`/`<client>` sections are not converted).
fn security(cx: &mut Cx, sub: &Section, out: &mut Node) {
    let mut sp = Params::new(sub, "<security>");
    copy_param(
        cx,
        &mut sp,
        "self_hostname",
        "self_hostname",
        out,
        Kind::Str,
    );
    if let Some(p) = sp.take("shared_key") {
        secret(cx, p, "shared_key", out);
    }
    sp.finish(cx);
    for inner in &sub.sections {
        cx.unmapped(
            &inner.at,
            format!("<{}> in <security> is not supported", inner.name),
        );
    }
}

fn method(cx: &mut Cx, params: &mut Params, out: &mut Node) {
    if let Some(p) = params.take("http_method") {
        match p.value.text().to_ascii_lowercase().as_str() {
            m @ ("post" | "put") => out.set("method", Node::str(m)),
            other => cx.unmapped(
                &p.at,
                format!("`http_method {other}`: expected post or put"),
            ),
        }
    }
}

fn headers(cx: &mut Cx, params: &mut Params, key: &'static str, out: &mut Node) {
    let Some(p) = params.take(key) else {
        return;
    };
    match serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(p.value.text()) {
        Ok(map) => {
            let mut h = Node::map();
            for (k, v) in map {
                h.set(
                    &k,
                    Node::str(
                        v.as_str()
                            .map(String::from)
                            .unwrap_or_else(|| v.to_string()),
                    ),
                );
            }
            out.set("headers", h);
        }
        Err(_) => cx.unmapped(&p.at, format!("`{key}`: expected a JSON hash")),
    }
}

/// v0.12's buffer parameters on the output, or v1's `<buffer>`: the
/// output's buffer and retry settings.
fn buffer<'a>(cx: &mut Cx, s: &'a Section, params: &mut Params<'a>, out: &mut Node) {
    let mut buf = Node::map();
    let mut chunk: Option<u64> = None;
    let mut queue: Option<(i64, At)> = None;
    let mut file = false;
    // v0.12 on the output itself.
    if let Some(p) = params.take("buffer_type") {
        file = p.value.text() == "file";
        buf.set("type", Node::str(p.value.text()));
    }
    let mut fluentd_path = params
        .take("buffer_path")
        .map(|p| p.value.text().to_string());
    copy_param(
        cx,
        params,
        "flush_interval",
        "flush_interval",
        &mut buf,
        Kind::Duration,
    );
    if let Some(p) = params.take("buffer_chunk_limit") {
        if let Some((n, v)) = size(cx, p) {
            buf.set("chunk_limit_size", n);
            chunk = Some(v);
        }
    }
    if let Some(p) = params.take("buffer_queue_limit") {
        if let Some(Node::Int(n)) = integer(cx, p) {
            queue = Some((n, p.at.clone()));
        }
    }
    copy_param(
        cx,
        params,
        "num_threads",
        "flush_thread_count",
        &mut buf,
        Kind::Int,
    );
    if let Some(p) = params.take("buffer_queue_full_action") {
        overflow(cx, p, &mut buf);
    }
    retry(
        cx,
        params,
        out,
        "retry_limit",
        "max_retry_wait",
        "disable_retry_limit",
    );
    // v1's <buffer>.
    for sub in s.sections.iter().filter(|b| b.name == "buffer") {
        let mut bp = Params::new(sub, "<buffer>");
        let keys: Vec<&str> = sub
            .arg
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if keys.iter().any(|k| *k != "tag") {
            cx.unmapped(&sub.at, format!("<buffer {}>: chunk keys other than tag are not supported (my-agent's chunks are cut by size and time)", sub.arg));
        }
        if let Some(t) = bp.take("@type").or_else(|| bp.s.param("type")) {
            file = t.value.text() == "file";
            buf.set("type", Node::str(t.value.text()));
        }
        if let Some(p) = bp.take("path") {
            fluentd_path = Some(p.value.text().to_string());
        }
        copy_param(
            cx,
            &mut bp,
            "flush_interval",
            "flush_interval",
            &mut buf,
            Kind::Duration,
        );
        if let Some(p) = bp.take("flush_mode") {
            match p.value.text() {
                "interval" | "default" => {}
                "immediate" => buf.set("flush_interval", Node::str("0s")),
                other => cx.unmapped(&p.at, format!("`flush_mode {other}` is not supported")),
            }
        }
        copy_param(
            cx,
            &mut bp,
            "flush_thread_count",
            "flush_thread_count",
            &mut buf,
            Kind::Int,
        );
        if let Some(p) = bp.take("chunk_limit_size") {
            if let Some((n, v)) = size(cx, p) {
                buf.set("chunk_limit_size", n);
                chunk = Some(v);
            }
        }
        copy_param(
            cx,
            &mut bp,
            "total_limit_size",
            "total_limit_size",
            &mut buf,
            Kind::Size,
        );
        if let Some(p) = bp.take("queue_limit_length") {
            if let Some(Node::Int(n)) = integer(cx, p) {
                queue = Some((n, p.at.clone()));
            }
        }
        if let Some(p) = bp.take("overflow_action") {
            overflow(cx, p, &mut buf);
        }
        if let Some(p) = bp.take("flush_at_shutdown") {
            out.comment(format!("flush_at_shutdown {}: my-agent's file buffers keep what is not sent; memory buffers are flushed at stop", p.value.text()));
        }
        retry(
            cx,
            &mut bp,
            out,
            "retry_max_times",
            "retry_max_interval",
            "retry_forever",
        );
        bp.finish(cx);
    }
    if file || fluentd_path.is_some() {
        cx.buffers += 1;
        let path = match &fluentd_path {
            Some(f) => {
                buf.comment(format!("path: Fluentd's was {f} (another format)"));
                cx.state_path("buffer", f)
            }
            None => cx.state_path("buffer", &format!("output{}", cx.buffers)),
        };
        buf.set("path", Node::str(path));
    }
    if let Some((n, at)) = queue {
        // Fluentd's queue counts chunks; my-agent bounds the bytes.
        let per = chunk.unwrap_or(if file { 256 << 20 } else { 8 << 20 });
        if buf.get_mut("total_limit_size").is_none() {
            buf.set(
                "total_limit_size",
                Node::str(format!("{}m", (per * n.max(1) as u64) >> 20)),
            );
            buf.comment(format!(
                "total_limit_size: {n} queued chunks of {} MiB ({at})",
                per >> 20
            ));
        }
    }
    if buf != Node::map() {
        out.set("buffer", buf);
    }
}

fn overflow(cx: &mut Cx, p: &Param, buf: &mut Node) {
    let action = match p.value.text() {
        "block" => "block",
        "drop_oldest_chunk" => "drop_oldest",
        "throw_exception" | "exception" => "throw",
        other => {
            cx.unmapped(
                &p.at,
                format!(
                    "`{}` {other}: expected block, drop_oldest_chunk or throw_exception",
                    p.key
                ),
            );
            return;
        }
    };
    buf.set("overflow_action", Node::str(action));
}

fn retry<'a>(
    cx: &mut Cx,
    params: &mut Params<'a>,
    out: &mut Node,
    max_times: &'static str,
    max_wait: &'static str,
    forever: &'static str,
) {
    copy_param(cx, params, "retry_wait", "retry_wait", out, Kind::Duration);
    copy_param(
        cx,
        params,
        max_wait,
        "retry_max_interval",
        out,
        Kind::Duration,
    );
    copy_param(
        cx,
        params,
        "retry_timeout",
        "retry_timeout",
        out,
        Kind::Duration,
    );
    copy_param(cx, params, max_times, "retry_max_times", out, Kind::Int);
    copy_param(cx, params, forever, "retry_forever", out, Kind::Bool);
    copy_params(
        cx,
        params,
        out,
        &[
            (
                "retry_exponential_backoff_base",
                "retry_exponential_backoff_base",
                Kind::Int,
            ),
            ("retry_randomize", "retry_randomize", Kind::Bool),
        ],
    );
    if let Some(p) = params.take("retry_type") {
        if p.value.text() != "exponential_backoff" {
            cx.unmapped(
                &p.at,
                format!(
                    "`retry_type {}`: my-agent backs off exponentially",
                    p.value.text()
                ),
            );
        }
    }
}
