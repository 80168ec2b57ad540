//! Path arithmetic on the absolute, `/`-separated paths of an image (never the host's).

/// Cleans an absolute path (`/a/./b/../c` → `/a/c`).
pub fn clean_abs(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

/// `p` made absolute against `dir` (a relative path is below it), and cleaned.
pub fn absolute_in(dir: &str, p: &str) -> String {
    if p.starts_with('/') {
        clean_abs(p)
    } else {
        clean_abs(&format!("{}/{p}", dir.trim_end_matches('/')))
    }
}

/// For `--parents`: the prefix (with its trailing `/`) a source's paths lose, which is what
/// stands before a `/./` pivot (`a/./b/c` keeps `b/c`), or nothing.
pub fn parents_pivot(source: &str) -> String {
    match source.find("/./") {
        Some(i) => {
            let before = clean_abs(&source[..i]);
            let trimmed = before.trim_start_matches('/');
            if trimmed.is_empty() {
                String::new()
            } else {
                format!("{trimmed}/")
            }
        }
        None => String::new(),
    }
}
