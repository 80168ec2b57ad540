//! RUN steps: a build container made from the step's image and mounts, started through the
//! single-threaded monitor, its output shown, its read-write layer taken as the step's layer.

use super::*;

/// A RUN step's process and what it is given.
pub(crate) struct RunSpec<'a> {
    pub(crate) argv: &'a [String],
    pub(crate) env: &'a [String],
    pub(crate) user: &'a str,
    pub(crate) workdir: &'a str,
    pub(crate) network: &'a str,
    pub(crate) privileged: bool,
    pub(crate) mounts: &'a mounts::Prepared,
}

impl Executor<'_> {
    /// Runs a RUN step in a build container; returns its read-write layer (moved out of the
    /// container, which is removed).
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn run_container(
        &self,
        state: &State,
        step: &Step,
        run: &RunSpec<'_>,
        lowers: &Lowers,
        v: &progress::Vertex<'_>,
    ) -> Result<PathBuf, BuildError> {
        let RunSpec {
            argv,
            env,
            user,
            workdir,
            network,
            ..
        } = run;
        let mut env = env.to_vec();
        env.extend(run.mounts.env.iter().cloned());
        let containers = Containers::new(self.store);
        let mut labels = BTreeMap::new();
        labels.insert(
            strata_runtime::container::BUILD_LABEL.to_string(),
            "1".to_string(),
        );
        // Held until the container's overlay is mounted (see `Lowers`).
        let named = lock(lowers);
        let rec = ContainerRecord {
            id: new_id(),
            name: String::new(),
            image: state.image.id().clone(),
            image_name: state.image.id().to_string(),
            created: fsutil::now_rfc3339(),
            config: RunConfig {
                entrypoint: Vec::new(),
                cmd: argv.to_vec(),
                env,
                working_dir: workdir.to_string(),
                user: user.to_string(),
                hostname: "buildkitsandbox".into(),
                labels,
                ..Default::default()
            },
            host_config: HostConfig {
                network_mode: run_network(network)
                    .parse()
                    .map_err(|e: RuntimeError| self.step_error(step, e.to_string()))?,
                mounts: run.mounts.binds.clone(),
                tmpfs: run.mounts.tmpfs.clone(),
                privileged: run.privileged,
                ulimits: self.opts.ulimits.clone(),
                ..Default::default()
            },
            layers: state.image.record.layers.clone(),
            pending_layers: named.clone(),
            networks: Vec::new(),
        };
        let rec = containers.create(rec)?;
        let result = self.start_build_container(&rec, step, argv, named, v);
        let upper = containers.dir(&rec.id).upper();
        let taken = self.store.temp_path("run-layer");
        let moved = result.and_then(|_| {
            std::fs::rename(&upper, &taken)
                .map_err(|e| BuildError::Other(format!("{}: {e}", upper.display())))
        });
        let _ = containers.remove_dir(&rec.id);
        moved.map(|_| taken)
    }

    /// Runs the build container `rec` to its end, showing its output. `named` (the lowers'
    /// lock) is let go once the monitor reports the container started, i.e. mounted.
    fn start_build_container(
        &self,
        rec: &ContainerRecord,
        step: &Step,
        argv: &[String],
        named: std::sync::MutexGuard<'_, Vec<PathBuf>>,
        v: &progress::Vertex<'_>,
    ) -> Result<(), BuildError> {
        let (r, w) = std::io::pipe().map_err(|e| BuildError::Other(format!("pipe: {e}")))?;
        let w2 = w
            .try_clone()
            .map_err(|e| BuildError::Other(format!("pipe: {e}")))?;
        let exe = match self.exe.get() {
            Some(e) => e.clone(),
            None => {
                let e = strata_runtime::rootexe::protected_exe()?;
                self.exe.get_or_init(|| e).clone()
            }
        };
        // The monitor reports the start on its stdin (the container's is /dev/null anyway).
        let (ready_r, ready_w) =
            std::io::pipe().map_err(|e| BuildError::Other(format!("pipe: {e}")))?;
        let child = Command::new(exe)
            .arg("--root")
            .arg(self.store.root())
            .args(
                strata_runtime::launch::MonitorLaunch {
                    foreground: true,
                    ready_fd: Some(0),
                    ..strata_runtime::launch::MonitorLaunch::of(&rec.id)
                }
                .words(),
            )
            .stdin(ready_w)
            .stdout(w)
            .stderr(w2)
            .spawn()
            .map_err(|e| self.step_error(step, format!("start the build container: {e}")))?;
        // Started, an error (shown by the monitor on stderr too), or EOF: mounted or never
        // will be.
        let _ = std::io::read_to_string(ready_r);
        drop(named);
        self.finish_step(step, argv, child, r, v)
    }

    /// Shows the output of a step's process (`out`, both its streams) as it comes, and
    /// waits for the process: its failure is the step's, with its exit code.
    fn finish_step(
        &self,
        step: &Step,
        argv: &[String],
        mut child: std::process::Child,
        out: std::io::PipeReader,
        v: &progress::Vertex<'_>,
    ) -> Result<(), BuildError> {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            v.output(&line);
        }
        let st = child
            .wait()
            .map_err(|e| BuildError::Other(format!("wait: {e}")))?;
        if st.success() {
            return Ok(());
        }
        let code = st.code().unwrap_or(255);
        Err(self.step_error(
            step,
            format!(
                "process {:?} did not complete successfully: exit code: {code}",
                argv.join(" ")
            ),
        ))
    }

    /// Runs a RUN step with chroot isolation: in a plain copy of the step's layers, through
    /// the single-threaded `__chroot` helper; returns what the step changed as a layer
    /// directory.
    pub(crate) fn run_chrooted(
        &self,
        state: &State,
        step: &Step,
        run: &RunSpec<'_>,
        lowers: &Lowers,
        v: &progress::Vertex<'_>,
    ) -> Result<PathBuf, BuildError> {
        use strata_runtime::chroot;
        if run.network == "none" {
            return Err(self.step_error(
                step,
                "RUN --network=none needs a network namespace, which --isolation chroot \
                 does without"
                    .into(),
            ));
        }
        let tree = copy::copy_layers(
            self.store,
            &state.image,
            &lock(lowers),
            true,
            &chroot::prepare_rootfs,
        )
        .map_err(|e| self.step_error(step, e))?;
        let mut env = run.env.to_vec();
        env.extend(run.mounts.env.iter().cloned());
        // As a container step's: the sandbox's name, not this host's.
        if !env.iter().any(|e| e.starts_with("HOSTNAME=")) {
            env.push("HOSTNAME=buildkitsandbox".into());
        }
        let spec = chroot::ChrootSpec {
            rootfs: tree.mnt.clone(),
            process: strata_runtime::spec::ProcessSpec {
                args: run.argv.to_vec(),
                env,
                cwd: run.workdir.to_string(),
                user: run.user.to_string(),
                caps: chroot::step_caps(),
                no_new_privs: false,
                seccomp: chroot::can_load_seccomp() && !run.privileged,
                tty: false,
                console_size: None,
                init: false,
                ulimits: self.opts.ulimits.clone(),
                group_add: Vec::new(),
                buildkit_groups: true,
            },
        };
        let (r, w) = std::io::pipe().map_err(|e| BuildError::Other(format!("pipe: {e}")))?;
        let w2 = w
            .try_clone()
            .map_err(|e| BuildError::Other(format!("pipe: {e}")))?;
        // The running binary itself: nothing runs from the tree before the helper has
        // chrooted, and no container is around to reach it.
        let child = chroot::spawn(
            Path::new("/proc/self/exe"),
            self.store.root(),
            &spec,
            w.into(),
            w2.into(),
        )
        .map_err(|e| self.step_error(step, format!("start the chroot helper: {e}")))?;
        self.finish_step(step, run.argv, child, r, v)?;
        tree.into_upper().map_err(|e| self.step_error(step, e))
    }
}

/// The network a RUN step gets: as written, but rootless the default is the user's own (the
/// host's, as rootless BuildKit's), since a bridge needs the host's root.
fn run_network(written: &str) -> &str {
    if written == "default" && strata_image::layer::in_user_namespace() {
        "host"
    } else {
        written
    }
}
