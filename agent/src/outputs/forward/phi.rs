//! The phi accrual failure detector (Hayashibara et al., as Fluentd's
//! out_forward, Akka and Cassandra use it) over a receiver's heartbeats:
//! `phi` is how unlikely the silence since the last answered heartbeat is
//! under the distribution of the intervals seen so far (-log10 of the
//! chance the receiver is still alive). See `heartbeat` for who feeds it.

use std::collections::VecDeque;
use std::time::Instant;

/// How many intervals the detector remembers.
const WINDOW: usize = 100;

/// Successful heartbeats of one receiver.
#[derive(Debug, Default)]
pub struct Detector {
    last: Option<Instant>,
    intervals: VecDeque<f64>,
}

impl Detector {
    pub fn arrived(&mut self, now: Instant) {
        if let Some(last) = self.last {
            if self.intervals.len() == WINDOW {
                self.intervals.pop_front();
            }
            self.intervals
                .push_back(now.saturating_duration_since(last).as_secs_f64());
        }
        self.last = Some(now);
    }

    /// phi for the silence from the last heartbeat to `now`; 0 until two
    /// heartbeats have been seen.
    pub fn phi(&self, now: Instant) -> f64 {
        let Some(last) = self.last else { return 0.0 };
        if self.intervals.is_empty() {
            return 0.0;
        }
        let n = self.intervals.len() as f64;
        let mean = self.intervals.iter().sum::<f64>() / n;
        let var = self
            .intervals
            .iter()
            .map(|x| (x - mean).powi(2))
            .sum::<f64>()
            / n;
        // Heartbeats on a quiet loopback are nearly regular: without a
        // floor on the deviation a few milliseconds of scheduling delay
        // would read as a death.
        let sd = var.sqrt().max(mean / 4.0).max(0.01);
        let elapsed = now.saturating_duration_since(last).as_secs_f64();
        phi(elapsed, mean, sd)
    }

    pub fn last(&self) -> Option<Instant> {
        self.last
    }
}

/// -log10(1 - F(elapsed)) for a normal distribution (mean, sd), with the
/// logistic approximation of its CDF that Akka and Cassandra use (exact to
/// 1e-3, and without the cancellation that makes 1 - F round to 0).
fn phi(elapsed: f64, mean: f64, sd: f64) -> f64 {
    let y = (elapsed - mean) / sd;
    // libm's Rust port, not the system's: these two calls were all the
    // agent took from libm.so.6, whose resolvers and pages cost ~330 KiB
    // of idle RSS.
    let e = libm::exp(-y * (1.5976 + 0.070566 * y * y));
    let p_alive = if elapsed > mean {
        e / (1.0 + e)
    } else {
        1.0 - 1.0 / (1.0 + e)
    };
    // A long silence underflows to 0: keep phi finite (about 308) for
    // /metrics and /status.
    -libm::log10(p_alive.max(f64::MIN_POSITIVE))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn phi_grows_with_the_silence() {
        let mut d = Detector::default();
        let t0 = Instant::now();
        assert_eq!(d.phi(t0), 0.0);
        for i in 0..10 {
            d.arrived(t0 + Duration::from_secs(i));
        }
        let last = t0 + Duration::from_secs(9);
        let at = |s: f64| d.phi(last + Duration::from_secs_f64(s));
        assert!(at(0.5) < 1.0, "{}", at(0.5));
        assert!(at(1.0) < 1.0, "on time: {}", at(1.0));
        assert!(at(2.0) > 1.0 && at(2.0) < 16.0, "{}", at(2.0));
        assert!(at(4.0) > 16.0, "three beats missed: {}", at(4.0));
        assert!(at(2.0) < at(3.0) && at(3.0) < at(4.0));
        assert!(
            at(1000.0).is_finite() && at(1000.0) > 300.0,
            "{}",
            at(1000.0)
        );
    }
}
