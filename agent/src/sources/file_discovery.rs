//! Which files a tail source's globs name right now, and, when a glob names
//! none, why: the directory is missing, the agent may not list or search
//! it, or nothing in it matches. A DBA's first question is "why does it
//! ship nothing?"; each problem carries the path, the system's answer and
//! what to do about it.

use std::fs;
use std::io;
use std::path::{Component, Path, PathBuf};

use crate::mysql::option_files::ResolvedLog;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    NotFound,
    PermissionDenied,
    /// Any other error from the system (I/O error, not a regular file).
    Io,
}

impl Reason {
    pub fn of(e: &io::Error) -> Reason {
        match e.kind() {
            io::ErrorKind::NotFound => Reason::NotFound,
            io::ErrorKind::PermissionDenied => Reason::PermissionDenied,
            _ => Reason::Io,
        }
    }

    /// The label value in `my_agent_source_errors_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "not_found",
            Reason::PermissionDenied => "permission_denied",
            Reason::Io => "io_error",
        }
    }
}

/// Why a configured path yields no (or one fewer) file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// The configured glob it concerns.
    pub pattern: String,
    /// Where the system said no: the file, or the directory in the way.
    pub path: PathBuf,
    pub reason: Reason,
    /// What went wrong there: `cannot list`, `cannot open`, ...
    pub what: &'static str,
    /// The system's words (`Permission denied (os error 13)`).
    pub error: String,
}

impl Problem {
    fn new(pattern: &str, path: PathBuf, what: &'static str, e: &io::Error) -> Problem {
        Problem {
            pattern: pattern.to_string(),
            path,
            reason: Reason::of(e),
            what,
            error: e.to_string(),
        }
    }

    /// A file matched by a glob that cannot be opened.
    pub fn open(pattern: &str, path: &Path, e: &io::Error) -> Problem {
        Problem::new(pattern, path.to_path_buf(), "cannot open", e)
    }

    /// The log line: path, the system's answer, what to do. `user` is the
    /// agent's user; `auto` is set when the path came from `path: auto`.
    pub fn message(&self, user: &str, auto: Option<&ResolvedLog>) -> String {
        let target = if self.path.as_os_str() == self.pattern.as_str() {
            String::new()
        } else {
            format!(" (for {})", self.pattern)
        };
        let advice = match (self.reason, auto) {
            (Reason::PermissionDenied, _) => {
                format!("add the {user} user to the mysql group (see README) or set path")
            }
            (Reason::NotFound, Some(a)) => format!(
                "the path came from `path: auto` ({}); check the server's settings or set path",
                a.origin
            ),
            (Reason::NotFound, None) => "check path or set path: auto".to_string(),
            (Reason::Io, _) => "check the file system and path".to_string(),
        };
        format!(
            "{} {}{target}: {}; {advice}",
            self.what,
            self.path.display(),
            self.error
        )
    }
}

#[derive(Debug, Default)]
pub struct Discovered {
    /// Regular-file candidates (not yet opened), sorted, deduplicated.
    pub files: Vec<PathBuf>,
    pub problems: Vec<Problem>,
}

/// Expands `patterns` minus `exclude`; a pattern that yields nothing gets a
/// problem saying why.
pub fn discover(patterns: &[String], exclude: &[String]) -> Discovered {
    let excluded: Vec<glob::Pattern> = exclude
        .iter()
        .filter_map(|x| glob::Pattern::new(x).ok())
        .collect();
    let mut out = Discovered::default();
    for pattern in patterns {
        let before = out.problems.len();
        let mut matched = false;
        match glob::glob(pattern) {
            Ok(paths) => {
                for entry in paths {
                    match entry {
                        // Directories a wildcard matches are not files to
                        // follow; a pattern naming only directories is
                        // diagnosed below like one matching nothing.
                        Ok(p) if p.is_dir() => {}
                        Ok(p) => {
                            matched = true;
                            if !excluded.iter().any(|x| x.matches_path(&p)) {
                                out.files.push(p);
                            }
                        }
                        // A directory the glob had to list and could not.
                        Err(e) => out.problems.push(Problem::new(
                            pattern,
                            e.path().to_path_buf(),
                            "cannot list",
                            e.error(),
                        )),
                    }
                }
            }
            Err(e) => out.problems.push(Problem {
                pattern: pattern.clone(),
                path: PathBuf::from(pattern),
                reason: Reason::Io,
                what: "bad glob",
                error: e.to_string(),
            }),
        }
        if !matched && out.problems.len() == before {
            out.problems.push(diagnose(pattern));
        }
    }
    out.files.sort();
    out.files.dedup();
    out
}

