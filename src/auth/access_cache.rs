//! A short memory of the access-token checks that passed, so that a caller
//! sending many requests with one token costs the database one lookup per
//! `ACCESS_CACHE_SECONDS`, not two round trips per request.
//!
//! Every request with an access token must see its revocation: a deactivated
//! account, a new token version, an ended sign-in. The cache keeps that
//! promise through the database's change notifications (triggers on `users`
//! and `refresh_tokens` announce every such write, whichever process or
//! hand made it): a notification forgets the user's entries, and while the
//! notifications are not reaching this process (the listener is connecting,
//! or lost its connection) nothing is served from memory at all. Entries from
//! before a reconnection are never served after it, since notifications may
//! have been missed in between. The time-to-live bounds what is left: a
//! listener whose connection died without the socket saying so.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::users::models::User;

/// Most remembered sign-ins; when full the memory starts over, so its size is
/// bounded whatever number of tokens clients present.
pub const CAPACITY: usize = 10_000;

/// Where the cache learns that the database's change notifications reach this
/// process: the notification listener.
pub trait ChangeFeed: Send + Sync {
    /// The listener's current connection: `None` while it is not listening,
    /// otherwise a number that differs for every connection it has made.
    fn connection(&self) -> Option<u64>;
}

/// The remembered checks; cheap to share.
pub struct AccessCache {
    ttl: Duration,
    feed: Option<Arc<dyn ChangeFeed>>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// Bumped by every forget, so that a check that read the database before a
    /// change and finishes after it is not remembered.
    generation: u64,
    entries: HashMap<(Uuid, Option<Uuid>), Entry>,
}

struct Entry {
    user: User,
    checked_at: Instant,
    connection: u64,
}

/// Taken before a check reads the database, and given back with its result:
/// the result is remembered only if nothing was forgotten, and the listener
/// did not reconnect, in between.
#[derive(Debug, Clone, Copy)]
pub struct Ticket {
    generation: u64,
    connection: u64,
}

impl AccessCache {
    /// A cache whose entries live `ttl`, fed by `feed`; without a feed (or with
    /// a zero `ttl`) it remembers nothing.
    pub fn new(ttl: Duration, feed: Option<Arc<dyn ChangeFeed>>) -> Self {
        Self {
            ttl,
            feed,
            state: Mutex::default(),
        }
    }

    /// The account behind a token of `user`'s sign-in `session` at
    /// `token_version`, if a check of it passed lately and nothing since says
    /// it may have changed.
    pub fn get(&self, user: Uuid, session: Option<Uuid>, token_version: i64) -> Option<User> {
        let connection = self.live_connection()?;
        let mut state = self.state.lock().ok()?;
        let key = (user, session);
        let entry = state.entries.get(&key)?;
        if entry.connection != connection || entry.checked_at.elapsed() >= self.ttl {
            state.entries.remove(&key);
            return None;
        }
        (entry.user.token_version == token_version && entry.user.is_active)
            .then(|| entry.user.clone())
    }

    /// A ticket for a check about to read the database; `None` when nothing
    /// would be remembered now.
    pub fn ticket(&self) -> Option<Ticket> {
        let connection = self.live_connection()?;
        let generation = self.state.lock().ok()?.generation;
        Some(Ticket {
            generation,
            connection,
        })
    }

    /// Remembers that a token of `user`'s sign-in `session` passed the check
    /// `ticket` was taken for.
    pub fn remember(&self, ticket: Ticket, session: Option<Uuid>, user: &User) {
        if self.live_connection() != Some(ticket.connection) {
            return;
        }
        let Ok(mut state) = self.state.lock() else {
            return;
        };
        if state.generation != ticket.generation {
            return;
        }
        if state.entries.len() >= CAPACITY {
            state.entries.clear();
        }
        state.entries.insert(
            (user.id, session),
            Entry {
                user: user.clone(),
                checked_at: Instant::now(),
                connection: ticket.connection,
            },
        );
    }

    /// Forgets `user`'s sign-ins: their account or one of their sign-ins changed.
    pub fn forget_user(&self, user: Uuid) {
        if let Ok(mut state) = self.state.lock() {
            state.generation += 1;
            state.entries.retain(|(owner, _), _| *owner != user);
        }
    }

    /// Forgets everything: anything may have changed.
    pub fn forget_all(&self) {
        if let Ok(mut state) = self.state.lock() {
            state.generation += 1;
            state.entries.clear();
        }
    }

