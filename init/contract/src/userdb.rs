//! The image's `/etc/passwd` and `/etc/group`, and the resolution of the
//! superset `user` field ("name", "uid", "name:group", "uid:gid") against
//! them. Static glibc has no NSS, so the files are parsed here. Malformed
//! lines (too few fields, a non-numeric id) are skipped.

/// Numeric credentials for a child.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credentials {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (the primary group first).
    pub groups: Vec<u32>,
}

/// A resolved user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Numeric credentials.
    pub creds: Credentials,
    /// Home directory from /etc/passwd, if the user is listed there.
    pub home: Option<String>,
}

/// Why a `user` spec did not resolve.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UserError {
    /// Neither a number nor a name in /etc/passwd.
    #[error("unknown user {0:?}")]
    UnknownUser(String),
    /// Neither a number nor a name in /etc/group.
    #[error("unknown group {0:?}")]
    UnknownGroup(String),
}

/// One well-formed /etc/passwd line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswdEntry<'a> {
    /// Login name (field 1).
    pub name: &'a str,
    /// User id (field 3).
    pub uid: u32,
    /// Primary group id (field 4).
    pub gid: u32,
    /// Home directory (field 6; empty when absent).
    pub home: &'a str,
}

/// One well-formed /etc/group line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupEntry<'a> {
    /// Group name (field 1).
    pub name: &'a str,
    /// Group id (field 3).
    pub gid: u32,
    /// Member login names (field 4, comma-separated, empty names dropped).
    pub members: Vec<&'a str>,
}

/// The well-formed lines of /etc/passwd, in file order.
pub fn passwd_entries(passwd: &str) -> impl Iterator<Item = PasswdEntry<'_>> {
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

/// The well-formed lines of /etc/group, in file order.
pub fn group_entries(group: &str) -> impl Iterator<Item = GroupEntry<'_>> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect());
        Some(GroupEntry {
            name: f.first()?,
            gid: f.get(2)?.parse().ok()?,
            members: members.unwrap_or_default(),
        })
    })
}

fn group_id(spec: &str, group: &str) -> Result<u32, UserError> {
    if let Ok(n) = spec.parse() {
        return Ok(n);
    }
    group_entries(group)
        .find(|g| g.name == spec)
        .map(|g| g.gid)
        .ok_or_else(|| UserError::UnknownGroup(spec.to_string()))
}

/// Resolve `spec` with the contents of /etc/passwd and /etc/group.
pub fn resolve(spec: &str, passwd: &str, group: &str) -> Result<User, UserError> {
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry =
        passwd_entries(passwd).find(|e| e.name == user_part || user_part.parse() == Ok(e.uid));
    let (uid, mut gid, name, home) = match (&entry, user_part.parse::<u32>()) {
        (Some(e), _) => (e.uid, e.gid, Some(e.name), Some(e.home.to_string())),
        (None, Ok(uid)) => (uid, uid, None, None),
        (None, Err(_)) => return Err(UserError::UnknownUser(user_part.to_string())),
    };
    if let Some(g) = group_part {
        gid = group_id(g, group)?;
    }
    let mut groups = vec![gid];
    if let Some(name) = name {
        for g in group_entries(group) {
            if g.members.contains(&name) && !groups.contains(&g.gid) {
                groups.push(g.gid);
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
            resolve("nobody", PASSWD, GROUP).unwrap_err().to_string(),
            "unknown user \"nobody\""
        );
        assert_eq!(
            resolve("app:nogroup", PASSWD, GROUP)
                .unwrap_err()
                .to_string(),
            "unknown group \"nogroup\""
        );
    }

    #[test]
    fn malformed_lines_are_skipped() {
        let names: Vec<&str> = passwd_entries(PASSWD).map(|e| e.name).collect();
        assert_eq!(names, ["root", "app"]);
        let wheel = group_entries(GROUP).nth(1).unwrap();
        assert_eq!((wheel.name, wheel.gid), ("wheel", 10));
        assert_eq!(wheel.members, ["app", "other"]);
        assert_eq!(passwd_entries("a:x:1\nb:x:y:0\n").count(), 0);
    }
}
