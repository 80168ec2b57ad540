//! Image commands: import, images, inspect, history, tag, rmi, save, load.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, IsTerminal, Read, Write};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::{json, Value};
use strata_cache::transfer::SaveItem;
use strata_cache::{fsutil, Image, Store};
use strata_image::reference::Reference;
use strata_image::spec::ContainerConfig;
use strata_image::spec::Platform;
use strata_image::Digest;

use crate::changes;
use crate::cli::{HistoryArgs, ImagesArgs, ImportArgs, InspectArgs, LoadArgs, RmiArgs, SaveArgs};
use crate::filters::Filters;
use crate::output::{self, human_size, print_formatted, print_table, since, Format};

pub fn import(store: &Store, a: &ImportArgs) -> Result<()> {
    let mut cfg = ContainerConfig::default();
    for c in &a.changes {
        changes::apply(&mut cfg, c)?;
    }
    let reference = a
        .reference
        .as_deref()
        .map(Reference::parse)
        .transpose()
        .map_err(|e| anyhow!("{e}"))?;
    let input: Box<dyn Read + Send> = if a.file == "-" {
        Box::new(io::stdin())
    } else {
        Box::new(File::open(&a.file).with_context(|| format!("open {}", a.file))?)
    };
    let platform = a.platform.as_deref().map(platform_flag).transpose()?;
    let img = store.import_rootfs(input, &a.file, cfg, a.message.clone(), platform.as_ref())?;
    let id = img.id().to_string();
    let name = reference
        .as_ref()
        .map(|r| r.to_string())
        .unwrap_or(id.clone());
    if let Some(r) = reference {
        store.tag(&r, img.id())?;
    }
    super::image_event(store, "import", &id, &name);
    println!("{}", img.id());
    Ok(())
}

/// Total size of an image: the sum of its layers' uncompressed sizes.
pub fn image_size(store: &Store, img: &Image) -> u64 {
    img.record
        .layers
        .iter()
        .filter_map(|l| store.layer_meta(l).ok())
        .map(|m| m.size)
        .sum()
}

struct Row {
    id: Digest,
    repo: String,
    tag: String,
    digest: String,
    created: String,
    size: u64,
}

/// `images --filter`: Docker's keys for images.
struct ImageFilters {
    filters: Filters,
    /// `dangling=true`: untagged images only; `false`: tagged ones only.
    dangling: Option<bool>,
    /// `reference` patterns (Go's path matching on `repo:tag` or `repo`).
    references: Vec<String>,
    /// Creation times (ns since the epoch) from `before` and `since` (images created strictly
    /// before / after).
    before: Option<i128>,
    since: Option<i128>,
}

impl ImageFilters {
    fn parse(store: &Store, args: &[String]) -> Result<ImageFilters> {
        let filters = Filters::parse(args, &["dangling", "label", "reference", "before", "since"])?;
        let dangling = filters.flag("dangling")?;
        let created_of = |key: &str| -> Result<Option<i128>> {
            let Some(name) = filters.values(key).last() else {
                return Ok(None);
            };
            let img = store.image(&store.resolve_image(name)?)?;
            match created_ns(&img) {
                Some(t) => Ok(Some(t)),
                None => bail!("invalid filter '{key}={name}': the image has no creation time"),
            }
        };
        Ok(ImageFilters {
            dangling,
            references: filters.values("reference").to_vec(),
            before: created_of("before")?,
            since: created_of("since")?,
            filters,
        })
    }

    /// Whether the image passes the filters that look at the image rather than its tags.
    fn admits(&self, img: &Image) -> bool {
        let created = created_ns(img);
        self.filters.matches_labels(&img.config.container().labels)
            && self.before.is_none_or(|b| created.is_some_and(|c| c < b))
            && self.since.is_none_or(|s| created.is_some_and(|c| c > s))
    }

    /// Whether a tag passes the `reference` patterns.
    fn admits_reference(&self, r: &Reference) -> bool {
        let (name, full) = (r.familiar_repository(), r.familiar());
        self.references.is_empty()
            || self.references.iter().any(|p| {
                strata_planner::context::glob_match(p, &full)
                    || strata_planner::context::glob_match(p, &name)
            })
    }
}

/// When the image was made, in nanoseconds since the epoch.
fn created_ns(img: &Image) -> Option<i128> {
    img.config
        .created
        .as_deref()
        .and_then(fsutil::parse_rfc3339_nanos)
}

