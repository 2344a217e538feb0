//! Property tests of the planner: random windows, intervals and sparse histograms
//! (empty, one bucket holding everything, buckets past both ends, windows not aligned
//! to the interval, UTC day/hour partitions) must always give a plan that tiles the
//! job, keeps every document estimate, respects the target and the partitions, and
//! could not be merged any further.

use std::collections::BTreeMap;

use proptest::prelude::*;
use spillway_api::{PartitionBy, ShardSpec, Sharding, TimeWindow};
use spillway_plan::{
    DAY_MS, HOUR_MS, HistogramInput, MAX_BUCKETS, bucket_count, choose_interval, partition_label,
    plan_slices, plan_time, validate_plan, validate_slice_plan,
};

const YEAR_MS: i64 = 365 * DAY_MS + DAY_MS / 4;
/// 2024-03-15T00:00:00Z.
const BASE_MS: i64 = 1_710_460_800_000;

fn partition_by() -> impl Strategy<Value = PartitionBy> {
    prop_oneof![
        Just(PartitionBy::Day),
        Just(PartitionBy::Hour),
        Just(PartitionBy::None)
    ]
}

fn sharding() -> impl Strategy<Value = Sharding> {
    (
        prop_oneof![1u64..=5, 1u64..=1_000, 1_000u64..=1_000_000],
        prop_oneof![Just(1u32), 2u32..=8, 2u32..=64, Just(1024u32)],
    )
        .prop_map(|(target, max_slices)| Sharding {
            target_docs_per_shard: target,
            max_slices,
            ..Sharding::default()
        })
}

/// A job window: anywhere from before the epoch to decades after 2024, from 1 ms to
/// 20 days long, rarely aligned to anything.
fn window() -> impl Strategy<Value = TimeWindow> {
    (
        prop_oneof![
            Just(BASE_MS),
            BASE_MS - 60 * YEAR_MS..BASE_MS + 30 * YEAR_MS
        ],
        prop_oneof![1i64..=10_000, 1i64..=3 * HOUR_MS, 1i64..=20 * DAY_MS],
    )
        .prop_map(|(gte_ms, len)| TimeWindow {
            gte_ms,
            lt_ms: gte_ms + len,
        })
}

/// Interval choices: the one the coordinator would use, or an arbitrary one (which may
/// not divide the partition unit, so buckets span partitions).
fn interval(window: TimeWindow, partition_by: PartitionBy) -> impl Strategy<Value = i64> {
    let len = window.len_ms();
    prop_oneof![
        3 => Just(choose_interval(window, partition_by)),
        1 => prop_oneof![
            Just(1i64),
            Just(1_000),
            Just(60_000),
            Just(HOUR_MS),
            Just(2 * HOUR_MS),
            Just(DAY_MS),
            1i64..=2 * len + 1,
        ],
    ]
}

/// Document counts: mostly small, sometimes zero, sometimes far above any target.
fn docs() -> impl Strategy<Value = u64> {
    prop_oneof![
        2 => Just(0u64),
        6 => 1u64..=200,
        2 => 1u64..=2_000_000,
        1 => 1u64..=u64::from(u32::MAX),
    ]
}

/// A sparse histogram over `window`: aligned bucket starts, including buckets that
/// extend past either end and buckets wholly outside it.
fn histogram() -> impl Strategy<Value = (HistogramInput, Sharding, PartitionBy)> {
    (window(), partition_by(), sharding())
        .prop_flat_map(|(window, partition_by, sharding)| {
            (
                Just(window),
                interval(window, partition_by),
                Just(partition_by),
                Just(sharding),
            )
        })
        .prop_flat_map(|(window, interval_ms, partition_by, sharding)| {
            let first = window.gte_ms.div_euclid(interval_ms);
            let last = (window.lt_ms - 1).div_euclid(interval_ms);
            let index = prop_oneof![
                8 => first..=last,
                1 => Just(first),
                1 => Just(last),
                1 => first - 3..=last + 3,
            ];
            let buckets = prop_oneof![
                1 => proptest::collection::btree_map(index.clone(), docs(), 0..=1),
                6 => proptest::collection::btree_map(index, docs(), 0..=80),
            ];
            (
                Just(window),
                Just(interval_ms),
                Just(partition_by),
                Just(sharding),
                buckets,
            )
        })
        .prop_map(
            |(window, interval_ms, partition_by, sharding, buckets): (
                _,
                _,
                _,
                _,
                BTreeMap<i64, u64>,
            )| {
                let buckets = buckets
                    .into_iter()
                    .map(|(i, docs)| (i * interval_ms, docs))
                    .collect();
                (
                    HistogramInput {
                        window,
                        interval_ms,
                        buckets,
                    },
                    sharding,
                    partition_by,
                )
            },
        )
}

