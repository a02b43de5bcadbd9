//! `boot-bench`: the boot benchmark of docs/benchmarks.md (see
//! `tests_vm::bootbench` for the variants and what each figure is).
//!
//! ```text
//! cargo run --release -p tests-vm --bin boot-bench -- [RUNS [VARIANT,...]]
//! ```
//!
//! Boots every variant RUNS times (default 10) after one warm-up round,
//! interleaved, under TCG; prints the table, init's phases and the ratio
//! ours / baseline. Then two more passes of RUNS/2 (at least 3) under
//! `-icount shift=3,sleep=off`, whose guest times depend on the
//! instructions run, and prints how far the two passes agree. RUNS=1
//! skips the warm-up (the test suite's smoke run).

use anyhow::Result;
use host_sysmgr::vmm::Accel;
use tests_vm::bootbench;

fn main() -> Result<()> {
    let mut args = std::env::args().skip(1);
    let runs: usize = args.next().map(|s| s.parse()).transpose()?.unwrap_or(10);
    let only = args.next().unwrap_or_default();
    let names: Vec<&str> = only.split(',').filter(|s| !s.is_empty()).collect();
    let warmup = usize::from(runs > 1);

    let tcg = bootbench::prepare(&names, Accel::Tcg)?;
    let samples = bootbench::measure(&tcg, warmup, runs)?;
    println!("## TCG, {runs} boots per variant (median [min–max], guest ms unless said)\n");
    println!("{}", bootbench::table(&tcg, &samples));
    println!("### init's phases (median ms)\n");
    println!("{}", bootbench::phase_table(&tcg, &samples));

    let det_runs = if runs == 1 { 1 } else { (runs / 2).max(3) };
    let icount = bootbench::prepare(&names, Accel::Icount(3))?;
    let a = bootbench::measure(&icount, warmup, det_runs)?;
    let b = bootbench::measure(&icount, warmup, det_runs)?;
    println!("## -icount shift=3,sleep=off: two passes of {det_runs} boots\n");
    println!("{}", bootbench::agreement_table(&icount, &a, &b));
    println!("{}", bootbench::table(&icount, &a));
    println!("### init's CPU time by phase (median ms, pass 1)\n");
    println!("{}", bootbench::cpu_phase_table(&icount, &a));
    Ok(())
}
