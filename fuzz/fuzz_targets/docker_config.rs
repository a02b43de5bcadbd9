#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| init_fuzz::host::check_docker_config(data));
