//! Replays the checked-in fuzz corpus (`fuzz/corpus/<target>/*`) of
//! guest-agent's targets through the very checks the cargo-fuzz targets run.

#[path = "../../fuzz/src/agent.rs"]
mod checks;
#[path = "../../fuzz/src/replay.rs"]
#[allow(dead_code)]
mod replay;

#[test]
fn agent_corpus() {
    replay::replay_group(
        "agent",
        &[("network_request", checks::check_network_request)],
    );
}
