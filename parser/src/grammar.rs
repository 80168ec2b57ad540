//! Typed front ends to the pest grammar in `grammar.pest`.

use pest::Parser;
use pest_derive::Parser;

#[derive(Parser)]
#[grammar = "grammar.pest"]
struct ValueGrammar;

/// A parsed heredoc marker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HeredocMarker {
    pub fd: u32,
    pub chomp: bool,
    /// The delimiter as written (quotes still in it).
    pub delimiter: String,
}

/// `<<EOF`, `<<-EOF`, `3<<'EOF'` → the marker; anything else → None.
pub fn heredoc_marker(word: &str) -> Option<HeredocMarker> {
    let pairs = ValueGrammar::parse(Rule::heredoc, word).ok()?;
    let mut m = HeredocMarker {
        fd: 0,
        chomp: false,
        delimiter: String::new(),
    };
    for p in pairs.flatten() {
        match p.as_rule() {
            Rule::heredoc_fd => m.fd = p.as_str().parse().unwrap_or(0),
            Rule::heredoc_chomp => m.chomp = p.as_str() == "-",
            Rule::heredoc_delim => m.delimiter = p.as_str().to_string(),
            _ => {}
        }
    }
    Some(m)
}

/// Go's `time.ParseDuration`, in nanoseconds.
pub fn parse_duration(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid duration {s:?}");
    let pairs = ValueGrammar::parse(Rule::duration, s).map_err(|_| bad())?;
    let mut total: f64 = 0.0;
    let mut negative = false;
    let mut num = 0.0;
    for p in pairs.flatten() {
        match p.as_rule() {
            Rule::duration_sign => negative = p.as_str() == "-",
            Rule::duration_num => num = p.as_str().parse::<f64>().map_err(|_| bad())?,
            Rule::duration_unit => {
                let unit = match p.as_str() {
                    "ns" => 1.0,
                    "us" | "\u{b5}s" | "\u{3bc}s" => 1e3,
                    "ms" => 1e6,
                    "s" => 1e9,
                    "m" => 60e9,
                    _ => 3600e9,
                };
                total += num * unit;
            }
            _ => {}
        }
    }
    if total > i64::MAX as f64 {
        return Err(bad());
    }
    Ok(if negative {
        -(total as i64)
    } else {
        total as i64
    })
}

/// A `--chmod` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Chmod {
    Octal(u32),
    /// Clauses like `u+x`, each as (who mask, op, perms) applied in order.
    Symbolic(Vec<(String, char, String)>),
}

impl Chmod {
    /// The resulting mode for a file that had `mode` (`is_dir` matters for `X`).
    pub fn apply(&self, mode: u32, is_dir: bool) -> u32 {
        match self {
            Chmod::Octal(m) => *m,
            Chmod::Symbolic(clauses) => {
                let mut mode = mode & 0o7777;
                for (who, op, perms) in clauses {
                    let who = if who.is_empty() { "a" } else { who.as_str() };
                    let mut mask = 0u32;
                    for w in who.chars() {
                        mask |= match w {
                            'u' => 0o4700,
                            'g' => 0o2070,
                            'o' => 0o1007,
                            _ => 0o7777,
                        };
                    }
                    let mut bits = 0u32;
                    for p in perms.chars() {
                        bits |= match p {
                            'r' => 0o444,
                            'w' => 0o222,
                            'x' => 0o111,
                            'X' if is_dir || mode & 0o111 != 0 => 0o111,
                            's' => 0o6000,
                            't' => 0o1000,
                            _ => 0,
                        };
                    }
                    let bits = bits & mask;
                    mode = match op {
                        '+' => mode | bits,
                        '-' => mode & !bits,
                        _ => (mode & !(mask & 0o7777)) | bits,
                    };
                }
                mode
            }
        }
    }
}

