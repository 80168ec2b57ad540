//! `--platform`: foreign platforms' builds through QEMU user emulation (binfmt_misc), BuildKit's
//! automatic platform arguments, `FROM --platform=$BUILDPLATFORM` stages run natively, and the
//! one-line refusals.

use super::*;

/// busybox for amd64 and arm64 under tags of their own.
fn two_bases(s: &Strata) {
    s.busybox();
    s.ok(&["tag", "busybox", "busybox:amd64"]);
    let arm = common::busybox_arm64_tar().to_str().unwrap().to_string();
    s.ok(&[
        "import",
        "--platform",
        "linux/arm64",
        "-c",
        r#"CMD ["sh"]"#,
        &arm,
        "busybox:arm64",
    ]);
}

/// `PER_PLATFORM`'s image for arm64 (run with `--platform linux/arm64`) and for amd64 say
/// what they were built for and run as.
fn assert_runs_per_platform(s: &Strata, arm64: &str, amd64: &str) {
    assert_eq!(
        s.ok(&["run", "--rm", "--platform", "linux/arm64", arm64]),
        "aarch64\narm64 linux/arm64 linux/amd64\naarch64\n"
    );
    assert_eq!(
        s.ok(&["run", "--rm", amd64]),
        "x86_64\namd64 linux/amd64 linux/amd64\nx86_64\n"
    );
}

const PER_PLATFORM: &str = r#"ARG TARGETARCH
FROM busybox:${TARGETARCH}
ARG TARGETARCH
ARG TARGETPLATFORM
ARG BUILDPLATFORM
RUN uname -m > /arch && echo "$TARGETARCH $TARGETPLATFORM $BUILDPLATFORM" > /args
CMD ["sh", "-c", "cat /arch /args; uname -m"]
"#;

#[test]
fn a_foreign_platform_builds_and_runs_through_emulation() {
    let s = Strata::new();
    two_bases(&s);
    let info = s.ok(&["info"]);
    assert!(
        info.contains("\nPlatforms: linux/amd64, linux/arm64\n"),
        "{info}"
    );
    let ctx = context(&s, PER_PLATFORM);
    build(&s, &ctx, &["--platform", "linux/arm64", "-t", "app:arm64"]);
    build(&s, &ctx, &["-t", "app:amd64"]);
    assert_runs_per_platform(&s, "app:arm64", "app:amd64");
    // DOCKER_DEFAULT_PLATFORM stands for --platform, as for Docker's build and run.
    let with_default = |args: &[&str]| {
        let o = s
            .cmd(args)
            .env("DOCKER_DEFAULT_PLATFORM", "linux/arm64")
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        (
            String::from_utf8_lossy(&o.stdout).into_owned(),
            String::from_utf8_lossy(&o.stderr).into_owned(),
        )
    };
    with_default(&["build", "-q", "-t", "app:default", &ctx]);
    assert_eq!(
        with_default(&["run", "--rm", "--network", "none", "app:default"]),
        (
            "aarch64\narm64 linux/arm64 linux/amd64\naarch64\n".to_string(),
            String::new()
        )
    );
    // Without --platform it runs too, with Docker's warning.
    let o = s.run(&["run", "--rm", "--network", "none", "app:arm64"]);
    assert!(o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        "WARNING: The requested image's platform (linux/arm64) does not match the detected \
         host platform (linux/amd64) and no specific platform was requested\n"
    );
    assert_eq!(
        s.ok(&[
            "image",
            "inspect",
            "-f",
            "{{.Os}}/{{.Architecture}}",
            "app:arm64"
        ]),
        "linux/arm64\n"
    );
    // The platform is in the keys: each build again is all cached, and they differ.
    let (_, again) = build(&s, &ctx, &["--platform", "linux/arm64", "-t", "app:arm64"]);
    assert_eq!(cached_steps(&again), 2, "{again}");
    let ids = |t: &str| s.ok(&["images", "-q", "--no-trunc", t]);
    assert_ne!(ids("app:arm64"), ids("app:amd64"));
    s.assert_check();
}

