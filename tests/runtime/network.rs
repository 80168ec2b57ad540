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

/// Runs `cmd` with sh in a new container on `network`; its output.
fn sh_on(s: &Strata, network: &str, cmd: &str) -> String {
    s.ok(&[
        "run",
        "--rm",
        "--network",
        network,
        "busybox",
        "sh",
        "-c",
        cmd,
    ])
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
    // Driver options: the MTU (Docker's and podman's names), nothing else.
    let err = s.fails(&["network", "create", "-o", "foo=1", "odd"]);
    assert_eq!(
        err,
        "Error: invalid -o foo: the bridge driver knows com.docker.network.driver.mtu (or mtu)\n"
    );
    s.ok(&[
        "network",
        "create",
        "-o",
        "com.docker.network.driver.mtu=9000",
        "jumbo",
    ]);
    let mtu = s.ok(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.driver.mtu\"}}",
        "jumbo",
    ]);
    assert_eq!(mtu, "9000\n");
    assert_eq!(sh_on(&s, "jumbo", "cat /sys/class/net/eth0/mtu"), "9000\n");
    s.assert_check();
}

/// A stand-in upstream resolver on `addr:53` that answers every A query with 192.0.2.77 and
/// counts the queries it saw.
fn fake_upstream(addr: &str) -> std::sync::Arc<std::sync::atomic::AtomicUsize> {
    let sock = std::net::UdpSocket::bind((addr, 53)).unwrap();
    let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, peer)) = sock.recv_from(&mut buf) {
            counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut reply = buf[..n].to_vec();
            reply[2] |= 0x80; // a response
            reply[3] = 0x80; // recursion available, no error
            let is_a = n > 4 && reply[n - 4..n - 2] == [0, 1];
            if is_a {
                reply[7] = 1; // one answer: the question's name, A, IN, TTL 60, 192.0.2.77
                reply
                    .extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 192, 0, 2, 77]);
            }
            let _ = sock.send_to(&reply, peer);
        }
    });
    seen
}

#[test]
fn containers_on_a_user_network_resolve_names_aliases_and_short_ids() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["network", "create", "--subnet", "10.89.251.0/24", "app"]);
    serve(&s, "web", &["--network", "app", "--network-alias", "site"]);
    let id = s.ok(&["inspect", "-f", "{{.Id}}", "web"]);
    let short = &id.trim()[..12];
    let hostname = format!("{short}\n");
    let fetch_by = |name: &str| sh_on(&s, "app", &nc_get(name));
    // Each lookup is one UDP query from busybox, which a loaded machine may drop (the suite
    // runs in parallel): asked until answered, as the first one is.
    wait_for(|| fetch_by("web") == hostname, "web by name");
    wait_for(|| fetch_by("site") == hostname, "web by alias");
    wait_for(|| fetch_by(short) == hostname, "web by short id");
    // resolv.conf names the network's server, as Docker's names its embedded one.
    let resolv = s.ok(&[
        "run",
        "--rm",
        "--network",
        "app",
        "busybox",
        "cat",
        "/etc/resolv.conf",
    ]);
    let nameservers: Vec<&str> = resolv
        .lines()
        .filter(|l| l.starts_with("nameserver"))
        .collect();
    assert_eq!(nameservers, ["nameserver 10.89.251.1"], "{resolv}");
    assert!(
        resolv
            .lines()
            .any(|l| l.starts_with("options") && l.contains("ndots:0")),
        "{resolv}"
    );
    // Other names go to the container's own resolvers (`--dns`), through the network's server.
    let upstream = fake_upstream("127.0.0.77");
    let outside = s.ok(&[
        "run",
        "--rm",
        "--network",
        "app",
        "--dns",
        "127.0.0.77",
        "busybox",
        "nslookup",
        "-type=a",
        "example.test",
    ]);
    assert!(outside.contains("Address: 192.0.2.77"), "{outside}");
    assert!(upstream.load(std::sync::atomic::Ordering::SeqCst) >= 1);
    let peer_ip = sh_on(&s, "app", "nslookup web | sed -n 's/^Address: //p'");
    assert_eq!(peer_ip, "10.89.251.2\n");
    // The server lives while the network has containers, and `network rm` leaves nothing.
    s.ok(&["rm", "-f", "web"]);
    wait_for_no_process_of(&s.root());
    assert_eq!(s.ok(&["network", "rm", "app"]), "app\n");
    s.assert_check();
}

