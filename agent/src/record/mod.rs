//! A record: its fields as a short list in the order they were set, keys
//! that are static (the names the slow-log parser knows, and the config's:
//! `message_key`, `record_transformer`'s keys, interned), shared (the keys
//! a forward sender repeats in every record of a message) or owned.
//!
//! Records used to be `serde_json::Map`s (an IndexMap with SipHash): per
//! record a hash table, an entries vector and a key allocation per field,
//! which were a fifth of the tail -> http path's CPU in a profile of the
//! 1M-line bench (IndexMap inserts, SipHash, malloc and free). A record
//! has a handful of fields, so a list scanned linearly is cheaper; a
//! one-word filter of the keys present skips most scans, and a record
//! with many fields (a forward or http sender decides that) gets a hash
//! index, so that inserting n fields stays linear in n.
//!
//! The semantics are the map's: a key set again keeps its place and takes
//! the new value, a removed key closes its gap, and records are equal when
//! they have the same fields whatever their order.

mod json;

use std::hash::BuildHasher;
use std::ops::Deref;
use std::sync::Arc;

use serde::ser::{Serialize, SerializeMap, Serializer};
use serde_json::{Map, Value};

/// A field name.
#[derive(Clone)]
pub enum Key {
    Static(&'static str),
    Shared(Arc<str>),
    Owned(String),
}

impl Deref for Key {
    type Target = str;

    fn deref(&self) -> &str {
        match self {
            Key::Static(s) => s,
            Key::Shared(s) => s,
            Key::Owned(s) => s,
        }
    }
}

impl std::fmt::Debug for Key {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        (**self).fmt(f)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        **self == **other
    }
}

impl PartialEq<str> for Key {
    fn eq(&self, other: &str) -> bool {
        &**self == other
    }
}

impl From<&'static str> for Key {
    fn from(s: &'static str) -> Key {
        Key::Static(s)
    }
}

impl From<String> for Key {
    fn from(s: String) -> Key {
        Key::Owned(s)
    }
}

impl From<Arc<str>> for Key {
    fn from(s: Arc<str>) -> Key {
        Key::Shared(s)
    }
}

impl From<&Arc<str>> for Key {
    fn from(s: &Arc<str>) -> Key {
        Key::Shared(s.clone())
    }
}

impl From<Key> for String {
    fn from(k: Key) -> String {
        match k {
            Key::Owned(s) => s,
            other => other.to_string(),
        }
    }
}

/// A field name from the configuration (`message_key`, `record_transformer`'s
/// keys, `id_key`), kept for the life of the process so that records refer
/// to it as a `Key::Static`: a shared `Arc<str>` cost an atomic increment
/// and decrement per record and field on the tail path. Each distinct name
/// is kept once, so reloads that name the same fields add nothing; only
/// names an operator writes into a configuration are interned, never names
/// that arrive with records.
pub fn intern(name: &str) -> &'static str {
    static NAMES: std::sync::Mutex<std::collections::BTreeSet<&'static str>> =
        std::sync::Mutex::new(std::collections::BTreeSet::new());
    let mut names = NAMES.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(&known) = names.get(name) {
        return known;
    }
    let kept: &'static str = Box::leak(name.into());
    names.insert(kept);
    kept
}

/// Above this many fields a record keeps a hash index of its keys.
const INDEXED: usize = 32;

#[derive(Clone, Default)]
pub struct Record {
    fields: Vec<(Key, Value)>,
    /// A one-word filter of the keys present (`bit`): most inserts are of
    /// new keys and most lookups of the few present, so most skip the scan.
    seen: u64,
    index: Option<Box<KeyIndex>>,
}

/// Positions in `fields`, hashed by key (SipHash with a random key: the
/// keys come from senders).
#[derive(Clone)]
struct KeyIndex {
    table: hashbrown::HashTable<usize>,
    state: std::hash::RandomState,
}

#[inline]
fn bit(key: &str) -> u64 {
    let b = key.as_bytes();
    let (first, last) = (b.first().copied(), b.last().copied());
    let h = b.len() * 7 + usize::from(first.unwrap_or(0)) * 3 + usize::from(last.unwrap_or(0));
    1 << (h % 64)
}

impl KeyIndex {
    #[inline(never)]
    fn build(fields: &[(Key, Value)]) -> Box<KeyIndex> {
        let mut ix = Box::new(KeyIndex {
            table: hashbrown::HashTable::with_capacity(fields.len()),
            state: std::hash::RandomState::new(),
        });
        for i in 0..fields.len() {
            ix.add(fields, i);
        }
        ix
    }

