//! Deterministic event data: document `i` is a pure function of `(seed, i)`, so tests can
//! regenerate expected documents instead of storing them. Events spread over daily indices
//! (`logs-2024.03.15`) with a realistic mapping; about one document in 10,000 is large
//! (64–256 KiB message). [`load`] streams documents into a [`Cluster`] in small batches
//! without materialising the whole set; [`docs`] yields the same documents for comparisons.

use bytes::Bytes;
use chrono::{Duration, NaiveDate};
use rand::{Rng, SeedableRng, rngs::SmallRng};
use serde_json::{Value, json};

use crate::cluster::Cluster;
use crate::error::ApiError;

/// What to generate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DataSpec {
    /// Number of documents.
    pub docs: u64,
    /// Number of daily indices.
    pub days: u32,
    /// First day.
    pub start: NaiveDate,
    /// Primary shards per index.
    pub shards: u32,
    /// Seed.
    pub seed: u64,
    /// Index name prefix (`logs-` gives `logs-2024.03.01`).
    pub index_prefix: String,
    /// Approximate size of a normal document's message, in bytes.
    pub avg_message_bytes: usize,
    /// One document in this many is large (0 disables large documents).
    pub large_every: u64,
}

impl Default for DataSpec {
    fn default() -> Self {
        Self {
            docs: 10_000,
            days: 3,
            start: NaiveDate::from_ymd_opt(2024, 3, 1).unwrap_or_default(),
            shards: 3,
            seed: 42,
            index_prefix: "logs-".into(),
            avg_message_bytes: 120,
            large_every: 10_000,
        }
    }
}

/// One generated document.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedDoc {
    /// Index it belongs to.
    pub index: String,
    /// `_id` (also `event.id`).
    pub id: String,
    /// Minified JSON source.
    pub source: Bytes,
}

/// Summary of a load.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadSummary {
    /// Documents written.
    pub docs: u64,
    /// Indices created, in day order.
    pub indices: Vec<String>,
    /// Source bytes written.
    pub bytes: u64,
}

fn splitmix(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// Mapping of the generated indices.
pub fn mapping() -> Value {
    json!({
        "properties": {
            "@timestamp": {"type": "date"},
            "event": {"properties": {"id": {"type": "keyword"}, "dataset": {"type": "keyword"}, "sequence": {"type": "long"}}},
            "host": {"properties": {"name": {"type": "keyword"}, "ip": {"type": "ip"}}},
            "service": {"type": "keyword"},
            "level": {"type": "keyword"},
            "message": {"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}},
            "http": {"properties": {"status": {"type": "long"}, "bytes": {"type": "long"}, "method": {"type": "keyword"}}},
            "latency_ms": {"type": "double"},
            "user": {"properties": {"id": {"type": "keyword"}}},
            "tags": {"type": "keyword"},
            "success": {"type": "boolean"},
            "geo": {"properties": {
                "country_iso_code": {"type": "keyword"},
                "city_name": {"type": "keyword"},
                "location": {"type": "geo_point"}
            }}
        }
    })
}

/// Index name of day `d` (0-based).
pub fn index_name(spec: &DataSpec, day: u32) -> String {
    let date = spec.start + Duration::days(i64::from(day));
    format!("{}{}", spec.index_prefix, date.format("%Y.%m.%d"))
}

/// Names of all indices of the spec.
pub fn index_names(spec: &DataSpec) -> Vec<String> {
    (0..spec.days.max(1)).map(|d| index_name(spec, d)).collect()
}

/// `_id` of document `i`: 11-char URL-safe base64 of a bijective mix of `(seed, i)`.
pub fn doc_id(seed: u64, i: u64) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(
        splitmix(seed ^ 0x5EED)
            .wrapping_add(i)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15 | 1)
            .to_be_bytes(),
    )
}

