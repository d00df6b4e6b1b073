//! Unit tests of `decide`: the decision rules over score sequences.

use super::*;

fn cfg() -> DecideConfig {
    DecideConfig {
        threshold: 0.5,
        off_threshold: 0.3,
        window: 1,
        min_frames: 1,
        off_delay: Duration::ZERO,
        cooldown: Duration::ZERO,
    }
}

fn ms(base: Instant, n: u64) -> Instant {
    base + Duration::from_millis(n)
}

/// Feeds `scores` one per 100 ms starting at `base + start_ms`; returns the transitions.
fn feed(d: &mut Decider, base: Instant, start_ms: u64, scores: &[f32]) -> Vec<Transition> {
    scores
        .iter()
        .enumerate()
        .map(|(i, &s)| {
            d.observe(Some(s), ms(base, start_ms + 100 * i as u64))
                .transition
        })
        .collect()
}

#[test]
fn median_of_odd_even_and_empty() {
    assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
    assert_eq!(median(&[0.9, 0.25, 0.75, 0.1]), 0.5);
    assert_eq!(median(&[4.0]), 4.0);
    assert_eq!(median(&[]), 0.0);
}

#[test]
fn flicker_does_not_toggle() {
    let base = Instant::now();
    let mut d = Decider::new(DecideConfig { window: 3, ..cfg() });
    // isolated spikes never make the median of 3 reach the threshold
    let t = feed(
        &mut d,
        base,
        0,
        &[0.0, 0.9, 0.0, 0.0, 0.9, 0.0, 0.0, 0.9, 0.0, 0.0],
    );
    assert!(t.iter().all(|&x| x == Transition::None), "{t:?}");
    assert!(!d.is_on());
    // and once ON, a single dip does not end it
    let t = feed(&mut d, base, 1000, &[0.9, 0.9, 0.0, 0.9, 0.9, 0.0, 0.9]);
    assert_eq!(t[1], Transition::Started);
    assert!(!t[2..].contains(&Transition::Ended), "{t:?}");
    assert!(d.is_on());
}

#[test]
fn min_frames_consecutive() {
    let base = Instant::now();
    let mut d = Decider::new(DecideConfig {
        min_frames: 3,
        ..cfg()
    });
    // two highs then a low reset the count
    let t = feed(&mut d, base, 0, &[0.9, 0.9, 0.1, 0.9, 0.9]);
    assert!(t.iter().all(|&x| x == Transition::None), "{t:?}");
    assert!(!d.is_on());
    let dec = d.observe(Some(0.9), ms(base, 500));
    assert_eq!(dec.transition, Transition::Started);
    assert!(dec.on);
    assert_eq!(dec.smoothed, 0.9);
}

#[test]
fn hysteresis_band_keeps_state() {
    let base = Instant::now();
    let mut d = Decider::new(cfg());
    // OFF: 0.4 is in the band, not enough to start
    assert_eq!(
        feed(&mut d, base, 0, &[0.4, 0.4]),
        vec![Transition::None; 2]
    );
    assert!(!d.is_on());
    assert_eq!(
        d.observe(Some(0.6), ms(base, 200)).transition,
        Transition::Started
    );
    // ON: 0.4 and exactly off_threshold are not "below", even with no off_delay
    let t = feed(&mut d, base, 300, &[0.4, 0.3, 0.45]);
    assert!(!t.contains(&Transition::Ended), "{t:?}");
    assert!(d.is_on());
    assert_eq!(
        d.observe(Some(0.29), ms(base, 600)).transition,
        Transition::Ended
    );
    assert!(!d.is_on());
}

#[test]
fn off_delay_on_tick_and_cancel() {
    let base = Instant::now();
    let mut d = Decider::new(DecideConfig {
        off_delay: Duration::from_secs(2),
        ..cfg()
    });
    assert_eq!(
        d.observe(Some(0.9), ms(base, 0)).transition,
        Transition::Started
    );
    // goes below at 1 s: not over at 2.5 s
    assert_eq!(
        d.observe(Some(0.1), ms(base, 1000)).transition,
        Transition::None
    );
    assert_eq!(d.tick(ms(base, 2500)).transition, Transition::None);
    assert!(d.is_on());
    // back above at 2.9 s cancels the pending off; the timer restarts at the next low
    assert_eq!(
        d.observe(Some(0.4), ms(base, 2900)).transition,
        Transition::None
    );
    assert_eq!(d.tick(ms(base, 3500)).transition, Transition::None);
    assert_eq!(
        d.observe(Some(0.1), ms(base, 4000)).transition,
        Transition::None
    );
    assert_eq!(d.tick(ms(base, 5999)).transition, Transition::None);
    assert!(d.is_on());
    let dec = d.tick(ms(base, 6000));
    assert_eq!(dec.transition, Transition::Ended);
    assert!(!dec.on && !d.is_on());
    // nothing more to end
    assert_eq!(d.tick(ms(base, 9000)).transition, Transition::None);
}

