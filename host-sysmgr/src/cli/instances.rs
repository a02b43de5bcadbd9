//! The commands on detached instances: `ps`, `exec`, `cp`, `stat`, `stop`,
//! `logs`, `rm`.

use anyhow::{bail, Context, Result};
use host_sysmgr::agent::exec::{Input, Output};
use host_sysmgr::agent::{AgentClient, Timeouts};
use host_sysmgr::instance::{self, Instance, Store};
use host_sysmgr::stop::{self, Detached, StopOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::Duration;

fn store() -> Store {
    Store::new(instance::default_root())
}

fn running(name: &str) -> Result<Instance> {
    let inst = store().open(name)?;
    if !inst.running() {
        bail!("instance {name:?} is not running (see `host-sysmgr ps`)");
    }
    Ok(inst)
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("start a runtime")
}

async fn client(inst: &Instance) -> Result<AgentClient> {
    let dialer = inst.agent_dialer().context("the instance has no vsock")?;
    Ok(AgentClient::connect(dialer, Timeouts::default()).await?)
}

/// `ps`: one line (or JSON object) per instance.
pub fn ps(json: bool) -> Result<u8> {
    let list = store().list()?;
    if json {
        let rows: Vec<serde_json::Value> = list.iter().map(row_json).collect();
        println!("{}", serde_json::to_string_pretty(&rows)?);
        return Ok(0);
    }
    println!("{:<20} {:<16} {:>8}  COMMAND", "NAME", "STATE", "PID");
    for inst in &list {
        let (state, _) = state_of(inst);
        let cmd = inst.info.command.join(" ");
        println!(
            "{:<20} {:<16} {:>8}  {cmd}",
            inst.info.name, state, inst.info.vmm_pid
        );
    }
    Ok(0)
}

fn state_of(inst: &Instance) -> (String, Option<i32>) {
    if inst.running() {
        return ("running".into(), None);
    }
    match inst.exit().and_then(|e| e.code) {
        Some(code) => (format!("exited ({code})"), Some(code)),
        None => ("exited".into(), None),
    }
}

fn row_json(inst: &Instance) -> serde_json::Value {
    let (state, code) = state_of(inst);
    serde_json::json!({
        "name": inst.info.name,
        "state": if inst.running() { "running" } else { "exited" },
        "status": state,
        "exit_code": code,
        "vmm_pid": inst.info.vmm_pid,
        "created": inst.info.created,
        "command": inst.info.command,
        "serial_log": inst.info.serial_log,
        "vsock_uds": inst.info.vsock_uds,
    })
}

/// `exec NAME [-t] -- CMD…`: the command's exit status is ours. A Ctrl-C
/// ends the remote command (the call is dropped, the agent kills its group).
pub fn exec(
    name: &str,
    tty: bool,
    env: &[String],
    workdir: Option<&str>,
    cmd: &[String],
) -> Result<u8> {
    let inst = running(name)?;
    let mut start = guest_proto::ExecStart {
        command: cmd.to_vec(),
        tty,
        cwd: workdir.unwrap_or_default().to_string(),
        ..Default::default()
    };
    for pair in env {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?}: expected KEY=VALUE"))?;
        start.env.insert(k.to_string(), v.to_string());
    }
    if tty {
        if let Some((rows, cols)) = terminal_size() {
            (start.rows, start.cols) = (rows, cols);
        }
    }
    let _raw = if tty { RawMode::enter() } else { None };
    runtime()?.block_on(async move {
        // Registered before the remote command starts: a Ctrl-C that comes
        // early must not kill host-sysmgr by the default action.
        let mut sigint = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::interrupt())
            .context("install the SIGINT handler")?;
        let client = client(&inst).await?;
        let session = client.exec_session(start).await?;
        tokio::select! {
            code = pump_session(session) => code,
            _ = sigint.recv() => {
                eprintln!("host-sysmgr: interrupted; the remote command is killed");
                Ok(130)
            }
        }
    })
}

