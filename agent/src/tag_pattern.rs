//! fluentd's tag patterns: `*` matches one dot-separated part (or part of
//! one, as in `mysql.err*`), `**` zero or more parts, `{a,b}` alternatives,
//! and space-separated patterns are OR'd.

#[derive(Debug, Clone)]
pub struct TagPattern {
    alternatives: Vec<Vec<Part>>,
}

#[derive(Debug, Clone, PartialEq)]
enum Part {
    /// `**`
    Any,
    /// A part that may contain `*` wildcards.
    Glob(String),
}

impl TagPattern {
    pub fn parse(source: &str) -> Result<TagPattern, String> {
        let mut alternatives = Vec::new();
        for word in source.split_whitespace() {
            for expanded in expand_braces(word)? {
                if expanded.is_empty() || expanded.split('.').any(str::is_empty) {
                    return Err(format!("invalid tag pattern `{word}`: empty part"));
                }
                let parts = expanded
                    .split('.')
                    .map(|p| {
                        if p == "**" {
                            Part::Any
                        } else {
                            Part::Glob(p.to_string())
                        }
                    })
                    .collect();
                alternatives.push(parts);
            }
        }
        if alternatives.is_empty() {
            return Err("empty tag pattern".into());
        }
        Ok(TagPattern { alternatives })
    }

    pub fn matches(&self, tag: &str) -> bool {
        let parts: Vec<&str> = tag.split('.').collect();
        self.alternatives.iter().any(|alt| match_parts(alt, &parts))
    }
}

fn match_parts(pattern: &[Part], tag: &[&str]) -> bool {
    match pattern.split_first() {
        None => tag.is_empty(),
        Some((Part::Any, rest)) => (0..=tag.len()).any(|skip| match_parts(rest, &tag[skip..])),
        Some((Part::Glob(g), rest)) => {
            !tag.is_empty()
                && glob_part(g.as_bytes(), tag[0].as_bytes())
                && match_parts(rest, &tag[1..])
        }
    }
}

/// `*` within one part matches any run of characters.
fn glob_part(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob_part(rest, &text[i..])),
        Some((c, rest)) => text.first() == Some(c) && glob_part(rest, &text[1..]),
    }
}

fn expand_braces(word: &str) -> Result<Vec<String>, String> {
    let Some(open) = word.find('{') else {
        if word.contains('}') {
            return Err(format!("invalid tag pattern `{word}`: unmatched `}}`"));
        }
        return Ok(vec![word.to_string()]);
    };
    let mut depth = 0;
    let mut close = None;
    for (i, c) in word[open..].char_indices() {
        match c {
            '{' => depth += 1,
            '}' => {
                depth -= 1;
                if depth == 0 {
                    close = Some(open + i);
                    break;
                }
            }
            _ => {}
        }
    }
    let close = close.ok_or_else(|| format!("invalid tag pattern `{word}`: unmatched `{{`"))?;
    let (head, inner, tail) = (&word[..open], &word[open + 1..close], &word[close + 1..]);
    let mut options = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                options.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    options.push(&inner[start..]);
    let mut out = Vec::new();
    for option in options {
        out.extend(expand_braces(&format!("{head}{option}{tail}"))?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(p: &str, t: &str) -> bool {
        TagPattern::parse(p).unwrap().matches(t)
    }

    #[test]
    fn fluentd_semantics() {
        assert!(m("a.*", "a.b"));
        assert!(!m("a.*", "a"));
        assert!(!m("a.*", "a.b.c"));
        assert!(m("a.**", "a"));
        assert!(m("a.**", "a.b.c"));
        assert!(!m("a.**", "ab.c"));
        assert!(m("**", "anything.at.all"));
        assert!(m("**.err", "mysql.err"));
        assert!(m("**.err", "err"));
        assert!(m("a.**.z", "a.z"));
        assert!(m("a.**.z", "a.b.c.z"));
        assert!(m("{a,b}.c", "b.c"));
        assert!(!m("{a,b}.c", "d.c"));
        assert!(m("mysql.{error,slow.*}", "mysql.slow.db1"));
        assert!(m("a b.c", "a"));
        assert!(m("a b.c", "b.c"));
        assert!(m("mysql.err*", "mysql.error"));
        assert!(!m("mysql.err*", "mysql.slow"));
    }

    #[test]
    fn rejects_malformed_patterns() {
        assert!(TagPattern::parse("a..b").is_err());
        assert!(TagPattern::parse("{a,b").is_err());
        assert!(TagPattern::parse("  ").is_err());
    }
}
