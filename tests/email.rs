//! Email: password reset by a mailed link, delivered by the `send_email`
//! execution kind to a real SMTP server (aiosmtpd) — retries while the server
//! is down, refusals fail at once, a rolled-back transaction sends nothing —
//! and what clients may and may not do with `send_email` executions.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use axum::http::StatusCode;
use chrono::Utc;
use diesel::prelude::*;
use diesel_async::{AsyncConnection, RunQueryDsl};
use serde_json::{Value, json};
use tessera::auth::outbox::{AccountEmail, Outgoing};
use tessera::auth::recovery::schemas::PasswordResetConfirmRequest;
use tessera::auth::recovery::service::{self as recovery, RESET_ANSWER_FLOOR};
use tessera::auth::verification::schemas::VerifyEmailRequest;
use tessera::auth::verification::service as verification;
use tessera::executions::models::{Execution, Status};
use tessera::shared::error::AppError;
use tessera::shared::schema::executions;
use tessera::users::models::Role;

use common::executions::{start_runner, wait_for, worker_settings};
use common::smtp::{SmtpServer, free_port, smtp_url};
use common::{DEFAULT_PASSWORD, TestApp, access_token, refresh_token};

/// Where the test apps' links point.
const PUBLIC_URL: &str = "https://app.example.com";

/// How long a message may take to arrive through the queue.
const PATIENCE: Duration = Duration::from_secs(20);

/// An app whose mail goes to `smtp_url`, with workers running its own kinds
/// (retrying after 100–200 ms); keep the token to stop them.
async fn mail_app(
    smtp_url: &str,
    overrides: &[(&str, &str)],
) -> (TestApp, tokio_util::sync::CancellationToken) {
    let mut all = vec![
        ("SMTP_URL", smtp_url),
        ("PUBLIC_URL", PUBLIC_URL),
        ("EMAIL_FROM", "Tessera <no-reply@tessera.test>"),
    ];
    all.extend_from_slice(overrides);
    let app = TestApp::spawn_with(&all).await;
    let workers = worker_settings(&[
        ("EXECUTION_RETRY_BASE_MS", "200"),
        ("EXECUTION_RETRY_MAX_MS", "400"),
    ]);
    let (shutdown, _, _) = start_runner(&app, (*app.executions.registry).clone(), workers);
    (app, shutdown)
}

/// `POST /auth/password-reset` for `email`.
async fn ask_for_reset(app: &TestApp, email: &str, client: &str) -> common::TestResponse {
    app.post("/api/v1/auth/password-reset")
        .header("x-forwarded-for", client)
        .json(json!({"email": email}))
        .send()
        .await
}

/// `POST /auth/password-reset/confirm`.
async fn reset(app: &TestApp, token: &str, new_password: &str) -> common::TestResponse {
    app.post("/api/v1/auth/password-reset/confirm")
        .json(json!({"token": token, "new_password": new_password}))
        .send()
        .await
}

/// Every `send_email` execution, oldest first.
async fn send_email_executions(app: &TestApp) -> Vec<Execution> {
    let mut conn = app.conn().await;
    executions::table
        .filter(executions::kind.eq("send_email"))
        .order(executions::id.asc())
        .select(Execution::as_select())
        .load(&mut conn)
        .await
        .unwrap()
}

/// The token of a queued reset link, read from its execution's input.
fn token_in(execution: &Execution) -> String {
    token_of_link(execution, "/reset-password")
}

/// The token of a queued link to the frontend's `page`, read from its execution's input.
fn token_of_link(execution: &Execution, page: &str) -> String {
    let link = execution.input["message"]["link"].as_str().unwrap();
    let prefix = format!("{PUBLIC_URL}{page}?token=");
    link.strip_prefix(&prefix)
        .unwrap_or_else(|| panic!("{link} is not a {page} link"))
        .to_owned()
}

/// The token of the link in a received message.
fn token_of_message(message: &common::smtp::Received) -> String {
    let link = message.link(&format!("{PUBLIC_URL}/reset-password?token="));
    link.rsplit_once("token=").unwrap().1.to_owned()
}

