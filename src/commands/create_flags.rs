//! `create`/`run` flags as written ([`CreateArgs`]) → the typed options the runtime makes a
//! container from ([`CreateOptions`]): every flag parsed and checked here, once, with one
//! error naming the flag and its value (ripgrep's low args → high args).

use std::path::PathBuf;

use anyhow::{anyhow, bail, Context, Result};
use strata_network::ports::PortBindings;
use strata_runtime::container::{parse_ulimit, HostConfig, RestartPolicy};
use strata_runtime::create::CreateOptions;
use strata_runtime::logs::LogConfig;
use strata_runtime::options::{MountRequest, NamespaceMode, NetworkMode, VolumeSpec};
use strata_runtime::{cgroup, devfilter};

use crate::cli::CreateArgs;

/// Parses every flag of `create`/`run`.
pub fn create_options(a: &CreateArgs) -> Result<CreateOptions> {
    if let Some(w) = a.workdir.as_deref().filter(|w| !w.starts_with('/')) {
        bail!("the working directory '{w}' is invalid, it needs to be an absolute path");
    }
    let mut env = env_files(&a.env_file)?;
    env.extend(env_values(&a.env)?);
    let mut mounts = Vec::new();
    for v in &a.volumes {
        mounts.push(MountRequest::Volume(v.parse::<VolumeSpec>()?));
    }
    for m in &a.mounts {
        mounts.push(MountRequest::mount_flag(m)?);
    }
    for t in &a.tmpfs {
        mounts.push(MountRequest::tmpfs(t)?);
    }
    Ok(CreateOptions {
        name: a.name.clone(),
        image_name: a.image().to_string(),
        entrypoint: a.entrypoint.clone(),
        command: a.command().to_vec(),
        env,
        workdir: a.workdir.clone(),
        user: a.user.clone(),
        hostname: a.hostname.clone(),
        tty: a.tty,
        interactive: a.interactive,
        attach: attach_streams(&a.attach)?,
        stop_signal: a.stop_signal.as_deref().map(str::parse).transpose()?,
        stop_timeout: a.stop_timeout,
        labels: a
            .labels
            .iter()
            .map(|l| {
                let (k, v) = l.split_once('=').unwrap_or((l, ""));
                (k.to_string(), v.to_string())
            })
            .collect(),
        mounts,
        expose: exposed(&a.expose)?,
        network_aliases: a.network_aliases.clone(),
        ip: a.ip.clone(),
        mac_address: a.mac_address.clone(),
        health: health_flags(a)?,
        host: host_config(a)?,
    })
}

/// `--health-*` and `--no-healthcheck` (durations as Go writes them: 30s, 1m30s, 500ms).
fn health_flags(a: &CreateArgs) -> Result<strata_runtime::health::HealthFlags> {
    let duration = |flag: &str, v: &Option<String>| -> Result<Option<i64>> {
        v.as_deref()
            .map(|s| {
                strata_parser::grammar::parse_duration(s)
                    .ok()
                    .filter(|d| *d >= 0)
                    .ok_or_else(|| anyhow!("invalid {flag} {s:?}: a duration such as 30s"))
            })
            .transpose()
    };
    if a.no_healthcheck && (a.health_cmd.is_some() || a.health_interval.is_some()) {
        bail!("--no-healthcheck conflicts with --health-* options");
    }
    if a.health_retries.is_some_and(|r| r < 0) {
        bail!("--health-retries cannot be negative");
    }
    Ok(strata_runtime::health::HealthFlags {
        cmd: a.health_cmd.clone(),
        interval: duration("--health-interval", &a.health_interval)?,
        timeout: duration("--health-timeout", &a.health_timeout)?,
        start_period: duration("--health-start-period", &a.health_start_period)?,
        retries: a.health_retries,
        disabled: a.no_healthcheck,
    })
}

