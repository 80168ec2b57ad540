//! Remote sources of `ADD`: HTTP(S) downloads and git repositories.
//!
//! A download is streamed into a private directory while it is hashed, under a size cap, with
//! redirects followed by hand (a loop ends in an error, not a hang). Git repositories are
//! fetched with the `git` command (shallow, one ref), never with a credential prompt.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use strata_image::digest::Hasher;
use strata_image::Digest;

use crate::RegistryError;

/// Redirects a download may follow.
const MAX_REDIRECTS: usize = 10;

/// A downloaded file.
#[derive(Debug, Clone)]
pub struct Download {
    pub path: PathBuf,
    pub digest: Digest,
    pub size: u64,
    /// The name the file gets when the destination is a directory: `Content-Disposition`'s
    /// filename, else the last segment of the URL path, else `index`.
    pub filename: String,
    /// `Last-Modified`, as Unix seconds.
    pub last_modified: Option<i64>,
}

fn fail(url: &str, what: impl std::fmt::Display) -> RegistryError {
    RegistryError::Transport(format!("ADD {url}: {what}"))
}

/// Downloads `url` into the directory `dir` (as `dir/download`), at most `max_bytes`.
pub fn download(
    url: &str,
    dir: &Path,
    max_bytes: u64,
    timeout: Duration,
) -> Result<Download, RegistryError> {
    let agent = ureq::AgentBuilder::new()
        .redirects(0)
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(timeout)
        .user_agent(concat!("strata/", env!("CARGO_PKG_VERSION")))
        .build();
    let mut current = url.to_string();
    let mut redirects = 0;
    let resp = loop {
        let resp = match agent.get(&current).call() {
            Ok(r) => r,
            Err(ureq::Error::Status(_, r)) => r,
            Err(ureq::Error::Transport(t)) => {
                return Err(fail(
                    url,
                    crate::client::transport_detail(&t).to_lowercase(),
                ))
            }
        };
        let status = resp.status();
        if (300..400).contains(&status) {
            let Some(loc) = resp.header("Location").map(str::to_string) else {
                return Err(fail(url, format!("status {status} without a Location")));
            };
            redirects += 1;
            if redirects > MAX_REDIRECTS {
                return Err(fail(url, format!("more than {MAX_REDIRECTS} redirects")));
            }
            current = url::Url::parse(&current)
                .and_then(|base| base.join(&loc))
                .map_err(|e| fail(url, format!("bad redirect {loc:?}: {e}")))?
                .to_string();
            continue;
        }
        if !(200..300).contains(&status) {
            return Err(fail(url, format!("status {status} {}", resp.status_text())));
        }
        break resp;
    };
    if let Some(len) = resp
        .header("Content-Length")
        .and_then(|l| l.parse::<u64>().ok())
    {
        if len > max_bytes {
            return Err(fail(
                url,
                format!("{len} bytes is more than the limit of {max_bytes} (STRATA_ADD_MAX_SIZE)"),
            ));
        }
    }
    let filename = resp
        .header("Content-Disposition")
        .and_then(disposition_filename)
        .or_else(|| url_filename(&current))
        .unwrap_or_else(|| "index".to_string());
    let last_modified = resp.header("Last-Modified").and_then(parse_http_date);
    let path = dir.join("download");
    let mut out =
        fs::File::create(&path).map_err(|e| fail(url, format!("{}: {e}", path.display())))?;
    let mut hasher = Hasher::new();
    let mut reader = resp.into_reader().take(max_bytes + 1);
    let mut buf = vec![0u8; 1 << 16];
    let mut size = 0u64;
    loop {
        let n = reader
            .read(&mut buf)
            .map_err(|e| fail(url, format!("reading the body: {e}")))?;
        if n == 0 {
            break;
        }
        size += n as u64;
        if size > max_bytes {
            drop(out);
            let _ = fs::remove_file(&path);
            return Err(fail(
                url,
                format!("more than the limit of {max_bytes} bytes (STRATA_ADD_MAX_SIZE)"),
            ));
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])
            .map_err(|e| fail(url, format!("{}: {e}", path.display())))?;
    }
    Ok(Download {
        path,
        digest: hasher.finish(),
        size,
        filename,
        last_modified,
    })
}

/// `attachment; filename="x.tar"` → `x.tar` (only its last path component; never `.`/`..`).
fn disposition_filename(value: &str) -> Option<String> {
    value.split(';').find_map(|part| {
        let (k, v) = part.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("filename") {
            return None;
        }
        safe_name(v.trim().trim_matches('"'))
    })
}

/// The last segment of the URL's path.
fn url_filename(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let last = u.path_segments()?.rfind(|s| !s.is_empty())?.to_string();
    safe_name(&last)
}

