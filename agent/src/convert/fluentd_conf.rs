//! Fluentd's configuration syntax (v1, and v0.12's `type`), read into
//! directives with the file and line of each part, so that every error of
//! the conversion can say `file:line: what was expected`.
//!
//! What it reads: `<name arg>` ... `</name>` sections, nested; `key value`
//! parameters whose value is bare (to the end of the line, a ` #` comment
//! cut off), double-quoted (escapes, `#{...}` kept for the mapping to
//! judge, may span lines), single-quoted (literal), or a JSON array or
//! hash that may span lines; `#` comment lines; `@include` of a file or a
//! glob, relative to the including file, sorted as Fluentd sorts them.

use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Where a part of the configuration was written.
#[derive(Debug, Clone, PartialEq)]
pub struct At {
    pub file: Arc<Path>,
    pub line: usize,
}

impl std::fmt::Display for At {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.file.display(), self.line)
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Bare or single-quoted: taken as written.
    Plain(String),
    /// Double-quoted, escapes resolved; may hold `#{...}` Ruby.
    Quoted(String),
}

impl Value {
    pub fn text(&self) -> &str {
        match self {
            Value::Plain(s) | Value::Quoted(s) => s,
        }
    }
}

#[derive(Debug, Clone)]
pub struct Param {
    pub key: String,
    pub value: Value,
    pub at: At,
}

#[derive(Debug, Clone)]
pub struct Section {
    /// `source`, `match`, `filter`, `label`, `system`, `parse`, `buffer`, ...
    pub name: String,
    /// What follows the name: a tag pattern, a label, a buffer's chunk keys.
    pub arg: String,
    pub params: Vec<Param>,
    pub sections: Vec<Section>,
    pub at: At,
}

impl Section {
    /// A parameter's value; written twice, the last one counts, as in
    /// Fluentd.
    pub fn param(&self, key: &str) -> Option<&Param> {
        self.params.iter().rev().find(|p| p.key == key)
    }

    /// `@type`, or v0.12's `type`.
    pub fn kind(&self) -> Option<&Param> {
        self.param("@type").or_else(|| self.param("type"))
    }
}

#[derive(Debug)]
pub struct ParseError(pub String);

impl std::fmt::Display for ParseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// Bounds for a file built to explode: includes nested this deep, this many
/// files, and this many bytes per file.
const MAX_INCLUDE_DEPTH: usize = 16;
const MAX_FILES: usize = 1000;
const MAX_FILE_BYTES: u64 = 4 << 20;

/// Reads `path` and its includes into one top-level section (name "ROOT").
pub fn parse_file(path: &Path) -> Result<Section, ParseError> {
    let mut files = 0;
    let file: Arc<Path> = Arc::from(path);
    let mut root = Section {
        name: "ROOT".into(),
        arg: String::new(),
        params: Vec::new(),
        sections: Vec::new(),
        at: At {
            file: file.clone(),
            line: 0,
        },
    };
    read_into(path, &mut root, 0, &mut files, None)?;
    Ok(root)
}

