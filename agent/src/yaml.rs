//! YAML through the prefix's libyaml: its event parser turned into a small
//! node tree that remembers where every node starts, so config errors can
//! name the line and column.

use std::collections::HashMap;
use std::ffi::CStr;
use std::mem::MaybeUninit;

use libyaml_sys as sys;

/// 1-based position in the file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Mark {
    pub line: usize,
    pub column: usize,
}

impl Mark {
    fn from_sys(m: &sys::yaml_mark_t) -> Mark {
        Mark {
            line: m.line + 1,
            column: m.column + 1,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum NodeKind {
    /// `plain` is false for quoted scalars: `"1"` stays a string.
    Scalar {
        value: String,
        plain: bool,
    },
    Seq(Vec<Node>),
    Map(Vec<(Node, Node)>),
}

#[derive(Debug, Clone, PartialEq)]
pub struct Node {
    pub kind: NodeKind,
    pub mark: Mark,
}

impl Node {
    pub fn describe(&self) -> &'static str {
        match &self.kind {
            NodeKind::Scalar { .. } => "a scalar",
            NodeKind::Seq(_) => "a list",
            NodeKind::Map(_) => "a mapping",
        }
    }

    /// True for an empty plain scalar, `~` or `null`.
    pub fn is_null(&self) -> bool {
        matches!(&self.kind, NodeKind::Scalar { value, plain: true } if value.is_empty() || value == "~" || value == "null")
    }
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{line}:{column}: {message}", line = mark.line, column = mark.column)]
pub struct YamlError {
    pub mark: Mark,
    pub message: String,
}

struct Parser {
    raw: Box<MaybeUninit<sys::yaml_parser_t>>,
}

impl Parser {
    fn new(input: &[u8]) -> Parser {
        let mut raw = Box::new(MaybeUninit::<sys::yaml_parser_t>::zeroed());
        // SAFETY: yaml_parser_initialize fills the zeroed struct; `input`
        // outlives the parser because `parse` owns both for its duration.
        unsafe {
            if sys::yaml_parser_initialize(raw.as_mut_ptr()) == 0 {
                panic!("libyaml could not allocate a parser");
            }
            sys::yaml_parser_set_input_string(raw.as_mut_ptr(), input.as_ptr(), input.len());
        }
        Parser { raw }
    }

    fn next(&mut self) -> Result<Event, YamlError> {
        let mut event = MaybeUninit::<sys::yaml_event_t>::zeroed();
        // SAFETY: parser initialised in `new`; the event is deleted below
        // after copying out what we need.
        unsafe {
            if sys::yaml_parser_parse(self.raw.as_mut_ptr(), event.as_mut_ptr()) == 0 {
                return Err(self.error());
            }
            let ev = event.assume_init_mut();
            let mark = Mark::from_sys(&ev.start_mark);
            let out = match ev.type_ {
                sys::YAML_STREAM_END_EVENT => Event::StreamEnd,
                sys::YAML_SCALAR_EVENT => {
                    let s = ev.data.scalar.as_ref();
                    let bytes = std::slice::from_raw_parts(s.value, s.length);
                    Event::Scalar {
                        value: String::from_utf8_lossy(bytes).into_owned(),
                        plain: s.style == sys::YAML_PLAIN_SCALAR_STYLE,
                        anchor: cstr(s.anchor),
                        mark,
                    }
                }
                sys::YAML_SEQUENCE_START_EVENT => Event::SeqStart {
                    anchor: cstr(ev.data.sequence_start.as_ref().anchor),
                    mark,
                },
                sys::YAML_MAPPING_START_EVENT => Event::MapStart {
                    anchor: cstr(ev.data.mapping_start.as_ref().anchor),
                    mark,
                },
                sys::YAML_SEQUENCE_END_EVENT | sys::YAML_MAPPING_END_EVENT => Event::End,
                sys::YAML_ALIAS_EVENT => Event::Alias {
                    anchor: cstr(ev.data.alias.as_ref().anchor).unwrap_or_default(),
                    mark,
                },
                _ => Event::Other,
            };
            sys::yaml_event_delete(ev);
            Ok(out)
        }
    }

    fn error(&self) -> YamlError {
        // SAFETY: after a failed parse libyaml leaves a message and marks.
        unsafe {
            let p = self.raw.assume_init_ref();
            let problem = cstr(p.problem as *mut u8).unwrap_or_else(|| "invalid YAML".into());
            let message = match cstr(p.context as *mut u8) {
                Some(context) => format!("{problem} ({context})"),
                None => problem,
            };
            YamlError {
                mark: Mark::from_sys(&p.problem_mark),
                message,
            }
        }
    }
}

impl Drop for Parser {
    fn drop(&mut self) {
        // SAFETY: initialised in `new`.
        unsafe { sys::yaml_parser_delete(self.raw.as_mut_ptr()) }
    }
}

unsafe fn cstr(p: *mut u8) -> Option<String> {
    if p.is_null() {
        None
    } else {
        Some(CStr::from_ptr(p as *const _).to_string_lossy().into_owned())
    }
}

enum Event {
    StreamEnd,
    Scalar {
        value: String,
        plain: bool,
        anchor: Option<String>,
        mark: Mark,
    },
    SeqStart {
        anchor: Option<String>,
        mark: Mark,
    },
    MapStart {
        anchor: Option<String>,
        mark: Mark,
    },
    End,
    Alias {
        anchor: String,
        mark: Mark,
    },
    Other,
}

/// Deepest nesting a config may have: far beyond any real config, far
/// below what would exhaust the stack (each level is a recursive call).
pub const MAX_DEPTH: usize = 64;
/// Most nodes a document may have, aliases counted at their full size each
/// time they are used: room for a mapping of 100,000 keys (200,000 nodes)
/// and the rest of a config, while a 4 MiB file of `[x,x,x,...]` stops at
/// a few tens of MiB.
pub const MAX_NODES: usize = 300_000;
/// Most nodes that aliases may add: a "billion laughs" file of a few
/// hundred bytes is an error here, not gigabytes of memory.
pub const MAX_ALIAS_NODES: usize = 100_000;

/// Parses the one document of `text`; None for an empty file. Nesting,
/// alias expansion and document count are bounded (MAX_DEPTH, MAX_NODES,
/// one document), each an error with the position where it was exceeded.
pub fn parse(text: &str) -> Result<Option<Node>, YamlError> {
    let mut parser = Parser::new(text.as_bytes());
    let mut cx = Context::default();
    let mut document = None;
    loop {
        match parser.next()? {
            Event::StreamEnd => return Ok(document),
            Event::Other => continue,
            Event::End => unreachable!("libyaml balances start and end events"),
            first => {
                let mark = first.mark();
                if document.is_some() {
                    return Err(YamlError {
                        mark,
                        message: "a second YAML document (`---`): the config is one document"
                            .into(),
                    });
                }
                document = Some(node(&mut parser, first, &mut cx, 1)?);
            }
        }
    }
}

/// What parsing has seen so far: anchors with their expanded sizes, and
/// the number of nodes built.
#[derive(Default)]
struct Context {
    anchors: HashMap<String, (Node, usize)>,
    nodes: usize,
    aliased: usize,
}

impl Context {
    fn count(&mut self, n: usize, mark: Mark) -> Result<(), YamlError> {
        self.nodes = self.nodes.saturating_add(n);
        if self.nodes > MAX_NODES {
            return Err(YamlError {
                mark,
                message: format!(
                    "the document expands to more than {MAX_NODES} nodes (aliases counted each time they are used)"
                ),
            });
        }
        Ok(())
    }

    /// Counts the `n` nodes an alias expands to.
    fn count_alias(&mut self, n: usize, mark: Mark) -> Result<(), YamlError> {
        self.aliased = self.aliased.saturating_add(n);
        if self.aliased > MAX_ALIAS_NODES {
            return Err(YamlError {
                mark,
                message: format!(
                    "aliases expand to more than {MAX_ALIAS_NODES} nodes (each counted every time it is used)"
                ),
            });
        }
        self.count(n, mark)
    }
}

impl Event {
    fn mark(&self) -> Mark {
        match self {
            Event::Scalar { mark, .. }
            | Event::SeqStart { mark, .. }
            | Event::MapStart { mark, .. }
            | Event::Alias { mark, .. } => *mark,
            Event::StreamEnd | Event::End | Event::Other => Mark::default(),
        }
    }
}

fn node(
    parser: &mut Parser,
    event: Event,
    cx: &mut Context,
    depth: usize,
) -> Result<Node, YamlError> {
    if depth > MAX_DEPTH {
        return Err(YamlError {
            mark: event.mark(),
            message: format!("nested deeper than {MAX_DEPTH} levels"),
        });
    }
    let before = cx.nodes;
    let (node, anchor) = match event {
        Event::Scalar {
            value,
            plain,
            anchor,
            mark,
        } => {
            cx.count(1, mark)?;
            (
                Node {
                    kind: NodeKind::Scalar { value, plain },
                    mark,
                },
                anchor,
            )
        }
        Event::Alias { anchor, mark } => {
            let Some((node, size)) = cx.anchors.get(&anchor).cloned() else {
                return Err(YamlError {
                    mark,
                    message: format!("unknown alias `*{anchor}`"),
                });
            };
            cx.count_alias(size, mark)?;
            return Ok(node);
        }
        Event::SeqStart { anchor, mark } => {
            cx.count(1, mark)?;
            let mut items = Vec::new();
            loop {
                match parser.next()? {
                    Event::End => break,
                    ev => items.push(node(parser, ev, cx, depth + 1)?),
                }
            }
            (
                Node {
                    kind: NodeKind::Seq(items),
                    mark,
                },
                anchor,
            )
        }
        Event::MapStart { anchor, mark } => {
            cx.count(1, mark)?;
            let mut pairs = Vec::new();
            loop {
                let key = match parser.next()? {
                    Event::End => break,
                    ev => node(parser, ev, cx, depth + 1)?,
                };
                let ev = parser.next()?;
                let value = node(parser, ev, cx, depth + 1)?;
                pairs.push((key, value));
            }
            (
                Node {
                    kind: NodeKind::Map(pairs),
                    mark,
                },
                anchor,
            )
        }
        Event::StreamEnd | Event::End | Event::Other => {
            return Err(YamlError {
                mark: Mark::default(),
                message: "unexpected end of document".into(),
            })
        }
    };
    if let Some(a) = anchor {
        let size = cx.nodes - before;
        cx.anchors.insert(a, (node.clone(), size));
    }
    Ok(node)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scalar(n: &Node) -> &str {
        match &n.kind {
            NodeKind::Scalar { value, .. } => value,
            _ => panic!("not a scalar"),
        }
    }

    #[test]
    fn builds_a_tree_with_marks() {
        let doc = "a: 1\nb:\n  - x\n  - \"y\"\nc: &k {d: e}\nf: *k\n";
        let root = parse(doc).unwrap().unwrap();
        let NodeKind::Map(pairs) = &root.kind else {
            panic!()
        };
        assert_eq!(scalar(&pairs[0].0), "a");
        assert_eq!(pairs[1].1.mark, Mark { line: 3, column: 3 });
        let NodeKind::Seq(items) = &pairs[1].1.kind else {
            panic!()
        };
        assert_eq!(
            items[1].kind,
            NodeKind::Scalar {
                value: "y".into(),
                plain: false
            }
        );
        assert_eq!(pairs[3].1.kind, pairs[2].1.kind, "alias resolves");
    }

    #[test]
    fn syntax_errors_carry_line_and_column() {
        let e = parse("a: 1\nb: [x, y\nc: 2\n").unwrap_err();
        assert_eq!(e.mark.line, 3, "{e}");
        assert!(e.message.contains("flow sequence"), "{e}");
        let e = parse("a: 1\n  b: 2\n").unwrap_err();
        assert_eq!((e.mark.line, e.mark.column), (2, 4), "{e}");
    }

    #[test]
    fn billion_laughs_is_an_error_not_gigabytes() {
        let mut doc = String::from("a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
        for i in 1..10 {
            let p = i - 1;
            doc.push_str(&format!(
                "a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
            ));
        }
        assert!(doc.len() < 1000, "{}", doc.len());
        let e = parse(&doc).unwrap_err();
        assert!(
            e.message
                .contains("aliases expand to more than 100000 nodes"),
            "{e}"
        );
        assert!(e.mark.line >= 4, "{e}");
        // Aliases within the limit still resolve.
        assert!(parse("a: &k [1, 2]\nb: *k\nc: *k\n").is_ok());
    }

    #[test]
    fn deep_nesting_is_an_error_not_a_stack_overflow() {
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        let e = parse(&deep).unwrap_err();
        assert!(e.message.contains("deeper than 64"), "{e}");
        let ok = format!("{}{}", "[".repeat(60), "]".repeat(60));
        assert!(parse(&ok).is_ok());
    }

    #[test]
    fn a_second_document_is_an_error() {
        let e = parse("a: 1\n---\nb: 2\n").unwrap_err();
        assert!(e.message.contains("second YAML document"), "{e}");
        assert_eq!(e.mark.line, 3, "{e}");
    }

    #[test]
    fn empty_document_is_none() {
        assert_eq!(parse("").unwrap(), None);
        assert_eq!(parse("# just a comment\n").unwrap(), None);
    }
}
