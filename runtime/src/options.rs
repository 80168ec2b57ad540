//! The typed values of container flags (`run`/`create`): each flag's text is parsed once, at
//! the CLI boundary, into one of these, with a one-line error naming the flag and value;
//! everything after (the record, the monitor, the init) reads the typed value.
//!
//! Main types: [`VolumeSpec`] (`-v`), [`NetworkMode`] (`--network`), [`NamespaceMode`]
//! (`--uts`, `--ipc`), [`SecurityOpt`] (`--security-opt`), [`Capability`] (`--cap-add`,
//! `--cap-drop`), [`StopSignal`] (`--stop-signal`, `STOPSIGNAL`).
//!
//! Key design decision: in the container record each value is stored as the text Docker
//! stores (`"/src:/dst:ro"`, `"host"`, `"no-new-privileges"`), so records written before
//! these types existed read back, and `inspect` prints what Docker prints; the text is
//! parsed again only when a record is read, never by the code that uses it.

use std::fmt;
use std::path::PathBuf;
use std::str::FromStr;

use nix::sys::signal::Signal;

pub use crate::caps::Capability;

use crate::RuntimeError;

/// A `-v` value: `/ctr` (an anonymous volume), `NAME:/ctr[:MODES]` (a named volume) or
/// `/host:/ctr[:MODES]` (a bind mount of a host path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VolumeSpec {
    Anonymous {
        target: String,
    },
    Named {
        name: String,
        target: String,
        /// The modes as written (`ro`, `rw,z`…), kept for `inspect`.
        modes: String,
        readonly: bool,
    },
    Bind {
        source: PathBuf,
        target: String,
        modes: String,
        readonly: bool,
    },
}

impl VolumeSpec {
    /// Where it is mounted in the container.
    pub fn target(&self) -> &str {
        match self {
            VolumeSpec::Anonymous { target }
            | VolumeSpec::Named { target, .. }
            | VolumeSpec::Bind { target, .. } => target,
        }
    }

    pub fn readonly(&self) -> bool {
        match self {
            VolumeSpec::Anonymous { .. } => false,
            VolumeSpec::Named { readonly, .. } | VolumeSpec::Bind { readonly, .. } => *readonly,
        }
    }

    /// The host side as `ps --format {{.Mounts}}` and `inspect` name it: the volume's name
    /// or the host path.
    pub fn source_text(&self) -> String {
        match self {
            VolumeSpec::Anonymous { .. } => String::new(),
            VolumeSpec::Named { name, .. } => name.clone(),
            VolumeSpec::Bind { source, .. } => source.display().to_string(),
        }
    }

    /// The modes as written.
    pub fn modes(&self) -> &str {
        match self {
            VolumeSpec::Anonymous { .. } => "",
            VolumeSpec::Named { modes, .. } | VolumeSpec::Bind { modes, .. } => modes,
        }
    }
}

impl FromStr for VolumeSpec {
    type Err = RuntimeError;

    fn from_str(b: &str) -> Result<VolumeSpec, RuntimeError> {
        let invalid = |why: String| {
            RuntimeError::Invalid(format!("invalid volume specification {b:?}: {why}"))
        };
        let parts: Vec<&str> = b.split(':').collect();
        let (src, dst, modes) = match parts.as_slice() {
            [d] => ("", *d, ""),
            [s, d] => (*s, *d, ""),
            [s, d, m] => (*s, *d, *m),
            _ => {
                return Err(invalid(
                    "expected HOST-PATH:CONTAINER-PATH or NAME:CONTAINER-PATH".into(),
                ))
            }
        };
        if !dst.starts_with('/') {
            return Err(invalid("the container path must be absolute".into()));
        }
        if src.is_empty() {
            if dst.trim_end_matches('/').is_empty() {
                return Err(invalid("destination can't be '/'".into()));
            }
            return Ok(VolumeSpec::Anonymous {
                target: dst.to_string(),
            });
        }
        let readonly = readonly_mode(modes).ok_or_else(|| {
            RuntimeError::Invalid(format!("invalid volume mode {modes:?} in {b:?}"))
        })?;
        let (target, modes) = (dst.to_string(), modes.to_string());
        if src.starts_with('/') {
            return Ok(VolumeSpec::Bind {
                source: PathBuf::from(src),
                target,
                modes,
                readonly,
            });
        }
        if !valid_volume_name(src) {
            return Err(invalid(format!(
                "{src:?} includes invalid characters for a volume name, only [a-zA-Z0-9][a-zA-Z0-9_.-] are allowed; a host directory needs an absolute path"
            )));
        }
        Ok(VolumeSpec::Named {
            name: src.to_string(),
            target,
            modes,
            readonly,
        })
    }
}

