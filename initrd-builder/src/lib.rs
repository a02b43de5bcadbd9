//! Reproducible initramfs builder.
