//! The typed Dockerfile AST ("as written"): every instruction with its flags checked and its
//! arguments in typed fields, still unexpanded (`$VAR` stays as written; the planner expands
//! with the build's ARG/ENV scope).
//!
//! One module per instruction family, each turning a raw [`Node`] into its [`Kind`]: [`from`]
//! (FROM), [`run`] (RUN and its `--mount` values), [`copy`] (COPY and ADD), [`metadata`]
//! (ARG, ENV, LABEL, CMD, ENTRYPOINT, SHELL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL,
//! HEALTHCHECK, ONBUILD, MAINTAINER); [`flags`] checks the flags they accept.

mod copy;
mod flags;
mod from;
mod metadata;
mod run;

pub use run::{parse_mount, parse_size};

use crate::error::{ParseError, Pos};
use crate::node::{self, Directive, Heredoc, Node, RawDockerfile, Warning};
use flags::Flags;

/// A whole Dockerfile.
#[derive(Debug, Clone, PartialEq)]
pub struct Dockerfile {
    pub instructions: Vec<Instruction>,
    pub directives: Vec<Directive>,
    pub escape: char,
    pub warnings: Vec<Warning>,
}

/// One instruction with where it was written.
#[derive(Debug, Clone, PartialEq)]
pub struct Instruction {
    pub kind: Kind,
    pub pos: Pos,
    pub end_line: usize,
    /// The logical line as written (continuations joined), for history and errors.
    pub original: String,
}

/// Command form of RUN, CMD, ENTRYPOINT and HEALTHCHECK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CommandLine {
    /// JSON form: run as given.
    Exec(Vec<String>),
    /// Shell form: wrapped in the SHELL at build time.
    Shell(String),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Kind {
    From(From),
    Run(Run),
    Cmd(CommandLine),
    Entrypoint(CommandLine),
    Shell(Vec<String>),
    Env(Vec<KeyValue>),
    Label(Vec<KeyValue>),
    Arg(Vec<ArgDecl>),
    Copy(Copy),
    Add(Copy),
    Workdir(String),
    User(String),
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(Health),
    Onbuild(Box<Instruction>),
    Maintainer(String),
}

