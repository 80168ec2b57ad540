//! The image data model: our own serde structs for configs, manifests and indexes.
//!
//! Every struct keeps the fields it does not know in a flattened `extra` map, so a document
//! read and written again loses nothing. Documents strata creates are serialized canonically
//! ([`to_canonical_json`]): keys sorted, no insignificant whitespace, so their digests are
//! stable. Documents read from elsewhere are kept as the exact bytes received and never
//! re-serialized.

use std::collections::BTreeMap;

use serde::{de::DeserializeOwned, Deserialize, Serialize};
use serde_json::Value;

use crate::digest::Digest;

/// Media types strata reads and writes.
pub mod media {
    pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
    pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";
    pub const OCI_CONFIG: &str = "application/vnd.oci.image.config.v1+json";
    pub const OCI_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";
    pub const OCI_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
    pub const OCI_LAYER_ZSTD: &str = "application/vnd.oci.image.layer.v1.tar+zstd";
    pub const OCI_LAYER_NONDIST_GZIP: &str =
        "application/vnd.oci.image.layer.nondistributable.v1.tar+gzip";
    pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
    pub const DOCKER_MANIFEST_LIST: &str =
        "application/vnd.docker.distribution.manifest.list.v2+json";
    pub const DOCKER_CONFIG: &str = "application/vnd.docker.container.image.v1+json";
    pub const DOCKER_LAYER_GZIP: &str = "application/vnd.docker.image.rootfs.diff.tar.gzip";
    pub const DOCKER_LAYER: &str = "application/vnd.docker.image.rootfs.diff.tar";
    pub const DOCKER_FOREIGN_LAYER_GZIP: &str =
        "application/vnd.docker.image.rootfs.foreign.diff.tar.gzip";

    /// True for every layer media type strata can unpack.
    pub fn is_layer(mt: &str) -> bool {
        matches!(
            mt,
            OCI_LAYER
                | OCI_LAYER_GZIP
                | OCI_LAYER_ZSTD
                | OCI_LAYER_NONDIST_GZIP
                | DOCKER_LAYER
                | DOCKER_LAYER_GZIP
                | DOCKER_FOREIGN_LAYER_GZIP
        )
    }
    pub fn is_manifest(mt: &str) -> bool {
        matches!(mt, OCI_MANIFEST | DOCKER_MANIFEST)
    }
    pub fn is_index(mt: &str) -> bool {
        matches!(mt, OCI_INDEX | DOCKER_MANIFEST_LIST)
    }
    pub fn is_config(mt: &str) -> bool {
        matches!(mt, OCI_CONFIG | DOCKER_CONFIG)
    }
}

/// Size cap for every JSON document read from outside (manifests, configs, indexes).
pub const MAX_JSON_BYTES: u64 = 4 << 20;

/// Errors decoding a JSON document.
#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("{what}: invalid JSON: {source}")]
    Json {
        what: String,
        source: serde_json::Error,
    },
    #[error("{what}: {reason}")]
    Invalid { what: String, reason: String },
}

/// Parses a JSON document read from outside; `what` names it in errors.
pub fn from_json<T: DeserializeOwned>(what: &str, bytes: &[u8]) -> Result<T, SpecError> {
    if bytes.len() as u64 > MAX_JSON_BYTES {
        return Err(SpecError::Invalid {
            what: what.to_string(),
            reason: format!("{} bytes exceeds the 4 MiB limit", bytes.len()),
        });
    }
    serde_json::from_slice(bytes).map_err(|source| SpecError::Json {
        what: what.to_string(),
        source,
    })
}

/// Canonical JSON: keys sorted at every level, compact. Used for every document strata makes.
pub fn to_canonical_json<T: Serialize>(value: &T) -> Vec<u8> {
    // serde_json's Value map is a BTreeMap (no `preserve_order`), so going through it sorts keys.
    let v = serde_json::to_value(value).expect("our structs always serialize");
    serde_json::to_vec(&v).expect("a Value always serializes")
}