#[tokio::test]
async fn a_mailed_link_resets_the_password_once_and_ends_every_session() {
    let smtp = SmtpServer::start();
    let (app, _workers) = mail_app(&smtp.url(), &[]).await;
    let user = app
        .create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let pair = app.login("ada@example.com", DEFAULT_PASSWORD).await;

    let asked = ask_for_reset(&app, "ADA@example.com", "192.0.2.1").await;
    assert_eq!(asked.status, StatusCode::ACCEPTED, "{}", asked.text());
    let messages = smtp.wait_for(1, PATIENCE).await;
    assert_eq!(messages.len(), 1, "{messages:?}");
    let message = &messages[0];
    assert_eq!(message.rcpt_tos, ["ada@example.com"]);
    assert_eq!(message.to, "ada@example.com");
    assert_eq!(message.from, "Tessera <no-reply@tessera.test>");
    assert_eq!(message.subject, "Reset your Tessera password");
    assert!(
        message
            .text
            .as_deref()
            .unwrap()
            .contains("within 60 minutes")
    );
    let token = token_of_message(message);
    assert!(message.html.as_deref().unwrap().contains(&token));

    // The execution records the message id and the server's answer.
    let sent = wait_for(
        &app,
        send_email_executions(&app).await[0].id,
        Status::Succeeded,
        PATIENCE,
    )
    .await;
    assert_eq!(sent.owner_id, user.id);
    let result = sent.result.clone().unwrap();
    assert_eq!(result["message_id"], json!(message.message_id));
    assert_eq!(result["delivered_via"], "smtp");
    assert_eq!(result["smtp_code"], 250);
    assert!(
        result["smtp_answer"]
            .as_str()
            .unwrap()
            .starts_with("OK: queued as"),
        "{result}"
    );

    let done = reset(&app, &token, "a brand new password").await;
    assert_eq!(done.status, StatusCode::NO_CONTENT, "{}", done.text());
    app.login_from("ada@example.com", DEFAULT_PASSWORD, "192.0.2.9")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    app.login("ada@example.com", "a brand new password").await;
    app.post("/api/v1/auth/refresh")
        .json(json!({"refresh_token": refresh_token(&pair)}))
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_refresh_token");
    let me = app
        .get("/api/v1/users/me")
        .bearer(access_token(&pair))
        .send()
        .await;
    assert_eq!(me.status, StatusCode::UNAUTHORIZED);

    // The link works once.
    let again = reset(&app, &token, "yet another password").await;
    let problem = again.assert_problem(StatusCode::BAD_REQUEST, "invalid_reset_token");
    assert!(
        !problem["detail"].as_str().unwrap().contains("used"),
        "{problem}"
    );

    // And the address hears that its password changed.
    let messages = smtp.wait_for(2, PATIENCE).await;
    assert_eq!(messages.len(), 2);
    assert_eq!(messages[1].rcpt_tos, ["ada@example.com"]);
    assert_eq!(messages[1].subject, "Your Tessera password was changed");
}

#[tokio::test]
async fn an_unknown_address_gets_the_same_answer_in_the_same_time_and_no_message() {
    let smtp = SmtpServer::start();
    let (app, _workers) = mail_app(&smtp.url(), &[]).await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let mut answers = Vec::new();
    for email in ["nobody@example.com", "ada@example.com"] {
        let started = Instant::now();
        let response = ask_for_reset(&app, email, "192.0.2.1").await;
        assert!(started.elapsed() >= RESET_ANSWER_FLOOR);
        answers.push((response.status, response.text()));
    }
    assert_eq!(answers[0], (StatusCode::ACCEPTED, String::new()));
    assert_eq!(answers[0], answers[1]);
    // The known address's message arrives; the unknown one's never existed.
    let messages = smtp.wait_for(1, PATIENCE).await;
    assert_eq!(messages.len(), 1);
    assert_eq!(messages[0].rcpt_tos, ["ada@example.com"]);
    assert_eq!(send_email_executions(&app).await.len(), 1);
}

