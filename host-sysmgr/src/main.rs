//! `host-sysmgr`: the host side of the project — boot a root filesystem as
//! a microVM (in the foreground, or detached as a named instance) and reach
//! a running instance's guest agent (exec, cp, stat, stop, logs).

mod cli;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    version,
    about = "Host-side manager of guest kernels and initrds, and microVM runner",
    after_help = EXIT_STATUS
)]
struct Cli {
    /// More log lines on stderr (--verbose: debug, twice: trace). Long
    /// only: `run -v` is --volume, as in docker.
    #[arg(long, action = clap::ArgAction::Count, global = true)]
    verbose: u8,
    #[command(subcommand)]
    command: Command,
}

// Parsed once per process: the size of the largest variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Boot a root filesystem as a microVM and run a command in it.
    ///
    /// Builds the disks a hypeman host would (vda: the rootfs read-only, vdb: a
    /// fresh ext4 overlay, vdc: the config disk with config.json), boots QEMU
    /// (KVM only where a hardware KVM module is loaded, else TCG), streams the
    /// serial console to stdout, and exits with the app's exit code as parsed
    /// from the HYPEMAN-EXIT line. With --detach the VM keeps running as a
    /// named instance instead.
    ///
    /// Exit status: the app's own code (0-255) from HYPEMAN-EXIT; 125 when
    /// host-sysmgr itself failed (see EXIT STATUS in `host-sysmgr --help`);
    /// 130 when interrupted (SIGINT/SIGTERM): the VM is killed. Its work folder
    /// (root, overlay and config images, serial log) is removed on every exit.
    Run(cli::run::RunArgs),
    /// List instances (running and ended).
    Ps {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Run a command in a running instance through its guest agent; the exit
    /// status is the command's. stdin is forwarded; Ctrl-C kills the command.
    Exec {
        /// Allocate a terminal (interactive shells, `stty`).
        #[arg(short = 't', long)]
        tty: bool,
        /// Environment, KEY=VALUE (repeatable), merged over the agent's.
        #[arg(long = "env", short = 'e', value_name = "KEY=VALUE")]
        env: Vec<String>,
        /// Working directory in the guest.
        #[arg(long, short = 'w')]
        workdir: Option<String>,
        /// The instance.
        name: String,
        /// The command and its arguments (empty: /bin/sh).
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Copy files or folders between the host and an instance (`NAME:/path`
    /// on one side, as `docker cp`): modes, mtimes and symlinks are kept.
    Cp {
        /// Follow a symlink named as the guest source.
        #[arg(long, short = 'L')]
        follow_link: bool,
        /// Source: a host path or NAME:/path.
        src: String,
        /// Destination: a host path or NAME:/path.
        dst: String,
    },
    /// Show what a guest path is (exits 1 when it does not exist).
    Stat {
        /// Follow a final symlink.
        #[arg(long, short = 'L')]
        follow_link: bool,
        /// JSON output.
        #[arg(long)]
        json: bool,
        /// NAME:/path.
        target: String,
    },
    /// Stop an instance gracefully: the agent's Shutdown (the app gets
    /// SIGTERM), then the power button, then SIGKILL.
    Stop {
        /// The instance.
        name: String,
        /// Seconds to wait after Shutdown before the power button (1-3600).
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=3600))]
        timeout: u64,
    },
    /// Print an instance's serial console.
    Logs {
        /// Keep printing until the VM ends.
        #[arg(short = 'f', long)]
        follow: bool,
        /// The instance.
        name: String,
    },
    /// Forget an instance that has ended (its folder is removed).
    Rm {
        /// The instance.
        name: String,
    },
    /// Kernels of the data folder: list, pull, import, show, path, set-default, rollback.
    ///
    /// Layout: {data}/system/kernel/<version>/<arch>/vmlinux (+ headers
    /// tarball, manifest.json). Downloads are checked against the catalog's
    /// sha256 and size while they stream, staged and moved into place at once.
    ///
    /// Examples:
    ///   host-sysmgr kernel list --available
    ///   host-sysmgr kernel pull 6.1.102-fc1.10
    ///   host-sysmgr kernel import .cache/kernel-build
    ///   host-sysmgr kernel set-default 6.1.192-e9122fdc
    ///   host-sysmgr kernel rollback
    #[command(verbatim_doc_comment)]
    Kernel {
        #[command(subcommand)]
        cmd: cli::system::KernelCmd,
        #[command(flatten)]
        store: cli::system::StoreArgs,
    },
    /// Initrds of the data folder: list, build, show, path, set-default, rollback.
    ///
    /// Layout: {data}/system/initrd/<arch>/<build>/initrd (+ manifest.json,
    /// initrd.sig) and a relative `latest` symlink to the default build. A
    /// build is named by the hash of its inputs (init, agent, builder) and
    /// signed with the host's key ({data}/system/keys/initrd.key).
    ///
    /// Examples:
    ///   host-sysmgr initrd build --init target/.../init --agent target/.../guest-agent
    ///   host-sysmgr initrd path
    #[command(verbatim_doc_comment)]
    Initrd {
        #[command(subcommand)]
        cmd: cli::system::InitrdCmd,
        #[command(flatten)]
        store: cli::system::StoreArgs,
    },
    /// Make sure the default kernel and the current initrd are installed and
    /// verified (downloading or building what is missing); print their paths.
    ///
    /// A warm call takes no lock and reads no artifact (file stamps); two
    /// processes at once end with one install.
    ///
    /// Examples:
    ///   host-sysmgr ensure
    ///   host-sysmgr ensure --init target/x86_64-unknown-linux-gnu/release/init \
    ///       --agent target/x86_64-unknown-linux-gnu/release/guest-agent --json
    #[command(verbatim_doc_comment)]
    Ensure {
        #[command(flatten)]
        store: cli::system::StoreArgs,
        #[command(flatten)]
        inputs: cli::system::InputArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Remove old kernels and initrds: keeps the newest --keep of each, the
    /// defaults, the rollback targets and every pinned version.
    ///
    /// Example: host-sysmgr gc --keep 2 --json
    Gc {
        #[command(flatten)]
        store: cli::system::StoreArgs,
        /// Versions of each kind to keep besides the protected ones.
        #[arg(long, default_value_t = cli::system::DEFAULT_KEEP)]
        keep: usize,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Push an installed kernel or initrd to an OCI registry (its files as
    /// layers, its record as the config; content-addressed).
    ///
    /// Plain HTTP only for a loopback registry or with --insecure-registry;
    /// credentials from $GUESTINIT_REGISTRY_USER and $GUESTINIT_REGISTRY_PASSWORD.
    ///
    /// Example: host-sysmgr publish kernel 6.1.192-e9122fdc registry.example.org/guestinit/kernel:6.1.192
    Publish {
        #[command(flatten)]
        store: cli::system::StoreArgs,
        /// kernel or initrd.
        #[arg(value_enum)]
        kind: cli::system::KindArg,
        /// The kernel version or initrd build.
        id: String,
        /// The reference to push to (HOST[:PORT]/REPO:TAG).
        reference: String,
        /// Allow plain HTTP to a registry that is not on loopback.
        #[arg(long)]
        insecure_registry: bool,
    },
    /// Install a kernel or initrd published with `publish` (every blob's
    /// digest checked; an initrd must be signed by a trusted key: see
    /// `initrd trust`).
    Pull {
        #[command(flatten)]
        store: cli::system::StoreArgs,
        /// The reference (HOST[:PORT]/REPO:TAG or @sha256:…).
        reference: String,
        /// Allow plain HTTP to a registry that is not on loopback.
        #[arg(long)]
        insecure_registry: bool,
    },
    /// OCI images cached by `run IMAGE`: pull, ls, rm, gc.
    ///
    /// Blobs live in {data}/system/oci-cache/blobs/sha256/, root images in
    /// {data}/system/images/<manifest digest>/.
    ///
    /// Examples:
    ///   host-sysmgr images pull 127.0.0.1:5000/library/busybox:latest
    ///   host-sysmgr images pull oci-archive:./image.tar:v1
    ///   host-sysmgr images ls --json
    ///   host-sysmgr images rm sha256:3f2a9c1b7e40
    #[command(verbatim_doc_comment)]
    Images {
        #[command(subcommand)]
        cmd: cli::system::ImagesCmd,
        #[command(flatten)]
        store: cli::system::StoreArgs,
    },
    /// Supported kernel versions, guest-init protocol versions and the
    /// current defaults (for a control plane: use --json).
    ///
    /// Example: host-sysmgr versions --json
    Versions {
        #[command(flatten)]
        store: cli::system::StoreArgs,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// host-sysmgr's own failure.
const EXIT_FAILURE: u8 = 125;
/// Interrupted by SIGINT or SIGTERM.
const EXIT_INTERRUPTED: u8 = 130;
const EXIT_STATUS: &str = "EXIT STATUS:
  0-255  run: the app's own exit code, from the guest's HYPEMAN-EXIT line
         (0 also when a systemd-mode guest powered off);
         exec: the remote command's exit code
  125    host-sysmgr itself failed: a usage error (bad or out-of-range
         argument), a missing kernel/initrd/rootfs, building the disks,
         starting the VMM, a VM that ended without a valid HYPEMAN-EXIT
         (none, or a code outside 0-255), or the --timeout
  130    interrupted by SIGINT or SIGTERM (run: the VM is killed;
         exec: the remote command is killed)
  --help and --version exit 0; stat exits 1 for a missing path.

EXAMPLES:
  host-sysmgr run --rootfs ./root -- /bin/echo hi        # default kernel + initrd (ensure)
  host-sysmgr run 127.0.0.1:5000/library/app:1 -- --port 80   # an OCI image, its entrypoint
  host-sysmgr run --config-via vsock --rootfs ./root -- /bin/true
  host-sysmgr run --kernel vmlinux --initrd initrd.img --rootfs ./root -- /bin/echo hi
  host-sysmgr run -d --name web --kernel vmlinux --initrd initrd.img --rootfs ./root -- /srv/app
  host-sysmgr exec web -- uname -r
  host-sysmgr exec -t web -- /bin/sh
  host-sysmgr cp ./config.toml web:/etc/app/
  host-sysmgr cp web:/var/log/app.log .
  host-sysmgr logs -f web
  host-sysmgr stop web --timeout 10";

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
    init_logging(cli.verbose);
    let result = match cli.command {
        Command::Run(args) => cli::run::run(&args),
        Command::Ps { json } => cli::instances::ps(json),
        Command::Exec {
            tty,
            env,
            workdir,
            name,
            command,
        } => cli::instances::exec(&name, tty, &env, workdir.as_deref(), &command),
        Command::Cp {
            follow_link,
            src,
            dst,
        } => cli::instances::cp(&src, &dst, follow_link),
        Command::Stat {
            follow_link,
            json,
            target,
        } => cli::instances::stat(&target, follow_link, json),
        Command::Stop { name, timeout } => cli::instances::stop(&name, timeout),
        Command::Logs { follow, name } => cli::instances::logs(&name, follow),
        Command::Rm { name } => cli::instances::rm(&name),
        Command::Kernel { cmd, store } => cli::system::kernel(&cmd, &store),
        Command::Initrd { cmd, store } => cli::system::initrd(&cmd, &store),
        Command::Ensure {
            store,
            inputs,
            json,
        } => cli::system::ensure(&store, &inputs, json),
        Command::Gc { store, keep, json } => cli::system::gc(&store, keep, json),
        Command::Versions { store, json } => cli::system::versions(&store, json),
        Command::Images { cmd, store } => cli::system::images(&cmd, &store),
        Command::Publish {
            store,
            kind,
            id,
            reference,
            insecure_registry,
        } => cli::system::publish(&store, kind, &id, &reference, insecure_registry),
        Command::Pull {
            store,
            reference,
            insecure_registry,
        } => cli::system::pull(&store, &reference, insecure_registry),
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("host-sysmgr: {}", chain(&e));
            if e.is::<cli::Interrupted>() {
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
}

/// anyhow's chain, with a library error's own chain printed once.
fn chain(e: &anyhow::Error) -> String {
    let mut out = String::new();
    for cause in e.chain() {
        let text = cause.to_string();
        if !text.is_empty() && !out.ends_with(&text) {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&text);
        }
    }
    out
}

/// Warnings and errors on stderr by default; --verbose adds debug, twice trace.
fn init_logging(verbose: u8) {
    let level = match verbose {
        0 => tracing::Level::WARN,
        1 => tracing::Level::DEBUG,
        _ => tracing::Level::TRACE,
    };
    let _ = tracing_subscriber::fmt()
        .with_max_level(level)
        .with_writer(std::io::stderr)
        .with_target(false)
        .without_time()
        .try_init();
}

/// `--help`/`--version` print and exit 0; a usage error exits 125 like every
/// other failure of host-sysmgr's own (as `docker run` does).
fn usage_error(e: &clap::Error) -> ExitCode {
    let _ = e.print();
    match e.kind() {
        clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
            ExitCode::SUCCESS
        }
        _ => ExitCode::from(EXIT_FAILURE),
    }
}
