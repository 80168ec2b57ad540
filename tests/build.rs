//! End to end: `strata build`.

mod common;

use std::fs;

use common::Strata;

fn context(s: &Strata, dockerfile: &str) -> String {
    let dir = s.path("ctx");
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join("Dockerfile"), dockerfile).unwrap();
    dir.to_str().unwrap().to_string()
}

#[test]
fn check_accepts_a_valid_dockerfile() {
    let s = Strata::new();
    let ctx = context(&s, "# syntax=docker/dockerfile:1\nFROM busybox AS base\nRUN echo hi\nFROM base\nCOPY --from=base /a /b\n");
    assert_eq!(
        s.ok(&["build", "--check", &ctx]).trim(),
        "Check complete, no warnings found."
    );
}

#[test]
fn check_reports_errors_with_line_and_caret() {
    let s = Strata::new();
    let ctx = context(&s, "FROM busybox\nCOPY --chmod=64a a b\n");
    let o = s.run(&["build", "--check", &ctx]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    let df = format!("{ctx}/Dockerfile");
    assert!(
        err.starts_with(&format!(
            "{df}:2:6: invalid chmod value \"64a\"\n   2 | COPY --chmod=64a a b\n            ^\n"
        )),
        "{err}"
    );
    for (text, expect) in [
        (
            "FROM busybox\nFNTRYPOINT [\"sh\"]\n",
            "2:1: unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)",
        ),
        ("RUN true\n", "1:1: no build stage in current context"),
        ("FROM UPPER/Case\n", "must be lowercase"),
        (
            "FROM busybox\nCOPY --from=$X a b\n",
            "variable expansion is not supported for --from",
        ),
        ("FROM busybox AS 9x\n", "invalid name for build stage"),
        ("FROM busybox\nRUN <<EOF\necho\n", "unterminated heredoc"),
        (
            "FROM a AS x\nCOPY --from=y a b\nFROM b AS y\nCOPY --from=x a b\n",
            "circular dependency",
        ),
        ("ARG FOO=${FOO:?msg}\nFROM busybox\n", "FOO: msg"),
        (
            "FROM busybox\nRUN --mount=type=cache,id=../../x,target=/x true\n",
            "'..'",
        ),
        (
            "FROM busybox\nRUN --mount=type=cache,target=/x,colour=red true\n",
            "unexpected key 'colour'",
        ),
        ("", "file with no instructions"),
    ] {
        fs::write(format!("{ctx}/Dockerfile"), text).unwrap();
        let o = s.run(&["build", "--check", &ctx]);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{text:?}");
        assert!(err.contains(expect), "{text:?}: {err}");
    }
}

#[test]
fn check_handles_huge_dockerfiles_in_bounded_time() {
    let s = Strata::new();
    let mut df = String::from("FROM busybox\n");
    for i in 0..100_000 {
        df.push_str(&format!("ENV V{i}=x\n"));
    }
    let ctx = context(&s, &df);
    let t = std::time::Instant::now();
    s.ok(&["build", "--check", &ctx]);
    // Generous bound: this guards against quadratic behaviour, not speed.
    assert!(t.elapsed().as_secs() < 20, "{:?}", t.elapsed());
    let long = format!("FROM busybox\nRUN echo {}\n", "x".repeat(1 << 20));
    fs::write(format!("{ctx}/Dockerfile"), long).unwrap();
    let o = s.run(&["build", "--check", &ctx]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("2:1: dockerfile line greater than max allowed size"),
        "{err}"
    );
    assert!(err.len() < 1000, "the whole long line was printed");
}
