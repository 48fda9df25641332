//! ARM's read limit kept on the client's side. ARM throttles reads per
//! subscription, region and principal with a token bucket (250 tokens,
//! refilled at 25 a second); a hundred scale sets of a thousand VMs read in
//! full every 30 s would ask for 4,200 reads a minute, nearly three times
//! the 1,500 ARM refills. So meshmirror spends its own, smaller bucket: full
//! reads of a set wait for tokens (the resync stretches instead of being
//! throttled by ARM), and reads of the instances an event named keep a
//! reserve that full reads cannot touch, so an event is not stuck behind a
//! fleet's resync.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Who is reading.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReadClass {
    /// A full read of a set (the interval's resync).
    Full,
    /// The instances cloud events named.
    Named,
}

tokio::task_local! {
    /// Reads inside `instances()` are [`ReadClass::Named`]; everything else
    /// is a full read.
    static CLASS: ReadClass;
}

/// Runs `f` with its ARM reads counted as `class`.
pub async fn reading_as<F: Future>(class: ReadClass, f: F) -> F::Output {
    CLASS.scope(class, f).await
}

fn current_class() -> ReadClass {
    CLASS.try_with(|c| *c).unwrap_or(ReadClass::Full)
}

/// A token bucket: `rate` tokens a second up to `burst`; full reads leave
/// `reserve` tokens for named ones.
#[derive(Debug)]
struct Bucket {
    rate: f64,
    burst: f64,
    reserve: f64,
    tokens: f64,
    at: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Bucket {
        let burst = (rate * 10.0).max(1.0);
        Bucket {
            rate,
            burst,
            reserve: (burst / 4.0).floor(),
            tokens: burst,
            at: now,
        }
    }

    /// Takes a token for `class` now, or says how long to wait first.
    fn take(&mut self, class: ReadClass, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.at = now.max(self.at);
        let floor = match class {
            ReadClass::Full => self.reserve,
            ReadClass::Named => 0.0,
        };
        if self.tokens >= floor + 1.0 {
            self.tokens -= 1.0;
            return Ok(());
        }
        Err(Duration::from_secs_f64(
            (floor + 1.0 - self.tokens) / self.rate,
        ))
    }
}

/// The process's ARM read budget (`--azure-arm-reads-per-second`).
#[derive(Debug)]
pub struct ReadBudget {
    bucket: Mutex<Bucket>,
}

impl ReadBudget {
    /// The default: 80% of ARM's refill rate of 25 reads a second.
    pub const DEFAULT_PER_SECOND: f64 = 20.0;

    /// `per_second` reads a second on average, bursts of ten seconds'
    /// worth, a quarter of them kept for named reads.
    pub fn new(per_second: f64) -> ReadBudget {
        ReadBudget {
            bucket: Mutex::new(Bucket::new(per_second.max(0.1), Instant::now())),
        }
    }

    /// Waits until the calling task may send one read. Returns how long it
    /// waited.
    pub async fn take(&self) -> Duration {
        let class = current_class();
        let mut waited = Duration::ZERO;
        loop {
            let wait = match self.bucket.lock() {
                Ok(mut bucket) => bucket.take(class, Instant::now()),
                Err(_) => return waited,
            };
            match wait {
                Ok(()) => return waited,
                Err(wait) => {
                    tokio::time::sleep(wait).await;
                    waited += wait;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_reads_stop_at_the_reserve_and_named_reads_use_it() {
        let t = Instant::now();
        let mut b = Bucket::new(20.0, t);
        assert_eq!((b.burst, b.reserve), (200.0, 50.0));
        for _ in 0..150 {
            b.take(ReadClass::Full, t).expect("within the burst");
        }
        let wait = b.take(ReadClass::Full, t).expect_err("the reserve is left");
        assert_eq!(wait, Duration::from_millis(50), "one token at 20/s");
        for _ in 0..50 {
            b.take(ReadClass::Named, t).expect("the reserve");
        }
        assert!(b.take(ReadClass::Named, t).is_err(), "empty");
        // A second later: 20 tokens, all below the reserve.
        let later = t + Duration::from_secs(1);
        assert!(b.take(ReadClass::Full, later).is_err());
        b.take(ReadClass::Named, later).expect("refilled");
    }

    #[test]
    fn refills_never_pass_the_burst() {
        let t = Instant::now();
        let mut b = Bucket::new(20.0, t);
        let much_later = t + Duration::from_secs(3600);
        let mut taken = 0;
        while b.take(ReadClass::Named, much_later).is_ok() {
            taken += 1;
        }
        assert_eq!(taken, 200);
    }

    /// A hundred scale sets of a thousand VMs (21 reads a full pass: the
    /// set, 10 VM pages, 10 NIC pages), each due every 30 s, and an event
    /// (3 named reads) every second, for ten simulated minutes: no 60 s
    /// window holds more than ARM's 1,500 reads, and no event read waits
    /// longer than a few tokens' time.
    #[test]
    fn a_fleets_resync_stays_under_arms_limit_and_events_keep_their_reserve() {
        let t0 = Instant::now();
        let mut b = Bucket::new(ReadBudget::DEFAULT_PER_SECOND, t0);
        let step = Duration::from_millis(10);
        let sets = 100;
        let mut due: Vec<Duration> = (0..sets).map(|i| Duration::from_millis(i * 300)).collect();
        let mut left = vec![0u32; sets as usize];
        let mut reads: Vec<Duration> = Vec::new();
        let mut passes = 0;
        let mut worst_event_wait = Duration::ZERO;
        let mut event_waiting: Option<(Duration, u32)> = None;
        let mut now = Duration::ZERO;
        while now < Duration::from_secs(600) {
            let at = t0 + now;
            if now.as_millis().is_multiple_of(1000) && event_waiting.is_none() {
                event_waiting = Some((now, 3));
            }
            if let Some((since, n)) = event_waiting {
                let mut n = n;
                while n > 0 && b.take(ReadClass::Named, at).is_ok() {
                    reads.push(now);
                    n -= 1;
                }
                worst_event_wait = worst_event_wait.max(now - since);
                event_waiting = (n > 0).then_some((since, n));
            }
            for s in 0..sets as usize {
                if left[s] == 0 && now >= due[s] {
                    left[s] = 21;
                }
                while left[s] > 0 && b.take(ReadClass::Full, at).is_ok() {
                    reads.push(now);
                    left[s] -= 1;
                    if left[s] == 0 {
                        passes += 1;
                        due[s] = now + Duration::from_secs(30);
                    }
                }
            }
            now += step;
        }
        let mut worst_minute = 0;
        let mut start = 0;
        for end in 0..reads.len() {
            while reads[end] - reads[start] >= Duration::from_secs(60) {
                start += 1;
            }
            worst_minute = worst_minute.max(end - start + 1);
        }
        assert!(worst_minute <= 1_500, "{worst_minute} reads in a minute");
        assert!(
            worst_minute >= 1_200,
            "the budget is used, not starved: {worst_minute}"
        );
        assert!(
            worst_event_wait <= Duration::from_millis(100),
            "an event waited {worst_event_wait:?}"
        );
        // 20 reads a second over 600 s, less the events' 3 a second, in
        // passes of 21 reads: about 480 full passes instead of 2,000.
        assert!((400..=600).contains(&passes), "{passes} full passes");
    }
}
