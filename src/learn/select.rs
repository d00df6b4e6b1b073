//! Select: which frames to show. Galleries group near-duplicates (embeddings almost the same
//! and close in time: one parked car seen for an hour is one tile with a count, not twenty), and
//! "mark these next" picks the frames the prompt is least sure about, spread over time and
//! scenes, so each round of marks teaches the most.
//!
//! Similarity is the cosine of embeddings centred on the mean of the frames looked at: every
//! frame of a fixed camera shares its background, which makes raw CLIP embeddings of an empty
//! driveway and of a van in it nearly parallel; what differs between them is what counts.

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

/// The rows centred on their mean and normalized (a row equal to the mean stays zero).
fn centred(rows: Vec<Vec<f32>>, extra: &[Vec<f32>]) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let d = rows.first().map_or(0, Vec::len);
    let mut mean = vec![0.0f32; d];
    for r in &rows {
        for (m, v) in mean.iter_mut().zip(r) {
            *m += v / rows.len() as f32;
        }
    }
    let unit = |r: &Vec<f32>| -> Vec<f32> {
        let c: Vec<f32> = r.iter().zip(&mean).map(|(v, m)| v - m).collect();
        let n = dot_lanes(&c, &c).sqrt();
        c.iter()
            .map(|v| if n > 0.0 { v / n } else { 0.0 })
            .collect()
    };
    (
        rows.iter().map(unit).collect(),
        extra.iter().map(unit).collect(),
    )
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
    let order = &order[..order.len().min(SCAN)];
    let (rows, _) = centred(order.iter().map(|&i| row(i)).collect(), &[]);
    let mut out: Vec<(Tile, Vec<f32>)> = vec![];
    for (&i, v) in order.iter().zip(rows) {
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

/// How "mark these next" spreads its picks: at least `gap_ms` apart, at most `n` of them.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub gap_ms: i64,
    pub n: usize,
}

/// Frames worth marking next: among `candidates` (indices), those whose score is closest to
/// `threshold`, skipping any that nearly duplicates a frame already marked (`marked`: their
/// embeddings; at any time: the mark already taught that scene) or one already picked, or lies
/// within `spread.gap_ms` of a pick; up to `spread.n`.
pub fn mark_next(
    candidates: &[usize],
    scores: &[f32],
    threshold: f32,
    row: impl Fn(usize) -> Vec<f32>,
    times: &[i64],
    marked: &[Vec<f32>],
    spread: Spread,
) -> Vec<usize> {
    let mut by_doubt: Vec<usize> = candidates.to_vec();
    by_doubt.sort_by(|a, b| {
        (scores[*a] - threshold)
            .abs()
            .total_cmp(&(scores[*b] - threshold).abs())
    });
    by_doubt.truncate(SCAN);
    let (rows, marked) = centred(by_doubt.iter().map(|&i| row(i)).collect(), marked);
    let mut picked: Vec<(usize, Vec<f32>)> = vec![];
    for (&i, v) in by_doubt.iter().zip(rows) {
        if picked.len() == spread.n {
            break;
        }
        let known = marked.iter().any(|m| dot_lanes(m, &v) > SIMILAR);
        let crowded = picked.iter().any(|(j, w)| {
            (times[*j] - times[i]).abs() < spread.gap_ms || near(w, &v, times[*j], times[i])
        });
        if !known && !crowded {
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
        let spread = Spread {
            gap_ms: 60_000,
            n: 3,
        };
        let picked = mark_next(&all, &scores, 0.5, |i| rows[i].clone(), &times, &[], spread);
        assert_eq!(picked, vec![0, 2, 5]);
        // a scene already marked is not offered again, however long ago (and frames 3 and 4
        // are within a minute of frame 0)
        let marked = [unit(1.0)];
        let picked = mark_next(
            &all,
            &scores,
            0.5,
            |i| rows[i].clone(),
            &times,
            &marked,
            spread,
        );
        assert_eq!(picked, vec![0, 5]);
    }
}
