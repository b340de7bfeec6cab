//! The server's own option files (`my.cnf`), read the way mysqld and
//! mariadbd read them, so `path: auto` finds the error log and the slow
//! query log wherever the DBA put them.
//!
//! Only what locates the logs is kept: `datadir`, `log_error`,
//! `slow_query_log_file` and `slow_query_log`, from the groups the server
//! itself reads (`[mysqld]`, `[server]`, `[mariadb]`, `[mariadbd]`). The
//! version-specific groups (`[mysqld-8.0]`, `[mariadb-10.11]`) are skipped:
//! which one applies depends on the server binary, which the agent does not
//! run. A later setting overrides an earlier one, as in the server.

use std::collections::HashSet;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use crate::config::named_file;

/// Read in this order when a source does not name its own
/// `mysql_option_files`: RHEL/MariaDB packages use the first two, Debian and
/// Oracle's packages the third.
pub const DEFAULT_OPTION_FILES: &[&str] = &["/etc/my.cnf", "/etc/my.cnf.d/", "/etc/mysql/my.cnf"];

/// Where mysqld keeps its data when no `datadir` is set.
pub const DEFAULT_DATADIR: &str = "/var/lib/mysql";

/// `!include` chains deeper than this are a loop or a mistake.
const MAX_INCLUDE_DEPTH: usize = 10;

/// Groups whose options the server applies to itself.
const SERVER_GROUPS: &[&str] = &["mysqld", "server", "mariadb", "mariadbd"];

/// One option as found in a file.
#[derive(Debug, Clone, PartialEq)]
pub struct Setting {
    /// `None`: the option was given without a value (`log-error`).
    pub value: Option<String>,
    pub file: PathBuf,
    pub line: usize,
}

impl Setting {
    fn at(&self) -> String {
        format!("{}:{}", self.file.display(), self.line)
    }
}

/// What the option files say about the server's logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServerOptions {
    pub datadir: Option<Setting>,
    pub log_error: Option<Setting>,
    pub slow_query_log_file: Option<Setting>,
    pub slow_query_log: Option<Setting>,
    /// Every file read, in order (for messages).
    pub files_read: Vec<PathBuf>,
}

/// A log path worked out from the option files, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct ResolvedLog {
    pub path: PathBuf,
    /// For the startup log: `log_error in /etc/my.cnf.d/server.cnf:12`.
    pub origin: String,
}

/// A malformed or unreadable option file: which file, which line (0 when
/// the file could not be read at all), what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub struct OptionFileError {
    pub file: PathBuf,
    pub line: usize,
    pub message: String,
}

impl fmt::Display for OptionFileError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line == 0 {
            write!(f, "{}: {}", self.file.display(), self.message)
        } else {
            write!(f, "{}:{}: {}", self.file.display(), self.line, self.message)
        }
    }
}

/// Reads `paths` in order: a file, or a directory (read like
/// `!includedir`). A path that does not exist is skipped, as the server
/// skips it.
pub fn read(paths: &[PathBuf]) -> Result<ServerOptions, OptionFileError> {
    let mut reader = Reader::default();
    for path in paths {
        match std::fs::metadata(path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
            Err(e) => {
                return Err(OptionFileError {
                    file: path.clone(),
                    line: 0,
                    message: format!("cannot read: {e}"),
                })
            }
            Ok(meta) if meta.is_dir() => reader.read_dir(path, None, 0)?,
            Ok(_) => reader.read_file(path, None, 0)?,
        }
    }
    Ok(reader.options)
}

#[derive(Default)]
struct Reader {
    options: ServerOptions,
    /// Files already read: an include of one of them is skipped, which also
    /// ends include loops.
    seen: HashSet<PathBuf>,
}

/// The directive line that led to a file, for errors.
type IncludedFrom<'a> = Option<(&'a Path, usize)>;

