//! Unit tests of the history `store`: round trips, retention, corrupt files.

use super::*;

fn dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("promptcam-store-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

/// Retention passes until one has no more to do, as the writer runs them.
fn passes(s: &mut Store, now: i64, keep: Duration, cap: u64) -> Vec<Retained> {
    let mut all = vec![];
    while all.last().is_none_or(|r: &Retained| r.more) {
        assert!(all.len() < 100, "retention does not finish");
        all.push(s.retain(now, keep, cap).unwrap());
    }
    all
}

/// [`passes`] as one: the frames of all of them, and what the last left.
fn retain_all(s: &mut Store, now: i64, keep: Duration, cap: u64) -> Retained {
    let all = passes(s, now, keep, cap);
    Retained {
        frames: all.iter().map(|r| r.frames).sum(),
        ..all[all.len() - 1]
    }
}

fn model(tag: &str) -> Arc<ModelIdentity> {
    Arc::new(ModelIdentity {
        name: tag.into(),
        sha256: format!("{tag:0>64}"),
    })
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
        embedding: Some((model("a"), encode_embedding(&emb))),
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
    let e = r.embeddings("porch", 0, 512).unwrap();
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
    assert!(marks.set_mark("porch", "a cat", 1, Some(true)).unwrap());
    assert!(marks.set_mark("porch", "a cat", 2, Some(false)).unwrap());
    let before = marks.marked("porch", "a cat", true).unwrap();
    let full = s.size_bytes().unwrap();
    // keep one day: the first day goes
    let now = 48 * hour;
    let r = retain_all(&mut s, now, Duration::from_secs(24 * 3600), u64::MAX);
    assert_eq!(r.frames, 24 * 60);
    let left = s.frames("porch", 0, i64::MAX).unwrap();
    assert_eq!(left.first().map(|f| f.t_ms), Some(24 * hour));
    // the marked frames are gone, their marks and what they keep are not
    assert_eq!(
        s.marks("porch", "a cat").unwrap(),
        vec![(1, true), (2, false)]
    );
    let after = s.marked("porch", "a cat", true).unwrap();
    assert_eq!(after, before);
    assert_eq!(after[0].t_ms, Some(0));
    assert_eq!(after[0].model.as_ref().map(|m| m.name.as_str()), Some("a"));
    assert_eq!(after[0].v.as_ref().map(Vec::len), Some(1024));
    assert_eq!(after[0].jpeg.as_ref().map(Vec::len), Some(2048));
    assert!(
        after[1].jpeg.is_none(),
        "frame 2 had no thumbnail of its own"
    );
    assert_eq!(s.mark_thumbnail(1).unwrap().map(|j| j.len()), Some(2048));
    // a mark can be changed and cleared after its frame went; a frame never seen cannot be marked
    assert!(marks.set_mark("porch", "a cat", 1, Some(false)).unwrap());
    assert_eq!(
        s.marks("porch", "a cat").unwrap(),
        vec![(1, false), (2, false)]
    );
    assert!(!marks.set_mark("porch", "a cat", 3, Some(true)).unwrap());
    assert!(marks.set_mark("porch", "a cat", 1, None).unwrap());
    assert_eq!(s.marks("porch", "a cat").unwrap(), vec![(2, false)]);
    assert!(r.bytes_after < full * 3 / 4, "{} of {full}", r.bytes_after);
    let file = std::fs::metadata(d.join(FILE_NAME)).unwrap().len();
    // then a size cap: the oldest go until it fits, the newest stay
    let cap = r.bytes_after / 3;
    let r = retain_all(&mut s, now, Duration::from_secs(24 * 3600), cap);
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
    assert_eq!(s.embeddings("porch", 0, 512).unwrap().len(), left.len());
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
fn retention_deletes_a_bounded_chunk_per_pass_until_done() {
    let d = dir("chunks");
    let mut s = Store::open(&d).unwrap();
    s.retain_chunk = 100;
    // 1 000 frames a second apart, one every tenth with a thumbnail, and 150 more that share one
    // millisecond, more than a chunk
    let mut batch: Vec<NewFrame> = (0..1000)
        .map(|i| {
            frame(
                "porch",
                10_000 + i * 1000,
                if i % 10 == 0 { 512 } else { 0 },
            )
        })
        .collect();
    batch.extend((0..150).map(|_| frame("yard", 5_000, 0)));
    s.insert(&batch, &[]).unwrap();
    // keep the last 100 s: 900 + 150 frames are over age, deleted a chunk at a time
    let now = 10_000 + 1000 * 1000;
    let keep = Duration::from_secs(100);
    let all = passes(&mut s, now, keep, u64::MAX);
    assert!(
        all.len() < 50,
        "retention does not finish: {} passes",
        all.len()
    );
    let counts: Vec<usize> = all.iter().map(|r| r.frames).collect();
    assert_eq!(counts.iter().sum::<usize>(), 1050, "{counts:?}");
    // the 150 frames of one millisecond go together (progress), every other pass takes a chunk
    assert_eq!(counts[0], 150, "{counts:?}");
    assert!(counts[1..].iter().all(|&n| n <= 100), "{counts:?}");
    assert!(counts.len() >= 10, "{counts:?}");
    let left = s.frames("porch", 0, i64::MAX).unwrap();
    assert_eq!(left.len(), 100);
    assert_eq!(left[0].t_ms, now - 100_000);
    assert_eq!(s.embeddings("porch", 0, 512).unwrap().len(), 100);
    // by size too: a cap met over several passes, each within its chunk, the newest kept
    let cap = s.size_bytes().unwrap() / 2;
    let all = passes(&mut s, now, keep, cap);
    assert!(all.len() < 20, "the size cap is never met");
    assert!(all.iter().all(|r| r.frames <= 100));
    let last = all[all.len() - 1];
    assert!(last.bytes_after <= cap, "{} > {cap}", last.bytes_after);
    let left = s.frames("porch", 0, i64::MAX).unwrap();
    assert!(!left.is_empty() && left.len() < 100, "{}", left.len());
    assert_eq!(left.last().map(|f| f.t_ms), Some(now - 1000));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn every_f16_decodes_to_its_value() {
    // every bit pattern, in a row whose length is no multiple of a block (and a byte short)
    let bits: Vec<u16> = (0..=u16::MAX).collect();
    let bytes: Vec<u8> = bits.iter().flat_map(|b| b.to_le_bytes()).collect();
    let mut out = vec![f32::NAN; bits.len() + 3];
    decode_f16(&bytes, &mut out[..bits.len()]);
    for (&b, &got) in bits.iter().zip(&out) {
        let want = half::f16::from_bits(b).to_f32();
        assert!(
            got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
            "{b:#06x}: {got} != {want}"
        );
    }
    assert!(
        out[bits.len()..].iter().all(|v| v.is_nan()),
        "wrote past the row"
    );
    let mut short = [0.0f32; 70];
    decode_f16(&bytes[2..141], &mut short);
    assert_eq!(short[68], half::f16::from_bits(69).to_f32());
    assert_eq!(short[69], 0.0, "half a value is no value");
}

#[test]
fn the_lab_reads_the_history_without_mapping_it() {
    // a mapped file counts in the daemon's resident memory as the lab reads it: 1 GB on a Pi
    let d = dir("nomap");
    let mut s = Store::open(&d).unwrap();
    let frames: Vec<NewFrame> = (0..300).map(|i| frame("porch", i * 1000, 0)).collect();
    s.insert(&frames, &[]).unwrap();
    // in the file, not in the WAL (which is never mapped)
    s.checkpoint().unwrap();
    let path = d.join(FILE_NAME);
    let reader = Store::open_read_only(&path).unwrap();
    let (index, _) = reader.score_embeddings("porch", 0, 512, |r| r[0]).unwrap();
    assert_eq!(index.ids.len(), 300);
    let maps = std::fs::read_to_string("/proc/self/maps").unwrap();
    let file = path.canonicalize().unwrap();
    assert!(
        !maps.lines().any(|l| l.ends_with(file.to_str().unwrap())),
        "the history file is mapped"
    );
    drop(reader);
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

#[test]
fn every_hot_statement_runs_on_an_index() {
    let d = dir("plans");
    let s = Store::open(&d).unwrap();
    let mut statements: Vec<String> = [
        queries::CAMERAS,
        queries::FRAMES,
        queries::COUNT_FRAMES,
        queries::EVENTS,
        queries::EMBEDDINGS,
        queries::EMBEDDING,
    ]
    .iter()
    .chain(DELETE_BEFORE.iter())
    .chain([&CHUNK_END])
    .map(|q| q.to_string())
    .collect();
    statements.extend(["frames", "thumbs", "events"].map(time_span));
    for sql in statements {
        let mut st = s
            .conn
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let args = vec![0i64; st.parameter_count()];
        let plan: Vec<String> = st
            .query_map(rusqlite::params_from_iter(args), |r| r.get::<_, String>(3))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        for step in &plan {
            // a scan of a big table's rows (not of an index), or a sort of its rows
            let full_scan = ["frames", "embeddings", "thumbs", "events"]
                .iter()
                .any(|t| step == &format!("SCAN {t}"));
            assert!(
                !full_scan && !step.contains("TEMP B-TREE"),
                "{sql}: {plan:?}"
            );
        }
    }
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn the_wal_counts_and_is_kept_small() {
    let d = dir("wal");
    let mut s = Store::open(&d).unwrap();
    let limit: i64 = s
        .conn
        .query_row("PRAGMA journal_size_limit", [], |r| r.get(0))
        .unwrap();
    assert_eq!(limit, JOURNAL_SIZE_LIMIT);
    let frames: Vec<NewFrame> = (0..200).map(|i| frame("porch", i * 1000, 4000)).collect();
    s.insert(&frames, &[]).unwrap();
    let wal = std::fs::metadata(d.join(format!("{FILE_NAME}-wal")))
        .unwrap()
        .len();
    assert!(wal > 0);
    assert_eq!(s.size_bytes().unwrap(), s.pages_bytes().unwrap() + wal);
    // a cap under what the pages and the WAL take together is met by both together
    let cap = s.size_bytes().unwrap() * 2 / 3;
    let r = retain_all(&mut s, 200_000, Duration::from_secs(3600), cap);
    assert!(r.bytes_after <= cap, "{} > {cap}", r.bytes_after);
    assert!(r.frames < 200, "not everything went: {}", r.frames);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn damage_deep_in_a_table_is_found_at_open() {
    let d = dir("deep");
    {
        let mut s = Store::open(&d).unwrap();
        let frames: Vec<NewFrame> = (0..200).map(|i| frame("porch", i * 1000, 3000)).collect();
        s.insert(&frames, &[]).unwrap();
        s.checkpoint().unwrap();
    }
    // one page in the middle of the file (a table's leaf, far from the rows a first read
    // touches) overwritten, as a bad SD card sector would
    let path = d.join(FILE_NAME);
    let mut bytes = std::fs::read(&path).unwrap();
    let pages = bytes.len() / 4096;
    assert!(pages > 100, "{pages} pages");
    let at = pages / 2 * 4096;
    bytes[at..at + 4096].fill(0xFF);
    std::fs::write(&path, bytes).unwrap();
    let s = Store::open(&d).unwrap();
    assert!(
        s.frames("porch", 0, i64::MAX).unwrap().is_empty(),
        "a fresh database"
    );
    let aside = std::fs::read_dir(&d)
        .unwrap()
        .filter(|e| {
            let name = e.as_ref().unwrap().file_name();
            name.to_string_lossy()
                .starts_with("history.sqlite.corrupt-")
        })
        .count();
    assert_eq!(aside, 1);
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn after_a_model_change_the_lab_reads_the_new_models_rows() {
    let d = dir("models");
    let mut s = Store::open(&d).unwrap();
    let f = |t_ms: i64, dim: usize| {
        let mut nf = frame("porch", t_ms, 0);
        nf.embedding = Some((model("a"), encode_embedding(&vec![0.01; dim])));
        nf
    };
    // the oldest rows from a 512-value model, then a 768-value one
    let rows: Vec<NewFrame> = (0..5)
        .map(|i| f(i * 1000, 512))
        .chain((5..8).map(|i| f(i * 1000, 768)))
        .collect();
    s.insert(&rows, &[]).unwrap();
    let new = s.embeddings("porch", 0, 768).unwrap();
    assert_eq!((new.len(), new.dim, new.other_model), (3, 768, 5));
    assert_eq!(new.times, vec![5000, 6000, 7000]);
    let old = s.embeddings("porch", 0, 512).unwrap();
    assert_eq!((old.len(), old.other_model), (5, 3));
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn imported_marks_get_ids_of_their_own_once() {
    let d = dir("import");
    let mut s = Store::open(&d).unwrap();
    s.insert(&[frame("porch", 1000, 10), frame("porch", 2000, 10)], &[])
        .unwrap();
    s.set_mark("porch", "a cat", 1, Some(true)).unwrap();
    let mine = s.marked("porch", "a cat", true).unwrap();
    let other = ModelIdentity {
        name: "b".into(),
        sha256: "b".repeat(64),
    };
    // marks from elsewhere, one of them equal to the one here
    let mut theirs = mine.clone();
    theirs.push(Marked {
        frame: 2,
        yes: false,
        t_ms: Some(5000),
        model: None,
        v: Some(vec![1, 2, 3, 4]),
        jpeg: None,
        pictured: false,
    });
    assert_eq!(
        s.import_marks("porch", "a cat", &other, &theirs).unwrap(),
        (1, 1)
    );
    assert_eq!(
        s.import_marks("porch", "a cat", &other, &theirs).unwrap(),
        (0, 2)
    );
    let all = s.marked("porch", "a cat", false).unwrap();
    assert_eq!(all.len(), 2);
    // in time order; the imported mark names no frame of this history (frame 2 is unmarked)
    assert_eq!((all[0].frame, all[1].frame), (1, -1));
    assert_eq!(all[1].model.as_ref(), Some(&other));
    assert_eq!(
        s.questions("porch").unwrap(),
        vec![("a cat".to_string(), 1, 1)]
    );
    let _ = std::fs::remove_dir_all(&d);
}

#[test]
fn a_version_1_history_is_migrated_with_its_marks_data() {
    let d = dir("migrate");
    std::fs::create_dir_all(&d).unwrap();
    {
        // the version 1 schema, as it shipped, with one frame marked
        let c = Connection::open(d.join(FILE_NAME)).unwrap();
        c.execute_batch(
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
             INSERT INTO meta VALUES ('schema', '1');
             CREATE TABLE frames (id INTEGER PRIMARY KEY, camera TEXT NOT NULL, t_ms INTEGER NOT NULL,
                 motion INTEGER NOT NULL, scores TEXT NOT NULL, thumb INTEGER);
             CREATE TABLE embeddings (frame INTEGER PRIMARY KEY, camera TEXT NOT NULL,
                 t_ms INTEGER NOT NULL, thumb INTEGER, v BLOB NOT NULL);
             CREATE TABLE thumbs (id INTEGER PRIMARY KEY, camera TEXT NOT NULL, t_ms INTEGER NOT NULL,
                 jpeg BLOB NOT NULL);
             CREATE TABLE events (id INTEGER PRIMARY KEY, event_id TEXT NOT NULL, camera TEXT NOT NULL,
                 prompt TEXT NOT NULL, kind TEXT NOT NULL, t_ms INTEGER NOT NULL, score REAL NOT NULL,
                 box TEXT, snapshot BLOB);
             CREATE TABLE marks (camera TEXT NOT NULL, query TEXT NOT NULL, frame INTEGER NOT NULL,
                 yes INTEGER NOT NULL, PRIMARY KEY (camera, query, frame));
             INSERT INTO thumbs VALUES (1, 'porch', 500, x'FFD8');
             INSERT INTO frames VALUES (7, 'porch', 500, 1, '{}', 1);
             INSERT INTO embeddings VALUES (7, 'porch', 500, 1, x'0102');
             INSERT INTO marks VALUES ('porch', 'a cat', 7, 1);",
        )
        .unwrap();
    }
    let mut s = Store::open(&d).unwrap();
    let version: String = s
        .conn
        .query_row("SELECT value FROM meta WHERE key = 'schema'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(version, "2");
    let m = s.marked("porch", "a cat", true).unwrap();
    assert_eq!(
        m,
        vec![Marked {
            frame: 7,
            yes: true,
            t_ms: Some(500),
            model: None,
            v: Some(vec![1, 2]),
            jpeg: Some(vec![0xFF, 0xD8]),
            pictured: true,
        }]
    );
    // and it takes new rows with their model
    s.insert(&[frame("porch", 900, 0)], &[]).unwrap();
    let models: i64 = s
        .conn
        .query_row(
            "SELECT count(*) FROM embeddings WHERE model IS NOT NULL",
            [],
            |r| r.get(0),
        )
        .unwrap();
    assert_eq!(models, 1);
    let _ = std::fs::remove_dir_all(&d);
}
