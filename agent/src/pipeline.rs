//! Wiring: sources hand events to the `Router`, which runs the matching
//! filters (in config order) and appends the records to the first matching
//! output's buffers; flushers deliver from there.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::watch;

use crate::buffer::{chunk, BufferError, Storage};
use crate::config::Config;
use crate::event::Event;
use crate::filters::Filter;
use crate::log;
use crate::metrics::{PluginMetrics, Registry};
use crate::outputs::{flusher, PreparedSink, RecordEncoding, Sink};
use crate::sources::SourceSettings;
use crate::status::{PipelineStatus, StatusBoard};
use crate::tag_pattern::TagPattern;

/// How long a stop waits for collectors when every buffer is durable.
const DURABLE_STOP_WAIT: Duration = Duration::from_secs(5);

/// Tags whose routes are kept. Tags come from senders too (`forward`,
/// `http`): one that makes up a tag per message must not grow the agent's
/// memory without bound, so past this many the cache starts again.
const MAX_ROUTES: usize = 4096;

/// Buffers for a batch's frames, kept by each source thread for its next
/// batch: a new one per batch started small and grew by copying (for
/// slow-log entries, several times), and large allocations are the
/// allocator's slow path.
mod scratch {
    use std::cell::RefCell;

    /// A buffer grown past this (a batch of huge records) is freed rather
    /// than kept idle.
    const MAX_KEPT: usize = 256 << 10;

    thread_local! {
        static KEPT: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
    }

    pub fn take() -> Vec<u8> {
        KEPT.with_borrow_mut(|kept| kept.pop()).unwrap_or_default()
    }

    pub fn give_back(mut frames: Vec<u8>) {
        if frames.capacity() <= MAX_KEPT {
            frames.clear();
            KEPT.with_borrow_mut(|kept| kept.push(frames));
        }
    }
}

struct Route {
    filters: Vec<usize>,
    sinks: Vec<Arc<Sink>>,
}

pub struct Router {
    filters: Vec<(TagPattern, Filter)>,
    outputs: Vec<(TagPattern, Vec<Arc<Sink>>)>,
    routes: Mutex<HashMap<Arc<str>, Arc<Route>>>,
    unmatched: AtomicU64,
}

impl Router {
    fn route(&self, tag: &Arc<str>) -> Arc<Route> {
        let mut routes = self.routes.lock().unwrap();
        if let Some(r) = routes.get(tag) {
            return r.clone();
        }
        let filters = (0..self.filters.len())
            .filter(|&i| self.filters[i].0.matches(tag))
            .collect();
        let sinks = self
            .outputs
            .iter()
            .find(|(p, _)| p.matches(tag))
            .map(|(_, s)| s.clone())
            .unwrap_or_default();
        let route = Arc::new(Route { filters, sinks });
        if routes.len() >= MAX_ROUTES {
            routes.clear();
        }
        routes.insert(tag.clone(), route.clone());
        route
    }

    /// Filters and buffers a batch of events that share `tag`. The records
    /// are durable only after `sync`.
    pub fn emit(&self, tag: &Arc<str>, mut events: Vec<Event>) -> Result<(), BufferError> {
        let route = self.route(tag);
        for &i in &route.filters {
            self.filters[i].1.apply(tag, &mut events);
        }
        if route.sinks.is_empty() {
            if self
                .unmatched
                .fetch_add(events.len() as u64, Ordering::Relaxed)
                == 0
            {
                log::warn(&format!(
                    "no output matches tag `{tag}`; its records are discarded"
                ));
            }
            return Ok(());
        }
        // Serialized straight into chunk frames: one buffer per batch and
        // encoding (sinks of one encoding share it).
        let mut encoded: Vec<(RecordEncoding, Vec<u8>)> = Vec::new();
        let result = (|| {
            for sink in &route.sinks {
                let i = match encoded.iter().position(|(e, _)| *e == sink.encoding) {
                    Some(i) => i,
                    None => {
                        let mut frames = scratch::take();
                        for e in &events {
                            chunk::encode_in_place(&mut frames, |out| {
                                sink.encoding.encode(out, tag, e)
                            });
                        }
                        encoded.push((sink.encoding, frames));
                        encoded.len() - 1
                    }
                };
                sink.buffer.append_frames(&encoded[i].1)?;
                PluginMetrics::add(&sink.metrics.records_in, events.len() as u64);
            }
            Ok(())
        })();
        for (_, frames) in encoded {
            scratch::give_back(frames);
        }
        result
    }

