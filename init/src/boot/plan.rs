//! The pure half of the boot path: which mounts, in which order, where.

use crate::sys::{Mount, MountFlags};
use guest_contract::cmdline::Options;

/// How init was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BootKind {
    /// `/` is the initramfs (ramfs/tmpfs): the contract layout at the top level.
    Initramfs,
    /// The kernel booted straight from the image (`root=/dev/vda init=/init`):
    /// `/` is already the read-only image.
    Direct,
}

/// Where direct boot stages its mounts (a tmpfs on /run, which every image has
/// or init creates).
pub const DIRECT_STAGING: &str = "/run/.hypeman";

/// A mount step; `fatal` steps end the boot when they fail.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountStep {
    /// The mount.
    pub mount: Mount,
    /// Whether failure is fatal.
    pub fatal: bool,
}

fn step(mount: Mount, fatal: bool) -> MountStep {
    MountStep { mount, fatal }
}

fn nosuid_nodev() -> MountFlags {
    MountFlags {
        nosuid_nodev: true,
        ..MountFlags::default()
    }
}

fn noexec() -> MountFlags {
    MountFlags {
        noexec: true,
        ..nosuid_nodev()
    }
}

/// /proc, /sys, /dev, /dev/pts, /dev/shm, /run, cgroup2.
pub fn early_mounts() -> Vec<MountStep> {
    let none = MountFlags::default();
    let nosuid = MountFlags {
        noexec: false,
        ..noexec()
    };
    vec![
        step(Mount::fs("proc", "/proc", "proc", noexec(), ""), true),
        step(Mount::fs("sysfs", "/sys", "sysfs", noexec(), ""), true),
        step(
            Mount::fs("devtmpfs", "/dev", "devtmpfs", none, "mode=0755"),
            true,
        ),
        step(
            Mount::fs(
                "devpts",
                "/dev/pts",
                "devpts",
                noexec(),
                "gid=5,mode=620,ptmxmode=666",
            ),
            false,
        ),
        step(
            Mount::fs("shm", "/dev/shm", "tmpfs", nosuid, "mode=1777"),
            false,
        ),
        step(
            Mount::fs("tmpfs", "/run", "tmpfs", nosuid, "mode=0755"),
            true,
        ),
        step(
            Mount::fs(
                "cgroup2",
                "/sys/fs/cgroup",
                "cgroup2",
                noexec(),
                "nsdelegate",
            ),
            false,
        ),
    ]
}

/// Where the disks go, for one boot kind.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    /// Prefix of every staging path ("" for the initramfs).
    pub prefix: String,
}

impl Layout {
    /// The layout for a boot kind.
    pub fn new(kind: BootKind) -> Layout {
        let prefix = match kind {
            BootKind::Initramfs => String::new(),
            BootKind::Direct => DIRECT_STAGING.to_string(),
        };
        Layout { prefix }
    }

    /// `/lower` (read-only image).
    pub fn lower(&self) -> String {
        format!("{}/lower", self.prefix)
    }
    /// `/overlay` (writable disk or tmpfs).
    pub fn overlay(&self) -> String {
        format!("{}/overlay", self.prefix)
    }
    /// `/overlay/newroot`.
    pub fn newroot(&self) -> String {
        format!("{}/overlay/newroot", self.prefix)
    }
    /// `/mnt/config`.
    pub fn config_mnt(&self) -> String {
        format!("{}/mnt/config", self.prefix)
    }
}

/// Devices the boot must wait for.
pub fn devices(o: &Options, kind: BootKind) -> Vec<String> {
    let mut devs = Vec::new();
    if kind == BootKind::Initramfs {
        devs.push(o.root_dev.clone());
    }
    devs.extend(o.overlay_dev.clone());
    if !o.config_initrd && o.config_vsock.is_none() {
        devs.push(o.config_dev.clone());
    }
    devs
}

/// Where `hypeman.config=initrd` finds config.json: the initramfs root
/// (the host appends a second archive holding it).
pub const INITRD_CONFIG: &str = "/config.json";

/// The upper layer: the overlay disk (ext4) or a tmpfs.
pub fn overlay_mount(o: &Options, l: &Layout) -> Mount {
    match &o.overlay_dev {
        Some(dev) => Mount::fs(dev, &l.overlay(), "ext4", MountFlags::default(), ""),
        None => Mount::fs(
            "tmpfs",
            &l.overlay(),
            "tmpfs",
            MountFlags::default(),
            "mode=0755",
        ),
    }
}

/// overlayfs over /lower with upper/work on /overlay.
pub fn overlayfs_mount(l: &Layout) -> Mount {
    let data = format!(
        "lowerdir={},upperdir={o}/upper,workdir={o}/work",
        l.lower(),
        o = l.overlay()
    );
    Mount::fs(
        "overlay",
        &l.newroot(),
        "overlay",
        MountFlags::default(),
        &data,
    )
}