impl Kind {
    /// The instruction word, upper-case.
    pub fn name(&self) -> &'static str {
        match self {
            Kind::From(_) => "FROM",
            Kind::Run(_) => "RUN",
            Kind::Cmd(_) => "CMD",
            Kind::Entrypoint(_) => "ENTRYPOINT",
            Kind::Shell(_) => "SHELL",
            Kind::Env(_) => "ENV",
            Kind::Label(_) => "LABEL",
            Kind::Arg(_) => "ARG",
            Kind::Copy(_) => "COPY",
            Kind::Add(_) => "ADD",
            Kind::Workdir(_) => "WORKDIR",
            Kind::User(_) => "USER",
            Kind::Expose(_) => "EXPOSE",
            Kind::Volume(_) => "VOLUME",
            Kind::StopSignal(_) => "STOPSIGNAL",
            Kind::Healthcheck(_) => "HEALTHCHECK",
            Kind::Onbuild(_) => "ONBUILD",
            Kind::Maintainer(_) => "MAINTAINER",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct From {
    pub image: String,
    pub alias: Option<String>,
    pub platform: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub command: CommandLine,
    pub mounts: Vec<Mount>,
    pub network: Option<NetworkMode>,
    pub security: Option<Security>,
    pub heredocs: Vec<Heredoc>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NetworkMode {
    Default,
    None,
    Host,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Security {
    Sandbox,
    Insecure,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MountKind {
    Bind,
    Cache,
    Tmpfs,
    Secret,
    Ssh,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sharing {
    Shared,
    Private,
    Locked,
}

/// A `RUN --mount` spec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mount {
    pub kind: MountKind,
    pub target: Option<String>,
    pub source: Option<String>,
    pub from: Option<String>,
    pub readonly: bool,
    pub id: Option<String>,
    pub sharing: Sharing,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub mode: Option<u32>,
    pub size: Option<u64>,
    pub required: bool,
    pub env: Option<String>,
}

/// COPY and ADD (ADD-only fields are empty for COPY).
#[derive(Debug, Clone, PartialEq)]
pub struct Copy {
    pub sources: Vec<String>,
    pub dest: String,
    pub from: Option<String>,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    pub link: bool,
    pub parents: bool,
    pub exclude: Vec<String>,
    pub heredocs: Vec<Heredoc>,
    pub checksum: Option<String>,
    pub keep_git_dir: bool,
    pub unpack: Option<bool>,
}

/// `key=value` of ENV and LABEL, both raw (quotes and `$` kept).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: String,
}

/// `ARG name[=default]`, raw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArgDecl {
    pub name: String,
    pub default: Option<String>,
}

/// HEALTHCHECK, durations in nanoseconds.
#[derive(Debug, Clone, PartialEq)]
pub enum Health {
    None,
    Cmd {
        test: CommandLine,
        interval: i64,
        timeout: i64,
        start_period: i64,
        start_interval: i64,
        retries: i64,
    },
}

/// All instruction words, for suggestions.
const INSTRUCTIONS: [&str; 18] = [
    "ADD",
    "ARG",
    "CMD",
    "COPY",
    "ENTRYPOINT",
    "ENV",
    "EXPOSE",
    "FROM",
    "HEALTHCHECK",
    "LABEL",
    "MAINTAINER",
    "ONBUILD",
    "RUN",
    "SHELL",
    "STOPSIGNAL",
    "USER",
    "VOLUME",
    "WORKDIR",
];

/// Parses and validates a Dockerfile. `file` names it in errors.
pub fn parse_dockerfile(file: &str, source: &str) -> Result<Dockerfile, ParseError> {
    let raw: RawDockerfile =
        node::parse(source).map_err(|e| ParseError::new(file, source, e.pos, e.message))?;
    let mut instructions = Vec::new();
    for n in raw.nodes {
        instructions.push(typed(file, source, n, false)?);
    }
    Ok(Dockerfile {
        instructions,
        directives: raw.directives,
        escape: raw.escape,
        warnings: raw.warnings,
    })
}

/// Parses one instruction line on its own (for `--change`, ONBUILD triggers).
pub fn parse_instruction(file: &str, line: &str) -> Result<Instruction, ParseError> {
    let df = parse_dockerfile(file, line)?;
    let mut it = df.instructions.into_iter();
    match (it.next(), it.next()) {
        (Some(i), None) => Ok(i),
        _ => Err(ParseError::new(
            file,
            line,
            Pos { line: 1, col: 1 },
            "expected exactly one instruction",
        )),
    }
}

/// One raw instruction being typed: its node and what errors name.
struct Line<'a> {
    file: &'a str,
    source: &'a str,
    /// The instruction word, upper-case.
    name: &'static str,
    n: Node,
}

impl<'a> Line<'a> {
    fn at(&self, pos: Pos, m: impl Into<String>) -> ParseError {
        ParseError::new(self.file, self.source, pos, m)
    }

    /// An error at the instruction's arguments.
    fn at_args(&self, m: impl Into<String>) -> ParseError {
        self.at(self.n.rest_pos, m)
    }

    /// The flags, checked against those the instruction accepts (and may repeat).
    fn flags(&self, allowed: &[&str], repeatable: &[&str]) -> Result<Flags<'a>, ParseError> {
        Flags::new(
            self.file,
            self.source,
            self.name,
            &self.n.flags,
            allowed,
            repeatable,
        )
    }

    /// No flag is accepted.
    fn no_flags(&self) -> Result<(), ParseError> {
        self.flags(&[], &[]).map(|_| ())
    }

    /// At least one argument is required.
    fn some_args(&self) -> Result<(), ParseError> {
        if self.n.args.is_empty() {
            return Err(self.at_args(format!("{} requires at least one argument", self.name)));
        }
        Ok(())
    }

    /// No flag, exactly one argument.
    fn exactly_one(&self) -> Result<String, ParseError> {
        self.no_flags()?;
        match self.n.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(self.at_args(format!("{} requires exactly one argument", self.name))),
        }
    }

    /// The arguments, taken out of the node.
    fn take_args(&mut self) -> Vec<String> {
        std::mem::take(&mut self.n.args)
    }

    /// The command of RUN, CMD or ENTRYPOINT: the exec (JSON) form or the shell form.
    fn command_line(&mut self) -> CommandLine {
        let args = self.take_args();
        if self.n.json {
            CommandLine::Exec(args)
        } else {
            CommandLine::Shell(args.into_iter().next().unwrap_or_default())
        }
    }
}

