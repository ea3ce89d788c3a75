//! `/api/v1/inference`: the OpenAI embeddings shape, input checking, truncation,
//! batching under concurrency, overload and rate limits, similarity, models,
//! auth, and the `embed_texts` execution kind end to end. Every test serves the
//! tiny random BERT from `common::tiny_model`; one test uses the real model when
//! it is present.

// Test code: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{Method, StatusCode};
use base64::Engine as _;
use common::executions::{start_runner, wait_for, worker_settings};
use common::tiny_model::{TinyModelDir, TinyModelSpec, TinyWeights, tiny_model_dir};
use common::{TestApp, TestResponse, real_model_dir, settled_inference_report, skip};
use futures_util::future::join_all;
use serde_json::{Value, json};
use tessera::executions::models::Status;
use tessera::inference::batcher::{BatchError, Batcher, BatcherLimits};
use tessera::inference::engine::{DeviceChoice, EmbeddingEngine, Precision, model_name};
use tessera::inference::schemas::documented_model;
use tessera::users::models::Role;

const EMBEDDINGS: &str = "/api/v1/inference/embeddings";
const TOKENIZE: &str = "/api/v1/inference/tokenize";

/// An app serving a tiny model, and a signed-in user.
struct InferenceApp {
    app: TestApp,
    token: String,
    model: String,
    engine: EmbeddingEngine,
    _dir: TinyModelDir,
}

impl InferenceApp {
    async fn start(name: &str, overrides: &[(&str, &str)]) -> Self {
        let dir = tiny_model_dir(name, &TinyWeights::generate(11), &TinyModelSpec::default());
        let path = dir.path.to_string_lossy().into_owned();
        let mut settings = vec![
            ("INFERENCE_MODEL_DIR", path.as_str()),
            ("INFERENCE_DEVICE", "cpu"),
        ];
        settings.extend_from_slice(overrides);
        let app = TestApp::spawn_with(&settings).await;
        let report = settled_inference_report(&app).await;
        assert_eq!(report["state"], "ready", "{report}");
        let (_, token) = app.signed_in("embedder@example.com", Role::User).await;
        Self {
            engine: EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap(),
            model: model_name(&dir.path),
            app,
            token,
            _dir: dir,
        }
    }

    async fn post(&self, path: &str, body: Value) -> TestResponse {
        self.app
            .post(path)
            .bearer(&self.token)
            .json(body)
            .send()
            .await
    }

    async fn embed(&self, input: Value) -> TestResponse {
        self.post(EMBEDDINGS, json!({"input": input, "model": self.model}))
            .await
    }

    /// The engine's own vector for `text`, for comparing with the API's.
    fn expected(&self, text: &str) -> Vec<f32> {
        self.engine.embed(&[text]).unwrap().vectors.remove(0)
    }
}

fn floats(value: &Value) -> Vec<f32> {
    value
        .as_array()
        .expect("an embedding is an array of numbers")
        .iter()
        .map(|v| v.as_f64().unwrap() as f32)
        .collect()
}

