//! `strata build`.

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use strata_parser::parse_dockerfile;

use crate::cli::BuildArgs;

/// The Dockerfile's name (for messages), path and text.
pub struct DockerfileSource {
    pub name: String,
    /// Where it was read from (for `<Dockerfile>.dockerignore`); None for stdin.
    #[allow(dead_code)]
    pub path: Option<PathBuf>,
    pub text: String,
}

/// Reads the Dockerfile: `-f -` from stdin, `-f FILE` as given (like Docker, it may live
/// outside the context), else `CONTEXT/Dockerfile` resolved inside the context.
pub fn read_dockerfile(a: &BuildArgs) -> Result<DockerfileSource> {
    let read_limited = |r: &mut dyn Read, name: &str| -> Result<String> {
        let mut buf = Vec::new();
        r.take(MAX_DOCKERFILE + 1)
            .read_to_end(&mut buf)
            .with_context(|| format!("read {name}"))?;
        if buf.len() as u64 > MAX_DOCKERFILE {
            bail!("{name}: larger than the {} MiB limit", MAX_DOCKERFILE >> 20);
        }
        String::from_utf8(buf).map_err(|e| {
            anyhow::anyhow!(
                "{name}: not valid UTF-8 (byte {})",
                e.utf8_error().valid_up_to()
            )
        })
    };
    match a.file.as_deref() {
        Some("-") => Ok(DockerfileSource {
            name: "Dockerfile".into(),
            path: None,
            text: read_limited(&mut std::io::stdin().lock(), "stdin")?,
        }),
        Some(f) => {
            let mut file =
                std::fs::File::open(f).with_context(|| format!("open Dockerfile {f}"))?;
            Ok(DockerfileSource {
                name: f.to_string(),
                path: Some(PathBuf::from(f)),
                text: read_limited(&mut file, f)?,
            })
        }
        None => {
            let context = Path::new(&a.context);
            let path = context.join("Dockerfile");
            let name = path.display().to_string();
            // Resolved inside the context: a Dockerfile symlink cannot pull in a host file.
            let root = std::fs::canonicalize(context)
                .with_context(|| format!("context {}", context.display()))?;
            let real =
                std::fs::canonicalize(&path).with_context(|| format!("open Dockerfile {name}"))?;
            if !real.starts_with(&root) {
                bail!("{name}: resolves outside the build context");
            }
            let mut file =
                std::fs::File::open(&real).with_context(|| format!("open Dockerfile {name}"))?;
            Ok(DockerfileSource {
                name,
                path: Some(path),
                text: read_limited(&mut file, "Dockerfile")?,
            })
        }
    }
}

/// Dockerfiles larger than this are refused (a 100k-instruction file is about 2 MiB).
const MAX_DOCKERFILE: u64 = 16 << 20;

/// `--build-arg K=V` / `--build-arg K` (from the environment).
pub fn build_args(a: &BuildArgs) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for b in &a.build_args {
        if b.contains('\0') {
            bail!("--build-arg {b:?}: contains a NUL byte");
        }
        match b.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                out.insert(k.to_string(), v.to_string());
            }
            Some(_) => bail!("--build-arg {b:?}: empty name"),
            None => {
                if let Ok(v) = std::env::var(b) {
                    out.insert(b.clone(), v);
                }
            }
        }
    }
    Ok(out)
}

/// `build --check`: parse and validate, print every problem with its line and a caret.
pub fn check(a: &BuildArgs) -> Result<()> {
    let src = read_dockerfile(a)?;
    let args = build_args(a)?;
    let df = match parse_dockerfile(&src.name, &src.text) {
        Ok(df) => df,
        Err(e) => {
            eprintln!("{}", e.render());
            bail!("{}: check failed", src.name);
        }
    };
    let problems = strata_planner::check::check(&src.name, &src.text, &df, &args);
    if problems.is_empty() {
        for w in &df.warnings {
            println!("{}:{}: warning: {}", src.name, w.line, w.message);
        }
        if df.warnings.is_empty() {
            println!("Check complete, no warnings found.");
        } else {
            println!(
                "Check complete, {} warnings have been found!",
                df.warnings.len()
            );
        }
        return Ok(());
    }
    for p in &problems {
        eprintln!("{}", p.render());
    }
    bail!("{}: check failed with {} errors", src.name, problems.len());
}

pub fn build(a: &BuildArgs) -> Result<()> {
    if a.check {
        return check(a);
    }
    bail!("strata build: only --check is available in this version")
}