#[test]
fn a_build_platform_stage_runs_natively_and_feeds_the_target_platform() {
    let s = Strata::new();
    two_bases(&s);
    let ctx = context(
        &s,
        "FROM --platform=$BUILDPLATFORM busybox:amd64 AS tools\n\
         ARG TARGETARCH\n\
         RUN echo \"built on $(uname -m) for $TARGETARCH\" > /made\n\
         FROM busybox:arm64\n\
         COPY --from=tools /made /made\n\
         CMD [\"sh\", \"-c\", \"cat /made; uname -m\"]\n",
    );
    build(&s, &ctx, &["--platform", "linux/arm64", "-t", "cross"]);
    assert_eq!(
        s.ok(&["run", "--rm", "cross"]),
        "built on x86_64 for arm64\naarch64\n"
    );
}

#[test]
fn platforms_an_image_or_the_host_lacks_are_refused_in_one_line() {
    let s = Strata::new();
    two_bases(&s);
    let ctx = context(&s, "FROM busybox:amd64\nRUN true\n");
    let err = build_fails(&s, &["build", "--platform", "linux/arm64", &ctx]);
    assert!(
        err.ends_with(
            "Dockerfile:1:1: busybox:amd64: the image is for linux/amd64, not linux/arm64 \
             (import or pull the linux/arm64 image under a name of its own)"
        ),
        "{err}"
    );
    assert_eq!(
        s.fails(&["build", "--platform", "linux/s390x", &ctx]),
        "Error: --platform linux/s390x: this host cannot run it: no emulator for it is \
         registered in binfmt_misc (/proc/sys/fs/binfmt_misc/qemu-s390x: install \
         qemu-user-static and register it, e.g. scripts/binfmt.sh)\n"
    );
    // Each platform's stage needs its own base: every platform is planned before any runs,
    // so the arm64 plan stops the build before the amd64 one starts.
    let o = s.run(&[
        "build",
        "--progress",
        "plain",
        "--platform",
        "linux/amd64,linux/arm64",
        &ctx,
    ]);
    assert!(!o.status.success());
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "Error: {ctx}/Dockerfile:1:1: busybox:amd64: the image is for linux/amd64, not \
             linux/arm64 (import or pull the linux/arm64 image under a name of its own)\n"
        )
    );
    assert_eq!(
        s.fails(&["build", "--platform", "linux/arm64,linux/arm64", &ctx]),
        "Error: --platform linux/arm64,linux/arm64: linux/arm64 is named twice
"
    );
    assert_eq!(
        s.fails(&[
            "run",
            "--rm",
            "--platform",
            "linux/arm64",
            "busybox:amd64",
            "true"
        ]),
        "Error: image busybox:amd64 has no linux/arm64 variant (it has linux/amd64)\n"
    );
}

/// A base a foreign stage pulls is pulled for the stage's platform.
#[test]
fn a_foreign_stage_pulls_its_base_for_its_platform() {
    let s = Strata::new();
    two_bases(&s);
    let registry = common::registry::Registry::start(None);
    let remote = format!("{}/busybox:arm64", registry.addr());
    s.ok(&["tag", "busybox:arm64", &remote]);
    s.ok(&["push", "-q", &remote]);
    let fresh = Strata::new();
    let ctx = context(&fresh, &format!("FROM {remote}\nRUN uname -m > /arch\n"));
    build(&fresh, &ctx, &["--platform", "linux/arm64", "-t", "pulled"]);
    assert_eq!(
        fresh.ok(&["run", "--rm", "pulled", "cat", "/arch"]),
        "aarch64\n"
    );
}

/// examples/multiarch: a C program built by native Debian stages (the toolchains stage, the
/// same for every target, runs once) into a busybox stage per platform; both binaries run,
/// arm64's through emulation.
#[test]
fn examples_multiarch_cross_compiles_a_program_for_each_platform() {
    let s = Strata::new();
    two_bases(&s);
    let debian = common::debian_tar().to_str().unwrap().to_string();
    s.ok(&["import", &debian, "debian:bookworm"]);
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/multiarch");
    let ctx = example.to_str().unwrap();
    let platforms = ["--platform", "linux/amd64,linux/arm64", "-t", "multiarch"];
    let (_, progress) = build(&s, ctx, &platforms);
    let installs = progress
        .lines()
        .filter(|l| l.contains("toolchains 2/2] RUN"))
        .count();
    assert_eq!(installs, 1, "{progress}");
    let run = |p: &str| s.ok(&["run", "--rm", "--platform", p, "multiarch"]);
    assert_eq!(
        run("linux/arm64"),
        "hello from a program compiled for aarch64\n"
    );
    assert_eq!(
        run("linux/amd64"),
        "hello from a program compiled for x86_64\n"
    );
    // One platform alone reuses what the two built; a rebuild of both is all cached.
    build(
        &s,
        ctx,
        &["--platform", "linux/arm64", "-t", "multiarch:arm64"],
    );
    let arch = |t: &str| s.ok(&["image", "inspect", "-f", "{{.Architecture}}", t]);
    assert_eq!(arch("multiarch:arm64"), "arm64\n");
    let (_, again) = build(&s, ctx, &platforms);
    // 6 steps for amd64, 5 for arm64 (the toolchains stage is shown once).
    assert_eq!(cached_steps(&again), 11, "{again}");
    s.assert_check();
}

