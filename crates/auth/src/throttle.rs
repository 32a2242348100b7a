//! Failed-login throttling, per username and per client address.
//!
//! Each key keeps the times of its recent failures. When a key has `max_failures` failures within
//! `window_secs`, further attempts are refused (without checking the password) until the oldest
//! of them leaves the window. A success clears the username's record only, so it says nothing
//! about other users or addresses.

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

/// Limits for [`LoginThrottle`].
#[derive(Debug, Clone, Copy)]
pub struct ThrottlePolicy {
    /// Failures allowed for one username within the window (0: no limit).
    pub per_user: usize,
    /// Failures allowed from one client address within the window (0: no limit).
    pub per_address: usize,
    pub window_secs: u64,
}

impl Default for ThrottlePolicy {
    fn default() -> Self {
        Self {
            per_user: 5,
            per_address: 20,
            window_secs: 60,
        }
    }
}

/// Keys beyond this many are pruned of stale entries, so an attacker cycling usernames cannot
/// grow memory without bound.
const PRUNE_ABOVE: usize = 10_000;
/// Usernames are truncated to this many bytes before use as a key.
const MAX_KEY_LEN: usize = 256;

#[derive(Default)]
struct Failures {
    by_user: HashMap<String, VecDeque<u64>>,
    by_address: HashMap<String, VecDeque<u64>>,
}

pub struct LoginThrottle {
    policy: ThrottlePolicy,
    failures: Mutex<Failures>,
}

impl LoginThrottle {
    pub fn new(policy: ThrottlePolicy) -> Self {
        Self {
            policy,
            failures: Mutex::new(Failures::default()),
        }
    }

    /// `Some(seconds to wait)` when either the username or the address is throttled now.
    pub fn retry_after(&self, username: &str, address: &str, now: u64) -> Option<u64> {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let window = self.policy.window_secs;
        let user = wait(
            failures.by_user.get_mut(key(username)),
            self.policy.per_user,
            now,
            window,
        );
        let addr = wait(
            failures.by_address.get_mut(address),
            self.policy.per_address,
            now,
            window,
        );
        user.max(addr)
    }

    pub fn record_failure(&self, username: &str, address: &str, now: u64) {
        let mut guard = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let failures = &mut *guard;
        let window = self.policy.window_secs;
        for map in [&mut failures.by_user, &mut failures.by_address] {
            if map.len() > PRUNE_ABOVE {
                map.retain(|_, times| times.back().is_some_and(|t| now < t + window));
            }
        }
        failures
            .by_user
            .entry(key(username).to_string())
            .or_default()
            .push_back(now);
        failures
            .by_address
            .entry(address.to_string())
            .or_default()
            .push_back(now);
    }

    pub fn record_success(&self, username: &str) {
        let mut failures = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        failures.by_user.remove(key(username));
    }
}

fn key(username: &str) -> &str {
    if username.len() <= MAX_KEY_LEN {
        return username;
    }
    let mut end = MAX_KEY_LEN;
    while !username.is_char_boundary(end) {
        end -= 1;
    }
    &username[..end]
}

fn wait(times: Option<&mut VecDeque<u64>>, limit: usize, now: u64, window: u64) -> Option<u64> {
    let times = times?;
    if limit == 0 {
        return None;
    }
    while times.front().is_some_and(|t| now >= t + window) {
        times.pop_front();
    }
    if times.len() < limit {
        return None;
    }
    // Throttled until enough failures leave the window to get under the limit again.
    let release = times[times.len() - limit] + window;
    Some(release.saturating_sub(now).max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_is_throttled_after_limit_and_released_by_the_window() {
        let t = LoginThrottle::new(ThrottlePolicy {
            per_user: 3,
            per_address: 100,
            window_secs: 60,
        });
        for i in 0..3 {
            assert_eq!(t.retry_after("bob", "1.1.1.1", 100 + i), None);
            t.record_failure("bob", "1.1.1.1", 100 + i);
        }
        assert_eq!(t.retry_after("bob", "2.2.2.2", 110), Some(50));
        assert_eq!(t.retry_after("alice", "1.1.1.1", 110), None);
        assert_eq!(t.retry_after("bob", "1.1.1.1", 160), None);
    }

    #[test]
    fn address_is_throttled_across_usernames() {
        let t = LoginThrottle::new(ThrottlePolicy {
            per_user: 100,
            per_address: 2,
            window_secs: 10,
        });
        t.record_failure("a", "9.9.9.9", 0);
        t.record_failure("b", "9.9.9.9", 1);
        assert_eq!(t.retry_after("c", "9.9.9.9", 2), Some(8));
        assert_eq!(t.retry_after("c", "8.8.8.8", 2), None);
    }
}
