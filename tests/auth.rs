//! `/api/v1/auth`: sign-in, token checks, refresh rotation, logout, passwords,
//! brute-force limits and admission control.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::{DEFAULT_PASSWORD, TEST_JWT_SECRET, TestApp, access_token, refresh_token};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use tessera::users::models::Role;
use uuid::Uuid;

#[tokio::test]
async fn the_password_grant_returns_a_token_pair() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let pair = app.login("ADA@example.com", DEFAULT_PASSWORD).await;
    assert_eq!(pair["token_type"], "bearer");
    assert_eq!(pair["expires_in"], 900);
    assert!(refresh_token(&pair).len() >= 43);
    let me = app
        .get("/api/v1/users/me")
        .bearer(access_token(&pair))
        .send()
        .await;
    assert_eq!(me.status, StatusCode::OK);
}

#[tokio::test]
async fn unknown_emails_and_wrong_passwords_get_the_same_answer() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let wrong = app
        .login_from("ada@example.com", "wrong password!", "192.0.2.1")
        .await;
    let unknown = app
        .login_from("nobody@example.com", "wrong password!", "192.0.2.2")
        .await;
    let mut bodies = Vec::new();
    for response in [&wrong, &unknown] {
        let mut body = response.assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
        assert_eq!(response.header("www-authenticate"), Some("Bearer"));
        body.as_object_mut().unwrap().remove("request_id");
        bodies.push(body);
    }
    assert_eq!(bodies[0], bodies[1]);
}

#[tokio::test]
async fn the_token_endpoint_wants_a_form() {
    let app = TestApp::spawn().await;
    let json_body = app
        .post("/api/v1/auth/token")
        .json(json!({"username": "a", "password": "b"}))
        .send()
        .await;
    json_body.assert_problem(StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type");
    let problem = app
        .post("/api/v1/auth/token")
        .form(&[("username", "a@example.com")])
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["loc"], json!(["body", "password"]));
    app.post("/api/v1/auth/token")
        .form(&[
            ("grant_type", "client_credentials"),
            ("username", "a"),
            ("password", "b"),
        ])
        .send()
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "unsupported_grant_type");
}

/// Claims like a real token's, for forging variants.
fn claims(user: Uuid, version: i64) -> Value {
    let now = chrono::Utc::now().timestamp();
    json!({"sub": user, "role": "admin", "iat": now, "nbf": now, "exp": now + 600,
           "iss": "tessera", "aud": "tessera-api", "jti": Uuid::now_v7(), "ver": version})
}