/// `manifest create`: one tag, an image per platform; FROM, run and build pick theirs.
#[test]
fn a_multi_platform_tag_gives_each_platform_its_image() {
    let s = Strata::new();
    two_bases(&s);
    let amd = s.ok(&["images", "-q", "--no-trunc", "busybox:amd64"]);
    let arm = s.ok(&["images", "-q", "--no-trunc", "busybox:arm64"]);
    assert_eq!(
        s.ok(&[
            "manifest",
            "create",
            "multi:1",
            "busybox:amd64",
            "busybox:arm64"
        ]),
        "Created manifest list multi:1\n"
    );
    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["manifest", "inspect", "multi:1"])).unwrap();
    let entries: Vec<(String, String)> = inspect["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["platform"]["architecture"].as_str().unwrap().to_string(),
                m["image"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            ("amd64".to_string(), amd.trim().to_string()),
            ("arm64".to_string(), arm.trim().to_string())
        ]
    );
    // One row in `images`; a plain run takes the host's, --platform the other.
    let rows = s.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}", "multi"]);
    assert_eq!(rows, "multi:1\n");
    assert_eq!(unames(&s, "multi:1"), ["x86_64\n", "aarch64\n"]);
    // image inspect and history take --platform.
    let arch_of = |p: &str| {
        s.ok(&[
            "image",
            "inspect",
            "--platform",
            p,
            "-f",
            "{{.Architecture}}",
            "multi:1",
        ])
    };
    assert_eq!(arch_of("linux/arm64"), "arm64\n");
    assert_eq!(arch_of("linux/amd64"), "amd64\n");
    let history = s.ok(&[
        "history",
        "-q",
        "--no-trunc",
        "--platform",
        "linux/arm64",
        "multi:1",
    ]);
    assert_eq!(history.lines().next(), Some(arm.trim()));
    assert_eq!(
        s.fails(&["history", "--platform", "linux/arm64", "busybox:amd64"]),
        "Error: image busybox:amd64 has no linux/arm64 variant (it has linux/amd64)\n"
    );
    // FROM picks the build's platform's image.
    let ctx = context(
        &s,
        "FROM multi:1\nRUN uname -m > /arch\nCMD [\"cat\", \"/arch\"]\n",
    );
    build(
        &s,
        &ctx,
        &["--platform", "linux/arm64", "-t", "from-multi:arm64"],
    );
    build(&s, &ctx, &["-t", "from-multi:amd64"]);
    assert_eq!(s.ok(&["run", "--rm", "from-multi:arm64"]), "aarch64\n");
    assert_eq!(s.ok(&["run", "--rm", "from-multi:amd64"]), "x86_64\n");
    // What it lacks is one line.
    assert_eq!(
        s.fails(&[
            "run",
            "--rm",
            "--platform",
            "linux/riscv64",
            "multi:1",
            "true"
        ]),
        "Error: image multi:1 has no linux/riscv64 variant (it has linux/amd64, linux/arm64)\n"
    );
    assert_eq!(
        s.fails(&["manifest", "create", "multi:1", "busybox:amd64"]),
        "Error: refusing to amend an existing manifest list with no --amend flag\n"
    );
    // A second name names both platforms; rmi of a name leaves images other names hold.
    s.ok(&["tag", "multi:1", "multi:2"]);
    assert_eq!(uname(&s, Some("linux/arm64"), "multi:2"), "aarch64\n");
    assert_eq!(s.ok(&["rmi", "multi:1"]), "Untagged: multi:1\n");
    // manifest add replaces a platform's image: the amd64 slot now holds from-multi:amd64.
    s.ok(&["manifest", "add", "multi:2", "from-multi:amd64"]);
    let built = s.ok(&["images", "-q", "--no-trunc", "from-multi:amd64"]);
    assert_eq!(
        s.ok(&[
            "image",
            "inspect",
            "--platform",
            "linux/amd64",
            "-f",
            "{{.Id}}",
            "multi:2"
        ]),
        built
    );
    assert_eq!(uname(&s, Some("linux/arm64"), "multi:2"), "aarch64\n");
    s.ok(&["manifest", "rm", "multi:2"]);
    assert_eq!(
        s.fails(&["manifest", "add", "multi:2", "busybox:amd64"]),
        "Error: multi:2: no such manifest list\n"
    );
    s.assert_check();
}

