//! Backoff: how long to wait before trying a lost peer again (a camera, the MQTT broker). Capped
//! exponential with jitter: a dead peer is not hammered, and peers that dropped together (a
//! switch or an NVR restarting) spread their retries instead of all knocking in the same
//! instant. [`Backoff`] only computes the waits; the caller sleeps ([`sleep_unless`] wakes early
//! on shutdown).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rand::rngs::SmallRng;

/// The waits between tries of one peer: the first failure waits about `first`, each further one
/// about twice the last, never more than `max`; a success starts over.
pub struct Backoff {
    first: Duration,
    max: Duration,
    step: Duration,
    /// The jitter source (no cryptographic use), one per peer so that peers draw differently.
    rng: SmallRng,
}

impl Backoff {
    /// A backoff with its own generator, seeded from the OS.
    pub fn new(first: Duration, max: Duration) -> Backoff {
        Backoff::with_rng(first, max, rand::make_rng())
    }

    /// A backoff drawing from `rng` (a seeded one in tests).
    pub fn with_rng(first: Duration, max: Duration, rng: SmallRng) -> Backoff {
        Backoff {
            first,
            max,
            step: first.min(max),
            rng,
        }
    }

    /// After a failure: the wait before the next try, a random 50-100% of the current step; the
    /// step then doubles, up to the cap.
    pub fn next_wait(&mut self) -> Duration {
        let wait = jitter(self.step, self.max, &mut self.rng);
        self.step = (self.step * 2).min(self.max);
        wait
    }

    /// After a success: the next failure waits about `first` again.
    pub fn reset(&mut self) {
        self.step = self.first.min(self.max);
    }
}

/// A random 50-100% of `step` capped at `max` (so never more than `max`), drawn from `rng`.
pub fn jitter(step: Duration, max: Duration, rng: &mut impl rand::Rng) -> Duration {
    step.min(max)
        .mul_f64(rand::RngExt::random_range(rng, 0.5..1.0))
}

/// Sleeps up to `d`, waking early (within 50 ms) when `shutdown` is set.
pub fn sleep_unless(shutdown: &AtomicBool, d: Duration) {
    let end = Instant::now() + d;
    while !shutdown.load(Ordering::Relaxed) {
        let now = Instant::now();
        if now >= end {
            break;
        }
        std::thread::sleep((end - now).min(Duration::from_millis(50)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    const MAX: Duration = Duration::from_secs(30);

    #[test]
    fn jitter_stays_between_half_and_all_of_the_capped_backoff_and_varies() {
        for seed in [1, 2, 0, u64::MAX, 0x9e37_79b9_7f4a_7c15] {
            let mut rng = SmallRng::seed_from_u64(seed);
            for backoff in [
                Duration::from_millis(500),
                Duration::from_secs(8),
                MAX,
                Duration::from_secs(600),
            ] {
                let capped = backoff.min(MAX);
                let waits: Vec<Duration> =
                    (0..200).map(|_| jitter(backoff, MAX, &mut rng)).collect();
                assert!(
                    waits.iter().all(|w| *w >= capped / 2 && *w <= capped),
                    "seed {seed}, {backoff:?}: {waits:?}"
                );
                let (lo, hi) = (waits.iter().min().copied(), waits.iter().max().copied());
                // spread over the range, not stuck on one value
                assert!(
                    hi.zip(lo).is_some_and(|(h, l)| h - l > capped / 4),
                    "seed {seed}, {backoff:?}: {waits:?}"
                );
            }
        }
        // two threads (two cameras) draw different waits
        let draw = || {
            std::thread::spawn(|| {
                let mut b = Backoff::new(MAX, MAX);
                (0..8).map(|_| b.next_wait()).collect::<Vec<_>>()
            })
        };
        let (a, b) = (draw(), draw());
        assert_ne!(a.join().unwrap(), b.join().unwrap());
    }

    #[test]
    fn waits_double_up_to_the_cap_and_start_over_after_a_success() {
        let first = Duration::from_millis(500);
        let mut b = Backoff::with_rng(first, MAX, SmallRng::seed_from_u64(7));
        // the steps: 0.5, 1, 2, 4, 8, 16, then 30 s (capped) from then on
        let steps: Vec<f64> = vec![0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0];
        for (i, step) in steps.iter().enumerate() {
            let w = b.next_wait().as_secs_f64();
            assert!(
                w >= step / 2.0 && w <= *step,
                "try {i}: {w} s outside {}..={step} s",
                step / 2.0
            );
        }
        b.reset();
        let w = b.next_wait();
        assert!(w >= first / 2 && w <= first, "{w:?} after a reset");
        // and the step after that is 1 s again, not the cap
        let w = b.next_wait();
        assert!(w <= Duration::from_secs(1), "{w:?}");
    }

    #[test]
    fn sleep_unless_wakes_on_shutdown() {
        let stop = AtomicBool::new(true);
        let t = Instant::now();
        sleep_unless(&stop, Duration::from_secs(10));
        assert!(t.elapsed() < Duration::from_secs(1));
        let go = AtomicBool::new(false);
        let t = Instant::now();
        sleep_unless(&go, Duration::from_millis(120));
        assert!(t.elapsed() >= Duration::from_millis(120));
    }
}
