//! `/api/v1/users`: sign-up, profiles, administration, conditional requests.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use axum::http::StatusCode;
use common::{DEFAULT_PASSWORD, TestApp, redact_request_id};
use serde_json::{Value, json};
use tessera::users::models::Role;

fn signup(email: &str) -> Value {
    json!({"email": email, "full_name": "Ada Lovelace", "password": DEFAULT_PASSWORD})
}

#[tokio::test]
async fn sign_up_answers_201_with_location_and_etag() {
    let app = TestApp::spawn().await;
    let response = app
        .post("/api/v1/users")
        .json(signup("Ada@Example.com"))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::CREATED, "{}", response.text());
    let body = response.json();
    let id = body["id"].as_str().expect("the answer has an id");
    assert_eq!(
        response.header("location"),
        Some(format!("/api/v1/users/{id}").as_str())
    );
    assert!(response.header("etag").is_some());
    assert_eq!(body["email"], "Ada@Example.com", "stored as given");
    assert_eq!(body["role"], "user");
    assert_eq!(body["is_active"], true);
    assert!(body.get("password").is_none() && !response.text().contains(DEFAULT_PASSWORD));
    // The new account can sign in.
    app.login("ada@example.com", DEFAULT_PASSWORD).await;
}

#[tokio::test]
async fn sign_up_lists_every_invalid_field() {
    let app = TestApp::spawn().await;
    let body = json!({"email": "not-an-email", "full_name": " ", "password": "short"});
    let response = app.post("/api/v1/users").json(body).send().await;
    let problem = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    insta::assert_json_snapshot!(redact_request_id(problem), @r#"
    {
      "code": "validation_failed",
      "detail": "The request has 3 invalid field(s).",
      "errors": [
        {
          "loc": [
            "body",
            "email"
          ],
          "msg": "is not a valid email address",
          "type": "value_error"
        },
        {
          "loc": [
            "body",
            "full_name"
          ],
          "msg": "must not be empty",
          "type": "value_error"
        },
        {
          "loc": [
            "body",
            "password"
          ],
          "msg": "must be at least 8 characters",
          "type": "value_error"
        }
      ],
      "request_id": "[request_id]",
      "status": 422,
      "title": "Unprocessable Entity",
      "type": "urn:tessera:problem:validation_failed"
    }
    "#);
    let long = json!({"email": "a@example.com", "full_name": "x".repeat(101), "password": "p".repeat(129)});
    let response = app.post("/api/v1/users").json(long).send().await;
    let problem = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    insta::assert_json_snapshot!(redact_request_id(problem), @r#"
    {
      "code": "validation_failed",
      "detail": "The request has 2 invalid field(s).",
      "errors": [
        {
          "loc": [
            "body",
            "full_name"
          ],
          "msg": "must be at most 100 characters",
          "type": "value_error"
        },
        {
          "loc": [
            "body",
            "password"
          ],
          "msg": "must be at most 128 characters",
          "type": "value_error"
        }
      ],
      "request_id": "[request_id]",
      "status": 422,
      "title": "Unprocessable Entity",
      "type": "urn:tessera:problem:validation_failed"
    }
    "#);
}

#[tokio::test]
async fn sign_up_rejects_unknown_and_missing_fields() {
    let app = TestApp::spawn().await;
    let mut body = signup("a@example.com");
    body["is_admin"] = json!(true);
    let response = app.post("/api/v1/users").json(body).send().await;
    let problem = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["loc"], json!(["body", "is_admin"]));
    let response = app
        .post("/api/v1/users")
        .json(json!({"email": "a@example.com"}))
        .send()
        .await;
    response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test]
async fn emails_are_unique_case_insensitively() {
    let app = TestApp::spawn().await;
    let first = app
        .post("/api/v1/users")
        .json(signup("ada@example.com"))
        .send()
        .await;
    assert_eq!(first.status, StatusCode::CREATED);
    let second = app
        .post("/api/v1/users")
        .json(signup("ADA@EXAMPLE.COM"))
        .send()
        .await;
    second.assert_problem(StatusCode::CONFLICT, "email_taken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_sign_ups_with_one_email_have_exactly_one_winner() {
    let app = std::sync::Arc::new(TestApp::spawn_with(&[("DATABASE_POOL_SIZE", "8")]).await);
    let variants = [
        "race@example.com",
        "RACE@example.com",
        "Race@Example.com",
        "race@EXAMPLE.com",
        "rAce@example.com",
        "racE@example.com",
    ];
    let handles: Vec<_> = variants
        .iter()
        .map(|email| {
            let app = app.clone();
            let body = signup(email);
            tokio::spawn(async move { app.post("/api/v1/users").json(body).send().await.status })
        })
        .collect();
    let mut statuses = Vec::new();
    for handle in handles {
        statuses.push(handle.await.expect("a sign-up task ends without panicking"));
    }
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CREATED)
            .count(),
        1,
        "{statuses:?}"
    );
    assert_eq!(
        statuses
            .iter()
            .filter(|s| **s == StatusCode::CONFLICT)
            .count(),
        variants.len() - 1
    );
}

