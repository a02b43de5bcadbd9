//! The guest contract (shared/docs/CONTRACT.md) as exact byte strings.

use guest_contract::config::{
    parse_config, Config, ConfigError, InitMode, VolumeMode, MAX_CONFIG_BYTES,
};
use guest_contract::exit::{describe_exit, is_init_failure, InitFailure, INIT_MESSAGE_PREFIX};
use guest_contract::log::{format_line, Level};
use guest_contract::quote::{go_quote, go_unquote};
use guest_contract::sentinel::{self, scan_tail, Sentinel, SentinelStream, TAIL_BYTES};
use guest_contract::time::{rfc3339, rfc3339_nano};

const HYPEMAN_CONFIG: &str = r#"{
  "entrypoint": [
    "/docker-entrypoint.sh"
  ],
  "cmd": [
    "nginx",
    "-g",
    "daemon off;"
  ],
  "workdir": "/usr/share/nginx",
  "env": {
    "NGINX_VERSION": "1.27.4",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
  },
  "network_enabled": true,
  "guest_ip": "10.100.0.2",
  "guest_cidr": 16,
  "guest_gw": "10.100.0.1",
  "guest_dns": "1.1.1.1",
  "volume_mounts": null,
  "init_mode": "exec",
  "skip_kernel_headers": false,
  "skip_guest_agent": false,
  "egress_proxy": null
}"#;

const MINIMAL_CONFIG: &str = r#"{"entrypoint":null,"cmd":["/bin/sh"],"workdir":"/","env":null,"network_enabled":false,"init_mode":"exec"}"#;

const T: i64 = 1_770_996_387; // 2026-02-13T15:26:27Z

#[test]
fn hypeman_config_parses_and_writes_back_identically() {
    let parsed = parse_config(HYPEMAN_CONFIG.as_bytes()).expect("parse");
    assert!(parsed.unknown_keys.is_empty());
    let c = &parsed.config;
    assert_eq!(
        c.argv(),
        ["/docker-entrypoint.sh", "nginx", "-g", "daemon off;"]
    );
    assert_eq!(c.workdir(), "/usr/share/nginx");
    assert!(c.network_enabled());
    assert_eq!(c.guest_cidr, Some(16));
    assert_eq!(c.volume_mounts, None);
    assert_eq!(c.init_mode(), InitMode::Exec);
    assert_eq!(c.to_hypeman_json(), HYPEMAN_CONFIG);
}

#[test]
fn minimal_config_parses() {
    let c = parse_config(MINIMAL_CONFIG.as_bytes())
        .expect("parse")
        .config;
    assert_eq!(c.argv(), ["/bin/sh"]);
    assert_eq!(c.workdir(), "/");
    assert!(!c.network_enabled());
    let env = c.app_env();
    assert_eq!(env.len(), 2);
    assert_eq!(env[0], ("HOME".to_string(), "/root".to_string()));
}

#[test]
fn default_config_writes_every_hypeman_key_as_null() {
    let json = Config::default().to_hypeman_json();
    for key in [
        "entrypoint",
        "cmd",
        "workdir",
        "env",
        "network_enabled",
        "guest_ip",
        "guest_cidr",
        "guest_gw",
        "guest_dns",
        "volume_mounts",
        "init_mode",
        "skip_kernel_headers",
        "skip_guest_agent",
        "egress_proxy",
    ] {
        assert!(
            json.contains(&format!("  \"{key}\": null")),
            "{key} in {json}"
        );
    }
    assert!(
        !json.contains("hostname"),
        "superset keys only when set: {json}"
    );
}

#[test]
fn full_config_round_trips() {
    let json = r#"{"cmd":["a"],"volume_mounts":[{"device":"/dev/vdd","path":"/d","mode":"overlay","overlay_device":"/dev/vde"},{"device":"","path":"/n","mode":"nfs","nfs_host":"h","nfs_export":"/e"}],
        "egress_proxy":{"enabled":true,"proxy_url":"http://p:3128","ca_cert_pem":"PEM\n"},"init_mode":"systemd",
        "schema_version":1,"hostname":"h","dns_servers":["1.1.1.1"],"search_domains":["x"],"mtu":1400,"user":"1:1",
        "kernel_modules":["m"],"sysctls":{"a.b":"1"},"env":{"K":"<&>"}}"#;
    let c = parse_config(json.as_bytes()).expect("parse").config;
    let mounts = c.volume_mounts.as_deref().expect("mounts");
    assert_eq!(mounts[0].mode_kind(), VolumeMode::Overlay);
    assert_eq!(mounts[1].mode_kind(), VolumeMode::Nfs);
    assert_eq!(c.init_mode(), InitMode::Systemd);
    let again = parse_config(c.to_hypeman_json().as_bytes()).expect("reparse");
    assert_eq!(again.config, c);
    assert!(again.unknown_keys.is_empty());
}

