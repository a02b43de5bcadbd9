//! A distribution's compressed kernel (`vmlinuz`, an x86 bzImage) unpacked to
//! the ELF `vmlinux` inside it, which PVH-capable VMMs boot directly. The
//! payload is found through the boot protocol's setup header
//! (`payload_offset`/`payload_length`, protocol 2.08+), decompressed with a
//! size cap, and must be an ELF with the PVH entry note (`CONFIG_PVH`).

use super::error::{Result, SystemError};
use std::io::Read;
use std::path::Path;

/// Largest vmlinux unpacked.
const MAX_VMLINUX: u64 = 1 << 30;
/// Xen's ELF note type naming the 32-bit PVH entry point.
const XEN_ELFNOTE_PHYS32_ENTRY: u32 = 18;

fn bad(path: &Path, message: impl Into<String>) -> SystemError {
    SystemError::Kernel {
        path: path.to_path_buf(),
        message: message.into(),
    }
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    b.get(at..at + 4)
        .map(|s| u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

/// The compressed payload of a bzImage.
pub fn payload<'a>(image: &'a [u8], path: &Path) -> Result<&'a [u8]> {
    if image.get(0x202..0x206) != Some(b"HdrS") {
        return Err(bad(path, "not a bzImage (no HdrS setup header)"));
    }
    let version = image
        .get(0x206..0x208)
        .map_or(0, |v| u16::from_le_bytes([v[0], v[1]]));
    if version < 0x208 {
        return Err(bad(
            path,
            format!("boot protocol {version:#x} has no payload fields (2.08+)"),
        ));
    }
    let sects = match image.get(0x1f1).copied().unwrap_or(0) {
        0 => 4,
        n => usize::from(n),
    };
    let (Some(off), Some(len)) = (u32_at(image, 0x248), u32_at(image, 0x24c)) else {
        return Err(bad(path, "truncated setup header"));
    };
    let start = (sects + 1) * 512 + off as usize;
    image
        .get(start..start.saturating_add(len as usize))
        .ok_or_else(|| bad(path, "the payload lies outside the file"))
}

/// Decompresses a payload by its magic (gzip, xz, zstd, lz4 legacy).
fn decompress(p: &[u8], path: &Path) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    let cap = MAX_VMLINUX + 1;
    let res = if p.starts_with(&[0x1f, 0x8b]) {
        flate2::read::GzDecoder::new(p)
            .take(cap)
            .read_to_end(&mut out)
            .map(drop)
    } else if p.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
        zstd::Decoder::new(p)
            .and_then(|d| d.take(cap).read_to_end(&mut out))
            .map(drop)
    } else if p.starts_with(b"\xfd7zXZ\0") {
        xz_single_stream(p, cap, &mut out)
    } else if p.starts_with(&[0x02, 0x21, 0x4c, 0x18]) {
        let lz4 = initrd_builder::Compression::Lz4;
        initrd_builder::compress::decompress_stream(p, lz4, MAX_VMLINUX as usize)
            .map(|(v, _)| out = v)
            .map_err(|e| std::io::Error::other(e.to_string()))
    } else {
        return Err(bad(
            path,
            "unknown payload compression (gzip, xz, zstd and lz4 are read)",
        ));
    };
    res.map_err(|e| bad(path, format!("cannot decompress the payload: {e}")))?;
    if out.len() as u64 > MAX_VMLINUX {
        return Err(SystemError::TooLarge {
            what: path.display().to_string(),
            limit: MAX_VMLINUX,
        });
    }
    Ok(out)
}

/// One xz stream (liblzma: the kernel's use the x86 BCJ filter), ignoring
/// what follows it (the kernel appends the unpacked size).
fn xz_single_stream(mut input: &[u8], cap: u64, out: &mut Vec<u8>) -> std::io::Result<()> {
    use xz2::stream::{Action, Status, Stream};
    let mut s = Stream::new_stream_decoder(u64::MAX, 0)?;
    loop {
        if out.capacity() - out.len() < 1 << 20 {
            out.reserve(8 << 20);
        }
        let (in_before, out_before) = (s.total_in(), out.len());
        let status = s.process_vec(input, out, Action::Run)?;
        input = &input[(s.total_in() - in_before) as usize..];
        if status == Status::StreamEnd {
            return Ok(());
        }
        if out.len() as u64 > cap {
            return Err(std::io::Error::other("larger than the cap"));
        }
        if input.is_empty() && out.len() == out_before {
            return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof));
        }
    }
}

/// Whether an ELF image carries the PVH entry note.
pub fn has_pvh_note(elf: &[u8]) -> bool {
    let Ok(e) = goblin::elf::Elf::parse(elf) else {
        return false;
    };
    let found = e
        .iter_note_headers(elf)
        .into_iter()
        .flatten()
        .flatten()
        .any(|n| n.n_type == XEN_ELFNOTE_PHYS32_ENTRY && n.name == "Xen");
    found
}

/// The PVH-bootable vmlinux inside the bzImage at `path`.
pub fn unpack(path: &Path) -> Result<Vec<u8>> {
    let image = std::fs::read(path).map_err(|e| SystemError::io(path, e))?;
    unpack_bytes(&image, path)
}

/// [`unpack`] of a bzImage in memory (`path` names it in errors).
pub fn unpack_bytes(image: &[u8], path: &Path) -> Result<Vec<u8>> {
    let vmlinux = decompress(payload(image, path)?, path)?;
    if !vmlinux.starts_with(b"\x7fELF") {
        return Err(bad(path, "the payload is not an ELF vmlinux"));
    }
    if !has_pvh_note(&vmlinux) {
        return Err(bad(
            path,
            "its vmlinux has no PVH entry note (a kernel built without CONFIG_PVH)",
        ));
    }
    Ok(vmlinux)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Debian's vmlinuz (when scripts/fetch-kernel.sh has fetched it)
    /// unpacks to the very vmlinux `xz -d` finds in it.
    #[test]
    fn debian_vmlinuz_unpacks_like_xz() {
        let root = concat!(env!("CARGO_MANIFEST_DIR"), "/../.cache/kernel");
        let Some(dir) = std::fs::read_dir(root)
            .into_iter()
            .flatten()
            .flatten()
            .find(|e| e.path().join("root/boot").is_dir())
        else {
            return;
        };
        let boot = dir.path().join("root/boot");
        let Some(vmlinuz) = std::fs::read_dir(&boot)
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with("vmlinuz-"))
        else {
            return;
        };
        let got = unpack(&vmlinuz.path()).unwrap();
        assert_eq!(got, std::fs::read(dir.path().join("vmlinux")).unwrap());
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let p = Path::new("x");
        assert!(payload(b"short", p)
            .unwrap_err()
            .to_string()
            .contains("HdrS"));
        let mut img = vec![0u8; 0x300];
        img[0x202..0x206].copy_from_slice(b"HdrS");
        img[0x206..0x208].copy_from_slice(&0x20fu16.to_le_bytes());
        img[0x248..0x24c].copy_from_slice(&0x1000u32.to_le_bytes());
        img[0x24c..0x250].copy_from_slice(&0x10u32.to_le_bytes());
        assert!(payload(&img, p)
            .unwrap_err()
            .to_string()
            .contains("outside"));
        assert!(decompress(b"BZh91AY", p)
            .unwrap_err()
            .to_string()
            .contains("unknown"));
        assert!(!has_pvh_note(b"\x7fELF nonsense"));
    }
}
