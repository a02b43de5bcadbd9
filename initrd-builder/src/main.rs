//! `initrd-builder`: build, verify, list and sign reproducible initramfs images.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use initrd_builder::{cpio, sign, unpack, verify, ArtifactPaths, BuildOptions, Compression, Spec};

/// Reproducible, verified, tiny initramfs images for the guest init.
///
/// An image is built from a declarative TOML spec (see initrd-builder/README.md)
/// into three files: initramfs-<name>-<version>-<build_id>.img, its
/// .manifest.json (versions, kernel, build id, sha256 and size of the image and of
/// every entry) and .sig (ed25519 over the exact manifest bytes, hex).
#[derive(Parser)]
#[command(name = "initrd-builder", version, about, long_about, after_help = EXAMPLES)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

const EXAMPLES: &str = "Examples:
  initrd-builder keygen keys/release
  initrd-builder build --spec initrd-builder/specs/guestinit.toml \\
      --kernel-release \"$(bash scripts/fetch-kernel.sh)\" --key keys/release.key --out out/
  initrd-builder verify out/initramfs-guestinit-0.1.0-<build_id>.img --pubkey keys/release.pub --deep
  initrd-builder ls out/initramfs-guestinit-0.1.0-<build_id>.img";

#[derive(Subcommand)]
enum Command {
    /// Build an image, its manifest and signature from a spec.
    ///
    /// Entries are sorted, owned by 0:0, with modes from the spec and every mtime
    /// set to SOURCE_DATE_EPOCH (or 0): the same inputs give the same bytes.
    /// Prints the image path on stdout and a summary on stderr.
    Build(BuildArgs),
    /// Verify signature, then manifest, then image hash (with --deep, every entry).
    ///
    /// Exits 0 when trusted; 1 with the reason otherwise.
    Verify(VerifyArgs),
    /// List the entries of an image: mode, size, path, link target.
    ///
    /// Reads every archive the kernel would unpack (concatenated archives and
    /// compressed streams of any supported compression; their offsets are
    /// listed on stderr when there is more than one). Names are escaped;
    /// absolute names and `..` components are flagged. The image must be a
    /// regular file of at most 1 GiB, decompressing to at most 1 GiB.
    Ls(LsArgs),
    /// Create an ed25519 key pair: PREFIX.key (secret key, PKCS#8 PEM as
    /// `openssl pkey` reads it, mode 0600) and PREFIX.pub (public key, hex).
    /// Never overwrites.
    Keygen {
        /// Path prefix of the two files, e.g. `keys/release` (not a folder).
        prefix: PathBuf,
    },
}

#[derive(clap::Args)]
struct BuildArgs {
    /// The spec file (TOML); its relative paths start at its directory.
    #[arg(long, short)]
    spec: PathBuf,
    /// Output directory (created if missing).
    #[arg(long, short, default_value = ".")]
    out: PathBuf,
    /// Secret key file to sign the manifest with (PREFIX.key from `keygen`,
    /// PKCS#8 PEM).
    #[arg(long, required_unless_present = "unsigned")]
    key: Option<PathBuf>,
    /// Write no signature (the image then cannot pass `verify`).
    #[arg(long, conflicts_with = "key")]
    unsigned: bool,
    /// Set a spec placeholder, e.g. `--var kver=6.1.0-31-amd64` (repeatable).
    /// `target_dir` defaults to $CARGO_TARGET_DIR when that is set.
    #[arg(long = "var", value_name = "NAME=VALUE")]
    vars: Vec<String>,
    /// Shorthand for `--var kver=RELEASE` (the kernel release modules come from).
    #[arg(long, value_name = "RELEASE")]
    kernel_release: Option<String>,
    /// Also carry the spec's `debug = true` entries (debug tools).
    #[arg(long)]
    debug: bool,
    /// Override the spec's compression: none, gzip, zstd, lz4.
    #[arg(long)]
    compression: Option<Compression>,
    /// Override the compression level (gzip 1-9, zstd 1-22).
    #[arg(long)]
    level: Option<i32>,
    /// Override the size budget of the compressed image (bytes, or e.g. 4MiB).
    #[arg(long, value_parser = parse_size)]
    max_size: Option<u64>,
    /// mtime of every entry; defaults to $SOURCE_DATE_EPOCH, else 0.
    #[arg(long)]
    source_date_epoch: Option<u64>,
}

