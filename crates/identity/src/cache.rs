//! What authentication remembers, so that a request with a known key or session never waits
//! on the database: verified keys (and unknown ones, so a flood of bad keys costs one lookup
//! each per revision), and session states.
//!
//! Every entry belongs to the store revision it was read at. Any write that could change an
//! entry bumps the revision: this process clears the cache at once, other supervisors on the
//! same database within one poll interval. An entry is also trusted for at most `ttl`: while
//! the database is down nothing can be invalidated, so that is how long cached credentials
//! keep working through an outage.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::RwLock;
use std::time::{Duration, Instant};

/// Entries per map before it is emptied (bounds memory against floods of distinct tokens).
const MAX_ENTRIES: usize = 100_000;

struct Entry<T> {
    value: T,
    at: Instant,
}

pub struct Cache<T: Clone> {
    ttl: Duration,
    revision: AtomicI64,
    entries: RwLock<HashMap<String, Entry<T>>>,
}

impl<T: Clone> Cache<T> {
    pub fn new(ttl: Duration) -> Self {
        Cache {
            ttl,
            revision: AtomicI64::new(i64::MIN),
            entries: RwLock::new(HashMap::new()),
        }
    }

    /// The entry for `key`, if it is younger than the ttl.
    pub fn get(&self, key: &str) -> Option<T> {
        let entries = self.entries.read().unwrap_or_else(|p| p.into_inner());
        let entry = entries.get(key)?;
        (entry.at.elapsed() < self.ttl).then(|| entry.value.clone())
    }

    /// Remembers `value`, read at store revision `revision`; dropped when the cache has moved
    /// on to a newer revision meanwhile (the value may be stale).
    pub fn put(&self, key: String, value: T, revision: i64) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if revision < self.revision.load(Ordering::SeqCst) {
            return;
        }
        if entries.len() >= MAX_ENTRIES {
            entries.clear();
        }
        entries.insert(
            key,
            Entry {
                value,
                at: Instant::now(),
            },
        );
    }

    /// The store is at `revision`: a newer one than the entries were read at empties the cache.
    pub fn observe(&self, revision: i64) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        if self.revision.swap(revision, Ordering::SeqCst) != revision {
            entries.clear();
        }
    }

    /// Forgets every entry (what they were read from changed outside the store: the auth
    /// config file was reloaded).
    pub fn clear(&self) {
        let mut entries = self.entries.write().unwrap_or_else(|p| p.into_inner());
        self.revision.fetch_add(1, Ordering::SeqCst);
        entries.clear();
    }

    pub fn revision(&self) -> i64 {
        self.revision.load(Ordering::SeqCst)
    }

    pub fn len(&self) -> usize {
        self.entries.read().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_new_revision_empties_and_stale_reads_are_dropped() {
        let cache = Cache::new(Duration::from_secs(60));
        cache.observe(1);
        cache.put("a".into(), 1, 1);
        assert_eq!(cache.get("a"), Some(1));
        cache.observe(1);
        assert_eq!(cache.get("a"), Some(1), "the same revision keeps entries");
        cache.observe(2);
        assert_eq!(cache.get("a"), None);
        cache.put("b".into(), 2, 1);
        assert_eq!(
            cache.get("b"),
            None,
            "read before the write that made revision 2"
        );
    }

    #[test]
    fn entries_expire_after_the_ttl() {
        let cache = Cache::new(Duration::from_millis(30));
        cache.observe(0);
        cache.put("a".into(), 1, 0);
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(cache.get("a"), None);
    }
}
