//! Go `text/template` syntax: text and `{{ }}` actions (with `{{-`/`-}}` trimming and
//! `{{/* */}}` comments) become a tree of [`Node`]s. Actions are pipelines of commands, with
//! variable declarations, and the `if`/`range`/`with` (`else`, `else if`, `else with`),
//! `break` and `continue` control structures.

use anyhow::{anyhow, bail, Result};

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub enum Node {
    Text(String),
    /// `{{pipeline}}`: its value is printed unless it declares variables.
    Action(Pipe),
    /// `if`/`with`: (condition, body) in order, then the `else` body.
    If {
        with: bool,
        branches: Vec<(Pipe, Vec<Node>)>,
        otherwise: Vec<Node>,
    },
    Range {
        pipe: Pipe,
        body: Vec<Node>,
        otherwise: Vec<Node>,
    },
    Break,
    Continue,
}

/// `$a, $b := cmd | cmd ...`
#[derive(Debug, Clone, PartialEq)]
pub struct Pipe {
    pub decl: Vec<String>,
    /// `=` (assign to existing variables) rather than `:=`.
    pub assign: bool,
    pub cmds: Vec<Vec<Operand>>,
}

/// One word of a command.
#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    /// `.A.B` (empty: `.`).
    Field(Vec<String>),
    /// `$x.A.B` (`$` is the name of the root).
    Var(String, Vec<String>),
    /// A function name.
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
    Nil,
    /// `(pipeline).A.B`
    Sub(Box<Pipe>, Vec<String>),
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Field(Vec<String>),
    Var(String, Vec<String>),
    Ident(String),
    Str(String),
    Int(i64),
    Float(f64),
    Pipe,
    LParen,
    RParen,
    /// Fields after a `)`: `(...).A.B`.
    Fields(Vec<String>),
    Declare,
    Assign,
    Comma,
}

/// Parses `src` into nodes.
pub fn parse(src: &str) -> Result<Vec<Node>> {
    let items = split_actions(src)?;
    let mut p = Parser { items, pos: 0 };
    let (nodes, end) = p.nodes()?;
    match end {
        None => Ok(nodes),
        Some(e) => bail!("template: unexpected {{{{{e}}}}}"),
    }
}

/// Text or the tokens of one action.
enum Item {
    Text(String),
    Action(Vec<Tok>),
}

/// Splits the source into text and actions, applying trim markers and dropping comments.
fn split_actions(src: &str) -> Result<Vec<Item>> {
    let mut items = Vec::new();
    let mut rest = src;
    let mut trim_next = false;
    while let Some(start) = rest.find("{{") {
        let mut text = &rest[..start];
        if trim_next {
            text = text.trim_start();
        }
        let mut inner = &rest[start + 2..];
        if inner.starts_with("- ") || inner.starts_with("-\t") || inner.starts_with("-\n") {
            text = text.trim_end();
            inner = &inner[1..];
        }
        if !text.is_empty() {
            items.push(Item::Text(text.to_string()));
        }
        let trimmed = inner.trim_start();
        let (body, after) = if trimmed.starts_with("/*") {
            let close = trimmed
                .find("*/")
                .ok_or_else(|| anyhow!("template: unclosed comment"))?;
            let after = trimmed[close + 2..].trim_start();
            (None, after)
        } else {
            let (toks, after) = lex(inner)?;
            (Some(toks), after)
        };
        let after = after
            .strip_prefix("}}")
            .map(|a| (a, false))
            .or_else(|| after.strip_prefix("-}}").map(|a| (a, true)));
        let Some((after, trim)) = after else {
            bail!("template: unclosed action");
        };
        if let Some(t) = body {
            items.push(Item::Action(t));
        }
        trim_next = trim;
        rest = after;
    }
    let text = if trim_next { rest.trim_start() } else { rest };
    if !text.is_empty() {
        items.push(Item::Text(text.to_string()));
    }
    Ok(items)
}

