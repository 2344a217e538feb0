//! Planning a job with a time field: from one `date_histogram` to shards that tile the
//! job window.
//!
//! The rules, applied in this order:
//! 1. **Clip.** Each bucket is `[start, start + interval)`, clipped to the job window
//!    `[gte, lt)` (the first and last buckets may extend past it). Buckets wholly
//!    outside the window are ignored; the query's range filter means a partly
//!    overlapping bucket's documents are all inside the window. Buckets are expected
//!    sorted and epoch-aligned; unsorted input is sorted, and a bucket overlapping the
//!    previous one (a repeated or misaligned start) is merged into it.
//! 2. **Fill.** Stretches with no documents (absent or zero buckets) become empty
//!    pieces, so the pieces tile the window exactly. They are planned like any other
//!    piece, which merges them into neighbouring shards: an empty stretch costs no more
//!    than the shard it joins, and documents that arrive where the histogram saw none
//!    are still exported.
//! 3. **Cut at partitions.** Pieces are cut at every partition edge (UTC day or hour;
//!    none for [`PartitionBy::None`]). With an interval from
//!    [`crate::choose_interval`] this only cuts empty stretches and clipped ends; a
//!    bucket longer than its partition (very long hourly jobs) has its documents
//!    apportioned to the cuts by length, rounding so the parts still sum to the bucket.
//! 4. **Merge.** Within one partition, consecutive pieces join the open shard while its
//!    estimate stays `<= target_docs_per_shard`; the first piece that would overflow it
//!    starts the next shard. Empty pieces always join. So no two neighbouring unsliced
//!    shards of one partition could be merged under the target.
//! 5. **Slice.** A piece with more documents than the target cannot be cut by time any
//!    finer (the histogram knows nothing finer): it becomes
//!    `n = ceil(docs / target)` PIT slices, clamped to `[2, max_slices]`, each one shard
//!    with the same window and `slice: {id, max: n}` and `estimated_docs ≈ docs / n`.
//!    Empty stretches before it (when nothing else is open) and after it join its
//!    window. With `max_slices < 2` slicing is off and such a piece is one shard above
//!    the target.
//! 6. **Name.** Shards are numbered [`ShardSpec::id_for`] in plan order (time order,
//!    then slice id); each carries the label of its partition.

use serde::{Deserialize, Serialize};
use spillway_api::{PartitionBy, ShardSpec, Sharding, SliceRef, TimeWindow};

use crate::partition::{next_partition_edge, partition_label, partition_ordinal};
use crate::slices::{slices_for_bucket, spread, target};

/// The answer of the planning histogram, reduced to what the planner needs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HistogramInput {
    /// The job's `[gte, lt)` in epoch milliseconds.
    pub window: TimeWindow,
    /// The histogram's `fixed_interval` in milliseconds (values below 1 act as 1).
    pub interval_ms: i64,
    /// `(bucket start ms, documents)`, buckets aligned to `interval_ms` from the epoch.
    /// Sparse: empty buckets may be absent.
    pub buckets: Vec<(i64, u64)>,
}

/// A stretch of time with its document estimate, inside one partition once cut.
#[derive(Debug, Clone, Copy)]
struct Piece {
    gte_ms: i64,
    lt_ms: i64,
    docs: u64,
}

/// A shard before naming: `slices == 1` means unsliced.
#[derive(Debug)]
struct Draft {
    window: TimeWindow,
    docs: u64,
    slices: u32,
    partition: i64,
}

