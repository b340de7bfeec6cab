//! `stdout` and `file` outputs: records as JSON lines, for debugging and
//! tests.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use crate::config::fields::{Fields, Result as ConfigResult};

#[derive(Debug)]
pub struct FileConfig {
    pub path: PathBuf,
}

impl FileConfig {
    pub fn from_config(f: &mut Fields) -> ConfigResult<FileConfig> {
        Ok(FileConfig {
            path: PathBuf::from(f.required_string("path")?),
        })
    }
}

pub struct FileSink {
    path: PathBuf,
}

impl FileSink {
    pub fn new(config: FileConfig) -> FileSink {
        FileSink { path: config.path }
    }

    pub fn path(&self) -> &std::path::Path {
        &self.path
    }

    pub fn write(&self, lines: &[u8]) -> std::io::Result<()> {
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

pub fn write_stdout(lines: &[u8]) -> std::io::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(lines)?;
    out.flush()
}
