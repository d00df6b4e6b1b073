//! Learn bench: `promptcam bench --model CLIP_DIR --learn MARKS [--history FRAMES]` — what
//! learned prompts cost: teaching from MARKS marks, evaluating a text and a learned prompt on a
//! history of FRAMES stored frames (default 100 000) with those marks, and the learned prompt's
//! share of a frame next to the CLIP image tower's, all in one run.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use anyhow::Result;
use serde::Serialize;

use crate::history::bench::{prompt, vector};
use crate::history::store::{encode_embedding, NewFrame, Store};
use crate::model::identity::ModelIdentity;
use crate::model::{ClipImage, ClipText, ModelDir, Precision};
use crate::web::search::Query;
use crate::web::teach;

#[derive(Serialize)]
pub struct LearnReport {
    pub frames: usize,
    pub marks: usize,
    pub embedding_dim: usize,
    /// `POST /api/lab/learn`'s work: marks read, text prior embedded, 3 strengths x (k folds +
    /// 1) fits, file written; median of 3, ms.
    pub learn_ms: f64,
    /// Of which the fits and cross-validation alone, ms.
    pub train_ms: f64,
    /// `GET /api/lab/evaluate` for a text prompt (its text embedded) and for the learned prompt,
    /// median of 3, ms.
    pub evaluate_text_ms: f64,
    pub evaluate_learned_ms: f64,
    /// The learned prompt's score of one frame (a dot product and a sigmoid), µs.
    pub learned_us_per_frame: f64,
    /// The CLIP image tower on one frame in the same run (median of 5), ms.
    pub image_tower_ms: f64,
    /// The learned prompt's cross-validated F1 on the bench's synthetic marks.
    pub cv_f1: f64,
}

impl std::fmt::Display for LearnReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "learned prompts: {} marks in a history of {} frames ({}-d embeddings)",
            self.marks, self.frames, self.embedding_dim
        )?;
        writeln!(
            f,
            "  learn (read, prior, fits, CV, file) {:>8.1} ms (fits and CV {:.1} ms; CV F1 {:.2})",
            self.learn_ms, self.train_ms, self.cv_f1
        )?;
        writeln!(
            f,
            "  evaluate a text prompt             {:>8.1} ms",
            self.evaluate_text_ms
        )?;
        writeln!(
            f,
            "  evaluate the learned prompt        {:>8.1} ms",
            self.evaluate_learned_ms
        )?;
        write!(
            f,
            "  learned prompt per frame           {:>8.3} µs = {:.1e} of the image tower's {:.1} ms",
            self.learned_us_per_frame,
            self.learned_us_per_frame / 1000.0 / self.image_tower_ms,
            self.image_tower_ms
        )
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

