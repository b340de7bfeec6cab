//! What `GET /status` reports: each source's files and current problems,
//! each output's delivery state and backlog. Sources and flushers keep
//! their entries current as they work; the metrics listener renders the
//! running pipeline's entries as JSON. A reload publishes the new
//! pipeline's entries in one step, so a reader never sees a mix.
//!
//! Kept free of the pipeline's types (the buffer is seen through
//! `BufferGauge`) so that sources and outputs can depend on it.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The running pipeline's entries, swapped whole on a reload.
#[derive(Default)]
pub struct StatusBoard {
    current: Mutex<Arc<PipelineStatus>>,
}

#[derive(Default)]
pub struct PipelineStatus {
    pub sources: Vec<Arc<SourceStatus>>,
    pub outputs: Vec<Arc<OutputStatus>>,
}

impl StatusBoard {
    pub fn publish(&self, pipeline: PipelineStatus) {
        *self.current.lock().unwrap() = Arc::new(pipeline);
    }

    /// The `/status` document. `ok` is false when any source has a current
    /// problem or any output's last attempt failed.
    pub fn render(&self) -> Value {
        // Cloned out so that rendering never holds up a reload.
        let current = self.current.lock().unwrap().clone();
        let sources: Vec<Value> = current.sources.iter().map(|s| s.render()).collect();
        let outputs: Vec<Value> = current.outputs.iter().map(|o| o.render()).collect();
        let ok = sources.iter().chain(&outputs).all(|v| v["ok"] == true);
        json!({
            "ok": ok,
            "version": env!("CARGO_PKG_VERSION"),
            "pid": std::process::id(),
            "sources": sources,
            "outputs": outputs,
        })
    }
}

/// One file a source follows.
#[derive(Debug, Clone, PartialEq)]
pub struct FileStatus {
    pub path: PathBuf,
    /// Bytes before this are safely in the output buffers (the resume
    /// point saved in `pos_file`).
    pub position: u64,
    pub size: u64,
    /// The path no longer names this file (renamed or removed); it is read
    /// to its end before it is let go.
    pub rotated: bool,
    /// Holds a descriptor: a source closes files read to their end when it
    /// follows more than its `max_open_files`, and reopens them as they grow.
    pub open: bool,
}

/// Something that keeps a source from reading what it was configured to.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceProblem {
    /// The file or directory concerned (a server address for mysql_query).
    pub path: String,
    /// Machine-readable, as in `my_agent_source_errors_total`.
    pub reason: &'static str,
    /// What an operator reads: the system's answer and what to do.
    pub message: String,
}

#[derive(Debug, Default)]
struct SourceState {
    files: Vec<FileStatus>,
    problems: Vec<SourceProblem>,
    /// For problems that are events (a hostile peer), not a state: when
    /// they stop being shown if nothing renews them.
    problems_until: Option<Instant>,
}

pub struct SourceStatus {
    /// The id in `/metrics` (`tail0`, `mysql_query1`).
    pub id: String,
    pub kind: &'static str,
    pub tag: String,
    /// As configured (globs), for sources that follow files.
    pub paths: Vec<String>,
    state: Mutex<SourceState>,
}

impl SourceStatus {
    pub fn new(id: String, kind: &'static str, tag: String, paths: Vec<String>) -> SourceStatus {
        SourceStatus {
            id,
            kind,
            tag,
            paths,
            state: Mutex::default(),
        }
    }

    pub fn set_files(&self, files: Vec<FileStatus>) {
        self.state.lock().unwrap().files = files;
    }

    /// Replaces the current problems (an empty list: all is well again).
    pub fn set_problems(&self, problems: Vec<SourceProblem>) {
        let mut s = self.state.lock().unwrap();
        s.problems = problems;
        s.problems_until = None;
    }

    /// Shows problems that happened, rather than a state that persists,
    /// for `shown` after the last one: one hostile peer makes `/status` say
    /// so for a while, not "not ok" for as long as the agent runs.
    pub fn show_problems_for(&self, problems: Vec<SourceProblem>, shown: Duration) {
        let mut s = self.state.lock().unwrap();
        s.problems = problems;
        s.problems_until = Some(Instant::now() + shown);
    }