#[tokio::test]
async fn with_sign_up_off_only_admins_create_accounts() {
    let app = TestApp::spawn_with(&[("ALLOW_SIGNUP", "false")]).await;
    let anonymous = app
        .post("/api/v1/users")
        .json(signup("a@example.com"))
        .send()
        .await;
    anonymous.assert_problem(StatusCode::FORBIDDEN, "signup_disabled");
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    let created = app
        .post("/api/v1/users")
        .bearer(&admin)
        .json(signup("a@example.com"))
        .send()
        .await;
    assert_eq!(created.status, StatusCode::CREATED);
}

#[tokio::test]
async fn only_admins_choose_roles() {
    let app = TestApp::spawn().await;
    let mut body = signup("a@example.com");
    body["role"] = json!("admin");
    let anonymous = app.post("/api/v1/users").json(&body).send().await;
    anonymous.assert_problem(StatusCode::FORBIDDEN, "admin_required");
    let (_, user) = app.signed_in("user@example.com", Role::User).await;
    let as_user = app
        .post("/api/v1/users")
        .bearer(&user)
        .json(&body)
        .send()
        .await;
    as_user.assert_problem(StatusCode::FORBIDDEN, "admin_required");
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    let as_admin = app
        .post("/api/v1/users")
        .bearer(&admin)
        .json(body)
        .send()
        .await;
    assert_eq!(as_admin.status, StatusCode::CREATED);
    assert_eq!(as_admin.json()["role"], "admin");
}

#[tokio::test]
async fn me_supports_etags_and_conditional_updates() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("me@example.com", Role::User).await;
    let me = app.get("/api/v1/users/me").bearer(&token).send().await;
    assert_eq!(me.status, StatusCode::OK);
    let etag = me
        .header("etag")
        .expect("the response carries an ETag")
        .to_owned();

    let unchanged = app
        .get("/api/v1/users/me")
        .bearer(&token)
        .if_none_match(&etag)
        .send()
        .await;
    assert_eq!(unchanged.status, StatusCode::NOT_MODIFIED);
    assert!(unchanged.body.is_empty());

    let patched = app
        .patch("/api/v1/users/me")
        .bearer(&token)
        .if_match(&etag)
        .json(json!({"full_name": "Grace Hopper"}))
        .send()
        .await;
    assert_eq!(patched.status, StatusCode::OK, "{}", patched.text());
    assert_eq!(patched.json()["full_name"], "Grace Hopper");
    let new_etag = patched
        .header("etag")
        .expect("the response carries an ETag")
        .to_owned();
    assert_ne!(new_etag, etag);

    // The other tab still holds the old ETag: its write is refused, not lost.
    let stale = app
        .patch("/api/v1/users/me")
        .bearer(&token)
        .if_match(&etag)
        .json(json!({"full_name": "Other Tab"}))
        .send()
        .await;
    stale.assert_problem(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    assert_eq!(
        app.get("/api/v1/users/me")
            .bearer(&token)
            .send()
            .await
            .json()["full_name"],
        "Grace Hopper"
    );

    let modified = app
        .get("/api/v1/users/me")
        .bearer(&token)
        .if_none_match(&etag)
        .send()
        .await;
    assert_eq!(modified.status, StatusCode::OK);
}

