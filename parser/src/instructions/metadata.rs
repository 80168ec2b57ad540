//! ARG and the instructions that only change the image config: ENV, LABEL, CMD, ENTRYPOINT,
//! SHELL, WORKDIR, USER, EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, MAINTAINER, and ONBUILD
//! (whose trigger is typed as an instruction of its own).

use super::{typed, ArgDecl, CommandLine, Health, KeyValue, Kind, Line};
use crate::error::ParseError;
use crate::grammar;

const HEALTH_FLAGS: &[&str] = &[
    "interval",
    "timeout",
    "start-period",
    "start-interval",
    "retries",
];

/// Every instruction of this family but ONBUILD.
pub(super) fn metadata(l: &mut Line) -> Result<Kind, ParseError> {
    Ok(match l.name {
        "CMD" => {
            l.no_flags()?;
            Kind::Cmd(l.command_line())
        }
        "ENTRYPOINT" => {
            l.no_flags()?;
            Kind::Entrypoint(l.command_line())
        }
        "SHELL" => {
            l.no_flags()?;
            if !l.n.json {
                return Err(l.at_args("SHELL requires the arguments to be in JSON form"));
            }
            l.some_args()?;
            Kind::Shell(l.take_args())
        }
        "ENV" => Kind::Env(key_values(l)?),
        "LABEL" => Kind::Label(key_values(l)?),
        "ARG" => Kind::Arg(arg_decls(l)?),
        "WORKDIR" => Kind::Workdir(l.exactly_one()?),
        "USER" => Kind::User(l.exactly_one()?),
        "STOPSIGNAL" => Kind::StopSignal(l.exactly_one()?),
        "MAINTAINER" => Kind::Maintainer(l.exactly_one()?),
        "EXPOSE" => {
            l.no_flags()?;
            l.some_args()?;
            for p in l.n.args.iter().filter(|p| !p.contains('$')) {
                grammar::parse_port(p).map_err(|e| l.at_args(e))?;
            }
            Kind::Expose(l.take_args())
        }
        "VOLUME" => {
            l.no_flags()?;
            if l.n.args.is_empty() || l.n.args.iter().any(|a| a.trim().is_empty()) {
                return Err(l.at_args("VOLUME specified can not be an empty string"));
            }
            Kind::Volume(l.take_args())
        }
        "HEALTHCHECK" => Kind::Healthcheck(healthcheck(l)?),
        other => unreachable!("{other} is not a metadata instruction"),
    })
}

/// ENV and LABEL: `key value` or `key=value` pairs (the raw parse gives triples).
fn key_values(l: &Line) -> Result<Vec<KeyValue>, ParseError> {
    l.no_flags()?;
    l.some_args()?;
    let mut kvs = Vec::new();
    for t in l.n.args.chunks(3) {
        if t[0].is_empty() {
            return Err(l.at_args(format!("{} names can not be blank", l.name)));
        }
        kvs.push(KeyValue {
            key: t[0].clone(),
            value: t[1].clone(),
        });
    }
    Ok(kvs)
}

/// ARG: names with optional defaults.
fn arg_decls(l: &Line) -> Result<Vec<ArgDecl>, ParseError> {
    l.no_flags()?;
    l.some_args()?;
    let mut decls = Vec::new();
    for a in &l.n.args {
        let (name, default) = match a.split_once('=') {
            Some((k, v)) => (k.to_string(), Some(v.to_string())),
            None => (a.clone(), None),
        };
        if name.is_empty() {
            return Err(l.at_args("ARG names can not be blank"));
        }
        decls.push(ArgDecl { name, default });
    }
    Ok(decls)
}

/// HEALTHCHECK NONE, or CMD with its timing flags.
fn healthcheck(l: &Line) -> Result<Health, ParseError> {
    let f = l.flags(HEALTH_FLAGS, &[])?;
    let args = &l.n.args;
    let Some(kind) = args.first() else {
        return Err(l.at_args("HEALTHCHECK requires an argument (CMD or NONE)"));
    };
    match kind.to_uppercase().as_str() {
        "NONE" => {
            if args.len() > 1 || !l.n.flags.is_empty() {
                return Err(l.at_args("HEALTHCHECK NONE takes no arguments"));
            }
            Ok(Health::None)
        }
        "CMD" => {
            if args.len() < 2 {
                return Err(l.at_args("HEALTHCHECK CMD requires a command"));
            }
            let test = if l.n.json {
                CommandLine::Exec(args[1..].to_vec())
            } else {
                CommandLine::Shell(args[1].clone())
            };
            let retries = match f.string("retries")? {
                None => 0,
                Some(r) => r.parse::<i64>().ok().filter(|r| *r >= 0).ok_or_else(|| {
                    l.at(
                        f.pos("retries"),
                        format!("HEALTHCHECK --retries must be a non-negative integer, not {r:?}"),
                    )
                })?,
            };
            Ok(Health::Cmd {
                test,
                interval: f.duration("interval")?,
                timeout: f.duration("timeout")?,
                start_period: f.duration("start-period")?,
                start_interval: f.duration("start-interval")?,
                retries,
            })
        }
        other => Err(l.at_args(format!("Unknown type {other:?} in HEALTHCHECK (try CMD)"))),
    }
}

/// ONBUILD: the trigger, typed (never another ONBUILD, a FROM or a MAINTAINER).
pub(super) fn onbuild(l: &mut Line, in_onbuild: bool) -> Result<Kind, ParseError> {
    const CHAINED: &str = "Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed";
    l.no_flags()?;
    if in_onbuild {
        return Err(l.at(l.n.start, CHAINED));
    }
    let Some(child) = l.n.next.take() else {
        return Err(l.at_args("ONBUILD requires at least one argument"));
    };
    match child.cmd.as_str() {
        "onbuild" => return Err(l.at_args(CHAINED)),
        "from" | "maintainer" => {
            return Err(l.at_args(format!(
                "{} isn't allowed as an ONBUILD trigger",
                child.cmd.to_uppercase()
            )))
        }
        _ => {}
    }
    let inner = typed(l.file, l.source, *child, true)?;
    Ok(Kind::Onbuild(Box::new(inner)))
}
