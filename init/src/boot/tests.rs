//! Plan/apply tests: the whole boot sequence and every failure path, through
//! the recording fake.

use super::*;
use crate::sys::fake::FakeSys;
use crate::sys::{Event, Readiness, SpawnError, SpawnSpec};
use guest_contract::exit::InitFailure;
use nix::errno::Errno;

const MINIMAL: &str = r#"{"entrypoint":null,"cmd":["/bin/app","a b"],"workdir":"/srv","env":{"A":"1"},"network_enabled":false,"init_mode":"exec"}"#;
const CONFIG: &str = "/mnt/config/config.json";

fn booted(fake: &mut FakeSys) -> (i32, String) {
    let inputs = Inputs {
        cmdline_override: Some("console=ttyS0".into()),
        test_mode: false,
        start: Duration::from_millis(0),
    };
    run(fake, &inputs)
}

fn ready_fake(config: &str) -> FakeSys {
    let mut f = FakeSys::initramfs();
    f.file(CONFIG, config.as_bytes());
    f.file(plan::AGENT_SOURCE, b"\x7fELF agent");
    f.file("/dev/ttyS0", b"");
    f.dirs.insert("/srv".into());
    f.dirs.insert("/".into());
    f
}

fn exit_line(fake: &FakeSys) -> &str {
    let lines: Vec<&str> = fake
        .console
        .lines()
        .filter(|l| l.starts_with("HYPEMAN-EXIT "))
        .collect();
    assert_eq!(
        lines.len(),
        1,
        "exactly one EXIT sentinel in:\n{}",
        fake.console
    );
    lines[0]
}

fn index(fake: &FakeSys, call: &str) -> usize {
    fake.calls
        .iter()
        .position(|c| c.starts_with(call))
        .unwrap_or_else(|| panic!("no call {call:?} in {:#?}", fake.calls))
}

#[test]
fn whole_exec_sequence_in_order() {
    let mut f = ready_fake(MINIMAL);
    let (code, msg) = booted(&mut f);
    assert_eq!((code, msg.as_str()), (0, "success"));
    let order = [
        "setup_signals",
        "cad_off",
        "mount proc /proc proc",
        "mount sysfs /sys sysfs",
        "mount devtmpfs /dev devtmpfs mode=0755",
        "mount devpts /dev/pts devpts",
        "mount shm /dev/shm tmpfs mode=1777",
        "mount tmpfs /run tmpfs",
        "mount cgroup2 /sys/fs/cgroup cgroup2",
        "console /dev/ttyS0",
        "wait /dev/vda,/dev/vdb,/dev/vdc 10000ms",
        // The three disks at once (mount_concurrently), results in order;
        // config.json read and its disk detached on its mount's thread.
        "mount /dev/vda /lower ext4 noload",
        "mount /dev/vdb /overlay ext4",
        "mount /dev/vdc /mnt/config ext4 noload",
        "umount /mnt/config",
        "mount overlay /overlay/newroot overlay lowerdir=/lower,upperdir=/overlay/upper,workdir=/overlay/work",
        "open_dir /overlay",
        "symlink /dev/fd -> /proc/self/fd",
        "symlink /dev/stderr -> /proc/self/fd/2",
        "mount /dev /overlay/newroot/dev",
        "mount /proc /overlay/newroot/proc",
        "mount /sys /overlay/newroot/sys",
        "mount tmpfs /overlay/newroot/run tmpfs",
        "open_initramfs",
        "switch_root /overlay/newroot",
        "copy_fd /opt/hypeman/guest-agent 755",
        "spawn /opt/hypeman/guest-agent",
        "wait_ready 10000ms",
        "spawn /bin/app [\"/bin/app\", \"a b\"]",
        "start_initramfs_release",
        "kill_all 2000ms",
        "sync",
        "remount_ro /",
        "remount_ro /proc/self/fd/",
        "power_off",
    ];
    let positions: Vec<usize> = order.iter().map(|c| index(&f, c)).collect();
    assert!(
        positions.windows(2).all(|w| w[0] < w[1]),
        "order: {:#?}",
        f.calls
    );
    assert_eq!(exit_line(&f), r#"HYPEMAN-EXIT code=0 message="success""#);
    let start = f
        .console
        .find("HYPEMAN-PROGRAM-START ts=")
        .expect("program start");
    assert!(f.console[start..]
        .starts_with("HYPEMAN-PROGRAM-START ts=2026-02-13T16:26:40.000000005Z mode=exec\n"));
    assert!(
        f.console.contains("[hypeman-init:timing] init "),
        "{}",
        f.console
    );
}

#[test]
fn app_gets_exact_env_argv_workdir_and_agent_gets_readiness_vars() {
    let mut f = ready_fake(MINIMAL);
    booted(&mut f);
    let app = &f.spawned[1];
    assert_eq!(app.workdir, "/srv");
    assert_eq!(app.argv, ["/bin/app", "a b"]);
    let env: Vec<String> = app.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    assert_eq!(
        env,
        [
            "A=1",
            "HOME=/root",
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
        ]
    );
    let agent = &f.spawned[0];
    assert!(agent.readiness_fd);
    assert!(agent
        .env
        .contains(&("HYPEMAN_AGENT_READY_FD".into(), "3".into())));
    assert!(agent.env.contains(&(
        "HYPEMAN_AGENT_READY_FILE".into(),
        "/run/hypeman/guest-agent-ready".into()
    )));
}

#[test]
fn device_wait_is_one_bounded_event_driven_call() {
    // The seam has no sleep at all: waiting is one call with a deadline, which the
    // real implementation serves with inotify (see sys::real tests).
    let mut f = ready_fake(MINIMAL);
    booted(&mut f);
    assert_eq!(
        f.calls_with("wait "),
        ["wait /dev/vda,/dev/vdb,/dev/vdc 10000ms"]
    );
}

fn assert_init_failure(f: &FakeSys, failure: InitFailure, detail_part: &str) {
    let line = exit_line(f);
    let expected = format!("HYPEMAN-EXIT code={} message=", failure.code());
    assert!(line.starts_with(&expected), "{line}");
    assert!(
        line.contains(&format!("\"init: {}: ", failure.phase())),
        "{line}"
    );
    assert!(line.contains(detail_part), "{line} lacks {detail_part}");
    let errors: Vec<&str> = f
        .console
        .lines()
        .filter(|l| l.contains("[ERROR]"))
        .collect();
    assert!(errors.iter().any(|l| l.contains(detail_part)), "{errors:?}");
    assert_eq!(f.calls.last().map(String::as_str), Some("power_off"));
    assert!(f.calls.iter().rev().take(3).any(|c| c == "sync"));
    assert!(!f.calls.iter().any(|c| c.starts_with("spawn /bin/app")));
}

#[test]
fn missing_config_disk_names_the_device() {
    let mut f = ready_fake(MINIMAL);
    f.never_appear.insert("/dev/vdc".into());
    booted(&mut f);
    assert_init_failure(
        &f,
        InitFailure::DeviceTimeout,
        "/dev/vdc did not appear within 10000 ms",
    );
}

#[test]
fn garbage_root_disk() {
    let mut f = ready_fake(MINIMAL);
    f.file("/dev/vda", &[0xAB; 4096]);
    booted(&mut f);
    assert_init_failure(&f, InitFailure::RootDisk, "/dev/vda: unknown filesystem");
}

#[test]
fn corrupt_config_json() {
    let mut f = ready_fake("{\"cmd\": [");
    booted(&mut f);
    assert_init_failure(&f, InitFailure::ConfigInvalid, "config.json");
}

#[test]
fn config_file_missing_on_the_disk() {
    let mut f = ready_fake(MINIMAL);
    f.files.remove(CONFIG);
    booted(&mut f);
    assert_init_failure(&f, InitFailure::ConfigDisk, "read /mnt/config/config.json");
}

#[test]
fn config_disk_that_does_not_mount() {
    let mut f = ready_fake(MINIMAL);
    f.failing_mounts.insert("/mnt/config".into(), libc::EINVAL);
    booted(&mut f);
    assert_init_failure(&f, InitFailure::ConfigDisk, "mount /dev/vdc on /mnt/config");
}

#[test]
fn overlay_disk_that_does_not_mount() {
    let mut f = ready_fake(MINIMAL);
    f.failing_mounts.insert("/overlay".into(), libc::EINVAL);
    booted(&mut f);
    assert_init_failure(&f, InitFailure::OverlayDisk, "mount /dev/vdb on /overlay");
}

#[test]
fn disks_mount_together_and_the_first_failure_in_boot_order_is_reported() {
    // The overlay and the config disk both fail: the overlay's error is the
    // one reported (as when they were mounted one after the other).
    let mut f = ready_fake(MINIMAL);
    f.failing_mounts.insert("/overlay".into(), libc::EINVAL);
    f.failing_mounts.insert("/mnt/config".into(), libc::EIO);
    booted(&mut f);
    assert_init_failure(&f, InitFailure::OverlayDisk, "mount /dev/vdb on /overlay");
    // The root and the config disk: the root's.
    let mut f = ready_fake(MINIMAL);
    f.failing_mounts.insert("/lower".into(), libc::EINVAL);
    f.failing_mounts.insert("/mnt/config".into(), libc::EIO);
    booted(&mut f);
    assert_init_failure(&f, InitFailure::RootDisk, "mount /dev/vda on /lower");
    // With the config over vsock, the config disk is not mounted at all.
    let mut f = ready_fake(MINIMAL);
    f.vsock_served.insert(7, MINIMAL.as_bytes().to_vec());
    run_cmdline(&mut f, "console=ttyS0 hypeman.config=vsock:7");
    assert!(f.calls_with("mount /dev/vdc").is_empty(), "{:#?}", f.calls);
}

#[test]
fn early_mount_failure() {
    let mut f = ready_fake(MINIMAL);
    f.failing_mounts.insert("/proc".into(), libc::EPERM);
    booted(&mut f);
    assert_init_failure(&f, InitFailure::EarlyMount, "mount proc on /proc");
}

#[test]
fn optional_early_mount_failure_is_only_logged() {
    let mut f = ready_fake(MINIMAL);
    f.failing_mounts
        .insert("/sys/fs/cgroup".into(), libc::ENODEV);
    let (code, _) = booted(&mut f);
    assert_eq!(code, 0);
    assert!(f
        .console
        .contains("[ERROR] [hypeman-init:mounts] mount cgroup2 on /sys/fs/cgroup"));
}

#[test]
fn newroot_mount_failure() {
    let mut f = ready_fake(MINIMAL);
    f.failing_mounts
        .insert("/overlay/newroot/proc".into(), libc::ENOENT);
    booted(&mut f);
    assert_init_failure(&f, InitFailure::SwitchRoot, "/overlay/newroot/proc");
}

#[test]
fn missing_workdir_is_an_init_failure() {
    let mut f = ready_fake(MINIMAL);
    f.dirs.remove("/srv");
    booted(&mut f);
    assert_init_failure(&f, InitFailure::Workdir, "workdir /srv does not exist");
}

#[test]
fn empty_argv_is_an_init_failure() {
    let mut f = ready_fake(r#"{"cmd":null,"entrypoint":[]}"#);
    booted(&mut f);
    assert_init_failure(
        &f,
        InitFailure::ConfigInvalid,
        "entrypoint and cmd are both empty",
    );
}

#[test]
fn unknown_user_is_an_init_failure() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"user":"ghost"}"#);
    f.file("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n");
    booted(&mut f);
    assert_init_failure(&f, InitFailure::User, "unknown user");
}

