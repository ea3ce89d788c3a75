//! Raw argon2id throughput on this machine with Tessera's parameters: the
//! ceiling `POST /api/v1/auth/token` is measured against in `task bench`.
//!
//! `cargo run --release --example argon2_rate -- [THREADS] [SECONDS]`

// A benchmark: a failed step should stop with its message, which is what `expect` does.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tessera::auth::password::Passwords;

fn main() {
    let mut args = std::env::args().skip(1);
    let threads: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(2);
    let seconds: u64 = args.next().and_then(|a| a.parse().ok()).unwrap_or(10);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    let passwords =
        Arc::new(Passwords::new(Passwords::owasp_params(), threads, usize::MAX).expect("a hasher"));
    let stored = runtime
        .block_on(passwords.hash("correct horse battery staple"))
        .expect("a hash");
    let done = Arc::new(AtomicU64::new(0));
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let started = Instant::now();
    runtime.block_on(async {
        let workers: Vec<_> = (0..threads)
            .map(|_| {
                let (passwords, stored, done) = (passwords.clone(), stored.clone(), done.clone());
                tokio::spawn(async move {
                    while Instant::now() < deadline {
                        let verification = passwords
                            .verify("correct horse battery staple", Some(&stored))
                            .await
                            .expect("a verification");
                        assert!(verification.valid);
                        done.fetch_add(1, Ordering::Relaxed);
                    }
                })
            })
            .collect();
        for worker in workers {
            worker.await.expect("a worker");
        }
    });
    let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
    println!("argon2id (m=19456 KiB, t=2, p=1) verifications/s with {threads} threads: {rate:.1}");
}