pub fn run(
    model: &std::path::Path,
    quantized: bool,
    frames: usize,
    marks: usize,
    image: &std::path::Path,
) -> Result<LearnReport> {
    let precision = if quantized {
        Precision::Quantized
    } else {
        Precision::Fp32
    };
    let dir = ModelDir::open(model)?;
    let tower = ClipText::load(&dir, precision)?;
    let dim = tower.embed(&["a probe".to_string()])?[0].len();
    let work = std::env::temp_dir().join(format!("promptcam-bench-learn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&work);
    let result = measure(&dir, precision, &tower, dim, frames, marks, image, &work);
    let _ = std::fs::remove_dir_all(&work);
    result
}

#[allow(clippy::too_many_arguments)]
fn measure(
    dir: &ModelDir,
    precision: Precision,
    tower: &ClipText,
    dim: usize,
    frames: usize,
    marks: usize,
    image: &std::path::Path,
    work: &std::path::Path,
) -> Result<LearnReport> {
    anyhow::ensure!(
        marks >= 6 && marks <= frames,
        "--learn needs at least 6 marks and no more than the --history frames ({frames})"
    );
    let identity = Arc::new(ModelIdentity::of(dir, None)?);
    // frames: random unit embeddings, every third one moved along a "something there" axis by
    // three times the spread of a random unit vector along any axis (1 / sqrt(dim))
    let signal = vector(dim, u64::MAX);
    let shift = 3.0 / (dim as f32).sqrt();
    let row = |i: usize| -> Vec<f32> {
        let mut v = vector(dim, i as u64);
        if i % 3 == 0 {
            v.iter_mut().zip(&signal).for_each(|(a, s)| *a += shift * s);
            crate::model::clip::normalize(&mut v);
        }
        v
    };
    let mut store = Store::open(work)?;
    let start = crate::history::unix_ms(SystemTime::now()) - frames as i64 * 500;
    for chunk in (0..frames).collect::<Vec<_>>().chunks(5000) {
        let batch: Vec<NewFrame> = chunk
            .iter()
            .map(|&i| NewFrame {
                camera: "bench".into(),
                t_ms: start + i as i64 * 500,
                motion: false,
                scores: "{}".into(),
                embedding: Some((identity.clone(), encode_embedding(&row(i)))),
                thumbnail: None,
            })
            .collect();
        store.insert(&batch, &[])?;
    }
    // marks spread over the history (frame ids are 1..=frames in insertion order)
    let question = "something there";
    let step = frames / marks;
    for k in 0..marks {
        let i = k * step;
        store.set_mark("bench", question, i as i64 + 1, Some(i % 3 == 0))?;
    }
    drop(store);
    let reader = Store::open_read_only(&work.join(crate::history::store::FILE_NAME))?;
    let prompts = vec![prompt("an empty driveway"), prompt("a parked car")];
    let query = Query {
        text: question.into(),
        negatives: vec![],
        templates: vec![],
    };
    let mut learn_times = vec![];
    let mut learned = None;
    for _ in 0..3 {
        let t = Instant::now();
        let r = teach::learn(
            &reader,
            Some(tower),
            &identity,
            "bench",
            &prompts,
            &query,
            "bench",
            work,
            SystemTime::now(),
        )?;
        learn_times.push(t.elapsed().as_secs_f64() * 1000.0);
        learned = Some(r);
    }
    let learned = learned.expect("three runs");
    let zeros = vec![0.0; dim];
    let mut train_times = vec![];
    for _ in 0..3 {
        let t = Instant::now();
        crate::learn::train(&learned.data.x, dim, &learned.data.yes, &zeros)
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        train_times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    let (mut text_times, mut learned_times) = (vec![], vec![]);
    for _ in 0..3 {
        let t = Instant::now();
        teach::evaluate_text(&reader, tower, &identity, "bench", &prompts, &query, 0.5)?;
        text_times.push(t.elapsed().as_secs_f64() * 1000.0);
        let t = Instant::now();
        teach::evaluate_learned(&reader, &identity, "bench", &learned.prompt, 0.5)?;
        learned_times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // a learned prompt's share of a frame, next to the image tower's
    let v = row(3);
    let n = 200_000;
    let t = Instant::now();
    let mut sink = 0.0f32;
    for _ in 0..n {
        sink += learned.prompt.score(std::hint::black_box(&v));
    }
    std::hint::black_box(sink);
    let learned_us = t.elapsed().as_secs_f64() * 1e6 / n as f64;
    let clip = ClipImage::load(dir, precision)?;
    let picture = crate::decode::read_image(image)?;
    let mut pre = clip.preprocessor();
    let mut tower_times = vec![];
    for k in 0..7 {
        let t = Instant::now();
        clip.embed_pixels(pre.run(&picture)?)?;
        if k >= 2 {
            tower_times.push(t.elapsed().as_secs_f64() * 1000.0);
        }
    }
    Ok(LearnReport {
        frames,
        marks,
        embedding_dim: dim,
        learn_ms: median(learn_times),
        train_ms: median(train_times),
        evaluate_text_ms: median(text_times),
        evaluate_learned_ms: median(learned_times),
        learned_us_per_frame: learned_us,
        image_tower_ms: median(tower_times),
        cv_f1: learned.prompt.cv.f1,
    })
}
