//! Flags of one instruction (`--name[=value]`), checked against what it accepts: an unknown
//! flag is an error with the closest known one suggested, a repeated one an error unless it
//! may repeat.

use super::suggest;
use crate::error::{ParseError, Pos};
use crate::grammar;
use crate::node::RawFlag;

/// Flags of one instruction, checked against what it accepts.
pub(super) struct Flags<'a> {
    file: &'a str,
    source: &'a str,
    instr: &'static str,
    items: Vec<(String, Option<String>, Pos)>,
}

impl<'a> Flags<'a> {
    pub(super) fn new(
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
    pub(super) fn string(&self, name: &str) -> Result<Option<String>, ParseError> {
        match self.items.iter().find(|(n, _, _)| n == name) {
            None => Ok(None),
            Some((_, Some(v), _)) => Ok(Some(v.clone())),
            Some((_, None, pos)) => {
                Err(self.err(*pos, format!("missing a value on flag: --{name}")))
            }
        }
    }

    pub(super) fn strings(&self, name: &str) -> Result<Vec<(String, Pos)>, ParseError> {
        self.items
            .iter()
            .filter(|(n, _, _)| n == name)
            .map(|(_, v, pos)| match v {
                Some(v) => Ok((v.clone(), *pos)),
                None => Err(self.err(*pos, format!("missing a value on flag: --{name}"))),
            })
            .collect()
    }

    pub(super) fn bool(&self, name: &str) -> Result<Option<bool>, ParseError> {
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

    pub(super) fn pos(&self, name: &str) -> Pos {
        self.items
            .iter()
            .find(|(n, _, _)| n == name)
            .map(|x| x.2)
            .unwrap_or_default()
    }

    pub(super) fn duration(&self, name: &str) -> Result<i64, ParseError> {
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
