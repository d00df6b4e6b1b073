//! Select: which frames to show. Galleries group near-duplicates (embeddings almost the same
//! and close in time: one parked car seen for an hour is one tile with a count, not twenty), and
//! "mark these next" picks the frames the prompt is least sure about, spread over time and
//! scenes, so each round of marks teaches the most.

use crate::history::lab::dot_lanes;

/// Two frames are near-duplicates above this cosine similarity of their embeddings...
pub const SIMILAR: f32 = 0.97;
/// ...when at most this far apart in time.
pub const CLOSE_MS: i64 = 30 * 60 * 1000;
/// Frames a grouping or a selection looks at, at most (the best-ranked ones).
pub const SCAN: usize = 5000;

/// A gallery tile: the frame shown (an index into the scored frames) and how many
/// near-duplicates of it (itself included) the gallery folded into it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize)]
pub struct Tile {
    pub index: usize,
    pub count: usize,
}

fn near(a: &[f32], b: &[f32], ta: i64, tb: i64) -> bool {
    (ta - tb).abs() <= CLOSE_MS && dot_lanes(a, b) > SIMILAR
}

/// Up to `tiles` tiles from frames in display order (`order`, indices), each frame folded into
/// the first tile shown before it that it nearly duplicates. `row(i)` is frame `i`'s normalized
/// embedding, `times[i]` its time.
pub fn group(
    order: &[usize],
    row: impl Fn(usize) -> Vec<f32>,
    times: &[i64],
    tiles: usize,
) -> Vec<Tile> {
    let mut out: Vec<(Tile, Vec<f32>)> = vec![];
    for &i in order.iter().take(SCAN) {
        let v = row(i);
        let full = out.len() >= tiles;
        match out
            .iter_mut()
            .find(|(t, rep)| near(rep, &v, times[t.index], times[i]))
        {
            Some((t, _)) => t.count += 1,
            None if !full => out.push((Tile { index: i, count: 1 }, v)),
            // the gallery is full: later frames only add to the counts of its tiles
            None => {}
        }
    }
    out.into_iter().map(|(t, _)| t).collect()
}

/// Frames worth marking next: among `candidates` (indices), those whose score is closest to
/// `threshold`, skipping any that nearly duplicates one already picked or lies within
/// `min_gap_ms` of it; up to `n`.
pub fn mark_next(
    candidates: &[usize],
    scores: &[f32],
    threshold: f32,
    row: impl Fn(usize) -> Vec<f32>,
    times: &[i64],
    min_gap_ms: i64,
    n: usize,
) -> Vec<usize> {
    let mut by_doubt: Vec<usize> = candidates.to_vec();
    by_doubt.sort_by(|a, b| {
        (scores[*a] - threshold)
            .abs()
            .total_cmp(&(scores[*b] - threshold).abs())
    });
    let mut picked: Vec<(usize, Vec<f32>)> = vec![];
    for &i in by_doubt.iter().take(SCAN) {
        if picked.len() == n {
            break;
        }
        let v = row(i);
        let crowded = picked.iter().any(|(j, w)| {
            (times[*j] - times[i]).abs() < min_gap_ms || near(w, &v, times[*j], times[i])
        });
        if !crowded {
            picked.push((i, v));
        }
    }
    picked.into_iter().map(|(i, _)| i).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn unit(angle: f32) -> Vec<f32> {
        vec![angle.cos(), angle.sin()]
    }

    #[test]
    fn a_repeated_scene_is_one_tile_with_its_count() {
        // frames 0..5 the same scene a minute apart, 5 another scene, 6 the first scene a day later
        let rows: Vec<Vec<f32>> = (0..5)
            .map(|i| unit(0.01 * i as f32))
            .chain([unit(1.2), unit(0.0)])
            .collect();
        let minute = 60_000;
        let times: Vec<i64> = (0..5)
            .map(|i| i * minute)
            .chain([6 * minute, 86_400_000])
            .collect();
        let order: Vec<usize> = (0..7).collect();
        let tiles = group(&order, |i| rows[i].clone(), &times, 20);
        assert_eq!(
            tiles,
            vec![
                Tile { index: 0, count: 5 },
                Tile { index: 5, count: 1 },
                Tile { index: 6, count: 1 }
            ]
        );
        // a full gallery still counts its tiles' duplicates
        let tiles = group(&order, |i| rows[i].clone(), &times, 1);
        assert_eq!(tiles, vec![Tile { index: 0, count: 5 }]);
    }

    #[test]
    fn mark_next_takes_the_doubtful_frames_spread_out() {
        let scores = [0.50, 0.51, 0.49, 0.9, 0.1, 0.52];
        let rows: Vec<Vec<f32>> = [0.0, 0.001, 1.0, 2.0, 3.0, 1.5]
            .iter()
            .map(|a| unit(*a))
            .collect();
        let times = [0, 1_000, 2 * 3_600_000, 3, 4, 5 * 3_600_000];
        let all: Vec<usize> = (0..6).collect();
        // frame 1 is as doubtful as any but a near-duplicate of frame 0 a second later
        let picked = mark_next(&all, &scores, 0.5, |i| rows[i].clone(), &times, 60_000, 3);
        assert_eq!(picked, vec![0, 2, 5]);
    }
}
