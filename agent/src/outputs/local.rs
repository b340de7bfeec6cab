//! `stdout` and `file` outputs: records as JSON lines, for debugging and
//! tests.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use crate::config::fields::{Fields, Result as ConfigResult};

use super::{Attempt, BoxFuture, Output, OutputSettings, RequestBody};

/// `type: stdout`'s entry in the outputs table.
pub fn stdout_settings(_: &mut Fields) -> ConfigResult<Box<dyn OutputSettings>> {
    Ok(Box::new(StdoutConfig))
}

/// `type: file`'s entry in the outputs table.
pub fn file_settings(f: &mut Fields) -> ConfigResult<Box<dyn OutputSettings>> {
    Ok(Box::new(FileConfig {
        path: PathBuf::from(f.required_string("path")?),
    }))
}

struct StdoutConfig;

impl OutputSettings for StdoutConfig {
    fn build(self: Box<Self>, _: &str) -> anyhow::Result<Box<dyn Output>> {
        Ok(Box::new(StdoutSink))
    }
}

struct StdoutSink;

impl Output for StdoutSink {
    fn describe(&self) -> (&'static str, Option<String>) {
        ("stdout", None)
    }

    fn deliver(&self, body: RequestBody) -> BoxFuture<'_, Attempt> {
        let result = (|| {
            let body = body.into_vec()?;
            let mut out = std::io::stdout().lock();
            out.write_all(&body)?;
            out.flush()
        })();
        Box::pin(std::future::ready(retry_on_error(result)))
    }
}

#[derive(Debug)]
struct FileConfig {
    path: PathBuf,
}

impl OutputSettings for FileConfig {
    fn build(self: Box<Self>, id: &str) -> anyhow::Result<Box<dyn Output>> {
        crate::writable::ensure_parent(&self.path, &format!("output {id}: the directory of path"))?;
        Ok(Box::new(FileSink { path: self.path }))
    }
}

struct FileSink {
    path: PathBuf,
}

impl FileSink {
    fn write(&self, lines: &[u8]) -> std::io::Result<()> {
        if let Some(dir) = self.path.parent() {
            fs::create_dir_all(dir)?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.path)?;
        f.write_all(lines)?;
        f.sync_data()
    }
}

impl Output for FileSink {
    fn describe(&self) -> (&'static str, Option<String>) {
        ("file", Some(self.path.display().to_string()))
    }

    fn deliver(&self, body: RequestBody) -> BoxFuture<'_, Attempt> {
        let result = body
            .into_vec()
            .and_then(|body| self.write(&body))
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", self.path.display())));
        Box::pin(std::future::ready(retry_on_error(result)))
    }
}

/// A local write that failed (disk full, permissions) may work later.
fn retry_on_error(result: std::io::Result<()>) -> Attempt {
    match result {
        Ok(()) => Attempt::Done,
        Err(e) => Attempt::Retry {
            reason: e.to_string(),
            after: None,
        },
    }
}
