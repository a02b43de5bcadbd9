//! Every RPC of the agent, served in-process on a Unix socket and called
//! through the host client (`host_sysmgr::agent`), as a host would.

#![allow(clippy::unwrap_used)]

use guest_agent::system::Machine;
use guest_agent::AgentConfig;
use guest_proto::{
    copy_to_guest_request, CopyToGuestRequest, CopyToGuestStart, ExecStart, GpuInitState,
};
use host_sysmgr::agent::exec::{command, Input, Output};
use host_sysmgr::agent::{AgentClient, AgentError, Dialer, Timeouts};
use sha2::{Digest, Sha256};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Records what the agent asked of the machine instead of doing it.
#[derive(Default)]
struct Recorder {
    signals: Mutex<Vec<i32>>,
    clocks: Mutex<Vec<Duration>>,
}

impl Machine for Recorder {
    fn signal_init(&self, signal: i32) -> std::io::Result<()> {
        self.signals.lock().unwrap().push(signal);
        Ok(())
    }
    fn set_clock(&self, since_epoch: Duration) -> std::io::Result<()> {
        self.clocks.lock().unwrap().push(since_epoch);
        Ok(())
    }
}

struct Fixture {
    dir: tempfile::TempDir,
    machine: Arc<Recorder>,
    client: AgentClient,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let sock = dir.path().join("agent.sock");
        let machine = Arc::new(Recorder::default());
        let kmsg = dir.path().join("kmsg");
        std::fs::write(&kmsg, "6,1,1000,-;Linux version 6.1.0\n").unwrap();
        std::fs::write(
            dir.path().join("timings"),
            "disks=1200 config=300 switch=800\n",
        )
        .unwrap();
        let config = AgentConfig {
            machine: machine.clone(),
            kmsg,
            boot_timings: dir.path().join("timings"),
            gpu_init: dir.path().join("gpu-init.status"),
            resolv_conf: dir.path().join("resolv.conf"),
        };
        let listener = tokio::net::UnixListener::bind(&sock).unwrap();
        let incoming = tokio_stream::wrappers::UnixListenerStream::new(listener);
        tokio::spawn(guest_agent::serve(config, incoming));
        let client = AgentClient::connect(Dialer::Unix(sock), Timeouts::default())
            .await
            .unwrap();
        Fixture {
            dir,
            machine,
            client,
        }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn sh(script: &str) -> ExecStart {
    command(&["/bin/sh", "-c", script])
}

fn status_of(e: AgentError) -> tonic::Status {
    match e {
        AgentError::Call { source, .. } => source,
        other => panic!("not a call error: {other}"),
    }
}

/// Whether `pid` is gone or a zombie (killed, not yet reaped by its reaper).
fn not_running(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rsplit(')')
            .next()
            .is_some_and(|s| s.trim_start().starts_with('Z')),
    }
}

