//! `/api/v1/auth/api-keys`: the lifecycle of a key, its scopes on every route
//! the document lists, forged and dead keys, the cap, and who sees whose keys.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::{Method, StatusCode};
use common::{DEFAULT_PASSWORD, TestApp};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use tessera::users::models::{Role, User};
use uuid::Uuid;

const KEYS: &str = "/api/v1/auth/api-keys";
const ALL_SCOPES: [&str; 3] = ["inference", "executions:read", "executions:write"];

/// Creates a key as the holder of `token` (whose password is the default).
async fn create_key(app: &TestApp, token: &str, scopes: &[&str]) -> Value {
    let response = app
        .post(KEYS)
        .bearer(token)
        .json(json!({"name": "pipeline", "scopes": scopes, "current_password": DEFAULT_PASSWORD}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    response.json()
}

fn secret(created: &Value) -> &str {
    created["secret"]
        .as_str()
        .expect("a created key has its secret")
}

async fn list_keys(app: &TestApp, token: &str, query: &str) -> Value {
    let response = app
        .get(&format!("{KEYS}{query}"))
        .bearer(token)
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    response.json()
}

/// Runs one SQL statement on the app's database (arranging time and state).
async fn execute(app: &TestApp, sql: &str) {
    diesel::sql_query(sql)
        .execute(&mut app.conn().await)
        .await
        .unwrap_or_else(|error| panic!("{sql}: {error}"));
}

#[tokio::test]
async fn a_key_lives_from_creation_through_use_to_revocation() {
    let app = TestApp::spawn().await;
    let (user, token) = app.signed_in("ada@example.com", Role::User).await;
    let response = app
        .post(KEYS)
        .bearer(&token)
        .json(json!({"name": "  nightly job ", "scopes": ["executions:read"], "expires_in_days": 30, "current_password": DEFAULT_PASSWORD}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    assert_eq!(response.header("cache-control"), Some("no-store"));
    let created = response.json();
    let key = secret(&created);
    assert!(key.starts_with("tsk_"), "{key}");
    assert!(key.starts_with(created["prefix"].as_str().unwrap()));
    assert_eq!(created["name"], "nightly job");
    assert_eq!(created["user_id"], user.id.to_string());
    assert_eq!(created["scopes"], json!(["executions:read"]));
    assert!(created["expires_at"].is_string());
    assert_eq!(created["last_used_at"], Value::Null);

    let listed = app.get("/api/v1/executions").bearer(key).send().await;
    assert_eq!(listed.status, StatusCode::OK, "{}", listed.text());

    let page = list_keys(&app, &token, "").await;
    assert_eq!(page["items"].as_array().unwrap().len(), 1);
    let item = &page["items"][0];
    assert_eq!(item["id"], created["id"]);
    assert!(item["last_used_at"].is_string(), "the use shows: {item}");
    let secret_part = key.rsplit('_').next().unwrap();
    assert!(
        !page.to_string().contains(secret_part),
        "a list shows no secret"
    );
    assert!(item.get("secret").is_none());

    let id = created["id"].as_str().unwrap();
    let revoked = app
        .delete(&format!("{KEYS}/{id}"))
        .bearer(&token)
        .send()
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    app.get("/api/v1/executions")
        .bearer(key)
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    app.delete(&format!("{KEYS}/{id}"))
        .bearer(&token)
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(list_keys(&app, &token, "").await["items"], json!([]));
}

#[tokio::test]
async fn only_a_hash_of_the_secret_is_stored() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let created = create_key(&app, &token, &["inference"]).await;
    let secret_part = secret(&created).rsplit('_').next().unwrap().to_owned();
    #[derive(diesel::QueryableByName)]
    struct Stored {
        #[diesel(sql_type = diesel::sql_types::Text)]
        row: String,
    }
    let stored: Vec<Stored> =
        diesel::sql_query("SELECT row_to_json(k)::text AS row FROM api_keys k")
            .load(&mut app.conn().await)
            .await
            .unwrap();
    assert_eq!(stored.len(), 1);
    assert!(!stored[0].row.contains(&secret_part), "{}", stored[0].row);
}

/// Every operation of the served document that takes a bearer token, with
/// the scope its `api_key` requirement names (`None`: keys are refused).
async fn bearer_operations(app: &TestApp) -> Vec<(Method, String, Option<String>)> {
    let document = app.get("/openapi.json").send().await.json();
    let mut operations = Vec::new();
    for (path, item) in document["paths"].as_object().unwrap() {
        for (method, operation) in item.as_object().unwrap() {
            let requirements = operation["security"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            if !requirements
                .iter()
                .any(|requirement| requirement.get("bearer").is_some())
            {
                continue;
            }
            let scope = requirements
                .iter()
                .find_map(|requirement| requirement.get("api_key"))
                .map(|scopes| {
                    assert_eq!(scopes.as_array().unwrap().len(), 1, "{path}: one scope");
                    scopes[0].as_str().unwrap().to_owned()
                });
            let concrete = path
                .split('/')
                .map(|segment| {
                    if segment.starts_with('{') {
                        Uuid::now_v7().to_string()
                    } else {
                        segment.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("/");
            let method = method.to_uppercase().parse().unwrap();
            operations.push((method, concrete, scope));
        }
    }
    operations
}

/// Whether a response is one of the refusals of a key's reach.
fn refused_key(response: &common::TestResponse) -> Option<String> {
    if response.status != StatusCode::FORBIDDEN && response.status != StatusCode::UNAUTHORIZED {
        return None;
    }
    response.json()["code"].as_str().map(str::to_owned)
}

#[tokio::test]
async fn every_route_admits_keys_exactly_as_the_document_says() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::Admin).await;
    let all = create_key(&app, &token, &ALL_SCOPES).await;
    let operations = bearer_operations(&app).await;
    let documented: Vec<_> = operations
        .iter()
        .filter_map(|(_, _, s)| s.clone())
        .collect();
    for scope in ALL_SCOPES {
        assert!(
            documented.iter().any(|s| s == scope),
            "some route takes {scope}"
        );
    }
    for (method, path, scope) in &operations {
        let response = app
            .request(method.clone(), path)
            .bearer(secret(&all))
            .json(json!({}))
            .send()
            .await;
        let refusal = refused_key(&response);
        match scope {
            Some(_) => assert!(
                !matches!(
                    refusal.as_deref(),
                    Some(
                        "api_key_not_allowed"
                            | "insufficient_scope"
                            | "invalid_token"
                            | "not_authenticated"
                    )
                ),
                "{method} {path} takes a key with every scope: {}",
                response.text()
            ),
            None => assert_eq!(
                refusal.as_deref(),
                Some("api_key_not_allowed"),
                "{method} {path} refuses keys: {}",
                response.text()
            ),
        }
    }
    for scope in ALL_SCOPES {
        let others: Vec<&str> = ALL_SCOPES.into_iter().filter(|s| *s != scope).collect();
        let lacking = create_key(&app, &token, &others).await;
        for (method, path, _) in operations
            .iter()
            .filter(|(_, _, s)| s.as_deref() == Some(scope))
        {
            let response = app
                .request(method.clone(), path)
                .bearer(secret(&lacking))
                .json(json!({}))
                .send()
                .await;
            let problem = response.assert_problem(StatusCode::FORBIDDEN, "insufficient_scope");
            assert!(
                problem["detail"].as_str().unwrap().contains(scope),
                "{problem}"
            );
        }
    }
}

#[tokio::test]
async fn an_inference_key_cannot_submit_executions_or_reach_accounts_or_keys() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::Admin).await;
    let key = create_key(&app, &token, &["inference"]).await;
    let key = secret(&key);
    app.post("/api/v1/executions")
        .bearer(key)
        .json(json!({"kind": "sleep", "input": {"duration_ms": 100}}))
        .send()
        .await
        .assert_problem(StatusCode::FORBIDDEN, "insufficient_scope");
    for (method, path) in [
        (Method::GET, "/api/v1/users/me"),
        (Method::GET, "/api/v1/users"),
        (Method::GET, KEYS),
        (Method::POST, KEYS),
        (Method::POST, "/api/v1/auth/logout-all"),
    ] {
        app.request(method, path)
            .bearer(key)
            .json(json!({"name": "escalate", "scopes": ["inference"], "current_password": DEFAULT_PASSWORD}))
            .send()
            .await
            .assert_problem(StatusCode::FORBIDDEN, "api_key_not_allowed");
    }
    assert_eq!(
        list_keys(&app, &token, "").await["items"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[tokio::test]
async fn a_key_acts_as_its_owner_and_shares_the_owners_limits() {
    let app = TestApp::spawn_with(&[("MAX_UNFINISHED_EXECUTIONS_PER_USER", "1")]).await;
    let (user, token) = app.signed_in("ada@example.com", Role::User).await;
    let key = create_key(&app, &token, &["executions:read", "executions:write"]).await;
    let submission =
        json!({"kind": "sleep", "input": {"duration_ms": 1000}, "run_at": "2100-01-01T00:00:00Z"});
    let by_session = app
        .post("/api/v1/executions")
        .bearer(&token)
        .json(&submission)
        .send()
        .await;
    assert_eq!(
        by_session.status,
        StatusCode::ACCEPTED,
        "{}",
        by_session.text()
    );
    app.post("/api/v1/executions")
        .bearer(secret(&key))
        .json(&submission)
        .send()
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "too_many_executions");
    let seen = app
        .get("/api/v1/executions")
        .bearer(secret(&key))
        .send()
        .await
        .json();
    assert_eq!(seen["items"][0]["id"], by_session.json()["id"]);
    assert_eq!(seen["items"][0]["owner_id"], user.id.to_string());
}

#[tokio::test]
async fn forged_tampered_and_malformed_keys_are_401() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let first = create_key(&app, &token, &["executions:read"]).await;
    let second = create_key(&app, &token, &["executions:read"]).await;
    let key = secret(&first);
    let mut tampered = key.to_owned();
    let last = tampered.pop().unwrap();
    tampered.push(if last == 'A' { 'B' } else { 'A' });
    let (second_prefix, _) = secret(&second).rsplit_once('_').unwrap();
    let (_, first_secret) = key.rsplit_once('_').unwrap();
    let swapped = format!("{second_prefix}_{first_secret}");
    let unknown_id = format!("tsk_{}_{first_secret}", Uuid::now_v7().simple());
    for forged in [
        tampered.as_str(),
        &swapped,
        &unknown_id,
        "tsk_",
        "tsk_not-a-key",
        &key[..key.len() - 1],
    ] {
        let problem = app
            .get("/api/v1/executions")
            .bearer(forged)
            .send()
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
        assert_eq!(problem["detail"], "The API key is not valid.", "{forged}");
    }
    let still = app.get("/api/v1/executions").bearer(key).send().await;
    assert_eq!(still.status, StatusCode::OK);
}

#[tokio::test]
async fn an_expired_key_is_refused_and_says_so() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let key = create_key(&app, &token, &["executions:read"]).await;
    execute(
        &app,
        "UPDATE api_keys SET expires_at = now() - interval '1 second'",
    )
    .await;
    let problem = app
        .get("/api/v1/executions")
        .bearer(secret(&key))
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(problem["detail"], "The API key has expired.");
}

async fn etag_of(app: &TestApp, admin_token: &str, user: &User) -> String {
    let response = app
        .get(&format!("/api/v1/users/{}", user.id))
        .bearer(admin_token)
        .send()
        .await;
    response.header("etag").unwrap().to_owned()
}

#[tokio::test]
async fn keys_die_with_their_owners_deactivation_and_deletion() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    let (ada, ada_token) = app.signed_in("ada@example.com", Role::User).await;
    let (bob, bob_token) = app.signed_in("bob@example.com", Role::User).await;
    let ada_key = create_key(&app, &ada_token, &["executions:read"]).await;
    let bob_key = create_key(&app, &bob_token, &["executions:read"]).await;

    let path = format!("/api/v1/users/{}", ada.id);
    for active in [false, true] {
        let etag = etag_of(&app, &admin, &ada).await;
        let changed = app
            .patch(&path)
            .bearer(&admin)
            .if_match(&etag)
            .json(json!({"is_active": active}))
            .send()
            .await;
        assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    }
    // Reactivated, but the key died with the deactivation.
    app.get("/api/v1/executions")
        .bearer(secret(&ada_key))
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");

    let etag = etag_of(&app, &admin, &bob).await;
    let deleted = app
        .delete(&format!("/api/v1/users/{}", bob.id))
        .bearer(&admin)
        .if_match(&etag)
        .send()
        .await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT, "{}", deleted.text());
    app.get("/api/v1/executions")
        .bearer(secret(&bob_key))
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn ending_every_session_leaves_keys_working() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let key = create_key(&app, &token, &["executions:read"]).await;
    let ended = app
        .post("/api/v1/auth/logout-all")
        .bearer(&token)
        .send()
        .await;
    assert_eq!(ended.status, StatusCode::NO_CONTENT);
    let listed = app
        .get("/api/v1/executions")
        .bearer(secret(&key))
        .send()
        .await;
    assert_eq!(listed.status, StatusCode::OK, "a key is not a session");
}

#[tokio::test]
async fn creating_a_key_needs_the_callers_password() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    app.post(KEYS)
        .bearer(&token)
        .json(json!({"name": "stolen", "scopes": ["inference"], "current_password": "not the password"}))
        .send()
        .await
        .assert_problem(StatusCode::FORBIDDEN, "wrong_password");
    app.post(KEYS)
        .bearer(&token)
        .json(json!({"name": "stolen", "scopes": ["inference"]}))
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(list_keys(&app, &token, "").await["items"], json!([]));
}

