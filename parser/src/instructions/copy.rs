//! COPY and ADD: sources and destination, and the flags each accepts (`--from`, `--chown`,
//! `--chmod`, `--link`, `--parents`, `--exclude`; ADD: `--checksum`, `--keep-git-dir`,
//! `--unpack`), checked where they are not variables.

use super::flags::Flags;
use super::{Copy, Kind, Line};
use crate::error::ParseError;
use crate::grammar;

const COPY_FLAGS: &[&str] = &["from", "chown", "chmod", "link", "parents", "exclude"];
const ADD_FLAGS: &[&str] = &[
    "chown",
    "chmod",
    "link",
    "checksum",
    "keep-git-dir",
    "exclude",
    "unpack",
];

pub(super) fn copy(l: &mut Line) -> Result<Kind, ParseError> {
    let add = l.name == "ADD";
    let f = l.flags(if add { ADD_FLAGS } else { COPY_FLAGS }, &["exclude"])?;
    if l.n.args.len() < 2 {
        return Err(l.at_args(format!("{} requires at least two arguments, but only one was provided. Destination could not be determined", l.name)));
    }
    let from = checked_from(l, &f)?;
    let chmod = f.string("chmod")?;
    if let Some(c) = chmod.as_deref().filter(|c| !c.contains('$')) {
        grammar::parse_chmod(c).map_err(|e| l.at(f.pos("chmod"), e))?;
    }
    let checksum = checked_checksum(l, &f)?;
    let exclude: Vec<String> = f.strings("exclude")?.into_iter().map(|x| x.0).collect();
    for pattern in &exclude {
        crate::ignore::Pattern::new(pattern)
            .map_err(|e| l.at(f.pos("exclude"), format!("--exclude={pattern}: {e}")))?;
    }
    let mut sources = l.take_args();
    let dest = sources.pop().expect("two or more args");
    let copy = Copy {
        sources,
        dest,
        from,
        chown: f.string("chown")?,
        chmod,
        link: f.bool("link")?.unwrap_or(false),
        parents: f.bool("parents")?.unwrap_or(false),
        exclude,
        heredocs: std::mem::take(&mut l.n.heredocs),
        checksum,
        keep_git_dir: f.bool("keep-git-dir")?.unwrap_or(false),
        unpack: f.bool("unpack")?,
    };
    Ok(if add {
        Kind::Add(copy)
    } else {
        Kind::Copy(copy)
    })
}

/// `--from`: a stage name, index or image, written without variables (BuildKit's rule).
fn checked_from(l: &Line, f: &Flags) -> Result<Option<String>, ParseError> {
    let from = f.string("from")?;
    if let Some(fr) = &from {
        if fr.contains('$') {
            return Err(l.at(f.pos("from"), format!("variable expansion is not supported for --from, define a new stage with FROM using ARG from global scope as a workaround (--from={fr})")));
        }
        if fr.is_empty() {
            return Err(l.at(
                f.pos("from"),
                "--from requires a stage name, index or image",
            ));
        }
    }
    Ok(from)
}

/// `--checksum`: a content digest (URLs), or a commit id (git sources, as BuildKit accepts).
fn checked_checksum(l: &Line, f: &Flags) -> Result<Option<String>, ParseError> {
    let checksum = f.string("checksum")?;
    if let Some(c) = checksum.as_deref().filter(|c| !c.contains('$')) {
        let hex = |h: &str| h.bytes().all(|b| b.is_ascii_hexdigit());
        let ok = match c.strip_prefix("sha256:") {
            Some(h) => h.len() == 64 && hex(h),
            None => (7..=64).contains(&c.len()) && hex(c),
        };
        if !ok {
            return Err(l.at(
                f.pos("checksum"),
                format!(
                    "invalid checksum {c:?}: want sha256: and 64 hex digits (or a git commit id)"
                ),
            ));
        }
    }
    Ok(checksum)
}
