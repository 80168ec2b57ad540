//! Parse errors with positions, and the caret rendering `build --check` prints.

use std::fmt;

/// A 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Pos {
    pub line: usize,
    pub col: usize,
}

/// An error of the line-level parser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawError {
    pub pos: Pos,
    pub message: String,
}

impl RawError {
    pub fn at(line: usize, col: usize, message: String) -> Self {
        RawError {
            pos: Pos { line, col },
            message,
        }
    }
}

/// A Dockerfile error: `file:line:col: message`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct ParseError {
    pub file: String,
    pub pos: Pos,
    pub message: String,
    /// The offending physical line, for the caret display.
    pub source_line: Option<String>,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}",
            self.file, self.pos.line, self.pos.col, self.message
        )
    }
}

impl ParseError {
    pub fn new(file: &str, source: &str, pos: Pos, message: impl Into<String>) -> Self {
        ParseError {
            file: file.to_string(),
            pos,
            message: message.into(),
            source_line: source
                .lines()
                .nth(pos.line.saturating_sub(1))
                .map(str::to_string),
        }
    }

    /// The error, the offending line and a caret under the column.
    pub fn render(&self) -> String {
        let mut s = self.to_string();
        if let Some(full) = &self.source_line {
            // Very long lines are shown as a window around the column.
            let (l, col) = window(full, self.pos.col);
            let gutter = format!("{:>4} | ", self.pos.line);
            s.push('\n');
            s.push_str(&gutter);
            s.push_str(&l);
            s.push('\n');
            let pad: String = l
                .chars()
                .take(col.saturating_sub(1))
                .map(|c| if c == '\t' { '\t' } else { ' ' })
                .collect();
            s.push_str(&" ".repeat(gutter.len()));
            s.push_str(&pad);
            s.push('^');
        }
        s
    }
}

/// At most 120 characters of `line` around `col`, with the column adjusted.
fn window(line: &str, col: usize) -> (String, usize) {
    const WIDTH: usize = 120;
    let n = line.chars().count();
    if n <= WIDTH {
        return (line.to_string(), col);
    }
    let start = col.saturating_sub(WIDTH / 2).min(n - WIDTH);
    let mut shown: String = line.chars().skip(start).take(WIDTH).collect();
    if start + WIDTH < n {
        shown.push('…');
    }
    (shown, col - start)
}
