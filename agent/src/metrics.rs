//! Counters per plugin, rendered in Prometheus text format on `/metrics`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

#[derive(Debug, Default)]
pub struct PluginMetrics {
    pub records_in: AtomicU64,
    /// Each record once, when the receiver accepted it.
    pub records_out: AtomicU64,
    /// Records in attempts that failed and are sent again: the receiver
    /// may hold them twice.
    pub records_retried: AtomicU64,
    pub retries: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub dropped: AtomicU64,
    pub buffer_bytes: AtomicU64,
    /// Failed writes of buffer chunks or delivery progress (a full disk).
    pub buffer_write_errors: AtomicU64,
    /// Chunks that could not be read, moved to the buffer's quarantine.
    pub chunks_quarantined: AtomicU64,
    pub errors: AtomicU64,
    /// Lines split because they exceeded max_line_size.
    pub lines_split: AtomicU64,
    /// Lines with invalid UTF-8, replaced with U+FFFD.
    pub invalid_utf8: AtomicU64,
    /// A file source's files, and how many of them hold a descriptor now.
    pub watched_files: AtomicU64,
    pub open_files: AtomicU64,
    /// A source's errors by reason (`not_found`, `permission_denied`, ...),
    /// also counted in `errors`.
    errors_by_reason: Mutex<Vec<(&'static str, u64)>>,
}

impl PluginMetrics {
    pub fn add(counter: &AtomicU64, n: u64) {
        counter.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts an error in `errors` and under its reason.
    pub fn count_error(&self, reason: &'static str) {
        self.errors.fetch_add(1, Ordering::Relaxed);
        let mut by_reason = self.errors_by_reason.lock().unwrap();
        match by_reason.iter_mut().find(|(r, _)| *r == reason) {
            Some((_, n)) => *n += 1,
            None => by_reason.push((reason, 1)),
        }
    }
}

fn label(value: &str) -> String {
    value.replace('\\', "\\\\").replace('"', "\\\"")
}

/// All plugins' counters, by (kind, id).
#[derive(Debug, Default)]
pub struct Registry {
    plugins: Mutex<Vec<(String, String, Arc<PluginMetrics>)>>,
    /// Forward outputs' receivers, by output id (the latest pipeline's).
    forward_servers: Mutex<Vec<(String, Arc<crate::outputs::forward::servers::Servers>)>>,
}

impl Registry {
    pub fn register(&self, kind: &str, id: &str) -> Arc<PluginMetrics> {
        let mut plugins = self.plugins.lock().unwrap();
        if let Some((_, _, m)) = plugins.iter().find(|(k, i, _)| k == kind && i == id) {
            return m.clone();
        }
        let m = Arc::new(PluginMetrics::default());
        plugins.push((kind.to_string(), id.to_string(), m.clone()));
        m
    }

    pub fn register_forward_servers(
        &self,
        id: &str,
        servers: Arc<crate::outputs::forward::servers::Servers>,
    ) {
        let mut all = self.forward_servers.lock().unwrap();
        all.retain(|(i, _)| i != id);
        all.push((id.to_string(), servers));
    }

    pub fn render(&self) -> String {
        let mut out = self.render_plugins();
        let servers: Vec<_> = self
            .forward_servers
            .lock()
            .unwrap()
            .iter()
            .map(|(id, s)| (label(id), s.clone()))
            .collect();
        crate::outputs::forward::servers::render_metrics(&servers, &mut out);
        out
    }

    fn render_plugins(&self) -> String {
        let plugins = self.plugins.lock().unwrap();
        let mut out = String::new();
        type Series = (
            &'static str,
            &'static str,
            &'static str,
            fn(&PluginMetrics) -> &AtomicU64,
        );
        let series: [Series; 12] = [
            (
                "records_in_total",
                "counter",
                "Records received by the plugin",
                |m| &m.records_in,
            ),
            (
                "records_out_total",
                "counter",
                "Records delivered by the plugin",
                |m| &m.records_out,
            ),
            (
                "records_retried_total",
                "counter",
                "Records in delivery attempts that failed and are sent again",
                |m| &m.records_retried,
            ),
            (
                "retries_total",
                "counter",
                "Delivery attempts that will be retried",
                |m| &m.retries,
            ),
            (
                "dead_lettered_total",
                "counter",
                "Records moved to the dead-letter directory",
                |m| &m.dead_lettered,
            ),
            (
                "dropped_total",
                "counter",
                "Records dropped by overflow_action drop_oldest",
                |m| &m.dropped,
            ),
            (
                "buffer_bytes",
                "gauge",
                "Bytes held in the plugin's buffer",
                |m| &m.buffer_bytes,
            ),
            (
                "buffer_write_errors_total",
                "counter",
                "Failed writes of buffer chunks or delivery progress, e.g. on a full disk",
                |m| &m.buffer_write_errors,
            ),
            (
                "chunks_quarantined_total",
                "counter",
                "Buffer chunks that could not be read, moved to the quarantine directory",
                |m| &m.chunks_quarantined,
            ),
            (
                "errors_total",
                "counter",
                "Errors seen by the plugin",
                |m| &m.errors,
            ),
            (
                "lines_split_total",
                "counter",
                "Lines longer than max_line_size, split",
                |m| &m.lines_split,
            ),
            (
                "invalid_utf8_total",
                "counter",
                "Lines with invalid UTF-8, replaced",
                |m| &m.invalid_utf8,
            ),
        ];
        for (name, kind, help, get) in series {
            let _ = writeln!(out, "# HELP my_agent_{name} {help}.");
            let _ = writeln!(out, "# TYPE my_agent_{name} {kind}");
            for (plugin_kind, id, m) in plugins.iter() {
                let _ = writeln!(
                    out,
                    "my_agent_{name}{{plugin=\"{plugin_kind}\",id=\"{}\"}} {}",
                    label(id),
                    get(m).load(Ordering::Relaxed)
                );
            }
        }
        type SourceGauge = (&'static str, &'static str, fn(&PluginMetrics) -> &AtomicU64);
        let gauges: [SourceGauge; 2] = [
            (
                "source_files",
                "Files a source follows (or waits to open)",
                |m| &m.watched_files,
            ),
            (
                "source_open_files",
                "Descriptors a source holds (at most its max_open_files, but for rotated files with unread data)",
                |m| &m.open_files,
            ),
        ];
        let sources = || plugins.iter().filter(|(kind, _, _)| kind == "source");
        for (name, help, get) in gauges {
            let _ = writeln!(out, "# HELP my_agent_{name} {help}.");
            let _ = writeln!(out, "# TYPE my_agent_{name} gauge");
            for (_, id, m) in sources() {
                let _ = writeln!(
                    out,
                    "my_agent_{name}{{source=\"{}\"}} {}",
                    label(id),
                    get(m).load(Ordering::Relaxed)
                );
            }
        }
        let _ = writeln!(
            out,
            "# HELP my_agent_source_errors_total Errors finding, listing or opening a source's files, by reason."
        );
        let _ = writeln!(out, "# TYPE my_agent_source_errors_total counter");
        for (_, id, m) in sources() {
            for (reason, n) in m.errors_by_reason.lock().unwrap().iter() {
                let _ = writeln!(
                    out,
                    "my_agent_source_errors_total{{source=\"{}\",reason=\"{reason}\"}} {n}",
                    label(id)
                );
            }
        }
        out
    }
}
