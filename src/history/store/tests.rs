//! Unit tests of the history `store`: round trips, retention, corrupt files.

use super::*;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("promptcam-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn frame(camera: &str, t_ms: i64, thumb_bytes: usize) -> NewFrame {
    let emb: Vec<f32> = (0..512)
        .map(|i| ((i as f32 + t_ms as f32) * 0.37).sin() * 0.044)
        .collect();
    NewFrame {
        camera: camera.into(),
        t_ms,
        motion: t_ms % 2 == 0,
        scores: format!("{{\"a_cat\":[{}]}}", (t_ms % 1000) as f32 / 1000.0),
        embedding: Some(encode_embedding(&emb)),
        thumbnail: (thumb_bytes > 0).then(|| vec![0xAB; thumb_bytes]),
    }
}

#[test]
fn rows_round_trip_and_embeddings_stay_close() {
    let d = dir("roundtrip");
    let mut s = Store::open(&d).unwrap();
    s.insert(
        &[
            frame("porch", 1000, 10),
            frame("porch", 2000, 0),
            frame("yard", 1500, 0),
        ],
        &[NewEvent {
            event_id: "1000-porch-a_cat".into(),
            camera: "porch".into(),
            prompt: "a_cat".into(),
            kind: "start",
            t_ms: 1000,
            score: 0.75,
            bbox: Some([1.0, 2.0, 3.0, 4.0]),
            snapshot: Some(vec![1, 2, 3]),
        }],
    )
    .unwrap();
    let r = Store::open_read_only(&d.join(FILE_NAME)).unwrap();
    let frames = r.frames("porch", 0, i64::MAX).unwrap();
    assert_eq!(
        frames.iter().map(|f| f.t_ms).collect::<Vec<_>>(),
        vec![1000, 2000]
    );
    assert_eq!(frames[1].scores["a_cat"][0].as_f64(), Some(0.0));
    assert!(frames[0].scores.get("a_dog").is_none());
    assert!(frames[0].thumb.is_some() && frames[1].thumb.is_none());
    let e = r.embeddings("porch", 0).unwrap();
    assert_eq!((e.len(), e.dim), (2, 512));
    let want: Vec<f32> = (0..512)
        .map(|i| ((i as f32 + 1000.0) * 0.37).sin() * 0.044)
        .collect();
    let err = e
        .row(0)
        .iter()
        .zip(&want)
        .map(|(a, b)| (a - b).abs())
        .fold(0.0, f32::max);
    assert!(err < 5e-5, "f16 storage error {err}");
    let ev = r.events("porch", 0, i64::MAX).unwrap();
    assert_eq!(
        (ev.len(), ev[0].bbox, ev[0].has_snapshot),
        (1, Some([1.0, 2.0, 3.0, 4.0]), true)
    );
    assert_eq!(r.event_snapshot(ev[0].id).unwrap(), Some(vec![1, 2, 3]));
    assert!(
        e.thumbs[0].is_some() && e.thumbs[1].is_none(),
        "{:?}",
        e.thumbs
    );
    assert!(r.thumbnail(e.thumbs[0].unwrap()).unwrap().is_some());
    assert_eq!(
        r.cameras().unwrap(),
        vec![("porch".to_string(), 2), ("yard".to_string(), 1)]
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn retention_by_age_then_by_size_oldest_first() {
    let d = dir("retain");
    let mut s = Store::open(&d).unwrap();
    let hour = 3_600_000;
    // 48 hours of frames, one a minute, with a 2 kB thumbnail every tenth
    let batch: Vec<NewFrame> = (0..48 * 60)
        .map(|m| frame("porch", m * 60_000, if m % 10 == 0 { 2048 } else { 0 }))
        .collect();
    s.insert(&batch, &[]).unwrap();
    let mut marks = Store::open_existing(&d.join(FILE_NAME)).unwrap();
    marks.set_mark("porch", "a cat", 1, Some(true)).unwrap();
    let full = s.size_bytes().unwrap();
    // keep one day: the first day goes
    let now = 48 * hour;
    let r = s
        .retain(now, Duration::from_secs(24 * 3600), u64::MAX)
        .unwrap();
    assert_eq!(r.frames, 24 * 60);
    let left = s.frames("porch", 0, i64::MAX).unwrap();
    assert_eq!(left.first().map(|f| f.t_ms), Some(24 * hour));
    assert!(
        s.marks("porch", "a cat").unwrap().is_empty(),
        "marks of deleted frames go too"
    );
    assert!(r.bytes_after < full * 3 / 4, "{} of {full}", r.bytes_after);
    let file = std::fs::metadata(d.join(FILE_NAME)).unwrap().len();
    // then a size cap: the oldest go until it fits, the newest stay
    let cap = r.bytes_after / 3;
    let r = s.retain(now, Duration::from_secs(24 * 3600), cap).unwrap();
    assert!(r.bytes_after <= cap, "{} > {cap}", r.bytes_after);
    let left = s.frames("porch", 0, i64::MAX).unwrap();
    assert!(
        !left.is_empty() && left.last().map(|f| f.t_ms) == Some((48 * 60 - 1) * 60_000),
        "the newest frame stays"
    );
    assert!(
        left[0].t_ms > 30 * hour,
        "the oldest went first: {}",
        left[0].t_ms
    );
    assert_eq!(s.embeddings("porch", 0).unwrap().len(), left.len());
    // incremental vacuum gave the space back to the file system
    s.conn
        .execute_batch("PRAGMA wal_checkpoint(TRUNCATE)")
        .unwrap();
    assert!(
        std::fs::metadata(d.join(FILE_NAME)).unwrap().len() < file,
        "the file shrank"
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_corrupt_file_is_set_aside_and_a_fresh_one_started() {
    let d = dir("corrupt");
    std::fs::create_dir_all(&d).unwrap();
    std::fs::write(
        d.join(FILE_NAME),
        b"this is not a database, it is a text file that got here somehow. ".repeat(200),
    )
    .unwrap();
    let mut s = Store::open(&d).unwrap();
    s.insert(&[frame("porch", 1000, 0)], &[]).unwrap();
    assert_eq!(s.frames("porch", 0, i64::MAX).unwrap().len(), 1);
    let aside: Vec<String> = std::fs::read_dir(&d)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("history.sqlite.corrupt-"))
        .collect();
    assert_eq!(aside.len(), 1, "{aside:?}");
    let _ = std::fs::remove_dir_all(&d);
}
