//! Cache keys: what a step's key covers, as typed structs.
//!
//! Main types: [`StepKey`] (the version, the parent's key, the build's epoch and the
//! [`KeyOp`] of the step), with one struct per kind of step ([`RunKey`], [`CopyKey`],
//! [`ConfigKey`]) and per `RUN --mount` ([`MountKey`]).
//!
//! Key design decision: a key is the sha256 of the canonical JSON (sorted keys, no
//! whitespace) of its [`StepKey`], so every field of these structs is in the key by default
//! and `--dry-run` explains a miss by comparing two of them field by field
//! ([`StepKey::changed_fields`]). Fields added after keys were first pinned are left out of
//! the encoding while they hold their default (`skip_serializing_if`), so the keys of steps
//! that do not use them stay what they were; `tests/keys.rs` pins the bytes.

use serde::{Deserialize, Serialize};
use strata_image::Digest;

use crate::context::{Context, Selected};
use crate::metadata::ConfigChange;

/// The version of the cache-key encoding. Bump it whenever what goes into a key changes.
pub const KEY_VERSION: &str = "strata.cache.v1";

/// Everything a step's (or a stage base's) key covers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepKey {
    /// [`KEY_VERSION`].
    pub v: String,
    /// The key of the step before (or of the stage's base); none for a base itself and for
    /// the layer-only key of `COPY --link`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Digest>,
    /// `SOURCE_DATE_EPOCH`: results carry clamped times (only when set).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub epoch: Option<i64>,
    /// The key of a `COPY --link` layer alone (rebased onto any parent).
    #[serde(default, skip_serializing_if = "is_false")]
    pub layer_only: bool,
    #[serde(flatten)]
    pub op: KeyOp,
}

/// What kind of step, with its own inputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub enum KeyOp {
    /// A stage `FROM scratch` (for a platform other than the host's: its name).
    Scratch {
        #[serde(default, skip_serializing_if = "Option::is_none")]
        platform: Option<String>,
    },
    /// A stage from an image, by ID.
    Image {
        id: Digest,
    },
    /// A stage the target does not need (never built).
    Skipped,
    Run(RunKey),
    Copy(CopyKey),
    Add(CopyKey),
    Config(ConfigKey),
    /// WORKDIR: a config change that may also make a directory.
    Workdir(ConfigKey),
}

/// A RUN step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RunKey {
    pub argv: Vec<String>,
    /// The environment (ENV and build arguments in scope), sorted.
    pub env: Vec<String>,
    pub user: String,
    pub workdir: String,
    pub network: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mounts: Vec<MountKey>,
    /// `"insecure"` for `--security=insecure`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub security: Option<String>,
    /// The build's `--ulimit`s.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ulimits: Vec<String>,
}

/// What a `RUN --mount` puts in the key: never a secret's value or a cache's contents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum MountKey {
    Bind {
        target: String,
        /// The key of the stage or the ID of the image bound from; none for a context.
        from: Option<Digest>,
        source: String,
        content: BindContent,
        ro: bool,
    },
    Cache {
        target: String,
        id: String,
        ro: bool,
    },
    Tmpfs {
        target: String,
        size: Option<u64>,
    },
    Secret {
        id: String,
        target: Option<String>,
        env: Option<String>,
    },
    Ssh {
        id: String,
        target: String,
    },
}

/// The content of a bind mount's source: the digest of its rows for a context, nothing
/// (an empty list) for a stage or an image, whose key stands for its content.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum BindContent {
    Context(Digest),
    Keyed([u8; 0]),
}

/// A COPY or ADD step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CopyKey {
    /// The key of the stage or the ID of the image copied from; none for a context.
    pub from: Option<Digest>,
    pub sources: Vec<String>,
    /// The digest of the selected context entries' [`source_rows`].
    pub content: Digest,
    pub dest: String,
    pub dest_is_dir: bool,
    pub chown: Option<String>,
    pub chmod: Option<String>,
    /// Heredoc files: (name, content).
    pub inline: Vec<(String, String)>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub parents: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub named_context: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub link: bool,
    /// ADD of URLs and git repositories.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub remote: Vec<RemoteKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpack: Option<bool>,
}

/// A remote source of ADD as its key covers it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum RemoteKey {
    /// (URL, content digest, file name, `Last-Modified`).
    Url(String, Digest, String, Option<i64>),
    /// (source, commit, `--keep-git-dir`).
    Git(String, String, bool),
}

/// A metadata step: its change and its history text.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigKey {
    pub change: ConfigChange,
    pub created_by: String,
}

fn is_false(b: &bool) -> bool {
    !b
}

impl StepKey {
    /// The key of a stage's base (no parent, no epoch).
    pub fn base(op: KeyOp) -> StepKey {
        StepKey {
            v: KEY_VERSION.into(),
            parent: None,
            epoch: None,
            layer_only: false,
            op,
        }
    }

