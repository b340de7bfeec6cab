//! The delivery loop every sink runs (`flush_thread_count` of them): take a
//! due chunk, send it in requests of at most `max_request_bytes` /
//! `max_request_records` from where its delivery had got to, record the
//! progress after each request, retry transient failures with backoff,
//! move rejected requests to the dead-letter directory, delete the chunk
//! once every record is accounted for. A chunk that cannot be read is
//! quarantined and the loop goes on. Each request's body is read from
//! the chunk a piece at a time while it is sent (`body`).

mod body;

pub use body::{Piece, RequestBody};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::buffer::{Chunk, ChunkRecords};
use crate::log;
use crate::metrics::PluginMetrics;
use crate::writable::write_atomic;

use super::{Attempt, RequestFormat, Sink};
use body::{SharedRecords, Wrapping};

/// Runs until `stop` turns true and the buffer is drained, or `deadline`
/// (set at stop) passes; undelivered file chunks stay on disk.
pub async fn run(sink: Arc<Sink>, mut stop: watch::Receiver<Option<Instant>>) {
    loop {
        let deadline = *stop.borrow();
        if let Some(d) = deadline {
            if Instant::now() >= d || sink.buffer.is_drained() {
                return;
            }
        }
        let chunk = match sink.buffer.take() {
            Ok(c) => c,
            Err(e) => {
                let message = format!("cannot seal a chunk: {e}");
                log::error(&format!("output {}: {message}", sink.id));
                sink.status.failed(&message);
                None
            }
        };
        match chunk {
            Some(chunk) => {
                if let Err(chunk) = deliver(&sink, chunk, &mut stop).await {
                    sink.buffer.put_back(chunk);
                    return;
                }
            }
            None => {
                let wait = sink
                    .buffer
                    .next_due()
                    .clamp(Duration::from_millis(10), Duration::from_millis(500));
                tokio::select! {
                    _ = sink.buffer.ready.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.changed() => {}
                }
            }
        }
    }
}

/// Reading a chunk is tried this often, a second apart, before it is
/// quarantined: an I/O error may pass.
const READ_ATTEMPTS: u32 = 3;

/// The chunk's records; None when it could not be read and was quarantined.
/// Err gives the chunk back when a stop deadline passed meanwhile.
async fn read_or_quarantine(
    sink: &Sink,
    chunk: Chunk,
    stop: &mut watch::Receiver<Option<Instant>>,
) -> Result<Option<(Chunk, ChunkRecords)>, Chunk> {
    let mut attempt = 1;
    let why = loop {
        let e = match chunk.read() {
            Ok(r) => return Ok(Some((chunk, r))),
            Err(e) => e,
        };
        // A damaged chunk stays damaged; a file gone stays gone.
        let lasting = matches!(
            e.kind(),
            std::io::ErrorKind::InvalidData | std::io::ErrorKind::NotFound
        );
        if lasting || attempt >= READ_ATTEMPTS {
            break format!("cannot read it ({attempt} attempts): {e}");
        }
        log::warn(&format!(
            "output {}: cannot read {}: {e}; trying again",
            sink.id,
            chunk.describe()
        ));
        attempt += 1;
        let until = Instant::now() + Duration::from_secs(1);
        if sleep_unless_stopped(until, stop).await.is_err() {
            return Err(chunk);
        }
    };
    let records = chunk.records - chunk.delivered() as u64;
    let message = sink.buffer.quarantine(chunk, &why);
    sink.status
        .failed(&format!("{records} records quarantined: {message}"));
    log::error(&format!(
        "output {}: chunk quarantined, {records} records not sent: {message}",
        sink.id
    ));
    Ok(None)
}

/// Sleeps until `until`; Err when a stop deadline passes first (or falls
/// before `until`).
async fn sleep_unless_stopped(
    until: Instant,
    stop: &mut watch::Receiver<Option<Instant>>,
) -> Result<(), ()> {
    loop {
        if let Some(d) = *stop.borrow() {
            if Instant::now() >= d || d <= until {
                return Err(());
            }
        }
        let now = Instant::now();
        if now >= until {
            return Ok(());
        }
        tokio::select! {
            _ = tokio::time::sleep(until - now) => {}
            _ = stop.changed() => {}
        }
    }
}

