//! What containers are and did: `ps`, `inspect`, `logs`, `top`, `diff`.

use std::io::{self, Write};
use std::time::Duration;

use anyhow::{anyhow, bail, Result};
use serde_json::{json, Value};
use strata_cache::{fsutil, Store};
use strata_image::Digest;
use strata_runtime::container::{ContainerRecord, Containers, State, Status};
use strata_runtime::{ops, volume};

use crate::cli::{LogsArgs, PsArgs};
use crate::filters::Filters;
use crate::output::{
    human_duration, human_size, now_unix, print_formatted, print_table, since, Format,
};

/// Docker's STATUS column.
fn status_text(st: &State) -> String {
    let ago = |t: &str| {
        strata_cache::fsutil::parse_rfc3339(t)
            .map(|t| human_duration(now_unix() - t))
            .unwrap_or_default()
    };
    match st.status {
        Status::Created => "Created".into(),
        Status::Running => {
            let health = match st.health.as_ref().map(|h| h.status.as_str()) {
                Some("starting") => " (health: starting)".to_string(),
                Some(s) => format!(" ({s})"),
                None => String::new(),
            };
            format!("Up {}{health}", ago(&st.started_at))
        }
        Status::Paused => format!("Up {} (Paused)", ago(&st.started_at)),
        Status::Exited if st.restarting => {
            format!("Restarting ({}) {} ago", st.exit_code, ago(&st.finished_at))
        }
        Status::Exited => format!("Exited ({}) {} ago", st.exit_code, ago(&st.finished_at)),
        Status::Removing => "Removal In Progress".into(),
    }
}

fn command_text(rec: &ContainerRecord, trunc: bool) -> String {
    let cmd = rec.argv().join(" ");
    if trunc && cmd.chars().count() > 20 {
        format!("\"{}…\"", cmd.chars().take(19).collect::<String>())
    } else {
        format!("\"{cmd}\"")
    }
}

/// The containers `ps` shows, newest first, with Docker's selection: running ones unless
/// `-a`, a limit (`-n`, `-l`), `before`/`since` or a `status` filter asks for all; then the
/// filters (see [`crate::filters`]).
fn ps_rows(store: &Store, a: &PsArgs) -> Result<Vec<(ContainerRecord, State)>> {
    let c = Containers::new(store);
    let f = Filters::parse(
        &a.filter,
        &[
            "id", "name", "label", "exited", "status", "ancestor", "before", "since", "health",
        ],
    )?;
    if let Some(v) = f
        .values("health")
        .iter()
        .find(|v| !["starting", "healthy", "unhealthy", "none"].contains(&v.as_str()))
    {
        bail!("invalid filter 'health={v}'");
    }
    let exited = f
        .values("exited")
        .iter()
        .map(|v| {
            v.parse::<i32>()
                .map_err(|_| anyhow!("invalid filter 'exited={v}': not an exit code"))
        })
        .collect::<Result<Vec<i32>>>()?;
    const STATES: [&str; 7] = [
        "created",
        "restarting",
        "running",
        "removing",
        "paused",
        "exited",
        "dead",
    ];
    if let Some(v) = f
        .values("status")
        .iter()
        .find(|v| !STATES.contains(&v.as_str()))
    {
        bail!("invalid filter 'status={v}'");
    }
    let limit = if a.latest { 1 } else { a.last.max(0) as usize };
    let mut recs: Vec<ContainerRecord> = c
        .list()?
        .into_iter()
        // Build containers (RUN steps) are the build's business, as with Docker.
        .filter(|r| !r.is_build())
        .collect();
    recs.sort_by(|x, y| y.created.cmp(&x.created));
    // `before` and `since` name containers: keep only those created before / after them.
    let position = |key: &str| -> Result<Option<usize>> {
        let Some(v) = f.values(key).last() else {
            return Ok(None);
        };
        let id = c.resolve(v)?.id;
        Ok(recs.iter().position(|r| r.id == id))
    };
    let (before, since) = (position("before")?, position("since")?);
    let ancestors = ancestor_images(store, f.values("ancestor"))?;
    let all = a.all || limit > 0 || before.is_some() || since.is_some() || f.has("status");
    let mut rows = Vec::new();
    for (i, rec) in recs.into_iter().enumerate() {
        if before.is_some_and(|b| i <= b) || since.is_some_and(|s| i >= s) {
            continue;
        }
        let Ok(st) = c.state(&rec.id) else { continue };
        let shown = (all || st.is_running())
            && f.matches("name", &format!("/{}", rec.name))
            && f.matches("id", &rec.id)
            && f.matches_labels(&rec.config.labels)
            && f.matches("status", st.state_name())
            && (!f.has("health")
                || f.values("health")
                    .iter()
                    .any(|v| *v == st.health.as_ref().map_or("none", |h| h.status.as_str())))
            && (exited.is_empty()
                || (st.status == Status::Exited && exited.contains(&st.exit_code)))
            && ancestors
                .as_ref()
                .is_none_or(|set| set.contains(&rec.image));
        if shown {
            rows.push((rec, st));
            if rows.len() == limit {
                break;
            }
        }
    }
    Ok(rows)
}

