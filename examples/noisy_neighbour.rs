//! The noisy-neighbour benchmark: what one user's flood does to another
//! user's latency. Against a running service (`task bench` starts one), it
//! signs up a *victim* and a *flooder*, measures the victim's calls (a
//! single-sentence embedding and `GET /users/me`, in a closed loop) on a quiet
//! service, then again while the flooder sends the largest embeddings requests
//! it may, holds and reopens event streams, and submits executions as fast as
//! it can. Prints both runs' p50/p99 and every party's answers by status class.
//!
//! `cargo run --release --example noisy_neighbour -- BASE_URL [SECONDS] [MODEL]`

// A benchmark: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

/// Concurrent victim loops of each call (one-sentence embeddings, `/users/me`).
const VICTIM_LOOPS: usize = 2;
/// Concurrent loops sending maximum-size embeddings requests.
const FLOOD_EMBED_LOOPS: usize = 4;
/// Event streams the flooder tries to hold open at once (more than any cap).
const FLOOD_STREAMS: usize = 40;
/// Concurrent loops submitting executions.
const FLOOD_SUBMIT_LOOPS: usize = 4;
/// Texts in one flood embeddings request, and words per text.
const FLOOD_INPUTS: usize = 2048;
const FLOOD_WORDS_PER_TEXT: usize = 60;

/// Latencies and answers of one kind of call.
#[derive(Default)]
struct Tally {
    latencies: Vec<Duration>,
    by_class: BTreeMap<String, u64>,
}

impl Tally {
    fn record(&mut self, started: Instant, outcome: &Result<u16, reqwest::Error>) {
        self.latencies.push(started.elapsed());
        let class = match outcome {
            Ok(status) => format!("{}xx", status / 100),
            Err(_) => "transport error".to_owned(),
        };
        *self.by_class.entry(class).or_default() += 1;
    }

    fn percentile(&self, fraction: f64) -> Duration {
        let mut sorted = self.latencies.clone();
        sorted.sort();
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let index = ((sorted.len() as f64 - 1.0) * fraction).round() as usize;
        sorted[index]
    }