const SERVICES: [&str; 6] = [
    "checkout",
    "payments",
    "search",
    "auth",
    "inventory",
    "gateway",
];
const WORDS: [&str; 24] = [
    "request",
    "completed",
    "user",
    "cart",
    "timeout",
    "retry",
    "cache",
    "miss",
    "hit",
    "order",
    "payment",
    "Zürich",
    "naïve",
    "café",
    "東京",
    "данные",
    "λ",
    "ok",
    "failed",
    "upstream",
    "latency",
    "token",
    "refresh",
    "🚀",
];
const COUNTRIES: [(&str, &str, f64, f64); 5] = [
    ("CH", "Zürich", 47.37, 8.54),
    ("JP", "Tokyo", 35.68, 139.69),
    ("US", "Portland", 45.52, -122.68),
    ("DE", "Berlin", 52.52, 13.40),
    ("BR", "São Paulo", -23.55, -46.63),
];

fn push_str(buf: &mut Vec<u8>, s: &str) {
    let _ = serde_json::to_writer(&mut *buf, s);
}

/// Document `i` of the spec.
pub fn doc(spec: &DataSpec, i: u64) -> GeneratedDoc {
    let days = u64::from(spec.days.max(1));
    let day = if spec.docs == 0 {
        0
    } else {
        ((i.min(spec.docs.saturating_sub(1)) * days) / spec.docs.max(1)) as u32
    };
    let mut rng =
        SmallRng::seed_from_u64(splitmix(spec.seed.wrapping_mul(0x2545_F491_4F6C_DD1D) ^ i));
    let id = doc_id(spec.seed, i);
    let day_start = spec
        .start
        .and_hms_opt(0, 0, 0)
        .unwrap_or_default()
        .and_utc()
        .timestamp_millis()
        + i64::from(day) * 86_400_000;
    let ts = day_start + rng.random_range(0..86_400_000i64);
    let ts_s = chrono::DateTime::from_timestamp_millis(ts)
        .unwrap_or_default()
        .format("%Y-%m-%dT%H:%M:%S%.3fZ")
        .to_string();
    let mut b: Vec<u8> = Vec::with_capacity(spec.avg_message_bytes + 512);
    b.extend_from_slice(b"{\"@timestamp\":");
    push_str(&mut b, &ts_s);
    b.extend_from_slice(b",\"event\":{\"id\":");
    push_str(&mut b, &id);
    b.extend_from_slice(format!(",\"dataset\":\"app.log\",\"sequence\":{i}}}").as_bytes());
    let host_no = rng.random_range(0..64u32);
    b.extend_from_slice(
        format!(
            ",\"host\":{{\"name\":\"host-{host_no:02}\",\"ip\":\"10.0.{}.{}\"}}",
            host_no / 8,
            1 + host_no % 250
        )
        .as_bytes(),
    );
    b.extend_from_slice(b",\"service\":");
    push_str(&mut b, SERVICES[rng.random_range(0..SERVICES.len())]);
    let lv: f64 = rng.random();
    let level = if lv < 0.70 {
        "INFO"
    } else if lv < 0.85 {
        "DEBUG"
    } else if lv < 0.95 {
        "WARN"
    } else {
        "ERROR"
    };
    b.extend_from_slice(b",\"level\":");
    push_str(&mut b, level);
    let large = spec.large_every > 0 && rng.random_range(0..spec.large_every) == 0;
    let target = if large {
        rng.random_range(64 * 1024..256 * 1024)
    } else {
        spec.avg_message_bytes.max(8) / 2 + rng.random_range(0..spec.avg_message_bytes.max(8))
    };
    let mut msg = String::with_capacity(target + 16);
    while msg.len() < target {
        if !msg.is_empty() {
            msg.push(' ');
        }
        msg.push_str(WORDS[rng.random_range(0..WORDS.len())]);
    }
    b.extend_from_slice(b",\"message\":");
    push_str(&mut b, &msg);
    if rng.random_range(0..10) != 0 {
        let status =
            [200, 200, 200, 201, 204, 301, 400, 404, 429, 500, 503][rng.random_range(0..11)];
        let method = ["GET", "POST", "PUT", "DELETE"][rng.random_range(0..4)];
        b.extend_from_slice(
            format!(
                ",\"http\":{{\"status\":{status},\"bytes\":{},\"method\":\"{method}\"}}",
                rng.random_range(0..2_000_000u64)
            )
            .as_bytes(),
        );
    }
    let latency: f64 = (rng.random::<f64>() * 2500.0 * 1000.0).round() / 1000.0;
    b.extend_from_slice(b",\"latency_ms\":");
    let _ = serde_json::to_writer(&mut b, &latency);
    if rng.random_range(0..5) != 0 {
        b.extend_from_slice(
            format!(
                ",\"user\":{{\"id\":\"u-{:05}\"}}",
                rng.random_range(0..50_000u32)
            )
            .as_bytes(),
        );
    }
    let ntags = rng.random_range(0..4);
    b.extend_from_slice(b",\"tags\":[");
    for t in 0..ntags {
        if t > 0 {
            b.push(b',');
        }
        push_str(
            &mut b,
            ["prod", "canary", "eu", "us", "batch", "web"][rng.random_range(0..6)],
        );
    }
    b.push(b']');
    b.extend_from_slice(if level == "ERROR" {
        b",\"success\":false"
    } else {
        b",\"success\":true"
    });
    if rng.random_range(0..4) != 0 {
        let (cc, city, lat, lon) = COUNTRIES[rng.random_range(0..COUNTRIES.len())];
        b.extend_from_slice(b",\"geo\":{\"country_iso_code\":");
        push_str(&mut b, cc);
        b.extend_from_slice(b",\"city_name\":");
        push_str(&mut b, city);
        b.extend_from_slice(format!(",\"location\":{{\"lat\":{lat},\"lon\":{lon}}}}}").as_bytes());
    }
    b.push(b'}');
    // exact size: the store keeps this buffer for the document's lifetime, and a `Vec` with
    // spare capacity would keep the spare bytes and a separate `Bytes` header too
    b.shrink_to_fit();
    GeneratedDoc {
        index: index_name(spec, day),
        id,
        source: Bytes::from(b),
    }
}

