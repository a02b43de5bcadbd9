//! Verification and build timings.
//!
//! `cargo bench -p initrd-builder --bench verify` builds one signed image per
//! compression in memory, then reports the median of repeated runs of:
//! - verify: signature + manifest parse + image SHA-256 (what a host does before boot);
//! - deep: verify + decompress + check every entry against the manifest;
//! - unpack: decompression alone (a proxy for the kernel's unpack cost);
//! - build: the whole build from spec.
//!
//! Set `INITRD_BENCH_PAYLOAD=FILE` to carry FILE (default /bin/busybox, a ~2 MB
//! static binary) as the bulk of the image.

use std::path::Path;
use std::time::{Duration, Instant};

use initrd_builder::{build, compress, sign, verify, BuildOptions, Compression, Spec};

fn median(mut f: impl FnMut(), runs: usize) -> Duration {
    let mut times: Vec<Duration> = (0..runs)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed()
        })
        .collect();
    times.sort();
    times[runs / 2]
}

fn spec(dir: &Path, payload: &Path) -> Spec {
    let text = format!(
        "[init]\npath = \"{}\"\nversion = \"1\"\nprotocol = 1\n\
         [[file]]\nsrc = \"{}\"\ndest = \"/usr/lib/payload\"\nmode = 0o644\n",
        payload.display(),
        payload.display()
    );
    Spec::parse(&text, dir).expect("bench spec")
}

fn main() {
    let payload = std::env::var("INITRD_BENCH_PAYLOAD").unwrap_or_else(|_| "/bin/busybox".into());
    let payload = Path::new(&payload);
    let spec = spec(Path::new("/"), payload);
    let key = sign::generate().expect("key");
    let public = key.verifying_key();
    println!(
        "payload {} carried twice (as /init and a data file)",
        payload.display()
    );
    println!(
        "{:<6} {:>10} {:>12} {:>10} {:>10} {:>10} {:>10}",
        "codec", "image B", "archive B", "verify", "deep", "unpack", "build"
    );
    for c in Compression::ALL {
        let opts = BuildOptions {
            compression: Some(c),
            signing_key: Some(key.clone()),
            ..Default::default()
        };
        let t = Instant::now();
        let out = build(&spec, &opts).expect("build");
        let build_time = t.elapsed();
        let sig = sign::encode_signature(&out.signature.expect("signed"));
        let fast = median(
            || {
                verify::verify(&out.image, &out.manifest_bytes, &sig, &public).expect("verify");
            },
            31,
        );
        let deep = median(
            || {
                let m =
                    verify::verify(&out.image, &out.manifest_bytes, &sig, &public).expect("verify");
                verify::check_contents(&out.image, &m).expect("deep");
            },
            11,
        );
        let unpack = median(
            || {
                compress::decompress(&out.image).expect("decompress");
            },
            11,
        );
        println!(
            "{:<6} {:>10} {:>12} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.0}ms",
            c.name(),
            out.manifest.image.size,
            out.manifest.image.uncompressed_size,
            fast.as_secs_f64() * 1e3,
            deep.as_secs_f64() * 1e3,
            unpack.as_secs_f64() * 1e3,
            build_time.as_secs_f64() * 1e3,
        );
    }
}
