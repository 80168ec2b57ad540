//! `--change` for import and commit: a metadata Dockerfile instruction applied to a config.

use anyhow::{bail, Context, Result};
use strata_image::spec::ContainerConfig;

/// Applies one change line (e.g. `CMD ["sh"]`, `ENV A=1 B=2`) to `cfg`.
pub fn apply(cfg: &mut ContainerConfig, line: &str) -> Result<()> {
    let line = line.trim();
    let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
    let rest = rest.trim();
    match word.to_ascii_uppercase().as_str() {
        "CMD" => cfg.cmd = Some(command(rest)?),
        "ENTRYPOINT" => cfg.entrypoint = Some(command(rest)?),
        "ENV" => {
            for (k, v) in pairs(rest, "ENV")? {
                cfg.env_set(&k, &v);
            }
        }
        "LABEL" => {
            for (k, v) in pairs(rest, "LABEL")? {
                cfg.labels.insert(k, v);
            }
        }
        "WORKDIR" => cfg.working_dir = rest.to_string(),
        "USER" => cfg.user = rest.to_string(),
        "STOPSIGNAL" => cfg.stop_signal = rest.to_string(),
        "EXPOSE" => {
            for p in rest.split_whitespace() {
                let p = if p.contains('/') { p.to_string() } else { format!("{p}/tcp") };
                cfg.exposed_ports.insert(p, serde_json::json!({}));
            }
        }
        "VOLUME" => {
            let vols = if rest.starts_with('[') {
                serde_json::from_str::<Vec<String>>(rest).context("VOLUME: invalid JSON array")?
            } else {
                rest.split_whitespace().map(str::to_string).collect()
            };
            for v in vols {
                cfg.volumes.insert(v, serde_json::json!({}));
            }
        }
        "ONBUILD" => cfg.on_build.push(rest.to_string()),
        other => bail!("--change {line:?}: {other} is not a valid change (use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR)"),
    }
    Ok(())
}

fn command(rest: &str) -> Result<Vec<String>> {
    if rest.starts_with('[') {
        if let Ok(v) = serde_json::from_str::<Vec<String>>(rest) {
            return Ok(v);
        }
    }
    Ok(vec!["/bin/sh".into(), "-c".into(), rest.to_string()])
}

fn pairs(rest: &str, what: &str) -> Result<Vec<(String, String)>> {
    if !rest.contains('=') {
        let (k, v) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
        if k.is_empty() {
            bail!("{what} needs at least one argument");
        }
        return Ok(vec![(k.to_string(), v.trim().to_string())]);
    }
    let mut out = Vec::new();
    for w in shell_words(rest)? {
        let (k, v) = w
            .split_once('=')
            .with_context(|| format!("{what}: {w:?} is not key=value"))?;
        if k.is_empty() {
            bail!("{what}: empty key in {w:?}");
        }
        out.push((k.to_string(), v.to_string()));
    }
    Ok(out)
}

fn shell_words(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut chars = s.chars();
    let mut in_word = false;
    while let Some(c) = chars.next() {
        match c {
            '"' | '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some(q) if q == c => break,
                        Some('\\') if c == '"' => cur.extend(chars.next()),
                        Some(x) => cur.push(x),
                        None => bail!("unterminated quote in {s:?}"),
                    }
                }
            }
            '\\' => {
                in_word = true;
                cur.extend(chars.next());
            }
            c if c.is_whitespace() => {
                if in_word {
                    out.push(std::mem::take(&mut cur));
                    in_word = false;
                }
            }
            c => {
                in_word = true;
                cur.push(c);
            }
        }
    }
    if in_word {
        out.push(cur);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_apply() {
        let mut c = ContainerConfig::default();
        apply(&mut c, r#"CMD ["sh"]"#).unwrap();
        apply(&mut c, "ENV A=1 B=\"two words\"").unwrap();
        apply(&mut c, "ENTRYPOINT echo hi").unwrap();
        apply(&mut c, "EXPOSE 80 53/udp").unwrap();
        assert_eq!(c.cmd, Some(vec!["sh".to_string()]));
        assert_eq!(c.env, vec!["A=1", "B=two words"]);
        assert_eq!(c.entrypoint.unwrap(), vec!["/bin/sh", "-c", "echo hi"]);
        assert!(c.exposed_ports.contains_key("53/udp"));
        assert!(apply(&mut ContainerConfig::default(), "FROM x").is_err());
    }
}