#[test]
fn bad_configs_are_refused_with_clear_errors() {
    let e = parse_config(br#"{"cmd":"x"}"#).expect_err("type");
    assert_eq!(
        e.to_string(),
        r#"key "cmd": invalid type: string "x", expected a sequence"#
    );
    let e = parse_config(br#"{"network_enabled":"yes"}"#).expect_err("type");
    assert!(
        e.to_string()
            .starts_with(r#"key "network_enabled": invalid type"#),
        "{e}"
    );
    let e = parse_config(b"{\"cmd\": [\"a\",]}").expect_err("json");
    assert!(matches!(e, ConfigError::Malformed { line: 1, .. }), "{e:?}");
    let huge = vec![b'{'; 10 * 1024 * 1024];
    let e = parse_config(&huge).expect_err("size");
    assert!(e.to_string().contains(&MAX_CONFIG_BYTES.to_string()), "{e}");
    assert_eq!(parse_config(b"\"str\""), Err(ConfigError::NotObject));
}

#[test]
fn unknown_keys_are_reported() {
    let p = parse_config(
        br#"{"entrypiont":["x"],"volume_mounts":[{"device":"d","path":"p","foo":1}]}"#,
    )
    .expect("parse");
    assert_eq!(p.unknown_keys, ["entrypiont", "volume_mounts[0].foo"]);
}

#[test]
fn go_quote_contract_bytes() {
    assert_eq!(go_quote(b"say \"hi\" \\ bye"), r#""say \"hi\" \\ bye""#);
    assert_eq!(go_quote(b"\x07\x08\x0c\n\r\t\x0b"), r#""\a\b\f\n\r\t\v""#);
    assert_eq!(go_quote(b"\x00\x1b\x7f"), r#""\x00\x1b\x7f""#);
    assert_eq!(go_quote(b"\xc3\x28"), r#""\xc3(""#);
    assert_eq!(go_quote(b"\xe0\x80\x80"), r#""\xe0\x80\x80""#);
    assert_eq!(go_quote(b"\xed\xb0\x80"), r#""\xed\xb0\x80""#);
    assert_eq!(go_quote(b"\xf0\x9f\x98"), r#""\xf0\x9f\x98""#);
    assert_eq!(
        go_quote("\u{a0}\u{200b}\u{e000}\u{10ffff}".as_bytes()),
        r#""\u00a0\u200b\ue000\U0010ffff""#
    );
    assert_eq!(go_quote("héllo 日本 😀".as_bytes()), "\"héllo 日本 😀\"");
}

/// Golden outputs of Go's strconv.Quote at every printability boundary.
#[test]
fn go_quote_matches_go_golden() {
    let golden = include_str!("data/go_quote_golden.txt");
    let mut checked = 0;
    for line in golden.lines().filter(|l| !l.starts_with('#')) {
        let (hex, want) = line.split_once(' ').expect("golden line");
        let cp = u32::from_str_radix(hex, 16).expect("hex");
        let c = char::from_u32(cp).expect("scalar");
        assert_eq!(go_quote(c.to_string().as_bytes()), want, "U+{cp:04X}");
        checked += 1;
    }
    assert!(checked > 2000);
}

#[test]
fn go_unquote_inverts() {
    for bytes in [&b"\xff\x00 x"[..], "é\u{feff}".as_bytes(), b""] {
        assert_eq!(go_unquote(&go_quote(bytes)).as_deref(), Ok(bytes));
    }
}

#[test]
fn timestamps() {
    assert_eq!(rfc3339(T), "2026-02-13T15:26:27Z");
    assert_eq!(
        rfc3339_nano(T, 123_456_789),
        "2026-02-13T15:26:27.123456789Z"
    );
    assert_eq!(rfc3339_nano(T, 100_000_000), "2026-02-13T15:26:27.1Z");
    assert_eq!(rfc3339_nano(T, 10), "2026-02-13T15:26:27.00000001Z");
    assert_eq!(rfc3339_nano(T, 0), "2026-02-13T15:26:27Z");
}

#[test]
fn log_line() {
    assert_eq!(
        format_line(T, Level::Error, "network", "eth0: no carrier"),
        "2026-02-13T15:26:27Z [ERROR] [hypeman-init:network] eth0: no carrier\n"
    );
    assert_eq!(
        format_line(T, Level::Info, "p", "a\nb")
            .matches('\n')
            .count(),
        1
    );
}

#[test]
fn sentinel_lines() {
    assert_eq!(
        Sentinel::exit_status(0, false).render(),
        r#"HYPEMAN-EXIT code=0 message="success""#
    );
    assert_eq!(
        Sentinel::exit_status(137, true).render(),
        r#"HYPEMAN-EXIT code=137 message="killed by signal 9 (killed) - OOM""#
    );
    assert_eq!(
        sentinel::program_start(T, 123_456_789, InitMode::Exec).render(),
        "HYPEMAN-PROGRAM-START ts=2026-02-13T15:26:27.123456789Z mode=exec"
    );
    assert_eq!(
        sentinel::agent_ready(T, 0).render(),
        "HYPEMAN-AGENT-READY ts=2026-02-13T15:26:27Z"
    );
    let failure = InitFailure::EgressProxy.message("install ca: read-only file system");
    assert_eq!(
        sentinel::exit(InitFailure::EgressProxy.code(), &failure).render(),
        r#"HYPEMAN-EXIT code=78 message="egress proxy CA certificate setup failed: install ca: read-only file system""#
    );
    let other = InitFailure::Network.message("wait for eth0: timed out");
    assert_eq!(other, "init: network: wait for eth0: timed out");
}

#[test]
fn exit_messages() {
    assert_eq!(describe_exit(0, false), "success");
    assert_eq!(describe_exit(2, false), "exit code 2");
    assert_eq!(
        describe_exit(126, false),
        "permission denied (command not executable)"
    );
    assert_eq!(describe_exit(127, false), "command not found");
    assert_eq!(describe_exit(134, false), "killed by signal 6 (aborted)");
    assert_eq!(
        describe_exit(137, true),
        "killed by signal 9 (killed) - OOM"
    );
    assert_eq!(
        describe_exit(141, true),
        "killed by signal 13 (broken pipe)"
    );
    assert_eq!(describe_exit(192, false), "killed by signal 64 (signal 64)");
    assert!(is_init_failure(&InitFailure::Spawn.message("x")));
    assert_eq!(INIT_MESSAGE_PREFIX, "init: ");
}

fn sample_log() -> Vec<u8> {
    let mut log = Vec::new();
    log.extend_from_slice(b"[    0.000000] Linux version 6.1\r\n");
    log.extend_from_slice(format_line(T, Level::Info, "boot", "start").as_bytes());
    for s in [
        sentinel::headers_start(T, 1),
        sentinel::agent_ready(T, 2),
        sentinel::program_start(T, 3, InitMode::Exec),
        sentinel::gpu_init_failed(T, 4, "NVRM: \u{e9}\n"),
        sentinel::headers_failed(T, 5, "tar \"x\""),
        sentinel::exit(1, "exit code 1"),
    ] {
        log.extend_from_slice(format!("[   1.5] {}\r\n", s.render()).as_bytes());
    }
    log.extend_from_slice(
        "日本 \u{1f600} app output\nHYPEMAN-EXIT code=0 message=\"success\"".as_bytes(),
    );
    log
}

#[test]
fn tail_scan_of_a_boot_log() {
    let scan = scan_tail(&sample_log());
    assert_eq!(scan.exit, Some((0, "success".into())));
    assert_eq!(
        scan.program_start,
        Some(sentinel::program_start(T, 3, InitMode::Exec))
    );
    assert_eq!(scan.agent_ready, Some(sentinel::agent_ready(T, 2)));
    assert_eq!(
        scan.headers,
        Some(sentinel::headers_failed(T, 5, "tar \"x\""))
    );
    assert_eq!(
        scan.gpu,
        Some(sentinel::gpu_init_failed(T, 4, "NVRM: \u{e9}\n"))
    );
}

#[test]
fn tail_scan_reads_only_the_last_8k() {
    let mut log = b"HYPEMAN-EXIT code=3 message=\"early\"\n".to_vec();
    log.extend(std::iter::repeat_n(b'.', TAIL_BYTES));
    assert_eq!(scan_tail(&log).exit, None);
    log.extend_from_slice(b"\nHYPEMAN-EXIT code=4 message=\"late\"\r\n");
    assert_eq!(scan_tail(&log).exit, Some((4, "late".into())));
}

#[test]
fn streaming_split_at_every_offset_equals_one_shot() {
    let log = sample_log();
    let mut one = SentinelStream::new();
    let mut whole = one.push(&log);
    whole.extend(one.finish());
    assert_eq!(whole.len(), 7);
    for cut in 0..=log.len() {
        let mut stream = SentinelStream::new();
        let mut got = stream.push(&log[..cut]);
        got.extend(stream.push(&log[cut..]));
        got.extend(stream.finish());
        assert_eq!(got, whole, "cut at {cut}");
    }
    let mut stream = SentinelStream::new();
    let mut got: Vec<Sentinel> = log.iter().flat_map(|b| stream.push(&[*b])).collect();
    got.extend(stream.finish());
    assert_eq!(got, whole, "byte by byte");
}

#[test]
fn a_real_certificate_passes_the_pem_check_unchanged() {
    // Made once with: openssl req -x509 -newkey ec -pkeyopt
    // ec_paramgen_curve:P-256 -nodes -subj /CN=guestinit-test-proxy-ca
    let pem = include_str!("data/proxy-ca.pem");
    assert_eq!(guest_contract::pem::certificates(pem).unwrap(), pem);
    let two = format!("{pem}{pem}");
    assert_eq!(guest_contract::pem::certificates(&two).unwrap(), two);
}