fn read_into(
    path: &Path,
    into: &mut Section,
    depth: usize,
    files: &mut usize,
    from: Option<&At>,
) -> Result<(), ParseError> {
    let whence = || from.map(|a| format!("{a}: ")).unwrap_or_default();
    *files += 1;
    if *files > MAX_FILES || depth > MAX_INCLUDE_DEPTH {
        return Err(ParseError(format!(
            "{}@include {}: more than {MAX_FILES} files or {MAX_INCLUDE_DEPTH} levels of includes (an include loop?)",
            whence(),
            path.display()
        )));
    }
    let text = read_text(path).map_err(|e| ParseError(format!("{}{e}", whence())))?;
    let file: Arc<Path> = Arc::from(path);
    let mut p = Parser {
        lines: text.lines().map(|l| l.trim_end_matches('\r')).collect(),
        next: 0,
        file,
    };
    let mut stack: Vec<Section> = Vec::new();
    while let Some((line_no, line)) = p.next_line() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let at = p.at(line_no);
        if let Some(rest) = trimmed.strip_prefix("</") {
            let name = rest.strip_suffix('>').map(str::trim).ok_or_else(|| {
                ParseError(format!("{at}: expected `</name>`, found `{trimmed}`"))
            })?;
            let Some(done) = stack.pop() else {
                return Err(ParseError(format!(
                    "{at}: `</{name}>` closes no open section"
                )));
            };
            if done.name != name {
                return Err(ParseError(format!(
                    "{at}: expected `</{}>` (opened at line {}), found `</{name}>`",
                    done.name, done.at.line
                )));
            }
            match stack.last_mut() {
                Some(parent) => parent.sections.push(done),
                None => into.sections.push(done),
            }
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('<') {
            let Some(inner) = rest.strip_suffix('>') else {
                return Err(ParseError(format!(
                    "{at}: expected `<name argument>` on one line, found `{trimmed}`"
                )));
            };
            let inner = inner.trim();
            let (name, arg) = match inner.split_once(char::is_whitespace) {
                Some((n, a)) => (n, a.trim()),
                None => (inner, ""),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ParseError(format!(
                    "{at}: expected a section name in `{trimmed}`"
                )));
            }
            stack.push(Section {
                name: name.into(),
                arg: arg.into(),
                params: Vec::new(),
                sections: Vec::new(),
                at,
            });
            continue;
        }
        let (key, rest) = match trimmed.split_once(char::is_whitespace) {
            Some((k, r)) => (k, r.trim_start()),
            None => (trimmed, ""),
        };
        let value = p.value(rest, &at)?;
        if key == "@include" || key == "include" {
            let target = stack.last_mut().unwrap_or(into);
            for included in include_paths(path, value.text(), &at)? {
                read_into(&included, target, depth + 1, files, Some(&at))?;
            }
            continue;
        }
        let target = stack.last_mut().unwrap_or(into);
        target.params.push(Param {
            key: key.into(),
            value,
            at,
        });
    }
    if let Some(open) = stack.pop() {
        return Err(ParseError(format!(
            "{}: `<{}>` is never closed: expected `</{}>` before the end of the file",
            open.at, open.name, open.name
        )));
    }
    Ok(())
}

/// A config file's text: a regular file (not a FIFO or a device), of at
/// most 4 MiB, in UTF-8.
fn read_text(path: &Path) -> Result<String, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    let meta = file
        .metadata()
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!(
            "{}: not a regular file; expected a Fluentd configuration file",
            path.display()
        ));
    }
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(format!(
            "{}: larger than 4 MiB; expected a Fluentd configuration file",
            path.display()
        ));
    }
    String::from_utf8(bytes).map_err(|e| {
        format!(
            "{}: not UTF-8 (byte {}); expected a Fluentd configuration file",
            path.display(),
            e.utf8_error().valid_up_to()
        )
    })
}

/// The files an `@include` names: a path or a glob, relative to the
/// including file's directory, sorted (Fluentd sorts a glob's matches).
fn include_paths(from: &Path, pattern: &str, at: &At) -> Result<Vec<PathBuf>, ParseError> {
    if pattern.starts_with("http://") || pattern.starts_with("https://") {
        return Err(ParseError(format!(
            "{at}: `@include {pattern}`: including a URL is not supported; download it and include the file"
        )));
    }
    let base = from.parent().unwrap_or(Path::new("."));
    let full = if Path::new(pattern).is_absolute() {
        PathBuf::from(pattern)
    } else {
        base.join(pattern)
    };
    let text = full.to_string_lossy();
    if !text.contains(['*', '?', '[']) {
        return Ok(vec![full]);
    }
    let mut out: Vec<PathBuf> = glob::glob(&text)
        .map_err(|e| ParseError(format!("{at}: `@include {pattern}`: {e}")))?
        .filter_map(Result::ok)
        .collect();
    out.sort();
    Ok(out)
}