#[test]
fn an_internal_network_resolves_its_names_and_has_no_way_out() {
    let s = Strata::new();
    s.busybox();
    s.ok(&[
        "network",
        "create",
        "--internal",
        "--subnet",
        "10.89.252.0/24",
        "private",
    ]);
    let outside_ip = serve(&s, "outside", &[]);
    serve(&s, "db", &["--network", "private"]);
    let db = s.ok(&["inspect", "-f", "{{.Id}}", "db"]);
    let db_hostname = format!("{}\n", &db.trim()[..12]);
    let on_private = |cmd: &str| sh_on(&s, "private", cmd);
    wait_for(|| on_private(&nc_get("db")) == db_hostname, "db by name");
    assert_eq!(
        on_private("ip route"),
        "10.89.252.0/24 dev eth0 scope link  src 10.89.252.3 \n"
    );
    assert_eq!(
        on_private(&nc_get(&outside_ip)),
        "",
        "no route to another network"
    );
    assert_eq!(
        on_private("nslookup -type=a example.test >/dev/null 2>&1; echo $?"),
        "1\n",
        "outside names are not resolved"
    );
    s.ok(&["rm", "-f", "db", "outside"]);
    s.assert_check();
}

/// The host's first global IPv4 address that is not a container bridge's.
fn host_address() -> String {
    let out = sh("ip -4 -o addr show scope global");
    out.lines()
        .filter_map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            let bridge = ["sb-", "docker", "podman", "cni", "br-", "virbr"]
                .iter()
                .any(|p| w[1].starts_with(p));
            (!bridge).then(|| w[3].split('/').next().unwrap().to_string())
        })
        .next()
        .expect("the host has a global IPv4 address")
}

#[test]
fn udp_ports_ranges_and_publish_all_answer_on_loopback_and_the_hosts_address() {
    let s = Strata::new();
    s.busybox();
    // A range: two servers in one container, on 80 and 81.
    s.ok(&[
        "run",
        "-d",
        "--name",
        "pair",
        "-p",
        "18100-18101:80-81",
        "busybox",
        "sh",
        "-c",
        "httpd -p 81 -h /etc; exec httpd -f -p 80 -h /etc",
    ]);
    assert_eq!(
        s.ok(&["port", "pair"]),
        "80/tcp -> 0.0.0.0:18100\n81/tcp -> 0.0.0.0:18101\n"
    );
    let id = s.ok(&["inspect", "-f", "{{.Id}}", "pair"]);
    let hostname = format!("{}\n", &id.trim()[..12]);
    wait_for(
        || fetch("http://127.0.0.1:18101/hostname") == hostname,
        "port 81",
    );
    assert_eq!(fetch("http://127.0.0.1:18100/hostname"), hostname);
    let host = host_address();
    assert_eq!(fetch(&format!("http://{host}:18100/hostname")), hostname);
    let ps = s.ok(&["ps", "--format", "{{.Ports}}"]);
    assert_eq!(ps, "0.0.0.0:18100-18101->80-81/tcp\n");
    // -P publishes every exposed port on an ephemeral host port.
    s.ok(&[
        "run", "-d", "--name", "all", "--expose", "80", "-P", "busybox", "httpd", "-f", "-p", "80",
        "-h", "/etc",
    ]);
    let all = s.ok(&["port", "all", "80"]);
    let port = all.trim().rsplit(':').next().unwrap().to_string();
    assert!(all.starts_with("0.0.0.0:"), "{all}");
    let id = s.ok(&["inspect", "-f", "{{.Id}}", "all"]);
    wait_for(
        || fetch(&format!("http://127.0.0.1:{port}/hostname")) == format!("{}\n", &id.trim()[..12]),
        "-P",
    );
    // A udp port, answered by an echo server (busybox has no UDP server).
    let tools = tempfile::tempdir().unwrap();
    let echo = tools.path().join("udp-echo");
    sh(&format!(
        "gcc -static -O2 -o {} {}/tests/fixtures/udp-echo.c",
        echo.display(),
        env!("CARGO_MANIFEST_DIR")
    ));
    let mount = format!("{}:/opt:ro", tools.path().display());
    s.ok(&[
        "run",
        "-d",
        "--name",
        "udp",
        "-v",
        &mount,
        "-p",
        "18110:9999/udp",
        "busybox",
        "/opt/udp-echo",
        "9999",
    ]);
    assert_eq!(s.ok(&["port", "udp"]), "9999/udp -> 0.0.0.0:18110\n");
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut buf = [0u8; 64];
    wait_for(
        || {
            sock.send_to(b"over udp", "127.0.0.1:18110").unwrap();
            matches!(sock.recv(&mut buf), Ok(8)) && &buf[..8] == b"over udp"
        },
        "udp echo",
    );
    s.ok(&["rm", "-f", "pair", "all", "udp"]);
    assert_eq!(fetch("http://127.0.0.1:18100/hostname"), "");
    s.assert_check();
}

