#!/usr/bin/env python3
"""Plants faults one at a time in a scratch worktree of HEAD and runs the tests meant to catch
each; prints caught/missed per fault. Usage: scripts/mutants.sh [NAME...] (default: all).

Each fault is one exact text replacement (a patch) in one file, chosen to be a realistic bug
(the kind a review could miss), with the test binaries and filters that guard it. A fault
whose text is no longer in the file is reported as "stale": the list must follow the code.
"""
import os
import subprocess
import sys
import tempfile

# (name, file, old text, new text, [cargo test arguments, ...])
FAULTS = [
    ("store writes in place, unsynced", "cache/src/fsutil.rs",
     """    let result = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .at(&tmp)?;
        f.write_all(bytes).at(&tmp)?;
        f.sync_all().at(&tmp)?;
        fs::rename(&tmp, path).at(path)?;
        sync_dir(path.parent().unwrap_or(Path::new("/")))
    })();""",
     """    let result = fs::write(path, bytes).at(path);""",
     [["-p", "strata-cache", "--lib", "atomic"], ["--test", "images", "metadata_is_written"]]),
    ("--tmpfs ignored by run", "runtime/src/monitor.rs",
     """    for (target, options) in &h.tmpfs {
        mounts.push(UserMount::Tmpfs {""",
     """    for (target, options) in h.tmpfs.iter().filter(|_| false) {
        mounts.push(UserMount::Tmpfs {""",
     [["--test", "runtime", "volumes_tmpfs"]]),
    ("exec without the seccomp filter", "runtime/src/exec.rs",
     "seccomp: base.seccomp && !o.privileged,",
     "seccomp: false,",
     [["--test", "runtime", "exec_runs_with"]]),
    ("seccomp allows open_by_handle_at", "runtime/src/seccomp.rs",
     "    libc::SYS_add_key,\n",
     "    libc::SYS_add_key,\n    libc::SYS_open_by_handle_at,\n",
     [["-p", "strata-runtime", "--lib", "seccomp"]]),
    (".dockerignore **/x matches any name ending in x", "parser/src/ignore.rs",
     "return Ok(MatchKind::Suffix(rest.to_string()));",
     "return Ok(MatchKind::Suffix(rest.trim_start_matches('/').to_string()));",
     [["--test", "build", "dockerignore"]]),
    ("prune deletes parent layers first", "cache/src/gc.rs",
     "for l in self.children_first(doomed) {",
     "for l in doomed {",
     [["--test", "images", "a_killed_prune"]]),
    ("tmp/ sweep ignores live owners", "cache/src/fsutil.rs",
     "pub fn tmp_owner_alive(name: &str) -> bool {\n",
     "pub fn tmp_owner_alive(name: &str) -> bool {\n    if !name.is_empty() {\n        return false;\n    }\n",
     [["--test", "images", "tags_and_removals"]]),
    ("WORKDIR makes no directory", "executor/src/copy.rs",
     'if dir == "/" || dest.is_dir(dir) {',
     'if !dir.is_empty() {',
     [["--test", "build", "workdir_makes"]]),
    ("RUN gets the primary group as Docker's run does", "runtime/src/user.rs",
     "let mut groups = if buildkit { Vec::new() } else { vec![user.gid] };",
     "let mut groups = vec![user.gid];",
     [["--test", "build", "supplementary_groups"]]),
    ("device nodes keep the umask's mode", "image/src/layer/extract.rs",
     "                    Mode::from_bits_truncate(mode),\n                    nix::sys::stat::FchmodatFlags::NoFollowSymlink,",
     "                    Mode::from_bits_truncate(mode & 0o755),\n                    nix::sys::stat::FchmodatFlags::NoFollowSymlink,",
     [["--test", "images", "device_node_modes"]]),
    ("the layer writer drops whiteouts", "image/src/layer/writer.rs",
     "if whiteout && self.flatten {",
     "if whiteout {",
     [["-p", "strata-image", "--test", "layer_codec"]]),
    ("cp replaces a directory with a file", "runtime/src/copy.rs",
     "no_overwrite_dir_non_dir: true,",
     "no_overwrite_dir_non_dir: false,",
     [["--test", "runtime", "cp_takes"]]),
]


def run(cmd, cwd, env=None, quiet=True):
    out = subprocess.DEVNULL if quiet else None
    return subprocess.run(cmd, cwd=cwd, env=env, stdout=out, stderr=out).returncode


def main():
    repo = subprocess.check_output(["git", "rev-parse", "--show-toplevel"], text=True).strip()
    wanted = set(sys.argv[1:])
    work = tempfile.mkdtemp(prefix="strata-mutants-")
    tree = os.path.join(work, "tree")
    if run(["git", "worktree", "add", "--detach", tree, "HEAD"], repo) != 0:
        sys.exit("mutants: git worktree add failed")
    env = dict(os.environ, CARGO_TARGET_DIR=os.path.join(repo, "target", "mutants"))
    results = []
    try:
        if run(["cargo", "test", "--release", "--locked", "--workspace", "--no-run"], tree, env) != 0:
            sys.exit("mutants: the unplanted tree does not build")
        for name, path, old, new, tests in FAULTS:
            if wanted and name not in wanted:
                continue
            file = os.path.join(tree, path)
            text = open(file).read()
            if text.count(old) != 1:
                results.append((name, "stale"))
                continue
            open(file, "w").write(text.replace(old, new))
            caught = False
            for t in tests:
                code = run(["cargo", "test", "--release", "--locked"] + t, tree, env)
                caught = caught or code != 0
            open(file, "w").write(text)
            results.append((name, "caught" if caught else "MISSED"))
            print(f"{results[-1][1]:7} {name}", flush=True)
    finally:
        run(["git", "worktree", "remove", "--force", tree], repo)
    caught = sum(1 for _, r in results if r == "caught")
    print(f"\n{caught} of {len(results)} faults caught")
    sys.exit(0 if caught == len(results) else 1)


if __name__ == "__main__":
    main()