/// `build --platform a,b`: one build per platform, every tag naming both; rmi takes what
/// only it held.
#[test]
fn a_build_for_two_platforms_tags_both() {
    let s = Strata::new();
    two_bases(&s);
    // The platforms build at once, and a stage both plans share (a `$BUILDPLATFORM` stage
    // that does not read the target's arguments) runs once: both images hold its one output.
    let ctx = context(
        &s,
        "ARG TARGETARCH\n\
         FROM --platform=$BUILDPLATFORM busybox:amd64 AS tools\n\
         RUN cat /proc/sys/kernel/random/uuid > /made\n\
         FROM busybox:${TARGETARCH}\n\
         COPY --from=tools /made /made\n",
    );
    let (_, progress) = build(
        &s,
        &ctx,
        &["--platform", "linux/amd64,linux/arm64", "-t", "shared"],
    );
    let runs: Vec<&str> = progress
        .lines()
        .filter(|l| l.contains("RUN cat /proc"))
        .collect();
    assert_eq!(runs.len(), 1, "{progress}");
    let made = |p: &str| s.ok(&["run", "--rm", "--platform", p, "shared", "cat", "/made"]);
    assert_eq!(made("linux/amd64"), made("linux/arm64"));
    s.ok(&["rmi", "shared"]);
    // A step both plans share before the stage reads the target's arguments runs once too,
    // even with --no-cache: the other platform's build finds it recorded.
    let ctx = context(
        &s,
        "ARG TARGETARCH\n\
         FROM --platform=$BUILDPLATFORM busybox:amd64 AS tools\n\
         RUN cat /proc/sys/kernel/random/uuid > /made\n\
         ARG TARGETARCH\n\
         RUN echo $TARGETARCH >> /made\n\
         FROM busybox:${TARGETARCH}\n\
         COPY --from=tools /made /made\n",
    );
    build(
        &s,
        &ctx,
        &[
            "--no-cache",
            "--platform",
            "linux/amd64,linux/arm64",
            "-t",
            "shared",
        ],
    );
    let (amd, arm) = (made("linux/amd64"), made("linux/arm64"));
    let lines = |t: &str| t.lines().map(str::to_string).collect::<Vec<_>>();
    assert_eq!(lines(&amd)[0], lines(&arm)[0]);
    assert_eq!(
        (lines(&amd)[1].as_str(), lines(&arm)[1].as_str()),
        ("amd64", "arm64")
    );
    s.ok(&["rmi", "shared"]);

    let ctx = context(&s, PER_PLATFORM);
    let platforms = "linux/amd64,linux/arm64";
    build(&s, &ctx, &["--platform", platforms, "--load", "-t", "both"]);
    assert_runs_per_platform(&s, "both", "both");
    let (_, again) = build(&s, &ctx, &["--platform", platforms, "-t", "both"]);
    assert_eq!(cached_steps(&again), 4, "{again}");
    // --dry-run shows each platform's plan under its name.
    let dry = s.ok(&["build", "--dry-run", "--platform", platforms, &ctx]);
    let headers: Vec<&str> = dry.lines().filter(|l| l.starts_with("platform ")).collect();
    assert_eq!(
        headers,
        ["platform linux/amd64", "platform linux/arm64"],
        "{dry}"
    );
    assert_eq!(dry.matches(" CACHED ").count(), 4, "{dry}");
    let out = s.ok(&["rmi", "both"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "Untagged: both:latest");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("Deleted: ")).count(),
        2,
        "{out}"
    );
    s.assert_check();
}

