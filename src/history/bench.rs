//! History bench: `promptcam bench --model CLIP_DIR --history N` — what the history costs: the
//! inference thread's share per frame (building the record and handing it over), the history
//! thread's write throughput, the bytes a frame takes on disk (so a camera-day), and a prompt
//! lab query over N stored frames (text tower, embeddings read, scoring, ranking).

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use anyhow::{Context, Result};
use serde::Serialize;

use super::store::{NewFrame, Store};
use super::writer::{prepare_frame, thumbnail};
use super::{FrameRecord, History, PromptScore, Record};
use crate::config::HistoryConfig;
use crate::config::PromptConfig;
use crate::decide::DecideConfig;
use crate::frame::Frame;
use crate::model::ModelKind;
use crate::model::{ClipText, ModelDir, Precision};
use crate::web::search::{self, Query};

#[derive(Serialize)]
pub struct HistoryReport {
    pub frames: usize,
    pub embedding_dim: usize,
    /// Building a frame's record and handing it to the history thread (inference thread), µs.
    pub record_us: f64,
    /// Frames the history thread prepares and commits per second.
    pub writes_per_s: f64,
    /// Bytes on disk per stored frame, thumbnails (one every 10 frames) included.
    pub bytes_per_frame: f64,
    pub thumbnail_bytes: usize,
    /// A camera analysing 2 frames a second all day, with a thumbnail every 5 s.
    pub mb_per_day_at_2fps: f64,
    /// A lab query for a newly typed prompt over all stored frames: median and worst of 5, ms.
    pub query_ms: f64,
    pub query_worst_ms: f64,
    /// The most anonymous memory the queries added to what the process held before them (heap:
    /// scores and frame ids; the database file is mapped, and its pages are the page cache), MB.
    pub query_anon_mb: f64,
    /// The first query, which also embeds the camera's prompts (the negatives), ms.
    pub first_query_ms: f64,
    /// Opening the full history read-write, as the daemon does at start (`PRAGMA quick_check`
    /// over every page included), ms.
    pub open_ms: f64,
    /// The daemon's retention pass once a minute in steady state: the frames of one minute at
    /// 2 fps go, ms.
    pub retain_ms: f64,
    /// Catching up on the oldest tenth of the frames at once (a lowered `keep_days`): the
    /// passes it takes, the longest one and all of them, ms.
    pub catch_up_passes: usize,
    pub catch_up_longest_ms: f64,
    pub catch_up_total_ms: f64,
}

impl std::fmt::Display for HistoryReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "history of {} frames ({}-d embeddings)",
            self.frames, self.embedding_dim
        )?;
        writeln!(
            f,
            "  inference thread, per frame   {:>9.1} µs",
            self.record_us
        )?;
        writeln!(
            f,
            "  history thread, writes        {:>9.0} frames/s",
            self.writes_per_s
        )?;
        writeln!(
            f,
            "  disk per frame                {:>9.0} bytes (thumbnail {} bytes)",
            self.bytes_per_frame, self.thumbnail_bytes
        )?;
        writeln!(
            f,
            "  a camera-day at 2 fps         {:>9.0} MB",
            self.mb_per_day_at_2fps
        )?;
        writeln!(
            f,
            "  lab query over all frames     {:>9.1} ms (worst {:.1}) for a new prompt",
            self.query_ms, self.query_worst_ms
        )?;
        writeln!(
            f,
            "  the first query              {:>9.1} ms (negatives embedded too)",
            self.first_query_ms
        )?;
        writeln!(
            f,
            "  lab query memory (heap)      {:>9.1} MB at most, on top of the process",
            self.query_anon_mb
        )?;
        writeln!(
            f,
            "  open at start (quick_check)   {:>9.1} ms",
            self.open_ms
        )?;
        writeln!(
            f,
            "  retention pass (a minute's)   {:>9.1} ms",
            self.retain_ms
        )?;
        write!(
            f,
            "  retention catching up 10%     {:>9.1} ms the longest of {} passes ({:.1} ms in all)",
            self.catch_up_longest_ms, self.catch_up_passes, self.catch_up_total_ms
        )
    }
}

