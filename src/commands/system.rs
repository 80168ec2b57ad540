//! `system df|prune|check|info`, `version`.

use anyhow::{bail, Context as _, Result};
use strata_cache::{fsutil, ImagePrune, Store};

use crate::cli::PruneArgs;
use crate::output::{human_size, print_table};

pub fn version() {
    println!("strata version {}", env!("CARGO_PKG_VERSION"));
    println!("os/arch: linux/{}", strata_cache::transfer::host_arch());
    println!("store format: {}", strata_cache::store::STORE_VERSION);
}

/// The cgroup version containers are managed with (the runtime's own decision, which
/// `STRATA_CGROUP_V2_ROOT` can change).
pub fn cgroup_version() -> &'static str {
    match strata_runtime::cgroup::version() {
        strata_runtime::cgroup::Version::V2 => "2",
        strata_runtime::cgroup::Version::V1 => "1",
    }
}

pub fn info(store: &Store) -> Result<()> {
    let images = store.list_images()?.len();
    let layers = store.list_layers()?.len();
    let containers = store.container_links()?.len();
    println!("Store: {}", store.root().display());
    let (driver, why) = strata_runtime::overlay::Driver::current();
    println!("Storage Driver: {}", driver.name());
    println!("Cgroup Version: {}", cgroup_version());
    println!("Images: {images}");
    println!("Layers: {layers}");
    println!("Containers: {containers}");
    println!("Build Cache Records: {}", store.cache_records()?.len());
    println!(
        "Kernel Version: {}",
        nix::sys::utsname::uname()
            .map(|u| u.release().to_string_lossy().into_owned())
            .unwrap_or_default()
    );
    println!("Architecture: {}", std::env::consts::ARCH);
    let platforms: Vec<String> = strata_runtime::emulation::runnable()
        .iter()
        .map(|p| p.to_string())
        .collect();
    println!("Platforms: {}", platforms.join(", "));
    println!("CPUs: {}", strata_runtime::cgroup::host_cpu_count());
    let rootless = strata_runtime::rootless::is_rootless();
    println!("Rootless: {rootless}");
    if rootless || std::env::var_os(strata_runtime::overlay::DRIVER_VAR).is_some() {
        println!("Storage Driver Chosen By: {why}");
    }
    println!("Build Isolation: {}", build_isolation());
    if rootless {
        let delegated = strata_runtime::cgroup::delegated_to_user()
            .map(|d| d.display().to_string())
            .unwrap_or_else(|| "none".into());
        println!("Cgroup Delegated To User: {delegated}");
        // The namespace's maps as the kernel has them (inside, `/etc/subuid` names nobody).
        for (kind, file) in [("UID", "/proc/self/uid_map"), ("GID", "/proc/self/gid_map")] {
            let map = std::fs::read_to_string(file).unwrap_or_default();
            let ranges: Vec<String> = map
                .lines()
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(":"))
                .collect();
            println!("{kind} Mappings: {}", ranges.join(","));
        }
    }
    Ok(())
}

/// Which isolation a `build` here would use, and why (`STRATA_ISOLATION`, or what this
/// process may do).
fn build_isolation() -> String {
    use strata_runtime::chroot::Isolation;
    let asked = std::env::var("STRATA_ISOLATION").ok();
    match Isolation::choose(asked.as_deref()) {
        Ok((iso, None)) => format!("{iso} (STRATA_ISOLATION={})", asked.unwrap_or_default()),
        Ok((iso, Some(why))) => format!("{iso} ({why})"),
        Err(e) => format!("invalid (STRATA_ISOLATION: {e})"),
    }
}

