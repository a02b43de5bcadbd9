//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`) through the
//! very checks the cargo-fuzz targets run, so the inputs run on stable.

#[path = "../../fuzz/src/lib.rs"]
#[allow(dead_code)]
mod checks;

use std::fs;
use std::path::{Path, PathBuf};

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut files: Vec<PathBuf> = fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|entry| entry.expect("dir entry").path())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|path| {
            let bytes = fs::read(&path).expect("read corpus file");
            (path, bytes)
        })
        .collect()
}

fn replay(target: &str, check: fn(&[u8])) {
    for (path, bytes) in corpus(target) {
        let outcome = std::panic::catch_unwind(|| check(&bytes));
        assert!(
            outcome.is_ok(),
            "{target}: {} fails its check",
            path.display()
        );
    }
}

#[test]
fn config_corpus() {
    replay("config", checks::check_config);
}

#[test]
fn sentinel_corpus() {
    replay("sentinel", checks::check_sentinel);
}

#[test]
fn quote_corpus() {
    replay("quote", checks::check_quote);
}

#[test]
fn sentinel_corpus_splits_at_every_offset() {
    for (path, bytes) in corpus("sentinel")
        .into_iter()
        .filter(|(_, b)| b.len() <= 4096)
    {
        let whole = checks::stream_in(&bytes, &[]);
        for cut in 0..=bytes.len() {
            assert_eq!(
                checks::stream_in(&bytes, &[cut]),
                whole,
                "{} cut at {cut}",
                path.display()
            );
        }
    }
}
