//! BuildKit conformance, data-driven from `tests/data/` (copied verbatim, licences beside them): the parser
//! corpus dumped byte for byte, the variable-expansion tables, the `.dockerignore` vectors.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::PathBuf;

use strata_parser::ignore::{read_ignore_file, Matcher};
use strata_parser::node::{parse, Node};
use strata_parser::shell::Lexer;

/// The corpora, copied into the repository with their licences (`tests/data/README.md`).
fn data() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// Go's `strconv.Quote`.
fn go_quote(s: &str) -> String {
    let mut out = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{7}' => out.push_str("\\a"),
            '\u{8}' => out.push_str("\\b"),
            '\u{c}' => out.push_str("\\f"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{b}' => out.push_str("\\v"),
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                out.push_str(&format!("\\x{:02x}", c as u32))
            }
            c if !go_printable(c) => {
                if (c as u32) > 0xffff {
                    out.push_str(&format!("\\U{:08x}", c as u32));
                } else {
                    out.push_str(&format!("\\u{:04x}", c as u32));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// Approximates Go's `strconv.IsPrint` (categories L, M, N, P, S and ASCII space).
fn go_printable(c: char) -> bool {
    if c == ' ' {
        return true;
    }
    if c.is_control() || c.is_whitespace() {
        return false;
    }
    let u = c as u32;
    let format_chars = matches!(u, 0xad | 0x600..=0x605 | 0x61c | 0x6dd | 0x70f | 0x180e | 0x200b..=0x200f
        | 0x202a..=0x202e | 0x2060..=0x206f | 0xfeff | 0xfff9..=0xfffb);
    let private = matches!(u, 0xe000..=0xf8ff | 0xf0000..=0x10ffff);
    !(format_chars || private || u == 0xfffe || u == 0xffff)
}

fn dump(n: &Node) -> String {
    let mut s = format!("({}", n.cmd);
    if !n.flags.is_empty() {
        let f: Vec<String> = n.flags.iter().map(|f| go_quote(&f.text)).collect();
        s.push_str(&format!(" [{}]", f.join(" ")));
    }
    if let Some(child) = &n.next {
        s.push(' ');
        s.push_str(&dump(child));
    }
    for a in &n.args {
        s.push(' ');
        s.push_str(&go_quote(a));
    }
    s.push(')');
    s
}

#[test]
fn buildkit_parser_corpus_dumps_byte_for_byte() {
    let dir = data().join("buildkit-parser/testfiles");
    let mut n = 0;
    let mut failures = Vec::new();
    for e in fs::read_dir(&dir).unwrap() {
        let case = e.unwrap().path();
        let src = String::from_utf8(fs::read(case.join("Dockerfile")).unwrap()).unwrap();
        let expected = String::from_utf8(fs::read(case.join("result")).unwrap()).unwrap();
        n += 1;
        match parse(&src) {
            Err(e) => failures.push(format!("{}: parse error {e:?}", case.display())),
            Ok(r) => {
                let got: String = r.nodes.iter().map(|n| dump(n) + "\n").collect();
                if got != expected {
                    failures.push(format!(
                        "{}:\n--- expected\n{expected}--- got\n{got}",
                        case.display()
                    ));
                }
            }
        }
    }
    assert_eq!(n, 33, "corpus size");
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn buildkit_negative_cases_are_rejected() {
    let dir = data().join("buildkit-parser/testfiles-negative");
    let mut n = 0;
    for e in fs::read_dir(&dir).unwrap() {
        let case = e.unwrap().path();
        let src = String::from_utf8(fs::read(case.join("Dockerfile")).unwrap()).unwrap();
        assert!(parse(&src).is_err(), "{} parsed", case.display());
        n += 1;
    }
    assert_eq!(n, 4);
}

#[test]
fn buildkit_line_numbers() {
    let src = fs::read_to_string(data().join("buildkit-parser/testfile-line/Dockerfile")).unwrap();
    let r = parse(&src).unwrap();
    let spans: Vec<(usize, usize)> = r.nodes.iter().map(|n| (n.start.line, n.end_line)).collect();
    assert_eq!(spans, vec![(5, 5), (11, 12), (17, 31)]);
    assert_eq!(r.directives[0].key, "escape");
}

fn fixed_env() -> Vec<(String, String)> {
    [
        ("PWD", "/home"),
        ("SHELL", "bash"),
        ("KOREAN", "한국어"),
        ("NULL", ""),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

#[test]
fn buildkit_env_var_table() {
    let text = fs::read_to_string(data().join("buildkit-shell/envVarTest")).unwrap();
    let env = fixed_env();
    let lx = Lexer::default();
    let mut checked = 0;
    let mut failures = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split('|').map(str::trim).collect();
        assert_eq!(f.len(), 3, "bad row {line:?}");
        if f[0] == "W" {
            continue;
        }
        checked += 1;
        let got = lx.process_word(f[1], &env);
        let ok = match (f[2], &got) {
            ("error", Err(_)) => true,
            ("error", Ok(_)) => false,
            (want, Ok(e)) => e.value == want,
            (_, Err(_)) => false,
        };
        if !ok {
            failures.push(format!("{:?}: want {:?}, got {:?}", f[1], f[2], got));
        }
    }
    assert!(checked > 100, "{checked}");
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn buildkit_words_table() {
    let text = fs::read_to_string(data().join("buildkit-shell/wordsTest")).unwrap();
    let mut env: Vec<(String, String)> = Vec::new();
    let lx = Lexer::default();
    let mut failures = Vec::new();
    let mut checked = 0;
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        if let Some(rest) = line.strip_prefix("ENV ") {
            let (k, v) = rest.trim_start().split_once('=').unwrap();
            env.push((k.to_string(), v.to_string()));
            continue;
        }
        let Some((input, expected)) = line.split_once('|') else {
            continue;
        };
        checked += 1;
        let input = input.trim();
        let expected = expected.trim_start();
        let got = lx.process_words(input, &env);
        let ok = match (expected, &got) {
            ("error", r) => r.is_err(),
            (want, Ok(words)) => *words == want.split(',').collect::<Vec<_>>(),
            _ => false,
        };
        if !ok {
            failures.push(format!("{input:?}: want {expected:?}, got {got:?}"));
        }
    }
    assert!(checked > 10);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[derive(serde::Deserialize)]
struct SubCase {
    input: String,
    env: BTreeMap<String, String>,
    expected: Option<String>,
    #[serde(default)]
    error: bool,
    matched: Option<Vec<String>>,
    unmatched: Option<Vec<String>>,
}

#[test]
fn buildkit_substitution_cases() {
    let text = fs::read_to_string(data().join("buildkit-shell/substitution-cases.jsonl")).unwrap();
    let lx = Lexer::default();
    let mut failures = Vec::new();
    let mut n = 0;
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let c: SubCase = serde_json::from_str(line).unwrap();
        n += 1;
        let got = lx.process_word(&c.input, &c.env);
        let ok = match &got {
            Err(_) => c.error,
            Ok(e) => {
                !c.error
                    && c.expected.as_deref() == Some(e.value.as_str())
                    && c.matched
                        .as_ref()
                        .map(|m| m.iter().cloned().collect::<BTreeSet<_>>() == e.matched)
                        .unwrap_or(true)
                    && c.unmatched
                        .as_ref()
                        .map(|m| m.iter().cloned().collect::<BTreeSet<_>>() == e.unmatched)
                        .unwrap_or(true)
            }
        };
        if !ok {
            failures.push(format!("{line}\n   got {got:?}"));
        }
    }
    assert_eq!(n, 56);
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn dockerignore_match_vectors() {
    let text = fs::read_to_string(data().join("dockerignore/match-vectors.tsv")).unwrap();
    let mut failures = Vec::new();
    let mut n = 0;
    for line in text.lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        let cols: Vec<&str> = line.split('\t').collect();
        assert_eq!(cols.len(), 4, "bad row {line:?}");
        let patterns: Vec<&str> = cols[1].split(" ;; ").collect();
        n += 1;
        let got = match Matcher::new(&patterns) {
            Err(_) => "error".to_string(),
            Ok(m) => m.excluded(cols[2]).to_string(),
        };
        if got != cols[3] {
            failures.push(format!("{line}: got {got}"));
        }
    }
    assert_eq!(n, 136);
    assert!(
        failures.is_empty(),
        "{} failures:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[test]
fn dockerignore_file_reading() {
    let text = fs::read_to_string(data().join("dockerignore/readall-vector.txt")).unwrap();
    let input_start = text.find("#--- INPUT").unwrap();
    let input_body = &text[text[input_start..].find('\n').unwrap() + input_start + 1..];
    let expected_marker = input_body.find("#--- EXPECTED").unwrap();
    let input = &input_body[..expected_marker];
    let expected: Vec<&str> = input_body[expected_marker..].lines().skip(1).collect();
    // The input's final line has no newline in the original file; the marker line follows it.
    let input = input.strip_suffix('\n').unwrap_or(input);
    assert_eq!(read_ignore_file(input), expected);
}