/// `--expose PORT[-END][/PROTO]` → `"80/tcp"` keys.
fn exposed(values: &[String]) -> Result<Vec<String>> {
    let mut out = Vec::new();
    for v in values {
        for (key, _) in strata_network::ports::parse_publish(v)
            .map_err(|e| anyhow!("invalid --expose {v:?}: {e}"))?
        {
            out.push(key);
        }
    }
    Ok(out)
}

/// `-p` values → Docker's `PortBindings`; only where the container has a network of its own.
fn port_bindings(a: &CreateArgs, mode: &NetworkMode) -> Result<PortBindings> {
    let mut out = PortBindings::new();
    if a.publish.is_empty() {
        return Ok(out);
    }
    if mode.network_name().is_none() {
        bail!("conflicting options: port publishing and the container type network mode");
    }
    for spec in &a.publish {
        for (key, binding) in strata_network::ports::parse_publish(spec)? {
            out.entry(key).or_default().push(binding);
        }
    }
    Ok(out)
}

/// `--device` values, each checked to name a device node on the host now (as Docker does at
/// create time), not only when the container starts.
fn devices(specs: &[String]) -> Result<Vec<strata_runtime::devices::DeviceMapping>> {
    let mappings = specs
        .iter()
        .map(|d| strata_runtime::devices::parse(d))
        .collect::<Result<Vec<_>, _>>()?;
    strata_runtime::devices::resolve(&mappings, false)?;
    Ok(mappings)
}

/// `--ip`, `--network-alias` and `--mac-address` need a network of the container's own; the
/// first two a user-defined one, as in Docker. A container on another's network takes its
/// hostname and /etc files too, so it may not set them.
fn check_network_flags(a: &CreateArgs, mode: &NetworkMode) -> Result<()> {
    if matches!(mode, NetworkMode::Container(_)) {
        if a.hostname.is_some() {
            bail!("conflicting options: hostname and the network mode");
        }
        if !a.dns.is_empty() || !a.dns_search.is_empty() || !a.dns_options.is_empty() {
            bail!("conflicting options: dns and the network mode");
        }
        if !a.add_hosts.is_empty() {
            bail!("conflicting options: custom host-to-IP mapping and the network mode");
        }
    }
    let user_defined = matches!(mode, NetworkMode::Named(_));
    if let Some(ip) = &a.ip {
        ip.parse::<std::net::Ipv4Addr>()
            .map_err(|_| anyhow!("invalid --ip {ip:?}: not an IPv4 address"))?;
        if !user_defined {
            bail!("user specified IP address is supported on user defined networks only");
        }
    }
    if !a.network_aliases.is_empty() && !user_defined {
        bail!("network-scoped alias is supported only for containers in user defined networks");
    }
    if let Some(mac) = &a.mac_address {
        if strata_network::model::parse_mac(mac).is_none() {
            bail!("invalid --mac-address {mac:?}: not a unicast MAC address");
        }
        if mode.network_name().is_none() {
            bail!("conflicting options: mac-address and the network mode");
        }
    }
    Ok(())
}

