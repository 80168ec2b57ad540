//! Making a container record from an image and the typed `create`/`run` options: the image's
//! config merged under the options (Docker's rules for ENTRYPOINT/CMD, ENV, WORKDIR, USER,
//! STOPSIGNAL, LABEL), every mount target claimed once, named volumes made, and an anonymous
//! volume for each `-v /path` and for each image `VOLUME` nothing else covers.
//!
//! Main type: [`CreateOptions`] (what the flags asked for, parsed by the CLI into the values
//! of [`crate::options`]); [`new_record`] stores the record.

use std::collections::{BTreeMap, BTreeSet};

use strata_cache::fsutil;
use strata_cache::Store;
use strata_image::spec::ContainerConfig;
use strata_image::Digest;

use crate::container::{new_id, ContainerRecord, Containers, HostConfig, RunConfig};
use crate::options::{MountRequest, StopSignal, VolumeSpec};
use crate::record::EndpointSettings;
use crate::volume::Volumes;
use crate::RuntimeError;

/// What `create`/`run` asked for, every flag parsed and checked.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub name: Option<String>,
    /// The image as the user named it.
    pub image_name: String,
    /// `--entrypoint` (empty: none at all).
    pub entrypoint: Option<String>,
    /// The command after the image (empty: the image's CMD).
    pub command: Vec<String>,
    /// `--env-file` and `-e`, in order, each resolved to a name and value.
    pub env: Vec<(String, String)>,
    pub workdir: Option<String>,
    pub user: Option<String>,
    pub hostname: Option<String>,
    pub tty: bool,
    pub interactive: bool,
    /// `-a`, lower-case, without repeats.
    pub attach: Vec<String>,
    pub stop_signal: Option<StopSignal>,
    pub stop_timeout: Option<i64>,
    pub labels: Vec<(String, String)>,
    /// `-v`, `--mount` and `--tmpfs`, in that order.
    pub mounts: Vec<MountRequest>,
    /// `--expose` (`"80/tcp"` keys), added to the image's exposed ports.
    pub expose: Vec<String>,
    /// `--network-alias`, `--ip`, `--mac-address`: for the `--network` network.
    pub network_aliases: Vec<String>,
    pub ip: Option<String>,
    pub mac_address: Option<String>,
    /// `--health-*`, `--no-healthcheck`.
    pub health: crate::health::HealthFlags,
    /// Every other host-side setting, as the record keeps it (its mounts are filled here).
    pub host: HostConfig,
}

/// Makes and stores the record of a container of image `image` (an ID).
pub fn new_record(
    store: &Store,
    image: &Digest,
    opts: &CreateOptions,
) -> Result<ContainerRecord, RuntimeError> {
    check_network(store, &opts.host.network_mode)?;
    if let crate::options::PidMode::Container(c) = &opts.host.pid_mode {
        Containers::new(store).resolve(c)?;
    }
    let img = store.image(image)?;
    let cfg = img.config.container();
    let (entrypoint, cmd) = command_of(&cfg, opts)?;
    let mut env = ContainerConfig {
        env: cfg.env.clone(),
        ..Default::default()
    };
    for (k, v) in &opts.env {
        env.env_set(k, v);
    }
    let stop_signal = match &opts.stop_signal {
        Some(s) => s.clone(),
        None => cfg.stop_signal.parse()?,
    };
    let mut labels = cfg.labels.clone();
    labels.extend(opts.labels.iter().cloned());
    let mut host = opts.host.clone();
    let anonymous = mounts_of(store, &cfg, opts, &mut host)?;
    let rec = ContainerRecord {
        id: new_id(),
        name: opts.name.clone().unwrap_or_default(),
        image: image.clone(),
        image_name: opts.image_name.clone(),
        created: fsutil::now_rfc3339(),
        config: RunConfig {
            entrypoint,
            cmd,
            env: env.env,
            working_dir: opts.workdir.clone().unwrap_or(cfg.working_dir.clone()),
            user: opts.user.clone().unwrap_or(cfg.user.clone()),
            hostname: opts.hostname.clone().unwrap_or_default(),
            tty: opts.tty,
            open_stdin: opts.interactive,
            stop_signal,
            stop_timeout: opts.stop_timeout,
            labels,
            attach: opts.attach.clone(),
            exposed_ports: exposed_ports(&cfg, opts),
            mac_address: opts.mac_address.clone().unwrap_or_default(),
            healthcheck: opts.health.merge(cfg.healthcheck.as_ref()),
        },
        networks: primary_network(&host, opts),
        host_config: host,
        layers: img.record.layers.clone(),
        pending_layers: Vec::new(),
    };
    let rec = create_with_anonymous_volumes(store, rec, &anonymous)?;
    crate::events::record(store, &rec, "create", &[]);
    Ok(rec)
}

/// A network or container `--network` names must exist when the container is made, as in
/// Docker (nothing is stored otherwise).
fn check_network(store: &Store, mode: &crate::options::NetworkMode) -> Result<(), RuntimeError> {
    match mode {
        crate::options::NetworkMode::Named(n) => {
            strata_network::Networks::new(store).find(n)?;
        }
        crate::options::NetworkMode::Container(c) => {
            Containers::new(store).resolve(c)?;
        }
        _ => {}
    }
    Ok(())
}

