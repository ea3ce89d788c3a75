//! Sign-in and sessions under attack: each test does what a hostile client
//! did to an earlier build and asserts the fixed behaviour (the closing note
//! of the sign-in hardening issue has the before/after table).

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use common::{DEFAULT_PASSWORD, TestApp, TestResponse, access_token, refresh_token};
use diesel_async::RunQueryDsl;
use serde_json::{Value, json};
use tessera::users::models::Role;

/// Trust one proxy, so each test picks its clients through `X-Forwarded-For`.
const BEHIND_ONE_PROXY: (&str, &str) = ("TRUSTED_PROXY_HOPS", "1");

async fn refresh(app: &TestApp, token: &str) -> TestResponse {
    app.post("/api/v1/auth/refresh")
        .json(json!({"refresh_token": token}))
        .send()
        .await
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_wrong_passwords_get_at_most_the_limit_of_checks() {
    let app = Arc::new(TestApp::spawn_with(&[BEHIND_ONE_PROXY, ("DATABASE_POOL_SIZE", "8")]).await);
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let guesses = (0..40).map(|attempt| {
        let app = app.clone();
        tokio::spawn(async move {
            app.login_from(
                "ada@example.com",
                &format!("guess {attempt}"),
                "198.51.100.7",
            )
            .await
            .status
        })
    });
    let mut statuses = Vec::new();
    for guess in guesses {
        statuses.push(guess.await.unwrap());
    }
    let checked = statuses
        .iter()
        .filter(|s| **s == StatusCode::UNAUTHORIZED)
        .count();
    let limited = statuses
        .iter()
        .filter(|s| **s == StatusCode::TOO_MANY_REQUESTS)
        .count();
    assert_eq!(
        checked, 5,
        "exactly MAX_FAILED_LOGINS guesses were verified: {statuses:?}"
    );
    assert_eq!(checked + limited, 40, "the rest were refused: {statuses:?}");
}

#[tokio::test]
async fn rotating_a_spoofed_forwarded_for_does_not_reset_the_count() {
    let app = TestApp::spawn_with(&[BEHIND_ONE_PROXY]).await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    // The client writes whatever it likes on the left; our proxy appends the
    // address it really saw on the right.
    let mut statuses = Vec::new();
    for attempt in 0..6 {
        let forwarded = format!("10.{attempt}.{attempt}.1, 203.0.113.7");
        statuses.push(
            app.login_from("ada@example.com", "wrong password!", &forwarded)
                .await
                .status,
        );
    }
    assert_eq!(&statuses[..5], &[StatusCode::UNAUTHORIZED; 5]);
    assert_eq!(
        statuses[5],
        StatusCode::TOO_MANY_REQUESTS,
        "the sixth failure"
    );
}

#[tokio::test]
async fn addresses_in_one_ipv6_64_share_a_counter() {
    let app = TestApp::spawn_with(&[BEHIND_ONE_PROXY]).await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    for host in 1..=5 {
        app.login_from(
            "ada@example.com",
            "wrong password!",
            &format!("2001:db8:1:2::{host}"),
        )
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    app.login_from(
        "ada@example.com",
        "wrong password!",
        "2001:db8:1:2:ffff:ffff:ffff:ffff",
    )
    .await
    .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    app.login_from("ada@example.com", "wrong password!", "2001:db8:1:3::1")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
}

#[tokio::test]
async fn spelling_variants_of_an_unknown_address_share_a_counter() {
    let app = TestApp::spawn_with(&[BEHIND_ONE_PROXY]).await;
    for variant in [
        "ghost@example.com",
        "GHOST@example.com",
        " Ghost@Example.com",
        "ghost@EXAMPLE.com",
        "gHost@example.com",
    ] {
        app.login_from(variant, "wrong password!", "198.51.100.3")
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    app.login_from("GhOsT@example.com", "wrong password!", "198.51.100.3")
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[tokio::test]
async fn the_owner_signs_in_from_a_clean_client_while_an_attacker_is_locked_out() {
    let app =
        TestApp::spawn_with(&[BEHIND_ONE_PROXY, ("MAX_FAILED_LOGINS_PER_ACCOUNT", "3")]).await;
    app.create_user("victim@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    for attacker in ["198.51.100.1", "198.51.100.2", "198.51.100.3"] {
        app.login_from("victim@example.com", "guess", attacker)
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    }
    // Past the account's ceiling, a client that already failed against it waits…
    app.login_from("victim@example.com", "another guess", "198.51.100.1")
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // …a fresh address gets its one guess…
    app.login_from("victim@example.com", "a third guess", "198.51.100.4")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    app.login_from("victim@example.com", "a fourth guess", "198.51.100.4")
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // …and the owner, from a clean client, is not locked out.
    let owner = app
        .login_from("victim@example.com", DEFAULT_PASSWORD, "192.0.2.200")
        .await;
    assert_eq!(owner.status, StatusCode::OK, "{}", owner.text());
}

#[tokio::test]
async fn every_password_recheck_is_limited() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let mut statuses = Vec::new();
    for _ in 0..10 {
        let response = app
            .put("/api/v1/auth/password")
            .bearer(&token)
            .json(json!({"current_password": "not my password", "new_password": "a brand new password"}))
            .send()
            .await;
        statuses.push(response.status);
    }
    assert_eq!(&statuses[..5], &[StatusCode::FORBIDDEN; 5], "{statuses:?}");
    assert!(
        statuses[5..]
            .iter()
            .all(|s| *s == StatusCode::TOO_MANY_REQUESTS),
        "a stolen access token is no password oracle: {statuses:?}"
    );
    // Deleting one's account goes through the same counter.
    app.delete("/api/v1/users/me")
        .bearer(&token)
        .json(json!({"password": "not my password"}))
        .send()
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
}

#[tokio::test]
async fn a_limiter_that_cannot_record_refuses_the_attempt() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let mut conn = app.conn().await;
    diesel::sql_query("DROP TABLE login_failures")
        .execute(&mut conn)
        .await
        .unwrap();
    let body = app
        .login_from("ada@example.com", DEFAULT_PASSWORD, "192.0.2.1")
        .await
        .assert_problem(StatusCode::SERVICE_UNAVAILABLE, "sign_in_unavailable");
    assert!(
        !body.to_string().contains("login_failures"),
        "nothing internal leaks: {body}"
    );
}

#[tokio::test]
async fn a_refresh_token_from_before_a_deactivation_stays_dead_after_reactivation() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in("root@example.com", Role::Admin).await;
    let user = app
        .create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let pair = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    for active in [false, true] {
        let response = app
            .patch(&format!("/api/v1/users/{}", user.id))
            .bearer(&admin)
            .json(json!({"is_active": active}))
            .send()
            .await;
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    }
    refresh(&app, refresh_token(&pair))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    // A fresh sign-in works again.
    app.login("ada@example.com", DEFAULT_PASSWORD).await;
}

/// Refreshes as fast as it can from `pair`, returning the last pair it got.
async fn refresh_in_a_loop(app: Arc<TestApp>, mut pair: Value, rounds: usize) -> Value {
    for _ in 0..rounds {
        let response = refresh(&app, refresh_token(&pair)).await;
        if response.status != StatusCode::OK {
            break;
        }
        pair = response.json();
    }
    pair
}

#[tokio::test(flavor = "multi_thread")]
async fn logout_all_wins_every_race_with_a_refreshing_attacker() {
    let app = Arc::new(TestApp::spawn_with(&[("DATABASE_POOL_SIZE", "8")]).await);
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    for round in 0..15 {
        let owner = app.login("ada@example.com", DEFAULT_PASSWORD).await;
        let stolen = app.login("ada@example.com", DEFAULT_PASSWORD).await;
        let attacker = tokio::spawn(refresh_in_a_loop(app.clone(), stolen, 40));
        tokio::time::sleep(Duration::from_millis(round % 5)).await;
        let logout = app
            .post("/api/v1/auth/logout-all")
            .bearer(access_token(&owner))
            .send()
            .await;
        assert_eq!(logout.status, StatusCode::NO_CONTENT, "round {round}");
        let last = attacker.await.unwrap();
        assert_ne!(
            refresh(&app, refresh_token(&last)).await.status,
            StatusCode::OK,
            "round {round}: the attacker's latest refresh token still worked"
        );
        assert_eq!(
            app.get("/api/v1/users/me")
                .bearer(access_token(&last))
                .send()
                .await
                .status,
            StatusCode::UNAUTHORIZED,
            "round {round}: the attacker's latest access token still worked"
        );
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn reuse_detection_wins_every_race_with_a_refreshing_thief() {
    let app = Arc::new(TestApp::spawn_with(&[("DATABASE_POOL_SIZE", "8")]).await);
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    for round in 0..10 {
        let first = app.login("ada@example.com", DEFAULT_PASSWORD).await;
        let second = refresh(&app, refresh_token(&first)).await.json();
        let thief = tokio::spawn(refresh_in_a_loop(app.clone(), second, 40));
        tokio::time::sleep(Duration::from_millis(round % 4)).await;
        // The owner presents the spent first token: the family is revoked.
        refresh(&app, refresh_token(&first))
            .await
            .assert_problem(StatusCode::UNAUTHORIZED, "refresh_token_reused");
        let last = thief.await.unwrap();
        assert_ne!(
            refresh(&app, refresh_token(&last)).await.status,
            StatusCode::OK,
            "round {round}: a token of the revoked family still worked"
        );
    }
}

#[tokio::test]
async fn a_sign_in_ends_at_its_absolute_lifetime_however_often_it_rotates() {
    let app = TestApp::spawn_with(&[("SESSION_LIFETIME_SECONDS", "2")]).await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let mut pair = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let response = refresh(&app, refresh_token(&pair)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    pair = response.json();
    tokio::time::sleep(Duration::from_millis(2_200)).await;
    refresh(&app, refresh_token(&pair))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
}

#[tokio::test]
async fn pruning_removes_old_attempts_and_expired_tokens_only() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let pair = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let mut conn = app.conn().await;
    diesel::sql_query(
        "INSERT INTO login_failures (key, failed_at) VALUES ('client:old', now() - interval '2 hours'), ('client:new', now())",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    diesel::sql_query(
        "INSERT INTO refresh_tokens (id, family_id, user_id, token_hash, expires_at, session_expires_at)
         SELECT gen_random_uuid(), gen_random_uuid(), id, '\\x00'::bytea, now() - interval '2 hours', now() - interval '2 hours' FROM users",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    let pruned = tessera::auth::sessions::prune(&app.pool, &app.auth.config)
        .await
        .unwrap();
    assert_eq!(pruned, 2, "one old attempt, one expired token");
    let response = refresh(&app, refresh_token(&pair)).await;
    assert_eq!(
        response.status,
        StatusCode::OK,
        "live tokens stay: {}",
        response.text()
    );
}

#[tokio::test]
async fn changing_the_login_email_needs_the_password_and_ends_other_sign_ins() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let mine = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let other = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let change = |password: Option<&str>| {
        let mut body = json!({"email": "ada.lovelace@example.com"});
        if let Some(password) = password {
            body["current_password"] = json!(password);
        }
        app.patch("/api/v1/users/me")
            .bearer(access_token(&mine))
            .json(body)
            .send()
    };
    // A 15-minute access token alone can no longer take the login.
    let body = change(None)
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        body["errors"][0]["loc"],
        json!(["body", "current_password"])
    );
    change(Some("not my password"))
        .await
        .assert_problem(StatusCode::FORBIDDEN, "wrong_password");
    let changed = change(Some(DEFAULT_PASSWORD)).await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    // The new address waits for its link (tests/email.rs follows it through).
    assert_eq!(changed.json()["email"], "ada@example.com");
    assert_eq!(changed.json()["pending_email"], "ada.lovelace@example.com");
    // The other sign-in is over, at once; this one goes on.
    assert_eq!(
        app.get("/api/v1/users/me")
            .bearer(access_token(&other))
            .send()
            .await
            .status,
        StatusCode::UNAUTHORIZED
    );
    refresh(&app, refresh_token(&other))
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    assert_eq!(
        app.get("/api/v1/users/me")
            .bearer(access_token(&mine))
            .send()
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        refresh(&app, refresh_token(&mine)).await.status,
        StatusCode::OK
    );
    // A name change needs no password.
    let renamed = app
        .patch("/api/v1/users/me")
        .bearer(access_token(&mine))
        .json(json!({"full_name": "Ada King"}))
        .send()
        .await;
    assert_eq!(renamed.status, StatusCode::OK, "{}", renamed.text());
}

#[tokio::test]
async fn logout_ends_the_access_token_of_that_sign_in_at_once() {
    let app = TestApp::spawn().await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let leaving = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let staying = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let logout = app
        .post("/api/v1/auth/logout")
        .json(json!({"refresh_token": refresh_token(&leaving)}))
        .send()
        .await;
    assert_eq!(logout.status, StatusCode::NO_CONTENT);
    app.get("/api/v1/users/me")
        .bearer(access_token(&leaving))
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    assert_eq!(
        app.get("/api/v1/users/me")
            .bearer(access_token(&staying))
            .send()
            .await
            .status,
        StatusCode::OK,
        "the other sign-in is untouched"
    );
}
