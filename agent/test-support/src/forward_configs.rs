//! The forward tier's two sides as the bench runs them, for my-agent and
//! for fluent-bit alike: a tail of one log sent over forward with acks, and
//! a forward input that drops what it takes, each with a count of what
//! arrived.

use std::path::Path;

/// my-agent: tail `log` -> `forward` output to `port` (acks on, its
/// default) through a file buffer in `dir`.
pub fn agent_forward_sender(dir: &Path, log: &Path, port: u16) -> String {
    format!(
        r#"sources:
  - type: tail
    path: {log}
    pos_file: {dir}/tail.pos
    tag: mysql.error
    read_from_head: true
outputs:
  - match: "mysql.**"
    type: forward
    host: 127.0.0.1
    port: {port}
    require_ack_response: true
    buffer:
      type: file
      path: {dir}/buffer
      flush_interval: 200ms
"#,
        log = log.display(),
        dir = dir.display(),
    )
}

/// The id my-agent gives the forward input of `agent_forward_receiver`
/// (a source's kind and its index).
pub const AGENT_FORWARD_INPUT_ID: &str = "forward0";

/// my-agent: `forward` input on `port` -> `discard` output (a memory
/// buffer, as fluent-bit's in_forward keeps its chunks), `/metrics` on
/// `metrics_port`.
pub fn agent_forward_receiver(port: u16, metrics_port: u16) -> String {
    format!(
        r#"system:
  metrics:
    bind: 127.0.0.1:{metrics_port}
sources:
  - type: forward
    bind: 127.0.0.1:{port}
outputs:
  - match: "**"
    type: discard
    buffer:
      flush_interval: 200ms
"#
    )
}

/// fluent-bit: tail `log` (positions in a DB in `dir`, the line in
/// `message` as my-agent's tail has it) -> out_forward to `port` with
/// `Require_ack_response On`; its chunks in memory (its default) or, with
/// `filesystem`, in filesystem storage in `dir/storage` as the agent
/// bench configures it: on disk like my-agent's file buffer (which also
/// fsyncs them; fluent-bit's default `storage.sync normal` does not).
pub fn fluent_bit_forward_sender(dir: &Path, log: &Path, port: u16, filesystem: bool) -> String {
    let (service, input) = match filesystem {
        true => (
            format!("    storage.path {}/storage\n", dir.display()),
            "    storage.type filesystem\n",
        ),
        false => (String::new(), ""),
    };
    format!(
        "[SERVICE]\n    flush 0.2\n    log_level info\n{service}\
         [INPUT]\n    name tail\n    path {log}\n    db {dir}/tail.db\n    read_from_head true\n    \
         tag mysql.error\n    key message\n{input}\
         [OUTPUT]\n    name forward\n    match *\n    host 127.0.0.1\n    port {port}\n    \
         require_ack_response on\n    retry_limit false\n",
        log = log.display(),
        dir = dir.display(),
    )
}

/// fluent-bit: tail `log` into filesystem storage (`dir/storage`) ->
/// out_forward to `port` with acks. With `exit_on_eof` it stops once the
/// log is read: sent to a port where nothing listens, every record stays
/// in storage, a backlog that a later run started on the same `dir` (its
/// tail DB says the log is read) loads whole and sends as fast as the
/// receiver acks.
pub fn fluent_bit_backlog_sender(dir: &Path, log: &Path, port: u16, exit_on_eof: bool) -> String {
    format!(
        "[SERVICE]\n    flush 0.2\n    grace 1\n    log_level info\n    \
         storage.path {dir}/storage\n    storage.sync normal\n    storage.backlog.mem_limit 512M\n\
         [INPUT]\n    name tail\n    path {log}\n    db {dir}/tail.db\n    read_from_head true\n    \
         tag mysql.error\n    key message\n    storage.type filesystem\n    exit_on_eof {exit_on_eof}\n\
         [OUTPUT]\n    name forward\n    match *\n    host 127.0.0.1\n    port {port}\n    \
         require_ack_response on\n    retry_limit false\n",
        log = log.display(),
        dir = dir.display(),
    )
}

/// fluent-bit: in_forward on `port` -> `counter` (run it with
/// `Peer::fluent_bit_counting`, which reads what it counted), flushed
/// every 100 ms so that the count lags the input by little.
pub fn fluent_bit_forward_receiver(port: u16) -> String {
    format!(
        "[SERVICE]\n    flush 0.1\n    log_level info\n\
         [INPUT]\n    name forward\n    listen 127.0.0.1\n    port {port}\n\
         [OUTPUT]\n    name counter\n    match *\n"
    )
}

/// Records the forward input of `agent_forward_receiver` has taken (stored
/// in its buffer, then acked), from the `/metrics` page `metrics`.
pub fn agent_forward_records_in(metrics: &str) -> u64 {
    let series =
        format!("my_agent_records_in_total{{plugin=\"source\",id=\"{AGENT_FORWARD_INPUT_ID}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str())?.trim().parse().ok())
        .unwrap_or(0)
}
