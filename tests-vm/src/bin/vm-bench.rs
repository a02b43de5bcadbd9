//! `vm-bench`: boot-time figures for docs/benchmarks.md.
//!
//! For each initramfs compression (none, gzip, zstd, lz4) it boots the standard
//! scenario (`/bin/true` on a busybox ext4 root, hypeman layout, Debian's
//! kernel) N times and reports medians of:
//! - unpack: kernel log time from "Trying to unpack rootfs image as initramfs"
//!   to "Freeing initrd memory" (the kernel unpacking our cpio);
//! - kernel→init: init's own "kernel start to init" figure;
//! - init→execve: init's time to the app's execve;
//! - QEMU start → PROGRAM-START and → QEMU exit (wall clock, host side).
//!
//! When a `kernel/` build is present (.cache/kernel-build), one more row boots
//! it (everything built in, no modules in the initramfs).
//!
//! Usage: `cargo run --release -p tests-vm --bin vm-bench -- [RUNS [FILTER]]`
//! (default 5 runs; FILTER keeps the rows whose kernel label or compression
//! contains it).

use anyhow::{Context, Result};
use tests_vm::guest::{Guest, Outcome};
use tests_vm::initramfs::Variant;
use tests_vm::kernel::Kernel;

fn kernel_ts(line: &str) -> Option<f64> {
    let inner = line.trim_start().strip_prefix('[')?.split(']').next()?;
    inner.trim().parse().ok()
}

fn unpack_ms(log: &str) -> Option<f64> {
    let start = log
        .lines()
        .find(|l| l.contains("Trying to unpack rootfs image as initramfs"))?;
    let end = log.lines().find(|l| l.contains("Freeing initrd memory"))?;
    Some((kernel_ts(end)? - kernel_ts(start)?) * 1000.0)
}

/// (init→execve, kernel→init) from init's timing line.
fn init_ms(log: &str) -> Option<(f64, f64)> {
    let line = log.lines().find(|l| l.contains("[hypeman-init:timing]"))?;
    let num = |after: &str| -> Option<f64> {
        let rest = line.split(after).nth(1)?;
        rest.split_whitespace().next()?.parse().ok()
    };
    Some((num("] init ")?, num("kernel start to init ")?))
}

fn ms(v: f64) -> String {
    if v.is_nan() {
        "-".into()
    } else {
        format!("{v:.0} ms")
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

struct Row {
    unpack: Vec<f64>,
    to_init: Vec<f64>,
    init: Vec<f64>,
    to_start: Vec<f64>,
    to_exit: Vec<f64>,
}

fn sample(row: &mut Row, out: &Outcome) -> Result<()> {
    // A kernel may print no unpack lines: NaN, shown as "-".
    row.unpack.push(unpack_ms(&out.log).unwrap_or(f64::NAN));
    let (init, to_init) = init_ms(&out.log).context("no timing line")?;
    row.init.push(init);
    row.to_init.push(to_init);
    let start = out.to_program_start.context("no PROGRAM-START")?;
    row.to_start.push(start.as_secs_f64() * 1000.0);
    row.to_exit.push(out.to_exit.as_secs_f64() * 1000.0);
    Ok(())
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    println!("| kernel | compression | image bytes | unpack (kernel) | kernel→init | init→execve | QEMU→PROGRAM-START | QEMU→exit |");
    println!("|---|---|---:|---:|---:|---:|---:|---:|");
    let debian = tests_vm::kernel::debian()?;
    let mut rows: Vec<(&str, Kernel, &str)> = ["none", "gzip", "zstd", "lz4"]
        .into_iter()
        .map(|c| ("Debian (modules)", debian.clone(), c))
        .collect();
    if let Some(k) = tests_vm::kernel::project_build() {
        rows.push(("kernel/ (built in)", k, "zstd"));
    }
    if let Some(filter) = std::env::args().nth(2) {
        rows.retain(|(label, _, c)| label.contains(&filter) || *c == filter);
    }
    for (label, kernel, c) in rows {
        let mut g = Guest::new(&format!("bench-{c}"), &["/bin/true"]);
        g.initrd = Variant {
            compression: c.into(),
            extra: Vec::new(),
        };
        g.kernel = Some(kernel.clone());
        g.quiet_kernel = false; // the unpack lines are info-level
        let size = std::fs::metadata(tests_vm::initramfs::image(&kernel, &g.initrd)?)?.len();
        let mut row = Row {
            unpack: vec![],
            to_init: vec![],
            init: vec![],
            to_start: vec![],
            to_exit: vec![],
        };
        for _ in 0..runs {
            sample(&mut row, &g.run()?)?;
        }
        println!(
            "| {label} | {c} | {size} | {} | {} | {} | {} | {} |",
            ms(median(row.unpack)),
            ms(median(row.to_init)),
            ms(median(row.init)),
            ms(median(row.to_start)),
            ms(median(row.to_exit))
        );
    }
    println!("\nmedians of {runs} boots each");
    Ok(())
}
