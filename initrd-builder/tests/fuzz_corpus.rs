//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`) of
//! initrd-builder's targets through the very checks the cargo-fuzz targets
//! run, so the inputs run on stable.

#[path = "../../fuzz/src/initrd.rs"]
mod checks;
#[path = "../../fuzz/src/replay.rs"]
#[allow(dead_code)]
mod replay;

#[test]
fn initrd_corpus() {
    replay::replay_group(
        "initrd",
        &[
            ("cpio", checks::check_cpio),
            ("decompress", checks::check_decompress),
            ("elf", checks::check_elf),
            ("modules", checks::check_modules),
            ("spec", checks::check_spec),
            ("manifest", checks::check_manifest),
        ],
    );
}
