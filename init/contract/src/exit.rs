//! Exit descriptions for `HYPEMAN-EXIT`, and init's own failure codes.

/// Messages of init's own failures start with this.
pub const INIT_MESSAGE_PREFIX: &str = "init: ";

/// Go's Linux signal names (`syscall.Signal.String`), signals 1 to 31.
const SIGNAL_NAMES: [&str; 31] = [
    "hangup",
    "interrupt",
    "quit",
    "illegal instruction",
    "trace/breakpoint trap",
    "aborted",
    "bus error",
    "floating point exception",
    "killed",
    "user defined signal 1",
    "segmentation fault",
    "user defined signal 2",
    "broken pipe",
    "alarm clock",
    "terminated",
    "stack fault",
    "child exited",
    "continued",
    "stopped (signal)",
    "stopped",
    "stopped (tty input)",
    "stopped (tty output)",
    "urgent I/O condition",
    "CPU time limit exceeded",
    "file size limit exceeded",
    "virtual timer expired",
    "profiling timer expired",
    "window changed",
    "I/O possible",
    "power failure",
    "bad system call",
];

/// Go's name of Linux signal `sig` (1 to 31), e.g. 9 -> `killed`.
pub fn signal_name(sig: i32) -> Option<&'static str> {
    let index = usize::try_from(sig).ok()?.checked_sub(1)?;
    SIGNAL_NAMES.get(index).copied()
}

/// Go's `syscall.Signal(sig).String()`: the name, or `signal <n>`.
pub fn signal_string(sig: i32) -> String {
    signal_name(sig).map_or_else(|| format!("signal {sig}"), String::from)
}

/// The `HYPEMAN-EXIT` message for an exit code: `success`,
/// `permission denied (command not executable)` (126), `command not found`
/// (127), `killed by signal <n> (<name>)` above 128 (the name is
/// `signal <n>` for unnamed signals; ` - OOM` appended for 137 when `oom`),
/// else `exit code <n>`.
pub fn describe_exit(code: i32, oom: bool) -> String {
    match code {
        0 => "success".to_string(),
        126 => "permission denied (command not executable)".to_string(),
        127 => "command not found".to_string(),
        129.. => {
            let sig = code - 128;
            let oom_suffix = if code == 137 && oom { " - OOM" } else { "" };
            format!(
                "killed by signal {sig} ({}){oom_suffix}",
                signal_string(sig)
            )
        }
        _ => format!("exit code {code}"),
    }
}

/// A fatal init failure: each kind has its own exit code and phase name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InitFailure {
    /// A panic or other internal error in init.
    Internal,
    /// Mounting /proc, /sys, /dev or /run failed.
    EarlyMount,
    /// A required block device did not appear in time.
    DeviceTimeout,
    /// Mounting the image rootfs failed.
    RootDisk,
    /// Mounting the writable disk or the overlay failed.
    OverlayDisk,
    /// Mounting or reading the config disk failed.
    ConfigDisk,
    /// config.json was refused.
    ConfigInvalid,
    /// Moving the new root onto / failed.
    SwitchRoot,
    /// The working directory is unusable.
    Workdir,
    /// The configured user could not be resolved or set.
    User,
    /// The app could not be started.
    Spawn,
    /// Installing the egress proxy CA failed (hypeman's code 78).
    EgressProxy,
    /// Mounting a volume failed.
    Volume,
    /// Configuring the network failed.
    Network,
}

impl InitFailure {
    /// Every kind, in code order.
    pub const ALL: [InitFailure; 14] = [
        InitFailure::ConfigInvalid,
        InitFailure::ConfigDisk,
        InitFailure::User,
        InitFailure::Internal,
        InitFailure::EarlyMount,
        InitFailure::DeviceTimeout,
        InitFailure::RootDisk,
        InitFailure::OverlayDisk,
        InitFailure::SwitchRoot,
        InitFailure::Volume,
        InitFailure::Network,
        InitFailure::EgressProxy,
        InitFailure::Workdir,
        InitFailure::Spawn,
    ];

    /// The exit code reported in `HYPEMAN-EXIT` (see the crate README).
    pub fn code(self) -> i32 {
        match self {
            InitFailure::ConfigInvalid => 65,
            InitFailure::ConfigDisk => 66,
            InitFailure::User => 67,
            InitFailure::Internal => 70,
            InitFailure::EarlyMount => 71,
            InitFailure::DeviceTimeout => 72,
            InitFailure::RootDisk => 73,
            InitFailure::OverlayDisk => 74,
            InitFailure::SwitchRoot => 75,
            InitFailure::Volume => 76,
            InitFailure::Network => 77,
            InitFailure::EgressProxy => 78,
            InitFailure::Workdir => 79,
            InitFailure::Spawn => 80,
        }
    }

