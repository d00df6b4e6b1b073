//! The README against what it promises: its first command (the bundled demo) prints start,
//! update and end events, and its speed table carries BENCHMARKS.md's figures
//! (`models/bench_ort.py` writes both; a hand edit of either shows up here).

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use crate::fixture;

/// The text between `<!-- name:begin -->` and `<!-- name:end -->`.
fn block(text: &str, name: &str) -> String {
    let (start, end) = (
        format!("<!-- {name}:begin -->"),
        format!("<!-- {name}:end -->"),
    );
    let from = text.find(&start).unwrap_or_else(|| panic!("no {start}")) + start.len();
    let to = text.find(&end).unwrap_or_else(|| panic!("no {end}"));
    text[from..to].to_string()
}

/// The cells of one Markdown table row.
fn cells(line: &str) -> Vec<String> {
    line.trim()
        .trim_matches('|')
        .split('|')
        .map(|c| c.trim().to_string())
        .collect()
}

/// The cells of a Markdown table's header row.
fn header(table: &str) -> Vec<String> {
    table
        .lines()
        .find(|l| l.starts_with('|'))
        .map(cells)
        .unwrap_or_default()
}

/// The cells of a Markdown table's data rows (header and separator skipped).
fn rows(table: &str) -> Vec<Vec<String>> {
    table
        .lines()
        .filter(|l| l.starts_with('|'))
        .skip(2)
        .map(cells)
        .collect()
}

/// `cargo run --release -- run --config config/demo.toml`, the README's first command, with the
/// test build's binary: within a minute the demo's prompts turn on, improve and turn off again on
/// their own (the demo replays tests/fixtures/images in name order: fixtures added there can
/// change its events).
#[test]
fn readme_demo_prints_start_update_and_end_events() {
    let mut child = fixture::promptcam_command()
        .args(["run", "--config", "config/demo.toml"])
        .current_dir(fixture::repo())
        .env_remove("NOTIFY_SOCKET")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let out = child.stdout.take().unwrap();
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let all_seen = |seen: &[String]| {
        ["start", "update", "end"]
            .iter()
            .all(|t| seen.contains(&t.to_string()))
    };
    let mut seen: Vec<String> = vec![];
    let end = Instant::now() + Duration::from_secs(60);
    while !all_seen(&seen) {
        let Some(left) = end.checked_duration_since(Instant::now()) else {
            break;
        };
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        let event: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("{line}: {e}"));
        seen.push(event["type"].as_str().unwrap_or_default().to_string());
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(all_seen(&seen), "the demo printed {seen:?} in a minute");
}

#[test]
fn readme_speed_table_is_benchmarks_figures() {
    let read = |f: &str| std::fs::read_to_string(fixture::path(f)).unwrap();
    let (readme, bench) = (read("README.md"), read("BENCHMARKS.md"));
    // BENCHMARKS.md: model | threads | tract (promptcam) ms | ... | tract peak RSS MB | ...
    let bench_table = block(&bench, "bench_ort");
    let column = |name: &str| {
        header(&bench_table)
            .iter()
            .position(|h| h == name)
            .unwrap_or_else(|| panic!("BENCHMARKS.md's table has no {name:?} column"))
    };
    let (threads_at, ms_at, rss_at) = (
        column("threads"),
        column("tract (promptcam) ms"),
        column("tract peak RSS MB"),
    );
    let mut want: BTreeMap<String, (BTreeMap<u32, String>, u32)> = BTreeMap::new();
    for r in rows(&bench_table) {
        let entry = want.entry(r[0].clone()).or_default();
        entry
            .0
            .insert(r[threads_at].parse().unwrap(), format!("{} ms", r[ms_at]));
        entry.1 = entry.1.max(r[rss_at].parse().unwrap());
    }
    assert!(
        want.len() >= 4,
        "BENCHMARKS.md's table has {} models",
        want.len()
    );
    // README.md: model | <n> thread(s)... | peak RSS
    let table = block(&readme, "speed");
    let header: Vec<&str> = table
        .lines()
        .find(|l| l.starts_with('|'))
        .unwrap()
        .split('|')
        .collect();
    let threads: Vec<u32> = header[2..header.len() - 2]
        .iter()
        .map(|h| h.split_whitespace().next().unwrap().parse().unwrap())
        .collect();
    let mut seen = 0;
    for r in rows(&table) {
        let (per_thread, rss) = want.get(&r[0]).unwrap_or_else(|| {
            panic!(
                "README's speed table names {:?}, which BENCHMARKS.md does not",
                r[0]
            )
        });
        for (i, n) in threads.iter().enumerate() {
            assert_eq!(
                Some(&r[1 + i]),
                per_thread.get(n),
                "{} at {n} thread(s)",
                r[0]
            );
        }
        assert_eq!(
            r[1 + threads.len()],
            format!("{rss} MB"),
            "{}: peak RSS",
            r[0]
        );
        seen += 1;
    }
    assert_eq!(
        seen,
        want.len(),
        "README's speed table misses models of BENCHMARKS.md"
    );
}
