//! Tier 3: the real `init` binary as PID 1 of new PID + mount namespaces with
//! loop-device disks. Needs root (as CI runs).

#![allow(clippy::unwrap_used)]

mod common;

use common::{config, Root, Scenario};

/// The app's lines after `marker`, up to the next `---` marker. init's own lines
/// (sentinels, log lines) are skipped: the app runs as soon as it is exec'd, so
/// its first lines may come before PROGRAM-START (as with hypeman's init).
fn lines_after<'a>(console: &'a [String], marker: &str) -> Vec<&'a str> {
    let start = console
        .iter()
        .position(|l| l == marker)
        .unwrap_or_else(|| panic!("no {marker}"));
    console[start + 1..]
        .iter()
        .map(String::as_str)
        .filter(|l| !l.starts_with("HYPEMAN-") && !l.contains("[hypeman-init:"))
        .take_while(|l| !l.starts_with("---"))
        .collect()
}

const PROBE: &str = r#"
echo "--- argv"; for a in "$@"; do echo "[$a]"; done
echo "--- env"; tr '\0' '\n' < /proc/$$/environ | sort
echo "--- cwd"; pwd
echo "--- ids"; id -u; id -g; id -G
echo "--- root"; cat /etc/marker; grep ' / ' /proc/mounts | awk '{print $3}'
echo "--- end"
"#;

#[test]
fn app_sees_the_overlay_root_with_exact_env_argv_workdir_and_user() {
    for root in [Root::Ext4, Root::Erofs] {
        let cfg = serde_json::json!({
            "entrypoint": ["/bin/sh", "-c"],
            "cmd": [PROBE, "argv0", "a b", "", "*"],
            "workdir": "/srv/work dir",
            "env": {"GREETING": "hello world", "EMPTY": ""},
            "init_mode": "exec",
            "skip_guest_agent": true,
            "user": "app",
        })
        .to_string();
        let mut s = Scenario::new(&cfg);
        s.root = root;
        let out = s.boot();
        let c = &out.console;
        assert_eq!(
            lines_after(c, "--- argv"),
            ["[a b]", "[]", "[*]"],
            "{root:?}"
        );
        assert_eq!(
            lines_after(c, "--- env"),
            [
                "EMPTY=",
                "GREETING=hello world",
                "HOME=/home/app",
                "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            ]
        );
        let text = out.text();
        assert_eq!(lines_after(c, "--- cwd"), ["/srv/work dir"], "{text}");
        assert_eq!(
            lines_after(c, "--- ids"),
            ["1000", "1000", "1000 10"],
            "{text}"
        );
        assert_eq!(
            lines_after(c, "--- root"),
            ["from-image", "overlay"],
            "{text}"
        );
        assert_eq!(
            out.exit_line(),
            r#"HYPEMAN-EXIT code=0 message="success""#,
            "{}",
            out.text()
        );
        out.assert_powered_off();
    }
}

#[test]
fn writes_land_on_the_overlay_disk() {
    let s = Scenario::new(&config(
        &[
            "/bin/sh",
            "-c",
            // The pause lets the initramfs release run to its end while the
            // overlay disk is still mounted inside the initramfs.
            "echo persisted > /srv/new-file && cat /srv/new-file && sleep 1",
        ],
        "",
    ));
    let running = s.start();
    let img = running.overlay_img.clone();
    let out = running.finish();
    assert!(
        out.console.iter().any(|l| l == "persisted"),
        "{}",
        out.text()
    );
    assert!(
        out.text().contains("[hypeman-init:switch] freed "),
        "{}",
        out.text()
    );
    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
    out.assert_powered_off();
    let fsck = std::process::Command::new("e2fsck")
        .arg("-fn")
        .arg(&img)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let listing = std::process::Command::new("debugfs")
        .args(["-R", "cat /upper/srv/new-file"])
        .arg(&img)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listing.stdout),
        "persisted\n",
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
}