    fn render(&self) -> Value {
        let s = self.state.lock().unwrap();
        let files: Vec<Value> = s
            .files
            .iter()
            .map(|f| {
                json!({
                    "path": f.path.display().to_string(),
                    "state": if f.rotated { "rotated" } else { "following" },
                    "position": f.position,
                    "size": f.size,
                    "open": f.open,
                })
            })
            .collect();
        let open_files = s.files.iter().filter(|f| f.open).count();
        let expired = s.problems_until.is_some_and(|t| Instant::now() >= t);
        let problems: Vec<Value> = s
            .problems
            .iter()
            .filter(|_| !expired)
            .map(|p| json!({ "path": p.path, "reason": p.reason, "message": p.message }))
            .collect();
        json!({
            "id": self.id,
            "type": self.kind,
            "tag": self.tag,
            "ok": problems.is_empty(),
            "paths": self.paths,
            "files": files,
            "open_files": open_files,
            "problems": problems,
        })
    }
}

/// A buffer's fill as `/status` shows it.
pub trait BufferGauge: Send + Sync {
    fn bytes(&self) -> u64;
    /// How long the oldest record not yet delivered has waited; None when
    /// nothing waits.
    fn oldest_unsent(&self) -> Option<Duration>;
    /// Why records cannot be written to the buffer now (a full disk).
    fn write_error(&self) -> Option<String> {
        None
    }
}

/// A moment, on the wall clock (for people) and the monotonic one (for
/// ages that a clock step cannot make negative).
#[derive(Debug, Clone, Copy)]
struct Stamp {
    wall: SystemTime,
    mono: Instant,
}

impl Stamp {
    fn now() -> Stamp {
        Stamp {
            wall: SystemTime::now(),
            mono: Instant::now(),
        }
    }

    fn unix(&self) -> u64 {
        self.wall
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs())
    }

    fn age(&self) -> f64 {
        seconds(self.mono.elapsed())
    }
}

/// Seconds to one decimal: finer is noise for an operator.
fn seconds(d: Duration) -> f64 {
    (d.as_secs_f64() * 10.0).round() / 10.0
}

#[derive(Debug, Default)]
struct Delivery {
    last_success: Option<Stamp>,
    last_error: Option<(Stamp, String)>,
    /// The last attempt failed (retried, rejected or given up on).
    failing: bool,
    /// Attempts of the current request that will be retried.
    retries: u64,
}

pub struct OutputStatus {
    /// The id in `/metrics`.
    pub id: String,
    pub kind: &'static str,
    /// Where records go, without credentials.
    pub endpoint: Option<String>,
    buffer: Arc<dyn BufferGauge>,
    delivery: Mutex<Delivery>,
    /// A forward output's receivers.
    servers: Option<Arc<crate::outputs::forward::servers::Servers>>,
}

impl OutputStatus {
    pub fn new(
        id: String,
        kind: &'static str,
        endpoint: Option<String>,
        buffer: Arc<dyn BufferGauge>,
    ) -> OutputStatus {
        OutputStatus {
            id,
            kind,
            endpoint,
            buffer,
            delivery: Mutex::default(),
            servers: None,
        }
    }

    pub fn with_servers(
        self,
        servers: Option<Arc<crate::outputs::forward::servers::Servers>>,
    ) -> OutputStatus {
        OutputStatus { servers, ..self }
    }

    pub fn delivered(&self) {
        let mut d = self.delivery.lock().unwrap();
        d.last_success = Some(Stamp::now());
        d.failing = false;
        d.retries = 0;
    }

    /// A transient failure: the same request will be tried again.
    pub fn retrying(&self, error: &str) {
        let mut d = self.delivery.lock().unwrap();
        d.last_error = Some((Stamp::now(), error.to_string()));
        d.failing = true;
        d.retries += 1;
    }

    /// A failure that nothing retries: a request rejected (dead-lettered),
    /// given up on, or a chunk that cannot be read.
    pub fn failed(&self, error: &str) {
        let mut d = self.delivery.lock().unwrap();
        d.last_error = Some((Stamp::now(), error.to_string()));
        d.failing = true;
        d.retries = 0;
    }