/// A content descriptor.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Descriptor {
    #[serde(rename = "mediaType")]
    pub media_type: String,
    pub digest: Digest,
    pub size: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub platform: Option<Platform>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Descriptor {
    pub fn new(media_type: &str, digest: Digest, size: u64) -> Self {
        Descriptor {
            media_type: media_type.to_string(),
            digest,
            size,
            platform: None,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }
}

/// A platform in an index.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(
        rename = "os.version",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub os_version: Option<String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Platform {
    /// Parses `os/arch[/variant]` as in `--platform linux/amd64` (`x86_64` and `aarch64` are
    /// taken for `amd64` and `arm64`).
    pub fn parse(s: &str) -> Result<Platform, String> {
        let parts: Vec<&str> = s.split('/').collect();
        let ok = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'.' || b == b'-')
        };
        match parts.as_slice() {
            [os, arch] | [os, arch, _] if parts.iter().all(|p| ok(p)) => Ok(Platform {
                os: os.to_string(),
                architecture: match *arch {
                    "x86_64" | "x86-64" => "amd64",
                    "aarch64" => "arm64",
                    other => other,
                }
                .to_string(),
                variant: parts.get(2).map(|v| v.to_string()),
                os_version: None,
                extra: Default::default(),
            }),
            _ => Err(format!(
                "invalid platform {s:?}: expected os/arch[/variant], e.g. linux/amd64"
            )),
        }
    }

    /// Whether `have` (an image's or an index entry's) is this wanted platform: os and
    /// architecture equal, and the variant too when one is wanted.
    pub fn is_met_by(&self, have: &Platform) -> bool {
        self.os == have.os
            && self.architecture == have.architecture
            && (self.variant.is_none() || self.variant == have.variant)
    }

    /// The platform strata runs images for: Linux on the architecture it was built for.
    pub fn host() -> Platform {
        Platform {
            architecture: host_arch().to_string(),
            os: "linux".to_string(),
            variant: None,
            os_version: None,
            extra: Default::default(),
        }
    }

    /// The platform of an image's config.
    pub fn of_config(c: &ImageConfig) -> Platform {
        Platform {
            architecture: c.architecture.clone(),
            os: c.os.clone(),
            variant: c.variant.clone(),
            os_version: None,
            extra: Default::default(),
        }
    }
}

/// The OCI name of the architecture strata was built for.
pub fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// `os/arch[/variant]`.
impl std::fmt::Display for Platform {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.os, self.architecture)?;
        match &self.variant {
            Some(v) => write!(f, "/{v}"),
            None => Ok(()),
        }
    }
}

/// An image manifest (OCI or Docker v2 schema 2).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Manifest {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub config: Descriptor,
    pub layers: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Manifest {
    /// Parses a manifest and rejects ambiguous documents (CVE-2021-41190).
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Self, SpecError> {
        let m: Manifest = from_json(what, bytes)?;
        let invalid = |reason: String| SpecError::Invalid {
            what: what.to_string(),
            reason,
        };
        if m.extra.contains_key("manifests") {
            return Err(invalid("has both \"manifests\" and \"layers\"".into()));
        }
        if m.schema_version != 2 {
            return Err(invalid(format!(
                "schemaVersion {} is not supported",
                m.schema_version
            )));
        }
        if let Some(mt) = &m.media_type {
            if !media::is_manifest(mt) {
                return Err(invalid(format!(
                    "mediaType {mt:?} is not an image manifest"
                )));
            }
        }
        for l in &m.layers {
            if !media::is_layer(&l.media_type) {
                return Err(invalid(format!(
                    "layer {} has unknown media type {:?}",
                    l.digest, l.media_type
                )));
            }
        }
        Ok(m)
    }
}

