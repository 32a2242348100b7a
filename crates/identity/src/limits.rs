//! Per-key limits and usage: requests and tokens per minute, requests in flight, and token
//! budgets per UTC day and month. Minute windows and in-flight counts are per supervisor (in
//! memory); usage is written to the store once a poll interval and budgets count every
//! supervisor's use as of the last write (`key_usage`), so a budget shared by several
//! supervisors can be overrun by at most what they use within one interval.

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crossbeam_utils::CachePadded;

use xi_api::identity::KeyLimits;
use xi_auth::KeyScope;

const MINUTE: u64 = 60;

/// Why a request was refused, for the 429 body and `Retry-After`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The limit's field name (`requests_per_minute`, ...).
    pub limit: &'static str,
    pub value: u64,
    pub retry_after_secs: u64,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "This API key has reached its limit {} = {}; retry in {} s",
            self.limit, self.value, self.retry_after_secs
        )
    }
}

/// Use not yet written to the store.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pending {
    pub requests: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub last_used_at: i64,
}

#[derive(Default)]
struct Window {
    /// Admission times (Unix seconds) within the last minute.
    requests: VecDeque<u64>,
    /// (time, tokens) within the last minute.
    tokens: VecDeque<(u64, u64)>,
    /// Tokens of this UTC day and month: the store's count at the last write, plus ours since.
    day: (i64, u64),
    month: (i64, u64),
    pending: Pending,
}

impl Window {
    fn prune(&mut self, now: u64) {
        while self.requests.front().is_some_and(|t| t + MINUTE <= now) {
            self.requests.pop_front();
        }
        while self.tokens.front().is_some_and(|(t, _)| t + MINUTE <= now) {
            self.tokens.pop_front();
        }
    }

    fn roll(&mut self, now: u64) {
        let (day, month) = periods(now);
        if self.day.0 != day {
            self.day = (day, 0);
        }
        if self.month.0 != month {
            self.month = (month, 0);
        }
    }
}

/// Days since the epoch and months since the epoch (UTC) of `now`.
pub fn periods(now: u64) -> (i64, i64) {
    let day = (now / 86_400) as i64;
    let date = time::OffsetDateTime::from_unix_timestamp(now as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let month = (i64::from(date.year()) - 1970) * 12 + i64::from(u8::from(date.month())) - 1;
    (day, month)
}

/// Seconds from `now` to the next UTC midnight and to the next first of a month.
fn until_next_periods(now: u64) -> (u64, u64) {
    let to_midnight = 86_400 - now % 86_400;
    let date = time::OffsetDateTime::from_unix_timestamp(now as i64)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let (year, month) = match date.month() {
        time::Month::December => (date.year() + 1, time::Month::January),
        m => (date.year(), m.next()),
    };
    let next = time::Date::from_calendar_date(year, month, 1)
        .map(|d| d.midnight().assume_utc().unix_timestamp())
        .unwrap_or(now as i64 + 86_400);
    (to_midnight, (next - now as i64).max(1) as u64)
}

pub(crate) struct KeyState {
    window: Mutex<Window>,
    in_flight: AtomicU32,
    /// The key has a day or month budget: its base is read back from the store.
    budgeted: AtomicBool,
    /// The key limits tokens per minute: its tokens are kept per minute.
    per_minute_tokens: AtomicBool,
    /// Requests since the last write to the store, counted apart by each request thread (a
    /// key without limits never takes a lock, nor writes a cache line another thread writes).
    pending_requests: [CachePadded<AtomicU64>; COUNTER_SHARDS],
    /// The last request's time (Unix seconds): written once a second at most.
    last_used: AtomicI64,
}

/// Request counters per key: one per request thread up to this many (threads beyond share).
const COUNTER_SHARDS: usize = 8;

/// This thread's counter shard.
fn counter_shard() -> usize {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static SHARD: usize = NEXT.fetch_add(1, Ordering::Relaxed) % COUNTER_SHARDS;
    }
    SHARD.with(|s| *s)
}

thread_local! {
    /// The key states this thread admitted requests for, per limiter: the hot path takes no
    /// shared lock (a limiter never drops a key's state, so an entry cannot go stale).
    static STATES: RefCell<(u64, LocalStates)> = RefCell::new((0, LocalStates::default()));
}