/// Parses a `--chmod` value: octal (`755`) or symbolic (`u+x,g-w`).
pub fn parse_chmod(s: &str) -> Result<Chmod, String> {
    let pairs =
        ValueGrammar::parse(Rule::chmod, s).map_err(|_| format!("invalid chmod value {s:?}"))?;
    let mut clauses = Vec::new();
    for p in pairs.flatten() {
        match p.as_rule() {
            Rule::chmod_octal => {
                return u32::from_str_radix(p.as_str(), 8)
                    .map(Chmod::Octal)
                    .map_err(|_| format!("invalid chmod value {s:?}"))
            }
            Rule::chmod_clause => {
                let mut who = String::new();
                let mut actions = Vec::new();
                for q in p.into_inner() {
                    match q.as_rule() {
                        Rule::chmod_who => who.push_str(q.as_str()),
                        Rule::chmod_action => {
                            let s = q.as_str();
                            let op = s.chars().next().unwrap_or('+');
                            actions.push((op, s[op.len_utf8()..].to_string()));
                        }
                        _ => {}
                    }
                }
                for (op, perms) in actions {
                    clauses.push((who.clone(), op, perms));
                }
            }
            _ => {}
        }
    }
    Ok(Chmod::Symbolic(clauses))
}

/// An EXPOSE port spec → `port/proto` (ranges kept as `a-b/proto`).
pub fn parse_port(s: &str) -> Result<String, String> {
    let bad = || format!("invalid containerPort: {s}");
    let pairs = ValueGrammar::parse(Rule::port, s).map_err(|_| bad())?;
    let mut nums = Vec::new();
    let mut proto = "tcp".to_string();
    for p in pairs.flatten() {
        match p.as_rule() {
            Rule::port_num => nums.push(p.as_str().parse::<u32>().map_err(|_| bad())?),
            Rule::port_proto => proto = p.as_str().to_lowercase(),
            _ => {}
        }
    }
    if nums.iter().any(|&n| n > 65535) || (nums.len() == 2 && nums[0] > nums[1]) {
        return Err(bad());
    }
    Ok(match nums.as_slice() {
        [a] => format!("{a}/{proto}"),
        [a, b] => format!("{a}-{b}/{proto}"),
        _ => return Err(bad()),
    })
}

/// Splits a `--mount` value into its CSV fields (quotes removed, `""` → `"`).
pub fn split_csv(s: &str) -> Result<Vec<String>, String> {
    let pairs = ValueGrammar::parse(Rule::csv, s)
        .map_err(|e| format!("invalid field list {s:?}: {}", e.variant.message()))?;
    let mut out = Vec::new();
    for p in pairs.flatten() {
        match p.as_rule() {
            Rule::csv_qinner => out.push(p.as_str().replace("\"\"", "\"")),
            Rule::csv_bare => out.push(p.as_str().to_string()),
            _ => {}
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn heredoc_markers() {
        assert_eq!(
            heredoc_marker("3<<-'EOF'"),
            Some(HeredocMarker {
                fd: 3,
                chomp: true,
                delimiter: "'EOF'".into()
            })
        );
        assert_eq!(heredoc_marker("<<  EOF").unwrap().delimiter, "EOF");
        assert!(heredoc_marker("<<<EOF").is_none());
        assert!(heredoc_marker("<<").is_none());
        assert!(heredoc_marker("\"<<EOF\"").is_none());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30s").unwrap(), 30_000_000_000);
        assert_eq!(parse_duration("1m30s").unwrap(), 90_000_000_000);
        assert_eq!(parse_duration("1.5h").unwrap(), 5_400_000_000_000);
        assert_eq!(parse_duration("500ms").unwrap(), 500_000_000);
        assert_eq!(parse_duration("0").unwrap(), 0);
        assert!(parse_duration("10").is_err());
        assert!(parse_duration("5x").is_err());
    }

    #[test]
    fn chmod_values() {
        assert_eq!(parse_chmod("755").unwrap(), Chmod::Octal(0o755));
        assert!(parse_chmod("64a").is_err());
        assert!(parse_chmod("9").is_err());
        let c = parse_chmod("u+x,g-w,o=r").unwrap();
        assert_eq!(c.apply(0o664, false), 0o744);
        assert_eq!(parse_chmod("a+X").unwrap().apply(0o644, true), 0o755);
    }

    #[test]
    fn ports_and_csv() {
        assert_eq!(parse_port("80").unwrap(), "80/tcp");
        assert_eq!(parse_port("53/UDP").unwrap(), "53/udp");
        assert_eq!(parse_port("8000-8010/tcp").unwrap(), "8000-8010/tcp");
        assert!(parse_port("70000").is_err());
        assert!(parse_port("80/xyz").is_err());
        assert_eq!(
            split_csv("type=cache,\"target=/a,b\",ro").unwrap(),
            vec!["type=cache", "target=/a,b", "ro"]
        );
    }
}
