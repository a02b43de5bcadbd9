//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`) of
//! host-sysmgr's targets through the very checks the cargo-fuzz targets run.

#[path = "../../fuzz/src/host.rs"]
mod checks;
#[path = "../../fuzz/src/replay.rs"]
#[allow(dead_code)]
mod replay;

#[test]
fn host_corpus() {
    replay::replay_group(
        "host",
        &[
            ("qmp", checks::check_qmp),
            ("vsock_handshake", checks::check_vsock_handshake),
            ("agent_messages", checks::check_agent_messages),
            ("catalog", checks::check_catalog),
            ("bundle", checks::check_bundle),
            ("bzimage", checks::check_bzimage),
            ("layer", checks::check_layer),
            ("docker_config", checks::check_docker_config),
        ],
    );
}
