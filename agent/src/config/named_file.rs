//! Reading a file that the configuration names (the config itself, an
//! `exporter_file`, a `token_file`/`password_file`, a CA file, a server's
//! option file) without ever waiting on it or swallowing it whole.
//!
//! A plain `open` of a FIFO blocks until something writes to it, and a
//! plain read of `/dev/zero` never ends: either froze the agent (a reload
//! runs on the thread that serves `/metrics` and handles signals). So the
//! file is opened with `O_NONBLOCK`, checked to be a regular file on the
//! descriptor that was opened (no race with a rename), and read up to a
//! limit that fits its kind.

use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileTypeExt, OpenOptionsExt};
use std::path::Path;

/// What a file is for, which sets how large it may be.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Kind {
    /// The agent's YAML config or an `exporter_file`.
    Config,
    /// A password or token.
    Secret,
    /// A PEM certificate bundle or key.
    Certificate,
    /// A MySQL option file (`my.cnf` and its includes).
    OptionFile,
}

impl Kind {
    pub fn limit(self) -> u64 {
        match self {
            // Configs are a few KiB; a bigger file is a mistake (or an
            // attack), not something to parse.
            Kind::Config => 4 << 20,
            Kind::Secret => 64 << 10,
            // A full system CA bundle is about 200 KiB.
            Kind::Certificate => 4 << 20,
            Kind::OptionFile => 1 << 20,
        }
    }

    fn what(self) -> &'static str {
        match self {
            Kind::Config => "a config file",
            Kind::Secret => "a secret file",
            Kind::Certificate => "a PEM file",
            Kind::OptionFile => "a MySQL option file",
        }
    }
}

/// Why a named file was not read; the message names the file, what it is
/// and what was expected.
#[derive(Debug, thiserror::Error)]
pub enum NamedFileError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}: {found}, expected {what} (a regular file)")]
    NotRegular {
        path: String,
        found: &'static str,
        what: &'static str,
    },
    #[error("{path}: larger than {limit}, expected {what} of at most that size")]
    TooLarge {
        path: String,
        limit: String,
        what: &'static str,
    },
}

impl NamedFileError {
    /// The message without the file's name, for callers that give it.
    pub fn reason(&self) -> String {
        match self {
            NamedFileError::Io { source, .. } => format!("cannot read: {source}"),
            NamedFileError::NotRegular { found, what, .. } => {
                format!("{found}, expected {what} (a regular file)")
            }
            NamedFileError::TooLarge { limit, what, .. } => {
                format!("larger than {limit}, expected {what} of at most that size")
            }
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, NamedFileError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }
}

/// Opens `path` without blocking and proves it a regular file.
pub fn open(path: &Path, kind: Kind) -> Result<File, NamedFileError> {
    let io = |source| NamedFileError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_CLOEXEC | libc::O_NOCTTY)
        .open(path)
        .map_err(io)?;
    let file_type = file.metadata().map_err(io)?.file_type();
    if !file_type.is_file() {
        let found = if file_type.is_fifo() {
            "a FIFO"
        } else if file_type.is_char_device() {
            "a character device"
        } else if file_type.is_block_device() {
            "a block device"
        } else if file_type.is_socket() {
            "a socket"
        } else if file_type.is_dir() {
            "a directory"
        } else {
            "not a regular file"
        };
        return Err(NamedFileError::NotRegular {
            path: path.display().to_string(),
            found,
            what: kind.what(),
        });
    }
    Ok(file)
}

/// Proves `path` a regular file within `kind`'s size without reading it
/// (for a file that a library opens later, or that is read when the
/// pipeline is built rather than when the config is checked).
pub fn check(path: &Path, kind: Kind) -> Result<(), NamedFileError> {
    let file = open(path, kind)?;
    let len = file
        .metadata()
        .map_err(|source| NamedFileError::Io {
            path: path.display().to_string(),
            source,
        })?
        .len();
    if len > kind.limit() {
        return Err(too_large(path, kind));
    }
    Ok(())
}

fn too_large(path: &Path, kind: Kind) -> NamedFileError {
    NamedFileError::TooLarge {
        path: path.display().to_string(),
        limit: human(kind.limit()),
        what: kind.what(),
    }
}

/// The bytes of `path`, at most `kind.limit()` of them.
pub fn read(path: &Path, kind: Kind) -> Result<Vec<u8>, NamedFileError> {
    let file = open(path, kind)?;
    let limit = kind.limit();
    let mut bytes = Vec::new();
    file.take(limit + 1)
        .read_to_end(&mut bytes)
        .map_err(|source| NamedFileError::Io {
            path: path.display().to_string(),
            source,
        })?;
    if bytes.len() as u64 > limit {
        return Err(too_large(path, kind));
    }
    Ok(bytes)
}

/// A secret file's text: UTF-8, without its trailing newline.
pub fn read_secret(path: &Path) -> Result<String, String> {
    let bytes = read(path, Kind::Secret).map_err(|e| e.to_string())?;
    let text = String::from_utf8(bytes)
        .map_err(|_| format!("{}: not UTF-8, expected a secret as text", path.display()))?;
    Ok(text.trim_end_matches(['\n', '\r']).to_string())
}

fn human(n: u64) -> String {
    if n >= 1 << 20 {
        format!("{} MiB", n >> 20)
    } else {
        format!("{} KiB", n >> 10)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_what_is_not_a_regular_file_without_blocking() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo");
        let c = std::ffi::CString::new(fifo.to_str().unwrap()).unwrap();
        // SAFETY: a valid NUL-terminated path.
        assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o600) }, 0);
        let e = read(&fifo, Kind::Secret).unwrap_err().to_string();
        assert!(
            e.ends_with("fifo: a FIFO, expected a secret file (a regular file)"),
            "{e}"
        );
        let e = read(Path::new("/dev/zero"), Kind::Config)
            .unwrap_err()
            .to_string();
        assert_eq!(
            e,
            "/dev/zero: a character device, expected a config file (a regular file)"
        );
        let e = read(dir.path(), Kind::Config).unwrap_err().to_string();
        assert!(e.contains(": a directory, expected a config file"), "{e}");
    }

    #[test]
    fn caps_the_size_by_kind() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("token");
        std::fs::write(&big, vec![b'x'; (64 << 10) + 1]).unwrap();
        let e = read(&big, Kind::Secret).unwrap_err().to_string();
        assert!(
            e.ends_with("token: larger than 64 KiB, expected a secret file of at most that size"),
            "{e}"
        );
        std::fs::write(&big, "s3cret\n").unwrap();
        assert_eq!(read_secret(&big).unwrap(), "s3cret");
        assert!(read(&dir.path().join("none"), Kind::Secret)
            .unwrap_err()
            .is_not_found());
    }
}
