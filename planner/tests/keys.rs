//! Cache keys pinned: every step of a corpus of Dockerfiles (every instruction and the flags
//! that enter keys) planned against a fixed base image and context, its key compared with
//! `tests/data/keys.txt`. A change to how keys are computed shows here; when it is meant,
//! bump `KEY_VERSION` or say why, and rewrite the file with `STRATA_BLESS_KEYS=1`.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use strata_image::spec::{ContainerConfig, ImageConfig};
use strata_image::Digest;
use strata_parser::ignore::Matcher;
use strata_parser::parse_dockerfile;
use strata_planner::context::{Context, StatCache};
use strata_planner::model::{FetchedFile, FetchedTree};
use strata_planner::plan::{plan, ImageSource, PlanOptions};

/// Every base image is the same fixed image.
struct FixedImages;

impl ImageSource for FixedImages {
    fn lookup(
        &self,
        name: &str,
        _platform: &strata_image::spec::Platform,
    ) -> Result<Option<(Digest, ImageConfig)>, String> {
        let cfg = ImageConfig {
            architecture: "amd64".into(),
            os: "linux".into(),
            config: Some(ContainerConfig {
                env: vec!["PATH=/usr/bin:/bin".into(), "BASE=1".into()],
                cmd: Some(vec!["sh".into()]),
                ..Default::default()
            }),
            ..Default::default()
        };
        Ok(Some((Digest::of(format!("image {name}").as_bytes()), cfg)))
    }

    /// A download whose digest, name and time depend on the URL only.
    fn fetch_url(&self, url: &str) -> Result<FetchedFile, String> {
        Ok(FetchedFile {
            path: "/nonexistent".into(),
            digest: Digest::of(url.as_bytes()),
            filename: url.rsplit('/').next().unwrap_or("index.html").into(),
            mtime: Some(1_700_000_000),
        })
    }

    /// A checkout whose commit depends on the source only.
    fn fetch_git(&self, source: &str, _keep_git_dir: bool) -> Result<FetchedTree, String> {
        Ok(FetchedTree {
            dir: "/nonexistent".into(),
            commit: Digest::of(source.as_bytes()).hex()[..40].to_string(),
        })
    }
}

/// The build context: files with fixed contents and modes.
fn context(dir: &Path) -> Context {
    let files: &[(&str, &str, u32)] = &[
        ("a.txt", "a\n", 0o644),
        ("b.txt", "b\n", 0o600),
        ("bin/tool", "#!/bin/sh\n", 0o755),
        ("src/main.c", "int main(){}\n", 0o644),
        ("src/lib/util.c", "void f(){}\n", 0o644),
        ("docs/readme.md", "readme\n", 0o644),
    ];
    for (path, content, mode) in files {
        let p = dir.join(path);
        fs::create_dir_all(p.parent().unwrap()).unwrap();
        fs::write(&p, content).unwrap();
        fs::set_permissions(&p, fs::Permissions::from_mode(*mode)).unwrap();
    }
    for d in ["bin", "src", "src/lib", "docs"] {
        fs::set_permissions(dir.join(d), fs::Permissions::from_mode(0o755)).unwrap();
    }
    std::os::unix::fs::symlink("a.txt", dir.join("link")).unwrap();
    Context::load(dir, &Matcher::new(&["docs"]).unwrap()).unwrap()
}

/// One build of the corpus: (name, Dockerfile, build arguments, target, further options).
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
    fn(&mut PlanOptions, &Path),
);

/// The default options.
fn defaults(_: &mut PlanOptions, _: &Path) {}

/// Every build option that enters keys, and a named context.
fn every_option(opts: &mut PlanOptions, dir: &Path) {
    opts.source_date_epoch = Some(1_600_000_000);
    opts.ulimits = vec!["nofile=1024:2048".into()];
    opts.allow_insecure = true;
    opts.allow_network_host = true;
    opts.network = Some("none".into());
    let named = dir.join("named");
    fs::create_dir_all(&named).unwrap();
    fs::write(named.join("n.txt"), "named\n").unwrap();
    fs::set_permissions(named.join("n.txt"), fs::Permissions::from_mode(0o644)).unwrap();
    fs::set_permissions(&named, fs::Permissions::from_mode(0o755)).unwrap();
    let ctx = Context::load(&named, &Matcher::new(&[] as &[&str]).unwrap()).unwrap();
    opts.named_contexts.insert("extra".into(), ctx);
}

