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
use strata_planner::plan::{plan, ImageSource, PlanOptions};

/// Every base image is the same fixed image.
struct FixedImages;

impl ImageSource for FixedImages {
    fn lookup(&self, name: &str) -> Result<Option<(Digest, ImageConfig)>, String> {
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

/// One build of the corpus: (name, Dockerfile, build arguments, target).
type Case = (
    &'static str,
    &'static str,
    &'static [(&'static str, &'static str)],
    Option<&'static str>,
);

const CORPUS: &[Case] = &[
    (
        "metadata",
        "FROM base\nENV A=1 B=\"two words\"\nLABEL l=v other=\"x y\"\nWORKDIR /srv\nWORKDIR app\nUSER nobody:nogroup\nEXPOSE 80 53/udp\nVOLUME /data\nSTOPSIGNAL SIGINT\nHEALTHCHECK --interval=5s --retries=2 CMD true\nONBUILD RUN echo x\nSHELL [\"/bin/sh\", \"-xc\"]\nENTRYPOINT [\"/bin/echo\"]\nCMD [\"hi\"]\nMAINTAINER me\n",
        &[],
        None,
    ),
    (
        "run",
        "FROM base\nARG V=1\nRUN echo $V\nRUN [\"echo\", \"exec form\"]\nRUN --network=none true\nRUN --mount=type=cache,target=/c,id=c1,sharing=locked true\nRUN --mount=type=bind,source=src,target=/s true\nRUN --mount=type=tmpfs,target=/t,size=1m true\nRUN --mount=type=secret,id=s,target=/run/s true\nRUN <<EOF\necho heredoc\nEOF\n",
        &[("V", "2")],
        None,
    ),
    (
        "copy",
        "FROM base\nCOPY a.txt /a\nCOPY . /ctx/\nCOPY *.txt /globbed/\nCOPY --chown=1:2 --chmod=640 b.txt /b\nCOPY --link bin/ /opt/bin/\nCOPY --exclude=*.c src /nosrc/\nCOPY --parents src/lib/util.c /p/\nCOPY link /followed\nADD a.txt /added\nCOPY <<EOF /inline\ninline $V\nEOF\n",
        &[],
        None,
    ),
    (
        "stages",
        "ARG BASE=base\nFROM ${BASE} AS build\nRUN make\nFROM base AS unused\nRUN exit 1\nFROM build\nCOPY --from=build /out /out\nCOPY --from=other/image:1 /x /x\nRUN --mount=from=build,target=/b true\n",
        &[],
        None,
    ),
    (
        "target",
        "FROM base AS one\nRUN one\nFROM one AS two\nRUN two\nFROM base\nRUN three\n",
        &[],
        Some("two"),
    ),
];

#[test]
fn cache_keys_are_pinned() {
    let t = tempfile::tempdir().unwrap();
    let ctx = context(t.path());
    let mut out = String::new();
    for (name, source, args, target) in CORPUS {
        let df = parse_dockerfile("Dockerfile", source).unwrap();
        let opts = PlanOptions {
            build_args: args
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
            target: target.map(str::to_string),
            ..Default::default()
        };
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
