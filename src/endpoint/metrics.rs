//! Metrics: the endpoint's `/metrics` families, read from the shared [`Status`] and the MQTT
//! publisher's counters on each scrape and encoded as Prometheus text (0.0.4). The README lists
//! every family; they are per camera (`camera` label) or per prompt (`camera`, `prompt`).

use std::time::Instant;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Unit;

use crate::status::{CameraSnapshot, OutputMetric, Status, INFERENCE_BUCKETS_MS};

/// Reads [`Status`] (and the MQTT counters) on each scrape.
pub(super) struct Metrics {
    pub(super) status: Status,
}

/// An f32 setting as the decimal it was written as (0.35, not 0.3499999940395355).
fn decimal(x: f32) -> f64 {
    x.to_string().parse().unwrap_or(x as f64)
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

type Labels<'a> = [(&'static str, &'a str); 1];
/// A per-camera counter: name (without `_total`), help, and how to read it from a snapshot.
type CounterSpec = (&'static str, &'static str, fn(&CameraSnapshot) -> u64);

impl Collector for Metrics {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::result::Result<(), std::fmt::Error> {
        let now = Instant::now();
        let cams: Vec<(String, CameraSnapshot)> = self
            .status
            .cameras
            .iter()
            .map(|c| (c.id.clone(), c.snapshot(now)))
            .collect();
        let counters: [CounterSpec; 8] = [
            (
                "promptcam_frames_captured",
                "Frames delivered by the camera's source.",
                |s| s.source.captured,
            ),
            (
                "promptcam_frames_dropped",
                "Frames replaced in the latest-wins slot before inference took them.",
                |s| s.dropped,
            ),
            (
                "promptcam_frames_undecodable",
                "Frames the source received but could not decode.",
                |s| s.source.undecodable,
            ),
            (
                "promptcam_source_reconnects",
                "Source errors followed by a reconnect.",
                |s| s.source.reconnects,
            ),
            (
                "promptcam_frames_analysed",
                "Frames the models ran on.",
                |s| s.inference.count,
            ),
            (
                "promptcam_frames_skipped_no_motion",
                "Frames held back by the motion gate.",
                |s| s.source.skipped_no_motion,
            ),
            (
                "promptcam_frames_paused",
                "Frames dropped unanalysed while the camera was paused.",
                |s| s.paused_frames,
            ),
            ("promptcam_events", "Events started.", |s| s.events),
        ];
        for (name, help, value) in counters {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (id, s) in &cams {
                let labels: Labels = [("camera", id)];
                ConstCounter::new(value(s)).encode(m.encode_family(&labels)?)?;
            }
        }
        let mut m = enc.encode_descriptor(
            "promptcam_camera_paused",
            "1 while the camera is paused.",
            None,
            MetricType::Gauge,
        )?;
        for (id, s) in &cams {
            ConstGauge::new(s.paused as i64)
                .encode(m.encode_family(&[("camera", id.as_str())])?)?;
        }
        let unit = Unit::Seconds;
        let mut m = enc.encode_descriptor(
            "promptcam_inference_duration",
            "Time the models took per analysed frame.",
            Some(&unit),
            MetricType::Histogram,
        )?;
        for (id, s) in &cams {
            let t = &s.inference;
            let buckets: Vec<(f64, u64)> = INFERENCE_BUCKETS_MS
                .iter()
                .zip(t.buckets.iter())
                .map(|(b, n)| (b / 1000.0, *n))
                .collect();
            m.encode_family(&[("camera", id.as_str())])?
                .encode_histogram::<NoLabelSet>(t.sum_ms / 1000.0, t.count, &buckets, None)?;
        }
        let mut on = enc.encode_descriptor(
            "promptcam_prompt_on",
            "1 while the prompt is ON.",
            None,
            MetricType::Gauge,
        )?;
        for (id, s) in &cams {
            for p in &s.prompts {
                ConstGauge::new(p.on as i64).encode(
                    on.encode_family(&[("camera", id.as_str()), ("prompt", p.id.as_str())])?,
                )?;
            }
        }
        let mut score = enc.encode_descriptor(
            "promptcam_prompt_score",
            "The prompt's smoothed score after the last analysed frame.",
            None,
            MetricType::Gauge,
        )?;
        for (id, s) in &cams {
            for p in &s.prompts {
                ConstGauge::new(p.score as f64).encode(
                    score.encode_family(&[("camera", id.as_str()), ("prompt", p.id.as_str())])?,
                )?;
            }
        }
        let mut threshold = enc.encode_descriptor(
            "promptcam_prompt_threshold",
            "The prompt's `on` threshold in force (config, MQTT or the prompt lab).",
            None,
            MetricType::Gauge,
        )?;
        for (id, s) in &cams {
            for p in &s.prompts {
                ConstGauge::new(decimal(p.threshold)).encode(
                    threshold
                        .encode_family(&[("camera", id.as_str()), ("prompt", p.id.as_str())])?,
                )?;
            }
        }
        // the outputs' own figures (sinks, MQTT, history), one family per name
        let outputs = self.status.output_metrics();
        let mut names: Vec<&'static str> = outputs.iter().map(|m| m.name).collect();
        names.dedup();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let family: Vec<&OutputMetric> = outputs.iter().filter(|m| m.name == name).collect();
            let first = family[0];
            let unit = first.unit.map(|u| match u {
                "bytes" => Unit::Bytes,
                other => Unit::Other(other.to_string()),
            });
            let kind = if first.counter {
                MetricType::Counter
            } else {
                MetricType::Gauge
            };
            let mut enc = enc.encode_descriptor(name, first.help, unit.as_ref(), kind)?;
            for m in family {
                let labels: Vec<(&str, &str)> =
                    m.labels.iter().map(|(k, v)| (*k, v.as_str())).collect();
                let e = enc.encode_family(&labels)?;
                match first.counter {
                    true => ConstCounter::new(m.value as u64).encode(e)?,
                    false => ConstGauge::new(m.value).encode(e)?,
                }
            }
        }
        Ok(())
    }
}
