//! Shard walking: a plan whose every shard reads one index shard (or a part of one), for
//! clusters without `_shard_doc` (OpenSearch before 3.3, Elasticsearch before 7.12).
//!
//! Without `_shard_doc` a PIT search spanning several index shards has no unique cheap page
//! order: `_doc` ties across shards (`search_after` skips documents at page boundaries) and
//! `_id` is served from fielddata, which loads every `_id` of the indices into the heap —
//! or is refused where `indices.id_field_data.enabled` is false. Within one index shard,
//! `_doc` is unique. The cluster's own slicing names one shard: with `slice {id, max}` and
//! `max >= numShards`, only shard `id % numShards` of an index answers, and when
//! `max == numShards` it answers with all of its documents; a larger multiple of
//! `numShards` cuts each shard further by `_id` hash (the terms dictionary, no fielddata).
//! A `term` filter on `_index` keeps each search to one index.
//!
//! [`plan_shard_walk`] takes the time plan (its windows and partitions; its slices are
//! replaced), the documents of each index in each window (counted under the same PIT), and
//! each index's number of shards. Every index with documents in a window gets
//! `numShards × m` shards, `m = ceil(docs / (numShards × target))`; a window with no
//! documents keeps one complete slice set of the first index, so the windows still tile.

use std::collections::BTreeMap;

use spillway_api::{ShardSpec, Sharding, SliceRef, TimeWindow};

use crate::error::PlanError;
use crate::slices::{MAX_PIT_SLICES, spread, target};

/// The distinct windows of a plan, in plan order, with their partitions (`None` for a plan
/// without a time field): the groups [`plan_shard_walk`] expects counts for.
pub fn plan_windows(plan: &[ShardSpec]) -> Vec<(Option<TimeWindow>, Option<String>)> {
    plan.chunk_by(|a, b| a.window == b.window)
        .map(|g| (g[0].window, g[0].partition.clone()))
        .collect()
}

/// Re-plans `windows` (from [`plan_windows`]) into index shards: `counts[i]` holds the
/// documents of each index in window `i`, `shards_of` each index's number of shards.
pub fn plan_shard_walk(
    windows: &[(Option<TimeWindow>, Option<String>)],
    counts: &[BTreeMap<String, u64>],
    shards_of: &BTreeMap<String, u32>,
    sharding: &Sharding,
) -> Result<Vec<ShardSpec>, PlanError> {
    if windows.len() != counts.len() {
        return Err(PlanError::WalkCounts {
            detail: format!("{} windows but {} counts", windows.len(), counts.len()),
        });
    }
    let first = shards_of
        .iter()
        .next()
        .map(|(name, n)| (name.clone(), *n))
        .ok_or_else(|| PlanError::WalkCounts {
            detail: "the snapshot holds no index".into(),
        })?;
    let mut shards = Vec::new();
    for ((window, partition), counts) in windows.iter().zip(counts) {
        let mut units: Vec<(String, u32, u64)> = Vec::new();
        for (index, &docs) in counts.iter().filter(|(_, d)| **d > 0) {
            let n = *shards_of.get(index).ok_or_else(|| PlanError::WalkCounts {
                detail: format!(
                    "index [{index}] holds documents of the job but its shard count is unknown"
                ),
            })?;
            units.push((index.clone(), n, docs));
        }
        if units.is_empty() {
            units.push((first.0.clone(), first.1, 0));
        }
        for (index, n, docs) in units {
            let n = n.max(1);
            let max = slices_for(docs, n, sharding);
            for (k, estimated_docs) in (0..max).zip(spread(docs, max)) {
                shards.push(ShardSpec {
                    id: ShardSpec::id_for(shards.len()),
                    window: *window,
                    slice: (max > 1).then_some(SliceRef { id: k, max }),
                    estimated_docs,
                    partition: partition.clone(),
                    index: Some(index.clone()),
                });
            }
        }
    }
    Ok(shards)
}

