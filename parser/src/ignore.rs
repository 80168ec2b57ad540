//! The `.dockerignore` matcher (moby/patternmatcher semantics, not gitignore) and the ignore
//! file reader. Also used for `COPY --exclude`.

use std::path::Path;

/// How a pattern is tested.
#[derive(Debug, Clone)]
enum MatchKind {
    Exact(String),
    /// `dir/**`: the path starts with `dir/`.
    Prefix(String),
    /// `**/x`, `**x`: the path ends with the remainder.
    Suffix(String),
    Regex(regex::Regex),
}

/// One compiled pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    pub text: String,
    pub exclusion: bool,
    kind: MatchKind,
}

/// Why a pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("syntax error in pattern")]
    BadPattern,
    #[error("illegal exclusion pattern: \"!\"")]
    IllegalExclusion,
}

impl Pattern {
    /// Compiles one pattern; a leading `!` makes it an exception.
    pub fn new(p: &str) -> Result<Pattern, PatternError> {
        let (exclusion, body) = match p.strip_prefix('!') {
            Some(rest) => {
                if rest.is_empty() {
                    return Err(PatternError::IllegalExclusion);
                }
                (true, rest)
            }
            None => (false, p),
        };
        validate(body)?;
        Ok(Pattern {
            text: body.to_string(),
            exclusion,
            kind: compile(body)?,
        })
    }

    /// Whether the pattern matches `path` itself (no parent logic).
    pub fn matches(&self, path: &str) -> bool {
        match &self.kind {
            MatchKind::Exact(p) => path == p,
            MatchKind::Prefix(p) => path.starts_with(p.as_str()),
            MatchKind::Suffix(s) => {
                path.ends_with(s.as_str())
                    || s.strip_prefix('/').map(|r| path == r).unwrap_or(false)
            }
            MatchKind::Regex(r) => r.is_match(path),
        }
    }

    /// True when the pattern can only match paths under a fixed prefix, returned here.
    fn literal_prefix(&self) -> Option<&str> {
        match &self.kind {
            MatchKind::Exact(p) => Some(p),
            MatchKind::Prefix(p) => Some(p.trim_end_matches('/')),
            _ => None,
        }
    }
}

/// Go `filepath.Match` syntax rules: classes closed, ranges complete, no trailing escape.
fn validate(p: &str) -> Result<(), PatternError> {
    let c: Vec<char> = p.chars().collect();
    let mut i = 0;
    while i < c.len() {
        match c[i] {
            '\\' => {
                if i + 1 >= c.len() {
                    return Err(PatternError::BadPattern);
                }
                i += 2;
            }
            '[' => {
                i += 1;
                if c.get(i) == Some(&'^') {
                    i += 1;
                }
                let mut ranges = 0;
                loop {
                    match c.get(i) {
                        None => return Err(PatternError::BadPattern),
                        Some(']') if ranges > 0 => {
                            i += 1;
                            break;
                        }
                        _ => {}
                    }
                    let (lo, next) = class_char(&c, i)?;
                    i = next;
                    if c.get(i) == Some(&'-') {
                        let (hi, next) = class_char(&c, i + 1)?;
                        if hi < lo {
                            return Err(PatternError::BadPattern);
                        }
                        i = next;
                    }
                    ranges += 1;
                }
            }
            _ => i += 1,
        }
    }
    Ok(())
}

fn class_char(c: &[char], i: usize) -> Result<(char, usize), PatternError> {
    match c.get(i) {
        None | Some('-') | Some(']') => Err(PatternError::BadPattern),
        Some('\\') => c
            .get(i + 1)
            .map(|&x| (x, i + 2))
            .ok_or(PatternError::BadPattern),
        Some(&x) => Ok((x, i + 1)),
    }
}

fn compile(p: &str) -> Result<MatchKind, PatternError> {
    let c: Vec<char> = p.chars().collect();
    // Whether any wildcard, class or escape was seen (else the pattern is an exact path).
    let mut wild = false;
    let mut re = String::from("^");
    let mut i = 0;
    while i < c.len() {
        let ch = c[i];
        i += 1;
        match ch {
            '*' if c.get(i) == Some(&'*') => {
                i += 1;
                if c.get(i) == Some(&'/') {
                    i += 1;
                }
                // Plain `prefix/**` and `**/suffix` are recognised below, before the regex.
                re.push_str(if i >= c.len() { ".*" } else { "(.*/)?" });
                wild = true;
            }
            '*' => {
                re.push_str("[^/]*");
                wild = true;
            }
            '?' => {
                re.push_str("[^/]");
                wild = true;
            }
            '\\' => {
                if let Some(&n) = c.get(i) {
                    i += 1;
                    re.push_str(&regex::escape(&n.to_string()));
                    wild = true;
                }
            }
            '[' => {
                // A character class passes through as written (validated above); only what
                // Rust's class syntax would read as set operations is escaped.
                re.push('[');
                if c.get(i) == Some(&'^') {
                    re.push('^');
                    i += 1;
                }
                let mut first = true;
                while let Some(&x) = c.get(i) {
                    i += 1;
                    match x {
                        ']' if !first => break,
                        '\\' => {
                            if let Some(&e) = c.get(i) {
                                i += 1;
                                re.push_str(&regex::escape(&e.to_string()));
                            }
                        }
                        '[' | '&' | '~' => {
                            re.push('\\');
                            re.push(x);
                        }
                        x => re.push(x),
                    }
                    first = false;
                }
                re.push(']');
                wild = true;
            }
            ']' => {
                re.push_str("\\]");
                wild = true;
            }
            other => re.push_str(&regex::escape(&other.to_string())),
        }
    }
    // A pattern that starts with ** and has no other wildcard is a suffix test.
    let rest_has_wild = |s: &str| s.contains(['*', '?', '[', ']', '\\']);
    if let Some(rest) = p.strip_prefix("**") {
        if !rest_has_wild(rest) {
            return Ok(MatchKind::Suffix(rest.to_string()));
        }
    }
    if let Some(prefix) = p.strip_suffix("**") {
        if !rest_has_wild(prefix) {
            return Ok(MatchKind::Prefix(prefix.to_string()));
        }
    }
    if !wild {
        return Ok(MatchKind::Exact(p.to_string()));
    }
    re.push('$');
    regex::Regex::new(&re)
        .map(MatchKind::Regex)
        .map_err(|_| PatternError::BadPattern)
}

