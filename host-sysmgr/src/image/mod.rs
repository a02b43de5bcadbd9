//! OCI images as root filesystems: pulled into a content-addressed cache,
//! their layers applied safely, turned into a read-only root image cached by
//! the manifest digest, and their config turned into the guest's config.

pub mod apply;
pub mod auth;
pub mod config;
pub mod local;
pub mod pull;
pub mod rootfs;
pub mod store;

use crate::disks::RootFs;
use crate::system::error::Result;
use crate::system::layout::Layout;
use crate::system::registry::Access;

/// Pulls (or, for a local source, copies) `reference` into the cache and
/// builds (or reuses) its root image; when either fails, nothing of it
/// stays in the cache or the image store.
pub fn prepare(
    layout: &Layout,
    reference: &str,
    access: &Access,
    fs: RootFs,
) -> Result<(pull::Pulled, rootfs::RootImage)> {
    let pulled = local::fetch(layout, reference, access)?;
    match rootfs::root_image(layout, &pulled, fs) {
        Ok(img) => Ok((pulled, img)),
        Err(e) => {
            pull::forget(layout, reference);
            Err(e)
        }
    }
}