/// The config disk, read-only.
pub fn config_mount(o: &Options, l: &Layout) -> Mount {
    let ro = MountFlags {
        read_only: true,
        ..noexec()
    };
    Mount::fs(&o.config_dev, &l.config_mnt(), "ext4", ro, "noload")
}

/// Mounts that make the new root usable: /dev (recursive, so /dev/pts and
/// /dev/shm come along), /proc, /sys, /sys/fs/cgroup, a fresh /run.
pub fn newroot_mounts(newroot: &str, cgroup: bool) -> Vec<MountStep> {
    let mut steps = vec![
        step(Mount::bind("/dev", &format!("{newroot}/dev"), true), true),
        step(
            Mount::bind("/proc", &format!("{newroot}/proc"), false),
            true,
        ),
        step(Mount::bind("/sys", &format!("{newroot}/sys"), false), true),
    ];
    if cgroup {
        let target = format!("{newroot}/sys/fs/cgroup");
        steps.push(step(Mount::bind("/sys/fs/cgroup", &target, false), false));
    }
    let run = format!("{newroot}/run");
    steps.push(step(
        Mount::fs("tmpfs", &run, "tmpfs", nosuid_nodev(), "mode=0755"),
        true,
    ));
    steps
}

/// /dev/fd and /dev/std{in,out,err} as (target, link).
pub const DEV_LINKS: [(&str, &str); 4] = [
    ("/proc/self/fd", "/dev/fd"),
    ("/proc/self/fd/0", "/dev/stdin"),
    ("/proc/self/fd/1", "/dev/stdout"),
    ("/proc/self/fd/2", "/dev/stderr"),
];

/// Where the agent comes from and goes to.
pub const AGENT_SOURCE: &str = "/usr/local/bin/guest-agent";
/// The agent's path inside the new root.
pub const AGENT_TARGET: &str = "/opt/hypeman/guest-agent";
/// The agent's readiness file.
pub const AGENT_READY_FILE: &str = "/run/hypeman/guest-agent-ready";

/// PATH lookup for an argv[0] without a slash, as Go's `exec.LookPath`: the
/// first executable regular file; `None` when there is none (exit 127).
pub fn resolve_program(
    arg0: &str,
    path_var: &str,
    is_executable: impl Fn(&str) -> bool,
) -> Option<String> {
    if arg0.contains('/') {
        return Some(arg0.to_string());
    }
    path_var
        .split(':')
        .filter(|d| !d.is_empty())
        .map(|d| format!("{}/{arg0}", d.trim_end_matches('/')))
        .find(|p| is_executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts() {
        let l = Layout::new(BootKind::Initramfs);
        assert_eq!(l.newroot(), "/overlay/newroot");
        let m = overlayfs_mount(&l);
        assert_eq!(
            m.data,
            "lowerdir=/lower,upperdir=/overlay/upper,workdir=/overlay/work"
        );
        let d = Layout::new(BootKind::Direct);
        assert_eq!(d.lower(), "/run/.hypeman/lower");
        assert_eq!(d.config_mnt(), "/run/.hypeman/mnt/config");
    }

    #[test]
    fn devices_per_mode() {
        let o = Options::parse("");
        assert_eq!(
            devices(&o, BootKind::Initramfs),
            ["/dev/vda", "/dev/vdb", "/dev/vdc"]
        );
        assert_eq!(devices(&o, BootKind::Direct), ["/dev/vdb", "/dev/vdc"]);
        let t = Options::parse("hypeman.overlay=tmpfs");
        assert_eq!(devices(&t, BootKind::Initramfs), ["/dev/vda", "/dev/vdb"]);
        let i = Options::parse("hypeman.config=initrd");
        assert_eq!(devices(&i, BootKind::Initramfs), ["/dev/vda", "/dev/vdb"]);
        assert_eq!(
            overlay_mount(&t, &Layout::new(BootKind::Initramfs)).fstype,
            "tmpfs"
        );
    }

    #[test]
    fn path_lookup() {
        let exists = |p: &str| p == "/usr/bin/env" || p == "/bin/env";
        let found = |a, p| resolve_program(a, p, exists);
        let want = |s: &str| Some(s.to_string());
        assert_eq!(
            found("env", "/usr/local/bin:/usr/bin:/bin"),
            want("/usr/bin/env")
        );
        assert_eq!(found("nope", "/usr/bin"), None);
        assert_eq!(found("./x", "/usr/bin"), want("./x"));
        assert_eq!(found("env", "::/bin/"), want("/bin/env"));
    }
}
