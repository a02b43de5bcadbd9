//! Checks of the guest contract library's parsers (package `guest-contract`, library
//! `guest_contract`). `init/contract/tests/fuzz_corpus.rs` includes this very file to
//! replay the checked-in corpus on stable Rust. A panic is a finding.

use guest_contract::cmdline::{self, Options, MAX_TIMEOUT};
use guest_contract::config::{parse_config, MAX_CONFIG_BYTES};
use guest_contract::fsdetect::{self, FsType, HEAD_BYTES};
use guest_contract::modindex::{self, Index};
use guest_contract::quote::{go_quote, go_unquote};
use guest_contract::sentinel::{scan_tail, Sentinel, SentinelStream, MAX_LINE_BYTES, TAIL_BYTES};
use guest_contract::userdb::{self, User};
use guest_contract::{input_event, kmsg, sysctl};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Component, Path};
use std::time::Duration;

/// config.json: never panics; an accepted config survives
/// `to_hypeman_json` -> `parse_config` unchanged and without unknown keys.
pub fn check_config(data: &[u8]) {
    let parsed = match parse_config(data) {
        Ok(parsed) => parsed,
        Err(e) => return assert!(!e.to_string().is_empty()),
    };
    assert!(parsed.unknown_keys.windows(2).all(|w| w[0] <= w[1]));
    let config = &parsed.config;
    let _ = (
        config.argv(),
        config.app_env(),
        config.workdir(),
        config.init_mode(),
    );
    let json = config.to_hypeman_json();
    if json.len() > MAX_CONFIG_BYTES {
        return;
    }
    let again = parse_config(json.as_bytes()).expect("own output parses");
    assert_eq!(&again.config, config, "round trip of {json}");
    assert!(again.unknown_keys.is_empty());
}

/// Sentinel parsers: never panic; a parsed sentinel renders to a line that
/// parses back to it; streaming in pieces equals streaming in one go and the
/// line-by-line parse; the tail scan agrees with the lines of the tail.
pub fn check_sentinel(data: &[u8]) {
    let expected = by_lines(data);
    for sentinel in &expected {
        assert_eq!(
            Sentinel::parse_line(&sentinel.render()).as_ref(),
            Some(sentinel)
        );
    }
    assert_eq!(stream_in(data, &[]), expected);
    let third = data.len() / 3;
    assert_eq!(stream_in(data, &[third, 2 * third]), expected);
    let seed = data.first().map_or(1, |&b| usize::from(b) + 1);
    let cuts: Vec<usize> = (0..data.len()).step_by(seed).collect();
    assert_eq!(stream_in(data, &cuts), expected);
    check_tail(data);
}

/// Go quoting: `go_unquote(go_quote(b)) == b` and the quoted form has no
/// raw control characters; unquoting arbitrary text never panics.
pub fn check_quote(data: &[u8]) {
    let quoted = go_quote(data);
    assert!(!quoted.chars().any(char::is_control), "{quoted}");
    assert_eq!(go_unquote(&quoted).as_deref(), Ok(data));
    let _ = go_unquote(&String::from_utf8_lossy(data));
}

/// The sentinels of each line (last [`MAX_LINE_BYTES`] of it), in order.
pub fn by_lines(data: &[u8]) -> Vec<Sentinel> {
    data.split(|&b| b == b'\n')
        .filter_map(|line| {
            let window = &line[line.len().saturating_sub(MAX_LINE_BYTES)..];
            Sentinel::parse_line(&String::from_utf8_lossy(window))
        })
        .collect()
}

/// Streams `data` cut at the given (sorted) offsets, then finishes.
pub fn stream_in(data: &[u8], cuts: &[usize]) -> Vec<Sentinel> {
    let mut stream = SentinelStream::new();
    let mut found = Vec::new();
    let mut start = 0;
    for &cut in cuts.iter().chain([&data.len()]) {
        let cut = cut.clamp(start, data.len());
        found.extend(stream.push(&data[start..cut]));
        start = cut;
    }
    found.extend(stream.finish());
    found
}