/// Lexes one action up to its closing delimiter (` -}}` or `}}`); returns the tokens and the
/// text from the delimiter on.
fn lex(s: &str) -> Result<(Vec<Tok>, &str)> {
    let mut toks = Vec::new();
    let b = s.as_bytes();
    let mut i = 0;
    loop {
        while i < b.len() && (b[i] == b' ' || b[i] == b'\t' || b[i] == b'\n' || b[i] == b'\r') {
            // ` -}}`: whitespace, then the trim marker.
            if s[i..].starts_with(" -}}")
                || s[i..].starts_with("\t-}}")
                || s[i..].starts_with("\n-}}")
            {
                return Ok((toks, &s[i + 1..]));
            }
            i += 1;
        }
        if i >= b.len() {
            bail!("template: unclosed action");
        }
        if s[i..].starts_with("}}") {
            return Ok((toks, &s[i..]));
        }
        let c = b[i];
        match c {
            b'|' => {
                toks.push(Tok::Pipe);
                i += 1;
            }
            b'(' => {
                toks.push(Tok::LParen);
                i += 1;
            }
            b')' => {
                toks.push(Tok::RParen);
                i += 1;
                let (fields, n) = fields_at(&s[i..]);
                if !fields.is_empty() {
                    toks.push(Tok::Fields(fields));
                    i += n;
                }
            }
            b',' => {
                toks.push(Tok::Comma);
                i += 1;
            }
            b':' if s[i..].starts_with(":=") => {
                toks.push(Tok::Declare);
                i += 2;
            }
            b'=' => {
                toks.push(Tok::Assign);
                i += 1;
            }
            b'"' => {
                let (v, n) = quoted(&s[i..])?;
                toks.push(Tok::Str(v));
                i += n;
            }
            b'`' => {
                let end = s[i + 1..]
                    .find('`')
                    .ok_or_else(|| anyhow!("template: unterminated raw string"))?;
                toks.push(Tok::Str(s[i + 1..i + 1 + end].to_string()));
                i += end + 2;
            }
            b'\'' => {
                let (v, n) = quoted(&s[i..])?;
                let ch = v
                    .chars()
                    .next()
                    .ok_or_else(|| anyhow!("template: empty character constant"))?;
                toks.push(Tok::Int(ch as i64));
                i += n;
            }
            b'.' if !s[i + 1..].starts_with(|c: char| c.is_ascii_digit()) => {
                let (fields, n) = fields_at(&s[i..]);
                toks.push(Tok::Field(fields));
                i += n.max(1);
            }
            b'$' => {
                let n = ident_len(&s[i + 1..]);
                let name = format!("${}", &s[i + 1..i + 1 + n]);
                i += 1 + n;
                let (fields, m) = fields_at(&s[i..]);
                i += m;
                toks.push(Tok::Var(name, fields));
            }
            b'-' | b'+' | b'0'..=b'9' | b'.' => {
                let n = s[i..]
                    .find(|c: char| !(c.is_ascii_alphanumeric() || "+-._".contains(c)))
                    .unwrap_or(s.len() - i);
                toks.push(number(&s[i..i + n])?);
                i += n;
            }
            _ if c.is_ascii_alphabetic() || c == b'_' => {
                let n = ident_len(&s[i..]);
                toks.push(Tok::Ident(s[i..i + n].to_string()));
                i += n;
                let (fields, m) = fields_at(&s[i..]);
                if !fields.is_empty() {
                    bail!("template: unexpected field access after {}", &s[i - n..i]);
                }
                i += m;
            }
            _ => bail!("template: unexpected {:?} in action", c as char),
        }
    }
}

fn ident_len(s: &str) -> usize {
    s.find(|c: char| !(c.is_alphanumeric() || c == '_'))
        .unwrap_or(s.len())
}

/// `.A.B` at the start of `s` (a lone `.` gives no fields); the fields and bytes taken.
fn fields_at(s: &str) -> (Vec<String>, usize) {
    let mut fields = Vec::new();
    let mut i = 0;
    while s[i..].starts_with('.') {
        let n = ident_len(&s[i + 1..]);
        if n == 0 {
            return (fields, i + 1);
        }
        fields.push(s[i + 1..i + 1 + n].to_string());
        i += 1 + n;
    }
    (fields, i)
}

