//! RUN: the command (heredocs included), its environment and network, and its mounts.

use strata_parser::instructions::{
    CommandLine, Instruction, Mount, MountKind, NetworkMode, Run, Security,
};
use strata_parser::node::Heredoc;
use strata_parser::shell::Lexer;

use super::copy::SelectShape;
use super::{Planner, SliceEnv, StageBuilder};
use crate::keys::{content_digest, BindContent, KeyOp, MountKey, RunKey};
use crate::model::{CopyFrom, RunMount, StepOp};
use crate::paths::absolute_in;
use crate::PlanError;

type Vars = [(String, String)];

impl Planner<'_> {
    pub(super) fn run(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        r: &Run,
        vars: &Vars,
    ) -> Result<(), PlanError> {
        let argv = if r.heredocs.is_empty() {
            b.command(&r.command)
        } else {
            self.heredoc_command(b, ins, r)?
        };
        let mut env = b.config.get().env.clone();
        // Build arguments in scope are environment for RUN (ENV wins), not kept in the image.
        for (k, v) in &b.args {
            if b.config.get().env_get(k).is_none() {
                env.push(format!("{k}={v}"));
            }
        }
        let network = self.run_network(ins, r)?;
        let insecure = r.security == Some(Security::Insecure);
        if insecure && !self.opts.allow_insecure {
            return Err(self.err(
                ins,
                "RUN --security=insecure needs the build to allow it (--allow security.insecure)",
            ));
        }
        let user = b.config.get().user.clone();
        let workdir = b.workdir();
        let mut mounts = Vec::new();
        let mut mount_keys = Vec::new();
        for (n, m) in r.mounts.iter().enumerate() {
            let (mount, key) = self.run_mount(b, ins, m, &workdir, n, vars)?;
            mounts.push(mount);
            mount_keys.push(key);
        }
        let mut sorted_env = env.clone();
        sorted_env.sort();
        let key = KeyOp::Run(RunKey {
            argv: argv.clone(),
            env: sorted_env,
            user: user.clone(),
            workdir: workdir.clone(),
            network: network.clone(),
            mounts: mount_keys,
            security: insecure.then(|| "insecure".to_string()),
            ulimits: self.opts.ulimits.clone(),
        });
        let shown = match &r.command {
            CommandLine::Shell(s) => format!("RUN {} {s} # buildkit", b.shell.join(" ")),
            CommandLine::Exec(v) => format!("RUN {} # buildkit", v.join(" ")),
        };
        let op = StepOp::Run {
            argv,
            env,
            user,
            workdir,
            network,
            mounts,
            insecure,
        };
        self.push(b, ins, op, key, shown);
        Ok(())
    }

    /// The network a RUN step gets: `--network`, else the build's (the host's by default).
    fn run_network(&self, ins: &Instruction, r: &Run) -> Result<String, PlanError> {
        if r.network == Some(NetworkMode::Host) && !self.opts.allow_network_host {
            return Err(self.err(
                ins,
                "RUN --network=host needs the build to allow it (--allow network.host)",
            ));
        }
        Ok(match r.network {
            Some(NetworkMode::None) => "none".to_string(),
            Some(NetworkMode::Host) => "host".to_string(),
            Some(NetworkMode::Default) | None => {
                self.opts.network.clone().unwrap_or_else(|| "host".into())
            }
        })
    }

    /// Resolves one `RUN --mount` (values expanded with the build's variables) and what of it
    /// the step's key covers: never a secret's value or a cache's contents.
    fn run_mount(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        m: &Mount,
        workdir: &str,
        n: usize,
        vars: &Vars,
    ) -> Result<(RunMount, MountKey), PlanError> {
        let target = self
            .expand_opt(ins, m.target.as_deref(), vars)?
            .map(|t| absolute_in(workdir, &t));
        let need_target = |t: Option<String>| {
            t.ok_or_else(|| self.err(ins, "--mount: a target is required for this mount type"))
        };
        let source = self.expand_opt(ins, m.source.as_deref(), vars)?;
        let from = self.expand_opt(ins, m.from.as_deref(), vars)?;
        let uid = m.uid.unwrap_or(0);
        let gid = m.gid.unwrap_or(0);
        Ok(match m.kind {
            MountKind::Bind => {
                let target = need_target(target)?;
                let source = source.unwrap_or_else(|| "/".into());
                self.bind_mount(b, ins, target, source, from, m.readonly)?
            }
            MountKind::Cache => {
                let target = need_target(target)?;
                let id = self
                    .expand_opt(ins, m.id.as_deref(), vars)?
                    .unwrap_or_else(|| target.clone());
                let seed = match &from {
                    Some(f) => {
                        let (from, _) = self.resolve_from(b, ins, f)?;
                        Some((from, source.clone().unwrap_or_else(|| "/".into())))
                    }
                    None => None,
                };
                let key = MountKey::Cache {
                    target: target.clone(),
                    id: id.clone(),
                    ro: m.readonly,
                };
                let mount = RunMount::Cache {
                    target,
                    id,
                    sharing: m.sharing,
                    uid,
                    gid,
                    mode: m.mode.unwrap_or(0o755),
                    readonly: m.readonly,
                    seed,
                };
                (mount, key)
            }
            MountKind::Tmpfs => {
                let target = need_target(target)?;
                let key = MountKey::Tmpfs {
                    target: target.clone(),
                    size: m.size,
                };
                (
                    RunMount::Tmpfs {
                        target,
                        size: m.size,
                    },
                    key,
                )
            }
            MountKind::Secret => {
                let id = self
                    .expand_opt(ins, m.id.as_deref(), vars)?
                    .unwrap_or_default();
                let env = self.expand_opt(ins, m.env.as_deref(), vars)?;
                let key = MountKey::Secret {
                    id: id.clone(),
                    target: target.clone(),
                    env: env.clone(),
                };
                let mount = RunMount::Secret {
                    id,
                    target,
                    env,
                    required: m.required,
                    uid,
                    gid,
                    mode: m.mode.unwrap_or(0o400),
                };
                (mount, key)
            }
            MountKind::Ssh => {
                let id = self
                    .expand_opt(ins, m.id.as_deref(), vars)?
                    .unwrap_or_else(|| "default".into());
                let target = target.unwrap_or_else(|| format!("/run/buildkit/ssh_agent.{n}"));
                let key = MountKey::Ssh {
                    id: id.clone(),
                    target: target.clone(),
                };
                let mount = RunMount::Ssh {
                    id,
                    target,
                    required: m.required,
                    uid,
                    gid,
                    mode: m.mode.unwrap_or(0o600),
                };
                (mount, key)
            }
        })
    }

    /// A bind mount of part of the context (or of a named context), a stage or an image.
    fn bind_mount(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        target: String,
        source: String,
        from: Option<String>,
        readonly: bool,
    ) -> Result<(RunMount, MountKey), PlanError> {
        let named = self.named_context(from.as_deref());
        let (from, key, selected, content) = match &from {
            Some(f) if named.is_none() => {
                let (from, key) = self.resolve_from(b, ins, f)?;
                (from, Some(key), Vec::new(), BindContent::Keyed([]))
            }
            _ => {
                let rel = crate::context::clean_source(&source)
                    .map_err(|e| self.err(ins, format!("--mount source {source}: {e}")))?;
                let shape = SelectShape {
                    named: named.clone(),
                    ..SelectShape::default()
                };
                let wanted = if rel.is_empty() { ".".to_string() } else { rel };
                let sel = self.select_context(ins, &[wanted], &shape)?;
                let content = content_digest(self.context_of(named.as_ref()), &sel);
                let from = named.map_or(CopyFrom::Context, CopyFrom::Named);
                (from, None, sel, BindContent::Context(content))
            }
        };
        let key = MountKey::Bind {
            target: target.clone(),
            from: key,
            source: source.clone(),
            content,
            ro: readonly,
        };
        let mount = RunMount::Bind {
            target,
            from,
            source,
            selected,
            readonly,
        };
        Ok((mount, key))
    }

    /// Expands `$VAR` in an unquoted heredoc body, like the shell would: quotes stay literal.
    pub(super) fn expand_heredoc(
        &self,
        ins: &Instruction,
        body: &str,
        vars: &Vars,
    ) -> Result<String, PlanError> {
        let lx = Lexer {
            escape: self.escape,
            raw_quotes: true,
            skip_unset: false,
        };
        lx.process_word(body, &SliceEnv(vars))
            .map(|e| e.value)
            .map_err(|e| self.err(ins, format!("heredoc: {e}")))
    }

    /// RUN with heredocs, as BuildKit does it: `RUN <<EOF` alone runs the body as a script
    /// (through its `#!` interpreter if it has one); otherwise the whole text, bodies and
    /// terminators included, goes to the shell, which reads the heredocs itself.
    fn heredoc_command(
        &self,
        b: &StageBuilder,
        ins: &Instruction,
        r: &Run,
    ) -> Result<Vec<String>, PlanError> {
        let CommandLine::Shell(cmd) = &r.command else {
            return Err(self.err(ins, "heredocs need the shell form of RUN"));
        };
        let mut argv = b.shell.clone();
        let only =
            r.heredocs.len() == 1 && strata_parser::grammar::heredoc_marker(cmd.trim()).is_some();
        if only {
            argv.push(script_command(heredoc_body(&r.heredocs[0])));
            return Ok(argv);
        }
        let mut full = cmd.clone();
        full.push('\n');
        for h in &r.heredocs {
            full.push_str(&h.content);
            full.push_str(&h.name);
            full.push('\n');
        }
        argv.push(full);
        Ok(argv)
    }
}

/// The shell command that runs a heredoc script: the body itself, or, when it starts with
/// `#!`, the body written to a file, run (the interpreter line picks the program), removed.
fn script_command(script: String) -> String {
    if !script.starts_with("#!") {
        return script;
    }
    let mark = format!(
        "STRATA_SCRIPT_{}",
        &strata_image::Digest::of(script.as_bytes()).hex()[..12]
    );
    format!(
        "f=$(mktemp) && cat > \"$f\" <<'{mark}' && chmod +x \"$f\" && \"$f\"; r=$?; rm -f \"$f\"; exit $r\n{script}{}{mark}\n",
        if script.ends_with('\n') { "" } else { "\n" }
    )
}

/// A heredoc's content with `<<-` tab stripping applied.
pub(super) fn heredoc_body(h: &Heredoc) -> String {
    if !h.chomp {
        return h.content.clone();
    }
    h.content
        .split_inclusive('\n')
        .map(|l| l.trim_start_matches('\t'))
        .collect()
}