fn check_tail(data: &[u8]) {
    let tail = &data[data.len().saturating_sub(TAIL_BYTES)..];
    let sentinels = by_lines(tail);
    let scan = scan_tail(data);
    let last_exit = sentinels.iter().rev().find_map(|s| match s {
        Sentinel::Exit { code, message } => Some((*code, message.clone())),
        _ => None,
    });
    assert_eq!(scan.exit, last_exit);
    let last_start = sentinels
        .iter()
        .rev()
        .find(|s| matches!(s, Sentinel::ProgramStart { .. }));
    assert_eq!(scan.program_start.as_ref(), last_start);
}

/// Kernel command line: the parse is deterministic, never fails, clamps
/// timeouts (exactly as the last such word asks), makes every device an
/// absolute path, and survives re-quoting its own words.
pub fn check_cmdline(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let opts = Options::parse(&text);
    assert_eq!(Options::parse(&text), opts, "parse is deterministic");
    let words = cmdline::split(&text);
    for word in &words {
        assert!(!word.is_empty() && !word.contains('"'), "{word:?}");
    }
    for (key, got) in [
        ("hypeman.device_timeout_ms", opts.device_timeout),
        ("hypeman.agent_timeout_ms", opts.agent_timeout),
    ] {
        assert!(got <= MAX_TIMEOUT, "{key}: {got:?}");
        assert_eq!(got, expected_timeout(&words, key), "{key}");
    }
    let devices = [&opts.root_dev, &opts.config_dev].into_iter();
    for dev in devices.chain(&opts.console).chain(&opts.overlay_dev) {
        assert!(dev.starts_with('/'), "{dev:?}");
    }
    if !opts.explicit[0] {
        assert_eq!(opts.root_dev, "/dev/vda");
    }
    for word in &opts.unknown {
        assert!(
            word.starts_with("hypeman.") && words.contains(word),
            "{word:?}"
        );
    }
    let requoted = requote(&words);
    assert_eq!(cmdline::split(&requoted), words, "{requoted:?}");
    assert_eq!(Options::parse(&requoted), opts, "{requoted:?}");
}

/// What the last `key=<ms>` word asks for: its value capped at
/// [`MAX_TIMEOUT`], 10 s when it is not a number or absent.
fn expected_timeout(words: &[String], key: &str) -> Duration {
    let last = words.iter().rev().find_map(|w| match w.split_once('=') {
        Some((k, v)) => (k == key).then_some(v),
        None => (w == key).then_some("1"),
    });
    let ms = last.and_then(|v| v.parse::<u64>().ok());
    ms.map_or(Duration::from_secs(10), |ms| {
        Duration::from_millis(ms).min(MAX_TIMEOUT)
    })
}

/// Words joined with spaces, those holding whitespace in double quotes.
fn requote(words: &[String]) -> String {
    let quoted: Vec<String> = words
        .iter()
        .map(|w| match w.contains(char::is_whitespace) {
            true => format!("\"{w}\""),
            false => w.clone(),
        })
        .collect();
    quoted.join(" ")
}

/// The input cut in three at its first two NUL bytes (missing parts are
/// empty), each part as lossy UTF-8.
pub fn three_parts(data: &[u8]) -> [String; 3] {
    let mut parts = data
        .splitn(3, |&b| b == 0)
        .map(|p| String::from_utf8_lossy(p).into_owned());
    [(); 3].map(|()| parts.next().unwrap_or_default())
}

