//! Metadata instructions (ENV, LABEL, CMD, ENTRYPOINT, SHELL, WORKDIR, USER, EXPOSE, VOLUME,
//! STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER) as resolved changes to the image config.
//!
//! Key design decision: a step holds its [`ConfigChange`], never the whole config before or
//! after it, and its cache key covers the change (the config before is fixed by the parent
//! key, which chains back to the base). A Dockerfile of n ENV lines then plans in O(n) memory
//! instead of n copies of a growing config; the executor folds the changes into the one
//! config it carries, with the same [`ConfigChange::apply`] the planner uses.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};
use serde_json::json;
use strata_image::spec::{ContainerConfig, HealthConfig};

/// What one metadata instruction does to the config, everything expanded.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ConfigChange {
    /// ENV pairs, set in order.
    Env(Vec<(String, String)>),
    Label(Vec<(String, String)>),
    Cmd(Vec<String>),
    /// ENTRYPOINT; `reset_cmd`: no CMD was written earlier in the stage, so an inherited CMD
    /// goes (Docker's rule).
    Entrypoint {
        argv: Vec<String>,
        reset_cmd: bool,
    },
    Shell(Vec<String>),
    /// WORKDIR, absolute and clean; the executor also makes the directory.
    Workdir(String),
    User(String),
    /// EXPOSE, ports normalized (`80/tcp`).
    Expose(Vec<String>),
    Volume(Vec<String>),
    StopSignal(String),
    Healthcheck(HealthConfig),
    /// ONBUILD: the trigger's text.
    OnBuild(String),
    /// MAINTAINER: history only.
    Maintainer,
}

/// A config being built and where each variable sits in its `Env`, so that setting one is
/// O(1) (a Dockerfile of n ENV lines would otherwise cost O(n²)).
#[derive(Debug, Clone, Default)]
pub struct BuildConfig {
    config: ContainerConfig,
    env_at: HashMap<String, usize>,
}

impl BuildConfig {
    pub fn new(config: ContainerConfig) -> BuildConfig {
        let mut env_at = HashMap::new();
        for (i, kv) in config.env.iter().enumerate() {
            let k = kv.split_once('=').map_or(kv.as_str(), |(k, _)| k);
            // The first entry of a name is the one `env_set` replaces.
            env_at.entry(k.to_string()).or_insert(i);
        }
        BuildConfig { config, env_at }
    }

    pub fn get(&self) -> &ContainerConfig {
        &self.config
    }

    pub fn into_inner(self) -> ContainerConfig {
        self.config
    }

    /// [`ContainerConfig::env_set`], by the index.
    fn env_set(&mut self, key: &str, value: &str) {
        let entry = format!("{key}={value}");
        match self.env_at.get(key) {
            Some(&i) => self.config.env[i] = entry,
            None => {
                self.env_at.insert(key.to_string(), self.config.env.len());
                self.config.env.push(entry);
            }
        }
    }

    /// Applies a change.
    pub fn apply(&mut self, change: &ConfigChange) {
        if let ConfigChange::Env(pairs) = change {
            for (k, v) in pairs {
                self.env_set(k, v);
            }
        } else {
            change.apply(&mut self.config);
        }
    }
}

impl ConfigChange {
    /// Applies the change to `config` ([`BuildConfig::apply`] sets variables in O(1)).
    pub fn apply(&self, config: &mut ContainerConfig) {
        match self {
            ConfigChange::Env(pairs) => {
                for (k, v) in pairs {
                    config.env_set(k, v);
                }
            }
            ConfigChange::Label(pairs) => {
                for (k, v) in pairs {
                    config.labels.insert(k.clone(), v.clone());
                }
            }
            ConfigChange::Cmd(argv) => config.cmd = Some(argv.clone()),
            ConfigChange::Entrypoint { argv, reset_cmd } => {
                config.entrypoint = Some(argv.clone());
                if *reset_cmd {
                    config.cmd = None;
                }
            }
            ConfigChange::Shell(argv) => config.shell = Some(argv.clone()),
            ConfigChange::Workdir(dir) => config.working_dir = dir.clone(),
            ConfigChange::User(user) => config.user = user.clone(),
            ConfigChange::Expose(ports) => {
                for p in ports {
                    config.exposed_ports.insert(p.clone(), json!({}));
                }
            }
            ConfigChange::Volume(paths) => {
                for p in paths {
                    config.volumes.insert(p.clone(), json!({}));
                }
            }
            ConfigChange::StopSignal(s) => config.stop_signal = s.clone(),
            ConfigChange::Healthcheck(h) => config.healthcheck = Some(h.clone()),
            ConfigChange::OnBuild(trigger) => config.on_build.push(trigger.clone()),
            ConfigChange::Maintainer => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_fold_into_the_config_in_order() {
        let mut c = ContainerConfig {
            env: vec!["PATH=/bin".into()],
            cmd: Some(vec!["sh".into()]),
            ..Default::default()
        };
        for change in [
            ConfigChange::Env(vec![("A".into(), "1".into()), ("PATH".into(), "/x".into())]),
            ConfigChange::Label(vec![("l".into(), "v".into())]),
            ConfigChange::Entrypoint {
                argv: vec!["/e".into()],
                reset_cmd: true,
            },
            ConfigChange::Workdir("/w".into()),
            ConfigChange::User("nobody".into()),
            ConfigChange::Expose(vec!["80/tcp".into()]),
            ConfigChange::Volume(vec!["/data".into()]),
            ConfigChange::StopSignal("SIGINT".into()),
            ConfigChange::OnBuild("RUN true".into()),
            ConfigChange::Maintainer,
        ] {
            change.apply(&mut c);
        }
        let expected = ContainerConfig {
            env: vec!["PATH=/x".into(), "A=1".into()],
            labels: [("l".to_string(), "v".to_string())].into(),
            entrypoint: Some(vec!["/e".into()]),
            cmd: None,
            working_dir: "/w".into(),
            user: "nobody".into(),
            exposed_ports: [("80/tcp".to_string(), json!({}))].into(),
            volumes: [("/data".to_string(), json!({}))].into(),
            stop_signal: "SIGINT".into(),
            on_build: vec!["RUN true".into()],
            ..Default::default()
        };
        assert_eq!(c, expected);
    }

    #[test]
    fn the_indexed_config_sets_variables_as_env_set_does() {
        let start = ContainerConfig {
            env: vec!["A=1".into(), "B".into(), "A=dup".into()],
            ..Default::default()
        };
        let change = ConfigChange::Env(vec![
            ("A".into(), "2".into()),
            ("B".into(), "3".into()),
            ("C".into(), "4".into()),
            ("C".into(), "5".into()),
        ]);
        let mut plain = start.clone();
        change.apply(&mut plain);
        let mut indexed = BuildConfig::new(start);
        indexed.apply(&change);
        assert_eq!(indexed.get(), &plain);
        assert_eq!(plain.env, ["A=2", "B=3", "A=dup", "C=5"]);
    }
}
