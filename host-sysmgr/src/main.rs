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
    #[command(subcommand)]
    command: Command,
}

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
}

/// host-sysmgr's own failure.
const EXIT_FAILURE: u8 = 125;
/// Interrupted by SIGINT or SIGTERM.
const EXIT_INTERRUPTED: u8 = 130;
const EXIT_STATUS: &str = "EXIT STATUS:
  0-255  run: the app's own exit code, from the guest's HYPEMAN-EXIT line;
         exec: the remote command's exit code
  125    host-sysmgr itself failed: a usage error (bad or out-of-range
         argument), a missing kernel/initrd/rootfs, building the disks,
         starting the VMM, a VM that ended without a valid HYPEMAN-EXIT
         (none, or a code outside 0-255), or the --timeout
  130    interrupted by SIGINT or SIGTERM (run: the VM is killed;
         exec: the remote command is killed)
  --help and --version exit 0; stat exits 1 for a missing path.

EXAMPLES:
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
    };
    match result {
        Ok(code) => ExitCode::from(code),
        Err(e) => {
            eprintln!("host-sysmgr: {e:#}");
            if e.is::<cli::Interrupted>() {
                ExitCode::from(EXIT_INTERRUPTED)
            } else {
                ExitCode::from(EXIT_FAILURE)
            }
        }
    }
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
