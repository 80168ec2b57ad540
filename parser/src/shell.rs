//! The shell-word expander: BuildKit's variable-expansion lexer for Dockerfile values.
//!
//! `$A`, `${A}`, `${A:-x}`, `${A-x}`, `${A:+x}`, `${A+x}`, `${A:?x}`, `${A?x}`, `${A#p}`,
//! `${A##p}`, `${A%p}`, `${A%%p}`, `${A/p/r}`, `${A//p/r}`, single and double quotes and the
//! escape character, exactly as the Dockerfile frontend does it (see
//! `tests/data/buildkit-shell/FORMAT.md`). It also reports which variables were
//! looked up and set (`matched`) or unset (`unmatched`).

use std::collections::BTreeSet;

/// Why an expansion failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct ShellError(pub String);

/// Variable lookup.
pub trait Env {
    fn lookup(&self, name: &str) -> Option<String>;
}

impl Env for [(String, String)] {
    fn lookup(&self, name: &str) -> Option<String> {
        self.iter()
            .rev()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
}

impl Env for Vec<(String, String)> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.as_slice().lookup(name)
    }
}

impl Env for std::collections::BTreeMap<String, String> {
    fn lookup(&self, name: &str) -> Option<String> {
        self.get(name).cloned()
    }
}

/// The result of expanding one word.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Expansion {
    pub value: String,
    /// Variables looked up that were set.
    pub matched: BTreeSet<String>,
    /// Variables looked up that were unset.
    pub unmatched: BTreeSet<String>,
}

/// The expander's settings.
#[derive(Debug, Clone, Copy)]
pub struct Lexer {
    pub escape: char,
    /// Keep quote characters in the output (heredoc detection).
    pub raw_quotes: bool,
    /// Leave unset variables exactly as written (heredoc detection).
    pub skip_unset: bool,
}

impl Default for Lexer {
    fn default() -> Self {
        Lexer {
            escape: '\\',
            raw_quotes: false,
            skip_unset: false,
        }
    }
}

impl Lexer {
    pub fn new(escape: char) -> Self {
        Lexer {
            escape,
            ..Default::default()
        }
    }

    /// Expands, removes quotes and processes escapes; no field splitting.
    pub fn process_word(&self, s: &str, env: &dyn Env) -> Result<Expansion, ShellError> {
        let mut w = Word::new(self, s, env);
        let (value, _) = w.process_until(&[], false)?;
        Ok(Expansion {
            value,
            matched: w.matched,
            unmatched: w.unmatched,
        })
    }

    /// The same, then split into fields like a shell would (quoted parts never split).
    pub fn process_words(&self, s: &str, env: &dyn Env) -> Result<Vec<String>, ShellError> {
        let mut w = Word::new(self, s, env);
        let (_, words) = w.process_until(&[], false)?;
        Ok(words)
    }
}

/// Field builder.
#[derive(Default)]
struct Fields {
    words: Vec<String>,
    word: String,
    in_word: bool,
}

impl Fields {
    fn add_char(&mut self, c: char) {
        if c.is_whitespace() {
            if self.in_word && !self.word.is_empty() {
                self.words.push(std::mem::take(&mut self.word));
                self.in_word = false;
            }
        } else {
            self.add_raw_char(c);
        }
    }
    fn add_raw_char(&mut self, c: char) {
        self.word.push(c);
        self.in_word = true;
    }
    fn add_str(&mut self, s: &str) {
        for c in s.chars() {
            self.add_char(c);
        }
    }
    fn add_raw_str(&mut self, s: &str) {
        self.word.push_str(s);
        self.in_word = !self.word.is_empty();
    }
    fn finish(mut self) -> Vec<String> {
        if self.in_word {
            self.words.push(std::mem::take(&mut self.word));
        }
        self.words
    }
}

struct Word<'a> {
    lx: &'a Lexer,
    chars: Vec<char>,
    pos: usize,
    env: &'a dyn Env,
    raw_escapes: bool,
    matched: BTreeSet<String>,
    unmatched: BTreeSet<String>,
    /// Bytes of variable values substituted so far.
    substituted: usize,
}

/// The most variable values one word may substitute (1 MiB: far above what any environment
/// variable can carry into a process, 128 KiB each on Linux).
pub const MAX_EXPANSION: usize = 1 << 20;

