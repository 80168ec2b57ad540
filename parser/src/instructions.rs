//! The typed Dockerfile AST ("as written"): every instruction with its flags checked and its
//! arguments in typed fields, still unexpanded (`$VAR` stays as written; the planner expands
//! with the build's ARG/ENV scope).

use crate::error::{ParseError, Pos};
use crate::grammar;
use crate::node::{self, Directive, Heredoc, Node, RawDockerfile, RawFlag, Warning};

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

/// Flags of one instruction, checked against what it accepts.
struct Flags<'a> {
    file: &'a str,
    source: &'a str,
    instr: &'static str,
    items: Vec<(String, Option<String>, Pos)>,
}

impl<'a> Flags<'a> {
    fn new(
        file: &'a str,
        source: &'a str,
        instr: &'static str,
        raw: &[RawFlag],
        allowed: &[&str],
        repeatable: &[&str],
    ) -> Result<Self, ParseError> {
        let mut items: Vec<(String, Option<String>, Pos)> = Vec::new();
        for f in raw {
            let body = f.text.trim_start_matches("--");
            let (name, value) = match body.split_once('=') {
                Some((n, v)) => (n.to_string(), Some(v.to_string())),
                None => (body.to_string(), None),
            };
            if !allowed.contains(&name.as_str()) {
                let hint = suggest(&name, allowed)
                    .map(|s| format!(" (did you mean --{s}?)"))
                    .unwrap_or_default();
                return Err(ParseError::new(
                    file,
                    source,
                    f.pos,
                    format!("unknown flag: --{name} for {instr}{hint}"),
                ));
            }
            if !repeatable.contains(&name.as_str()) && items.iter().any(|(n, _, _)| *n == name) {
                return Err(ParseError::new(
                    file,
                    source,
                    f.pos,
                    format!("duplicate flag specified: --{name}"),
                ));
            }
            items.push((name, value, f.pos));
        }
        Ok(Flags {
            file,
            source,
            instr,
            items,
        })
    }

    fn err(&self, pos: Pos, m: String) -> ParseError {
        ParseError::new(self.file, self.source, pos, m)
    }

    /// A string flag's value (`--name=value`; a bare `--name` is an error).
    fn string(&self, name: &str) -> Result<Option<String>, ParseError> {
        match self.items.iter().find(|(n, _, _)| n == name) {
            None => Ok(None),
            Some((_, Some(v), _)) => Ok(Some(v.clone())),
            Some((_, None, pos)) => {
                Err(self.err(*pos, format!("missing a value on flag: --{name}")))
            }
        }
    }

    fn strings(&self, name: &str) -> Result<Vec<(String, Pos)>, ParseError> {
        self.items
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, v, pos)| match v {
                Some(v) => Ok((v.clone(), *pos)),
                None => Err(self.err(*pos, format!("missing a value on flag: --{name}"))),
            })
            .collect()
    }

    fn bool(&self, name: &str) -> Result<Option<bool>, ParseError> {
        match self.items.iter().find(|(n, _, _)| n == name) {
            None => Ok(None),
            Some((_, None, _)) => Ok(Some(true)),
            Some((_, Some(v), pos)) => match v.to_ascii_lowercase().as_str() {
                "true" | "1" | "" => Ok(Some(true)),
                "false" | "0" => Ok(Some(false)),
                _ => Err(self.err(
                    *pos,
                    format!("expecting boolean value for flag --{name}, not: {v}"),
                )),
            },
        }
    }

    fn pos(&self, name: &str) -> Pos {
        self.items
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|x| x.2)
            .unwrap_or_default()
    }

    fn duration(&self, name: &str) -> Result<i64, ParseError> {
        match self.string(name)? {
            None => Ok(0),
            Some(v) => {
                let d = grammar::parse_duration(&v).map_err(|e| {
                    self.err(self.pos(name), format!("{} --{name}: {e}", self.instr))
                })?;
                if d != 0 && d < 1_000_000 {
                    return Err(self.err(
                        self.pos(name),
                        format!("{} --{name} cannot be less than 1ms", self.instr),
                    ));
                }
                if d < 0 {
                    return Err(self.err(
                        self.pos(name),
                        format!("{} --{name} cannot be negative", self.instr),
                    ));
                }
                Ok(d)
            }
        }
    }
}

