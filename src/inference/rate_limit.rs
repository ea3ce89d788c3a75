//! Per-user request limits for the inference routes: a token bucket per user
//! that refills continuously (`limit` requests per minute, bursts up to `limit`).
//!
//! The buckets live in this process, so the limit holds per replica. That fits
//! what it protects, this replica's engine; the sign-in limits, which protect
//! accounts, are shared through PostgreSQL instead.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Buckets kept before idle, full ones are dropped.
const PRUNE_ABOVE: usize = 10_000;

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

/// The limiter; `per_minute == 0` allows everything.
#[derive(Debug)]
pub struct RateLimiter {
    per_minute: u32,
    buckets: Mutex<HashMap<Uuid, Bucket>>,
}

impl RateLimiter {
    /// A limiter allowing `per_minute` requests per user per minute (0: no limit).
    pub fn new(per_minute: u32) -> Self {
        Self {
            per_minute,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one request from `user`'s bucket; `Err` holds how long until one is free.
    pub fn check(&self, user: Uuid) -> Result<(), Duration> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let capacity = f64::from(self.per_minute);
        let per_second = capacity / 60.0;
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if buckets.len() > PRUNE_ABOVE {
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * per_second
                    < capacity
            });
        }
        let bucket = buckets.entry(user).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        let refilled = now.duration_since(bucket.updated).as_secs_f64() * per_second;
        bucket.tokens = (bucket.tokens + refilled).min(capacity);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - bucket.tokens) / per_second))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allows_a_burst_of_the_limit_then_refuses_with_the_wait() {
        let limiter = RateLimiter::new(3);
        let user = Uuid::new_v4();
        for _ in 0..3 {
            assert_eq!(limiter.check(user), Ok(()));
        }
        let wait = limiter
            .check(user)
            .expect_err("the fourth request is over the limit");
        assert!(
            wait > Duration::from_secs(15) && wait <= Duration::from_secs(20),
            "{wait:?}"
        );
        assert_eq!(
            limiter.check(Uuid::new_v4()),
            Ok(()),
            "users have their own buckets"
        );
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = RateLimiter::new(0);
        let user = Uuid::new_v4();
        assert!((0..1000).all(|_| limiter.check(user).is_ok()));
    }
}