/// The images an `ancestor` filter names and every image built on them (through the
/// images' parent links); `None` without the filter. Names that resolve to no image add
/// nothing, as with Docker.
fn ancestor_images(
    store: &Store,
    names: &[String],
) -> Result<Option<std::collections::BTreeSet<Digest>>> {
    if names.is_empty() {
        return Ok(None);
    }
    let mut set: std::collections::BTreeSet<_> = names
        .iter()
        .filter_map(|n| store.resolve_image(n).ok())
        .collect();
    let parents: Vec<(Digest, Digest)> = store
        .list_images()?
        .into_iter()
        .filter_map(|id| {
            let parent = store.image(&id).ok()?.record.parent?;
            Some((id, parent))
        })
        .collect();
    // Children join until nothing changes: chains are short and images few.
    loop {
        let before = set.len();
        for (child, parent) in &parents {
            if set.contains(parent) {
                set.insert(child.clone());
            }
        }
        if set.len() == before {
            return Ok(Some(set));
        }
    }
}

pub fn ps(store: &Store, a: &PsArgs) -> Result<()> {
    let rows = ps_rows(store, a)?;
    if a.quiet {
        for (rec, _) in &rows {
            println!("{}", if a.no_trunc { &rec.id } else { rec.short_id() });
        }
        return Ok(());
    }
    let c = Containers::new(store);
    // Docker's SIZE: the writable layer, and what the image adds to it.
    let size = |rec: &ContainerRecord| {
        let rw = fsutil::tree_size(&c.dir(&rec.id).upper());
        let image = store
            .image(&rec.image)
            .map(|img| crate::commands::images::image_size(store, &img))
            .unwrap_or(0);
        format!("{} (virtual {})", human_size(rw), human_size(rw + image))
    };
    let items: Vec<Value> = rows
        .iter()
        .map(|(rec, st)| {
            json!({
                "Size": if a.size { size(rec) } else { String::new() },
                "ID": if a.no_trunc { rec.id.clone() } else { rec.short_id().to_string() },
                "Image": rec.image_name,
                "Command": command_text(rec, !a.no_trunc),
                "CreatedAt": rec.created,
                "RunningFor": since(&rec.created),
                "Status": status_text(st),
                "State": st.state_name(),
                "Ports": super::network_view::ports_column(store, rec),
                "Names": rec.name,
                "Labels": rec.config.labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(","),
                "Mounts": ps_mounts(rec, !a.no_trunc),
                "Networks": super::network_view::networks_column(store, rec),
                "LocalVolumes": strata_runtime::volume::named_volumes(rec).count().to_string(),
            })
        })
        .collect();
    let format = Format::parse(a.format.as_deref());
    if let Format::Table = format {
        // Docker's table: the default columns, SIZE only with -s (STATE only in templates).
        let mut columns = PS_COLUMNS[..7].to_vec();
        if a.size {
            columns.push(("Size", "SIZE"));
        }
        let table: Vec<Vec<String>> = items
            .iter()
            .map(|i| {
                columns
                    .iter()
                    .map(|(k, _)| i[k].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .collect();
        let header: Vec<&str> = columns.iter().map(|(_, h)| *h).collect();
        print_table(&header, &table);
        return Ok(());
    }
    print_formatted(&format, &items, &PS_COLUMNS)
}

/// Docker's `.Mounts` of `ps`: each mount's volume name or host path (15 characters unless
/// `--no-trunc`), comma-separated.
fn ps_mounts(rec: &ContainerRecord, trunc: bool) -> String {
    let mut names: Vec<String> = rec
        .host_config
        .binds
        .iter()
        .map(|b| b.source_text())
        .chain(
            rec.host_config
                .mounts
                .iter()
                .map(|m| m.source.display().to_string()),
        )
        .collect();
    if trunc {
        for n in &mut names {
            *n = n.chars().take(15).collect();
        }
    }
    names.join(",")
}

/// `ps` fields and their column titles: the table's seven first, then the ones templates add.
const PS_COLUMNS: [(&str, &str); 14] = [
    ("ID", "CONTAINER ID"),
    ("Image", "IMAGE"),
    ("Command", "COMMAND"),
    ("RunningFor", "CREATED"),
    ("Status", "STATUS"),
    ("Ports", "PORTS"),
    ("Names", "NAMES"),
    ("State", "STATE"),
    ("Size", "SIZE"),
    ("CreatedAt", "CREATED AT"),
    ("Labels", "LABELS"),
    ("Mounts", "MOUNTS"),
    ("Networks", "NETWORKS"),
    ("LocalVolumes", "LOCAL VOLUMES"),
];

/// The record's host config as Docker shows it (the restart policy always present).
fn host_config_value(rec: &ContainerRecord) -> Value {
    let mut v = json!(rec.host_config);
    let p = &rec.host_config.restart_policy;
    v["RestartPolicy"] = json!({
        "Name": if p.name.is_empty() { "no" } else { p.name.as_str() },
        "MaximumRetryCount": p.maximum_retry_count,
    });
    v
}

/// Docker's `container inspect` object.
pub fn inspect_value(store: &Store, rec: &ContainerRecord) -> Result<Value> {
    let c = Containers::new(store);
    let st = c.state(&rec.id)?;
    let dir = c.dir(&rec.id);
    let argv = rec.argv();
    let mut v = json!({
        "Id": rec.id,
        "Created": rec.created,
        "Path": argv.first().cloned().unwrap_or_default(),
        "Args": argv.iter().skip(1).collect::<Vec<_>>(),
        "State": {
            "Status": st.state_name(),
            "Running": st.status == Status::Running || st.status == Status::Paused,
            "Paused": st.status == Status::Paused,
            "Restarting": st.restarting,
            "OOMKilled": st.oom_killed,
            "Dead": false,
            "Pid": if st.is_running() { st.pid } else { 0 },
            "ExitCode": st.exit_code,
            "Error": st.error,
            "StartedAt": if st.started_at.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { st.started_at.clone() },
            "FinishedAt": if st.finished_at.is_empty() { "0001-01-01T00:00:00Z".to_string() } else { st.finished_at.clone() },
        },
        "Image": rec.image.to_string(),
        "ResolvConfPath": dir.path.join("resolv.conf"),
        "HostnamePath": dir.path.join("hostname"),
        "HostsPath": dir.path.join("hosts"),
        "LogPath": dir.log(),
        "Name": format!("/{}", rec.name),
        "RestartCount": st.restart_count,
        "Driver": "overlay",
        "Platform": "linux",
        "HostConfig": host_config_value(rec),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": rec.layers.iter().rev().map(|l| store.layer_diff(l).display().to_string()).collect::<Vec<_>>().join(":"),
                "UpperDir": dir.upper(),
                "WorkDir": dir.work(),
                "MergedDir": dir.rootfs(),
            }
        },
        "Mounts": rec.host_config.binds.iter().map(|b| {
            let (src, dst, rw) = (b.source_text(), b.target(), !b.readonly());
            if src.starts_with('/') {
                json!({"Type": "bind", "Source": src, "Destination": dst, "RW": rw})
            } else {
                json!({
                    "Type": "volume",
                    "Name": src,
                    "Source": volume::Volumes::new(store).dir(&src).join("_data"),
                    "Destination": dst,
                    "Driver": "local",
                    "RW": rw,
                })
            }
        }).chain(rec.host_config.volumes.iter().map(|target| {
            let vdir = strata_runtime::spec::volume_dir(&dir.path, target);
            json!({
                "Type": "volume",
                "Name": vdir.file_name().map(|n| n.to_string_lossy().into_owned()),
                "Source": vdir.join("_data"),
                "Destination": target,
                "Driver": "local",
                "RW": true,
            })
        })).collect::<Vec<_>>(),
        "Config": {
            "Hostname": if rec.config.hostname.is_empty() { rec.short_id().to_string() } else { rec.config.hostname.clone() },
            "User": rec.config.user,
            "Tty": rec.config.tty,
            "OpenStdin": rec.config.open_stdin,
            "Env": rec.config.env,
            "Cmd": rec.config.cmd,
            "Image": rec.image_name,
            "WorkingDir": rec.config.working_dir,
            "Entrypoint": if rec.config.entrypoint.is_empty() { Value::Null } else { json!(rec.config.entrypoint) },
            "Labels": rec.config.labels,
            "StopSignal": rec.config.stop_signal,
            "AttachStdin": rec.config.attaches("stdin"),
            "AttachStdout": rec.config.attaches("stdout"),
            "AttachStderr": rec.config.attaches("stderr"),
            "StdinOnce": false,
            "Domainname": "",
            "ExposedPorts": if rec.config.exposed_ports.is_empty() { Value::Null } else { json!(rec.config.exposed_ports) },
            "Volumes": Value::Null,
            "OnBuild": Value::Null,
        },
        "NetworkSettings": super::network_view::network_settings(store, rec),
    });
    // Docker shows State.Health only for a container with a health check.
    if let Some(h) = &st.health {
        v["State"]["Health"] = json!(h);
    }
    Ok(v)
}

pub fn inspect(
    store: &Store,
    names: &[String],
    format: Option<&str>,
    kind: Option<&str>,
) -> Result<()> {
    let c = Containers::new(store);
    let mut values = Vec::new();
    let mut failed = Vec::new();
    for n in names {
        let as_container = if kind != Some("image") {
            c.resolve(n).ok()
        } else {
            None
        };
        if let Some(rec) = as_container {
            values.push(inspect_value(store, &rec)?);
            continue;
        }
        if kind == Some("container") {
            failed.push(format!("no such container: {n}"));
            continue;
        }
        match store.resolve_image(n).and_then(|id| store.image(&id)) {
            Ok(img) => values.push(crate::commands::images::inspect_value(store, &img)?),
            // Docker's generic inspect finds volumes last.
            Err(_) if kind.is_none() => match volume::Volumes::new(store).get(n) {
                Ok(v) => values.push(crate::commands::volumes::inspect_value(&v)),
                Err(_) => failed.push(format!("no such object: {n}")),
            },
            Err(_) => failed.push(format!("no such object: {n}")),
        }
    }
    crate::commands::images::print_inspect(&values, format)?;
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

pub fn logs(store: &Store, a: &LogsArgs) -> Result<()> {
    let c = Containers::new(store);
    let rec = c.resolve(&a.container)?;
    if !rec.host_config.log_config.keeps_logs() {
        bail!(
            "configured logging driver does not support reading ({})",
            rec.host_config.log_config.kind
        );
    }
    let path = c.dir(&rec.id).log();
    let tail: Option<usize> = match a.tail.as_deref() {
        None | Some("all") => None,
        Some(n) => Some(
            n.parse()
                .map_err(|_| anyhow!("invalid --tail value {n:?}"))?,
        ),
    };
    let print = |lines: &[strata_runtime::logs::LogLine]| {
        let mut out = io::stdout().lock();
        let mut err = io::stderr().lock();
        for l in lines {
            let text = if a.timestamps {
                format!("{} {}", l.time, l.log)
            } else {
                l.log.clone()
            };
            if l.stream == "stderr" {
                let _ = err.write_all(text.as_bytes());
            } else {
                let _ = out.write_all(text.as_bytes());
            }
        }
        let _ = out.flush();
    };
    let since = a
        .since
        .as_deref()
        .map(|t| log_time("--since", t))
        .transpose()?;
    let until = a
        .until
        .as_deref()
        .map(|t| log_time("--until", t))
        .transpose()?;
    let in_window = |l: &strata_runtime::logs::LogLine| {
        let t = fsutil::parse_rfc3339_nanos(&l.time);
        since.is_none_or(|s| t.is_some_and(|t| t >= s))
            && until.is_none_or(|u| t.is_some_and(|t| t < u))
    };
    // One reader for what is there and what comes: no line twice, none lost in between.
    let mut follower = strata_runtime::logs::LogFollower::open(&path);
    let mut all = follower.next_lines();
    all.retain(|l| in_window(l));
    let start = tail.map(|t| all.len().saturating_sub(t)).unwrap_or(0);
    print(&all[start..]);
    // Docker stops following at --until, as nothing later can be shown.
    if a.follow && until.is_none() {
        loop {
            let running = c.state(&rec.id).map(|s| s.is_running()).unwrap_or(false);
            std::thread::sleep(Duration::from_millis(100));
            let mut new = follower.next_lines();
            new.retain(|l| in_window(l));
            print(&new);
            if !running {
                break;
            }
        }
    }
    Ok(())
}

/// A `logs --since/--until` time, in nanoseconds since the epoch: an RFC 3339 timestamp, Unix
/// seconds (`1700000000.5`) or a Go duration before now (`10m`, `1h30m`).
pub(crate) fn log_time(flag: &str, value: &str) -> Result<i128> {
    if let Some(t) = fsutil::parse_rfc3339_nanos(value) {
        return Ok(t);
    }
    if let Ok(secs) = value.parse::<f64>() {
        return Ok((secs * 1e9) as i128);
    }
    let ago = strata_parser::grammar::parse_duration(value).map_err(|_| {
        anyhow!(
            "invalid {flag} value {value:?}: a timestamp, Unix seconds or a duration such as 42m"
        )
    })?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as i128)
        .unwrap_or(0);
    Ok(now - i128::from(ago))
}

pub fn top(store: &Store, key: &str) -> Result<()> {
    let c = Containers::new(store);
    let rec = c.resolve(key)?;
    let rows: Vec<Vec<String>> = ops::top(&c, &rec)?
        .into_iter()
        .map(|(pid, ppid, uid, cmd)| vec![uid.to_string(), pid.to_string(), ppid.to_string(), cmd])
        .collect();
    print_table(&["UID", "PID", "PPID", "CMD"], &rows);
    Ok(())
}

pub fn diff(store: &Store, key: &str) -> Result<()> {
    let rec = Containers::new(store).resolve(key)?;
    for (k, p) in ops::diff(store, &rec)? {
        println!("{k} {p}");
    }
    Ok(())
}