/// Delivers a chunk from where its delivery had got to, recording the
/// progress after each request but the last. Err gives the chunk back
/// when a stop deadline passed while it was still being retried.
async fn deliver(
    sink: &Sink,
    chunk: Chunk,
    stop: &mut watch::Receiver<Option<Instant>>,
) -> Result<(), Chunk> {
    let Some((mut chunk, records)) = read_or_quarantine(sink, chunk, stop).await? else {
        return Ok(());
    };
    let total = records.len();
    // Shared with the request in flight, which reads its body from the
    // chunk as it is sent.
    let mut shared = SharedRecords::new(records);
    let mut start = chunk.delivered();
    let mut failures: u32 = 0;
    let mut first_failure: Option<Instant> = None;
    let mut sizing = Sizing::new(sink.max_request_bytes);
    let mut split = Split::default();
    while start < total {
        let end = request_end(
            sink,
            &shared.records,
            start,
            sizing.cap(start).min(split.cap(start)),
            sizing.max_bytes(),
        );
        let body = RequestBody::new(shared.clone(), format_of(sink), start..end);
        let body_len = body.len();
        let outcome = attempt(sink, body).await;
        if !matches!(outcome, Attempt::Done) && shared.read_failed() {
            // The chunk changed under the body (it is never written once
            // sealed): checked again, and quarantined if it is damaged.
            match read_or_quarantine(sink, chunk, stop).await? {
                Some((c, r)) => {
                    chunk = c;
                    shared = SharedRecords::new(r);
                }
                None => return Ok(()),
            }
        }
        let records = &shared.records;
        match outcome {
            Attempt::Done => {
                PluginMetrics::add(&sink.metrics.records_out, (end - start) as u64);
                sink.status.delivered();
                split.delivered(end);
                sizing.delivered(end, body_len);
                start = end;
                failures = 0;
                first_failure = None;
                // The last request's progress is the chunk's deletion.
                if start < total {
                    sink.buffer.acknowledge(&mut chunk, records, start);
                }
            }
            Attempt::Reject { status: 413, .. } if end - start > 1 => {
                sizing.too_large(start, end);
                log::warn(&format!(
                    "output {}: HTTP 413 for {} records; sending at most {} per request",
                    sink.id,
                    end - start,
                    sizing.records
                ));
            }
            Attempt::Reject { status, .. }
                if end - start > 1 && split.refused(status, start, end) =>
            {
                log::warn(&format!(
                    "output {}: HTTP {status} for {} records; sending them again in halves, to send all but the ones refused",
                    sink.id,
                    end - start
                ));
            }
            Attempt::Reject { status, body } => {
                if status == 413 {
                    sizing.single_refused(start);
                }
                // With the split's budget spent, the rest of what it was
                // splitting goes as one: the receiver refuses most of it.
                let end = if split.single_refused(start) {
                    split.until.max(end)
                } else {
                    end
                };
                let reason = format!("rejected with HTTP {status}");
                sink.status
                    .failed(&format!("{} records {reason}", end - start));
                dead_letter(sink, &chunk, records, start, end, &reason, Some(&body));
                start = end;
                if start < total {
                    sink.buffer.acknowledge(&mut chunk, records, start);
                }
            }
            Attempt::Retry { reason, after } => {
                let since = *first_failure.get_or_insert_with(Instant::now);
                let r = &sink.retry;
                let exhausted = !r.forever
                    && (since.elapsed() >= r.timeout
                        || r.max_times.is_some_and(|m| failures as u64 >= m));
                if exhausted {
                    let why = format!(
                        "gave up after {} retries over {:.0?}: {reason}",
                        failures,
                        since.elapsed()
                    );
                    sink.status.failed(&why);
                    dead_letter(sink, &chunk, records, start, total, &why, None);
                    break;
                }
                let wait = after.map_or_else(|| r.backoff(failures), |a| a.min(r.max_interval));
                failures += 1;
                PluginMetrics::add(&sink.metrics.retries, 1);
                PluginMetrics::add(&sink.metrics.records_retried, (end - start) as u64);
                sink.status.retrying(&reason);
                log::warn(&format!(
                    "output {}: {reason}; retry {failures} in {:.1?} ({} records waiting)",
                    sink.id,
                    wait,
                    total - start
                ));
                if sleep_unless_stopped(Instant::now() + wait, stop)
                    .await
                    .is_err()
                {
                    return Err(chunk);
                }
            }
        }
    }
    sink.buffer.complete(chunk);
    Ok(())
}