fn err<T>(m: impl Into<String>) -> Result<T, ShellError> {
    Err(ShellError(m.into()))
}

impl<'a> Word<'a> {
    fn new(lx: &'a Lexer, s: &str, env: &'a dyn Env) -> Self {
        Word {
            lx,
            chars: s.chars().collect(),
            pos: 0,
            env,
            raw_escapes: false,
            matched: BTreeSet::new(),
            unmatched: BTreeSet::new(),
            substituted: 0,
        }
    }

    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }
    fn peek_at(&self, n: usize) -> Option<char> {
        self.chars.get(self.pos + n).copied()
    }
    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    fn get_env(&mut self, name: &str) -> Result<Option<String>, ShellError> {
        let v = self.env.lookup(name);
        match &v {
            Some(value) => {
                self.matched.insert(name.to_string());
                // Values substituted are what can grow a word without bound (ARGs that each
                // double the one before); what the text adds is bounded by the text.
                self.substituted += value.len();
                if self.substituted > MAX_EXPANSION {
                    return err(format!(
                        "variable expansion exceeds {} MiB (at ${name})",
                        MAX_EXPANSION >> 20
                    ));
                }
            }
            None => {
                self.unmatched.insert(name.to_string());
            }
        }
        Ok(v)
    }

    /// Processes until one of `stops` (consumed) or the end; `raw_escapes` keeps escape
    /// characters in the output (for patterns).
    fn process_until(
        &mut self,
        stops: &[char],
        raw_escapes: bool,
    ) -> Result<(String, Vec<String>), ShellError> {
        let saved = self.raw_escapes;
        self.raw_escapes = raw_escapes;
        let r = self.process_until_inner(stops);
        self.raw_escapes = saved;
        r
    }

    /// The word up to `stop` inside `${...}`; when the text ends before it, `missing` is the
    /// error rather than what the word's own parse said.
    fn word_until(&mut self, stop: char, raw: bool, missing: &str) -> Result<String, ShellError> {
        match self.process_until(&[stop], raw) {
            Ok((w, _)) => Ok(w),
            Err(_) if self.peek().is_none() => err(missing),
            Err(e) => Err(e),
        }
    }

    fn process_until_inner(&mut self, stops: &[char]) -> Result<(String, Vec<String>), ShellError> {
        let mut result = String::new();
        let mut fields = Fields::default();
        while let Some(c) = self.peek() {
            if stops.contains(&c) {
                self.next();
                return Ok((result, fields.finish()));
            }
            match c {
                '\'' => {
                    let s = self.single_quote()?;
                    result.push_str(&s);
                    fields.add_raw_str(&s);
                }
                '"' => {
                    let s = self.double_quote()?;
                    result.push_str(&s);
                    fields.add_raw_str(&s);
                }
                '$' => {
                    let s = self.dollar()?;
                    result.push_str(&s);
                    fields.add_str(&s);
                }
                '<' if self.peek_at(1) == Some('<') => {
                    // `<<` and the blanks after it stay one chunk, for heredoc detection.
                    let mut s = String::from("<<");
                    self.pos += 2;
                    while let Some(b @ (' ' | '\t')) = self.peek() {
                        s.push(b);
                        self.pos += 1;
                    }
                    result.push_str(&s);
                    fields.add_raw_str(&s);
                }
                _ => {
                    self.next();
                    if c == self.lx.escape {
                        if self.raw_escapes {
                            fields.add_raw_char(c);
                            result.push(c);
                        }
                        match self.next() {
                            None => break,
                            Some(e) => {
                                fields.add_raw_char(e);
                                result.push(e);
                            }
                        }
                    } else {
                        fields.add_char(c);
                        result.push(c);
                    }
                }
            }
        }
        if let Some(s) = stops.first() {
            return err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        Ok((result, fields.finish()))
    }

    fn single_quote(&mut self) -> Result<String, ShellError> {
        let mut out = String::new();
        self.next();
        if self.lx.raw_quotes {
            out.push('\'');
        }
        loop {
            match self.next() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching single-quote",
                    )
                }
                Some('\'') => {
                    if self.lx.raw_quotes {
                        out.push('\'');
                    }
                    return Ok(out);
                }
                Some(c) => out.push(c),
            }
        }
    }

    fn double_quote(&mut self) -> Result<String, ShellError> {
        let mut out = String::new();
        self.next();
        if self.lx.raw_quotes {
            out.push('"');
        }
        loop {
            match self.peek() {
                None => {
                    return err(
                        "unexpected end of statement while looking for matching double-quote",
                    )
                }
                Some('"') => {
                    self.next();
                    if self.lx.raw_quotes {
                        out.push('"');
                    }
                    return Ok(out);
                }
                Some('$') => {
                    let s = self.dollar()?;
                    out.push_str(&s);
                }
                Some(_) => {
                    let mut c = self.next().expect("peeked");
                    if c == self.lx.escape {
                        match self.peek() {
                            None => continue,
                            Some(n) if n == '"' || n == '$' || n == self.lx.escape => {
                                if self.raw_escapes {
                                    out.push(c);
                                }
                                c = self.next().expect("peeked");
                            }
                            Some(_) => {}
                        }
                    }
                    out.push(c);
                }
            }
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek() {
            if name.is_empty() && c.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    name.push(d);
                    self.next();
                }
                return name;
            }
            if name.is_empty() && matches!(c, '@' | '*' | '#' | '?' | '-' | '$' | '!' | '0') {
                self.next();
                return c.to_string();
            }
            if !c.is_alphanumeric() && c != '_' {
                break;
            }
            name.push(c);
            self.next();
        }
        name
    }

    fn dollar(&mut self) -> Result<String, ShellError> {
        self.next(); // $
        if self.peek() != Some('{') {
            let name = self.name();
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(match self.get_env(&name)? {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${name}"),
                None => String::new(),
            });
        }
        self.next(); // {
        match self.peek() {
            None => return err("syntax error: missing '}'"),
            Some('{' | '}' | ':') => return err("syntax error: bad substitution"),
            _ => {}
        }
        let name = self.name();
        let Some(op) = self.next() else {
            return err("syntax error: missing '}'");
        };
        let ops = op.to_string();
        match op {
            '}' => Ok(match self.get_env(&name)? {
                Some(v) => v,
                None if self.lx.skip_unset => format!("${{{name}}}"),
                None => String::new(),
            }),
            ':' | '+' | '-' | '?' | '#' | '%' => self.modifier(&name, op, ops),
            '/' => self.replacement(&name),
            _ => err(format!("unsupported modifier ({ops}) in substitution")),
        }
    }

    /// `${NAME:-WORD}`, `${NAME+WORD}`, `${NAME?WORD}`, `${NAME#PAT}`, `${NAME%PAT}` (and
    /// their `:` and doubled forms), `op` and `ops` as read so far.
    fn modifier(
        &mut self,
        name: &str,
        mut op: char,
        mut ops: String,
    ) -> Result<String, ShellError> {
        let null_is_unset = op == ':';
        if null_is_unset {
            match self.next() {
                Some(c) => {
                    op = c;
                    ops.push(c);
                }
                None => return err("syntax error: missing '}'"),
            }
        }
        if !matches!(op, '+' | '-' | '?' | '#' | '%') {
            return err(format!("unsupported modifier ({ops}) in substitution"));
        }
        let raw = op == '#' || op == '%';
        if null_is_unset && raw {
            return err(format!("unsupported modifier ({ops}) in substitution"));
        }
        let word = self.word_until('}', raw, "syntax error: missing '}'")?;
        let value = self.get_env(name)?;
        if self.lx.skip_unset && value.is_none() {
            return Ok(format!("${{{name}{ops}{word}}}"));
        }
        let empty = value.as_deref().map(str::is_empty).unwrap_or(true);
        match op {
            '-' => Ok(if value.is_none() || (null_is_unset && empty) {
                word
            } else {
                value.unwrap_or_default()
            }),
            '+' => Ok(if value.is_none() || (null_is_unset && empty) {
                String::new()
            } else {
                word
            }),
            '?' => match value {
                None => err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be unset"
                    } else {
                        &word
                    }
                )),
                Some(v) if null_is_unset && v.is_empty() => err(format!(
                    "{name}: {}",
                    if word.is_empty() {
                        "is not allowed to be empty"
                    } else {
                        &word
                    }
                )),
                Some(v) => Ok(v),
            },
            _ => {
                let (greedy, pat) = match word.strip_prefix(op) {
                    Some(rest) => (true, rest.to_string()),
                    None => (false, word),
                };
                let v = value.unwrap_or_default();
                if op == '%' {
                    trim_suffix(&pat, &v, greedy)
                } else {
                    trim_prefix(&pat, &v, greedy)
                }
            }
        }
    }

    /// `${NAME/PAT/REPL}` and `${NAME//PAT/REPL}`.
    fn replacement(&mut self, name: &str) -> Result<String, ShellError> {
        let all = self.peek() == Some('/');
        if all {
            self.next();
        }
        let pattern = self.word_until('/', true, "syntax error: missing '/' in ${}")?;
        let replacement = self.word_until('}', true, "syntax error: missing '}'")?;
        let value = self.get_env(name)?;
        if self.lx.skip_unset && value.is_none() {
            return Ok(format!("${{{name}/{pattern}/{replacement}}}"));
        }
        let v = value.unwrap_or_default();
        let re = pattern_regex(&pattern, true, false)
            .map_err(|e| ShellError(format!("invalid pattern ({pattern}) in substitution: {e}")))?;
        if all {
            Ok(re
                .replace_all(&v, regex::NoExpand(&replacement))
                .into_owned())
        } else {
            Ok(re
                .replacen(&v, 1, regex::NoExpand(&replacement))
                .into_owned())
        }
    }
}

