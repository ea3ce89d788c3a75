//! The OpenAPI document: complete, consistent with the router, snapshotted, and
//! served with Swagger UI and ReDoc that load nothing from another host.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{TestApp, ensure_redoc_bundle, repo_root};
use serde_json::Value;

fn spec() -> Value {
    serde_json::to_value(tessera::app::openapi()).unwrap()
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

#[test]
fn the_document_matches_its_committed_snapshot() {
    // A reviewer sees every API change as a diff of tests/snapshots/.
    insta::assert_json_snapshot!("openapi", spec());
}

#[test]
fn the_error_shape_is_one_component_used_by_every_operation() {
    let spec = spec();
    assert_eq!(spec["openapi"], "3.1.0");
    let problem = &spec["components"]["schemas"]["Problem"];
    for field in ["type", "title", "status", "detail", "code"] {
        assert!(
            problem["required"]
                .as_array()
                .unwrap()
                .contains(&Value::from(field)),
            "{field}"
        );
    }
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let default = &operation["responses"]["default"]["content"]["application/problem+json"];
            assert_eq!(
                default["schema"]["$ref"], "#/components/schemas/Problem",
                "{method} {path}"
            );
            assert!(
                operation["tags"]
                    .as_array()
                    .is_some_and(|tags| !tags.is_empty()),
                "{method} {path} has a tag"
            );
        }
    }
}

#[test]
fn every_operation_has_a_generator_friendly_id_and_a_short_summary() {
    // Client generators name methods after operationIds (`usersList`), so each is
    // `{tag}-{words}` in kebab case, unique, and stable across refactors; Swagger UI
    // already shows method and path, so a summary never repeats them.
    let spec = spec();
    let mut seen = std::collections::HashSet::new();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in METHODS {
            let Some(operation) = item.get(method) else {
                continue;
            };
            let id = operation["operationId"].as_str().unwrap_or_default();
            let tag = operation["tags"][0].as_str().unwrap();
            let words = id.strip_prefix(&format!("{tag}-")).unwrap_or_default();
            assert!(
                !words.is_empty()
                    && words.split('-').all(
                        |word| !word.is_empty() && word.bytes().all(|b| b.is_ascii_lowercase())
                    ),
                "{method} {path}: operationId {id:?} is not `{tag}-kebab-case`"
            );
            assert!(seen.insert(id.to_owned()), "operationId {id} is used twice");
            let summary = operation["summary"].as_str().unwrap_or_default();
            assert!(
                !summary.is_empty() && !summary.contains('\n') && summary.len() <= 90,
                "{method} {path}: summary {summary:?} is not one short line"
            );
            assert!(
                !summary.contains(path.as_str())
                    && !summary.contains("/api/")
                    && !summary.starts_with(&format!("{} ", method.to_uppercase()))
                    && !summary.starts_with(&format!("`{}", method.to_uppercase())),
                "{method} {path}: summary {summary:?} repeats the method or path"
            );
        }
    }
}

#[tokio::test]
async fn every_documented_operation_is_routed() {
    let app = TestApp::spawn().await;
    let spec = spec();
    for (path, item) in spec["paths"].as_object().unwrap() {
        for method in METHODS {
            if item.get(method).is_none() {
                continue;
            }
            // Path parameters get a syntactically valid value.
            let concrete = path.replace(['{', '}'], "");
            let http_method = Method::from_bytes(method.to_uppercase().as_bytes())
                .unwrap_or_else(|_| panic!("{method} is an HTTP method"));
            let response = app.request(http_method, &concrete).send().await;
            let unrouted = matches!(
                response.status,
                StatusCode::NOT_FOUND | StatusCode::METHOD_NOT_ALLOWED
            ) && ["route_not_found", "method_not_allowed"]
                .contains(&response.json()["code"].as_str().unwrap_or_default());
            assert!(!unrouted, "{method} {path} is documented but not routed");
        }
    }
}

#[test]
fn every_route_is_documented() {
    // Documented routes are registered through utoipa-axum's `routes!`, which
    // puts each into the router and the document at once; a plain axum
    // `.route(...)` would add an undocumented route. Only the documentation
    // pages themselves (core/docs.rs) may do that.
    let mut offenders = Vec::new();
    let mut files = Vec::new();
    collect_rust_files(&repo_root().join("src"), &mut files);
    for file in files {
        if file.ends_with("core/docs.rs") {
            continue;
        }
        let text = std::fs::read_to_string(&file).unwrap();
        for (number, line) in text.lines().enumerate() {
            if [".route(", ".route_service(", ".nest_service("]
                .iter()
                .any(|call| line.contains(call))
            {
                offenders.push(format!(
                    "{}:{}: {}",
                    file.display(),
                    number + 1,
                    line.trim()
                ));
            }
        }
    }
    assert!(
        offenders.is_empty(),
        "undocumented routes:\n{}",
        offenders.join("\n")
    );
}

