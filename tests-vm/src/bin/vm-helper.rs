//! `vm-helper`: a static test program for what busybox cannot do in a guest.
//!
//! ```text
//! vm-helper probe [ARGS...]   print argv, the environment (sorted) and the cwd
//! vm-helper exit N            exit with code N
//! vm-helper segv              die of SIGSEGV
//! vm-helper oom               allocate and touch memory until the kernel kills it
//! vm-helper meminfo           print MemFree and MemAvailable (kB)
//! vm-helper term-self         kill(1, SIGTERM) and report the forwarded signal
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

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
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
        _ => {
            eprintln!(
                "usage: vm-helper probe|exit N|segv|oom|meminfo|term-self|http-get ADDR:PORT"
            );
            2
        }
    };
    let _ = std::io::stdout().flush();
    std::process::exit(code);
}
