//! ELF inspection: architecture and static-ness of executables and modules.
//!
//! "Static" here means what the kernel needs to run a binary without a loader: no
//! `PT_INTERP` and no `DT_NEEDED`. A static-pie (ET_DYN with a `PT_DYNAMIC`, as
//! `-C target-feature=+crt-static` produces on glibc) is static.

use goblin::elf::Elf;

use crate::Cause;

/// `e_machine` of x86-64.
pub const EM_X86_64: u16 = goblin::elf::header::EM_X86_64;
/// `e_machine` of AArch64.
pub const EM_AARCH64: u16 = goblin::elf::header::EM_AARCH64;

/// Errors of [`inspect`].
#[derive(Debug, thiserror::Error)]
pub enum ElfError {
    /// The bytes do not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// The ELF headers could not be parsed.
    #[error("malformed ELF")]
    Malformed(#[source] Cause),
}

/// What [`inspect`] found in an ELF file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ElfInfo {
    /// `e_machine` (62 = x86-64, 183 = AArch64).
    pub machine: u16,
    /// The `PT_INTERP` path, if any.
    pub interpreter: Option<String>,
    /// `DT_NEEDED` libraries.
    pub needed: Vec<String>,
    /// No `PT_INTERP` and no `DT_NEEDED`.
    pub is_static: bool,
}

/// True when `bytes` start with the ELF magic.
pub fn is_elf(bytes: &[u8]) -> bool {
    bytes.starts_with(b"\x7fELF")
}

/// Parses an ELF file's headers, program headers and dynamic section.
pub fn inspect(bytes: &[u8]) -> Result<ElfInfo, ElfError> {
    if !is_elf(bytes) {
        return Err(ElfError::NotElf);
    }
    let elf = Elf::parse(bytes).map_err(|e| ElfError::Malformed(Cause::of(&e)))?;
    let interpreter = elf.interpreter.map(str::to_string);
    let needed: Vec<String> = elf.libraries.iter().map(|s| s.to_string()).collect();
    Ok(ElfInfo {
        machine: elf.header.e_machine,
        is_static: interpreter.is_none() && needed.is_empty(),
        interpreter,
        needed,
    })
}

/// Reads only `e_machine` (cheap; works for relocatable kernel modules).
pub fn machine(bytes: &[u8]) -> Result<u16, ElfError> {
    if !is_elf(bytes) {
        return Err(ElfError::NotElf);
    }
    let header = Elf::parse_header(bytes).map_err(|e| ElfError::Malformed(Cause::of(&e)))?;
    Ok(header.e_machine)
}

/// A readable name for an `e_machine` value.
pub fn machine_name(machine: u16) -> String {
    match machine {
        EM_X86_64 => "x86_64".to_string(),
        EM_AARCH64 => "aarch64".to_string(),
        goblin::elf::header::EM_386 => "i386".to_string(),
        goblin::elf::header::EM_ARM => "arm".to_string(),
        goblin::elf::header::EM_RISCV => "riscv".to_string(),
        other => format!("e_machine {other}"),
    }
}

/// The `e_machine` of an architecture name (`x86_64`, `aarch64`).
pub fn machine_of_arch(arch: &str) -> Option<u16> {
    match arch {
        "x86_64" | "amd64" => Some(EM_X86_64),
        "aarch64" | "arm64" => Some(EM_AARCH64),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_elf() {
        assert!(matches!(inspect(b"#!/bin/sh\n"), Err(ElfError::NotElf)));
        assert!(matches!(
            inspect(b"\x7fELF\x02\x01"),
            Err(ElfError::Malformed(_))
        ));
    }

    #[test]
    fn dynamic_host_binary_is_not_static() {
        let bytes = std::fs::read("/bin/ls").unwrap();
        let info = inspect(&bytes).unwrap();
        assert_eq!(info.machine, EM_X86_64);
        assert!(!info.is_static);
        assert!(info.interpreter.is_some());
        assert!(info.needed.iter().any(|n| n.starts_with("libc.so")));
    }

    #[test]
    fn arch_names() {
        assert_eq!(machine_of_arch("x86_64"), Some(EM_X86_64));
        assert_eq!(machine_of_arch("aarch64"), Some(EM_AARCH64));
        assert_eq!(machine_of_arch("mips"), None);
        assert_eq!(machine_name(EM_AARCH64), "aarch64");
    }
}
