//! Prometheus metrics of a spillway process, read from the engine's [`Progress`] at scrape
//! time by one custom collector: the engine keeps its counters once and every scrape reports
//! their current values, so nothing is counted twice and nothing can drift.
//!
//! Every process exposes the worker families (documents, bytes, shard durations by outcome,
//! request durations and retries by reason against the search cluster, shards in flight and
//! shard retries); a coordinator adds what only it sees (shards published and completed,
//! snapshot keep-alives) and the depth of its queues, fed by a closure it provides.

use std::fmt;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric, NoLabelSet};
use prometheus_client::metrics::MetricType;
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};
use spillway_engine::Progress;
use spillway_engine::progress::{Histogram, SHARD_SECONDS_BUCKETS};
use spillway_source::{LatencySnapshot, REQUEST_SECONDS_BUCKETS, RetryReason};
use tokio::task::JoinHandle;

use crate::TelemetryError;

/// Current depth of named queues (`(queue name, ready messages)`), asked at every scrape.
/// It must not block: a caller that learns depths over the network keeps the last answer
/// in memory and returns that.
pub type QueueDepth = Arc<dyn Fn() -> Vec<(String, i64)> + Send + Sync>;

/// Outcomes a shard attempt can end with (always exposed, so dashboards see zeros).
const OUTCOMES: [&str; 3] = ["completed", "failed", "dead_lettered"];

/// Reasons a request to the search cluster is retried (always exposed).
const RETRY_REASONS: [RetryReason; 5] = [
    RetryReason::Rejected,
    RetryReason::Breaker,
    RetryReason::Unavailable5xx,
    RetryReason::Connection,
    RetryReason::Timeout,
];

/// A [`QueueDepth`] kept fresh by a background task: `fetch` runs every `every` (first at
/// once) and a scrape returns the last successful answer, so scrapes never wait on the broker.
/// `fetch` returns `None` when it could not learn the depths; the previous answer then stays.
/// Abort the returned task to stop polling.
pub fn poll_queue_depth<F, Fut>(every: Duration, fetch: F) -> (QueueDepth, JoinHandle<()>)
where
    F: Fn() -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Option<Vec<(String, i64)>>> + Send + 'static,
{
    let last: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let writer = last.clone();
    let task = tokio::spawn(async move {
        let mut tick = tokio::time::interval(every.max(Duration::from_millis(10)));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            if let Some(depths) = fetch().await {
                *writer.lock().unwrap_or_else(|p| p.into_inner()) = depths;
            }
        }
    });
    let depth: QueueDepth =
        Arc::new(move || last.lock().unwrap_or_else(|p| p.into_inner()).clone());
    (depth, task)
}

/// The families of a worker process (also served by every other role).
pub fn worker_registry(progress: Arc<Progress>) -> Registry {
    registry(ProgressCollector {
        progress,
        coordinator: None,
    })
}

/// The worker families plus the coordinator's: shards published and completed, snapshot
/// keep-alives and `spillway_queue_depth{queue}` from `queue_depth`.
pub fn coordinator_registry(progress: Arc<Progress>, queue_depth: QueueDepth) -> Registry {
    registry(ProgressCollector {
        progress,
        coordinator: Some(queue_depth),
    })
}

fn registry(collector: ProgressCollector) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(collector));
    registry
}

/// The registry in the OpenMetrics text format (ends with `# EOF`).
pub fn encode_metrics(registry: &Registry) -> Result<String, TelemetryError> {
    let mut out = String::with_capacity(4096);
    prometheus_client::encoding::text::encode(&mut out, registry)?;
    Ok(out)
}

/// Reads a [`Progress`] at every scrape.
struct ProgressCollector {
    progress: Arc<Progress>,
    coordinator: Option<QueueDepth>,
}

impl fmt::Debug for ProgressCollector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ProgressCollector")
            .field("coordinator", &self.coordinator.is_some())
            .finish()
    }
}

