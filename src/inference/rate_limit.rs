//! Per-user token limits for inference: a token bucket per user that refills
//! continuously (`per_minute` model tokens a minute, bursts up to `per_minute`).
//! It counts tokens, not requests, because tokens are what the engine spends:
//! one 2,048-input request costs as much as two thousand one-sentence ones.
//!
//! A request's exact count is known only once it is tokenized, so admission is
//! in two steps. Before anything else a request needs a bucket that is not
//! empty ([`TokenLimiter::check`]), which costs nothing. Before tokenizing it
//! reserves an upper bound of its tokens ([`TokenLimiter::reserve`]), so
//! concurrent requests cannot all pass on the same balance; afterwards it
//! settles to the exact count ([`Reservation::settle`]). A reservation dropped
//! unsettled (the server failed the request, or its caller went away) is given
//! back whole.
//!
//! The buckets live in this process, so the limit holds per replica. That fits
//! what it protects, this replica's engine; the sign-in limits, which protect
//! accounts, are shared through PostgreSQL instead. At most `max_users` buckets
//! are kept: full ones are forgotten (a new bucket would be full too), and when
//! every tracked user is still spending, a new user is refused until one
//! refills: the limiter fails closed rather than forgetting a spent bucket.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Least time between two sweeps for full buckets, so a crowd of new users
/// cannot make every request scan the whole map.
const PRUNE_INTERVAL: Duration = Duration::from_secs(1);

/// Why tokens were not granted.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum Refusal {
    /// The user's bucket lacks the tokens; they are there after `wait`.
    #[error("the token budget is spent for {wait:?}")]
    Exhausted {
        /// How long until the bucket holds what was asked.
        wait: Duration,
    },
    /// This replica tracks as many users as it may and none has refilled yet.
    #[error("too many users are spending tokens at once")]
    Crowded,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated: Instant,
}

#[derive(Debug, Default)]
struct Buckets {
    by_user: HashMap<Uuid, Bucket>,
    last_prune: Option<Instant>,
}

/// The limiter; `per_minute == 0` grants everything.
#[derive(Debug)]
pub struct TokenLimiter {
    per_minute: u64,
    max_users: usize,
    buckets: Mutex<Buckets>,
}

impl TokenLimiter {
    /// A limiter granting `per_minute` tokens per user per minute (0: no limit),
    /// keeping at most `max_users` users' buckets.
    pub fn new(per_minute: u64, max_users: usize) -> Self {
        Self {
            per_minute,
            max_users,
            buckets: Mutex::new(Buckets::default()),
        }
    }

    /// The tokens a minute each user gets (0: no limit).
    pub fn per_minute(&self) -> u64 {
        self.per_minute
    }

    /// Whether `user` has any tokens left: the check a request passes before
    /// any validation work. Records nothing.
    pub fn check(&self, user: Uuid) -> Result<(), Refusal> {
        if self.per_minute == 0 {
            return Ok(());
        }
        let now = Instant::now();
        let buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        match buckets.by_user.get(&user) {
            None => Ok(()),
            Some(bucket) => self.grant_wait(self.refilled(bucket, now), 1.0),
        }
    }

    /// Takes `tokens` from `user`'s bucket until settled. A reservation larger
    /// than the whole bucket waits for a full one (and its settlement may leave
    /// the bucket below zero), so no amount waits forever.
    pub fn reserve(self: &Arc<Self>, user: Uuid, tokens: usize) -> Result<Reservation, Refusal> {
        let mut reservation = Reservation {
            limiter: Arc::clone(self),
            user,
            reserved: 0.0,
            settled: self.per_minute == 0,
        };
        if self.per_minute == 0 {
            return Ok(reservation);
        }
        let wanted = (tokens as f64).min(self.capacity());
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        if !buckets.by_user.contains_key(&user) && !self.make_room(&mut buckets, now) {
            return Err(Refusal::Crowded);
        }
        let capacity = self.capacity();
        let bucket = buckets.by_user.entry(user).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        bucket.tokens = self.refilled(bucket, now);
        bucket.updated = now;
        self.grant_wait(bucket.tokens, wanted)?;
        bucket.tokens -= wanted;
        reservation.reserved = wanted;
        Ok(reservation)
    }

    /// Gives `amount` tokens back to `user` (negative: takes them).
    fn give_back(&self, user: Uuid, amount: f64) {
        let now = Instant::now();
        let capacity = self.capacity();
        let mut buckets = self.buckets.lock().unwrap_or_else(PoisonError::into_inner);
        let bucket = buckets.by_user.entry(user).or_insert(Bucket {
            tokens: capacity,
            updated: now,
        });
        bucket.tokens = (self.refilled(bucket, now) + amount).min(capacity);
        bucket.updated = now;
    }

