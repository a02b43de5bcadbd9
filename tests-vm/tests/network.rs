//! The network init configures from the config (`network_enabled`, hypeman's
//! keys and the superset ones), in a real VM on QEMU's user-mode network:
//! the guest fetches a page from a server this test runs on 127.0.0.1
//! (through a guest forward), and a host → guest forward reaches a server in
//! the guest. Nothing but this machine's loopback is reachable.

use anyhow::{ensure, Context, Result};
use host_sysmgr::disks::RootFs;
use host_sysmgr::stop::StopOptions;
use host_sysmgr::vmm::Nic;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::time::{Duration, Instant};
use tests_vm::guest::{Guest, Root};
use tests_vm::rootfs::Flavor;

/// A server on 127.0.0.1 answering every request with `body`; its port.
fn host_server(body: &'static str) -> Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let port = listener.local_addr()?.port();
    std::thread::spawn(move || {
        for mut conn in listener.incoming().flatten().take(16) {
            let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
            let mut req = [0u8; 1024];
            let _ = conn.read(&mut req);
            let _ = write!(
                conn,
                "HTTP/1.0 200 OK\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            );
        }
    });
    Ok(port)
}

/// A port free on 127.0.0.1 right now (for a host → guest forward).
fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

/// `GET /` on 127.0.0.1:`port`, retried until `deadline`; the whole reply.
fn fetch(port: u16, deadline: Instant) -> Result<String> {
    loop {
        let attempt = (|| -> std::io::Result<String> {
            let mut s = TcpStream::connect(("127.0.0.1", port))?;
            s.set_read_timeout(Some(Duration::from_secs(5)))?;
            s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
            let mut reply = String::new();
            s.read_to_string(&mut reply)?;
            Ok(reply)
        })();
        match attempt {
            Ok(r) if r.contains("200 OK") => return Ok(r),
            _ if Instant::now() >= deadline => {
                return attempt.context("the guest's server never answered")
            }
            _ => std::thread::sleep(Duration::from_millis(200)),
        }
    }
}

fn network_config(c: &mut guest_contract::config::Config) {
    c.network_enabled = Some(true);
    c.guest_ip = Some("10.0.2.15".into());
    c.guest_cidr = Some(24);
    c.guest_gw = Some("10.0.2.2".into());
    c.guest_dns = Some("10.0.2.3".into());
    c.search_domains = Some(vec!["corp.example".into()]);
}

#[test]
fn the_guest_reaches_a_host_server_and_serves_one_through_its_forwards() -> Result<()> {
    let host_port = host_server("hello from the host\n")?;
    let published = free_port()?;
    let script = "busybox ip -o -4 addr show dev eth0 | busybox awk '{print \"addr \" $4}'; \
        busybox ip route | busybox grep default; cat /etc/resolv.conf; \
        timeout 30 busybox wget -q -O - http://10.0.2.100:8000/; \
        mkdir -p /www && echo guest-page > /www/index.html; \
        echo serving; exec busybox httpd -f -p 8080 -h /www";
    let mut g = Guest::new("network", &["/bin/sh", "-c", script]).with_config(network_config);
    g.nic = Some(Nic {
        host_forwards: vec![(published, 8080)],
        guest_forwards: vec![(8000, host_port)],
        mac: None,
    });
    let mut r = g.start()?;
    r.wait_line("serving")?;
    let page = fetch(published, Instant::now() + Duration::from_secs(30))?;
    // The power button: init sends the app (httpd) SIGTERM.
    let (_, outcome) = r.stop(StopOptions::default());
    let out = outcome.log;
    ensure!(page.ends_with("guest-page\n"), "{page}");
    for line in [
        "addr 10.0.2.15/24",
        "nameserver 10.0.2.3",
        "search corp.example",
        "hello from the host",
    ] {
        ensure!(out.contains(line), "no {line:?} in:\n{out}");
    }
    ensure!(
        out.lines()
            .any(|l| l.starts_with("default via 10.0.2.2 dev eth0")),
        "{out}"
    );
    Ok(())
}

#[test]
fn an_image_without_a_shell_or_ip_gets_its_network_too() -> Result<()> {
    let host_port = host_server("reached without a shell\n")?;
    let mut g = Guest::new(
        "network-distroless",
        &["/usr/bin/vm-helper", "http-get", "10.0.2.100:8000"],
    )
    .with_config(network_config);
    g.root = Root::Image(Flavor::Distroless, RootFs::Erofs);
    g.nic = Some(Nic {
        guest_forwards: vec![(8000, host_port)],
        ..Nic::default()
    });
    let out = g.run()?;
    ensure!(out.has_line("reached without a shell"), "{}", out.log);
    ensure!(
        out.exit_line()? == r#"HYPEMAN-EXIT code=0 message="success""#,
        "{}",
        out.log
    );
    Ok(())
}

#[test]
fn a_missing_nic_is_the_network_failure() -> Result<()> {
    let g = Guest::new("network-no-nic", &["/bin/true"]).with_config(network_config);
    let out = g.run()?;
    let exit = out.exit_line()?;
    ensure!(
        exit.starts_with(r#"HYPEMAN-EXIT code=77 message="init: network: wait for eth0: "#),
        "{}",
        out.log
    );
    ensure!(!out.log.contains("Kernel panic"), "{}", out.log);
    Ok(())
}

#[test]
fn run_net_publish_from_the_cli() -> Result<()> {
    use std::io::BufRead;
    let bins = tests_vm::artifacts::release_binaries()?;
    let kernel = tests_vm::kernel::debian()?;
    let initrd = tests_vm::initramfs::image(&kernel, &tests_vm::initramfs::Variant::default())?;
    let rootfs = tempfile::tempdir()?;
    tests_vm::rootfs::populate(rootfs.path(), Flavor::Busybox)?;
    let published = free_port()?;
    let _lock = tests_vm::guest::vm_lock()?;
    let script = "busybox ip -o -4 addr show dev eth0 | busybox awk '{print \"addr \" $4}'; \
        mkdir -p /www && echo cli-page > /www/index.html; echo serving; \
        timeout 60 busybox httpd -f -p 8080 -h /www; exit 3";
    let mut child = std::process::Command::new(&bins.host_sysmgr)
        .args(["run", "--kernel"])
        .arg(&kernel.vmlinux)
        .arg("--initrd")
        .arg(&initrd)
        .arg("--rootfs")
        .arg(rootfs.path())
        .args([
            "--publish",
            &format!("{published}:8080"),
            "--",
            "/bin/sh",
            "-c",
            script,
        ])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .spawn()?;
    let stdout = child.stdout.take().context("stdout")?;
    let mut seen = Vec::new();
    for line in std::io::BufReader::new(stdout).lines() {
        let line = line?;
        let serving = line.trim_end() == "serving";
        seen.push(line);
        if serving {
            break;
        }
    }
    let page = fetch(published, Instant::now() + Duration::from_secs(30));
    // Ctrl-C: host-sysmgr kills the VM, removes its files and exits 130.
    // SAFETY: kill has no memory-safety preconditions; the pid is our child's.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let status = child.wait()?;
    let page = page?;
    ensure!(status.code() == Some(130), "{status:?}");
    ensure!(page.ends_with("cli-page\n"), "{page}");
    ensure!(
        seen.iter().any(|l| l.contains("addr 10.0.2.15/24")),
        "{seen:#?}"
    );
    Ok(())
}
