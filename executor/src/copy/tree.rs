//! Trees copied from a stage, an image or a git checkout (`COPY --from`, `ADD git`), and
//! archives unpacked into the destination (`ADD`).

use super::*;

/// Paths a `--from` source names: a literal path, or a glob in its last component.
pub(super) fn glob_sources(root: &Root, s: &str) -> Result<Vec<String>, String> {
    let clean = strata_planner::paths::clean_abs(s);
    if !clean.contains(['*', '?', '[']) {
        return Ok(if root.resolve(&clean).is_ok() {
            vec![clean]
        } else {
            Vec::new()
        });
    }
    let (parent, pattern) = split(&clean);
    let h = root
        .resolve(&parent)
        .map_err(|e| format!("{parent}: {e}"))?;
    let f = h
        .reopen(pathrs::flags::OpenFlags::O_RDONLY | pathrs::flags::OpenFlags::O_DIRECTORY)
        .map_err(|e| format!("{parent}: {e}"))?;
    let mut out = Vec::new();
    for e in fs::read_dir(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .map_err(|e| format!("{parent}: {e}"))?
    {
        let name = e
            .map_err(|e| e.to_string())?
            .file_name()
            .to_string_lossy()
            .into_owned();
        if strata_planner::context::glob_match(&pattern, &name) {
            out.push(format!("{}/{name}", parent.trim_end_matches('/')));
        }
    }
    out.sort();
    Ok(out)
}

/// How a `--from` tree is copied: owner, mode changes, `--exclude`.
pub(super) struct TreeShape<'a> {
    pub(super) own: Option<(u32, u32)>,
    pub(super) chmod: &'a dyn Fn(u32, bool) -> u32,
    pub(super) exclude: Option<&'a strata_parser::ignore::Matcher>,
}

/// Copies `path` from the source root (a directory: its contents) to the destination.
pub(super) fn copy_tree(
    src: &Root,
    path: &str,
    dest: &mut Dest,
    target_of: &dyn Fn(&str) -> String,
    dest_dir: &str,
    shape: &TreeShape,
) -> Result<(), String> {
    let (own, chmod) = (shape.own, shape.chmod);
    let excluded = |rel: &str| shape.exclude.is_some_and(|m| m.excluded(rel));
    // The named source is followed (inside the root); what is below it is not.
    let h = src.resolve(path).map_err(|e| format!("{path}: {e}"))?;
    let f = h
        .reopen(pathrs::flags::OpenFlags::O_RDONLY)
        .map_err(|e| format!("{path}: {e}"))?;
    let md = f.metadata().map_err(|e| format!("{path}: {e}"))?;
    let name = split(path).1;
    if !md.is_dir() {
        if excluded(&name) {
            return Ok(());
        }
        let meta = meta_of(&md, None, own, chmod);
        let mut f = f;
        return dest.write(&target_of(&name), &meta, Some(Data::File(&mut f)));
    }
    // A directory's contents go into the destination, which is then a directory.
    let dest_dir = dest_dir.trim_end_matches('/').to_string();
    dest.ensure_dir(&dest_dir, own)?;
    let target_of = |rel: &str| format!("{dest_dir}/{rel}");
    let base = format!("/proc/self/fd/{}", f.as_raw_fd());
    let mut stack: Vec<String> = vec![String::new()];
    while let Some(rel) = stack.pop() {
        let dir_path = if rel.is_empty() {
            base.clone()
        } else {
            format!("{base}/{rel}")
        };
        let mut names: Vec<String> = fs::read_dir(&dir_path)
            .map_err(|e| format!("{path}/{rel}: {e}"))?
            .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
            .collect();
        names.sort();
        for n in names {
            let child_rel = if rel.is_empty() {
                n.clone()
            } else {
                format!("{rel}/{n}")
            };
            if excluded(&child_rel) {
                continue;
            }
            let p = format!("{base}/{child_rel}");
            let cm = fs::symlink_metadata(&p).map_err(|e| format!("{path}/{child_rel}: {e}"))?;
            let ft = cm.file_type();
            let target = target_of(&child_rel);
            if ft.is_symlink() {
                let link = fs::read_link(&p)
                    .map(|l| l.to_string_lossy().into_owned())
                    .ok();
                dest.write(&target, &meta_of(&cm, link, own, chmod), None)?;
            } else if ft.is_dir() {
                dest.write(&target, &meta_of(&cm, None, own, chmod), None)?;
                stack.push(child_rel);
            } else if ft.is_file() {
                let h = src
                    .resolve_nofollow(format!("{}/{}", path.trim_end_matches('/'), child_rel))
                    .map_err(|e| format!("{path}/{child_rel}: {e}"))?;
                let mut cf = h
                    .reopen(pathrs::flags::OpenFlags::O_RDONLY)
                    .map_err(|e| format!("{path}/{child_rel}: {e}"))?;
                dest.write(
                    &target,
                    &meta_of(&cm, None, own, chmod),
                    Some(Data::File(&mut cf)),
                )?;
            } else {
                dest.write(&target, &meta_of(&cm, None, own, chmod), None)?;
            }
        }
    }
    Ok(())
}

pub(super) fn meta_of(
    m: &fs::Metadata,
    link: Option<String>,
    own: Option<(u32, u32)>,
    chmod: &dyn Fn(u32, bool) -> u32,
) -> Meta {
    let ft = m.file_type();
    let kind = if ft.is_symlink() {
        Kind::Symlink
    } else if ft.is_dir() {
        Kind::Dir
    } else if ft.is_file() {
        Kind::File
    } else {
        Kind::Special
    };
    let (uid, gid) = own.unwrap_or((m.uid(), m.gid()));
    Meta {
        kind,
        mode: if kind == Kind::Special {
            m.mode()
        } else {
            chmod(m.mode() & 0o7777, kind == Kind::Dir)
        },
        uid,
        gid,
        mtime: m.mtime(),
        link,
    }
}

/// ADD of a local archive: unpacked (safely) into the destination directory.
pub(super) fn extract_into(dest: &Dest, dir: &str, f: File) -> Result<(), String> {
    let h = dest
        .root
        .mkdir_all(dir, &Permissions::from_mode(0o755))
        .map_err(|e| format!("{dir}: {e}"))?;
    let root = Root::from_fd(OwnedFd::from(h));
    let (_, r) = strata_image::compress::decompress_archive(io::BufReader::new(f))
        .map_err(|e| format!("ADD: {e}"))?;
    strata_image::layer::extract_into_root(
        r,
        root,
        Path::new(dir),
        &strata_image::layer::ExtractOptions::default(),
    )
    .map_err(|e| format!("ADD: {e}"))?;
    Ok(())
}