/// /etc/passwd and /etc/group (input: `spec NUL passwd NUL group`): parsed
/// fields hold no `:` or line break; a resolved user has its primary group
/// first, no group twice, no empty home, and the ids the spec or its entry name.
pub fn check_passwd(data: &[u8]) {
    let [spec, passwd, group] = three_parts(data);
    for e in userdb::passwd_entries(&passwd) {
        for field in [e.name, e.home] {
            assert!(!field.contains([':', '\n']), "{field:?}");
        }
    }
    for g in userdb::group_entries(&group) {
        assert!(!g.name.contains([':', '\n']), "{:?}", g.name);
        for m in &g.members {
            assert!(!m.is_empty() && !m.contains([':', '\n', ',']), "{m:?}");
        }
    }
    let resolved = userdb::resolve(&spec, &passwd, &group);
    assert_eq!(userdb::resolve(&spec, &passwd, &group), resolved);
    match resolved {
        Ok(user) => check_user(&spec, &passwd, &group, &user),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}

fn check_user(spec: &str, passwd: &str, group: &str, user: &User) {
    let c = &user.creds;
    assert_eq!(c.groups.first(), Some(&c.gid), "{c:?}");
    let distinct: BTreeSet<u32> = c.groups.iter().copied().collect();
    assert_eq!(distinct.len(), c.groups.len(), "{c:?}");
    assert_ne!(user.home.as_deref(), Some(""));
    let (user_part, group_part) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let entry = userdb::passwd_entries(passwd)
        .find(|e| e.name == user_part || user_part.parse() == Ok(e.uid));
    match entry {
        Some(e) => {
            assert_eq!(c.uid, e.uid);
            assert_eq!(user.home.as_deref(), Some(e.home).filter(|h| !h.is_empty()));
        }
        None => assert_eq!(user_part.parse(), Ok(c.uid)),
    }
    match group_part {
        Some(g) if g.parse::<u32>().is_ok() => assert_eq!(g.parse(), Ok(c.gid)),
        Some(g) => assert!(userdb::group_entries(group).any(|e| e.name == g && e.gid == c.gid)),
        None => assert_eq!(c.gid, entry.map_or(c.uid, |e| e.gid)),
    }
}

/// Superblock probe: a kind only when its magic is at its offset (squashfs,
/// then erofs, then ext4), the same on every prefix cut at a magic's edge,
/// and only the first [`HEAD_BYTES`] matter.
pub fn check_fsdetect(data: &[u8]) {
    let cuts = [0, 3, 4, 1024, 1027, 1028, 1080, 1081, 1082, HEAD_BYTES];
    for cut in cuts.into_iter().filter(|&c| c < data.len()) {
        check_fs_kind(&data[..cut]);
    }
    check_fs_kind(data);
    let head = &data[..data.len().min(HEAD_BYTES)];
    assert_eq!(fsdetect::detect(head), fsdetect::detect(data));
}

fn check_fs_kind(data: &[u8]) {
    // An exact-size copy: AddressSanitizer sees any read past its end.
    let data = data.to_vec();
    let at = |off: usize, magic: &[u8]| data.get(off..off + magic.len()) == Some(magic);
    let want = if at(0, b"hsqs") {
        Some(FsType::Squashfs)
    } else if at(1024, &[0xe2, 0xe1, 0xf5, 0xe0]) {
        Some(FsType::Erofs)
    } else if at(1080, &[0x53, 0xef]) {
        Some(FsType::Ext4)
    } else {
        None
    };
    let kind = fsdetect::detect(&data);
    assert_eq!(kind, want);
    if let Some(kind) = kind {
        let noload = kind == FsType::Ext4;
        assert_eq!(kind.ro_data() == "noload", noload);
    }
    let volume_want = want.or(if at(0, b"XFSB") {
        Some(FsType::Xfs)
    } else if at(0x1_0040, b"_BHRfS_M") {
        Some(FsType::Btrfs)
    } else {
        None
    });
    assert_eq!(fsdetect::detect_volume(&data), volume_want);
}

/// sysctl keys, values and hostnames, for the whole input and each line: an
/// accepted key maps below /proc/sys with no empty, `.` or `..` component and
/// no NUL, and its slashed form maps the same; an accepted hostname is at
/// most 64 bytes of `[A-Za-z0-9-.]`; a value passes iff it is one line.
pub fn check_sysctl(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    for candidate in std::iter::once(text.as_ref()).chain(text.lines()) {
        check_sysctl_key(candidate);
        check_hostname(candidate);
        let one_line = !candidate.contains(['\n', '\0']);
        assert_eq!(sysctl::validate_value("k", candidate).is_ok(), one_line);
    }
}

fn check_sysctl_key(key: &str) {
    let Ok(path) = sysctl::sysctl_path(key) else {
        return;
    };
    let rel = path.strip_prefix("/proc/sys/").expect("below /proc/sys");
    assert!(!rel.contains('\0') && !rel.starts_with('/'), "{path:?}");
    for seg in rel.split('/') {
        assert!(!seg.is_empty() && seg != "." && seg != "..", "{path:?}");
    }
    let mut components = Path::new(&path).components();
    assert_eq!(components.next(), Some(Component::RootDir));
    assert!(
        components.all(|c| matches!(c, Component::Normal(_))),
        "{path:?}"
    );
    assert_eq!(
        sysctl::sysctl_path(rel).as_deref(),
        Ok(path.as_str()),
        "{key:?}"
    );
}

fn check_hostname(h: &str) {
    if sysctl::validate_hostname(h).is_err() {
        return;
    }
    assert!(!h.is_empty() && h.len() <= 64, "{h:?}");
    assert!(
        h.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.'),
        "{h:?}"
    );
    for label in h.split('.') {
        assert!(!label.is_empty() && !label.starts_with('-') && !label.ends_with('-'));
    }
}

/// Power key: a press is found iff some whole 24-byte record has type 1
/// (EV_KEY) at 16, code 116 (KEY_POWER) at 18 and value 1 at 20, native endian.
pub fn check_input_event(data: &[u8]) {
    assert_eq!(input_event::EVENT_SIZE, 24);
    let press = |r: &[u8]| {
        r.len() == 24
            && r[16..18] == 1u16.to_ne_bytes()
            && r[18..20] == 116u16.to_ne_bytes()
            && r[20..24] == 1i32.to_ne_bytes()
    };
    assert_eq!(
        input_event::has_power_press(data),
        data.chunks_exact(24).any(press)
    );
    for record in data.chunks(24) {
        assert_eq!(input_event::is_power_press(record), press(record));
    }
}

/// /dev/kmsg: a record has a message iff it holds a `;`, and the message is
/// the first line after it; the OOM matcher agrees with a direct substring
/// check on every line and on the whole log.
pub fn check_kmsg(data: &[u8]) {
    let text = String::from_utf8_lossy(data);
    let message = kmsg::record_message(data);
    match text.split_once(';') {
        None => assert_eq!(message, None),
        Some((_, rest)) => {
            let message = message.expect("a record with a ';' has a message");
            assert!(!message.contains('\n') && rest.starts_with(&message));
            assert_eq!(kmsg::is_oom_message(&message), oom_text(&message));
        }
    }
    let lines: Vec<&str> = text.lines().collect();
    for line in &lines {
        assert_eq!(kmsg::is_oom_message(line), oom_text(line), "{line:?}");
    }
    assert_eq!(kmsg::oom_killed(&lines), lines.iter().any(|l| oom_text(l)));
}

/// The kernel's OOM texts, spelled out here independently of the library.
fn oom_text(msg: &str) -> bool {
    [
        "Out of memory",
        "oom-kill",
        "oom_reaper",
        "Memory cgroup out of memory",
    ]
    .iter()
    .any(|m| msg.contains(m))
}

/// Module index (input: `modules.dep NUL modules.softdep NUL modules.alias`):
/// the load order lists every carried module once, by its own path, and every
/// carried prerequisite (dependency or softdep) before its dependent unless
/// the two are on a cycle.
pub fn check_modindex(data: &[u8]) {
    let [dep, softdep, alias] = three_parts(data);
    let index = Index::parse(&dep, &softdep, &alias);
    let order = index.load_order();
    assert_eq!(index.load_order(), order, "deterministic");
    let carried: BTreeMap<&str, &str> = index.modules().collect();
    let mut position = BTreeMap::new();
    for (i, path) in order.iter().enumerate() {
        let name = modindex::module_name(path);
        assert_eq!(carried.get(name.as_str()), Some(&path.as_str()), "{path}");
        assert!(position.insert(name, i).is_none(), "{path} twice");
    }
    assert_eq!(position.len(), carried.len(), "every carried module");
    for name in carried.keys() {
        let at = position[*name];
        for before in index.prerequisites(name) {
            match position.get(before) {
                None => assert!(!index.carries(before)),
                Some(&b) if b < at => {}
                Some(_) => assert!(reaches(&index, before, name), "{before} after {name}"),
            }
        }
    }
}

/// Whether `to` is reachable from `from` along prerequisite edges.
fn reaches(index: &Index, from: &str, to: &str) -> bool {
    let mut seen = BTreeSet::from([from.to_string()]);
    let mut todo = vec![from.to_string()];
    while let Some(m) = todo.pop() {
        if m == to {
            return true;
        }
        for next in index.prerequisites(&m) {
            if seen.insert(next.to_string()) {
                todo.push(next.to_string());
            }
        }
    }
    false
}

/// The network keys of a config: accepted settings write a resolv.conf of
/// only `nameserver <ip>` lines and one final `search` line (no line can be
/// injected through a key), an address with a prefix of 1-32, an MTU of
/// 68-65535; checking is deterministic.
pub fn check_netconfig(data: &[u8]) {
    let Ok(parsed) = parse_config(data) else {
        return;
    };
    let Ok(Some(s)) = guest_contract::network::NetSettings::from_config(&parsed.config) else {
        return;
    };
    if let Some((_, prefix)) = s.address {
        assert!((1..=32).contains(&prefix));
    }
    if let Some((ip, prefix)) = s.address6 {
        assert!((1..=128).contains(&prefix) && !ip.is_unspecified() && !ip.is_multicast());
    }
    if let Some(mac) = s.mac {
        assert_eq!(mac[0] & 1, 0);
        let text = guest_contract::network::format_mac(mac);
        assert_eq!(guest_contract::network::parse_mac(&text), Ok(mac));
    }
    if let Some(mtu) = s.mtu {
        assert!(guest_contract::network::MTU_RANGE.contains(&mtu));
    }
    if let Some(text) = s.resolv_conf() {
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines.len(),
            s.dns.len() + usize::from(!s.search.is_empty()),
            "{text:?}"
        );
        for (line, server) in lines.iter().zip(&s.dns) {
            assert_eq!(*line, format!("nameserver {server}"));
        }
        assert!(text.ends_with('\n') && !text.contains('\r') && !text.contains('\0'));
    }
    let again = guest_contract::network::NetSettings::from_config(&parsed.config);
    assert_eq!(again, Ok(Some(s)));
}

