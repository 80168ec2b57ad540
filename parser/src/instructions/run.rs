//! RUN: the command, `--network`, `--security`, and the `--mount` values (bind, cache,
//! tmpfs, secret, ssh) with BuildKit's defaults per type.

use super::{Kind, Line, Mount, MountKind, NetworkMode, Run, Security, Sharing};
use crate::error::ParseError;
use crate::grammar;

pub(super) fn run(l: &mut Line) -> Result<Kind, ParseError> {
    let f = l.flags(&["mount", "network", "security"], &["mount"])?;
    l.some_args()?;
    let mut mounts = Vec::new();
    for (spec, pos) in f.strings("mount")? {
        mounts.push(parse_mount(&spec).map_err(|m| l.at(pos, m))?);
    }
    let network = match f.string("network")?.as_deref() {
        None => None,
        Some("default") => Some(NetworkMode::Default),
        Some("none") => Some(NetworkMode::None),
        Some("host") => Some(NetworkMode::Host),
        Some(other) => {
            return Err(l.at(
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
            return Err(l.at(
                f.pos("security"),
                format!("unsupported security mode {other:?} (use sandbox or insecure)"),
            ))
        }
    };
    Ok(Kind::Run(Run {
        command: l.command_line(),
        mounts,
        network,
        security,
        heredocs: std::mem::take(&mut l.n.heredocs),
    }))
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
    // The type decides defaults and which keys are allowed, so find it first.
    for f in &fields {
        if let Some(t) = f.strip_prefix("type=") {
            m.kind = mount_kind(t)
                .ok_or_else(|| format!("unsupported mount type {t:?} in --mount={spec}"))?;
        }
    }
    let mut rw_set = false;
    for f in &fields {
        rw_set |= mount_field(&mut m, spec, f)?;
    }
    if m.kind == MountKind::Bind && !rw_set {
        m.readonly = true;
    }
    mount_defaults(&mut m, spec)?;
    Ok(m)
}

fn mount_kind(t: &str) -> Option<MountKind> {
    Some(match t {
        "bind" => MountKind::Bind,
        "cache" => MountKind::Cache,
        "tmpfs" => MountKind::Tmpfs,
        "secret" => MountKind::Secret,
        "ssh" => MountKind::Ssh,
        _ => return None,
    })
}

/// Applies one `key[=value]` field of a `--mount`; true when it was `rw`.
fn mount_field(m: &mut Mount, spec: &str, f: &str) -> Result<bool, String> {
    let (key, value) = match f.split_once('=') {
        Some((k, v)) => (k.to_ascii_lowercase(), Some(v.to_string())),
        None => (f.to_ascii_lowercase(), None),
    };
    let need = |v: Option<String>| v.ok_or_else(|| format!("--mount={spec}: {key} needs a value"));
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
            return Ok(true);
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
            m.size =
                Some(parse_size(&v).ok_or_else(|| format!("--mount={spec}: invalid size {v:?}"))?);
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
    Ok(false)
}

/// What a mount type fills in when it is not written (and what it cannot do without).
fn mount_defaults(m: &mut Mount, spec: &str) -> Result<(), String> {
    match m.kind {
        MountKind::Secret => {
            if m.id.is_none() {
                m.id = m
                    .target
                    .as_deref()
                    .and_then(|t| t.rsplit('/').next())
                    .map(str::to_string);
            }
            let Some(id) = &m.id else {
                return Err(format!(
                    "--mount={spec}: secret mount needs an id or a target"
                ));
            };
            if m.target.is_none() && m.env.is_none() {
                m.target = Some(format!("/run/secrets/{id}"));
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
    Ok(())
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
