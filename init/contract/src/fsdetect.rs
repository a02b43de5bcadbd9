//! Filesystem detection from a device's first bytes: the superblock magic
//! numbers of squashfs, erofs and ext2/3/4 (root disks, [`detect`], which
//! reads only [`HEAD_BYTES`]) and also xfs and btrfs (volumes,
//! [`detect_volume`], up to [`VOLUME_HEAD_BYTES`]). Never reads past a short
//! buffer.

/// Bytes to read from the start of a device for [`detect`].
pub const HEAD_BYTES: usize = 2048;
/// Bytes to read for [`detect_volume`]: btrfs's magic sits at 64 KiB + 64.
pub const VOLUME_HEAD_BYTES: usize = BTRFS_MAGIC_AT + 8;
const BTRFS_MAGIC_AT: usize = 0x1_0040;

/// Root filesystems init can mount.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FsType {
    /// ext2/3/4 (mounted as ext4).
    Ext4,
    /// EROFS.
    Erofs,
    /// SquashFS.
    Squashfs,
    /// XFS (volumes only).
    Xfs,
    /// Btrfs (volumes only).
    Btrfs,
}

impl FsType {
    /// The name mount(2) takes.
    pub fn name(self) -> &'static str {
        match self {
            FsType::Ext4 => "ext4",
            FsType::Erofs => "erofs",
            FsType::Squashfs => "squashfs",
            FsType::Xfs => "xfs",
            FsType::Btrfs => "btrfs",
        }
    }

    /// Mount options for a read-only mount (ext4 and xfs: never replay a
    /// journal, which would write to the device).
    pub fn ro_data(self) -> &'static str {
        match self {
            FsType::Ext4 => "noload",
            FsType::Xfs => "norecovery",
            _ => "",
        }
    }
}

fn le32(b: &[u8], off: usize) -> Option<u32> {
    let s = b.get(off..off + 4)?;
    Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
}

fn le16(b: &[u8], off: usize) -> Option<u16> {
    let s = b.get(off..off + 2)?;
    Some(u16::from_le_bytes([s[0], s[1]]))
}

/// Identify the filesystem from the superblock magic numbers.
pub fn detect(head: &[u8]) -> Option<FsType> {
    if le32(head, 0) == Some(0x7371_7368) {
        return Some(FsType::Squashfs);
    }
    if le32(head, 1024) == Some(0xE0F5_E1E2) {
        return Some(FsType::Erofs);
    }
    if le16(head, 1024 + 0x38) == Some(0xEF53) {
        return Some(FsType::Ext4);
    }
    None
}

/// Identify a volume's filesystem: a root kind, else xfs (`XFSB` at 0) or
/// btrfs (`_BHRfS_M` at 64 KiB + 64).
pub fn detect_volume(head: &[u8]) -> Option<FsType> {
    if let Some(kind) = detect(head) {
        return Some(kind);
    }
    if head.get(..4) == Some(b"XFSB") {
        return Some(FsType::Xfs);
    }
    if head.get(BTRFS_MAGIC_AT..BTRFS_MAGIC_AT + 8) == Some(b"_BHRfS_M") {
        return Some(FsType::Btrfs);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn magics() {
        let mut b = vec![0u8; HEAD_BYTES];
        assert_eq!(detect(&b), None);
        b[1024 + 0x38..1024 + 0x3a].copy_from_slice(&0xEF53u16.to_le_bytes());
        assert_eq!(detect(&b), Some(FsType::Ext4));
        b[1024..1028].copy_from_slice(&0xE0F5_E1E2u32.to_le_bytes());
        assert_eq!(detect(&b), Some(FsType::Erofs));
        b[..4].copy_from_slice(b"hsqs");
        assert_eq!(detect(&b), Some(FsType::Squashfs));
        assert_eq!(detect(&[1, 2, 3]), None);
    }

    #[test]
    fn volume_magics() {
        let mut b = vec![0u8; VOLUME_HEAD_BYTES];
        assert_eq!(detect_volume(&b), None);
        b[BTRFS_MAGIC_AT..].copy_from_slice(b"_BHRfS_M");
        assert_eq!(detect_volume(&b), Some(FsType::Btrfs));
        assert_eq!(detect_volume(&b[..VOLUME_HEAD_BYTES - 1]), None);
        b[..4].copy_from_slice(b"XFSB");
        assert_eq!(detect_volume(&b), Some(FsType::Xfs));
        assert_eq!(detect(&b), None, "not a root kind");
        assert_eq!(FsType::Xfs.ro_data(), "norecovery");
    }
}