#[tokio::test]
async fn an_expired_superseded_or_malformed_token_is_refused() {
    let app = TestApp::spawn_with(&[("PUBLIC_URL", PUBLIC_URL)]).await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    for _ in 0..2 {
        let asked = ask_for_reset(&app, "ada@example.com", "192.0.2.1").await;
        assert_eq!(asked.status, StatusCode::ACCEPTED);
    }
    let queued = send_email_executions(&app).await;
    assert_eq!(queued.len(), 2);
    let (older, newer) = (token_in(&queued[0]), token_in(&queued[1]));

    // A newer request supersedes the older link.
    reset(&app, &older, "a brand new password")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_reset_token");
    // Past its lifetime (an hour by default) the link is refused: time passed in.
    let confirm = |token: &str| PasswordResetConfirmRequest {
        token: token.to_owned(),
        new_password: "a brand new password".to_owned(),
    };
    let later = Utc::now() + chrono::Duration::minutes(61);
    let expired = recovery::confirm_reset(
        &platform(&app),
        &app.auth,
        &app.account_mail,
        confirm(&newer),
        later,
    )
    .await;
    assert!(
        matches!(
            expired,
            Err(AppError::BadRequest {
                code: "invalid_reset_token",
                ..
            })
        ),
        "{expired:?}"
    );
    // An unknown token of the right shape is the same answer.
    reset(&app, &"A".repeat(43), "a brand new password")
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_reset_token");
    // A malformed token or a weak password is a 422 naming the field.
    let malformed = reset(&app, "short", "a brand new password").await;
    let problem = malformed.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["loc"], json!(["body", "token"]));
    let weak = reset(&app, &newer, "short").await;
    let problem = weak.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["loc"], json!(["body", "new_password"]));
    // Within its lifetime the newer link still works.
    assert_eq!(
        reset(&app, &newer, "a brand new password").await.status,
        StatusCode::NO_CONTENT
    );
}

/// The platform of a test app, as handlers get it.
fn platform(app: &TestApp) -> tessera::core::platform::Platform {
    tessera::core::platform::Platform {
        pool: app.pool.clone(),
        config: app.config.clone(),
        lifecycle: app.lifecycle.clone(),
        readiness: Default::default(),
    }
}