/// rtnetlink replies (a u32 sequence number, then one datagram): the parser
/// never panics, and a reply it finds belongs to that sequence number; our
/// own requests are never taken for a reply.
pub fn check_rtnl_reply(data: &[u8]) {
    use guest_contract::rtnl::{self, Reply};
    let Some((seq, datagram)) = data.split_first_chunk::<4>() else {
        return;
    };
    let seq = u32::from_ne_bytes(*seq);
    if let Reply::Ack | Reply::Refused(_) = rtnl::reply(datagram, seq) {
        assert!(datagram.len() >= rtnl::HEADER_LEN + 4);
    }
    if let Reply::Refused(e) = rtnl::reply(datagram, seq) {
        assert!(e != 0);
    }
    let ip = std::net::Ipv4Addr::new(10, 0, 2, 15);
    for own in [
        rtnl::link_up(seq, seq, Some(seq)),
        rtnl::add_ipv4(seq, seq, ip, (seq % 33) as u8),
        rtnl::add_address(
            seq,
            seq,
            std::net::IpAddr::V6(ip.to_ipv6_mapped()),
            (seq % 129) as u8,
        ),
        rtnl::default_route(seq, seq, std::net::IpAddr::V4(ip)),
    ] {
        assert_eq!(rtnl::reply(&own, seq), Reply::Other);
    }
}

