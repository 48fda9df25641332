//! Per-mirror backoff after failing writes. All mirrors share one write
//! budget (`--kube-qps` and the writes in flight); a mirror whose writes keep
//! failing (a quota, an admission webhook, RBAC in one namespace) would
//! otherwise spend it every few seconds and slow every other mirror's
//! scale-in. After a pass with failed writes its next pass waits 1 s,
//! doubling per failing pass up to 5 min (a passing 500 or 409 costs a
//! second; a lasting failure soon costs nothing); a pass whose writes all
//! land, or a new generation of the spec (someone fixed it), ends the wait.
//! Times are passed in, so the rule is tested without sleeping.

use std::time::{Duration, Instant};

pub const FIRST: Duration = Duration::from_secs(1);
const CAP: Duration = Duration::from_secs(300);

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Wait {
    failures: u32,
    until: Instant,
    generation: Option<i64>,
}

/// One mirror's backoff.
#[derive(Debug)]
pub struct WriteBackoff {
    first: Duration,
    wait: Option<Wait>,
}

impl Default for WriteBackoff {
    fn default() -> Self {
        WriteBackoff::starting_at(FIRST)
    }
}

/// How long a mirror still waits, and after how many failing passes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Waiting {
    pub left: Duration,
    pub failures: u32,
}

impl WriteBackoff {
    /// A backoff whose first wait is `first` (tests use a long one).
    pub fn starting_at(first: Duration) -> Self {
        WriteBackoff { first, wait: None }
    }

    /// Whether the mirror (spec at `generation`) must wait before its next
    /// pass. A wait recorded for an older generation does not count.
    pub fn waiting(&self, generation: Option<i64>, now: Instant) -> Option<Waiting> {
        let wait = self.wait.filter(|w| w.generation == generation)?;
        (now < wait.until).then(|| Waiting {
            left: wait.until - now,
            failures: wait.failures,
        })
    }

    /// Records a pass's writes: `failed` of them failed. Returns how long the
    /// mirror now waits (zero when it does not).
    pub fn record(&mut self, generation: Option<i64>, failed: usize, now: Instant) -> Duration {
        if failed == 0 {
            self.wait = None;
            return Duration::ZERO;
        }
        let failures = self
            .wait
            .filter(|w| w.generation == generation)
            .map_or(1, |w| w.failures.saturating_add(1));
        let delay = self
            .first
            .saturating_mul(2u32.saturating_pow(failures - 1))
            .min(CAP);
        self.wait = Some(Wait {
            failures,
            until: now + delay,
            generation,
        });
        delay
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failing_passes_wait_longer_each_time_up_to_the_cap() {
        let mut b = WriteBackoff::default();
        let t = Instant::now();
        let gen1 = Some(1);
        let delays: Vec<u64> = (0..9).map(|_| b.record(gen1, 3, t).as_secs()).collect();
        assert_eq!(delays, [1, 2, 4, 8, 16, 32, 64, 128, 256]);
        assert_eq!(b.record(gen1, 3, t).as_secs(), 300, "the cap");
        assert_eq!(
            b.waiting(gen1, t + Duration::from_secs(299)),
            Some(Waiting {
                left: Duration::from_secs(1),
                failures: 10
            })
        );
        assert_eq!(b.waiting(gen1, t + Duration::from_secs(300)), None);
        assert_eq!(WriteBackoff::default().waiting(gen1, t), None);
    }

    #[test]
    fn success_or_a_new_spec_ends_the_wait() {
        let mut b = WriteBackoff::default();
        let t = Instant::now();
        b.record(Some(1), 1, t);
        b.record(Some(1), 1, t);
        assert!(b.waiting(Some(1), t).is_some());
        assert_eq!(b.record(Some(1), 0, t), Duration::ZERO);
        assert_eq!(b.waiting(Some(1), t), None);

        b.record(Some(1), 1, t);
        assert_eq!(
            b.waiting(Some(2), t),
            None,
            "a new generation is tried at once"
        );
        // And starts counting from one again.
        assert_eq!(b.record(Some(2), 1, t), FIRST);
    }
}