/// An ordered list of patterns where the last match wins and parents count.
#[derive(Debug, Clone, Default)]
pub struct Matcher {
    patterns: Vec<Pattern>,
}

impl Matcher {
    pub fn new<S: AsRef<str>>(patterns: &[S]) -> Result<Matcher, (String, PatternError)> {
        let mut out = Vec::new();
        for p in patterns {
            let raw = p.as_ref().trim();
            if raw.is_empty() {
                continue;
            }
            // Like moby: the pattern is cleaned (`**/` is `**`, `a/` is `a`) before compiling.
            let (bang, body) = match raw.strip_prefix('!') {
                Some(b) => ("!", b),
                None => ("", raw),
            };
            let cleaned = if body.is_empty() {
                String::new()
            } else {
                clean(body)
            };
            let p = format!("{bang}{cleaned}");
            out.push(Pattern::new(&p).map_err(|e| (raw.to_string(), e))?);
        }
        Ok(Matcher { patterns: out })
    }

    pub fn is_empty(&self) -> bool {
        self.patterns.is_empty()
    }

    pub fn has_exclusions(&self) -> bool {
        self.patterns.iter().any(|p| p.exclusion)
    }

    /// Whether `path` (clean, `/`-separated, relative to the root) is excluded: the path or
    /// any of its parent directories matches, and the last matching pattern decides.
    pub fn excluded(&self, path: &str) -> bool {
        let path = clean(path);
        if path == "." {
            return false;
        }
        let parents: Vec<&str> = match path.rfind('/') {
            Some(i) if i > 0 => path[..i].split('/').collect(),
            _ => Vec::new(),
        };
        let mut matched = false;
        for p in &self.patterns {
            if p.exclusion != matched {
                continue;
            }
            let mut hit = p.matches(&path);
            if !hit {
                for i in 0..parents.len() {
                    if p.matches(&parents[..=i].join("/")) {
                        hit = true;
                        break;
                    }
                }
            }
            if hit {
                matched = !p.exclusion;
            }
        }
        matched
    }

    /// For an excluded directory: false when no exception could bring back anything inside
    /// it, so a walker need not descend.
    pub fn may_reinclude_under(&self, dir: &str) -> bool {
        let dir = clean(dir);
        self.patterns
            .iter()
            .filter(|p| p.exclusion)
            .any(|p| match p.literal_prefix() {
                Some(prefix) => {
                    prefix.starts_with(&format!("{dir}/"))
                        || dir.starts_with(&format!("{prefix}/"))
                        || prefix == dir
                }
                None => true,
            })
    }
}

/// Go `path.Clean` for `/`-separated paths.
pub fn clean(p: &str) -> String {
    let rooted = p.starts_with('/');
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if parts.last().map(|l| *l != "..").unwrap_or(false) {
                    parts.pop();
                } else if !rooted {
                    parts.push("..");
                }
            }
            c => parts.push(c),
        }
    }
    let body = parts.join("/");
    match (rooted, body.is_empty()) {
        (true, _) => format!("/{body}"),
        (false, true) => ".".into(),
        (false, false) => body,
    }
}

/// Reads an ignore file's text into patterns (`ReadAll`).
pub fn read_ignore_file(text: &str) -> Vec<String> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let mut p = line.trim();
        if p.is_empty() {
            continue;
        }
        let invert = p.starts_with('!');
        if invert {
            p = p[1..].trim();
        }
        let mut pat = if p.is_empty() {
            String::new()
        } else {
            clean(p)
        };
        if pat.len() > 1 && pat.starts_with('/') {
            pat.remove(0);
        }
        if invert {
            pat.insert(0, '!');
        }
        out.push(pat);
    }
    out
}

/// Which ignore file applies: `<Dockerfile>.dockerignore` next to the Dockerfile, else
/// `.dockerignore` at the context root. Returns its path if one exists.
pub fn ignore_file_for(context: &Path, dockerfile: &Path) -> Option<std::path::PathBuf> {
    let mut specific = dockerfile.as_os_str().to_owned();
    specific.push(".dockerignore");
    let specific = std::path::PathBuf::from(specific);
    if specific.is_file() {
        return Some(specific);
    }
    let root = context.join(".dockerignore");
    root.is_file().then_some(root)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn basics() {
        let m = Matcher::new(&["docs", "!docs/README.md", "*.go", "!keep.go"]).unwrap();
        assert!(m.excluded("docs/x/y"));
        assert!(!m.excluded("docs/README.md"));
        assert!(m.excluded("main.go"));
        assert!(!m.excluded("keep.go"));
        assert!(!m.excluded("src/main.go"));
        assert_eq!(clean("./a//b/../c/"), "a/c");
    }
}