/// Request sizes after the receiver answered 413 (too large). A refused
/// request is sent again in halves; the refusal is explained either by one
/// record too large on its own (refused alone, then dead-lettered) or by
/// the receiver's body limit (every record of the refused request went
/// through in smaller requests). Only the second is remembered: requests
/// then stay within the largest body the receiver took (at most twice too
/// small, never refused again for size in this chunk); after the first,
/// requests widen
/// back to the configured size at once, and after each success they
/// double, so one oversized record costs the bisection's requests and no
/// more (it used to leave every later request with a single record).
struct Sizing {
    /// Records per request.
    records: usize,
    configured_bytes: usize,
    /// The largest body the receiver took.
    largest_taken: usize,
    /// Once a refusal was for size: the largest body taken by then.
    limit_bytes: Option<usize>,
    /// Refused requests (`start..end`) not yet explained.
    unexplained: Vec<(usize, usize)>,
}

impl Sizing {
    fn new(configured_bytes: usize) -> Sizing {
        Sizing {
            records: usize::MAX,
            configured_bytes,
            largest_taken: 0,
            limit_bytes: None,
            unexplained: Vec::new(),
        }
    }

    /// The records per request from `start`: while refusals are being
    /// explained, never past the end of the innermost refused request.
    fn cap(&self, start: usize) -> usize {
        let until = self
            .unexplained
            .iter()
            .map(|&(_, until)| until)
            .filter(|&until| until > start)
            .min();
        until.map_or(self.records, |u| self.records.min(u - start))
    }

    /// The largest body to send.
    fn max_bytes(&self) -> usize {
        self.configured_bytes
            .min(self.limit_bytes.unwrap_or(usize::MAX))
            .max(1)
    }

    /// Records `start..end` (more than one) were refused.
    fn too_large(&mut self, start: usize, end: usize) {
        self.unexplained.push((start, end));
        self.records = (end - start) / 2;
    }

    /// Records up to `end` went through, the last `bytes` in one body: a
    /// refused request all of whose records did was refused for its size.
    fn delivered(&mut self, end: usize, bytes: usize) {
        self.largest_taken = self.largest_taken.max(bytes);
        let before = self.unexplained.len();
        self.unexplained.retain(|&(_, until)| until > end);
        if self.unexplained.len() < before {
            let taken = self.largest_taken;
            self.limit_bytes = Some(self.limit_bytes.map_or(taken, |l| l.min(taken)).max(1));
        }
        self.widen();
    }

    /// The record at `at` was refused on its own: it explains every refused
    /// request that held it.
    fn single_refused(&mut self, at: usize) {
        self.unexplained
            .retain(|&(start, end)| !(start <= at && at < end));
        self.widen();
    }

    fn widen(&mut self) {
        self.records = if self.unexplained.is_empty() {
            usize::MAX
        } else {
            self.records.max(1).saturating_mul(2)
        };
    }
}

/// Splitting a request the receiver refused for its content (400, 422) to
/// find the records it refuses, by bisection: the refused range is sent in
/// halves; when the first half goes through, the refused record is in the
/// second, which is halved in turn without being sent whole; a record
/// refused on its own is dead-lettered, and the requests after it widen
/// again. Each refused record costs about one refused request per halving
/// (10 for 1000 records). Records before `until` are the first refused
/// request's. A budget of refusals (four per halving) keeps a receiver that
/// refuses everything (a schema it does not know) to a few dozen requests
/// per chunk, not one per record.
#[derive(Default)]
struct Split {
    until: usize,
    cap: usize,
    refusals_left: u32,
    /// Records from the next one up to here hold a refused one.
    bad_until: Option<usize>,
}

impl Split {
    /// The records per request while splitting (no limit otherwise).
    fn cap(&self, start: usize) -> usize {
        if start < self.until {
            self.cap.max(1)
        } else {
            usize::MAX
        }
    }

    /// Records `start..end` (more than one) were refused with `status`:
    /// true if they are to be sent again in halves.
    fn refused(&mut self, status: u16, start: usize, end: usize) -> bool {
        if !matches!(status, 400 | 422) {
            return false;
        }
        if start >= self.until {
            let halvings = usize::BITS - (end - start - 1).leading_zeros();
            *self = Split {
                until: end,
                refusals_left: 4 * halvings,
                ..Split::default()
            };
        }
        if self.refusals_left == 0 {
            return false;
        }
        self.refusals_left -= 1;
        self.bad_until = Some(end);
        self.cap = (end - start) / 2;
        true
    }