/// Plans a job with a time field: shards that tile `h.window` exactly, sized from the
/// histogram to about `sharding.target_docs_per_shard`, none crossing a partition
/// edge. See the module docs for the rules. An empty job window gives no shards
/// (which [`crate::validate_plan`] rejects).
pub fn plan_time(
    h: &HistogramInput,
    sharding: &Sharding,
    partition_by: PartitionBy,
) -> Vec<ShardSpec> {
    let window = h.window;
    if window.lt_ms <= window.gte_ms {
        return Vec::new();
    }
    let mut pieces = Vec::new();
    let mut covered_to = window.gte_ms;
    for bucket in clip_buckets(h) {
        if covered_to < bucket.gte_ms {
            cut_at_partitions(
                Piece {
                    gte_ms: covered_to,
                    lt_ms: bucket.gte_ms,
                    docs: 0,
                },
                partition_by,
                &mut pieces,
            );
        }
        cut_at_partitions(bucket, partition_by, &mut pieces);
        covered_to = bucket.lt_ms;
    }
    if covered_to < window.lt_ms {
        cut_at_partitions(
            Piece {
                gte_ms: covered_to,
                lt_ms: window.lt_ms,
                docs: 0,
            },
            partition_by,
            &mut pieces,
        );
    }
    let drafts = merge(&pieces, sharding, partition_by);
    name(drafts, partition_by)
}

/// Rule 1: the non-empty buckets clipped to the window, sorted, disjoint.
fn clip_buckets(h: &HistogramInput) -> Vec<Piece> {
    let interval = h.interval_ms.max(1);
    let mut buckets: Vec<(i64, u64)> = h
        .buckets
        .iter()
        .copied()
        .filter(|&(_, docs)| docs > 0)
        .collect();
    buckets.sort_unstable_by_key(|&(start, _)| start);
    let mut clipped: Vec<Piece> = Vec::with_capacity(buckets.len());
    for (start, docs) in buckets {
        let gte_ms = start.max(h.window.gte_ms);
        let lt_ms = start.saturating_add(interval).min(h.window.lt_ms);
        if gte_ms >= lt_ms {
            continue;
        }
        match clipped.last_mut() {
            Some(prev) if gte_ms < prev.lt_ms => {
                prev.lt_ms = prev.lt_ms.max(lt_ms);
                prev.docs = prev.docs.saturating_add(docs);
            }
            _ => clipped.push(Piece {
                gte_ms,
                lt_ms,
                docs,
            }),
        }
    }
    clipped
}

/// Rule 3: `piece` cut at partition edges, its documents apportioned by length
/// (cumulative rounding down, so the parts sum to `piece.docs`).
fn cut_at_partitions(piece: Piece, partition_by: PartitionBy, out: &mut Vec<Piece>) {
    let len = i128::from(piece.lt_ms) - i128::from(piece.gte_ms);
    let docs_before = |t_ms: i64| -> u64 {
        let share = i128::from(piece.docs) * (i128::from(t_ms) - i128::from(piece.gte_ms)) / len;
        u64::try_from(share).unwrap_or(piece.docs)
    };
    let mut from = piece.gte_ms;
    while from < piece.lt_ms {
        let to = next_partition_edge(from, partition_by)
            .map_or(piece.lt_ms, |edge| edge.min(piece.lt_ms));
        out.push(Piece {
            gte_ms: from,
            lt_ms: to,
            docs: docs_before(to) - docs_before(from),
        });
        from = to;
    }
}

/// Rules 4 and 5: greedy merge within each partition, slicing oversize pieces.
fn merge(pieces: &[Piece], sharding: &Sharding, partition_by: PartitionBy) -> Vec<Draft> {
    let target = target(sharding);
    let mut drafts: Vec<Draft> = Vec::new();
    let mut open: Option<Draft> = None;
    for piece in pieces {
        let partition = partition_ordinal(piece.gte_ms, partition_by);
        let window = TimeWindow {
            gte_ms: piece.gte_ms,
            lt_ms: piece.lt_ms,
        };
        if open.as_ref().is_some_and(|o| o.partition != partition) {
            drafts.extend(open.take());
        }
        let slices = slices_for_bucket(piece.docs, sharding);
        if slices > 1 {
            let mut window = window;
            match open.take() {
                Some(empty) if empty.docs == 0 => window.gte_ms = empty.window.gte_ms,
                other => drafts.extend(other),
            }
            drafts.push(Draft {
                window,
                docs: piece.docs,
                slices,
                partition,
            });
            continue;
        }
        match open.as_mut() {
            Some(o)
                if piece.docs == 0
                    || o.docs == 0
                    || o.docs.saturating_add(piece.docs) <= target =>
            {
                o.window.lt_ms = piece.lt_ms;
                o.docs = o.docs.saturating_add(piece.docs);
            }
            _ => {
                drafts.extend(open.take());
                match drafts.last_mut() {
                    // An empty stretch right after a sliced shard of the same partition
                    // joins it rather than becoming a shard of its own.
                    Some(prev)
                        if piece.docs == 0 && prev.slices > 1 && prev.partition == partition =>
                    {
                        prev.window.lt_ms = piece.lt_ms;
                    }
                    _ => {
                        open = Some(Draft {
                            window,
                            docs: piece.docs,
                            slices: 1,
                            partition,
                        })
                    }
                }
            }
        }
    }
    drafts.extend(open);
    drafts
}