/// The image's exposed ports and `--expose`'s.
fn exposed_ports(
    cfg: &ContainerConfig,
    opts: &CreateOptions,
) -> BTreeMap<String, serde_json::Value> {
    let mut out = cfg.exposed_ports.clone();
    for key in &opts.expose {
        out.insert(key.clone(), serde_json::json!({}));
    }
    out
}

/// What the container asks of its `--network` network, when it asked anything.
fn primary_network(host: &HostConfig, opts: &CreateOptions) -> Vec<EndpointSettings> {
    match host.network_mode.network_name() {
        Some(net) if !opts.network_aliases.is_empty() || opts.ip.is_some() => {
            vec![EndpointSettings {
                network: net.to_string(),
                aliases: opts.network_aliases.clone(),
                ipv4_address: opts.ip.clone().unwrap_or_default(),
            }]
        }
        _ => Vec::new(),
    }
}

/// ENTRYPOINT and CMD by Docker's rules: `--entrypoint` replaces the image's and drops its
/// CMD; a command after the image replaces CMD.
fn command_of(
    cfg: &ContainerConfig,
    opts: &CreateOptions,
) -> Result<(Vec<String>, Vec<String>), RuntimeError> {
    let entrypoint = match &opts.entrypoint {
        Some(e) if e.is_empty() => Vec::new(),
        Some(e) => vec![e.clone()],
        None => cfg.entrypoint.clone().unwrap_or_default(),
    };
    let cmd = if !opts.command.is_empty() {
        opts.command.clone()
    } else if opts.entrypoint.is_some() {
        Vec::new()
    } else {
        cfg.cmd.clone().unwrap_or_default()
    };
    if entrypoint.is_empty() && cmd.is_empty() {
        return Err(RuntimeError::Invalid("no command specified".into()));
    }
    Ok((entrypoint, cmd))
}

/// Fills the record's mounts from the requests; returns the targets that get anonymous
/// volumes (`-v /path`, and the image's VOLUMEs nothing else is mounted on, as in Docker).
fn mounts_of(
    store: &Store,
    cfg: &ContainerConfig,
    opts: &CreateOptions,
    host: &mut HostConfig,
) -> Result<Vec<String>, RuntimeError> {
    let mut covered = BTreeSet::new();
    let mut anonymous = BTreeSet::new();
    for m in &opts.mounts {
        match m {
            MountRequest::Volume(VolumeSpec::Anonymous { target }) => {
                claim_target(&mut covered, target)?;
                anonymous.insert(target.trim_end_matches('/').to_string());
            }
            MountRequest::Volume(v) => {
                // A named volume is made now if it does not exist, as Docker makes it at
                // create; a missing host path is made a directory.
                if let VolumeSpec::Named { name, .. } = v {
                    Volumes::new(store).create(name, BTreeMap::new())?;
                }
                crate::spec::user_mount(v, store)?;
                claim_target(&mut covered, v.target())?;
                host.binds.push(v.clone());
            }
            MountRequest::Bind { mount: b, spec } => {
                if std::fs::metadata(&b.source).is_err() {
                    return Err(RuntimeError::Invalid(format!(
                        "invalid mount config {spec:?}: bind source path does not exist: {}",
                        b.source.display()
                    )));
                }
                claim_target(&mut covered, &b.target)?;
                host.mounts.push(b.clone());
            }
            MountRequest::Tmpfs { target, options } => {
                claim_target(&mut covered, target)?;
                host.tmpfs.insert(target.clone(), options.clone());
            }
        }
    }
    for v in cfg.volumes.keys() {
        let t = match v.trim_end_matches('/') {
            "" => "/",
            t => t,
        };
        if t.starts_with('/') && t != "/" && !covered.contains(t) {
            anonymous.insert(t.to_string());
        }
    }
    Ok(anonymous.into_iter().collect())
}

/// Records a mount's target; a second mount on the same target is Docker's error.
fn claim_target(covered: &mut BTreeSet<String>, target: &str) -> Result<(), RuntimeError> {
    let t = match target.trim_end_matches('/') {
        "" => "/",
        t => t,
    };
    if !covered.insert(t.to_string()) {
        return Err(RuntimeError::Invalid(format!("Duplicate mount point: {t}")));
    }
    Ok(())
}

/// Records the container, with an anonymous volume (a volume of the store, labelled as
/// Docker labels them) mounted at each of `targets`; volumes made for a record that cannot
/// be written go again.
fn create_with_anonymous_volumes(
    store: &Store,
    mut rec: ContainerRecord,
    targets: &[String],
) -> Result<ContainerRecord, RuntimeError> {
    let volumes = Volumes::new(store);
    let mut made = Vec::new();
    let mut result = Ok(());
    for t in targets {
        match volumes.create_anonymous() {
            Ok(v) => {
                rec.host_config.binds.push(VolumeSpec::Named {
                    name: v.name.clone(),
                    target: t.clone(),
                    modes: String::new(),
                    readonly: false,
                });
                made.push(v.name);
            }
            Err(e) => {
                result = Err(e);
                break;
            }
        }
    }
    let created = result.and_then(|()| Containers::new(store).create(rec));
    if created.is_err() {
        for name in &made {
            let _ = volumes.remove(name);
        }
    }
    created
}
