//! `record_transformer`: adds fields built from placeholders and removes
//! keys, after fluentd's filter of the same name.
//!
//! Placeholders: `${hostname}`, `${tag}`, `${tag_parts[N]}` (negative N
//! counts from the end), `${time}` (ISO 8601, UTC), `${time_unix}` (the
//! seed's `${time.to_i}`), `${record["key"]}`.

use serde_json::Value;

use crate::config::fields::{error, Fields, Result};
use crate::event::{iso8601, Event};
use crate::yaml::NodeKind;

#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Hostname,
    Tag,
    TagPart(i64),
    Time,
    TimeUnix,
    RecordKey(String),
}

#[derive(Debug)]
pub struct RecordTransformer {
    fields: Vec<(&'static str, Vec<Piece>)>,
    remove_keys: Vec<String>,
    hostname: String,
}

impl RecordTransformer {
    pub fn from_config(f: &mut Fields) -> Result<RecordTransformer> {
        let mut fields = Vec::new();
        if let Some(record) = f.take("record") {
            let NodeKind::Map(pairs) = &record.kind else {
                return error(
                    record,
                    "record_transformer: `record` must be a mapping of key: template",
                );
            };
            for (k, v) in pairs {
                let key = crate::config::fields::string(k)?;
                let template = crate::config::fields::string(v)?;
                let pieces = parse_template(&template).or_else(|e| error(v, e))?;
                fields.push((crate::record::intern(&key), pieces));
            }
        }
        let remove_keys = f.string_list("remove_keys")?;
        Ok(RecordTransformer {
            fields,
            remove_keys,
            hostname: crate::event::hostname(),
        })
    }

    pub fn apply(&self, tag: &str, events: &mut [Event]) {
        for event in events {
            for (key, pieces) in &self.fields {
                let value = self.render(pieces, tag, event);
                event.record.insert(*key, value);
            }
            for key in &self.remove_keys {
                event.record.shift_remove(key);
            }
        }
    }

    fn render(&self, pieces: &[Piece], tag: &str, event: &Event) -> Value {
        // A template that is exactly one record reference keeps the JSON type.
        if let [Piece::RecordKey(k)] = pieces {
            return event.record.get(k).cloned().unwrap_or(Value::Null);
        }
        // One allocation of the exact size for the common constant values
        // (`hostname: "${hostname}"` on every record of a tail).
        match pieces {
            [Piece::TimeUnix] => return Value::from(event.time.div_euclid(1_000_000_000)),
            [Piece::Hostname] => return Value::String(self.hostname.clone()),
            [Piece::Text(t)] => return Value::String(t.clone()),
            _ => {}
        }
        let mut out = String::new();
        for piece in pieces {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Hostname => out.push_str(&self.hostname),
                Piece::Tag => out.push_str(tag),
                Piece::TagPart(i) => {
                    let parts: Vec<&str> = tag.split('.').collect();
                    let idx = if *i < 0 { parts.len() as i64 + i } else { *i };
                    if let Some(p) = usize::try_from(idx).ok().and_then(|i| parts.get(i)) {
                        out.push_str(p);
                    }
                }
                Piece::Time => out.push_str(&iso8601(event.time)),
                Piece::TimeUnix => out.push_str(&event.time.div_euclid(1_000_000_000).to_string()),
                Piece::RecordKey(k) => match event.record.get(k) {
                    Some(Value::String(s)) => out.push_str(s),
                    Some(Value::Null) | None => {}
                    Some(other) => out.push_str(&other.to_string()),
                },
            }
        }
        Value::String(out)
    }
}

fn parse_template(t: &str) -> std::result::Result<Vec<Piece>, String> {
    let mut pieces = Vec::new();
    let mut rest = t;
    while let Some(start) = rest.find("${") {
        if start > 0 {
            pieces.push(Piece::Text(rest[..start].to_string()));
        }
        let end = rest[start..]
            .find('}')
            .ok_or_else(|| format!("unterminated placeholder in `{t}`"))?
            + start;
        let name = &rest[start + 2..end];
        pieces.push(match name {
            "hostname" => Piece::Hostname,
            "tag" => Piece::Tag,
            "time" => Piece::Time,
            "time_unix" | "time.to_i" => Piece::TimeUnix,
            _ => {
                if let Some(i) = name.strip_prefix("tag_parts[").and_then(|s| s.strip_suffix(']')) {
                    Piece::TagPart(i.parse().map_err(|_| format!("bad index in `${{{name}}}`"))?)
                } else if let Some(k) = name
                    .strip_prefix("record[")
                    .and_then(|s| s.strip_suffix(']'))
                    .map(|s| s.trim_matches(|c| c == '"' || c == '\''))
                {
                    Piece::RecordKey(k.to_string())
                } else {
                    return Err(format!(
                        "unknown placeholder `${{{name}}}` (expected hostname, tag, tag_parts[N], time, time_unix or record[\"key\"])"
                    ));
                }
            }
        });
        rest = &rest[end + 1..];
    }
    if !rest.is_empty() {
        pieces.push(Piece::Text(rest.to_string()));
    }
    Ok(pieces)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transformer(yaml: &str) -> RecordTransformer {
        let node = crate::yaml::parse(yaml).unwrap().unwrap();
        let mut f = Fields::new(&node, "filter").unwrap();
        let t = RecordTransformer::from_config(&mut f).unwrap();
        f.finish().unwrap();
        t
    }

    #[test]
    fn renders_every_placeholder() {
        let mut t = transformer(
            "record:\n  host: \"${hostname}\"\n  at: \"${time}\"\n  unix: \"${time_unix}\"\n  \
             where: \"${tag_parts[1]}/${tag_parts[-1]} of ${tag}\"\n  copy: '${record[\"n\"]}'\n  \
             text: 'n=${record[\"n\"]}'\nremove_keys: drop\n",
        );
        t.hostname = "db1".into();
        let mut events = vec![Event {
            time: 1_715_792_559_123_000_000,
            record: serde_json::json!({"n": 5, "drop": true})
                .as_object()
                .unwrap()
                .clone()
                .into(),
        }];
        t.apply("mysql.error.main", &mut events);
        let r = &events[0].record;
        assert_eq!(r["host"], "db1");
        assert_eq!(r["at"], "2024-05-15T17:02:39.123Z");
        assert_eq!(r["unix"], 1_715_792_559);
        assert_eq!(r["where"], "error/main of mysql.error.main");
        assert_eq!(r["copy"], 5);
        assert_eq!(r["text"], "n=5");
        assert!(!r.contains_key("drop"));
    }

    #[test]
    fn unknown_placeholder_is_a_config_error() {
        let node = crate::yaml::parse("record:\n  x: \"${nope}\"\n")
            .unwrap()
            .unwrap();
        let mut f = Fields::new(&node, "filter").unwrap();
        let e = RecordTransformer::from_config(&mut f).unwrap_err();
        assert_eq!(e.mark.line, 2);
        assert!(e.message.contains("unknown placeholder `${nope}`"), "{e}");
    }
}