#[tokio::test]
async fn users_cannot_change_their_own_role_or_take_an_email() {
    let app = TestApp::spawn().await;
    app.create_user("taken@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let (_, token) = app.signed_in("me@example.com", Role::User).await;
    let promote = app
        .patch("/api/v1/users/me")
        .bearer(&token)
        .json(json!({"role": "admin"}))
        .send()
        .await;
    let problem = promote.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["type"], "extra_forbidden");
    let taken = app
        .patch("/api/v1/users/me")
        .bearer(&token)
        .json(json!({"email": "TAKEN@example.com", "current_password": DEFAULT_PASSWORD}))
        .send()
        .await;
    taken.assert_problem(StatusCode::CONFLICT, "email_taken");
    let invalid = app
        .patch("/api/v1/users/me")
        .bearer(&token)
        .json(json!({"email": "nope", "full_name": "", "current_password": DEFAULT_PASSWORD}))
        .send()
        .await;
    let problem = invalid.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        problem["errors"]
            .as_array()
            .expect("a validation problem lists its errors")
            .len(),
        2
    );
}

#[tokio::test]
async fn deleting_oneself_needs_the_password() {
    let app = TestApp::spawn().await;
    let (_, token) = app.signed_in("me@example.com", Role::User).await;
    let wrong = app
        .delete("/api/v1/users/me")
        .bearer(&token)
        .json(json!({"password": "not my password"}))
        .send()
        .await;
    wrong.assert_problem(StatusCode::FORBIDDEN, "wrong_password");
    let right = app
        .delete("/api/v1/users/me")
        .bearer(&token)
        .json(json!({"password": DEFAULT_PASSWORD}))
        .send()
        .await;
    assert_eq!(right.status, StatusCode::NO_CONTENT);
    app.get("/api/v1/users/me")
        .bearer(&token)
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
}

#[tokio::test]
async fn protected_routes_need_a_token_and_admin_routes_an_admin() {
    let app = TestApp::spawn().await;
    let anonymous = app.get("/api/v1/users/me").send().await;
    anonymous.assert_problem(StatusCode::UNAUTHORIZED, "not_authenticated");
    assert_eq!(anonymous.header("www-authenticate"), Some("Bearer"));
    let malformed = app
        .get("/api/v1/users/me")
        .header("authorization", "Basic abc")
        .send()
        .await;
    malformed.assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    let (user, token) = app.signed_in("user@example.com", Role::User).await;
    for path in [
        "/api/v1/users".to_owned(),
        format!("/api/v1/users/{}", user.id),
    ] {
        app.get(&path)
            .bearer(&token)
            .send()
            .await
            .assert_problem(StatusCode::FORBIDDEN, "admin_required");
    }
}

#[tokio::test]
async fn admins_read_change_and_delete_any_account() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    let user = app
        .create_user("user@example.com", DEFAULT_PASSWORD, Role::User)
        .await;
    let path = format!("/api/v1/users/{}", user.id);
    let read = app.get(&path).bearer(&admin).send().await;
    assert_eq!(read.status, StatusCode::OK);
    let etag = read
        .header("etag")
        .expect("the response carries an ETag")
        .to_owned();
    let not_modified = app
        .get(&path)
        .bearer(&admin)
        .if_none_match(&etag)
        .send()
        .await;
    assert_eq!(not_modified.status, StatusCode::NOT_MODIFIED);

    let promoted = app
        .patch(&path)
        .bearer(&admin)
        .if_match(&etag)
        .json(json!({"role": "admin", "full_name": "Promoted"}))
        .send()
        .await;
    assert_eq!(promoted.status, StatusCode::OK, "{}", promoted.text());
    assert_eq!(promoted.json()["role"], "admin");
    let stale_delete = app
        .delete(&path)
        .bearer(&admin)
        .if_match(&etag)
        .send()
        .await;
    stale_delete.assert_problem(StatusCode::PRECONDITION_FAILED, "precondition_failed");
    let deleted = app.delete(&path).bearer(&admin).send().await;
    assert_eq!(deleted.status, StatusCode::NO_CONTENT);
    app.get(&path)
        .bearer(&admin)
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    app.delete(&path)
        .bearer(&admin)
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test]
async fn malformed_ids_are_422_not_404() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    let response = app
        .get("/api/v1/users/not-a-uuid")
        .bearer(&admin)
        .send()
        .await;
    let problem = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(problem["errors"][0]["loc"], json!(["path", "id"]));
}