pub fn df(store: &Store) -> Result<()> {
    let refs = store.refs()?;
    let images = store.list_images()?;
    let used: std::collections::BTreeSet<_> = store
        .container_links()?
        .into_iter()
        .map(|c| c.image)
        .collect();
    let mut img_size = 0u64;
    let mut reclaim = 0u64;
    let mut active = 0;
    let mut seen_layers = std::collections::BTreeSet::new();
    for id in &images {
        let Ok(rec) = store.image_record(id) else {
            continue;
        };
        let in_use = used.contains(id);
        if in_use {
            active += 1;
        }
        for l in &rec.layers {
            if seen_layers.insert(l.clone()) {
                let s = store.layer_meta(l).map(|m| m.size).unwrap_or(0);
                img_size += s;
                if !in_use && refs.tags_of(id).is_empty() {
                    reclaim += s;
                }
            }
        }
    }
    let pct = |part: u64, whole: u64| (part * 100).checked_div(whole).unwrap_or(0);
    let with_pct = |part: u64, whole: u64| format!("{} ({}%)", human_size(part), pct(part, whole));
    let c = ContainerUsage::of(store)?;
    let (cache_records, cache_size) = {
        let rows = build_cache(store)?;
        (rows.len(), rows.iter().map(|r| r.size).sum::<u64>())
    };
    print_table(
        &["TYPE", "TOTAL", "ACTIVE", "SIZE", "RECLAIMABLE"],
        &[
            vec![
                "Images".into(),
                images.len().to_string(),
                active.to_string(),
                human_size(img_size),
                with_pct(reclaim, img_size),
            ],
            vec![
                "Containers".into(),
                c.containers.to_string(),
                c.running.to_string(),
                human_size(c.size),
                with_pct(c.reclaimable, c.size),
            ],
            vec![
                "Local Volumes".into(),
                c.volumes.to_string(),
                c.volumes_used.to_string(),
                human_size(c.volume_size),
                with_pct(c.volume_reclaimable, c.volume_size),
            ],
            vec![
                "Build Cache".into(),
                cache_records.to_string(),
                "0".into(),
                human_size(cache_size),
                human_size(cache_size),
            ],
        ],
    );
    Ok(())
}

/// What containers and volumes hold, for `system df`.
#[derive(Default)]
struct ContainerUsage {
    containers: usize,
    running: usize,
    /// Bytes in the containers' writable layers; those of stopped ones can be pruned.
    size: u64,
    reclaimable: u64,
    /// Named volumes and the anonymous volumes of containers.
    volumes: usize,
    volumes_used: usize,
    volume_size: u64,
    /// Named volumes no container uses (anonymous ones go with their containers).
    volume_reclaimable: u64,
}

impl ContainerUsage {
    fn of(store: &Store) -> Result<ContainerUsage> {
        let cs = strata_runtime::container::Containers::new(store);
        let mut u = ContainerUsage::default();
        let mut named_in_use = std::collections::BTreeSet::new();
        for rec in cs.list()? {
            named_in_use
                .extend(strata_runtime::volume::named_volumes(&rec).map(|(n, _, _)| n.to_string()));
            let dir = cs.dir(&rec.id);
            let size = fsutil::tree_size(&dir.upper());
            u.containers += 1;
            u.size += size;
            if cs.state(&rec.id).is_ok_and(|st| st.is_running()) {
                u.running += 1;
            } else {
                u.reclaimable += size;
            }
            for target in &rec.host_config.volumes {
                let data = strata_runtime::spec::volume_dir(&dir.path, target).join("_data");
                u.volumes += 1;
                u.volumes_used += 1;
                u.volume_size += fsutil::tree_size(&data);
            }
        }
        for v in strata_runtime::volume::Volumes::new(store).list()? {
            let size = fsutil::tree_size(&v.mountpoint);
            u.volumes += 1;
            u.volume_size += size;
            if !named_in_use.contains(&v.name) {
                u.volume_reclaimable += size;
            } else {
                u.volumes_used += 1;
            }
        }
        Ok(u)
    }
}

/// One entry of the build cache, for `builder du` and `system df`.
struct CacheEntry {
    id: String,
    image: String,
    size: u64,
    last_used: String,
}