impl Reader {
    fn read_file(
        &mut self,
        path: &Path,
        from: IncludedFrom,
        depth: usize,
    ) -> Result<(), OptionFileError> {
        let key = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
        if !self.seen.insert(key) {
            return Ok(());
        }
        let bytes = match named_file::read(path, named_file::Kind::OptionFile) {
            Ok(b) => b,
            // The server skips a missing file, included or not.
            Err(e) if e.is_not_found() => return Ok(()),
            Err(e) => return Err(unreadable(path, from, &e.reason())),
        };
        self.options.files_read.push(path.to_path_buf());
        let text = String::from_utf8_lossy(&bytes);
        let mut group: Option<String> = None;
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let fail = |message: String| OptionFileError {
                file: path.to_path_buf(),
                line,
                message,
            };
            let t = raw.trim();
            if t.is_empty() || t.starts_with('#') || t.starts_with(';') {
                continue;
            }
            if let Some(directive) = t.strip_prefix('!') {
                let (word, arg) = directive
                    .split_once(char::is_whitespace)
                    .unwrap_or((directive, ""));
                let arg = arg.trim();
                if arg.is_empty() {
                    return Err(fail(format!("`!{word}` needs a path")));
                }
                if depth >= MAX_INCLUDE_DEPTH {
                    return Err(fail(format!(
                        "includes nested more than {MAX_INCLUDE_DEPTH} deep"
                    )));
                }
                // Relative to the including file, not to wherever the agent
                // was started.
                let target = path.parent().unwrap_or(Path::new("/")).join(arg);
                match word {
                    "include" => self.read_file(&target, Some((path, line)), depth + 1)?,
                    "includedir" => self.read_dir(&target, Some((path, line)), depth + 1)?,
                    other => {
                        return Err(fail(format!(
                            "unknown directive `!{other}` (expected !include or !includedir)"
                        )))
                    }
                }
                continue;
            }
            if let Some(rest) = t.strip_prefix('[') {
                let Some((name, after)) = rest.split_once(']') else {
                    return Err(fail(format!("group header `{t}` has no closing `]`")));
                };
                let after = after.trim();
                if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
                    return Err(fail(format!("unexpected `{after}` after group header")));
                }
                group = Some(name.trim().to_ascii_lowercase());
                continue;
            }
            let Some(group) = &group else {
                return Err(fail(format!(
                    "`{t}` is outside any [group] (option files start with a group such as [mysqld])"
                )));
            };
            let (name, value) = match t.split_once('=') {
                Some((n, v)) => (n.trim(), Some(v)),
                None => (t, None),
            };
            let value = match value {
                Some(v) => parse_value(v).map_err(fail)?,
                None => None,
            };
            if !SERVER_GROUPS.contains(&group.as_str()) {
                continue;
            }
            let name = name.replace('-', "_").to_ascii_lowercase();
            // `loose-` only asks the server not to fail on an unknown option.
            let name = name.strip_prefix("loose_").unwrap_or(&name);
            let setting = Some(Setting {
                value,
                file: path.to_path_buf(),
                line,
            });
            match name {
                "datadir" => self.options.datadir = setting,
                "log_error" => self.options.log_error = setting,
                "slow_query_log_file" => self.options.slow_query_log_file = setting,
                "slow_query_log" => self.options.slow_query_log = setting,
                _ => {}
            }
        }
        Ok(())
    }

    /// `!includedir`: its `*.cnf` files in name order.
    fn read_dir(
        &mut self,
        dir: &Path,
        from: IncludedFrom,
        depth: usize,
    ) -> Result<(), OptionFileError> {
        let entries = match std::fs::read_dir(dir) {
            Ok(e) => e,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(unreadable(dir, from, &format!("cannot read: {e}"))),
        };
        let mut files: Vec<PathBuf> = entries
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "cnf") && !p.is_dir())
            .collect();
        files.sort();
        for f in files {
            self.read_file(&f, from, depth)?;
        }
        Ok(())
    }
}