#[tokio::test]
async fn the_last_active_admin_stays() {
    let app = TestApp::spawn().await;
    let (admin, token) = app.signed_in("admin@example.com", Role::Admin).await;
    let path = format!("/api/v1/users/{}", admin.id);
    for change in [json!({"role": "user"}), json!({"is_active": false})] {
        app.patch(&path)
            .bearer(&token)
            .json(change)
            .send()
            .await
            .assert_problem(StatusCode::CONFLICT, "last_admin");
    }
    app.delete(&path)
        .bearer(&token)
        .send()
        .await
        .assert_problem(StatusCode::CONFLICT, "last_admin");
    app.delete("/api/v1/users/me")
        .bearer(&token)
        .json(json!({"password": DEFAULT_PASSWORD}))
        .send()
        .await
        .assert_problem(StatusCode::CONFLICT, "last_admin");
    // With a second admin, the first may step down.
    app.create_user("second@example.com", DEFAULT_PASSWORD, Role::Admin)
        .await;
    let demoted = app
        .patch(&path)
        .bearer(&token)
        .json(json!({"role": "user"}))
        .send()
        .await;
    assert_eq!(demoted.status, StatusCode::OK, "{}", demoted.text());
}

#[tokio::test]
async fn a_deactivated_users_token_stops_working_at_once() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    let (user, token) = app.signed_in("user@example.com", Role::User).await;
    assert_eq!(
        app.get("/api/v1/users/me")
            .bearer(&token)
            .send()
            .await
            .status,
        StatusCode::OK
    );
    let path = format!("/api/v1/users/{}", user.id);
    let deactivated = app
        .patch(&path)
        .bearer(&admin)
        .json(json!({"is_active": false}))
        .send()
        .await;
    assert_eq!(deactivated.status, StatusCode::OK);
    app.get("/api/v1/users/me")
        .bearer(&token)
        .send()
        .await
        .assert_problem(StatusCode::UNAUTHORIZED, "invalid_token");
    app.login_from("user@example.com", DEFAULT_PASSWORD, "192.0.2.9")
        .await
        .assert_problem(StatusCode::FORBIDDEN, "account_inactive");
}

