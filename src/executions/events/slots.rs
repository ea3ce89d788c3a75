//! Open event streams, counted per user and in all: a stream takes a slot
//! before it does any work and gives it back when its response body is
//! dropped (the client went away, or the stream ended), not when the handler
//! returns, so the count is exact for as long as streams are open.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use uuid::Uuid;

/// Why a stream could not open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotRefused {
    /// The user has as many streams open as one user may.
    UserAtLimit,
    /// The process has as many streams open as it serves.
    ProcessAtLimit,
}

/// The slots of one process.
#[derive(Debug)]
pub struct StreamSlots {
    per_user: usize,
    total: usize,
    open: Mutex<OpenStreams>,
}

#[derive(Debug, Default)]
struct OpenStreams {
    total: usize,
    by_user: HashMap<Uuid, usize>,
}

/// One open stream's slot: dropping it frees the slot.
#[derive(Debug)]
pub struct StreamSlot {
    slots: Arc<StreamSlots>,
    user: Uuid,
}

impl StreamSlots {
    /// Slots for `total` streams at once, `per_user` of them for any one user.
    pub fn new(per_user: usize, total: usize) -> Self {
        Self {
            per_user,
            total,
            open: Mutex::default(),
        }
    }

    /// A slot for one more stream of `user`, unless that would pass a limit.
    pub fn try_take(self: &Arc<Self>, user: Uuid) -> Result<StreamSlot, SlotRefused> {
        let mut open = self.lock();
        if open.by_user.get(&user).copied().unwrap_or(0) >= self.per_user {
            return Err(SlotRefused::UserAtLimit);
        }
        if open.total >= self.total {
            return Err(SlotRefused::ProcessAtLimit);
        }
        open.total += 1;
        *open.by_user.entry(user).or_default() += 1;
        metrics::gauge!("execution_event_streams_open").set(open.total as f64);
        Ok(StreamSlot {
            slots: self.clone(),
            user,
        })
    }

    /// Streams open now, in all.
    pub fn open(&self) -> usize {
        self.lock().total
    }

    fn lock(&self) -> MutexGuard<'_, OpenStreams> {
        // The counts are updated in one step each, so a panic elsewhere cannot
        // leave them half-written: a poisoned lock is still right.
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Drop for StreamSlot {
    fn drop(&mut self) {
        let mut open = self.slots.lock();
        open.total = open.total.saturating_sub(1);
        if let Some(count) = open.by_user.get_mut(&self.user) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                // Users come and go; the map holds only those with open streams.
                open.by_user.remove(&self.user);
            }
        }
        metrics::gauge!("execution_event_streams_open").set(open.total as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_user_gets_at_most_their_share_and_a_closed_stream_frees_its_slot() {
        let slots = Arc::new(StreamSlots::new(2, 10));
        let ada = Uuid::new_v4();
        let first = slots.try_take(ada).expect("the first stream opens");
        let _second = slots.try_take(ada).expect("the second stream opens");
        assert_eq!(slots.try_take(ada).err(), Some(SlotRefused::UserAtLimit));
        assert!(
            slots.try_take(Uuid::new_v4()).is_ok(),
            "others are not limited by ada"
        );
        drop(first);
        assert!(
            slots.try_take(ada).is_ok(),
            "a closed stream's slot is free again"
        );
    }

    #[test]
    fn the_process_serves_at_most_its_total_and_forgets_users_without_streams() {
        let slots = Arc::new(StreamSlots::new(5, 3));
        let held: Vec<StreamSlot> = (0..3)
            .map(|_| slots.try_take(Uuid::new_v4()).expect("under the total"))
            .collect();
        assert_eq!(
            slots.try_take(Uuid::new_v4()).err(),
            Some(SlotRefused::ProcessAtLimit)
        );
        assert_eq!(slots.open(), 3);
        drop(held);
        assert_eq!(slots.open(), 0);
        assert!(slots.lock().by_user.is_empty());
    }
}