/// `reason` says what is wrong with `path`, without naming it.
fn unreadable(path: &Path, from: IncludedFrom, reason: &str) -> OptionFileError {
    match from {
        Some((file, line)) if line > 0 => OptionFileError {
            file: file.to_path_buf(),
            line,
            message: format!("included {}: {reason}", path.display()),
        },
        _ => OptionFileError {
            file: path.to_path_buf(),
            line: 0,
            message: reason.to_string(),
        },
    }
}

/// The text after `=`: quoted (`"..."` or `'...'`, backslash escapes) or
/// bare (ends at `#`). An empty value is the same as none.
fn parse_value(raw: &str) -> Result<Option<String>, String> {
    let s = raw.trim();
    let Some(quote) = s.chars().next().filter(|c| *c == '"' || *c == '\'') else {
        let bare = s.split('#').next().unwrap_or("").trim_end();
        return Ok((!bare.is_empty()).then(|| unescape(bare)));
    };
    let mut out = String::new();
    let mut chars = s[1..].char_indices();
    while let Some((i, c)) = chars.next() {
        if c == '\\' {
            match chars.next() {
                Some((_, e)) => out.push_str(&escaped(e)),
                None => break,
            }
        } else if c == quote {
            let after = s[1 + i + 1..].trim_start();
            if !(after.is_empty() || after.starts_with('#') || after.starts_with(';')) {
                return Err(format!("unexpected `{after}` after the closing {quote}"));
            }
            return Ok((!out.is_empty()).then_some(out));
        } else {
            out.push(c);
        }
    }
    Err(format!("unterminated {quote}-quoted value"))
}

fn unescape(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some(e) => out.push_str(&escaped(e)),
            None => out.push('\\'),
        }
    }
    out
}

/// The escapes the server knows in option values; others stay as written.
fn escaped(c: char) -> String {
    match c {
        'n' => "\n".into(),
        't' => "\t".into(),
        'r' => "\r".into(),
        'b' => "\u{8}".into(),
        's' => " ".into(),
        '\\' | '"' | '\'' => c.to_string(),
        other => format!("\\{other}"),
    }
}

impl ServerOptions {
    fn value(setting: &Option<Setting>) -> Option<&str> {
        setting.as_ref().and_then(|s| s.value.as_deref())
    }

    /// The data directory, and where that came from.
    pub fn datadir(&self) -> (PathBuf, String) {
        match &self.datadir {
            Some(s @ Setting { value: Some(v), .. }) => {
                (PathBuf::from(v), format!("datadir in {}", s.at()))
            }
            _ => (
                PathBuf::from(DEFAULT_DATADIR),
                format!("default datadir {DEFAULT_DATADIR}"),
            ),
        }
    }

    /// The error log as the server names it: `log_error`, relative to
    /// datadir, `.err` added when it has no extension; without a value or
    /// without the option, `<hostname>.err` in datadir.
    pub fn error_log(&self, hostname: &str) -> ResolvedLog {
        let (datadir, datadir_origin) = self.datadir();
        let default_name = format!("{hostname}.err");
        match &self.log_error {
            Some(s) => match &s.value {
                Some(v) => {
                    let mut path = PathBuf::from(v);
                    if path.extension().is_none() {
                        path.set_extension("err");
                    }
                    in_datadir(path, &datadir, &datadir_origin, format!("log_error in {}", s.at()))
                }
                None => ResolvedLog {
                    path: datadir.join(&default_name),
                    origin: format!(
                        "log_error without a value in {}: {default_name} in the datadir ({datadir_origin})",
                        s.at()
                    ),
                },
            },
            None => ResolvedLog {
                path: datadir.join(&default_name),
                origin: format!(
                    "no log_error in {}: the server's default {default_name} in the datadir ({datadir_origin})",
                    self.files_read_text()
                ),
            },
        }
    }