/// Key states by key id (ids are the store's, not the caller's: a fast hasher is safe here).
type LocalStates = foldhash::HashMap<i64, Arc<KeyState>>;

/// Held for a request's whole life (its response body too); frees its in-flight slot on drop
/// (keys without an in-flight limit hold none).
pub struct Permit {
    state: Option<Arc<KeyState>>,
}

impl Drop for Permit {
    fn drop(&mut self) {
        if let Some(state) = &self.state {
            state.in_flight.fetch_sub(1, Ordering::SeqCst);
        }
    }
}

pub struct Limiter {
    /// Tells this limiter's entries in [`STATES`] from another's (several per process in tests).
    uid: u64,
    keys: RwLock<HashMap<i64, Arc<KeyState>>>,
}

impl Default for Limiter {
    fn default() -> Self {
        static NEXT: AtomicU64 = AtomicU64::new(1);
        Limiter {
            uid: NEXT.fetch_add(1, Ordering::Relaxed),
            keys: RwLock::default(),
        }
    }
}

impl Limiter {
    /// Runs `f` on the state of `key`, from this thread's copy when it has one.
    fn with_state<R>(&self, key: i64, f: impl FnOnce(&Arc<KeyState>) -> R) -> R {
        STATES.with(|cell| {
            let mut local = cell.borrow_mut();
            if local.0 != self.uid {
                *local = (self.uid, LocalStates::default());
            }
            let state = local.1.entry(key).or_insert_with(|| self.state(key));
            f(state)
        })
    }

