//! `events`: what commands and monitors record, read back in order, filtered and followed.

use super::*;

/// The events recorded since `since`, with `args` (filters, format).
fn past_events(s: &Strata, since: &str, args: &[&str]) -> String {
    let mut all = vec!["events", "--since", since, "--until", "0s"];
    all.extend_from_slice(args);
    s.ok(&all)
}

#[test]
fn a_containers_life_is_listed_in_order_with_its_exit_code() {
    let s = Strata::new();
    s.busybox();
    let since = unix_now();
    let out = s.run(&["run", "--name", "ev", "busybox", "sh", "-c", "exit 3"]);
    assert_eq!(out.status.code(), Some(3));
    s.ok(&["run", "-d", "--name", "ev2", "busybox", "sleep", "30"]);
    s.ok(&["exec", "ev2", "true"]);
    s.ok(&["pause", "ev2"]);
    s.ok(&["unpause", "ev2"]);
    s.ok(&["kill", "ev2"]);
    s.ok(&["wait", "ev2"]);
    s.ok(&["rm", "ev", "ev2"]);
    let shown = past_events(
        &s,
        &since,
        &[
            "-f",
            "type=container",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}} {{.Status}}",
        ],
    );
    assert_eq!(
        shown,
        "create ev create\nstart ev start\ndie ev die\n\
         create ev2 create\nstart ev2 start\n\
         exec_create: true ev2 exec_create: true\nexec_start: true ev2 exec_start: true\nexec_die ev2 exec_die\n\
         pause ev2 pause\nunpause ev2 unpause\nkill ev2 kill\ndie ev2 die\n\
         destroy ev destroy\ndestroy ev2 destroy\n"
    );
    // Docker's line, the exit code among the attributes; a filter on the event and the name.
    let id = past_events(
        &s,
        &since,
        &[
            "-f",
            "event=create",
            "-f",
            "container=ev",
            "--format",
            "{{.Actor.ID}}",
        ],
    );
    let die = past_events(&s, &since, &["-f", "event=die", "-f", "container=ev"]);
    let (time, rest) = die.split_once(' ').unwrap();
    assert!(time.ends_with('Z') && time.len() == 30, "{time}");
    assert_eq!(
        rest,
        format!(
            "container die {} (exitCode=3, image=busybox, name=ev)\n",
            id.trim()
        )
    );
    // The default network was made, and each container joined and left it.
    let net = past_events(
        &s,
        &since,
        &[
            "-f",
            "type=network",
            "--format",
            "{{.Action}} {{.Actor.Attributes.name}}",
        ],
    );
    assert_eq!(
        net,
        "create bridge\nconnect bridge\ndisconnect bridge\nconnect bridge\ndisconnect bridge\n"
    );
    let err = s.fails(&["events", "-f", "colour=red"]);
    assert_eq!(err, "Error: invalid filter 'colour'\n");
    s.assert_check();
}

#[test]
fn images_and_volumes_have_their_events_too() {
    let s = Strata::new();
    let since = unix_now();
    let id = s.busybox();
    s.ok(&["tag", "busybox", "mine:1"]);
    s.ok(&["rmi", "mine:1"]);
    s.ok(&["volume", "create", "data"]);
    s.ok(&["volume", "rm", "data"]);
    let shown = past_events(
        &s,
        &since,
        &[
            "--format",
            "{{.Type}} {{.Action}} {{.Actor.ID}} {{.Actor.Attributes.name}}",
        ],
    );
    let id = id.trim();
    assert_eq!(
        shown,
        format!(
            "image import {id} docker.io/library/busybox:latest\n\
             image tag {id} docker.io/library/mine:1\n\
             image untag {id} docker.io/library/mine:1\n\
             volume create data <no value>\nvolume destroy data <no value>\n"
        )
    );
}

#[test]
fn a_follower_sees_the_start_another_process_makes() {
    let s = Strata::new();
    s.busybox();
    let mut follower = Command::new(strata_bin())
        .arg("--root")
        .arg(s.root())
        .args([
            "events",
            "-f",
            "event=start",
            "--format",
            "{{.Actor.Attributes.name}}",
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    // The follower reads from the moment it starts: give it that moment.
    std::thread::sleep(Duration::from_millis(300));
    s.ok(&["run", "--rm", "--name", "watched", "busybox", "true"]);
    let mut stdout = follower.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::Read;
        let mut buf = [0u8; 64];
        let mut got = Vec::new();
        while !got.ends_with(b"\n") {
            match stdout.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
        }
        let _ = tx.send(got);
    });
    let line = rx.recv_timeout(Duration::from_secs(10));
    follower.kill().unwrap();
    follower.wait().unwrap();
    assert_eq!(String::from_utf8(line.unwrap()).unwrap(), "watched\n");
}