/// Rule 6: drafts to shards, slices expanded, numbered in plan order.
fn name(drafts: Vec<Draft>, partition_by: PartitionBy) -> Vec<ShardSpec> {
    let mut shards = Vec::with_capacity(drafts.len());
    for draft in drafts {
        let partition = partition_label(draft.window.gte_ms, partition_by);
        let sliced = draft.slices > 1;
        for (slice_id, estimated_docs) in (0..draft.slices).zip(spread(draft.docs, draft.slices)) {
            shards.push(ShardSpec {
                id: ShardSpec::id_for(shards.len()),
                window: Some(draft.window),
                slice: sliced.then_some(SliceRef {
                    id: slice_id,
                    max: draft.slices,
                }),
                estimated_docs,
                partition: partition.clone(),
                index: None,
            });
        }
    }
    shards
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::partition::{DAY_MS, HOUR_MS};
    use crate::validate_plan;

    fn sharding(target: u64, max_slices: u32) -> Sharding {
        Sharding {
            target_docs_per_shard: target,
            max_slices,
            ..Sharding::default()
        }
    }

    /// (gte, lt, estimated docs, slice as (id, max)) of one shard.
    type Summary = (i64, i64, u64, Option<(u32, u32)>);

    fn summary(shards: &[ShardSpec]) -> Vec<Summary> {
        shards
            .iter()
            .map(|s| {
                let w = s.window.unwrap();
                (
                    w.gte_ms,
                    w.lt_ms,
                    s.estimated_docs,
                    s.slice.map(|x| (x.id, x.max)),
                )
            })
            .collect()
    }

    fn input(gte_ms: i64, lt_ms: i64, interval_ms: i64, buckets: &[(i64, u64)]) -> HistogramInput {
        HistogramInput {
            window: TimeWindow { gte_ms, lt_ms },
            interval_ms,
            buckets: buckets.to_vec(),
        }
    }

    #[test]
    fn merges_up_to_the_target_and_fills_gaps() {
        let h = input(0, 100, 10, &[(0, 4), (10, 4), (20, 4), (50, 9), (90, 1)]);
        let shards = plan_time(&h, &sharding(10, 64), PartitionBy::None);
        assert_eq!(
            summary(&shards),
            vec![(0, 20, 8, None), (20, 50, 4, None), (50, 100, 10, None)]
        );
        assert_eq!(validate_plan(h.window, &shards), Ok(()));
        assert!(shards.iter().all(|s| s.partition.is_none()));
        assert_eq!(shards[2].id, "000002");
    }

    #[test]
    fn an_empty_histogram_gives_one_empty_shard_per_partition() {
        let h = input(0, 1_000, 10, &[]);
        assert_eq!(
            summary(&plan_time(&h, &sharding(10, 64), PartitionBy::None)),
            vec![(0, 1_000, 0, None)]
        );

        let h = input(HOUR_MS / 2, 2 * HOUR_MS + 1, 1_000, &[]);
        let shards = plan_time(&h, &sharding(10, 64), PartitionBy::Hour);
        assert_eq!(
            summary(&shards),
            vec![
                (HOUR_MS / 2, HOUR_MS, 0, None),
                (HOUR_MS, 2 * HOUR_MS, 0, None),
                (2 * HOUR_MS, 2 * HOUR_MS + 1, 0, None)
            ]
        );
        let labels: Vec<_> = shards
            .iter()
            .map(|s| s.partition.clone().unwrap())
            .collect();
        assert_eq!(
            labels,
            [
                "dt=1970-01-01/hr=00",
                "dt=1970-01-01/hr=01",
                "dt=1970-01-01/hr=02"
            ]
        );
    }

    #[test]
    fn slices_an_oversize_bucket_and_absorbs_empty_neighbours() {
        // Buckets extend past both ends of the window; the big one is sliced.
        let h = input(5, 95, 10, &[(0, 3), (40, 25), (90, 2)]);
        let shards = plan_time(&h, &sharding(10, 64), PartitionBy::None);
        assert_eq!(
            summary(&shards),
            vec![
                (5, 40, 3, None),
                (40, 90, 9, Some((0, 3))),
                (40, 90, 8, Some((1, 3))),
                (40, 90, 8, Some((2, 3))),
                (90, 95, 2, None),
            ]
        );
        assert_eq!(validate_plan(h.window, &shards), Ok(()));

        // Only the big bucket: the empty stretches on both sides join its slices.
        let h = input(0, 100, 10, &[(40, 25)]);
        let shards = plan_time(&h, &sharding(10, 2), PartitionBy::None);
        assert_eq!(
            summary(&shards),
            vec![(0, 100, 13, Some((0, 2))), (0, 100, 12, Some((1, 2)))]
        );
    }

    #[test]
    fn never_crosses_a_partition_edge() {
        // Tiny counts that would all fit one shard, spread over three days.
        let h = input(
            DAY_MS / 2,
            2 * DAY_MS + 10,
            HOUR_MS,
            &[(DAY_MS / 2, 1), (DAY_MS + HOUR_MS, 1), (2 * DAY_MS, 1)],
        );
        let shards = plan_time(&h, &sharding(1_000, 64), PartitionBy::Day);
        assert_eq!(
            summary(&shards),
            vec![
                (DAY_MS / 2, DAY_MS, 1, None),
                (DAY_MS, 2 * DAY_MS, 1, None),
                (2 * DAY_MS, 2 * DAY_MS + 10, 1, None)
            ]
        );
        let labels: Vec<_> = shards
            .iter()
            .map(|s| s.partition.clone().unwrap())
            .collect();
        assert_eq!(labels, ["dt=1970-01-01", "dt=1970-01-02", "dt=1970-01-03"]);
    }

    #[test]
    fn apportions_a_bucket_spanning_partitions() {
        // A 2-hour bucket [0, 2h) under hourly partitions, clipped to start at 0.5h:
        // [0.5h, 1h) holds 1/3 of its clipped length, [1h, 2h) the other 2/3.
        let h = input(HOUR_MS / 2, 2 * HOUR_MS, 2 * HOUR_MS, &[(0, 30)]);
        let shards = plan_time(&h, &sharding(100, 64), PartitionBy::Hour);
        assert_eq!(
            summary(&shards),
            vec![
                (HOUR_MS / 2, HOUR_MS, 10, None),
                (HOUR_MS, 2 * HOUR_MS, 20, None)
            ]
        );
    }

    #[test]
    fn without_slicing_an_oversize_bucket_is_one_shard() {
        let h = input(0, 40, 10, &[(0, 1), (10, 50), (30, 1)]);
        let shards = plan_time(&h, &sharding(10, 1), PartitionBy::None);
        assert_eq!(
            summary(&shards),
            vec![(0, 10, 1, None), (10, 30, 50, None), (30, 40, 1, None)]
        );
    }

    #[test]
    fn tolerates_unsorted_repeated_and_outside_buckets() {
        let h = input(
            10,
            50,
            10,
            &[(30, 2), (-100, 7), (10, 1), (10, 1), (500, 9), (35, 1)],
        );
        let shards = plan_time(&h, &sharding(100, 64), PartitionBy::None);
        assert_eq!(summary(&shards), vec![(10, 50, 5, None)]);
        assert_eq!(
            plan_time(
                &input(5, 5, 10, &[(0, 3)]),
                &sharding(1, 4),
                PartitionBy::Day
            ),
            vec![]
        );
    }
}