struct Parser<'a> {
    lines: Vec<&'a str>,
    next: usize,
    file: Arc<Path>,
}

impl<'a> Parser<'a> {
    fn next_line(&mut self) -> Option<(usize, &'a str)> {
        let line = *self.lines.get(self.next)?;
        self.next += 1;
        Some((self.next, line))
    }

    fn at(&self, line: usize) -> At {
        At {
            file: self.file.clone(),
            line,
        }
    }

    /// A parameter's value, starting with `rest` (the text after the key);
    /// quoted strings and JSON arrays or hashes may continue on the lines
    /// that follow.
    fn value(&mut self, rest: &str, at: &At) -> Result<Value, ParseError> {
        match rest.chars().next() {
            Some('"') => {
                let mut text = rest[1..].to_string();
                loop {
                    if let Some(v) = unescape_until_quote(&text) {
                        return Ok(Value::Quoted(v));
                    }
                    let Some((_, more)) = self.next_line() else {
                        return Err(ParseError(format!(
                            "{at}: a double-quoted value is never closed: expected `\"`"
                        )));
                    };
                    text.push('\n');
                    text.push_str(more);
                }
            }
            Some('\'') => {
                let mut text = rest[1..].to_string();
                loop {
                    if let Some(v) = single_quoted(&text) {
                        return Ok(Value::Plain(v));
                    }
                    let Some((_, more)) = self.next_line() else {
                        return Err(ParseError(format!(
                            "{at}: a single-quoted value is never closed: expected `'`"
                        )));
                    };
                    text.push('\n');
                    text.push_str(more);
                }
            }
            Some(open @ ('[' | '{')) => {
                // A JSON value: read on until the brackets balance.
                let close = if open == '[' { ']' } else { '}' };
                let mut text = rest.to_string();
                loop {
                    if balanced(&text, open, close) {
                        return Ok(Value::Plain(text.trim().to_string()));
                    }
                    let Some((_, more)) = self.next_line() else {
                        return Err(ParseError(format!(
                            "{at}: `{open}` is never closed: expected `{close}`"
                        )));
                    };
                    text.push('\n');
                    text.push_str(more);
                }
            }
            _ => {
                // ` #` (or a tab and `#`) starts a comment after a bare value.
                let end = [rest.find(" #"), rest.find("\t#")]
                    .into_iter()
                    .flatten()
                    .min()
                    .unwrap_or(rest.len());
                Ok(Value::Plain(rest[..end].trim_end().to_string()))
            }
        }
    }
}

/// A single-quoted value up to its closing quote: only `\'` and `\\` are
/// escapes, as Fluentd reads them.
fn single_quoted(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '\'' => return Some(out),
            '\\' => match chars.next()? {
                c @ ('\'' | '\\') => out.push(c),
                other => {
                    out.push('\\');
                    out.push(other);
                }
            },
            c => out.push(c),
        }
    }
    None
}

fn balanced(text: &str, open: char, close: char) -> bool {
    let mut depth = 0i32;
    let mut in_string = false;
    let mut escaped = false;
    for c in text.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            c if c == open => depth += 1,
            c if c == close => depth -= 1,
            _ => {}
        }
    }
    depth <= 0
}

