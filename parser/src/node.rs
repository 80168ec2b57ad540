//! The line-level parser: Dockerfile bytes → a raw tree of instruction nodes (strings only),
//! with BuildKit's exact rules for directives, escapes, continuations, comments, flags, JSON
//! arrays and heredocs (see `tests/data/buildkit-parser/FORMAT.md`). No expansion
//! and no validation happen here; [`crate::instructions`] does that on top.

use std::collections::BTreeSet;

use crate::error::{Pos, RawError};
use crate::shell::Lexer;

/// Longest physical line accepted.
pub const MAX_LINE: usize = 65535;

/// One heredoc attached to an instruction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Heredoc {
    pub name: String,
    /// The body: the raw lines between the instruction and the terminator, newlines kept.
    pub content: String,
    /// False when the delimiter was quoted (no variable expansion in the body).
    pub expand: bool,
    /// `<<-`: leading tabs are stripped from body lines at build time.
    pub chomp: bool,
    /// The file descriptor (`3<<EOF`); 0 when not given.
    pub fd: u32,
}

/// A flag as written (`--mount=type=cache,target=/x`) and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawFlag {
    pub text: String,
    pub pos: Pos,
}

/// One instruction as parsed, before validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Node {
    /// The instruction word, lower-cased.
    pub cmd: String,
    /// The instruction word as written.
    pub original_cmd: String,
    pub flags: Vec<RawFlag>,
    pub args: Vec<String>,
    /// Arguments came from a JSON array.
    pub json: bool,
    /// ONBUILD's wrapped instruction.
    pub next: Option<Box<Node>>,
    pub heredocs: Vec<Heredoc>,
    /// First and last physical line (1-based) this instruction consumed.
    pub start: Pos,
    pub end_line: usize,
    /// Where the argument text ("rest", after flags) starts.
    pub rest_pos: Pos,
    /// The logical line (continuations joined).
    pub original: String,
}

/// A parser directive (`# escape=`, `# syntax=`, `# check=`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Directive {
    pub key: String,
    pub value: String,
    pub line: usize,
}

/// A non-fatal finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Warning {
    pub line: usize,
    pub message: String,
}

/// The raw parse of a whole file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawDockerfile {
    pub nodes: Vec<Node>,
    pub directives: Vec<Directive>,
    pub escape: char,
    pub warnings: Vec<Warning>,
}

/// Maps offsets in a logical line back to physical positions.
#[derive(Default)]
struct Segments(Vec<(usize, Pos)>);

impl Segments {
    fn push(&mut self, offset: usize, pos: Pos) {
        self.0.push((offset, pos));
    }
    fn pos(&self, offset: usize) -> Pos {
        let (base, p) = self
            .0
            .iter()
            .rev()
            .find(|(o, _)| *o <= offset)
            .copied()
            .unwrap_or((0, Pos { line: 1, col: 1 }));
        Pos {
            line: p.line,
            col: p.col + (offset - base),
        }
    }
}