/// The build cache: each step's record (sized by the layer it made) and each `RUN
/// --mount=type=cache` directory (as Docker lists its exec.cachemount records).
fn build_cache(store: &Store) -> Result<Vec<CacheEntry>> {
    let mut out = Vec::new();
    for r in store.cache_records()? {
        let size = store
            .cache_layers(&r)
            .last()
            .and_then(|l| store.layer_meta(l).ok())
            .map(|m| m.size)
            .unwrap_or(0);
        out.push(CacheEntry {
            id: r.key.short().to_string(),
            image: r.image.short().to_string(),
            size,
            last_used: r.last_used.clone(),
        });
    }
    for (key, id, size, modified) in store.cache_mounts() {
        out.push(CacheEntry {
            id: format!(
                "cache mount {}",
                id.unwrap_or_else(|| key[..12].to_string())
            ),
            image: "-".to_string(),
            size,
            last_used: modified,
        });
    }
    Ok(out)
}

pub fn prune(store: &Store, a: &PruneArgs, images_only: bool) -> Result<()> {
    let mode = if a.all {
        ImagePrune::Unused
    } else {
        ImagePrune::Dangling
    };
    if a.all && !images_only {
        for r in store.cache_records()? {
            store.cache_remove(&r.key)?;
        }
    }
    let report = store.prune(mode)?;
    if !report.images.is_empty() {
        println!("Deleted Images:");
        for i in &report.images {
            println!("deleted: {i}");
        }
        println!();
    }
    println!("Total reclaimed space: {}", human_size(report.bytes));
    Ok(())
}

pub fn check(store: &Store, repair: bool) -> Result<()> {
    let mut report = store.check(repair, &|_| false)?;
    // Host cgroups are not the store's, but a killed monitor leaves them behind all the same.
    for dir in strata_runtime::cgroup::leftovers(std::time::Duration::from_secs(60)) {
        if repair && std::fs::remove_dir(&dir).is_ok() {
            report
                .repaired
                .push(format!("removed empty cgroup {}", dir.display()));
        } else {
            report
                .garbage
                .push(format!("empty cgroup {} (no process)", dir.display()));
        }
    }
    check_networks(store, repair, &mut report);
    for g in &report.garbage {
        println!("garbage: {g}");
    }
    for r in &report.repaired {
        println!("repaired: {r}");
    }
    for e in &report.errors {
        println!("error: {e}");
    }
    println!(
        "checked {} blobs, {} layers, {} images, {} tags, {} containers: {} errors, {} garbage",
        report.blobs,
        report.layers,
        report.images,
        report.tags,
        report.containers,
        report.errors.len(),
        report.garbage.len()
    );
    if !report.ok() {
        bail!("store check failed with {} errors", report.errors.len());
    }
    Ok(())
}

/// Leaked network state: endpoints whose container died with its monitor (their address,
/// published ports and any host veth), and a firewall table that is not what the store says
/// (removed or edited behind strata's back); repairing renders the table again.
fn check_networks(store: &Store, repair: bool, report: &mut strata_cache::CheckReport) {
    let nets = strata_network::Networks::new(store);
    let Ok(stale) = nets.stale_endpoints() else {
        return;
    };
    let describe = |e: &strata_network::Endpoint| {
        format!(
            "network endpoint of dead container {} ({} on {})",
            &e.container_id[..12],
            e.ip,
            e.host_veth
        )
    };
    if repair && !stale.is_empty() {
        match nets.reclaim() {
            Ok(done) => report
                .repaired
                .extend(done.iter().map(|e| format!("reclaimed {}", describe(e)))),
            Err(e) => report
                .errors
                .push(format!("reclaim network endpoints: {e}")),
        }
    } else {
        report.garbage.extend(stale.iter().map(describe));
    }
    match nets.firewall_drift() {
        Ok(None) => {}
        Ok(Some(drift)) if repair => match nets.repair_firewall() {
            Ok(()) => report.repaired.push(format!("rendered again: {drift}")),
            Err(e) => report.errors.push(format!("{drift}: {e}")),
        },
        Ok(Some(drift)) => report.garbage.push(drift),
        Err(e) => report.errors.push(format!("check the firewall table: {e}")),
    }
}