fn assert_close(actual: &[f32], expected: &[f32]) {
    assert_eq!(actual.len(), expected.len());
    let difference = actual
        .iter()
        .zip(expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(difference <= 1e-6, "vectors differ by {difference:e}");
}

#[tokio::test(flavor = "multi_thread")]
async fn embeddings_answer_in_the_openai_shape_with_timing_headers() {
    let server = InferenceApp::start("api-shape", &[]).await;
    let texts = ["A man is eating food.", "hello"];
    let response = server.embed(json!(texts)).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    for header in [
        "x-queue-time-ms",
        "x-inference-time-ms",
        "x-tokenization-time-ms",
    ] {
        let value: f64 = response.header(header).unwrap().parse().unwrap();
        assert!(value >= 0.0, "{header}");
    }
    let body = response.json();
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], server.model.as_str());
    assert_eq!(
        body["usage"],
        json!({"prompt_tokens": 11, "total_tokens": 11})
    );
    let data = body["data"]
        .as_array()
        .expect("the answer has a data array");
    assert_eq!(data.len(), 2);
    for (index, (item, text)) in data.iter().zip(texts).enumerate() {
        assert_eq!(item["object"], "embedding");
        assert_eq!(item["index"], index);
        assert_close(&floats(&item["embedding"]), &server.expected(text));
    }

    // base64: little-endian f32s, decoding to exactly the same numbers.
    let encoded = server
        .post(
            EMBEDDINGS,
            json!({"input": texts, "model": server.model, "encoding_format": "base64"}),
        )
        .await
        .json();
    for (item, plain) in encoded["data"]
        .as_array()
        .expect("the answer has a data array")
        .iter()
        .zip(data)
    {
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(item["embedding"].as_str().unwrap())
            .unwrap();
        let decoded: Vec<f32> = bytes
            .chunks_exact(4)
            .map(|chunk| f32::from_le_bytes(chunk.try_into().unwrap()))
            .collect();
        assert_eq!(decoded, floats(&plain["embedding"]));
    }

    // One string, and token ids (as the tokenizer gives them) mean the same text.
    let single = server.embed(json!("hello")).await.json();
    assert_eq!(
        single["data"]
            .as_array()
            .expect("the answer has a data array")
            .len(),
        1
    );
    let ids = server.engine.tokenize(&["hello"]).unwrap().remove(0);
    let by_ids = server.embed(json!([ids.clone()])).await.json();
    assert_eq!(
        by_ids["data"][0]["embedding"],
        single["data"][0]["embedding"]
    );
    let flat_ids = server.embed(json!(ids)).await.json();
    assert_eq!(
        flat_ids["data"][0]["embedding"],
        single["data"][0]["embedding"]
    );

    // `dimensions` equal to the model's is accepted; the Hugging Face id names the model too.
    let response = server
        .post(
            EMBEDDINGS,
            json!({"input": "hello", "model": format!("sentence-transformers/{}", server.model),
                   "dimensions": 32, "user": "end-user-7"}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_inputs_get_a_422_naming_every_bad_element() {
    let server = InferenceApp::start("api-invalid", &[]).await;
    let cases = [
        (json!(""), vec![json!(["body", "input"])]),
        (json!([]), vec![json!(["body", "input"])]),
        (
            json!(["fine", "", "also fine"]),
            vec![json!(["body", "input", 1])],
        ),
        (json!(["text", 5]), vec![json!(["body", "input", 1])]),
        (
            json!([[2, 3], [2, 999]]),
            vec![json!(["body", "input", 1, 1])],
        ),
        (json!([[2, 3], []]), vec![json!(["body", "input", 1])]),
        (json!(["text", [2, 3]]), vec![json!(["body", "input"])]),
        (json!({"text": "no"}), vec![json!(["body", "input"])]),
        (json!(null), vec![json!(["body", "input"])]),
    ];
    for (input, locations) in cases {
        let response = server.embed(input.clone()).await;
        let body = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        let found: Vec<&Value> = body["errors"]
            .as_array()
            .expect("a validation problem lists its errors")
            .iter()
            .map(|e| &e["loc"])
            .collect();
        for location in &locations {
            assert!(found.contains(&location), "{input}: {body}");
        }
    }

    let too_many: Vec<String> = (0..2049).map(|i| format!("text {i}")).collect();
    server
        .embed(json!(too_many))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");

    let body = server
        .post(
            EMBEDDINGS,
            json!({"input": "hello", "model": server.model, "dimensions": 16}),
        )
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        body["errors"][0]["loc"],
        json!(["body", "dimensions"]),
        "{body}"
    );
    assert!(
        body["errors"][0]["msg"].as_str().unwrap().contains("32"),
        "{body}"
    );

    for body in [
        json!({"input": "hello", "model": server.model, "encoding_format": "binary"}),
        json!({"input": "hello", "model": server.model, "colour": "blue"}),
        json!({"model": server.model}),
    ] {
        server
            .post(EMBEDDINGS, body)
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
    let body = server
        .post(
            EMBEDDINGS,
            json!({"input": "hello", "model": "text-embedding-3-small"}),
        )
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    assert!(
        body["detail"]
            .as_str()
            .expect("a problem has a detail string")
            .contains(&server.model),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn over_long_inputs_are_refused_unless_truncation_is_asked_for() {
    let server = InferenceApp::start("api-truncate", &[]).await;
    let long = "the cat sat on the mat and the dog runs in the park ".repeat(3);
    let body = server
        .embed(json!(["hello", long]))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(
        body["errors"][0]["loc"],
        json!(["body", "input", 1]),
        "{body}"
    );
    assert!(
        body["errors"][0]["msg"]
            .as_str()
            .unwrap()
            .contains("truncate"),
        "{body}"
    );

    let response = server
        .post(
            EMBEDDINGS,
            json!({"input": long, "model": server.model, "truncate": true}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(
        response.json()["usage"]["prompt_tokens"],
        24,
        "cut at max_seq_length"
    );
    assert_close(
        &floats(&response.json()["data"][0]["embedding"]),
        &server.expected(&long),
    );

    let lenient =
        InferenceApp::start("api-truncate-default", &[("INFERENCE_TRUNCATE", "true")]).await;
    assert_eq!(lenient.embed(json!(long)).await.status, StatusCode::OK);
}

#[tokio::test(flavor = "multi_thread")]
async fn concurrent_callers_share_batches_and_each_gets_its_own_vectors_in_order() {
    // A long wait makes batches form reliably even on a slow machine.
    let server =
        InferenceApp::start("api-batching", &[("INFERENCE_BATCH_MAX_WAIT_MS", "200")]).await;
    let words = [
        "hello", "world", "cat", "dog", "park", "tree", "house", "car",
    ];
    let requests: Vec<Vec<String>> = (0..16)
        .map(|i| {
            (0..1 + i % 3)
                .map(|j| format!("the {} {}", words[i % 8], words[(i + j) % 8]))
                .collect()
        })
        .collect();
    let responses = join_all(requests.iter().map(|texts| server.embed(json!(texts)))).await;
    let mut inference_times = HashSet::new();
    for (texts, response) in requests.iter().zip(&responses) {
        assert_eq!(response.status, StatusCode::OK, "{}", response.text());
        inference_times.insert(response.header("x-inference-time-ms").unwrap().to_owned());
        let body = response.json();
        let data = body["data"]
            .as_array()
            .expect("the answer has a data array");
        assert_eq!(data.len(), texts.len());
        for (index, (item, text)) in data.iter().zip(texts).enumerate() {
            assert_eq!(item["index"], index);
            assert_close(&floats(&item["embedding"]), &server.expected(text));
        }
    }
    assert!(
        inference_times.len() < requests.len(),
        "requests that share a batch share its inference time; all {} were alone",
        requests.len()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_full_queue_refuses_at_once_and_the_batcher_keeps_serving() {
    let dir = tiny_model_dir(
        "batcher-overload",
        &TinyWeights::generate(12),
        &TinyModelSpec::default(),
    );
    let engine =
        Arc::new(EmbeddingEngine::load(&dir.path, DeviceChoice::Cpu, Precision::F32).unwrap());
    let batcher = Batcher::start(
        engine.clone(),
        BatcherLimits {
            max_batch_tokens: 1,
            max_wait: Duration::ZERO,
            queue_capacity: 1,
        },
    )
    .unwrap();
    let ids = engine.tokenize(&["the big red car"]).unwrap();
    let user = uuid::Uuid::new_v4();
    // All submissions happen in one poll, far faster than the engine answers.
    let results = join_all((0..200).map(|_| batcher.embed(user, ids.clone()))).await;
    let refused = results
        .iter()
        .filter(|result| matches!(result, Err(BatchError::QueueFull)))
        .count();
    let served = results.iter().filter(|result| result.is_ok()).count();
    assert!(refused > 0, "a queue of one overflowed");
    assert_eq!(
        refused + served,
        200,
        "every request is answered or refused"
    );
    let again = batcher.embed(user, ids.clone()).await.unwrap();
    assert_close(&again.vectors[0], &engine.embed_token_ids(&ids).unwrap()[0]);
}

#[tokio::test(flavor = "multi_thread")]
async fn overload_and_rate_limits_answer_in_the_error_shape_with_retry_after() {
    let server = InferenceApp::start(
        "api-overload",
        &[
            ("INFERENCE_QUEUE_CAPACITY", "1"),
            ("INFERENCE_BATCH_MAX_TOKENS", "1"),
        ],
    )
    .await;
    // Large token-id requests keep the engine busy while the others arrive.
    let ids: Vec<Vec<u32>> = vec![vec![2, 41, 43, 48, 25, 21, 5, 42, 44, 47, 3]; 2048];
    let responses = join_all((0..24).map(|_| server.embed(json!(ids)))).await;
    let overloaded: Vec<&TestResponse> = responses
        .iter()
        .filter(|response| response.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        !overloaded.is_empty(),
        "a queue of one overflowed under 24 large requests"
    );
    for response in &overloaded {
        response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "inference_overloaded");
        assert!(response.header("retry-after").is_some());
    }
    assert!(
        responses
            .iter()
            .all(|r| r.status == StatusCode::OK || r.status == StatusCode::SERVICE_UNAVAILABLE)
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn the_per_user_limit_counts_tokens_and_is_checked_before_validation() {
    // 6 tokens a minute: one token every 10 s, so a spent budget stays spent
    // for the rest of this test.
    let limited =
        InferenceApp::start("api-rate-limit", &[("INFERENCE_TOKENS_PER_MINUTE", "6")]).await;
    // A request larger than the whole minute's budget is refused up front, for good.
    let body = limited
        .embed(json!(vec![5; 7]))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"][0]["type"], "too_many_tokens", "{body}");
    // One request of exactly 6 tokens spends the budget...
    let six_tokens = json!([[5, 12, 14], [5, 13, 3]]);
    let response = limited.embed(six_tokens.clone()).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.json()["usage"]["prompt_tokens"], 6);
    // ...and the next is refused with the wait, however small.
    let refused = limited.embed(json!([5])).await;
    let body = refused.assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(body["error"]["type"], "rate_limit_error", "{body}");
    assert_eq!(body["error"]["message"], body["detail"], "{body}");
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    // A limited caller's invalid body costs no validation: 429, not 422.
    for body in [
        json!({"input": vec![-1; 5000], "model": limited.model}),
        json!({"input": "hello", "model": "no-such-model"}),
    ] {
        limited
            .post(EMBEDDINGS, body)
            .await
            .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    }
    limited
        .post(
            "/api/v1/inference/similarity",
            json!({"source": "", "targets": vec![""; 5000]}),
        )
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    // Another user has a budget of their own.
    let (_, other) = limited.app.signed_in("other@example.com", Role::User).await;
    let response = limited
        .app
        .post(EMBEDDINGS)
        .bearer(&other)
        .json(json!({"input": six_tokens, "model": limited.model}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_request_holding_too_many_tokens_in_all_is_refused() {
    let server = InferenceApp::start(
        "api-request-tokens",
        &[("INFERENCE_MAX_REQUEST_TOKENS", "50")],
    )
    .await;
    // Eight texts of 8 tokens: 64, known only once tokenized.
    let texts = vec!["the cat sat on the mat"; 8];
    let body = server
        .embed(json!(texts))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"][0]["type"], "too_many_tokens", "{body}");
    assert!(
        body["errors"][0]["msg"].as_str().unwrap().contains("64"),
        "{body}"
    );
    // Token ids over the cap are refused before anything is tokenized.
    let body = server
        .embed(json!(vec![vec![5; 20]; 3]))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"][0]["type"], "too_many_tokens", "{body}");
    let similarity = server
        .post(
            "/api/v1/inference/similarity",
            json!({"source": texts[0], "targets": texts[1..]}),
        )
        .await;
    similarity.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // Under the cap is fine.
    let response = server.embed(json!(texts[..6])).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.json()["usage"]["prompt_tokens"], 48);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_megabyte_text_is_refused_untokenized_or_cut_to_its_byte_bound() {
    let server = InferenceApp::start("api-huge-text", &[]).await;
    let sentence = "the cat sat on the mat ";
    let huge = sentence.repeat(1_000_000 / sentence.len());
    let response = server.embed(json!(huge)).await;
    assert!(
        response.body.len() < 64 * 1024,
        "{} bytes",
        response.body.len()
    );
    let body = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let error = &body["errors"][0];
    assert_eq!(error["loc"], json!(["body", "input"]), "{body}");
    assert_eq!(error["type"], "too_long", "{body}");
    // The byte bound refused it: the tokenizer's refusal would count tokens.
    assert!(
        error["msg"].as_str().unwrap().contains("999994 bytes"),
        "{body}"
    );

    let response = server
        .post(
            EMBEDDINGS,
            json!({"input": [huge, "hello"], "model": server.model, "truncate": true}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    assert_eq!(body["usage"]["prompt_tokens"], 24 + 3);
    // The bounded prefix holds far more than the model reads, so its vector is the whole text's.
    assert_close(
        &floats(&body["data"][0]["embedding"]),
        &server.expected(&huge),
    );
    assert_close(
        &floats(&body["data"][1]["embedding"]),
        &server.expected("hello"),
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn in_production_an_unavailable_engine_names_no_path() {
    let app = TestApp::spawn_with(&common::production_overrides()).await;
    let report = settled_inference_report(&app).await;
    assert_eq!(report["state"], "unavailable", "{report}");
    assert!(report.get("model_dir").is_none(), "{report}");
    assert!(
        !report.to_string().contains("no-model-in-tests"),
        "{report}"
    );
    let (_, token) = app.signed_in("prod@example.com", Role::User).await;
    let response = app
        .post(EMBEDDINGS)
        .bearer(&token)
        .json(json!({"input": "hi", "model": "x"}))
        .send()
        .await;
    let body = response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "inference_unavailable");
    let detail = body["detail"].as_str().unwrap();
    assert!(
        !detail.contains("no-model-in-tests") && !detail.contains("config.json"),
        "{body}"
    );
    assert!(detail.contains("log"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn similarity_models_and_auth() {
    let server = InferenceApp::start("api-similarity", &[]).await;
    let response = server
        .post(
            "/api/v1/inference/similarity",
            json!({"source": "the cat sat on the mat", "targets": ["the cat sat on the mat", "a red car", "the dog sat on the mat"]}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    let scores = floats(&body["scores"]);
    assert_eq!(scores.len(), 3);
    assert!((scores[0] - 1.0).abs() < 1e-5, "{scores:?}");
    let a = server.expected("the cat sat on the mat");
    let b = server.expected("a red car");
    let cosine: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
    assert!((scores[1] - cosine).abs() < 1e-5, "{scores:?} vs {cosine}");

    let body = server
        .post(
            "/api/v1/inference/similarity",
            json!({"source": "", "targets": ["x", ""]}),
        )
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    let locations: Vec<&Value> = body["errors"]
        .as_array()
        .expect("a validation problem lists its errors")
        .iter()
        .map(|e| &e["loc"])
        .collect();
    assert!(locations.contains(&&json!(["body", "source"])), "{body}");
    assert!(
        locations.contains(&&json!(["body", "targets", 1])),
        "{body}"
    );

    let models = server
        .app
        .get("/api/v1/inference/models")
        .bearer(&server.token)
        .send()
        .await;
    assert_eq!(models.status, StatusCode::OK, "{}", models.text());
    let card = &models.json()["data"][0];
    assert_eq!(card["id"], server.model.as_str());
    assert_eq!(card["dimensions"], 32);
    assert_eq!(card["max_tokens"], 24);
    assert_eq!(card["pooling"], "mean");
    assert_eq!(card["backend"], "cpu");
    assert_eq!(card["precision"], "f32");

    for (method, path) in [
        (Method::POST, EMBEDDINGS),
        (Method::GET, "/api/v1/inference/models"),
        (Method::POST, "/api/v1/inference/similarity"),
    ] {
        let response = server
            .app
            .request(method, path)
            .json(json!({"input": "hello", "model": server.model}))
            .send()
            .await;
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{path}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn without_a_model_inference_routes_say_why() {
    let app = TestApp::spawn().await;
    settled_inference_report(&app).await;
    let (_, token) = app.signed_in("nomodel@example.com", Role::User).await;
    let response = app
        .post(EMBEDDINGS)
        .bearer(&token)
        .json(json!({"input": "hi", "model": "x"}))
        .send()
        .await;
    let body = response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "inference_unavailable");
    assert!(
        body["detail"]
            .as_str()
            .expect("a problem has a detail string")
            .contains("config.json"),
        "{body}"
    );
    assert_eq!(body["error"]["type"], "server_error", "{body}");
    assert_eq!(body["error"]["code"], "inference_unavailable", "{body}");
}

async fn submit_embed_texts(server: &InferenceApp, texts: &[String]) -> Value {
    let response = server
        .post(
            "/api/v1/executions",
            json!({"kind": "embed_texts", "input": {"texts": texts, "model": server.model}}),
        )
        .await;
    assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
    response.json()
}

#[tokio::test(flavor = "multi_thread")]
async fn embed_texts_runs_in_chunks_and_its_vectors_come_back_page_by_page() {
    let server = InferenceApp::start("api-batch-job", &[]).await;
    let words = [
        "hello", "world", "cat", "dog", "park", "tree", "house", "car", "sun",
    ];
    let texts: Vec<String> = (0..600)
        .map(|i| format!("the {} and the {}", words[i % 9], words[(i / 9) % 9]))
        .collect();
    let submitted = submit_embed_texts(&server, &texts).await;
    let id: uuid::Uuid = submitted["id"]
        .as_str()
        .expect("the answer has an id")
        .parse()
        .unwrap();
    let registry = server.app.executions.registry.as_ref().clone();
    let (shutdown, handle, _) = start_runner(&server.app, registry, worker_settings(&[]));
    let execution = wait_for(&server.app, id, Status::Succeeded, Duration::from_secs(120)).await;
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
    let result = execution.result.unwrap();
    assert_eq!(result["count"], 600);
    assert_eq!(result["dimensions"], 32);
    let results = result["results"].as_str().unwrap().to_owned();
    assert_eq!(
        results,
        format!("/api/v1/inference/batches/{id}/embeddings")
    );

    let mut after: Option<i64> = None;
    let mut seen = 0;
    loop {
        let path = match after {
            Some(after) => format!("{results}?limit=250&after={after}"),
            None => format!("{results}?limit=250"),
        };
        let page = server.app.get(&path).bearer(&server.token).send().await;
        assert_eq!(page.status, StatusCode::OK, "{}", page.text());
        let page = page.json();
        for item in page["data"]
            .as_array()
            .expect("the answer has a data array")
        {
            let index = item["index"].as_u64().unwrap() as usize;
            assert_eq!(index, seen);
            assert_close(&floats(&item["embedding"]), &server.expected(&texts[index]));
            seen += 1;
        }
        match page["next_after"].as_i64() {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    assert_eq!(seen, 600);

    // Only the owner (or an admin) reads them.
    let (_, other) = server.app.signed_in("other@example.com", Role::User).await;
    server
        .app
        .get(&results)
        .bearer(&other)
        .send()
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    server
        .app
        .get(&format!("{results}?limit=0"))
        .bearer(&server.token)
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
}

#[tokio::test(flavor = "multi_thread")]
async fn embed_texts_spends_its_owners_token_budget() {
    // 60 tokens a minute, far fewer than the run reads: its chunk is admitted
    // on a full bucket (it waits for one rather than failing) and leaves its
    // owner over the limit for minutes, while others keep theirs.
    let server =
        InferenceApp::start("api-batch-budget", &[("INFERENCE_TOKENS_PER_MINUTE", "60")]).await;
    let texts = vec!["hello".to_owned(); 100];
    let submitted = submit_embed_texts(&server, &texts).await;
    let id: uuid::Uuid = submitted["id"]
        .as_str()
        .expect("the answer has an id")
        .parse()
        .unwrap();
    let registry = server.app.executions.registry.as_ref().clone();
    let (shutdown, handle, _) = start_runner(&server.app, registry, worker_settings(&[]));
    let execution = wait_for(&server.app, id, Status::Succeeded, Duration::from_secs(120)).await;
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
    assert_eq!(execution.result.unwrap()["prompt_tokens"], 300);
    server
        .embed(json!([5]))
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    let (_, other) = server.app.signed_in("other@example.com", Role::User).await;
    let response = server
        .app
        .post(EMBEDDINGS)
        .bearer(&other)
        .json(json!({"input": [5], "model": server.model}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
}

#[tokio::test(flavor = "multi_thread")]
async fn embed_texts_refuses_an_over_long_text_without_tokenizing_it_unless_truncating() {
    let server = InferenceApp::start("api-batch-bytes", &[]).await;
    let huge = "the cat sat on the mat ".repeat(2000);
    let mut ids = Vec::new();
    for truncate in [false, true] {
        let response = server
            .post(
                "/api/v1/executions",
                json!({"kind": "embed_texts", "max_attempts": 1,
                       "input": {"texts": ["hello", huge], "model": server.model, "truncate": truncate}}),
            )
            .await;
        assert_eq!(response.status, StatusCode::ACCEPTED, "{}", response.text());
        ids.push(
            response.json()["id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        );
    }
    let registry = server.app.executions.registry.as_ref().clone();
    let (shutdown, handle, _) = start_runner(&server.app, registry, worker_settings(&[]));
    let refused = wait_for(
        &server.app,
        ids[0],
        Status::Failed,
        Duration::from_secs(120),
    )
    .await;
    let cut = wait_for(
        &server.app,
        ids[1],
        Status::Succeeded,
        Duration::from_secs(120),
    )
    .await;
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
    let errors = refused.errors.to_string();
    assert!(errors.contains("texts.1: is 46000 bytes"), "{errors}");
    assert_eq!(cut.result.unwrap()["prompt_tokens"], 3 + 24);
}

#[tokio::test(flavor = "multi_thread")]
async fn embed_texts_checks_its_input_and_stops_between_chunks_when_cancelled() {
    // 40,000 texts are about 1.4 MB of JSON: over the default 1 MiB body limit.
    let server = InferenceApp::start(
        "api-batch-cancel",
        &[("REQUEST_BODY_LIMIT_BYTES", "8388608")],
    )
    .await;
    for input in [
        json!({"texts": [], "model": server.model}),
        json!({"texts": ["fine", ""], "model": server.model}),
        json!({"texts": ["fine"], "model": "another-model"}),
    ] {
        server
            .post(
                "/api/v1/executions",
                json!({"kind": "embed_texts", "input": input}),
            )
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }

    let texts: Vec<String> = (0..40_000)
        .map(|i| format!("the cat number {i} sat on the mat"))
        .collect();
    let submitted = submit_embed_texts(&server, &texts).await;
    let id: uuid::Uuid = submitted["id"]
        .as_str()
        .expect("the answer has an id")
        .parse()
        .unwrap();
    let registry = server.app.executions.registry.as_ref().clone();
    let (shutdown, handle, _) = start_runner(&server.app, registry, worker_settings(&[]));
    // Wait for the first stored chunk, then cancel.
    let results = format!("/api/v1/inference/batches/{id}/embeddings?limit=1");
    for _ in 0..600 {
        if !server
            .app
            .get(&results)
            .bearer(&server.token)
            .send()
            .await
            .json()["data"]
            .as_array()
            .expect("the answer has a data array")
            .is_empty()
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let cancel = server
        .post(&format!("/api/v1/executions/{id}/cancel"), json!({}))
        .await;
    assert!(cancel.status.is_success(), "{}", cancel.text());
    wait_for(&server.app, id, Status::Cancelled, Duration::from_secs(60)).await;
    shutdown.cancel();
    handle
        .await
        .expect("the runner stops cleanly once cancelled");
    let mut conn = server.app.conn().await;
    let (stored, _) = tessera::inference::repository::progress(&mut conn, id)
        .await
        .unwrap();
    assert!(stored > 0 && stored < 40_000, "stopped part way: {stored}");
    assert_eq!(stored % 256, 0, "whole chunks only: {stored}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_real_model_answers_like_sentence_transformers_through_the_api() {
    let model_dir = real_model_dir();
    if !model_dir.join("model.safetensors").is_file() {
        skip(
            "the_real_model_through_the_api",
            "no model (run `task model-fetch`)",
        );
        return;
    }
    let reference: Value = serde_json::from_slice(
        &std::fs::read(common::repo_root().join("tests/fixtures/minilm_reference.json")).unwrap(),
    )
    .unwrap();
    let path = model_dir.to_string_lossy().into_owned();
    let app =
        TestApp::spawn_with(&[("INFERENCE_MODEL_DIR", &path), ("INFERENCE_DEVICE", "cpu")]).await;
    assert_eq!(settled_inference_report(&app).await["state"], "ready");
    let (_, token) = app.signed_in("real@example.com", Role::User).await;
    let sentence = &reference["sentences"][0];
    let response = app
        .post(EMBEDDINGS)
        .bearer(&token)
        .json(json!({"input": sentence["text"], "model": "sentence-transformers/all-MiniLM-L6-v2"}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    let actual = floats(&body["data"][0]["embedding"]);
    let expected = floats(&sentence["embedding"]);
    let difference = actual
        .iter()
        .zip(&expected)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0f32, f32::max);
    assert!(difference <= 1e-4, "max difference {difference:e}");
    assert_eq!(
        body["usage"]["prompt_tokens"],
        sentence["input_ids"].as_array().unwrap().len()
    );
    // The OpenAPI document states the default model's figures as bounds.
    let models = app
        .get("/api/v1/inference/models")
        .bearer(&token)
        .send()
        .await
        .json();
    let card = &models["data"][0];
    assert_eq!(card["dimensions"], documented_model::DIMENSIONS, "{card}");
    assert_eq!(card["vocab_size"], documented_model::VOCAB_SIZE, "{card}");
    assert_eq!(card["max_tokens"], documented_model::MAX_TOKENS, "{card}");
    // Tokenizing counts what the model reads and the whole text.
    let response = app
        .post(TOKENIZE)
        .bearer(&token)
        .json(json!({"input": [sentence["text"], "word ".repeat(300)]}))
        .send()
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let data = &response.json()["data"];
    assert_eq!(data[0]["ids"], sentence["input_ids"]);
    assert_eq!(data[0]["truncated"], false);
    assert_eq!(data[1]["tokens"], documented_model::MAX_TOKENS);
    assert_eq!(data[1]["truncated"], true);
    assert_eq!(
        data[1]["original_tokens"], 302,
        "300 words and two special tokens"
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_invalid_elements_gets_a_small_answer() {
    let inference = InferenceApp::start("flood", &[]).await;
    // 1 MB of token ids, every one out of the vocabulary: the length is
    // checked first, so this is one error, whatever the ids are.
    let ids: Vec<i64> = vec![-1; 250_000];
    let response = inference.embed(json!(ids)).await;
    assert!(
        response.body.len() < 64 * 1024,
        "a 422 of {} bytes",
        response.body.len()
    );
    let body = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(body["errors"][0]["loc"], json!(["body", "input"]));
    assert_eq!(body["errors"][0]["type"], "too_long");
    // Sequences within bounds, every id bad: each is found, twenty are listed.
    let sequences = vec![vec![-1; 24]; 2048];
    let response = inference.embed(json!(sequences)).await;
    assert!(
        response.body.len() < 64 * 1024,
        "{} bytes",
        response.body.len()
    );
    let body = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"].as_array().unwrap().len(), 20, "{body}");
    assert_eq!(body["errors_not_listed"], 2048 * 24 - 20);
    assert_eq!(body["errors"][0]["loc"], json!(["body", "input", 0, 0]));
    // The service still answers.
    assert_eq!(
        inference.embed(json!("still here")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn a_flood_of_empty_similarity_targets_gets_a_small_answer() {
    let inference = InferenceApp::start("flood_targets", &[]).await;
    let targets = vec![""; 200_000];
    let response = inference
        .post(
            "/api/v1/inference/similarity",
            json!({"source": "a sentence", "targets": targets, "model": inference.model}),
        )
        .await;
    assert!(
        response.body.len() < 64 * 1024,
        "a {}-byte answer",
        response.body.len()
    );
    let body = response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // The count is checked before any target is read: one error.
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    assert_eq!(
        body["errors"][0]["loc"],
        json!(["body", "targets"]),
        "{body}"
    );
    assert_eq!(
        inference.embed(json!("still here")).await.status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn inference_errors_also_carry_openais_error_member() {
    let server = InferenceApp::start("api-openai-errors", &[]).await;
    // A 422 keeps every problem member and adds OpenAI's, naming the first bad field.
    let body = server
        .embed(json!(["fine", "", ""]))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"].as_array().unwrap().len(), 2, "{body}");
    assert_eq!(
        body["error"],
        json!({
            "message": "input[1]: must not be empty (and 1 more invalid field(s))",
            "type": "invalid_request_error",
            "param": "input[1]",
            "code": "validation_failed"
        })
    );
    let nested = server
        .embed(json!([[2, 3], [2, 999]]))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(nested["error"]["param"], "input[1][1]", "{nested}");
    // Counted past the twenty listed: the message says how many more.
    let flood = server
        .embed(json!(vec![vec![-1; 24]; 100]))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert!(
        flood["error"]["message"]
            .as_str()
            .unwrap()
            .ends_with("(and 2399 more invalid field(s))"),
        "{flood}"
    );
    // Errors that are not about one field: the detail is the message, `param` is null.
    let body = server
        .post(
            EMBEDDINGS,
            json!({"input": "hello", "model": "text-embedding-3-small"}),
        )
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
    assert_eq!(body["error"]["message"], body["detail"], "{body}");
    assert_eq!(body["error"]["type"], "invalid_request_error");
    assert_eq!(body["error"]["param"], Value::Null);
    let malformed = server
        .app
        .post(EMBEDDINGS)
        .bearer(&server.token)
        .body("{\"input\": ", "application/json")
        .send()
        .await;
    assert_eq!(
        malformed.status,
        StatusCode::BAD_REQUEST,
        "{}",
        malformed.text()
    );
    assert_eq!(malformed.json()["error"]["type"], "invalid_request_error");
    for path in [EMBEDDINGS, TOKENIZE, "/api/v1/inference/similarity"] {
        let response = server
            .app
            .post(path)
            .json(json!({"input": "hello"}))
            .send()
            .await;
        let body = response.json();
        assert_eq!(response.status, StatusCode::UNAUTHORIZED, "{path}");
        assert_eq!(
            body["error"]["type"], "authentication_error",
            "{path}: {body}"
        );
        assert_eq!(body["error"]["code"], body["code"], "{path}: {body}");
    }
    // Only the OpenAI-compatible routes carry it.
    let elsewhere = server.app.get("/api/v1/users/me").send().await;
    assert_eq!(elsewhere.status, StatusCode::UNAUTHORIZED);
    assert!(
        elsewhere.json().get("error").is_none(),
        "{}",
        elsewhere.text()
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn errors_no_inference_handler_produced_carry_openais_error_member_too() {
    // The body limit's 413, the fallback's 404 and the router's 405 come from
    // layers outside the inference routes; an OpenAI client sees their reason too.
    let server =
        InferenceApp::start("api-openai-outer", &[("REQUEST_BODY_LIMIT_BYTES", "1024")]).await;
    let oversized = server
        .app
        .post(EMBEDDINGS)
        .bearer(&server.token)
        .json(json!({"model": server.model, "input": "x".repeat(4096)}))
        .send()
        .await;
    let unknown = server
        .app
        .post("/api/v1/inference/chat/completions")
        .bearer(&server.token)
        .json(json!({}))
        .send()
        .await;
    let wrong_method = server
        .app
        .get(EMBEDDINGS)
        .bearer(&server.token)
        .send()
        .await;
    for (response, status, kind) in [
        (
            oversized,
            StatusCode::PAYLOAD_TOO_LARGE,
            "invalid_request_error",
        ),
        (unknown, StatusCode::NOT_FOUND, "invalid_request_error"),
        (
            wrong_method,
            StatusCode::METHOD_NOT_ALLOWED,
            "invalid_request_error",
        ),
    ] {
        let body = response.json();
        assert_eq!(response.status, status, "{body}");
        assert_eq!(body["error"]["type"], kind, "{body}");
        assert_eq!(body["error"]["code"], body["code"], "{body}");
        assert_eq!(body["error"]["message"], body["detail"], "{body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn token_ids_written_as_whole_floats_are_token_ids() {
    let server = InferenceApp::start("api-float-ids", &[]).await;
    let ids = server.engine.tokenize(&["hello"]).unwrap().remove(0);
    let floats_ids: Vec<f64> = ids.iter().map(|id| f64::from(*id)).collect();
    let as_floats = server.embed(json!(floats_ids)).await;
    assert_eq!(as_floats.status, StatusCode::OK, "{}", as_floats.text());
    let as_ints = server.embed(json!(ids)).await.json();
    assert_eq!(as_floats.json()["data"], as_ints["data"]);
    for bad in [json!([2.5, 3]), json!([1e10]), json!([-1.0])] {
        server
            .embed(bad)
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn a_model_name_out_of_bounds_is_a_small_422() {
    let server = InferenceApp::start("api-model-name", &[]).await;
    let huge = "m".repeat(1_000_000);
    for (path, body) in [
        (EMBEDDINGS, json!({"input": "hello", "model": huge})),
        (EMBEDDINGS, json!({"input": "hello", "model": ""})),
        (
            "/api/v1/inference/similarity",
            json!({"source": "a", "targets": ["b"], "model": huge}),
        ),
        (TOKENIZE, json!({"input": "hello", "model": huge})),
    ] {
        let response = server.post(path, body).await;
        assert!(
            response.body.len() < 4096,
            "{path}: {} bytes",
            response.body.len()
        );
        let problem =
            response.assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(
            problem["errors"][0]["loc"],
            json!(["body", "model"]),
            "{problem}"
        );
        assert_eq!(problem["error"]["param"], "model", "{problem}");
    }
    // 256 characters is still a name, of a model that is not here.
    server
        .post(
            EMBEDDINGS,
            json!({"input": "hello", "model": "m".repeat(256)}),
        )
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenize_shows_what_the_model_reads_of_each_text() {
    let server = InferenceApp::start("api-tokenize", &[]).await;
    let response = server.post(TOKENIZE, json!({"input": "hello"})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert!(response.header("x-tokenization-time-ms").is_some());
    let body = response.json();
    let ids = server.engine.tokenize(&["hello"]).unwrap().remove(0);
    assert_eq!(body["object"], "list");
    assert_eq!(body["model"], server.model.as_str());
    assert_eq!(body["max_tokens"], 24);
    assert_eq!(
        body["data"],
        json!([{"index": 0, "ids": ids, "tokens": 3, "truncated": false, "original_tokens": 3}])
    );
    assert_eq!(body["usage"]["prompt_tokens"], 3);

    // A text longer than the model reads: the ids it reads, and its whole length.
    let long = "the cat sat on the mat and the dog runs in the park ".repeat(3);
    let texts = json!(["hello", long, "héllo wörld 😀 日本語 e\u{301}"]);
    let response = server
        .post(
            TOKENIZE,
            json!({"input": texts, "model": format!("sentence-transformers/{}", server.model)}),
        )
        .await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    let cut = &body["data"][1];
    assert_eq!(cut["index"], 1);
    assert_eq!(cut["tokens"], 24);
    assert_eq!(cut["truncated"], true);
    let phrase = server
        .post(
            TOKENIZE,
            json!({"input": "the cat sat on the mat and the dog runs in the park"}),
        )
        .await
        .json();
    let phrase_tokens = phrase["data"][0]["original_tokens"].as_u64().unwrap() - 2;
    assert!(
        phrase_tokens * 3 + 2 > 24,
        "the long text is over the model's 24"
    );
    assert_eq!(
        cut["original_tokens"],
        phrase_tokens * 3 + 2,
        "three times the phrase, and the two special tokens once"
    );
    let cut_ids = server.engine.tokenize(&[long.as_str()]).unwrap().remove(0);
    assert_eq!(cut["ids"], json!(cut_ids));
    let unicode = &body["data"][2];
    assert_eq!(unicode["truncated"], false, "{unicode}");
    assert_eq!(unicode["tokens"], unicode["original_tokens"], "{unicode}");
    assert_eq!(
        body["usage"]["prompt_tokens"],
        3 + (phrase_tokens * 3 + 2) + unicode["tokens"].as_u64().unwrap(),
        "every token tokenized is charged"
    );
    // The ids it shows are what embeddings read: the same vector as the cut text.
    let by_ids = server.embed(json!([cut_ids])).await.json();
    let truncated = server
        .post(
            EMBEDDINGS,
            json!({"input": long, "model": server.model, "truncate": true}),
        )
        .await
        .json();
    assert_eq!(
        by_ids["data"][0]["embedding"],
        truncated["data"][0]["embedding"]
    );

    server
        .post(
            TOKENIZE,
            json!({"input": "hello", "model": "text-embedding-3-small"}),
        )
        .await
        .assert_problem(StatusCode::NOT_FOUND, "not_found");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenize_bounds_hostile_inputs() {
    let server = InferenceApp::start("api-tokenize-hostile", &[]).await;
    let cases = [
        (json!(""), json!(["body", "input"])),
        (json!([]), json!(["body", "input"])),
        (json!(["fine", ""]), json!(["body", "input", 1])),
        (json!(["fine", 5]), json!(["body", "input", 1])),
        (json!([["nested"]]), json!(["body", "input", 0])),
        (json!([2, 3]), json!(["body", "input", 0])),
        (json!({"text": "no"}), json!(["body", "input"])),
        (json!(null), json!(["body", "input"])),
    ];
    for (input, location) in cases {
        let body = server
            .post(TOKENIZE, json!({"input": input}))
            .await
            .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
        assert_eq!(body["errors"][0]["loc"], location, "{input}: {body}");
    }
    server
        .post(TOKENIZE, json!({"input": "hello", "truncate": true}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    // Too many texts: one error, before any text is read.
    let body = server
        .post(TOKENIZE, json!({"input": vec![""; 200_000]}))
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"].as_array().unwrap().len(), 1, "{body}");
    // A megabyte text is tokenized only to its byte bound (24 tokens × 32 bytes).
    let sentence = "the cat sat on the mat ";
    let huge = sentence.repeat(1_000_000 / sentence.len());
    let response = server.post(TOKENIZE, json!({"input": huge})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let body = response.json();
    assert_eq!(body["data"][0]["truncated"], true);
    assert_eq!(
        body["data"][0]["original_tokens"],
        Value::Null,
        "not counted whole"
    );
    assert_eq!(body["data"][0]["tokens"], 24);
    let charged = body["usage"]["prompt_tokens"].as_u64().unwrap();
    assert!(
        charged <= 24 * 32 + 2,
        "charged {charged} tokens for 768 bytes"
    );
    // Many texts at once: each counted, in order.
    let many: Vec<String> = (0..2048).map(|i| format!("the cat {i} sat")).collect();
    let response = server.post(TOKENIZE, json!({"input": many})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    let data = response.json()["data"].as_array().unwrap().clone();
    assert_eq!(data.len(), 2048);
    assert!(data.iter().enumerate().all(|(i, item)| item["index"] == i));
    assert_eq!(
        server
            .post(TOKENIZE, json!({"input": "still here"}))
            .await
            .status,
        StatusCode::OK
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenize_spends_the_token_budget_and_holds_the_request_cap() {
    // 60 tokens a minute: one a second, so a spent budget stays spent here.
    let limited = InferenceApp::start(
        "api-tokenize-budget",
        &[("INFERENCE_TOKENS_PER_MINUTE", "60")],
    )
    .await;
    let thirty_two = "the cat sat on the mat ".repeat(5);
    let response = limited.post(TOKENIZE, json!({"input": thirty_two})).await;
    assert_eq!(response.status, StatusCode::OK, "{}", response.text());
    assert_eq!(response.json()["usage"]["prompt_tokens"], 32);
    // 28 are left; the same text may cost up to a minute's budget before it is read.
    let refused = limited
        .post(TOKENIZE, json!({"input": thirty_two}))
        .await
        .assert_problem(StatusCode::TOO_MANY_REQUESTS, "rate_limited");
    assert_eq!(refused["error"]["type"], "rate_limit_error");
    // Another user: more tokens than one request may hold (the minute's
    // budget) is refused once counted.
    let (_, other) = limited
        .app
        .signed_in("counter@example.com", Role::User)
        .await;
    let body = limited
        .app
        .post(TOKENIZE)
        .bearer(&other)
        .json(json!({"input": "the cat sat on the mat ".repeat(12)}))
        .send()
        .await
        .assert_problem(StatusCode::UNPROCESSABLE_ENTITY, "validation_failed");
    assert_eq!(body["errors"][0]["type"], "too_many_tokens", "{body}");
    assert_eq!(body["error"]["param"], Value::Null, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn tokenizing_waits_for_the_bounded_slots_and_a_full_line_is_refused() {
    let server = InferenceApp::start(
        "api-tokenize-slots",
        &[
            ("INFERENCE_TOKENIZE_CONCURRENCY", "1"),
            ("INFERENCE_TOKENIZE_QUEUE", "0"),
            ("INFERENCE_TOKENS_PER_MINUTE", "0"),
        ],
    )
    .await;
    // Large requests keep the one slot busy while the others arrive; short
    // ones, tokenized without a slot, are served all the same.
    let texts: Vec<String> =
        vec!["the cat sat on the mat and the dog runs in the park ".repeat(8); 2000];
    let large = join_all((0..16).map(|_| server.post(TOKENIZE, json!({"input": texts}))));
    let short =
        join_all((0..16).map(|_| server.post(TOKENIZE, json!({"input": "a short sentence"}))));
    let (responses, short) = tokio::join!(large, short);
    for response in &short {
        assert_eq!(response.status, StatusCode::OK, "{:?}", response.body);
    }
    let refused: Vec<&TestResponse> = responses
        .iter()
        .filter(|response| response.status == StatusCode::SERVICE_UNAVAILABLE)
        .collect();
    assert!(
        !refused.is_empty(),
        "one slot and no line refused some of 16 large requests"
    );
    for response in &refused {
        let body = response.assert_problem(StatusCode::SERVICE_UNAVAILABLE, "inference_overloaded");
        assert_eq!(body["error"]["type"], "server_error");
        assert!(response.header("retry-after").is_some());
    }
    assert!(
        responses
            .iter()
            .all(|r| r.status == StatusCode::OK || r.status == StatusCode::SERVICE_UNAVAILABLE)
    );
}
