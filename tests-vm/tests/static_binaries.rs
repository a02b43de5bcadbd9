//! The shipped binaries are static for the target architecture, and init fits
//! its size budget.

use anyhow::{ensure, Context, Result};
use initrd_builder::elf;
use tests_vm::artifacts;

/// init's stripped size budget: 1.5 MiB, plus 128 KiB since the
/// kernel-headers worker (gzip inflate + a tar reader, ~100 KB) joined it.
const INIT_BUDGET: u64 = (1536 + 128) * 1024;

#[test]
fn init_and_agent_are_static_x86_64_binaries() -> Result<()> {
    let bins = artifacts::release_binaries()?;
    for path in [&bins.init, &bins.agent] {
        let bytes = std::fs::read(path).with_context(|| format!("read {}", path.display()))?;
        let info = elf::inspect(&bytes)?;
        ensure!(
            info.machine == elf::EM_X86_64,
            "{}: e_machine {}",
            path.display(),
            info.machine
        );
        ensure!(
            info.interpreter.is_none(),
            "{}: PT_INTERP {:?}",
            path.display(),
            info.interpreter
        );
        ensure!(
            info.needed.is_empty(),
            "{}: DT_NEEDED {:?}",
            path.display(),
            info.needed
        );
        ensure!(info.is_static, "{} is not static", path.display());
    }
    Ok(())
}

#[test]
fn init_stripped_size_is_recorded_and_within_budget() -> Result<()> {
    let bins = artifacts::release_binaries()?;
    let init = std::fs::metadata(&bins.init)?.len();
    let agent = std::fs::metadata(&bins.agent)?.len();
    let report = format!("init {init} bytes (budget {INIT_BUDGET})\nguest-agent {agent} bytes\n");
    std::fs::write(artifacts::report_dir()?.join("binary-sizes.txt"), &report)?;
    println!("{report}");
    ensure!(
        init <= INIT_BUDGET,
        "init is {init} bytes stripped, over the {INIT_BUDGET}-byte budget"
    );
    Ok(())
}