#[test]
fn user_credentials_and_home() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"user":"app"}"#);
    f.file("/etc/passwd", b"app:x:1000:1001::/home/app:/bin/sh\n");
    f.file("/etc/group", b"app:x:1001:\nwheel:x:10:app\n");
    booted(&mut f);
    let app = &f.spawned[1];
    let creds = app.creds.clone().expect("credentials");
    assert_eq!(
        (creds.uid, creds.gid, creds.groups),
        (1000, 1001, vec![1001, 10])
    );
    assert!(app.env.contains(&("HOME".into(), "/home/app".into())));
}

#[test]
fn exec_not_found_is_127_and_not_executable_is_126() {
    for (errno, code, msg) in [
        (libc::ENOENT, 127, "command not found"),
        (libc::ENOTDIR, 127, "command not found"),
        (
            libc::EACCES,
            126,
            "permission denied (command not executable)",
        ),
        (
            libc::ENOEXEC,
            126,
            "permission denied (command not executable)",
        ),
        (
            libc::EISDIR,
            126,
            "permission denied (command not executable)",
        ),
    ] {
        let mut f = ready_fake(MINIMAL);
        f.spawn_results
            .insert("/bin/app".into(), SpawnError::Exec(Errno::from_raw(errno)));
        assert_eq!(booted(&mut f), (code, msg.to_string()));
        assert_eq!(
            exit_line(&f),
            format!("HYPEMAN-EXIT code={code} message=\"{msg}\"")
        );
        // PROGRAM-START, then why, then EXIT: the order a hypeman host sees.
        let start = f
            .console
            .find("HYPEMAN-PROGRAM-START ")
            .expect("start line");
        let why = f.console.find("[hypeman-init:exec]").expect("error line");
        let exit = f.console.find("HYPEMAN-EXIT ").expect("exit line");
        assert!(start < why && why < exit, "{}", f.console);
        assert_eq!(f.calls.last().map(String::as_str), Some("power_off"));
    }
}

#[test]
fn program_is_resolved_on_the_app_path() {
    let mut f = ready_fake(r#"{"cmd":["app"],"env":{"PATH":"/opt/bin:/usr/bin"}}"#);
    f.file("/usr/bin/app", b"");
    booted(&mut f);
    assert_eq!(f.spawned[1].path, "/usr/bin/app");
    assert_eq!(f.spawned[1].argv, ["app"]);
}

#[test]
fn signals_are_forwarded_and_orphans_reaped() {
    let mut f = ready_fake(MINIMAL);
    let app = 102; // agent is 101
    f.events.extend([
        Event::Signal(libc::SIGTERM),
        Event::Exited { pid: 555, code: 0 },
        Event::Signal(libc::SIGHUP),
        Event::Signal(libc::SIGQUIT),
        Event::Signal(libc::SIGINT),
        Event::Signal(libc::SIGUSR1),
        Event::Exited {
            pid: app,
            code: 143,
        },
    ]);
    booted(&mut f);
    assert_eq!(
        f.calls_with("kill "),
        ["kill 102 15", "kill 102 1", "kill 102 3", "kill 102 2"]
    );
    assert_eq!(
        exit_line(&f),
        r#"HYPEMAN-EXIT code=143 message="killed by signal 15 (terminated)""#
    );
}

#[test]
fn oom_is_judged_from_the_kernel_log() {
    let mut f = ready_fake(MINIMAL);
    f.events.push_back(Event::Exited {
        pid: 102,
        code: 137,
    });
    f.kmsg
        .push("Out of memory: Killed process 102 (app)".into());
    booted(&mut f);
    assert_eq!(
        exit_line(&f),
        r#"HYPEMAN-EXIT code=137 message="killed by signal 9 (killed) - OOM""#
    );
    let mut g = ready_fake(MINIMAL);
    g.events.push_back(Event::Exited {
        pid: 102,
        code: 137,
    });
    booted(&mut g);
    assert_eq!(
        exit_line(&g),
        r#"HYPEMAN-EXIT code=137 message="killed by signal 9 (killed)""#
    );
}

#[test]
fn missing_agent_is_one_error_line_and_boot_goes_on() {
    let mut f = ready_fake(MINIMAL);
    f.files.remove(plan::AGENT_SOURCE);
    assert_eq!(booted(&mut f).0, 0);
    let errors: Vec<&str> = f
        .console
        .lines()
        .filter(|l| l.contains("[ERROR]"))
        .collect();
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].contains("[hypeman-init:agent] /usr/local/bin/guest-agent"));
    assert_eq!(f.spawned.len(), 1);
}

#[test]
fn agent_timeout_is_one_error_line_and_boot_goes_on() {
    let mut f = ready_fake(MINIMAL);
    f.readiness = Some(Readiness::TimedOut);
    assert_eq!(booted(&mut f).0, 0);
    assert!(f
        .console
        .contains("[ERROR] [hypeman-init:agent] guest agent not ready within 10000 ms"));
}

#[test]
fn skip_guest_agent() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"skip_guest_agent":true}"#);
    booted(&mut f);
    assert!(f.calls_with("write /opt").is_empty());
    assert_eq!(f.spawned.len(), 1);
}

#[test]
fn unknown_config_keys_are_visible_in_the_log() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"entrypiont":["x"]}"#);
    booted(&mut f);
    assert!(
        f.console
            .contains("[hypeman-init:config] warning: unknown key \"entrypiont\""),
        "{}",
        f.console
    );
}

#[test]
fn tmpfs_overlay_uses_vdb_for_config() {
    let mut f = ready_fake(MINIMAL);
    let inputs = Inputs {
        cmdline_override: Some("hypeman.overlay=tmpfs".into()),
        test_mode: false,
        start: Duration::ZERO,
    };
    run(&mut f, &inputs);
    index(&f, "wait /dev/vda,/dev/vdb 10000ms");
    index(&f, "mount tmpfs /overlay tmpfs");
    index(&f, "mount /dev/vdb /mnt/config ext4");
    assert!(f.calls_with("open_dir").is_empty());
}

#[test]
fn direct_boot_binds_the_image_root() {
    let mut f = ready_fake(MINIMAL);
    f.root_magic = 0xEF53;
    f.files.remove("/dev/vda");
    f.files.insert(
        "/run/.hypeman/mnt/config/config.json".into(),
        MINIMAL.into(),
    );
    assert_eq!(booted(&mut f).0, 0);
    index(&f, "wait /dev/vdb,/dev/vdc 10000ms");
    index(&f, "mount / /run/.hypeman/lower");
    index(
        &f,
        "mount overlay /run/.hypeman/overlay/newroot overlay lowerdir=/run/.hypeman/lower,",
    );
    index(&f, "switch_root /run/.hypeman/overlay/newroot");
    assert!(f.calls_with("free_initramfs").is_empty());
    assert!(f.calls_with("open_initramfs").is_empty());
    assert!(f.calls_with("start_initramfs_release").is_empty());
}

#[test]
fn modules_load_in_dependency_order() {
    let mut f = ready_fake(MINIMAL);
    let dir = "/lib/modules/6.1.0-test";
    f.file(
        &format!("{dir}/modules.dep"),
        b"kernel/ext4.ko: kernel/jbd2.ko\nkernel/jbd2.ko:\nkernel/crc32c_generic.ko:\nextra/nvidia.ko:\nextra/nvidia-drm.ko: extra/nvidia.ko\n",
    );
    f.file(
        &format!("{dir}/modules.softdep"),
        b"softdep ext4 pre: crc32c\n",
    );
    f.file(
        &format!("{dir}/modules.alias"),
        b"alias crc32c crc32c_generic\n",
    );
    booted(&mut f);
    let loads = f.calls_with("load_module");
    assert_eq!(
        loads,
        [
            "load_module /lib/modules/6.1.0-test/kernel/crc32c_generic.ko",
            "load_module /lib/modules/6.1.0-test/kernel/jbd2.ko",
            "load_module /lib/modules/6.1.0-test/kernel/ext4.ko",
        ]
    );
    assert!(index(&f, "load_module") < index(&f, "console "));
}