/// A multi-platform tag is pushed as an index of both platforms' manifests (skopeo reads it
/// back); with SOURCE_DATE_EPOCH two stores push the same index digest; a pull picks a
/// platform out of it.
#[test]
fn a_multi_platform_tag_is_pushed_as_an_index() {
    let registry = common::registry::Registry::start(None);
    let s = Strata::new();
    two_bases(&s);
    // Two machines with the same bases (as pulled: here loaded from one archive, since
    // `import` stamps its own time and compresses as it goes).
    let bases = shared_bases(&s);
    let (one, two) = (Strata::new(), Strata::new());
    for store in [&one, &two] {
        store.ok(&["load", "-i", &bases]);
    }
    let mut digests = Vec::new();
    for (n, store) in [&one, &two].into_iter().enumerate() {
        let ctx = context(store, PER_PLATFORM);
        let o = store
            .cmd(&[
                "build",
                "-q",
                "--platform",
                "linux/amd64,linux/arm64",
                "-t",
                "both",
                &ctx,
            ])
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(o.status.success(), "{o:?}");
        let remote = format!("{}/both:{n}", registry.addr());
        store.ok(&["tag", "both", &remote]);
        digests.push(store.ok(&["push", "-q", &remote]).trim().to_string());
    }
    let raws: Vec<String> = (0..2)
        .map(|n| {
            common::sh(&format!(
                "skopeo inspect --raw --tls-verify=false docker://{}/both:{n}",
                registry.addr()
            ))
        })
        .collect();
    assert_eq!(raws[0], raws[1]);
    assert_eq!(digests[0], digests[1]);
    let raw = common::sh(&format!(
        "skopeo inspect --raw --tls-verify=false docker://{}/both:0",
        registry.addr()
    ));
    assert_eq!(index_platforms(&raw), BOTH_OCI);
    let fresh = Strata::new();
    let remote = format!("{}/both:1", registry.addr());
    fresh.ok(&["pull", "-q", "--platform", "linux/arm64", &remote]);
    assert_eq!(uname(&fresh, None, &remote), "aarch64\n");
    // A pull of the host's platform from the same index keeps arm64 under the tag too.
    fresh.ok(&["pull", "-q", &remote]);
    assert_eq!(unames(&fresh, &remote), ["x86_64\n", "aarch64\n"]);
    fresh.assert_check();
    // So does a two-platform build that pulls its base for each platform.
    let other = Strata::new();
    let ctx = context(&other, &format!("FROM {remote}\nRUN uname -m > /built\n"));
    build(
        &other,
        &ctx,
        &["--platform", "linux/amd64,linux/arm64", "-t", "on-both"],
    );
    let built_on =
        |p: &str| other.ok(&["run", "--rm", "--platform", p, "on-both", "cat", "/built"]);
    assert_eq!(built_on("linux/amd64"), "x86_64\n");
    assert_eq!(built_on("linux/arm64"), "aarch64\n");
    let o = other.run(&["run", "--rm", &remote, "uname", "-m"]);
    assert_eq!(
        (
            String::from_utf8_lossy(&o.stdout).as_ref(),
            String::from_utf8_lossy(&o.stderr).as_ref()
        ),
        ("x86_64\n", "")
    );
    let listed: serde_json::Value =
        serde_json::from_str(&other.ok(&["manifest", "inspect", &remote])).unwrap();
    assert_eq!(listed["manifests"].as_array().unwrap().len(), 2);
    other.assert_check();
}

/// What `uname -m` prints in `image` run (with `--platform` when given).
fn uname(s: &Strata, platform: Option<&str>, image: &str) -> String {
    let mut args = vec!["run", "--rm"];
    if let Some(p) = platform {
        args.extend_from_slice(&["--platform", p]);
    }
    args.extend_from_slice(&[image, "uname", "-m"]);
    s.ok(&args)
}

/// What `uname -m` prints in `image` run for the host and with `--platform linux/arm64`.
fn unames(s: &Strata, image: &str) -> [String; 2] {
    [uname(s, None, image), uname(s, Some("linux/arm64"), image)]
}

/// The bases of `two_bases` saved once, so other stores get the very same images (an import
/// is dated, and would give other cache keys).
fn shared_bases(s: &Strata) -> String {
    let bases = s.path("bases.tar");
    s.ok(&[
        "save",
        "-o",
        bases.to_str().unwrap(),
        "busybox:amd64",
        "busybox:arm64",
    ]);
    bases.to_str().unwrap().to_string()
}

