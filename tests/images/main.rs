//! End to end: import, images, inspect, history, tag, rmi, save, load, system df/prune/check,
//! interop with skopeo and umoci, hostile archives, and crash safety of load.

mod archives;
mod store;

#[path = "../common/mod.rs"]
mod common;

use std::fs;
use std::process::Stdio;
use std::time::Duration;

use common::{busybox_tar, have, sh, tree_listing, Strata};

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

// ---- prune, df, info ----------------------------------------------------------------------

// ---- concurrency and crashes ----------------------------------------------------------------

/// An image of 16 layers of 150 small files each, saved (made once per test binary, into the
/// build's temp dir: a static's store would never be dropped): deleting its layers takes long
/// enough for a kill to land in the middle.
fn deep_image_archive() -> &'static std::path::Path {
    static DEEP: std::sync::OnceLock<std::path::PathBuf> = std::sync::OnceLock::new();
    DEEP.get_or_init(|| {
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
        let archive = std::path::Path::new(env!("CARGO_TARGET_TMPDIR"))
            .join(format!("deep-{}.tar", std::process::id()));
        s.ok(&["save", "-o", archive.to_str().unwrap(), "deep"]);
        archive
    })
}
