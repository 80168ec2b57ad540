//! Volume commands: volume create, ls, inspect, rm, prune.

use std::collections::BTreeMap;

use anyhow::{bail, Result};
use serde_json::{json, Value};
use strata_cache::{fsutil, Store};
use strata_runtime::volume::{Volume, Volumes};

use crate::cli::VolumeCommand;
use crate::filters::Filters;
use crate::output::{human_size, print_formatted, print_table, Format};

pub fn run(store: &Store, command: VolumeCommand) -> Result<()> {
    let volumes = Volumes::new(store);
    match command {
        VolumeCommand::Create {
            labels,
            driver,
            opts,
            name,
        } => {
            if driver != "local" {
                bail!("volume driver {driver:?} is not supported (only local)");
            }
            let labels = super::key_values(&labels);
            let options = opts
                .iter()
                .map(|o| match o.split_once('=') {
                    Some((k, v)) => Ok((k.to_string(), v.to_string())),
                    None => bail!("invalid --opt {o:?}: expected KEY=VALUE"),
                })
                .collect::<Result<BTreeMap<_, _>>>()?;
            let name = name.unwrap_or_else(strata_runtime::container::new_id);
            println!("{}", volumes.create_with(&name, labels, options)?.name);
            Ok(())
        }
        VolumeCommand::Ls {
            quiet,
            filter,
            format,
        } => list(&volumes, &filter, quiet, format.as_deref()),
        VolumeCommand::Inspect { format, names } => {
            crate::commands::images::inspect_each(&names, format.as_deref(), |n| {
                volumes.get(n).map(|v| inspect_value(&v))
            })
        }
        VolumeCommand::Rm { force, names } => {
            let mut failed = Vec::new();
            for n in &names {
                match volumes.remove(n) {
                    Ok(()) => println!("{n}"),
                    Err(strata_runtime::RuntimeError::NotFound(_)) if force => {}
                    Err(e) => failed.push(e.to_string()),
                }
            }
            if !failed.is_empty() {
                bail!("{}", failed.join("; "));
            }
            Ok(())
        }
        VolumeCommand::Prune {
            all,
            filter,
            force: _,
        } => prune(&volumes, all, &filter),
    }
}

fn list(volumes: &Volumes<'_>, filter: &[String], quiet: bool, format: Option<&str>) -> Result<()> {
    let f = Filters::parse(filter, &["dangling", "name", "label", "driver"])?;
    let dangling = f.flag("dangling")?;
    let in_use = volumes.in_use()?;
    let mut shown = Vec::new();
    for v in volumes.list()? {
        let used = in_use.contains(&v.name);
        if dangling.is_some_and(|d| d == used)
            || !f.matches("name", &v.name)
            || !f.matches("driver", "local")
            || !f.matches_labels(&v.meta.labels)
        {
            continue;
        }
        shown.push(v);
    }
    if quiet {
        for v in &shown {
            println!("{}", v.name);
        }
        return Ok(());
    }
    let format = Format::parse(format);
    if let Format::Table = format {
        let rows: Vec<Vec<String>> = shown
            .iter()
            .map(|v| vec!["local".to_string(), v.name.clone()])
            .collect();
        print_table(&["DRIVER", "VOLUME NAME"], &rows);
        return Ok(());
    }
    let items: Vec<Value> = shown
        .iter()
        .map(|v| {
            json!({
                "Driver": "local",
                "Name": v.name,
                "Mountpoint": v.mountpoint,
                "Labels": labels_text(&v.meta.labels),
                "Scope": "local",
                "CreatedAt": v.meta.created_at,
            })
        })
        .collect();
    print_formatted(
        &format,
        &items,
        &[
            ("Driver", "DRIVER"),
            ("Name", "VOLUME NAME"),
            ("Mountpoint", "MOUNTPOINT"),
            ("Labels", "LABELS"),
        ],
    )
}

fn labels_text(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

/// Docker's `volume inspect` object.
pub fn inspect_value(v: &Volume) -> Value {
    json!({
        "CreatedAt": v.meta.created_at,
        "Driver": "local",
        "Labels": v.meta.labels,
        "Mountpoint": v.mountpoint,
        "Name": v.name,
        "Options": if v.meta.options.is_empty() { Value::Null } else { json!(v.meta.options) },
        "Scope": "local",
    })
}

/// Docker 23's rule: without `-a` (or the filter `all=true`), only anonymous volumes no
/// container uses go; with it, every volume no container uses. `label=`/`label!=` filters
/// select among them.
fn prune(volumes: &Volumes<'_>, all: bool, filter: &[String]) -> Result<()> {
    let f = Filters::parse(filter, &["label", "label!", "all"])?;
    let all = all || f.flag("all")?.unwrap_or(false);
    let mut deleted = Vec::new();
    let mut reclaimed = 0;
    let in_use = volumes.in_use()?;
    for v in volumes.list()? {
        if in_use.contains(&v.name)
            || !(all || v.is_anonymous())
            || !f.matches_labels(&v.meta.labels)
            || f.excludes_labels(&v.meta.labels)
        {
            continue;
        }
        let size = fsutil::tree_size(&v.mountpoint);
        // A container made meanwhile may have taken it: then it stays.
        if volumes.remove(&v.name).is_ok() {
            reclaimed += size;
            deleted.push(v.name);
        }
    }
    if !deleted.is_empty() {
        println!("Deleted Volumes:");
        for n in &deleted {
            println!("{n}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(reclaimed));
    Ok(())
}