/// The text of a double-quoted value up to its closing quote, escapes
/// resolved; None when it does not close in `text`. `#{...}` is kept.
fn unescape_until_quote(text: &str) -> Option<String> {
    let mut out = String::new();
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            '"' => return Some(out),
            '\\' => match chars.next()? {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                'f' => out.push('\u{c}'),
                'b' => out.push('\u{8}'),
                // A backslash at the end of a line joins the next one.
                '\n' => {}
                other => out.push(other),
            },
            c => out.push(c),
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Section, ParseError> {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("td-agent.conf");
        std::fs::write(&path, text).unwrap();
        parse_file(&path)
    }

    #[test]
    fn reads_sections_params_and_values() {
        let root = parse(
            "# a comment\n<source>\n  @type tail\n  path /var/log/a.log,/var/log/b.log # two\n  tag \"mysql.#{Socket.gethostname}\"\n  <parse>\n    @type none\n  </parse>\n</source>\n<match mysql.**>\n  type http\n  headers {\"a\":\n   \"b\"}\n  password 'p#ss'\n</match>\n",
        )
        .unwrap();
        assert_eq!(root.sections.len(), 2);
        let s = &root.sections[0];
        assert_eq!(s.kind().unwrap().value.text(), "tail");
        assert_eq!(
            s.param("path").unwrap().value.text(),
            "/var/log/a.log,/var/log/b.log"
        );
        assert_eq!(
            s.param("tag").unwrap().value,
            Value::Quoted("mysql.#{Socket.gethostname}".into())
        );
        assert_eq!(s.sections[0].name, "parse");
        let m = &root.sections[1];
        assert_eq!(m.arg, "mysql.**");
        assert_eq!(m.kind().unwrap().value.text(), "http");
        assert_eq!(
            m.param("headers").unwrap().value.text(),
            "{\"a\":\n   \"b\"}"
        );
        assert_eq!(m.param("password").unwrap().value.text(), "p#ss");
        assert_eq!(m.param("password").unwrap().at.line, 14);
    }

    #[test]
    fn reads_values_as_fluentd_does() {
        let root = parse(
            "<match a>\n  p1 'it\\'s'\n  p2 bare\t# comment\n  p3 \"one \\\n two\"\n  p4 first\n  p4 last\n</match>\n",
        )
        .unwrap();
        let m = &root.sections[0];
        assert_eq!(m.param("p1").unwrap().value.text(), "it's");
        assert_eq!(m.param("p2").unwrap().value.text(), "bare");
        assert_eq!(m.param("p3").unwrap().value.text(), "one  two");
        assert_eq!(m.param("p4").unwrap().value.text(), "last");
    }

    #[test]
    fn errors_name_the_file_and_line() {
        let e = parse("<source>\n  @type tail\n</match>\n").unwrap_err().0;
        assert!(
            e.ends_with(":3: expected `</source>` (opened at line 1), found `</match>`"),
            "{e}"
        );
        let e = parse("<source>\n  @type tail\n").unwrap_err().0;
        assert!(e.contains(":1: `<source>` is never closed"), "{e}");
        let e = parse("<match a>\n  tag \"open\n").unwrap_err().0;
        assert!(
            e.contains(":2: a double-quoted value is never closed"),
            "{e}"
        );
        let e = parse("<source\n").unwrap_err().0;
        assert!(e.contains(":1: expected `<name argument>`"), "{e}");
    }

    #[test]
    fn includes_files_and_globs_and_refuses_loops() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("conf.d")).unwrap();
        std::fs::write(
            dir.path().join("conf.d/b.conf"),
            "<match b>\n @type null\n</match>\n",
        )
        .unwrap();
        std::fs::write(
            dir.path().join("conf.d/a.conf"),
            "<match a>\n @type null\n</match>\n",
        )
        .unwrap();
        let main = dir.path().join("main.conf");
        std::fs::write(&main, "@include conf.d/*.conf\n").unwrap();
        let root = parse_file(&main).unwrap();
        let args: Vec<&str> = root.sections.iter().map(|s| s.arg.as_str()).collect();
        assert_eq!(args, ["a", "b"]);
        std::fs::write(&main, "@include main.conf\n").unwrap();
        let e = parse_file(&main).unwrap_err().0;
        assert!(e.contains("an include loop?"), "{e}");
        let e = parse_file(Path::new("/dev/zero")).unwrap_err().0;
        assert!(e.contains("not a regular file"), "{e}");
    }
}