/// The platforms (`os/arch mediaType`) an index's JSON lists.
fn index_platforms(raw: &str) -> Vec<String> {
    let index: serde_json::Value = serde_json::from_str(raw).unwrap();
    assert_eq!(
        index["mediaType"], "application/vnd.oci.image.index.v1+json",
        "{raw}"
    );
    index["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{}/{}{} {}",
                m["platform"]["os"].as_str().unwrap(),
                m["platform"]["architecture"].as_str().unwrap(),
                m["platform"]["variant"]
                    .as_str()
                    .map(|v| format!("/{v}"))
                    .unwrap_or_default(),
                m["mediaType"].as_str().unwrap()
            )
        })
        .collect()
}

/// The index an OCI archive's `index.json` names, as skopeo reads it, and its digest.
fn archive_index(archive: &std::path::Path) -> (String, String) {
    let raw = common::sh(&format!(
        "skopeo inspect --raw oci-archive:{}",
        archive.display()
    ));
    let hex = common::sh(&format!(
        "printf %s '{}' | sha256sum | cut -d' ' -f1",
        raw.trim_end()
    ));
    (raw, format!("sha256:{}", hex.trim()))
}

const BOTH_OCI: [&str; 2] = [
    "linux/amd64 application/vnd.oci.image.manifest.v1+json",
    "linux/arm64 application/vnd.oci.image.manifest.v1+json",
];

/// A two-platform build's every output carries the index: `-o type=oci` (skopeo reads both
/// platforms; its digest is the `--iidfile`), `save` of the tag (the same index), `load` of
/// either (one multi-platform tag again), `-o type=local` (a directory per platform), and
/// `--cache-to` (a fresh store builds both platforms all CACHED from it).
#[test]
fn a_two_platform_build_is_written_and_read_as_an_index() {
    let s = Strata::new();
    two_bases(&s);
    let ctx = context(&s, PER_PLATFORM);
    let platforms = "linux/amd64,linux/arm64";
    let archive = s.path("both.tar");
    let iid = s.path("iid");
    let cache = s.path("cache");
    build(
        &s,
        &ctx,
        &[
            "--platform",
            platforms,
            "-t",
            "both",
            "--iidfile",
            iid.to_str().unwrap(),
            "-o",
            &format!("type=oci,dest={}", archive.display()),
            "--cache-to",
            &format!("type=local,dest={},mode=max", cache.display()),
        ],
    );
    let (raw, index_digest) = archive_index(&archive);
    assert_eq!(index_platforms(&raw), BOTH_OCI);
    let iid = fs::read_to_string(&iid).unwrap();
    assert_eq!(iid, index_digest);
    // With compressed layers the index differs, and --iidfile follows it.
    let gz = s.path("both-gz.tar");
    let gz_iid = s.path("gz-iid");
    build(
        &s,
        &ctx,
        &[
            "--platform",
            platforms,
            "--iidfile",
            gz_iid.to_str().unwrap(),
            "-o",
            &format!("type=oci,dest={},compression=gzip", gz.display()),
        ],
    );
    let gz_iid = fs::read_to_string(&gz_iid).unwrap();
    assert_eq!(gz_iid, archive_index(&gz).1);
    assert_ne!(gz_iid, iid);
    // skopeo copies every platform out of it.
    let layout = s.path("layout");
    common::sh(&format!(
        "skopeo copy -q --all oci-archive:{} oci:{}",
        archive.display(),
        layout.display()
    ));
    assert_eq!(
        index_platforms(&common::sh(&format!(
            "skopeo inspect --raw oci:{}",
            layout.display()
        ))),
        BOTH_OCI
    );

    // -o wrote the archive only; the same build into the store tags both platforms, and
    // `save` of the tag writes the same index.
    build(&s, &ctx, &["--platform", platforms, "-t", "both"]);
    let saved = s.path("saved.tar");
    s.ok(&["save", "-o", saved.to_str().unwrap(), "both"]);
    let index_json: serde_json::Value = serde_json::from_str(&common::sh(&format!(
        "tar -xOf {} index.json",
        saved.display()
    )))
    .unwrap();
    assert_eq!(index_json["manifests"][0]["digest"], iid.as_str());
    for file in [&archive, &saved] {
        let fresh = Strata::new();
        assert_eq!(
            fresh.ok(&["load", "-i", file.to_str().unwrap()]),
            "Loaded image: both:latest\n"
        );
        assert_eq!(
            fresh.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]),
            "both:latest\n"
        );
        assert_runs_per_platform(&fresh, "both", "both");
        fresh.assert_check();
    }
    // `load --platform` takes one platform's image out of the index.
    let fresh = Strata::new();
    fresh.ok(&[
        "load",
        "--platform",
        "linux/arm64",
        "-i",
        saved.to_str().unwrap(),
    ]);
    assert_eq!(
        fresh.ok(&["image", "inspect", "-f", "{{.Architecture}}", "both"]),
        "arm64\n"
    );
    assert_eq!(fresh.ok(&["images", "-a", "-q"]).lines().count(), 1);
    fresh.assert_check();
    assert_eq!(
        fresh.fails(&[
            "load",
            "--platform",
            "linux/s390x",
            "-i",
            saved.to_str().unwrap()
        ]),
        format!(
            "Error: {}: no image for linux/s390x in the archive (it has linux/amd64, \
             linux/arm64)\n",
            saved.display()
        )
    );
    // `save --platform` writes one platform's image under the tag.
    let arm = s.path("arm.tar");
    s.ok(&[
        "save",
        "--platform",
        "linux/arm64",
        "-o",
        arm.to_str().unwrap(),
        "both",
    ]);
    let fresh = Strata::new();
    fresh.ok(&["load", "-i", arm.to_str().unwrap()]);
    assert_eq!(
        fresh.ok(&["image", "inspect", "-f", "{{.Architecture}}", "both"]),
        "arm64\n"
    );

    // A directory per platform, as BuildKit's local exporter writes them.
    let out = s.path("out");
    build(
        &s,
        &ctx,
        &[
            "--platform",
            platforms,
            "-o",
            &format!("type=local,dest={}", out.display()),
        ],
    );
    assert_eq!(
        fs::read_to_string(out.join("linux_amd64/arch")).unwrap(),
        "x86_64\n"
    );
    assert_eq!(
        fs::read_to_string(out.join("linux_arm64/arch")).unwrap(),
        "aarch64\n"
    );
    assert_eq!(
        build_fails(
            &s,
            &[
                "build",
                "--platform",
                platforms,
                "-o",
                "type=tar,dest=x.tar",
                &ctx
            ]
        ),
        "Error: -o type=tar: a tarball holds one platform's files; use type=local (a directory \
         per platform) or type=oci"
    );

    // The cache holds both platforms' steps.
    let bases = shared_bases(&s);
    let fresh = Strata::new();
    fresh.ok(&["load", "-i", &bases]);
    let (_, progress) = build(
        &fresh,
        &ctx,
        &[
            "--platform",
            platforms,
            "-t",
            "both",
            "--cache-from",
            &format!("type=local,src={}", cache.display()),
        ],
    );
    assert_eq!(cached_steps(&progress), 4, "{progress}");
    assert_runs_per_platform(&fresh, "both", "both");
    fresh.assert_check();
    s.assert_check();
}

