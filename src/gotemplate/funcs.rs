//! The formatting functions of Go templates: `printf`'s verbs, `title`, and the `html`,
//! `js` and `urlquery` escapes.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde_json::Value;

use super::{print, print_value, Val};

/// Go's `printf` verbs that format strings use: `%v %s %d %q %t %f %x %X %c %%`, with flags
/// (`-`, `0`, `+`, ` `), width and precision.
pub(super) fn printf(fmt: &str, args: &[Val]) -> String {
    let mut out = String::new();
    let mut it = fmt.chars().peekable();
    let mut next = args.iter();
    while let Some(c) = it.next() {
        if c != '%' {
            out.push(c);
            continue;
        }
        let mut flags = String::new();
        while let Some(&f) = it.peek() {
            if "-+0 #".contains(f) {
                flags.push(f);
                it.next();
            } else {
                break;
            }
        }
        let mut width = String::new();
        while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
            width.push(d);
            it.next();
        }
        let mut precision: Option<usize> = None;
        if it.peek() == Some(&'.') {
            it.next();
            let mut p = String::new();
            while let Some(&d) = it.peek().filter(|d| d.is_ascii_digit()) {
                p.push(d);
                it.next();
            }
            precision = Some(p.parse().unwrap_or(0));
        }
        let Some(verb) = it.next() else {
            out.push_str("%!(NOVERB)");
            break;
        };
        if verb == '%' {
            out.push('%');
            continue;
        }
        let Some(arg) = next.next() else {
            let _ = write!(out, "%!{verb}(MISSING)");
            continue;
        };
        let body = match verb {
            'd' => match arg.v.as_f64() {
                Some(n) => {
                    let n = n as i64;
                    if flags.contains('+') && n >= 0 {
                        format!("+{n}")
                    } else {
                        n.to_string()
                    }
                }
                None => format!("%!d({})", print(arg)),
            },
            'f' | 'F' => match arg.v.as_f64() {
                Some(n) => format!("{n:.*}", precision.unwrap_or(6)),
                None => format!("%!f({})", print(arg)),
            },
            'x' | 'X' => {
                let h = match &arg.v {
                    Value::Number(n) => format!("{:x}", n.as_i64().unwrap_or(0)),
                    other => print_value(other)
                        .bytes()
                        .map(|b| format!("{b:02x}"))
                        .collect(),
                };
                if verb == 'X' {
                    h.to_uppercase()
                } else {
                    h
                }
            }
            'q' => serde_json::to_string(&print(arg)).unwrap_or_default(),
            'c' => arg
                .v
                .as_u64()
                .and_then(|n| char::from_u32(n as u32))
                .map(String::from)
                .unwrap_or_default(),
            't' => match &arg.v {
                Value::Bool(b) => b.to_string(),
                _ => format!("%!t({})", print(arg)),
            },
            _ => {
                let s = print(arg);
                match precision {
                    Some(p) if verb == 's' || verb == 'v' => s.chars().take(p).collect(),
                    _ => s,
                }
            }
        };
        let w: usize = width.parse().unwrap_or(0);
        let pad = w.saturating_sub(body.chars().count());
        if flags.contains('-') {
            out.push_str(&body);
            out.push_str(&" ".repeat(pad));
        } else if flags.contains('0') && matches!(verb, 'd' | 'f' | 'x' | 'X') {
            let (sign, digits) = match body.strip_prefix(['-', '+']) {
                Some(d) => (&body[..1], d),
                None => ("", body.as_str()),
            };
            out.push_str(sign);
            out.push_str(&"0".repeat(pad));
            out.push_str(digits);
        } else {
            out.push_str(&" ".repeat(pad));
            out.push_str(&body);
        }
    }
    out
}

/// Go's `strings.Title`: the first letter of each word upper-cased.
pub(super) fn title(s: &str) -> String {
    let mut out = String::new();
    let mut start = true;
    for c in s.chars() {
        if start && c.is_alphabetic() {
            out.extend(c.to_uppercase());
        } else {
            out.push(c);
        }
        start = !(c.is_alphanumeric() || c == '_' || c == '\'');
    }
    out
}

pub(super) fn html_escape(s: &str) -> String {
    let map = BTreeMap::from([
        ('<', "&lt;"),
        ('>', "&gt;"),
        ('&', "&amp;"),
        ('\'', "&#39;"),
        ('"', "&#34;"),
        ('\0', "\u{FFFD}"),
    ]);
    s.chars()
        .map(|c| map.get(&c).map_or(c.to_string(), |r| r.to_string()))
        .collect()
}

pub(super) fn js_escape(s: &str) -> String {
    s.chars()
        .map(|c| match c {
            '\\' => "\\\\".into(),
            '\'' => "\\'".into(),
            '"' => "\\\"".into(),
            '<' => "\\u003C".into(),
            '>' => "\\u003E".into(),
            '&' => "\\u0026".into(),
            '=' => "\\u003D".into(),
            '\n' => "\\n".into(),
            '\r' => "\\r".into(),
            '\t' => "\\t".into(),
            c if (c as u32) < 0x20 => format!("\\u{:04X}", c as u32),
            c => c.to_string(),
        })
        .collect()
}

pub(super) fn url_escape(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            b' ' => "+".into(),
            b => format!("%{b:02X}"),
        })
        .collect()
}
