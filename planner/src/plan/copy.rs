//! COPY and ADD: sources selected from the context (or a named context, a stage, an image),
//! downloaded (ADD of URLs) or checked out (ADD of git), the destination resolved.

use strata_image::Digest;
use strata_parser::grammar::Chmod;
use strata_parser::instructions::{Copy, Instruction};

use super::run::heredoc_body;
use super::{is_git_source, is_url, Planner, StageBuilder};
use crate::context::{Context, Selected};
use crate::keys::{content_digest, CopyKey, KeyOp, RemoteKey};
use crate::model::{CopyFrom, CopyOp, FetchedFile, FetchedTree, StepOp};
use crate::PlanError;

type Vars = [(String, String)];

/// How sources are selected: from which context, `--exclude` patterns and `--parents`.
#[derive(Default)]
pub(super) struct SelectShape {
    /// A named local context instead of the build context.
    pub named: Option<String>,
    pub exclude: Option<strata_parser::ignore::Matcher>,
    pub parents: bool,
}

/// The sources of a COPY/ADD, expanded and sorted by kind.
#[derive(Default)]
struct Sources {
    /// Paths in the context or in the stage/image copied from.
    paths: Vec<String>,
    urls: Vec<String>,
    git: Vec<String>,
    /// Heredoc files: (name, content).
    inline: Vec<(String, String)>,
}

impl Sources {
    fn remote_count(&self) -> usize {
        self.urls.len() + self.git.len()
    }
}

/// What an ADD fetched: files, a checkout, and what of them the key covers.
type Fetched = (Vec<FetchedFile>, Option<FetchedTree>, Vec<RemoteKey>);

/// The flags of a COPY/ADD, expanded.
struct CopyFlags {
    checksum: Option<String>,
    exclude: Vec<String>,
    chown: Option<String>,
    /// `--chmod` as written (the key holds the text) and parsed.
    chmod_text: Option<String>,
    chmod: Option<Chmod>,
}