    /// The state of `key` (created on its first request; never dropped).
    pub(crate) fn state(&self, key: i64) -> Arc<KeyState> {
        // Every request by key asks: a shared read lock, the write lock only for a new key.
        if let Some(state) = self
            .keys
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&key)
        {
            return state.clone();
        }
        let mut keys = self.keys.write().unwrap_or_else(|p| p.into_inner());
        keys.entry(key)
            .or_insert_with(|| {
                Arc::new(KeyState {
                    window: Mutex::new(Window::default()),
                    in_flight: AtomicU32::new(0),
                    budgeted: AtomicBool::new(false),
                    per_minute_tokens: AtomicBool::new(false),
                    pending_requests: Default::default(),
                    last_used: AtomicI64::new(0),
                })
            })
            .clone()
    }

    /// Admits one request of `key` at `now` (Unix seconds), or says which limit refuses it.
    pub fn admit(&self, key: &KeyScope, now: u64) -> Result<Permit, Refusal> {
        self.with_state(key.id, |state| self.admit_to(state, key, now))
    }

    /// [`Limiter::admit`] with the key's state at hand.
    pub(crate) fn admit_to(
        &self,
        state: &Arc<KeyState>,
        key: &KeyScope,
        now: u64,
    ) -> Result<Permit, Refusal> {
        let limits: KeyLimits = key.limits;
        let budgeted = limits.tokens_per_day.is_some() || limits.tokens_per_month.is_some();
        // Stores only on a change: a line every request thread writes is a line they fight for.
        let set = |flag: &AtomicBool, value: bool| {
            if flag.load(Ordering::Relaxed) != value {
                flag.store(value, Ordering::Relaxed);
            }
        };
        set(&state.budgeted, budgeted);
        set(&state.per_minute_tokens, limits.tokens_per_minute.is_some());
        let permit = match limits.concurrent_requests {
            Some(max) => {
                let before = state.in_flight.fetch_add(1, Ordering::SeqCst);
                let permit = Permit {
                    state: Some(state.clone()),
                };
                if before >= max {
                    return Err(Refusal {
                        limit: "concurrent_requests",
                        value: u64::from(max),
                        retry_after_secs: 1,
                    });
                }
                permit
            }
            None => Permit { state: None },
        };
        let windowed =
            limits.requests_per_minute.is_some() || limits.tokens_per_minute.is_some() || budgeted;
        if windowed {
            self.check_windows(state, &limits, now)?;
        }
        state.pending_requests[counter_shard()].fetch_add(1, Ordering::Relaxed);
        if state.last_used.load(Ordering::Relaxed) < now as i64 {
            state.last_used.fetch_max(now as i64, Ordering::Relaxed);
        }
        Ok(permit)
    }

    fn check_windows(&self, state: &KeyState, limits: &KeyLimits, now: u64) -> Result<(), Refusal> {
        let mut w = state.window.lock().unwrap_or_else(|p| p.into_inner());
        w.prune(now);
        w.roll(now);
        if let Some(max) = limits.requests_per_minute {
            if w.requests.len() as u64 >= u64::from(max) {
                let oldest = w.requests.front().copied().unwrap_or(now);
                return Err(Refusal {
                    limit: "requests_per_minute",
                    value: u64::from(max),
                    retry_after_secs: (oldest + MINUTE).saturating_sub(now).max(1),
                });
            }
        }
        if let Some(max) = limits.tokens_per_minute {
            let used: u64 = w.tokens.iter().map(|(_, n)| n).sum();
            if used >= max {
                let oldest = w.tokens.front().map_or(now, |(t, _)| *t);
                return Err(Refusal {
                    limit: "tokens_per_minute",
                    value: max,
                    retry_after_secs: (oldest + MINUTE).saturating_sub(now).max(1),
                });
            }
        }
        let (to_midnight, to_month) = until_next_periods(now);
        if let Some(max) = limits.tokens_per_day.filter(|max| w.day.1 >= *max) {
            return Err(Refusal {
                limit: "tokens_per_day",
                value: max,
                retry_after_secs: to_midnight,
            });
        }
        if let Some(max) = limits.tokens_per_month.filter(|max| w.month.1 >= *max) {
            return Err(Refusal {
                limit: "tokens_per_month",
                value: max,
                retry_after_secs: to_month,
            });
        }
        // Only a key that limits them keeps its requests' times (a minute of them).
        if limits.requests_per_minute.is_some() {
            w.requests.push_back(now);
        }
        Ok(())
    }

    /// Counts the tokens of a finished request of `key`.
    pub fn record_tokens(&self, key: i64, prompt: u64, completion: u64, now: u64) {
        let state = self.state(key);
        let mut w = state.window.lock().unwrap_or_else(|p| p.into_inner());
        w.prune(now);
        w.roll(now);
        let tokens = prompt + completion;
        if state.per_minute_tokens.load(Ordering::Relaxed) {
            w.tokens.push_back((now, tokens));
        }
        w.day.1 += tokens;
        w.month.1 += tokens;
        w.pending.prompt_tokens += prompt;
        w.pending.completion_tokens += completion;
    }

    /// Takes every key's unwritten use (to write to the store).
    pub fn take_pending(&self) -> Vec<(i64, Pending)> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter_map(|(id, state)| {
                let mut w = state.window.lock().unwrap_or_else(|p| p.into_inner());
                let mut pending = std::mem::take(&mut w.pending);
                pending.requests += state
                    .pending_requests
                    .iter()
                    .map(|shard| shard.swap(0, Ordering::Relaxed))
                    .sum::<u64>();
                let used = pending.requests + pending.prompt_tokens + pending.completion_tokens;
                pending.last_used_at = pending
                    .last_used_at
                    .max(state.last_used.load(Ordering::Relaxed));
                (used > 0).then_some((*id, pending))
            })
            .collect()
    }

    /// Gives back use that could not be written (the store was down): it is written next time.
    pub fn restore_pending(&self, key: i64, p: Pending) {
        let state = self.state(key);
        let mut w = state.window.lock().unwrap_or_else(|p| p.into_inner());
        w.pending.requests += p.requests;
        w.pending.prompt_tokens += p.prompt_tokens;
        w.pending.completion_tokens += p.completion_tokens;
        w.pending.last_used_at = w.pending.last_used_at.max(p.last_used_at);
    }

    /// The store's token counts of `key` for the day and month periods (every supervisor's use
    /// as of the last write); what this supervisor used since is added as it happens.
    pub fn set_budget_base(&self, key: i64, day: (i64, u64), month: (i64, u64)) {
        let state = self.state(key);
        let mut w = state.window.lock().unwrap_or_else(|p| p.into_inner());
        w.day = day;
        w.month = month;
    }

    /// Keys seen by this supervisor that have a day or month budget.
    pub fn budgeted_keys(&self) -> Vec<i64> {
        let keys = self.keys.read().unwrap_or_else(|p| p.into_inner());
        keys.iter()
            .filter(|(_, s)| s.budgeted.load(Ordering::Relaxed))
            .map(|(id, _)| *id)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(limits: KeyLimits) -> KeyScope {
        KeyScope {
            id: 1,
            prefix: "xf-Test".into(),
            models: Vec::new(),
            limits,
        }
    }

    const NOW: u64 = 1_796_169_600; // 2026-12-02T00:00:00Z

    #[test]
    fn requests_per_minute_refuse_then_free_up() {
        let limiter = Limiter::default();
        let k = key(KeyLimits {
            requests_per_minute: Some(2),
            ..KeyLimits::default()
        });
        drop(limiter.admit(&k, NOW).unwrap());
        drop(limiter.admit(&k, NOW + 10).unwrap());
        let refused = limiter.admit(&k, NOW + 20).err().unwrap();
        assert_eq!(refused.limit, "requests_per_minute");
        assert_eq!(refused.retry_after_secs, 40);
        assert!(
            limiter.admit(&k, NOW + 60).is_ok(),
            "the first left the window"
        );
    }

    #[test]
    fn concurrency_is_held_by_the_permit() {
        let limiter = Limiter::default();
        let k = key(KeyLimits {
            concurrent_requests: Some(1),
            ..KeyLimits::default()
        });
        let first = limiter.admit(&k, NOW).unwrap();
        assert_eq!(
            limiter.admit(&k, NOW).err().unwrap().limit,
            "concurrent_requests"
        );
        drop(first);
        assert!(limiter.admit(&k, NOW).is_ok());
    }

    #[test]
    fn token_budgets_per_minute_day_and_month() {
        let limiter = Limiter::default();
        let k = key(KeyLimits {
            tokens_per_minute: Some(100),
            tokens_per_day: Some(150),
            ..KeyLimits::default()
        });
        drop(limiter.admit(&k, NOW).unwrap());
        limiter.record_tokens(1, 60, 50, NOW);
        assert_eq!(
            limiter.admit(&k, NOW + 1).err().unwrap().limit,
            "tokens_per_minute"
        );
        drop(limiter.admit(&k, NOW + 61).unwrap());
        limiter.record_tokens(1, 40, 0, NOW + 61);
        let day = limiter.admit(&k, NOW + 200).err().unwrap();
        assert_eq!(day.limit, "tokens_per_day");
        assert_eq!(day.retry_after_secs, 86_400 - 200);
        assert!(limiter.admit(&k, NOW + 86_400).is_ok(), "a new day");
        let pending = limiter.take_pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1.prompt_tokens, 100);
        assert_eq!(pending[0].1.completion_tokens, 50);
        assert!(limiter.take_pending().is_empty(), "taken once");
    }

    #[test]
    fn requests_from_many_threads_are_all_counted_once() {
        // Each thread counts on its own shard (more threads than shards share some); what is
        // taken is every request, and the latest time, exactly once.
        let limiter = Limiter::default();
        let k = key(KeyLimits::default());
        std::thread::scope(|scope| {
            for t in 0..(COUNTER_SHARDS as u64 + 3) {
                let (limiter, k) = (&limiter, &k);
                scope.spawn(move || {
                    for i in 0..100 {
                        drop(limiter.admit(k, NOW + t * 100 + i).unwrap());
                    }
                });
            }
        });
        let pending = limiter.take_pending();
        assert_eq!(pending.len(), 1);
        assert_eq!(pending[0].1.requests, (COUNTER_SHARDS as u64 + 3) * 100);
        let last = NOW + (COUNTER_SHARDS as u64 + 2) * 100 + 99;
        assert_eq!(pending[0].1.last_used_at, last as i64);
        assert!(limiter.take_pending().is_empty(), "taken once");
        drop(limiter.admit(&k, NOW).unwrap());
        assert_eq!(
            limiter.take_pending()[0].1.requests,
            1,
            "counted again after"
        );
    }

    #[test]
    fn periods_follow_the_utc_calendar() {
        let (day, month) = periods(NOW);
        assert_eq!(day, 20_789);
        assert_eq!(month, (2026 - 1970) * 12 + 11);
        let (to_midnight, to_month) = until_next_periods(NOW + 3600);
        assert_eq!(to_midnight, 86_400 - 3600);
        assert_eq!(
            to_month,
            30 * 86_400 - 3600,
            "December has 31 days; from the 2nd"
        );
    }
}