/// The documents of the buckets that intersect `w` (all of them: the query's range
/// filter puts a partly overlapping bucket's documents inside the job window).
fn docs_touching(h: &HistogramInput, w: TimeWindow) -> u64 {
    h.buckets
        .iter()
        .filter(|&&(start, _)| start < w.lt_ms && start + h.interval_ms > w.gte_ms)
        .map(|&(_, docs)| docs)
        .sum()
}

fn nonempty_buckets_touching(h: &HistogramInput, w: TimeWindow) -> usize {
    h.buckets
        .iter()
        .filter(|&&(start, docs)| docs > 0 && start < w.lt_ms && start + h.interval_ms > w.gte_ms)
        .count()
}

fn partition_of(t_ms: i64, partition_by: PartitionBy) -> i64 {
    match partition_by {
        PartitionBy::Day => t_ms.div_euclid(DAY_MS),
        PartitionBy::Hour => t_ms.div_euclid(HOUR_MS),
        PartitionBy::None => 0,
    }
}

/// The interval puts every partition edge on a bucket edge.
fn interval_divides_partitions(interval_ms: i64, partition_by: PartitionBy) -> bool {
    match partition_by {
        PartitionBy::Day => DAY_MS % interval_ms == 0,
        PartitionBy::Hour => HOUR_MS % interval_ms == 0,
        PartitionBy::None => true,
    }
}