#[test]
fn off_delay_on_observe() {
    let base = Instant::now();
    let mut d = Decider::new(DecideConfig {
        off_delay: Duration::from_secs(1),
        ..cfg()
    });
    d.observe(Some(0.9), ms(base, 0));
    let t = feed(&mut d, base, 100, &[0.1; 11]);
    // below since 100 ms: ends at 1100 ms, the 11th low frame
    assert_eq!(&t[..10], &[Transition::None; 10]);
    assert_eq!(t[10], Transition::Ended);
}

#[test]
fn cooldown_blocks_restart_then_allows() {
    let base = Instant::now();
    let mut d = Decider::new(DecideConfig {
        cooldown: Duration::from_secs(5),
        ..cfg()
    });
    assert_eq!(
        d.observe(Some(0.9), ms(base, 0)).transition,
        Transition::Started
    );
    assert_eq!(
        d.observe(Some(0.0), ms(base, 1000)).transition,
        Transition::Ended
    );
    // high scores during the cooldown do not start an event
    let t = feed(&mut d, base, 1100, &[0.9; 39]); // up to 4900 ms
    assert!(t.iter().all(|&x| x == Transition::None), "{t:?}");
    assert!(!d.is_on());
    assert_eq!(
        d.observe(Some(0.9), ms(base, 6000)).transition,
        Transition::Started
    );
}

#[test]
fn cooldown_counting_continues() {
    let base = Instant::now();
    let mut d = Decider::new(DecideConfig {
        min_frames: 3,
        cooldown: Duration::from_secs(1),
        ..cfg()
    });
    feed(&mut d, base, 0, &[0.9, 0.9, 0.9]);
    assert!(d.is_on());
    assert_eq!(
        d.observe(Some(0.0), ms(base, 300)).transition,
        Transition::Ended
    );
    // three highs inside the cooldown, then the first frame after it starts at once
    feed(&mut d, base, 400, &[0.9, 0.9, 0.9]);
    assert!(!d.is_on());
    assert_eq!(
        d.observe(Some(0.9), ms(base, 1300)).transition,
        Transition::Started
    );
}

#[test]
fn updated_only_on_better_score() {
    let base = Instant::now();
    let mut d = Decider::new(cfg());
    assert_eq!(d.best(), None);
    let t = feed(&mut d, base, 0, &[0.6, 0.7, 0.7, 0.65, 0.4, 0.8, 0.75]);
    let (s, u, n) = (Transition::Started, Transition::Updated, Transition::None);
    assert_eq!(t, vec![s, u, n, n, n, u, n]);
    assert_eq!(d.best(), Some(0.8));
    // a new event starts its own best
    d.observe(Some(0.0), ms(base, 1000));
    d.observe(Some(0.55), ms(base, 1100));
    assert_eq!(d.best(), Some(0.55));
    assert_eq!(
        d.observe(Some(0.6), ms(base, 1200)).transition,
        Transition::Updated
    );
}

#[test]
fn set_thresholds_changes_behaviour() {
    let base = Instant::now();
    let mut d = Decider::new(cfg());
    assert_eq!(
        d.observe(Some(0.4), ms(base, 0)).transition,
        Transition::None
    );
    d.set_thresholds(0.35, 0.2);
    assert_eq!(d.config().threshold, 0.35);
    assert_eq!(
        d.observe(Some(0.4), ms(base, 100)).transition,
        Transition::Started
    );
    // 0.25 is now inside the band, so it no longer ends the event
    assert_eq!(
        d.observe(Some(0.25), ms(base, 200)).transition,
        Transition::None
    );
    assert!(d.is_on());
    d.set_thresholds(0.9, 0.8);
    assert_eq!(
        d.observe(Some(0.5), ms(base, 300)).transition,
        Transition::Ended
    );
    assert_eq!(
        d.observe(Some(0.85), ms(base, 400)).transition,
        Transition::None
    );
    assert!(!d.is_on());
}

#[test]
fn raising_threshold_restarts_count_and_clamps_off() {
    let base = Instant::now();
    let mut d = Decider::new(DecideConfig {
        min_frames: 2,
        ..cfg()
    });
    d.observe(Some(0.6), ms(base, 0));
    d.set_thresholds(0.55, 0.7);
    assert_eq!(d.config().off_threshold, 0.55);
    assert_eq!(
        d.observe(Some(0.6), ms(base, 100)).transition,
        Transition::None
    );
    assert_eq!(
        d.observe(Some(0.6), ms(base, 200)).transition,
        Transition::Started
    );
}

#[test]
fn none_counts_as_zero() {
    let base = Instant::now();
    let mut d = Decider::new(DecideConfig { window: 3, ..cfg() });
    d.observe(Some(0.9), ms(base, 0));
    let dec = d.observe(None, ms(base, 100));
    assert_eq!(dec.smoothed, 0.45);
    assert_eq!(d.observe(None, ms(base, 200)).smoothed, 0.0);
}
