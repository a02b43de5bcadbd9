//! Resolve the superset `user` field ("name", "uid", "name:group", "uid:gid")
//! against the image's /etc/passwd and /etc/group. Static glibc has no NSS, so
//! the files are parsed here.

use crate::sys::Credentials;

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Numeric credentials.
    pub creds: Credentials,
    /// Home directory from /etc/passwd, if the user is listed there.
    pub home: Option<String>,
}

struct PasswdEntry<'a> {
    name: &'a str,
    uid: u32,
    gid: u32,
    home: &'a str,
}

fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        Some(PasswdEntry {
            name: f.first()?,
            uid: f.get(2)?.parse().ok()?,
            gid: f.get(3)?.parse().ok()?,
            home: f.get(5).copied().unwrap_or(""),
        })
    })
}

/// (name, gid, members) of each /etc/group line.
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect());
        Some((
            *f.first()?,
            f.get(2)?.parse().ok()?,
            members.unwrap_or_default(),
        ))
    })
}

fn group_id(spec: &str, group: &str) -> Result<u32, String> {
    if let Ok(n) = spec.parse() {
        return Ok(n);
    }
    group_entries(group)
        .find(|(name, _, _)| *name == spec)
        .map(|(_, gid, _)| gid)
        .ok_or_else(|| format!("unknown group {spec:?}"))
}

/// Resolve `spec` with the contents of /etc/passwd and /etc/group.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<User, String> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry =
        passwd_entries(passwd).find(|e| e.name == user_part || user_part.parse() == Ok(e.uid));
    let (uid, mut gid, name, home) = match (&entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name), Some(e.home.to_string())),
        (None, Ok(uid)) => (uid, uid, None, None),
        (None, Err(_)) => return Err(format!("unknown user {user_part:?}")),
    };
    if let Some(g) = group_part {
        gid = group_id(g, group)?;
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for (_, g, members) in group_entries(group) {
            if members.contains(&name) && !groups.contains(&g) {
                groups.push(g);
            }
        }
    }
    Ok(User {
        creds: Credentials { uid, gid, groups },
        home: home.filter(|h| !h.is_empty()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\napp:x:1000:1000::/home/app:/bin/sh\nbroken\n";
    const GROUP: &str = "root:x:0:\nwheel:x:10:app,other\napp:x:1000:\nstaff:x:50:\n";

    #[test]
    fn by_name_with_supplementary_groups() {
        let u = resolve("app", PASSWD, GROUP).unwrap();
        assert_eq!(
            u.creds,
            Credentials {
                uid: 1000,
                gid: 1000,
                groups: vec![1000, 10]
            }
        );
        assert_eq!(u.home.as_deref(), Some("/home/app"));
    }

    #[test]
    fn numeric_and_explicit_group() {
        let u = resolve("4242:50", PASSWD, GROUP).unwrap();
        assert_eq!(
            u.creds,
            Credentials {
                uid: 4242,
                gid: 50,
                groups: vec![50]
            }
        );
        assert_eq!(u.home, None);
        let u = resolve("app:staff", PASSWD, GROUP).unwrap();
        assert_eq!(u.creds.gid, 50);
        let u = resolve("0", PASSWD, GROUP).unwrap();
        assert_eq!(u.home.as_deref(), Some("/root"));
    }

    #[test]
    fn unknown_names_are_errors() {
        assert_eq!(
            resolve("nobody", PASSWD, GROUP).unwrap_err(),
            "unknown user \"nobody\""
        );
        assert_eq!(
            resolve("app:nogroup", PASSWD, GROUP).unwrap_err(),
            "unknown group \"nogroup\""
        );
    }
}
