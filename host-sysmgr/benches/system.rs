//! System-files timings: `cargo bench -p host-sysmgr --bench system`.
//!
//! - warm `ensure` (everything in place): median, and the bytes it reads
//!   (`rchar` of /proc/self/io: a count noise cannot move);
//! - initrd build from init + agent (here /bin/busybox twice, ~2 MB each,
//!   unless GUESTINIT_INIT/GUESTINIT_AGENT name real ones);
//! - a 64 MiB download from a hyper server on 127.0.0.1 with sha256 and size
//!   checked while streaming, against hashing the same bytes from a file
//!   (the ratio is what matters on a noisy machine);
//! - a registry pull (Debian's docker-registry on 127.0.0.1) of a 24 MiB kernel.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use host_sysmgr::system::download::Policy;
use host_sysmgr::system::initrd::Inputs;
use host_sysmgr::system::registry::Access;
use host_sysmgr::system::state::Kind;
use host_sysmgr::system::Store;
use sha2::{Digest, Sha256};
use std::path::Path;
use std::time::{Duration, Instant};

fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

fn time(runs: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..runs)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn rchar() -> u64 {
    std::fs::read_to_string("/proc/self/io")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: ").map(|v| v.trim().parse().unwrap()))
        .unwrap()
}

fn inputs() -> Inputs {
    let env = |k| std::env::var_os(k).map(std::path::PathBuf::from);
    let init = env("GUESTINIT_INIT").unwrap_or_else(|| "/bin/busybox".into());
    let agent = env("GUESTINIT_AGENT").unwrap_or_else(|| "/bin/busybox".into());
    Inputs::find(Some(&init), Some(&agent)).unwrap()
}

/// A kernel/build.sh-style folder with an `n`-byte fake vmlinux.
fn kernel_build(dir: &Path, n: usize) -> Vec<u8> {
    let mut v = b"\x7fELF".to_vec();
    v.extend((0..n).map(|i| (i % 251) as u8));
    std::fs::write(dir.join("vmlinux"), &v).unwrap();
    let m = serde_json::json!({
        "kind": "kernel", "release": "6.1.0-bench", "arch": std::env::consts::ARCH,
        "files": {"vmlinux": {"sha256": hex::encode(Sha256::digest(&v)), "size": v.len()}},
    });
    std::fs::write(dir.join("manifest.json"), serde_json::to_vec(&m).unwrap()).unwrap();
    v
}

fn main() {
    let work = tempfile::tempdir().unwrap();
    let build = work.path().join("build");
    std::fs::create_dir(&build).unwrap();
    let kernel = kernel_build(&build, 24 << 20);
    let inputs = inputs();

    let store = Store::open(&work.path().join("warm"), None).unwrap();
    let version = store.import_kernel(&build, None).unwrap().version;
    store.ensure(&inputs).unwrap();
    let warm = time(200, || {
        store.ensure(&inputs).unwrap();
    });
    let before = rchar();
    store.ensure(&inputs).unwrap();
    let read = rchar() - before;
    println!("warm ensure: median {warm:?}, {read} bytes read");

    let mut n = 0;
    let built = time(5, || {
        n += 1;
        let s = Store::open(&work.path().join(format!("build-{n}")), None).unwrap();
        s.ensure_initrd(&inputs).unwrap();
    });
    println!("initrd build (uncompressed, signed): median {built:?}");

    let server = support::http::Server::start();
    let body: Vec<u8> = (0..64u32 << 20).map(|i| (i % 253) as u8).collect();
    let sha = hex::encode(Sha256::digest(&body));
    server.put("big", body.clone());
    let file = work.path().join("big");
    std::fs::write(&file, &body).unwrap();
    let policy = Policy {
        progress: false,
        ..Policy::default()
    };
    let expect = host_sysmgr::system::download::Expect {
        sha256: Some(sha),
        size: Some(body.len() as u64),
        limit: 1 << 30,
    };
    let partial = work.path().join("big.part");
    let dl = time(5, || {
        host_sysmgr::system::download::fetch(&server.url("big"), &expect, &partial, &policy)
            .unwrap();
        std::fs::remove_file(&partial).unwrap();
    });
    let local = time(5, || {
        host_sysmgr::system::install::sha256_file(&file).unwrap();
    });
    let mib = |d: Duration| 64.0 / d.as_secs_f64();
    println!(
        "64 MiB download + verify: median {dl:?} ({:.0} MiB/s); sha256 of the file alone {local:?} ({:.0} MiB/s); ratio {:.2}",
        mib(dl),
        mib(local),
        dl.as_secs_f64() / local.as_secs_f64()
    );

    let reg = support::registry::Registry::start();
    let r = format!("{}/guestinit/kernel:bench", reg.addr);
    store
        .publish(Kind::Kernel, &version, &r, &Access::default())
        .unwrap();
    let mut n = 0;
    let pulled = time(5, || {
        n += 1;
        let s = Store::open(&work.path().join(format!("pull-{n}")), None).unwrap();
        s.pull_artifact(&r, &Access::default()).unwrap();
    });
    println!(
        "registry pull of a {} MiB kernel: median {pulled:?} ({:.0} MiB/s)",
        kernel.len() >> 20,
        (kernel.len() >> 20) as f64 / pulled.as_secs_f64()
    );
}