    fn classes(&self) -> String {
        self.by_class
            .iter()
            .map(|(class, count)| format!("{count} {class}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

type Tallies = Arc<Mutex<BTreeMap<&'static str, Tally>>>;

fn record(
    tallies: &Tallies,
    call: &'static str,
    started: Instant,
    outcome: Result<u16, reqwest::Error>,
) {
    tallies
        .lock()
        .unwrap()
        .entry(call)
        .or_default()
        .record(started, &outcome);
}

/// A signed-in account: its bearer token.
struct Account {
    token: String,
}

async fn sign_up(client: &reqwest::Client, base: &str, name: &str) -> Account {
    let email = format!("{name}-{}@example.com", uuid::Uuid::new_v4());
    let password = "noisy-neighbour-password";
    let created = client
        .post(format!("{base}/api/v1/users"))
        .json(&json!({"email": email, "full_name": name, "password": password}))
        .send()
        .await
        .unwrap();
    assert!(
        created.status().is_success(),
        "sign-up: {}",
        created.status()
    );
    let token: Value = client
        .post(format!("{base}/api/v1/auth/token"))
        .form(&[("username", email.as_str()), ("password", password)])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    Account {
        token: token["access_token"].as_str().unwrap().to_owned(),
    }
}

/// One of the victim's closed loops: the same call, again and again.
async fn victim_loop(
    client: reqwest::Client,
    request: impl Fn(u64) -> reqwest::RequestBuilder,
    call: &'static str,
    stop: CancellationToken,
    tallies: Tallies,
) {
    let mut n = 0u64;
    while !stop.is_cancelled() {
        n += 1;
        let started = Instant::now();
        let outcome = client
            .execute(request(n).build().unwrap())
            .await
            .map(|response| response.status().as_u16());
        record(&tallies, call, started, outcome);
    }
}

/// Runs the victim for `seconds` and returns what it saw.
async fn measure_victim(
    client: &reqwest::Client,
    base: &str,
    victim: &Account,
    model: &str,
    seconds: u64,
) -> BTreeMap<&'static str, Tally> {
    let tallies = Tallies::default();
    let stop = CancellationToken::new();
    let mut loops = Vec::new();
    for _ in 0..VICTIM_LOOPS {
        let (http, url, token, model) = (
            client.clone(),
            base.to_owned(),
            victim.token.clone(),
            model.to_owned(),
        );
        let embed = move |n: u64| {
            http.post(format!("{url}/api/v1/inference/embeddings"))
                .bearer_auth(&token)
                .json(&json!({"model": model, "input": format!("The victim asks about meeting number {n} today.")}))
        };
        loops.push(tokio::spawn(victim_loop(
            client.clone(),
            embed,
            "victim: one-sentence embedding",
            stop.clone(),
            tallies.clone(),
        )));
        let (http, url, token) = (client.clone(), base.to_owned(), victim.token.clone());
        let me = move |_| {
            http.get(format!("{url}/api/v1/users/me"))
                .bearer_auth(&token)
        };
        loops.push(tokio::spawn(victim_loop(
            client.clone(),
            me,
            "victim: GET /users/me",
            stop.clone(),
            tallies.clone(),
        )));
    }
    tokio::time::sleep(Duration::from_secs(seconds)).await;
    stop.cancel();
    for task in loops {
        task.await.unwrap();
    }
    Arc::try_unwrap(tallies).ok().unwrap().into_inner().unwrap()
}

/// The largest embeddings request the flooder may send: many long texts.
fn flood_body(model: &str) -> Value {
    let words = [
        "river", "budget", "meeting", "engineer", "latency", "queue", "morning", "library",
    ];
    let text: Vec<&str> = (0..FLOOD_WORDS_PER_TEXT)
        .map(|i| words[i % words.len()])
        .collect();
    let text = text.join(" ");
    json!({"model": model, "input": vec![text; FLOOD_INPUTS]})
}

/// What every flood loop shares: the client, the service, the flooder's
/// token, the stop signal and the tallies.
#[derive(Clone)]
struct Flood {
    client: reqwest::Client,
    base: String,
    token: String,
    stop: CancellationToken,
    tallies: Tallies,
}

async fn flood_embeddings(flood: Flood, model: String) {
    let Flood {
        client,
        base,
        token,
        stop,
        tallies,
    } = flood;
    let body = flood_body(&model);
    while !stop.is_cancelled() {
        let started = Instant::now();
        let outcome = client
            .post(format!("{base}/api/v1/inference/embeddings"))
            .bearer_auth(&token)
            .json(&body)
            .send()
            .await;
        let outcome = match outcome {
            Ok(response) => {
                let status = response.status().as_u16();
                let _ = response.bytes().await;
                if status == 429 {
                    // A polite flooder would wait out Retry-After; a hostile one retries at once.
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Ok(status)
            }
            Err(error) => Err(error),
        };
        record(
            &tallies,
            "flooder: maximum embeddings request",
            started,
            outcome,
        );
    }
}

/// Opens an event stream on `execution` and holds it until the server ends it
/// or the flood stops; then opens another.
async fn flood_stream(flood: Flood, execution: String) {
    let Flood {
        client,
        base,
        token,
        stop,
        tallies,
    } = flood;
    while !stop.is_cancelled() {
        let started = Instant::now();
        let opened = client
            .get(format!("{base}/api/v1/executions/{execution}/events"))
            .bearer_auth(&token)
            .send()
            .await;
        match opened {
            Ok(mut response) => {
                let status = response.status().as_u16();
                record(
                    &tallies,
                    "flooder: open an event stream",
                    started,
                    Ok(status),
                );
                if status == 200 {
                    loop {
                        tokio::select! {
                            () = stop.cancelled() => break,
                            chunk = response.chunk() => if !matches!(chunk, Ok(Some(_))) { break },
                        }
                    }
                } else {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            Err(error) => record(
                &tallies,
                "flooder: open an event stream",
                started,
                Err(error),
            ),
        }
    }
}

async fn flood_submissions(flood: Flood) {
    let Flood {
        client,
        base,
        token,
        stop,
        tallies,
    } = flood;
    while !stop.is_cancelled() {
        let started = Instant::now();
        let outcome = client
            .post(format!("{base}/api/v1/executions"))
            .bearer_auth(&token)
            .json(&json!({"kind": "sleep", "input": {"duration_ms": 30_000}}))
            .send()
            .await
            .map(|response| response.status().as_u16());
        record(&tallies, "flooder: submit an execution", started, outcome);
    }
}

/// A long-running execution of the flooder's, for its streams to watch.
async fn watched_execution(client: &reqwest::Client, base: &str, flooder: &Account) -> String {
    let created: Value = client
        .post(format!("{base}/api/v1/executions"))
        .bearer_auth(&flooder.token)
        .json(&json!({"kind": "sleep", "input": {"duration_ms": 55_000, "steps": 100}}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    created["id"]
        .as_str()
        .expect("the execution was accepted")
        .to_owned()
}

fn start_flood(
    client: &reqwest::Client,
    base: &str,
    flooder: &Account,
    execution: &str,
    model: &str,
    stop: &CancellationToken,
    tallies: &Tallies,
) -> Vec<tokio::task::JoinHandle<()>> {
    let flood = Flood {
        client: client.clone(),
        base: base.to_owned(),
        token: flooder.token.clone(),
        stop: stop.clone(),
        tallies: tallies.clone(),
    };
    let mut tasks = Vec::new();
    for _ in 0..FLOOD_EMBED_LOOPS {
        tasks.push(tokio::spawn(flood_embeddings(
            flood.clone(),
            model.to_owned(),
        )));
    }
    for _ in 0..FLOOD_STREAMS {
        tasks.push(tokio::spawn(flood_stream(
            flood.clone(),
            execution.to_owned(),
        )));
    }
    for _ in 0..FLOOD_SUBMIT_LOOPS {
        tasks.push(tokio::spawn(flood_submissions(flood.clone())));
    }
    tasks
}

fn millis(duration: Duration) -> String {
    format!("{:.1} ms", duration.as_secs_f64() * 1000.0)
}

#[tokio::main]
async fn main() {
    let mut args = std::env::args().skip(1);
    let base = args
        .next()
        .expect("usage: noisy_neighbour BASE_URL [SECONDS] [MODEL]");
    let seconds: u64 = args.next().and_then(|s| s.parse().ok()).unwrap_or(15);
    let model = args.next().unwrap_or_else(|| "all-MiniLM-L6-v2".to_owned());
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(128)
        .build()
        .unwrap();
    let victim = sign_up(&client, &base, "victim").await;
    let flooder = sign_up(&client, &base, "flooder").await;

    let quiet = measure_victim(&client, &base, &victim, &model, seconds).await;

    let execution = watched_execution(&client, &base, &flooder).await;
    let stop = CancellationToken::new();
    let flood_tallies = Tallies::default();
    let flood = start_flood(
        &client,
        &base,
        &flooder,
        &execution,
        &model,
        &stop,
        &flood_tallies,
    );
    tokio::time::sleep(Duration::from_secs(2)).await;
    let noisy = measure_victim(&client, &base, &victim, &model, seconds).await;
    stop.cancel();
    for task in flood {
        let _ = tokio::time::timeout(Duration::from_secs(30), task).await;
    }

    println!(
        "| victim call | quiet p50 | quiet p99 | flooded p50 | flooded p99 | flooded p99 ÷ quiet p99 | answers (quiet; flooded) |"
    );
    println!("| --- | --- | --- | --- | --- | --- | --- |");
    for (call, calm) in &quiet {
        let loud = &noisy[call];
        let ratio =
            loud.percentile(0.99).as_secs_f64() / calm.percentile(0.99).as_secs_f64().max(1e-9);
        println!(
            "| {call} | {} | {} | {} | {} | {ratio:.2}× | {}; {} |",
            millis(calm.percentile(0.5)),
            millis(calm.percentile(0.99)),
            millis(loud.percentile(0.5)),
            millis(loud.percentile(0.99)),
            calm.classes(),
            loud.classes(),
        );
    }
    println!();
    println!("| flooder call | answers | p50 |");
    println!("| --- | --- | --- |");
    for (call, tally) in Arc::try_unwrap(flood_tallies)
        .ok()
        .unwrap()
        .into_inner()
        .unwrap()
    {
        println!(
            "| {call} | {} | {} |",
            tally.classes(),
            millis(tally.percentile(0.5))
        );
    }
}