    fn render(&self) -> Value {
        let d = self.delivery.lock().unwrap();
        let buffer_error = self.buffer.write_error();
        json!({
            "id": self.id,
            "type": self.kind,
            "endpoint": self.endpoint,
            "ok": !d.failing && buffer_error.is_none(),
            "last_success_unix": d.last_success.map(|s| s.unix()),
            "last_success_age_seconds": d.last_success.map(|s| s.age()),
            "last_error": d.last_error.as_ref().map(|(_, m)| m),
            "last_error_unix": d.last_error.as_ref().map(|(s, _)| s.unix()),
            "last_error_age_seconds": d.last_error.as_ref().map(|(s, _)| s.age()),
            "retrying": d.retries > 0,
            "retries": d.retries,
            "buffer_bytes": self.buffer.bytes(),
            "buffer_error": buffer_error,
            "oldest_unsent_age_seconds": self.buffer.oldest_unsent().map(seconds),
            "servers": self.servers.as_ref().map(|s| s.to_json()),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(Option<Duration>);
    impl BufferGauge for Fixed {
        fn bytes(&self) -> u64 {
            if self.0.is_some() {
                42
            } else {
                0
            }
        }
        fn oldest_unsent(&self) -> Option<Duration> {
            self.0
        }
    }

    fn board(gauge: Fixed) -> (StatusBoard, Arc<SourceStatus>, Arc<OutputStatus>) {
        let board = StatusBoard::default();
        let source = Arc::new(SourceStatus::new(
            "tail0".into(),
            "tail",
            "mysql.error".into(),
            vec!["/var/log/mysql/*.err".into()],
        ));
        let output = Arc::new(OutputStatus::new(
            "output0".into(),
            "http",
            Some("http://collector:9200/bulk".into()),
            Arc::new(gauge),
        ));
        board.publish(PipelineStatus {
            sources: vec![source.clone()],
            outputs: vec![output.clone()],
        });
        (board, source, output)
    }

    #[test]
    fn status_document_follows_problems_and_failures() {
        let (board, source, output) = board(Fixed(None));
        source.set_files(vec![FileStatus {
            path: "/var/log/mysql/db1.err".into(),
            position: 5,
            size: 9,
            rotated: false,
            open: false,
        }]);
        let v = board.render();
        assert_eq!(v["ok"], true, "{v}");
        assert_eq!(v["sources"][0]["files"][0]["state"], "following");
        assert_eq!(v["sources"][0]["files"][0]["position"], 5);
        assert_eq!(v["outputs"][0]["last_success_unix"], Value::Null);
        assert_eq!(v["outputs"][0]["oldest_unsent_age_seconds"], Value::Null);

        source.set_problems(vec![SourceProblem {
            path: "/var/log/mysql".into(),
            reason: "permission_denied",
            message: "cannot list /var/log/mysql: Permission denied".into(),
        }]);
        let v = board.render();
        assert_eq!(
            (&v["ok"], &v["sources"][0]["ok"]),
            (&false.into(), &false.into())
        );
        assert_eq!(
            v["sources"][0]["problems"][0]["reason"],
            "permission_denied"
        );
        source.set_problems(Vec::new());
        assert_eq!(board.render()["ok"], true);

        // A problem that is an event is shown for a while, then not.
        let bad_frame = || {
            vec![SourceProblem {
                path: "127.0.0.1:24224".into(),
                reason: "bad_frame",
                message: "127.0.0.1:5000: not msgpack".into(),
            }]
        };
        source.show_problems_for(bad_frame(), Duration::from_secs(600));
        let v = board.render();
        assert_eq!(
            (&v["ok"], &v["sources"][0]["problems"][0]["reason"]),
            (&false.into(), &"bad_frame".into())
        );
        source.show_problems_for(bad_frame(), Duration::ZERO);
        let v = board.render();
        assert_eq!(
            (&v["ok"], &v["sources"][0]["problems"]),
            (&true.into(), &json!([]))
        );
        // A lasting problem set afterwards does not expire.
        source.set_problems(bad_frame());
        assert_eq!(board.render()["ok"], false);
        source.set_problems(Vec::new());

        output.delivered();
        output.retrying("HTTP 503");
        output.retrying("HTTP 503");
        let v = board.render();
        let o = &v["outputs"][0];
        assert_eq!(v["ok"], false);
        assert_eq!((&o["retrying"], &o["retries"]), (&true.into(), &2.into()));
        assert_eq!(o["last_error"], "HTTP 503");
        assert!(o["last_success_age_seconds"].as_f64().unwrap() < 5.0, "{o}");

        // A rejected request is a failure that is not retried.
        output.failed("rejected with HTTP 400");
        let v = board.render();
        assert_eq!(
            (&v["ok"], &v["outputs"][0]["retrying"]),
            (&false.into(), &false.into())
        );
        output.delivered();
        assert_eq!(board.render()["ok"], true);
    }

    #[test]
    fn backlog_is_shown_with_its_age() {
        let (board, _, _) = board(Fixed(Some(Duration::from_millis(1540))));
        let v = board.render();
        assert_eq!(v["outputs"][0]["buffer_bytes"], 42);
        assert_eq!(v["outputs"][0]["oldest_unsent_age_seconds"], 1.5);
    }

    #[test]
    fn a_reload_replaces_every_entry() {
        let (board, _, _) = board(Fixed(None));
        board.publish(PipelineStatus::default());
        let v = board.render();
        assert_eq!(v["sources"], json!([]));
        assert_eq!(v["outputs"], json!([]));
    }
}