fn collect_rust_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            collect_rust_files(&path, out);
        } else if path.extension().is_some_and(|ext| ext == "rs") {
            out.push(path);
        }
    }
}

#[tokio::test]
async fn the_served_document_is_the_printed_one() {
    // The served document states the deployment's model (`embed_texts`' input);
    // this app's is named like the default one, and absent, so it loads nothing.
    let model_dir = repo_root().join(".data/no-model-in-tests/all-MiniLM-L6-v2");
    let app = TestApp::spawn_with(&[("INFERENCE_MODEL_DIR", model_dir.to_str().unwrap())]).await;
    let response = app.get("/openapi.json").send().await;
    assert_eq!(response.status, StatusCode::OK);
    assert_eq!(response.json(), spec());
}

/// Every `src=` and `href=` in `html` points at this server.
fn assert_only_local_assets(html: &str) {
    for attribute in ["src=\"", "href=\"", "src='", "href='"] {
        for (index, _) in html.match_indices(attribute) {
            let value = &html[index + attribute.len()..];
            assert!(
                !value.starts_with("http") && !value.starts_with("//"),
                "external asset: {}",
                &value[..value.len().min(80)]
            );
        }
    }
    assert!(
        !html.contains("fonts.googleapis"),
        "no web fonts from elsewhere"
    );
}

#[tokio::test]
async fn swagger_ui_is_served_from_this_server() {
    let app = TestApp::spawn().await;
    let page = app.get("/docs/").send().await;
    assert_eq!(page.status, StatusCode::OK);
    assert!(
        page.header("content-type")
            .expect("the response declares its content type")
            .starts_with("text/html")
    );
    assert_only_local_assets(&page.text());
    for asset in [
        "/docs/swagger-ui-bundle.js",
        "/docs/swagger-ui.css",
        "/docs/swagger-initializer.js",
    ] {
        let response = app.get(asset).send().await;
        assert_eq!(response.status, StatusCode::OK, "{asset}");
    }
    let initializer = app.get("/docs/swagger-initializer.js").send().await.text();
    assert!(initializer.contains("/openapi.json"));
    assert!(
        !initializer.contains("https://"),
        "no online validator or remote spec"
    );
    let csp = page.header("content-security-policy").unwrap();
    assert!(csp.contains("script-src 'self'") && csp.contains("font-src 'self'"));
}

#[tokio::test]
async fn redoc_is_served_from_this_server() {
    ensure_redoc_bundle();
    let app = TestApp::spawn().await;
    let page = app.get("/redoc").send().await;
    assert_eq!(page.status, StatusCode::OK);
    assert_only_local_assets(&page.text());
    assert!(page.text().contains("/redoc/redoc.standalone.js"));
    let script = app.get("/redoc/redoc.standalone.js").send().await;
    assert_eq!(script.status, StatusCode::OK);
    assert!(
        script
            .header("content-type")
            .expect("the response declares its content type")
            .starts_with("text/javascript")
    );
    assert!(script.body.len() > 100_000, "the real bundle");
}

#[tokio::test]
async fn redoc_without_its_script_says_how_to_install_it() {
    let app = TestApp::spawn_with(&[("REDOC_BUNDLE_PATH", "/nonexistent/redoc.js")]).await;
    let body = app
        .get("/redoc")
        .send()
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "redoc_not_installed");
    assert!(
        body["detail"]
            .as_str()
            .expect("a problem has a detail string")
            .contains("task setup")
    );
}

#[tokio::test]
async fn swagger_ui_keeps_its_token_across_reloads_only_in_development() {
    ensure_redoc_bundle();
    let persisted = |app: TestApp| async move {
        let script = app.get("/docs/swagger-initializer.js").send().await.text();
        let compact: String = script.split_whitespace().collect();
        assert!(compact.contains("persistAuthorization"), "{script}");
        compact.contains("\"persistAuthorization\":true")
    };
    assert!(
        !persisted(TestApp::spawn().await).await,
        "outside development"
    );
    assert!(
        persisted(TestApp::spawn_with(&[("APP_ENV", "development")]).await).await,
        "in development"
    );
}

#[test]
fn every_reference_names_a_component() {
    // A type used only inside a kind's input or output is not derived into
    // the components by itself: a dangling `$ref` breaks generated clients.
    fn refs<'a>(value: &'a Value, found: &mut Vec<&'a str>) {
        match value {
            Value::Object(fields) => {
                if let Some(Value::String(target)) = fields.get("$ref") {
                    found.push(target);
                }
                fields.values().for_each(|field| refs(field, found));
            }
            Value::Array(items) => items.iter().for_each(|item| refs(item, found)),
            _ => {}
        }
    }
    let spec = spec();
    let mut found = Vec::new();
    refs(&spec, &mut found);
    assert!(!found.is_empty());
    for target in found {
        let name = target
            .strip_prefix("#/components/schemas/")
            .unwrap_or_else(|| panic!("{target} points outside the schemas"));
        assert!(
            spec["components"]["schemas"].get(name).is_some(),
            "{target} names no component"
        );
    }
}