/// A Go quoted string or character at the start of `s`; its value and length.
fn quoted(s: &str) -> Result<(String, usize)> {
    let q = s.chars().next().expect("a quote");
    let mut out = String::new();
    let mut chars = s.char_indices().skip(1);
    while let Some((i, c)) = chars.next() {
        match c {
            c if c == q => return Ok((out, i + 1)),
            '\\' => {
                let (_, e) = chars
                    .next()
                    .ok_or_else(|| anyhow!("template: unterminated quoted string"))?;
                out.push(match e {
                    'n' => '\n',
                    't' => '\t',
                    'r' => '\r',
                    '0' => '\0',
                    other => other,
                });
            }
            '\n' => bail!("template: unterminated quoted string"),
            c => out.push(c),
        }
    }
    bail!("template: unterminated quoted string")
}

fn number(s: &str) -> Result<Tok> {
    let clean = s.replace('_', "");
    let (neg, digits) = match clean.strip_prefix('-') {
        Some(d) => (true, d.to_string()),
        None => (false, clean.trim_start_matches('+').to_string()),
    };
    let int = if let Some(h) = digits
        .strip_prefix("0x")
        .or_else(|| digits.strip_prefix("0X"))
    {
        i64::from_str_radix(h, 16).ok()
    } else {
        digits.parse::<i64>().ok()
    };
    if let Some(n) = int {
        return Ok(Tok::Int(if neg { -n } else { n }));
    }
    clean
        .parse::<f64>()
        .map(Tok::Float)
        .map_err(|_| anyhow!("template: bad number syntax: {s:?}"))
}

struct Parser {
    items: Vec<Item>,
    pos: usize,
}

impl Parser {
    /// Nodes up to an `end`, `else`... keyword action (returned, with its tokens), or the end.
    fn nodes(&mut self) -> Result<(Vec<Node>, Option<String>)> {
        let mut out = Vec::new();
        while self.pos < self.items.len() {
            let item = std::mem::replace(&mut self.items[self.pos], Item::Text(String::new()));
            self.pos += 1;
            let toks = match item {
                Item::Text(t) => {
                    out.push(Node::Text(t));
                    continue;
                }
                Item::Action(t) => t,
            };
            match toks.first() {
                Some(Tok::Ident(k)) if k == "end" && toks.len() == 1 => {
                    return Ok((out, Some("end".into())))
                }
                Some(Tok::Ident(k)) if k == "else" => {
                    // Keep the rest (`else if ...`) for the caller.
                    self.pos -= 1;
                    self.items[self.pos] = Item::Action(toks);
                    return Ok((out, Some("else".into())));
                }
                Some(Tok::Ident(k)) if k == "if" || k == "with" => {
                    out.push(self.conditional(k == "with", &toks[1..])?)
                }
                Some(Tok::Ident(k)) if k == "range" => out.push(self.range(&toks[1..])?),
                Some(Tok::Ident(k)) if k == "break" && toks.len() == 1 => out.push(Node::Break),
                Some(Tok::Ident(k)) if k == "continue" && toks.len() == 1 => {
                    out.push(Node::Continue)
                }
                Some(Tok::Ident(k)) if k == "define" || k == "template" || k == "block" => {
                    bail!("template: {k} is not supported")
                }
                _ => out.push(Node::Action(pipe(&toks)?)),
            }
        }
        Ok((out, None))
    }

    /// The tokens of the pending `else` action (consumed).
    fn take_else(&mut self) -> Vec<Tok> {
        let item = std::mem::replace(&mut self.items[self.pos], Item::Text(String::new()));
        self.pos += 1;
        match item {
            Item::Action(t) => t,
            Item::Text(_) => unreachable!("an else action was left"),
        }
    }

    fn conditional(&mut self, with: bool, cond: &[Tok]) -> Result<Node> {
        let mut branches = vec![(pipe(cond)?, Vec::new())];
        loop {
            let (body, end) = self.nodes()?;
            branches.last_mut().expect("one branch").1 = body;
            match end.as_deref() {
                Some("end") => {
                    return Ok(Node::If {
                        with,
                        branches,
                        otherwise: Vec::new(),
                    })
                }
                Some("else") => {
                    let toks = self.take_else();
                    let chained = matches!(toks.get(1), Some(Tok::Ident(k)) if (k == "if" && !with) || (k == "with" && with));
                    if chained {
                        branches.push((pipe(&toks[2..])?, Vec::new()));
                        continue;
                    }
                    if toks.len() != 1 {
                        bail!("template: unexpected tokens after else");
                    }
                    let (otherwise, end) = self.nodes()?;
                    if end.as_deref() != Some("end") {
                        bail!("template: missing {{{{end}}}}");
                    }
                    return Ok(Node::If {
                        with,
                        branches,
                        otherwise,
                    });
                }
                _ => bail!("template: missing {{{{end}}}}"),
            }
        }
    }

