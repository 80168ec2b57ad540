//! Users and groups from the container's own `/etc/passwd` and `/etc/group`, parsed by hand
//! (never NSS in the host context). Callers read the files through a root-confined path.

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExecUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub home: String,
}

/// The gids of `--group-add` entries (names or numbers) in the group file's contents.
pub fn group_ids(wanted: &[String], group: &str) -> Result<Vec<u32>, String> {
    wanted
        .iter()
        .map(|g| match g.parse::<u32>() {
            Ok(n) => Ok(n),
            Err(_) => group
                .lines()
                .map(|l| l.split(':').collect::<Vec<_>>())
                .find(|f| f.len() >= 3 && f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                }),
        })
        .collect()
}

/// Resolves `user[:group]` (names or numbers) against the passwd and group file contents.
/// Docker's rules: a numeric user absent from passwd is fine (gid 0, home /); a name must exist.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<ExecUser, String> {
    let (u, g) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let u = if u.is_empty() { "0" } else { u };
    let entries: Vec<Vec<&str>> = passwd
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 4)
        .collect();
    let found = entries
        .iter()
        .find(|f| f[0] == u || (u.parse::<u32>().is_ok() && f[2] == u));
    let mut user = match (found, u.parse::<u32>()) {
        (Some(f), _) => ExecUser {
            uid: f[2]
                .parse()
                .map_err(|_| format!("invalid uid in /etc/passwd for {u}"))?,
            gid: f[3]
                .parse()
                .map_err(|_| format!("invalid gid in /etc/passwd for {u}"))?,
            additional_gids: Vec::new(),
            home: f
                .get(5)
                .filter(|h| !h.is_empty())
                .unwrap_or(&"/")
                .to_string(),
        },
        (None, Ok(uid)) => ExecUser {
            uid,
            gid: 0,
            additional_gids: Vec::new(),
            home: "/".into(),
        },
        (None, Err(_)) => {
            return Err(format!(
                "unable to find user {u}: no matching entries in passwd file"
            ))
        }
    };
    let groups: Vec<Vec<&str>> = group
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| l.split(':').collect())
        .filter(|f: &Vec<&str>| f.len() >= 3)
        .collect();
    if let Some(g) = g {
        user.gid = match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => groups
                .iter()
                .find(|f| f[0] == g)
                .and_then(|f| f[2].parse().ok())
                .ok_or_else(|| {
                    format!("unable to find group {g}: no matching entries in group file")
                })?,
        };
    } else {
        // Supplementary groups: every group that lists the user by name (its primary group
        // too when listed; `groups_for` decides whether the primary group is added).
        let name = found.map(|f| f[0]).unwrap_or("");
        for f in &groups {
            let members = f.get(3).copied().unwrap_or("");
            if !name.is_empty() && members.split(',').any(|m| m == name) {
                if let Ok(gid) = f[2].parse::<u32>() {
                    if !user.additional_gids.contains(&gid) {
                        user.additional_gids.push(gid);
                    }
                }
            }
        }
    }
    Ok(user)
}

/// The supplementary groups a process gets. Docker (`run`, `exec`): the primary group first,
/// then the groups listing the user and `--group-add`. BuildKit (build RUN steps): only the
/// groups listing the user.
pub fn groups_for(user: &ExecUser, buildkit: bool) -> Vec<u32> {
    let mut groups = if buildkit { Vec::new() } else { vec![user.gid] };
    for &g in &user.additional_gids {
        if !groups.contains(&g) {
            groups.push(g);
        }
    }
    groups
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str = "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\napp:x:1000:1000::/home/app:/bin/sh\n";
    const GROUP: &str = "root:x:0:\nusers:x:100:app,nobody\napp:x:1000:\n";

    #[test]
    fn users_and_groups() {
        assert_eq!(resolve("", PASSWD, GROUP).unwrap().uid, 0);
        let app = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!(
            (
                app.uid,
                app.gid,
                app.additional_gids.clone(),
                app.home.as_str()
            ),
            (1000, 1000, vec![100], "/home/app")
        );
        assert_eq!(
            resolve("1234", PASSWD, GROUP).unwrap(),
            ExecUser {
                uid: 1234,
                gid: 0,
                additional_gids: vec![],
                home: "/".into()
            }
        );
        assert_eq!(resolve("nobody:users", PASSWD, GROUP).unwrap().gid, 100);
        assert!(resolve("nosuch", PASSWD, GROUP).is_err());
        assert!(resolve("app:nosuch", PASSWD, GROUP).is_err());
    }
}
