//! A private PostgreSQL cluster started from the machine's PostgreSQL binaries.
//!
//! Development (`tessera serve` without `DATABASE_URL`) and the test harness use
//! it so that a newcomer needs no database set up by hand. The cluster listens
//! only on a Unix socket inside its own data directory (mode 0700), so nothing
//! is exposed on the network and `trust` authentication reaches only its owner.
//!
//! PostgreSQL refuses to run as root; when we are root, the cluster runs as the
//! `postgres` system user (created by Debian's PostgreSQL packages).

use std::fs::{self, File};
use std::os::unix::fs::{PermissionsExt, chown};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use nix::unistd::{User, geteuid};

/// The port number naming the cluster's socket file (no TCP port is opened).
const SOCKET_PORT: u16 = 5432;

/// Longest Unix socket path the kernel accepts, less a margin.
const MAX_SOCKET_PATH: usize = 100;

/// Where dirs for clusters that root cannot hand to `postgres` in place go.
const ROOT_FALLBACK_PARENT: &str = "/var/tmp/tessera-postgres";

/// Why the local cluster could not be used.
#[derive(Debug, thiserror::Error)]
pub enum LocalPostgresError {
    /// No PostgreSQL server binaries on this machine.
    #[error(
        "PostgreSQL server binaries (initdb, pg_ctl) were not found: install them \
         (on Debian: `sudo apt-get install postgresql`) or set DATABASE_URL to a running server"
    )]
    NoBinaries,
    /// Running as root without a `postgres` user to run the server as.
    #[error(
        "PostgreSQL refuses to run as root and this machine has no `postgres` user: \
         install Debian's postgresql package (it creates the user), run as a regular user, \
         or set DATABASE_URL"
    )]
    NoUnprivilegedUser,
    /// A PostgreSQL command failed.
    #[error("{action} failed: {detail}")]
    Command {
        /// What was attempted.
        action: &'static str,
        /// What the command printed.
        detail: String,
    },
    /// A file system operation failed.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// On which path.
        path: PathBuf,
        /// The operating system's answer.
        source: std::io::Error,
    },
}

/// Whether [`LocalPostgres::start`] started the server or found it running.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartOutcome {
    /// We started it, so we stop it at shutdown.
    Started,
    /// Someone else started it (another `serve`, a test run); we leave it running.
    AlreadyRunning,
}

/// A private cluster in one data directory.
#[derive(Debug, Clone)]
pub struct LocalPostgres {
    data_dir: PathBuf,
    bin_dir: PathBuf,
    /// The user the server runs as, when we are root.
    run_as: Option<User>,
}

impl LocalPostgres {
    /// Finds the PostgreSQL binaries and settles where the cluster lives.
    ///
    /// `preferred_dir` is used unless we are root and the `postgres` user cannot
    /// reach it (a checkout under `/root`, say) or its socket path would be too
    /// long; then a directory under `/var/tmp/tessera-postgres/` stands in.
    pub fn discover(preferred_dir: &Path) -> Result<Self, LocalPostgresError> {
        let bin_dir = find_bin_dir().ok_or(LocalPostgresError::NoBinaries)?;
        let preferred = absolute(preferred_dir)?;
        let run_as = if geteuid().is_root() {
            Some(
                User::from_name("postgres")
                    .ok()
                    .flatten()
                    .ok_or(LocalPostgresError::NoUnprivilegedUser)?,
            )
        } else {
            None
        };
        let cluster = Self {
            data_dir: preferred.clone(),
            bin_dir,
            run_as,
        };
        if cluster.dir_is_usable()? {
            return Ok(cluster);
        }
        let fallback = Path::new(ROOT_FALLBACK_PARENT).join(format!("{:016x}", fnv1a(&preferred)));
        tracing::info!(
            preferred = %preferred.display(),
            used = %fallback.display(),
            "the postgres user cannot use the configured directory; using another"
        );
        Ok(Self {
            data_dir: fallback,
            ..cluster
        })
    }

    /// The data directory (also the socket directory).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// A diesel URL for `database` on this cluster, over its Unix socket.
    pub fn database_url(&self, database: &str) -> String {
        format!(
            "postgres://postgres@/{database}?host={}&port={SOCKET_PORT}",
            percent_encode(&self.data_dir.to_string_lossy())
        )
    }

    /// Initialises the cluster if needed and starts it unless it already runs.
    ///
    /// `settings` are extra server settings (`fsync=off` for tests, say). A file
    /// lock beside the data directory keeps concurrent callers (several test
    /// processes, two `serve`s) from racing.
    pub fn start(&self, settings: &[&str]) -> Result<StartOutcome, LocalPostgresError> {
        self.create_data_dir()?;
        let lock_path = self.data_dir.with_extension("lock");
        let lock = File::create(&lock_path).map_err(|source| LocalPostgresError::Io {
            action: "create lock file",
            path: lock_path.clone(),
            source,
        })?;
        lock.lock().map_err(|source| LocalPostgresError::Io {
            action: "lock",
            path: lock_path,
            source,
        })?;
        if self.is_running() {
            return Ok(StartOutcome::AlreadyRunning);
        }
        if !self.data_dir.join("PG_VERSION").exists() {
            self.initdb()?;
        }
        let mut options = format!(
            "-k {} -p {SOCKET_PORT} -c listen_addresses=",
            self.data_dir.display()
        );
        for setting in settings {
            options.push_str(" -c ");
            options.push_str(setting);
        }
        let log_file = self.data_dir.join("server.log");
        let output = self.run(
            "pg_ctl",
            &[
                "start".as_ref(),
                "-w".as_ref(),
                "-t".as_ref(),
                "60".as_ref(),
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-l".as_ref(),
                log_file.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ],
        )?;
        check(output, "starting PostgreSQL")?;
        Ok(StartOutcome::Started)
    }

