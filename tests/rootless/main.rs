//! End to end as an ordinary user: a user made for the test (`useradd`, its own subordinate
//! ranges or none) runs the strata binary without root.

#[path = "../common/mod.rs"]
mod common;

use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

use common::{busybox_tar, strata_bin, Strata};

/// useradd and userdel lock the system's account files: one at a time in this binary.
static ACCOUNTS: Mutex<()> = Mutex::new(());

/// The subordinate ranges test users get (any free range works: newuidmap only checks that
/// the user owns it).
const SUB_START: u32 = 600000;
const SUB_COUNT: u32 = 65536;

/// A user of the test's own, with a home in a temp dir holding a copy of the binary (the
/// build tree need not be readable by others); deleted, with its processes, at the end.
struct TestUser {
    name: String,
    uid: u32,
    gid: u32,
    home: PathBuf,
    exe: PathBuf,
    _dir: tempfile::TempDir,
}

impl TestUser {
    fn new(tag: &str, subordinate: bool) -> TestUser {
        let dir = tempfile::Builder::new()
            .prefix("strata-rootless-")
            .tempdir()
            .unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let name = format!("strl{}{tag}", std::process::id());
        let home = dir.path().join("home");
        {
            let _held = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
            let _ = Command::new("userdel").arg(&name).output();
            run_ok(Command::new("useradd").args([
                "-M",
                "-d",
                home.to_str().unwrap(),
                "-s",
                "/bin/sh",
                "-K",
                "SUB_UID_COUNT=0",
                "-K",
                "SUB_GID_COUNT=0",
                &name,
            ]));
            if subordinate {
                let range = format!("{SUB_START}-{}", SUB_START + SUB_COUNT - 1);
                run_ok(Command::new("usermod").args([
                    "--add-subuids",
                    &range,
                    "--add-subgids",
                    &range,
                    &name,
                ]));
            }
        }
        let id = |flag: &str| -> u32 {
            let o = run_ok(Command::new("id").args([flag, &name]));
            String::from_utf8_lossy(&o.stdout).trim().parse().unwrap()
        };
        let (uid, gid) = (id("-u"), id("-g"));
        std::fs::create_dir(&home).unwrap();
        std::os::unix::fs::chown(&home, Some(uid), Some(gid)).unwrap();
        let exe = dir.path().join("strata");
        std::fs::copy(strata_bin(), &exe).unwrap();
        TestUser {
            name,
            uid,
            gid,
            home,
            exe,
            _dir: dir,
        }
    }

