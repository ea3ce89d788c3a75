//! When a failed attempt runs again: exponential backoff with jitter, as a pure
//! function of the policy, the attempt number and a random draw, so that it can
//! be tested without a clock or a random source (River's `retrypolicy`).

use std::time::Duration;

use chrono::{DateTime, Utc};

use crate::executions::config::WorkerConfig;

/// The backoff settings, apart from the rest of the worker's configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay before the second attempt (before jitter); doubles each attempt.
    pub base: Duration,
    /// The longest delay (before jitter).
    pub max: Duration,
}

impl RetryPolicy {
    /// The policy the worker settings describe.
    pub fn of(settings: &WorkerConfig) -> Self {
        Self {
            base: settings.retry_base,
            max: settings.retry_max,
        }
    }
}

/// The largest exponent applied to `base`: 2^30 times any base already exceeds
/// any sensible maximum, and it keeps the multiplication from overflowing.
const MAX_EXPONENT: u32 = 30;

/// How long to wait after attempt `attempt` failed: base·2^(attempt−1), capped
/// at `max`, then scaled by `0.5 + unit_draw / 2` — a factor in [0.5, 1) for a
/// draw in [0, 1) — so that jobs that failed together do not retry in lockstep.
///
/// An attempt below 1 counts as 1; a draw outside [0, 1] is clamped, and a
/// non-finite one counts as 0.5.
pub fn retry_delay(policy: &RetryPolicy, attempt: i32, unit_draw: f64) -> Duration {
    let exponent = u32::try_from(attempt.saturating_sub(1))
        .unwrap_or(0)
        .min(MAX_EXPONENT);
    let capped = policy
        .base
        .saturating_mul(2u32.saturating_pow(exponent))
        .min(policy.max);
    let unit = if unit_draw.is_finite() {
        unit_draw.clamp(0.0, 1.0)
    } else {
        0.5
    };
    // half + half·draw rather than capped·(0.5 + draw/2): the same factor, but
    // no intermediate exceeds `capped`, so even `Duration::MAX` cannot overflow.
    let half = capped / 2;
    half.saturating_add(half.mul_f64(unit))
}

/// The moment attempt `attempt`, failed at `now`, may run again.
pub fn next_retry_at(
    policy: &RetryPolicy,
    now: DateTime<Utc>,
    attempt: i32,
    unit_draw: f64,
) -> DateTime<Utc> {
    // Past chrono's range only with an absurd maximum: a second then, as before.
    let delay = chrono::Duration::from_std(retry_delay(policy, attempt, unit_draw))
        .unwrap_or_else(|_| chrono::Duration::seconds(1));
    now.checked_add_signed(delay)
        .unwrap_or(DateTime::<Utc>::MAX_UTC)
}

/// A uniform draw in [0, 1) from the operating system's random source (0.5,
/// the middle of the range, if it is unavailable).
pub fn unit_draw() -> f64 {
    let mut random = [0u8; 8];
    match getrandom::fill(&mut random) {
        // The top 53 bits: every value exactly representable, and below 1.
        Ok(()) => (u64::from_le_bytes(random) >> 11) as f64 / (1u64 << 53) as f64,
        Err(_) => 0.5,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLICY: RetryPolicy = RetryPolicy {
        base: Duration::from_secs(1),
        max: Duration::from_secs(300),
    };

    /// Just below 1: the largest draw `unit_draw` returns.
    const TOP_DRAW: f64 = 1.0 - 1.0 / (1u64 << 53) as f64;

    #[test]
    fn each_attempt_waits_between_half_and_all_of_base_times_two_to_the_attempt_minus_one() {
        for attempt in 1..=8 {
            let full = Duration::from_secs(1 << (attempt - 1));
            let shortest = retry_delay(&POLICY, attempt, 0.0);
            let longest = retry_delay(&POLICY, attempt, 0.999_999);
            assert_eq!(shortest, full / 2, "attempt {attempt}");
            assert!(longest < full, "attempt {attempt}: {longest:?}");
            assert!(
                longest >= full.mul_f64(0.999),
                "attempt {attempt}: {longest:?}"
            );
        }
    }

    #[test]
    fn the_delay_is_capped_at_max_before_jitter() {
        // 2^9 s = 512 s would exceed the 300 s cap.
        assert_eq!(retry_delay(&POLICY, 10, 0.0), Duration::from_secs(150));
        assert!(retry_delay(&POLICY, 10, 0.999_999) < POLICY.max);
        let at_cap = RetryPolicy {
            base: Duration::from_secs(5),
            max: Duration::from_secs(5),
        };
        assert_eq!(retry_delay(&at_cap, 1, 0.0), Duration::from_millis(2_500));
        assert_eq!(retry_delay(&at_cap, 4, 0.0), Duration::from_millis(2_500));
    }

    #[test]
    fn jitter_spans_half_to_just_under_the_full_delay() {
        let full = Duration::from_secs(4);
        assert_eq!(retry_delay(&POLICY, 3, 0.0), Duration::from_secs(2));
        assert_eq!(retry_delay(&POLICY, 3, 0.5), Duration::from_secs(3));
        let top = retry_delay(&POLICY, 3, TOP_DRAW);
        assert!(
            top <= full && top > full - Duration::from_micros(1),
            "{top:?}"
        );
        assert!(retry_delay(&POLICY, 3, 0.999_999) < full);
    }

    #[test]
    fn draws_outside_the_unit_interval_stay_within_the_bounds() {
        let (half, full) = (Duration::from_secs(2), Duration::from_secs(4));
        assert_eq!(retry_delay(&POLICY, 3, -1.0), half);
        assert_eq!(retry_delay(&POLICY, 3, 2.0), full);
        assert_eq!(retry_delay(&POLICY, 3, f64::NAN), Duration::from_secs(3));
        assert_eq!(
            retry_delay(&POLICY, 3, f64::INFINITY),
            Duration::from_secs(3)
        );
    }

    #[test]
    fn attempt_zero_and_negative_attempts_wait_like_the_first() {
        let first = retry_delay(&POLICY, 1, 0.0);
        assert_eq!(first, Duration::from_millis(500));
        for attempt in [0, -1, i32::MIN] {
            assert_eq!(
                retry_delay(&POLICY, attempt, 0.0),
                first,
                "attempt {attempt}"
            );
        }
    }

    #[test]
    fn huge_attempts_and_policies_do_not_overflow() {
        assert_eq!(
            retry_delay(&POLICY, i32::MAX, 0.0),
            Duration::from_secs(150)
        );
        let unbounded = RetryPolicy {
            base: Duration::MAX,
            max: Duration::MAX,
        };
        let delay = retry_delay(&unbounded, i32::MAX, TOP_DRAW);
        assert!(delay >= Duration::MAX / 2, "{delay:?}");
        let now = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(
            next_retry_at(&unbounded, now, i32::MAX, 0.0),
            now + chrono::Duration::seconds(1)
        );
    }

    #[test]
    fn the_next_retry_is_now_plus_the_delay() {
        let now = DateTime::<Utc>::UNIX_EPOCH;
        assert_eq!(
            next_retry_at(&POLICY, now, 2, 0.5),
            now + chrono::Duration::milliseconds(1_500)
        );
    }

    #[test]
    fn unit_draws_fall_in_the_unit_interval() {
        for _ in 0..1_000 {
            let draw = unit_draw();
            assert!((0.0..1.0).contains(&draw), "{draw}");
        }
    }
}