/// All documents of the spec, in order, generated lazily.
pub fn docs(spec: &DataSpec) -> impl Iterator<Item = GeneratedDoc> + '_ {
    (0..spec.docs).map(move |i| doc(spec, i))
}

/// Creates the daily indices (if missing) and streams every document into the cluster, then
/// refreshes.
pub fn load(cluster: &Cluster, spec: &DataSpec) -> Result<LoadSummary, ApiError> {
    let names = index_names(spec);
    for n in &names {
        if cluster.doc_count(n).is_none() {
            cluster.create_index(n, json!({"settings": {"number_of_shards": spec.shards, "number_of_replicas": 0}, "mappings": mapping()}))?;
        }
    }
    let mut written = 0u64;
    let mut bytes = 0u64;
    let mut batch = Vec::with_capacity(1000);
    for d in docs(spec) {
        bytes += d.source.len() as u64;
        batch.push((d.index, d.id, d.source));
        if batch.len() == 1000 {
            written += cluster.index_batch(std::mem::take(&mut batch))? as u64;
        }
    }
    if !batch.is_empty() {
        written += cluster.index_batch(batch)? as u64;
    }
    cluster.refresh_all();
    Ok(LoadSummary {
        docs: written,
        indices: names,
        bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn deterministic_and_unique() {
        let spec = DataSpec {
            docs: 5000,
            ..DataSpec::default()
        };
        let a: Vec<GeneratedDoc> = docs(&spec).collect();
        let b: Vec<GeneratedDoc> = docs(&spec).collect();
        assert_eq!(a, b);
        let ids: std::collections::HashSet<&str> = a.iter().map(|d| d.id.as_str()).collect();
        assert_eq!(ids.len(), a.len());
        for d in &a {
            let v: Value = serde_json::from_slice(&d.source).unwrap();
            assert_eq!(v["event"]["id"], json!(d.id));
            let ts = v["@timestamp"].as_str().unwrap();
            let day = ts[..10].replace('-', ".");
            assert!(d.index.ends_with(&day), "{} vs {}", d.index, ts);
        }
        assert_eq!(
            index_names(&spec),
            vec!["logs-2024.03.01", "logs-2024.03.02", "logs-2024.03.03"]
        );
        let other = DataSpec {
            seed: 7,
            ..spec.clone()
        };
        assert_ne!(doc(&other, 0), doc(&spec, 0));
    }

    #[test]
    fn some_documents_are_large() {
        let spec = DataSpec {
            docs: 2000,
            large_every: 100,
            ..DataSpec::default()
        };
        let large = docs(&spec).filter(|d| d.source.len() > 64 * 1024).count();
        assert!(large > 5 && large < 60, "{large}");
    }
}
