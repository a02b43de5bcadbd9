//! `steps-bench`: what the network and volume steps cost init, in a VM.
//!
//! Boots two scenarios alternately, RUNS times each (default 5), on
//! Debian's kernel under QEMU (TCG, q35, 1 vCPU, 512 MiB):
//! - exec only: `/bin/true`, no network, no volumes;
//! - network + 2 volumes: a virtio NIC and `network_enabled` (address, route,
//!   resolv.conf), one ro and one rw ext4 volume.
//!
//! and prints the medians of init's own timing line (CLOCK_BOOTTIME, first
//! instruction → the app's execve) and of its `network=` and `volumes=`
//! phases, with the ratio of the two totals measured in the same run.
//!
//! Usage: `cargo run --release -p tests-vm --bin steps-bench -- [RUNS]`

use anyhow::{Context, Result};
use tests_vm::bootbench;
use tests_vm::guest::Guest;

/// A phase of init's timing line (`name=12.345 ms`), or the total.
fn phase(log: &str, name: &str) -> Option<f64> {
    let line = log.lines().find(|l| l.contains("[hypeman-init:timing]"))?;
    let key = if name == "total" {
        "] init ".to_string()
    } else {
        format!(" {name}=")
    };
    line.split(&key)
        .nth(1)?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn plain() -> Guest {
    Guest::new("steps-exec-only", &["/bin/true"])
}

fn with_steps(work: &std::path::Path) -> Result<Guest> {
    let g = Guest::new("steps-net-volumes", &["/bin/true"]);
    bootbench::with_volumes(bootbench::with_network(g), work)
}

fn main() -> Result<()> {
    let runs: usize = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(5);
    let work = tempfile::tempdir()?;
    let (a, b) = (plain(), with_steps(work.path())?);
    let names = ["total", "network", "volumes"];
    let mut got: [Vec<Vec<f64>>; 2] = [vec![vec![]; 3], vec![vec![]; 3]];
    for _ in 0..runs {
        for (i, g) in [&a, &b].into_iter().enumerate() {
            let out = g.run()?;
            for (j, name) in names.iter().enumerate() {
                if let Some(v) = phase(&out.log, name) {
                    got[i][j].push(v);
                }
            }
            if phase(&out.log, "total").is_none() {
                return Err(anyhow::anyhow!("no timing line")).context(out.log);
            }
        }
    }
    let med: Vec<Vec<f64>> = got
        .iter()
        .map(|s| s.iter().cloned().map(median).collect())
        .collect();
    println!("| scenario | init→execve | network | volumes |");
    println!("|---|---:|---:|---:|");
    for (label, m) in ["exec only", "network + 2 volumes"].iter().zip(&med) {
        let cell = |v: f64| {
            if v.is_nan() {
                "-".into()
            } else {
                format!("{v:.1} ms")
            }
        };
        println!(
            "| {label} | {} | {} | {} |",
            cell(m[0]),
            cell(m[1]),
            cell(m[2])
        );
    }
    println!(
        "\nratio (network + 2 volumes / exec only): {:.2} over {runs} boots each",
        med[1][0] / med[0][0]
    );
    Ok(())
}