#[derive(clap::Args)]
struct VerifyArgs {
    /// The image; its manifest and signature are found beside it
    /// (X.img → X.manifest.json, X.sig) unless given.
    image: PathBuf,
    /// Public key file (PREFIX.pub from `keygen`: hex, or an SPKI PEM).
    #[arg(long, required_unless_present = "pubkey_hex")]
    pubkey: Option<PathBuf>,
    /// Public key as 64 hex characters.
    #[arg(long, conflicts_with = "pubkey")]
    pubkey_hex: Option<String>,
    /// Manifest path.
    #[arg(long)]
    manifest: Option<PathBuf>,
    /// Signature path.
    #[arg(long)]
    sig: Option<PathBuf>,
    /// Also decompress and check every entry against the manifest.
    #[arg(long)]
    deep: bool,
}

#[derive(clap::Args)]
struct LsArgs {
    /// The image (none, gzip, zstd or lz4-legacy compressed cpio).
    image: PathBuf,
    /// Print JSON records (path, type, mode, size, sha256, target, rdev,
    /// archive, unsafe_name).
    #[arg(long)]
    json: bool,
}

fn parse_size(s: &str) -> Result<u64, String> {
    initrd_builder::spec::parse_size(s)
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("initrd-builder: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    match cli.command {
        Command::Build(args) => cmd_build(args),
        Command::Verify(args) => cmd_verify(args),
        Command::Ls(args) => cmd_ls(args),
        Command::Keygen { prefix } => cmd_keygen(&prefix),
    }
}

fn build_vars(args: &BuildArgs) -> Result<BTreeMap<String, String>> {
    let mut vars = BTreeMap::new();
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        let dir = std::path::absolute(PathBuf::from(dir)).context("CARGO_TARGET_DIR")?;
        vars.insert("target_dir".to_string(), dir.display().to_string());
    }
    if let Some(k) = &args.kernel_release {
        vars.insert("kver".to_string(), k.clone());
    }
    for v in &args.vars {
        let Some((k, val)) = v.split_once('=') else {
            bail!("--var {v:?}: expected NAME=VALUE");
        };
        vars.insert(k.to_string(), val.to_string());
    }
    Ok(vars)
}

fn cmd_build(args: BuildArgs) -> Result<()> {
    let spec = Spec::load(&args.spec)?;
    let signing_key = match &args.key {
        Some(k) => Some(sign::read_secret_key(k)?),
        None => None,
    };
    let source_date_epoch = match args.source_date_epoch {
        Some(n) => n,
        None => BuildOptions::source_date_epoch_from_env()?,
    };
    let opts = BuildOptions {
        vars: build_vars(&args)?,
        source_date_epoch,
        debug: args.debug,
        compression: args.compression,
        level: args.level,
        max_size: args.max_size,
        signing_key,
    };
    let out = initrd_builder::build(&spec, &opts)?;
    let paths = out.write_to(&args.out)?;
    print_summary(&out.manifest, &paths);
    println!("{}", paths.image.display());
    Ok(())
}

fn print_summary(m: &initrd_builder::Manifest, paths: &ArtifactPaths) {
    let mib = |n: u64| n as f64 / (1 << 20) as f64;
    eprintln!(
        "built {} ({:.2} MiB {}, {:.2} MiB uncompressed, {} entries, build id {})",
        paths.image.display(),
        mib(m.image.size),
        m.image.compression,
        mib(m.image.uncompressed_size),
        m.entries.len(),
        m.build_id
    );
    if let Some(k) = &m.kernel {
        eprintln!(
            "kernel {}: {} modules: {}",
            k.release,
            k.modules.len(),
            k.modules.join(" ")
        );
        if !k.builtin.is_empty() {
            eprintln!(
                "built into the kernel (not carried): {}",
                k.builtin.join(" ")
            );
        }
    }
    eprintln!("manifest {}", paths.manifest.display());
    if paths.signature.exists() {
        eprintln!("signature {}", paths.signature.display());
    } else {
        eprintln!("unsigned: no signature written");
    }
}