    /// Whether a new user's bucket fits, forgetting full buckets when the map is
    /// at its bound (at most once per [`PRUNE_INTERVAL`]).
    fn make_room(&self, buckets: &mut Buckets, now: Instant) -> bool {
        if buckets.by_user.len() < self.max_users {
            return true;
        }
        let swept_lately = buckets
            .last_prune
            .is_some_and(|last| now.duration_since(last) < PRUNE_INTERVAL);
        if !swept_lately {
            buckets.last_prune = Some(now);
            let capacity = self.capacity();
            let per_second = self.per_second();
            buckets.by_user.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.updated).as_secs_f64() * per_second
                    < capacity
            });
        }
        buckets.by_user.len() < self.max_users
    }

    /// `Ok` when `balance` covers `wanted`, else how long until it does.
    fn grant_wait(&self, balance: f64, wanted: f64) -> Result<(), Refusal> {
        if balance >= wanted {
            Ok(())
        } else {
            Err(Refusal::Exhausted {
                wait: Duration::from_secs_f64((wanted - balance) / self.per_second()),
            })
        }
    }

    fn refilled(&self, bucket: &Bucket, now: Instant) -> f64 {
        let refill = now.duration_since(bucket.updated).as_secs_f64() * self.per_second();
        (bucket.tokens + refill).min(self.capacity())
    }

    fn capacity(&self) -> f64 {
        self.per_minute as f64
    }

    fn per_second(&self) -> f64 {
        self.capacity() / 60.0
    }
}

/// Tokens held for a request until it knows its exact count; dropping it
/// unsettled gives them all back.
#[derive(Debug)]
pub struct Reservation {
    limiter: Arc<TokenLimiter>,
    user: Uuid,
    reserved: f64,
    settled: bool,
}

impl Reservation {
    /// Whose tokens these are.
    pub fn user(&self) -> Uuid {
        self.user
    }

    /// Charges exactly `used` tokens: the difference to the reservation is
    /// given back (or, past it, taken).
    pub fn settle(mut self, used: usize) {
        if !self.settled {
            self.settled = true;
            self.limiter
                .give_back(self.user, self.reserved - used as f64);
        }
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        if !self.settled {
            self.limiter.give_back(self.user, self.reserved);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(per_minute: u64, max_users: usize) -> Arc<TokenLimiter> {
        Arc::new(TokenLimiter::new(per_minute, max_users))
    }

    fn wait_of(refusal: Result<Reservation, Refusal>) -> Duration {
        match refusal {
            Err(Refusal::Exhausted { wait }) => wait,
            other => panic!("expected an exhausted bucket, got {other:?}"),
        }
    }

    #[test]
    fn a_minute_of_tokens_then_a_refusal_with_the_wait() {
        let limiter = limiter(600, 10);
        let user = Uuid::new_v4();
        limiter.reserve(user, 400).unwrap().settle(400);
        limiter.reserve(user, 200).unwrap().settle(200);
        assert!(limiter.check(user).is_err(), "the bucket is empty");
        // 600 a minute is 10 a second: 100 tokens are 10 s away.
        let wait = wait_of(limiter.reserve(user, 100));
        assert!(
            wait > Duration::from_secs(9) && wait <= Duration::from_secs(10),
            "{wait:?}"
        );
        let other = Uuid::new_v4();
        assert!(limiter.check(other).is_ok(), "users have their own buckets");
        assert!(limiter.reserve(other, 600).is_ok());
    }

    #[test]
    fn settling_charges_the_exact_count_and_dropping_gives_all_back() {
        let limiter = limiter(1000, 10);
        let user = Uuid::new_v4();
        // Reserved 900, used 100: 900 are left.
        limiter.reserve(user, 900).unwrap().settle(100);
        let held = limiter.reserve(user, 900).unwrap();
        assert!(
            limiter.reserve(user, 200).is_err(),
            "a held reservation counts"
        );
        drop(held);
        limiter.reserve(user, 900).unwrap().settle(900);
        assert!(
            limiter.reserve(user, 200).is_err(),
            "settled tokens stay spent"
        );
    }

    #[test]
    fn a_reservation_larger_than_the_bucket_waits_for_a_full_one_and_leaves_a_debt() {
        let limiter = limiter(60, 10);
        let user = Uuid::new_v4();
        limiter.reserve(user, 1000).unwrap().settle(1000);
        // 60 a minute is 1 a second: the debt of 940 and one more token is 941 s away.
        let wait = wait_of(limiter.reserve(user, 1));
        assert!(wait > Duration::from_secs(940), "{wait:?}");
        assert!(limiter.check(user).is_err());
    }

    #[test]
    fn the_map_is_bounded_and_fails_closed_for_new_users() {
        let limiter = limiter(100, 2);
        let (a, b, c) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        limiter.reserve(a, 50).unwrap().settle(50);
        limiter.reserve(b, 50).unwrap().settle(50);
        assert_eq!(limiter.reserve(c, 1).err(), Some(Refusal::Crowded));
        assert!(
            limiter.reserve(a, 10).is_ok(),
            "tracked users keep spending"
        );
        // A user whose bucket is full again is forgotten to make room.
        let limiter = self::limiter(100, 1);
        drop(limiter.reserve(a, 50).unwrap());
        assert!(limiter.reserve(c, 1).is_ok(), "a's full bucket was pruned");
    }

    #[test]
    fn zero_means_no_limit() {
        let limiter = limiter(0, 1);
        let user = Uuid::new_v4();
        assert!((0..1000).all(|_| limiter.reserve(user, 1_000_000).is_ok()));
        assert!(limiter.check(user).is_ok());
        assert!(limiter.reserve(Uuid::new_v4(), 1).is_ok());
    }
}