/// Converts a shell pattern (`*`, `?`, `\x`) to a regex; `anchored` pins it to the start.
fn pattern_regex(pattern: &str, greedy: bool, anchored: bool) -> Result<regex::Regex, String> {
    let mut re = String::from(if anchored { "^" } else { "" });
    let mut chars = pattern.chars();
    while let Some(c) = chars.next() {
        match c {
            '*' => re.push_str(if greedy { ".*" } else { ".*?" }),
            '?' => re.push('.'),
            '\\' => match chars.next() {
                Some(e @ ('*' | '?' | '\\')) => re.push_str(&regex::escape(&e.to_string())),
                Some(e @ ('}' | '/')) => re.push_str(&regex::escape(&e.to_string())),
                Some(e) => return Err(format!("invalid escape '\\{e}'")),
                None => return Err("trailing backslash".into()),
            },
            c => re.push_str(&regex::escape(&c.to_string())),
        }
    }
    regex::Regex::new(&re).map_err(|e| e.to_string())
}

fn trim_prefix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellError> {
    let re = pattern_regex(pattern, greedy, true)
        .map_err(|e| ShellError(format!("invalid pattern ({pattern}): {e}")))?;
    Ok(match re.find(value) {
        Some(m) => value[m.end()..].to_string(),
        None => value.to_string(),
    })
}

