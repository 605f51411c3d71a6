//! A token bucket pacing stateless responses (see [`ResponseRate`]).

use super::*;

/// A token bucket (see [`ResponseRate`]).
pub(super) struct TokenBucket {
    pub(super) rate: ResponseRate,
    pub(super) tokens: f64,
    pub(super) last: Instant,
}

impl TokenBucket {
    pub(super) fn new(rate: ResponseRate, now: Instant) -> Self {
        Self {
            rate,
            tokens: f64::from(rate.burst),
            last: now,
        }
    }

    /// When the next token is there (`now` if one is), after a `take` at `now` failed.
    pub(super) fn next_token_at(&self, now: Instant) -> Instant {
        let missing = (1.0 - self.tokens).max(0.0);
        let per_second = f64::from(self.rate.per_second.max(1));
        self.last.max(now) + Duration::from_secs_f64(missing / per_second)
    }

    pub(super) fn take(&mut self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = self.last.max(now);
        self.tokens = (self.tokens + elapsed * f64::from(self.rate.per_second))
            .min(f64::from(self.rate.burst));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}
