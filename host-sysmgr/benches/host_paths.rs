//! Host-side parsing and verification paths:
//! `cargo bench -p host-sysmgr --bench host_paths`.
//!
//! - sha256 verification of a 70 MB kernel file (what `ensure` does when a
//!   stat stamp changed), next to reading the same file without hashing;
//! - sentinel parsing of a 10 MB serial log: the streaming parser over the
//!   whole log (the run loop's path) and the host's bottom-up tail scan for
//!   `HYPEMAN-EXIT` (what a hypeman host reads);
//! - `config.json` parse of a config with every hypeman key set.
//!
//! Medians of repeated runs; the ratios beside the times are what a noisy
//! machine keeps. (Signature verification of an initrd is in
//! `cargo bench -p initrd-builder --bench verify`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use guest_contract::sentinel::{scan_tail, SentinelStream};
use std::io::Read;
use std::time::{Duration, Instant};

fn median(runs: usize, mut f: impl FnMut()) -> Duration {
    let mut v: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    v.sort();
    v[runs / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1e3)
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("vmlinux");
    let bytes: Vec<u8> = (0..70_000_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    std::fs::write(&kernel, &bytes).unwrap();
    let hash = median(7, || {
        host_sysmgr::system::install::sha256_file(&kernel).unwrap();
    });
    let read = median(7, || {
        let mut f = std::fs::File::open(&kernel).unwrap();
        let mut buf = vec![0u8; 1 << 20];
        while f.read(&mut buf).unwrap() > 0 {}
    });
    println!(
        "| sha256 verify of a 70 MB kernel (page cache warm) | {} ({:.0} MB/s); read alone {} (ratio {:.1}) |",
        ms(hash),
        70.0 / hash.as_secs_f64(),
        ms(read),
        hash.as_secs_f64() / read.as_secs_f64()
    );

    let mut log = Vec::with_capacity(10 << 20);
    let mut i = 0u64;
    while log.len() < 10 << 20 {
        log.extend_from_slice(
            format!(
                "2026-12-05T06:00:00Z [INFO] [app] line {i} of the app's output, some text\r\n"
            )
            .as_bytes(),
        );
        if i.is_multiple_of(5000) {
            log.extend_from_slice(b"HYPEMAN-AGENT-READY ts=2026-12-05T06:00:00.123456789Z\n");
        }
        i += 1;
    }
    log.extend_from_slice(b"HYPEMAN-EXIT code=0 message=\"success\"\n");
    let stream = median(7, || {
        let mut s = SentinelStream::new();
        let mut found = 0;
        for chunk in log.chunks(64 << 10) {
            found += s.push(chunk).len();
        }
        found += s.finish().len();
        assert!(found > 2);
    });
    let tail = median(101, || {
        assert!(scan_tail(&log).exit.is_some());
    });
    println!(
        "| sentinel parsing of a 10 MB serial log | stream {} ({:.0} MB/s); tail scan for EXIT {} |",
        ms(stream),
        10.0 / stream.as_secs_f64(),
        ms(tail)
    );

    let config = br#"{"entrypoint":["/docker-entrypoint.sh"],"cmd":["nginx","-g","daemon off;"],"workdir":"/",
        "env":{"PATH":"/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin","NGINX_VERSION":"1.27.3","A":"1","B":"2"},
        "network_enabled":true,"guest_ip":"10.100.0.2","guest_cidr":16,"guest_gw":"10.100.0.1","guest_dns":"1.1.1.1",
        "volume_mounts":[{"device":"/dev/vdd","path":"/data","mode":"rw"},{"device":"/dev/vde","path":"/cache","mode":"overlay","overlay_device":"/dev/vdf"}],
        "init_mode":"exec","skip_kernel_headers":false,"skip_guest_agent":false,
        "egress_proxy":{"enabled":false,"proxy_url":""},"enable_rosetta":false}"#;
    let parse = median(10_001, || {
        guest_contract::config::parse_config(config).unwrap();
    });
    println!(
        "| config.json parse (every hypeman key, {} bytes) | {:.1} µs |",
        config.len(),
        parse.as_secs_f64() * 1e6
    );
}