fn trim_suffix(pattern: &str, value: &str, greedy: bool) -> Result<String, ShellError> {
    let rev_value: String = value.chars().rev().collect();
    let rev_pattern = reverse_pattern(pattern);
    let re = pattern_regex(&rev_pattern, greedy, true)
        .map_err(|e| ShellError(format!("invalid pattern ({pattern}): {e}")))?;
    Ok(match re.find(&rev_value) {
        Some(m) => rev_value[m.end()..].chars().rev().collect(),
        None => value.to_string(),
    })
}

/// Reverses a pattern, keeping each `\x` escape pair in order.
fn reverse_pattern(p: &str) -> String {
    let mut units: Vec<String> = Vec::new();
    let mut chars = p.chars();
    while let Some(c) = chars.next() {
        if c == '\\' {
            let mut u = String::from('\\');
            if let Some(n) = chars.next() {
                u.push(n);
            }
            units.push(u);
        } else {
            units.push(c.to_string());
        }
    }
    units.into_iter().rev().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn basic_forms() {
        let e = env(&[("A", "x y"), ("E", "")]);
        let lx = Lexer::default();
        assert_eq!(lx.process_word("$A-${A}", &e).unwrap().value, "x y-x y");
        assert_eq!(lx.process_word("${E:-d}${U-u}", &e).unwrap().value, "du");
        assert_eq!(
            lx.process_words("a $A 'b c'", &e).unwrap(),
            vec!["a", "x", "y", "b c"]
        );
        assert!(lx
            .process_word("${U:?must be set}", &e)
            .unwrap_err()
            .0
            .contains("must be set"));
    }
}