fn command_line(n: &mut Node) -> CommandLine {
    let args = std::mem::take(&mut n.args);
    if n.json {
        CommandLine::Exec(args)
    } else {
        CommandLine::Shell(args.into_iter().next().unwrap_or_default())
    }
}

fn typed(
    file: &str,
    source: &str,
    mut n: Node,
    in_onbuild: bool,
) -> Result<Instruction, ParseError> {
    let at = |pos: Pos, m: String| ParseError::new(file, source, pos, m);
    let name: &'static str = match INSTRUCTIONS.iter().find(|i| i.eq_ignore_ascii_case(&n.cmd)) {
        Some(i) => i,
        None => {
            let hint = suggest(&n.cmd, &INSTRUCTIONS)
                .map(|s| format!(" (did you mean {s}?)"))
                .unwrap_or_default();
            return Err(at(
                n.start,
                format!("unknown instruction: {}{hint}", n.original_cmd),
            ));
        }
    };
    let no_flags = |allowed: &[&str]| Flags::new(file, source, name, &n.flags, allowed, &[]);
    let exactly_one = || -> Result<String, ParseError> {
        no_flags(&[])?;
        match n.args.as_slice() {
            [one] => Ok(one.clone()),
            _ => Err(at(
                n.rest_pos,
                format!("{name} requires exactly one argument"),
            )),
        }
    };
    let kind = match name {
        "FROM" => {
            let f = no_flags(&["platform"])?;
            let platform = f.string("platform")?;
            match n.args.as_slice() {
                [image] => Kind::From(From {
                    image: image.clone(),
                    alias: None,
                    platform,
                }),
                [image, as_, alias] if as_.eq_ignore_ascii_case("as") => {
                    if !valid_stage_name(alias) {
                        return Err(at(
                            n.rest_pos,
                            format!("invalid name for build stage: {alias:?}, name can't start with a number or contain symbols"),
                        ));
                    }
                    Kind::From(From {
                        image: image.clone(),
                        alias: Some(alias.to_lowercase()),
                        platform,
                    })
                }
                _ => {
                    return Err(at(
                        n.rest_pos,
                        "FROM requires either one or three arguments".into(),
                    ))
                }
            }
        }
        "RUN" => {
            let f = Flags::new(
                file,
                source,
                name,
                &n.flags,
                &["mount", "network", "security"],
                &["mount"],
            )?;
            if n.args.is_empty() {
                return Err(at(n.rest_pos, "RUN requires at least one argument".into()));
            }
            let mut mounts = Vec::new();
            for (spec, pos) in f.strings("mount")? {
                mounts.push(parse_mount(&spec).map_err(|m| at(pos, m))?);
            }
            let network = match f.string("network")?.as_deref() {
                None => None,
                Some("default") => Some(NetworkMode::Default),
                Some("none") => Some(NetworkMode::None),
                Some("host") => Some(NetworkMode::Host),
                Some(other) => {
                    return Err(at(
                        f.pos("network"),
                        format!("unsupported network mode {other:?} (use default, none or host)"),
                    ))
                }
            };
            let security = match f.string("security")?.as_deref() {
                None => None,
                Some("sandbox") => Some(Security::Sandbox),
                Some("insecure") => Some(Security::Insecure),
                Some(other) => {
                    return Err(at(
                        f.pos("security"),
                        format!("unsupported security mode {other:?} (use sandbox or insecure)"),
                    ))
                }
            };
            Kind::Run(Run {
                command: command_line(&mut n),
                mounts,
                network,
                security,
                heredocs: std::mem::take(&mut n.heredocs),
            })
        }
        "CMD" | "ENTRYPOINT" => {
            no_flags(&[])?;
            let c = command_line(&mut n);
            if name == "CMD" {
                Kind::Cmd(c)
            } else {
                Kind::Entrypoint(c)
            }
        }
        "SHELL" => {
            no_flags(&[])?;
            if !n.json {
                return Err(at(
                    n.rest_pos,
                    "SHELL requires the arguments to be in JSON form".into(),
                ));
            }
            if n.args.is_empty() {
                return Err(at(
                    n.rest_pos,
                    "SHELL requires at least one argument".into(),
                ));
            }
            Kind::Shell(std::mem::take(&mut n.args))
        }
        "ENV" | "LABEL" => {
            no_flags(&[])?;
            if n.args.is_empty() {
                return Err(at(
                    n.rest_pos,
                    format!("{name} requires at least one argument"),
                ));
            }
            let mut kvs = Vec::new();
            for t in n.args.chunks(3) {
                if t[0].is_empty() {
                    return Err(at(n.rest_pos, format!("{name} names can not be blank")));
                }
                kvs.push(KeyValue {
                    key: t[0].clone(),
                    value: t[1].clone(),
                });
            }
            if name == "ENV" {
                Kind::Env(kvs)
            } else {
                Kind::Label(kvs)
            }
        }
        "ARG" => {
            no_flags(&[])?;
            if n.args.is_empty() {
                return Err(at(n.rest_pos, "ARG requires at least one argument".into()));
            }
            let mut decls = Vec::new();
            for a in &n.args {
                let (name, default) = match a.split_once('=') {
                    Some((k, v)) => (k.to_string(), Some(v.to_string())),
                    None => (a.clone(), None),
                };
                if name.is_empty() {
                    return Err(at(n.rest_pos, "ARG names can not be blank".into()));
                }
                decls.push(ArgDecl { name, default });
            }
            Kind::Arg(decls)
        }
        "COPY" | "ADD" => {
            let allowed: &[&str] = if name == "COPY" {
                &["from", "chown", "chmod", "link", "parents", "exclude"]
            } else {
                &[
                    "chown",
                    "chmod",
                    "link",
                    "checksum",
                    "keep-git-dir",
                    "exclude",
                    "unpack",
                ]
            };
            let f = Flags::new(file, source, name, &n.flags, allowed, &["exclude"])?;
            if n.args.len() < 2 {
                return Err(at(n.rest_pos, format!("{name} requires at least two arguments, but only one was provided. Destination could not be determined")));
            }
            let from = f.string("from")?;
            if let Some(fr) = &from {
                if fr.contains('$') {
                    return Err(at(f.pos("from"), format!("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround (--from={fr})")));
                }
                if fr.is_empty() {
                    return Err(at(
                        f.pos("from"),
                        "--from requires a stage name, index or image".into(),
                    ));
                }
            }
            let chmod = f.string("chmod")?;
            if let Some(c) = &chmod {
                if !c.contains('$') {
                    grammar::parse_chmod(c).map_err(|e| at(f.pos("chmod"), e))?;
                }
            }
            let checksum = f.string("checksum")?;
            if let Some(c) = &checksum {
                let hex = |h: &str| h.bytes().all(|b| b.is_ascii_hexdigit());
                // A content digest (URLs), or a commit id (git sources, as BuildKit accepts).
                let ok = match c.strip_prefix("sha256:") {
                    Some(h) => h.len() == 64 && hex(h),
                    None => (7..=64).contains(&c.len()) && hex(c),
                };
                if !ok && !c.contains('$') {
                    return Err(at(
                        f.pos("checksum"),
                        format!(
                            "invalid checksum {c:?}: want sha256: and 64 hex digits (or a git commit id)"
                        ),
                    ));
                }
            }
            let mut sources = std::mem::take(&mut n.args);
            let dest = sources.pop().expect("two or more args");
            let exclude: Vec<String> = f.strings("exclude")?.into_iter().map(|x| x.0).collect();
            for pattern in &exclude {
                crate::ignore::Pattern::new(pattern)
                    .map_err(|e| at(f.pos("exclude"), format!("--exclude={pattern}: {e}")))?;
            }
            let copy = Copy {
                sources,
                dest,
                from,
                chown: f.string("chown")?,
                chmod,
                link: f.bool("link")?.unwrap_or(false),
                parents: f.bool("parents")?.unwrap_or(false),
                exclude,
                heredocs: std::mem::take(&mut n.heredocs),
                checksum,
                keep_git_dir: f.bool("keep-git-dir")?.unwrap_or(false),
                unpack: f.bool("unpack")?,
            };
            if name == "ADD" {
                Kind::Add(copy)
            } else {
                Kind::Copy(copy)
            }
        }
        "WORKDIR" => Kind::Workdir(exactly_one()?),
        "USER" => Kind::User(exactly_one()?),
        "STOPSIGNAL" => Kind::StopSignal(exactly_one()?),
        "MAINTAINER" => Kind::Maintainer(exactly_one()?),
        "EXPOSE" => {
            no_flags(&[])?;
            if n.args.is_empty() {
                return Err(at(
                    n.rest_pos,
                    "EXPOSE requires at least one argument".into(),
                ));
            }
            for p in n.args.iter().filter(|p| !p.contains('$')) {
                grammar::parse_port(p).map_err(|e| at(n.rest_pos, e))?;
            }
            Kind::Expose(std::mem::take(&mut n.args))
        }
        "VOLUME" => {
            no_flags(&[])?;
            if n.args.is_empty() || n.args.iter().any(|a| a.trim().is_empty()) {
                return Err(at(
                    n.rest_pos,
                    "VOLUME specified can not be an empty string".into(),
                ));
            }
            Kind::Volume(std::mem::take(&mut n.args))
        }
        "HEALTHCHECK" => {
            let f = Flags::new(
                file,
                source,
                name,
                &n.flags,
                &[
                    "interval",
                    "timeout",
                    "start-period",
                    "start-interval",
                    "retries",
                ],
                &[],
            )?;
            let Some(kind) = n.args.first() else {
                return Err(at(
                    n.rest_pos,
                    "HEALTHCHECK requires an argument (CMD or NONE)".into(),
                ));
            };
            match kind.to_uppercase().as_str() {
                "NONE" => {
                    if n.args.len() > 1 || !n.flags.is_empty() {
                        return Err(at(n.rest_pos, "HEALTHCHECK NONE takes no arguments".into()));
                    }
                    Kind::Healthcheck(Health::None)
                }
                "CMD" => {
                    if n.args.len() < 2 {
                        return Err(at(n.rest_pos, "HEALTHCHECK CMD requires a command".into()));
                    }
                    let test = if n.json {
                        CommandLine::Exec(n.args[1..].to_vec())
                    } else {
                        CommandLine::Shell(n.args[1].clone())
                    };
                    let retries = match f.string("retries")? {
                        None => 0,
                        Some(r) => r.parse::<i64>().ok().filter(|r| *r >= 0).ok_or_else(|| {
                            at(f.pos("retries"), format!("HEALTHCHECK --retries must be a non-negative integer, not {r:?}"))
                        })?,
                    };
                    Kind::Healthcheck(Health::Cmd {
                        test,
                        interval: f.duration("interval")?,
                        timeout: f.duration("timeout")?,
                        start_period: f.duration("start-period")?,
                        start_interval: f.duration("start-interval")?,
                        retries,
                    })
                }
                other => {
                    return Err(at(
                        n.rest_pos,
                        format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"),
                    ))
                }
            }
        }
        "ONBUILD" => {
            no_flags(&[])?;
            if in_onbuild {
                return Err(at(
                    n.start,
                    "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                ));
            }
            let Some(child) = n.next.take() else {
                return Err(at(
                    n.rest_pos,
                    "ONBUILD requires at least one argument".into(),
                ));
            };
            match child.cmd.as_str() {
                "onbuild" => {
                    return Err(at(
                        n.rest_pos,
                        "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed".into(),
                    ))
                }
                "from" | "maintainer" => {
                    return Err(at(
                        n.rest_pos,
                        format!(
                            "{} isn't allowed as an ONBUILD trigger",
                            child.cmd.to_uppercase()
                        ),
                    ))
                }
                _ => {}
            }
            let inner = typed(file, source, *child, true)?;
            Kind::Onbuild(Box::new(inner))
        }
        _ => unreachable!("every known instruction is handled"),
    };
    Ok(Instruction {
        kind,
        pos: n.start,
        end_line: n.end_line,
        original: n.original,
    })
}

/// `[a-z][a-z0-9-_.]*`, case-insensitive.
pub fn valid_stage_name(s: &str) -> bool {
    let mut c = s.chars();
    matches!(c.next(), Some(f) if f.is_ascii_alphabetic())
        && c.all(|x| x.is_ascii_alphanumeric() || matches!(x, '-' | '_' | '.'))
}

/// Parses a `--mount` value.
pub fn parse_mount(spec: &str) -> Result<Mount, String> {
    let fields = grammar::split_csv(spec)?;
    let mut m = Mount {
        kind: MountKind::Bind,
        target: None,
        source: None,
        from: None,
        readonly: false,
        id: None,
        sharing: Sharing::Shared,
        uid: None,
        gid: None,
        mode: None,
        size: None,
        required: false,
        env: None,
    };
    // The type decides defaults, so find it first.
    for f in &fields {
        if let Some(t) = f.strip_prefix("type=") {
            m.kind = match t {
                "bind" => MountKind::Bind,
                "cache" => MountKind::Cache,
                "tmpfs" => MountKind::Tmpfs,
                "secret" => MountKind::Secret,
                "ssh" => MountKind::Ssh,
                other => {
                    return Err(format!(
                        "unsupported mount type {other:?} in --mount={spec}"
                    ))
                }
            };
        }
    }
    let mut rw_set = false;
    for f in &fields {
        let (key, value) = match f.split_once('=') {
            Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
            None => (f.to_ascii_lowercase(), None),
        };
        let need =
            |v: Option<String>| v.ok_or_else(|| format!("--mount={spec}: {key} needs a value"));
        let boolean = |v: Option<String>| match v.as_deref() {
            None | Some("true") | Some("1") => Ok(true),
            Some("false") | Some("0") => Ok(false),
            Some(o) => Err(format!("--mount={spec}: invalid value {o:?} for {key}")),
        };
        let number = |v: Option<String>| -> Result<u32, String> {
            let v = need(v)?;
            v.parse()
                .map_err(|_| format!("--mount={spec}: invalid {key} {v:?}"))
        };
        match key.as_str() {
            "type" => {}
            "target" | "dst" | "destination" => m.target = Some(need(value)?),
            "source" | "src" => m.source = Some(need(value)?),
            "from" => m.from = Some(need(value)?),
            "ro" | "readonly" => m.readonly = boolean(value)?,
            "rw" | "readwrite" => {
                m.readonly = !boolean(value)?;
                rw_set = true;
            }
            "id" => {
                let id = need(value)?;
                if id.split('/').any(|c| c == "..") {
                    return Err(format!("--mount={spec}: id {id:?} must not contain '..'"));
                }
                m.id = Some(id);
            }
            "sharing" => {
                m.sharing = match need(value)?.as_str() {
                    "shared" => Sharing::Shared,
                    "private" => Sharing::Private,
                    "locked" => Sharing::Locked,
                    o => return Err(format!("--mount={spec}: unsupported sharing value {o:?}")),
                }
            }
            "uid" => m.uid = Some(number(value)?),
            "gid" => m.gid = Some(number(value)?),
            "mode" => {
                let v = need(value)?;
                m.mode = Some(
                    u32::from_str_radix(&v, 8)
                        .map_err(|_| format!("--mount={spec}: invalid mode {v:?}"))?,
                );
            }
            "size" if m.kind == MountKind::Tmpfs => {
                let v = need(value)?;
                m.size = Some(
                    parse_size(&v).ok_or_else(|| format!("--mount={spec}: invalid size {v:?}"))?,
                );
            }
            "required" if matches!(m.kind, MountKind::Secret | MountKind::Ssh) => {
                m.required = boolean(value)?
            }
            "env" if m.kind == MountKind::Secret => m.env = Some(need(value)?),
            other => {
                return Err(format!(
                    "unexpected key '{other}' in '{f}' of --mount={spec}"
                ))
            }
        }
    }
    if m.kind == MountKind::Bind && !rw_set {
        m.readonly = true;
    }
    match m.kind {
        MountKind::Secret => {
            if m.id.is_none() {
                m.id = m
                    .target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').next())
                    .map(str::to_string);
            }
            if m.id.is_none() {
                return Err(format!(
                    "--mount={spec}: secret mount needs an id or a target"
                ));
            }
            if m.target.is_none() && m.env.is_none() {
                m.target = Some(format!(
                    "/run/secrets/{}",
                    m.id.as_deref().unwrap_or_default()
                ));
            }
        }
        MountKind::Ssh => {
            if m.target.is_none() {
                m.target = Some("/run/buildkit/ssh_agent.0".into());
            }
            if m.id.is_none() {
                m.id = Some("default".into());
            }
        }
        _ => {
            if m.target.is_none() {
                return Err(format!("--mount={spec}: target is required"));
            }
        }
    }
    Ok(m)
}

/// `64m`, `1g`, `1024` → bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.strip_suffix('b').unwrap_or(&s);
    let (num, mult) = match s.chars().last()? {
        'k' => (&s[..s.len() - 1], 1u64 << 10),
        'm' => (&s[..s.len() - 1], 1 << 20),
        'g' => (&s[..s.len() - 1], 1 << 30),
        't' => (&s[..s.len() - 1], 1 << 40),
        _ => (s, 1),
    };
    let v: f64 = num.parse().ok()?;
    if v < 0.0 || !v.is_finite() {
        return None;
    }
    Some((v * mult as f64) as u64)
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
