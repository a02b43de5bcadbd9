//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`) of the guest
//! contract's targets through the very checks the cargo-fuzz targets run, so
//! the inputs run on stable.

#[path = "../../../fuzz/src/contract.rs"]
#[allow(dead_code)]
mod checks;
#[path = "../../../fuzz/src/replay.rs"]
#[allow(dead_code)]
mod replay;

#[test]
fn every_target_has_a_source_a_bin_and_a_corpus() {
    replay::check_target_list();
}

#[test]
fn contract_corpus() {
    replay::replay_group(
        "contract",
        &[
            ("config", checks::check_config),
            ("sentinel", checks::check_sentinel),
            ("quote", checks::check_quote),
            ("cmdline", checks::check_cmdline),
            ("passwd", checks::check_passwd),
            ("fsdetect", checks::check_fsdetect),
            ("sysctl", checks::check_sysctl),
            ("input_event", checks::check_input_event),
            ("kmsg", checks::check_kmsg),
            ("modindex", checks::check_modindex),
            ("netconfig", checks::check_netconfig),
            ("rtnl_reply", checks::check_rtnl_reply),
            ("volumes", checks::check_volumes),
            ("pem", checks::check_pem),
            ("headers", checks::check_headers),
            ("gpu", checks::check_gpu),
        ],
    );
}

#[test]
fn sentinel_corpus_splits_at_every_offset() {
    for (path, bytes) in replay::corpus("sentinel")
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