fn cmd_verify(args: VerifyArgs) -> Result<()> {
    // The image first: `verify missing.img` names the image, not its signature.
    unpack::open_image_file(&args.image)?;
    let key = match (&args.pubkey, &args.pubkey_hex) {
        (Some(p), _) => sign::read_public_key(p)?,
        (None, Some(h)) => sign::decode_public_key(h)?,
        (None, None) => bail!("--pubkey or --pubkey-hex is required"),
    };
    let mut paths = ArtifactPaths::for_image(&args.image);
    if let Some(m) = args.manifest {
        paths.manifest = m;
    }
    if let Some(s) = args.sig {
        paths.signature = s;
    }
    let m = verify::verify_files(&paths, &key, args.deep)?;
    println!(
        "OK {} version {} build {} ({} {} bytes, sha256 {}){}",
        paths.image.display(),
        m.version,
        m.build_id,
        m.image.compression,
        m.image.size,
        m.image.sha256,
        if args.deep {
            ", every entry checked"
        } else {
            ""
        }
    );
    Ok(())
}

fn cmd_ls(args: LsArgs) -> Result<()> {
    let bytes = unpack::read_image_file(&args.image)?;
    let unpacked = unpack::unpack(&bytes)?;
    let many = unpacked.archives.len() > 1;
    if many {
        describe_archives(&unpacked);
    }
    for (a, e) in unpacked.entries() {
        let issue = cpio::name_issue(&e.name);
        if let Some(issue) = issue {
            eprintln!(
                "initrd-builder: warning: entry /{} (archive {}) has an unsafe name: {}",
                cpio::escape(&e.name),
                a + 1,
                issue.describe()
            );
        }
        if args.json {
            let record = LsRecord {
                entry: verify::record_of(e),
                archive: a + 1,
                unsafe_name: issue,
            };
            println!("{}", serde_json::to_string(&record)?);
        } else {
            println!("{}", ls_line(e, many.then_some(a + 1)));
        }
    }
    Ok(())
}

/// One `ls --json` line: the manifest record of the entry, the (1-based)
/// archive it comes from, and why its name is unsafe, if it is.
#[derive(serde::Serialize)]
struct LsRecord {
    #[serde(flatten)]
    entry: initrd_builder::manifest::ManifestEntry,
    archive: usize,
    unsafe_name: Option<cpio::NameIssue>,
}

fn describe_archives(unpacked: &unpack::Unpacked) {
    eprintln!(
        "initrd-builder: the image holds {} archives; the kernel unpacks all of them, in this order:",
        unpacked.archives.len()
    );
    for (i, a) in unpacked.archives.iter().enumerate() {
        let n = a.entries.len();
        let plural = if n == 1 { "entry" } else { "entries" };
        eprintln!("  archive {}: {}, {n} {plural}", i + 1, a.describe());
    }
}

/// `ls`'s text line; names and link targets are escaped (`\n`, `\x1b`, …) so
/// that an archive cannot forge lines or drive the terminal.
fn ls_line(e: &cpio::RawEntry, archive: Option<usize>) -> String {
    let size = match e.kind_name() {
        "chardev" | "blockdev" => format!("{}, {}", e.rdev.0, e.rdev.1),
        _ => e.data.len().to_string(),
    };
    let mut line = format!(
        "{} {:04o} {:>10} /{}",
        perm_string(e),
        e.mode & 0o7777,
        size,
        cpio::escape(&e.name)
    );
    if e.kind_name() == "symlink" {
        line.push_str(" -> ");
        line.push_str(&cpio::escape_bytes(&e.data));
    }
    if let Some(issue) = cpio::name_issue(&e.name) {
        line.push_str(&format!("  [unsafe name: {}]", issue.describe()));
    }
    if let Some(a) = archive {
        line.push_str(&format!("  [archive {a}]"));
    }
    line
}

fn perm_string(e: &cpio::RawEntry) -> String {
    let t = match e.kind_name() {
        "dir" => 'd',
        "symlink" => 'l',
        "chardev" => 'c',
        "blockdev" => 'b',
        "file" => '-',
        _ => '?',
    };
    let bits = "rwxrwxrwx";
    let perms: String = bits
        .chars()
        .enumerate()
        .map(|(i, c)| if e.mode & (0o400 >> i) != 0 { c } else { '-' })
        .collect();
    format!("{t}{perms}")
}

fn cmd_keygen(prefix: &Path) -> Result<()> {
    sign::check_prefix(prefix)?;
    if let Some(dir) = prefix.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
    }
    let key = sign::generate()?;
    let (secret, public) = sign::write_keypair(&key, prefix)?;
    eprintln!("secret key {} (keep it private)", secret.display());
    eprintln!("public key {}", public.display());
    print!("{}", sign::encode_public_key(&key.verifying_key()));
    Ok(())
}