fn safe_name(s: &str) -> Option<String> {
    let name = s.rsplit('/').next().unwrap_or(s);
    (!name.is_empty() && name != "." && name != "..").then(|| name.to_string())
}

/// An HTTP date (`Sun, 06 Nov 1994 08:49:37 GMT`, the form RFC 9110 requires) → Unix seconds.
pub fn parse_http_date(s: &str) -> Option<i64> {
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let f: Vec<&str> = s.split_whitespace().collect();
    let [_, day, month, year, clock, "GMT"] = f.as_slice() else {
        return None;
    };
    let month = MONTHS.iter().position(|m| m == month)? + 1;
    let text = format!("{year}-{month:02}-{:02}T{clock}Z", day.parse::<u32>().ok()?);
    strata_cache::fsutil::parse_rfc3339(&text)
}

/// A git source of `ADD`: `URL[#REF][:SUBDIR]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GitSource {
    pub remote: String,
    pub reference: Option<String>,
    pub subdir: Option<String>,
}

impl GitSource {
    pub fn parse(source: &str) -> GitSource {
        let (remote, fragment) = match source.split_once('#') {
            Some((r, f)) => (r, Some(f)),
            None => (source, None),
        };
        let (reference, subdir) = match fragment {
            None => (None, None),
            Some(f) => match f.split_once(':') {
                Some((r, d)) => (Some(r), Some(d)),
                None => (Some(f), None),
            },
        };
        let non_empty = |s: Option<&str>| s.filter(|s| !s.is_empty()).map(str::to_string);
        GitSource {
            remote: remote.to_string(),
            reference: non_empty(reference),
            subdir: non_empty(subdir),
        }
    }
}

/// A checked-out repository.
#[derive(Debug, Clone)]
pub struct Checkout {
    /// The work tree (with `.git` only when kept), or the subdirectory of it asked for.
    pub dir: PathBuf,
    pub commit: String,
}

/// Fetches `src` (one ref, shallow) into the new directory `dir` and checks it out.
pub fn git_checkout(
    src: &GitSource,
    dir: &Path,
    keep_git_dir: bool,
) -> Result<Checkout, RegistryError> {
    let what = || src.remote.clone();
    let git = |args: &[&str]| -> Result<String, RegistryError> {
        let out = Command::new("git")
            .args([
                "-c",
                "advice.detachedHead=false",
                "-c",
                "init.defaultBranch=main",
            ])
            .args(args)
            .current_dir(dir)
            .env("GIT_TERMINAL_PROMPT", "0")
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_ASKPASS", "/bin/false")
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| fail(&what(), format!("running git: {e}")))?;
        if !out.status.success() {
            let err = String::from_utf8_lossy(&out.stderr);
            let last = err
                .lines()
                .rfind(|l| !l.trim().is_empty())
                .unwrap_or("")
                .trim();
            return Err(fail(&what(), format!("git {}: {last}", args[0])));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    };
    fs::create_dir_all(dir).map_err(|e| fail(&what(), format!("{}: {e}", dir.display())))?;
    git(&["init", "-q"])?;
    git(&["remote", "add", "origin", &src.remote])?;
    let reference = src.reference.as_deref().unwrap_or("HEAD");
    git(&[
        "fetch",
        "-q",
        "--depth",
        "1",
        "--no-tags",
        "origin",
        reference,
    ])?;
    git(&["checkout", "-q", "FETCH_HEAD"])?;
    let commit = git(&["rev-parse", "HEAD"])?;
    if !keep_git_dir {
        let g = dir.join(".git");
        fs::remove_dir_all(&g).map_err(|e| fail(&what(), format!("{}: {e}", g.display())))?;
    }
    let dir = match &src.subdir {
        None => dir.to_path_buf(),
        // Resolved inside the checkout: the repository's symlinks are untrusted.
        Some(sub) => strata_image::layer::resolve_in_root(dir, sub)
            .map_err(|e| fail(&what(), format!("subdirectory {sub}: {e}")))?,
    };
    Ok(Checkout { dir, commit })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_dates() {
        assert_eq!(
            parse_http_date("Sun, 06 Nov 1994 08:49:37 GMT"),
            Some(784111777)
        );
        assert_eq!(parse_http_date("yesterday"), None);
    }

    #[test]
    fn filenames() {
        assert_eq!(
            disposition_filename("attachment; filename=\"../x.tar\""),
            Some("x.tar".into())
        );
        assert_eq!(url_filename("http://h/a/b.txt?q=1"), Some("b.txt".into()));
        assert_eq!(url_filename("http://h/"), None);
    }

    #[test]
    fn git_sources() {
        assert_eq!(
            GitSource::parse("https://h/r.git#v1:sub"),
            GitSource {
                remote: "https://h/r.git".into(),
                reference: Some("v1".into()),
                subdir: Some("sub".into()),
            }
        );
    }
}