impl fmt::Display for VolumeSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            VolumeSpec::Anonymous { target } => f.write_str(target),
            _ => {
                write!(f, "{}:{}", self.source_text(), self.target())?;
                match self.modes() {
                    "" => Ok(()),
                    m => write!(f, ":{m}"),
                }
            }
        }
    }
}

stored_as_text!(VolumeSpec);

/// Docker's rule for volume names (as for container names): no path can be made of one.
pub fn valid_volume_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_alphanumeric())
        && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c))
}

/// A `-v` option's modes (comma-separated, as Docker takes them): whether it is read-only;
/// None for a mode strata does not know. `z`/`Z` relabel for SELinux, which this host does
/// not have (Docker ignores them then too); `consistent`, `cached` and `delegated` mean
/// nothing on Linux.
fn readonly_mode(modes: &str) -> Option<bool> {
    let mut readonly = false;
    for m in modes.split(',').filter(|m| !m.is_empty()) {
        match m {
            "ro" => readonly = true,
            "rw" => readonly = false,
            "z" | "Z" | "consistent" | "cached" | "delegated" | "rprivate" => {}
            _ => return None,
        }
    }
    Some(readonly)
}

/// One bind mount of a host path into the container (`--mount type=bind`, a build's
/// `RUN --mount`): given structurally, so paths may hold ':'.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct BindMount {
    pub source: PathBuf,
    pub target: String,
    pub readonly: bool,
}

/// One mount `create`/`run` asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountRequest {
    /// `-v` (or `--mount type=volume`).
    Volume(VolumeSpec),
    /// `--mount type=bind`: the source must exist (checked at create); `spec` as written.
    Bind { mount: BindMount, spec: String },
    /// `--tmpfs PATH[:OPTIONS]`, `--mount type=tmpfs`.
    Tmpfs { target: String, options: String },
}

impl MountRequest {
    /// `--tmpfs PATH[:OPTIONS]`.
    pub fn tmpfs(t: &str) -> Result<MountRequest, RuntimeError> {
        let (path, opts) = t.split_once(':').unwrap_or((t, ""));
        if !path.starts_with('/') {
            return Err(RuntimeError::Invalid(format!(
                "invalid --tmpfs {t:?}: the path must be absolute"
            )));
        }
        Ok(MountRequest::Tmpfs {
            target: path.to_string(),
            options: opts.to_string(),
        })
    }

    /// Docker's `--mount type=bind|volume|tmpfs,source=…,target=…[,readonly]
    /// [,tmpfs-size=…][,tmpfs-mode=…]` (`src`, `dst`, `destination`, `ro` as aliases);
    /// unknown keys are errors.
    pub fn mount_flag(spec: &str) -> Result<MountRequest, RuntimeError> {
        let bad =
            |why: String| RuntimeError::Invalid(format!("invalid mount config {spec:?}: {why}"));
        let (mut kind, mut source, mut target, mut readonly) =
            ("volume".to_string(), None, None, false);
        let mut tmpfs_opts = Vec::new();
        for field in spec.split(',') {
            let (k, v) = match field.split_once('=') {
                Some((k, v)) => (k, Some(v)),
                None => (field, None),
            };
            match (k, v) {
                ("type", Some(v)) => kind = v.to_string(),
                ("source" | "src", Some(v)) => source = Some(v.to_string()),
                ("target" | "dst" | "destination", Some(v)) => target = Some(v.to_string()),
                ("readonly" | "ro", None) => readonly = true,
                ("readonly" | "ro", Some(v)) => {
                    readonly = match v {
                        "true" | "1" => true,
                        "false" | "0" => false,
                        _ => return Err(bad(format!("invalid value for {k}: {v:?}"))),
                    }
                }
                ("tmpfs-size", Some(v)) => tmpfs_opts.push(format!("size={v}")),
                ("tmpfs-mode", Some(v)) => tmpfs_opts.push(format!("mode={v}")),
                ("bind-propagation" | "volume-nocopy", _) => {}
                _ => return Err(bad(format!("unexpected key {k:?}"))),
            }
        }
        let target = target.ok_or_else(|| bad("target is required".into()))?;
        if !target.starts_with('/') {
            return Err(bad(format!("target {target:?} must be an absolute path")));
        }
        match kind.as_str() {
            "bind" => {
                let source =
                    source.ok_or_else(|| bad("source is required for a bind mount".into()))?;
                if !source.starts_with('/') {
                    return Err(bad(format!(
                        "bind source {source:?} must be an absolute path"
                    )));
                }
                let mount = BindMount {
                    source: source.into(),
                    target,
                    readonly,
                };
                Ok(MountRequest::Bind {
                    mount,
                    spec: spec.to_string(),
                })
            }
            "volume" => {
                let name = source.unwrap_or_else(|| strata_cache::fsutil::random_hex(32));
                if !valid_volume_name(&name) || target.contains(':') {
                    return Err(bad(format!("invalid volume name {name:?}")));
                }
                Ok(MountRequest::Volume(VolumeSpec::Named {
                    name,
                    target,
                    modes: if readonly { "ro".into() } else { String::new() },
                    readonly,
                }))
            }
            "tmpfs" if source.is_some() => Err(bad("a tmpfs mount takes no source".into())),
            "tmpfs" => Ok(MountRequest::Tmpfs {
                target,
                options: tmpfs_opts.join(","),
            }),
            other => Err(bad(format!(
                "mount type {other:?} is not supported (bind, volume, tmpfs)"
            ))),
        }
    }
}

