//! `kernel …`, `initrd …`, `ensure`, `gc`, `versions`: the system files of
//! a data folder (see `host_sysmgr::system`).

use anyhow::{Context, Result};
use host_sysmgr::system::initrd::{self, Inputs};
use host_sysmgr::system::layout::data_dir;
use host_sysmgr::system::ops::KEEP;
use host_sysmgr::system::state::Kind;
use host_sysmgr::system::Store;
use serde::Serialize;
use std::path::{Path, PathBuf};

/// Options every system command takes.
#[derive(clap::Args, Clone)]
pub struct StoreArgs {
    /// The data folder (default: $GUESTINIT_DATA_DIR, else
    /// $XDG_DATA_HOME/guestinit, else ~/.local/share/guestinit).
    #[arg(long, value_name = "DIR", global = true)]
    pub data_dir: Option<PathBuf>,
    /// An extra catalog file (after the built-in one,
    /// {data}/system/catalog.toml and $GUESTINIT_CATALOG).
    #[arg(long, value_name = "FILE", global = true)]
    pub catalog: Option<PathBuf>,
}

/// The init and agent binaries an initrd is built from.
#[derive(clap::Args, Clone)]
pub struct InputArgs {
    /// The static init binary (default: $GUESTINIT_INIT, else beside this program).
    #[arg(long, value_name = "FILE")]
    pub init: Option<PathBuf>,
    /// The static guest-agent binary (default: $GUESTINIT_AGENT, else beside this program).
    #[arg(long, value_name = "FILE")]
    pub agent: Option<PathBuf>,
}

