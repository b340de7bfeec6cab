//! A followed file's key, and the record ids made from it (`id_key`).
//!
//! A record's id is `<key as 16 hex digits>-<offset where its line or
//! entry starts>`: the same every time the record is sent, so a collector
//! that deduplicates by it (an Elasticsearch `_id`, a ClickHouse
//! ReplacingMergeTree key) stores a record re-sent after a crash once.
//!
//! The key is random, drawn when a file is first followed, saved with its
//! position and reused whenever reading resumes from that position; a file
//! read again from its head because it is another file now (rewritten,
//! truncated, its inode recycled) draws a new one. It is not derived from
//! the file: an inode is recycled after a delete, and slow logs start with
//! the same banner line on every host, so ids from (device, inode, first
//! bytes) would collide and the collector would drop real records; and a
//! small file's head checksum changes as it grows, so its ids would not be
//! stable.

use std::collections::hash_map::RandomState;
use std::fs::File;
use std::hash::{BuildHasher, Hasher};
use std::io::Read;

/// A new file key: from the kernel's random source, or, where that cannot
/// be read (a chroot without /dev), from std's randomly seeded hasher.
pub fn new_file_key() -> u64 {
    let mut bytes = [0u8; 8];
    match File::open("/dev/urandom").and_then(|mut f| f.read_exact(&mut bytes)) {
        Ok(()) => u64::from_ne_bytes(bytes),
        Err(_) => fallback_key(),
    }
}

/// std seeds each `RandomState` from the OS once per thread and then
/// varies it per instance; the time and pid make keys of two agents that
/// somehow start from the same seed differ too.
fn fallback_key() -> u64 {
    let mut h = RandomState::new().build_hasher();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0);
    h.write_u128(now);
    h.write_u32(std::process::id());
    h.finish()
}

/// The id of the record that starts at byte `offset` of the file keyed `key`.
pub fn record_id(key: u64, offset: u64) -> String {
    format!("{key:016x}-{offset}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_differ_and_ids_have_a_fixed_width_key() {
        let (a, b) = (new_file_key(), new_file_key());
        assert_ne!(a, b);
        assert_ne!(fallback_key(), fallback_key());
        assert_eq!(record_id(0xab, 1234), "00000000000000ab-1234");
        assert_eq!(record_id(u64::MAX, 0), "ffffffffffffffff-0");
    }
}
