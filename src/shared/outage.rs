//! Whether the database is known to be unreachable, so that an outage is
//! logged once when it begins and once when it ends — at WARN, since the
//! service is behaving as designed (503 with `Retry-After`) — instead of an
//! ERROR for every request that meets it.

use std::sync::atomic::{AtomicBool, Ordering};

use crate::shared::error::ErrorChain;

/// Set while the last database contact failed. Process-wide: the pool is too.
static DATABASE_DOWN: AtomicBool = AtomicBool::new(false);

/// Records that a request could not reach the database; logs the first such
/// failure of an outage at WARN and the rest at DEBUG. Returns whether this
/// failure began the outage.
pub fn database_down(error: &(dyn std::error::Error + 'static)) -> bool {
    let began = !DATABASE_DOWN.swap(true, Ordering::Relaxed);
    if began {
        metrics::counter!("database_outages_total").increment(1);
        tracing::warn!(
            error = %ErrorChain(error),
            "the database is unreachable; requests that need it answer 503 until it is back"
        );
    } else {
        tracing::debug!(error = %ErrorChain(error), "database still unreachable");
    }
    began
}

/// Records that a database connection was made; logs the end of an outage.
/// Returns whether this ended one.
pub fn database_up() -> bool {
    let ended = DATABASE_DOWN.swap(false, Ordering::Relaxed);
    if ended {
        tracing::warn!("the database is reachable again");
    }
    ended
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outage_is_reported_once_when_it_begins_and_once_when_it_ends() {
        let error = std::io::Error::other("connection refused");
        assert!(database_down(&error), "the first failure begins the outage");
        assert!(!database_down(&error), "later failures are the same outage");
        assert!(database_up(), "a new connection ends it");
        assert!(!database_up(), "and there is nothing more to end");
    }
}