#[test]
fn modules_off_loads_nothing() {
    let mut f = ready_fake(MINIMAL);
    f.file("/lib/modules/6.1.0-test/modules.dep", b"kernel/ext4.ko:\n");
    let inputs = Inputs {
        cmdline_override: Some("hypeman.modules=0".into()),
        test_mode: false,
        start: Duration::ZERO,
    };
    run(&mut f, &inputs);
    assert!(f.calls_with("load_module").is_empty());
}

#[test]
fn inherit_console_keeps_fds() {
    let mut f = ready_fake(MINIMAL);
    let inputs = Inputs {
        cmdline_override: Some("hypeman.console=inherit console=ttyS0".into()),
        test_mode: false,
        start: Duration::ZERO,
    };
    run(&mut f, &inputs);
    assert!(f.calls_with("console ").is_empty());
}

#[test]
fn kernel_modules_are_reported_not_dropped() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"kernel_modules":["dummy"]}"#);
    assert_eq!(booted(&mut f).0, 0);
    assert!(f
        .console
        .contains("[ERROR] [hypeman-init:config] kernel_modules is not supported"));
}

#[test]
fn systemd_mode_writes_the_units_and_hands_pid_1_over() {
    let cfg = r#"{"cmd":["/lib/systemd/systemd"],"env":{"A":"x y"},"init_mode":"systemd"}"#;
    let mut f = ready_fake(cfg);
    let (code, _) = booted(&mut f);
    assert_eq!(code, 0, "{}", f.console);
    let unit = "/etc/systemd/system/hypeman-agent.service";
    assert_eq!(f.files[unit], systemd_mode::AGENT_UNIT.as_bytes());
    let headers = "/etc/systemd/system/hypeman-kernel-headers.service";
    assert_eq!(f.files[headers], systemd_mode::HEADERS_UNIT.as_bytes());
    index(&f, "symlink /etc/systemd/system/multi-user.target.wants/hypeman-agent.service -> ../hypeman-agent.service");
    index(
        &f,
        "symlink /etc/systemd/system/serial-getty@ttyS0.service -> /dev/null",
    );
    for disk in ["vda", "vdb", "vdc"] {
        index(
            &f,
            &format!("symlink /etc/systemd/system/dev-{disk}.device -> /dev/null"),
        );
    }
    assert!(f.console.contains(
        "masked serial-getty@ttyS0.service, dev-vda.device, dev-vdb.device, dev-vdc.device"
    ));
    let env = String::from_utf8_lossy(&f.files[systemd_mode::ENV_FILE]).into_owned();
    assert!(
        env.starts_with("A='x y'\n")
            && env.contains("PATH=/usr/local/sbin:")
            && env.contains("HOME=/root"),
        "{env}"
    );
    let start = f.console.find("HYPEMAN-PROGRAM-START").expect("start line");
    assert!(f.console[start..].contains("mode=systemd"), "{}", f.console);
    let exec = index(&f, "exec_pid1 [\"/lib/systemd/systemd\"]");
    assert!(
        f.spawned
            .iter()
            .all(|s| !s.argv.iter().any(|a| a.contains("guest-agent"))),
        "systemd starts the agent"
    );
    assert!(exec > index(&f, "write /etc/hypeman/env"));
    assert!(!f.console.contains("HYPEMAN-EXIT"), "{}", f.console);
}

#[test]
fn systemd_mode_skips_and_failures() {
    let cfg = r#"{"init_mode":"systemd","skip_guest_agent":true,"skip_kernel_headers":true}"#;
    let mut f = ready_fake(cfg);
    f.exec_fails = true;
    booted(&mut f);
    assert!(!f
        .files
        .contains_key("/etc/systemd/system/hypeman-agent.service"));
    assert!(!f
        .files
        .contains_key("/etc/systemd/system/hypeman-kernel-headers.service"));
    index(&f, "exec_pid1 [\"/sbin/init\"]");
    assert_init_failure(&f, InitFailure::Spawn, "execute /sbin/init");
}

#[test]
fn enable_rosetta_is_a_known_key_with_nothing_to_do_on_x86_64() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"enable_rosetta":true}"#);
    assert_eq!(booted(&mut f).0, 0);
    assert!(!f.console.contains("unknown"), "{}", f.console);
    assert!(f
        .console
        .contains("[INFO] [hypeman-init:config] enable_rosetta: not applicable on x86_64"));
    assert!(!f.console.contains("[ERROR]"), "{}", f.console);
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"enable_rosetta":false}"#);
    booted(&mut f);
    assert!(!f.console.contains("rosetta"), "{}", f.console);
}

#[test]
fn debug_shell_runs_before_the_failure_is_reported() {
    let mut f = ready_fake(MINIMAL);
    f.file("/bin/sh", b"");
    f.never_appear.insert("/dev/vdc".into());
    let inputs = Inputs {
        cmdline_override: Some("hypeman.debug_shell=1".into()),
        test_mode: false,
        start: Duration::ZERO,
    };
    f.events.push_back(Event::Exited { pid: 101, code: 0 });
    run(&mut f, &inputs);
    assert_eq!(f.spawned.len(), 1);
    assert_eq!(f.spawned[0].path, "/bin/sh");
    assert!(index(&f, "spawn /bin/sh") < index(&f, "power_off"));
    assert_init_failure(&f, InitFailure::DeviceTimeout, "/dev/vdc");
}

#[test]
fn debug_shell_without_a_shell_is_one_more_error() {
    let mut f = ready_fake(MINIMAL);
    f.never_appear.insert("/dev/vdc".into());
    let inputs = Inputs {
        cmdline_override: Some("hypeman.debug_shell=1".into()),
        test_mode: false,
        start: Duration::ZERO,
    };
    run(&mut f, &inputs);
    assert!(f.spawned.is_empty());
    assert!(f
        .console
        .contains("debug shell requested but /bin/sh is missing"));
}

fn test_mode_inputs(cmdline: &str) -> Inputs {
    Inputs {
        cmdline_override: Some(cmdline.into()),
        test_mode: true,
        start: Duration::ZERO,
    }
}

#[test]
fn test_mode_refuses_default_devices() {
    let mut f = ready_fake(MINIMAL);
    run(
        &mut f,
        &test_mode_inputs("hypeman.root=/dev/loop1 hypeman.config=/dev/loop3"),
    );
    assert_init_failure(&f, InitFailure::DeviceTimeout, "test mode needs");
    assert!(f.calls_with("wait ").is_empty(), "no device is touched");
}

#[test]
fn test_mode_forces_inherited_console_and_no_modules() {
    let mut f = ready_fake(MINIMAL);
    f.file("/lib/modules/6.1.0-test/modules.dep", b"kernel/ext4.ko:\n");
    for dev in ["/dev/loop1", "/dev/loop2", "/dev/loop3"] {
        f.file(dev, &crate::sys::fake::ext4_head());
    }
    let cmdline = "console=ttyS0 hypeman.root=/dev/loop1 hypeman.overlay=/dev/loop2 hypeman.config=/dev/loop3";
    f.files
        .insert("/mnt/config/config.json".into(), MINIMAL.into());
    assert_eq!(run(&mut f, &test_mode_inputs(cmdline)).0, 0);
    assert!(f.calls_with("console ").is_empty());
    assert!(f.calls_with("load_module").is_empty());
    index(&f, "wait /dev/loop1,/dev/loop2,/dev/loop3");
}

#[test]
fn init_refuses_to_run_unless_pid_1() {
    let mut f = ready_fake(MINIMAL);
    f.pid = 4242;
    booted(&mut f);
    assert_init_failure(&f, InitFailure::Internal, "must run as PID 1");
    assert!(f.calls_with("mount ").is_empty());
}

#[test]
fn huge_config_is_refused_naming_the_limit() {
    let big = format!(
        "{{\"cmd\":[\"/bin/app\"],\"x\":\"{}\"}}",
        "a".repeat(2 << 20)
    );
    let mut f = ready_fake(&big);
    booted(&mut f);
    assert_init_failure(&f, InitFailure::ConfigInvalid, "1048576");
}

#[test]
fn nul_bytes_in_env_are_refused_without_printing_the_value() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"env":{"DB_PASSWORD":"s3cret\u0000"}}"#);
    booted(&mut f);
    assert_init_failure(
        &f,
        InitFailure::ConfigInvalid,
        "env DB_PASSWORD: value contains a NUL byte",
    );
    assert!(!f.console.contains("s3cret"));
}

#[test]
fn command_not_on_path_is_127_without_exec() {
    let mut f = ready_fake(r#"{"cmd":["app"],"env":{"PATH":"/usr/bin"}}"#);
    f.file("/usr/bin/app", b"");
    f.non_exec.insert("/usr/bin/app".into());
    assert_eq!(booted(&mut f), (127, "command not found".to_string()));
    assert!(!f.calls.iter().any(|c| c.starts_with("spawn app")));
    let why = f.console.find("app: executable file not found in $PATH");
    let start = f.console.find("HYPEMAN-PROGRAM-START ");
    assert!(start.is_some() && start < why, "{}", f.console);
}

#[test]
fn readiness_variables_from_the_config_are_replaced() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"env":{"HYPEMAN_AGENT_READY_FD":"9"}}"#);
    booted(&mut f);
    let fds: Vec<&String> = f.spawned[0]
        .env
        .iter()
        .filter(|(k, _)| k == "HYPEMAN_AGENT_READY_FD")
        .map(|(_, v)| v)
        .collect();
    assert_eq!(fds, ["3"]);
}

#[test]
fn failures_after_the_overlay_tear_down_cleanly() {
    let mut f = ready_fake(MINIMAL);
    f.dirs.remove("/srv");
    booted(&mut f);
    let tail: Vec<&str> = f
        .calls
        .iter()
        .rev()
        .take(6)
        .rev()
        .map(|c| c.trim_end_matches(|ch: char| ch.is_ascii_digit()))
        .collect();
    assert_eq!(
        tail,
        [
            "kill_all 2000ms",
            "sync",
            "remount_ro /",
            "remount_ro /proc/self/fd/",
            "sync",
            "power_off"
        ]
    );
}