/// Parses a whole Dockerfile.
pub fn parse(input: &str) -> Result<RawDockerfile, RawError> {
    let input = input.strip_prefix('\u{feff}').unwrap_or(input);
    let lines: Vec<&str> = input.split_inclusive('\n').collect();
    let mut escape = '\\';
    let mut directives: Vec<Directive> = Vec::new();
    let mut detecting = true;
    let mut nodes = Vec::new();
    let mut warnings = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line_no = i + 1;
        let physical = lines[i];
        check_length(physical, line_no)?;
        i += 1;
        let stripped = physical.trim_end_matches(['\r', '\n']);
        let t = stripped.trim_start();
        let lead_bytes = stripped.len() - t.len();
        let lead = stripped[..lead_bytes].chars().count();
        if detecting {
            match directive(t) {
                Some((key, value)) => {
                    add_directive(&mut directives, &mut escape, key, value, line_no)?
                }
                None => detecting = false,
            }
        }
        let t = if t.starts_with('#') { "" } else { t };
        let (first, mut more) = cut_continuation(t, escape);
        if !more && first.is_empty() {
            continue;
        }
        let mut buf = first.to_string();
        let mut segs = Segments::default();
        segs.push(
            0,
            Pos {
                line: line_no,
                col: lead + 1,
            },
        );
        let mut end_line = line_no;
        while more && i < lines.len() {
            let r = lines[i];
            check_length(r, i + 1)?;
            i += 1;
            let rt = r.trim_end_matches(['\r', '\n']);
            end_line = i;
            if rt.trim_start().starts_with('#') {
                continue;
            }
            if rt.trim().is_empty() {
                warnings.push(Warning {
                    line: i,
                    message: "empty continuation line".into(),
                });
                continue;
            }
            let (piece, m) = cut_continuation(rt, escape);
            more = m;
            segs.push(buf.chars().count(), Pos { line: i, col: 1 });
            buf.push_str(piece);
        }
        let mut node = parse_line(&buf, escape, &segs)?;
        node.end_line = end_line;
        let wants_heredoc = |n: &Node| matches!(n.cmd.as_str(), "run" | "copy" | "add") && !n.json;
        let heredoc_target = if wants_heredoc(&node) {
            Some(&mut node)
        } else if node.cmd == "onbuild" && node.next.as_deref().map(wants_heredoc).unwrap_or(false)
        {
            node.next.as_deref_mut()
        } else {
            None
        };
        if let Some(target) = heredoc_target {
            if buf.contains("<<") {
                let bodies = read_heredocs(&lines, &mut i, &buf, &segs)?;
                target.heredocs = bodies;
                node.end_line = i;
            }
        }
        nodes.push(node);
    }
    if nodes.is_empty() {
        return Err(RawError::at(1, 1, "file with no instructions".into()));
    }
    Ok(RawDockerfile {
        nodes,
        directives,
        escape,
        warnings,
    })
}

/// A parser directive (`# escape=`, `# syntax=`, `# check=`): each at most once; `escape`
/// changes the escape character from the next line on.
fn add_directive(
    directives: &mut Vec<Directive>,
    escape: &mut char,
    key: String,
    value: String,
    line_no: usize,
) -> Result<(), RawError> {
    if directives.iter().any(|d| d.key == key) {
        return Err(RawError::at(
            line_no,
            1,
            format!("only one {key} parser directive can be used"),
        ));
    }
    if key == "escape" {
        *escape = match value.as_str() {
            "\\" => '\\',
            "`" => '`',
            v => {
                return Err(RawError::at(
                    line_no,
                    1,
                    format!("invalid escape token '{v}' does not match ` or \\"),
                ))
            }
        };
    }
    directives.push(Directive {
        key,
        value,
        line: line_no,
    });
    Ok(())
}

/// The bodies of the heredocs `buf` names, read from `lines` at `i` on (each up to its
/// terminator line, tabs stripped first for `<<-`).
fn read_heredocs(
    lines: &[&str],
    i: &mut usize,
    buf: &str,
    segs: &Segments,
) -> Result<Vec<Heredoc>, RawError> {
    let mut bodies = Vec::new();
    for (name, expand, chomp, fd) in heredoc_markers(buf) {
        let mut content = String::new();
        let mut terminated = false;
        while *i < lines.len() {
            let l = lines[*i];
            *i += 1;
            let cand = l.trim_end_matches(['\r', '\n']);
            let cand = if chomp {
                cand.trim_start_matches('\t')
            } else {
                cand
            };
            if cand == name {
                terminated = true;
                break;
            }
            content.push_str(l);
        }
        if !terminated {
            return Err(RawError::at(
                node_start_line(segs),
                1,
                format!(
                    "unterminated heredoc {name:?}: no line {name:?} before the end of the file"
                ),
            ));
        }
        bodies.push(Heredoc {
            name,
            content,
            expand,
            chomp,
            fd,
        });
    }
    Ok(bodies)
}

fn node_start_line(segs: &Segments) -> usize {
    segs.pos(0).line
}

fn check_length(line: &str, n: usize) -> Result<(), RawError> {
    if line.trim_end_matches('\n').len() > MAX_LINE {
        return Err(RawError::at(
            n,
            1,
            format!("dockerfile line greater than max allowed size of {MAX_LINE}"),
        ));
    }
    Ok(())
}