impl Planner<'_> {
    pub(super) fn copy(
        &mut self,
        b: &mut StageBuilder,
        ins: &Instruction,
        c: &Copy,
        add: bool,
        vars: &Vars,
    ) -> Result<(), PlanError> {
        let flags = self.copy_flags(ins, c, vars)?;
        // `--build-context NAME=DIR` takes precedence over stages and images, as in BuildKit.
        let named = self.named_context(c.from.as_deref());
        let shape = SelectShape {
            named: named.clone(),
            exclude: self.exclude_matcher(ins, &flags.exclude)?,
            parents: c.parents,
        };
        let sources = self.copy_sources(ins, c, add, vars)?;
        let (fetched, git, remote) = self.fetch_remote(
            ins,
            &sources.urls,
            &sources.git,
            flags.checksum.as_deref(),
            c.keep_git_dir,
        )?;
        let dest_raw = self.expand(ins, &c.dest, vars)?;
        let dest = if dest_raw.starts_with('/') {
            dest_raw.clone()
        } else {
            format!("{}/{dest_raw}", b.workdir().trim_end_matches('/'))
        };
        let (from, from_key, mut selected) = match &c.from {
            None if sources.paths.is_empty() => (CopyFrom::Context, None, Vec::new()),
            Some(f) if named.is_none() => {
                let (from, key) = self.resolve_from(b, ins, f)?;
                (from, Some(key), Vec::new())
            }
            _ => {
                let selected = self.select_context(ins, &sources.paths, &shape)?;
                let from = named.clone().map_or(CopyFrom::Context, CopyFrom::Named);
                (from, None, selected)
            }
        };
        let ctx = self.context_of(named.as_ref());
        // Selections name entries by their place in the sorted context: that is path order.
        selected.sort_by(|a, b| ctx.src(&a.1).cmp(ctx.src(&b.1)).then(a.0.cmp(&b.0)));
        let content = content_digest(ctx, &selected);
        let trailing = dest_raw.ends_with('/') || dest_raw == "." || dest_raw.ends_with("/.");
        let dest_is_dir =
            trailing || c.parents || git.is_some() || self.many_sources(&sources, &from);
        let created_by = copy_history(c, add, &flags, &sources, &dest_raw);
        let key = CopyKey {
            from: from_key,
            sources: sources.paths.clone(),
            content,
            dest: dest.clone(),
            dest_is_dir,
            chown: flags.chown.clone(),
            chmod: flags.chmod_text.clone(),
            inline: sources.inline.clone(),
            exclude: flags.exclude.clone(),
            parents: c.parents,
            named_context: named,
            link: c.link,
            remote,
            unpack: c.unpack,
        };
        let key = if add {
            KeyOp::Add(key)
        } else {
            KeyOp::Copy(key)
        };
        let op = CopyOp {
            from,
            sources: sources.paths,
            selected,
            dest,
            dest_is_dir,
            chown: flags.chown,
            chmod: flags.chmod,
            add,
            inline: sources.inline,
            exclude: flags.exclude,
            parents: c.parents,
            fetched,
            git,
            unpack: c.unpack,
            link: c.link,
        };
        self.push(b, ins, StepOp::Copy(Box::new(op)), key, created_by);
        if c.link {
            let step = b.plan.steps.last_mut().expect("just pushed");
            step.link_key = Some(step.inputs.layer_only().digest());
        }
        Ok(())
    }

    /// `--checksum`, `--exclude`, `--chown` and `--chmod`, expanded (and `--chmod` parsed).
    fn copy_flags(&self, ins: &Instruction, c: &Copy, vars: &Vars) -> Result<CopyFlags, PlanError> {
        let exclude = c
            .exclude
            .iter()
            .map(|x| self.expand(ins, x, vars))
            .collect::<Result<Vec<_>, _>>()?;
        let chmod_text = self.expand_opt(ins, c.chmod.as_deref(), vars)?;
        let chmod = chmod_text
            .as_deref()
            .map(|x| strata_parser::grammar::parse_chmod(x).map_err(|e| self.err(ins, e)))
            .transpose()?;
        Ok(CopyFlags {
            checksum: self.expand_opt(ins, c.checksum.as_deref(), vars)?,
            exclude,
            chown: self.expand_opt(ins, c.chown.as_deref(), vars)?,
            chmod_text,
            chmod,
        })
    }

    fn exclude_matcher(
        &self,
        ins: &Instruction,
        exclude: &[String],
    ) -> Result<Option<strata_parser::ignore::Matcher>, PlanError> {
        if exclude.is_empty() {
            return Ok(None);
        }
        strata_parser::ignore::Matcher::new(exclude)
            .map(Some)
            .map_err(|(p, e)| self.err(ins, format!("--exclude={p}: {e}")))
    }

    /// The sources, expanded: heredoc files, URLs and git repositories (ADD), paths.
    fn copy_sources(
        &self,
        ins: &Instruction,
        c: &Copy,
        add: bool,
        vars: &Vars,
    ) -> Result<Sources, PlanError> {
        let mut out = Sources::default();
        let mut heredocs = c.heredocs.iter();
        for s in &c.sources {
            if strata_parser::grammar::heredoc_marker(s).is_some() {
                // COPY <<EOF /path: the heredoc is a file named after its delimiter.
                if let Some(h) = heredocs.next() {
                    let body = heredoc_body(h);
                    let content = if h.expand {
                        self.expand_heredoc(ins, &body, vars)?
                    } else {
                        body
                    };
                    out.inline.push((h.name.clone(), content));
                    continue;
                }
            }
            let s = self.expand(ins, s, vars)?;
            if add && is_git_source(&s) {
                out.git.push(s);
            } else if add && is_url(&s) {
                out.urls.push(s);
            } else {
                out.paths.push(s);
            }
        }
        Ok(out)
    }

    /// Whether the sources make the destination a directory: several of them, a glob, or a
    /// context directory.
    fn many_sources(&self, sources: &Sources, from: &CopyFrom) -> bool {
        let paths = &sources.paths;
        if paths.len() + sources.inline.len() + sources.remote_count() > 1
            || paths.iter().any(|s| s.contains(['*', '?', '[']))
        {
            return true;
        }
        let ctx = match from {
            CopyFrom::Named(n) => &self.opts.named_contexts[n],
            CopyFrom::Context => self.context,
            _ => return false,
        };
        paths.iter().any(|s| {
            let cleaned = crate::context::clean_source(s).unwrap_or_default();
            cleaned.is_empty()
                || ctx
                    .resolve(&cleaned)
                    .map(|(_, e)| e.kind == crate::context::Kind::Dir)
                    .unwrap_or(false)
        })
    }

    /// The named context `--from=NAME` names, if the build was given one by that name.
    pub(super) fn named_context(&self, from: Option<&str>) -> Option<String> {
        from.map(str::to_lowercase)
            .filter(|n| self.opts.named_contexts.contains_key(n))
    }

    /// Selects context sources, each file with its content digest.
    pub(super) fn select_context(
        &mut self,
        ins: &Instruction,
        sources: &[String],
        shape: &SelectShape,
    ) -> Result<Vec<(usize, Selected)>, PlanError> {
        let mut selected = Vec::new();
        let opts = self.opts;
        let (ctx, stat) = match &shape.named {
            None => (self.context, &mut *self.stat),
            Some(n) => (
                &opts.named_contexts[n],
                self.named_stats.entry(n.clone()).or_default(),
            ),
        };
        for (i, s) in sources.iter().enumerate() {
            let sel = ctx.select(s).map_err(|e| {
                PlanError::Parse(strata_parser::ParseError::new(
                    self.file,
                    self.source,
                    ins.pos,
                    e.to_string(),
                ))
            })?;
            let pivot = shape.parents.then(|| crate::paths::parents_pivot(s));
            for mut x in sel {
                if shape
                    .exclude
                    .as_ref()
                    .is_some_and(|m| m.excluded(ctx.rel(&x)))
                {
                    continue;
                }
                if let Some(pivot) = &pivot {
                    let src = ctx.src(&x);
                    ctx.set_rel(&mut x, src.strip_prefix(pivot.as_str()).unwrap_or(src));
                }
                selected.push((i, x));
            }
        }
        // Digests the stat cache knows now; the others all at once, hashed in parallel.
        let mut misses = Vec::new();
        for (n, (_, x)) in selected.iter_mut().enumerate() {
            let e = ctx.entry(x);
            if e.kind == crate::context::Kind::File {
                x.digest = stat.cached(ctx.src(x), e);
                if x.digest.is_none() {
                    misses.push(n);
                }
            }
        }
        let files: Vec<_> = misses
            .iter()
            .map(|&n| (ctx.src(&selected[n].1), ctx.entry(&selected[n].1)))
            .collect();
        let digests = stat.hash(ctx, &files)?;
        for (n, d) in misses.into_iter().zip(digests) {
            selected[n].1.digest = Some(d);
        }
        Ok(selected)
    }

    /// The context a selection of `named` (None: the build context) was made in.
    pub(super) fn context_of(&self, named: Option<&String>) -> &Context {
        named.map_or(self.context, |n| &self.opts.named_contexts[n])
    }

    /// Fetches the URLs and git repositories of an ADD, checking `--checksum`; returns the
    /// files, the checkout, and what of them the key covers (content digests, commits).
    fn fetch_remote(
        &mut self,
        ins: &Instruction,
        urls: &[String],
        git_sources: &[String],
        checksum: Option<&str>,
        keep_git_dir: bool,
    ) -> Result<Fetched, PlanError> {
        if checksum.is_some() && urls.len() + git_sources.len() != 1 {
            return Err(self.err(ins, "--checksum needs exactly one URL or git source"));
        }
        if git_sources.len() > 1 || (!git_sources.is_empty() && !urls.is_empty()) {
            return Err(self.err(ins, "ADD of a git repository takes it as the only source"));
        }
        let mut fetched = Vec::new();
        let mut keys = Vec::new();
        for u in urls {
            let f = self.images.fetch_url(u).map_err(|e| self.err(ins, e))?;
            if let Some(want) = checksum {
                self.check_url_checksum(ins, u, want, &f.digest)?;
            }
            keys.push(RemoteKey::Url(
                u.clone(),
                f.digest.clone(),
                f.filename.clone(),
                f.mtime,
            ));
            fetched.push(f);
        }
        let mut git = None;
        for g in git_sources {
            let t = self
                .images
                .fetch_git(g, keep_git_dir)
                .map_err(|e| self.err(ins, e))?;
            if let Some(want) = checksum {
                if !t.commit.starts_with(&want.to_ascii_lowercase()) {
                    return Err(self.err(
                        ins,
                        format!(
                            "ADD {g}: checksum mismatch: expected commit {want}, got {}",
                            t.commit
                        ),
                    ));
                }
            }
            keys.push(RemoteKey::Git(g.clone(), t.commit.clone(), keep_git_dir));
            git = Some(t);
        }
        Ok((fetched, git, keys))
    }

    fn check_url_checksum(
        &self,
        ins: &Instruction,
        url: &str,
        want: &str,
        got: &Digest,
    ) -> Result<(), PlanError> {
        let want: Digest = want.parse().map_err(|_| {
            self.err(
                ins,
                format!("--checksum={want}: a URL's checksum is a sha256: digest"),
            )
        })?;
        if &want != got {
            return Err(self.err(
                ins,
                format!("ADD {url}: checksum mismatch: expected {want}, got {got}"),
            ));
        }
        Ok(())
    }
}