    #[inline(never)]
    fn add(&mut self, fields: &[(Key, Value)], i: usize) {
        let state = &self.state;
        let hash = state.hash_one(&*fields[i].0);
        self.table
            .insert_unique(hash, i, |&j| state.hash_one(&*fields[j].0));
    }

    #[inline(never)]
    fn find(&self, fields: &[(Key, Value)], key: &str) -> Option<usize> {
        let hash = self.state.hash_one(key);
        self.table.find(hash, |&i| *fields[i].0 == *key).copied()
    }
}

/// The field lists of records dropped on this thread, emptied, for the
/// next records made on it. A source makes a read's records and drops
/// them once they are encoded, on its own thread: each list was an
/// allocation of a size class that the allocator's thread cache holds few
/// of (a slow-log entry's sixteen fields of 96 bytes: 1.5 KiB), so most
/// of a read's 170 entries went to the arena to allocate and to free, a
/// fortieth of the slow-log path's instructions. At most `SPARE_LISTS`
/// lists of at most `INDEXED` fields are kept (768 KiB at the very most),
/// no more than a read's records had in use at once, and only on a thread
/// that makes records: a forward input's records are dropped on the
/// runtime's workers once they are stored, which make none, and kept 256
/// lists each that nothing took.
const SPARE_LISTS: usize = 256;

/// A thread's kept lists.
struct Spare {
    lists: Vec<Vec<(Key, Value)>>,
    /// Whether the thread has made a record (`with_capacity`).
    makes: bool,
}

thread_local! {
    static SPARE: std::cell::RefCell<Spare> = const {
        std::cell::RefCell::new(Spare {
            lists: Vec::new(),
            makes: false,
        })
    };
}

impl Drop for Record {
    #[inline]
    fn drop(&mut self) {
        // Records made empty (`Default`, taken from) have no list.
        if self.fields.capacity() != 0 {
            keep_list(std::mem::take(&mut self.fields));
        }
    }
}

/// Keeps a dropped record's list for the next record, if there is room.
fn keep_list(mut fields: Vec<(Key, Value)>) {
    if fields.capacity() > INDEXED {
        return;
    }
    fields.clear();
    // After the thread's locals are gone (a record dropped in another
    // local's destructor), the list is simply freed.
    let _ = SPARE.try_with(|spare| {
        let mut spare = spare.borrow_mut();
        if spare.makes && spare.lists.len() < SPARE_LISTS {
            spare.lists.push(fields);
        }
    });
}

impl Record {
    pub fn with_capacity(n: usize) -> Record {
        // A new list has room for `n` exactly: `reserve` on an empty list
        // makes room for at least four, which doubled the lists of the
        // two-field records a forward receiver decodes a whole message of
        // at once (its peak RSS 1.16x, its CPU per record 1.3x, on the
        // first writes to the extra memory).
        let kept = SPARE.try_with(|spare| {
            let mut spare = spare.borrow_mut();
            spare.makes = true;
            spare.lists.pop()
        });
        let fields = match kept {
            Ok(Some(mut kept)) => {
                kept.reserve_exact(n);
                kept
            }
            _ => Vec::with_capacity(n),
        };
        Record {
            fields,
            seen: 0,
            index: None,
        }
    }

    pub fn len(&self) -> usize {
        self.fields.len()
    }

    #[inline]
    fn position(&self, key: &str) -> Option<usize> {
        if let Some(ix) = &self.index {
            return ix.find(&self.fields, key);
        }
        if self.seen & bit(key) == 0 {
            return None;
        }
        self.fields.iter().position(|(k, _)| **k == *key)
    }

    pub fn get(&self, key: &str) -> Option<&Value> {
        self.position(key).map(|i| &self.fields[i].1)
    }

    pub fn contains_key(&self, key: &str) -> bool {
        self.position(key).is_some()
    }

    /// Sets `key`; a key set again keeps its place and takes the new
    /// value. Returns the value it had. Most inserts are of a key not yet
    /// there (its filter bit clear) into a short list with room: that
    /// path is inlined, where a static name's bit folds to a constant;
    /// as one function with the rest, the call cost more than the work.
    #[inline]
    pub fn insert(&mut self, key: impl Into<Key>, value: Value) -> Option<Value> {
        let key = key.into();
        let bit = bit(&key);
        if self.seen & bit == 0
            && self.index.is_none()
            && self.fields.len() < self.fields.capacity().min(INDEXED)
        {
            self.seen |= bit;
            self.fields.push((key, value));
            return None;
        }
        self.insert_found_or_growing(key, value)
    }