fn sign(claims: &Value, algorithm: Algorithm, secret: &str) -> String {
    jsonwebtoken::encode(
        &Header::new(algorithm),
        claims,
        &EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn forged_expired_and_foreign_tokens_are_refused() {
    let app = TestApp::spawn().await;
    let user = app
        .create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let good = claims(user.id, user.token_version);
    // Sanity: a correctly signed token works, so the refusals below are about the flaw.
    let valid = sign(&good, Algorithm::HS256, TEST_JWT_SECRET);
    assert_eq!(
        app.get("/api/v1/users/me")
            .bearer(&valid)
            .send()
            .await
            .status,
        StatusCode::OK
    );

    let with = |key: &str, value: Value| {
        let mut claims = good.clone();
        claims[key] = value;
        sign(&claims, Algorithm::HS256, TEST_JWT_SECRET)
    };
    let now = chrono::Utc::now().timestamp();
    let unsigned = {
        let header = base64_url(br#"{"alg":"none","typ":"JWT"}"#);
        let payload = base64_url(good.to_string().as_bytes());
        format!("{header}.{payload}.")
    };
    let tampered = {
        let parts: Vec<&str> = valid.split('.').collect();
        let mut forged = good.clone();
        forged["sub"] = json!(Uuid::now_v7());
        format!(
            "{}.{}.{}",
            parts[0],
            base64_url(forged.to_string().as_bytes()),
            parts[2]
        )
    };
    let cases = [
        ("alg none", unsigned),
        (
            "wrong key",
            sign(
                &good,
                Algorithm::HS256,
                "another-secret-that-is-long-enough-0123456789",
            ),
        ),
        (
            "other algorithm",
            sign(&good, Algorithm::HS512, TEST_JWT_SECRET),
        ),
        ("expired", with("exp", json!(now - 60))),
        ("not yet valid", with("nbf", json!(now + 600))),
        ("issued in the future", with("iat", json!(now + 600))),
        ("wrong audience", with("aud", json!("someone-else"))),
        ("wrong issuer", with("iss", json!("someone-else"))),
        ("tampered payload", tampered),
        (
            "old token version",
            with("ver", json!(user.token_version - 1)),
        ),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (name, token) in cases {
        let response = app.get("/api/v1/users/me").bearer(&token).send().await;
        assert_eq!(
            response.status,
            StatusCode::UNAUTHORIZED,
            "{name}: {}",
            response.text()
        );
        response.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    }
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn refresh(app: &TestApp, token: &str) -> common::TestResponse {
    app.post("/api/v1/auth/refresh")
        .json(json!({"refresh_token": token}))
        .send()
        .await
}

#[tokio::test]
async fn refresh_tokens_rotate_and_reuse_revokes_the_family() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let first = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let other_session = app.login("ada@example.com", DEFAULT_PASSWORD).await;

    let second = refresh(&app, refresh_token(&first)).await;
    assert_eq!(second.status, StatusCode::OK, "{}", second.text());
    let second = second.json();
    assert_ne!(second["refresh_token"], first["refresh_token"]);
    let me = app
        .get("/api/v1/users/me")
        .bearer(access_token(&second))
        .send()
        .await;
    assert_eq!(me.status, StatusCode::OK);

    // The first token again: someone copied it. The whole family dies.
    refresh(&app, refresh_token(&first))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "refresh_token_reused");
    refresh(&app, refresh_token(&second))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    // Another sign-in's family is untouched.
    assert_eq!(
        refresh(&app, refresh_token(&other_session)).await.status,
        StatusCode::OK
    );
    refresh(&app, "made-up-token")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
}

#[tokio::test]
async fn logout_revokes_one_sign_in_and_logout_all_every_one() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let phone = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let laptop = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let body = json!({"refresh_token": phone["refresh_token"]});
    let logout = app.post("/api/v1/auth/logout").json(&body).send().await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    assert_eq!(
        app.post("/api/v1/auth/logout")
            .json(body)
            .send()
            .await
            .status,
        StatusCode::NO_CONTENT
    );
    refresh(&app, refresh_token(&phone))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    let laptop_token = access_token(&laptop);
    assert_eq!(
        app.get("/api/v1/users/me")
            .bearer(laptop_token)
            .send()
            .await
            .status,
        StatusCode::OK
    );

    let all = app
        .post("/api/v1/auth/logout-all")
        .bearer(laptop_token)
        .send()
        .await;
    assert_eq!(all.status, StatusCode::NO_CONTENT);
    app.get("/api/v1/users/me")
        .bearer(laptop_token)
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    refresh(&app, refresh_token(&laptop))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
}

#[tokio::test]
async fn changing_the_password_ends_every_other_session() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let other = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let this = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let token = access_token(&this);
    let change =
        |current: &str, new: &str| json!({"current_password": current, "new_password": new});

    app.put("/api/v1/auth/password")
        .bearer(token)
        .json(change("wrong password", "a new password"))
        .send()
        .await
        .assert_problem(StatusCode::FORBIDDEN, "wrong_password");
    let short = app
        .put("/api/v1/auth/password")
        .bearer(token)
        .json(change(DEFAULT_PASSWORD, "short"))
        .send()
        .await;
    let problem = short.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["loc"], json!(["body", "new_password"]));

    let changed = app
        .put("/api/v1/auth/password")
        .bearer(token)
        .json(change(DEFAULT_PASSWORD, "a new password"))
        .send()
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    let fresh = changed.json();
    assert_eq!(
        app.get("/api/v1/users/me")
            .bearer(access_token(&fresh))
            .send()
            .await
            .status,
        StatusCode::OK
    );
    for old in [token, access_token(&other)] {
        app.get("/api/v1/users/me")
            .bearer(old)
            .send()
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    }
    refresh(&app, refresh_token(&other))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    app.login_from("ada@example.com", DEFAULT_PASSWORD, "192.0.2.7")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    app.login("ada@example.com", "a new password").await;
}