/// Copies our stdin to the session and its output to ours; returns the code.
async fn pump_session(mut session: host_sysmgr::agent::exec::Session) -> Result<u8> {
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Vec<u8>>(8);
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        let mut stdin = std::io::stdin().lock();
        while let Ok(n) = stdin.read(&mut buf) {
            if n == 0 || tx.blocking_send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut input_open = true;
    loop {
        tokio::select! {
            data = rx.recv(), if input_open => match data {
                Some(d) => { session.send(Input::Stdin(d)).await; }
                None => { input_open = false; session.close_input(); }
            },
            out = session.next() => match out? {
                Some(Output::Stdout(d)) => write_flush(&mut std::io::stdout(), &d),
                Some(Output::Stderr(d)) => write_flush(&mut std::io::stderr(), &d),
                Some(Output::Exit(code)) => return Ok(u8::try_from(code.clamp(0, 255)).unwrap_or(1)),
                None => bail!("the agent ended the call without an exit code"),
            },
        }
    }
}

fn write_flush(w: &mut dyn Write, d: &[u8]) {
    let _ = w.write_all(d).and_then(|()| w.flush());
}

fn terminal_size() -> Option<(u32, u32)> {
    let mut ws = libc::winsize {
        ws_row: 0,
        ws_col: 0,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCGWINSZ fills a winsize; fd 0 may not be a terminal (then it fails).
    let rc = unsafe { libc::ioctl(0, libc::TIOCGWINSZ, &mut ws) };
    (rc == 0 && ws.ws_row > 0).then(|| (u32::from(ws.ws_row), u32::from(ws.ws_col)))
}

/// The local terminal in raw mode for `exec -t`, restored on drop.
struct RawMode {
    saved: nix::sys::termios::Termios,
}

impl RawMode {
    fn enter() -> Option<RawMode> {
        let stdin = std::io::stdin();
        let saved = nix::sys::termios::tcgetattr(&stdin).ok()?;
        let mut raw = saved.clone();
        nix::sys::termios::cfmakeraw(&mut raw);
        nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &raw).ok()?;
        Some(RawMode { saved })
    }
}

impl Drop for RawMode {
    fn drop(&mut self) {
        let stdin = std::io::stdin();
        let _ =
            nix::sys::termios::tcsetattr(&stdin, nix::sys::termios::SetArg::TCSANOW, &self.saved);
    }
}

/// One side of `cp`: a host path, or `NAME:/path` in an instance.
#[derive(Debug, PartialEq, Eq)]
enum Side {
    Host(PathBuf),
    Guest(String, String),
}

fn side(s: &str) -> Side {
    match s.split_once(':') {
        Some((name, path)) if instance::check_name(name).is_ok() && path.starts_with('/') => {
            Side::Guest(name.to_string(), path.to_string())
        }
        _ => Side::Host(PathBuf::from(s)),
    }
}

/// `cp SRC DST` as `docker cp`: one side is `NAME:/path`. Copying into an
/// existing folder puts the source inside it under its own name.
pub fn cp(src: &str, dst: &str, follow_links: bool) -> Result<u8> {
    match (side(src), side(dst)) {
        (Side::Host(local), Side::Guest(name, path)) => {
            let inst = running(&name)?;
            let name_of = local
                .file_name()
                .context("the source has no file name")?
                .to_string_lossy()
                .into_owned();
            runtime()?.block_on(async {
                let client = client(&inst).await?;
                let target = match client.stat(&path, true).await? {
                    st if st.exists && st.is_dir => {
                        format!("{}/{name_of}", path.trim_end_matches('/'))
                    }
                    _ => path.clone(),
                };
                let n = client.copy_to_guest(&local, &target).await?;
                eprintln!("copied {n} bytes to {name}:{target}");
                Ok(0)
            })
        }
        (Side::Guest(name, path), Side::Host(local)) => {
            let inst = running(&name)?;
            let target = if local.is_dir() {
                local.join(
                    Path::new(&path)
                        .file_name()
                        .context("the source has no file name")?,
                )
            } else {
                local
            };
            runtime()?.block_on(async {
                let client = client(&inst).await?;
                let n = client.copy_from_guest(&path, &target, follow_links).await?;
                eprintln!("copied {n} bytes to {}", target.display());
                Ok(0)
            })
        }
        (Side::Host(_), Side::Host(_)) => bail!("one side must be NAME:/path"),
        (Side::Guest(..), Side::Guest(..)) => {
            bail!("copying between two instances is not supported")
        }
    }
}

/// `stat NAME:/path`.
pub fn stat(target: &str, follow_links: bool, json: bool) -> Result<u8> {
    let Side::Guest(name, path) = side(target) else {
        bail!("expected NAME:/path, got {target:?}");
    };
    let inst = running(&name)?;
    let st = runtime()?.block_on(async {
        client(&inst)
            .await?
            .stat(&path, follow_links)
            .await
            .map_err(anyhow::Error::from)
    })?;
    if !st.error.is_empty() {
        bail!("{path}: {}", st.error);
    }
    let kind = if !st.exists {
        "missing"
    } else if st.is_symlink {
        "symlink"
    } else if st.is_dir {
        "directory"
    } else if st.is_file {
        "file"
    } else {
        "other"
    };
    if json {
        let v = serde_json::json!({"path": path, "exists": st.exists, "type": kind, "mode": format!("{:04o}", st.mode), "size": st.size, "link_target": st.link_target});
        println!("{v}");
    } else if st.exists {
        let link = if st.is_symlink {
            format!(" -> {}", st.link_target)
        } else {
            String::new()
        };
        println!(
            "{path}: {kind}, mode {:04o}, {} bytes{link}",
            st.mode, st.size
        );
    } else {
        println!("{path}: does not exist");
    }
    Ok(if st.exists { 0 } else { 1 })
}

/// `stop NAME [--timeout S]`: the graceful stop, then the instance is removed.
pub fn stop(name: &str, timeout: u64) -> Result<u8> {
    let inst = store().open(name)?;
    let kind = match inst.info.mode.as_str() {
        "systemd" => stop::GuestKind::Systemd,
        _ => stop::GuestKind::Exec,
    };
    let opts = StopOptions {
        agent: inst.agent_dialer(),
        kind,
        timeout: Duration::from_secs(timeout),
        ..StopOptions::default()
    };
    let mut target = Detached { instance: inst };
    let report = stop::stop(&mut target, &opts);
    // The monitor records the end and removes the disks right after.
    target.instance.wait_recorded(Duration::from_secs(5));
    let how = match report.by {
        stop::StoppedBy::AlreadyGone => "was not running",
        stop::StoppedBy::Agent => "stopped by the agent's Shutdown",
        stop::StoppedBy::PowerButton => "stopped by the power button",
        stop::StoppedBy::Killed => "killed (did not stop in time)",
    };
    eprintln!("{name}: {how} in {:.1} s", report.elapsed.as_secs_f64());
    if let Some(e) = report.agent_error {
        eprintln!("{name}: Shutdown RPC: {e}");
    }
    Ok(0)
}

/// `rm NAME`: forget an instance that has ended.
pub fn rm(name: &str) -> Result<u8> {
    let inst = store().open(name)?;
    if inst.running() {
        bail!("instance {name:?} is running; stop it first");
    }
    // A monitor still finishing would write into the removed folder.
    inst.wait_recorded(Duration::from_secs(5));
    unpin(name, &store().dir(name));
    inst.remove()?;
    Ok(0)
}

/// Releases the versions an instance pinned (see `detach::pin`).
fn unpin(name: &str, dir: &Path) {
    let Ok(data) =
        host_sysmgr::system::record::read_json::<PathBuf>(&dir.join(super::detach::PIN_FILE))
    else {
        return;
    };
    let res = host_sysmgr::system::Store::open(&data, None).and_then(|s| s.unpin(name));
    if let Err(e) = res {
        eprintln!(
            "host-sysmgr: could not unpin {name}: {}",
            host_sysmgr::chain(&e)
        );
    }
}

/// `logs NAME [-f]`: the serial console; with -f, follow until the VM ends.
pub fn logs(name: &str, follow: bool) -> Result<u8> {
    let inst = store().open(name)?;
    let path = &inst.info.serial_log;
    let mut pos = 0u64;
    loop {
        // Whether it runs is read first, so the last bytes are never missed.
        let ended = !follow || !inst.running();
        let mut f = std::fs::File::open(path).with_context(|| path.display().to_string())?;
        f.seek(SeekFrom::Start(pos))?;
        let mut buf = Vec::new();
        f.read_to_end(&mut buf)?;
        pos += buf.len() as u64;
        write_flush(&mut std::io::stdout(), &buf);
        if ended {
            return Ok(0);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cp_sides_parse_like_docker_cp() {
        assert_eq!(
            side("web:/etc/hosts"),
            Side::Guest("web".into(), "/etc/hosts".into())
        );
        assert_eq!(side("./local"), Side::Host("./local".into()));
        assert_eq!(side("C:relative"), Side::Host("C:relative".into()));
        assert_eq!(
            side("/abs/with:colon"),
            Side::Host("/abs/with:colon".into())
        );
    }
}