#[test]
fn failures_before_the_switch_remount_the_staging_paths() {
    let mut f = ready_fake(r#"{"cmd": ["#);
    booted(&mut f);
    index(&f, "remount_ro /overlay/newroot");
    index(&f, "remount_ro /proc/self/fd/");
}

#[test]
fn agent_is_written_after_the_switch() {
    let mut f = ready_fake(MINIMAL);
    booted(&mut f);
    assert!(index(&f, "switch_root") < index(&f, "copy_fd /opt/hypeman/guest-agent 755"));
}

#[test]
fn superset_fields_not_served_yet_are_reported() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"mtu":1400,"kernel_modules":["x"],"user":"0"}"#);
    f.file("/etc/passwd", b"root:x:0:0::/root:/bin/sh\n");
    assert_eq!(booted(&mut f).0, 0);
    assert!(!f.console.contains("mtu is not supported"));
    assert!(f
        .console
        .contains("[hypeman-init:config] kernel_modules is not supported"));
    assert!(!f.console.contains("user is not supported"));
}

#[test]
fn hostname_and_sysctls_are_applied_before_the_agent() {
    let mut f = ready_fake(
        r#"{"cmd":["/bin/app"],"hostname":"guest-1","sysctls":{"vm.swappiness":"7","net/ipv4/conf/eth0.1/rp_filter":"0"}}"#,
    );
    f.file("/proc/sys/vm/swappiness", b"60");
    f.file("/proc/sys/net/ipv4/conf/eth0.1/rp_filter", b"1");
    assert_eq!(booted(&mut f).0, 0);
    index(&f, "hostname guest-1");
    assert!(index(&f, "switch_root") < index(&f, "write /etc/hosts 644"));
    assert_eq!(
        f.files["/etc/hosts"],
        b"127.0.0.1\tlocalhost\n127.0.1.1\tguest-1\n"
    );
    index(&f, "write_existing /proc/sys/vm/swappiness \"7\\n\"");
    index(
        &f,
        "write_existing /proc/sys/net/ipv4/conf/eth0.1/rp_filter",
    );
    assert!(index(&f, "write_existing /proc/sys/vm") < index(&f, "spawn /opt/hypeman/guest-agent"));
}

#[test]
fn bad_hostname_or_sysctl_is_a_config_failure() {
    for (cfg, detail) in [
        (
            r#"{"cmd":["/bin/app"],"hostname":"bad_name"}"#,
            "is not a valid host name",
        ),
        (
            r#"{"cmd":["/bin/app"],"sysctls":{"../../etc/shadow":"x"}}"#,
            "is not a valid name",
        ),
        (
            r#"{"cmd":["/bin/app"],"sysctls":{"vm.swappiness":"1\n2"}}"#,
            "value must be one line",
        ),
    ] {
        let mut f = ready_fake(cfg);
        f.file("/proc/sys/vm/swappiness", b"60");
        booted(&mut f);
        assert_init_failure(&f, InitFailure::ConfigInvalid, detail);
    }
}

#[test]
fn test_mode_never_sets_the_hosts_hostname_or_sysctls() {
    let mut f =
        ready_fake(r#"{"cmd":["/bin/app"],"hostname":"h","sysctls":{"vm.swappiness":"7"}}"#);
    f.file("/proc/sys/vm/swappiness", b"60");
    for dev in ["/dev/loop1", "/dev/loop2", "/dev/loop3"] {
        f.file(dev, &crate::sys::fake::ext4_head());
    }
    let cmdline = "hypeman.root=/dev/loop1 hypeman.overlay=/dev/loop2 hypeman.config=/dev/loop3";
    assert_eq!(run(&mut f, &test_mode_inputs(cmdline)).0, 0);
    assert!(f.calls_with("hostname").is_empty());
    assert!(f.calls_with("write_existing").is_empty());
    assert!(f.calls_with("watch_power_button").is_empty());
    assert!(f.console.contains("test mode: hostname h not set"));
}

#[test]
fn power_button_sends_sigterm_to_the_app() {
    let mut f = ready_fake(MINIMAL);
    f.events.extend([
        Event::PowerButton,
        Event::Exited {
            pid: 102,
            code: 143,
        },
    ]);
    booted(&mut f);
    assert_eq!(f.calls_with("kill "), ["kill 102 15"]);
    assert!(index(&f, "watch_power_button") < index(&f, "spawn /bin/app"));
    assert!(f
        .console
        .contains("power button: sending SIGTERM to the app"));
    assert_eq!(
        exit_line(&f),
        r#"HYPEMAN-EXIT code=143 message="killed by signal 15 (terminated)""#
    );
}

#[test]
fn symlinked_mount_points_in_the_image_become_directories() {
    let mut f = ready_fake(MINIMAL);
    f.symlinks.insert("/overlay/newroot/run".into());
    assert_eq!(booted(&mut f).0, 0);
    assert!(
        index(&f, "unsymlink /overlay/newroot/run") < index(&f, "mount tmpfs /overlay/newroot/run")
    );
    assert!(f
        .console
        .contains("/run was a symlink in the image; made it a directory"));
}

#[test]
fn a_sysctl_the_kernel_refuses_is_one_error_line() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"sysctls":{"vm.nonexistent":"1"}}"#);
    assert_eq!(booted(&mut f).0, 0);
    assert!(f
        .console
        .contains("[ERROR] [hypeman-init:system] sysctl vm.nonexistent:"));
}

#[test]
fn spawn_errors_carry_their_cause_once() {
    let fork = SpawnError::Fork(Errno::EAGAIN);
    assert_eq!(fork.to_string(), "cannot start process");
    assert_eq!(
        report::error_chain(&fork),
        format!("cannot start process: EAGAIN: {}", Errno::EAGAIN.desc())
    );
    let setup = SpawnError::Setup {
        step: "set up stdio",
        errno: Errno::EBADF,
    };
    assert_eq!(setup.to_string(), "set up stdio");
    assert_eq!(
        report::error_chain(&setup),
        format!("set up stdio: EBADF: {}", Errno::EBADF.desc())
    );
    assert_eq!(SpawnError::Exec(Errno::ENOENT).to_string(), "exec failed");
}

#[test]
fn a_fork_failure_names_its_errno_once() {
    let mut f = ready_fake(MINIMAL);
    f.spawn_results
        .insert("/bin/app".into(), SpawnError::Fork(Errno::EAGAIN));
    let (code, message) = booted(&mut f);
    assert_eq!(code, InitFailure::Spawn.code());
    assert_eq!(
        message,
        format!(
            "init: spawn: cannot start process: EAGAIN: {}",
            Errno::EAGAIN.desc()
        )
    );
}

#[test]
fn every_oom_text_marks_a_sigkill_as_oom() {
    for line in [
        "Out of memory: Killed process 102 (app) total-vm:1000kB",
        "oom-kill:constraint=CONSTRAINT_NONE,task=app,pid=102,uid=0",
        "oom_reaper: reaped process 102 (app), now anon-rss:0kB",
        "Memory cgroup out of memory: Killed process 102 (app)",
    ] {
        let mut f = ready_fake(MINIMAL);
        f.events.push_back(Event::Exited {
            pid: 102,
            code: 137,
        });
        f.kmsg = vec!["unrelated".into(), line.into()];
        booted(&mut f);
        assert_eq!(
            exit_line(&f),
            r#"HYPEMAN-EXIT code=137 message="killed by signal 9 (killed) - OOM""#,
            "{line}"
        );
    }
}

// ---- Boot timings for the agent, and agent supervision ----

const AGENT: &str = plan::AGENT_TARGET;

/// The messages of init's `agent` lines (after the tag), INFO and ERROR.
fn agent_lines(f: &FakeSys) -> Vec<&str> {
    let tag = "[hypeman-init:agent] ";
    f.console
        .lines()
        .filter_map(|l| l.split_once(tag).map(|(_, m)| m))
        .filter(|m| *m != "guest agent ready")
        .collect()
}

fn errors(f: &FakeSys) -> Vec<&str> {
    f.console
        .lines()
        .filter(|l| l.contains("[ERROR]"))
        .collect()
}

/// The clock (ms) at each spawn of the agent.
fn agent_spawn_clock(f: &FakeSys) -> Vec<u64> {
    f.spawned
        .iter()
        .zip(&f.spawn_clock)
        .filter(|(s, _)| s.path == AGENT)
        .map(|(_, t)| *t)
        .collect()
}

/// The clock (ms) when each of `pids` was reported exited.
fn exit_clock(f: &FakeSys, pids: &[i32]) -> Vec<u64> {
    let at = |p: i32| {
        f.delivered
            .iter()
            .find(|(_, e)| matches!(e, Event::Exited { pid, .. } if *pid == p))
            .map(|(t, _)| *t)
            .unwrap_or_else(|| panic!("pid {p} never exited"))
    };
    pids.iter().map(|p| at(*p)).collect()
}

/// The bounds (ms) of the supervisor's waits.
fn wait_bounds(f: &FakeSys) -> Vec<u64> {
    f.calls_with("wait_event ")
        .iter()
        .filter_map(|c| {
            c.strip_prefix("wait_event ")?
                .strip_suffix("ms")?
                .parse()
                .ok()
        })
        .collect()
}

/// `later - earlier` is `delay_ms`, give or take the fake clock's few ticks.
fn assert_after(earlier: u64, later: u64, delay_ms: u64) {
    let gap = later - earlier;
    assert!(
        (delay_ms..delay_ms + 10).contains(&gap),
        "{gap} ms instead of {delay_ms} ms"
    );
}

