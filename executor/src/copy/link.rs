//! Unchanged context files linked from the layer the same COPY made last time (`reuse`), on
//! rayon's pool, instead of being copied again.

use super::*;

/// Files readied for linking, with their parents' open directories, and the source mtimes
/// of those parents (stamped once the links are made).
#[derive(Default)]
pub(super) struct Linkable<'a> {
    pub(super) jobs: Vec<(FileJob<'a>, Arc<OwnedFd>)>,
    pub(super) dir_times: HashMap<String, i64>,
}

/// Links (or, when the earlier file does not check out, copies) the readied files into their
/// parents in the new layer, one worker per core, then puts back the parents' source mtimes.
pub(super) fn link_or_copy(ctx: &Context, reuse: &Reuse, todo: Linkable) -> Result<(), String> {
    let mut touched: HashMap<String, Arc<OwnedFd>> = HashMap::new();
    for part in on_each_core(&todo.jobs, |part| link_part(ctx, reuse, part))? {
        touched.extend(part);
    }
    for (parent, dir) in touched {
        if let Some(&mtime) = todo.dir_times.get(&parent) {
            let t = TimeSpec::new(mtime, 0);
            futimens(&*dir, &t, &t).map_err(|e| format!("{parent}: {e}"))?;
        }
    }
    Ok(())
}

/// One worker's share of [`link_or_copy`]; returns the directories it wrote into.
pub(super) fn link_part(
    ctx: &Context,
    reuse: &Reuse,
    part: &[(FileJob, Arc<OwnedFd>)],
) -> Result<HashMap<String, Arc<OwnedFd>>, String> {
    let ctx_root = ctx.root_handle().map_err(|e| e.to_string())?;
    let mut touched = HashMap::new();
    for (job, dir) in part {
        let (parent, name) = split(&job.target);
        let want = reuse::Expect {
            size: job.size,
            mode: job.meta.mode,
            uid: job.meta.uid,
            gid: job.meta.gid,
            mtime: job.meta.mtime,
        };
        if !reuse.link(&job.target, &want, dir, &name) {
            let mut f = ctx.open_in(&ctx_root, job.src).map_err(|e| e.to_string())?;
            write_file_at(dir, &name, &job.target, &job.meta, Some(Data::File(&mut f)))?;
        }
        touched.entry(parent).or_insert_with(|| dir.clone());
    }
    Ok(touched)
}