    /// `program args` as this user, in its home, with a clean environment.
    fn command(&self, program: &Path, args: &[&str]) -> Command {
        let mut c = Command::new(program);
        c.args(args)
            .env_clear()
            .env("HOME", &self.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .current_dir(&self.home)
            .uid(self.uid)
            .gid(self.gid)
            .stdin(Stdio::null());
        c
    }

    fn strata(&self, args: &[&str]) -> Output {
        self.command(&self.exe, args).output().unwrap()
    }

    fn ok(&self, args: &[&str]) -> String {
        let o = self.strata(args);
        assert!(
            o.status.success(),
            "strata {args:?} as {}: {o:?}",
            self.name
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn fails(&self, args: &[&str]) -> String {
        let o = self.strata(args);
        assert!(
            !o.status.success(),
            "strata {args:?} succeeded as {}",
            self.name
        );
        String::from_utf8_lossy(&o.stderr).into_owned()
    }

    fn store(&self) -> PathBuf {
        self.home.join(".local/share/strata")
    }

    /// A file the user can read (a copy in its home).
    /// Imports the busybox fixture as `busybox:latest`, as the README's main job does.
    fn import_busybox(&self) {
        let busybox = self.give(busybox_tar());
        self.ok(&[
            "import",
            "-c",
            r#"CMD ["sh"]"#,
            busybox.to_str().unwrap(),
            "busybox:latest",
        ]);
    }

    fn give(&self, file: &Path) -> PathBuf {
        let to = self.home.join(file.file_name().unwrap());
        std::fs::copy(file, &to).unwrap();
        std::os::unix::fs::chown(&to, Some(self.uid), Some(self.gid)).unwrap();
        to
    }
}

impl Drop for TestUser {
    fn drop(&mut self) {
        // The pause process holding the user's namespace, and anything else of the user's.
        let _ = Command::new("pkill")
            .args(["-KILL", "-u", &self.uid.to_string()])
            .status();
        let _held = ACCOUNTS.lock().unwrap_or_else(|e| e.into_inner());
        let _ = Command::new("userdel").arg(&self.name).output();
        // The runtime directory strata made without $XDG_RUNTIME_DIR.
        let _ = std::fs::remove_dir_all(format!("/tmp/strata-{}", self.uid));
        // What the subordinate ids own in the home cannot stop the temp dir going: root here.
    }
}

fn run_ok(c: &mut Command) -> Output {
    let o = c.output().unwrap();
    assert!(o.status.success(), "{c:?}: {o:?}");
    o
}

/// A root filesystem archive whose files belong to uid/gid 0, 42 and 1000 (a setuid file and
/// a non-empty directory among them), made by root here.
fn owned_tar(dir: &Path) -> PathBuf {
    let tree = dir.join("owned-tree");
    let files = [
        ("etc/zero", 0u32),
        ("srv/data/fortytwo", 42),
        ("home/user/thousand", 1000),
    ];
    for (path, owner) in files {
        let p = tree.join(path);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(&p, format!("{owner}\n")).unwrap();
        std::os::unix::fs::chown(&p, Some(owner), Some(owner)).unwrap();
    }
    std::os::unix::fs::chown(tree.join("srv/data"), Some(42), Some(42)).unwrap();
    std::os::unix::fs::chown(tree.join("home/user"), Some(1000), Some(1000)).unwrap();
    let setuid = tree.join("home/user/thousand");
    std::fs::set_permissions(&setuid, std::fs::Permissions::from_mode(0o4755)).unwrap();
    let tar = dir.join("owned.tar");
    tar_of(&tree, &tar, &["etc", "srv", "home"]);
    tar
}

/// `tar` made of `entries` of `tree`, with numeric owners, names sorted, times 0.
fn tar_of(tree: &Path, tar: &Path, entries: &[&str]) {
    run_ok(
        Command::new("tar")
            .args(["--numeric-owner", "--sort=name", "--mtime=@0", "-C"])
            .arg(tree)
            .arg("-cf")
            .arg(tar)
            .args(entries),
    );
}

/// An xattr of `path`, read on the host (python3's `os.getxattr`).
fn xattr_of(path: &Path, name: &str) -> Option<String> {
    let o = Command::new("python3")
        .args([
            "-c",
            "import os,sys;print(os.getxattr(sys.argv[1],sys.argv[2]).decode())",
        ])
        .arg(path)
        .arg(name)
        .output()
        .unwrap();
    o.status
        .success()
        .then(|| String::from_utf8_lossy(&o.stdout).trim().to_string())
}

/// `tar -tv` of the single layer of image archive `saved` (a `save` output).
fn layer_listing(saved: &Path, scratch: &Path) -> String {
    layer_listing_at(saved, scratch, 0)
}

/// `tar -tv` of layer `index` of image archive `saved`.
fn layer_listing_at(saved: &Path, scratch: &Path, index: usize) -> String {
    let out = scratch.join("saved");
    std::fs::create_dir_all(&out).unwrap();
    run_ok(Command::new("tar").args(["-xf", saved.to_str().unwrap(), "-C", out.to_str().unwrap()]));
    let manifest = std::fs::read_to_string(out.join("manifest.json")).unwrap();
    let layers = manifest.split("\"Layers\":[").nth(1).unwrap();
    let layers = layers.split(']').next().unwrap();
    let layer = layers.split(',').nth(index).unwrap().trim_matches('"');
    let o = run_ok(Command::new("tar").args([
        "--numeric-owner",
        "-tvf",
        out.join(layer).to_str().unwrap(),
    ]));
    // Owner, mode and name of each entry (sizes and times are not the question).
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            format!("{} {} {}", f[0], f[1], f[5])
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn a_user_with_subordinate_ids_keeps_every_owner_without_root() {
    let user = TestUser::new("a", true);
    let info = user.ok(&["info"]);
    let store = user.store();
    for line in [
        format!("Store: {}", store.display()),
        "Rootless: true".into(),
        format!("UID Mappings: 0:{}:1,1:{SUB_START}:{SUB_COUNT}", user.uid),
        format!("GID Mappings: 0:{}:1,1:{SUB_START}:{SUB_COUNT}", user.gid),
    ] {
        assert!(info.lines().any(|l| l == line), "{line:?} in {info}");
    }
    let root = Strata::new();
    let tar = owned_tar(root.dir.path());
    let user_tar = user.give(&tar);
    user.ok(&["import", user_tar.to_str().unwrap(), "owned:1"]);
    // The same layer as root's import of the same archive.
    root.ok(&["import", tar.to_str().unwrap(), "owned:1"]);
    let layers = "{{json .RootFS.Layers}}";
    assert_eq!(
        user.ok(&["inspect", "-f", layers, "owned:1"]),
        root.ok(&["inspect", "-f", layers, "owned:1"])
    );
    // On the host the owners are the subordinate ids: 42 is the range's 42nd.
    let diff_owner = |rel: &str| {
        let layer_dirs = std::fs::read_dir(store.join("layers")).unwrap();
        let layer = layer_dirs.map(|e| e.unwrap().path()).next().unwrap();
        std::os::unix::fs::MetadataExt::uid(
            &std::fs::metadata(layer.join("diff").join(rel)).unwrap(),
        )
    };
    assert_eq!(diff_owner("etc/zero"), user.uid);
    assert_eq!(diff_owner("srv/data/fortytwo"), SUB_START + 41);
    assert_eq!(diff_owner("home/user/thousand"), SUB_START + 999);
    // And `save` writes them back as they were.
    user.ok(&["save", "-o", "saved.tar", "owned:1"]);
    assert_eq!(
        layer_listing(&user.home.join("saved.tar"), root.dir.path()),
        "drwxr-xr-x 0/0 etc/\n\
         -rw-r--r-- 0/0 etc/zero\n\
         drwxr-xr-x 0/0 home/\n\
         drwxr-xr-x 1000/1000 home/user/\n\
         -rwsr-xr-x 1000/1000 home/user/thousand\n\
         drwxr-xr-x 0/0 srv/\n\
         drwxr-xr-x 42/42 srv/data/\n\
         -rw-r--r-- 42/42 srv/data/fortytwo"
    );
    // A device node cannot be made in a user namespace: an empty file records it, and the
    // layer is the same (its diff ID is root's, which made the node).
    let tree = root.path("dev-tree");
    std::fs::create_dir_all(tree.join("dev")).unwrap();
    run_ok(Command::new("mknod").args([tree.join("dev/null").to_str().unwrap(), "c", "1", "3"]));
    let dev_tar = root.path("dev.tar");
    tar_of(&tree, &dev_tar, &["dev"]);
    user.ok(&["import", user.give(&dev_tar).to_str().unwrap(), "dev:1"]);
    root.ok(&["import", dev_tar.to_str().unwrap(), "dev:1"]);
    assert_eq!(
        user.ok(&["inspect", "-f", layers, "dev:1"]),
        root.ok(&["inspect", "-f", layers, "dev:1"])
    );
    let layer_dirs = std::fs::read_dir(store.join("layers")).unwrap();
    let stand_in = layer_dirs
        .map(|e| e.unwrap().path().join("diff/dev/null"))
        .find(|p| p.exists())
        .unwrap();
    assert!(std::fs::metadata(&stand_in).unwrap().is_file());
    assert_eq!(
        xattr_of(&stand_in, "user.strata.device").as_deref(),
        Some("c 1 3")
    );
    // What the subordinate ids own goes with `system reset`, and the user can delete the rest.
    user.ok(&["system", "reset", "--force"]);
    let rm = user
        .command(Path::new("/bin/rm"), &["-rf", store.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(rm.status.success(), "{rm:?}");
    assert!(!store.exists());
}

#[test]
fn a_user_without_subordinate_ids_imports_images_owned_by_root_only() {
    let user = TestUser::new("b", false);
    let info = user.ok(&["info"]);
    assert!(
        info.contains(&format!("UID Mappings: 0:{}:1\n", user.uid)),
        "{info}"
    );
    let busybox = user.give(busybox_tar());
    user.ok(&["import", busybox.to_str().unwrap(), "busybox:latest"]);
    assert!(user.ok(&["images"]).contains("busybox "));
    let scratch = tempfile::tempdir().unwrap();
    let owned = user.give(&owned_tar(scratch.path()));
    let err = user.fails(&["import", owned.to_str().unwrap(), "owned:1"]);
    assert_eq!(
        err,
        format!(
            "Error: {}: tar entry \"srv/data\": owned by uid 42 gid 42, which this user \
             namespace does not map (add a range for the user to /etc/subuid and /etc/subgid)\n",
            owned.display()
        )
    );
    // The failed import left nothing behind.
    assert_eq!(user.ok(&["images", "-q"]).lines().count(), 1);
    user.ok(&["system", "reset", "--force"]);
}

#[test]
fn a_user_runs_execs_commits_and_removes_containers_without_root() {
    let user = TestUser::new("c", true);
    user.import_busybox();
    let none = ["--network", "none"];
    let run = |args: &[&str]| {
        let mut all = vec!["run", "--rm", "--network", "none", "busybox"];
        all.extend_from_slice(args);
        user.ok(&all)
    };
    // Root in the container is the user; the devices are the host's, bound.
    assert_eq!(
        run(&[
            "sh",
            "-c",
            "id -u; tr -s ' ' < /proc/self/uid_map; echo x > /dev/null && ls /dev/null"
        ]),
        format!(
            "0\n 0 {} 1\n 1 {SUB_START} {SUB_COUNT}\n/dev/null\n",
            user.uid
        )
    );
    user.ok(&[
        &["run", "-d", "--name", "bg"][..],
        &none,
        &["busybox", "sleep", "100"],
    ]
    .concat());
    // Files the container gives other owners, a whiteout and an opaque directory: the
    // committed layer has them as a root build's would.
    let script = "touch /made && chown 42:42 /made && rm /etc/group && rm -rf /usr && mkdir /usr \
                  && touch /usr/new && stat -c %u /made";
    assert_eq!(user.ok(&["exec", "bg", "sh", "-c", script]), "42\n");
    assert_eq!(
        user.ok(&["diff", "bg"]),
        "C /etc\nD /etc/group\nA /made\nC /usr\nA /usr/new\n"
    );
    user.ok(&["commit", "bg", "made:1"]);
    user.ok(&["save", "-o", "made.tar", "made:1"]);
    let scratch = tempfile::tempdir().unwrap();
    let listing = layer_listing_at(&user.home.join("made.tar"), scratch.path(), 1);
    assert_eq!(
        listing,
        "drwxr-xr-x 0/0 etc/\n\
         -rw-r--r-- 0/0 etc/.wh.group\n\
         -rw-r--r-- 42/42 made\n\
         drwxr-xr-x 0/0 usr/\n\
         -rw-r--r-- 0/0 usr/.wh..wh..opq\n\
         -rw-r--r-- 0/0 usr/new"
    );
    assert_eq!(
        user.ok(&[
            &["run", "--rm"][..],
            &none,
            &["made:1", "sh", "-c", "ls /usr; ls /etc/group || true"]
        ]
        .concat()),
        "new\n"
    );
    // Without a cgroup: `top` lists the container's pid namespace; what needs one is refused.
    let top = user.ok(&["top", "bg"]);
    assert!(
        top.lines().skip(1).any(|l| l.ends_with(" sleep 100")),
        "{top}"
    );
    let no_cgroup = |what: &str| {
        format!("Error: rootless: {what} a cgroup tree delegated to the user, which this host does not give\n")
    };
    assert_eq!(user.fails(&["pause", "bg"]), no_cgroup("pause needs"));
    assert_eq!(
        user.fails(&["stats", "--no-stream", "bg"]),
        no_cgroup("stats needs")
    );
    let update = user.fails(&["update", "--memory", "16m", "bg"]);
    let why = no_cgroup("update needs");
    assert!(
        update.starts_with("Error: cannot update container ")
            && update.ends_with(why.trim_start_matches("Error: ")),
        "{update}"
    );
    user.ok(&["stop", "-t", "1", "bg"]);
    user.ok(&["rm", "bg"]);
    // What cannot be had without root is refused in one line.
    assert_eq!(
        user.fails(&[&["run"][..], &none, &["-m", "16m", "busybox", "true"]].concat()),
        "Error: rootless: --memory needs a cgroup tree delegated to the user, which this host \
         does not give\n"
    );
    let check = user.ok(&["system", "check"]);
    assert!(check.contains(" 0 errors, 0 garbage"), "{check}");
    user.ok(&["system", "reset", "--force"]);
}

/// Waits until a process of `uid` runs whose command line is `cmdline` (its words).
fn wait_for_process(uid: u32, cmdline: &str) {
    let t = std::time::Instant::now();
    while !Command::new("pgrep")
        .args(["-u", &uid.to_string(), "-fx", cmdline])
        .stdout(Stdio::null())
        .status()
        .unwrap()
        .success()
    {
        assert!(t.elapsed().as_secs() < 20, "no {cmdline:?} of uid {uid}");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// SIGKILLs the processes of `uid` whose command lines match `pattern` (pkill's -f), all at once.
fn kill_processes(uid: u32, pattern: &str) {
    let _ = Command::new("pkill")
        .args(["-KILL", "-u", &uid.to_string(), "-f", pattern])
        .status();
}

/// Copies `examples/NAME` into the user's home (the source tree need not be readable by it).
fn give_example(user: &TestUser, name: &str) -> PathBuf {
    let to = user.home.join(name);
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name);
    run_ok(Command::new("cp").args(["-r", from.to_str().unwrap(), to.to_str().unwrap()]));
    run_ok(Command::new("chown").args([
        "-R",
        &format!("{}:{}", user.uid, user.gid),
        to.to_str().unwrap(),
    ]));
    to
}

/// `scripts/demo.sh`'s strata commands (the README's main job), as the user.
#[test]
fn the_readme_main_job_runs_as_a_user() {
    let user = TestUser::new("f", true);
    user.import_busybox();
    let hello = give_example(&user, "hello");
    user.ok(&["build", "-q", "-t", "hello", hello.to_str().unwrap()]);
    assert_eq!(
        user.ok(&["run", "--rm", "hello", "strata"]),
        "Hello, strata! (uid 65534 in /app)\n"
    );
    let site = give_example(&user, "static-site");
    user.ok(&["build", "-q", "-t", "static-site", site.to_str().unwrap()]);
    let port = "18417";
    let id = user.ok(&[
        "run",
        "-d",
        "--rm",
        "--network",
        "host",
        "static-site",
        "httpd",
        "-f",
        "-p",
        port,
        "-h",
        "/www",
    ]);
    let id = id.trim();
    let url = format!("http://127.0.0.1:{port}/");
    let mut page = String::new();
    for _ in 0..100 {
        let o = user.strata(&["exec", id, "wget", "-q", "-O", "-", &url]);
        page = format!("{o:?}"); // what the last try said, if none succeeds
        if o.status.success() {
            page = String::from_utf8_lossy(&o.stdout).into_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        page.contains("<h1>Hello from a strata-built image</h1>"),
        "{page}"
    );
    // Out of a running container with cp.
    user.ok(&["cp", &format!("{id}:/www/index.html"), "page.html"]);
    assert_eq!(
        std::fs::read_to_string(user.home.join("page.html")).unwrap(),
        page
    );
    user.ok(&["stop", "-t", "1", id]);
    // A named volume outlives its containers; create + start -a.
    user.ok(&["volume", "create", "data"]);
    let write = [
        "run",
        "--rm",
        "--network",
        "none",
        "-v",
        "data:/d",
        "busybox",
    ];
    user.ok(&[&write[..], &["sh", "-c", "echo kept > /d/f"]].concat());
    user.ok(&[
        "create",
        "--name",
        "reader",
        "--network",
        "none",
        "-v",
        "data:/d",
        "busybox",
        "cat",
        "/d/f",
    ]);
    assert_eq!(user.ok(&["start", "-a", "reader"]), "kept\n");
    user.ok(&["rm", "reader"]);
    assert_eq!(user.ok(&["volume", "ls", "-q"]), "data\n");
    user.ok(&["volume", "rm", "data"]);
    let images = user.ok(&["images", "--format", "{{.Repository}}:{{.Tag}}"]);
    assert_eq!(images, "static-site:latest\nhello:latest\nbusybox:latest\n");
    // `--rm` removed it once stopped.
    assert_eq!(user.ok(&["ps", "-aq"]), "");
    assert!(user
        .ok(&["info"])
        .contains("\nBuild Isolation: oci (this process may mount)\n"));
    user.ok(&["system", "reset", "--force"]);
}

#[test]
fn rootless_builds_give_the_image_ids_of_root_builds() {
    let user = TestUser::new("d", true);
    let root = Strata::new();
    root.busybox();
    // One base for both: `import` stamps its own time into the image.
    let base = root.path("base.tar");
    root.ok(&["save", "-o", base.to_str().unwrap(), "busybox"]);
    let base = user.give(&base);
    user.ok(&["load", "-i", base.to_str().unwrap()]);
    for (example, tag) in [("hello", "hello"), ("static-site", "site")] {
        let dir = give_example(&user, example);
        let build = |ok: &dyn Fn(&[&str]) -> String, dir: &str| {
            ok(&[
                "build",
                "-q",
                "--build-arg",
                "SOURCE_DATE_EPOCH=1700000000",
                "-t",
                tag,
                dir,
            ])
        };
        let as_user = build(&|a| user.ok(a), dir.to_str().unwrap());
        let src = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(example);
        let as_root = build(&|a| root.ok(a), src.to_str().unwrap());
        assert_eq!(as_user, as_root, "{example}");
        // chroot isolation in the user's namespace: the same image again.
        let chrooted = user.ok(&[
            "build",
            "-q",
            "--no-cache",
            "--isolation",
            "chroot",
            "--build-arg",
            "SOURCE_DATE_EPOCH=1700000000",
            dir.to_str().unwrap(),
        ]);
        assert_eq!(chrooted, as_root, "{example} with chroot isolation");
    }
    assert_eq!(
        user.ok(&["run", "--rm", "--network", "none", "hello"]),
        "Hello, world! (uid 65534 in /app)\n"
    );
    // A build whose layer holds files of uid 0, 42 and 1000: the owners are kept, and the
    // image is root's.
    let owners = "FROM busybox\nRUN mkdir /o && touch /o/a /o/b /o/c && chown 42:42 /o/b \
                  && chown 1000:1000 /o/c\n";
    let user_ctx = user.home.join("owners");
    std::fs::create_dir(&user_ctx).unwrap();
    std::fs::write(user_ctx.join("Dockerfile"), owners).unwrap();
    let root_ctx = root.path("owners");
    std::fs::create_dir(&root_ctx).unwrap();
    std::fs::write(root_ctx.join("Dockerfile"), owners).unwrap();
    let build_owners = |ok: &dyn Fn(&[&str]) -> String, dir: &Path| {
        let epoch = "SOURCE_DATE_EPOCH=1700000000";
        let args = ["build", "-q", "--build-arg", epoch, "-t", "owners"];
        ok(&[&args[..], &[dir.to_str().unwrap()]].concat())
    };
    assert_eq!(
        build_owners(&|a| user.ok(a), &user_ctx),
        build_owners(&|a| root.ok(a), &root_ctx)
    );
    user.ok(&["save", "-o", "owners.tar", "owners"]);
    let scratch = tempfile::tempdir().unwrap();
    assert_eq!(
        layer_listing_at(&user.home.join("owners.tar"), scratch.path(), 1),
        "drwxr-xr-x 0/0 o/\n\
         -rw-r--r-- 0/0 o/a\n\
         -rw-r--r-- 42/42 o/b\n\
         -rw-r--r-- 1000/1000 o/c"
    );
    // Through the loopback registry and back into an emptied store.
    let registry = common::registry::Registry::start(None);
    let remote = format!("{}/hello:rootless", registry.addr());
    user.ok(&["tag", "hello", &remote]);
    user.ok(&["push", "-q", &remote]);
    user.ok(&["system", "reset", "--force"]);
    user.ok(&["pull", "-q", &remote]);
    assert_eq!(
        user.ok(&["images", "--no-trunc", "-q", &remote]).trim(),
        root.ok(&["images", "--no-trunc", "-q", "hello"]).trim()
    );
    assert_eq!(
        user.ok(&["run", "--rm", "--network", "none", &remote, "rootless"]),
        "Hello, rootless! (uid 65534 in /app)\n"
    );
    // Killed mid-run (monitor and container at once): the store checks clean once repaired,
    // and the user can still delete everything.
    user.ok(&[
        "run",
        "-d",
        "--network",
        "none",
        "--name",
        "doomed",
        "--user",
        "0",
        "--entrypoint",
        "sleep",
        &remote,
        "100",
    ]);
    wait_for_process(user.uid, "sleep 100");
    kill_processes(user.uid, "__monitor|sleep 100");
    // And a build killed mid-step, the build and its step's processes at once.
    let slow = user.home.join("slow");
    std::fs::create_dir(&slow).unwrap();
    std::fs::write(
        slow.join("Dockerfile"),
        format!("FROM {remote}\nUSER 0\nRUN sleep 101\n"),
    )
    .unwrap();
    let mut build = user
        .command(&user.exe, &["build", "-q", slow.to_str().unwrap()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_for_process(user.uid, "sleep 101");
    kill_processes(user.uid, "build -q|__monitor|sleep 101");
    let _ = build.wait();
    user.ok(&["system", "check", "--repair"]);
    let check = user.ok(&["system", "check"]);
    assert!(check.contains(" 0 errors, 0 garbage"), "{check}");
    user.ok(&["rm", "-f", "doomed"]);
    user.ok(&["system", "reset", "--force"]);
    let rm = user
        .command(
            Path::new("/bin/rm"),
            &["-rf", user.store().to_str().unwrap()],
        )
        .output()
        .unwrap();
    assert!(rm.status.success(), "{rm:?}");
}

/// Rootless networking needs the tun device usable by users: Debian's default mode (0666),
/// which some machine images tighten.
fn tun_for_users() {
    usable_by_users(Path::new("/dev/net/tun"));
}

/// A device node every user may open, as Debian makes `/dev/net/tun` and `/dev/fuse` (this
/// machine's image has them 0600).
fn usable_by_users(node: &Path) {
    let mode = std::fs::metadata(node).unwrap().permissions().mode();
    if mode & 0o666 != 0o666 {
        std::fs::set_permissions(node, std::fs::Permissions::from_mode(mode | 0o666)).unwrap();
    }
}

/// A cgroup v2 directory delegated to a user as systemd delegates `user@UID.service` (the
/// directory and its `cgroup.procs`, `cgroup.threads`, `cgroup.subtree_control` are the
/// user's), in this host's unified hierarchy; removed with everything below it at the end.
struct DelegatedCgroup {
    dir: PathBuf,
    uid: u32,
}

impl DelegatedCgroup {
    fn new(user: &TestUser) -> DelegatedCgroup {
        let unified = Path::new(UNIFIED);
        assert!(
            unified.join("cgroup.procs").exists(),
            "no cgroup v2 hierarchy at {UNIFIED}"
        );
        let dir = unified.join(format!("strata-test-{}-{}", std::process::id(), user.name));
        std::fs::create_dir(&dir).unwrap();
        for f in [
            "",
            "cgroup.procs",
            "cgroup.threads",
            "cgroup.subtree_control",
        ] {
            std::os::unix::fs::chown(dir.join(f), Some(user.uid), Some(user.gid)).unwrap();
        }
        DelegatedCgroup { dir, uid: user.uid }
    }

    /// `strata ARGS` as the user, started inside the delegated directory (as a job a CI
    /// runner starts in its own delegated cgroup): its output.
    fn strata(&self, user: &TestUser, args: &[&str]) -> Output {
        Command::new("sh")
            .args(["-c", r#"echo $$ > "$1" && shift && exec "$@""#, "sh"])
            .arg(self.dir.join("cgroup.procs"))
            .args(["setpriv", "--reuid", &user.uid.to_string(), "--regid"])
            .arg(user.gid.to_string())
            .arg("--clear-groups")
            .arg(&user.exe)
            .args(args)
            .env_clear()
            .env("HOME", &user.home)
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("STRATA_CGROUP_V2_ROOT", UNIFIED)
            .current_dir(&user.home)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }
}

impl Drop for DelegatedCgroup {
    fn drop(&mut self) {
        kill_processes(self.uid, ".");
        // Leaves first: a directory with children cannot go.
        let _ = Command::new("sh")
            .arg("-c")
            .arg(format!(
                "for i in $(seq 100); do find {} -depth -type d -exec rmdir {{}} + 2>/dev/null; [ -d {0} ] || exit 0; sleep 0.05; done",
                self.dir.display()
            ))
            .status();
    }
}

const UNIFIED: &str = "/sys/fs/cgroup/unified";

/// Where a cgroup v2 tree is delegated to the user, rootless containers get cgroups in it:
/// pause, top and stats work, and a limit needs its controller delegated too (this host's
/// unified hierarchy has none of the resource controllers: they are v1's here).
#[test]
fn a_delegated_cgroup_v2_tree_gives_rootless_containers_their_cgroups() {
    let user = TestUser::new("h", true);
    let cg = DelegatedCgroup::new(&user);
    let ok = |args: &[&str]| {
        let o = cg.strata(&user, args);
        assert!(o.status.success(), "strata {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    ok(&[
        "import",
        user.give(busybox_tar()).to_str().unwrap(),
        "busybox",
    ]);
    let info = ok(&["info"]);
    let line = format!("Cgroup Delegated To User: {}", cg.dir.display());
    assert!(info.lines().any(|l| l == line), "{line:?} in {info}");
    let id = ok(&["run", "-d", "--network", "none", "busybox", "sleep", "100"]);
    let id = id.trim();
    let own = cg.dir.join("strata").join(id);
    let members = std::fs::read_to_string(own.join("cgroup.procs")).unwrap();
    assert_eq!(members.lines().count(), 1, "{members}");
    ok(&["pause", id]);
    assert_eq!(
        std::fs::read_to_string(own.join("cgroup.freeze")).unwrap(),
        "1\n"
    );
    assert_eq!(
        ok(&["ps", "--format", "{{.Status}}"]).trim(),
        "Up Less than a second (Paused)"
    );
    ok(&["unpause", id]);
    let top = ok(&["top", id]);
    assert!(
        top.lines().skip(1).any(|l| l.ends_with(" sleep 100")),
        "{top}"
    );
    let o = cg.strata(
        &user,
        &[
            "run",
            "--rm",
            "--network",
            "none",
            "-m",
            "16m",
            "busybox",
            "true",
        ],
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stderr),
        format!(
            "Error: rootless: --memory needs a controller the cgroup delegated to the user ({}) \
             does not offer\n",
            cg.dir.display()
        )
    );
    ok(&["rm", "-f", id]);
    assert!(!own.exists(), "the container's cgroup outlived it");
    ok(&["system", "reset", "--force"]);
}

/// A file `name` of the user's, with `mode`.
fn scratch_file(user: &TestUser, name: &str, mode: u32) -> PathBuf {
    let path = user.home.join(name);
    std::fs::write(&path, name).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    std::os::unix::fs::chown(&path, Some(user.uid), Some(user.gid)).unwrap();
    path
}

/// The user's fuse-overlayfs daemons still running (zombies, which this machine's init may
/// leave unreaped, are not).
fn fuse_daemons(uid: u32) -> usize {
    let o = run_ok(Command::new("ps").args(["-u", &uid.to_string(), "-o", "stat=,comm="]));
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.contains("fuse-overlayfs") && !l.trim_start().starts_with('Z'))
        .count()
}

/// With fuse-overlayfs (chosen here; the probe picks it where the kernel will not mount
/// overlayfs in a user namespace) containers, builds and copies work as with the kernel's,
/// the layers are the same bytes, and no daemon outlives its mount.
#[test]
fn fuse_overlayfs_gives_the_layers_and_images_of_the_kernel_overlay() {
    usable_by_users(Path::new("/dev/fuse"));
    let user = TestUser::new("g", true);
    let fuse = |args: &[&str]| -> String {
        let o = user
            .command(&user.exe, args)
            .env("STRATA_STORAGE_DRIVER", "fuse-overlayfs")
            .env("SOURCE_DATE_EPOCH", "1700000000")
            .output()
            .unwrap();
        assert!(
            o.status.success(),
            "strata {args:?} with fuse-overlayfs: {o:?}"
        );
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let info = fuse(&["info"]);
    assert!(
        info.contains("\nStorage Driver: fuse-overlayfs\n"),
        "{info}"
    );
    assert!(
        info.contains("\nStorage Driver Chosen By: STRATA_STORAGE_DRIVER\n"),
        "{info}"
    );
    let probed = user.ok(&["info"]);
    // This kernel mounts overlayfs in a user namespace: the probe keeps it.
    for line in [
        "Storage Driver: overlay",
        "Storage Driver Chosen By: the kernel mounts overlayfs in this user namespace",
    ] {
        assert!(probed.lines().any(|l| l == line), "{line:?} in {probed}");
    }
    // The same image as a root build of the same Dockerfile on the same base.
    let root = Strata::new();
    root.busybox();
    let base = root.path("base.tar");
    root.ok(&["save", "-o", base.to_str().unwrap(), "busybox"]);
    fuse(&["load", "-i", user.give(&base).to_str().unwrap()]);
    let hello = give_example(&user, "hello");
    let by_fuse = fuse(&["build", "-q", "-t", "hello", hello.to_str().unwrap()]);
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/hello");
    let by_root = root
        .cmd(&["build", "-q", src.to_str().unwrap()])
        .env("SOURCE_DATE_EPOCH", "1700000000")
        .output()
        .unwrap();
    assert_eq!(by_fuse, String::from_utf8_lossy(&by_root.stdout));
    assert_eq!(
        fuse(&["run", "--rm", "--network", "none", "hello", "fuse"]),
        "Hello, fuse! (uid 65534 in /app)\n"
    );
    // A container's changes: whiteouts and an opaque directory as the kernel writes them, a
    // new directory not opaque, seen live by diff and committed after the stop.
    let id = fuse(&["run", "-d", "--network", "none", "busybox", "sleep", "100"]);
    let id = id.trim();
    let script = "rm /etc/group && rm -rf /usr && mkdir /usr && touch /usr/new && mkdir /made \
                  && touch /made/f";
    fuse(&["exec", id, "sh", "-c", script]);
    let changed = "C /etc\nD /etc/group\nA /made\nA /made/f\nC /usr\nA /usr/new\n";
    assert_eq!(fuse(&["diff", id]), changed);
    fuse(&["stop", "-t", "0", id]);
    let copied = scratch_file(&user, "copied", 0o644);
    fuse(&["cp", copied.to_str().unwrap(), &format!("{id}:/copied")]);
    assert_eq!(fuse(&["diff", id]), format!("A /copied\n{changed}"));
    fuse(&["commit", id, "made:1"]);
    fuse(&["save", "-o", "made.tar", "made:1"]);
    let scratch = tempfile::tempdir().unwrap();
    assert_eq!(
        layer_listing_at(&user.home.join("made.tar"), scratch.path(), 1),
        "-rw-r--r-- 0/0 copied\n\
         drwxr-xr-x 0/0 etc/\n\
         -rw-r--r-- 0/0 etc/.wh.group\n\
         drwxr-xr-x 0/0 made/\n\
         -rw-r--r-- 0/0 made/f\n\
         drwxr-xr-x 0/0 usr/\n\
         -rw-r--r-- 0/0 usr/.wh..wh..opq\n\
         -rw-r--r-- 0/0 usr/new"
    );
    // A monitor killed with its container leaves the mount: rm takes it away.
    let doomed = fuse(&["run", "-d", "--network", "none", "busybox", "sleep", "102"]);
    wait_for_process(user.uid, "sleep 102");
    kill_processes(user.uid, "__monitor|sleep 102");
    fuse(&["rm", "-f", doomed.trim(), id]);
    let t = std::time::Instant::now();
    while fuse_daemons(user.uid) > 0 {
        assert!(
            t.elapsed().as_secs() < 10,
            "a fuse-overlayfs daemon outlived its mount"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let check = fuse(&["system", "check"]);
    assert!(check.contains(" 0 errors, 0 garbage"), "{check}");
    user.ok(&["system", "reset", "--force"]);
}

/// This host's first IPv4 address that is not loopback.
fn host_address() -> String {
    let o = run_ok(Command::new("ip").args(["-4", "-o", "addr", "show", "scope", "global"]));
    let text = String::from_utf8_lossy(&o.stdout);
    let cidr = text
        .lines()
        .find_map(|l| l.split_whitespace().skip_while(|w| *w != "inet").nth(1))
        .expect("a global IPv4 address");
    cidr.split('/').next().unwrap().to_string()
}

/// An HTTP GET of `path` from 127.0.0.1:`port`, retried until it answers; the body.
fn http_get(port: u16, path: &str) -> String {
    use std::io::{Read, Write};
    let t = std::time::Instant::now();
    loop {
        if let Ok(mut c) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = c.set_read_timeout(Some(std::time::Duration::from_secs(5)));
            let _ = write!(c, "GET {path} HTTP/1.0\r\n\r\n");
            let mut answer = String::new();
            if c.read_to_string(&mut answer).is_ok() && !answer.is_empty() {
                return answer.split("\r\n\r\n").nth(1).unwrap_or("").to_string();
            }
        }
        assert!(t.elapsed().as_secs() < 20, "nothing answers on port {port}");
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
}

#[test]
fn rootless_containers_get_a_user_mode_network_with_published_ports() {
    tun_for_users();
    let user = TestUser::new("e", true);
    let busybox = user.give(busybox_tar());
    user.ok(&["import", busybox.to_str().unwrap(), "busybox"]);
    // The default network is slirp4netns's: a tap device with its address and route.
    assert_eq!(
        user.ok(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "ip -4 -o addr show tap0 | awk '{print $4}'; ip route | head -1"
        ]),
        "10.0.2.100/24\ndefault via 10.0.2.2 dev tap0 \n"
    );
    // Outbound: a server on the host's own address hears from the container (slirp4netns
    // connects for it, as the user).
    let host_ip = host_address();
    let listener = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
    let port = listener.local_addr().unwrap().port().to_string();
    // The server reads a line and hangs up (nc ends when the other side does).
    let server = std::thread::spawn(move || {
        let (c, _) = listener.accept().unwrap();
        let mut line = String::new();
        std::io::BufRead::read_line(&mut std::io::BufReader::new(c), &mut line).unwrap();
        line
    });
    user.ok(&[
        "run",
        "--rm",
        "busybox",
        "sh",
        "-c",
        &format!("echo outbound | nc {host_ip} {port}"),
    ]);
    assert_eq!(server.join().unwrap(), "outbound\n");
    let id = user.ok(&[
        "run",
        "-d",
        "-p",
        "127.0.0.1:18410:80",
        "busybox",
        "httpd",
        "-f",
        "-p",
        "80",
        "-h",
        "/etc",
    ]);
    assert_eq!(http_get(18410, "/hostname"), format!("{}\n", &id[..12]));
    assert_eq!(user.ok(&["port", id.trim()]), "80/tcp -> 127.0.0.1:18410\n");
    assert_eq!(
        user.ok(&["ps", "--format", "{{.Ports}}"]),
        "127.0.0.1:18410->80/tcp\n"
    );
    assert_eq!(
        user.ok(&[
            "inspect",
            "-f",
            "{{json .NetworkSettings.Ports}}",
            id.trim()
        ]),
        "{\"80/tcp\":[{\"HostIp\":\"127.0.0.1\",\"HostPort\":\"18410\"}]}\n"
    );
    // Another container on this one's network namespace reaches its server on loopback.
    let joined = format!("container:{}", id.trim());
    assert_eq!(
        user.ok(&[
            "run",
            "--rm",
            "--network",
            &joined,
            "busybox",
            "wget",
            "-q",
            "-O",
            "-",
            "http://127.0.0.1:80/hostname",
        ]),
        format!("{}\n", &id[..12])
    );
    user.ok(&["rm", "-f", id.trim()]);
    // Gone with the container: nothing answers there any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", 18410)).is_err());
    assert_eq!(
        user.fails(&["run", "--network", "mynet", "busybox", "true"]),
        "Error: rootless: --network mynet needs root (user networks are bridges of the \
         host's); use the default (user-mode) network, none or host\n"
    );
    user.ok(&["system", "reset", "--force"]);
}