/// Consecutive shards with the same window.
fn groups(shards: &[ShardSpec]) -> impl Iterator<Item = &[ShardSpec]> {
    shards.chunk_by(|a, b| a.window == b.window)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 2_000, ..ProptestConfig::default() })]

    #[test]
    fn time_plans_tile_the_job_and_keep_every_document((h, sharding, partition_by) in histogram()) {
        let shards = plan_time(&h, &sharding, partition_by);
        let target = sharding.target_docs_per_shard;

        // Tiling and slice sets.
        prop_assert_eq!(validate_plan(h.window, &shards), Ok(()));

        // Ids in plan order; slices in id order within their window.
        for (i, s) in shards.iter().enumerate() {
            prop_assert_eq!(&s.id, &ShardSpec::id_for(i));
        }
        for group in groups(&shards) {
            for (i, s) in group.iter().enumerate() {
                if let Some(slice) = s.slice {
                    prop_assert_eq!(slice.id as usize, i);
                }
            }
        }

        // Every document of the histogram inside the window is planned exactly once.
        let planned: u64 = shards.iter().map(|s| s.estimated_docs).sum();
        prop_assert_eq!(planned, docs_touching(&h, h.window));

        for group in groups(&shards) {
            let w = group[0].window.unwrap();
            let docs: u64 = group.iter().map(|s| s.estimated_docs).sum();

            // No shard crosses a partition edge, and each carries its partition's label.
            prop_assert_eq!(partition_of(w.gte_ms, partition_by), partition_of(w.lt_ms - 1, partition_by));
            for s in group {
                prop_assert_eq!(&s.partition, &partition_label(w.gte_ms, partition_by));
            }

            // When buckets do not span partitions, each shard holds exactly the documents
            // of the buckets it covers.
            if interval_divides_partitions(h.interval_ms, partition_by) {
                prop_assert_eq!(docs, docs_touching(&h, w));
            }

            match group[0].slice {
                // A sliced window is one bucket too big for the target, sliced as the
                // rules say, with estimates spread evenly.
                Some(slice) => {
                    let max_slices = u64::from(sharding.max_slices.min(1024));
                    prop_assert!(docs > target);
                    prop_assert_eq!(u64::from(slice.max), docs.div_ceil(target).clamp(2, max_slices));
                    if interval_divides_partitions(h.interval_ms, partition_by) {
                        prop_assert_eq!(nonempty_buckets_touching(&h, w), 1);
                    }
                    let lo = group.iter().map(|s| s.estimated_docs).min().unwrap();
                    let hi = group.iter().map(|s| s.estimated_docs).max().unwrap();
                    prop_assert!(hi - lo <= 1);
                }
                // An unsliced shard above the target is one bucket that could not be
                // sliced (slicing disabled).
                None if docs > target => {
                    prop_assert!(sharding.max_slices < 2);
                    if interval_divides_partitions(h.interval_ms, partition_by) {
                        prop_assert_eq!(nonempty_buckets_touching(&h, w), 1);
                    }
                }
                None => {}
            }
        }

        // Each partition receives each bucket's documents in proportion to the share of
        // the bucket's (clipped) length inside it, up to rounding.
        let chunks: Vec<&[ShardSpec]> = shards
            .chunk_by(|a, b| {
                partition_of(a.window.unwrap().gte_ms, partition_by)
                    == partition_of(b.window.unwrap().gte_ms, partition_by)
            })
            .collect();
        for part in chunks {
            let span = TimeWindow {
                gte_ms: part[0].window.unwrap().gte_ms,
                lt_ms: part[part.len() - 1].window.unwrap().lt_ms,
            };
            let planned: u64 = part.iter().map(|s| s.estimated_docs).sum();
            let mut expected = 0f64;
            let mut touching = 0f64;
            for &(start, docs) in &h.buckets {
                let gte = start.max(h.window.gte_ms);
                let lt = (start + h.interval_ms).min(h.window.lt_ms);
                let inside = lt.min(span.lt_ms) - gte.max(span.gte_ms);
                if gte < lt && inside > 0 {
                    expected += docs as f64 * inside as f64 / (lt - gte) as f64;
                    touching += 1.0;
                }
            }
            prop_assert!(
                (planned as f64 - expected).abs() <= touching + 1.0,
                "partition {:?} got {} docs, {} expected", span, planned, expected
            );
        }

        // Minimal: no two neighbouring unsliced shards of one partition fit the target
        // together (else they should have been one shard).
        for pair in shards.windows(2) {
            let (a, b) = (&pair[0], &pair[1]);
            if a.slice.is_none() && b.slice.is_none() && a.partition == b.partition
                && partition_of(a.window.unwrap().gte_ms, partition_by)
                    == partition_of(b.window.unwrap().gte_ms, partition_by)
            {
                prop_assert!(
                    a.estimated_docs + b.estimated_docs > target,
                    "shards {} and {} ({} + {} docs) fit the target {} together",
                    a.id, b.id, a.estimated_docs, b.estimated_docs, target
                );
            }
        }

        // An empty stretch never stands alone where it could join a neighbour in its
        // partition.
        for pair in groups(&shards).collect::<Vec<_>>().windows(2) {
            let (a, b) = (pair[0], pair[1]);
            let same_partition = partition_of(a[0].window.unwrap().gte_ms, partition_by)
                == partition_of(b[0].window.unwrap().gte_ms, partition_by);
            let empty = |g: &[ShardSpec]| g.iter().all(|s| s.estimated_docs == 0);
            prop_assert!(!(same_partition && (empty(a) || empty(b))), "{:?} / {:?}", a, b);
        }
    }

    #[test]
    fn slice_plans_cover_the_whole_range(total in prop_oneof![0u64..=10, 0u64..=u64::from(u32::MAX)], sharding in sharding()) {
        let shards = plan_slices(total, &sharding);
        prop_assert_eq!(validate_slice_plan(&shards), Ok(()));
        prop_assert_eq!(shards.iter().map(|s| s.estimated_docs).sum::<u64>(), total);
        let target = sharding.target_docs_per_shard;
        let expected = total.div_ceil(target).clamp(1, u64::from(sharding.max_slices.min(1024)));
        prop_assert_eq!(shards.len() as u64, expected);
        if (shards.len() as u64) < u64::from(sharding.max_slices) {
            prop_assert!(shards.iter().all(|s| s.estimated_docs <= target));
        }
        for (i, s) in shards.iter().enumerate() {
            prop_assert_eq!(&s.id, &ShardSpec::id_for(i));
        }
    }

    #[test]
    fn chosen_intervals_stay_in_bounds(
        gte_ms in -60 * YEAR_MS..=BASE_MS + 30 * YEAR_MS,
        len in prop_oneof![60_000i64..=DAY_MS, 60_000i64..=10 * YEAR_MS, Just(60_000i64), Just(10 * YEAR_MS)],
        partition_by in partition_by(),
    ) {
        let window = TimeWindow { gte_ms, lt_ms: gte_ms + len };
        let interval = choose_interval(window, partition_by);
        // Bucket count computed independently of the crate's helper.
        let buckets = (window.lt_ms - 1).div_euclid(interval) - window.gte_ms.div_euclid(interval) + 1;
        prop_assert_eq!(buckets, bucket_count(window, interval));
        prop_assert!(interval >= 1_000);
        prop_assert!(buckets <= MAX_BUCKETS, "{} buckets of {} ms", buckets, interval);
        if interval > 1_000 {
            prop_assert!(buckets >= 1_000, "only {} buckets of {} ms", buckets, interval);
        }
        let unit = match partition_by {
            PartitionBy::Day => Some(DAY_MS),
            PartitionBy::Hour => Some(HOUR_MS),
            PartitionBy::None => None,
        };
        if let Some(unit) = unit {
            if bucket_count(window, unit) <= MAX_BUCKETS {
                prop_assert_eq!(unit % interval, 0, "{} does not divide {}", interval, unit);
            } else {
                // Only hourly jobs longer than ~5.7 years get here: bucket edges still
                // fall on partition edges, but a bucket spans several partitions.
                prop_assert_eq!(partition_by, PartitionBy::Hour);
                prop_assert_eq!(interval % unit, 0, "{} is not a multiple of {}", interval, unit);
            }
        }
    }
}

#[test]
fn hourly_jobs_over_ten_years_use_whole_hours() {
    let window = TimeWindow {
        gte_ms: BASE_MS - 10 * YEAR_MS,
        lt_ms: BASE_MS,
    };
    let interval = choose_interval(window, PartitionBy::Hour);
    assert_eq!(interval, 2 * HOUR_MS);
    assert!(bucket_count(window, interval) <= MAX_BUCKETS);
}
