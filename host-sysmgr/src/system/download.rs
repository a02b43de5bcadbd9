//! Verified downloads: the body streams into a partial file while its sha256
//! and size are checked; failures worth retrying (connection errors, resets,
//! 5xx, 404/408/429, a stalled body, a short body) are retried with backoff,
//! resuming with an HTTP range when the server honours it. On success the
//! partial file holds exactly the expected bytes; on failure it is removed.
//! A partial file left by a killed process is resumed by the next call.

use super::error::{Result, SystemError};
use sha2::{Digest, Sha256};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::time::Duration;

/// What the content must be.
#[derive(Debug, Clone)]
pub struct Expect {
    /// sha256 (lowercase hex), when published.
    pub sha256: Option<String>,
    /// Exact size, when published.
    pub size: Option<u64>,
    /// Largest size accepted when the exact size is not known.
    pub limit: u64,
}

/// How hard to try.
#[derive(Debug, Clone)]
pub struct Policy {
    /// Connecting (TCP + TLS) may take this long.
    pub connect_timeout: Duration,
    /// The body may pause this long between two chunks.
    pub stall_timeout: Duration,
    /// Attempts in all (the first included).
    pub attempts: u32,
    /// Delay before the second attempt; doubled each time, at most 10 s.
    pub backoff: Duration,
    /// Show a progress bar (on a terminal).
    pub progress: bool,
}

impl Default for Policy {
    fn default() -> Self {
        use std::io::IsTerminal;
        Policy {
            connect_timeout: Duration::from_secs(10),
            stall_timeout: Duration::from_secs(30),
            attempts: 5,
            backoff: Duration::from_millis(500),
            progress: std::io::stderr().is_terminal(),
        }
    }
}

/// What arrived.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetched {
    /// Its sha256 (lowercase hex).
    pub sha256: String,
    /// Its size.
    pub size: u64,
    /// Attempts used.
    pub attempts: u32,
    /// Bytes that were already in the partial file when this call began.
    pub resumed_from: u64,
}

/// Why one attempt ended: worth another try (the partial is kept), or final.
enum Failure {
    Retry(SystemError),
    Fatal(SystemError),
}

/// Downloads `url` into `partial` (created or resumed), checked against
/// `expect`. On error `partial` is removed.
pub fn fetch(url: &str, expect: &Expect, partial: &Path, policy: &Policy) -> Result<Fetched> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| SystemError::io("tokio runtime", e))?;
    let res = rt.block_on(fetch_async(url, expect, partial, policy));
    if res.is_err() {
        let _ = std::fs::remove_file(partial);
    }
    res
}

/// The HTTP client every download and registry call uses (rustls with the
/// ring provider).
pub fn client(policy: &Policy) -> Result<reqwest::Client> {
    // ring rather than aws-lc-rs (no cmake, a smaller binary); its lack of
    // post-quantum key exchange is what the deprecation is about.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .connect_timeout(policy.connect_timeout)
        .read_timeout(policy.stall_timeout)
        .user_agent(concat!("guestinit-host-sysmgr/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|source| SystemError::Http {
            url: String::new(),
            source,
        })
}

async fn fetch_async(
    url: &str,
    expect: &Expect,
    partial: &Path,
    policy: &Policy,
) -> Result<Fetched> {
    let client = client(policy)?;
    let mut part = Partial::open(partial)?;
    let resumed_from = part.len;
    let bar = progress_bar(policy, expect.size);
    let mut last = None;
    for attempt in 1..=policy.attempts.max(1) {
        if attempt > 1 {
            let shift = (attempt - 2).min(5);
            tokio::time::sleep((policy.backoff * (1 << shift)).min(Duration::from_secs(10))).await;
        }
        match attempt_once(&client, url, expect, &mut part, policy, &bar).await {
            Ok(()) => {
                bar.finish_and_clear();
                return finish(url, expect, part, attempt, resumed_from);
            }
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(e)) => {
                tracing::warn!(url, attempt, error = %crate::chain(&e), "download attempt failed");
                last = Some(e);
            }
        }
    }
    bar.finish_and_clear();
    Err(last.unwrap_or_else(|| SystemError::NotFound(format!("download {url}: no attempt"))))
}

fn progress_bar(policy: &Policy, size: Option<u64>) -> indicatif::ProgressBar {
    if !policy.progress {
        return indicatif::ProgressBar::hidden();
    }
    let bar = indicatif::ProgressBar::new(size.unwrap_or(0));
    if let Ok(style) = indicatif::ProgressStyle::with_template(
        "{bytes}/{total_bytes} {wide_bar} {bytes_per_sec} {eta}",
    ) {
        bar.set_style(style);
    }
    bar
}

fn finish(
    url: &str,
    expect: &Expect,
    part: Partial,
    attempts: u32,
    resumed_from: u64,
) -> Result<Fetched> {
    let size = part.len;
    part.file
        .sync_all()
        .map_err(|e| SystemError::io(&part.path, e))?;
    let sha256 = hex::encode(part.hasher.finalize());
    if let Some(want) = &expect.sha256 {
        if !want.eq_ignore_ascii_case(&sha256) {
            return Err(SystemError::Digest {
                what: url.to_string(),
                expected: want.to_ascii_lowercase(),
                actual: sha256,
            });
        }
    }
    Ok(Fetched {
        sha256,
        size,
        attempts,
        resumed_from,
    })
}