    /// The slow query log: `slow_query_log_file`, relative to datadir;
    /// otherwise `<hostname>-slow.log` in datadir. Notes when the log is off.
    pub fn slow_query_log(&self, hostname: &str) -> ResolvedLog {
        let (datadir, datadir_origin) = self.datadir();
        let default_name = format!("{hostname}-slow.log");
        let mut resolved = match &self.slow_query_log_file {
            Some(s @ Setting { value: Some(v), .. }) => in_datadir(
                PathBuf::from(v),
                &datadir,
                &datadir_origin,
                format!("slow_query_log_file in {}", s.at()),
            ),
            _ => ResolvedLog {
                path: datadir.join(&default_name),
                origin: format!(
                    "no slow_query_log_file in {}: the server's default {default_name} in the datadir ({datadir_origin})",
                    self.files_read_text()
                ),
            },
        };
        let on = Self::value(&self.slow_query_log).map(|v| v.to_ascii_lowercase());
        match (&self.slow_query_log, on.as_deref()) {
            (Some(_), None | Some("1" | "on" | "true")) => {}
            (Some(s), Some(_)) => resolved.origin.push_str(&format!(
                "; note: slow_query_log is off in {}, so the server writes no slow log",
                s.at()
            )),
            (None, _) => resolved.origin.push_str(
                "; note: slow_query_log is not set in the option files (off unless set at runtime)",
            ),
        }
        resolved
    }