pub fn images(store: &Store, a: &ImagesArgs) -> Result<()> {
    let rows = image_rows(store, a)?;
    print_images(a, &rows)
}

/// The rows of `images`: one per tag (or one `<none>` row for an untagged image), filtered,
/// newest first.
fn image_rows(store: &Store, a: &ImagesArgs) -> Result<Vec<Row>> {
    let refs = store.refs()?;
    let filter = a
        .repository
        .as_deref()
        .map(Reference::parse_bare)
        .transpose()
        .map_err(|e| anyhow!("{e}"))?;
    let wanted = ImageFilters::parse(store, &a.filter)?;
    let ids = store.list_images()?;
    // Intermediate images: untagged parents of other images, shown only with -a.
    let mut parents = BTreeSet::new();
    let mut loaded = Vec::new();
    for id in ids {
        match store.image(&id) {
            Ok(img) => {
                if let Some(p) = &img.record.parent {
                    parents.insert(p.clone());
                }
                loaded.push(img);
            }
            Err(e) => tracing::warn!("image {id}: {e}"),
        }
    }
    let mut rows = Vec::new();
    for img in loaded.iter().filter(|img| wanted.admits(img)) {
        let id = img.id();
        let tags = refs.tags_of(id);
        let digests = refs.digests_of(id);
        let created = img.config.created.clone().unwrap_or_default();
        let size = image_size(store, img);
        let digest_for = |repo: &str| {
            digests
                .iter()
                .find_map(|d| {
                    d.split_once('@')
                        .filter(|(r, _)| *r == repo)
                        .map(|(_, dg)| dg.to_string())
                })
                .or_else(|| img.record.manifests.last().map(|m| m.digest.to_string()))
                .unwrap_or_else(|| "<none>".into())
        };
        if tags.is_empty() {
            // A multi-platform tag's other platforms are shown by its row (as Docker shows
            // an index once), and are not dangling.
            if (!a.all && parents.contains(id)) || refs.platform_members().any(|m| m == id) {
                continue;
            }
            if filter.is_some() || wanted.dangling == Some(false) || !wanted.references.is_empty() {
                continue;
            }
            rows.push(Row {
                id: id.clone(),
                repo: "<none>".into(),
                tag: "<none>".into(),
                digest: digest_for(""),
                created,
                size,
            });
            continue;
        }
        if wanted.dangling == Some(true) {
            continue;
        }
        for t in tags {
            let r = Reference::parse(&t).map_err(|e| anyhow!("{e}"))?;
            if let Some(f) = &filter {
                if f.repository() != r.repository() || (f.tag().is_some() && f.tag() != r.tag()) {
                    continue;
                }
            }
            if !wanted.admits_reference(&r) {
                continue;
            }
            rows.push(Row {
                id: id.clone(),
                repo: r.familiar_repository(),
                tag: r.tag().unwrap_or("<none>").to_string(),
                digest: digest_for(&r.repository()),
                created: created.clone(),
                size,
            });
        }
    }
    rows.sort_by(|a, b| {
        b.created
            .cmp(&a.created)
            .then(a.repo.cmp(&b.repo))
            .then(a.tag.cmp(&b.tag))
    });
    Ok(rows)
}

/// Prints the rows: IDs only (`-q`), Docker's table, or `--format`.
fn print_images(a: &ImagesArgs, rows: &[Row]) -> Result<()> {
    let show_id = |d: &Digest| {
        if a.no_trunc {
            d.to_string()
        } else {
            d.short().to_string()
        }
    };
    if a.quiet {
        let mut seen = BTreeSet::new();
        for r in rows {
            if seen.insert(r.id.clone()) {
                println!("{}", show_id(&r.id));
            }
        }
        return Ok(());
    }
    let format = Format::parse(a.format.as_deref());
    if let Format::Table = format {
        let mut header = vec!["REPOSITORY", "TAG"];
        if a.digests {
            header.push("DIGEST");
        }
        header.extend(["IMAGE ID", "CREATED", "SIZE"]);
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                let mut v = vec![r.repo.clone(), r.tag.clone()];
                if a.digests {
                    v.push(r.digest.clone());
                }
                v.extend([show_id(&r.id), since(&r.created), human_size(r.size)]);
                v
            })
            .collect();
        print_table(&header, &table);
        return Ok(());
    }
    let items: Vec<Value> = rows
        .iter()
        .map(|r| {
            json!({
                "ID": show_id(&r.id),
                "Repository": r.repo,
                "Tag": r.tag,
                "Digest": r.digest,
                "CreatedAt": r.created,
                "CreatedSince": since(&r.created),
                "Size": human_size(r.size),
                "VirtualSize": human_size(r.size),
                "Containers": "N/A",
                "SharedSize": "N/A",
                "UniqueSize": "N/A",
            })
        })
        .collect();
    print_formatted(
        &format,
        &items,
        &[
            ("ID", "IMAGE ID"),
            ("Repository", "REPOSITORY"),
            ("Tag", "TAG"),
            ("Digest", "DIGEST"),
            ("CreatedSince", "CREATED"),
            ("CreatedAt", "CREATED AT"),
            ("Size", "SIZE"),
        ],
    )
}