/// `volume_mounts`: every entry is either planned or refused (never both,
/// never lost); a planned mount point is a normalised absolute path with no
/// `..`, not `/` and not under /proc, /sys or /dev, used once; devices are
/// under /dev with no `..`.
pub fn check_volumes(data: &[u8]) {
    let Ok(parsed) = parse_config(data) else {
        return;
    };
    let (planned, refused) = guest_contract::volumes::plan(&parsed.config);
    let entries = parsed.config.volume_mounts.as_ref().map_or(0, Vec::len);
    assert_eq!(planned.len() + refused.len(), entries);
    let mut seen = BTreeSet::new();
    for v in &planned {
        let p = &v.path;
        assert!(
            p.starts_with('/') && p.len() > 1 && !p.ends_with('/'),
            "{p:?}"
        );
        assert!(
            !p.split('/')
                .skip(1)
                .any(|c| c.is_empty() || c == "." || c == ".."),
            "{p:?}"
        );
        let first = p.split('/').nth(1).unwrap_or("");
        assert!(!matches!(first, "proc" | "sys" | "dev"), "{p:?}");
        assert!(seen.insert(p.clone()), "{p:?} twice");
        let mut devices = vec![&v.device];
        if let guest_contract::volumes::VolumeMode::Overlay { overlay_device } = &v.mode {
            devices.push(overlay_device);
            assert!(v.base_dir().starts_with("/mnt/vol-base-") && !v.base_dir().contains(".."));
        }
        for d in devices {
            assert!(
                d.starts_with("/dev/") && !d.split('/').any(|c| c == ".."),
                "{d:?}"
            );
        }
    }
}