    /// Records up to `end` went through.
    fn delivered(&mut self, end: usize) {
        match self.bad_until {
            // The refused record lies in what is left of the range.
            Some(bad) if end < bad => self.cap = ((bad - end) / 2).max(1),
            _ => {
                self.bad_until = None;
                self.cap = self.cap.max(1).saturating_mul(2);
            }
        }
    }

    /// One record at `start` was refused on its own; true if the budget is
    /// spent with records of the refused request still to send, which then
    /// go to the dead letters as one.
    fn single_refused(&mut self, start: usize) -> bool {
        if start >= self.until {
            return false;
        }
        self.bad_until = None;
        if self.refusals_left == 0 {
            return true;
        }
        self.refusals_left -= 1;
        false
    }
}

async fn attempt(sink: &Sink, body: RequestBody) -> Attempt {
    sink.output.deliver(body).await
}

fn format_of(sink: &Sink) -> RequestFormat {
    sink.output.format()
}

/// How far from `start` one request reaches: as far as the limits (`cap`
/// records, `max_bytes`) allow. The first record always goes, alone if it
/// is larger than max_request_bytes: a big record is sent, never dropped
/// for its size; only the receiver can refuse it.
fn request_end(
    sink: &Sink,
    records: &ChunkRecords,
    start: usize,
    cap: usize,
    max_bytes: usize,
) -> usize {
    let format = format_of(sink);
    let max_records = if format == RequestFormat::Json {
        1
    } else {
        sink.max_request_records.min(cap)
    };
    let wrap = Wrapping::of(format);
    let mut len = wrap.open.len();
    let mut end = start;
    while end < records.len() && end - start < max_records {
        let r = records.record_len(end);
        // The record's own pieces, plus the closing `]`.
        let extra = wrap.per_record() + wrap.close.len();
        if end > start && len + r + extra > max_bytes {
            break;
        }
        if end > start {
            len += wrap.between.len();
        }
        len += r + wrap.per_record() - wrap.between.len();
        end += 1;
    }
    end
}

/// Writes records `start..end` of a chunk to the dead-letter directory as
/// ndjson, with a `.meta.json` beside it saying why. Never silent: counted
/// and logged; if even that write fails the records are logged as lost.
fn dead_letter(
    sink: &Sink,
    chunk: &Chunk,
    records: &ChunkRecords,
    start: usize,
    end: usize,
    reason: &str,
    response: Option<&str>,
) {
    let n = (end - start) as u64;
    PluginMetrics::add(&sink.metrics.dead_lettered, n);
    let Some(dir) = &sink.dead_letter_dir else {
        log::error(&format!(
            "output {}: {n} records {reason}; no dead_letter_dir, records dropped",
            sink.id
        ));
        return;
    };
    let stamp = crate::event::now_nanos();
    let base = format!("{}-{stamp}-{}-{start}", sanitize(&sink.id), chunk.id);
    let mut bytes = Vec::new();
    if let Err(e) = records.read_frames(start..end, &mut bytes) {
        sink.metrics.errors.fetch_add(1, Ordering::Relaxed);
        log::error(&format!(
            "output {}: {n} records {reason}; cannot read them from {}: {e}; records lost",
            sink.id,
            chunk.describe()
        ));
        return;
    }
    let result = (|| -> std::io::Result<std::path::PathBuf> {
        std::fs::create_dir_all(dir)?;
        let mut data = Vec::new();
        for r in records.payloads(start..end) {
            data.extend_from_slice(&sink.encoding.dead_letter_line(&bytes[r]));
            data.push(b'\n');
        }
        let meta = serde_json::json!({
            "output": sink.id,
            "reason": reason,
            "response": response,
            "records": n,
            "time": crate::event::iso8601(stamp),
        });
        // The reason first, then the records, each appearing whole: a
        // `replay` running meanwhile never sees a partial file.
        write_atomic(
            &dir.join(format!("{base}.meta.json")),
            meta.to_string().as_bytes(),
        )?;
        let path = dir.join(format!("{base}.ndjson"));
        write_atomic(&path, &data)?;
        Ok(path)
    })();
    match result {
        Ok(path) => log::error(&format!(
            "output {}: {n} records {reason}; moved to {}",
            sink.id,
            path.display()
        )),
        Err(e) => {
            sink.metrics.errors.fetch_add(1, Ordering::Relaxed);
            log::error(&format!(
                "output {}: {n} records {reason}; cannot write dead-letter file in {}: {e}; records lost",
                sink.id,
                dir.display()
            ))
        }
    }
}

fn sanitize(id: &str) -> String {
    id.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}
