//! The queue over both stores: sealing, limits, overflow, in-flight
//! chunks, and a file buffer's restart, progress and quarantine.

use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use super::file::{chunk_path, FileStore};
use super::memory::MemoryStore;
use super::*;

impl Buffer {
    /// Appends serialized records, framing them first (the pipeline frames
    /// while serializing and calls `append_frames`).
    pub fn append(&self, records: &[Vec<u8>]) -> Result<(), BufferError> {
        let mut frames = Vec::new();
        for r in records {
            chunk::encode_into(&mut frames, r);
        }
        self.append_frames(&frames)
    }
}

/// The chunks whose writes the next `sync` makes durable.
fn unsynced_chunks(buf: &Buffer) -> Vec<u64> {
    buf.state
        .lock()
        .unwrap()
        .unsynced
        .iter()
        .map(|(id, _)| *id)
        .collect()
}

fn file_config(dir: &Path) -> BufferConfig {
    BufferConfig {
        storage: Storage::File(dir.to_path_buf()),
        chunk_limit_size: 100,
        total_limit_size: 10_000,
        flush_interval: Duration::from_secs(3600),
        flush_thread_count: 1,
        overflow_action: Overflow::Throw,
    }
}

fn records(n: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| format!("{{\"n\":{i:04}}}").into_bytes())
        .collect()
}

#[test]
fn seals_at_chunk_limit_and_recovers_after_crash() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(PluginMetrics::default());
    let (buf, notes) = Buffer::open(file_config(dir.path()), m.clone()).unwrap();
    assert!(notes.is_empty());
    buf.append(&records(10)).unwrap(); // 10 x (10 + 8) bytes = 180: two chunks
    buf.sync().unwrap();
    let first = buf.take().unwrap().expect("a sealed chunk");
    assert_eq!(first.records, 5);
    let r = first.read().unwrap();
    assert_eq!(r.get(0), b"{\"n\":0000}");
    // Simulate a crash: the process is gone with one chunk in flight and
    // one open, plus a torn frame at the end of the open one.
    let open_path = chunk_path(dir.path(), 2);
    let mut f = OpenOptions::new().append(true).open(&open_path).unwrap();
    f.write_all(&[42, 0, 0, 0, 1, 2]).unwrap();
    drop(f);
    std::mem::forget(buf);
    std::mem::forget(first);

    let (buf, notes) = Buffer::open(file_config(dir.path()), m).unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("cut a torn tail of 6 bytes")),
        "{notes:?}"
    );
    let mut all = Vec::new();
    while let Some(c) = buf.take().unwrap() {
        let r = c.read().unwrap();
        for i in 0..r.len() {
            all.push(String::from_utf8(r.get(i).to_vec()).unwrap());
        }
        buf.complete(c);
    }
    let expected: Vec<String> = records(10)
        .into_iter()
        .map(|r| String::from_utf8(r).unwrap())
        .collect();
    assert_eq!(all, expected, "every record once, in order");
    assert_eq!(buf.total_bytes(), 0);
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        0,
        "delivered chunks deleted"
    );
}

#[test]
fn overflow_actions() {
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = file_config(dir.path());
    cfg.total_limit_size = 200;
    let (buf, _) = Buffer::open(cfg.clone(), Arc::new(PluginMetrics::default())).unwrap();
    buf.append(&records(10)).unwrap();
    assert!(matches!(
        buf.append(&records(3)),
        Err(BufferError::Overflow)
    ));

    cfg.overflow_action = Overflow::DropOldest;
    cfg.storage = Storage::Memory;
    let m = Arc::new(PluginMetrics::default());
    let (buf, _) = Buffer::open(cfg, m.clone()).unwrap();
    buf.append(&records(10)).unwrap();
    buf.append(&records(3)).unwrap();
    assert_eq!(
        m.dropped.load(Ordering::Relaxed),
        5,
        "the oldest chunk went"
    );
}

