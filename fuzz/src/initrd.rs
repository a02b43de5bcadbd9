//! Checks of initrd-builder's parsers. `initrd-builder/tests/fuzz_corpus.rs`
//! includes this very file to replay the corpus on stable Rust.