/// `system reset`: every container removed (running ones killed), every network with its
/// bridge and firewall table, then everything else in the store.
pub fn reset(store: &Store) -> Result<()> {
    let containers = strata_runtime::container::Containers::new(store);
    for rec in containers.list()? {
        strata_runtime::ops::remove(&containers, &rec, true, None)?;
    }
    let rootless = strata_runtime::rootless::is_rootless();
    // A rootless store has no networks of the host's (bridges and firewall need root).
    if !rootless {
        strata_network::Networks::new(store).remove_all()?;
    }
    let root = store.root();
    for entry in std::fs::read_dir(root).with_context(|| format!("read {}", root.display()))? {
        let path = entry?.path();
        fsutil::remove_any(&path)?;
    }
    // Files the subordinate ids own could only go from inside the namespace: they are gone,
    // so the namespace's pause process may go too (the next command makes another).
    if rootless {
        if let Some(pid) = strata_runtime::rootless::pause_pid() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
    Ok(())
}

/// `builder prune`: drops build-cache records (least recently used first down to
/// `--keep-storage`, or all), then the intermediate images nothing else needs.
pub fn builder_prune(store: &Store, all: bool, keep: Option<&str>) -> Result<()> {
    let mut records = store.cache_records()?;
    records.sort_by(|a, b| a.last_used.cmp(&b.last_used));
    let keep_bytes = match keep {
        Some(k) => Some(
            strata_parser::instructions::parse_size(k)
                .ok_or_else(|| anyhow::anyhow!("invalid --keep-storage {k:?}"))?,
        ),
        None => None,
    };
    let size_of = |r: &strata_cache::CacheRecord| -> u64 {
        store
            .cache_layers(r)
            .last()
            .and_then(|l| store.layer_meta(l).ok())
            .map(|m| m.size)
            .unwrap_or(0)
    };
    let mut total: u64 = records.iter().map(size_of).sum();
    let mut removed = 0;
    for r in &records {
        if let Some(k) = keep_bytes {
            if !all && total <= k {
                break;
            }
        }
        total = total.saturating_sub(size_of(r));
        store.cache_remove(&r.key)?;
        removed += 1;
    }
    let report = store.prune(ImagePrune::Dangling)?;
    // Cache mounts (RUN --mount=type=cache) no running build holds.
    let (mounts, mount_bytes) = store.prune_cache_mounts()?;
    // Hints that pointed at what went with the images; with -a, every hint.
    store.remove_build_hints(all)?;
    println!("Deleted build cache records: {removed}");
    if mounts > 0 {
        println!("Deleted cache mounts: {mounts}");
    }
    println!(
        "Total reclaimed space: {}",
        human_size(report.bytes + mount_bytes)
    );
    Ok(())
}

/// `builder du`: the build cache's records and sizes.
/// `builder cache export|import DIR`.
pub fn builder_cache(store: &Store, c: &crate::cli::BuilderCacheCommand) -> Result<()> {
    use crate::cli::BuilderCacheCommand::*;
    let (verb, dir, index) = match c {
        Export { dir } => ("exported", dir, store.export_cache_mounts(dir)),
        Import { dir } => ("imported", dir, store.import_cache_mounts(dir)),
    };
    let index = index.with_context(|| format!("cache mounts in {}", dir.display()))?;
    let bytes: u64 = index.mounts.iter().map(|m| m.size).sum();
    println!(
        "{verb} {} cache mounts ({}) {} {}",
        index.mounts.len(),
        human_size(bytes),
        if verb == "exported" { "to" } else { "from" },
        dir.display()
    );
    Ok(())
}

pub fn builder_du(store: &Store) -> Result<()> {
    let entries = build_cache(store)?;
    let total: u64 = entries.iter().map(|e| e.size).sum();
    let rows: Vec<Vec<String>> = entries
        .into_iter()
        .map(|e| vec![e.id, e.image, human_size(e.size), e.last_used])
        .collect();
    print_table(&["ID", "IMAGE", "SIZE", "LAST USED"], &rows);
    println!("Total:\t{}", human_size(total));
    Ok(())
}