#[test]
fn a_killed_monitor_leaves_no_address_rule_or_server_after_system_check_repair() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["network", "create", "--subnet", "10.89.254.0/24", "doomed"]);
    let ip = serve(&s, "web", &["--network", "doomed", "-p", "18120:80"]);
    assert_eq!(ip, "10.89.254.2");
    let id = s
        .ok(&["inspect", "-f", "{{.Id}}", "web"])
        .trim()
        .to_string();
    let init = s
        .ok(&["inspect", "-f", "{{.State.Pid}}", "web"])
        .trim()
        .to_string();
    let monitor = sh(&format!("pgrep -f '[_]_monitor {id}'"))
        .trim()
        .to_string();
    let bridge = s.ok(&[
        "network",
        "inspect",
        "-f",
        "{{index .Options \"com.docker.network.bridge.name\"}}",
        "doomed",
    ]);
    let veth = sh(&format!(
        "ip -o link show master {} | cut -d: -f2 | cut -d@ -f1",
        bridge.trim()
    ));
    let veth = veth.trim().to_string();
    assert!(veth.starts_with("sv"), "{veth}");
    assert!(sh("nft list ruleset").contains("tcp dport 18120 dnat to 10.89.254.2:80"));
    sh(&format!("kill -9 {monitor} {init}"));
    wait_for(
        || !std::path::Path::new(&format!("/proc/{init}")).exists(),
        "the container's death",
    );
    let check = s.run(&["system", "check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains(&format!(
            "network endpoint of dead container {} (10.89.254.2 on {veth})",
            &id[..12]
        )),
        "{report}"
    );
    let repaired = s.ok(&["system", "check", "--repair"]);
    assert!(
        repaired.contains("reclaimed network endpoint"),
        "{repaired}"
    );
    // No veth, no rule, no name server; the address is free again.
    assert_eq!(
        sh(&format!("ip -o link show {veth} 2>/dev/null || true")),
        ""
    );
    let rules = sh("nft list ruleset");
    assert!(!rules.contains("dport 18120"), "{rules}");
    wait_for_no_process_of(&s.root());
    // A table edited or removed behind strata's back is found and made again.
    let table = sh("nft list tables | grep -o 'strata_[0-9a-f]*' | while read t; do nft list table ip $t | grep -q 10.89.254.0/24 && echo $t; done; true");
    let table = table.trim();
    sh(&format!("nft delete table ip {table}"));
    let check = s.run(&["system", "check"]);
    let report = String::from_utf8_lossy(&check.stdout);
    assert!(
        report.contains(&format!("firewall table {table} is missing")),
        "{report}"
    );
    let repaired = s.ok(&["system", "check", "--repair"]);
    assert!(repaired.contains("rendered again"), "{repaired}");
    assert!(sh(&format!("nft list table ip {table}")).contains("10.89.254.0/24"));
    s.ok(&["rm", "-f", "web"]);
    assert_eq!(serve(&s, "again", &["--network", "doomed"]), "10.89.254.2");
    s.ok(&["rm", "-f", "again"]);
    s.assert_check();
}