    /// `insert` of a key that may be there, or into a list that grows or
    /// gets its index.
    #[inline(never)]
    fn insert_found_or_growing(&mut self, key: Key, value: Value) -> Option<Value> {
        if let Some(i) = self.position(&key) {
            return Some(std::mem::replace(&mut self.fields[i].1, value));
        }
        self.push_new(key, value);
        None
    }

    /// Appends a field whose key is not present.
    #[inline]
    fn push_new(&mut self, key: Key, value: Value) {
        self.seen |= bit(&key);
        self.fields.push((key, value));
        let last = self.fields.len() - 1;
        match &mut self.index {
            Some(ix) => ix.add(&self.fields, last),
            None if self.fields.len() > INDEXED => self.index = Some(KeyIndex::build(&self.fields)),
            None => {}
        }
    }

    /// Removes `key`, closing its gap (the others keep their order).
    pub fn shift_remove(&mut self, key: &str) -> Option<Value> {
        let i = self.position(key)?;
        let (_, value) = self.fields.remove(i);
        // Positions after `i` moved: the index is rebuilt (removals are
        // the config's `remove_keys`, a few per record at most).
        if self.index.is_some() {
            self.index = (self.fields.len() > INDEXED).then(|| KeyIndex::build(&self.fields));
        }
        Some(value)
    }

    pub fn iter(&self) -> impl ExactSizeIterator<Item = (&str, &Value)> {
        self.fields.iter().map(|(k, v)| (&**k, v))
    }

    #[cfg(test)]
    pub fn keys(&self) -> impl ExactSizeIterator<Item = &str> {
        self.fields.iter().map(|(k, _)| &**k)
    }

    /// The record as a JSON object, fields in order.
    #[cfg(test)]
    pub fn into_map(mut self) -> Map<String, Value> {
        let mut map = Map::with_capacity(self.fields.len());
        for (k, v) in std::mem::take(&mut self.fields) {
            map.insert(k.into(), v);
        }
        map
    }
}

impl From<Map<String, Value>> for Record {
    /// A JSON object's fields, in order (its keys are already unique).
    fn from(map: Map<String, Value>) -> Record {
        let mut r = Record::with_capacity(map.len());
        for (k, v) in map {
            r.seen |= bit(&k);
            r.fields.push((Key::Owned(k), v));
        }
        if r.fields.len() > INDEXED {
            r.index = Some(KeyIndex::build(&r.fields));
        }
        r
    }
}

impl<K: Into<Key>> FromIterator<(K, Value)> for Record {
    /// Fields in order; a repeated key keeps its first place and its last
    /// value, as a map's inserts would.
    fn from_iter<I: IntoIterator<Item = (K, Value)>>(iter: I) -> Record {
        let iter = iter.into_iter();
        let mut r = Record::with_capacity(iter.size_hint().0);
        for (k, v) in iter {
            r.insert(k, v);
        }
        r
    }
}

impl IntoIterator for Record {
    type Item = (Key, Value);
    type IntoIter = std::vec::IntoIter<(Key, Value)>;

    fn into_iter(mut self) -> Self::IntoIter {
        std::mem::take(&mut self.fields).into_iter()
    }
}

impl std::ops::Index<&str> for Record {
    type Output = Value;

    /// Panics on a missing key, as `serde_json::Map` does.
    fn index(&self, key: &str) -> &Value {
        self.get(key)
            .unwrap_or_else(|| panic!("no field `{key}` in {self:?}"))
    }
}

impl PartialEq for Record {
    /// The same fields with the same values, in any order (a map's
    /// equality).
    fn eq(&self, other: &Record) -> bool {
        self.len() == other.len() && self.iter().all(|(k, v)| other.get(k) == Some(v))
    }
}