/// The host-side settings (mounts are added by the runtime).
fn host_config(a: &CreateArgs) -> Result<HostConfig> {
    let restart_policy = RestartPolicy::parse(&a.restart)?;
    if a.rm && !restart_policy.is_none() {
        bail!("conflicting options: cannot specify both --restart and --rm");
    }
    let network_mode = a.network.parse::<NetworkMode>()?;
    check_network_flags(a, &network_mode)?;
    Ok(HostConfig {
        readonly_rootfs: a.read_only,
        port_bindings: port_bindings(a, &network_mode)?,
        publish_all_ports: a.publish_all,
        network_mode,
        memory: a
            .memory
            .as_deref()
            .map(parse_memory)
            .transpose()?
            .unwrap_or(0),
        pids_limit: pids_limit(a.pids_limit)?,
        nano_cpus: nano_cpus(a.cpus)?,
        cpuset_cpus: match &a.cpuset_cpus {
            Some(cs) => {
                cgroup::check_cpuset(cs).map_err(|e| anyhow!(e))?;
                cs.clone()
            }
            None => String::new(),
        },
        cap_add: parse_all(&a.cap_add)?,
        cap_drop: parse_all(&a.cap_drop)?,
        privileged: a.privileged,
        security_opt: parse_all(&a.security_opt)?,
        device_cgroup_rules: device_rules(&a.device_cgroup_rules)?,
        devices: devices(&a.devices)?,
        log_config: LogConfig::parse(a.log_driver.as_deref(), &a.log_opts)?,
        init: a.init,
        auto_remove: a.rm,
        extra_hosts: a
            .add_hosts
            .iter()
            .map(|h| parse_add_host(h))
            .collect::<Result<_>>()?,
        dns: a
            .dns
            .iter()
            .map(|d| match d.parse::<std::net::IpAddr>() {
                Ok(_) => Ok(d.clone()),
                Err(_) => Err(anyhow!("invalid --dns {d:?}: not an IP address")),
            })
            .collect::<Result<_>>()?,
        dns_search: a.dns_search.clone(),
        dns_options: a.dns_options.clone(),
        shm_size: shm_size(a.shm_size.as_deref())?,
        ulimits: a
            .ulimits
            .iter()
            .map(|u| parse_ulimit(u))
            .collect::<Result<_, _>>()?,
        restart_policy,
        group_add: a.group_add.clone(),
        uts_mode: NamespaceMode::parse("--uts", a.uts.as_deref().unwrap_or(""), &[""])?,
        ipc_mode: NamespaceMode::parse(
            "--ipc",
            a.ipc.as_deref().unwrap_or(""),
            &["", "private", "shareable"],
        )?,
        pid_mode: a.pid.as_deref().unwrap_or("").parse()?,
        ..Default::default()
    })
}

/// Parses each value of a repeated flag.
fn parse_all<T: std::str::FromStr<Err = strata_runtime::RuntimeError>>(
    values: &[String],
) -> Result<Vec<T>> {
    Ok(values.iter().map(|v| v.parse()).collect::<Result<_, _>>()?)
}

/// `-m 512m` → bytes; Docker's minimum is 6 MB, and 0 means no limit.
pub(crate) fn parse_memory(s: &str) -> Result<i64> {
    let bytes = strata_parser::instructions::parse_size(s)
        .ok_or_else(|| anyhow!("invalid memory value {s:?} (use e.g. 512m or 1g)"))?;
    if bytes != 0 && bytes < 6 << 20 {
        bail!("invalid --memory {s:?}: minimum memory limit allowed is 6MB");
    }
    Ok(bytes as i64)
}

pub(crate) fn pids_limit(p: Option<i64>) -> Result<i64> {
    match p {
        Some(p) if p < -1 || p == 0 => bail!("invalid --pids-limit {p}"),
        p => Ok(p.unwrap_or(0)),
    }
}

/// `--cpus` → billionths of a CPU, between 0.01 and the host's CPUs.
pub(crate) fn nano_cpus(cpus: Option<f64>) -> Result<i64> {
    let Some(c) = cpus else { return Ok(0) };
    let n = cgroup::host_cpu_count() as f64;
    if !(0.01..=n).contains(&c) {
        bail!("invalid --cpus {c}: range of CPUs is from 0.01 to {n}");
    }
    Ok((c * 1e9) as i64)
}

fn shm_size(s: Option<&str>) -> Result<i64> {
    let Some(s) = s else { return Ok(0) };
    match strata_parser::instructions::parse_size(s) {
        Some(n) if n > 0 => Ok(n as i64),
        _ => bail!("invalid --shm-size {s:?}: a size such as 64m"),
    }
}