/// Types one raw instruction (`in_onbuild`: it is an ONBUILD trigger).
fn typed(file: &str, source: &str, n: Node, in_onbuild: bool) -> Result<Instruction, ParseError> {
    let Some(name) = INSTRUCTIONS.iter().find(|i| i.eq_ignore_ascii_case(&n.cmd)) else {
        let hint = suggest(&n.cmd, &INSTRUCTIONS)
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        let m = format!("unknown instruction: {}{hint}", n.original_cmd);
        return Err(ParseError::new(file, source, n.start, m));
    };
    let mut l = Line {
        file,
        source,
        name,
        n,
    };
    let kind = match l.name {
        "FROM" => from::from(&l)?,
        "RUN" => run::run(&mut l)?,
        "COPY" | "ADD" => copy::copy(&mut l)?,
        "ONBUILD" => metadata::onbuild(&mut l, in_onbuild)?,
        _ => metadata::metadata(&mut l)?,
    };
    Ok(Instruction {
        kind,
        pos: l.n.start,
        end_line: l.n.end_line,
        original: l.n.original,
    })
}

/// `[a-z][a-z0-9-_.]*`, case-insensitive.
pub fn valid_stage_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '-' | '_' | '.'))
}

/// The closest candidate by edit distance, if close enough to be a likely typo.
pub fn suggest<'c>(word: &str, candidates: &[&'c str]) -> Option<&'c str> {
    let w = word.to_lowercase();
    candidates
        .iter()
        .map(|c| (levenshtein(&w, &c.to_lowercase()), *c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 4) && *d > 0)
        .min()
        .map(|(_, c)| c)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(df: &str) -> String {
        parse_dockerfile("Dockerfile", df).unwrap_err().to_string()
    }

    #[test]
    fn typed_instructions() {
        let df = "FROM --platform=linux/amd64 busybox AS Build\nRUN --mount=type=cache,target=/c,id=x --network=none make\nCOPY --from=build --chmod=755 --exclude=*.md a b /dst/\nHEALTHCHECK --interval=5s --retries=3 CMD [\"true\"]\nONBUILD RUN echo hi\n";
        let d = parse_dockerfile("Dockerfile", df).unwrap();
        let Kind::From(f) = &d.instructions[0].kind else {
            panic!()
        };
        assert_eq!(f.alias.as_deref(), Some("build"));
        assert_eq!(f.platform.as_deref(), Some("linux/amd64"));
        let Kind::Run(r) = &d.instructions[1].kind else {
            panic!()
        };
        assert_eq!(r.mounts[0].kind, MountKind::Cache);
        assert_eq!(r.network, Some(NetworkMode::None));
        assert_eq!(r.command, CommandLine::Shell("make".into()));
        let Kind::Copy(c) = &d.instructions[2].kind else {
            panic!()
        };
        assert_eq!(c.sources, vec!["a", "b"]);
        assert_eq!(c.dest, "/dst/");
        assert_eq!(c.exclude, vec!["*.md"]);
        let Kind::Healthcheck(Health::Cmd {
            interval, retries, ..
        }) = &d.instructions[3].kind
        else {
            panic!()
        };
        assert_eq!((*interval, *retries), (5_000_000_000, 3));
        assert!(matches!(d.instructions[4].kind, Kind::Onbuild(_)));
    }

    #[test]
    fn errors_name_line_and_column() {
        assert_eq!(
            err("FROM x\nFNTRYPOINT [\"a\"]\n"),
            "Dockerfile:2:1: unknown instruction: FNTRYPOINT (did you mean ENTRYPOINT?)"
        );
        assert_eq!(
            err("FROM x\nCOPY --chmod=64a a b\n"),
            "Dockerfile:2:6: invalid chmod value \"64a\""
        );
        assert_eq!(
            err("FROM x\nCOPY --nope a b\n"),
            "Dockerfile:2:6: unknown flag: --nope for COPY"
        );
        assert!(err("FROM x\nONBUILD ONBUILD RUN x\n").contains("Chaining ONBUILD"));
        assert!(
            err("FROM x\nRUN --mount=type=cache,target=/x,bogus=1 true\n")
                .contains("unexpected key 'bogus'")
        );
        assert!(err("FROM x\nRUN --mount=type=cache,id=../../x,target=/x true\n").contains("'..'"));
        assert!(err("FROM x\nCOPY --from=$X a b\n")
            .contains("variable expansion is not supported for --from"));
        assert!(err("FROM x AS 1bad\n").contains("invalid name for build stage"));
        assert!(err("FROM x\nRUN <<EOF\nno end\n").contains("unterminated heredoc"));
        assert!(err("").contains("file with no instructions"));
    }

    #[test]
    fn caret_points_at_the_column() {
        let e = parse_dockerfile("Dockerfile", "FROM x\nCOPY --chmod=64a a b\n").unwrap_err();
        assert_eq!(e.render(), "Dockerfile:2:6: invalid chmod value \"64a\"\n   2 | COPY --chmod=64a a b\n            ^");
    }
}