#[tokio::test]
async fn every_invalid_field_of_a_key_request_is_listed() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let cases = [
        (
            json!({"name": " ", "scopes": [], "expires_in_days": 0}),
            vec!["name", "scopes", "expires_in_days"],
        ),
        (
            json!({"name": "a\u{7}b", "scopes": ["inference", "inference"], "expires_in_days": 3651}),
            vec!["name", "scopes", "expires_in_days"],
        ),
        (
            json!({"name": "x".repeat(101), "scopes": ["inference"]}),
            vec!["name"],
        ),
        (json!({"name": "ok", "scopes": ["admin"]}), vec!["scopes"]),
        (
            json!({"name": "ok", "scopes": ["inference"], "expires_in_days": -1}),
            vec!["expires_in_days"],
        ),
    ];
    for (mut body, fields) in cases {
        body["current_password"] = json!(DEFAULT_PASSWORD);
        let problem = app
            .post(KEYS)
            .bearer(&token)
            .json(&body)
            .send()
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let located: Vec<Value> = problem["errors"]
            .as_array()
            .unwrap()
            .iter()
            .map(|e| e["loc"][1].clone())
            .collect();
        for field in fields {
            assert!(
                located.contains(&json!(field)),
                "{body}: {field} in {problem}"
            );
        }
    }
    let extra = json!({"name": "ok", "scopes": ["inference"], "current_password": DEFAULT_PASSWORD, "admin": true});
    app.post(KEYS)
        .bearer(&token)
        .json(extra)
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(list_keys(&app, &token, "").await["items"], json!([]));
}

