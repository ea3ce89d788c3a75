//! API documentation, usable offline: the OpenAPI document at `/openapi.json`,
//! Swagger UI at `/docs` (its assets are compiled in) and ReDoc at `/redoc`
//! (its script is served from a local copy of the `redoc` npm package, never
//! from a CDN).

use std::path::{Path, PathBuf};
use std::process::Command;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::get;
use utoipa::openapi::OpenApi;
use utoipa_redoc::Redoc;
use utoipa_swagger_ui::{Config as SwaggerConfig, SwaggerUi};

use crate::shared::error::AppError;

/// The npm package (pinned) whose standalone bundle ReDoc's page loads.
pub const REDOC_PACKAGE: &str = "redoc@2.5.4";

/// Where the page loads the ReDoc script from: this server.
const REDOC_SCRIPT_ROUTE: &str = "/redoc/redoc.standalone.js";

const REDOC_PAGE: &str = r#"<!DOCTYPE html>
<html lang="en">
  <head>
    <title>Tessera API reference</title>
    <meta charset="utf-8" />
    <meta name="viewport" content="width=device-width, initial-scale=1" />
    <style>body { margin: 0; padding: 0; }</style>
  </head>
  <body>
    <div id="redoc-container"></div>
    <script src="/redoc/redoc.standalone.js"></script>
    <script>
      Redoc.init($spec, $config, document.getElementById("redoc-container"));
    </script>
  </body>
</html>
"#;

/// Routes for `/openapi.json`, `/docs` and `/redoc`.
///
/// `redoc_bundle` is the ReDoc script; without it `/redoc` answers 503 saying
/// how to install it, rather than a page that silently fails to render.
/// Swagger UI keeps the token it signed in with across page loads only in
/// development (`persist_tokens`): elsewhere a token left in the browser's
/// storage would outlive the tab.
pub fn router<S>(spec: OpenApi, redoc_bundle: Option<Bytes>, persist_tokens: bool) -> Router<S>
where
    S: Clone + Send + Sync + 'static,
{
    let swagger_config = SwaggerConfig::new(["/openapi.json"])
        // Swagger UI would otherwise ask an online validator about the spec.
        .validator_url("none")
        .persist_authorization(persist_tokens);
    let swagger: Router<S> = SwaggerUi::new("/docs")
        .url("/openapi.json", spec)
        .config(swagger_config)
        .into();
    let page = Redoc::new("/openapi.json")
        .custom_html(REDOC_PAGE)
        .to_html();
    let installed = redoc_bundle.is_some();
    swagger
        .route("/redoc", get(move || redoc_page(page.clone(), installed)))
        .route(
            REDOC_SCRIPT_ROUTE,
            get(move || redoc_script(redoc_bundle.clone())),
        )
}

async fn redoc_page(page: String, bundle_installed: bool) -> Response {
    if bundle_installed {
        Html(page).into_response()
    } else {
        redoc_missing().into_response()
    }
}

async fn redoc_script(bundle: Option<Bytes>) -> Response {
    match bundle {
        Some(bytes) => (
            [
                (
                    header::CONTENT_TYPE,
                    HeaderValue::from_static("text/javascript; charset=utf-8"),
                ),
                (
                    header::CACHE_CONTROL,
                    HeaderValue::from_static("public, max-age=86400"),
                ),
            ],
            bytes,
        )
            .into_response(),
        None => redoc_missing().into_response(),
    }
}

fn redoc_missing() -> AppError {
    AppError::Unavailable {
        code: "redoc_not_installed",
        detail: "ReDoc's script is not installed on this server: run `task setup` \
                 (or `tessera docs-assets`), which fetches the redoc npm package; /docs works meanwhile."
            .to_owned(),
        retry_after: None,
    }
}

/// Reads the ReDoc bundle from `path`, if it is there.
pub fn load_redoc_bundle(path: &Path) -> Option<Bytes> {
    std::fs::read(path).ok().map(Bytes::from)
}

/// Why the ReDoc bundle could not be installed.
#[derive(Debug, thiserror::Error)]
pub enum RedocInstallError {
    /// npm is not on the PATH.
    #[error(
        "cannot install ReDoc's script ({REDOC_PACKAGE}): npm is not installed (on Debian: `sudo apt-get install npm`)"
    )]
    NpmMissing,
    /// `npm pack` failed; its own words.
    #[error("cannot install ReDoc's script ({REDOC_PACKAGE}) with npm: {0}")]
    NpmFailed(String),
    /// The downloaded package could not be unpacked.
    #[error("cannot install ReDoc's script: could not unpack {0}")]
    Unpack(String),
    /// Creating, moving or removing files failed.
    #[error("cannot install ReDoc's script: {0}")]
    Io(#[from] std::io::Error),
}

/// Installs the ReDoc bundle at `path` from the npm registry (`npm pack`), once.
///
/// It is a registry package like any crate, fetched rather than copied into
/// the repository; the Dockerfile does the same in its build stage.
pub fn install_redoc_bundle(path: &Path) -> Result<PathBuf, RedocInstallError> {
    if path.is_file() {
        return Ok(path.to_path_buf());
    }
    let dir = path
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // A directory of our own, so concurrent installs never collide; the final
    // rename is atomic, so a reader sees either no bundle or a whole one.
    let work = dir.join(format!(".npm-pack-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&work)?;
    let packed = Command::new("npm")
        .args(["pack", REDOC_PACKAGE, "--silent"])
        .current_dir(&work)
        .output()
        .map_err(|_| RedocInstallError::NpmMissing)?;
    if !packed.status.success() {
        return Err(RedocInstallError::NpmFailed(
            String::from_utf8_lossy(&packed.stderr).trim().to_owned(),
        ));
    }
    let tarball = String::from_utf8_lossy(&packed.stdout).trim().to_owned();
    let extracted = Command::new("tar")
        .args([
            "-xzf",
            &tarball,
            "package/bundles/redoc.standalone.js",
            "package/LICENSE",
        ])
        .current_dir(&work)
        .status()?;
    if !extracted.success() {
        return Err(RedocInstallError::Unpack(tarball));
    }
    std::fs::rename(work.join("package/bundles/redoc.standalone.js"), path)
        .and_then(|()| std::fs::rename(work.join("package/LICENSE"), dir.join("REDOC-LICENSE")))
        .and_then(|()| std::fs::remove_dir_all(&work))?;
    Ok(path.to_path_buf())
}