#[tokio::test]
async fn failed_logins_are_limited_per_client_and_account() {
    let app = TestApp::spawn_with(&[("TRUSTED_PROXY_HOPS", "1")]).await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    for _ in 0..5 {
        app.login_from("ada@example.com", "wrong password!", "198.51.100.1")
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    // That client now waits, even with the right password…
    let limited = app
        .login_from("ADA@example.com", DEFAULT_PASSWORD, "198.51.100.1")
        .await;
    limited.assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((1..=900).contains(&retry_after), "{retry_after}");
    // …but the owner, from a clean client, signs in: the guesses were not theirs.
    assert_eq!(
        app.login_from("ada@example.com", DEFAULT_PASSWORD, "198.51.100.99")
            .await
            .status,
        StatusCode::OK
    );
    // Other accounts are unaffected, even from the blocked client.
    app.create_user("bob@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    assert_eq!(
        app.login_from("bob@example.com", DEFAULT_PASSWORD, "198.51.100.1")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn failed_logins_are_limited_per_client_address() {
    let app = TestApp::spawn_with(&[
        ("TRUSTED_PROXY_HOPS", "1"),
        ("MAX_FAILED_LOGINS_PER_CLIENT", "5"),
    ])
    .await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    for attempt in 0..5 {
        app.login_from(
            &format!("guess{attempt}@example.com"),
            "wrong password!",
            "203.0.113.5",
        )
        .await;
    }
    app.login_from("ada@example.com", DEFAULT_PASSWORD, "203.0.113.5")
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(
        app.login_from("ada@example.com", DEFAULT_PASSWORD, "203.0.113.6")
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test]
async fn a_full_hashing_queue_answers_503_with_retry_after() {
    let app = TestApp::spawn_with(&[("PASSWORD_HASH_QUEUE", "0")]).await;
    let response = app
        .login_from("ada@example.com", DEFAULT_PASSWORD, "192.0.2.1")
        .await;
    response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "auth_overloaded");
    assert_eq!(response.header("retry-after"), Some("1"));
}

#[tokio::test]
async fn outdated_password_hashes_are_upgraded_at_login() {
    use diesel_async::RunQueryDsl;
    let app = TestApp::spawn().await;
    let user = app
        .create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let weak = tessera::auth::password::Passwords::new(
        argon2::Params::new(1024, 1, 1, None).unwrap(),
        1,
        4,
    )
    .unwrap();
    let old_hash = weak.hash(DEFAULT_PASSWORD).await.unwrap();
    let mut conn = app.conn().await;
    diesel::sql_query("UPDATE credentials SET password_hash = $1 WHERE user_id = $2")
        .bind::<diesel::sql_types::Text, _>(&old_hash)
        .bind::<diesel::sql_types::Uuid, _>(user.id)
        .execute(&mut conn)
        .await
        .unwrap();
    app.login("ada@example.com", DEFAULT_PASSWORD).await;
    #[derive(diesel::QueryableByName)]
    struct Hash {
        #[diesel(sql_type = diesel::sql_types::Text)]
        password_hash: String,
    }
    let stored: Hash =
        diesel::sql_query("SELECT password_hash FROM credentials WHERE user_id = $1")
            .bind::<diesel::sql_types::Uuid, _>(user.id)
            .get_result(&mut conn)
            .await
            .unwrap();
    assert!(
        stored.password_hash.contains("m=19456,t=2,p=1"),
        "{}",
        stored.password_hash
    );
    app.login("ada@example.com", DEFAULT_PASSWORD).await;
}

#[tokio::test]
async fn eddsa_keys_from_files_sign_and_verify_and_refuse_hs256() {
    let dir = std::env::temp_dir().join(format!("tessera-eddsa-{}", Uuid::now_v7()));
    std::fs::create_dir_all(&dir).unwrap();
    let private = dir.join("private.pem");
    let public = dir.join("public.pem");
    let generated = std::process::Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out"])
        .arg(&private)
        .status();
    let Ok(status) = generated else {
        eprintln!("SKIPPED eddsa test: the openssl command is not installed");
        return;
    };
    assert!(status.success());
    let derived = std::process::Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(&private)
        .arg("-out")
        .arg(&public)
        .status()
        .unwrap();
    assert!(derived.success());
    let app = TestApp::spawn_with(&[
        ("JWT_ALGORITHM", "EdDSA"),
        ("JWT_PRIVATE_KEY_FILE", private.to_str().unwrap()),
        ("JWT_PUBLIC_KEY_FILE", public.to_str().unwrap()),
    ])
    .await;
    let user = app
        .create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let pair = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let token = access_token(&pair);
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            token.split('.').next().unwrap(),
        )
        .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(
        app.get("/api/v1/users/me")
            .bearer(token)
            .send()
            .await
            .status,
        StatusCode::OK
    );
    // An HS256 token, even with the right claims, is refused: the algorithm is pinned.
    let hs256 = sign(
        &claims(user.id, user.token_version),
        Algorithm::HS256,
        TEST_JWT_SECRET,
    );
    app.get("/api/v1/users/me")
        .bearer(&hs256)
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn token_responses_are_never_cached() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let signed_in = app
        .login_from("ada@example.com", DEFAULT_PASSWORD, "192.0.2.1")
        .await;
    let refreshed = refresh(&app, refresh_token(&signed_in.json())).await;
    let changed = app
        .put("/api/v1/auth/password")
        .bearer(access_token(&refreshed.json()))
        .json(
            json!({"current_password": DEFAULT_PASSWORD, "new_password": "another long password"}),
        )
        .send()
        .await;
    for (what, response) in [
        ("token", &signed_in),
        ("refresh", &refreshed),
        ("password", &changed),
    ] {
        assert_eq!(
            response.status,
            StatusCode::OK,
            "{what}: {}",
            response.text()
        );
        assert_eq!(response.header("cache-control"), Some("no-store"), "{what}");
        assert_eq!(response.header("pragma"), Some("no-cache"), "{what}");
    }
}

#[tokio::test]
async fn oversized_credentials_are_refused_before_they_cost_anything() {
    let app = TestApp::spawn().await;
    let long_name = format!("{}@example.com", "a".repeat(3_200));
    // Ten tries, as an attacker would: each a 422 (never a 500), and the
    // service keeps answering.
    for _ in 0..10 {
        let body = app
            .login_from(&long_name, "a password", "192.0.2.1")
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(body["errors"][0]["loc"], json!(["body", "username"]));
    }
    let body = app
        .login_from("ada@example.com", &"p".repeat(1_025), "192.0.2.1")
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"][0]["loc"], json!(["body", "password"]));
    assert_eq!(body["errors"][0]["msg"], "must be at most 1024 characters");
    // A normal wrong password still gets the usual answer.
    app.login_from("ada@example.com", "wrong password!", "192.0.2.1")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");

    let (_, token) = app.signed_in("bob@example.com", Role::User).await;
    app.put("/api/v1/auth/password")
        .bearer(&token)
        .json(
            json!({"current_password": "x".repeat(1_025), "new_password": "another long password"}),
        )
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let (_, token) = app.signed_in("eve@example.com", Role::User).await;
    app.delete("/api/v1/users/me")
        .bearer(&token)
        .json(json!({"password": "x".repeat(1_025)}))
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

/// Runs `sql` with `user`'s id as `$1`, as another replica (or an operator)
/// would: not through this app's routes. `announced: false` switches the
/// database's triggers off for it, so that no notification says it happened.
async fn write_elsewhere(app: &TestApp, sql: &str, user: Uuid, announced: bool) {
    use diesel_async::RunQueryDsl;
    let mut conn = app.conn().await;
    if !announced {
        diesel::sql_query("SET session_replication_role = replica")
            .execute(&mut conn)
            .await
            .unwrap();
    }
    diesel::sql_query(sql)
        .bind::<diesel::sql_types::Uuid, _>(user)
        .execute(&mut conn)
        .await
        .unwrap();
    diesel::sql_query("RESET session_replication_role")
        .execute(&mut conn)
        .await
        .unwrap();
}

/// `GET /users/me` until `done` says its answer is the expected one (the
/// database's notification takes a moment to arrive); the last answer.
async fn me_until(
    app: &TestApp,
    token: &str,
    done: impl Fn(&common::TestResponse) -> bool,
) -> common::TestResponse {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let me = app.get("/api/v1/users/me").bearer(token).send().await;
        if done(&me) || std::time::Instant::now() > deadline {
            return me;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

const DEACTIVATE: &str = "UPDATE users SET is_active = false WHERE id = $1";

/// An app that remembers passed checks for `lifetime` seconds, once its
/// notification listener listens (until then nothing is remembered).
async fn remembering_app(lifetime: &str) -> TestApp {
    let app = TestApp::spawn_with(&[("ACCESS_CACHE_SECONDS", lifetime)]).await;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !app.executions.hub.is_listening() {
        assert!(
            std::time::Instant::now() < deadline,
            "the listener never listened"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    app
}

#[tokio::test]
async fn a_remembered_token_ends_with_any_revocation_the_database_announces() {
    // Remembered for an hour: only the notifications can end these tokens in time.
    let app = remembering_app("3600").await;
    let refused = |me: &common::TestResponse| me.status == StatusCode::UNAUTHORIZED;
    for (email, revocation) in [
        ("deactivated@example.com", DEACTIVATE),
        (
            "logged-out@example.com",
            "UPDATE refresh_tokens SET revoked_at = now() WHERE user_id = $1",
        ),
        (
            "all-logged-out@example.com",
            "UPDATE users SET token_version = token_version + 1 WHERE id = $1",
        ),
        ("deleted@example.com", "DELETE FROM users WHERE id = $1"),
    ] {
        let (user, token) = app.signed_in(email, Role::User).await;
        let me = app.get("/api/v1/users/me").bearer(&token).send().await;
        assert_eq!(me.status, StatusCode::OK, "{email}");
        write_elsewhere(&app, revocation, user.id, true).await;
        let me = me_until(&app, &token, refused).await;
        me.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    }
    // A new name reaches the requests that are handed the remembered account.
    let (user, token) = app.signed_in("renamed@example.com", Role::User).await;
    app.get("/api/v1/users/me").bearer(&token).send().await;
    write_elsewhere(
        &app,
        "UPDATE users SET full_name = 'Renamed Elsewhere' WHERE id = $1",
        user.id,
        true,
    )
    .await;
    let me = me_until(&app, &token, |me| {
        me.json()["full_name"] == "Renamed Elsewhere"
    })
    .await;
    assert_eq!(me.json()["full_name"], "Renamed Elsewhere");
}

#[tokio::test]
async fn a_passed_check_is_remembered_for_its_lifetime_and_zero_remembers_none() {
    for (lifetime, still_served) in [("3600", true), ("0", false)] {
        let app = remembering_app(lifetime).await;
        let (user, token) = app.signed_in("ada@example.com", Role::User).await;
        let me = app.get("/api/v1/users/me").bearer(&token).send().await;
        assert_eq!(me.status, StatusCode::OK);
        // A change no notification announces: what the time-to-live bounds.
        write_elsewhere(&app, DEACTIVATE, user.id, false).await;
        let me = app.get("/api/v1/users/me").bearer(&token).send().await;
        let expected = if still_served {
            StatusCode::OK
        } else {
            StatusCode::UNAUTHORIZED
        };
        assert_eq!(me.status, expected, "ACCESS_CACHE_SECONDS={lifetime}");
    }
}

#[tokio::test]
async fn nothing_remembered_before_the_listener_reconnects_is_served_after() {
    let app = remembering_app("3600").await;
    let (user, token) = app.signed_in("ada@example.com", Role::User).await;
    let me = app.get("/api/v1/users/me").bearer(&token).send().await;
    assert_eq!(me.status, StatusCode::OK);
    use diesel_async::RunQueryDsl;
    let mut conn = app.conn().await;
    let ended = diesel::sql_query(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
         WHERE datname = current_database() AND query LIKE 'LISTEN%' AND pid <> pg_backend_pid()",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    assert_eq!(ended, 1, "the notification listener's connection was cut");
    // Missed by the listener: only its reconnection can tell the cache.
    write_elsewhere(&app, DEACTIVATE, user.id, false).await;
    let me = me_until(&app, &token, |me| me.status == StatusCode::UNAUTHORIZED).await;
    me.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn a_sign_out_through_this_process_ends_the_token_at_once() {
    let app = remembering_app("3600").await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    for _ in 0..5 {
        let pair = app.login("ada@example.com", DEFAULT_PASSWORD).await;
        let token = access_token(&pair);
        let me = app.get("/api/v1/users/me").bearer(token).send().await;
        assert_eq!(me.status, StatusCode::OK);
        let out = app
            .post("/api/v1/auth/logout")
            .bearer(token)
            .json(json!({"refresh_token": refresh_token(&pair)}))
            .send()
            .await;
        assert_eq!(out.status, StatusCode::NO_CONTENT, "{}", out.text());
        // No waiting for the database's notification.
        let me = app.get("/api/v1/users/me").bearer(token).send().await;
        me.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    }
}