/// A unit vector of `dim` values, different for each `seed` (a cheap generator: the scores do not
/// matter here, only the shapes and sizes).
pub(crate) fn vector(dim: usize, seed: u64) -> Vec<f32> {
    let mut x = seed
        .wrapping_mul(6364136223846793005)
        .wrapping_add(1442695040888963407);
    let mut v: Vec<f32> = (0..dim)
        .map(|_| {
            x = x
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((x >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        })
        .collect();
    crate::model::clip::normalize(&mut v);
    v
}

pub(crate) fn prompt(text: &str) -> PromptConfig {
    PromptConfig {
        text: text.into(),
        name: text.into(),
        id: crate::config::slug(text),
        model: ModelKind::Clip,
        negatives: vec![],
        ensemble: vec![],
        device_class: None,
        decide: DecideConfig::default(),
        mask_threshold: 0.5,
        tree: None,
        examples: vec![],
        negative_examples: vec![],
        learned: None,
        runtime: None,
    }
}

pub fn run(
    model: &std::path::Path,
    quantized: bool,
    frames: usize,
    image: &std::path::Path,
    keep: Option<&std::path::Path>,
) -> Result<HistoryReport> {
    let precision = if quantized {
        Precision::Quantized
    } else {
        Precision::Fp32
    };
    let tower = ClipText::load(&ModelDir::open(model)?, precision)?;
    let dim = tower.embed(&["a probe".to_string()])?[0].len();
    let picture = crate::decode::read_image(image)?;
    let thumb = thumbnail(&picture, 320).context("unable to encode a thumbnail")?;
    let dir = std::env::temp_dir().join(format!("promptcam-bench-history-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let result = measure(&tower, dim, frames, &picture, thumb, &dir);
    if let (Ok(_), Some(keep)) = (&result, keep) {
        let kept = keep.join(super::store::FILE_NAME);
        std::fs::create_dir_all(keep)
            .and_then(|()| std::fs::copy(dir.join("bulk").join(super::store::FILE_NAME), &kept))
            .with_context(|| format!("unable to keep the history as {}", kept.display()))?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}

fn measure(
    tower: &ClipText,
    dim: usize,
    frames: usize,
    picture: &image::RgbImage,
    thumb: Vec<u8>,
    dir: &std::path::Path,
) -> Result<HistoryReport> {
    let scores = |i: usize| {
        ["a_delivery_van", "a_person"]
            .iter()
            .map(|p| PromptScore {
                prompt: p.to_string(),
                score: (i % 97) as f32 / 97.0,
                bbox: None,
            })
            .collect::<Vec<_>>()
    };
    // the inference thread's share: a record built and handed over, the writer running behind
    let config = HistoryConfig {
        dir: dir.join("live"),
        keep: Duration::from_secs(86400),
        max_bytes: u64::MAX,
        min_free_bytes: 0,
        thumbnail_width: 320,
        thumbnail_interval: Duration::from_secs(5),
    };
    let history = History::start(config)?;
    if let Some(why) = history.stats.health() {
        anyhow::bail!("unable to measure the history's writer: {why}");
    }
    let model = Arc::new(crate::model::identity::ModelIdentity {
        name: "bench".into(),
        sha256: "0".repeat(64),
    });
    let embedding = (model.clone(), vector(dim, 7));
    let frame = Arc::new(Frame {
        image: picture.clone(),
        seq: 0,
        captured_at: SystemTime::now(),
        monotonic: Instant::now(),
    });
    let n = 2000;
    let mut spent = Duration::ZERO;
    for i in 0..n {
        let t = Instant::now();
        history.record(Record::Frame(FrameRecord {
            camera: "bench".into(),
            time: SystemTime::now(),
            motion: true,
            scores: scores(i),
            embedding: Some(embedding.clone()),
            thumbnail: (i % 10 == 0).then(|| frame.clone()),
        }));
        spent += t.elapsed();
        // the history thread keeps up at camera rates: pace it like a fast camera
        std::thread::sleep(Duration::from_micros(500));
    }
    let record_us = spent.as_secs_f64() * 1e6 / n as f64;
    history.stop();

    // the history thread's throughput, and the bytes a frame takes
    let mut store = Store::open(&dir.join("bulk"))?;
    let now = super::unix_ms(SystemTime::now());
    let t = Instant::now();
    let start = now - frames as i64 * 500;
    for chunk in (0..frames).collect::<Vec<_>>().chunks(1000) {
        let batch: Vec<NewFrame> = chunk
            .iter()
            .map(|&i| {
                let mut f = prepare_frame(
                    FrameRecord {
                        camera: "bench".into(),
                        time: super::from_unix_ms(start + i as i64 * 500),
                        motion: i % 3 == 0,
                        scores: scores(i),
                        embedding: Some((model.clone(), vector(dim, i as u64))),
                        thumbnail: None,
                    },
                    320,
                );
                f.thumbnail = (i % 10 == 0).then(|| thumb.clone());
                f
            })
            .collect();
        store.insert(&batch, &[])?;
    }
    let writes_per_s = frames as f64 / t.elapsed().as_secs_f64();
    let bytes_per_frame = store.size_bytes()? as f64 / frames as f64;

    // the lab's query: text tower, every embedding read and scored, ranked
    let prompts = vec![prompt("an empty driveway"), prompt("a parked car")];
    let reader = Store::open_read_only(store.path())?;
    let mut times = vec![];
    // a newly typed prompt each time (its text embedded anew; the negatives, the camera's
    // prompts, were embedded by the first query and are cached as in the running lab)
    let words = [
        "a delivery van",
        "a red car",
        "a person with a parcel",
        "a dog",
        "an open gate",
        "a bicycle",
    ];
    for text in words {
        let query = Query {
            text: text.into(),
            negatives: vec![],
            templates: vec![],
        };
        let t = Instant::now();
        let s = search::score(&reader, tower, "bench", &query, &prompts, 0)?;
        let ranked = crate::history::lab::ranked(&s.scores);
        let _ = search::hits(&s, &ranked[..20.min(ranked.len())]);
        anyhow::ensure!(
            s.scores.len() == frames,
            "the query saw {} of {frames} frames",
            s.scores.len()
        );
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    // the heap one more query takes, sampled apart from the timed ones; what earlier phases
    // freed goes back to the system first, so that it cannot hide the query's own growth
    #[cfg(target_env = "gnu")]
    // SAFETY: malloc_trim only releases free memory of glibc's heap
    unsafe {
        libc::malloc_trim(0);
    }
    let anon_before = crate::bench::status_mb("RssAnon:");
    let (s, anon_peak) = crate::bench::peak_anon_mb(|| {
        let query = Query {
            text: "a person at the gate".into(),
            ..Query::default()
        };
        search::score(&reader, tower, "bench", &query, &prompts, 0)
    });
    anyhow::ensure!(s?.scores.len() == frames, "the memory query missed frames");
    let cold = times.remove(0);
    times.sort_by(f64::total_cmp);
    drop((reader, store));
    // the daemon's start on this history, then a retention pass over it
    let t = Instant::now();
    let mut store = Store::open(&dir.join("bulk"))?;
    let open_ms = t.elapsed().as_secs_f64() * 1000.0;
    // steady state: the minute's frames (at 2 fps) that aged out since the last pass
    let span = frames as u64 * 500;
    let t = Instant::now();
    let steady = store.retain(now, Duration::from_millis(span - 60_000), u64::MAX)?;
    let retain_ms = t.elapsed().as_secs_f64() * 1000.0;
    anyhow::ensure!(
        steady.frames.abs_diff(120) <= 2 && !steady.more,
        "the steady retention pass deleted {} frames, not a minute's 120",
        steady.frames
    );
    // catching up: the oldest tenth, pass after pass as the writer runs them
    let keep = Duration::from_millis(span * 9 / 10);
    let (mut gone, mut passes, mut longest, mut total) = (steady.frames, 0, 0.0f64, 0.0);
    loop {
        let t = Instant::now();
        let r = store.retain(now, keep, u64::MAX)?;
        let ms = t.elapsed().as_secs_f64() * 1000.0;
        (gone, passes, longest, total) = (gone + r.frames, passes + 1, longest.max(ms), total + ms);
        if !r.more {
            break;
        }
    }
    anyhow::ensure!(
        gone.abs_diff(frames / 10) <= 2,
        "the retention passes deleted {gone} of {frames} frames, not a tenth"
    );
    Ok(HistoryReport {
        frames,
        embedding_dim: dim,
        record_us,
        writes_per_s,
        bytes_per_frame,
        thumbnail_bytes: thumb.len(),
        mb_per_day_at_2fps: bytes_per_frame * 2.0 * 86400.0 / 1e6,
        query_anon_mb: anon_peak - anon_before,
        query_ms: times[2],
        query_worst_ms: times[4],
        first_query_ms: cold,
        open_ms,
        retain_ms,
        catch_up_passes: passes,
        catch_up_longest_ms: longest,
        catch_up_total_ms: total,
    })
}
