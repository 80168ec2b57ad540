//! Output formatting shared by commands: Docker's human sizes and durations, aligned tables,
//! and `--format` (Go templates, [`crate::gotemplate`]).

use anyhow::Result;
use serde_json::Value;

/// Docker's `HumanSizeWithPrecision(size, 3)`: decimal units, 3 significant digits.
pub fn human_size(bytes: u64) -> String {
    scaled(
        bytes,
        1000.0,
        &["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"],
        3,
    )
}

/// Docker's `BytesSize` (memory in `stats`): binary units, 4 significant digits.
pub fn binary_size(bytes: u64) -> String {
    scaled(
        bytes,
        1024.0,
        &["B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"],
        4,
    )
}

fn scaled(bytes: u64, base: f64, units: &[&str], digits: i32) -> String {
    let mut size = bytes as f64;
    let mut i = 0;
    while size >= base && i < units.len() - 1 {
        size /= base;
        i += 1;
    }
    format!("{}{}", format_g(size, digits), units[i])
}

/// `%.Ng`: `n` significant digits, trailing zeros removed.
fn format_g(v: f64, n: i32) -> String {
    if v == 0.0 {
        return "0".into();
    }
    let digits = v.abs().log10().floor() as i32 + 1;
    let decimals = (n - digits).max(0) as usize;
    let s = format!("{v:.decimals$}");
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    } else {
        s
    }
}

/// go-units `HumanDuration`: "Less than a second", "About a minute", "2 weeks", ...
pub fn human_duration(secs: i64) -> String {
    let secs = secs.max(0);
    let minutes = secs / 60;
    let hours = ((secs as f64) / 3600.0 + 0.5) as i64;
    if secs < 1 {
        "Less than a second".into()
    } else if secs == 1 {
        "1 second".into()
    } else if secs < 60 {
        format!("{secs} seconds")
    } else if minutes == 1 {
        "About a minute".into()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".into()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", hours / 24 / 365)
    }
}

/// "3 weeks ago" for an RFC 3339 time.
pub fn since(rfc3339: &str) -> String {
    match strata_cache::fsutil::parse_rfc3339(rfc3339) {
        Some(t) => format!("{} ago", human_duration(now_unix() - t)),
        None => "N/A".into(),
    }
}

pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Prints rows as columns separated by three spaces, like Docker's tabwriter.
pub fn print_table(header: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if i < widths.len() {
                widths[i] = widths[i].max(c.chars().count());
            }
        }
    }
    let line = |cells: Vec<&str>| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                s.push_str(c);
            } else {
                s.push_str(c);
                s.push_str(&" ".repeat(widths[i] - c.chars().count() + 3));
            }
        }
        println!("{}", s.trim_end());
    };
    line(header.to_vec());
    for r in rows {
        line(r.iter().map(String::as_str).collect());
    }
}

/// How a listing command prints.
pub enum Format {
    Table,
    Json,
    Template { template: String, table: bool },
}

impl Format {
    pub fn parse(f: Option<&str>) -> Format {
        match f {
            None | Some("") | Some("table") => Format::Table,
            Some("json") => Format::Json,
            Some(t) => match t.strip_prefix("table") {
                Some(rest) => Format::Template {
                    template: rest.trim_start().to_string(),
                    table: true,
                },
                None => Format::Template {
                    template: t.to_string(),
                    table: false,
                },
            },
        }
    }
}

/// Prints objects with a `--format` choice; `headers` maps template fields to column titles.
pub fn print_formatted(format: &Format, items: &[Value], headers: &[(&str, &str)]) -> Result<()> {
    match format {
        Format::Table => unreachable!("callers print their own tables"),
        Format::Json => {
            for i in items {
                println!("{}", serde_json::to_string(i)?);
            }
        }
        Format::Template { template, table } => {
            let template = unescape(template);
            if *table {
                let mut hdr = template.clone();
                for (field, title) in headers {
                    hdr = hdr.replace(&format!("{{{{.{field}}}}}"), title);
                }
                let rows: Vec<Vec<String>> = items
                    .iter()
                    .map(|i| {
                        render(&template, i).map(|s| s.split('\t').map(str::to_string).collect())
                    })
                    .collect::<Result<_>>()?;
                let h: Vec<&str> = hdr.split('\t').collect();
                print_table(&h, &rows);
            } else {
                for i in items {
                    println!("{}", render(&template, i)?);
                }
            }
        }
    }
    Ok(())
}

fn unescape(s: &str) -> String {
    s.replace("\\t", "\t").replace("\\n", "\n")
}

/// Renders a Go template (`--format`) over one object (see [`crate::gotemplate`]).
pub fn render(template: &str, data: &Value) -> Result<String> {
    crate::gotemplate::render(template, data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_sizes() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(4_261_000), "4.26MB");
        assert_eq!(human_size(7_800_000), "7.8MB");
        assert_eq!(human_size(77_812_345), "77.8MB");
        assert_eq!(human_size(1_000), "1kB");
        assert_eq!(human_size(123_456_789_012), "123GB");
        assert_eq!(binary_size(1_065_353), "1.016MiB");
        assert_eq!(binary_size(16_777_216), "16MiB");
        assert_eq!(binary_size(16_777_216_000), "15.62GiB");
        assert_eq!(binary_size(0), "0B");
    }

    #[test]
    fn docker_durations() {
        assert_eq!(human_duration(0), "Less than a second");
        assert_eq!(human_duration(45), "45 seconds");
        assert_eq!(human_duration(61), "About a minute");
        assert_eq!(human_duration(3 * 3600), "3 hours");
        assert_eq!(human_duration(15 * 86400), "2 weeks");
        assert_eq!(human_duration(800 * 86400), "2 years");
    }
}
