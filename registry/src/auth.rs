//! Credentials in Docker's `config.json` format (`auths`, `credHelpers`, `credsStore`), and the
//! WWW-Authenticate challenge of the distribution API (Basic or Bearer).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use base64::Engine;
use serde_json::Value;

use crate::RegistryError;

/// A user name and secret for a registry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    pub username: String,
    pub password: String,
}

/// Docker's config file: `$DOCKER_CONFIG/config.json` or `~/.docker/config.json`.
pub fn config_path() -> PathBuf {
    if let Some(d) = std::env::var_os("DOCKER_CONFIG") {
        return PathBuf::from(d).join("config.json");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".docker/config.json")
}

fn read_config() -> Value {
    std::fs::read(config_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .unwrap_or_else(|| serde_json::json!({}))
}

/// The keys a registry may be stored under in `auths`.
fn auth_keys(host: &str) -> Vec<String> {
    if host == "docker.io" || host == "registry-1.docker.io" || host == "index.docker.io" {
        return vec![
            "https://index.docker.io/v1/".into(),
            "index.docker.io".into(),
            "docker.io".into(),
        ];
    }
    vec![
        host.into(),
        format!("https://{host}"),
        format!("http://{host}"),
        format!("https://{host}/v1/"),
    ]
}

/// Credentials for `host`: a credential helper named for it, the default store, or `auths`.
pub fn lookup(host: &str) -> Option<Credentials> {
    let cfg = read_config();
    let keys = auth_keys(host);
    if let Some(helpers) = cfg.get("credHelpers").and_then(Value::as_object) {
        for k in &keys {
            if let Some(h) = helpers.get(k).and_then(Value::as_str) {
                return helper_get(h, k);
            }
        }
    }
    if let Some(auths) = cfg.get("auths").and_then(Value::as_object) {
        for k in &keys {
            if let Some(entry) = auths.get(k) {
                if let Some(c) = decode_auth(entry) {
                    return Some(c);
                }
            }
        }
    }
    if let Some(store) = cfg.get("credsStore").and_then(Value::as_str) {
        for k in &keys {
            if let Some(c) = helper_get(store, k) {
                return Some(c);
            }
        }
    }
    None
}

fn decode_auth(entry: &Value) -> Option<Credentials> {
    if let (Some(u), Some(p)) = (
        entry.get("username").and_then(Value::as_str),
        entry.get("password").and_then(Value::as_str),
    ) {
        return Some(Credentials {
            username: u.into(),
            password: p.into(),
        });
    }
    let raw = entry.get("auth").and_then(Value::as_str)?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(raw.trim())
        .ok()?;
    let text = String::from_utf8(bytes).ok()?;
    let (u, p) = text.split_once(':')?;
    Some(Credentials {
        username: u.into(),
        password: p.into(),
    })
}

/// `docker-credential-<helper> get`, answering `{"Username":..., "Secret":...}`.
fn helper_get(helper: &str, server: &str) -> Option<Credentials> {
    use std::io::Write;
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    child.stdin.take()?.write_all(server.as_bytes()).ok()?;
    let out = child.wait_with_output().ok()?;
    if !out.status.success() {
        return None;
    }
    let v: Value = serde_json::from_slice(&out.stdout).ok()?;
    Some(Credentials {
        username: v.get("Username")?.as_str()?.into(),
        password: v.get("Secret")?.as_str()?.into(),
    })
}

fn write_config(cfg: &Value) -> Result<(), RegistryError> {
    let path = config_path();
    let dir = path.parent().expect("config has a directory");
    std::fs::create_dir_all(dir)
        .map_err(|e| RegistryError::Io(format!("{}: {e}", dir.display())))?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(cfg).expect("serializes"))
        .map_err(|e| RegistryError::Io(format!("{}: {e}", tmp.display())))?;
    // The file holds secrets.
    use std::os::unix::fs::PermissionsExt;
    let _ = std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600));
    std::fs::rename(&tmp, &path).map_err(|e| RegistryError::Io(format!("{}: {e}", path.display())))
}

/// Saves credentials for `host` in `auths` (as `docker login` does without a helper).
pub fn store(host: &str, c: &Credentials) -> Result<PathBuf, RegistryError> {
    let mut cfg = read_config();
    let key = auth_keys(host).remove(0);
    let auth =
        base64::engine::general_purpose::STANDARD.encode(format!("{}:{}", c.username, c.password));
    let obj = cfg.as_object_mut().ok_or_else(|| {
        RegistryError::Io(format!("{}: not a JSON object", config_path().display()))
    })?;
    let auths = obj.entry("auths").or_insert_with(|| serde_json::json!({}));
    auths
        .as_object_mut()
        .ok_or_else(|| RegistryError::Io("config.json: auths is not an object".into()))?
        .insert(key, serde_json::json!({ "auth": auth }));
    write_config(&cfg)?;
    Ok(config_path())
}

/// Removes saved credentials for `host`. True if there were any.
pub fn remove(host: &str) -> Result<bool, RegistryError> {
    let mut cfg = read_config();
    let mut removed = false;
    if let Some(auths) = cfg.get_mut("auths").and_then(Value::as_object_mut) {
        for k in auth_keys(host) {
            removed |= auths.remove(&k).is_some();
        }
    }
    if removed {
        write_config(&cfg)?;
    }
    Ok(removed)
}

/// A parsed `WWW-Authenticate` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Challenge {
    Basic,
    Bearer {
        realm: String,
        params: BTreeMap<String, String>,
    },
}

/// Parses `Bearer realm="...",service="...",scope="..."` or `Basic realm="..."`.
pub fn parse_challenge(h: &str) -> Option<Challenge> {
    let h = h.trim();
    let (scheme, rest) = h.split_once(' ').unwrap_or((h, ""));
    match scheme.to_ascii_lowercase().as_str() {
        "basic" => Some(Challenge::Basic),
        "bearer" => {
            let mut params = BTreeMap::new();
            let mut s = rest;
            while !s.trim().is_empty() {
                let t = s.trim_start().trim_start_matches(',').trim_start();
                let (k, after) = t.split_once('=')?;
                let (v, next) = if let Some(q) = after.strip_prefix('"') {
                    let end = q.find('"')?;
                    (q[..end].to_string(), &q[end + 1..])
                } else {
                    let end = after.find(',').unwrap_or(after.len());
                    (after[..end].to_string(), &after[end..])
                };
                params.insert(k.trim().to_ascii_lowercase(), v);
                s = next;
            }
            let realm = params.remove("realm")?;
            Some(Challenge::Bearer { realm, params })
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn challenges() {
        let c = parse_challenge(r#"Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull""#).unwrap();
        match c {
            Challenge::Bearer { realm, params } => {
                assert_eq!(realm, "https://auth.example/token");
                assert_eq!(params["service"], "registry.example");
                assert_eq!(params["scope"], "repository:a/b:pull");
            }
            _ => panic!(),
        }
        assert_eq!(parse_challenge("Basic realm=\"x\""), Some(Challenge::Basic));
        assert_eq!(parse_challenge("Negotiate"), None);
    }

    #[test]
    fn auth_entries() {
        let e = serde_json::json!({"auth": base64::engine::general_purpose::STANDARD.encode("me:secret")});
        assert_eq!(
            decode_auth(&e),
            Some(Credentials {
                username: "me".into(),
                password: "secret".into()
            })
        );
    }
}