/// `pull --all-platforms` and `pull --platform a,b` keep several platforms of an index under
/// the tag; `manifest annotate` relists an image for another variant and `manifest push`
/// writes the list as a Docker manifest list with `--format docker`.
#[test]
fn an_index_is_pulled_keeping_several_platforms_and_manifest_lists_are_pushed() {
    let registry = common::registry::Registry::start(None);
    let s = Strata::new();
    two_bases(&s);
    s.ok(&[
        "manifest",
        "create",
        "list",
        "busybox:amd64",
        "busybox:arm64",
    ]);
    s.ok(&[
        "manifest",
        "annotate",
        "list",
        "busybox:arm64",
        "--variant",
        "v8",
    ]);
    let oci = format!("{}/list:oci", registry.addr());
    let docker = format!("{}/list:docker", registry.addr());
    s.ok(&["manifest", "push", "-q", "list", &oci]);
    s.ok(&[
        "manifest", "push", "-q", "--purge", "--format", "docker", "list", &docker,
    ]);
    assert_eq!(
        s.fails(&["manifest", "add", "list", "busybox:amd64"]),
        "Error: list: no such manifest list\n"
    );
    let raw = |r: &str| {
        common::sh(&format!(
            "skopeo inspect --raw --tls-verify=false docker://{r}"
        ))
    };
    let listed: serde_json::Value = serde_json::from_str(&raw(&docker)).unwrap();
    assert_eq!(
        listed["mediaType"],
        "application/vnd.docker.distribution.manifest.list.v2+json"
    );
    let entries: Vec<String> = listed["manifests"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            format!(
                "{} {}",
                m["platform"]["variant"].as_str().unwrap_or("-"),
                m["mediaType"].as_str().unwrap()
            )
        })
        .collect();
    assert_eq!(
        entries,
        [
            "- application/vnd.docker.distribution.manifest.v2+json",
            "v8 application/vnd.docker.distribution.manifest.v2+json"
        ]
    );
    // `manifest inspect` of a name with no local list asks its registry, as Docker's does.
    let remote: serde_json::Value =
        serde_json::from_str(&s.ok(&["manifest", "inspect", &oci])).unwrap();
    assert_eq!(
        remote,
        serde_json::from_str::<serde_json::Value>(&raw(&oci)).unwrap()
    );
    let missing = format!("{}/list:none", registry.addr());
    assert_eq!(
        s.fails(&["manifest", "inspect", &missing]),
        format!("Error: no such manifest: {missing}\n")
    );
    assert_eq!(
        index_platforms(&raw(&oci)),
        [
            "linux/amd64 application/vnd.oci.image.manifest.v1+json",
            "linux/arm64/v8 application/vnd.oci.image.manifest.v1+json"
        ]
    );

    for flags in [
        &["--all-platforms"][..],
        &["--platform", "linux/amd64,linux/arm64"],
    ] {
        let fresh = Strata::new();
        let mut args = vec!["pull", "-q"];
        args.extend_from_slice(flags);
        args.push(&oci);
        assert_eq!(fresh.ok(&args), format!("{oci}\n"));
        assert_eq!(unames(&fresh, &oci), ["x86_64\n", "aarch64\n"]);
        let inspect: serde_json::Value =
            serde_json::from_str(&fresh.ok(&["manifest", "inspect", &oci])).unwrap();
        assert_eq!(inspect["manifests"].as_array().unwrap().len(), 2);
        // rmi of the tag takes its digest reference and both images with it.
        let removed = fresh.ok(&["rmi", &oci]);
        let lines: Vec<&str> = removed.lines().collect();
        assert_eq!(lines.len(), 4, "{removed}");
        assert_eq!(lines[0], format!("Untagged: {oci}"));
        assert!(
            lines[1].starts_with(&format!("Untagged: {}/list@sha256:", registry.addr())),
            "{removed}"
        );
        assert!(lines[2..].iter().all(|l| l.starts_with("Deleted: sha256:")));
        assert_eq!(fresh.ok(&["images", "-a", "-q"]), "");
        fresh.assert_check();
    }
    let fresh = Strata::new();
    assert_eq!(
        fresh.fails(&["pull", "--platform", "linux/amd64,linux/s390x", &oci]),
        format!(
            "Error: pull {oci}: {oci}: no manifest for linux/s390x (the index has: linux/amd64, \
             linux/arm64/v8)\n"
        )
    );
    fresh.assert_check();
}

