//! A token bucket that bounds meshmirror's write rate to the API server
//! (`--kube-qps`, `--kube-burst`), so a fleet-wide scale-out cannot flood it.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;
use tokio::time::Instant;

#[derive(Debug)]
struct Bucket {
    tokens: f64,
    last: Instant,
    qps: f64,
    burst: f64,
}

/// Cheap to clone; clones share one bucket.
#[derive(Clone, Debug, Default)]
pub struct RateLimiter(Option<Arc<Mutex<Bucket>>>);

impl RateLimiter {
    pub fn unlimited() -> Self {
        RateLimiter(None)
    }

    /// `qps` writes per second on average, bursts of up to `burst`. A `qps` of
    /// zero or less means unlimited.
    pub fn new(qps: f64, burst: u32) -> Self {
        if qps <= 0.0 {
            return Self::unlimited();
        }
        let burst = f64::from(burst.max(1));
        RateLimiter(Some(Arc::new(Mutex::new(Bucket {
            tokens: burst,
            last: Instant::now(),
            qps,
            burst,
        }))))
    }

    /// Waits for one token.
    pub async fn acquire(&self) {
        let Some(bucket) = &self.0 else { return };
        let wait = {
            let mut b = bucket.lock().await;
            let now = Instant::now();
            b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * b.qps).min(b.burst);
            b.last = now;
            b.tokens -= 1.0;
            if b.tokens >= 0.0 {
                Duration::ZERO
            } else {
                // Taken on credit: later callers queue behind this one.
                Duration::from_secs_f64(-b.tokens / b.qps)
            }
        };
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn burst_then_steady_rate() {
        let limiter = RateLimiter::new(10.0, 5);
        let start = Instant::now();
        for _ in 0..5 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO, "the burst is free");
        for _ in 0..10 {
            limiter.acquire().await;
        }
        // Ten more at 10/s take about a second of (virtual) time.
        let elapsed = start.elapsed();
        assert!(
            elapsed >= Duration::from_millis(990) && elapsed <= Duration::from_millis(1100),
            "{elapsed:?}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn unlimited_never_waits() {
        let limiter = RateLimiter::new(0.0, 0);
        let start = Instant::now();
        for _ in 0..1000 {
            limiter.acquire().await;
        }
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
