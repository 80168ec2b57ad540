//! Docker's `--filter key=value` lists (`ps`, `images`, `volume ls`, `volume prune`).
//!
//! [`Filters`] holds what the user gave, checked once against the keys a command accepts.
//! Docker's rules: values of one key are alternatives (any may match), different keys must
//! all match, and `label` is the exception: every label given must be present.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use regex::Regex;

#[derive(Debug, Default)]
pub struct Filters(BTreeMap<String, Vec<String>>);

impl Filters {
    /// Parses `key=value` arguments; keys are case-insensitive, and one not in `accepted`
    /// is an error, as with Docker.
    pub fn parse(args: &[String], accepted: &[&str]) -> Result<Filters> {
        let mut map: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for arg in args {
            let Some((key, value)) = arg.split_once('=') else {
                bail!("bad format of filter {arg:?} (expected name=value)");
            };
            let key = key.trim().to_ascii_lowercase();
            if !accepted.contains(&key.as_str()) {
                bail!("invalid filter '{key}'");
            }
            map.entry(key).or_default().push(value.trim().to_string());
        }
        Ok(Filters(map))
    }

    /// The values given for `key` (none if the key was not given).
    pub fn values(&self, key: &str) -> &[String] {
        self.0.get(key).map_or(&[], Vec::as_slice)
    }

    /// A yes/no key (`dangling=true|1|false|0`): the last value given, every value checked.
    pub fn flag(&self, key: &str) -> Result<Option<bool>> {
        let mut last = None;
        for v in self.values(key) {
            last = Some(match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                _ => bail!("invalid filter '{key}={v}'"),
            });
        }
        Ok(last)
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.contains_key(key)
    }

    /// Docker's `Match`: true if `key` was not given, or if any value equals `source` or, read
    /// as a regular expression, matches in it (so `name=web` matches `/web-1`, and `^/web$`
    /// only `/web`). A value that is no valid expression matches only itself.
    pub fn matches(&self, key: &str, source: &str) -> bool {
        let values = self.values(key);
        values.is_empty()
            || values
                .iter()
                .any(|v| v == source || Regex::new(v).is_ok_and(|re| re.is_match(source)))
    }

    /// Docker's label filter: every `label=KEY` needs the label, every `label=KEY=VALUE` needs
    /// it with that value.
    pub fn matches_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.values("label").iter().all(|w| label_holds(w, labels))
    }

    /// Docker's `label!=KEY[=VALUE]` (prune): true when a label given holds, which leaves
    /// the item out.
    pub fn excludes_labels(&self, labels: &BTreeMap<String, String>) -> bool {
        self.values("label!").iter().any(|w| label_holds(w, labels))
    }
}

/// `KEY` (the label is there) or `KEY=VALUE` (with that value).
fn label_holds(want: &str, labels: &BTreeMap<String, String>) -> bool {
    match want.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|have| have == v),
        None => labels.contains_key(want),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filters(args: &[&str]) -> Result<Filters> {
        let args: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        Filters::parse(&args, &["name", "label", "status"])
    }

    #[test]
    fn keys_are_checked_and_values_of_one_key_are_alternatives() {
        assert_eq!(
            filters(&["nope=1"]).unwrap_err().to_string(),
            "invalid filter 'nope'"
        );
        assert_eq!(
            filters(&["name"]).unwrap_err().to_string(),
            "bad format of filter \"name\" (expected name=value)"
        );
        let f = filters(&["Name=^/web$", "name=db", "status=running"]).unwrap();
        assert!(f.matches("name", "/web"));
        assert!(f.matches("name", "/old-db-1"));
        assert!(!f.matches("name", "/web-1"));
        assert!(f.matches("label", "anything"), "a key not given matches");
        assert!(f.matches("status", "running"));
        assert!(!f.matches("status", "exited"));
        // Not a valid expression: only the value itself matches.
        let f = filters(&["name=a(b"]).unwrap();
        assert!(f.matches("name", "a(b"));
        assert!(!f.matches("name", "ab"));
    }

    #[test]
    fn every_label_given_must_match() {
        let labels: BTreeMap<String, String> = [("app", "web"), ("tier", "front")]
            .map(|(k, v)| (k.into(), v.into()))
            .into();
        assert!(filters(&[]).unwrap().matches_labels(&labels));
        assert!(filters(&["label=app", "label=tier=front"])
            .unwrap()
            .matches_labels(&labels));
        assert!(!filters(&["label=app", "label=tier=back"])
            .unwrap()
            .matches_labels(&labels));
        assert!(!filters(&["label=owner"]).unwrap().matches_labels(&labels));
    }
}
