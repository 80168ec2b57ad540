//! The layer codec end to end: write → extract → write gives the same bytes; hostile archives
//! are refused with an error naming the entry, and nothing outside the target is touched.

use std::fs;
use std::io::Cursor;
use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::Path;

use strata_image::layer::{extract_layer, write_layer_tar, ExtractOptions, TarOptions};

fn write(dir: &Path) -> Vec<u8> {
    write_layer_tar(dir, Vec::new(), &TarOptions::default()).unwrap()
}

fn extract(bytes: &[u8], dir: &Path) -> Result<(), String> {
    extract_layer(Cursor::new(bytes), dir, &ExtractOptions::default())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

fn sample_tree(dir: &Path) {
    fs::create_dir_all(dir.join("etc/sub")).unwrap();
    fs::write(dir.join("etc/hosts"), "127.0.0.1 localhost\n").unwrap();
    fs::write(dir.join("etc/sub/big"), vec![b'x'; 70_000]).unwrap();
    fs::set_permissions(dir.join("etc/sub/big"), fs::Permissions::from_mode(0o4755)).unwrap();
    fs::hard_link(dir.join("etc/hosts"), dir.join("etc/hosts.link")).unwrap();
    symlink("../etc/hosts", dir.join("etc/sub/rel")).unwrap();
    symlink("/nonexistent/abs", dir.join("abs")).unwrap();
    let long = "d".repeat(120);
    fs::create_dir_all(dir.join(&long)).unwrap();
    fs::write(dir.join(&long).join("f".repeat(120)), "long").unwrap();
    xattr::set(dir.join("etc/hosts"), "user.note", b"kept")
        .expect("user xattrs on the test filesystem");
    // overlay form: a whiteout and an opaque directory
    nix::sys::stat::mknod(
        &dir.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    fs::create_dir(dir.join("opaque")).unwrap();
    xattr::set(dir.join("opaque"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(dir.join("opaque/new"), "n").unwrap();
    nix::unistd::mkfifo(
        &dir.join("fifo"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
}

fn names(tar: &[u8]) -> Vec<String> {
    let mut a = tar::Archive::new(Cursor::new(tar));
    a.entries()
        .unwrap()
        .map(|e| String::from_utf8_lossy(&e.unwrap().path_bytes()).into_owned())
        .collect()
}

/// Each entry's name and mtime, in order.
fn names_and_times(tar: &[u8]) -> Vec<(String, u64)> {
    let mut a = tar::Archive::new(Cursor::new(tar));
    a.entries()
        .unwrap()
        .map(|e| {
            let e = e.unwrap();
            (
                String::from_utf8_lossy(&e.path_bytes()).into_owned(),
                e.header().mtime().unwrap(),
            )
        })
        .collect()
}

#[test]
fn write_extract_write_is_byte_identical() {
    let t = tempfile::tempdir().unwrap();
    let (a, b) = (t.path().join("a"), t.path().join("b"));
    fs::create_dir(&a).unwrap();
    fs::create_dir(&b).unwrap();
    sample_tree(&a);
    let first = write(&a);
    extract(&first, &b).unwrap();
    let second = write(&b);
    assert_eq!(first, second);
    assert_eq!(first, write(&a), "writer is not deterministic");
    let n = names(&first);
    assert!(n.contains(&".wh.gone".to_string()), "{n:?}");
    assert!(n.contains(&"opaque/.wh..wh..opq".to_string()), "{n:?}");
    // parents come before children, names sorted
    let pos = |s: &str| n.iter().position(|x| x == s).unwrap();
    assert!(pos("etc/") < pos("etc/hosts"));
    assert!(pos("etc/hosts") < pos("etc/hosts.link"));
    // extended attributes kept
    assert_eq!(
        xattr::get(b.join("etc/hosts"), "user.note")
            .unwrap()
            .as_deref(),
        Some(&b"kept"[..])
    );
    // overlay form restored
    let st = nix::sys::stat::lstat(&b.join("gone")).unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(
        xattr::get(b.join("opaque"), "trusted.overlay.opaque")
            .unwrap()
            .as_deref(),
        Some(&b"y"[..])
    );
    let hosts = nix::sys::stat::stat(&b.join("etc/hosts")).unwrap();
    assert_eq!(hosts.st_nlink, 2);
    assert_eq!(
        fs::metadata(b.join("etc/sub/big"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o4755
    );
}

#[test]
fn clamp_mtime_rewrites_only_newer_times() {
    let t = tempfile::tempdir().unwrap();
    fs::write(t.path().join("new"), "x").unwrap();
    fs::write(t.path().join("old"), "y").unwrap();
    let at = |secs| nix::sys::time::TimeSpec::new(secs, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &t.path().join("old"),
        &at(500),
        &at(500),
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let opts = TarOptions {
        clamp_mtime: Some(1000),
    };
    let tar = write_layer_tar(t.path(), Vec::new(), &opts).unwrap();
    let times = names_and_times(&tar);
    // A newer time is clamped to the epoch, an older one is kept.
    assert_eq!(times, [("new".to_string(), 1000), ("old".to_string(), 500)]);
}

// ---- hostile archives -------------------------------------------------------------------

/// A raw ustar header, built by hand so names the tar crate would refuse can be written.
fn header(name: &[u8], kind: u8, size: u64, link: &[u8]) -> [u8; 512] {
    let mut h = [0u8; 512];
    h[..name.len()].copy_from_slice(name);
    h[100..107].copy_from_slice(b"0000644");
    h[108..115].copy_from_slice(b"0000000");
    h[116..123].copy_from_slice(b"0000000");
    h[124..135].copy_from_slice(format!("{size:011o}").as_bytes());
    h[136..147].copy_from_slice(b"00000000000");
    h[156] = kind;
    h[157..157 + link.len()].copy_from_slice(link);
    h[257..263].copy_from_slice(b"ustar\0");
    h[263..265].copy_from_slice(b"00");
    h[148..156].copy_from_slice(b"        ");
    let sum: u32 = h.iter().map(|&b| u32::from(b)).sum();
    h[148..155].copy_from_slice(format!("{sum:06o}\0").as_bytes());
    h
}

/// (name, type flag, data, link target)
type RawEntry<'a> = (&'a [u8], u8, &'a [u8], &'a [u8]);

fn archive(entries: &[RawEntry<'_>]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, kind, data, link) in entries {
        out.extend_from_slice(&header(name, *kind, data.len() as u64, link));
        out.extend_from_slice(data);
        out.resize(out.len().div_ceil(512) * 512, 0);
    }
    out.extend_from_slice(&[0u8; 1024]);
    out
}

/// An empty layer directory and an empty directory beside it that must stay empty.
fn layer_next_to_outside() -> (tempfile::TempDir, std::path::PathBuf, std::path::PathBuf) {
    let t = tempfile::tempdir().unwrap();
    let target = t.path().join("layer");
    fs::create_dir(&target).unwrap();
    let outside = t.path().join("outside");
    fs::create_dir(&outside).unwrap();
    (t, target, outside)
}

fn assert_nothing_outside(outside: &std::path::Path) {
    assert_eq!(
        fs::read_dir(outside).unwrap().count(),
        0,
        "wrote outside the target"
    );
}

fn assert_refused(tar: &[u8], expect: &str) {
    let (_t, target, outside) = layer_next_to_outside();
    let err = extract(tar, &target).expect_err("hostile archive accepted");
    assert!(
        err.contains(expect),
        "error {err:?} does not mention {expect:?}"
    );
    assert!(!err.contains('\n'), "error is not one line: {err:?}");
    assert_nothing_outside(&outside);
}

#[test]
fn path_traversal_is_refused() {
    assert_refused(&archive(&[(b"../outside/x", b'0', b"evil", b"")]), "'..'");
    assert_refused(
        &archive(&[(b"a/../../outside/x", b'0', b"evil", b"")]),
        "'..'",
    );
    assert_refused(&archive(&[(b"/etc/evil", b'0', b"evil", b"")]), "absolute");
}

#[test]
fn symlink_then_write_through_is_refused() {
    let t = tempfile::tempdir().unwrap();
    let host = t.path().join("hostdir");
    fs::create_dir(&host).unwrap();
    let link = host.to_str().unwrap().as_bytes().to_vec();
    let tar = archive(&[(b"s", b'2', b"", &link), (b"s/file", b'0', b"evil", b"")]);
    assert_refused(&tar, "symlink");
    assert_eq!(fs::read_dir(&host).unwrap().count(), 0);
    let tar = archive(&[(b"s", b'2', b"", b".."), (b"s/x/y", b'0', b"evil", b"")]);
    assert_refused(&tar, "symlink");
}

#[test]
fn hardlink_escape_is_refused() {
    assert_refused(&archive(&[(b"h", b'1', b"", b"../../etc/passwd")]), "'..'");
    assert_refused(
        &archive(&[(b"h", b'1', b"", b"etc/passwd")]),
        "not in the layer",
    );
}

#[test]
fn whiteout_aimed_at_parent_is_refused() {
    assert_refused(&archive(&[(b"a/.wh...", b'0', b"", b"")]), "whiteout");
}

#[test]
fn huge_pax_header_is_refused() {
    let mut tar = header(b"PaxHeaders/x", b'x', 1 << 30, b"").to_vec();
    tar.extend_from_slice(&[b'9'; 4096]);
    assert_refused(&tar, "extension header");
}

#[test]
fn truncated_archive_is_refused() {
    let full = archive(&[(b"f", b'0', &[b'z'; 5000], b"")]);
    let t = tempfile::tempdir().unwrap();
    let err = extract(&full[..2048], t.path()).expect_err("truncated archive accepted");
    assert_eq!(err, "tar stream: unexpected EOF during skip");
}

#[test]
fn link_then_regular_file_replaces_the_link_without_following_it() {
    let t = tempfile::tempdir().unwrap();
    let victim = t.path().join("victim");
    fs::write(&victim, "host data").unwrap();
    let target = t.path().join("layer");
    fs::create_dir(&target).unwrap();
    let link = victim.to_str().unwrap().as_bytes().to_vec();
    let tar = archive(&[(b"l", b'2', b"", &link), (b"l", b'0', b"new", b"")]);
    extract(&tar, &target).unwrap();
    assert_eq!(fs::read_to_string(&victim).unwrap(), "host data");
    assert_eq!(fs::read_to_string(target.join("l")).unwrap(), "new");
}

#[test]
fn whiteout_times_survive_a_round_trip_at_any_clock() {
    // A whiteout made long ago: writing back the extracted layer must give the same tar (and
    // diffID) even though the extraction happens at another second.
    let t = tempfile::tempdir().unwrap();
    let src = t.path().join("src");
    fs::create_dir(&src).unwrap();
    nix::sys::stat::mknod(
        &src.join("gone"),
        nix::sys::stat::SFlag::S_IFCHR,
        nix::sys::stat::Mode::empty(),
        0,
    )
    .unwrap();
    let old = nix::sys::time::TimeSpec::new(1_000_000, 0);
    nix::sys::stat::utimensat(
        nix::fcntl::AT_FDCWD,
        &src.join("gone"),
        &old,
        &old,
        nix::sys::stat::UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
    let first = write(&src);
    // The tar holds the whiteout, as an OCI whiteout with its time (not dropped).
    let entries = names_and_times(&first);
    assert_eq!(entries, [(".wh.gone".to_string(), 1_000_000)]);
    let dst = t.path().join("dst");
    fs::create_dir(&dst).unwrap();
    extract(&first, &dst).unwrap();
    // Extracted back into overlay form: a 0/0 character device with that time.
    let st = nix::sys::stat::lstat(&dst.join("gone")).unwrap();
    assert_eq!(st.st_mode & libc::S_IFMT, libc::S_IFCHR);
    assert_eq!(st.st_rdev, 0);
    assert_eq!(st.st_mtime, 1_000_000);
    assert_eq!(write(&dst), first);
}

/// Every entry below the layer as "path type [content|target]", sorted.
fn listing(root: &Path) -> Vec<String> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for e in fs::read_dir(&dir).unwrap() {
            let p = e.unwrap().path();
            let rel = p.strip_prefix(root).unwrap().display().to_string();
            let md = fs::symlink_metadata(&p).unwrap();
            if md.is_dir() {
                out.push(format!("{rel} dir"));
                stack.push(p);
            } else if md.file_type().is_symlink() {
                out.push(format!(
                    "{rel} link {}",
                    fs::read_link(&p).unwrap().display()
                ));
            } else if md.is_file() {
                out.push(format!("{rel} file {}", fs::read_to_string(&p).unwrap()));
            } else {
                out.push(format!("{rel} other"));
            }
        }
    }
    out.sort();
    out
}

#[test]
fn entries_named_twice_replace_what_was_there() {
    // Entries are created first and cleared only when the name is taken: each kind of entry
    // over each kind of existing one, and a directory's children after it was replaced.
    let (_t, target, outside) = layer_next_to_outside();
    let out = outside.to_str().unwrap().as_bytes().to_vec();
    let tar = archive(&[
        (b"keep/", b'5', b"", b""),
        (b"keep/child", b'0', b"c", b""),
        (b"keep/", b'5', b"", b""),
        (b"d2f/", b'5', b"", b""),
        (b"d2f/lost", b'0', b"x", b""),
        (b"d2f", b'0', b"now a file", b""),
        (b"f2d", b'0', b"was a file", b""),
        (b"f2d/", b'5', b"", b""),
        (b"f2d/in", b'0', b"inside", b""),
        (b"f2l", b'0', b"was a file", b""),
        (b"f2l", b'2', b"", b"somewhere"),
        (b"f2h", b'0', b"old", b""),
        (b"f2h", b'1', b"", b"keep/child"),
        (b"l2d", b'2', b"", &out),
        (b"l2d/", b'5', b"", b""),
        (b"l2d/x", b'0', b"stays in the layer", b""),
        (b"f2f", b'0', b"one", b""),
        (b"f2f", b'0', b"two", b""),
        (b"d/", b'5', b"", b""),
        (b"d/gone", b'0', b"g", b""),
        (b"d/.wh.gone", b'0', b"", b""),
    ]);
    extract(&tar, &target).unwrap();
    assert_eq!(
        listing(&target),
        [
            "d dir",
            "d/gone other",
            "d2f file now a file",
            "f2d dir",
            "f2d/in file inside",
            "f2f file two",
            "f2h file c",
            "f2l link somewhere",
            "keep dir",
            "keep/child file c",
            "l2d dir",
            "l2d/x file stays in the layer",
        ]
    );
    assert_nothing_outside(&outside);
}

#[test]
fn a_replaced_directory_is_not_reached_through_its_old_handle() {
    // "d" is created (and its handle kept for its children), then replaced by a symlink out
    // of the layer: a later "d/x" must not land outside through either.
    let (_t, target, outside) = layer_next_to_outside();
    let out = outside.to_str().unwrap().as_bytes().to_vec();
    let tar = archive(&[
        (b"d/", b'5', b"", b""),
        (b"d/a", b'0', b"a", b""),
        (b"d", b'2', b"", &out),
        (b"d/x", b'0', b"x", b""),
    ]);
    let err = extract(&tar, &target).expect_err("write through a replaced directory accepted");
    assert!(err.contains("d/x"), "{err}");
    assert_nothing_outside(&outside);
}