impl Collector for ProgressCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let p = &self.progress;
        counter(
            &mut encoder,
            "spillway_documents_exported",
            "Documents read from the search cluster and written to output files by this process (a failed shard attempt's documents are taken back out).",
            p.docs_exported.load(Relaxed),
        )?;
        counter(
            &mut encoder,
            "spillway_bytes_written",
            "Bytes of output files committed to storage by this process.",
            p.bytes.load(Relaxed),
        )?;

        let shard_seconds = p.shard_seconds();
        let mut durations = encoder.encode_descriptor(
            "spillway_shard_duration",
            "Time from taking a shard task to its result, by outcome (completed, failed, dead_lettered).",
            Some(&Unit::Seconds),
            MetricType::Histogram,
        )?;
        for outcome in OUTCOMES {
            let empty = Histogram::new(SHARD_SECONDS_BUCKETS);
            let h = shard_seconds.get(outcome).unwrap_or(&empty);
            let buckets = with_inf(h.bounds, &h.counts);
            durations
                .encode_family(&[("outcome", outcome)])?
                .encode_histogram::<NoLabelSet>(h.sum, h.count, &buckets, None)?;
        }

        let clients = p.clients();
        let mut latency = LatencySnapshot::default();
        for stats in clients.values() {
            latency.merge(&stats.request_seconds);
        }
        let buckets = with_inf(&REQUEST_SECONDS_BUCKETS, &latency.counts);
        encoder
            .encode_descriptor(
                "spillway_search_request_duration",
                "Duration of each HTTP request to the search cluster (every attempt, until the end of the response body); updated when a shard attempt ends.",
                Some(&Unit::Seconds),
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                latency.sum_seconds(),
                latency.count,
                &buckets,
                None,
            )?;

        let retries = p.request_retries();
        let mut by_reason = encoder.encode_descriptor(
            "spillway_search_retries",
            "Requests to the search cluster that were retried, by reason (rejected, breaker, unavailable_5xx, connection, timeout).",
            None,
            MetricType::Counter,
        )?;
        for reason in RETRY_REASONS {
            let reason = reason.as_str();
            ConstCounter::new(retries.get(reason).copied().unwrap_or(0))
                .encode(by_reason.encode_family(&[("reason", reason)])?)?;
        }

        gauge(
            &mut encoder,
            "spillway_shards_in_flight",
            "Shards this process is exporting right now.",
            p.shards_in_flight.load(Relaxed) as i64,
        )?;
        counter(
            &mut encoder,
            "spillway_shard_retries",
            "Shard attempts that failed with a retryable error and were given back for another attempt.",
            p.retries.load(Relaxed),
        )?;

        if let Some(queue_depth) = &self.coordinator {
            counter(
                &mut encoder,
                "spillway_shards_published",
                "Shard tasks published to the queue (first attempts and re-publications after a snapshot loss).",
                p.shards_published.load(Relaxed),
            )?;
            counter(
                &mut encoder,
                "spillway_shards_completed",
                "Shards whose output file and marker are committed.",
                p.shards_done.load(Relaxed),
            )?;
            counter(
                &mut encoder,
                "spillway_pit_keep_alives",
                "Successful keep-alive calls on the job's point-in-time snapshot.",
                p.keep_alives.load(Relaxed),
            )?;
            let mut depth = encoder.encode_descriptor(
                "spillway_queue_depth",
                "Messages ready in a queue, by queue name.",
                None,
                MetricType::Gauge,
            )?;
            for (queue, n) in queue_depth() {
                ConstGauge::new(n).encode(depth.encode_family(&[("queue", queue.as_str())])?)?;
            }
        }
        Ok(())
    }
}

fn counter(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: u64,
) -> Result<(), fmt::Error> {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        name,
        help,
        None,
        MetricType::Counter,
    )?)
}

fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: i64,
) -> Result<(), fmt::Error> {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// `(upper bound, non-cumulative count)` pairs ending with `+Inf`.
fn with_inf(bounds: &[f64], counts: &[u64]) -> Vec<(f64, u64)> {
    bounds
        .iter()
        .copied()
        .chain(std::iter::once(f64::INFINITY))
        .zip(counts.iter().copied())
        .collect()
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::time::Duration;

    use spillway_source::StatsSnapshot;

    use super::*;

    /// One parsed exposition: `# HELP`/`# TYPE` per family, samples by name and labels.
    #[derive(Debug, Default)]
    struct Exposition {
        help: BTreeMap<String, String>,
        kind: BTreeMap<String, String>,
        samples: BTreeMap<(String, Vec<(String, String)>), f64>,
        eof: bool,
    }

    impl Exposition {
        fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
            let mut key: Vec<(String, String)> = labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect();
            key.sort();
            *self
                .samples
                .get(&(name.to_string(), key))
                .unwrap_or_else(|| panic!("no sample {name}{labels:?} in {:#?}", self.samples))
        }
    }

    /// A small OpenMetrics text parser: enough of the format to check every line.
    fn parse(text: &str) -> Exposition {
        let mut out = Exposition::default();
        for line in text.lines() {
            assert!(!out.eof, "a line after # EOF: {line}");
            if line == "# EOF" {
                out.eof = true;
            } else if let Some(rest) = line.strip_prefix("# HELP ") {
                let (name, help) = rest.split_once(' ').expect("HELP has a name and text");
                out.help.insert(name.to_string(), help.to_string());
            } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                let (name, kind) = rest.split_once(' ').expect("TYPE has a name and a type");
                out.kind.insert(name.to_string(), kind.to_string());
            } else if line.starts_with("# UNIT ") {
            } else {
                let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                let value: f64 = match value {
                    "+Inf" => f64::INFINITY,
                    v => v.parse().unwrap_or_else(|_| panic!("bad value in {line}")),
                };
                let (name, labels) = match series.split_once('{') {
                    None => (series.to_string(), Vec::new()),
                    Some((name, rest)) => {
                        let body = rest.strip_suffix('}').expect("labels end with }");
                        let mut labels: Vec<(String, String)> = body
                            .split(',')
                            .map(|kv| {
                                let (k, v) = kv.split_once('=').expect("label is k=\"v\"");
                                let v = v
                                    .strip_prefix('"')
                                    .and_then(|v| v.strip_suffix('"'))
                                    .expect("label value is quoted");
                                (k.to_string(), v.to_string())
                            })
                            .collect();
                        labels.sort();
                        (name.to_string(), labels)
                    }
                };
                assert!(
                    name.chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':'),
                    "metric name {name}"
                );
                let prev = out.samples.insert((name, labels), value);
                assert!(prev.is_none(), "duplicate sample {line}");
            }
        }
        assert!(out.eof, "the exposition ends with # EOF");
        out
    }

    const WORKER_FAMILIES: [(&str, &str); 7] = [
        ("spillway_documents_exported", "counter"),
        ("spillway_bytes_written", "counter"),
        ("spillway_shard_duration_seconds", "histogram"),
        ("spillway_search_request_duration_seconds", "histogram"),
        ("spillway_search_retries", "counter"),
        ("spillway_shards_in_flight", "gauge"),
        ("spillway_shard_retries", "counter"),
    ];
    const COORDINATOR_FAMILIES: [(&str, &str); 4] = [
        ("spillway_shards_published", "counter"),
        ("spillway_shards_completed", "counter"),
        ("spillway_pit_keep_alives", "counter"),
        ("spillway_queue_depth", "gauge"),
    ];

    fn scrape(registry: &Registry) -> Exposition {
        parse(&encode_metrics(registry).unwrap())
    }

    #[test]
    fn worker_families_follow_the_progress() {
        let progress = Arc::new(Progress::default());
        let registry = worker_registry(progress.clone());

        let before = scrape(&registry);
        for (family, kind) in WORKER_FAMILIES {
            assert_eq!(
                before.kind.get(family).map(String::as_str),
                Some(kind),
                "{family}"
            );
            let help = before
                .help
                .get(family)
                .unwrap_or_else(|| panic!("{family} has HELP"));
            assert!(help.len() > 20, "{family}: {help}");
        }
        for (family, _) in COORDINATOR_FAMILIES {
            assert!(
                !before.kind.contains_key(family),
                "{family} is coordinator-only"
            );
        }
        assert_eq!(before.value("spillway_documents_exported_total", &[]), 0.0);
        assert_eq!(
            before.value(
                "spillway_shard_duration_seconds_count",
                &[("outcome", "completed")]
            ),
            0.0
        );
        assert_eq!(
            before.value("spillway_search_retries_total", &[("reason", "breaker")]),
            0.0
        );

        progress.add_docs(1500);
        progress.add_bytes(4096);
        progress.shards_in_flight.store(3, Relaxed);
        progress.retries.fetch_add(2, Relaxed);
        progress.record_shard("completed", Duration::from_secs(3));
        progress.record_shard("completed", Duration::from_secs(45));
        progress.record_shard("failed", Duration::from_millis(500));
        let mut latency = LatencySnapshot::default();
        latency.counts[3] = 4; // (0.025, 0.05]
        latency.counts[REQUEST_SECONDS_BUCKETS.len()] = 1; // past 60 s
        latency.count = 5;
        latency.sum_micros = 90_160_000;
        let a = StatsSnapshot {
            requests: 5,
            retries_rejected: 3,
            retries_timeout: 1,
            request_seconds: latency,
            ..StatsSnapshot::default()
        };
        progress.record_client("job-a/run-1", a);
        progress.record_client("job-b/run-1", a);

        let after = scrape(&registry);
        assert_eq!(
            after.value("spillway_documents_exported_total", &[]),
            1500.0
        );
        assert_eq!(after.value("spillway_bytes_written_total", &[]), 4096.0);
        assert_eq!(after.value("spillway_shards_in_flight", &[]), 3.0);
        assert_eq!(after.value("spillway_shard_retries_total", &[]), 2.0);

        let completed = [("outcome", "completed")];
        assert_eq!(
            after.value("spillway_shard_duration_seconds_count", &completed),
            2.0
        );
        assert_eq!(
            after.value("spillway_shard_duration_seconds_sum", &completed),
            48.0
        );
        let bucket = |le: &str| {
            after.value(
                "spillway_shard_duration_seconds_bucket",
                &[("outcome", "completed"), ("le", le)],
            )
        };
        assert_eq!(bucket("1.0"), 0.0);
        assert_eq!(bucket("5.0"), 1.0, "buckets are cumulative");
        assert_eq!(bucket("60.0"), 2.0);
        assert_eq!(bucket("+Inf"), 2.0);
        assert_eq!(
            after.value(
                "spillway_shard_duration_seconds_count",
                &[("outcome", "failed")]
            ),
            1.0
        );

        // Two clients: their histograms add up.
        let req = "spillway_search_request_duration_seconds";
        assert_eq!(after.value(&format!("{req}_count"), &[]), 10.0);
        assert!((after.value(&format!("{req}_sum"), &[]) - 180.32).abs() < 1e-9);
        assert_eq!(
            after.value(&format!("{req}_bucket"), &[("le", "0.025")]),
            0.0
        );
        assert_eq!(
            after.value(&format!("{req}_bucket"), &[("le", "0.05")]),
            8.0
        );
        assert_eq!(
            after.value(&format!("{req}_bucket"), &[("le", "60.0")]),
            8.0
        );
        assert_eq!(
            after.value(&format!("{req}_bucket"), &[("le", "+Inf")]),
            10.0
        );

        assert_eq!(
            after.value("spillway_search_retries_total", &[("reason", "rejected")]),
            6.0
        );
        assert_eq!(
            after.value("spillway_search_retries_total", &[("reason", "timeout")]),
            2.0
        );
        assert_eq!(
            after.value(
                "spillway_search_retries_total",
                &[("reason", "unavailable_5xx")]
            ),
            0.0
        );
    }

    #[tokio::test]
    async fn polled_queue_depth_keeps_the_last_answer() {
        // Each poll takes the next answer the test hands over.
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel::<Option<Vec<(String, i64)>>>();
        let rx = Arc::new(tokio::sync::Mutex::new(rx));
        let taken = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let counter = taken.clone();
        let (depth, task) = poll_queue_depth(Duration::from_millis(10), move || {
            let (rx, counter) = (rx.clone(), counter.clone());
            async move {
                let answer = rx.lock().await.recv().await.flatten();
                counter.fetch_add(1, Relaxed);
                answer
            }
        });
        let wait_until = |ok: &dyn Fn() -> bool| {
            let deadline = std::time::Instant::now() + Duration::from_secs(30);
            while !ok() {
                assert!(
                    std::time::Instant::now() < deadline,
                    "condition not met in time"
                );
                std::thread::yield_now();
            }
        };
        assert!(depth().is_empty());

        let first = vec![("spillway.shards".to_string(), 12)];
        tx.send(Some(first.clone())).unwrap();
        let d = depth.clone();
        tokio::task::spawn_blocking(move || wait_until(&|| d() == first))
            .await
            .unwrap();

        tx.send(None).unwrap();
        let t = taken.clone();
        tokio::task::spawn_blocking(move || wait_until(&|| t.load(Relaxed) >= 2))
            .await
            .unwrap();
        assert_eq!(
            depth(),
            vec![("spillway.shards".to_string(), 12)],
            "a failed poll keeps the last answer"
        );

        let second = vec![("spillway.shards".to_string(), 3)];
        tx.send(Some(second.clone())).unwrap();
        let d = depth.clone();
        tokio::task::spawn_blocking(move || wait_until(&|| d() == second))
            .await
            .unwrap();
        task.abort();
    }

    #[test]
    fn coordinator_adds_its_families_and_queue_depths() {
        let progress = Arc::new(Progress::default());
        let depth = Arc::new(std::sync::atomic::AtomicI64::new(7));
        let seen = depth.clone();
        let registry = coordinator_registry(
            progress.clone(),
            Arc::new(move || {
                vec![
                    ("spillway.shards".to_string(), seen.load(Relaxed)),
                    ("spillway.shards.dead".to_string(), 0),
                ]
            }),
        );
        let before = scrape(&registry);
        for (family, kind) in WORKER_FAMILIES.iter().chain(COORDINATOR_FAMILIES.iter()) {
            assert_eq!(
                before.kind.get(*family).map(String::as_str),
                Some(*kind),
                "{family}"
            );
            assert!(before.help.contains_key(*family), "{family} has HELP");
        }
        assert_eq!(
            before.value("spillway_queue_depth", &[("queue", "spillway.shards")]),
            7.0
        );

        progress.shards_published.fetch_add(12, Relaxed);
        progress.shards_done.fetch_add(5, Relaxed);
        progress.keep_alives.fetch_add(4, Relaxed);
        depth.store(2, Relaxed);
        let after = scrape(&registry);
        assert_eq!(after.value("spillway_shards_published_total", &[]), 12.0);
        assert_eq!(after.value("spillway_shards_completed_total", &[]), 5.0);
        assert_eq!(after.value("spillway_pit_keep_alives_total", &[]), 4.0);
        assert_eq!(
            after.value("spillway_queue_depth", &[("queue", "spillway.shards")]),
            2.0
        );
        assert_eq!(
            after.value("spillway_queue_depth", &[("queue", "spillway.shards.dead")]),
            0.0
        );
    }
}