#[test]
fn oldest_unsent_covers_chunks_in_flight() {
    let (buf, _) = Buffer::open(
        BufferConfig::memory_default(),
        Arc::new(PluginMetrics::default()),
    )
    .unwrap();
    assert_eq!(buf.oldest_unsent(), None);
    buf.append(&records(2)).unwrap();
    std::thread::sleep(Duration::from_millis(20));
    assert!(buf.oldest_unsent().unwrap() >= Duration::from_millis(20));
    buf.request_flush();
    let c = buf.take().unwrap().expect("flush requested");
    assert!(!buf.is_drained(), "a chunk in flight is not delivered yet");
    assert!(buf.oldest_unsent().unwrap() >= Duration::from_millis(20));
    buf.put_back(c);
    let c = buf.take().unwrap().expect("queued again");
    buf.complete(c);
    assert_eq!(buf.oldest_unsent(), None);
}

#[test]
fn open_chunk_is_due_after_flush_interval() {
    let mut cfg = BufferConfig::memory_default();
    cfg.flush_interval = Duration::from_millis(0);
    let (buf, _) = Buffer::open(cfg, Arc::new(PluginMetrics::default())).unwrap();
    assert!(buf.take().unwrap().is_none());
    buf.append(&records(2)).unwrap();
    let c = buf.take().unwrap().expect("due");
    assert_eq!(c.records, 2);
    assert!(!buf.is_drained(), "its chunk is in flight");
    buf.complete(c);
    assert!(buf.is_drained());
}

/// The records of every chunk left, as delivery would send them (from
/// each chunk's progress on).
fn drain(buf: &Buffer) -> Vec<String> {
    let mut all = Vec::new();
    while let Some(c) = buf.take().unwrap() {
        let r = c.read().unwrap();
        for i in c.delivered()..r.len() {
            all.push(String::from_utf8(r.get(i).to_vec()).unwrap());
        }
        buf.complete(c);
    }
    all
}

fn texts(range: std::ops::Range<usize>) -> Vec<String> {
    records(range.end)[range]
        .iter()
        .map(|r| String::from_utf8(r.clone()).unwrap())
        .collect()
}

fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

#[test]
fn restart_goes_on_from_the_recorded_progress() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(PluginMetrics::default());
    let mut cfg = file_config(dir.path());
    cfg.chunk_limit_size = 1000;
    let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
    buf.append(&records(10)).unwrap();
    buf.sync().unwrap();
    buf.request_flush();
    let mut c = buf.take().unwrap().expect("flush requested");
    let r = c.read().unwrap();
    // Two requests of 3 records went through; the third was in flight
    // when the process died.
    buf.acknowledge(&mut c, &r, 3);
    buf.acknowledge(&mut c, &r, 6);
    assert_eq!(c.delivered(), 6);
    assert_eq!(
        names(dir.path()),
        ["chunk-0000000000000001.ack", "chunk-0000000000000001.buf"]
    );
    std::mem::forget(c);
    std::mem::forget(buf);

    let (buf, notes) = Buffer::open(cfg.clone(), m.clone()).unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("4 records queued again (the first 6 were delivered before)")),
        "{notes:?}"
    );
    assert!(!buf.is_drained());
    assert_eq!(drain(&buf), texts(6..10), "only what was not acknowledged");
    assert!(names(dir.path()).is_empty(), "chunk and progress deleted");

    // A progress write torn by the crash: the one before it counts.
    let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
    buf.append(&records(10)).unwrap();
    buf.request_flush();
    let mut c = buf.take().unwrap().unwrap();
    let r = c.read().unwrap();
    buf.acknowledge(&mut c, &r, 2);
    buf.acknowledge(&mut c, &r, 5);
    let ack = dir.path().join(format!("chunk-{:016x}.ack", c.id));
    let mut bytes = fs::read(&ack).unwrap();
    // The second write went to slot 1, at byte 36: half of it landed.
    bytes.truncate(36 + 18);
    fs::write(&ack, &bytes).unwrap();
    std::mem::forget(c);
    std::mem::forget(buf);
    let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
    assert_eq!(drain(&buf), texts(2..10), "back to the intact progress");

    // Progress that does not belong to the chunk beside it (another
    // chunk's, say) is not trusted: the whole chunk goes again.
    let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
    buf.append(&records(10)).unwrap();
    buf.request_flush();
    let mut c = buf.take().unwrap().unwrap();
    let r = c.read().unwrap();
    buf.acknowledge(&mut c, &r, 4);
    let path = dir.path().join(format!("chunk-{:016x}.buf", c.id));
    std::mem::forget(c);
    std::mem::forget(buf);
    let mut other = Vec::new();
    for i in 0..10 {
        chunk::encode_into(&mut other, format!("{{\"other\":{i:03}}}").as_bytes());
    }
    fs::write(&path, &other).unwrap();
    let (buf, notes) = Buffer::open(cfg.clone(), m.clone()).unwrap();
    assert!(
        notes.iter().any(|n| n.contains("does not match the chunk")),
        "{notes:?}"
    );
    assert_eq!(drain(&buf).len(), 10);

    // A progress file whose chunk was deleted (a crash between the two
    // deletions) is removed, and new chunks get ids above it.
    fs::write(dir.path().join("chunk-00000000000000ff.ack"), b"stale").unwrap();
    let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
    assert!(names(dir.path()).is_empty());
    buf.append(&records(1)).unwrap();
    assert_eq!(names(dir.path()), ["chunk-0000000000000100.buf"]);
}

