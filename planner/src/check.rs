//! Whole-Dockerfile checks BuildKit makes before building: a build stage exists, stage names
//! are valid and unique, `FROM` names a valid image or an earlier stage, `--from` references
//! resolve, and stages do not depend on each other in a cycle.

use std::collections::{BTreeMap, BTreeSet};

use strata_image::Reference;
use strata_parser::instructions::{Dockerfile, Kind};
use strata_parser::shell::Lexer;
use strata_parser::{ParseError, Pos};

/// A stage as the checks see it.
struct StageInfo {
    name: Option<String>,
    pos: Pos,
    /// (stage index, where) this stage depends on.
    deps: Vec<(usize, Pos)>,
}

/// The stages of a Dockerfile and what each needs, as written (before any image is looked up).
pub struct StageGraph {
    stages: Vec<StageInfo>,
}

impl StageGraph {
    /// The stage `--target` names (by name or index; None: the last stage).
    pub fn target(&self, target: Option<&str>) -> Option<usize> {
        match target {
            None => self.stages.len().checked_sub(1),
            Some(t) => self
                .stages
                .iter()
                .position(|s| s.name.as_deref() == Some(&t.to_lowercase()))
                .or_else(|| t.parse::<usize>().ok().filter(|&i| i < self.stages.len())),
        }
    }

    /// `stage` and every stage it needs, directly or not (FROM, `--from`).
    pub fn needed_by(&self, stage: usize) -> BTreeSet<usize> {
        let mut needed = BTreeSet::new();
        let mut stack = vec![stage];
        while let Some(s) = stack.pop() {
            if needed.insert(s) {
                stack.extend(self.stages[s].deps.iter().map(|&(d, _)| d));
            }
        }
        needed
    }
}

/// Returns every problem found (empty when the Dockerfile is buildable as far as text goes).
/// `build_args` are the `--build-arg` values, used to expand global ARGs in FROM.
pub fn check(
    file: &str,
    source: &str,
    df: &Dockerfile,
    build_args: &BTreeMap<String, String>,
) -> Vec<ParseError> {
    analyze(file, source, df, build_args).0
}