/// `--network`: the container's network namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum NetworkMode {
    /// A new namespace with only loopback.
    None,
    /// The host's namespace.
    Host,
    /// A new namespace on the default network (`bridge`, also what `default` means).
    #[default]
    Bridge,
    /// A new namespace on the user-defined network of that name (or id).
    Named(String),
    /// The namespace of another container (`container:NAME`).
    Container(String),
}

impl NetworkMode {
    /// The network a new namespace is attached to, if any (`bridge` for the default one).
    pub fn network_name(&self) -> Option<&str> {
        match self {
            NetworkMode::Bridge => Some("bridge"),
            NetworkMode::Named(n) => Some(n),
            _ => None,
        }
    }

    /// Docker's text: `none`, `host`, `bridge`, the network's name, `container:NAME`.
    pub fn text(&self) -> String {
        match self {
            NetworkMode::None => "none".into(),
            NetworkMode::Host => "host".into(),
            NetworkMode::Bridge => "bridge".into(),
            NetworkMode::Named(n) => n.clone(),
            NetworkMode::Container(c) => format!("container:{c}"),
        }
    }
}

impl FromStr for NetworkMode {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<NetworkMode, RuntimeError> {
        match s {
            // Records from before strata had networks hold "" and ran with loopback only.
            "" | "none" => Ok(NetworkMode::None),
            "host" => Ok(NetworkMode::Host),
            "default" | "bridge" => Ok(NetworkMode::Bridge),
            c if c.starts_with("container:") => match &c["container:".len()..] {
                "" => Err(RuntimeError::Invalid(
                    "invalid --network container:: a container name or id is needed".into(),
                )),
                name => Ok(NetworkMode::Container(name.to_string())),
            },
            name => Ok(NetworkMode::Named(name.to_string())),
        }
    }
}

impl fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text())
    }
}

stored_as_text!(NetworkMode);

/// `--pid`: a pid namespace of the container's own (its init is pid 1 there), the host's,
/// or another running container's (`container:NAME`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum PidMode {
    #[default]
    Private,
    Host,
    Container(String),
}

impl PidMode {
    pub fn is_private(&self) -> bool {
        *self == PidMode::Private
    }
}

impl FromStr for PidMode {
    type Err = RuntimeError;

    /// `--pid`'s value, also as stored ("" for a private namespace).
    fn from_str(s: &str) -> Result<Self, RuntimeError> {
        match s {
            "" | "private" => Ok(PidMode::Private),
            "host" => Ok(PidMode::Host),
            other => match other.strip_prefix("container:") {
                Some("") | None => Err(RuntimeError::Invalid(format!(
                    "invalid --pid {other:?}: host, container:NAME or a private namespace"
                ))),
                Some(name) => Ok(PidMode::Container(name.to_string())),
            },
        }
    }
}

impl fmt::Display for PidMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            PidMode::Private => Ok(()),
            PidMode::Host => f.write_str("host"),
            PidMode::Container(c) => write!(f, "container:{c}"),
        }
    }
}

stored_as_text!(PidMode);

/// `--uts`, `--ipc`: a namespace of the container's own, or the host's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum NamespaceMode {
    #[default]
    Private,
    Host,
}

impl NamespaceMode {
    /// Parses `--FLAG VALUE`: `host`, or one of the spellings of a private namespace.
    pub fn parse(flag: &str, value: &str, private: &[&str]) -> Result<Self, RuntimeError> {
        match value {
            "host" => Ok(NamespaceMode::Host),
            v if private.contains(&v) => Ok(NamespaceMode::Private),
            v => Err(RuntimeError::Invalid(format!(
                "invalid {flag} {v:?}: host or a private namespace (strata shares no other)"
            ))),
        }
    }

    pub fn is_private(&self) -> bool {
        *self == NamespaceMode::Private
    }

    pub fn is_host(&self) -> bool {
        *self == NamespaceMode::Host
    }
}

impl FromStr for NamespaceMode {
    type Err = RuntimeError;