    /// Whether a server is running on this data directory.
    pub fn is_running(&self) -> bool {
        self.run(
            "pg_ctl",
            &["status".as_ref(), "-D".as_ref(), self.data_dir.as_os_str()],
        )
        .map(|output| output.status.success())
        .unwrap_or(false)
    }

    /// Stops the server, letting it finish what it is doing ("fast" mode:
    /// sessions are disconnected, data is flushed).
    pub fn stop(&self) -> Result<(), LocalPostgresError> {
        let output = self.run(
            "pg_ctl",
            &[
                "stop".as_ref(),
                "-w".as_ref(),
                "-m".as_ref(),
                "fast".as_ref(),
                "-D".as_ref(),
                self.data_dir.as_os_str(),
            ],
        )?;
        check(output, "stopping PostgreSQL")
    }

    fn initdb(&self) -> Result<(), LocalPostgresError> {
        let output = self.run(
            "initdb",
            &[
                "-D".as_ref(),
                self.data_dir.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        )?;
        check(output, "initialising the PostgreSQL cluster (initdb)")
    }

    /// Creates the data directory (mode 0700, owned by the server's user).
    fn create_data_dir(&self) -> Result<(), LocalPostgresError> {
        let io = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| LocalPostgresError::Io {
                action,
                path,
                source,
            }
        };
        fs::create_dir_all(&self.data_dir).map_err(io("create", &self.data_dir))?;
        fs::set_permissions(&self.data_dir, fs::Permissions::from_mode(0o700))
            .map_err(io("set permissions on", &self.data_dir))?;
        if let Some(user) = &self.run_as {
            chown(
                &self.data_dir,
                Some(user.uid.as_raw()),
                Some(user.gid.as_raw()),
            )
            .map_err(io("change owner of", &self.data_dir))?;
        }
        Ok(())
    }

    /// Whether the server's user can own and reach the data directory, and its
    /// socket path fits the kernel's limit.
    fn dir_is_usable(&self) -> Result<bool, LocalPostgresError> {
        let socket = self.data_dir.join(format!(".s.PGSQL.{SOCKET_PORT}"));
        if socket.as_os_str().len() > MAX_SOCKET_PATH {
            return Ok(false);
        }
        if self.run_as.is_none() {
            return Ok(true);
        }
        self.create_data_dir()?;
        let output = self.run_command(Command::new("test").arg("-w").arg(&self.data_dir))?;
        Ok(output.status.success())
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> Result<Output, LocalPostgresError> {
        let mut command = Command::new(self.bin_dir.join(program));
        command.args(args);
        self.run_command(&mut command)
    }

    /// Runs `command`, as the server's user when we are root.
    fn run_command(&self, command: &mut Command) -> Result<Output, LocalPostgresError> {
        let command = match &self.run_as {
            None => command,
            Some(user) => {
                let mut wrapped = Command::new("runuser");
                wrapped
                    .arg("-u")
                    .arg(&user.name)
                    .arg("--")
                    .arg(command.get_program())
                    .args(command.get_args());
                *command = wrapped;
                command
            }
        };
        // The server's user may not be able to read our working directory.
        command.current_dir("/");
        command.output().map_err(|source| LocalPostgresError::Io {
            action: "run",
            path: PathBuf::from(command.get_program()),
            source,
        })
    }
}

/// The newest `/usr/lib/postgresql/N/bin` (Debian's layout), else the directory
/// on `PATH` that holds both `initdb` and `pg_ctl`.
fn find_bin_dir() -> Option<PathBuf> {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    let debian = fs::read_dir("/usr/lib/postgresql")
        .ok()
        .and_then(|entries| {
            entries
                .filter_map(Result::ok)
                .filter_map(|entry| {
                    let version: u32 = entry.file_name().to_str()?.parse().ok()?;
                    Some((version, entry.path().join("bin")))
                })
                .filter(|(_, bin)| has_binaries(bin))
                .max_by_key(|(version, _)| *version)
                .map(|(_, bin)| bin)
        });
    debian.or_else(|| {
        std::env::var_os("PATH")
            .and_then(|path| std::env::split_paths(&path).find(|dir| has_binaries(dir)))
    })
}

fn absolute(path: &Path) -> Result<PathBuf, LocalPostgresError> {
    std::path::absolute(path).map_err(|source| LocalPostgresError::Io {
        action: "resolve",
        path: path.to_path_buf(),
        source,
    })
}

fn check(output: Output, action: &'static str) -> Result<(), LocalPostgresError> {
    if output.status.success() {
        return Ok(());
    }
    let mut detail = String::from_utf8_lossy(&output.stderr).trim().to_owned();
    if detail.is_empty() {
        detail = String::from_utf8_lossy(&output.stdout).trim().to_owned();
    }
    Err(LocalPostgresError::Command { action, detail })
}

/// Encodes a socket directory for the `host` query parameter of a URL.
fn percent_encode(value: &str) -> String {
    let mut encoded = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"/-_.~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    encoded
}

/// A stable 64-bit hash (FNV-1a) of a path, to name fallback directories.
fn fnv1a(path: &Path) -> u64 {
    path.as_os_str()
        .as_encoded_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn socket_directories_are_encoded_for_urls() {
        assert_eq!(percent_encode("/work/main/.data/pg"), "/work/main/.data/pg");
        assert_eq!(percent_encode("/a b/c&d"), "/a%20b/c%26d");
    }

    #[test]
    fn fallback_names_are_stable() {
        assert_eq!(fnv1a(Path::new("/root/x")), fnv1a(Path::new("/root/x")));
        assert_ne!(fnv1a(Path::new("/root/x")), fnv1a(Path::new("/root/y")));
    }
}
