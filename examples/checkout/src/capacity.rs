//! Capacity in proportion to Ready pods: each Ready pod serves
//! `per_pod` requests per second; requests beyond that get 503.

use std::time::Duration;

/// Requests per second that `ready` pods can serve.
pub fn capacity(ready: u32, per_pod: u32) -> u64 {
    u64::from(ready) * u64::from(per_pod)
}

/// What the limiter decided for one request.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    pub admitted: bool,
    /// Demand over capacity: the busier of the last full second and the
    /// current one, so latency rises as soon as load nears capacity rather
    /// than only at the end of each window.
    pub utilisation: f64,
}

/// A fixed one-second window counter. Fixed windows are crude but make the
/// error ratio under overload easy to predict: with capacity C and load
/// L > C, about (L − C) / L of requests are refused.
#[derive(Debug, Default)]
pub struct Limiter {
    second: u64,
    arrived: u64,
    served: u64,
    previous: u64,
}

impl Limiter {
    /// Decide a request arriving in `second` (any monotonic second count)
    /// against `capacity` requests per second.
    pub fn admit(&mut self, second: u64, capacity: u64) -> Decision {
        if second != self.second {
            // A gap of more than one second means nothing arrived last second.
            self.previous = if second == self.second.wrapping_add(1) {
                self.arrived
            } else {
                0
            };
            self.second = second;
            self.arrived = 0;
            self.served = 0;
        }
        self.arrived += 1;
        let admitted = self.served < capacity;
        if admitted {
            self.served += 1;
        }
        let demand = self.previous.max(self.arrived);
        let utilisation = if capacity == 0 {
            f64::INFINITY
        } else {
            demand as f64 / capacity as f64
        };
        Decision {
            admitted,
            utilisation,
        }
    }
}

/// Simulated handler time: a few milliseconds when idle, growing
/// quadratically from half capacity on, as queueing would, and past 100 ms
/// under heavy overload so a latency SLO can burn too. `jitter` in [0, 1)
/// spreads requests across histogram buckets.
pub fn latency(utilisation: f64, jitter: f64) -> Duration {
    let busy = ((utilisation - 0.5) / 0.5).clamp(0.0, 3.0);
    let jitter = jitter.clamp(0.0, 1.0);
    Duration::from_secs_f64((0.002 + 0.040 * busy * busy) * (0.75 + 0.5 * jitter))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn admitted(l: &mut Limiter, second: u64, n: usize, cap: u64) -> usize {
        (0..n).filter(|_| l.admit(second, cap).admitted).count()
    }

    #[test]
    fn capacity_follows_ready_pods() {
        assert_eq!(capacity(0, 20), 0);
        assert_eq!(capacity(3, 20), 60);
        assert_eq!(capacity(u32::MAX, u32::MAX), u64::from(u32::MAX).pow(2));
    }

    #[test]
    fn refuses_beyond_capacity_and_resets_each_second() {
        let mut l = Limiter::default();
        assert_eq!(admitted(&mut l, 100, 50, capacity(1, 20)), 20);
        assert!(l.admit(101, 20).admitted, "a new second starts empty");
        let mut l = Limiter::default();
        assert_eq!(admitted(&mut l, 7, 50, capacity(3, 20)), 50);
    }

    #[test]
    fn zero_ready_pods_refuse_everything() {
        let mut l = Limiter::default();
        assert_eq!(admitted(&mut l, 1, 10, capacity(0, 20)), 0);
        assert!(l.admit(1, 0).utilisation.is_infinite());
    }

    #[test]
    fn capacity_change_applies_within_the_same_second() {
        let mut l = Limiter::default();
        assert_eq!(admitted(&mut l, 3, 20, 40), 20);
        // Scaled down mid-second: the 20 already served exhaust the new 20.
        assert!(!l.admit(3, 20).admitted);
        assert!(l.admit(3, 60).admitted, "scaled up: room again");
    }

    #[test]
    fn utilisation_carries_last_seconds_demand() {
        let mut l = Limiter::default();
        admitted(&mut l, 10, 30, 60);
        let first = l.admit(11, 60);
        assert!((first.utilisation - 0.5).abs() < 1e-9, "{first:?}");
        // After a quiet second, the memory of demand is gone.
        let mut l = Limiter::default();
        admitted(&mut l, 10, 30, 60);
        let after_gap = l.admit(12, 60);
        assert!((after_gap.utilisation - 1.0 / 60.0).abs() < 1e-9);
    }

    #[test]
    fn latency_is_a_few_ms_when_idle_and_grows_near_capacity() {
        let idle = latency(0.1, 0.5);
        assert!(idle >= Duration::from_millis(1) && idle <= Duration::from_millis(5));
        assert_eq!(latency(0.5, 0.5), idle, "flat up to half capacity");
        let near = latency(0.9, 0.5);
        let full = latency(1.0, 0.5);
        assert!(near > Duration::from_millis(10) && near < full, "{near:?}");
        assert!(full < Duration::from_millis(100), "at capacity: {full:?}");
        assert!(latency(2.0, 0.0) > Duration::from_millis(100));
        assert_eq!(latency(f64::INFINITY, 1.0), latency(100.0, 1.0), "capped");
        assert!(latency(0.1, 0.0) < latency(0.1, 0.99), "jitter spreads");
    }
}