/// [`check`], and the stage graph when there is no problem.
pub fn analyze(
    file: &str,
    source: &str,
    df: &Dockerfile,
    build_args: &BTreeMap<String, String>,
) -> (Vec<ParseError>, StageGraph) {
    let mut errors = Vec::new();
    let err = |pos: Pos, m: String| ParseError::new(file, source, pos, m);
    let mut global: Vec<(String, String)> = Vec::new();
    let mut stages: Vec<StageInfo> = Vec::new();
    let mut names: BTreeMap<String, usize> = BTreeMap::new();
    // Pass 1: stages and FROM.
    for ins in &df.instructions {
        match &ins.kind {
            Kind::Arg(decls) if stages.is_empty() => {
                for d in decls {
                    let v = match (build_args.get(&d.name), &d.default) {
                        (Some(v), _) => Some(v.clone()),
                        (None, Some(x)) => match Lexer::new(df.escape).process_word(x, &global) {
                            Ok(e) => Some(e.value),
                            Err(e) => {
                                errors.push(err(ins.pos, format!("ARG {}: {e}", d.name)));
                                None
                            }
                        },
                        (None, None) => None,
                    };
                    if let Some(v) = v {
                        global.push((d.name.clone(), v));
                    }
                }
            }
            Kind::From(f) => {
                let idx = stages.len();
                let mut deps = Vec::new();
                match Lexer::new(df.escape).process_word(&f.image, &global) {
                    Err(e) => errors.push(err(ins.pos, format!("FROM {}: {e}", f.image))),
                    Ok(exp) => {
                        let image = exp.value;
                        if image.is_empty() {
                            errors.push(err(
                                ins.pos,
                                format!("base name ({}) should not be blank", f.image),
                            ));
                        } else if let Some(&s) = names.get(&image.to_lowercase()) {
                            deps.push((s, ins.pos));
                        } else if image != "scratch" {
                            if let Err(e) = Reference::parse(&image) {
                                errors.push(err(ins.pos, format!("FROM {image}: {e}")));
                            }
                        }
                    }
                }
                if let Some(alias) = &f.alias {
                    if names.insert(alias.clone(), idx).is_some() {
                        errors.push(err(ins.pos, format!("duplicate stage name {alias:?}")));
                    }
                }
                stages.push(StageInfo {
                    name: f.alias.clone(),
                    pos: ins.pos,
                    deps,
                });
            }
            _ if stages.is_empty() => {
                errors.push(err(
                    ins.pos,
                    format!(
                        "no build stage in current context: {} before the first FROM",
                        ins.kind.name()
                    ),
                ));
                return (errors, StageGraph { stages });
            }
            _ => {}
        }
    }
    if stages.is_empty() {
        errors.push(err(
            Pos { line: 1, col: 1 },
            "no build stage in current context: the Dockerfile has no FROM".into(),
        ));
        return (errors, StageGraph { stages });
    }
    // Pass 2: --from references (COPY, RUN --mount).
    let mut current = 0usize;
    let mut seen_from = false;
    for ins in &df.instructions {
        let mut froms: Vec<String> = Vec::new();
        match &ins.kind {
            Kind::From(_) => {
                if seen_from {
                    current += 1;
                }
                seen_from = true;
                continue;
            }
            Kind::Copy(c) => froms.extend(c.from.clone()),
            Kind::Run(r) => froms.extend(r.mounts.iter().filter_map(|m| m.from.clone())),
            _ => {}
        }
        for from in froms {
            if let Ok(n) = from.parse::<usize>() {
                if n >= current {
                    let what = if n == current {
                        "refers to the current build stage"
                    } else {
                        "refers to a later build stage"
                    };
                    errors.push(err(
                        ins.pos,
                        format!("invalid from flag value {from}: {what}"),
                    ));
                } else {
                    stages[current].deps.push((n, ins.pos));
                }
            } else if let Some(&s) = names.get(&from.to_lowercase()) {
                if s == current {
                    errors.push(err(
                        ins.pos,
                        format!(
                            "invalid from flag value {from}: refers to the current build stage"
                        ),
                    ));
                } else {
                    stages[current].deps.push((s, ins.pos));
                }
            } else if let Err(e) = Reference::parse(&from) {
                errors.push(err(
                    ins.pos,
                    format!("--from={from}: not a stage name and not a valid image: {e}"),
                ));
            }
        }
    }
    // Cycles.
    let mut state = vec![0u8; stages.len()];
    fn visit(i: usize, stages: &[StageInfo], state: &mut [u8]) -> Option<usize> {
        if state[i] == 1 {
            return Some(i);
        }
        if state[i] == 2 {
            return None;
        }
        state[i] = 1;
        for &(d, _) in &stages[i].deps {
            if let Some(c) = visit(d, stages, state) {
                return Some(c);
            }
        }
        state[i] = 2;
        None
    }
    for i in 0..stages.len() {
        if let Some(c) = visit(i, &stages, &mut state) {
            let name = stages[c].name.clone().unwrap_or_else(|| c.to_string());
            errors.push(err(
                stages[c].pos,
                format!("circular dependency detected on stage: {name}"),
            ));
            break;
        }
    }
    (errors, StageGraph { stages })
}

#[cfg(test)]
mod tests {
    use super::*;
    use strata_parser::parse_dockerfile;

    fn problems(src: &str) -> Vec<String> {
        let df = parse_dockerfile("Dockerfile", src).unwrap();
        check("Dockerfile", src, &df, &BTreeMap::new())
            .iter()
            .map(|e| e.to_string())
            .collect()
    }

    #[test]
    fn buildkit_rejections() {
        assert!(problems("FROM busybox\nRUN true\n").is_empty());
        assert!(problems("RUN true\n")[0].contains("no build stage"));
        assert!(problems("FROM UPPER/Case\n")[0].contains("must be lowercase"));
        assert!(problems("FROM a AS x\nFROM b AS x\n")[0].contains("duplicate stage name"));
        assert!(problems("FROM a AS x\nCOPY --from=0 a b\n")[0].contains("current build stage"));
        assert!(
            problems("FROM a AS x\nCOPY --from=y a b\nFROM b AS y\nCOPY --from=x a b\n")[0]
                .contains("circular dependency")
        );
        assert!(problems("FROM a\nCOPY --from=Bad/Name a b\n")[0].contains("not a valid image"));
        assert!(problems("ARG V=1.36\nFROM busybox:${V}\n").is_empty());
        assert!(problems("ARG V\nFROM busybox:${V:?unset}\n")[0].contains("unset"));
    }
}
