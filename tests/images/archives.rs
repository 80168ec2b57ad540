//! Import, save and load, with skopeo and umoci as oracles, and hostile archives.

use super::*;

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
            let hex = sha256_hex(&bytes);
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

/// An archive whose `index.json` nests an index (a multi-platform image): the platforms whose
/// blobs are all in the archive load, the others (a `save --platform` archive lists them too)
/// are skipped, and an index with none of them is one line.
#[test]
fn load_of_a_nested_index_keeps_the_platforms_the_archive_holds() {
    let s = Strata::new();
    s.busybox();
    let good = s.path("good.tar");
    s.ok(&["save", "-o", good.to_str().unwrap(), "busybox"]);
    // An index of busybox's manifest (linux/amd64) and of one the archive lacks (arm64).
    let nested = |name: &str, with_amd64: bool| -> std::path::PathBuf {
        let dir = s.path(name);
        fs::create_dir(&dir).unwrap();
        sh(&format!("tar -xf {} -C {}", good.display(), dir.display()));
        let top: serde_json::Value =
            serde_json::from_slice(&fs::read(dir.join("index.json")).unwrap()).unwrap();
        let mut amd64 = top["manifests"][0].clone();
        amd64.as_object_mut().unwrap().remove("annotations");
        amd64["platform"] = serde_json::json!({"architecture": "amd64", "os": "linux"});
        let absent = serde_json::json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": format!("sha256:{}", "ab".repeat(32)),
            "size": 400,
            "platform": {"architecture": "arm64", "os": "linux"},
        });
        let members = if with_amd64 {
            vec![amd64, absent]
        } else {
            vec![absent]
        };
        let index = serde_json::to_vec(&serde_json::json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": members,
        }))
        .unwrap();
        let hex = sha256_hex(&index);
        fs::write(dir.join("blobs/sha256").join(&hex), &index).unwrap();
        let mut top = top.clone();
        top["manifests"][0]["mediaType"] =
            serde_json::json!("application/vnd.oci.image.index.v1+json");
        top["manifests"][0]["digest"] = serde_json::json!(format!("sha256:{hex}"));
        top["manifests"][0]["size"] = serde_json::json!(index.len());
        fs::write(dir.join("index.json"), serde_json::to_vec(&top).unwrap()).unwrap();
        let tar = s.path(&format!("{name}.tar"));
        sh(&format!("tar -C {} -cf {} .", dir.display(), tar.display()));
        tar
    };
    let t = Strata::new();
    let partial = nested("partial", true);
    assert_eq!(
        t.ok(&["load", "-i", partial.to_str().unwrap()]),
        "Loaded image: busybox:latest\n"
    );
    assert_eq!(
        t.ok(&["images", "-q", "--no-trunc", "busybox"]),
        s.ok(&["images", "-q", "--no-trunc", "busybox"])
    );
    t.assert_check();
    let empty = nested("empty", false);
    let u = Strata::new();
    let err = u.fails(&["load", "-i", empty.to_str().unwrap()]);
    assert!(
        err.ends_with("has no platform whose blobs are in the archive\n"),
        "{err}"
    );
    assert_eq!(u.ok(&["images", "-a", "-q"]), "");
}

/// The hex SHA-256 of `bytes` (JSON without single quotes), by sha256sum.
fn sha256_hex(bytes: &[u8]) -> String {
    let out = sh(&format!(
        "printf '%s' '{}' | sha256sum",
        String::from_utf8_lossy(bytes)
    ));
    out.split_whitespace().next().unwrap().to_string()
}