    /// The feed's connection, when entries may be served and remembered.
    fn live_connection(&self) -> Option<u64> {
        if self.ttl.is_zero() {
            return None;
        }
        self.feed.as_ref()?.connection()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use chrono::Utc;

    use super::*;
    use crate::users::models::Role;

    /// A feed whose connection the test sets; 0 means not listening.
    #[derive(Default)]
    struct TestFeed(AtomicU64);

    impl ChangeFeed for TestFeed {
        fn connection(&self) -> Option<u64> {
            Some(self.0.load(Ordering::SeqCst)).filter(|number| *number != 0)
        }
    }

    fn listening_cache(ttl: Duration) -> (AccessCache, Arc<TestFeed>) {
        let feed = Arc::new(TestFeed(AtomicU64::new(1)));
        (AccessCache::new(ttl, Some(feed.clone())), feed)
    }

    fn user() -> User {
        User {
            id: Uuid::new_v4(),
            email: "someone@example.com".to_owned(),
            full_name: "Someone".to_owned(),
            role: Role::User,
            is_active: true,
            revision: 1,
            token_version: 3,
            created_at: Utc::now(),
            updated_at: Utc::now(),
            email_verified_at: None,
            pending_email: None,
        }
    }

    fn remembered(cache: &AccessCache, session: Option<Uuid>) -> User {
        let user = user();
        let ticket = cache.ticket().expect("a listening cache hands out tickets");
        cache.remember(ticket, session, &user);
        user
    }

    const MINUTE: Duration = Duration::from_secs(60);

    #[test]
    fn a_passed_check_is_served_for_its_sign_in_and_token_version_only() {
        let (cache, _feed) = listening_cache(MINUTE);
        let session = Some(Uuid::new_v4());
        let user = remembered(&cache, session);
        let served = cache.get(user.id, session, 3).expect("remembered");
        assert_eq!(served.id, user.id);
        assert!(cache.get(user.id, session, 4).is_none(), "another version");
        assert!(cache.get(user.id, Some(Uuid::new_v4()), 3).is_none());
        assert!(cache.get(user.id, None, 3).is_none());
        assert!(cache.get(Uuid::new_v4(), session, 3).is_none());
    }

    #[test]
    fn forgetting_a_user_drops_their_sign_ins_and_no_one_elses() {
        let (cache, _feed) = listening_cache(MINUTE);
        let (session, other_session) = (Some(Uuid::new_v4()), Some(Uuid::new_v4()));
        let forgotten = remembered(&cache, session);
        let kept = remembered(&cache, other_session);
        cache.forget_user(forgotten.id);
        assert!(cache.get(forgotten.id, session, 3).is_none());
        assert!(cache.get(kept.id, other_session, 3).is_some());
        cache.forget_all();
        assert!(cache.get(kept.id, other_session, 3).is_none());
    }

    #[test]
    fn a_check_that_straddles_a_forget_is_not_remembered() {
        let (cache, _feed) = listening_cache(MINUTE);
        let user = user();
        let ticket = cache.ticket().expect("listening");
        // The change commits and is announced while the check reads the old row.
        cache.forget_user(user.id);
        cache.remember(ticket, None, &user);
        assert!(cache.get(user.id, None, 3).is_none());
    }

    #[test]
    fn nothing_is_served_or_remembered_while_the_feed_is_down_nor_after_it_reconnects() {
        let (cache, feed) = listening_cache(MINUTE);
        let user = remembered(&cache, None);
        feed.0.store(0, Ordering::SeqCst);
        assert!(cache.get(user.id, None, 3).is_none(), "not listening");
        assert!(cache.ticket().is_none());
        // Reconnected: what was remembered on the old connection may have
        // missed a notification.
        feed.0.store(2, Ordering::SeqCst);
        assert!(cache.get(user.id, None, 3).is_none());
        let straddling = cache.ticket().expect("listening again");
        feed.0.store(3, Ordering::SeqCst);
        cache.remember(straddling, None, &user);
        assert!(cache.get(user.id, None, 3).is_none());
    }

    #[test]
    fn entries_expire_and_a_zero_lifetime_or_no_feed_remembers_nothing() {
        let (cache, _feed) = listening_cache(Duration::from_millis(20));
        let user = remembered(&cache, None);
        std::thread::sleep(Duration::from_millis(30));
        assert!(cache.get(user.id, None, 3).is_none(), "expired");

        let (off, _feed) = listening_cache(Duration::ZERO);
        assert!(off.ticket().is_none());
        assert!(AccessCache::new(MINUTE, None).ticket().is_none());
    }

    #[test]
    fn an_inactive_account_is_never_served() {
        let (cache, _feed) = listening_cache(MINUTE);
        let mut user = user();
        user.is_active = false;
        let ticket = cache.ticket().expect("listening");
        cache.remember(ticket, None, &user);
        assert!(cache.get(user.id, None, 3).is_none());
    }

    #[test]
    fn the_memory_never_holds_more_than_its_capacity() {
        let (cache, _feed) = listening_cache(MINUTE);
        for _ in 0..=CAPACITY {
            remembered(&cache, Some(Uuid::new_v4()));
        }
        let held = cache.state.lock().expect("not poisoned").entries.len();
        assert!((1..=CAPACITY).contains(&held), "{held} entries");
    }
}
