//! Writing the converted configuration as YAML: block mappings and lists,
//! strings double-quoted the JSON way (valid YAML whatever they hold) unless
//! plainly safe, and comments that say where each part came from.

/// A YAML node of the written configuration.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Str(String),
    Int(i64),
    Bool(bool),
    /// A key's entries in order; a `None` key is a comment line.
    Map(Vec<(Option<String>, Node)>),
    List(Vec<Node>),
}

impl Node {
    pub fn map() -> Node {
        Node::Map(Vec::new())
    }

    pub fn str(s: impl Into<String>) -> Node {
        Node::Str(s.into())
    }

    /// Appends `key: value` to a map.
    /// Sets `key: value` in a map: replaces the key's value if it is there
    /// (a later Fluentd parameter wins), else appends it.
    pub fn set(&mut self, key: &str, value: Node) {
        if let Node::Map(entries) = self {
            match entries.iter_mut().find(|(k, _)| k.as_deref() == Some(key)) {
                Some((_, v)) => *v = value,
                None => entries.push((Some(key.to_string()), value)),
            }
        }
    }

    /// Appends a comment line to a map.
    pub fn comment(&mut self, text: impl Into<String>) {
        if let Node::Map(entries) = self {
            entries.push((None, Node::Str(text.into())));
        }
    }

    pub fn get_mut(&mut self, key: &str) -> Option<&mut Node> {
        match self {
            Node::Map(entries) => entries
                .iter_mut()
                .find(|(k, _)| k.as_deref() == Some(key))
                .map(|(_, v)| v),
            _ => None,
        }
    }
}

fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "._/-".contains(c))
        && !s.starts_with(['-', '.'])
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "yes" | "no" | "on" | "off" | "null" | "y" | "n" | "~"
        )
        && s.parse::<f64>().is_err();
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).expect("strings serialize")
    }
}

fn comment_lines(out: &mut String, indent: usize, text: &str) {
    for line in text.lines() {
        out.push_str(&" ".repeat(indent));
        out.push_str("# ");
        out.push_str(line);
        out.push('\n');
    }
}

fn write_map(
    out: &mut String,
    indent: usize,
    entries: &[(Option<String>, Node)],
    first_inline: bool,
) {
    let mut first = first_inline;
    for (key, value) in entries {
        let pad = if first {
            String::new()
        } else {
            " ".repeat(indent)
        };
        first = false;
        let Some(key) = key else {
            if let Node::Str(text) = value {
                // A comment cannot start a list item's line.
                if !pad.is_empty() || indent == 0 {
                    comment_lines(out, if pad.is_empty() { 0 } else { indent }, text);
                } else {
                    out.push('\n');
                    comment_lines(out, indent, text);
                }
            }
            continue;
        };
        out.push_str(&pad);
        out.push_str(&scalar(key));
        out.push(':');
        write_value(out, indent, value);
    }
}

fn write_value(out: &mut String, indent: usize, value: &Node) {
    match value {
        Node::Str(s) => {
            out.push(' ');
            out.push_str(&scalar(s));
            out.push('\n');
        }
        Node::Int(n) => out.push_str(&format!(" {n}\n")),
        Node::Bool(b) => out.push_str(&format!(" {b}\n")),
        Node::Map(entries) if entries.is_empty() => out.push_str(" {}\n"),
        Node::List(items) if items.is_empty() => out.push_str(" []\n"),
        Node::Map(entries) => {
            out.push('\n');
            write_map(out, indent + 2, entries, false);
        }
        Node::List(items) => {
            out.push('\n');
            write_list(out, indent + 2, items);
        }
    }
}

fn write_list(out: &mut String, indent: usize, items: &[Node]) {
    for item in items {
        out.push_str(&" ".repeat(indent));
        out.push('-');
        match item {
            Node::Map(entries) if !entries.is_empty() => {
                // Comments first, on their own lines before the item.
                let (comments, fields): (Vec<_>, Vec<_>) =
                    entries.iter().cloned().partition(|(k, _)| k.is_none());
                if !comments.is_empty() {
                    out.pop();
                    for (_, c) in &comments {
                        if let Node::Str(text) = c {
                            comment_lines(out, 0, text);
                            out.push_str(&" ".repeat(indent));
                        }
                    }
                    out.push('-');
                }
                if fields.is_empty() {
                    out.push_str(" {}\n");
                    continue;
                }
                out.push(' ');
                write_map(out, indent + 2, &fields, true);
            }
            other => write_value(out, indent, other),
        }
    }
}

/// The document: a top-level map.
pub fn to_string(doc: &Node) -> String {
    let mut out = String::new();
    if let Node::Map(entries) = doc {
        write_map(&mut out, 0, entries, false);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_block_yaml_with_safe_scalars() {
        let mut source = Node::map();
        source.comment("from td-agent.conf:2");
        source.set("type", Node::str("tail"));
        source.set("path", Node::List(vec![Node::str("/var/log/a b.log")]));
        source.set("read_from_head", Node::Bool(true));
        let mut record = Node::map();
        record.set("hostname", Node::str("${hostname}"));
        source.set("record", record);
        let mut doc = Node::map();
        doc.set("sources", Node::List(vec![source]));
        doc.set("filters", Node::List(vec![]));
        assert_eq!(
            to_string(&doc),
            "sources:\n  # from td-agent.conf:2\n  - type: tail\n    path:\n      - \"/var/log/a b.log\"\n    read_from_head: true\n    record:\n      hostname: \"${hostname}\"\nfilters: []\n"
        );
        assert_eq!(scalar("yes"), "\"yes\"");
        assert_eq!(scalar("10"), "\"10\"");
        assert_eq!(scalar("mysql.error"), "mysql.error");
    }
}