/// Docker's `image inspect` object for an image.
pub fn inspect_value(store: &Store, img: &Image) -> Result<Value> {
    let refs = store.refs()?;
    let tags: Vec<String> = refs
        .tags_of(img.id())
        .iter()
        .filter_map(|t| Reference::parse(t).ok())
        .map(|r| r.familiar())
        .collect();
    let mut digests: Vec<String> = refs
        .digests_of(img.id())
        .iter()
        .filter_map(|t| Reference::parse(t).ok())
        .map(|r| r.familiar())
        .collect();
    digests.sort();
    let c = img.config.container();
    let nullable = |empty: bool, v: Value| if empty { Value::Null } else { v };
    let mut config = json!({
        "Hostname": "",
        "Domainname": "",
        "User": c.user,
        "AttachStdin": false,
        "AttachStdout": false,
        "AttachStderr": false,
        "Tty": false,
        "OpenStdin": false,
        "StdinOnce": false,
        "Env": nullable(c.env.is_empty(), json!(c.env)),
        "Cmd": json!(c.cmd),
        "Image": "",
        "Volumes": nullable(c.volumes.is_empty(), json!(c.volumes)),
        "WorkingDir": c.working_dir,
        "Entrypoint": json!(c.entrypoint),
        "OnBuild": nullable(c.on_build.is_empty(), json!(c.on_build)),
        "Labels": nullable(c.labels.is_empty(), json!(c.labels)),
    });
    let obj = config.as_object_mut().expect("object");
    if !c.exposed_ports.is_empty() {
        obj.insert("ExposedPorts".into(), json!(c.exposed_ports));
    }
    if !c.stop_signal.is_empty() {
        obj.insert("StopSignal".into(), json!(c.stop_signal));
    }
    if let Some(h) = &c.healthcheck {
        obj.insert("Healthcheck".into(), serde_json::to_value(h)?);
    }
    if let Some(s) = &c.shell {
        obj.insert("Shell".into(), json!(s));
    }
    if c.args_escaped {
        obj.insert("ArgsEscaped".into(), json!(true));
    }
    let comment = img
        .config
        .history
        .last()
        .and_then(|h| h.comment.clone())
        .unwrap_or_default();
    let layer_dirs: Vec<String> = img
        .record
        .layers
        .iter()
        .rev()
        .map(|l| store.layer_diff(l).display().to_string())
        .collect();
    Ok(json!({
        "Id": img.id().to_string(),
        "RepoTags": tags,
        "RepoDigests": digests,
        "Parent": img.record.parent.as_ref().map(|p| p.to_string()).unwrap_or_default(),
        "Comment": comment,
        "Created": img.config.created.clone().unwrap_or_default(),
        "DockerVersion": "",
        "Author": img.config.author.clone().unwrap_or_default(),
        "Config": config,
        "Architecture": img.config.architecture,
        "Variant": img.config.variant,
        "Os": img.config.os,
        "Size": image_size(store, img),
        "GraphDriver": {
            "Name": "overlay",
            "Data": {
                "LowerDir": layer_dirs.join(":"),
            }
        },
        "RootFS": {
            "Type": img.config.rootfs.kind,
            "Layers": img.config.rootfs.diff_ids.iter().map(|d| d.to_string()).collect::<Vec<_>>(),
        },
        "Metadata": { "LastTagTime": img.record.added },
    }))
}

