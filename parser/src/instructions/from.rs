//! FROM: the image (or stage) a stage starts from, its alias and `--platform`.

use super::{valid_stage_name, From, Kind, Line};
use crate::error::ParseError;

pub(super) fn from(l: &Line) -> Result<Kind, ParseError> {
    let platform = l.flags(&["platform"], &[])?.string("platform")?;
    let (image, alias) = match l.n.args.as_slice() {
        [image] => (image, None),
        [image, as_, alias] if as_.eq_ignore_ascii_case("as") => {
            if !valid_stage_name(alias) {
                return Err(l.at_args(format!(
                    "invalid name for build stage: {alias:?}, name can't start with a number or contain symbols"
                )));
            }
            (image, Some(alias.to_lowercase()))
        }
        _ => return Err(l.at_args("FROM requires either one or three arguments")),
    };
    Ok(Kind::From(From {
        image: image.clone(),
        alias,
        platform,
    }))
}