#[tokio::test]
async fn concurrent_creations_never_pass_the_cap_on_live_keys() {
    // Each creation checks the password; concurrent checks count as failures
    // until they settle, so the sign-in limit is raised out of the way.
    let app = TestApp::spawn_with(&[("API_KEYS_PER_USER", "3"), ("MAX_FAILED_LOGINS", "50")]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let body =
        json!({"name": "burst", "scopes": ["inference"], "current_password": DEFAULT_PASSWORD});
    let attempts = (0..6).map(|_| app.post(KEYS).bearer(&token).json(&body).send());
    let statuses: Vec<StatusCode> = futures_util::future::join_all(attempts)
        .await
        .into_iter()
        .map(|response| response.status)
        .collect();
    let created = statuses
        .iter()
        .filter(|s| **s == StatusCode::CREATED)
        .count();
    let refused = statuses
        .iter()
        .filter(|s| **s == StatusCode::CONFLICT)
        .count();
    assert_eq!((created, refused), (3, 3), "{statuses:?}");
    // An expired key no longer counts.
    execute(&app, "UPDATE api_keys SET expires_at = now() - interval '1 second' WHERE id = (SELECT id FROM api_keys ORDER BY id LIMIT 1)").await;
    let again = app.post(KEYS).bearer(&token).json(&body).send().await;
    assert_eq!(again.status, StatusCode::CREATED, "{}", again.text());
}

#[tokio::test]
async fn users_see_and_revoke_only_their_own_keys_admins_anyones() {
    let app = TestApp::spawn().await;
    let (ada, ada_token) = app.signed_in("ada@example.com", Role::User).await;
    let (_, bob_token) = app.signed_in("bob@example.com", Role::User).await;
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    let ada_key = create_key(&app, &ada_token, &["inference"]).await;
    let id = ada_key["id"].as_str().unwrap();

    app.get(&format!("{KEYS}?user_id={}", ada.id))
        .bearer(&bob_token)
        .send()
        .await
        .assert_problem(StatusCode::FORBIDDEN, "admin_required");
    assert_eq!(list_keys(&app, &bob_token, "").await["items"], json!([]));
    app.delete(&format!("{KEYS}/{id}"))
        .bearer(&bob_token)
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");

    let seen = list_keys(&app, &admin, &format!("?user_id={}", ada.id)).await;
    assert_eq!(seen["items"][0]["id"], id);
    let revoked = app
        .delete(&format!("{KEYS}/{id}"))
        .bearer(&admin)
        .send()
        .await;
    assert_eq!(revoked.status, StatusCode::NO_CONTENT);
    assert_eq!(list_keys(&app, &ada_token, "").await["items"], json!([]));
}

#[tokio::test]
async fn keys_list_newest_first_a_page_at_a_time() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(create_key(&app, &token, &["inference"]).await["id"].clone());
    }
    let first = list_keys(&app, &token, "?limit=2").await;
    assert_eq!(first["items"][0]["id"], ids[2]);
    assert_eq!(first["items"][1]["id"], ids[1]);
    let cursor = first["next_cursor"].as_str().unwrap();
    let second = list_keys(&app, &token, &format!("?limit=2&cursor={cursor}")).await;
    assert_eq!(second["items"].as_array().unwrap().len(), 1);
    assert_eq!(second["items"][0]["id"], ids[0]);
    assert_eq!(second["next_cursor"], Value::Null);
}

#[tokio::test]
async fn a_use_is_recorded_at_most_once_a_minute() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let key = create_key(&app, &token, &["executions:read"]).await;
    let last_used = async || list_keys(&app, &token, "").await["items"][0]["last_used_at"].clone();
    app.get("/api/v1/executions")
        .bearer(secret(&key))
        .send()
        .await;
    let first = last_used().await;
    assert!(first.is_string());
    app.get("/api/v1/executions")
        .bearer(secret(&key))
        .send()
        .await;
    assert_eq!(
        last_used().await,
        first,
        "a second use within the minute writes nothing"
    );
    execute(
        &app,
        "UPDATE api_keys SET last_used_at = now() - interval '2 minutes'",
    )
    .await;
    let stale = last_used().await;
    app.get("/api/v1/executions")
        .bearer(secret(&key))
        .send()
        .await;
    assert_ne!(last_used().await, stale, "a use after a minute is recorded");
}
