//! Container networks: the default bridge, published ports, user networks, and what is left
//! behind (nothing).

use super::*;

/// Fetches `url` from the host with curl (the static busybox's wget crashes resolving).
fn fetch(url: &str) -> String {
    let o = Command::new("curl")
        .args(["-s", "-m", "5", url])
        .output()
        .unwrap();
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A container's command that fetches /hostname from `host` port 80 with nc.
fn nc_get(host: &str) -> String {
    format!("printf 'GET /hostname HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {host} 80 | tail -n 1")
}

fn serve(s: &Strata, name: &str, extra: &[&str]) -> String {
    let mut args = vec!["run", "-d", "--name", name];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["busybox", "httpd", "-f", "-p", "80", "-h", "/etc"]);
    s.ok(&args);
    let ip = s.ok(&["inspect", "-f", "{{.NetworkSettings.IPAddress}}", name]);
    ip.trim().to_string()
}

#[test]
fn containers_on_the_default_bridge_reach_each_other_and_published_ports_answer() {
    let s = Strata::new();
    s.busybox();
    let ip = serve(&s, "web", &["-p", "127.0.0.1::80", "-p", "18089:80"]);
    assert!(ip.starts_with("10.89."), "{ip}");
    wait_for(
        || !fetch("http://127.0.0.1:18089/hostname").is_empty(),
        "httpd",
    );
    let id = s.ok(&["inspect", "-f", "{{.Id}}", "web"]);
    let hostname = format!("{}\n", &id.trim()[..12]);
    // Another container, by address (the default bridge has no name resolution).
    let by_ip = s.ok(&[
        "run",
        "--rm",
        "busybox",
        "wget",
        "-q",
        "-O",
        "-",
        &format!("http://{ip}/hostname"),
    ]);
    assert_eq!(by_ip, hostname);
    let by_name = s.run(&[
        "run",
        "--rm",
        "busybox",
        "wget",
        "-q",
        "-T",
        "3",
        "-O",
        "-",
        "http://web/hostname",
    ]);
    assert!(!by_name.status.success());
    // The published ports, as `port` prints them, from loopback.
    let ports = s.ok(&["port", "web"]);
    let lines: Vec<&str> = ports.lines().collect();
    assert_eq!(lines.len(), 2, "{ports}");
    assert_eq!(lines[0], "80/tcp -> 0.0.0.0:18089");
    assert!(lines[1].starts_with("80/tcp -> 127.0.0.1:"), "{ports}");
    let ephemeral = lines[1].rsplit(':').next().unwrap();
    assert_eq!(
        fetch(&format!("http://127.0.0.1:{ephemeral}/hostname")),
        hostname
    );
    assert_eq!(fetch("http://127.0.0.1:18089/hostname"), hostname);
    // A port in use is refused before the container starts.
    let err = s.fails(&["run", "--rm", "-p", "18089:80", "busybox", "true"]);
    assert!(
        err.contains("bind for 0.0.0.0:18089/tcp failed: port is already allocated"),
        "{err}"
    );
    s.ok(&["rm", "-f", "web"]);
    assert_eq!(fetch("http://127.0.0.1:18089/hostname"), "");
    s.assert_check();
}

#[test]
fn user_networks_are_made_listed_refused_while_used_and_removed() {
    let s = Strata::new();
    s.busybox();
    let err = s.fails(&[
        "network",
        "create",
        "--subnet",
        "10.89.250.0/24",
        "--gateway",
        "10.1.1.1",
        "bad",
    ]);
    assert_eq!(
        err,
        "Error: invalid gateway 10.1.1.1: not a host address of subnet 10.89.250.0/24\n"
    );
    s.ok(&[
        "network",
        "create",
        "--subnet",
        "10.89.250.0/24",
        "--label",
        "a=b",
        "backend",
    ]);
    let err = s.fails(&["network", "create", "--subnet", "10.89.250.128/25", "other"]);
    assert_eq!(
        err,
        "Error: invalid pool request: subnet 10.89.250.128/25 overlaps with network backend\n"
    );
    let shown = s.ok(&[
        "network",
        "ls",
        "--format",
        "{{.Name}} {{.Driver}} {{.Internal}}",
    ]);
    assert_eq!(
        shown,
        "backend bridge false\nbridge bridge false\nhost host false\nnone null false\n"
    );
    let ip = serve(&s, "db", &["--network", "backend", "--ip", "10.89.250.9"]);
    assert_eq!(ip, "10.89.250.9");
    let db = s.ok(&["inspect", "-f", "{{.Id}}", "db"]);
    let db_hostname = format!("{}\n", &db.trim()[..12]);
    let err = s.fails(&["network", "rm", "backend"]);
    assert!(err.contains("has active endpoints (db)"), "{err}");
    // Connected to the default bridge too, the container is reached there.
    let peer = s.ok(&["run", "-d", "--name", "peer", "busybox", "sleep", "60"]);
    let _ = peer;
    s.ok(&["network", "connect", "backend", "peer"]);
    let from_peer = || s.ok(&["exec", "peer", "sh", "-c", &nc_get("10.89.250.9")]);
    wait_for(|| from_peer() == db_hostname, "peer reaches db");
    s.ok(&["network", "disconnect", "backend", "peer"]);
    assert_eq!(from_peer(), "");
    s.ok(&["rm", "-f", "db", "peer"]);
    assert_eq!(s.ok(&["network", "rm", "backend"]), "backend\n");
    s.assert_check();
}
