//! Why the boot failed: [`BootError`], one variant per kind of step, each
//! holding what the step was doing and its cause as `#[source]` (the
//! message never repeats it). [`BootError::failure`] is the one place that
//! maps a failure to init's exit code and phase.

use guest_contract::exit::InitFailure;

/// The cause of a failed step.
pub type Cause = Box<dyn std::error::Error + Send + Sync + 'static>;

/// What a step was doing when it failed, and why.
#[derive(Debug, thiserror::Error)]
#[error("{what}")]
pub struct Failed {
    /// What was being done (`mount /dev/vda on /lower`).
    pub what: String,
    /// Why it failed.
    #[source]
    pub cause: Option<Cause>,
}

impl Failed {
    /// A failure with a cause.
    pub fn new(what: impl Into<String>, cause: impl Into<Cause>) -> Failed {
        Failed {
            what: what.into(),
            cause: Some(cause.into()),
        }
    }

    /// A failure that is its own explanation.
    pub fn msg(what: impl Into<String>) -> Failed {
        Failed {
            what: what.into(),
            cause: None,
        }
    }
}

/// A fatal boot error, by the step that failed.
#[derive(Debug, thiserror::Error)]
pub enum BootError {
    /// `config.json` or a key in it cannot be used.
    #[error(transparent)]
    ConfigInvalid(Failed),
    /// The config disk could not be mounted or read.
    #[error(transparent)]
    ConfigDisk(Failed),
    /// The configured user could not be resolved or set.
    #[error(transparent)]
    User(Failed),
    /// init itself went wrong (not PID 1, a panic).
    #[error(transparent)]
    Internal(Failed),
    /// Signals or the early mounts.
    #[error(transparent)]
    EarlyMount(Failed),
    /// A disk never appeared (or test mode lacks one).
    #[error(transparent)]
    Devices(Failed),
    /// The image root.
    #[error(transparent)]
    RootDisk(Failed),
    /// The writable disk or the overlayfs.
    #[error(transparent)]
    Overlay(Failed),
    /// Moving the new root onto `/`.
    #[error(transparent)]
    SwitchRoot(Failed),
    /// eth0 or its configuration.
    #[error(transparent)]
    Network(Failed),
    /// The egress proxy's CA.
    #[error(transparent)]
    EgressProxy(Failed),
    /// The working directory.
    #[error(transparent)]
    Workdir(Failed),
    /// Starting the app.
    #[error(transparent)]
    Spawn(Failed),
    /// systemd mode: the units, the env file, or executing the init system
    /// (reported as a failure to start the app).
    #[error(transparent)]
    SystemdMode(Failed),
}

impl BootError {
    /// The failure this error reports (exit code, phase, message form).
    pub fn failure(&self) -> InitFailure {
        match self {
            BootError::ConfigInvalid(_) => InitFailure::ConfigInvalid,
            BootError::ConfigDisk(_) => InitFailure::ConfigDisk,
            BootError::User(_) => InitFailure::User,
            BootError::Internal(_) => InitFailure::Internal,
            BootError::EarlyMount(_) => InitFailure::EarlyMount,
            BootError::Devices(_) => InitFailure::DeviceTimeout,
            BootError::RootDisk(_) => InitFailure::RootDisk,
            BootError::Overlay(_) => InitFailure::OverlayDisk,
            BootError::SwitchRoot(_) => InitFailure::SwitchRoot,
            BootError::Network(_) => InitFailure::Network,
            BootError::EgressProxy(_) => InitFailure::EgressProxy,
            BootError::Workdir(_) => InitFailure::Workdir,
            BootError::Spawn(_) | BootError::SystemdMode(_) => InitFailure::Spawn,
        }
    }

    /// The message: what failed, then each cause, `: `-separated.
    pub fn detail(&self) -> String {
        super::report::error_chain(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_names_each_cause_once() {
        let io = std::io::Error::from_raw_os_error(libc::ENOENT);
        let e = BootError::RootDisk(Failed::new("read /dev/vda", io));
        assert_eq!(
            e.detail(),
            "read /dev/vda: No such file or directory (os error 2)"
        );
        assert_eq!(e.failure(), InitFailure::RootDisk);
        assert_eq!(
            e.to_string(),
            "read /dev/vda",
            "the cause is the source, not the message"
        );
        let plain = BootError::Workdir(Failed::msg("workdir /srv does not exist"));
        assert_eq!(plain.detail(), "workdir /srv does not exist");
    }
}