    fn files_read_text(&self) -> String {
        if self.files_read.is_empty() {
            return "any option file (none found)".into();
        }
        self.files_read
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn in_datadir(path: PathBuf, datadir: &Path, datadir_origin: &str, origin: String) -> ResolvedLog {
    if path.is_absolute() {
        ResolvedLog { path, origin }
    } else {
        ResolvedLog {
            path: datadir.join(path),
            origin: format!("{origin}, relative to the datadir ({datadir_origin})"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn follows_includes_and_honours_server_groups_only() {
        let d = tempfile::tempdir().unwrap();
        let main = write(
            d.path(),
            "my.cnf",
            "# main\n[client]\nlog-error = /client/ignored.log\n\n[mysqld]\ndatadir = /srv/mysql\n!includedir conf.d\n[mysqld_safe]\nlog_error=/safe.log\n",
        );
        write(
            d.path(),
            "conf.d/20-server.cnf",
            "[server]\nslow-query-log-file = 'slow log.txt'  # quoted\nslow_query_log = ON\n",
        );
        write(
            d.path(),
            "conf.d/10-logs.cnf",
            "; first in name order\n[mariadb]\nlog_error=\"/var/log/mariadb/mariadb.log\"\n",
        );
        write(d.path(), "conf.d/ignored.txt", "garbage outside a group\n");
        let o = read(&[main.clone(), d.path().join("missing.cnf")]).unwrap();
        let e = o.error_log("db1");
        assert_eq!(e.path, Path::new("/var/log/mariadb/mariadb.log"));
        assert_eq!(
            e.origin,
            format!(
                "log_error in {}:3",
                d.path().join("conf.d/10-logs.cnf").display()
            )
        );
        let s = o.slow_query_log("db1");
        assert_eq!(s.path, Path::new("/srv/mysql/slow log.txt"));
        assert!(
            s.origin.contains("relative to the datadir (datadir in "),
            "{}",
            s.origin
        );
        assert!(!s.origin.contains("note"), "{}", s.origin);
        assert_eq!(o.files_read.len(), 3);
    }

    #[test]
    fn server_defaults() {
        let o = read(&[PathBuf::from("/nonexistent/my.cnf")]).unwrap();
        assert_eq!(o.error_log("db1").path, Path::new("/var/lib/mysql/db1.err"));
        let s = o.slow_query_log("db1");
        assert_eq!(s.path, Path::new("/var/lib/mysql/db1-slow.log"));
        assert!(
            s.origin.contains("slow_query_log is not set"),
            "{}",
            s.origin
        );

        let d = tempfile::tempdir().unwrap();
        let f = write(
            d.path(),
            "my.cnf",
            "[mysqld]\ndatadir=/data\nlog-error\nslow_query_log=0\n",
        );
        let o = read(&[f]).unwrap();
        let e = o.error_log("db1");
        assert_eq!(e.path, Path::new("/data/db1.err"));
        assert!(
            e.origin.starts_with("log_error without a value in "),
            "{}",
            e.origin
        );
        assert!(o
            .slow_query_log("db1")
            .origin
            .contains("slow_query_log is off"));

        let f = write(d.path(), "b.cnf", "[mysqld]\nlog_error=mysqld\n");
        let o = read(&[f]).unwrap();
        assert_eq!(
            o.error_log("h").path,
            Path::new("/var/lib/mysql/mysqld.err")
        );
    }

    #[test]
    fn later_settings_win_and_includes_are_read_once() {
        let d = tempfile::tempdir().unwrap();
        let a = write(
            d.path(),
            "a.cnf",
            "[mysqld]\nlog_error=/one.log\n!include b.cnf\n!include a.cnf\n",
        );
        write(d.path(), "b.cnf", "[mysqld]\nlog_error=/two.log\n");
        let o = read(&[a.clone(), d.path().join("b.cnf")]).unwrap();
        assert_eq!(o.error_log("h").path, Path::new("/two.log"));
        assert_eq!(o.files_read.len(), 2);
    }

    #[test]
    fn values() {
        assert_eq!(parse_value(" /a/b # c"), Ok(Some("/a/b".into())));
        assert_eq!(parse_value("\"/a b\" ; c"), Ok(Some("/a b".into())));
        assert_eq!(parse_value("'x\\sy'"), Ok(Some("x y".into())));
        assert_eq!(parse_value("C:\\\\logs"), Ok(Some("C:\\logs".into())));
        assert_eq!(parse_value(""), Ok(None));
        assert_eq!(
            parse_value("\"/a"),
            Err("unterminated \"-quoted value".into())
        );
        assert_eq!(
            parse_value("'/a' b"),
            Err("unexpected `b` after the closing '".into())
        );
    }

    #[test]
    fn malformed_files_name_file_and_line() {
        let d = tempfile::tempdir().unwrap();
        let cases = [
            (
                "[mysqld]\n\nlog_error = \"/x\n",
                3,
                "unterminated \"-quoted value",
            ),
            (
                "# top\nlog_error=/x\n[mysqld]\n",
                2,
                "is outside any [group]",
            ),
            ("[mysqld\n", 1, "has no closing `]`"),
            ("[mysqld]\n!includ x\n", 2, "unknown directive `!includ`"),
            ("[mysqld]\n!include\n", 2, "`!include` needs a path"),
        ];
        for (i, (text, line, what)) in cases.into_iter().enumerate() {
            let f = write(d.path(), &format!("bad{i}.cnf"), text);
            let e = read(std::slice::from_ref(&f)).unwrap_err();
            assert_eq!((e.file.as_path(), e.line), (f.as_path(), line), "{e}");
            assert!(e.message.contains(what), "{e}");
            assert!(
                e.to_string()
                    .starts_with(&format!("{}:{line}: ", f.display())),
                "{e}"
            );
        }
    }

    #[test]
    fn an_unreadable_include_is_an_error_at_the_directive() {
        let d = tempfile::tempdir().unwrap();
        // A directory where a file is expected cannot be read by anyone,
        // root included (the tests run as root).
        std::fs::create_dir(d.path().join("sub.cnf")).unwrap();
        let f = write(d.path(), "my.cnf", "[mysqld]\n!include sub.cnf\n");
        let e = read(std::slice::from_ref(&f)).unwrap_err();
        assert_eq!((e.file.as_path(), e.line), (f.as_path(), 2), "{e}");
        assert!(
            e.message.contains("included ")
                && e.message
                    .contains("a directory, expected a MySQL option file"),
            "{e}"
        );
        // A missing include is skipped, as the server skips it.
        let f = write(
            d.path(),
            "ok.cnf",
            "[mysqld]\n!include nothing.cnf\n!includedir nodir\n",
        );
        assert!(read(&[f]).is_ok());
    }
}
