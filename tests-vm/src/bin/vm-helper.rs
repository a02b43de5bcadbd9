//! `vm-helper`: a static test program for what busybox cannot do in a guest.
//!
//! ```text
//! vm-helper probe [ARGS...]   print argv, the environment (sorted) and the cwd
//! vm-helper exit N            exit with code N
//! vm-helper segv              die of SIGSEGV
//! vm-helper oom               allocate and touch memory until the kernel kills it
//! vm-helper meminfo           print MemFree and MemAvailable (kB)
//! vm-helper term-self         kill(1, SIGTERM) and report the forwarded signal
//! vm-helper stamp LABEL       print `BENCH LABEL t_us=<CLOCK_BOOTTIME µs>` and the
//!                             resident sets of PID 1 and of the guest agent (boot-bench)
//! /init (as PID 1, no args)   the boot benchmark's floor: print the stamp
//!                             (label `floor`) and power off at once
//! ```

use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};

static GOT_TERM: AtomicBool = AtomicBool::new(false);

extern "C" fn on_term(_: libc::c_int) {
    GOT_TERM.store(true, Ordering::SeqCst);
}

fn probe(args: &[String]) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "--- argv");
    for a in args {
        let _ = writeln!(out, "[{a}]");
    }
    let _ = writeln!(out, "--- env");
    let mut env: Vec<String> = std::env::vars_os()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect();
    env.sort();
    for e in env {
        let _ = writeln!(out, "{e}");
    }
    let cwd = match std::env::current_dir() {
        Ok(p) => p.display().to_string(),
        Err(e) => format!("getcwd failed: {e}"),
    };
    let _ = writeln!(out, "--- cwd\n{cwd}\n--- end");
}

fn oom() -> ! {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        chunks.push(vec![0x5a; 16 << 20]);
    }
}

fn meminfo() {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    for line in text
        .lines()
        .filter(|l| l.starts_with("MemFree:") || l.starts_with("MemAvailable:"))
    {
        println!("{line}");
    }
}

fn term_self() -> i32 {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe;
    // kill has no memory-safety preconditions.
    unsafe {
        libc::signal(libc::SIGTERM, on_term as *const () as libc::sighandler_t);
        libc::kill(1, libc::SIGTERM);
    }
    for _ in 0..500 {
        if GOT_TERM.load(Ordering::SeqCst) {
            println!("got-TERM");
            return 0;
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    println!("no SIGTERM arrived");
    1
}

/// `GET /` from `addr` (an IP:port, no name lookup), the body on stdout;
/// retried for 20 s while the network comes up.
fn http_get(addr: &str) -> i32 {
    use std::io::Read;
    let Ok(sock) = addr.parse::<std::net::SocketAddr>() else {
        eprintln!("http-get: {addr:?} is not IP:port");
        return 2;
    };
    let timeout = std::time::Duration::from_secs(5);
    for _ in 0..40 {
        let Ok(mut s) = std::net::TcpStream::connect_timeout(&sock, timeout) else {
            std::thread::sleep(std::time::Duration::from_millis(500));
            continue;
        };
        let _ = s.set_read_timeout(Some(timeout));
        let _ = write!(s, "GET / HTTP/1.0\r\nHost: {addr}\r\n\r\n");
        let mut reply = Vec::new();
        let _ = s.take(1 << 20).read_to_end(&mut reply);
        let text = String::from_utf8_lossy(&reply);
        if let Some((_, body)) = text.split_once("\r\n\r\n") {
            print!("{body}");
            return 0;
        }
    }
    eprintln!("http-get: no answer from {addr}");
    1
}

/// CLOCK_BOOTTIME in microseconds.
fn boottime_us() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes one timespec we own.
    unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    (ts.tv_sec as u64) * 1_000_000 + (ts.tv_nsec as u64) / 1000
}

/// The resident set (kB) of a process, from its page tables
/// (`smaps_rollup`: exact, where `status`'s counters may lag behind for a
/// process that faulted in few pages), 0 when unknown.
fn rss_kb(pid: &str) -> u64 {
    let rollup = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).unwrap_or_default();
    rollup
        .lines()
        .find_map(|l| l.strip_prefix("Rss:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn agent_pid() -> Option<String> {
    std::fs::read_dir("/proc").ok()?.flatten().find_map(|e| {
        let pid = e.file_name().to_string_lossy().into_owned();
        let comm = std::fs::read_to_string(e.path().join("comm")).ok()?;
        (comm.trim() == "guest-agent").then_some(pid)
    })
}

fn stamp(label: &str) {
    let t = boottime_us();
    let agent = agent_pid().map_or(0, |p| rss_kb(&p));
    println!(
        "BENCH {label} t_us={t} init_rss_kb={} agent_rss_kb={agent}",
        rss_kb("1")
    );
}

/// The floor: a static PID 1 that prints its clock and powers off.
fn floor() -> ! {
    println!("BENCH floor t_us={}", boottime_us());
    let _ = std::io::stdout().flush();
    // SAFETY: reboot(2) with the power-off command takes no pointers.
    unsafe {
        libc::sync();
        libc::reboot(libc::RB_POWER_OFF);
    }
    loop {
        std::thread::sleep(std::time::Duration::from_secs(3600));
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // SAFETY: getpid has no preconditions.
    if args.is_empty() && unsafe { libc::getpid() } == 1 {
        floor();
    }
    let code = match args.first().map(String::as_str) {
        Some("probe") => {
            probe(&args[1..]);
            0
        }
        Some("exit") => args.get(1).and_then(|n| n.parse().ok()).unwrap_or(2),
        Some("segv") => {
            // SAFETY: restoring the default action (Rust's runtime installs a
            // handler for stack overflows) and raising have no memory-safety
            // preconditions.
            unsafe {
                libc::signal(libc::SIGSEGV, libc::SIG_DFL);
                libc::raise(libc::SIGSEGV);
            }
            1
        }
        Some("oom") => oom(),
        Some("meminfo") => {
            meminfo();
            0
        }
        Some("term-self") => term_self(),
        Some("http-get") => http_get(args.get(1).map_or("", String::as_str)),
        Some("stamp") => {
            stamp(args.get(1).map_or("app", String::as_str));
            0
        }
        _ => {
            eprintln!(
                "usage: vm-helper probe|exit N|segv|oom|meminfo|term-self|http-get ADDR:PORT|stamp LABEL"
            );
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
