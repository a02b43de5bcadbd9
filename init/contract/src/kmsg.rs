//! The kernel log as `/dev/kmsg` returns it: one record per read,
//! `prio,seq,usec,flags;message\n` followed by ` KEY=value` continuation
//! lines, and the OOM matcher that tells an OOM kill from any other SIGKILL.

/// Texts the kernel logs when it kills a process for memory: the global OOM
/// killer (`Out of memory: Killed process …`, `… invoked oom-killer: …`,
/// `oom-kill:constraint=…`), the memory cgroup's (`Memory cgroup out of
/// memory: Killed process …`) and the reaper (`oom_reaper: reaped process …`).
pub const OOM_MARKERS: [&str; 4] = [
    "Out of memory",
    "oom-kill",
    "oom_reaper",
    "Memory cgroup out of memory",
];

/// The message of one record: the text after the first `;` up to the end of
/// its first line; `None` without a `;`. Bytes that are not UTF-8 become
/// U+FFFD.
pub fn record_message(rec: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(rec);
    let (_, msg) = text.split_once(';')?;
    Some(msg.lines().next().unwrap_or("").to_string())
}

/// Whether one kernel log message reports an OOM kill.
pub fn is_oom_message(msg: &str) -> bool {
    OOM_MARKERS.iter().any(|m| msg.contains(m))
}

/// Whether any of the messages reports an OOM kill.
pub fn oom_killed<S: AsRef<str>>(messages: &[S]) -> bool {
    messages.iter().any(|m| is_oom_message(m.as_ref()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records() {
        let rec = b"3,100,5000000,-;Out of memory: Killed process 7\n SUBSYSTEM=x\n";
        assert_eq!(
            record_message(rec),
            Some("Out of memory: Killed process 7".into())
        );
        assert_eq!(record_message(b"garbage"), None);
        assert_eq!(record_message(b"6,1,2,-;"), Some(String::new()));
        assert_eq!(record_message(b"6,1,2,-;a;b\r\n"), Some("a;b".into()));
    }

    #[test]
    fn oom_texts_the_kernel_logs() {
        for msg in [
            "Out of memory: Killed process 1234 (app) total-vm:1052000kB, anon-rss:1024000kB",
            "app invoked oom-killer: gfp_mask=0x140cca(GFP_HIGHUSER_MOVABLE|__GFP_COMP), order=0",
            "oom-kill:constraint=CONSTRAINT_NONE,nodemask=(null),cpuset=/,mems_allowed=0,global_oom,task=app,pid=1234,uid=0",
            "oom_reaper: reaped process 1234 (app), now anon-rss:0kB, file-rss:0kB, shmem-rss:0kB",
            "Memory cgroup out of memory: Killed process 1234 (app) total-vm:1052000kB",
        ] {
            assert!(is_oom_message(msg), "{msg}");
        }
        assert!(is_oom_message("Out of memory"));
        assert!(is_oom_message("oom-kill"));
        assert!(is_oom_message("oom_reaper"));
    }

    #[test]
    fn other_texts_are_not_oom() {
        for msg in [
            "",
            "virtio_blk virtio1: [vda] 2097152 512-byte logical blocks",
            "out of memory",
            "oom kill",
            "oom_score_adj",
            "EXT4-fs (vdb): mounted filesystem with ordered data mode",
        ] {
            assert!(!is_oom_message(msg), "{msg}");
        }
        assert!(!oom_killed::<&str>(&[]));
        assert!(oom_killed(&["a".to_string(), "oom_reaper: x".to_string()]));
    }
}