    /// Makes every buffered record durable (file buffers).
    pub fn sync(&self) -> std::io::Result<()> {
        for (_, sinks) in &self.outputs {
            for s in sinks {
                s.buffer.sync()?;
            }
        }
        Ok(())
    }

    pub fn sinks(&self) -> impl Iterator<Item = &Arc<Sink>> {
        self.outputs.iter().flat_map(|(_, s)| s.iter())
    }
}

impl crate::sources::Downstream for Router {
    fn emit(&self, tag: &Arc<str>, events: Vec<Event>) -> Result<(), BufferError> {
        Router::emit(self, tag, events)
    }

    fn sync(&self) -> std::io::Result<()> {
        Router::sync(self)
    }

    fn survives_kill(&self) -> bool {
        self.sinks()
            .all(|s| matches!(s.buffer.config.storage, Storage::File(_)))
    }
}

/// A running pipeline: source threads and flusher tasks.
pub struct Pipeline {
    router: Arc<Router>,
    stop_sources: Arc<AtomicBool>,
    sources: Vec<JoinHandle<()>>,
    stop_flushers: watch::Sender<Option<Instant>>,
    flushers: Vec<tokio::task::JoinHandle<()>>,
    shutdown_timeout: Duration,
}

/// A configuration made ready to start: clients built and directories
/// checked, with nothing opened that a running pipeline may be using
/// (buffers, pos_files, source threads). See `Pipeline::prepare`.
pub struct Prepared {
    sources: Vec<Box<dyn SourceSettings>>,
    filters: Vec<(TagPattern, Filter)>,
    outputs: Vec<(TagPattern, Vec<PreparedSink>)>,
    shutdown_timeout: Duration,
}

impl Pipeline {
    /// Does everything that can fail and can be done while another
    /// pipeline runs, so that a reload refuses a configuration that cannot
    /// start before it stops the one that works.
    pub fn prepare(config: Config) -> anyhow::Result<Prepared> {
        for source in &config.sources {
            source.prepare()?;
        }
        let mut outputs = Vec::new();
        for o in config.outputs {
            let sinks = o
                .sinks
                .into_iter()
                .map(|s| s.prepare())
                .collect::<anyhow::Result<Vec<_>>>()?;
            outputs.push((o.pattern, sinks));
        }
        Ok(Prepared {
            sources: config.sources,
            filters: config.filters,
            outputs,
            shutdown_timeout: config.system.shutdown_timeout,
        })
    }

    /// Prepares and starts `config` (the agent's first start).
    pub async fn start(
        config: Config,
        registry: &Registry,
        board: &StatusBoard,
        rt: &tokio::runtime::Handle,
    ) -> anyhow::Result<Pipeline> {
        Pipeline::prepare(config)?.start(registry, board, rt).await
    }
}