/// `# key=value` at the top of the file, for the known keys.
fn directive(t: &str) -> Option<(String, String)> {
    let body = t.strip_prefix('#')?.trim_start();
    let (key, value) = body.split_once('=')?;
    let key = key.trim_end();
    let value = value.trim();
    let mut k = key.chars();
    let first = k.next()?;
    if !first.is_ascii_alphabetic() || !k.all(|c| c.is_ascii_alphanumeric()) || value.is_empty() {
        return None;
    }
    let key = key.to_ascii_lowercase();
    matches!(key.as_str(), "syntax" | "escape" | "check").then(|| (key, value.to_string()))
}

/// Removes a trailing escape (and blanks after it): returns the text and whether the
/// instruction continues on the next line. A doubled escape is not a continuation.
fn cut_continuation(s: &str, e: char) -> (&str, bool) {
    let t = s.trim_end_matches([' ', '\t']);
    let Some(before) = t.strip_suffix(e) else {
        return (s, false);
    };
    if before.is_empty() {
        return ("", true);
    }
    if before.ends_with(e) {
        return (s, false);
    }
    (before, true)
}

fn is_blank(c: char) -> bool {
    matches!(c, '\t' | '\u{b}' | '\u{c}' | '\r' | ' ')
}

/// Parses one logical line into a node.
fn parse_line(buf: &str, escape: char, segs: &Segments) -> Result<Node, RawError> {
    let trimmed_start = buf.len() - buf.trim_start().len();
    let line = buf.trim();
    let (word, remainder, rem_off) = match line.find(is_blank) {
        Some(p) => {
            let after = &line[p..];
            let skip = after.len() - after.trim_start_matches(is_blank).len();
            (&line[..p], &line[p + skip..], trimmed_start + p + skip)
        }
        None => (line, "", trimmed_start + line.len()),
    };
    let ascii = buf.is_ascii();
    let char_off = |byte_off: usize| {
        let b = byte_off.min(buf.len());
        if ascii {
            b
        } else {
            buf[..b].chars().count()
        }
    };
    let start = segs.pos(char_off(trimmed_start));
    let (flags, rest_rel) = extract_flags(remainder, escape);
    let flags = flags
        .into_iter()
        .map(|(text, off)| RawFlag {
            text,
            pos: segs.pos(char_off(rem_off + off)),
        })
        .collect();
    let rest_raw = &remainder[rest_rel..];
    let rest_lead = rest_raw.len() - rest_raw.trim_start().len();
    let rest = rest_raw.trim();
    let rest_pos = segs.pos(char_off(rem_off + rest_rel + rest_lead));
    let cmd = word.to_lowercase();
    let mut node = Node {
        cmd: cmd.clone(),
        original_cmd: word.to_string(),
        flags,
        args: Vec::new(),
        json: false,
        next: None,
        heredocs: Vec::new(),
        start,
        end_line: start.line,
        rest_pos,
        original: line.to_string(),
    };
    let err = |m: String| RawError::at(rest_pos.line, rest_pos.col, m);
    match cmd.as_str() {
        "from" | "expose" => node.args = split_blanks(rest),
        "add" | "copy" | "volume" => match maybe_json(rest).map_err(err)? {
            Some(a) => {
                node.args = a;
                node.json = true;
            }
            None => node.args = split_blanks(rest),
        },
        "run" | "cmd" | "entrypoint" | "shell" => match maybe_json(rest).map_err(err)? {
            Some(a) => {
                node.args = a;
                node.json = true;
            }
            None => node.args = one_arg(rest),
        },
        "maintainer" | "user" | "workdir" | "stopsignal" => node.args = one_arg(rest),
        "env" | "label" => node.args = key_values(rest, &cmd, escape).map_err(err)?,
        "arg" => node.args = words(rest, escape),
        "healthcheck" => {
            if !rest.is_empty() {
                let (kind, after) = match rest.find(char::is_whitespace) {
                    Some(p) => (&rest[..p], rest[p..].trim()),
                    None => (rest, ""),
                };
                node.args.push(kind.to_string());
                match maybe_json(after).map_err(err)? {
                    Some(a) => {
                        node.args.extend(a);
                        node.json = true;
                    }
                    None => node.args.extend(one_arg(after)),
                }
            }
        }
        "onbuild" => {
            if !rest.is_empty() {
                let mut sub_segs = Segments::default();
                sub_segs.push(0, rest_pos);
                let child = parse_line(rest, escape, &sub_segs)?;
                node.next = Some(Box::new(child));
            }
        }
        _ => node.args = vec![String::new()],
    }
    Ok(node)
}