    fn range(&mut self, toks: &[Tok]) -> Result<Node> {
        let pipe = pipe(toks)?;
        let (body, end) = self.nodes()?;
        let otherwise = match end.as_deref() {
            Some("end") => Vec::new(),
            Some("else") => {
                if self.take_else().len() != 1 {
                    bail!("template: unexpected tokens after else");
                }
                let (o, end) = self.nodes()?;
                if end.as_deref() != Some("end") {
                    bail!("template: missing {{{{end}}}}");
                }
                o
            }
            _ => bail!("template: missing {{{{end}}}}"),
        };
        Ok(Node::Range {
            pipe,
            body,
            otherwise,
        })
    }
}

/// A pipeline from its tokens (declarations first, if any).
fn pipe(toks: &[Tok]) -> Result<Pipe> {
    let mut decl = Vec::new();
    let mut assign = false;
    let mut rest = toks;
    // `$x :=`, `$x =`, `$i, $e :=`
    let mut i = 0;
    let mut names = Vec::new();
    while let Some(Tok::Var(name, fields)) = rest.get(i) {
        if !fields.is_empty() {
            break;
        }
        names.push(name.clone());
        match rest.get(i + 1) {
            Some(Tok::Comma) => i += 2,
            Some(Tok::Declare) | Some(Tok::Assign) => {
                assign = rest[i + 1] == Tok::Assign;
                decl = std::mem::take(&mut names);
                rest = &rest[i + 2..];
                break;
            }
            _ => break,
        }
    }
    let mut cmds = Vec::new();
    let mut cmd = Vec::new();
    let mut j = 0;
    while j < rest.len() {
        match &rest[j] {
            Tok::Pipe => {
                if cmd.is_empty() {
                    bail!("template: missing command in pipeline");
                }
                cmds.push(std::mem::take(&mut cmd));
            }
            Tok::LParen => {
                let close = matching_paren(rest, j)?;
                let inner = pipe(&rest[j + 1..close])?;
                let (fields, next) = match rest.get(close + 1) {
                    Some(Tok::Fields(f)) => (f.clone(), close + 2),
                    _ => (Vec::new(), close + 1),
                };
                cmd.push(Operand::Sub(Box::new(inner), fields));
                j = next;
                continue;
            }
            Tok::RParen => bail!("template: unexpected )"),
            Tok::Field(f) => cmd.push(Operand::Field(f.clone())),
            Tok::Var(n, f) => cmd.push(Operand::Var(n.clone(), f.clone())),
            Tok::Ident(k) => cmd.push(match k.as_str() {
                "true" => Operand::Bool(true),
                "false" => Operand::Bool(false),
                "nil" => Operand::Nil,
                _ => Operand::Ident(k.clone()),
            }),
            Tok::Str(s) => cmd.push(Operand::Str(s.clone())),
            Tok::Int(n) => cmd.push(Operand::Int(*n)),
            Tok::Float(n) => cmd.push(Operand::Float(*n)),
            Tok::Fields(_) | Tok::Declare | Tok::Assign | Tok::Comma => {
                bail!("template: unexpected token in pipeline")
            }
        }
        j += 1;
    }
    if cmd.is_empty() {
        bail!("template: missing value for command");
    }
    cmds.push(cmd);
    Ok(Pipe { decl, assign, cmds })
}

fn matching_paren(toks: &[Tok], open: usize) -> Result<usize> {
    let mut depth = 0;
    for (k, t) in toks.iter().enumerate().skip(open) {
        match t {
            Tok::LParen => depth += 1,
            Tok::RParen => {
                depth -= 1;
                if depth == 0 {
                    return Ok(k);
                }
            }
            _ => {}
        }
    }
    bail!("template: unclosed left paren")
}