impl std::fmt::Debug for Record {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

impl Serialize for Record {
    /// A JSON object (or a msgpack map), fields in order.
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut map = s.serialize_map(Some(self.fields.len()))?;
        for (k, v) in &self.fields {
            map.serialize_entry(&**k, v)?;
        }
        map.end()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_as_an_ordered_map() {
        let mut r = Record::default();
        r.insert("user", Value::from("app"));
        r.insert(String::from("custom"), Value::from(1));
        assert_eq!(
            r.insert("user", Value::from("root")),
            Some(Value::from("app"))
        );
        assert_eq!(r["user"], "root");
        assert!(r.contains_key("custom"));
        assert!(r.get("db").is_none());
        r.insert(Arc::<str>::from("db"), Value::Null);
        assert_eq!(r.shift_remove("custom"), Some(Value::from(1)));
        assert_eq!(r.keys().collect::<Vec<_>>(), ["user", "db"]);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"user":"root","db":null}"#
        );
        let keys: Vec<String> = r.into_map().into_iter().map(|(k, _)| k).collect();
        assert_eq!(keys, ["user", "db"], "a key set again keeps its place");
    }

    #[test]
    fn many_keys_are_indexed_and_stay_in_order() {
        let mut r = Record::default();
        for i in 0..200 {
            r.insert(format!("k{i}"), Value::from(i));
        }
        assert!(r.index.is_some());
        for i in 0..200 {
            r.insert(format!("k{i}"), Value::from(i * 2));
        }
        for i in 0..200 {
            assert_eq!(r[format!("k{i}").as_str()], i * 2);
        }
        assert!(r.get("absent").is_none());
        for i in (0..200).step_by(3) {
            assert!(r.shift_remove(&format!("k{i}")).is_some());
        }
        let keys: Vec<&str> = r.keys().collect();
        let want: Vec<String> = (0..200)
            .filter(|i| i % 3 != 0)
            .map(|i| format!("k{i}"))
            .collect();
        assert_eq!(keys, want);
        for k in &want {
            assert!(r.contains_key(k), "{k}");
        }
        assert_eq!(r.len(), want.len());
    }

    #[test]
    fn inserting_many_keys_is_linear() {
        // 200,000 distinct keys, then each again: quadratic scanning would
        // take minutes; the index makes it a fraction of a second.
        let t = std::time::Instant::now();
        let mut r = Record::default();
        for round in 0..2 {
            for i in 0..200_000 {
                r.insert(format!("key{i}"), Value::from(round));
            }
        }
        assert_eq!(r.len(), 200_000);
        assert!(
            t.elapsed() < std::time::Duration::from_secs(20),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn equality_ignores_order_and_conversions_keep_it() {
        let a: Record = [("x", Value::from(1)), ("y", Value::from(2))]
            .into_iter()
            .collect();
        let b: Record = [("y", Value::from(2)), ("x", Value::from(1))]
            .into_iter()
            .collect();
        assert_eq!(a, b);
        let map = serde_json::json!({"z": 1, "a": [1, 2]})
            .as_object()
            .unwrap()
            .clone();
        let r = Record::from(map.clone());
        assert_eq!(r.keys().collect::<Vec<_>>(), ["z", "a"]);
        assert_eq!(r.into_map(), map);
    }

    #[test]
    fn a_new_list_has_room_for_the_fields_asked_for_and_no_more() {
        // On a thread of its own: no kept lists.
        std::thread::spawn(|| {
            for n in 0..40 {
                let r = Record::with_capacity(n);
                assert_eq!(r.fields.capacity(), n, "room for {n}");
                std::mem::forget(r);
            }
        })
        .join()
        .unwrap();
    }

    #[test]
    fn a_thread_that_makes_no_records_keeps_no_lists() {
        let made: Vec<Record> = (0..10)
            .map(|i| {
                let mut r = Record::with_capacity(2);
                r.insert("a", Value::from(i));
                r
            })
            .collect();
        let kept = std::thread::spawn(move || {
            drop(made);
            SPARE.with(|s| s.borrow().lists.len())
        })
        .join()
        .unwrap();
        assert_eq!(kept, 0);
        // This thread made them: it keeps what it drops.
        drop(Record::with_capacity(2));
        assert!(SPARE.with(|s| !s.borrow().lists.is_empty()));
    }

    #[test]
    fn records_made_from_kept_lists_start_empty() {
        // Dropped records leave their lists to the next ones made on this
        // thread: nothing of theirs may show.
        let old: Vec<Record> = (0..SPARE_LISTS + 10)
            .map(|i| {
                let mut r = Record::with_capacity(4);
                for k in ["a", "b", "c"] {
                    r.insert(Key::Owned(format!("{k}{i}")), Value::from(i));
                }
                r.insert("shared", Value::from("old"));
                r
            })
            .collect();
        drop(old);
        for i in 0..SPARE_LISTS + 10 {
            let mut r = Record::with_capacity(2);
            assert_eq!(r.len(), 0);
            assert!(!r.contains_key("shared") && r.get(&format!("a{i}")).is_none());
            assert_eq!(r.insert("shared", Value::from("new")), None);
            r.insert("x", Value::from(i));
            assert_eq!(r.keys().collect::<Vec<_>>(), ["shared", "x"]);
            assert_eq!(r["shared"], "new");
            std::mem::forget(r);
        }
        // A record past the index's size was not kept, or comes back empty.
        let big: Record = (0..INDEXED + 5)
            .map(|i| (format!("k{i}"), Value::from(i)))
            .collect();
        drop(big);
        let r = Record::with_capacity(1);
        assert_eq!(r.len(), 0);
        assert!(r.index.is_none());
    }
}