/// `n × m` slices for `docs` documents in an index of `n` shards: `m` parts per shard of at
/// most the target each, `m = 1` when the job disables slicing (`maxSlices < 2`), and the
/// total within [`MAX_PIT_SLICES`] and `maxSlices` (never below `n`: a shard is the unit).
fn slices_for(docs: u64, n: u32, sharding: &Sharding) -> u32 {
    let cap = sharding.max_slices.min(MAX_PIT_SLICES);
    let per_shard = docs
        .div_ceil(u64::from(n))
        .div_ceil(target(sharding))
        .max(1);
    let m = if cap < 2 {
        1
    } else {
        per_shard.min(u64::from((cap / n).max(1)))
    };
    u32::try_from(u64::from(n) * m).unwrap_or(n)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::{validate_plan, validate_slice_plan};

    fn sharding(target: u64) -> Sharding {
        Sharding {
            target_docs_per_shard: target,
            ..Sharding::default()
        }
    }

    fn map<V: Copy>(pairs: &[(&str, V)]) -> BTreeMap<String, V> {
        pairs.iter().map(|(k, v)| ((*k).to_string(), *v)).collect()
    }

    fn w(gte_ms: i64, lt_ms: i64) -> Option<TimeWindow> {
        Some(TimeWindow { gte_ms, lt_ms })
    }

    #[test]
    fn every_index_with_documents_gets_one_shard_per_index_shard() {
        let windows = vec![(w(0, 10), None), (w(10, 20), None)];
        let counts = vec![
            map(&[("logs-1", 300), ("logs-2", 0)]),
            map(&[("logs-1", 5), ("logs-2", 200)]),
        ];
        let shards_of = map(&[("logs-1", 3), ("logs-2", 2)]);
        let plan = plan_shard_walk(&windows, &counts, &shards_of, &sharding(1000)).unwrap();
        let got: Vec<_> = plan
            .iter()
            .map(|s| {
                (
                    s.window.unwrap().gte_ms,
                    s.index.clone().unwrap(),
                    s.slice.map(|x| (x.id, x.max)),
                    s.estimated_docs,
                )
            })
            .collect();
        let l1 = || "logs-1".to_string();
        let l2 = || "logs-2".to_string();
        assert_eq!(
            got,
            vec![
                (0, l1(), Some((0, 3)), 100),
                (0, l1(), Some((1, 3)), 100),
                (0, l1(), Some((2, 3)), 100),
                (10, l1(), Some((0, 3)), 2),
                (10, l1(), Some((1, 3)), 2),
                (10, l1(), Some((2, 3)), 1),
                (10, l2(), Some((0, 2)), 100),
                (10, l2(), Some((1, 2)), 100),
            ]
        );
        validate_plan(
            TimeWindow {
                gte_ms: 0,
                lt_ms: 20,
            },
            &plan,
        )
        .unwrap();
        let ids: Vec<_> = plan.iter().map(|s| s.id.as_str()).collect();
        assert_eq!(ids[0], "000000");
        assert_eq!(ids[7], "000007");
    }

    #[test]
    fn a_shard_larger_than_the_target_is_cut_by_a_multiple_of_its_shard_count() {
        let windows = vec![(None, None)];
        let counts = vec![map(&[("big", 10_000)])];
        let plan =
            plan_shard_walk(&windows, &counts, &map(&[("big", 2)]), &sharding(1000)).unwrap();
        // 5,000 per shard at 1,000 a part: 5 parts of each of the 2 shards.
        assert_eq!(plan.len(), 10);
        assert!(plan.iter().all(|s| s.slice.unwrap().max == 10));
        assert_eq!(plan.iter().map(|s| s.estimated_docs).sum::<u64>(), 10_000);
        validate_slice_plan(&plan).unwrap();
    }

    #[test]
    fn a_single_shard_index_under_the_target_is_read_without_a_slice() {
        let plan = plan_shard_walk(
            &[(None, None)],
            &[map(&[("one", 10)])],
            &map(&[("one", 1)]),
            &sharding(1000),
        )
        .unwrap();
        assert_eq!(plan.len(), 1);
        assert_eq!(plan[0].slice, None);
        assert_eq!(plan[0].index.as_deref(), Some("one"));
    }

    #[test]
    fn disabled_slicing_still_walks_each_shard_and_the_cap_holds() {
        let s = Sharding {
            target_docs_per_shard: 10,
            max_slices: 1,
            ..Sharding::default()
        };
        assert_eq!(slices_for(1_000_000, 4, &s), 4);
        let s = Sharding {
            target_docs_per_shard: 1,
            max_slices: 100_000,
            ..Sharding::default()
        };
        assert_eq!(slices_for(1_000_000, 5, &s), 1020);
    }

    #[test]
    fn an_empty_window_keeps_the_tiling_with_the_first_index() {
        let windows = vec![(w(0, 10), None), (w(10, 20), None)];
        let counts = vec![map(&[("b", 0)]), map(&[("b", 4)])];
        let shards_of = map(&[("a", 2), ("b", 1)]);
        let plan = plan_shard_walk(&windows, &counts, &shards_of, &sharding(100)).unwrap();
        assert_eq!(plan.len(), 3);
        assert_eq!(plan[0].index.as_deref(), Some("a"));
        assert_eq!(plan[0].estimated_docs + plan[1].estimated_docs, 0);
        assert_eq!(plan[2].index.as_deref(), Some("b"));
        validate_plan(
            TimeWindow {
                gte_ms: 0,
                lt_ms: 20,
            },
            &plan,
        )
        .unwrap();
    }

    #[test]
    fn an_index_without_a_shard_count_is_an_error_not_a_loss() {
        let e = plan_shard_walk(
            &[(None, None)],
            &[map(&[("ghost", 3)])],
            &map(&[("other", 1)]),
            &sharding(100),
        )
        .unwrap_err();
        assert!(e.to_string().contains("ghost"), "{e}");
    }
}
