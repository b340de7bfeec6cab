//! An entry's fields as the parser gathers them: a short list in the order
//! they were read, with the names the servers write as static strings.
//!
//! A slow-log entry has a dozen or two fields. Gathering them straight into
//! the pipeline's record (a `serde_json::Map`, an IndexMap with SipHash)
//! cost a fifth of the parser's time in key allocations, hashing and drops;
//! a list scanned linearly is cheaper at this size, and `my-agent slowlog`
//! reads its totals from it without building a record at all. The source
//! turns it into a record once, in `into_map`.

use std::borrow::Cow;
use std::ops::Index;

use serde_json::{Map, Value};

/// A field name: static for the fields the servers write, owned for others.
pub type Key = Cow<'static, str>;

#[derive(Debug, Clone, Default, PartialEq)]
pub struct SlowRecord {
    fields: Vec<(Key, Value)>,
    /// A one-word filter of the keys present (`bit`): most inserts are of
    /// new keys and most lookups of the few present, so most skip the scan.
    seen: u64,
}

fn bit(key: &str) -> u64 {
    let b = key.as_bytes();
    let (first, last) = (b.first().copied(), b.last().copied());
    let h = b.len() * 7 + usize::from(first.unwrap_or(0)) * 3 + usize::from(last.unwrap_or(0));
    1 << (h % 64)
}

impl SlowRecord {
    pub fn with_capacity(n: usize) -> SlowRecord {
        SlowRecord {
            fields: Vec::with_capacity(n),
            seen: 0,
        }
    }

    /// Sets `key`; a key set again keeps its place and takes the new
    /// value, as a map would.
    pub fn insert(&mut self, key: impl Into<Key>, value: Value) {
        let key = key.into();
        let bit = bit(&key);
        if self.seen & bit != 0 {
            if let Some(slot) = self.fields.iter_mut().find(|(k, _)| *k == key) {
                slot.1 = value;
                return;
            }
        }
        self.seen |= bit;
        self.fields.push((key, value));
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        if self.seen & bit(key) == 0 {
            return None;
        }
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.get(key).is_some()
    }

    /// The record as the pipeline carries it, fields in the order read.
    pub fn into_map(self) -> Map<String, Value> {
        let mut map = Map::with_capacity(self.fields.len());
        for (k, v) in self.fields {
            map.insert(k.into_owned(), v);
        }
        map
    }
}

impl Index<&str> for SlowRecord {
    type Output = Value;

    /// Panics on a missing key, as `serde_json::Map` does.
    fn index(&self, key: &str) -> &Value {
        self.get(key)
            .unwrap_or_else(|| panic!("no field `{key}` in {self:?}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_an_ordered_map() {
        let mut r = SlowRecord::default();
        r.insert("user", Value::from("app"));
        r.insert(String::from("custom"), Value::from(1));
        r.insert("user", Value::from("root"));
        assert_eq!(r["user"], "root");
        assert!(r.contains_key("custom"));
        assert!(r.get("db").is_none());
        let keys: Vec<String> = r.into_map().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["user", "custom"], "a key set again keeps its place");
    }

    #[test]
    fn more_keys_than_filter_bits() {
        let mut r = SlowRecord::default();
        for i in 0..200 {
            r.insert(format!("k{i}"), Value::from(i));
        }
        for i in 0..200 {
            r.insert(format!("k{i}"), Value::from(i * 2));
        }
        for i in 0..200 {
            assert_eq!(r[format!("k{i}").as_str()], i * 2);
        }
        assert!(r.get("absent").is_none());
        assert_eq!(r.into_map().len(), 200);
    }
}
