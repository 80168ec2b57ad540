//! `--isolation chroot`: RUN steps without namespaces, layers found by comparing a plain tree
//! with its snapshot; the same images as container builds, and builds inside an unprivileged
//! container.

use std::fs;
use std::path::{Path, PathBuf};

use super::*;

const EPOCH: &str = "SOURCE_DATE_EPOCH=1700000000";

/// Every kind of change a step can make: new files, a file and a directory deleted, a
/// directory removed and made again (opaque), owners, a user of the image's, a WORKDIR made
/// by RUN, device nodes and /proc.
const CHANGES: &str = r#"FROM busybox
RUN mkdir -p /data/sub && echo hi > /data/sub/f && echo x > /data/g && echo "app:x:1000:1000::/home/app:/bin/sh" >> /etc/passwd
RUN rm -rf /data/sub && rm -f /bin/vi && echo ok > /dev/null && id > /id.txt && chown 42:42 /id.txt
RUN rm -rf /data && mkdir /data && echo new > /data/n
USER app
WORKDIR /home/app/w
RUN id > me && ls -l /dev/null | cut -c1-10 > devnull && head -c 4 /dev/zero | od -An -c > zero
"#;

/// The strata binary and the busybox base, in a directory a container can bind.
fn fixtures(s: &Strata) -> PathBuf {
    let dir = s.path("fx");
    fs::create_dir_all(&dir).unwrap();
    fs::copy(common::strata_bin(), dir.join("strata")).unwrap();
    fs::copy(common::busybox_tar(), dir.join("busybox.tar")).unwrap();
    dir
}

/// `build -q` with SOURCE_DATE_EPOCH: the image ID.
fn build_id(s: &Strata, ctx: &str, isolation: &str, tag: &str) -> String {
    let o = s
        .cmd(&[
            "build",
            "-q",
            "--no-cache",
            "--isolation",
            isolation,
            "-t",
            tag,
            ctx,
        ])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert!(
        o.status.success(),
        "{isolation} build of {ctx} failed: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn example(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
        .display()
        .to_string()
}

#[test]
fn chroot_isolation_builds_the_images_containers_build() {
    let s = Strata::new();
    s.busybox();
    let ctx = context(&s, CHANGES);
    let oci = build_id(&s, &ctx, "oci", "by-oci");
    let chroot = build_id(&s, &ctx, "chroot", "by-chroot");
    assert_eq!(chroot, oci);
    for ex in ["hello", "static-site"] {
        let ctx = example(ex);
        assert_eq!(
            build_id(&s, &ctx, "chroot", ex),
            build_id(&s, &ctx, "oci", ex)
        );
    }
    // What the steps saw: the image's user, the device nodes.
    let out = s.ok(&[
        "run",
        "--rm",
        "by-chroot",
        "sh",
        "-c",
        "cat /id.txt me devnull zero; stat -c '%a %u %g' /id.txt; ls /data",
    ]);
    assert_eq!(
        out,
        "uid=0(root) gid=0(root)\nuid=1000(app) gid=1000\ncrw-rw-rw-\n  \\0  \\0  \\0  \\0\n644 42 42\nn\n"
    );
    // The opaque directory is in the layer as a container's step writes it.
    let paths = top_layer_paths(&s, "by-chroot", 3);
    assert!(paths.contains("data/.wh..wh..opq"), "{paths}");
    assert!(!paths.contains("proc"), "{paths}");
    assert!(fs::read_dir(s.root().join("tmp")).unwrap().next().is_none());
    s.assert_check();
}

#[test]
fn chroot_isolation_refuses_what_needs_namespaces_in_one_line() {
    let s = Strata::new();
    s.busybox();
    let mounts = context(&s, "FROM busybox\nRUN --mount=type=tmpfs,target=/t true\n");
    let err = build_fails(&s, &["build", "--isolation", "chroot", &mounts]);
    assert!(
        err.ends_with(
            "Dockerfile:2: RUN --mount=type=tmpfs,target=/t true: RUN --mount needs mounts, \
             which --isolation chroot does without"
        ),
        "{err}"
    );
    let ctx = context(&s, "FROM busybox\nRUN --network=none true\n");
    let err = build_fails(&s, &["build", "--isolation", "chroot", &ctx]);
    assert!(
        err.contains("RUN --network=none needs a network namespace"),
        "{err}"
    );
    let err = s.fails(&["build", "--isolation", "vm", &ctx]);
    assert_eq!(
        err.trim(),
        "Error: --isolation: invalid isolation \"vm\": expected \"default\", \"oci\" or \"chroot\""
    );
    let failing = context(&s, "FROM busybox\nRUN exit 3\n");
    let err = build_fails(&s, &["build", "--isolation", "chroot", &failing]);
    assert!(err.ends_with("exit code: 3"), "{err}");
    let info = s.ok(&["info"]);
    assert!(
        info.contains("\nBuild Isolation: oci (this process may mount)\n"),
        "{info}"
    );
    assert!(fs::read_dir(s.root().join("tmp")).unwrap().next().is_none());
}

/// A container with Docker's default capabilities and seccomp profile (no CAP_SYS_ADMIN: no
/// mounts, no namespaces) holding the strata binary builds `examples/hello`: the isolation it
/// can get is chroot, and the image is the one a root build makes.
#[test]
fn an_unprivileged_container_builds_with_chroot_isolation() {
    let s = Strata::new();
    s.busybox();
    let fx = fixtures(&s);
    let base = fx.join("base.tar");
    s.ok(&["save", "-o", base.to_str().unwrap(), "busybox"]);
    let expected = build_id(&s, &example("hello"), "oci", "hello");
    let script = "set -e
        S='/fx/strata --root /store'
        $S info | grep Isolation
        $S load -q -i /fx/base.tar >/dev/null
        $S build -q -t hello /hello
        $S build -q --no-cache --isolation chroot -t hello2 /hello
        $S build --isolation oci /hello 2>&1 | tail -1 || true
        $S system check | sed 's/.*: //'
        ls /store/tmp | wc -l";
    let out = s.ok(&[
        "run",
        "--rm",
        "-e",
        EPOCH,
        "-v",
        &format!("{}:/fx:ro", fx.display()),
        "-v",
        &format!("{}:/hello:ro", example("hello")),
        "-v",
        "/store",
        "busybox",
        "sh",
        "-c",
        script,
    ]);
    assert_eq!(
        out,
        format!(
            "Build Isolation: chroot (this process may not mount (no CAP_SYS_ADMIN))\n\
             {expected}\n{expected}\n\
             Error: --isolation: oci isolation needs mounts, and this process may not mount \
             (no CAP_SYS_ADMIN): use --isolation chroot\n\
             0 errors, 0 garbage\n0\n"
        )
    );
}