const CORPUS: &[Case] = &[
    (
        "metadata",
        "FROM base\nENV A=1 B=\"two words\"\nLABEL l=v other=\"x y\"\nWORKDIR /srv\nWORKDIR app\nUSER nobody:nogroup\nEXPOSE 80 53/udp\nVOLUME /data\nSTOPSIGNAL SIGINT\nHEALTHCHECK --interval=5s --retries=2 CMD true\nONBUILD RUN echo x\nSHELL [\"/bin/sh\", \"-xc\"]\nENTRYPOINT [\"/bin/echo\"]\nCMD [\"hi\"]\nMAINTAINER me\n",
        &[],
        None,
        defaults,
    ),
    (
        "run",
        "FROM base\nARG V=1\nRUN echo $V\nRUN [\"echo\", \"exec form\"]\nRUN --network=none true\nRUN --mount=type=cache,target=/c,id=c1,sharing=locked true\nRUN --mount=type=bind,source=src,target=/s true\nRUN --mount=type=tmpfs,target=/t,size=1m true\nRUN --mount=type=secret,id=s,target=/run/s true\nRUN <<EOF\necho heredoc\nEOF\n",
        &[("V", "2")],
        None,
        defaults,
    ),
    (
        "copy",
        "FROM base\nCOPY a.txt /a\nCOPY . /ctx/\nCOPY *.txt /globbed/\nCOPY --chown=1:2 --chmod=640 b.txt /b\nCOPY --link bin/ /opt/bin/\nCOPY --exclude=*.c src /nosrc/\nCOPY --parents src/lib/util.c /p/\nCOPY link /followed\nADD a.txt /added\nCOPY <<EOF /inline\ninline $V\nEOF\n",
        &[],
        None,
        defaults,
    ),
    (
        "stages",
        "ARG BASE=base\nFROM ${BASE} AS build\nRUN make\nFROM base AS unused\nRUN exit 1\nFROM build\nCOPY --from=build /out /out\nCOPY --from=other/image:1 /x /x\nRUN --mount=from=build,target=/b true\n",
        &[],
        None,
        defaults,
    ),
    (
        "target",
        "FROM base AS one\nRUN one\nFROM one AS two\nRUN two\nFROM base\nRUN three\n",
        &[],
        Some("two"),
        defaults,
    ),
    (
        "options",
        "FROM base AS first\nRUN true\nFROM base\nRUN --network=host --security=insecure true\nRUN --network=default true\nRUN --mount=type=ssh true\nRUN --mount=type=ssh,id=agent,target=/agent true\nRUN --mount=type=cache,target=/c,from=first,source=/x,ro true\nRUN --mount=type=secret,id=tok,env=TOKEN true\nRUN --mount=type=bind,from=extra,target=/e true\nCOPY --from=extra n.txt /n\nADD --unpack=false a.txt /a\nADD https://example.test/file.tar.gz /dl/\nADD --checksum=sha256:43801b35013f26054f2088b4d5dc31792f550d74910dfffd02913dec3218f531 https://example.test/x /x\nADD --keep-git-dir=true https://example.test/repo.git#main /src\nCOPY --from=first --chown=1 /etc /etc2\nCOPY --link --parents bin/./tool /l/\n",
        &[],
        None,
        every_option,
    ),
];

#[test]
fn cache_keys_are_pinned() {
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path());
    let mut out = String::new();
    for (name, source, args, target, options) in CORPUS {
        let df = parse_dockerfile("Dockerfile", source).unwrap();
        let mut opts = PlanOptions {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            target: target.map(str::to_string),
            ..Default::default()
        };
        options(&mut opts, t.path());
        let mut stat = StatCache::default();
        let graph = plan(
            "Dockerfile",
            source,
            &df,
            &opts,
            &ctx,
            &mut stat,
            &FixedImages,
        )
        .unwrap_or_else(|e| panic!("{name}: {e}"));
        for &s in &graph.order {
            let stage = &graph.stages[s];
            out.push_str(&format!("{name} stage {s} base {}\n", stage.base_key));
            for (i, step) in stage.steps.iter().enumerate() {
                let link = step
                    .link_key
                    .as_ref()
                    .map(|k| format!(" link {k}"))
                    .unwrap_or_default();
                out.push_str(&format!(
                    "{name} stage {s} step {i} {}{link}  {}\n",
                    step.key,
                    step.original.trim().lines().next().unwrap_or("")
                ));
            }
        }
    }
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys.txt");
    if std::env::var_os("STRATA_BLESS_KEYS").is_some() {
        fs::write(&path, &out).unwrap();
    }
    let pinned = fs::read_to_string(&path).expect("tests/data/keys.txt");
    for (i, (a, b)) in out.lines().zip(pinned.lines()).enumerate() {
        assert_eq!(a, b, "line {} of tests/data/keys.txt", i + 1);
    }
    assert_eq!(out.lines().count(), pinned.lines().count());
}