async fn wait_not_running(pid: i32) -> bool {
    for _ in 0..100 {
        if not_running(pid) {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    false
}

fn read_pid(path: &Path) -> i32 {
    std::fs::read_to_string(path)
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn exec_reports_exit_codes_env_cwd_and_stdin() {
    let f = Fixture::new().await;
    assert_eq!(
        f.client
            .exec(command(&["/bin/true"]), b"")
            .await
            .unwrap()
            .exit_code,
        0
    );
    assert_eq!(f.client.exec(sh("exit 3"), b"").await.unwrap().exit_code, 3);
    assert_eq!(
        f.client
            .exec(sh("kill -9 $$"), b"")
            .await
            .unwrap()
            .exit_code,
        137
    );
    let mut start = sh("echo \"$GREETING\"; pwd; echo \"$PATH\" | grep -q / && echo path-kept");
    start.env.insert("GREETING".into(), "hi there".into());
    start.cwd = f.dir.path().display().to_string();
    let out = f.client.exec(start, b"").await.unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert_eq!(
        text,
        format!("hi there\n{}\npath-kept\n", f.dir.path().display())
    );
    let out = f
        .client
        .exec(command(&["cat"]), b"piped input\n")
        .await
        .unwrap();
    assert_eq!(out.stdout, b"piped input\n");
    // An empty command is /bin/sh, reading its script from stdin.
    let out = f
        .client
        .exec(ExecStart::default(), b"echo from-sh\n")
        .await
        .unwrap();
    assert_eq!(out.stdout, b"from-sh\n");
}

#[tokio::test]
async fn start_failures_are_clear_errors() {
    let f = Fixture::new().await;
    let s = status_of(
        f.client
            .exec(command(&["/no/such/program"]), b"")
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code(), tonic::Code::NotFound, "{s:?}");
    assert!(s.message().contains("/no/such/program"), "{s:?}");
    std::fs::write(f.path("plain"), "not a program").unwrap();
    let s = status_of(
        f.client
            .exec(command(&[f.path("plain").to_str().unwrap()]), b"")
            .await
            .unwrap_err(),
    );
    assert_eq!(s.code(), tonic::Code::PermissionDenied, "{s:?}");
    let mut start = command(&["/bin/true"]);
    start.cwd = "/no/such/dir".into();
    let s = status_of(f.client.exec(start, b"").await.unwrap_err());
    assert_eq!(s.code(), tonic::Code::InvalidArgument);
    assert!(s.message().contains("/no/such/dir"), "{s:?}");
}

#[tokio::test]
async fn output_is_live_and_streams_stay_apart() {
    let f = Fixture::new().await;
    let marker = f.path("done");
    let script = format!(
        "echo first; echo oops >&2; sleep 2; echo second; touch {}",
        marker.display()
    );
    let mut session = f.client.exec_session(sh(&script)).await.unwrap();
    session.close_input();
    let first = session.next().await.unwrap().unwrap();
    // The first chunk arrives while the process still runs (it has not
    // reached `touch` yet).
    assert_eq!(first, Output::Stdout(b"first\n".to_vec()));
    assert!(!marker.exists(), "output was held back until the end");
    let (mut out, mut err, mut code) = (b"first\n".to_vec(), Vec::new(), None);
    while let Some(piece) = session.next().await.unwrap() {
        match piece {
            Output::Stdout(d) => out.extend(d),
            Output::Stderr(d) => err.extend(d),
            Output::Exit(c) => code = Some(c),
        }
    }
    assert_eq!(
        (out, err, code),
        (b"first\nsecond\n".to_vec(), b"oops\n".to_vec(), Some(0))
    );
}

#[tokio::test]
async fn timeout_kills_the_whole_group_with_124() {
    let f = Fixture::new().await;
    let pidfile = f.path("bg.pid");
    let mut start = sh(&format!(
        "sleep 100 & echo $! > {}; sleep 100",
        pidfile.display()
    ));
    start.timeout_seconds = 1;
    let out = f.client.exec(start, b"").await.unwrap();
    assert_eq!(out.exit_code, 124);
    assert!(
        wait_not_running(read_pid(&pidfile)).await,
        "a background child survived the timeout"
    );
}

#[tokio::test]
async fn a_client_that_hangs_up_kills_the_process_group() {
    let f = Fixture::new().await;
    let pidfile = f.path("sh.pid");
    let mut session = f
        .client
        .exec_session(sh(&format!(
            "echo $$ > {}; echo started; sleep 100",
            pidfile.display()
        )))
        .await
        .unwrap();
    assert_eq!(
        session.next().await.unwrap(),
        Some(Output::Stdout(b"started\n".to_vec()))
    );
    let pid = read_pid(&pidfile);
    drop(session);
    assert!(
        wait_not_running(pid).await,
        "the command outlived its client"
    );
}

#[tokio::test]
async fn tty_sessions_see_the_terminal_size_and_resizes() {
    let f = Fixture::new().await;
    let mut start = sh("echo \"$TERM\"; stty size; read line; stty size");
    start.tty = true;
    start.rows = 30;
    start.cols = 100;
    let mut session = f.client.exec_session(start).await.unwrap();
    let mut seen = Vec::new();
    while !String::from_utf8_lossy(&seen).contains("30 100") {
        match session.next().await.unwrap().unwrap() {
            Output::Stdout(d) => seen.extend(d),
            other => panic!(
                "unexpected {other:?} after {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    assert!(session.send(Input::Resize(40, 120)).await);
    assert!(session.send(Input::Stdin(b"\n".to_vec())).await);
    let mut code = None;
    while let Some(piece) = session.next().await.unwrap() {
        match piece {
            Output::Stdout(d) => seen.extend(d),
            Output::Stderr(_) => panic!("a tty has no separate stderr"),
            Output::Exit(c) => code = Some(c),
        }
    }
    let text = String::from_utf8_lossy(&seen);
    assert!(text.contains("xterm-256color"), "{text:?}");
    assert!(text.contains("40 120"), "{text:?}");
    assert_eq!(code, Some(0));
}

#[tokio::test]
async fn twenty_execs_run_in_parallel() {
    let f = Fixture::new().await;
    let calls = (0..20).map(|i| {
        let client = f.client.clone();
        async move {
            client
                .exec(sh(&format!("sleep 1; echo {i}")), b"")
                .await
                .unwrap()
        }
    });
    let started = std::time::Instant::now();
    let outs = futures_join_all(calls).await;
    for (i, out) in outs.iter().enumerate() {
        assert_eq!(out.stdout, format!("{i}\n").into_bytes());
    }
    // 20 one-second sleeps in sequence would take 20 s.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
}

async fn futures_join_all<F>(futs: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futs.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

fn sha256_file(p: &Path) -> String {
    let mut h = Sha256::new();
    std::io::copy(&mut std::fs::File::open(p).unwrap(), &mut h).unwrap();
    format!("{:x}", h.finalize())
}

#[tokio::test]
async fn a_100_mib_file_round_trips_with_its_sha256() {
    let f = Fixture::new().await;
    let src = f.path("big");
    {
        let mut w = std::io::BufWriter::new(std::fs::File::create(&src).unwrap());
        let mut x = 0x1234_5678u32;
        let mut block = vec![0u8; 1 << 20];
        for _ in 0..100 {
            for b in block.iter_mut() {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                *b = x as u8;
            }
            std::io::Write::write_all(&mut w, &block).unwrap();
        }
    }
    std::fs::set_permissions(&src, std::fs::Permissions::from_mode(0o640)).unwrap();
    let guest = f.path("guest-big");
    let sent = f
        .client
        .copy_to_guest(&src, guest.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(sent, 100 << 20);
    assert_eq!(sha256_file(&guest), sha256_file(&src));
    assert_eq!(std::fs::metadata(&guest).unwrap().mode() & 0o777, 0o640);
    let back = f.path("back-big");
    let got = f
        .client
        .copy_from_guest(guest.to_str().unwrap(), &back, false)
        .await
        .unwrap();
    assert_eq!(got, 100 << 20);
    assert_eq!(sha256_file(&back), sha256_file(&src));
}

fn make_tree(root: &Path) {
    std::fs::create_dir_all(root.join("sub/deeper")).unwrap();
    std::fs::write(root.join("a.txt"), "alpha").unwrap();
    std::fs::write(root.join("sub/run.sh"), "#!/bin/sh\necho hi\n").unwrap();
    std::fs::set_permissions(
        root.join("sub/run.sh"),
        std::fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    std::fs::write(root.join("sub/deeper/secret"), "s").unwrap();
    std::fs::set_permissions(
        root.join("sub/deeper/secret"),
        std::fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    std::fs::set_permissions(
        root.join("sub/deeper"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    std::os::unix::fs::symlink("../a.txt", root.join("sub/link")).unwrap();
    std::os::unix::fs::symlink("/etc/passwd", root.join("abs-link")).unwrap();
    let old = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
    std::fs::File::options()
        .write(true)
        .open(root.join("a.txt"))
        .unwrap()
        .set_modified(old)
        .unwrap();
}

/// (relative path, kind, mode, content or link target, mtime of files)
fn describe(root: &Path) -> Vec<(String, String, u32, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(p) = stack.pop() {
        let m = std::fs::symlink_metadata(&p).unwrap();
        let rel = p.strip_prefix(root).unwrap().display().to_string();
        let (kind, content) = if m.file_type().is_symlink() {
            (
                "link",
                std::fs::read_link(&p).unwrap().display().to_string(),
            )
        } else if m.is_dir() {
            for e in std::fs::read_dir(&p).unwrap() {
                stack.push(e.unwrap().path());
            }
            ("dir", String::new())
        } else {
            (
                "file",
                format!("{} @{}", std::fs::read_to_string(&p).unwrap(), m.mtime()),
            )
        };
        let mode = if kind == "link" { 0 } else { m.mode() & 0o7777 };
        out.push((rel, kind.to_string(), mode, content));
    }
    out.sort();
    out
}

#[tokio::test]
async fn a_tree_with_symlinks_and_modes_round_trips() {
    let f = Fixture::new().await;
    let src = f.path("tree");
    make_tree(&src);
    let guest = f.path("guest-tree");
    f.client
        .copy_to_guest(&src, guest.to_str().unwrap())
        .await
        .unwrap();
    assert_eq!(describe(&guest), describe(&src));
    let back = f.path("back-tree");
    f.client
        .copy_from_guest(guest.to_str().unwrap(), &back, false)
        .await
        .unwrap();
    assert_eq!(describe(&back), describe(&src));
}

/// Sends `messages` as one CopyToGuest stream and returns the reply.
async fn raw_copy(
    f: &Fixture,
    messages: Vec<CopyToGuestRequest>,
) -> Result<guest_proto::CopyToGuestResponse, tonic::Status> {
    let stream = tokio_stream::iter(messages);
    // No client-side size limit: the agent's own limit is under test.
    let mut raw = f.client.raw().max_encoding_message_size(usize::MAX);
    raw.copy_to_guest(stream).await.map(|r| r.into_inner())
}

fn start_msg(path: &Path, size: i64) -> CopyToGuestRequest {
    CopyToGuestRequest {
        request: Some(copy_to_guest_request::Request::Start(CopyToGuestStart {
            path: path.display().to_string(),
            mode: 0o644,
            size,
            ..Default::default()
        })),
    }
}

fn data_msg(bytes: &[u8]) -> CopyToGuestRequest {
    CopyToGuestRequest {
        request: Some(copy_to_guest_request::Request::Data(bytes.to_vec())),
    }
}

fn end_msg() -> CopyToGuestRequest {
    CopyToGuestRequest {
        request: Some(copy_to_guest_request::Request::End(
            guest_proto::CopyToGuestEnd {},
        )),
    }
}

fn dir_is_empty_but(dir: &Path, keep: &[&str]) -> bool {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .all(|n| keep.contains(&n.as_str()))
}

#[tokio::test]
async fn bad_copies_are_refused_and_leave_no_partial_file() {
    let f = Fixture::new().await;
    let box_dir = f.path("box");
    std::fs::create_dir(&box_dir).unwrap();
    let target = box_dir.join("file");
    let cases: Vec<(&str, Vec<CopyToGuestRequest>)> = vec![
        (
            "not absolute",
            vec![
                start_msg(Path::new("relative/file"), 1),
                data_msg(b"x"),
                end_msg(),
            ],
        ),
        (
            "parent",
            vec![
                start_msg(&box_dir.join("no/file"), 1),
                data_msg(b"x"),
                end_msg(),
            ],
        ),
        (
            "ended early",
            vec![start_msg(&target, 10), data_msg(b"12345")],
        ),
        (
            "bytes received",
            vec![start_msg(&target, 10), data_msg(b"12345"), end_msg()],
        ),
        (
            "more data",
            vec![start_msg(&target, 2), data_msg(b"12345"), end_msg()],
        ),
        ("first message", vec![data_msg(b"x"), end_msg()]),
        (
            "no known field",
            vec![
                start_msg(&target, 1),
                CopyToGuestRequest { request: None },
                end_msg(),
            ],
        ),
        (
            "second start",
            vec![start_msg(&target, 1), start_msg(&target, 1)],
        ),
    ];
    for (reason, messages) in cases {
        let reply = raw_copy(&f, messages).await.unwrap();
        assert!(!reply.success, "{reason}: {reply:?}");
        assert!(reply.error.contains(reason), "{reason}: {:?}", reply.error);
        assert!(
            dir_is_empty_but(&box_dir, &[]),
            "{reason}: a file was left behind"
        );
    }
    // A chunk above the message limit is refused by the transport.
    let huge = vec![0u8; guest_proto::MAX_MESSAGE_BYTES + 1];
    let outcome = raw_copy(
        &f,
        vec![
            start_msg(&target, huge.len() as i64),
            data_msg(&huge),
            end_msg(),
        ],
    )
    .await;
    match outcome {
        Ok(reply) => assert!(
            !reply.success && reply.error.contains("too large"),
            "{reply:?}"
        ),
        Err(status) => assert!(status.message().contains("too large"), "{status:?}"),
    }
    assert!(dir_is_empty_but(&box_dir, &[]));
    // And a good one after all that.
    let ok = raw_copy(&f, vec![start_msg(&target, 3), data_msg(b"abc"), end_msg()])
        .await
        .unwrap();
    assert!(ok.success && ok.bytes_written == 3, "{ok:?}");
    assert_eq!(std::fs::read(&target).unwrap(), b"abc");
}

#[tokio::test]
async fn copy_from_a_missing_or_relative_path_is_an_error() {
    let f = Fixture::new().await;
    let e = f
        .client
        .copy_from_guest("/no/such/path", &f.path("out"), false)
        .await
        .unwrap_err();
    assert!(e.to_string().contains("/no/such/path"), "{e}");
    assert!(!f.path("out").exists());
    let e = f
        .client
        .copy_from_guest("relative", &f.path("out"), false)
        .await
        .unwrap_err();
    assert_eq!(status_of(e).code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn stat_path_reports_kinds_and_missing_paths() {
    let f = Fixture::new().await;
    std::fs::write(f.path("file"), "12345").unwrap();
    std::fs::set_permissions(f.path("file"), std::fs::Permissions::from_mode(0o604)).unwrap();
    std::os::unix::fs::symlink("file", f.path("link")).unwrap();
    let s = f
        .client
        .stat(f.path("file").to_str().unwrap(), false)
        .await
        .unwrap();
    assert!(
        s.exists && s.is_file && !s.is_dir && s.size == 5 && s.mode == 0o604,
        "{s:?}"
    );
    let s = f
        .client
        .stat(f.dir.path().to_str().unwrap(), false)
        .await
        .unwrap();
    assert!(s.exists && s.is_dir, "{s:?}");
    let s = f
        .client
        .stat(f.path("link").to_str().unwrap(), false)
        .await
        .unwrap();
    assert!(s.is_symlink && s.link_target == "file", "{s:?}");
    let s = f
        .client
        .stat(f.path("link").to_str().unwrap(), true)
        .await
        .unwrap();
    assert!(s.is_file && !s.is_symlink, "{s:?}");
    let s = f.client.stat("/no/such/thing", false).await.unwrap();
    assert!(!s.exists && s.error.is_empty(), "{s:?}");
    let s = f.client.stat("relative", false).await.unwrap();
    assert!(!s.exists && s.error.contains("absolute"), "{s:?}");
}

#[tokio::test]
async fn shutdown_signals_init_and_sync_clock_sets_the_clock() {
    let f = Fixture::new().await;
    f.client.shutdown(0).await.unwrap();
    f.client.shutdown(libc::SIGRTMIN() + 4).await.unwrap();
    tokio::time::sleep(guest_agent::system::SHUTDOWN_DELAY * 3).await;
    assert_eq!(
        *f.machine.signals.lock().unwrap(),
        vec![libc::SIGTERM, libc::SIGRTMIN() + 4]
    );
    let e = f.client.shutdown(999).await.unwrap_err();
    assert_eq!(status_of(e).code(), tonic::Code::InvalidArgument);
    f.client.sync_clock().await.unwrap();
    let set = f.machine.clocks.lock().unwrap()[0];
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    assert!(now - set < Duration::from_secs(5), "{set:?} vs {now:?}");
    let mut raw = f.client.raw();
    let e = raw
        .sync_clock(guest_proto::SyncClockRequest { unix_nanos: -5 })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
}

#[tokio::test]
async fn gpu_status_comes_from_nvrm_records() {
    let f = Fixture::new().await;
    let s = f.client.gpu_status().await.unwrap();
    assert_eq!(s.state(), GpuInitState::Unknown);
    std::fs::write(
        f.path("kmsg"),
        "6,1,1,-;NVRM: loading NVIDIA UNIX Open Kernel Module\n3,2,2,-;NVRM: GPU 0000:00:05.0: RmInitAdapter failed! (0x22:0x56:742)\n",
    )
    .unwrap();
    let s = f.client.gpu_status().await.unwrap();
    assert_eq!(s.state(), GpuInitState::Failed);
    assert!(s.failure_message.contains("RmInitAdapter failed!"), "{s:?}");
    std::fs::write(
        f.path("kmsg"),
        "6,1,1,-;NVRM: loading NVIDIA UNIX Open Kernel Module\n",
    )
    .unwrap();
    assert_eq!(
        f.client.gpu_status().await.unwrap().state(),
        GpuInitState::Ok
    );
}

#[tokio::test]
async fn gpu_status_reports_inits_driver_step() {
    let f = Fixture::new().await;
    std::fs::write(f.path("gpu-init.status"), "ok 1 GPU(s); loaded nvidia\n").unwrap();
    assert_eq!(
        f.client.gpu_status().await.unwrap().state(),
        GpuInitState::Ok
    );
    std::fs::write(
        f.path("gpu-init.status"),
        "failed: load nvidia: No such device (os error 19)\n",
    )
    .unwrap();
    let s = f.client.gpu_status().await.unwrap();
    assert_eq!(s.state(), GpuInitState::Failed);
    assert_eq!(
        s.failure_message,
        "init: load nvidia: No such device (os error 19)"
    );
}

#[tokio::test]
async fn info_names_the_agent_protocol_and_boot_phases() {
    let f = Fixture::new().await;
    let info = f.client.info().await.unwrap();
    assert_eq!(info.agent_version, env!("CARGO_PKG_VERSION"));
    assert_eq!(info.protocol_version, guest_proto::PROTOCOL_VERSION);
    let phases: Vec<(String, u64)> = info
        .boot_phases
        .into_iter()
        .map(|p| (p.name, p.micros))
        .collect();
    assert_eq!(
        phases,
        vec![
            ("disks".into(), 1200),
            ("config".into(), 300),
            ("switch".into(), 800)
        ]
    );
    assert!(info.uptime_seconds > 0.0 && !info.kernel_release.is_empty());
}
