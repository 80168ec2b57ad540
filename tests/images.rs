//! End to end: import, images, inspect, history, tag, rmi, save, load, system df/prune/check,
//! interop with skopeo and umoci, hostile archives, and crash safety of load.

mod common;

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use common::{busybox_tar, have, sh, tree_listing, Strata};

#[test]
fn import_lists_inspects_and_tags() {
    let s = Strata::new();
    let id = s.busybox();
    assert!(id.starts_with("sha256:") && id.len() == 71, "{id}");

    let images = s.ok(&["images"]);
    let lines: Vec<&str> = images.lines().collect();
    assert_eq!(lines.len(), 2, "{images}");
    assert!(
        lines[0].starts_with("REPOSITORY   TAG      IMAGE ID       CREATED"),
        "{images}"
    );
    assert!(
        lines[1].starts_with("busybox      latest   ") && lines[1].contains(&id[7..19]),
        "{images}"
    );
    assert!(lines[1].ends_with("MB"), "{images}");

    assert_eq!(s.ok(&["images", "-q"]).trim(), &id[7..19]);
    assert_eq!(s.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    assert_eq!(
        s.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"])
            .trim(),
        "busybox:latest"
    );
    let j: serde_json::Value =
        serde_json::from_str(s.ok(&["images", "--format", "json"]).trim()).unwrap();
    assert_eq!(j["Repository"], "busybox");

    let inspect: serde_json::Value =
        serde_json::from_str(&s.ok(&["image", "inspect", "busybox"])).unwrap();
    let obj = &inspect[0];
    assert_eq!(obj["Id"], id.as_str());
    assert_eq!(obj["RepoTags"], serde_json::json!(["busybox:latest"]));
    assert_eq!(obj["Config"]["Cmd"], serde_json::json!(["sh"]));
    assert_eq!(obj["RootFS"]["Type"], "layers");
    assert_eq!(obj["RootFS"]["Layers"].as_array().unwrap().len(), 1);
    assert_eq!(obj["Os"], "linux");
    assert_eq!(
        s.ok(&["inspect", "--format", "{{.Config.Cmd}}", &id[7..19]])
            .trim(),
        "[sh]"
    );

    s.ok(&["tag", "busybox", "localhost:5000/me/bb:v1"]);
    let images = s.ok(&["images", "--format", "{{.Repository}} {{.Tag}} {{.ID}}"]);
    assert!(images.contains("localhost:5000/me/bb v1"), "{images}");

    let history = s.ok(&["history", "busybox"]);
    assert!(history.starts_with("IMAGE          CREATED"), "{history}");
    assert!(history.contains("strata import"), "{history}");
    assert_eq!(s.ok(&["history", "-q", "busybox"]).trim(), &id[7..19]);

    // Two names: rmi by name only untags.
    assert_eq!(
        s.ok(&["rmi", "localhost:5000/me/bb:v1"]).trim(),
        "Untagged: localhost:5000/me/bb:v1"
    );
    let out = s.ok(&["rmi", "busybox"]);
    assert!(
        out.contains("Untagged: busybox:latest") && out.contains(&format!("Deleted: {id}")),
        "{out}"
    );
    assert_eq!(s.ok(&["images", "-q"]).trim(), "");
    // The layers went with the last image that needed them.
    assert_eq!(fs::read_dir(s.root().join("layers")).unwrap().count(), 0);
    assert_eq!(
        fs::read_dir(s.root().join("blobs/sha256")).unwrap().count(),
        0
    );
    s.assert_check();
}

#[test]
fn import_applies_changes_and_reads_compressed_tarballs() {
    let s = Strata::new();
    let gz = s.path("rootfs.tar.gz");
    let zst = s.path("rootfs.tar.zst");
    sh(&format!(
        "gzip -c {} > {}",
        busybox_tar().display(),
        gz.display()
    ));
    sh(&format!(
        "zstd -q -c {} > {}",
        busybox_tar().display(),
        zst.display()
    ));
    let plain = s
        .ok(&["import", busybox_tar().to_str().unwrap()])
        .trim()
        .to_string();
    let from_gz = s
        .ok(&[
            "import",
            "-c",
            "ENV A=1 B=2",
            "-c",
            "WORKDIR /srv",
            "-c",
            "ENTRYPOINT [\"/bin/sh\",\"-c\"]",
            "-c",
            "EXPOSE 8080",
            "-c",
            "LABEL org.example=yes",
            "-c",
            "USER nobody",
            gz.to_str().unwrap(),
            "gz:1",
        ])
        .trim()
        .to_string();
    assert_ne!(plain, from_gz);
    let cfg: serde_json::Value =
        serde_json::from_str(&s.ok(&["inspect", "--format", "{{json .Config}}", "gz:1"])).unwrap();
    assert_eq!(cfg["Env"], serde_json::json!(["A=1", "B=2"]));
    assert_eq!(cfg["WorkingDir"], "/srv");
    assert_eq!(cfg["User"], "nobody");
    assert_eq!(cfg["Labels"]["org.example"], "yes");
    assert!(cfg["ExposedPorts"]["8080/tcp"].is_object());
    // Same rootfs, same layer, whatever the compression.
    let layers = |r: &str| s.ok(&["inspect", "--format", "{{json .RootFS.Layers}}", r]);
    assert_eq!(layers(&plain), layers("gz:1"));
    let z = s.ok(&["import", zst.to_str().unwrap()]).trim().to_string();
    assert_eq!(layers(&plain), layers(&z));
    assert_eq!(
        s.fails(&["import", "-c", "FROM x", busybox_tar().to_str().unwrap()]),
        "Error: --change \"FROM x\": FROM is not a valid change (use CMD, ENTRYPOINT, ENV, EXPOSE, LABEL, ONBUILD, STOPSIGNAL, USER, VOLUME or WORKDIR)\n"
    );
    s.assert_check();
}

#[test]
fn save_load_save_round_trip_keeps_ids_and_digests() {
    let a = Strata::new();
    let id = a.busybox();
    let first = a.path("first.tar");
    a.ok(&["save", "-o", first.to_str().unwrap(), "busybox"]);

    let b = Strata::new();
    let out = b.ok(&["load", "-i", first.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: busybox:latest");
    assert_eq!(b.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    let second = b.path("second.tar");
    b.ok(&["save", "-o", second.to_str().unwrap(), "busybox:latest"]);
    assert_eq!(
        fs::read(&first).unwrap(),
        fs::read(&second).unwrap(),
        "archives differ"
    );

    // Compressed archives load too, from a file or stdin.
    let gz = b.path("first.tar.gz");
    sh(&format!("gzip -c {} > {}", first.display(), gz.display()));
    let c = Strata::new();
    let o = c
        .cmd(&["load"])
        .stdin(fs::File::open(&gz).unwrap())
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(c.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    c.assert_check();
}

#[test]
fn skopeo_and_umoci_accept_saved_archives() {
    if !have("skopeo") || !have("umoci") {
        panic!("skopeo and umoci are required (apt-get install skopeo umoci)");
    }
    let s = Strata::new();
    let id = s.busybox();
    let archive = s.path("bb.tar");
    s.ok(&["save", "-o", archive.to_str().unwrap(), "busybox"]);

    let docker: serde_json::Value = serde_json::from_str(&sh(&format!(
        "skopeo inspect --config docker-archive:{}",
        archive.display()
    )))
    .unwrap();
    assert_eq!(docker["config"]["Cmd"], serde_json::json!(["sh"]));
    let oci: serde_json::Value = serde_json::from_str(&sh(&format!(
        "skopeo inspect oci-archive:{}",
        archive.display()
    )))
    .unwrap();
    let layers = oci["Layers"].as_array().unwrap().len();
    assert_eq!(layers, 1);
    // skopeo computes the config digest: it is our image ID.
    let raw = sh(&format!(
        "skopeo inspect --raw oci-archive:{}",
        archive.display()
    ));
    let manifest: serde_json::Value = serde_json::from_str(&raw).unwrap();
    assert_eq!(manifest["config"]["digest"], id.as_str());

    // umoci's unpacked view equals our layer directory.
    let layout = s.path("layout");
    fs::create_dir(&layout).unwrap();
    sh(&format!(
        "tar -xf {} -C {}",
        archive.display(),
        layout.display()
    ));
    let bundle = s.path("bundle");
    sh(&format!(
        "umoci unpack --image {}:latest {}",
        layout.display(),
        bundle.display()
    ));
    let chain = s.first_layer_diff();
    assert_eq!(tree_listing(&bundle.join("rootfs")), tree_listing(&chain));
}

#[test]
fn load_accepts_archives_written_by_skopeo() {
    let s = Strata::new();
    let id = s.busybox();
    let ours = s.path("ours.tar");
    s.ok(&["save", "-o", ours.to_str().unwrap(), "busybox"]);
    // docker-archive written by skopeo (its own manifest.json layout)
    let dock = s.path("skopeo-docker.tar");
    sh(&format!(
        "skopeo copy -q oci-archive:{} docker-archive:{}:other/name:v2",
        ours.display(),
        dock.display()
    ));
    // OCI layout with gzip layers written by skopeo, tarred
    let dir = s.path("skopeo-oci");
    sh(&format!(
        "skopeo copy -q --dest-compress-format gzip oci-archive:{} oci:{}:v3",
        ours.display(),
        dir.display()
    ));
    let oci_tar = s.path("skopeo-oci.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        dir.display(),
        oci_tar.display()
    ));

    let t = Strata::new();
    let out = t.ok(&["load", "-i", dock.to_str().unwrap()]);
    assert_eq!(out.trim(), "Loaded image: other/name:v2");
    assert_eq!(t.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    t.ok(&["load", "-i", oci_tar.to_str().unwrap()]);
    assert_eq!(t.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    t.assert_check();
    // A loaded image saves again with its layer's exact bytes.
    let again = t.path("again.tar");
    t.ok(&["save", "-o", again.to_str().unwrap(), "other/name:v2"]);
    let m: serde_json::Value = serde_json::from_str(&sh(&format!(
        "skopeo inspect --raw oci-archive:{}",
        again.display()
    )))
    .unwrap();
    assert_eq!(m["config"]["digest"], id.as_str());
}

// ---- hostile input ----------------------------------------------------------------------

/// Writes a tar whose entries are raw (name, type, data, link) so hostile names survive.
fn raw_tar(entries: &[(&str, u8, &[u8], &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        let mut h = [0u8; 512];
        h[..name.len()].copy_from_slice(name.as_bytes());
        h[100..107].copy_from_slice(b"0000644");
        h[108..115].copy_from_slice(b"0000000");
        h[116..123].copy_from_slice(b"0000000");
        h[124..135].copy_from_slice(format!("{:011o}", data.len()).as_bytes());
        h[136..147].copy_from_slice(b"00000000000");
        h[156] = *kind;
        h[157..157 + link.len()].copy_from_slice(link.as_bytes());
        h[257..263].copy_from_slice(b"ustar\0");
        h[263..265].copy_from_slice(b"00");
        h[148..156].copy_from_slice(b"        ");
        let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
        h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

#[test]
fn hostile_tarballs_are_refused_and_leave_the_store_clean() {
    let s = Strata::new();
    let host = s.path("host");
    fs::create_dir(&host).unwrap();
    let host_s = host.to_str().unwrap().to_string();
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        (
            "traversal",
            raw_tar(&[("../../x", b'0', b"evil", "")]),
            "'..'",
        ),
        (
            "absolute",
            raw_tar(&[("/etc/x", b'0', b"evil", "")]),
            "absolute",
        ),
        (
            "symlink-write-through",
            raw_tar(&[("s", b'2', b"", &host_s), ("s/file", b'0', b"evil", "")]),
            "symlink",
        ),
        (
            "dotdot-link",
            raw_tar(&[("s", b'2', b"", ".."), ("s/x/y", b'0', b"evil", "")]),
            "symlink",
        ),
        (
            "hardlink-escape",
            raw_tar(&[("h", b'1', b"", "../../../etc/passwd")]),
            "'..'",
        ),
        (
            "truncated",
            raw_tar(&[("f", b'0', &[7u8; 4000], "")])[..1536].to_vec(),
            "tar stream",
        ),
    ];
    for (name, bytes, expect) in cases {
        let p = s.path(&format!("{name}.tar"));
        fs::write(&p, bytes).unwrap();
        let err = s.fails(&["import", p.to_str().unwrap(), "evil:latest"]);
        assert!(err.contains(expect), "{name}: {err}");
        assert!(
            err.contains(&format!("{name}.tar")),
            "{name}: error does not name the file: {err}"
        );
    }
    assert_eq!(
        fs::read_dir(&host).unwrap().count(),
        0,
        "a host file was written"
    );
    assert_eq!(s.ok(&["images", "-q"]).trim(), "");
    s.assert_check();
}

#[test]
fn load_refuses_archives_that_lie() {
    let s = Strata::new();
    s.busybox();
    let good = s.path("good.tar");
    s.ok(&["save", "-o", good.to_str().unwrap(), "busybox"]);
    let t = Strata::new();

    // manifest.json naming a file outside the archive
    let dir = s.path("evil");
    fs::create_dir(&dir).unwrap();
    sh(&format!("tar -xf {} -C {}", good.display(), dir.display()));
    let manifest = fs::read_to_string(dir.join("manifest.json")).unwrap();
    let config = manifest
        .split('"')
        .find(|p| p.starts_with("blobs/"))
        .unwrap()
        .to_string();
    fs::write(
        dir.join("manifest.json"),
        manifest.replacen(&config, "../x.json", 1),
    )
    .unwrap();
    fs::remove_file(dir.join("index.json")).unwrap();
    let evil = s.path("evil.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        dir.display(),
        evil.display()
    ));
    let err = t.fails(&["load", "-i", evil.to_str().unwrap()]);
    assert!(err.contains("../x.json"), "{err}");

    // a blob whose bytes do not match its name
    let dir2 = s.path("evil2");
    fs::create_dir(&dir2).unwrap();
    sh(&format!("tar -xf {} -C {}", good.display(), dir2.display()));
    let cfg = dir2.join(&config);
    let mut bytes = fs::read(&cfg).unwrap();
    bytes[5] ^= 1;
    fs::write(&cfg, bytes).unwrap();
    let evil2 = s.path("evil2.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        dir2.display(),
        evil2.display()
    ));
    // A fresh store: the first attempt left the genuine config behind as (verified) garbage.
    let t = Strata::new();
    let err = t.fails(&["load", "-i", evil2.to_str().unwrap()]);
    assert!(err.contains("digest mismatch"), "{err}");

    // an OCI layout of an unknown version
    let dir3 = s.path("evil3");
    fs::create_dir(&dir3).unwrap();
    sh(&format!("tar -xf {} -C {}", good.display(), dir3.display()));
    fs::remove_file(dir3.join("manifest.json")).unwrap();
    fs::write(dir3.join("oci-layout"), r#"{"imageLayoutVersion":"9.9.9"}"#).unwrap();
    let evil3 = s.path("evil3.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        dir3.display(),
        evil3.display()
    ));
    let err = t.fails(&["load", "-i", evil3.to_str().unwrap()]);
    assert!(err.contains("9.9.9"), "{err}");

    // an OCI layout whose descriptors lie about sizes (the manifest's, then a layer's)
    for (n, lie) in ["manifest", "layer"].iter().enumerate() {
        let dir = s.path(&format!("evil-size-{n}"));
        fs::create_dir(&dir).unwrap();
        sh(&format!("tar -xf {} -C {}", good.display(), dir.display()));
        fs::remove_file(dir.join("manifest.json")).unwrap();
        let index: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let mdigest = index["manifests"][0]["digest"]
            .as_str()
            .unwrap()
            .to_string();
        let expected = if *lie == "manifest" {
            let mut index = index.clone();
            index["manifests"][0]["size"] = serde_json::json!(3);
            fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
            format!("manifest {mdigest}: the blob has")
        } else {
            // A new manifest with a wrong layer size, and the index pointing at it.
            let mpath = dir.join("blobs/sha256").join(&mdigest[7..]);
            let mut m: serde_json::Value =
                serde_json::from_slice(&fs::read(&mpath).unwrap()).unwrap();
            let layer = m["layers"][0]["digest"].as_str().unwrap().to_string();
            m["layers"][0]["size"] = serde_json::json!(12);
            let bytes = serde_json::to_vec(&m).unwrap();
            let hex = sh(&format!(
                "printf '%s' '{}' | sha256sum",
                String::from_utf8_lossy(&bytes)
            ));
            let hex = hex.split_whitespace().next().unwrap().to_string();
            fs::write(dir.join("blobs/sha256").join(&hex), &bytes).unwrap();
            let mut index = index.clone();
            index["manifests"][0]["digest"] = serde_json::json!(format!("sha256:{hex}"));
            index["manifests"][0]["size"] = serde_json::json!(bytes.len());
            fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
            format!("layer {layer}: the blob has")
        };
        let evil = s.path(&format!("evil-size-{n}.tar"));
        sh(&format!(
            "tar -C {} -cf {} .",
            dir.display(),
            evil.display()
        ));
        let err = t.fails(&["load", "-i", evil.to_str().unwrap()]);
        assert!(err.contains(&expected), "{lie}: {err}");
        assert!(err.contains("its descriptor says"), "{err}");
    }

    assert_eq!(t.ok(&["images", "-q"]).trim(), "");
    t.assert_check();
}

#[test]
fn cli_errors_are_one_line() {
    let s = Strata::new();
    let err = s.fails(&["inspect", "nosuch"]);
    assert!(err.contains("no such object: nosuch"), "{err}");
    let err = s.fails(&["tag", "nosuch", "x"]);
    assert!(err.contains("no such image"), "{err}");
    s.busybox();
    let err = s.fails(&["tag", "busybox", "UPPER/Case"]);
    assert!(err.contains("must be lowercase"), "{err}");
    let err = s.fails(&["import", "/nonexistent.tar"]);
    assert!(err.contains("/nonexistent.tar"), "{err}");
}

// ---- prune, df, info ----------------------------------------------------------------------

/// `images --filter` with Docker's keys; values of one key are alternatives, keys combine.
#[test]
fn image_filters_select_as_docker_does() {
    let s = Strata::new();
    s.busybox();
    let tar = busybox_tar().to_str().unwrap();
    s.ok(&["import", "-c", "LABEL owner=me", tar, "mine:v1"]);
    let dangling = s.ok(&["import", "-c", "ENV X=1", tar]);
    s.ok(&["tag", "busybox", "other/busybox:1.36"]);
    let list = |filters: &[&str]| {
        let mut args = vec!["images", "--format", "{{.Repository}}:{{.Tag}}"];
        for f in filters {
            args.extend(["--filter", f]);
        }
        s.ok(&args)
    };
    assert_eq!(
        list(&[]),
        "<none>:<none>\nmine:v1\nbusybox:latest\nother/busybox:1.36\n"
    );
    assert_eq!(list(&["dangling=true"]), "<none>:<none>\n");
    assert_eq!(
        list(&["dangling=false"]),
        "mine:v1\nbusybox:latest\nother/busybox:1.36\n"
    );
    assert_eq!(list(&["label=owner"]), "mine:v1\n");
    assert_eq!(list(&["label=owner=me", "label=owner=you"]), "");
    assert_eq!(list(&["reference=busy*"]), "busybox:latest\n");
    assert_eq!(
        list(&["reference=*:v1", "reference=other/*"]),
        "mine:v1\nother/busybox:1.36\n"
    );
    assert_eq!(list(&["reference=busybox", "label=owner"]), "");
    assert_eq!(
        list(&["before=mine:v1"]),
        "busybox:latest\nother/busybox:1.36\n"
    );
    assert_eq!(list(&["since=busybox"]), "<none>:<none>\nmine:v1\n");
    assert_eq!(
        s.ok(&["images", "-q", "--no-trunc", "-f", "dangling=true"]),
        dangling
    );
    for (filter, error) in [
        ("dangling=maybe", "Error: invalid filter 'dangling=maybe'\n"),
        ("until=1h", "Error: invalid filter 'until'\n"),
        (
            "label",
            "Error: bad format of filter \"label\" (expected name=value)\n",
        ),
        ("before=nosuch", "Error: no such image: nosuch\n"),
    ] {
        assert_eq!(s.fails(&["images", "-f", filter]), error, "{filter}");
    }
    s.assert_check();
}

#[test]
fn prune_removes_dangling_then_unused_images() {
    let s = Strata::new();
    s.busybox();
    // A second import with a change is a dangling image once untagged.
    let other = s.ok(&[
        "import",
        "-c",
        "ENV X=1",
        busybox_tar().to_str().unwrap(),
        "other:1",
    ]);
    s.ok(&["tag", "other:1", "other:2"]);
    s.ok(&["rmi", "other:1"]);
    s.ok(&["system", "prune", "-f"]);
    assert_eq!(
        s.ok(&["images", "-q"]).lines().count(),
        2,
        "tagged images must survive prune"
    );
    let out = s.ok(&["system", "prune", "-a", "-f"]);
    assert!(out.contains(other.trim()), "{out}");
    assert_eq!(s.ok(&["images", "-q"]).trim(), "");
    assert_eq!(fs::read_dir(s.root().join("layers")).unwrap().count(), 0);
    assert_eq!(
        s.ok(&["system", "df"]),
        "TYPE            TOTAL   ACTIVE   SIZE   RECLAIMABLE\n\
         Images          0       0        0B     0B (0%)\n\
         Containers      0       0        0B     0B (0%)\n\
         Local Volumes   0       0        0B     0B (0%)\n\
         Build Cache     0       0        0B     0B\n"
    );
    let info = s.ok(&["info"]);
    assert!(
        info.contains("Storage Driver: overlay") && info.contains("Cgroup Version:"),
        "{info}"
    );
    s.assert_check();
}

// ---- concurrency and crashes ----------------------------------------------------------------

#[test]
fn concurrent_imports_and_tags_do_not_corrupt_the_store() {
    let s = Strata::new();
    let tar = busybox_tar().to_str().unwrap().to_string();
    let children: Vec<_> = (0..8)
        .map(|i| {
            s.cmd(&[
                "import",
                "-c",
                &format!("ENV N={i}"),
                &tar,
                &format!("img{i}:latest"),
            ])
            .stdout(Stdio::null())
            .spawn()
            .unwrap()
        })
        .collect();
    for mut c in children {
        assert!(c.wait().unwrap().success());
    }
    assert_eq!(s.ok(&["images", "-q"]).lines().count(), 8);
    // All eight share one layer.
    assert_eq!(fs::read_dir(s.root().join("layers")).unwrap().count(), 1);
    s.assert_check();
}

#[test]
fn load_killed_at_random_moments_leaves_a_checkable_store_and_retry_succeeds() {
    // A larger image so a load takes long enough to be interrupted at many points.
    let src = Strata::new();
    let rootfs = src.path("rootfs");
    fs::create_dir(&rootfs).unwrap();
    sh(&format!(
        "tar -xf {} -C {}",
        busybox_tar().display(),
        rootfs.display()
    ));
    for i in 0..40 {
        sh(&format!(
            "head -c 1000000 /dev/urandom > {}/blob{i}",
            rootfs.display()
        ));
    }
    let big = src.path("big.tar");
    sh(&format!(
        "tar -C {} -cf {} .",
        rootfs.display(),
        big.display()
    ));
    let id = src
        .ok(&["import", big.to_str().unwrap(), "big:1"])
        .trim()
        .to_string();
    let archive = src.path("big-save.tar");
    src.ok(&["save", "-o", archive.to_str().unwrap(), "big:1"]);

    let dst = Strata::new();
    // Time one load to spread the kills over its whole length.
    let t0 = std::time::Instant::now();
    dst.ok(&["load", "-i", archive.to_str().unwrap()]);
    let full = t0.elapsed().as_millis().max(20) as u64;
    dst.ok(&["rmi", "big:1"]);
    dst.ok(&["system", "prune", "-a", "-f"]);

    let mut seed: u64 = 0x9e3779b97f4a7c15;
    for round in 0..24 {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = seed % (full + 5);
        let mut child = dst
            .cmd(&["load", "-i", archive.to_str().unwrap()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        let _ = child.wait();
        let check = dst.run(&["system", "check"]);
        assert!(
            check.status.success(),
            "round {round} (killed after {delay} ms): {}",
            String::from_utf8_lossy(&check.stdout)
        );
        if round % 6 == 5 {
            // Sometimes the next step is a prune rather than a retry.
            dst.ok(&["system", "prune", "-a", "-f"]);
        }
    }
    dst.ok(&["load", "-i", archive.to_str().unwrap()]);
    assert_eq!(dst.ok(&["images", "-q", "--no-trunc"]).trim(), id);
    dst.ok(&["system", "check", "--repair"]);
    dst.assert_check();
    assert_eq!(fs::read_dir(dst.root().join("tmp")).unwrap().count(), 0);
}

#[test]
fn check_detects_a_layer_changed_behind_the_store() {
    let s = Strata::new();
    s.busybox();
    s.assert_check();
    let layer = fs::read_dir(s.root().join("layers"))
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    fs::write(layer.join("diff/etc/passwd"), "tampered\n").unwrap();
    let o = s.run(&["system", "check"]);
    assert!(!o.status.success());
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(out.contains("no longer hashes to its diffID"), "{out}");
}

#[test]
fn import_and_save_keep_device_node_modes() {
    let s = Strata::new();
    let root = s.path("rootfs");
    fs::create_dir_all(root.join("dev")).unwrap();
    // Made with a umask that would take bits away from mknod's mode.
    sh(&format!(
        "cd {r} && mknod dev/null c 1 3 && chmod 666 dev/null && mknod dev/tty0 c 4 0 && chmod 620 dev/tty0 && mkfifo -m 0666 pipe && tar -cf ../rootfs.tar .",
        r = root.display()
    ));
    s.ok(&["import", s.path("rootfs.tar").to_str().unwrap(), "devices"]);
    let modes = |listing: &str| -> Vec<String> {
        let mut v: Vec<String> = listing
            .lines()
            .filter(|l| l.contains("null") || l.contains("tty0") || l.contains("pipe"))
            .map(|l| l.split_whitespace().next().unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    let expected = ["crw--w----", "crw-rw-rw-", "prw-rw-rw-"];
    // In the stored layer...
    let diff = s.first_layer_diff();
    let stored = sh(&format!(
        "cd {} && ls -l dev/null dev/tty0 pipe",
        diff.display()
    ));
    assert_eq!(modes(&stored), expected, "{stored}");
    // ...and in what save writes.
    let saved = s.path("saved.tar");
    s.ok(&["save", "-o", saved.to_str().unwrap(), "devices"]);
    let out = s.path("saved");
    fs::create_dir(&out).unwrap();
    let listing = sh(&format!(
        "tar -xf {} -C {o} && for b in {o}/blobs/sha256/*; do tar -tvf $b 2>/dev/null; done; true",
        saved.display(),
        o = out.display()
    ));
    assert_eq!(modes(&listing), expected, "{listing}");
}

#[test]
fn save_by_id_writes_no_tag_and_rmi_of_a_parents_last_tag_untags_it() {
    let s = Strata::new();
    let id = s.busybox();
    let saved = s.path("by-id.tar");
    s.ok(&["save", "-o", saved.to_str().unwrap(), &id[7..19]]);
    let manifest = sh(&format!("tar -xOf {} manifest.json", saved.display()));
    let m: serde_json::Value = serde_json::from_str(&manifest).unwrap();
    assert_eq!(m[0]["RepoTags"], serde_json::Value::Null, "{manifest}");
    let other = Strata::new();
    other.ok(&["load", "-i", saved.to_str().unwrap()]);
    assert_eq!(
        other.ok(&["images", "--format", "{{.Repository}}:{{.Tag}} {{.ID}}"]),
        format!("<none>:<none> {}\n", &id[7..19])
    );
    // The tag named is the one written.
    s.ok(&["tag", "busybox", "other:1"]);
    let saved = s.path("by-tag.tar");
    s.ok(&["save", "-o", saved.to_str().unwrap(), "other:1"]);
    let manifest = sh(&format!("tar -xOf {} manifest.json", saved.display()));
    assert!(manifest.contains(r#""RepoTags":["other:1"]"#), "{manifest}");
    // A child image: removing the parent's last tag untags it, by ID is refused.
    let ctx = s.path("ctx");
    fs::create_dir_all(&ctx).unwrap();
    fs::write(ctx.join("Dockerfile"), "FROM busybox\nRUN touch /x\n").unwrap();
    s.ok(&["build", "-q", "-t", "child", ctx.to_str().unwrap()]);
    s.ok(&["rmi", "other:1"]);
    assert_eq!(s.ok(&["rmi", "busybox"]), "Untagged: busybox:latest\n");
    assert!(s.ok(&["images", "-a", "-q", "--no-trunc"]).contains(&id));
    let err = s.fails(&["rmi", &id[7..19]]);
    assert!(err.contains("image has dependent child images"), "{err}");
    s.assert_check();
}

/// An image of 16 layers of 150 small files each, saved (made once per test binary):
/// deleting its layers takes long enough for a kill to land in the middle.
fn deep_image_archive() -> &'static std::path::Path {
    static DEEP: std::sync::OnceLock<(Strata, std::path::PathBuf)> = std::sync::OnceLock::new();
    let (_, archive) = DEEP.get_or_init(|| {
        let s = Strata::new();
        s.busybox();
        let ctx = s.path("deep");
        fs::create_dir_all(&ctx).unwrap();
        let mut df = String::from("FROM busybox\n");
        for i in 0..16 {
            df.push_str(&format!(
                "RUN mkdir /l{i} && cd /l{i} && for f in $(seq 1 150); do echo $f > f$f; done\n"
            ));
        }
        fs::write(ctx.join("Dockerfile"), df).unwrap();
        s.ok(&["build", "-q", "-t", "deep", ctx.to_str().unwrap()]);
        let archive = s.path("deep.tar");
        s.ok(&["save", "-o", archive.to_str().unwrap(), "deep"]);
        (s, archive)
    });
    archive
}

#[test]
fn a_killed_prune_never_leaves_a_layer_without_its_parent() {
    let archive = deep_image_archive();
    let s = Strata::new();
    s.ok(&["load", "-i", archive.to_str().unwrap()]);
    s.ok(&["rmi", "deep"]);
    let t0 = std::time::Instant::now();
    s.ok(&["image", "prune", "-a", "-f"]);
    let full = t0.elapsed().as_millis().max(20) as u64;
    let mut seed: u64 = 0x2545f4914f6cdd1d;
    let mut interrupted = 0;
    for round in 0..10 {
        s.ok(&["load", "-i", archive.to_str().unwrap()]);
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let delay = seed % (full + 2);
        let verb: &[&str] = match round % 3 {
            0 => &["rmi", "deep"],
            1 => &["system", "prune", "-a", "-f"],
            _ => &["image", "prune", "-a", "-f"],
        };
        if verb[0] != "rmi" {
            s.ok(&["rmi", "deep"]);
        }
        let mut child = s
            .cmd(verb)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay));
        let _ = child.kill();
        if !child.wait().unwrap().success() {
            interrupted += 1;
        }
        let check = s.run(&["system", "check"]);
        let report = String::from_utf8_lossy(&check.stdout);
        // Children go before their parents: not even an unused layer loses its parent.
        assert!(
            check.status.success() && !report.contains("is missing"),
            "round {round} ({verb:?} killed after {delay} ms): {report}"
        );
        if round % 4 == 3 {
            s.ok(&["system", "check", "--repair"]);
        }
    }
    assert!(interrupted > 0, "no kill landed");
    s.ok(&["system", "prune", "-a", "-f"]);
    s.assert_check();
}

#[test]
fn check_repair_removes_layers_an_older_prune_orphaned() {
    let archive = deep_image_archive();
    let s = Strata::new();
    s.ok(&["load", "-i", archive.to_str().unwrap()]);
    // A lease held meanwhile keeps rmi from collecting the layers at once.
    let mut lease = std::process::Command::new("flock")
        .args(["-o", "-s"])
        .arg(s.root().join("locks/gc.lock"))
        .args(["sleep", "60"])
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(200));
    s.ok(&["rmi", "deep"]);
    let _ = lease.kill();
    let _ = lease.wait();
    // What an older prune killed midway left: a parent gone, its children there.
    let layers = s.root().join("layers");
    let parent = fs::read_dir(&layers)
        .unwrap()
        .map(|e| fs::read_to_string(e.unwrap().path().join("meta.json")).unwrap())
        .filter_map(|m| {
            let v: serde_json::Value = serde_json::from_str(&m).unwrap();
            v["parent"]
                .as_str()
                .map(|p| p.trim_start_matches("sha256:").to_string())
        })
        .next()
        .expect("a layer with a parent");
    fs::rename(layers.join(&parent), s.path("gone")).unwrap();
    let out = s.ok(&["system", "check"]);
    assert!(out.contains(" 0 errors"), "{out}");
    assert!(out.contains("is missing, and no image uses it"), "{out}");
    let out = s.ok(&["system", "check", "--repair"]);
    assert!(out.contains("whose parent was missing"), "{out}");
    let out = s.ok(&["system", "check"]);
    assert!(!out.contains("is missing"), "{out}");
    s.assert_check();
}

#[test]
fn tags_and_removals_racing_a_prune_never_lose_their_files() {
    let s = Strata::new();
    s.busybox();
    let root = s.root();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let pruner = {
        let stop = stop.clone();
        let root = root.clone();
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let o = std::process::Command::new(common::strata_bin())
                    .arg("--root")
                    .arg(&root)
                    .args(["image", "prune", "-f"])
                    .output()
                    .unwrap();
                assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
                n += 1;
            }
            n
        })
    };
    for i in 0..60 {
        let tag = format!("t{i}:latest");
        s.ok(&["tag", "busybox", &tag]);
        s.ok(&["rmi", &tag]);
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(pruner.join().unwrap() > 0);
    s.assert_check();
}

#[test]
fn metadata_is_written_to_a_temp_file_synced_renamed_and_its_directory_synced() {
    let s = Strata::new();
    s.busybox();
    let trace = s.path("trace");
    let st = std::process::Command::new("strace")
        .args([
            "-f",
            "-e",
            "trace=openat,write,fsync,fdatasync,rename,renameat,renameat2",
            "-o",
        ])
        .arg(&trace)
        .arg(common::strata_bin())
        .arg("--root")
        .arg(s.root())
        .args(["tag", "busybox", "other:1"])
        .status()
        .expect("strace is required (apt-get install strace)");
    assert!(st.success());
    let text = fs::read_to_string(&trace).unwrap();
    let root = s.root().display().to_string();
    // The calls on refs.json's way, in order, with their fds.
    let mut steps = Vec::new();
    let mut temp_fd = None;
    let mut dir_fd = None;
    for l in text.lines() {
        // "PID  call(...)": strace pads the pid to five columns.
        let call = l.split_once(' ').map_or(l, |(_, c)| c.trim_start());
        let fd = call.rsplit(" = ").next().unwrap_or("");
        if call.starts_with("openat(") && call.contains(&format!("\"{root}/tmp/w-")) {
            temp_fd = Some(fd.to_string());
            steps.push("open temp");
        } else if call.starts_with("openat(") && call.contains(&format!("\"{root}\", O_RDONLY")) {
            dir_fd = Some(fd.to_string());
            steps.push("open store dir");
        } else if let Some(rest) = call.strip_prefix("fsync(") {
            let fd = rest.split(')').next().unwrap();
            if Some(fd) == temp_fd.as_deref() {
                steps.push("fsync temp");
            } else if Some(fd) == dir_fd.as_deref() {
                steps.push("fsync store dir");
            }
        } else if call.starts_with("write(")
            && temp_fd
                .as_deref()
                .is_some_and(|t| call.starts_with(&format!("write({t},")))
        {
            steps.push("write temp");
        } else if call.starts_with("rename") && call.contains(&format!("\"{root}/refs.json\"")) {
            steps.push("rename onto refs.json");
        } else if call.contains("refs.json") && call.contains("O_WRONLY") {
            steps.push("refs.json written in place");
        }
    }
    steps.dedup();
    assert_eq!(
        steps,
        [
            "open temp",
            "write temp",
            "fsync temp",
            "rename onto refs.json",
            "open store dir",
            "fsync store dir"
        ],
        "{text}"
    );
}
