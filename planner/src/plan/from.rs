//! FROM and `--from`: what a stage starts from, and the stages and images steps read.

use std::collections::BTreeSet;

use strata_image::spec::{ContainerConfig, ImageConfig, Platform};
use strata_image::Digest;
use strata_parser::instructions::{From as FromLine, Instruction};

use super::{BuildConfig, Planner, StageBuilder, DEFAULT_PATH};
use crate::keys::{KeyOp, StepKey};
use crate::model::{Base, CopyFrom, StagePlan};
use crate::PlanError;

/// A stage's base: what it is, its config, its key, and the stages it needs.
type Resolved = (Base, ImageConfig, Digest, BTreeSet<usize>);

impl Planner<'_> {
    /// A stage the target does not need: only its name and place are kept.
    pub(super) fn skip_stage(&mut self, ins: &Instruction, f: &FromLine) {
        self.stages.push(StagePlan {
            index: self.stages.len(),
            name: f.alias.clone(),
            base: Base::Scratch,
            base_key: StepKey::base(KeyOp::Skipped).digest(),
            base_config: ImageConfig::default(),
            steps: Vec::new(),
            start_config: ContainerConfig::default(),
            deps: BTreeSet::new(),
            final_config: ContainerConfig::default(),
            pos: ins.pos,
        });
    }

    /// Starts a stage: its base, the config it starts from, and the base image's ONBUILD
    /// triggers, which run first as if written after FROM.
    pub(super) fn start_stage(
        &mut self,
        ins: &Instruction,
        f: &FromLine,
    ) -> Result<StageBuilder, PlanError> {
        let name = self.expand(ins, &f.image, &self.global_args.clone())?;
        let platform = match &f.platform {
            Some(p) => {
                let p = self.expand(ins, p, &self.global_args.clone())?;
                Platform::parse(&p).map_err(|e| self.err(ins, format!("--platform: {e}")))?
            }
            None => self.opts.target_platform(),
        };
        let (base, base_config, base_key, deps) = self.resolve_base(ins, &name, &platform)?;
        let mut config = base_config.container();
        if config.env_get("PATH").is_none() {
            config.env.insert(0, format!("PATH={DEFAULT_PATH}"));
        }
        let triggers = std::mem::take(&mut config.on_build);
        let mut b = StageBuilder {
            plan: StagePlan {
                index: self.stages.len(),
                name: f.alias.clone(),
                base,
                base_key,
                base_config,
                steps: Vec::new(),
                start_config: config.clone(),
                deps,
                final_config: ContainerConfig::default(),
                pos: ins.pos,
            },
            shell: config
                .shell
                .clone()
                .unwrap_or_else(|| vec!["/bin/sh".into(), "-c".into()]),
            config: BuildConfig::new(config),
            args: Vec::new(),
            platform,
        };
        for t in triggers {
            let trig = strata_parser::parse_instruction(self.file, &t).map_err(PlanError::Parse)?;
            let trig = Instruction {
                pos: ins.pos,
                ..trig
            };
            self.instruction(&mut b, &trig)?;
        }
        Ok(b)
    }

    /// What `FROM name` names: scratch, an earlier stage, or an image in the store.
    fn resolve_base(
        &mut self,
        ins: &Instruction,
        name: &str,
        platform: &Platform,
    ) -> Result<Resolved, PlanError> {
        if name == "scratch" {
            let config = ImageConfig {
                architecture: platform.architecture.clone(),
                os: platform.os.clone(),
                variant: platform.variant.clone(),
                ..Default::default()
            };
            // The host's scratch keeps the key it always had.
            let foreign = (*platform != Platform::host()).then(|| platform.to_string());
            let key = StepKey::base(KeyOp::Scratch { platform: foreign }).digest();
            return Ok((Base::Scratch, config, key, BTreeSet::new()));
        }
        if let Some(i) = self.stage_named(name) {
            let s = &self.stages[i];
            let mut config = s.base_config.clone();
            config.config = Some(s.final_config.clone());
            return Ok((
                Base::Stage(i),
                config,
                s.final_key().clone(),
                BTreeSet::from([i]),
            ));
        }
        match self
            .images
            .lookup(name, platform)
            .map_err(|e| self.err(ins, e))?
        {
            Some((id, config)) => {
                let has = Platform::of_config(&config);
                if !platform.is_met_by(&has) {
                    return Err(self.err(
                        ins,
                        format!(
                            "{name}: the image is for {has}, not {platform} (import or pull the \
                             {platform} image under a name of its own)"
                        ),
                    ));
                }
                let key = StepKey::base(KeyOp::Image { id: id.clone() }).digest();
                let base = Base::Image {
                    id,
                    name: name.to_string(),
                };
                Ok((base, config, key, BTreeSet::new()))
            }
            None => Err(self.err(
                ins,
                format!(
                    "{name}: image not found locally (strata import or load it first, or pull it)"
                ),
            )),
        }
    }

    /// The earlier stage named `name` (names are case-insensitive).
    fn stage_named(&self, name: &str) -> Option<usize> {
        let lower = name.to_lowercase();
        self.stages
            .iter()
            .position(|s| s.name.as_deref() == Some(&lower))
    }

    /// Stage `i` as an input of a planned stage; an error (and a new planning with it) when
    /// it was skipped.
    fn stage_input(&mut self, ins: &Instruction, i: usize) -> Result<(), PlanError> {
        if self.needed.contains(&i) {
            return Ok(());
        }
        self.wanted = Some(i);
        Err(self.err(ins, format!("stage {i} was not planned")))
    }

    /// `--from=NAME`: an earlier stage (by name or index) or an image; with the key it gives.
    pub(super) fn resolve_from(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        f: &str,
    ) -> Result<(CopyFrom, Digest), PlanError> {
        let stage = self
            .stage_named(f)
            .or_else(|| f.parse::<usize>().ok().filter(|&i| i < self.stages.len()));
        if let Some(i) = stage {
            self.stage_input(ins, i)?;
            b.plan.deps.insert(i);
            return Ok((CopyFrom::Stage(i), self.stages[i].final_key().clone()));
        }
        match self
            .images
            .lookup(f, &b.platform)
            .map_err(|e| self.err(ins, e))?
        {
            Some((id, _)) => Ok((CopyFrom::Image(id.clone()), id)),
            None => Err(self.err(
                ins,
                format!("--from={f}: no such stage, and no such image locally"),
            )),
        }
    }
}