    /// As stored: "host", or "" for a private namespace.
    fn from_str(s: &str) -> Result<Self, RuntimeError> {
        NamespaceMode::parse("namespace mode", s, &[""])
    }
}

impl fmt::Display for NamespaceMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NamespaceMode::Private => "",
            NamespaceMode::Host => "host",
        })
    }
}

stored_as_text!(NamespaceMode);

/// One `--security-opt`, with the text it was given as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecurityOpt {
    pub text: String,
    pub kind: SecurityKind,
}

/// What a `--security-opt` asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SecurityKind {
    /// `no-new-privileges[=|:true|false]`.
    NoNewPrivileges(bool),
    /// `seccomp=unconfined`.
    SeccompUnconfined,
    /// An SELinux label: this host has no SELinux, where Docker ignores them too.
    Label,
}

impl FromStr for SecurityOpt {
    type Err = RuntimeError;

    fn from_str(o: &str) -> Result<SecurityOpt, RuntimeError> {
        let kind = match o {
            "no-new-privileges" | "no-new-privileges:true" | "no-new-privileges=true" => {
                SecurityKind::NoNewPrivileges(true)
            }
            "no-new-privileges:false" | "no-new-privileges=false" => {
                SecurityKind::NoNewPrivileges(false)
            }
            "seccomp=unconfined" | "seccomp:unconfined" => SecurityKind::SeccompUnconfined,
            l if l.starts_with("label=") || l.starts_with("label:") => SecurityKind::Label,
            _ => {
                return Err(RuntimeError::Invalid(format!(
                    "invalid --security-opt {o:?} (supported: no-new-privileges[=true|false], seccomp=unconfined, label=...)"
                )))
            }
        };
        Ok(SecurityOpt {
            text: o.to_string(),
            kind,
        })
    }
}

impl fmt::Display for SecurityOpt {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

stored_as_text!(SecurityOpt);

/// The signal that stops a container (`--stop-signal`, the image's `STOPSIGNAL`), with the
/// text it was given as; none given is SIGTERM.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StopSignal {
    pub text: String,
    pub signal: Option<Signal>,
}

impl StopSignal {
    /// The signal to send.
    pub fn signal(&self) -> Signal {
        self.signal.unwrap_or(Signal::SIGTERM)
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

impl FromStr for StopSignal {
    type Err = RuntimeError;

    fn from_str(s: &str) -> Result<StopSignal, RuntimeError> {
        let signal = match s {
            "" => None,
            s => Some(crate::parse_signal(s)?),
        };
        Ok(StopSignal {
            text: s.to_string(),
            signal,
        })
    }
}

impl fmt::Display for StopSignal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

stored_as_text!(StopSignal);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn volume_specs_read_back_as_written() {
        for text in ["/ctr", "data:/d", "data:/d:ro", "/h:/c:rw,z", "/h:/c"] {
            let v: VolumeSpec = text.parse().unwrap();
            assert_eq!(v.to_string(), text);
            let json = serde_json::to_string(&v).unwrap();
            assert_eq!(serde_json::from_str::<VolumeSpec>(&json).unwrap(), v);
        }
        assert!("/h:/c:ro".parse::<VolumeSpec>().unwrap().readonly());
        assert!(matches!(
            "data:/d".parse::<VolumeSpec>().unwrap(),
            VolumeSpec::Named { .. }
        ));
    }

    #[test]
    fn bad_volume_specs_name_the_value() {
        let err = |s: &str| s.parse::<VolumeSpec>().unwrap_err().to_string();
        assert_eq!(
            err("/h:rel"),
            "invalid volume specification \"/h:rel\": the container path must be absolute"
        );
        assert_eq!(
            err("/h:/c:xx"),
            "invalid volume mode \"xx\" in \"/h:/c:xx\""
        );
        assert_eq!(
            err("/"),
            "invalid volume specification \"/\": destination can't be '/'"
        );
        assert!(err("a:b:c:d").contains("expected HOST-PATH:CONTAINER-PATH"));
    }

    #[test]
    fn stored_texts_of_modes_and_options_read_back() {
        assert_eq!(
            serde_json::to_string(&NamespaceMode::Private).unwrap(),
            "\"\""
        );
        assert_eq!(
            serde_json::from_str::<NetworkMode>("\"\"").unwrap(),
            NetworkMode::None
        );
        let o: SecurityOpt = "no-new-privileges:false".parse().unwrap();
        assert_eq!(o.kind, SecurityKind::NoNewPrivileges(false));
        assert_eq!(o.to_string(), "no-new-privileges:false");
        let s: StopSignal = "SIGINT".parse().unwrap();
        assert_eq!(s.signal(), Signal::SIGINT);
        assert_eq!(StopSignal::default().signal(), Signal::SIGTERM);
        assert!("NOPE".parse::<Capability>().is_err());
    }
}
