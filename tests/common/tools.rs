//! The tools the tests drive: the TypeScript example's npm packages, a pinned
//! Schemathesis and the official OpenAI SDK (the contract tests) and a pinned
//! aiosmtpd (the email tests' SMTP server). Each is installed on first use
//! (like ReDoc's script) and reused afterwards; every command's output is
//! returned, or shown in full when it fails.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use super::repo_root;

/// The Schemathesis release the contract tests run (what the project's
/// notes were measured with); a new one may change what it generates.
pub const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// The aiosmtpd release the email tests' SMTP server runs.
pub const AIOSMTPD_VERSION: &str = "1.4.6";

/// The official OpenAI Python SDK release the API-key test drives.
pub const OPENAI_SDK_VERSION: &str = "3.57.0";

/// Written last into a finished virtualenv, so a half-done install is redone.
const INSTALLED_MARKER: &str = ".tessera-installed";

/// The TypeScript example's directory.
pub fn typescript_example_dir() -> PathBuf {
    repo_root().join("examples/typescript")
}

/// Runs `command` to completion; its combined output, or a panic naming `what`
/// with that output when it fails or cannot start.
pub fn run_tool(what: &str, command: &mut Command) -> String {
    let output = command
        .output()
        .unwrap_or_else(|error| panic!("{what} could not start ({command:?}): {error}"));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "{what} failed ({}):\n{text}",
        output.status
    );
    text
}

/// Installs the example's npm packages exactly as locked (`npm ci`) when they
/// are missing or older than `package-lock.json`; once per test process.
pub fn ensure_typescript_packages() {
    static INSTALLED: OnceLock<()> = OnceLock::new();
    INSTALLED.get_or_init(|| {
        let dir = typescript_example_dir();
        if packages_are_current(&dir) {
            return;
        }
        run_tool(
            "npm ci in examples/typescript (install npm: `sudo apt-get install npm`)",
            Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir),
        );
    });
}

/// Whether `npm ci` ran since the lock file last changed: npm writes its own
/// copy of the lock into `node_modules` at the end of an install.
fn packages_are_current(dir: &Path) -> bool {
    let modified = |path: PathBuf| fs::metadata(path).and_then(|meta| meta.modified()).ok();
    match (
        modified(dir.join("node_modules/.package-lock.json")),
        modified(dir.join("package-lock.json")),
    ) {
        (Some(installed), Some(locked)) => installed >= locked,
        _ => false,
    }
}

/// The `schemathesis` executable of its pinned virtualenv.
pub fn ensure_schemathesis() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| ensure_python_package("schemathesis", SCHEMATHESIS_VERSION))
        .join("bin/schemathesis")
}

/// The `python` of a virtualenv holding the pinned official OpenAI SDK.
pub fn ensure_openai_sdk() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| ensure_python_package("openai", OPENAI_SDK_VERSION))
        .join("bin/python")
}

/// A virtualenv under `~/.cache/tessera/tools` with `package` at `version`
/// from PyPI, created when missing (a half-done one is redone); once per
/// package per test process, through each caller's `OnceLock`.
fn ensure_python_package(package: &str, version: &str) -> PathBuf {
    let venv = tools_dir().join(format!("{package}-{version}"));
    if venv.join(INSTALLED_MARKER).is_file() {
        return venv;
    }
    if venv.exists() {
        fs::remove_dir_all(&venv).unwrap_or_else(|error| {
            panic!(
                "the half-installed {} cannot be removed: {error}",
                venv.display()
            )
        });
    }
    fs::create_dir_all(tools_dir())
        .unwrap_or_else(|error| panic!("{} cannot be created: {error}", tools_dir().display()));
    run_tool(
        &format!(
            "creating {package}'s virtualenv (install python3-venv: `bash scripts/setup.sh --ci`)"
        ),
        Command::new("python3").arg("-m").arg("venv").arg(&venv),
    );
    run_tool(
        &format!("installing {package} from PyPI"),
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("{package}=={version}")),
    );
    fs::write(venv.join(INSTALLED_MARKER), version)
        .unwrap_or_else(|error| panic!("{} cannot be marked installed: {error}", venv.display()));
    venv
}

/// The `python` of a virtualenv holding the pinned aiosmtpd (a real SMTP server).
pub fn ensure_aiosmtpd() -> PathBuf {
    static VENV: OnceLock<PathBuf> = OnceLock::new();
    VENV.get_or_init(|| ensure_python_package("aiosmtpd", AIOSMTPD_VERSION))
        .join("bin/python")
}

/// Where tools installed for the tests live: outside the clone, like CI's
/// build directory, so every checkout on a machine shares them.
fn tools_dir() -> PathBuf {
    std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".data"))
        .join(".cache/tessera/tools")
}