/// Why `pattern` matches nothing. The glob crate skips what it cannot see
/// without saying so; the system tells when asked about the pattern's fixed
/// part directly.
fn diagnose(pattern: &str) -> Problem {
    let mut fixed = PathBuf::new();
    let mut wild = false;
    for c in Path::new(pattern).components() {
        if let Component::Normal(s) = c {
            if s.to_string_lossy().contains(['*', '?', '[']) {
                wild = true;
                break;
            }
        }
        fixed.push(c);
    }
    let (probe, what) = if wild {
        (fs::read_dir(&fixed).map(|_| ()), "cannot list")
    } else {
        (fs::metadata(&fixed).map(|_| ()), "cannot find")
    };
    match probe {
        Ok(()) if wild => Problem {
            pattern: pattern.to_string(),
            path: PathBuf::from(pattern),
            reason: Reason::NotFound,
            what: "no file matches",
            error: format!("nothing in {} matches", fixed.display()),
        },
        Ok(()) => Problem {
            pattern: pattern.to_string(),
            path: fixed,
            reason: Reason::Io,
            what: "cannot follow",
            error: "not a regular file".into(),
        },
        Err(e) if Reason::of(&e) == Reason::PermissionDenied => {
            // Name the directory in the way rather than the path below it.
            let blocked = blocking_dir(&fixed).unwrap_or(fixed);
            Problem::new(pattern, blocked, "cannot search", &e)
        }
        Err(e) => Problem::new(pattern, fixed, what, &e),
    }
}

/// The first directory on `path`'s way that denies the agent access to
/// what is inside it.
fn blocking_dir(path: &Path) -> Option<PathBuf> {
    let mut prefix = PathBuf::new();
    for c in path.components() {
        let parent = prefix.clone();
        prefix.push(c);
        if let Err(e) = fs::symlink_metadata(&prefix) {
            return (Reason::of(&e) == Reason::PermissionDenied).then_some(parent);
        }
    }
    None
}

/// The user the agent runs as, for advice about group membership.
pub fn effective_user() -> String {
    // SAFETY: getpwuid_r writes into our buffers, bounded by their lengths.
    unsafe {
        let uid = libc::geteuid();
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut buf = vec![0 as libc::c_char; 4096];
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        if libc::getpwuid_r(uid, &mut pw, buf.as_mut_ptr(), buf.len(), &mut result) == 0
            && !result.is_null()
            && !pw.pw_name.is_null()
        {
            return std::ffi::CStr::from_ptr(pw.pw_name)
                .to_string_lossy()
                .into_owned();
        }
        format!("uid {uid}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_files_and_explains_empty_globs() {
        let d = tempfile::tempdir().unwrap();
        let dir = d.path().display().to_string();
        std::fs::write(d.path().join("a.err"), "").unwrap();
        std::fs::write(d.path().join("b.err"), "").unwrap();
        let found = discover(
            &[format!("{dir}/*.err"), format!("{dir}/none/*.log")],
            &[format!("{dir}/b.err")],
        );
        assert_eq!(found.files, [d.path().join("a.err")]);
        assert_eq!(found.problems.len(), 1);
        let p = &found.problems[0];
        assert_eq!(
            (p.reason, p.path.clone()),
            (Reason::NotFound, d.path().join("none"))
        );
        assert_eq!(
            p.message("mysql-agent", None),
            format!(
                "cannot list {dir}/none (for {dir}/none/*.log): No such file or directory (os error 2); check path or set path: auto"
            )
        );

        let found = discover(&[format!("{dir}/*.log"), format!("{dir}/x.err")], &[]);
        let reasons: Vec<_> = found.problems.iter().map(|p| (p.what, p.reason)).collect();
        assert_eq!(
            reasons,
            [
                ("no file matches", Reason::NotFound),
                ("cannot find", Reason::NotFound)
            ]
        );
        // A directory where a file is expected.
        let found = discover(std::slice::from_ref(&dir), &[]);
        assert_eq!(found.problems[0].reason, Reason::Io);
    }

    #[test]
    fn permission_advice_names_the_user() {
        let p = Problem::open(
            "/var/log/mysql/*.log",
            Path::new("/var/log/mysql/error.log"),
            &io::Error::from_raw_os_error(libc::EACCES),
        );
        assert_eq!(p.reason.as_str(), "permission_denied");
        assert_eq!(
            p.message("my-agent", None),
            "cannot open /var/log/mysql/error.log (for /var/log/mysql/*.log): Permission denied (os error 13); add the my-agent user to the mysql group (see README) or set path"
        );
    }
}
