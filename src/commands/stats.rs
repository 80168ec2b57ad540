//! `stats`: each container's CPU, memory, network, block I/O and pids, sampled twice a second
//! apart and printed with Docker's columns and units (streamed, or once with `--no-stream`).

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::{json, Value};
use strata_cache::Store;
use strata_runtime::cgroup::{Cgroup, Usage};
use strata_runtime::container::{ContainerRecord, Containers};

use crate::cli::StatsArgs;
use crate::output::{binary_size, human_size, print_formatted, print_table, Format};

const HEADERS: [(&str, &str); 9] = [
    ("Container", "CONTAINER"),
    ("ID", "CONTAINER ID"),
    ("Name", "NAME"),
    ("CPUPerc", "CPU %"),
    ("MemUsage", "MEM USAGE / LIMIT"),
    ("MemPerc", "MEM %"),
    ("NetIO", "NET I/O"),
    ("BlockIO", "BLOCK I/O"),
    ("PIDs", "PIDS"),
];

/// One reading of a container.
struct Sample {
    usage: Usage,
    /// Received and sent bytes of its network devices (not loopback).
    net: (u64, u64),
    at: Instant,
}

pub fn stats(store: &Store, a: &StatsArgs) -> Result<()> {
    if strata_runtime::rootless::is_rootless()
        && strata_runtime::cgroup::delegated_to_user().is_none()
    {
        // Without a cgroup nothing counts a container's use: no figures rather than zeros.
        return Err(strata_runtime::cgroup::no_rootless_cgroup("stats needs").into());
    }
    let c = Containers::new(store);
    let format = Format::parse(a.format.as_deref());
    loop {
        let chosen = chosen(&c, a)?;
        let mut groups: Vec<Option<Cgroup>> = chosen
            .iter()
            .map(|(rec, pid)| {
                pid.map(|_| {
                    let mut cg = Cgroup::of(&rec.id);
                    let _ = cg.ensure_accounting(&rec.id);
                    cg
                })
            })
            .collect();
        let first: Vec<Option<Sample>> = sample_all(&chosen, &mut groups);
        std::thread::sleep(Duration::from_secs(1));
        let second = sample_all(&chosen, &mut groups);
        let host_mem = host_memory();
        let rows: Vec<Value> = chosen
            .iter()
            .zip(first.iter().zip(&second))
            .map(|((rec, _), (a0, a1))| {
                let mut v = row(rec, a0.as_ref(), a1.as_ref(), host_mem);
                if !a.no_trunc {
                    v["ID"] = json!(rec.short_id());
                }
                v
            })
            .collect();
        if !a.no_stream {
            // Docker redraws in place.
            print!("\x1b[2J\x1b[H");
        }
        print_rows(&format, &rows)?;
        if a.no_stream {
            return Ok(());
        }
    }
}

/// The containers to show, with the pid of their init when running.
fn chosen(c: &Containers, a: &StatsArgs) -> Result<Vec<(ContainerRecord, Option<i32>)>> {
    let mut out = Vec::new();
    if a.containers.is_empty() {
        for rec in c.list()? {
            let st = c.state(&rec.id)?;
            let pid = st.is_running().then_some(st.pid);
            if pid.is_some() || a.all {
                out.push((rec, pid));
            }
        }
    } else {
        for name in &a.containers {
            // A stopped container named explicitly shows zeros, as in Docker.
            let rec = c.resolve(name)?;
            let st = c.state(&rec.id)?;
            out.push((rec, st.is_running().then_some(st.pid)));
        }
    }
    Ok(out)
}

fn sample_all(
    chosen: &[(ContainerRecord, Option<i32>)],
    groups: &mut [Option<Cgroup>],
) -> Vec<Option<Sample>> {
    chosen
        .iter()
        .zip(groups.iter())
        .map(|((rec, pid), cg)| {
            let (pid, cg) = ((*pid)?, cg.as_ref()?);
            Some(Sample {
                usage: cg.usage(),
                net: if rec.host_config.host_network() {
                    (0, 0)
                } else {
                    net_bytes(pid)
                },
                at: Instant::now(),
            })
        })
        .collect()
}

/// Bytes received and sent through the network devices `pid` sees, loopback left out.
fn net_bytes(pid: i32) -> (u64, u64) {
    let text = std::fs::read_to_string(format!("/proc/{pid}/net/dev")).unwrap_or_default();
    let mut total = (0, 0);
    for line in text.lines().skip(2) {
        let Some((dev, counters)) = line.split_once(':') else {
            continue;
        };
        if dev.trim() == "lo" {
            continue;
        }
        let f: Vec<u64> = counters
            .split_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if f.len() >= 9 {
            total.0 += f[0];
            total.1 += f[8];
        }
    }
    total
}

/// The host's memory (what an unlimited container's MEM % is taken of).
fn host_memory() -> u64 {
    std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("MemTotal:"))
                .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        })
        .map(|kb| kb * 1024)
        .unwrap_or(0)
}

/// One container's row: Docker's columns from two readings (zeros for a stopped one).
fn row(rec: &ContainerRecord, a: Option<&Sample>, b: Option<&Sample>, host_mem: u64) -> Value {
    let name = rec.name.clone();
    let (cpu, used, limit, net, blk, pids) = match (a, b) {
        (Some(a), Some(b)) => {
            let wall = b.at.duration_since(a.at).as_nanos().max(1) as f64;
            let cpu = b.usage.cpu_ns.saturating_sub(a.usage.cpu_ns) as f64 / wall * 100.0;
            let limit = match b.usage.memory_limit {
                0 => host_mem,
                l => l.min(host_mem.max(1)),
            };
            (
                cpu,
                b.usage.memory,
                limit,
                b.net,
                (b.usage.block_read, b.usage.block_write),
                b.usage.pids,
            )
        }
        _ => (0.0, 0, 0, (0, 0), (0, 0), 0),
    };
    let mem_perc = if limit > 0 {
        used as f64 / limit as f64 * 100.0
    } else {
        0.0
    };
    json!({
        "Container": rec.id,
        "ID": rec.id,
        "Name": name,
        "CPUPerc": format!("{cpu:.2}%"),
        "MemUsage": format!("{} / {}", binary_size(used), binary_size(limit)),
        "MemPerc": format!("{mem_perc:.2}%"),
        "NetIO": format!("{} / {}", human_size(net.0), human_size(net.1)),
        "BlockIO": format!("{} / {}", human_size(blk.0), human_size(blk.1)),
        "PIDs": pids.to_string(),
    })
}

fn print_rows(format: &Format, rows: &[Value]) -> Result<()> {
    match format {
        Format::Table => {
            let cells: Vec<Vec<String>> = rows
                .iter()
                .map(|r| {
                    [
                        "ID", "Name", "CPUPerc", "MemUsage", "MemPerc", "NetIO", "BlockIO", "PIDs",
                    ]
                    .iter()
                    .map(|k| r[*k].as_str().unwrap_or("").to_string())
                    .collect()
                })
                .collect();
            print_table(
                &[
                    "CONTAINER ID",
                    "NAME",
                    "CPU %",
                    "MEM USAGE / LIMIT",
                    "MEM %",
                    "NET I/O",
                    "BLOCK I/O",
                    "PIDS",
                ],
                &cells,
            );
            Ok(())
        }
        other => print_formatted(other, rows, &HEADERS),
    }
}