#[test]
fn unreadable_chunks_are_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let m = Arc::new(PluginMetrics::default());
    let cfg = file_config(dir.path());
    let (buf, _) = Buffer::open(cfg.clone(), m.clone()).unwrap();
    buf.append(&records(10)).unwrap(); // two chunks of 5
    buf.request_flush();
    let first = buf.take().unwrap().unwrap();
    let path = dir.path().join("chunk-0000000000000001.buf");
    // A bit flipped on disk in its second record.
    let mut bytes = fs::read(&path).unwrap();
    bytes[30] ^= 0x40;
    fs::write(&path, &bytes).unwrap();
    let e = first.read().err().expect("damaged");
    assert_eq!(e.kind(), io::ErrorKind::InvalidData);
    assert!(e.to_string().contains("1 intact records of 5"), "{e}");
    let message = buf.quarantine(first, "cannot read it");
    let aside = dir.path().join("quarantine/chunk-0000000000000001.buf");
    assert!(message.contains(&aside.display().to_string()), "{message}");
    assert_eq!(fs::read(&aside).unwrap(), bytes);
    assert!(
        fs::read_to_string(dir.path().join("quarantine/chunk-0000000000000001.buf.why"))
            .unwrap()
            .contains("cannot read it")
    );
    assert_eq!(m.chunks_quarantined.load(Ordering::Relaxed), 1);
    // The rest is delivered as usual.
    assert_eq!(drain(&buf), texts(5..10));
    assert!(buf.is_drained());
    assert_eq!(buf.total_bytes(), 0);

    // At start-up, a chunk that cannot be read does not stop the
    // buffer from opening.
    fs::create_dir(dir.path().join("chunk-0000000000000009.buf")).unwrap();
    let (buf, notes) = Buffer::open(cfg, m.clone()).unwrap();
    assert!(
        notes
            .iter()
            .any(|n| n.contains("cannot read it") && n.contains("quarantine")),
        "{notes:?}"
    );
    assert!(dir
        .path()
        .join("quarantine/chunk-0000000000000009.buf")
        .is_dir());
    assert!(buf.is_drained());
    assert_eq!(m.chunks_quarantined.load(Ordering::Relaxed), 2);
}