impl Prepared {
    /// Opens the buffers, builds every source, then starts the flushers and
    /// source threads, and publishes their entries on `board` (replacing a
    /// previous pipeline's). Whatever can fail comes before the first
    /// thread starts, so a failure leaves nothing running.
    pub async fn start(
        self,
        registry: &Registry,
        board: &StatusBoard,
        rt: &tokio::runtime::Handle,
    ) -> anyhow::Result<Pipeline> {
        let mut outputs = Vec::new();
        for (pattern, prepared) in self.outputs {
            let mut sinks = Vec::new();
            for s in prepared {
                let (sink, notes) = s.open(registry)?;
                for n in notes {
                    log::info(&format!("output {}: recovered {n}", sink.id));
                }
                sinks.push(Arc::new(sink));
            }
            outputs.push((pattern, sinks));
        }
        let router = Arc::new(Router {
            filters: self.filters,
            outputs,
            routes: Mutex::new(HashMap::new()),
            unmatched: AtomicU64::new(0),
        });

        let mut ready = Vec::new();
        let mut statuses = Vec::new();
        for (i, source) in self.sources.into_iter().enumerate() {
            let id = format!("{}{i}", source.kind());
            let metrics = registry.register("source", &id);
            let built = source.build(id.clone(), metrics)?;
            statuses.push(built.status);
            ready.push((id, built.run));
        }

        let (stop_flushers, stop_rx) = watch::channel(None);
        let mut flushers = Vec::new();
        for sink in router.sinks() {
            for _ in 0..sink.buffer.config.flush_thread_count {
                flushers.push(rt.spawn(flusher::run(sink.clone(), stop_rx.clone())));
            }
        }
        let stop_sources = Arc::new(AtomicBool::new(false));
        let mut pipeline = Pipeline {
            router,
            stop_sources,
            sources: Vec::new(),
            stop_flushers,
            flushers,
            shutdown_timeout: self.shutdown_timeout,
        };
        for (id, source) in ready {
            let router: Arc<dyn crate::sources::Downstream> = pipeline.router.clone();
            let stop = pipeline.stop_sources.clone();
            let spawned = std::thread::Builder::new()
                .name(id.clone())
                .spawn(move || source(router, stop));
            match spawned {
                Ok(handle) => pipeline.sources.push(handle),
                Err(e) => {
                    // Out of threads: stop what started (it flushes what
                    // it read) rather than run half a configuration.
                    pipeline.stop().await;
                    anyhow::bail!("cannot start source {id}: {e}");
                }
            }
        }
        board.publish(PipelineStatus {
            sources: statuses,
            outputs: pipeline.router.sinks().map(|s| s.status.clone()).collect(),
        });
        Ok(pipeline)
    }
}

impl Pipeline {
    /// SIGUSR1: deliver what is buffered now.
    pub fn flush(&self) {
        for s in self.router.sinks() {
            s.buffer.request_flush();
        }
    }

    /// Stops reading, then gives the flushers until the shutdown timeout to
    /// drain. File buffers keep whatever is left for the next start.
    pub async fn stop(self) {
        self.stop_sources.store(true, Ordering::Relaxed);
        let sources = self.sources;
        let _ = tokio::task::spawn_blocking(move || {
            for s in sources {
                let _ = s.join();
            }
        })
        .await;
        for s in self.router.sinks() {
            s.buffer.close();
        }
        // With every output on a file buffer nothing is lost by stopping
        // early: what is left is sent after the next start. So a stop (a
        // package upgrade's restart, a reload) gives an unreachable collector
        // a few seconds, not the whole shutdown_timeout, which would hold the
        // yum/dnf transaction on every host. Memory buffers get it all.
        let durable = crate::sources::Downstream::survives_kill(&*self.router);
        let wait = if durable {
            self.shutdown_timeout.min(DURABLE_STOP_WAIT)
        } else {
            self.shutdown_timeout
        };
        let _ = self.stop_flushers.send(Some(Instant::now() + wait));
        for f in self.flushers {
            let _ = f.await;
        }
        for s in self.router.sinks() {
            if !s.buffer.is_drained() {
                log::warn(&format!(
                    "output {}: {} bytes not delivered before shutdown; kept for the next start if the buffer is a file",
                    s.id,
                    s.buffer.total_bytes()
                ));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn made_up_tags_do_not_grow_the_route_cache_without_bound() {
        let router = Router {
            filters: Vec::new(),
            outputs: Vec::new(),
            routes: Mutex::new(HashMap::new()),
            unmatched: AtomicU64::new(0),
        };
        for n in 0..3 * MAX_ROUTES {
            let tag: Arc<str> = format!("sender.made.up.{n}").into();
            router.emit(&tag, Vec::new()).unwrap();
            assert!(router.routes.lock().unwrap().len() <= MAX_ROUTES);
        }
        let again: Arc<str> = "sender.made.up.1".into();
        assert!(router.route(&again).sinks.is_empty());
    }
}