#[tokio::test]
async fn the_admin_list_pages_newest_first_and_filters() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    for index in 0..5 {
        app.create_user(
            &format!("user{index}@example.com"),
            DEFAULT_PASSWORD,
            Role::User,
        )
        .await;
    }
    let page = app
        .get("/api/v1/users?limit=2")
        .bearer(&admin)
        .send()
        .await
        .json();
    let emails: Vec<&str> = page["items"]
        .as_array()
        .expect("a list answer has an items array")
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, ["user4@example.com", "user3@example.com"]);
    let cursor = page["next_cursor"]
        .as_str()
        .expect("a page with more after it has a next_cursor");
    let next = app
        .get(&format!("/api/v1/users?limit=2&cursor={cursor}"))
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(next["items"][0]["email"], "user2@example.com");

    let admins = app
        .get("/api/v1/users?role=admin")
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(
        admins["items"]
            .as_array()
            .expect("a list answer has an items array")
            .len(),
        1
    );
    assert!(admins["next_cursor"].is_null());
    let prefixed = app
        .get("/api/v1/users?email_prefix=USER1")
        .bearer(&admin)
        .send()
        .await
        .json();
    assert_eq!(
        prefixed["items"]
            .as_array()
            .expect("a list answer has an items array")
            .len(),
        1
    );
    let wildcard = app
        .get("/api/v1/users?email_prefix=%25")
        .bearer(&admin)
        .send()
        .await
        .json();
    assert!(
        wildcard["items"]
            .as_array()
            .expect("a list answer has an items array")
            .is_empty(),
        "% matches literally"
    );
    let inactive = app
        .get("/api/v1/users?active=false")
        .bearer(&admin)
        .send()
        .await
        .json();
    assert!(
        inactive["items"]
            .as_array()
            .expect("a list answer has an items array")
            .is_empty()
    );

    for bad in [
        "limit=0",
        "limit=101",
        "limit=x",
        "role=owner",
        "active=maybe",
        "cursor=zzz",
        "unknown=1",
    ] {
        let response = app
            .get(&format!("/api/v1/users?{bad}"))
            .bearer(&admin)
            .send()
            .await;
        let problem =
            response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(problem["errors"][0]["loc"][0], "query", "{bad}");
    }
}

#[tokio::test]
async fn pagination_stays_correct_while_rows_are_inserted() {
    let app = TestApp::spawn().await;
    let (_, admin) = app.signed_in("admin@example.com", Role::Admin).await;
    for index in 0..6 {
        app.create_user(
            &format!("old{index}@example.com"),
            DEFAULT_PASSWORD,
            Role::User,
        )
        .await;
    }
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let mut inserted = 0;
    loop {
        let path = match &cursor {
            Some(cursor) => format!("/api/v1/users?limit=2&cursor={cursor}"),
            None => "/api/v1/users?limit=2".to_owned(),
        };
        let page = app.get(&path).bearer(&admin).send().await.json();
        for item in page["items"]
            .as_array()
            .expect("a list answer has an items array")
        {
            seen.push(item["email"].as_str().unwrap().to_owned());
        }
        // New accounts arrive between page reads.
        app.create_user(
            &format!("new{inserted}@example.com"),
            DEFAULT_PASSWORD,
            Role::User,
        )
        .await;
        inserted += 1;
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    let mut expected: Vec<String> = (0..6)
        .rev()
        .map(|i| format!("old{i}@example.com"))
        .collect();
    expected.push("admin@example.com".to_owned());
    assert_eq!(
        seen, expected,
        "every original row once, in order, none of the new ones"
    );
}

#[tokio::test]
async fn self_service_sign_ups_are_limited_per_client_but_admins_are_not() {
    // Each sign-up mails the address it names: without a bound, anyone could
    // make the service mail any number of strangers.
    let app =
        TestApp::spawn_with(&[("SIGNUPS_PER_CLIENT", "2"), ("TRUSTED_PROXY_HOPS", "1")]).await;
    let sign_up = |n: u32, client: &'static str| {
        app.post("/api/v1/users")
            .header("x-forwarded-for", client)
            .json(json!({"email": format!("person{n}@example.com"), "password": DEFAULT_PASSWORD, "full_name": "Someone"}))
            .send()
    };
    for n in 0..2 {
        assert_eq!(sign_up(n, "198.51.100.7").await.status, StatusCode::CREATED);
    }
    let refused = sign_up(2, "198.51.100.7").await;
    refused.assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert!(refused.header("retry-after").is_some());
    assert_eq!(
        sign_up(3, "203.0.113.9").await.status,
        StatusCode::CREATED,
        "another client is not held back"
    );

    let (_, admin) = app.signed_in("root@example.com", Role::Admin).await;
    for n in 10..13 {
        let created = app
            .post("/api/v1/users")
            .header("x-forwarded-for", "198.51.100.7")
            .bearer(&admin)
            .json(json!({"email": format!("staff{n}@example.com"), "password": DEFAULT_PASSWORD, "full_name": "Staff"}))
            .send()
            .await;
        assert_eq!(created.status, StatusCode::CREATED, "{}", created.text());
    }
}