/// The same appends, deliveries, put-backs and a quarantine through a
/// memory and a file buffer: what the queue hands out and counts must not
/// depend on the store.
#[test]
fn memory_and_file_buffers_queue_alike() {
    let dir = tempfile::tempdir().unwrap();
    let mut memory = file_config(dir.path());
    memory.storage = Storage::Memory;
    let mut seen = Vec::new();
    for cfg in [memory, file_config(dir.path())] {
        let m = Arc::new(PluginMetrics::default());
        let (buf, _) = Buffer::open(cfg, m.clone()).unwrap();
        let mut log = Vec::new();
        // 5 records of 18 bytes fill a chunk of 100: chunks of 5, 5 and
        // an open one of 2.
        buf.append(&records(12)).unwrap();
        assert_eq!(buf.total_bytes(), 12 * 18);
        let mut first = buf.take().unwrap().expect("a sealed chunk");
        let r = first.read().unwrap();
        buf.acknowledge(&mut first, &r, 2);
        log.push(format!(
            "{} {} {}",
            first.id,
            first.records,
            first.delivered()
        ));
        // Not delivered before a stop: it comes first again, from record 2.
        buf.put_back(first);
        let second_try = buf.take().unwrap().unwrap();
        log.push(format!("{} {}", second_try.id, second_try.delivered()));
        buf.complete(second_try);
        let damaged = buf.take().unwrap().unwrap();
        let message = buf.quarantine(damaged, "cannot read it");
        log.push(message.contains("cannot read it").to_string());
        buf.request_flush();
        while let Some(c) = buf.take().unwrap() {
            let r = c.read().unwrap();
            let texts: Vec<String> = (0..r.len())
                .map(|i| String::from_utf8(r.get(i).to_vec()).unwrap())
                .collect();
            log.push(format!("{} {}", c.id, texts.join(",")));
            buf.complete(c);
        }
        assert!(buf.is_drained());
        assert_eq!(buf.total_bytes(), 0);
        assert_eq!(m.buffer_bytes.load(Ordering::Relaxed), 0);
        assert_eq!(m.chunks_quarantined.load(Ordering::Relaxed), 1);
        seen.push(log);
    }
    assert_eq!(
        seen[0],
        ["1 5 2", "1 2", "true", "3 {\"n\":0010},{\"n\":0011}",]
    );
    assert_eq!(seen[0], seen[1], "memory, then file");
    assert_eq!(
        names(dir.path()),
        ["quarantine"],
        "delivered chunk files and their progress deleted"
    );
}

/// Each store's half of a failed append: the bytes that landed are cut
/// off again and the next append follows the records before them.
#[test]
fn both_stores_cut_back_a_failed_append() {
    let dir = tempfile::tempdir().unwrap();
    let stores: [Box<dyn ChunkStore>; 2] = [
        Box::new(MemoryStore),
        Box::new(FileStore::new(dir.path().to_path_buf())),
    ];
    for store in stores {
        let mut c = store.create(7).unwrap();
        let mut frames = Vec::new();
        chunk::encode_into(&mut frames, b"kept");
        let kept = frames.len();
        chunk::encode_into(&mut frames, b"failed");
        c.append(&frames).unwrap();
        c.cut_back(kept as u64).unwrap();
        let mut next = Vec::new();
        chunk::encode_into(&mut next, b"next");
        c.append(&next).unwrap();
        let r = ChunkRecords::open(c.open().unwrap(), 2).unwrap();
        assert_eq!((r.get(0), r.get(1)), (b"kept".to_vec(), b"next".to_vec()));
        let what = c.describe();
        // Only a file has writes to make durable, once.
        let durable = c.unsynced().unwrap().is_some();
        assert!(c.seal().is_none(), "{what}: synced before sealing");
        c.delete();
        match durable {
            false => assert_eq!(what, "memory chunk 7"),
            true => assert!(what.ends_with("chunk-0000000000000007.buf"), "{what}"),
        }
    }
    assert!(names(dir.path()).is_empty(), "the file chunk deleted");
}

#[test]
fn a_delivered_chunk_is_not_synced() {
    let dir = tempfile::tempdir().unwrap();
    let (buf, _) =
        Buffer::open(file_config(dir.path()), Arc::new(PluginMetrics::default())).unwrap();
    buf.append(&records(15)).unwrap(); // 5 records per chunk: two sealed, one open
    assert_eq!(unsynced_chunks(&buf), [1, 2]);
    let first = buf.take().unwrap().expect("a sealed chunk");
    assert_eq!(first.id, 1);
    buf.complete(first);
    // Its pages need never reach the disk; the other sealed one's must.
    assert_eq!(unsynced_chunks(&buf), [2]);
    buf.sync().unwrap();
    assert!(unsynced_chunks(&buf).is_empty());
    // The sealed one is still delivered (the open one is not due yet).
    assert_eq!(drain(&buf), texts(5..10));
}
