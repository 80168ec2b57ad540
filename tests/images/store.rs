//! Filters, prune, and the store under concurrency and kills.

use super::*;

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