/// An image index or Docker manifest list.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Index {
    #[serde(rename = "schemaVersion")]
    pub schema_version: u32,
    #[serde(rename = "mediaType", default, skip_serializing_if = "Option::is_none")]
    pub media_type: Option<String>,
    pub manifests: Vec<Descriptor>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl Index {
    /// An index of `media_type` (OCI index or Docker manifest list) listing `manifests`.
    pub fn new(media_type: &str, manifests: Vec<Descriptor>) -> Self {
        Index {
            schema_version: 2,
            media_type: Some(media_type.to_string()),
            manifests,
            annotations: BTreeMap::new(),
            extra: BTreeMap::new(),
        }
    }

    /// Parses an index and rejects ambiguous documents (CVE-2021-41190).
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Self, SpecError> {
        let i: Index = from_json(what, bytes)?;
        let invalid = |reason: String| SpecError::Invalid {
            what: what.to_string(),
            reason,
        };
        if i.extra.contains_key("layers") || i.extra.contains_key("config") {
            return Err(invalid("has both \"manifests\" and \"layers\"".into()));
        }
        if i.schema_version != 2 {
            return Err(invalid(format!(
                "schemaVersion {} is not supported",
                i.schema_version
            )));
        }
        if let Some(mt) = &i.media_type {
            if !media::is_index(mt) {
                return Err(invalid(format!("mediaType {mt:?} is not an image index")));
            }
        }
        Ok(i)
    }
}

/// The image configuration (`application/vnd.oci.image.config.v1+json`).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ImageConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default)]
    pub architecture: String,
    #[serde(default)]
    pub os: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub variant: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config: Option<ContainerConfig>,
    pub rootfs: RootFs,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub history: Vec<History>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ImageConfig {
    /// Parses a config read from outside and checks it describes a layered filesystem.
    pub fn parse(what: &str, bytes: &[u8]) -> Result<Self, SpecError> {
        let c: ImageConfig = from_json(what, bytes)?;
        if c.rootfs.kind != "layers" {
            return Err(SpecError::Invalid {
                what: what.to_string(),
                reason: format!("rootfs.type {:?} is not \"layers\"", c.rootfs.kind),
            });
        }
        Ok(c)
    }

    /// The runtime part, empty when absent.
    pub fn container(&self) -> ContainerConfig {
        self.config.clone().unwrap_or_default()
    }
}

/// `rootfs` of a config: the ordered diffIDs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RootFs {
    #[serde(rename = "type")]
    pub kind: String,
    #[serde(default)]
    pub diff_ids: Vec<Digest>,
}

impl Default for RootFs {
    fn default() -> Self {
        RootFs {
            kind: "layers".into(),
            diff_ids: Vec::new(),
        }
    }
}

/// One history entry.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct History {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_by: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub comment: Option<String>,
    #[serde(default, skip_serializing_if = "is_false")]
    pub empty_layer: bool,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// The `config` part of an image config: how to run it. Docker's field names.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ContainerConfig {
    #[serde(rename = "User", default, skip_serializing_if = "String::is_empty")]
    pub user: String,
    #[serde(
        rename = "ExposedPorts",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub exposed_ports: BTreeMap<String, Value>,
    #[serde(
        rename = "Env",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub env: Vec<String>,
    #[serde(
        rename = "Entrypoint",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub entrypoint: Option<Vec<String>>,
    #[serde(rename = "Cmd", default, skip_serializing_if = "Option::is_none")]
    pub cmd: Option<Vec<String>>,
    #[serde(
        rename = "Volumes",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub volumes: BTreeMap<String, Value>,
    #[serde(
        rename = "WorkingDir",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub working_dir: String,
    #[serde(
        rename = "Labels",
        default,
        skip_serializing_if = "BTreeMap::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub labels: BTreeMap<String, String>,
    #[serde(
        rename = "StopSignal",
        default,
        skip_serializing_if = "String::is_empty"
    )]
    pub stop_signal: String,
    #[serde(rename = "ArgsEscaped", default, skip_serializing_if = "is_false")]
    pub args_escaped: bool,
    #[serde(
        rename = "Healthcheck",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub healthcheck: Option<HealthConfig>,
    #[serde(
        rename = "OnBuild",
        default,
        skip_serializing_if = "Vec::is_empty",
        deserialize_with = "null_as_default"
    )]
    pub on_build: Vec<String>,
    #[serde(rename = "Shell", default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<Vec<String>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

impl ContainerConfig {
    /// The value of `key` in Env, if set.
    pub fn env_get(&self, key: &str) -> Option<&str> {
        self.env.iter().rev().find_map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (k == key).then_some(v)
        })
    }

    /// Sets `key=value` in Env, replacing an earlier value in place.
    pub fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self
            .env
            .iter_mut()
            .find(|kv| kv.split_once('=').map(|(k, _)| k) == Some(key) || kv.as_str() == key)
        {
            Some(slot) => *slot = entry,
            None => self.env.push(entry),
        }
    }
}