/// `kernel …`.
#[derive(clap::Subcommand)]
pub enum KernelCmd {
    /// List installed kernels (and with --available the catalog's others).
    List {
        /// Also the catalog's kernels not pulled yet.
        #[arg(long)]
        available: bool,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Download a catalog kernel (sha256 and size checked while it streams).
    Pull {
        /// The version, as `kernel list --available` shows it.
        version: String,
    },
    /// Install a kernel built here by kernel/build.sh (its output folder).
    Import {
        /// The folder holding vmlinux, kernel-headers.tar.gz and manifest.json.
        dir: PathBuf,
        /// Install under this version (default: <release>-<config key>).
        #[arg(long)]
        version: Option<String>,
    },
    /// Show an installed kernel's record (default: the default kernel).
    Show {
        /// The version.
        version: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print the vmlinux path a VMM should boot (verified first).
    Path {
        /// The version (default: the default kernel).
        version: Option<String>,
    },
    /// Make an installed kernel the default.
    SetDefault {
        /// The version.
        version: String,
    },
    /// Return to the previous default kernel.
    Rollback,
}

/// `initrd …`.
#[derive(clap::Subcommand)]
pub enum InitrdCmd {
    /// List installed initrd builds.
    List {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Build (if needed) the initrd of the current init and agent and make it the default.
    Build(InputArgs),
    /// Show an installed build's manifest summary (default: the default build).
    Show {
        /// The build id.
        build: Option<String>,
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
    /// Print the initrd path a VMM should boot (verified first).
    Path {
        /// The build id (default: the default build).
        build: Option<String>,
    },
    /// Make an installed build the default.
    SetDefault {
        /// The build id.
        build: String,
    },
    /// Return to the previous default build.
    Rollback,
    /// Accept initrds signed with this public key (another host's
    /// `keys/initrd.pub`): copied into {data}/system/keys/trusted/.
    Trust {
        /// The public key file.
        key: PathBuf,
    },
}

/// `publish`'s artifact kinds.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum KindArg {
    /// A kernel version.
    Kernel,
    /// An initrd build.
    Initrd,
}

impl From<KindArg> for Kind {
    fn from(k: KindArg) -> Kind {
        match k {
            KindArg::Kernel => Kind::Kernel,
            KindArg::Initrd => Kind::Initrd,
        }
    }
}

/// Opens the store of `data` (resolved as `--data-dir` documents).
pub fn open_store(data: Option<&Path>, catalog: Option<&Path>) -> Result<Store> {
    let data = data_dir(data)?;
    Ok(Store::open(&data, catalog)?)
}

fn print_json<T: Serialize>(v: &T) -> Result<u8> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(0)
}

/// Runs a `kernel` subcommand.
pub fn kernel(cmd: &KernelCmd, s: &StoreArgs) -> Result<u8> {
    let store = open_store(s.data_dir.as_deref(), s.catalog.as_deref())?;
    match cmd {
        KernelCmd::List { available, json } => kernel_list(&store, *available, *json),
        KernelCmd::Pull { version } => {
            let r = store.pull_kernel(version)?;
            println!(
                "{}",
                store
                    .layout()
                    .kernel_dir(&r.version, &r.arch)
                    .join(&r.vmlinux.file)
                    .display()
            );
            Ok(0)
        }
        KernelCmd::Import { dir, version } => {
            let r = store.import_kernel(dir, version.as_deref())?;
            println!("{}", r.version);
            Ok(0)
        }
        KernelCmd::Show { version, json } => {
            let v = pick(&store, Kind::Kernel, version.as_deref())?;
            let rec = store.kernel_record(&v)?;
            let track = store.state()?.track(Kind::Kernel, store.arch());
            show(json, &rec, &track, &v)
        }
        KernelCmd::Path { version } => {
            let v = pick(&store, Kind::Kernel, version.as_deref())?;
            println!("{}", store.verify_kernel(&v)?.display());
            Ok(0)
        }
        KernelCmd::SetDefault { version } => {
            store.set_default(Kind::Kernel, version)?;
            Ok(0)
        }
        KernelCmd::Rollback => {
            println!("{}", store.rollback(Kind::Kernel, "asked for")?);
            Ok(0)
        }
    }
}

fn show<T: Serialize>(
    json: &bool,
    rec: &T,
    track: &host_sysmgr::system::state::Track,
    id: &str,
) -> Result<u8> {
    #[derive(Serialize)]
    struct Shown<'a, T> {
        #[serde(flatten)]
        record: &'a T,
        default: bool,
        default_reason: Option<&'a str>,
    }
    let is_default = track.default.as_deref() == Some(id);
    let shown = Shown {
        record: rec,
        default: is_default,
        default_reason: track.reason.as_deref().filter(|_| is_default),
    };
    if *json {
        return print_json(&shown);
    }
    let value = serde_json::to_value(&shown)?;
    if let Some(map) = value.as_object() {
        for (k, v) in map {
            let text = match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            println!("{k:16} {text}");
        }
    }
    if !is_default && track.rejected.iter().any(|r| r == id) {
        println!(
            "{:16} rolled back automatically: {}",
            "note",
            track.reason.as_deref().unwrap_or("")
        );
    }
    Ok(0)
}

fn pick(store: &Store, kind: Kind, given: Option<&str>) -> Result<String> {
    match given {
        Some(v) => Ok(v.to_string()),
        None => store
            .state()?
            .track(kind, store.arch())
            .default
            .with_context(|| format!("no default {kind} (see `{kind} list`)")),
    }
}

fn kernel_list(store: &Store, available: bool, json: bool) -> Result<u8> {
    let rows = store.kernel_rows(available)?;
    if json {
        return print_json(&rows);
    }
    println!(
        "{:28} {:8} {:10} {:>12} {:10} SOURCE",
        "VERSION", "ARCH", "STATE", "SIZE", "TRUST"
    );
    for r in rows {
        let state = match (r.installed, r.default) {
            (true, true) => "default",
            (true, false) => "pulled",
            _ => "available",
        };
        let size = r.size.map_or("-".into(), |s| s.to_string());
        let trust = serde_json::to_value(r.trust)?
            .as_str()
            .unwrap_or("")
            .to_string();
        println!(
            "{:28} {:8} {:10} {:>12} {:10} {}",
            r.version, r.arch, state, size, trust, r.source
        );
    }
    Ok(0)
}

/// Runs an `initrd` subcommand.
pub fn initrd(cmd: &InitrdCmd, s: &StoreArgs) -> Result<u8> {
    let store = open_store(s.data_dir.as_deref(), s.catalog.as_deref())?;
    match cmd {
        InitrdCmd::List { json } => initrd_list(&store, *json),
        InitrdCmd::Build(i) => {
            let inputs = Inputs::find(i.init.as_deref(), i.agent.as_deref())?;
            println!("{}", store.ensure_initrd(&inputs)?);
            Ok(0)
        }
        InitrdCmd::Show { build, json } => {
            let b = pick(&store, Kind::Initrd, build.as_deref())?;
            let (_, m) = initrd::verify(store.layout(), store.arch(), &b)?;
            let summary = serde_json::json!({
                "build": b, "name": m.name, "version": m.version, "arch": m.arch,
                "init_version": m.init_version, "guest_init_protocol": m.guest_init_protocol,
                "agent_version": m.agent_version, "compression": m.image.compression,
                "sha256": m.image.sha256, "size": m.image.size, "entries": m.entries.len(),
            });
            let track = store.state()?.track(Kind::Initrd, store.arch());
            show(json, &summary, &track, &b)
        }
        InitrdCmd::Path { build } => {
            let b = pick(&store, Kind::Initrd, build.as_deref())?;
            println!(
                "{}",
                initrd::verify(store.layout(), store.arch(), &b)?
                    .0
                    .display()
            );
            Ok(0)
        }
        InitrdCmd::SetDefault { build } => {
            store.set_default(Kind::Initrd, build)?;
            Ok(0)
        }
        InitrdCmd::Rollback => {
            println!("{}", store.rollback(Kind::Initrd, "asked for")?);
            Ok(0)
        }
        InitrdCmd::Trust { key } => {
            println!("{}", store.trust_key(key)?.display());
            Ok(0)
        }
    }
}

/// `publish KIND ID REF`.
pub fn publish(
    s: &StoreArgs,
    kind: KindArg,
    id: &str,
    reference: &str,
    insecure: bool,
) -> Result<u8> {
    let store = open_store(s.data_dir.as_deref(), s.catalog.as_deref())?;
    let access = host_sysmgr::system::registry::Access::from_env(insecure);
    println!("{}", store.publish(kind.into(), id, reference, &access)?);
    Ok(0)
}

/// `pull REF`.
pub fn pull(s: &StoreArgs, reference: &str, insecure: bool) -> Result<u8> {
    let store = open_store(s.data_dir.as_deref(), s.catalog.as_deref())?;
    let access = host_sysmgr::system::registry::Access::from_env(insecure);
    let (kind, id) = store.pull_artifact(reference, &access)?;
    println!("{kind} {id}");
    Ok(0)
}

fn initrd_list(store: &Store, json: bool) -> Result<u8> {
    let default = store.state()?.track(Kind::Initrd, store.arch()).default;
    let rows: Vec<serde_json::Value> = initrd::installed(store.layout(), store.arch())
        .into_iter()
        .map(|(b, t)| {
            let size = std::fs::metadata(store.layout().initrd_dir(store.arch(), &b).join(initrd::IMAGE))
                .map(|m| m.len())
                .ok();
            serde_json::json!({"build": b, "default": default.as_deref() == Some(b.as_str()), "size": size, "built_at": t})
        })
        .collect();
    if json {
        return print_json(&rows);
    }
    println!("{:18} {:8} {:>12}", "BUILD", "STATE", "SIZE");
    for r in rows {
        let state = if r["default"] == true {
            "default"
        } else {
            "built"
        };
        println!(
            "{:18} {:8} {:>12}",
            r["build"].as_str().unwrap_or(""),
            state,
            r["size"]
        );
    }
    Ok(0)
}

/// `ensure`.
pub fn ensure(s: &StoreArgs, i: &InputArgs, json: bool) -> Result<u8> {
    let store = open_store(s.data_dir.as_deref(), s.catalog.as_deref())?;
    let inputs = Inputs::find(i.init.as_deref(), i.agent.as_deref())?;
    let e = store.ensure(&inputs)?;
    if json {
        return print_json(&e);
    }
    println!("kernel {} {}", e.kernel_version, e.kernel.display());
    println!("initrd {} {}", e.initrd_build, e.initrd.display());
    Ok(0)
}

/// `gc`.
pub fn gc(s: &StoreArgs, keep: usize, json: bool) -> Result<u8> {
    let store = open_store(s.data_dir.as_deref(), s.catalog.as_deref())?;
    let c = store.gc(keep)?;
    if json {
        return print_json(&c);
    }
    for k in &c.kernels {
        println!("removed kernel {k}");
    }
    for b in &c.initrds {
        println!("removed initrd {b}");
    }
    Ok(0)
}

/// `versions`.
pub fn versions(s: &StoreArgs, json: bool) -> Result<u8> {
    let store = open_store(s.data_dir.as_deref(), s.catalog.as_deref())?;
    let v = store.versions()?;
    if json {
        return print_json(&v);
    }
    println!("arch                  {}", v.arch);
    println!(
        "default kernel        {}",
        v.defaults.kernel.as_deref().unwrap_or("-")
    );
    println!(
        "default initrd        {}",
        v.defaults.initrd.as_deref().unwrap_or("-")
    );
    println!("installed kernels     {}", v.kernels.join(" "));
    println!("available kernels     {}", v.available_kernels.join(" "));
    println!("installed initrds     {}", v.initrds.join(" "));
    println!("guest-init protocols  {:?}", v.guest_init_protocols);
    Ok(0)
}

/// Default of `gc --keep`.
pub const DEFAULT_KEEP: usize = KEEP;

/// `images …`.
#[derive(clap::Subcommand)]
pub enum ImagesCmd {
    /// Pull (or copy from a layout folder or archive) an image and build its
    /// root image now, as `run IMAGE` would; prints its digest and root image.
    Pull {
        /// A registry reference, `oci:DIR[:TAG]`, `oci-archive:FILE[:TAG]`
        /// or `docker-archive:FILE`.
        source: String,
        /// Plain HTTP to a registry that is not on loopback.
        #[arg(long)]
        insecure_registry: bool,
    },
    /// Cached images: manifest digest, references, sizes.
    Ls {
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Forget an image (a reference as cached, or a manifest digest) and
    /// remove what nothing else uses.
    Rm {
        /// The reference or digest (sha256:… or at least 12 hex digits).
        name: String,
    },
    /// Remove blobs and root images no cached reference uses.
    Gc {
        /// JSON output.
        #[arg(long)]
        json: bool,
    },
}

/// Runs an `images` subcommand.
pub fn images(cmd: &ImagesCmd, s: &StoreArgs) -> Result<u8> {
    use host_sysmgr::image::store;
    let layout = host_sysmgr::system::Layout::new(data_dir(s.data_dir.as_deref())?);
    match cmd {
        ImagesCmd::Pull {
            source,
            insecure_registry,
        } => {
            let access = host_sysmgr::system::registry::Access::from_env(*insecure_registry);
            let fs = host_sysmgr::disks::RootFs::Erofs;
            let (pulled, img) = host_sysmgr::image::prepare(&layout, source, &access, fs)?;
            println!("{} {}", pulled.manifest_digest, img.path.display());
            Ok(0)
        }
        ImagesCmd::Ls { json } => {
            let rows = store::list(&layout);
            if *json {
                return print_json(&rows);
            }
            println!(
                "{:20} {:>12} {:>12} REFERENCES",
                "DIGEST", "ROOT IMAGE", "BLOBS"
            );
            for r in rows {
                let short: String = r
                    .digest
                    .trim_start_matches("sha256:")
                    .chars()
                    .take(12)
                    .collect();
                let root = r.root_image_size.map_or("-".into(), |s| s.to_string());
                println!(
                    "sha256:{short:13} {root:>12} {:>12} {}",
                    r.blob_size,
                    r.references.join(" ")
                );
            }
            Ok(0)
        }
        ImagesCmd::Rm { name } => {
            let c = store::remove(&layout, name)?;
            println!(
                "removed {} blobs and {} root images ({} bytes)",
                c.blobs, c.root_images, c.bytes
            );
            Ok(0)
        }
        ImagesCmd::Gc { json } => {
            let c = store::gc(&layout)?;
            if *json {
                return print_json(&c);
            }
            println!(
                "removed {} blobs and {} root images ({} bytes)",
                c.blobs, c.root_images, c.bytes
            );
            Ok(0)
        }
    }
}