#[test]
fn twenty_containers_started_at_once_get_distinct_addresses_and_answer_by_name() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["network", "create", "--subnet", "10.89.249.0/24", "crowd"]);
    let names: Vec<String> = (0..20).map(|i| format!("c{i}")).collect();
    let starts: Vec<_> = names
        .iter()
        .map(|n| {
            Command::new(strata_bin())
                .arg("--root")
                .arg(s.root())
                .args(["run", "-d", "--network", "crowd", "--name", n])
                .args(["busybox", "httpd", "-f", "-p", "80", "-h", "/etc"])
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    for c in starts {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut ips: Vec<String> = names
        .iter()
        .map(|n| {
            s.ok(&[
                "inspect",
                "-f",
                "{{.NetworkSettings.Networks.crowd.IPAddress}}",
                n,
            ])
        })
        .collect();
    ips.sort();
    ips.dedup();
    assert_eq!(ips.len(), 20, "{ips:?}");
    let expected: String = names
        .iter()
        .map(|n| {
            let id = s.ok(&["inspect", "-f", "{{.Id}}", n]);
            format!("{}\n", &id.trim()[..12])
        })
        .collect();
    let script: String = names.iter().map(|n| format!("{};", nc_get(n))).collect();
    wait_for(
        || sh_on(&s, "crowd", &script) == expected,
        "all twenty by name",
    );
    let mut rm = vec!["rm", "-f"];
    rm.extend(names.iter().map(String::as_str));
    s.ok(&rm);
    s.assert_check();
}

#[test]
fn a_container_on_anothers_network_shares_its_hostname_and_etc_files() {
    let s = Strata::new();
    s.busybox();
    s.ok(&["network", "create", "--subnet", "10.89.248.0/24", "shared"]);
    s.ok(&[
        "run",
        "-d",
        "--name",
        "first",
        "--network",
        "shared",
        "busybox",
        "sleep",
        "60",
    ]);
    let id = s.ok(&["inspect", "-f", "{{.Id}}", "first"]);
    let short = &id.trim()[..12];
    let seen = s.ok(&[
        "run", "--rm", "--network", "container:first", "busybox", "sh", "-c",
        "hostname; tail -n 1 /etc/hosts; grep nameserver /etc/resolv.conf; nslookup first | sed -n 's/^Address: //p'",
    ]);
    assert_eq!(
        seen,
        format!("{short}\n10.89.248.2\t{short}\nnameserver 10.89.248.1\n10.89.248.2\n")
    );
    for (flag, value, what) in [
        ("-h", "other", "hostname"),
        ("--dns", "10.0.0.1", "dns"),
        ("--add-host", "x:10.0.0.1", "custom host-to-IP mapping"),
    ] {
        let err = s.fails(&[
            "run",
            "--rm",
            "--network",
            "container:first",
            flag,
            value,
            "busybox",
            "true",
        ]);
        assert_eq!(
            err,
            format!("Error: conflicting options: {what} and the network mode\n")
        );
    }
    s.ok(&["rm", "-f", "first"]);
    s.assert_check();
}

#[test]
fn rm_of_a_container_whose_run_was_killed_gives_its_address_and_port_back() {
    let s = Strata::new();
    s.busybox();
    let mut run = Command::new(strata_bin())
        .arg("--root")
        .arg(s.root())
        .args([
            "run", "--name", "fg", "-p", "18130:80", "busybox", "httpd", "-f", "-p", "80",
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Started, not only claimed: its pid is recorded once init runs (a kill before that is
    // an interrupted start, whose leftovers `system check` rightly reports).
    wait_for(
        || {
            s.run(&["inspect", "-f", "{{.State.Pid}}", "fg"])
                .stdout
                .iter()
                .any(|b| (b'1'..=b'9').contains(b))
        },
        "the container's start",
    );
    wait_for(
        || sh("nft list ruleset").contains("tcp dport 18130"),
        "the port's rule",
    );
    run.kill().unwrap();
    run.wait().unwrap();
    s.ok(&["rm", "-f", "fg"]);
    let check = s.ok(&["system", "check"]);
    assert!(check.ends_with(" 0 errors, 0 garbage\n"), "{check}");
    assert!(!sh("nft list ruleset").contains("tcp dport 18130"));
}
