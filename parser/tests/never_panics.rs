//! Random input never panics the parser, the expander or the ignore matcher: it is Ok or an
//! error. (A coverage-guided fuzz target lives in `parser/fuzz/`, outside CI.)

use proptest::prelude::*;
use strata_parser::ignore::Matcher;
use strata_parser::parse_dockerfile;
use strata_parser::shell::Lexer;

fn dockerfileish() -> impl Strategy<Value = String> {
    let words = prop::sample::select(vec![
        "FROM",
        "RUN",
        "COPY",
        "ADD",
        "ENV",
        "ARG",
        "LABEL",
        "ONBUILD",
        "HEALTHCHECK",
        "CMD",
        "SHELL",
        "EXPOSE",
        "--mount=type=cache,target=/x",
        "--from=a",
        "--chmod=7",
        "<<EOF",
        "<<-'E'",
        "EOF",
        "E",
        "\\",
        "`",
        "[",
        "]",
        "\"",
        "'",
        "${A:-b}",
        "$",
        "#",
        "# escape=`",
        "\n",
        "\r\n",
        " ",
        "\t",
        "=",
        "a=b",
        "[\"x\"]",
        "AS",
        "x",
        "--",
        "--link",
        "NONE",
    ]);
    prop::collection::vec(words, 0..60).prop_map(|v| v.join(" "))
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

    #[test]
    fn dockerfile_parser_never_panics(s in dockerfileish()) {
        let _ = parse_dockerfile("Dockerfile", &s);
    }

    #[test]
    fn dockerfile_parser_never_panics_on_any_text(s in "\\PC{0,300}") {
        let _ = parse_dockerfile("Dockerfile", &s);
    }

    #[test]
    fn expander_never_panics(s in "[$\\\\{}:+?#%/*'\"a-c -]{0,40}") {
        let env = vec![("a".to_string(), "xy".to_string())];
        let _ = Lexer::default().process_word(&s, &env);
        let _ = Lexer::default().process_words(&s, &env);
    }

    #[test]
    fn ignore_matcher_never_panics(p in "[!*?\\[\\]\\\\a-c/^-]{0,12}", path in "[a-c/.]{0,12}") {
        if let Ok(m) = Matcher::new(&[p]) {
            let _ = m.excluded(&path);
        }
    }
}
