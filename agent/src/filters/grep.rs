//! `grep`: keeps events whose fields match every `regexp` rule and none of
//! the `exclude` rules (AND for regexp, OR for exclude, as in fluentd).

use regex::Regex;
use serde_json::Value;

use crate::config::fields::{error, string, Fields, Result};
use crate::event::Event;
use crate::yaml::NodeKind;

#[derive(Debug)]
pub struct Grep {
    regexp: Vec<(String, Regex)>,
    exclude: Vec<(String, Regex)>,
}

impl Grep {
    pub fn from_config(f: &mut Fields) -> Result<Grep> {
        let regexp = rules(f, "regexp")?;
        let exclude = rules(f, "exclude")?;
        if regexp.is_empty() && exclude.is_empty() {
            return error(
                f.node(),
                "grep: needs at least one `regexp` or `exclude` rule",
            );
        }
        Ok(Grep { regexp, exclude })
    }

    pub fn apply(&self, events: &mut Vec<Event>) {
        events.retain(|e| {
            self.regexp.iter().all(|(k, re)| field_matches(e, k, re))
                && !self.exclude.iter().any(|(k, re)| field_matches(e, k, re))
        });
    }
}

fn field_matches(event: &Event, key: &str, re: &Regex) -> bool {
    match event.record.get(key) {
        Some(Value::String(s)) => re.is_match(s),
        Some(Value::Null) | None => false,
        Some(other) => re.is_match(&other.to_string()),
    }
}

fn rules(f: &mut Fields, name: &str) -> Result<Vec<(String, Regex)>> {
    let Some(node) = f.take(name) else {
        return Ok(Vec::new());
    };
    let NodeKind::Seq(items) = &node.kind else {
        return error(
            node,
            format!("grep: `{name}` must be a list of {{key, pattern}}"),
        );
    };
    let mut out = Vec::new();
    for item in items {
        let mut r = Fields::new(item, "grep rule")?;
        let key = r.required_string("key")?;
        let pattern_node = r.required("pattern")?;
        let pattern = string(pattern_node)?;
        r.finish()?;
        let re = Regex::new(&pattern)
            .or_else(|e| error(pattern_node, format!("grep: bad pattern: {e}")))?;
        out.push((key, re));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regexp_is_and_exclude_is_or() {
        let node = crate::yaml::parse(
            "regexp:\n  - {key: message, pattern: 'ERROR'}\n  - {key: level, pattern: '^[0-9]+$'}\n\
             exclude:\n  - {key: message, pattern: 'ignore'}\n  - {key: user, pattern: '^repl$'}\n",
        )
        .unwrap()
        .unwrap();
        let mut f = Fields::new(&node, "filter").unwrap();
        let g = Grep::from_config(&mut f).unwrap();
        f.finish().unwrap();
        let ev = |m: &str, level: Value, user: &str| Event {
            time: 0,
            record: serde_json::json!({"message": m, "level": level, "user": user})
                .as_object()
                .unwrap()
                .clone()
                .into(),
        };
        let mut events = vec![
            ev("ERROR a", 3.into(), "app"),
            ev("ERROR b", "x".into(), "app"),
            ev("ERROR ignore", 3.into(), "app"),
            ev("ERROR c", 3.into(), "repl"),
            ev("note", 3.into(), "app"),
        ];
        g.apply(&mut events);
        let kept: Vec<&str> = events
            .iter()
            .map(|e| e.record["message"].as_str().unwrap())
            .collect();
        assert_eq!(kept, ["ERROR a"]);
    }
}
