//! The agent configurations the tests share.

use std::path::Path;

/// The `outputs:` section the tests share: everything tagged `mysql.**` to
/// the sink over HTTP, through a file buffer in `dir` flushed every 100 ms.
pub fn http_outputs(dir: &Path, url: &str) -> String {
    format!(
        r#"outputs:
  - match: "mysql.**"
    type: http
    endpoint: {url}
    retry_wait: 100ms
    retry_max_interval: 1s
    buffer:
      type: file
      path: {dir}/buffer
      flush_interval: 100ms
"#,
        dir = dir.display()
    )
}

/// The seed's pipeline: tail `glob` -> record_transformer (hostname,
/// timestamp) -> http with a file buffer.
pub fn pipeline_config_for(dir: &Path, glob: &str, url: &str) -> String {
    format!(
        r#"sources:
  - type: tail
    path: {glob}
    pos_file: {dir}/tail.pos
    tag: mysql.error
    read_from_head: true
    refresh_interval: 1s
    rotate_wait: 1s
    poll_interval: 50ms
filters:
  - match: "mysql.**"
    type: record_transformer
    record:
      hostname: "${{hostname}}"
      timestamp: "${{time}}"
{outputs}"#,
        dir = dir.display(),
        outputs = http_outputs(dir, url)
    )
}

/// A `mysql_slow_query` source on `path` (a file or glob) -> the http
/// outputs, with short poll and entry timeouts for tests.
pub fn slow_query_config(dir: &Path, path: &str, url: &str) -> String {
    format!(
        r#"sources:
  - type: mysql_slow_query
    path: {path}
    pos_file: {dir}/slow.pos
    tag: mysql.slow
    read_from_head: true
    poll_interval: 50ms
    entry_timeout: 300ms
{outputs}"#,
        dir = dir.display(),
        outputs = http_outputs(dir, url)
    )
}

/// `pipeline_config_for` on `dir/*.err`.
pub fn pipeline_config(dir: &Path, url: &str) -> String {
    pipeline_config_for(dir, &format!("{}/*.err", dir.display()), url)
}