fn device_rules(rules: &[String]) -> Result<Vec<String>> {
    for r in rules {
        if devfilter::Rule::parse(r).is_none() {
            bail!("invalid --device-cgroup-rule {r:?}: want TYPE MAJOR:MINOR ACCESS, e.g. 'c 1:3 rwm'");
        }
    }
    Ok(rules.to_vec())
}

/// `-a`: lower-cased, without repeats.
fn attach_streams(streams: &[String]) -> Result<Vec<String>> {
    let mut attach = Vec::new();
    for s in streams {
        let s = s.to_lowercase();
        if !["stdin", "stdout", "stderr"].contains(&s.as_str()) {
            bail!("invalid argument {s:?} for \"-a, --attach\" flag: valid streams are STDIN, STDOUT and STDERR");
        }
        if !attach.contains(&s) {
            attach.push(s);
        }
    }
    Ok(attach)
}

/// `--add-host HOST:IP` (or `HOST=IP`) → (host, ip).
fn parse_add_host(s: &str) -> Result<(String, String)> {
    let (host, ip) = s
        .split_once('=')
        .or_else(|| s.split_once(':'))
        .ok_or_else(|| anyhow!("invalid --add-host {s:?}: expected HOST:IP"))?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if host.is_empty() || ip.parse::<std::net::IpAddr>().is_err() {
        bail!("invalid --add-host {s:?}: expected HOST:IP with an IP address");
    }
    Ok((host.to_string(), ip.to_string()))
}

/// `exec -e`: the variables as `K=V`, a later value of a name replacing an earlier one.
pub fn env_list(values: &[String]) -> Result<Vec<String>> {
    let mut cfg = strata_image::spec::ContainerConfig::default();
    for (k, v) in env_values(values)? {
        cfg.env_set(&k, &v);
    }
    Ok(cfg.env)
}

/// `-e K=V`, or `-e K` for our own value of K (left out when we have none).
fn env_values(values: &[String]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for e in values {
        if e.contains('\0') {
            bail!("invalid environment variable {e:?}: contains a NUL byte");
        }
        match e.split_once('=') {
            Some(("", _)) => bail!("invalid environment variable: {e:?}"),
            Some((k, v)) => out.push((k.to_string(), v.to_string())),
            None => {
                if let Ok(v) = std::env::var(e) {
                    out.push((e.clone(), v));
                }
            }
        }
    }
    Ok(out)
}

/// The variables of `--env-file`s, in order.
fn env_files(files: &[PathBuf]) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for f in files {
        let text =
            std::fs::read_to_string(f).with_context(|| format!("open env file {}", f.display()))?;
        for (n, line) in text.lines().enumerate() {
            let line = if n == 0 {
                line.trim_start_matches('\u{feff}')
            } else {
                line
            };
            let entry = env_file_line(line).map_err(|e| {
                anyhow!(
                    "poorly formatted environment: {}:{}: {e}",
                    f.display(),
                    n + 1
                )
            })?;
            out.extend(entry);
        }
    }
    Ok(out)
}

/// One line of an `--env-file`, by Docker's rules: `NAME=VALUE` (the value as written),
/// `NAME` (passed through from our environment), blank lines and `#` comments. A name holding
/// whitespace (`export D=4`) or nothing is an error.
fn env_file_line(line: &str) -> Result<Option<(String, String)>, String> {
    let line = line.trim_start();
    if line.is_empty() || line.starts_with('#') {
        return Ok(None);
    }
    if line.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    let (name, value) = match line.split_once('=') {
        Some((n, v)) => (n, Some(v)),
        None => (line, None),
    };
    let name = name.trim_start_matches([' ', '\t']);
    if name.contains([' ', '\t']) {
        return Err(format!("variable '{name}' contains whitespaces"));
    }
    if name.is_empty() {
        return Err(format!("no variable name on line '{line}'"));
    }
    Ok(match value {
        Some(v) => Some((name.to_string(), v.to_string())),
        None => std::env::var(name).ok().map(|v| (name.to_string(), v)),
    })
}