    /// The key of a step after `parent`.
    pub fn step(parent: Digest, epoch: Option<i64>, op: KeyOp) -> StepKey {
        StepKey {
            parent: Some(parent),
            epoch,
            ..StepKey::base(op)
        }
    }

    /// The cache key: sha256 of the canonical encoding.
    pub fn digest(&self) -> Digest {
        Digest::of(&strata_image::spec::to_canonical_json(self))
    }

    /// The key of the step's layer alone (`COPY --link`): the parent left out.
    pub fn layer_only(&self) -> StepKey {
        StepKey {
            parent: None,
            layer_only: true,
            ..self.clone()
        }
    }

    /// The top-level fields (`op`, `argv`, `content`, `parent`…) whose values differ from
    /// `before`, in name order except that `content` and then `parent` come last: what
    /// changed in the step itself explains a miss better than what changed before it.
    pub fn changed_fields(&self, before: &StepKey) -> Vec<String> {
        let fields = |k: &StepKey| match serde_json::to_value(k) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        };
        let (now, then) = (fields(self), fields(before));
        let mut names: Vec<&String> = now.keys().chain(then.keys()).collect();
        names.sort_by_key(|n| (rank(n), n.as_str()));
        names.dedup();
        names
            .into_iter()
            .filter(|n| now.get(*n) != then.get(*n))
            .cloned()
            .collect()
    }
}

/// Where a changed field sorts in [`StepKey::changed_fields`].
fn rank(field: &str) -> u8 {
    match field {
        "content" => 1,
        "parent" => 2,
        _ => 0,
    }
}

/// One selected context entry as the cache key covers it: (source index, path it lands at,
/// kind, mode, content digest or link target).
pub type SourceRow<'a> = (usize, &'a str, &'a str, u32, Option<&'a str>);

/// The rows of a selection, in order ([`content_digest`] hashes them; `--dry-run` explains a
/// miss by comparing them with the last build's).
pub fn source_rows<'a>(
    ctx: &'a Context,
    selected: &'a [(usize, Selected)],
) -> impl Iterator<Item = SourceRow<'a>> + 'a {
    use crate::context::Kind;
    selected.iter().map(move |(i, x)| {
        let e = ctx.entry(x);
        let kind = match e.kind {
            Kind::File => "File",
            Kind::Dir => "Dir",
            Kind::Symlink => "Symlink",
            Kind::Special => "Special",
        };
        let content = match e.kind {
            Kind::File => x.digest.as_ref().map(Digest::as_str),
            Kind::Symlink => e.link.as_deref(),
            _ => None,
        };
        (*i, ctx.rel(x), kind, e.mode, content)
    })
}

/// What a cache key holds of selected context sources: the sha256 of their rows, one JSON
/// array per line (a list of 160,000 rows in the key's JSON cost 350 bytes of memory each).
pub fn content_digest(ctx: &Context, selected: &[(usize, Selected)]) -> Digest {
    let mut h = strata_image::digest::Hasher::new();
    for row in source_rows(ctx, selected) {
        let line = serde_json::to_vec(&row).expect("rows serialize");
        h.update(&line);
        h.update(b"\n");
    }
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(argv: &[&str], env: &[&str]) -> StepKey {
        StepKey::step(
            Digest::of(b"parent"),
            None,
            KeyOp::Run(RunKey {
                argv: argv.iter().map(|s| s.to_string()).collect(),
                env: env.iter().map(|s| s.to_string()).collect(),
                user: String::new(),
                workdir: "/".into(),
                network: "host".into(),
                mounts: Vec::new(),
                security: None,
                ulimits: Vec::new(),
            }),
        )
    }

    #[test]
    fn fields_left_at_their_default_stay_out_of_the_encoding() {
        let json =
            String::from_utf8(strata_image::spec::to_canonical_json(&run(&["true"], &[]))).unwrap();
        assert_eq!(
            json,
            format!(
                r#"{{"argv":["true"],"env":[],"network":"host","op":"run","parent":"{}","user":"","v":"strata.cache.v1","workdir":"/"}}"#,
                Digest::of(b"parent")
            )
        );
    }

    #[test]
    fn a_key_reads_back_as_the_same_struct() {
        let k = run(&["sh", "-c", "x"], &["A=1"]);
        let back: StepKey = serde_json::from_slice(&serde_json::to_vec(&k).unwrap()).unwrap();
        assert_eq!(back, k);
        assert_eq!(back.digest(), k.digest());
    }

    #[test]
    fn changed_fields_name_the_step_before_its_parent() {
        let a = run(&["true"], &["A=1"]);
        let mut b = run(&["false"], &["A=2"]);
        b.parent = Some(Digest::of(b"other"));
        assert_eq!(b.changed_fields(&a), ["argv", "env", "parent"]);
        assert!(a.changed_fields(&a).is_empty());
    }
}