#[test]
fn boot_timings_are_written_after_the_switch_before_the_agent() {
    let mut f = ready_fake(MINIMAL);
    assert_eq!(booted(&mut f).0, 0);
    // The fake clock ticks 1 ms per read: each phase took 1 ms.
    let text = String::from_utf8_lossy(&f.files["/run/hypeman/boot-timings"]).into_owned();
    assert_eq!(
        text,
        "mounts=1000 modules=1000 devices=1000 disks=1000 config=1000 newroot=1000 switch=1000\n"
    );
    let write = index(&f, "write /run/hypeman/boot-timings 644");
    assert!(index(&f, "switch_root") < write);
    assert!(write < index(&f, "spawn /opt/hypeman/guest-agent"));
    assert!(f.console.contains("switch=1.000 ms"), "{}", f.console);
}

#[test]
fn boot_timings_are_written_without_an_agent_too() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"skip_guest_agent":true}"#);
    booted(&mut f);
    assert!(f.files.contains_key("/run/hypeman/boot-timings"));
}

#[test]
fn a_dying_agent_is_restarted_after_1_s_then_2_4_8_16_30_30() {
    let mut f = ready_fake(MINIMAL);
    // The agent is 101, the app 102, restarted agents 103, 104, …
    let dead = [101, 103, 104, 105, 106, 107, 108];
    for (i, pid) in dead.iter().enumerate() {
        let code = if i == 2 { 1 } else { 137 };
        f.events
            .extend([Event::Exited { pid: *pid, code }, Event::Timeout]);
    }
    assert_eq!(booted(&mut f), (0, "success".to_string()));
    let delays = [1u64, 2, 4, 8, 16, 30, 30];
    let expected: Vec<String> = delays
        .iter()
        .enumerate()
        .map(|(i, d)| {
            let status = if i == 2 {
                "exit code 1"
            } else {
                "killed by signal 9 (killed)"
            };
            format!("guest agent exited: {status}; restarting in {d} s")
        })
        .collect();
    assert_eq!(agent_lines(&f), expected);
    assert!(errors(&f).is_empty(), "{:?}", errors(&f));
    let starts = agent_spawn_clock(&f);
    assert_eq!(starts.len(), 1 + dead.len());
    let deaths = exit_clock(&f, &dead);
    for (i, d) in delays.iter().enumerate() {
        assert_after(deaths[i], starts[i + 1], d * 1000);
    }
    // The timer is the bound of the one wait: unbounded while the agent runs.
    let bounds = wait_bounds(&f);
    assert_eq!(bounds.len(), delays.len(), "{bounds:?}");
    for (b, d) in bounds.iter().zip(delays) {
        assert!((d * 1000 - 10..=d * 1000).contains(b), "{bounds:?}");
    }
    assert_eq!(exit_line(&f), r#"HYPEMAN-EXIT code=0 message="success""#);
}

#[test]
fn a_restarted_agent_gets_the_same_environment_without_the_readiness_pipe() {
    let mut f = ready_fake(MINIMAL);
    f.events.extend([
        Event::Exited {
            pid: 101,
            code: 137,
        },
        Event::Timeout,
    ]);
    booted(&mut f);
    let agents: Vec<&SpawnSpec> = f.spawned.iter().filter(|s| s.path == AGENT).collect();
    assert_eq!(agents.len(), 2);
    let (first, again) = (agents[0], agents[1]);
    assert!(first.readiness_fd && !again.readiness_fd);
    let mut expected = first.env.clone();
    expected.retain(|(k, _)| k != "HYPEMAN_AGENT_READY_FD");
    assert_eq!(again.env, expected);
    assert!(again.env.contains(&(
        "HYPEMAN_AGENT_READY_FILE".into(),
        plan::AGENT_READY_FILE.into()
    )));
    assert_eq!((&again.argv, &again.workdir), (&first.argv, &first.workdir));
    // No readiness wait on a restart.
    assert_eq!(f.calls_with("wait_ready").len(), 1);
}

#[test]
fn an_agent_that_stayed_up_a_minute_is_restarted_after_1_s_again() {
    let mut f = ready_fake(MINIMAL);
    f.events.extend([
        Event::Exited {
            pid: 101,
            code: 137,
        },
        Event::Timeout,
        Event::Exited {
            pid: 103,
            code: 137,
        },
        Event::Timeout,
        Event::Exited {
            pid: 104,
            code: 137,
        },
        Event::Timeout,
    ]);
    // Agent 104 runs for a minute before it dies.
    f.pauses.insert(4, 60_000);
    booted(&mut f);
    let delays: Vec<&str> = agent_lines(&f)
        .iter()
        .filter_map(|l| l.split_once("restarting in ").map(|(_, d)| d))
        .collect();
    assert_eq!(delays, ["1 s", "2 s", "1 s"]);
}

#[test]
fn the_app_exiting_while_a_restart_is_pending_is_reported_at_once() {
    let mut f = ready_fake(MINIMAL);
    f.events.extend([
        Event::Exited {
            pid: 101,
            code: 137,
        },
        Event::Signal(libc::SIGTERM),
        Event::Exited { pid: 555, code: 0 },
        Event::Exited {
            pid: 102,
            code: 143,
        },
    ]);
    let (code, _) = booted(&mut f);
    assert_eq!(code, 143);
    // Signals still reach the app and orphans are still reaped.
    assert_eq!(f.calls_with("kill "), ["kill 102 15"]);
    assert_eq!(
        agent_lines(&f),
        ["guest agent exited: killed by signal 9 (killed); restarting in 1 s"]
    );
    // The restart was pending (bounded waits), never run, and not waited for.
    assert_eq!(wait_bounds(&f).len(), 3);
    assert_eq!(agent_spawn_clock(&f).len(), 1);
    let [died, app_exited] = exit_clock(&f, &[101, 102])[..] else {
        unreachable!()
    };
    assert!(app_exited - died < 1000);
    assert_eq!(
        exit_line(&f),
        r#"HYPEMAN-EXIT code=143 message="killed by signal 15 (terminated)""#
    );
    let after_exit = &f.calls[index(&f, "kill_all")..];
    assert!(!after_exit.iter().any(|c| c.starts_with("spawn")));
    assert_eq!(f.calls.last().map(String::as_str), Some("power_off"));
}

#[test]
fn an_agent_that_cannot_start_again_is_logged_and_retried_later() {
    let mut f = ready_fake(MINIMAL);
    // Spawns: 0 agent, 1 app, 2 and 3 failed restarts, 4 a good one.
    f.spawn_errors_at.insert(2, SpawnError::Fork(Errno::EAGAIN));
    f.spawn_errors_at.insert(3, SpawnError::Exec(Errno::ENOENT));
    f.events.extend([
        Event::Exited { pid: 101, code: 1 },
        Event::Timeout,
        Event::Timeout,
        Event::Timeout,
    ]);
    assert_eq!(booted(&mut f), (0, "success".to_string()));
    let expected = [
        "guest agent exited: exit code 1; restarting in 1 s".to_string(),
        format!(
            "cannot restart {AGENT}: cannot start process: EAGAIN: {}; retrying in 2 s",
            Errno::EAGAIN.desc()
        ),
        format!(
            "cannot restart {AGENT}: exec failed: ENOENT: {}; retrying in 4 s",
            Errno::ENOENT.desc()
        ),
    ];
    assert_eq!(agent_lines(&f), expected);
    assert!(errors(&f).is_empty(), "{:?}", errors(&f));
    let starts = agent_spawn_clock(&f);
    assert_eq!(starts.len(), 4);
    assert_after(exit_clock(&f, &[101])[0], starts[1], 1000);
    assert_after(starts[1], starts[2], 2000);
    assert_after(starts[2], starts[3], 4000);
    assert_eq!(exit_line(&f), r#"HYPEMAN-EXIT code=0 message="success""#);
}

#[test]
fn a_first_start_that_fails_is_one_error_and_is_retried() {
    let mut f = ready_fake(MINIMAL);
    f.spawn_errors_at.insert(0, SpawnError::Fork(Errno::EAGAIN));
    f.events.push_back(Event::Timeout);
    assert_eq!(booted(&mut f).0, 0);
    let errors = errors(&f);
    assert_eq!(errors.len(), 1, "{errors:?}");
    let tail = format!(
        "{AGENT}: cannot start process: EAGAIN: {}; retrying in 1 s",
        Errno::EAGAIN.desc()
    );
    assert!(errors[0].ends_with(&tail), "{errors:?}");
    assert!(f.calls_with("wait_ready").is_empty());
    let starts = agent_spawn_clock(&f);
    assert_eq!(starts.len(), 2);
    assert_after(starts[0], starts[1], 1000);
}

const NETWORK: &str = r#"{"cmd":["/bin/app"],"network_enabled":true,"guest_ip":"10.0.2.15","guest_cidr":24,"guest_gw":"10.0.2.2","guest_dns":"10.0.2.3","dns_servers":["10.0.2.4"],"search_domains":["corp.example"],"mtu":1400}"#;

#[test]
fn network_is_configured_over_netlink_before_the_agent_and_the_app() {
    let mut f = ready_fake(NETWORK);
    assert_eq!(booted(&mut f).0, 0);
    let order = [
        "switch_root",
        "net wait lo 0ms",
        "net up 1",
        "net wait eth0 5000ms",
        "net addr 2 10.0.2.15/24",
        "net up 2 mtu 1400",
        "net route 2 via 10.0.2.2",
        "write /etc/resolv.conf",
        "spawn /opt/hypeman/guest-agent",
        "spawn /bin/app",
    ];
    let at: Vec<usize> = order.iter().map(|c| index(&f, c)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{:#?}", f.calls);
    assert_eq!(
        f.files["/etc/resolv.conf"],
        b"nameserver 10.0.2.3\nnameserver 10.0.2.4\nsearch corp.example\n"
    );
    assert!(f.console.contains(
        "[INFO] [hypeman-init:network] eth0 10.0.2.15/24 via 10.0.2.2 mtu 1400 dns 10.0.2.3,10.0.2.4"
    ));
}

#[test]
fn only_what_is_given_is_configured() {
    let mut f = ready_fake(r#"{"cmd":["/bin/app"],"network_enabled":true}"#);
    assert_eq!(booted(&mut f).0, 0);
    assert_eq!(
        f.calls_with("net "),
        [
            "net wait lo 0ms",
            "net up 1",
            "net wait eth0 5000ms",
            "net up 2"
        ]
    );
    assert!(!f.files.contains_key("/etc/resolv.conf"));
    let mut off =
        ready_fake(r#"{"cmd":["/bin/app"],"network_enabled":false,"guest_ip":"10.0.2.15"}"#);
    assert_eq!(booted(&mut off).0, 0);
    assert!(off.calls_with("net ").is_empty());
}

#[test]
fn network_failures_end_the_boot_with_77_before_the_app() {
    let mut no_link = ready_fake(NETWORK);
    no_link.net_links.remove("eth0");
    booted(&mut no_link);
    assert_init_failure(
        &no_link,
        InitFailure::Network,
        "wait for eth0: no interface eth0",
    );
    for (kind, detail) in [
        ("addr", "eth0 address 10.0.2.15/24: "),
        ("route", "default route via 10.0.2.2: "),
        ("up", "lo up: "),
    ] {
        let mut f = ready_fake(NETWORK);
        f.failing_net.insert(kind.into());
        booted(&mut f);
        assert_init_failure(&f, InitFailure::Network, detail);
        assert!(f.calls_with("spawn /bin/app").is_empty(), "{kind}");
    }
}

#[test]
fn bad_network_keys_are_a_config_failure() {
    let mut f = ready_fake(
        r#"{"cmd":["/bin/app"],"network_enabled":true,"guest_ip":"10.0.2.300","guest_cidr":24}"#,
    );
    booted(&mut f);
    assert_init_failure(&f, InitFailure::ConfigInvalid, "guest_ip: ");
    assert!(f.calls_with("net ").is_empty());
}

#[test]
fn test_mode_configures_the_network_only_in_its_own_namespace() {
    for (extra, configured) in [("", false), (" hypeman.test_net=1", true)] {
        let mut f = ready_fake(NETWORK);
        for dev in ["/dev/loop1", "/dev/loop2", "/dev/loop3"] {
            f.file(dev, &crate::sys::fake::ext4_head());
        }
        let cmdline = format!(
            "hypeman.root=/dev/loop1 hypeman.overlay=/dev/loop2 hypeman.config=/dev/loop3{extra}"
        );
        assert_eq!(run(&mut f, &test_mode_inputs(&cmdline)).0, 0);
        assert_eq!(!f.calls_with("net ").is_empty(), configured, "{extra}");
        assert_eq!(
            f.console.contains("test mode: network not configured"),
            !configured
        );
    }
}

const VOLUMES: &str = r#"{"cmd":["/bin/app"],"volume_mounts":[
    {"device":"/dev/vdd","path":"/data","mode":"ro"},
    {"device":"/dev/vde","path":"/srv/rw","mode":"rw"},
    {"device":"/dev/vdf","path":"/cache","mode":"overlay","overlay_device":"/dev/vdg"}]}"#;

fn volume_fake(config: &str) -> FakeSys {
    let mut f = ready_fake(config);
    for dev in ["/dev/vdd", "/dev/vde", "/dev/vdf", "/dev/vdg"] {
        f.file(dev, &crate::sys::fake::ext4_head());
    }
    f
}

#[test]
fn volumes_mount_ro_rw_and_overlay_in_the_new_root_before_the_app() {
    let mut f = volume_fake(VOLUMES);
    assert_eq!(booted(&mut f).0, 0);
    let order = [
        "switch_root",
        "wait /dev/vdd 2000ms",
        "mount /dev/vdd /data ext4 noload",
        "mount /dev/vdf /mnt/vol-base-vdf ext4 noload",
        "mount /dev/vdg /mnt/vol-overlay-vdf ext4 ",
        "mount overlay /cache overlay lowerdir=/mnt/vol-base-vdf,upperdir=/mnt/vol-overlay-vdf/upper,workdir=/mnt/vol-overlay-vdf/work",
        "mount /dev/vde /srv/rw ext4 ",
        "spawn /opt/hypeman/guest-agent",
        "spawn /bin/app",
    ];
    let at: Vec<usize> = order.iter().map(|c| index(&f, c)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{:#?}", f.calls);
    assert!(f
        .console
        .contains("[INFO] [hypeman-init:volumes] /dev/vdd (ext4) on /data ro"));
    assert!(f.console.contains("/dev/vdf (ext4) on /cache overlay"));
    // Parents are mounted before children (depth order); writable volumes
    // are remounted read-only at power-off newest first, then the root.
    let ro: Vec<&str> = f.calls_with("remount_ro ");
    assert_eq!(
        &ro[..3],
        [
            "remount_ro /srv/rw",
            "remount_ro /mnt/vol-overlay-vdf",
            "remount_ro /"
        ]
    );
}

#[test]
fn a_volume_that_cannot_be_used_is_one_error_line_and_the_app_runs() {
    let mut f = volume_fake(VOLUMES);
    f.never_appear.insert("/dev/vdd".into());
    f.file("/dev/vde", &[0u8; 4096]);
    f.symlinks.insert("/cache".into());
    assert_eq!(booted(&mut f).0, 0);
    for line in [
        "[ERROR] [hypeman-init:volumes] volume /dev/vdd on /data: device /dev/vdd did not appear within 2 s; not mounted",
        "[ERROR] [hypeman-init:volumes] volume /dev/vde on /srv/rw: /dev/vde: unknown filesystem",
        "[ERROR] [hypeman-init:volumes] volume /dev/vdf on /cache: /cache is a symlink in the image; not mounted",
    ] {
        assert!(f.console.contains(line), "{line}\n{}", f.console);
    }
    for dev in ["/dev/vdd", "/dev/vde", "/dev/vdf"] {
        assert!(
            f.calls_with(&format!("mount {dev}")).is_empty(),
            "{:#?}",
            f.calls
        );
    }
    index(&f, "spawn /bin/app");
}

#[test]
fn a_failed_mount_and_a_refused_entry_leave_the_other_volumes_mounted() {
    let cfg = r#"{"cmd":["/bin/app"],"volume_mounts":[
        {"device":"/dev/vdd","path":"/data/../etc","mode":"rw"},
        {"device":"/dev/vde","path":"/a","mode":"rw"},
        {"device":"/dev/vdf","path":"/b","mode":"ro"}]}"#;
    let mut f = volume_fake(cfg);
    f.failing_mounts.insert("/a".into(), libc::EINVAL);
    assert_eq!(booted(&mut f).0, 0);
    assert!(
        f.console
            .contains(r#"volume 0 ("/data/../etc"): path "/data/../etc" leaves its folder (..)"#),
        "{}",
        f.console
    );
    assert!(f
        .console
        .contains("volume /dev/vde on /a: mount /dev/vde (ext4) on /a: "));
    index(&f, "mount /dev/vdf /b ext4 noload");
}

#[test]
fn test_mode_mounts_only_loop_devices_as_volumes() {
    let cfg = r#"{"cmd":["/bin/app"],"volume_mounts":[
        {"device":"/dev/vda","path":"/host-root","mode":"ro"},
        {"device":"/dev/loop4","path":"/data","mode":"ro"}]}"#;
    let mut f = volume_fake(cfg);
    for dev in ["/dev/loop1", "/dev/loop2", "/dev/loop3", "/dev/loop4"] {
        f.file(dev, &crate::sys::fake::ext4_head());
    }
    let cmdline = "hypeman.root=/dev/loop1 hypeman.overlay=/dev/loop2 hypeman.config=/dev/loop3";
    assert_eq!(run(&mut f, &test_mode_inputs(cmdline)).0, 0);
    assert!(f
        .console
        .contains("test mode: /dev/vda is not a loop device"));
    assert!(f.calls_with("mount /dev/vda").is_empty());
    index(&f, "mount /dev/loop4 /data ext4 noload");
}

/// A PEM certificate whose body is a DER SEQUENCE of 40 bytes.
fn test_cert() -> String {
    let mut der = vec![0x30, 40];
    der.extend(0..40u8);
    let b64 = guest_contract::pem::encode_base64(&der);
    format!("-----BEGIN CERTIFICATE-----\n{b64}\n-----END CERTIFICATE-----\n")
}

fn proxy_config(pem: &str) -> String {
    let proxy = serde_json::json!({"enabled": true, "proxy_url": "http://10.0.2.2:3128", "ca_cert_pem": pem});
    format!(r#"{{"cmd":["/bin/app"],"egress_proxy":{proxy}}}"#)
}

#[test]
fn the_proxy_ca_is_installed_with_the_images_tool_before_the_agent() {
    let mut f = ready_fake(&proxy_config(&test_cert()));
    f.file("/usr/sbin/update-ca-certificates", b"#!/bin/sh");
    assert_eq!(booted(&mut f).0, 0);
    assert_eq!(f.files[ca::CA_FILE], test_cert().as_bytes());
    let order = [
        "switch_root",
        "write /usr/local/share/ca-certificates/hypeman-egress-proxy.crt 644",
        "spawn /usr/sbin/update-ca-certificates",
        "spawn /opt/hypeman/guest-agent",
        "spawn /bin/app",
    ];
    let at: Vec<usize> = order.iter().map(|c| index(&f, c)).collect();
    assert!(at.windows(2).all(|w| w[0] < w[1]), "{:#?}", f.calls);
}

#[test]
fn without_the_tool_the_ca_is_appended_once_to_the_images_bundles() {
    let mut f = ready_fake(&proxy_config(&test_cert()));
    f.file(
        "/etc/ssl/certs/ca-certificates.crt",
        b"-----BEGIN CERTIFICATE-----\nold\n-----END CERTIFICATE-----",
    );
    f.file("/etc/pki/tls/certs/ca-bundle.crt", b"");
    f.symlinks.insert("/etc/pki/tls/certs/ca-bundle.crt".into());
    f.file(
        "/etc/pki/ca-trust/extracted/pem/tls-ca-bundle.pem",
        test_cert().as_bytes(),
    );
    assert_eq!(booted(&mut f).0, 0);
    let debian = String::from_utf8(f.files["/etc/ssl/certs/ca-certificates.crt"].clone()).unwrap();
    assert_eq!(
        debian,
        format!(
            "-----BEGIN CERTIFICATE-----\nold\n-----END CERTIFICATE-----\n{}",
            test_cert()
        )
    );
    assert!(
        f.calls_with("write /etc/pki").is_empty(),
        "a symlink and a bundle that has it already: {:#?}",
        f.calls
    );
    assert!(f.calls_with("spawn /usr/sbin/update-ca").is_empty());
}

#[test]
fn a_bad_proxy_ca_ends_the_boot_with_78_and_hypemans_message() {
    for (pem, tool_code, detail) in [
        ("not a pem", None, "no certificate in the PEM text"),
        (
            &*format!("{}-----BEGIN PRIVATE KEY-----\n", test_cert()),
            None,
            "the PEM text holds a private key; refusing to install it",
        ),
        (
            &*test_cert(),
            Some(1),
            "update-ca-certificates exited with 1",
        ),
    ] {
        let mut f = ready_fake(&proxy_config(pem));
        if let Some(code) = tool_code {
            f.file("/usr/sbin/update-ca-certificates", b"#!/bin/sh");
            f.events.push_back(Event::Exited { pid: 101, code });
        }
        assert_eq!(
            booted(&mut f).0,
            78,
            "{detail}: {:#?}\n{}",
            f.calls,
            f.console
        );
        let want = format!(
            r#"HYPEMAN-EXIT code=78 message="egress proxy CA certificate setup failed: {detail}""#
        );
        assert_eq!(exit_line(&f), want);
        assert!(f.calls_with("spawn /bin/app").is_empty());
    }
}

#[test]
fn a_disabled_proxy_or_one_without_a_ca_installs_nothing() {
    for cfg in [
        r#"{"cmd":["/bin/app"],"egress_proxy":{"enabled":false,"ca_cert_pem":"junk"}}"#,
        r#"{"cmd":["/bin/app"],"egress_proxy":{"enabled":true,"proxy_url":"http://p:3128"}}"#,
    ] {
        let mut f = ready_fake(cfg);
        assert_eq!(booted(&mut f).0, 0, "{cfg}");
        assert!(!f.files.contains_key(ca::CA_FILE));
    }
}

#[test]
fn ipv6_and_the_interface_named_by_its_mac() {
    let cfg = r#"{"cmd":["/bin/app"],"network_enabled":true,"guest_mac":"02:00:00:00:00:42",
        "guest_ip":"10.0.2.15","guest_cidr":24,"guest_gw":"10.0.2.2",
        "guest_ipv6":"2001:db8::15/64","guest_gw6":"2001:db8::1"}"#;
    let mut f = ready_fake(cfg);
    f.net_links.insert("ens4".into(), 7);
    f.net_macs.insert("02:00:00:00:00:42".into(), "ens4".into());
    assert_eq!(booted(&mut f).0, 0);
    assert_eq!(
        f.calls_with("net "),
        [
            "net wait lo 0ms",
            "net up 1",
            "net wait mac 02:00:00:00:00:42 5000ms",
            "net addr 7 10.0.2.15/24",
            "net addr 7 2001:db8::15/64",
            "net up 7",
            "net route 7 via 10.0.2.2",
            "net route 7 via 2001:db8::1",
        ]
    );
    assert!(
        f.console.contains(
            "[hypeman-init:network] ens4 10.0.2.15/24 via 10.0.2.2 2001:db8::15/64 via 2001:db8::1"
        ),
        "{}",
        f.console
    );
    let mut none = ready_fake(cfg);
    booted(&mut none);
    assert_init_failure(
        &none,
        InitFailure::Network,
        "wait for the interface with MAC 02:00:00:00:00:42: ",
    );
}

#[test]
fn only_block_devices_are_probed_and_overlay_dirs_are_never_symlinks() {
    let cfg = r#"{"cmd":["/bin/app"],"volume_mounts":[
        {"device":"/dev/hvc0","path":"/console","mode":"ro"},
        {"device":"/dev/vdf","path":"/cache","mode":"overlay","overlay_device":"/dev/vdg"}]}"#;
    let mut f = volume_fake(cfg);
    f.file("/dev/hvc0", b"");
    f.non_block.insert("/dev/hvc0".into());
    f.symlinks.insert("/mnt/vol-overlay-vdf".into());
    assert_eq!(booted(&mut f).0, 0);
    assert!(
        f.console.contains(
            "volume /dev/hvc0 on /console: read /dev/hvc0: not a block device; not mounted"
        ),
        "{}",
        f.console
    );
    assert!(f.console.contains("volume /dev/vdf on /cache: /mnt/vol-overlay-vdf is a symlink in the image; not mounted"), "{}", f.console);
    assert!(
        f.calls_with("mount /dev/vd")
            .iter()
            .all(|c| !c.contains("/mnt/vol")),
        "{:#?}",
        f.calls
    );
    index(&f, "spawn /bin/app");
}

#[test]
fn a_sigterm_while_the_ca_tool_runs_reaches_the_app_once_it_starts() {
    let mut f = ready_fake(&proxy_config(&test_cert()));
    f.file("/usr/sbin/update-ca-certificates", b"#!/bin/sh");
    f.events.extend([
        Event::Signal(libc::SIGTERM),
        Event::PowerButton,
        Event::Exited { pid: 101, code: 0 },
    ]);
    assert_eq!(booted(&mut f).0, 0);
    let app = f.spawned.iter().position(|s| s.path == "/bin/app").unwrap();
    let app_pid = 101 + i32::try_from(app).unwrap();
    assert_eq!(
        f.calls_with("kill "),
        [format!("kill {app_pid} 15"), format!("kill {app_pid} 15")]
    );
    assert!(index(&f, "spawn /bin/app") < index(&f, "kill "));
}

fn run_cmdline(f: &mut FakeSys, cmdline: &str) -> (i32, String) {
    let inputs = Inputs {
        cmdline_override: Some(cmdline.into()),
        test_mode: false,
        start: Duration::ZERO,
    };
    run(f, &inputs)
}

#[test]
fn config_from_the_initramfs_needs_no_config_disk() {
    let mut f = ready_fake("{}");
    f.files.remove(CONFIG);
    f.file(plan::INITRD_CONFIG, MINIMAL.as_bytes());
    let (code, _) = run_cmdline(&mut f, "console=ttyS0 hypeman.config=initrd");
    assert_eq!(code, 0, "{}", f.console);
    index(&f, "wait /dev/vda,/dev/vdb 10000ms");
    assert!(
        f.calls.iter().all(|c| !c.contains("/mnt/config")),
        "{:#?}",
        f.calls
    );
    assert!(
        f.console.contains("config.json from the initramfs"),
        "{}",
        f.console
    );
    index(&f, "spawn /bin/app");
}

#[test]
fn config_from_the_initramfs_missing_or_in_a_direct_boot_is_a_config_failure() {
    let mut f = ready_fake(MINIMAL);
    run_cmdline(&mut f, "console=ttyS0 hypeman.config=initrd");
    assert_init_failure(&f, InitFailure::ConfigDisk, "read /config.json");
    let mut f = ready_fake(MINIMAL);
    f.root_magic = 0xEF53;
    f.files.remove("/dev/vda");
    f.file(plan::INITRD_CONFIG, MINIMAL.as_bytes());
    run_cmdline(&mut f, "console=ttyS0 hypeman.config=initrd");
    assert_init_failure(&f, InitFailure::ConfigDisk, "needs an initramfs");
}

#[test]
fn config_from_the_host_over_vsock() {
    let mut f = ready_fake("{}");
    f.files.remove(CONFIG);
    f.vsock_served.insert(2223, MINIMAL.as_bytes().to_vec());
    let (code, _) = run_cmdline(&mut f, "console=ttyS0 hypeman.config=vsock:2223");
    assert_eq!(code, 0, "{}", f.console);
    index(&f, "wait /dev/vda,/dev/vdb 10000ms");
    index(&f, "vsock_fetch 2:2223 10000ms");
    assert!(
        f.calls.iter().all(|c| !c.contains("/mnt/config")),
        "{:#?}",
        f.calls
    );
    assert!(
        f.console
            .contains("config.json from the host over vsock 2:2223"),
        "{}",
        f.console
    );
    // Nobody serving: a config failure naming the port.
    let mut f = ready_fake(MINIMAL);
    run_cmdline(&mut f, "console=ttyS0 hypeman.config=vsock:9");
    assert_init_failure(&f, InitFailure::ConfigDisk, "vsock 2:9");
}

#[test]
fn exec_mode_opens_the_headers_before_the_switch_and_forks_the_worker_after_the_app() {
    let mut f = ready_fake(MINIMAL);
    f.file(crate::headers::SOURCE, b"tarball");
    assert_eq!(booted(&mut f).0, 0, "{}", f.console);
    let open = index(&f, "open_read /kernel-headers.tar.gz");
    assert!(open < index(&f, "switch_root"));
    let pending = index(&f, "write /run/hypeman/kernel-headers.status");
    assert_eq!(f.files[crate::headers::STATUS], b"pending\n");
    let app = index(&f, "spawn /bin/app");
    assert!(pending < app);
    let worker = index(&f, "start_headers_worker ");
    assert!(worker > app, "the app never waits for the headers");
    assert!(f
        .console
        .contains("[hypeman-init:headers] kernel headers for"));
}

#[test]
fn the_initramfs_is_freed_by_a_child_forked_after_the_app() {
    let mut f = ready_fake(MINIMAL);
    assert_eq!(booted(&mut f).0, 0, "{}", f.console);
    let opened = index(&f, "open_initramfs");
    assert!(opened < index(&f, "switch_root"));
    assert!(index(&f, "start_initramfs_release") > index(&f, "spawn /bin/app"));
    // PID 1 itself deletes nothing: the child does.
    assert!(f.calls_with("free_initramfs").is_empty());
}

#[test]
fn the_initramfs_is_freed_by_pid_1_when_no_child_can_be_forked() {
    let mut f = ready_fake(MINIMAL);
    f.initramfs_release_fails = true;
    assert_eq!(booted(&mut f).0, 0, "{}", f.console);
    let freed = index(&f, "free_initramfs");
    assert!(freed > index(&f, "start_initramfs_release"));
    assert!(f
        .console
        .contains("[hypeman-init:switch] initramfs release worker: "));
    assert!(f
        .console
        .contains("[hypeman-init:switch] freed 4 KiB of initramfs"));
}

#[test]
fn no_tarball_or_skip_kernel_headers_means_no_headers_work() {
    let skip = r#"{"cmd":["/bin/app"],"skip_kernel_headers":true}"#;
    for (cfg, tarball) in [(MINIMAL, false), (skip, true)] {
        let mut f = ready_fake(cfg);
        if tarball {
            f.file(crate::headers::SOURCE, b"tarball");
        }
        assert_eq!(booted(&mut f).0, 0, "{}", f.console);
        let headers_calls = f.calls.iter().filter(|c| c.contains("headers")).count();
        assert_eq!(headers_calls, 0, "{:#?}", f.calls);
    }
}

#[test]
fn systemd_mode_stages_init_and_the_tarball_for_the_unit() {
    let mut f = ready_fake(r#"{"cmd":["/lib/systemd/systemd"],"init_mode":"systemd"}"#);
    f.file(crate::headers::SOURCE, b"tarball");
    f.file("/proc/self/exe", b"\x7fELF init");
    booted(&mut f);
    let tarball = index(&f, "copy_fd /opt/hypeman/kernel-headers.tar.gz 644");
    let init = index(&f, "copy_fd /opt/hypeman/hypeman-init 755");
    assert!(tarball > index(&f, "switch_root") && init > tarball);
    assert_eq!(f.files[crate::headers::STATUS], b"pending\n");
    // No child to free it after the exec: freed by PID 1 just before.
    let freed = index(&f, "free_initramfs");
    assert!(freed > init && index(&f, "exec_pid1") > freed);
    assert!(f.calls_with("start_initramfs_release").is_empty());
    assert!(f.calls_with("start_headers_worker").is_empty());
}

/// A fake with an NVIDIA GPU on the PCI bus (a display function and its
/// audio function) and the driver's stand-in in the image's module tree.
fn gpu_fake(config: &str) -> FakeSys {
    let mut f = ready_fake(config);
    f.file(
        gpu::PCI_DEVICES,
        b"0000\t80861237\t0\n0028\t10de2330\t2b\n0029\t10de22a3\t2c\n",
    );
    let dir = "/overlay/newroot/lib/modules/6.1.0-test";
    f.file(
        &format!("{dir}/modules.dep"),
        b"extra/nvidia-drm.ko: extra/nvidia-modeset.ko extra/nvidia.ko kernel/drm.ko\n\
          extra/nvidia-modeset.ko: extra/nvidia.ko\n\
          extra/nvidia-uvm.ko: extra/nvidia.ko\n\
          extra/nvidia.ko:\n\
          kernel/drm.ko:\n",
    );
    f.file(
        "/proc/devices",
        b"Character devices:\n  1 mem\n195 nvidia-frontend\n506 nvidia-uvm\n\nBlock devices:\n",
    );
    f.dirs.insert("/proc/driver/nvidia/gpus".into());
    f.file("/proc/driver/nvidia/gpus/0000:00:05.0/information", b"");
    f
}

#[test]
fn a_gpu_gets_its_driver_stack_in_order_with_modeset_and_its_nodes() {
    let mut f = gpu_fake(MINIMAL);
    assert_eq!(booted(&mut f).0, 0, "{}", f.console);
    let loads = f.calls_with("load_module");
    let dir = "/overlay/newroot/lib/modules/6.1.0-test";
    assert_eq!(
        loads,
        [
            format!("load_module {dir}/extra/nvidia.ko"),
            format!("load_module {dir}/extra/nvidia-uvm.ko"),
            format!("load_module {dir}/extra/nvidia-modeset.ko"),
            format!("load_module {dir}/kernel/drm.ko"),
            format!("load_module {dir}/extra/nvidia-drm.ko modeset=1"),
        ]
    );
    assert_eq!(
        f.calls_with("mknod"),
        [
            "mknod /dev/nvidiactl c 195:255 666",
            "mknod /dev/nvidia-modeset c 195:254 666",
            "mknod /dev/nvidia0 c 195:0 666",
            "mknod /dev/nvidia-uvm c 506:0 666",
            "mknod /dev/nvidia-uvm-tools c 506:1 666",
        ]
    );
    assert!(index(&f, "mknod") < index(&f, "switch_root"));
    let status = &f.files["/overlay/newroot/run/hypeman/gpu-init.status"];
    assert!(
        status.starts_with(b"ok 1 GPU(s)"),
        "{}",
        String::from_utf8_lossy(status)
    );
}

#[test]
fn a_gpu_without_its_driver_is_a_failed_status_not_a_failed_boot() {
    let mut f = gpu_fake(MINIMAL);
    let nvidia = "/overlay/newroot/lib/modules/6.1.0-test/extra/nvidia.ko";
    f.failing_modules.insert(nvidia.into());
    assert_eq!(booted(&mut f).0, 0, "{}", f.console);
    let status = String::from_utf8_lossy(&f.files["/overlay/newroot/run/hypeman/gpu-init.status"])
        .into_owned();
    assert!(status.starts_with("failed: load nvidia: "), "{status}");
    assert!(f.console.contains("[ERROR] [hypeman-init:gpu] load nvidia"));
    assert!(f.calls_with("mknod").is_empty());

    let mut f = ready_fake(MINIMAL);
    f.file(gpu::PCI_DEVICES, b"0028\t10de2330\t2b\n");
    assert_eq!(booted(&mut f).0, 0);
    let status = String::from_utf8_lossy(&f.files["/overlay/newroot/run/hypeman/gpu-init.status"])
        .into_owned();
    assert!(
        status.starts_with("failed: no NVIDIA driver modules"),
        "{status}"
    );
}

#[test]
fn without_a_gpu_the_probe_is_the_only_cost() {
    let mut plain = ready_fake(MINIMAL);
    plain.file(gpu::PCI_DEVICES, b"0000\t80861237\t0\n0010\t1af41000\t0\n");
    assert_eq!(booted(&mut plain).0, 0);
    let mut off = ready_fake(MINIMAL);
    let inputs = Inputs {
        cmdline_override: Some("console=ttyS0 hypeman.gpu=0".into()),
        test_mode: false,
        start: Duration::ZERO,
    };
    assert_eq!(run(&mut off, &inputs).0, 0);
    // The same effects (descriptor numbers aside: tests run in parallel and
    // the fake's descriptors are real ones), and reads that differ by the
    // probe alone.
    let effects = |f: &FakeSys| -> Vec<String> {
        f.calls
            .iter()
            .map(|c| match c.split_once("/proc/self/fd/") {
                Some((head, _)) => format!("{head}/proc/self/fd/N"),
                None => c.clone(),
            })
            .collect()
    };
    assert_eq!(effects(&plain), effects(&off));
    let mut reads = plain.reads.borrow().clone();
    let probe = reads
        .iter()
        .position(|r| r == gpu::PCI_DEVICES)
        .expect("probe");
    reads.remove(probe);
    assert_eq!(reads, *off.reads.borrow());
    assert!(!off.reads.borrow().iter().any(|r| r.contains("pci")));
}

#[test]
fn the_initramfs_nvidia_stack_waits_for_the_gpu_step() {
    let mut f = gpu_fake(MINIMAL);
    // Only the initramfs carries the stack here (the image has none).
    f.files
        .remove("/overlay/newroot/lib/modules/6.1.0-test/modules.dep");
    f.file(
        "/lib/modules/6.1.0-test/modules.dep",
        b"extra/nvidia.ko:\nextra/nvidia-drm.ko: extra/nvidia.ko\n",
    );
    assert_eq!(booted(&mut f).0, 0, "{}", f.console);
    assert_eq!(
        f.calls_with("load_module"),
        [
            "load_module /lib/modules/6.1.0-test/extra/nvidia.ko",
            "load_module /lib/modules/6.1.0-test/extra/nvidia-drm.ko modeset=1",
        ]
    );
    assert!(index(&f, "load_module") > index(&f, "mount overlay"));
}

#[test]
fn a_headers_worker_killed_before_it_reported_is_reported_failed() {
    let mut f = ready_fake(MINIMAL);
    f.file(crate::headers::SOURCE, b"tarball");
    f.headers_worker_pid = Some(4242);
    f.events.push_back(Event::Exited {
        pid: 4242,
        code: 128 + libc::SIGKILL,
    });
    assert_eq!(booted(&mut f).0, 0, "{}", f.console);
    assert_eq!(f.files[crate::headers::STATUS], b"failed\n");
    assert!(f.console.contains("HYPEMAN-HEADERS-FAILED ts="));
    assert!(f.console.contains("the worker was killed by signal 9"));
    // One that reported itself (exit 0 or 1) is left alone.
    let mut f = ready_fake(MINIMAL);
    f.file(crate::headers::SOURCE, b"tarball");
    f.events.push_back(Event::Exited { pid: 4242, code: 1 });
    assert_eq!(booted(&mut f).0, 0);
    assert_eq!(f.files[crate::headers::STATUS], b"pending\n");
    assert!(!f.console.contains("HYPEMAN-HEADERS-FAILED"));
}