fn one_arg(rest: &str) -> Vec<String> {
    if rest.is_empty() {
        Vec::new()
    } else {
        vec![rest.to_string()]
    }
}

fn split_blanks(rest: &str) -> Vec<String> {
    rest.split(is_blank)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

/// A JSON array of strings, `None` when `rest` is not valid JSON (fall back to text), an error
/// when it is an array with non-string elements.
fn maybe_json(rest: &str) -> Result<Option<Vec<String>>, String> {
    let r = rest.trim_start();
    if !r.starts_with('[') {
        return Ok(None);
    }
    let Ok(serde_json::Value::Array(items)) = serde_json::from_str::<serde_json::Value>(r) else {
        return Ok(None);
    };
    items
        .into_iter()
        .map(|v| match v {
            serde_json::Value::String(s) => Ok(s),
            _ => Err(
                "when using JSON array syntax, arrays must be comprised of strings only"
                    .to_string(),
            ),
        })
        .collect::<Result<Vec<_>, _>>()
        .map(Some)
}

/// Reads leading `--flag` words. Returns the flags with their byte offsets and the offset
/// where the rest of the line begins.
fn extract_flags(line: &str, escape: char) -> (Vec<(String, usize)>, usize) {
    let mut flags = Vec::new();
    if !line.starts_with("--") {
        // The common case: no flags at all.
        return (flags, 0);
    }
    let mut it = line.char_indices().peekable();
    loop {
        while it.next_if(|(_, c)| c.is_whitespace()).is_some() {}
        let Some(&(word_start, first)) = it.peek() else {
            return (flags, line.len());
        };
        if first != '-' || !line[word_start..].starts_with("--") {
            return (flags, word_start);
        }
        let mut word = String::new();
        let mut blank_ok = false;
        let mut quote: Option<char> = None;
        let mut end = line.len();
        while let Some(&(at, c)) = it.peek() {
            if quote.is_none() && c.is_whitespace() {
                end = at;
                break;
            }
            it.next();
            match quote {
                None if c == '\'' || c == '"' => {
                    quote = Some(c);
                    blank_ok = true;
                }
                Some(q) if c == q => quote = None,
                _ if c == escape => match it.next() {
                    Some((_, n)) => word.push(n),
                    None => quote = None,
                },
                _ => word.push(c),
            }
        }
        if word == "--" {
            return (flags, end);
        }
        if blank_ok || !word.is_empty() {
            flags.push((word, word_start));
        }
    }
}

/// The word rule for ENV, LABEL and ARG: split on whitespace outside quotes, keeping quotes
/// and escapes in the words.
pub(crate) fn words(rest: &str, escape: char) -> Vec<String> {
    let mut out = Vec::new();
    let mut word = String::new();
    let mut in_word = false;
    let mut quote: Option<char> = None;
    let mut chars = rest.chars().peekable();
    while let Some(c) = chars.next() {
        match quote {
            None if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            None if c == escape => {
                if let Some(n) = chars.next() {
                    word.push(c);
                    word.push(n);
                    in_word = true;
                }
            }
            None if c == '\'' || c == '"' => {
                quote = Some(c);
                word.push(c);
                in_word = true;
            }
            Some('"') if c == escape => {
                word.push(c);
                if let Some(n) = chars.next() {
                    word.push(n);
                }
            }
            Some(q) if c == q => {
                quote = None;
                word.push(c);
            }
            _ => {
                word.push(c);
                in_word = true;
            }
        }
    }
    if in_word {
        out.push(word);
    }
    out
}

/// ENV/LABEL arguments as (key, value, separator) triples.
fn key_values(rest: &str, cmd: &str, escape: char) -> Result<Vec<String>, String> {
    let ws = words(rest, escape);
    let Some(first) = ws.first() else {
        return Ok(Vec::new());
    };
    let upper = cmd.to_uppercase();
    if !first.contains('=') {
        let parts: Vec<&str> = rest.splitn(2, is_blank).collect();
        let value = parts
            .get(1)
            .map(|v| v.trim_start_matches(is_blank))
            .unwrap_or("");
        if parts.len() < 2 || value.is_empty() {
            return Err(format!("{upper} must have two arguments"));
        }
        return Ok(vec![parts[0].to_string(), value.to_string(), String::new()]);
    }
    let mut out = Vec::new();
    for w in ws {
        let Some((k, v)) = w.split_once('=') else {
            return Err(format!(
                "Syntax error - can't find = in {w:?}. Must be of the form: name=value"
            ));
        };
        out.extend([k.to_string(), v.to_string(), "=".to_string()]);
    }
    Ok(out)
}

/// Heredoc markers in a line: (name, expand, chomp, fd), in order.
fn heredoc_markers(line: &str) -> Vec<(String, bool, bool, u32)> {
    let raw = Lexer {
        escape: '\\',
        raw_quotes: true,
        skip_unset: true,
    };
    let env: Vec<(String, String)> = Vec::new();
    let Ok(ws) = raw.process_words(line, &env) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut seen = BTreeSet::new();
    for w in ws {
        let Some(m) = crate::grammar::heredoc_marker(&w) else {
            continue;
        };
        // The delimiter must be one word.
        let Ok(parts) = raw.process_words(&m.delimiter, &env) else {
            continue;
        };
        if parts.len() != 1 {
            continue;
        }
        let plain = Lexer::default();
        let Ok(name) = plain.process_word(&m.delimiter, &env).map(|e| e.value) else {
            continue;
        };
        let raw_form = raw
            .process_word(&m.delimiter, &env)
            .map(|e| e.value)
            .unwrap_or_default();
        let unquoted_raw = Lexer {
            raw_quotes: false,
            ..raw
        }
        .process_word(&m.delimiter, &env)
        .map(|e| e.value)
        .unwrap_or_default();
        let expand = raw_form == unquoted_raw;
        seen.insert(name.clone());
        out.push((name, expand, m.chomp, m.fd));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_rules() {
        assert_eq!(cut_continuation("a \\  ", '\\'), ("a ", true));
        assert_eq!(cut_continuation("a\\\\", '\\'), ("a\\\\", false));
        assert_eq!(cut_continuation("\\", '\\'), ("", true));
        assert_eq!(cut_continuation("a", '\\'), ("a", false));
    }

    #[test]
    fn flags_are_extracted() {
        let (f, rest) = extract_flags("--a=1 --b=\"x y\" -- foo", '\\');
        assert_eq!(
            f.iter().map(|x| x.0.as_str()).collect::<Vec<_>>(),
            vec!["--a=1", "--b=x y"]
        );
        assert_eq!("--a=1 --b=\"x y\" -- foo"[rest..].trim(), "foo");
    }

    #[test]
    fn heredocs_are_consumed() {
        let df =
            "FROM x\nRUN <<EOF cat <<-'END'\necho $HOME\nEOF\n\tinside\n\tEND\nRUN echo done\n";
        let r = parse(df).unwrap();
        assert_eq!(r.nodes.len(), 3);
        let h = &r.nodes[1].heredocs;
        assert_eq!(h.len(), 2);
        assert_eq!(h[0].name, "EOF");
        assert_eq!(h[0].content, "echo $HOME\n");
        assert!(h[0].expand);
        assert_eq!(h[1].name, "END");
        assert!(!h[1].expand && h[1].chomp);
        assert_eq!(h[1].content, "\tinside\n");
        assert_eq!(r.nodes[1].end_line, 6);
        assert!(parse("FROM x\nRUN <<EOF\nno end\n").is_err());
    }
}