/// Prints inspect objects: a JSON array, or each through a template.
/// `inspect` of each name: the objects found printed, then one error naming every name that
/// was not.
pub fn inspect_each<E: std::fmt::Display>(
    names: &[String],
    format: Option<&str>,
    mut value_of: impl FnMut(&str) -> std::result::Result<Value, E>,
) -> Result<()> {
    let mut values = Vec::new();
    let mut failed = Vec::new();
    for n in names {
        match value_of(n) {
            Ok(v) => values.push(v),
            Err(e) => failed.push(e.to_string()),
        }
    }
    print_inspect(&values, format)?;
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

pub fn print_inspect(values: &[Value], format: Option<&str>) -> Result<()> {
    match format {
        None | Some("") => {
            println!(
                "{}",
                serde_json::to_string_pretty(&Value::Array(values.to_vec()))?
            );
        }
        Some("json") => println!("{}", serde_json::to_string(&Value::Array(values.to_vec()))?),
        Some(t) => {
            let t = t.replace("\\n", "\n").replace("\\t", "\t");
            for v in values {
                println!("{}", output::render(&t, v)?);
            }
        }
    }
    Ok(())
}

/// A `--platform` value (os/arch[/variant]); an error names the flag.
pub fn platform_flag(text: &str) -> Result<Platform> {
    Platform::parse(text).map_err(|e| anyhow!("--platform: {e}"))
}

/// The image `name` names for `platform` (`--platform`): a multi-platform tag's member for
/// it, or a single image that is for it; one line listing what there is otherwise.
pub fn resolve_for_platform(store: &Store, name: &str, platform: Option<&str>) -> Result<Digest> {
    let Some(text) = platform else {
        return Ok(store.resolve_image(name)?);
    };
    let want = platform_flag(text)?;
    let id = store.resolve_image_for(name, &want)?;
    let has = Platform::of_config(&store.image(&id)?.config);
    if !want.is_met_by(&has) {
        bail!("image {name} has no {want} variant (it has {has})");
    }
    Ok(id)
}

pub fn inspect(store: &Store, a: &InspectArgs) -> Result<()> {
    let mut values = Vec::new();
    let mut failed = Vec::new();
    for n in &a.names {
        let found = resolve_for_platform(store, n, a.platform.as_deref())
            .and_then(|id| Ok(store.image(&id)?));
        match found {
            Ok(img) => values.push(inspect_value(store, &img)?),
            Err(e) => failed.push(format!("{e}")),
        }
    }
    print_inspect(&values, a.format.as_deref())?;
    if !failed.is_empty() {
        bail!("{}", failed.join("; "));
    }
    Ok(())
}

pub fn history(store: &Store, a: &HistoryArgs) -> Result<()> {
    let id = resolve_for_platform(store, &a.image, a.platform.as_deref())?;
    let img = store.image(&id)?;
    // Each non-empty history entry matches the next layer, bottom up.
    let layer_sizes: Vec<u64> = img
        .record
        .layers
        .iter()
        .map(|l| store.layer_meta(l).map(|m| m.size).unwrap_or(0))
        .collect();
    let mut sizes = Vec::new();
    let mut li = 0;
    for h in &img.config.history {
        if h.empty_layer {
            sizes.push(0);
        } else {
            sizes.push(layer_sizes.get(li).copied().unwrap_or(0));
            li += 1;
        }
    }
    // Intermediate images we still have name the history entry they end at (a build folds
    // metadata steps into the next recorded one, so not every entry has an image).
    let n = img.config.history.len();
    let mut named: BTreeMap<usize, Digest> = BTreeMap::from([(n.saturating_sub(1), id.clone())]);
    let mut cur = img.record.parent.clone();
    while let Some(p) = cur {
        let Ok(parent) = store.image(&p) else { break };
        cur = parent.record.parent.clone();
        if let Some(last) = parent.config.history.len().checked_sub(1) {
            named.entry(last).or_insert(p);
        }
    }
    let mut rows = Vec::new();
    for (i, h) in img.config.history.iter().enumerate().rev() {
        let shown_id = match named.get(&i) {
            Some(d) if a.no_trunc => d.to_string(),
            Some(d) => d.short().to_string(),
            None => "<missing>".to_string(),
        };
        let created_by = h.created_by.clone().unwrap_or_default();
        let created_by = if a.no_trunc || created_by.chars().count() <= 45 {
            created_by
        } else {
            format!("{}…", created_by.chars().take(44).collect::<String>())
        };
        let created = h.created.clone().unwrap_or_default();
        rows.push(json!({
            "ID": shown_id,
            "CreatedAt": created,
            "CreatedSince": if a.human { since(&created) } else { created.clone() },
            "CreatedBy": created_by,
            "Size": if a.human { human_size(sizes[i]) } else { sizes[i].to_string() },
            "Comment": h.comment.clone().unwrap_or_default(),
        }));
    }
    if a.quiet {
        for r in &rows {
            println!("{}", r["ID"].as_str().unwrap_or_default());
        }
        return Ok(());
    }
    let format = Format::parse(a.format.as_deref());
    if let Format::Table = format {
        let table: Vec<Vec<String>> = rows
            .iter()
            .map(|r| {
                ["ID", "CreatedSince", "CreatedBy", "Size", "Comment"]
                    .iter()
                    .map(|k| r[k].as_str().unwrap_or_default().to_string())
                    .collect()
            })
            .collect();
        print_table(
            &["IMAGE", "CREATED", "CREATED BY", "SIZE", "COMMENT"],
            &table,
        );
        return Ok(());
    }
    print_formatted(
        &format,
        &rows,
        &[
            ("ID", "IMAGE"),
            ("CreatedSince", "CREATED"),
            ("CreatedBy", "CREATED BY"),
            ("Size", "SIZE"),
            ("Comment", "COMMENT"),
        ],
    )
}

pub fn tag(store: &Store, source: &str, target: &str) -> Result<()> {
    let id = store.resolve_image(source)?;
    let r = Reference::parse(target).map_err(|e| anyhow!("{e}"))?;
    if r.digest().is_some() {
        bail!("refusing to create a tag with a digest reference: {target}");
    }
    match store.platforms_of(source)? {
        // A multi-platform tag's new name names all its platforms too.
        Some(members) => store.tag_platforms(&r, members)?,
        None => store.tag(&r, &id)?,
    }
    super::image_event(store, "tag", &id.to_string(), &r.to_string());
    Ok(())
}

pub fn rmi(store: &Store, a: &RmiArgs) -> Result<()> {
    let mut errors = Vec::new();
    for name in &a.images {
        if let Err(e) = remove_image(store, name, a.force) {
            errors.push(format!("{e}"));
        }
    }
    if let Ok(Some(r)) = store.try_collect() {
        tracing::debug!("collected {} layers and {} blobs", r.layers, r.blobs);
    }
    if !errors.is_empty() {
        bail!("{}", errors.join("\n"));
    }
    Ok(())
}

fn remove_image(store: &Store, name: &str, force: bool) -> Result<()> {
    if let Some(members) = store.platforms_of(name)? {
        return remove_platform_tag(store, name, members, force);
    }
    let id = store.resolve_image(name)?;
    let refs = store.refs()?;
    let tags = refs.tags_of(&id);
    let by_name = Reference::parse(name)
        .ok()
        .map(|r| r.to_string())
        .filter(|r| tags.contains(r) || refs.digests.contains_key(r));
    // Removing by name with other names left only untags.
    if let Some(r) = &by_name {
        let others = tags.iter().filter(|t| *t != r).count();
        if others > 0 {
            store.update_refs(|rf| {
                rf.tags.remove(r);
                rf.digests.remove(r);
                rf.platforms.remove(r);
                Ok(())
            })?;
            super::image_event(store, "untag", &id.to_string(), r);
            println!(
                "Untagged: {}",
                Reference::parse(r)
                    .map(|x| x.familiar())
                    .unwrap_or_default()
            );
            return Ok(());
        }
    } else if tags.len() > 1 && !force {
        bail!(
            "conflict: unable to delete {} (must be forced) - image is referenced in multiple repositories",
            id.short()
        );
    }
    let users: Vec<String> = store
        .container_links()?
        .into_iter()
        .filter(|c| c.image == id)
        .map(|c| c.id[..12.min(c.id.len())].to_string())
        .collect();
    if !users.is_empty() {
        bail!(
            "conflict: unable to remove image {} - image is being used by container {}",
            id.short(),
            users.join(", ")
        );
    }
    let children: Vec<Digest> = store
        .list_images()?
        .into_iter()
        .filter(|c| store.image_record(c).ok().and_then(|r| r.parent).as_ref() == Some(&id))
        .collect();
    if !children.is_empty() && !force {
        if by_name.is_some() {
            // Docker's rule: removing an image's last name while child images build on it
            // only untags it; it stays, as their parent.
            return untag_all(store, &id);
        }
        bail!(
            "conflict: unable to delete {} (cannot be forced) - image has dependent child images",
            id.short()
        );
    }
    untag_all(store, &id)?;
    store.remove_image_record(&id)?;
    super::image_event(store, "delete", &id.to_string(), &id.to_string());
    println!("Deleted: {id}");
    Ok(())
}

/// `rmi` of a multi-platform tag: the tag goes, and each of its images that nothing else
/// names or uses goes with it (as Docker removes an index and what only it held).
fn remove_platform_tag(
    store: &Store,
    name: &str,
    members: std::collections::BTreeMap<String, Digest>,
    force: bool,
) -> Result<()> {
    let key = Reference::parse(name)?.to_string();
    let ids: BTreeSet<&Digest> = members.values().collect();
    let untagged = store.update_refs(|rf| {
        let mut gone = vec![key.clone()];
        rf.tags.remove(&key);
        rf.platforms.remove(&key);
        // With its last tag go the digest references of its images (as Docker's rmi of a
        // pulled image's last tag also untags `repo@digest`).
        let tagged = rf.tags.values().any(|id| ids.contains(id))
            || rf
                .platforms
                .iter()
                .any(|(k, m)| !k.contains('@') && m.values().any(|id| ids.contains(id)));
        if !tagged {
            let by_digest: Vec<String> = rf
                .digests
                .iter()
                .filter(|(_, id)| ids.contains(id))
                .map(|(k, _)| k.clone())
                .chain(
                    rf.platforms
                        .iter()
                        .filter(|(k, m)| k.contains('@') && m.values().any(|id| ids.contains(id)))
                        .map(|(k, _)| k.clone()),
                )
                .collect::<BTreeSet<String>>()
                .into_iter()
                .collect();
            for k in by_digest {
                rf.digests.remove(&k);
                rf.platforms.remove(&k);
                gone.push(k);
            }
        }
        Ok(gone)
    })?;
    for k in untagged {
        println!(
            "Untagged: {}",
            Reference::parse(&k).map(|x| x.familiar()).unwrap_or(k)
        );
    }
    let refs = store.refs()?;
    let used: std::collections::BTreeSet<Digest> = store
        .container_links()?
        .into_iter()
        .map(|c| c.image)
        .collect();
    for id in members.values() {
        let named = !refs.tags_of(id).is_empty()
            || !refs.digests_of(id).is_empty()
            || refs.platform_members().any(|m| m == id);
        if named || (used.contains(id) && !force) {
            continue;
        }
        let has_children = store
            .list_images()?
            .into_iter()
            .any(|c| store.image_record(&c).ok().and_then(|r| r.parent).as_ref() == Some(id));
        if has_children || used.contains(id) {
            continue;
        }
        store.remove_image_record(id)?;
        super::image_event(store, "delete", &id.to_string(), &id.to_string());
        println!("Deleted: {id}");
    }
    Ok(())
}

/// Removes every tag and digest reference of `id`, saying which.
fn untag_all(store: &Store, id: &Digest) -> Result<()> {
    let untagged = store.update_refs(|rf| {
        let mut gone = Vec::new();
        rf.tags.retain(|k, v| {
            if v == id {
                gone.push(k.clone());
                false
            } else {
                true
            }
        });
        rf.digests.retain(|k, v| {
            if v == id {
                gone.push(k.clone());
                false
            } else {
                true
            }
        });
        // A multi-platform tag loses this member (and goes when its tag went or it is empty).
        for members in rf.platforms.values_mut() {
            members.retain(|_, v| v != id);
        }
        let names: BTreeSet<String> = rf.tags.keys().chain(rf.digests.keys()).cloned().collect();
        rf.platforms
            .retain(|k, m| !m.is_empty() && names.contains(k));
        Ok(gone)
    })?;
    for t in untagged {
        super::image_event(store, "untag", &id.to_string(), &t);
        println!(
            "Untagged: {}",
            Reference::parse(&t).map(|x| x.familiar()).unwrap_or(t)
        );
    }
    Ok(())
}

/// The images a multi-platform tag names, each with its platform (None: `name` is not one).
pub fn platform_images(store: &Store, name: &str) -> Result<Option<Vec<(Platform, Image)>>> {
    let Some(members) = store.platforms_of(name)? else {
        return Ok(None);
    };
    let mut out = Vec::new();
    for (text, id) in members {
        let p = Platform::parse(&text).map_err(|e| anyhow!("{name}: platform {text}: {e}"))?;
        out.push((p, store.image(&id)?));
    }
    Ok(Some(out))
}

pub fn save(store: &Store, a: &SaveArgs) -> Result<()> {
    let mut list = Vec::new();
    for n in &a.images {
        let refs = store.refs()?;
        // A multi-platform tag is written as an index of its platforms' images (unless
        // --platform picks one).
        if let Some(members) = platform_images(store, n)?.filter(|_| a.platform.is_none()) {
            let r = Reference::parse(n)?;
            for (_, img) in &members {
                super::image_event(store, "save", &img.id().to_string(), n);
            }
            list.push((SaveItem::Platforms(members), vec![r]));
            continue;
        }
        let id = resolve_for_platform(store, n, a.platform.as_deref())?;
        let img = store.image(&id)?;
        // Docker's rule: the tag named is written; an image named by its ID gets none (and
        // loads as <none>).
        let tags: Vec<Reference> = match Reference::parse(n) {
            Ok(r)
                if refs.tags.get(&r.to_string()) == Some(&id)
                    || store.platforms_of(n)?.is_some() =>
            {
                vec![r]
            }
            _ => Vec::new(),
        };
        super::image_event(store, "save", &id.to_string(), n);
        list.push((SaveItem::Image(Box::new(img)), tags));
    }
    match &a.output {
        Some(path) => {
            let tmp = path.with_file_name(format!(
                ".{}.strata-tmp",
                path.file_name()
                    .map(|f| f.to_string_lossy().into_owned())
                    .unwrap_or_default()
            ));
            let result = (|| -> Result<()> {
                let f = File::create(&tmp).with_context(|| format!("create {}", tmp.display()))?;
                let w = store.save(&list, io::BufWriter::with_capacity(1 << 20, f))?;
                let f = w
                    .into_inner()
                    .map_err(|e| anyhow!("{}: {}", tmp.display(), e.error()))?;
                f.sync_all()
                    .with_context(|| format!("sync {}", tmp.display()))?;
                std::fs::rename(&tmp, path)
                    .with_context(|| format!("rename to {}", path.display()))?;
                Ok(())
            })();
            if result.is_err() {
                let _ = std::fs::remove_file(&tmp);
            }
            result
        }
        None => {
            if io::stdout().is_terminal() {
                bail!("cowardly refusing to save to a terminal. Use the -o flag or redirect");
            }
            let out = io::stdout().lock();
            let mut w = store.save(&list, io::BufWriter::with_capacity(1 << 20, out))?;
            w.flush()?;
            Ok(())
        }
    }
}

pub fn load(store: &Store, a: &LoadArgs) -> Result<()> {
    let (input, what): (Box<dyn Read + Send>, String) = match &a.input {
        Some(p) => (
            Box::new(File::open(p).with_context(|| format!("open {}", p.display()))?),
            p.display().to_string(),
        ),
        None => {
            if io::stdin().is_terminal() {
                bail!("requested load from stdin, but stdin is empty");
            }
            (Box::new(io::stdin()), "stdin".into())
        }
    };
    let platform = a.platform.as_deref().map(platform_flag).transpose()?;
    let loaded = store.load(input, &what, platform.as_ref())?;
    for entry in &loaded {
        for (_, img) in &entry.images {
            let id = img.id().to_string();
            let name = entry
                .tags
                .first()
                .map(|t| t.to_string())
                .unwrap_or(id.clone());
            super::image_event(store, "load", &id, &name);
        }
    }
    if !a.quiet {
        for entry in loaded {
            if entry.tags.is_empty() {
                for (_, img) in &entry.images {
                    println!("Loaded image ID: {}", img.id());
                }
            }
            for t in entry.tags {
                println!("Loaded image: {}", t.familiar());
            }
        }
    }
    Ok(())
}