#[test]
fn exit_codes_give_the_exact_messages() {
    let cases: [(&[&str], &str); 5] = [
        (&["/bin/true"], r#"code=0 message="success""#),
        (&["/bin/false"], r#"code=1 message="exit code 1""#),
        (
            &["/etc/not-executable"],
            r#"code=126 message="permission denied (command not executable)""#,
        ),
        (
            &["no-such-command"],
            r#"code=127 message="command not found""#,
        ),
        (
            &["/bin/sh", "-c", "kill -SEGV $$"],
            r#"code=139 message="killed by signal 11 (segmentation fault)""#,
        ),
    ];
    for (cmd, expected) in cases {
        let out = Scenario::new(&config(cmd, "")).boot();
        assert_eq!(
            out.exit_line(),
            format!("HYPEMAN-EXIT {expected}"),
            "{}",
            out.text()
        );
        // Also for 126/127: PROGRAM-START comes first, as a hypeman host sees it.
        let text = out.text();
        let start = text.find("HYPEMAN-PROGRAM-START ");
        assert!(
            start.is_some() && start < text.find("HYPEMAN-EXIT "),
            "{text}"
        );
        out.assert_powered_off();
    }
}

const TRAPS: &str = r#"
t=0 h=0 q=0 i=0
trap 'echo got-TERM; t=1' TERM
trap 'echo got-HUP; h=1' HUP
trap 'echo got-QUIT; q=1' QUIT
trap 'echo got-INT; i=1' INT
echo app-ready
n=0
while [ $n -lt 600 ]; do
  [ "$t$h$q$i" = 1111 ] && exit 0
  sleep 0.05; n=$((n+1))
done
exit 9
"#;

#[test]
fn signals_sent_to_pid1_reach_the_app() {
    let mut r = Scenario::new(&config(&["/bin/sh", "-c", TRAPS], "")).start();
    r.wait_line("app-ready");
    let signals = [
        (libc::SIGTERM, "TERM"),
        (libc::SIGHUP, "HUP"),
        (libc::SIGQUIT, "QUIT"),
        (libc::SIGINT, "INT"),
    ];
    for (sig, name) in signals {
        r.signal_init(sig);
        r.wait_line(&format!("got-{name}"));
    }
    let out = r.finish();
    assert_eq!(
        out.exit_line(),
        r#"HYPEMAN-EXIT code=0 message="success""#,
        "{}",
        out.text()
    );
    out.assert_powered_off();
}

#[test]
fn kill_term_1_from_the_app_reaches_the_app() {
    let script = r#"trap 'echo got-TERM; exit 42' TERM; kill -TERM 1; n=0; while [ $n -lt 200 ]; do sleep 0.05; n=$((n+1)); done; exit 3"#;
    let out = Scenario::new(&config(&["/bin/sh", "-c", script], "")).boot();
    assert!(
        out.console.iter().any(|l| l == "got-TERM"),
        "{}",
        out.text()
    );
    assert_eq!(
        out.exit_line(),
        r#"HYPEMAN-EXIT code=42 message="exit code 42""#
    );
    out.assert_powered_off();
}

#[test]
fn double_forked_children_leave_no_zombie() {
    let script = r#"
i=0; while [ $i -lt 100 ]; do sh -c 'sleep 0.3 & exit 0'; i=$((i+1)); done
sleep 1.5
z=0; for f in /proc/[0-9]*/stat; do s=$(awk '{print $3}' "$f" 2>/dev/null); [ "$s" = Z ] && z=$((z+1)); done
echo "zombies=$z"
"#;
    let out = Scenario::new(&config(&["/bin/sh", "-c", script], "")).boot();
    assert!(
        out.console.iter().any(|l| l == "zombies=0"),
        "{}",
        out.text()
    );
    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
}

fn assert_init_failure(out: &common::Outcome, phase: &str) {
    let line = out.exit_line();
    assert!(
        line.contains(&format!("message=\"init: {phase}: ")),
        "{line}\n{}",
        out.text()
    );
    assert!(
        out.console.iter().any(|l| l.contains("[ERROR]")),
        "{}",
        out.text()
    );
    assert!(!out
        .console
        .iter()
        .any(|l| l.starts_with("HYPEMAN-PROGRAM-START")));
    out.assert_powered_off();
}

#[test]
fn no_config_disk() {
    let mut s = Scenario::new("");
    s.config = None;
    let out = s.boot();
    assert_init_failure(&out, "devices");
    assert!(out
        .exit_line()
        .contains("/dev/hypeman-test-no-such-disk did not appear"));
}

#[test]
fn corrupt_config_json() {
    let out = Scenario::new("{\"cmd\": [\"/bin/true\",").boot();
    assert_init_failure(&out, "config");
}

#[test]
fn garbage_root_disk() {
    let mut s = Scenario::new(&config(&["/bin/true"], ""));
    s.root = Root::Garbage;
    let out = s.boot();
    assert_init_failure(&out, "root-disk");
    assert!(out.exit_line().contains("unknown filesystem"));
}

#[test]
fn forced_panic_ends_in_an_init_sentinel() {
    let mut s = Scenario::new(&config(&["/bin/true"], ""));
    s.cmdline = "hypeman.test_panic=1".into();
    let out = s.boot();
    assert_init_failure(&out, "internal");
    assert!(out.exit_line().contains("test-only panic trigger"));
}

#[test]
fn missing_workdir() {
    let cfg = config(&["/bin/true"], "").replace(r#""workdir":"/""#, r#""workdir":"/nope""#);
    let out = Scenario::new(&cfg).boot();
    assert_init_failure(&out, "workdir");
}

#[test]
fn agent_readiness_then_app() {
    let agent = "#!/bin/sh\necho \"agent fd=$HYPEMAN_AGENT_READY_FD file=$HYPEMAN_AGENT_READY_FILE\"\nprintf R >&3\nexec sleep 30\n";
    let cfg = config(&["/bin/sh", "-c", "ls /opt/hypeman; echo app-ran"], "")
        .replace(",\"skip_guest_agent\":true", "");
    let mut s = Scenario::new(&cfg);
    s.agent = Some(agent.into());
    let out = s.boot();
    let text = out.text();
    let agent_at = text
        .find("agent fd=3 file=/run/hypeman/guest-agent-ready")
        .expect(&text);
    let ready_at = text.find("guest agent ready").expect(&text);
    let start_at = text.find("HYPEMAN-PROGRAM-START ts=").expect(&text);
    assert!(agent_at < ready_at && ready_at < start_at, "{text}");
    assert!(out.console.iter().any(|l| l == "guest-agent"));
    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
}

#[test]
fn a_dying_agent_is_restarted_by_the_real_event_loop() {
    // Every run announces itself and exits 3 at once: restarts at ~1 s, then
    // ~3 s, but the app is gone at ~2 s, so there are exactly two runs.
    let agent = "#!/bin/sh\necho \"agent run fd=${HYPEMAN_AGENT_READY_FD:-none}\"\n[ -n \"$HYPEMAN_AGENT_READY_FD\" ] && printf R >&3\nexit 3\n";
    let cfg = config(
        &["/bin/sh", "-c", "cat /run/hypeman/boot-timings; sleep 2"],
        "",
    )
    .replace(",\"skip_guest_agent\":true", "");
    let mut s = Scenario::new(&cfg);
    s.agent = Some(agent.into());
    let out = s.boot();
    let runs: Vec<&String> = out
        .console
        .iter()
        .filter(|l| l.starts_with("agent run"))
        .collect();
    assert_eq!(
        runs,
        ["agent run fd=3", "agent run fd=none"],
        "{}",
        out.text()
    );
    let restarts: Vec<&String> = out
        .console
        .iter()
        .filter(|l| l.contains("[hypeman-init:agent] guest agent exited"))
        .collect();
    assert_eq!(restarts.len(), 2, "{}", out.text());
    assert!(restarts[0].ends_with("guest agent exited: exit code 3; restarting in 1 s"));
    assert!(restarts[1].ends_with("guest agent exited: exit code 3; restarting in 2 s"));
    let timings = out
        .console
        .iter()
        .find(|l| l.starts_with("mounts="))
        .expect("boot-timings");
    let names: Vec<&str> = timings
        .split(' ')
        .filter_map(|w| w.split_once('=').map(|(n, _)| n))
        .collect();
    assert_eq!(
        names,
        ["mounts", "modules", "devices", "disks", "config", "newroot", "switch"]
    );
    // While the app ran, a child of PID 1 freed the initramfs (init's own
    // binary is most of it) through the descriptor PID 1 kept.
    let init_kib = std::fs::metadata(env!("CARGO_BIN_EXE_init")).unwrap().len() / 1024;
    let freed: u64 = out
        .console
        .iter()
        .find_map(|l| l.split("[hypeman-init:switch] freed ").nth(1))
        .and_then(|r| r.split(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no freed line in {}", out.text()));
    assert!(
        freed >= init_kib,
        "{freed} KiB freed, init is {init_kib} KiB"
    );
    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
    out.assert_powered_off();
}

#[test]
fn missing_agent_is_one_error_and_boot_goes_on() {
    let cfg = config(&["/bin/true"], "").replace(",\"skip_guest_agent\":true", "");
    let out = Scenario::new(&cfg).boot();
    let errors: Vec<&String> = out
        .console
        .iter()
        .filter(|l| l.contains("[ERROR]"))
        .collect();
    assert_eq!(errors.len(), 1, "{}", out.text());
    assert!(errors[0].contains("guest-agent"));
    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
}

#[test]
fn direct_boot_from_a_read_only_image() {
    let script = "cat /etc/marker; echo new > /new-file && cat /new-file; grep ' / ' /proc/mounts | awk '{print $3}'";
    let mut s = Scenario::new(&config(&["/bin/sh", "-c", script], ""));
    s.direct = true;
    let out = s.boot();
    let c: Vec<&str> = out.console.iter().map(String::as_str).collect();
    for want in ["from-image", "new", "overlay"] {
        assert!(c.contains(&want), "{want}: {}", out.text());
    }
    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
    out.assert_powered_off();
}

#[test]
fn timing_line_is_separate_from_the_sentinel() {
    let out = Scenario::new(&config(&["/bin/true"], "")).boot();
    let start = out
        .console
        .iter()
        .find(|l| l.starts_with("HYPEMAN-PROGRAM-START "))
        .expect("start");
    assert!(start.ends_with(" mode=exec"), "{start}");
    let timing = out
        .console
        .iter()
        .find(|l| l.contains("[hypeman-init:timing]"))
        .expect("timing");
    for part in ["to execve", "mounts=", "devices=", "config=", "agent="] {
        assert!(timing.contains(part), "{timing}");
    }
}

#[test]
fn a_symlinked_run_in_the_image_becomes_a_tmpfs_directory() {
    let script = "[ -d /run ] && [ ! -L /run ] && echo run-is-a-dir; grep ' /run ' /proc/mounts | awk '{print $3}'";
    let mut s = Scenario::new(&config(&["/bin/sh", "-c", script], ""));
    s.files.push(("var/run/.keep".into(), String::new(), 0o644));
    s.symlinks.push(("run".into(), "/var/run".into()));
    let out = s.boot();
    let c: Vec<&str> = out.console.iter().map(String::as_str).collect();
    assert!(
        c.contains(&"run-is-a-dir") && c.contains(&"tmpfs"),
        "{}",
        out.text()
    );
    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
}

#[test]
fn the_network_is_configured_over_netlink_in_a_namespace_of_its_own() {
    let script = "echo '--- addr'; busybox ip -o -4 addr show dev eth0 | awk '{print $4}'; \
                  echo '--- link'; busybox ip -o link show eth0 | grep -o 'mtu [0-9]*'; \
                  busybox ip -o link show lo | grep -q UP && echo lo-up; \
                  echo '--- route'; busybox ip route show | grep default; \
                  echo '--- resolv'; cat /etc/resolv.conf; echo '--- end'";
    let extra = r#","network_enabled":true,"guest_ip":"10.0.2.15","guest_cidr":24,"guest_gw":"10.0.2.2","guest_dns":"10.0.2.3","search_domains":["corp.example"],"mtu":1400"#;
    let mut s = Scenario::new(&config(&["/bin/sh", "-c", script], extra));
    s.net = true;
    let out = s.boot();
    let c = &out.console;
    assert_eq!(
        lines_after(c, "--- addr"),
        ["10.0.2.15/24"],
        "{}",
        out.text()
    );
    assert_eq!(lines_after(c, "--- link"), ["mtu 1400", "lo-up"]);
    let route = lines_after(c, "--- route");
    assert!(
        route.len() == 1 && route[0].starts_with("default via 10.0.2.2 dev eth0"),
        "{route:?}"
    );
    assert_eq!(
        lines_after(c, "--- resolv"),
        ["nameserver 10.0.2.3", "search corp.example"]
    );
    assert!(out.text().contains(
        "[INFO] [hypeman-init:network] eth0 10.0.2.15/24 via 10.0.2.2 mtu 1400 dns 10.0.2.3"
    ));
    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
}

#[test]
fn no_eth0_in_its_namespace_is_the_network_failure() {
    let extra = r#","network_enabled":true,"guest_ip":"10.0.2.15","guest_cidr":24"#;
    let mut s = Scenario::new(&config(&["/bin/true"], extra));
    s.net = true;
    s.no_eth0 = true;
    let out = s.boot();
    let exit = out.exit_line();
    assert!(
        exit.starts_with("HYPEMAN-EXIT code=77 message=\"init: network: wait for eth0: "),
        "{exit}"
    );
}

#[test]
fn ipv6_and_an_interface_chosen_by_its_mac() {
    let script = "echo '--- addr'; busybox ip -o addr show dev ens9 | awk '$3 != \"inet6\" || $4 !~ /^fe80/ {print $3, $4}'; \
                  echo '--- route'; busybox ip -6 route show | grep default | awk '{print $1, $2, $3, $4, $5}'; echo '--- end'";
    let extra = r#","network_enabled":true,"guest_mac":"02:00:00:00:00:42","guest_ip":"10.0.2.15","guest_cidr":24,"guest_ipv6":"2001:db8::15/64","guest_gw6":"2001:db8::1""#;
    let mut s = Scenario::new(&config(&["/bin/sh", "-c", script], extra));
    s.net = true;
    s.net_link = Some(("ens9".into(), "02:00:00:00:00:42".into()));
    let out = s.boot();
    let c = &out.console;
    assert_eq!(
        lines_after(c, "--- addr"),
        ["inet 10.0.2.15/24", "inet6 2001:db8::15/64"],
        "{}",
        out.text()
    );
    assert_eq!(
        lines_after(c, "--- route"),
        ["default via 2001:db8::1 dev ens9"],
        "{}",
        out.text()
    );
    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
}

/// The system calls PID 1 makes from its first instruction to the app's
/// start (the PROGRAM-START line), by name, from its strace file, with those
/// of the threads it ran meanwhile (the concurrent disk mounts).
fn boot_path_syscalls(trace_dir: &std::path::Path) -> Vec<String> {
    for entry in std::fs::read_dir(trace_dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let Some(start) = text.find("execve(\"/init\"") else {
            continue;
        };
        let lines: Vec<&str> = text[start..]
            .lines()
            .skip(1)
            .take_while(|l| !l.contains("HYPEMAN-PROGRAM-START"))
            .collect();
        let mut calls = call_names(&lines);
        for tid in lines
            .iter()
            .filter(|l| l.contains("CLONE_THREAD"))
            // `= 7 /* 4726 in strace's PID NS */`: the file is named by the host's id.
            .filter_map(|l| {
                l.rsplit("/* ")
                    .next()?
                    .split(' ')
                    .next()?
                    .parse::<u32>()
                    .ok()
            })
        {
            let thread = std::fs::read_to_string(trace_dir.join(format!("t.{tid}"))).unwrap();
            calls.extend(call_names(&thread.lines().collect::<Vec<_>>()));
        }
        return calls;
    }
    panic!("no trace of /init in {}", trace_dir.display());
}

/// The system call names of strace lines (signals and exits skipped).
fn call_names(lines: &[&str]) -> Vec<String> {
    lines
        .iter()
        .filter_map(|l| {
            let name = l.split('(').next()?;
            let call =
                !name.is_empty() && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            call.then(|| name.to_string())
        })
        .collect()
}

#[test]
fn boot_path_syscall_count() {
    // The exec-mode boot with the config disk, app only (as boot-bench's
    // `init` variant), on the host's kernel: a count noise cannot move.
    let traces = tempfile::tempdir().unwrap();
    let mut s = Scenario::new(&config(&["/bin/true"], ""));
    s.trace = Some(traces.path().join("t"));
    let out = s.boot();

    assert_eq!(out.exit_line(), r#"HYPEMAN-EXIT code=0 message="success""#);
    let calls = boot_path_syscalls(traces.path());
    let mut by_name = std::collections::BTreeMap::new();
    for c in &calls {
        *by_name.entry(c.as_str()).or_insert(0u32) += 1;
    }
    let mut rows: Vec<(&str, u32)> = by_name.into_iter().collect();
    rows.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    println!("BOOT-PATH-SYSCALLS {} {rows:?}", calls.len());
    // Each mount, mkdir and log line is one call or a few: hundreds would
    // mean a loop where one call was meant.
    assert!(calls.len() < 400, "{} calls: {rows:?}", calls.len());
    // Every mount of the boot path is counted, the threads' too: early
    // mounts, the disks, overlayfs, the new root's.
    let mounts = calls.iter().filter(|c| *c == "mount").count();
    assert!(mounts >= 15, "{mounts} mounts: {rows:?}");
}
