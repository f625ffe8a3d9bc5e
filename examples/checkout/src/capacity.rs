//! Capacity in proportion to Ready pods: each Ready pod serves
//! `per_pod` requests per second; requests beyond that get 503.

/// A fixed one-second window counter. Fixed windows are crude but make
/// the error ratio under overload easy to predict: with capacity C and
/// load L > C, about (L − C) / L of requests are refused.
#[derive(Debug, Default)]
pub struct Limiter {
    second: u64,
    served: u64,
}

impl Limiter {
    /// Whether a request arriving in `second` (Unix seconds) fits within
    /// `capacity` requests per second.
    pub fn admit(&mut self, second: u64, capacity: u64) -> bool {
        if second != self.second {
            self.second = second;
            self.served = 0;
        }
        if self.served < capacity {
            self.served += 1;
            true
        } else {
            false
        }
    }
}

/// Requests per second that `ready` pods can serve.
pub fn capacity(ready: u32, per_pod: u32) -> u64 {
    u64::from(ready) * u64::from(per_pod)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_beyond_capacity_and_resets_each_second() {
        let mut l = Limiter::default();
        let admitted = (0..50).filter(|_| l.admit(100, capacity(1, 20))).count();
        assert_eq!(admitted, 20, "one pod serves 20/s, 30 of 50 refused");
        assert!(l.admit(101, 20), "a new second starts empty");
        assert!(
            !Limiter::default().admit(5, capacity(0, 20)),
            "no Ready pods, no capacity"
        );
        let mut l = Limiter::default();
        assert_eq!((0..50).filter(|_| l.admit(7, capacity(3, 20))).count(), 50);
    }
}