/// `build --push` (and `-o type=registry,name=…`) sends what it built to the registry: a
/// several-platform build as an index, a single one as a manifest.
#[test]
fn build_push_sends_every_platform_to_the_registry() {
    let registry = common::registry::Registry::start(None);
    let s = Strata::new();
    two_bases(&s);
    let ctx = context(&s, PER_PLATFORM);
    let both = format!("{}/app:both", registry.addr());
    build(
        &s,
        &ctx,
        &[
            "--platform",
            "linux/amd64,linux/arm64",
            "--push",
            "-t",
            &both,
        ],
    );
    let raw = |r: &str| {
        common::sh(&format!(
            "skopeo inspect --raw --tls-verify=false docker://{r}"
        ))
    };
    assert_eq!(index_platforms(&raw(&both)), BOTH_OCI);
    let one = format!("{}/app:one", registry.addr());
    build(&s, &ctx, &["-o", &format!("type=registry,name={one}")]);
    let manifest: serde_json::Value = serde_json::from_str(&raw(&one)).unwrap();
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    // The store keeps what it pushed.
    assert_eq!(s.ok(&["run", "--rm", &one, "cat", "/arch"]), "x86_64\n");
    assert_eq!(
        build_fails(&s, &["build", "--push", &ctx]),
        "Error: --push: name the image with -t REGISTRY/NAME[:TAG]"
    );
    assert_eq!(
        build_fails(
            &s,
            &[
                "build",
                "--push",
                "-t",
                &one,
                "-o",
                "type=oci,dest=x.tar",
                &ctx
            ]
        ),
        "Error: --push: -o writes the image elsewhere; push is for the store's"
    );
    s.assert_check();
}