/// The history entry of a COPY/ADD, as BuildKit writes it.
fn copy_history(c: &Copy, add: bool, flags: &CopyFlags, sources: &Sources, dest: &str) -> String {
    let name = if add { "ADD" } else { "COPY" };
    let mut shown = String::new();
    let mut flag = |f: String| {
        shown.push_str(&f);
        shown.push(' ');
    };
    if let Some(f) = &c.from {
        flag(format!("--from={f}"));
    }
    if let Some(o) = &flags.chown {
        flag(format!("--chown={o}"));
    }
    if let Some(m) = &flags.chmod_text {
        flag(format!("--chmod={m}"));
    }
    if c.link {
        flag("--link".into());
    }
    if c.parents {
        flag("--parents".into());
    }
    for x in &flags.exclude {
        flag(format!("--exclude={x}"));
    }
    if let Some(x) = &flags.checksum {
        flag(format!("--checksum={x}"));
    }
    if c.keep_git_dir {
        flag("--keep-git-dir=true".into());
    }
    if let Some(u) = c.unpack {
        flag(format!("--unpack={u}"));
    }
    let written: Vec<&str> = sources
        .urls
        .iter()
        .chain(&sources.git)
        .chain(&sources.paths)
        .map(String::as_str)
        .collect();
    format!("{name} {shown}{} {dest} # buildkit", written.join(" "))
}
