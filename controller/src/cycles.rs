//! The SLO evaluation cycle: when it ticks, and its wall time.
//!
//! Every SLO is evaluated on each tick of the evaluation interval on the
//! wall clock ([`until_next_tick`], `tick_loop`), so the evaluations of all
//! SLOs come in bursts, one per interval, and the SLOs of one burst read
//! the same recorded answers (one query per window per cycle). Evaluated one
//! interval after its own last evaluation instead, each SLO would keep the
//! phase it was created at: the evaluations spread over the whole interval, and no
//! pause would ever mark the end of a cycle. A cycle is one burst: from the
//! start of its first evaluation to the end of its last. Evaluations overlap (many run at once); a pause of half an
//! interval with none starting ends the burst. A cycle longer than half the
//! interval merges with the next one, and is then observed as one long
//! cycle: the figure shows that the operator no longer keeps up.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use prometheus_client::metrics::histogram::Histogram;

/// The burst being timed: the start of its first evaluation and the end of
/// its last so far.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Burst(Option<(Instant, Instant)>);

impl Burst {
    /// An evaluation that ran from `start` to `end`: the burst goes on, or
    /// it ended more than `gap` before `start` and its wall time is
    /// returned, a new burst beginning with this evaluation.
    pub fn evaluated(&mut self, start: Instant, end: Instant, gap: Duration) -> Option<Duration> {
        match self.0 {
            Some((first, last)) if start.saturating_duration_since(last) < gap => {
                self.0 = Some((first.min(start), last.max(end)));
                None
            }
            Some((first, last)) => {
                self.0 = Some((start, end));
                Some(last.saturating_duration_since(first))
            }
            None => {
                self.0 = Some((start, end));
                None
            }
        }
    }
}

/// The wait from `since_epoch` (the wall clock) to the next multiple of
/// `interval`: never zero, so an evaluation that ends on a tick waits for
/// the next one instead of running twice in one.
pub fn until_next_tick(since_epoch: Duration, interval: Duration) -> Duration {
    let interval_ns = interval.as_nanos().max(1);
    let into_tick = since_epoch.as_nanos() % interval_ns;
    Duration::from_nanos(u64::try_from(interval_ns - into_tick).unwrap_or(u64::MAX))
}

/// `headroom_slo_cycle_duration_seconds`: each finished cycle's wall time.
#[derive(Debug)]
pub struct CycleTimer {
    burst: Mutex<Burst>,
    pub seconds: Histogram,
}

impl Default for CycleTimer {
    fn default() -> Self {
        Self {
            burst: Mutex::default(),
            seconds: Histogram::new([
                0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 20.0,
                30.0, 60.0,
            ]),
        }
    }
}

impl CycleTimer {
    /// One SLO evaluated (figures read, status written if it changed), with
    /// SLOs requeued every `interval`.
    pub fn evaluated(&self, start: Instant, end: Instant, interval: Duration) {
        // A panic while holding the lock leaves a burst that is still valid.
        let mut burst = self.burst.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(cycle) = burst.evaluated(start, end, interval / 2) {
            self.seconds.observe(cycle.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cycle_is_a_burst_of_evaluations_ended_by_a_pause() {
        let t0 = Instant::now();
        let at = |ms: u64| t0 + Duration::from_millis(ms);
        let gap = Duration::from_secs(5);
        // (start, end) of each evaluation in ms, in the order they end, and
        // the cycle in ms each one closes.
        type Case<'a> = (&'a str, &'a [(u64, u64)], &'a [Option<u64>]);
        let cases: [Case; 5] = [
            ("the first evaluation closes nothing", &[(0, 10)], &[None]),
            (
                "overlapping evaluations are one burst",
                &[(0, 100), (50, 300), (20, 40)],
                &[None, None, None],
            ),
            (
                "a pause longer than the gap closes the burst, first start to last end",
                &[(0, 100), (50, 300), (10_000, 10_050)],
                &[None, None, Some(300)],
            ),
            (
                "a pause shorter than the gap does not",
                &[(0, 100), (4_000, 4_200), (10_000, 10_050)],
                &[None, None, Some(4_200)],
            ),
            (
                "each pause closes one cycle",
                &[(0, 500), (10_000, 10_700), (20_000, 20_600)],
                &[None, Some(500), Some(700)],
            ),
        ];
        for (what, evaluations, closed) in cases {
            let mut burst = Burst::default();
            let got: Vec<Option<u64>> = evaluations
                .iter()
                .map(|&(s, e)| {
                    burst
                        .evaluated(at(s), at(e), gap)
                        .map(|d| d.as_millis() as u64)
                })
                .collect();
            assert_eq!(got, closed, "{what}");
        }
    }

    #[test]
    fn evaluations_are_requeued_to_the_next_tick_of_the_interval() {
        let s = Duration::from_secs;
        let ms = Duration::from_millis;
        for (now, interval, want, what) in [
            (
                ms(100_250),
                s(10),
                ms(9_750),
                "a quarter second past a tick",
            ),
            (ms(109_999), s(10), ms(1), "just before a tick"),
            (
                s(100),
                s(10),
                s(10),
                "exactly on a tick: the next one, not now",
            ),
            (ms(7_500), s(2), ms(500), "another interval"),
            (
                ms(5),
                Duration::ZERO,
                Duration::from_nanos(1),
                "a zero interval",
            ),
        ] {
            assert_eq!(until_next_tick(now, interval), want, "{what}");
        }
    }

    #[test]
    fn the_timer_observes_each_closed_cycle_once() {
        let timer = CycleTimer::default();
        let t0 = Instant::now();
        let interval = Duration::from_secs(10);
        for cycle in 0..3u64 {
            for slo in 0..4u64 {
                let start = t0 + Duration::from_millis(cycle * 10_000 + slo * 100);
                timer.evaluated(start, start + Duration::from_millis(50), interval);
            }
        }
        let mut text = String::new();
        let mut registry = prometheus_client::registry::Registry::default();
        registry.register("cycle", "", timer.seconds.clone());
        prometheus_client::encoding::text::encode(&mut text, &registry).expect("encodes");
        // Two cycles closed (the third is still open), each 350 ms.
        assert!(text.contains("cycle_count 2"), "{text}");
        assert!(text.contains("cycle_sum 0.7"), "{text}");
    }
}