#[tokio::test]
async fn requests_are_limited_per_address_and_per_client() {
    let app = TestApp::spawn_with(&[
        ("PASSWORD_RESET_MAX_PER_CLIENT", "5"),
        ("TRUSTED_PROXY_HOPS", "1"),
    ])
    .await;
    for client in ["192.0.2.1", "192.0.2.2", "192.0.2.3"] {
        assert_eq!(
            ask_for_reset(&app, "nobody@example.com", client)
                .await
                .status,
            StatusCode::ACCEPTED
        );
    }
    // A fourth for one address, from anywhere, waits — known or not.
    let limited = ask_for_reset(&app, "NOBODY@example.com", "192.0.2.4").await;
    limited.assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let retry_after: u64 = limited.header("retry-after").unwrap().parse().unwrap();
    assert!((3_000..=3_600).contains(&retry_after), "{retry_after}");
    // One client may ask for five addresses, then waits.
    for index in 0..5 {
        let email = format!("person{index}@example.com");
        assert_eq!(
            ask_for_reset(&app, &email, "198.51.100.7").await.status,
            StatusCode::ACCEPTED
        );
    }
    ask_for_reset(&app, "person9@example.com", "198.51.100.7")
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    ask_for_reset(&app, "not an address", "203.0.113.1")
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn with_the_smtp_server_down_the_message_is_retried_until_it_is_back() {
    let port = free_port();
    let (app, _workers) = mail_app(&smtp_url(port), &[]).await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    ask_for_reset(&app, "ada@example.com", "192.0.2.1").await;
    let id = send_email_executions(&app).await[0].id;
    // Nothing listens: the first attempt fails and is queued again.
    let started = Instant::now();
    loop {
        let execution = common::executions::load(&app, id).await;
        if execution.attempt >= 1 && execution.status == Status::Queued {
            let errors = execution.errors.as_array().unwrap();
            assert!(
                errors[0]["message"]
                    .as_str()
                    .unwrap()
                    .contains("could not be delivered yet"),
                "{errors:?}"
            );
            break;
        }
        assert!(started.elapsed() < PATIENCE, "{execution:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let smtp = SmtpServer::start_on(port);
    let messages = smtp.wait_for(1, PATIENCE).await;
    assert_eq!(messages[0].rcpt_tos, ["ada@example.com"]);
    let sent = wait_for(&app, id, Status::Succeeded, PATIENCE).await;
    assert!(sent.attempt >= 2, "{sent:?}");
}

#[tokio::test]
async fn a_refused_recipient_fails_the_message_without_retrying() {
    let smtp = SmtpServer::start();
    let (app, _workers) = mail_app(&smtp.url(), &[]).await;
    app.create_user("refuse-me@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    ask_for_reset(&app, "refuse-me@example.com", "192.0.2.1").await;
    let id = send_email_executions(&app).await[0].id;
    let failed = wait_for(&app, id, Status::Failed, PATIENCE).await;
    assert_eq!(failed.attempt, 1, "no retry after a 5xx: {failed:?}");
    assert!(failed.max_attempts > 1);
    let message = failed.errors[0]["message"].as_str().unwrap();
    assert!(
        message.contains("refused") && message.contains("550"),
        "{message}"
    );
    assert!(smtp.messages().is_empty());
    let metrics = app.get("/metrics").send().await.text();
    assert!(
        metrics.contains("emails_failed_total{template=\"password_reset\",reason=\"refused\"}"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_rolled_back_transaction_sends_nothing() {
    let smtp = SmtpServer::start();
    let (app, _workers) = mail_app(&smtp.url(), &[]).await;
    let user = app
        .create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let outgoing = |to: &str| Outgoing {
        user_id: user.id,
        to: to.to_owned(),
        email: AccountEmail::PasswordChanged,
    };
    let mut conn = app.conn().await;
    let outbox = app.account_mail.outbox.clone();
    let rolled_back = conn
        .transaction::<(), AppError, _>(async |conn| {
            outbox.enqueue(conn, outgoing("ada@example.com")).await?;
            Err(AppError::internal("the flow failed after queueing"))
        })
        .await;
    assert!(rolled_back.is_err());
    conn.transaction::<(), AppError, _>(async |conn| {
        outbox.enqueue(conn, outgoing("grace@example.com")).await
    })
    .await
    .unwrap();
    // Only the committed message is delivered.
    let messages = smtp.wait_for(1, PATIENCE).await;
    let executions = send_email_executions(&app).await;
    assert_eq!(executions.len(), 1);
    wait_for(&app, executions[0].id, Status::Succeeded, PATIENCE).await;
    let messages_now = smtp.messages();
    assert_eq!(messages_now.len(), 1, "{messages:?}");
    assert_eq!(messages_now[0].rcpt_tos, ["grace@example.com"]);
}

#[tokio::test]
async fn without_smtp_a_message_is_delivered_to_the_log() {
    let app = TestApp::spawn().await;
    let workers = worker_settings(&[]);
    let (_shutdown, _, _) = start_runner(&app, (*app.executions.registry).clone(), workers);
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    ask_for_reset(&app, "ada@example.com", "192.0.2.1").await;
    let id = send_email_executions(&app).await[0].id;
    let sent = wait_for(&app, id, Status::Succeeded, PATIENCE).await;
    let result = sent.result.unwrap();
    assert_eq!(result["delivered_via"], "log");
    assert_eq!(result["smtp_code"], Value::Null);
    let metrics = app.get("/metrics").send().await.text();
    for counted in [
        "emails_queued_total{template=\"password_reset\"}",
        "emails_sent_total{template=\"password_reset\"}",
    ] {
        assert!(metrics.contains(counted), "{counted} in {metrics}");
    }
}

#[tokio::test]
async fn send_email_is_not_submittable_and_only_admins_see_it() {
    let app = TestApp::spawn().await;
    let (_, user_token) = app.signed_in("ada@example.com", Role::User).await;
    let (_, admin_token) = app.signed_in("root@example.com", Role::Admin).await;
    for token in [&user_token, &admin_token] {
        let submitted = app
            .post("/api/v1/executions")
            .bearer(token)
            .json(json!({"kind": "send_email", "input": {"to": "x@example.com", "message": {"template": "password_changed"}}}))
            .send()
            .await;
        let problem =
            submitted.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(problem["errors"][0]["loc"], json!(["body", "kind"]));
        assert!(
            !problem["errors"][0]["msg"]
                .as_str()
                .unwrap()
                .contains("send_email")
        );
    }
    ask_for_reset(&app, "ada@example.com", "192.0.2.1").await;
    let id = send_email_executions(&app).await[0].id;
    // Its owner neither lists nor reads it: its input holds the reset link.
    let listed = app
        .get("/api/v1/executions")
        .bearer(&user_token)
        .send()
        .await;
    assert_eq!(listed.json()["items"], json!([]));
    let read = app
        .get(&format!("/api/v1/executions/{id}"))
        .bearer(&user_token)
        .send()
        .await;
    read.assert_problem(StatusCode::NOT_FOUND, "not_found");
    // An admin does.
    let read = app
        .get(&format!("/api/v1/executions/{id}"))
        .bearer(&admin_token)
        .send()
        .await;
    assert_eq!(read.status, StatusCode::OK, "{}", read.text());
    assert_eq!(read.json()["kind"], "send_email");
    assert_eq!(read.json()["input"]["to"], "ada@example.com");
    let listed = app
        .get("/api/v1/executions?all=true&kind=send_email")
        .bearer(&admin_token)
        .send()
        .await;
    assert_eq!(listed.json()["items"][0]["id"], json!(id));
}

/// `POST /auth/verify-email`.
async fn verify(app: &TestApp, token: &str) -> common::TestResponse {
    app.post("/api/v1/auth/verify-email")
        .json(json!({"token": token}))
        .send()
        .await
}

#[tokio::test]
async fn sign_up_mails_a_link_that_verifies_the_address() {
    let smtp = SmtpServer::start();
    let (app, _workers) = mail_app(&smtp.url(), &[]).await;
    let created = app
        .post("/api/v1/users")
        .json(json!({"email": "ada@example.com", "full_name": "Ada", "password": DEFAULT_PASSWORD}))
        .send()
        .await;
    assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    assert_eq!(created.json()["email_verified_at"], Value::Null);
    let messages = smtp.wait_for(1, PATIENCE).await;
    assert_eq!(messages[0].rcpt_tos, ["ada@example.com"]);
    assert_eq!(messages[0].subject, "Confirm your Tessera email address");
    assert!(
        messages[0]
            .text
            .as_deref()
            .unwrap()
            .contains("within 48 hours")
    );
    let link = messages[0].link(&format!("{PUBLIC_URL}/verify-email?token="));
    let token = link.rsplit_once("token=").unwrap().1;

    assert_eq!(verify(&app, token).await.status, StatusCode::NO_CONTENT);
    let pair = app.login("ada@example.com", DEFAULT_PASSWORD).await;
    let me = app
        .get("/api/v1/users/me")
        .bearer(access_token(&pair))
        .send()
        .await;
    assert!(me.json()["email_verified_at"].is_string(), "{}", me.text());
    verify(&app, token)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_verification_token");
    verify(&app, "not a token")
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // Nothing is left to confirm.
    app.post("/api/v1/users/me/email-verification")
        .bearer(access_token(&pair))
        .send()
        .await
        .assert_problem(StatusCode::CONFLICT, "email_already_verified");
}

#[tokio::test]
async fn an_email_change_applies_only_once_the_new_address_is_verified() {
    let smtp = SmtpServer::start();
    let (app, _workers) = mail_app(&smtp.url(), &[]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let me = app.get("/api/v1/users/me").bearer(&token).send().await;
    let changed = app
        .patch("/api/v1/users/me")
        .bearer(&token)
        .if_match(me.header("etag").unwrap())
        .json(json!({"email": "ada@new.example.com", "current_password": DEFAULT_PASSWORD}))
        .send()
        .await;
    assert_eq!(changed.status, StatusCode::OK, "{}", changed.text());
    assert_eq!(changed.json()["email"], "ada@example.com");
    assert_eq!(changed.json()["pending_email"], "ada@new.example.com");
    // Until the new address is proven, the old one is the login.
    app.login_from("ada@new.example.com", DEFAULT_PASSWORD, "192.0.2.7")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    app.login("ada@example.com", DEFAULT_PASSWORD).await;

    let messages = smtp.wait_for(1, PATIENCE).await;
    assert_eq!(messages[0].rcpt_tos, ["ada@new.example.com"]);
    let link = messages[0].link(&format!("{PUBLIC_URL}/verify-email?token="));
    let link_token = link.rsplit_once("token=").unwrap().1;
    assert_eq!(
        verify(&app, link_token).await.status,
        StatusCode::NO_CONTENT
    );

    let pair = app.login("ada@new.example.com", DEFAULT_PASSWORD).await;
    let me = app
        .get("/api/v1/users/me")
        .bearer(access_token(&pair))
        .send()
        .await
        .json();
    assert_eq!(me["email"], "ada@new.example.com");
    assert_eq!(me["pending_email"], Value::Null);
    assert!(me["email_verified_at"].is_string(), "{me}");
    app.login_from("ada@example.com", DEFAULT_PASSWORD, "192.0.2.8")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    // The old address hears of it.
    let messages = smtp.wait_for(2, PATIENCE).await;
    assert_eq!(messages[1].rcpt_tos, ["ada@example.com"]);
    assert_eq!(
        messages[1].subject,
        "Your Tessera email address was changed"
    );
    assert!(
        messages[1]
            .text
            .as_deref()
            .unwrap()
            .contains("ada@new.example.com")
    );
}

#[tokio::test]
async fn required_verification_refuses_unverified_sign_ins_until_a_link_is_used() {
    let app = TestApp::spawn_with(&[
        ("REQUIRE_VERIFIED_EMAIL", "true"),
        ("PUBLIC_URL", PUBLIC_URL),
    ])
    .await;
    app.create_user("ada@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let refused = app
        .login_from("ada@example.com", DEFAULT_PASSWORD, "192.0.2.1")
        .await;
    refused.assert_problem(StatusCode::FORBIDDEN, "email_not_verified");
    // A wrong password still gets the same answer as ever: nothing tells the
    // account's state to someone without the password.
    app.login_from("ada@example.com", "wrong password!", "192.0.2.2")
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_credentials");
    // A reset link reached the address: that proves it.
    ask_for_reset(&app, "ada@example.com", "192.0.2.1").await;
    let token = token_in(&send_email_executions(&app).await[0]);
    assert_eq!(
        reset(&app, &token, "a brand new password").await.status,
        StatusCode::NO_CONTENT
    );
    app.login("ada@example.com", "a brand new password").await;
}

#[tokio::test]
async fn resending_supersedes_older_links_is_limited_and_links_expire() {
    let app = TestApp::spawn_with(&[("PUBLIC_URL", PUBLIC_URL)]).await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let resend = || {
        app.post("/api/v1/users/me/email-verification")
            .bearer(&token)
            .send()
    };
    for _ in 0..3 {
        assert_eq!(resend().await.status, StatusCode::ACCEPTED);
    }
    let limited = resend().await;
    limited.assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(limited.header("retry-after").is_some());
    let queued = send_email_executions(&app).await;
    assert_eq!(queued.len(), 3);
    let tokens: Vec<String> = queued
        .iter()
        .map(|execution| token_of_link(execution, "/verify-email"))
        .collect();
    verify(&app, &tokens[0])
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_verification_token");
    // Past its lifetime (48 hours by default) the newest is refused too: time passed in.
    let later = Utc::now() + chrono::Duration::hours(49);
    let request = VerifyEmailRequest {
        token: tokens[2].clone(),
    };
    let expired = verification::verify(&platform(&app), &app.account_mail, request, later).await;
    assert!(
        matches!(
            expired,
            Err(AppError::BadRequest {
                code: "invalid_verification_token",
                ..
            })
        ),
        "{expired:?}"
    );
    assert_eq!(
        verify(&app, &tokens[2]).await.status,
        StatusCode::NO_CONTENT
    );
    app.post("/api/v1/users/me/email-verification")
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "not_authenticated");
}

#[tokio::test]
async fn a_pending_change_can_be_cancelled_and_changes_are_limited_like_resends() {
    let app = TestApp::spawn_with(&[
        ("PUBLIC_URL", PUBLIC_URL),
        ("EMAIL_VERIFICATION_MAX_PER_ACCOUNT", "2"),
    ])
    .await;
    let (_, token) = app.signed_in("ada@example.com", Role::User).await;
    let change = |email: &'static str| {
        let app = &app;
        let token = &token;
        async move {
            let etag = app.get("/api/v1/users/me").bearer(token).send().await;
            app.patch("/api/v1/users/me")
                .bearer(token)
                .if_match(etag.header("etag").unwrap())
                .json(json!({"email": email, "current_password": DEFAULT_PASSWORD}))
                .send()
                .await
        }
    };
    let first = change("ada@one.example.com").await;
    assert_eq!(first.json()["pending_email"], "ada@one.example.com");
    let link = token_of_link(&send_email_executions(&app).await[0], "/verify-email");
    // Sending the current address back cancels it: its link no longer works.
    let cancelled = change("ADA@example.com").await;
    assert_eq!(cancelled.status, StatusCode::OK, "{}", cancelled.text());
    assert_eq!(cancelled.json()["pending_email"], Value::Null);
    verify(&app, &link)
        .await
        .assert_problem(StatusCode::BAD_REQUEST, "invalid_verification_token");
    // Each change mails a link: they count like resends, so an account cannot
    // make the service mail any address at will.
    assert_eq!(change("ada@two.example.com").await.status, StatusCode::OK);
    change("ada@three.example.com")
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(send_email_executions(&app).await.len(), 2);
}
