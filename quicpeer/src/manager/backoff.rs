//! Exponential backoff with jitter, as a small state machine of its own.

use std::time::Duration;

use rand::Rng;

use super::ReconnectPolicy;

/// Counts failed attempts and says how long to wait before the next one.
#[derive(Debug, Clone, Default)]
pub(crate) struct Backoff {
    failures: u32,
}

impl Backoff {
    /// Attempts that failed so far.
    pub(crate) fn failures(&self) -> u32 {
        self.failures
    }

    /// Records a failure; returns the delay before the next attempt, or `None` to give up.
    pub(crate) fn fail(
        &mut self,
        policy: &ReconnectPolicy,
        rng: &mut impl Rng,
    ) -> Option<Duration> {
        self.failures += 1;
        if self.failures >= policy.max_attempts {
            return None;
        }
        let exponent = (self.failures - 1).min(20);
        let base = policy
            .backoff_initial
            .saturating_mul(1 << exponent)
            .min(policy.backoff_max);
        let jitter = policy.jitter.clamp(0.0, 1.0);
        // Keep (1 - jitter) of the delay and draw the rest uniformly.
        let fixed = base.mul_f64(1.0 - jitter);
        let random = base.mul_f64(jitter * rng.random::<f64>());
        Some(fixed + random)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn grows_caps_and_gives_up() {
        let policy = ReconnectPolicy {
            backoff_initial: Duration::from_millis(100),
            backoff_max: Duration::from_millis(350),
            jitter: 0.0,
            max_attempts: 5,
            ..ReconnectPolicy::default()
        };
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(1);
        let mut backoff = Backoff::default();
        let delays: Vec<_> = (0..5).map(|_| backoff.fail(&policy, &mut rng)).collect();
        let ms = |v: u64| Some(Duration::from_millis(v));
        assert_eq!(delays, vec![ms(100), ms(200), ms(350), ms(350), None]);
        assert_eq!(backoff.failures(), 5);
    }

    #[test]
    fn jitter_stays_within_the_delay() {
        let policy = ReconnectPolicy {
            jitter: 0.5,
            ..ReconnectPolicy::default()
        };
        let mut rng = rand_chacha::ChaCha20Rng::seed_from_u64(2);
        for _ in 0..100 {
            let delay = Backoff::default().fail(&policy, &mut rng);
            let delay = delay.unwrap_or_default();
            assert!(delay >= policy.backoff_initial / 2 && delay <= policy.backoff_initial);
        }
    }
}