/// A HEALTHCHECK, durations in nanoseconds as Docker stores them.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct HealthConfig {
    #[serde(rename = "Test", default, skip_serializing_if = "Vec::is_empty")]
    pub test: Vec<String>,
    #[serde(rename = "Interval", default, skip_serializing_if = "is_zero")]
    pub interval: i64,
    #[serde(rename = "Timeout", default, skip_serializing_if = "is_zero")]
    pub timeout: i64,
    #[serde(rename = "StartPeriod", default, skip_serializing_if = "is_zero")]
    pub start_period: i64,
    #[serde(rename = "StartInterval", default, skip_serializing_if = "is_zero")]
    pub start_interval: i64,
    #[serde(rename = "Retries", default, skip_serializing_if = "is_zero")]
    pub retries: i64,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

fn is_zero(v: &i64) -> bool {
    *v == 0
}

fn null_as_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Default + Deserialize<'de>,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

fn empty_as_null<S: serde::Serializer, T: Serialize>(v: &[T], s: S) -> Result<S::Ok, S::Error> {
    if v.is_empty() {
        s.serialize_none()
    } else {
        v.serialize(s)
    }
}

/// One entry of a `docker save` archive's `manifest.json`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DockerArchiveEntry {
    #[serde(rename = "Config")]
    pub config: String,
    /// `null` when empty, as Docker writes it.
    #[serde(
        rename = "RepoTags",
        default,
        deserialize_with = "null_as_default",
        serialize_with = "empty_as_null"
    )]
    pub repo_tags: Vec<String>,
    #[serde(rename = "Layers")]
    pub layers: Vec<String>,
    #[serde(
        rename = "LayerSources",
        default,
        skip_serializing_if = "Option::is_none"
    )]
    pub layer_sources: Option<BTreeMap<String, Descriptor>>,
    #[serde(flatten)]
    pub extra: BTreeMap<String, Value>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const CONFIG: &str = r#"{"architecture":"amd64","config":{"Cmd":["sh"],"Env":["PATH=/bin"],"Hostname":"x","Labels":{"a":"b"}},"created":"2024-01-01T00:00:00Z","future":{"a":2,"z":1},"history":[{"created_by":"x","empty_layer":true}],"os":"linux","rootfs":{"diff_ids":[],"type":"layers"}}"#;

    #[test]
    fn config_round_trips_byte_exact_with_unknown_fields() {
        let c = ImageConfig::parse("config", CONFIG.as_bytes()).unwrap();
        assert_eq!(c.container().extra["Hostname"], "x");
        assert_eq!(String::from_utf8(to_canonical_json(&c)).unwrap(), CONFIG);
    }

    #[test]
    fn ambiguous_manifest_is_rejected() {
        let d = format!("sha256:{}", "a".repeat(64));
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{d}","size":1}},"layers":[],"manifests":[]}}"#
        );
        let err = Manifest::parse("manifest", doc.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("both"), "{err}");
    }

    #[test]
    fn unknown_layer_media_type_is_rejected() {
        let d = format!("sha256:{}", "a".repeat(64));
        let doc = format!(
            r#"{{"schemaVersion":2,"config":{{"mediaType":"x","digest":"{d}","size":1}},"layers":[{{"mediaType":"text/html","digest":"{d}","size":1}}]}}"#
        );
        let err = Manifest::parse("manifest", doc.as_bytes()).unwrap_err();
        assert!(err.to_string().contains("text/html"), "{err}");
    }

    #[test]
    fn oversized_json_is_rejected() {
        let big = vec![b' '; (MAX_JSON_BYTES + 1) as usize];
        assert!(ImageConfig::parse("config", &big).is_err());
    }

    #[test]
    fn env_set_replaces_in_place() {
        let mut c = ContainerConfig {
            env: vec!["A=1".into(), "B=2".into()],
            ..Default::default()
        };
        c.env_set("A", "3");
        c.env_set("C", "4");
        assert_eq!(c.env, vec!["A=3", "B=2", "C=4"]);
        assert_eq!(c.env_get("B"), Some("2"));
    }
}