/// CA certificates from the config: never panics; accepted text
/// re-encodes to itself (checking is idempotent), holds no private key and
/// only 64-column lines between its markers; base64 round-trips any bytes.
pub fn check_pem(data: &[u8]) {
    use guest_contract::pem;
    if !data.is_empty() {
        assert_eq!(
            pem::decode_base64(&pem::encode_base64(data)).as_deref(),
            Some(data)
        );
    }
    let text = String::from_utf8_lossy(data);
    let Ok(out) = pem::certificates(&text) else {
        return;
    };
    assert!(!out.contains("PRIVATE KEY"));
    assert!(
        out.lines().all(|l| l.len() <= 64 || l.starts_with("-----")),
        "{out}"
    );
    assert_eq!(pem::certificates(&out).as_deref(), Ok(out.as_str()));
}

/// The kernel-headers tarball (first byte odd: gzip, else plain tar): never
/// panics; every entry handed over has a plain relative path, never passes
/// through an earlier symlink or file, and a hard link names an earlier file.
pub fn check_headers(data: &[u8]) {
    use guest_contract::headers::{self, Kind, Limits};
    use std::collections::HashSet;
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let limits = Limits {
        max_bytes: 8 << 20,
        max_entries: 10_000,
    };
    let mut files: HashSet<String> = HashSet::new();
    let mut not_dirs: HashSet<String> = HashSet::new();
    let mut seen = 0u64;
    let visit = |e: &headers::Entry, r: &mut dyn std::io::Read| {
        let p = &e.path;
        assert!(!p.is_empty() && !p.starts_with('/'), "{p:?}");
        assert!(
            p.split('/').all(|c| !c.is_empty() && c != "." && c != ".."),
            "{p:?}"
        );
        let mut prefix = String::new();
        for c in p
            .split('/')
            .collect::<Vec<_>>()
            .split_last()
            .map_or(&[][..], |(_, a)| a)
        {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(c);
            assert!(!not_dirs.contains(&prefix), "{p:?} through {prefix:?}");
        }
        assert_eq!(e.mode & !0o777, 0);
        let n = std::io::copy(r, &mut std::io::sink())?;
        match &e.kind {
            Kind::File => {
                assert_eq!(n, e.size);
                files.insert(p.clone());
                not_dirs.insert(p.clone());
            }
            Kind::HardLink(t) => {
                assert!(files.contains(t), "{p:?} -> {t:?}");
                files.insert(p.clone());
                not_dirs.insert(p.clone());
            }
            Kind::Symlink(t) => {
                assert!(!t.is_empty());
                files.remove(p);
                not_dirs.insert(p.clone());
            }
            Kind::Dir => {
                files.remove(p);
                not_dirs.remove(p);
            }
        }
        seen += 1;
        Ok(())
    };
    let result = match mode & 1 {
        1 => headers::walk(rest, &limits, visit),
        _ => headers::walk_tar(rest, &limits, visit),
    };
    if let Ok(summary) = result {
        assert_eq!(summary.entries, seen);
    }
}

/// `/proc/bus/pci/devices` and `/proc/devices` text: never panics; the
/// NVIDIA count is at most the line count; a major found is a number named
/// on a line of the character section.
pub fn check_gpu(data: &[u8]) {
    use guest_contract::gpu;
    let text = String::from_utf8_lossy(data);
    assert!(gpu::nvidia_functions(&text) <= text.lines().count());
    let name = text.lines().last().unwrap_or("").trim();
    if let Some(major) = gpu::char_major(&text, name) {
        assert!(text.contains(&major.to_string()), "{major} {name:?}");
        let nodes = gpu::nodes(300, major, Some(major));
        assert!(nodes.len() <= 258);
    }
}
