//! Parse throughput: a generated 10,000-line Dockerfile and every BuildKit corpus file.
//! Usage: cargo run --release -p strata-parser --example parse_bench (reads tests/data/)

use std::time::Instant;

/// The allocator the strata binary uses, so the figures are the parser's speed inside strata.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn generated(lines: usize) -> String {
    let mut s = String::from(
        "# syntax=docker/dockerfile:1\nARG BASE=debian:bookworm\nFROM ${BASE} AS build\n",
    );
    let mut n = 3;
    while n < lines {
        s.push_str(&format!("ENV VAR_{n}=\"value {n}\" OTHER_{n}=x\n"));
        s.push_str(&format!("RUN --mount=type=cache,target=/root/.cache echo step {n} && \\\n    ls -la /usr/lib/{n} | wc -l\n"));
        s.push_str(&format!(
            "COPY --chown=1000:1000 --chmod=644 src/{n}/ /app/{n}/\n"
        ));
        s.push_str(&format!("LABEL org.example.step{n}=\"{n}\"\n"));
        n += 5;
    }
    s.push_str("CMD [\"/app/run\", \"--flag\"]\n");
    s
}

/// Best of several batches: the machine is shared, the minimum is the parser's own speed.
fn measure(name: &str, text: &str, rounds: usize) {
    let mut secs = f64::MAX;
    for _ in 0..5 {
        let t = Instant::now();
        for _ in 0..rounds {
            let df = strata_parser::parse_dockerfile("Dockerfile", text).expect("parses");
            std::hint::black_box(df);
        }
        secs = secs.min(t.elapsed().as_secs_f64() / rounds as f64);
    }
    let mbps = text.len() as f64 / secs / 1e6;
    println!(
        "{name:<48} {:>9} bytes {:>10.3} ms {:>8.1} MB/s",
        text.len(),
        secs * 1e3,
        mbps
    );
}

fn main() {
    let big = generated(10_000);
    println!("{} lines", big.lines().count());
    measure("generated 10,000 lines", &big, 20);
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/buildkit-parser/testfiles");
    let mut cases: Vec<_> = std::fs::read_dir(&dir)
        .expect("corpus")
        .map(|e| e.unwrap().path())
        .collect();
    cases.sort();
    let mut all = 0.0;
    let mut bytes = 0;
    for c in cases {
        let text = std::fs::read_to_string(c.join("Dockerfile")).unwrap();
        let raw = strata_parser::node::parse(&text);
        if raw.is_err() {
            continue;
        }
        let t = Instant::now();
        for _ in 0..200 {
            std::hint::black_box(strata_parser::node::parse(&text).unwrap());
        }
        let secs = t.elapsed().as_secs_f64() / 200.0;
        all += secs;
        bytes += text.len();
        println!(
            "corpus {:<41} {:>9} bytes {:>10.4} ms {:>8.1} MB/s",
            c.file_name().unwrap().to_string_lossy(),
            text.len(),
            secs * 1e3,
            text.len() as f64 / secs / 1e6
        );
    }
    println!(
        "corpus total {bytes} bytes in {:.3} ms: {:.1} MB/s",
        all * 1e3,
        bytes as f64 / all / 1e6
    );
}