async fn attempt_once(
    client: &reqwest::Client,
    url: &str,
    expect: &Expect,
    part: &mut Partial,
    policy: &Policy,
    bar: &indicatif::ProgressBar,
) -> Result<(), Failure> {
    if expect.size.is_some_and(|s| part.len >= s) || part.len >= expect.limit {
        // A complete (or oversized) leftover: start over rather than ask for
        // an empty range.
        part.reset().map_err(Failure::Fatal)?;
    }
    let mut req = client.get(url);
    if part.len > 0 {
        req = req.header(reqwest::header::RANGE, format!("bytes={}-", part.len));
    }
    let http = |source| SystemError::Http {
        url: url.to_string(),
        source,
    };
    let mut resp = req.send().await.map_err(|e| Failure::Retry(http(e)))?;
    accept_status(url, &resp, part)?;
    check_announced(url, expect, &resp, part.len)?;
    bar.set_position(part.len);
    let stalled = || SystemError::Stalled {
        url: url.to_string(),
        seconds: policy.stall_timeout.as_secs_f64().ceil() as u64,
    };
    loop {
        let chunk = tokio::time::timeout(policy.stall_timeout, resp.chunk())
            .await
            .map_err(|_| Failure::Retry(stalled()))?
            .map_err(|e| Failure::Retry(if e.is_timeout() { stalled() } else { http(e) }))?;
        let Some(chunk) = chunk else { break };
        part.append(url, expect, &chunk)?;
        bar.set_position(part.len);
    }
    match expect.size {
        Some(want) if part.len < want => Err(Failure::Retry(SystemError::Size {
            what: url.to_string(),
            expected: want,
            actual: part.len,
        })),
        _ => Ok(()),
    }
}

/// 200 starts over, 206 continues at the partial's end; 404, 408, 429 and
/// 5xx are worth another try; anything else is final.
fn accept_status(url: &str, resp: &reqwest::Response, part: &mut Partial) -> Result<(), Failure> {
    let status = resp.status().as_u16();
    let err = || SystemError::Status {
        url: url.to_string(),
        status,
    };
    match status {
        200 => part.reset().map_err(Failure::Fatal),
        206 if range_start(resp) == Some(part.len) => Ok(()),
        206 | 416 => {
            part.reset().map_err(Failure::Fatal)?;
            Err(Failure::Retry(err()))
        }
        404 | 408 | 429 | 500..=599 => Err(Failure::Retry(err())),
        _ => Err(Failure::Fatal(err())),
    }
}

fn range_start(resp: &reqwest::Response) -> Option<u64> {
    let v = resp
        .headers()
        .get(reqwest::header::CONTENT_RANGE)?
        .to_str()
        .ok()?;
    let rest = v.strip_prefix("bytes ")?;
    rest.split('-').next()?.trim().parse().ok()
}

/// Refuses a body whose announced length cannot be right.
fn check_announced(
    url: &str,
    expect: &Expect,
    resp: &reqwest::Response,
    have: u64,
) -> Result<(), Failure> {
    let Some(len) = resp.content_length() else {
        return Ok(());
    };
    let total = have.saturating_add(len);
    if let Some(want) = expect.size {
        if total != want {
            return Err(Failure::Fatal(SystemError::Size {
                what: url.to_string(),
                expected: want,
                actual: total,
            }));
        }
    }
    if total > expect.limit {
        return Err(Failure::Fatal(SystemError::TooLarge {
            what: url.to_string(),
            limit: expect.limit,
        }));
    }
    Ok(())
}

/// The partial file and the digest of what it holds.
struct Partial {
    path: std::path::PathBuf,
    file: File,
    hasher: Sha256,
    len: u64,
}

impl Partial {
    /// Opens (or creates) `path` and hashes what a previous attempt left.
    fn open(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            super::install::mkdirs(dir)?;
        }
        let io = |e| SystemError::io(path, e);
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(path)
            .map_err(io)?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; 1 << 16];
        let mut len = 0u64;
        loop {
            let n = file.read(&mut buf).map_err(io)?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            len += n as u64;
        }
        Ok(Partial {
            path: path.to_path_buf(),
            file,
            hasher,
            len,
        })
    }

    fn reset(&mut self) -> Result<()> {
        let io = |e| SystemError::io(&self.path, e);
        self.file.set_len(0).map_err(io)?;
        self.file.seek(SeekFrom::Start(0)).map_err(io)?;
        self.hasher = Sha256::new();
        self.len = 0;
        Ok(())
    }

    fn append(&mut self, url: &str, expect: &Expect, chunk: &[u8]) -> Result<(), Failure> {
        let len = self.len + chunk.len() as u64;
        if expect.size.is_some_and(|s| len > s) {
            return Err(Failure::Fatal(SystemError::Size {
                what: url.to_string(),
                expected: expect.size.unwrap_or_default(),
                actual: len,
            }));
        }
        if len > expect.limit {
            return Err(Failure::Fatal(SystemError::TooLarge {
                what: url.to_string(),
                limit: expect.limit,
            }));
        }
        self.file
            .write_all(chunk)
            .map_err(|e| Failure::Fatal(SystemError::io(&self.path, e)))?;
        self.hasher.update(chunk);
        self.len = len;
        Ok(())
    }
}
