//! ARG and the metadata instructions (ENV, LABEL, CMD, ENTRYPOINT, SHELL, WORKDIR, USER,
//! EXPOSE, VOLUME, STOPSIGNAL, HEALTHCHECK, ONBUILD, MAINTAINER): each becomes a
//! [`ConfigChange`] step whose key covers the change.

use strata_image::spec::HealthConfig;
use strata_parser::instructions::{ArgDecl, CommandLine, Health, Instruction, KeyValue, Kind};

use super::{ConfigChange, Planner, StageBuilder};
use crate::keys::{ConfigKey, KeyOp};
use crate::model::StepOp;
use crate::paths::absolute_in;
use crate::PlanError;

type Vars = [(String, String)];

impl Planner<'_> {
    /// An ARG before the first FROM: a global argument, in scope for FROM lines and for
    /// stages that declare it again.
    pub(super) fn global_arg(
        &mut self,
        ins: &Instruction,
        decls: &[ArgDecl],
    ) -> Result<(), PlanError> {
        for d in decls {
            let value = match (self.opts.build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(self.expand(ins, def, &self.global_args.clone())?),
                (None, None) => None,
            };
            if let Some(v) = value {
                self.global_args.retain(|(k, _)| k != &d.name);
                self.global_args.push((d.name.clone(), v));
            }
        }
        Ok(())
    }

    /// ARG inside a stage: the build's value, the default, or the global argument's value.
    fn stage_arg(
        &self,
        b: &mut StageBuilder,
        ins: &Instruction,
        decls: &[ArgDecl],
        vars: &Vars,
    ) -> Result<(), PlanError> {
        for d in decls {
            let value = match (self.opts.build_args.get(&d.name), &d.default) {
                (Some(v), _) => Some(v.clone()),
                (None, Some(def)) => Some(self.expand(ins, def, vars)?),
                (None, None) => self
                    .global_args
                    .iter()
                    .rev()
                    .find(|(k, _)| *k == d.name)
                    .map(|(_, v)| v.clone()),
            };
            b.args.retain(|(k, _)| k != &d.name);
            if let Some(v) = value {
                b.args.push((d.name.clone(), v));
            }
        }
        Ok(())
    }

    /// ARG or a metadata instruction.
    pub(super) fn config(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        vars: &Vars,
    ) -> Result<(), PlanError> {
        let (change, shown) = match &ins.kind {
            Kind::Arg(decls) => return self.stage_arg(b, ins, decls, vars),
            Kind::Env(kvs) => {
                let pairs = self.pairs(ins, kvs, vars)?;
                let shown = format!("ENV {}", shown_pairs(&pairs));
                (ConfigChange::Env(pairs), shown)
            }
            Kind::Label(kvs) => {
                let pairs = self.pairs(ins, kvs, vars)?;
                let shown = format!("LABEL {}", shown_pairs(&pairs));
                (ConfigChange::Label(pairs), shown)
            }
            Kind::Cmd(c) => {
                let argv = b.command(c);
                let shown = format!("CMD {}", json_list(&argv));
                (ConfigChange::Cmd(argv), shown)
            }
            Kind::Entrypoint(c) => {
                let argv = b.command(c);
                // Docker: a new ENTRYPOINT resets a CMD inherited from the base image.
                let reset_cmd = !b
                    .plan
                    .steps
                    .iter()
                    .any(|s| matches!(s.op, StepOp::Config(ConfigChange::Cmd(_))));
                let shown = format!("ENTRYPOINT {}", json_list(&argv));
                (ConfigChange::Entrypoint { argv, reset_cmd }, shown)
            }
            Kind::Shell(s) => {
                b.shell = s.clone();
                (
                    ConfigChange::Shell(s.clone()),
                    format!("SHELL {}", json_list(s)),
                )
            }
            Kind::Workdir(w) => {
                // BuildKit makes the directory (owned by the USER) in a layer of its own when
                // it is missing, so the next step sees it: `COPY f /app` copies into it.
                let dir = absolute_in(&b.workdir(), &self.expand(ins, w, vars)?);
                let shown = format!("WORKDIR {dir}");
                (ConfigChange::Workdir(dir), shown)
            }
            Kind::User(u) => {
                let user = self.expand(ins, u, vars)?;
                let shown = format!("USER {user}");
                (ConfigChange::User(user), shown)
            }
            Kind::Expose(ports) => self.expose(ins, ports, vars)?,
            Kind::Volume(vols) => {
                let mut dirs = Vec::new();
                for v in vols {
                    dirs.push(self.expand(ins, v, vars)?);
                }
                let shown = format!("VOLUME [{}]", dirs.join(" "));
                (ConfigChange::Volume(dirs), shown)
            }
            Kind::StopSignal(s) => {
                let signal = self.expand(ins, s, vars)?;
                let shown = format!("STOPSIGNAL {signal}");
                (ConfigChange::StopSignal(signal), shown)
            }
            Kind::Maintainer(m) => (ConfigChange::Maintainer, format!("MAINTAINER {m}")),
            Kind::Healthcheck(h) => {
                let shown = format!("HEALTHCHECK {}", ins.original.trim_start()[11..].trim());
                (ConfigChange::Healthcheck(health_config(h)), shown)
            }
            Kind::Onbuild(_) => {
                let trigger = ins.original.trim_start()[7..].trim_start().to_string();
                let shown = format!("ONBUILD {trigger}");
                (ConfigChange::OnBuild(trigger), shown)
            }
            Kind::From(_) | Kind::Run(_) | Kind::Copy(_) | Kind::Add(_) => {
                unreachable!("not a metadata instruction")
            }
        };
        self.config_step(b, ins, change, shown);
        Ok(())
    }

    /// A metadata step: the change enters the key (the config before it is fixed by the
    /// parent key) and the stage's config.
    fn config_step(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        change: ConfigChange,
        created_by: String,
    ) {
        b.config.apply(&change);
        let key = ConfigKey {
            change: change.clone(),
            created_by: created_by.clone(),
        };
        let key = match change {
            ConfigChange::Workdir(_) => KeyOp::Workdir(key),
            _ => KeyOp::Config(key),
        };
        self.push(b, ins, StepOp::Config(change), key, created_by);
    }

    /// ENV and LABEL pairs: every pair is expanded with the environment from before the
    /// instruction, as BuildKit does (`ENV A=1 B=${A}2` sees no A of its own).
    fn pairs(
        &self,
        ins: &Instruction,
        kvs: &[KeyValue],
        vars: &Vars,
    ) -> Result<Vec<(String, String)>, PlanError> {
        let mut pairs = Vec::new();
        for kv in kvs {
            let k = self.expand(ins, &kv.key, vars)?;
            let v = self.expand(ins, &kv.value, vars)?;
            pairs.push((k, v));
        }
        Ok(pairs)
    }

    /// EXPOSE: every port normalized (`80/tcp`), shown as Docker's history shows it.
    fn expose(
        &self,
        ins: &Instruction,
        ports: &[String],
        vars: &Vars,
    ) -> Result<(ConfigChange, String), PlanError> {
        let mut normalized = Vec::new();
        for p in ports {
            for w in self.expand_words(ins, p, vars)? {
                let port = strata_parser::grammar::parse_port(&w).map_err(|e| self.err(ins, e))?;
                normalized.push(port);
            }
        }
        let shown = format!(
            "EXPOSE map[{}]",
            normalized
                .iter()
                .map(|p| format!("{p}:{{}}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        Ok((ConfigChange::Expose(normalized), shown))
    }
}

/// A HEALTHCHECK as the image config holds it.
fn health_config(h: &Health) -> HealthConfig {
    match h {
        Health::None => HealthConfig {
            test: vec!["NONE".into()],
            ..Default::default()
        },
        Health::Cmd {
            test,
            interval,
            timeout,
            start_period,
            start_interval,
            retries,
        } => HealthConfig {
            test: match test {
                CommandLine::Exec(v) => {
                    let mut t = vec!["CMD".to_string()];
                    t.extend(v.iter().cloned());
                    t
                }
                CommandLine::Shell(s) => vec!["CMD-SHELL".into(), s.clone()],
            },
            interval: *interval,
            timeout: *timeout,
            start_period: *start_period,
            start_interval: *start_interval,
            retries: *retries,
            extra: Default::default(),
        },
    }
}

/// `k=v` pairs as history shows them.
fn shown_pairs(pairs: &[(String, String)]) -> String {
    pairs
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A list as JSON (history shows CMD, ENTRYPOINT and SHELL so).
fn json_list(v: &[String]) -> String {
    serde_json::to_string(v).expect("strings serialize")
}
