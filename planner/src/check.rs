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
    let auto = crate::plan::automatic_args(&strata_image::spec::Platform::host());
    analyze(file, source, df, build_args, &auto).0
}

/// [`check`], and the stage graph when there is no problem. `automatic`: BuildKit's platform
/// arguments, in the global scope from the start.
pub fn analyze(
    file: &str,
    source: &str,
    df: &Dockerfile,
    build_args: &BTreeMap<String, String>,
    automatic: &[(String, String)],
) -> (Vec<ParseError>, StageGraph) {
    let mut a = Analyzer {
        file,
        source,
        escape: df.escape,
        build_args,
        errors: Vec::new(),
        global: automatic.to_vec(),
        stages: Vec::new(),
        names: BTreeMap::new(),
    };
    if a.stages_of(df) {
        a.stage_references(df);
        a.cycles();
    }
    (a.errors, StageGraph { stages: a.stages })
}

/// The state of [`analyze`]'s passes.
struct Analyzer<'a> {
    file: &'a str,
    source: &'a str,
    escape: char,
    build_args: &'a BTreeMap<String, String>,
    errors: Vec<ParseError>,
    /// Global ARGs with values, for FROM lines.
    global: Vec<(String, String)>,
    stages: Vec<StageInfo>,
    /// Stage names → index.
    names: BTreeMap<String, usize>,
}

impl Analyzer<'_> {
    fn err(&mut self, pos: Pos, m: String) {
        self.errors
            .push(ParseError::new(self.file, self.source, pos, m));
    }

    /// Pass 1: global ARGs and FROM lines. False when there is no stage to go on with.
    fn stages_of(&mut self, df: &Dockerfile) -> bool {
        for ins in &df.instructions {
            match &ins.kind {
                Kind::Arg(decls) if self.stages.is_empty() => self.global_arg(ins.pos, decls),
                Kind::From(f) => self.stage_line(ins.pos, f),
                _ if self.stages.is_empty() => {
                    let m = format!(
                        "no build stage in current context: {} before the first FROM",
                        ins.kind.name()
                    );
                    self.err(ins.pos, m);
                    return false;
                }
                _ => {}
            }
        }
        if self.stages.is_empty() {
            self.err(
                Pos { line: 1, col: 1 },
                "no build stage in current context: the Dockerfile has no FROM".into(),
            );
            return false;
        }
        true
    }

    fn global_arg(&mut self, pos: Pos, decls: &[strata_parser::instructions::ArgDecl]) {
        for d in decls {
            let v = match (self.build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(x)) => match Lexer::new(self.escape).process_word(x, &self.global) {
                    Ok(e) => Some(e.value),
                    Err(e) => {
                        self.err(pos, format!("ARG {}: {e}", d.name));
                        None
                    }
                },
                (None, None) => None,
            };
            if let Some(v) = v {
                self.global.push((d.name.clone(), v));
            }
        }
    }

    /// A FROM line: a new stage, which needs the earlier stage its image names.
    fn stage_line(&mut self, pos: Pos, f: &strata_parser::instructions::From) {
        let idx = self.stages.len();
        let mut deps = Vec::new();
        match Lexer::new(self.escape).process_word(&f.image, &self.global) {
            Err(e) => self.err(pos, format!("FROM {}: {e}", f.image)),
            Ok(exp) => {
                let image = exp.value;
                if image.is_empty() {
                    self.err(pos, format!("base name ({}) should not be blank", f.image));
                } else if let Some(&s) = self.names.get(&image.to_lowercase()) {
                    deps.push((s, pos));
                } else if image != "scratch" {
                    if let Err(e) = Reference::parse(&image) {
                        self.err(pos, format!("FROM {image}: {e}"));
                    }
                }
            }
        }
        if let Some(alias) = &f.alias {
            if self.names.insert(alias.clone(), idx).is_some() {
                self.err(pos, format!("duplicate stage name {alias:?}"));
            }
        }
        self.stages.push(StageInfo {
            name: f.alias.clone(),
            pos,
            deps,
        });
    }

    /// Pass 2: `--from` references (COPY, RUN --mount).
    fn stage_references(&mut self, df: &Dockerfile) {
        let mut current = 0usize;
        let mut seen_from = false;
        for ins in &df.instructions {
            let froms: Vec<String> = match &ins.kind {
                Kind::From(_) => {
                    if seen_from {
                        current += 1;
                    }
                    seen_from = true;
                    continue;
                }
                Kind::Copy(c) => c.from.iter().cloned().collect(),
                Kind::Run(r) => r.mounts.iter().filter_map(|m| m.from.clone()).collect(),
                _ => continue,
            };
            for from in froms {
                self.stage_reference(ins.pos, current, &from);
            }
        }
    }

    /// One `--from` of stage `current`: an earlier stage (by index or name) or an image.
    fn stage_reference(&mut self, pos: Pos, current: usize, from: &str) {
        // An index must name an earlier stage; a name may name any other (a later one makes
        // a cycle or an order the graph resolves).
        let (stage, by_index) = match from.parse::<usize>() {
            Ok(n) => (Some(n), true),
            Err(_) => (self.names.get(&from.to_lowercase()).copied(), false),
        };
        match stage {
            Some(n) if n == current => self.err(
                pos,
                format!("invalid from flag value {from}: refers to the current build stage"),
            ),
            Some(n) if n > current && by_index => self.err(
                pos,
                format!("invalid from flag value {from}: refers to a later build stage"),
            ),
            Some(n) => self.stages[current].deps.push((n, pos)),
            None => {
                if let Err(e) = Reference::parse(from) {
                    self.err(
                        pos,
                        format!("--from={from}: not a stage name and not a valid image: {e}"),
                    );
                }
            }
        }
    }

    /// A circular dependency between stages (the first one found).
    fn cycles(&mut self) {
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
        let mut state = vec![0u8; self.stages.len()];
        for i in 0..self.stages.len() {
            if let Some(c) = visit(i, &self.stages, &mut state) {
                let name = self.stages[c].name.clone().unwrap_or_else(|| c.to_string());
                let pos = self.stages[c].pos;
                self.err(
                    pos,
                    format!("circular dependency detected on stage: {name}"),
                );
                break;
            }
        }
    }
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
