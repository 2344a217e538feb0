//! What a shard-walking plan needs from the cluster: each index's number of shards, and the
//! documents of each index in each planned window, counted under the job's snapshot.

use std::collections::BTreeMap;

use http::Method;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use spillway_api::TimeWindow;

use crate::client::{Client, Target, filtered_query, index_path, json_body};
use crate::error::SourceError;

/// The most `terms` buckets one counting request may produce (below the default
/// `search.max_buckets` of 65,535).
const BUCKETS_PER_REQUEST: usize = 20_000;

impl Client {
    /// Each index matching `indices` with its number of primary shards.
    pub async fn index_shards(
        &self,
        indices: &[String],
    ) -> Result<BTreeMap<String, u32>, SourceError> {
        let path = format!("/{}/_settings?flat_settings=true", index_path(indices)?);
        let all: Map<String, Value> = self.request_json(Method::GET, &path, None).await?;
        let mut out = BTreeMap::new();
        for (index, v) in all {
            let n = &v["settings"]["index.number_of_shards"];
            let n = n
                .as_str()
                .and_then(|s| s.parse::<u32>().ok())
                .or_else(|| n.as_u64().and_then(|n| u32::try_from(n).ok()))
                .filter(|n| *n > 0)
                .ok_or_else(|| SourceError::Decode {
                    url: self.transport().url_for(&path),
                    detail: format!("index [{index}] has no valid index.number_of_shards: {n}"),
                })?;
            out.insert(index, n);
        }
        Ok(out)
    }

    /// Documents of `query` in each of `windows` (`None`: no time restriction), per index,
    /// under `target`: a `filters` aggregation with a `terms` on `_index` below it (no
    /// fielddata: the index name is a constant per shard), as few requests as the bucket
    /// limit allows. `indices` bounds the number of index buckets of one window.
    pub async fn index_counts(
        &self,
        target: &Target,
        query: &Value,
        time_field: Option<&str>,
        windows: &[Option<TimeWindow>],
        indices: usize,
    ) -> Result<Vec<BTreeMap<String, u64>>, SourceError> {
        let indices = indices.max(1);
        let per_request = (BUCKETS_PER_REQUEST / indices).max(1);
        let (path, pit) = self.search_target(target)?;
        let url = self.transport().url_for(&path);
        let mut out = Vec::with_capacity(windows.len());
        for chunk in windows.chunks(per_request) {
            let filters: Map<String, Value> = chunk
                .iter()
                .enumerate()
                .map(|(i, w)| (i.to_string(), filtered_query(query, time_field, *w)))
                .collect();
            let mut body = json!({
                "size": 0,
                "track_total_hits": false,
                "aggs": {"spillway_windows": {
                    "filters": {"filters": filters},
                    "aggs": {"spillway_indices": {"terms": {"field": "_index", "size": indices}}},
                }},
            });
            if let Some(pit) = &pit {
                body["pit"] = pit.clone();
            }
            let r: R = self
                .request_json(Method::POST, &path, Some(json_body(&body)))
                .await?;
            for i in 0..chunk.len() {
                let bucket = r
                    .aggregations
                    .spillway_windows
                    .buckets
                    .get(&i.to_string())
                    .ok_or_else(|| SourceError::Decode {
                        url: url.clone(),
                        detail: format!("the window counts have no bucket {i}"),
                    })?;
                let terms = &bucket.spillway_indices;
                if terms.sum_other_doc_count > 0 {
                    return Err(SourceError::Decode {
                        url: url.clone(),
                        detail: format!(
                            "{} documents belong to indices beyond the {indices} counted",
                            terms.sum_other_doc_count
                        ),
                    });
                }
                let counts: BTreeMap<String, u64> = terms
                    .buckets
                    .iter()
                    .map(|b| (b.key.clone(), b.doc_count))
                    .collect();
                let sum: u64 = counts.values().sum();
                if sum != bucket.doc_count {
                    return Err(SourceError::Decode {
                        url: url.clone(),
                        detail: format!(
                            "window {i} holds {} documents but its indices {sum}",
                            bucket.doc_count
                        ),
                    });
                }
                out.push(counts);
            }
        }
        Ok(out)
    }
}

#[derive(Deserialize)]
struct R {
    aggregations: Aggs,
}

#[derive(Deserialize)]
struct Aggs {
    spillway_windows: Windows,
}

#[derive(Deserialize)]
struct Windows {
    buckets: BTreeMap<String, WindowBucket>,
}

#[derive(Deserialize)]
struct WindowBucket {
    doc_count: u64,
    spillway_indices: Terms,
}

#[derive(Deserialize)]
struct Terms {
    #[serde(default)]
    sum_other_doc_count: u64,
    buckets: Vec<TermBucket>,
}

#[derive(Deserialize)]
struct TermBucket {
    key: String,
    doc_count: u64,
}