    /// The phase name, as in log lines `[hypeman-init:<phase>]`.
    pub fn phase(self) -> &'static str {
        match self {
            InitFailure::ConfigInvalid => "config",
            InitFailure::ConfigDisk => "config-disk",
            InitFailure::User => "user",
            InitFailure::Internal => "internal",
            InitFailure::EarlyMount => "early-mount",
            InitFailure::DeviceTimeout => "devices",
            InitFailure::RootDisk => "root-disk",
            InitFailure::OverlayDisk => "overlay",
            InitFailure::SwitchRoot => "switch-root",
            InitFailure::Volume => "volumes",
            InitFailure::Network => "network",
            InitFailure::EgressProxy => "egress-proxy",
            InitFailure::Workdir => "workdir",
            InitFailure::Spawn => "spawn",
        }
    }

    /// `init: <phase>: <detail>`.
    pub fn message(self, detail: &str) -> String {
        match self {
            // hypeman's own text, which its host and users know.
            InitFailure::EgressProxy => format!("{EGRESS_PROXY_PREFIX}{detail}"),
            _ => format!("{INIT_MESSAGE_PREFIX}{}: {detail}", self.phase()),
        }
    }

    /// The kind with this exit code.
    pub fn from_code(code: i32) -> Option<InitFailure> {
        Self::ALL.into_iter().find(|f| f.code() == code)
    }
}

/// Whether an exit message is one of init's own (starts with `init: `).
pub fn is_init_failure(message: &str) -> bool {
    message.starts_with(INIT_MESSAGE_PREFIX) || message.starts_with(EGRESS_PROXY_PREFIX)
}

/// How the egress-proxy failure's message starts (hypeman's exact text).
pub const EGRESS_PROXY_PREFIX: &str = "egress proxy CA certificate setup failed: ";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_rules() {
        assert_eq!(describe_exit(0, false), "success");
        assert_eq!(describe_exit(0, true), "success");
        assert_eq!(describe_exit(1, false), "exit code 1");
        assert_eq!(describe_exit(-1, false), "exit code -1");
        assert_eq!(describe_exit(125, false), "exit code 125");
        assert_eq!(
            describe_exit(126, false),
            "permission denied (command not executable)"
        );
        assert_eq!(describe_exit(127, false), "command not found");
        assert_eq!(describe_exit(128, false), "exit code 128");
        assert_eq!(describe_exit(129, false), "killed by signal 1 (hangup)");
        assert_eq!(describe_exit(130, false), "killed by signal 2 (interrupt)");
        assert_eq!(describe_exit(137, false), "killed by signal 9 (killed)");
        assert_eq!(
            describe_exit(137, true),
            "killed by signal 9 (killed) - OOM"
        );
        assert_eq!(
            describe_exit(139, true),
            "killed by signal 11 (segmentation fault)"
        );
        assert_eq!(
            describe_exit(143, false),
            "killed by signal 15 (terminated)"
        );
        assert_eq!(
            describe_exit(159, false),
            "killed by signal 31 (bad system call)"
        );
        assert_eq!(describe_exit(160, false), "killed by signal 32 (signal 32)");
        assert_eq!(
            describe_exit(255, false),
            "killed by signal 127 (signal 127)"
        );
        assert_eq!(
            describe_exit(256, false),
            "killed by signal 128 (signal 128)"
        );
    }

    #[test]
    fn signal_names() {
        assert_eq!(signal_name(0), None);
        assert_eq!(signal_name(1), Some("hangup"));
        assert_eq!(signal_name(5), Some("trace/breakpoint trap"));
        assert_eq!(signal_name(19), Some("stopped (signal)"));
        assert_eq!(signal_name(23), Some("urgent I/O condition"));
        assert_eq!(signal_name(31), Some("bad system call"));
        assert_eq!(signal_name(32), None);
        assert_eq!(signal_name(-9), None);
    }

    #[test]
    fn failure_codes_distinct_and_in_range() {
        let mut codes: Vec<i32> = InitFailure::ALL.iter().map(|f| f.code()).collect();
        assert!(codes.iter().all(|c| (64..=125).contains(c) && *c != 124));
        codes.dedup();
        assert_eq!(codes.len(), InitFailure::ALL.len());
        assert!(codes.windows(2).all(|w| w[0] < w[1]));
        assert_eq!(InitFailure::EgressProxy.code(), 78);
        for f in InitFailure::ALL {
            assert_eq!(InitFailure::from_code(f.code()), Some(f));
        }
        assert_eq!(InitFailure::from_code(0), None);
    }

    #[test]
    fn failure_messages() {
        let m = InitFailure::RootDisk.message("mount /dev/vda: invalid argument");
        assert_eq!(m, "init: root-disk: mount /dev/vda: invalid argument");
        assert!(is_init_failure(&m));
        assert!(!is_init_failure("exit code 1"));
        assert!(!is_init_failure("init:x"));
    }
}
