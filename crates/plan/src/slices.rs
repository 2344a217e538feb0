//! PIT slices: how many, and how a document estimate spreads over them.
//!
//! A time interval the histogram cannot split any finer, and a job without a time
//! field, are divided with PIT slices (`slice: {id, max}`): the cluster partitions the
//! documents of one search by `_id` hash into `max` disjoint parts. A slice needs
//! `max > 1`, and OpenSearch allows at most [`MAX_PIT_SLICES`].

use spillway_api::{ShardSpec, Sharding, SliceRef};

/// The most slices OpenSearch accepts for one PIT search.
pub const MAX_PIT_SLICES: u32 = 1024;

/// The target, never below one document.
pub(crate) fn target(sharding: &Sharding) -> u64 {
    sharding.target_docs_per_shard.max(1)
}

/// The slice bound of this job: `sharding.max_slices`, at most [`MAX_PIT_SLICES`].
fn max_slices(sharding: &Sharding) -> u64 {
    u64::from(sharding.max_slices.min(MAX_PIT_SLICES))
}

/// Slices for one indivisible time bucket of `docs` documents: `1` (no slicing) when
/// it fits the target or slicing is disabled (`max_slices < 2`), else
/// `ceil(docs / target)` clamped to `[2, max_slices]`.
pub(crate) fn slices_for_bucket(docs: u64, sharding: &Sharding) -> u32 {
    let max = max_slices(sharding);
    if docs <= target(sharding) || max < 2 {
        return 1;
    }
    clamp_to_u32(docs.div_ceil(target(sharding)).clamp(2, max))
}

fn clamp_to_u32(n: u64) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// `docs` spread over `n` parts as evenly as integers allow (the first `docs % n`
/// parts get one more); the parts sum to `docs`.
pub(crate) fn spread(docs: u64, n: u32) -> impl Iterator<Item = u64> {
    let n = u64::from(n.max(1));
    let (base, extra) = (docs / n, docs % n);
    (0..n).map(move |i| base + u64::from(i < extra))
}

/// The plan of a job without a time field: `n = ceil(total_docs / target)` PIT slices
/// of the whole range, clamped to `[1, max_slices]`. One slice is no slice: `n == 1`
/// gives a single shard with neither window nor slice. Shard ids follow slice ids.
pub fn plan_slices(total_docs: u64, sharding: &Sharding) -> Vec<ShardSpec> {
    let n = clamp_to_u32(
        total_docs
            .div_ceil(target(sharding))
            .clamp(1, max_slices(sharding).max(1)),
    );
    spread(total_docs, n)
        .enumerate()
        .map(|(ordinal, estimated_docs)| ShardSpec {
            id: ShardSpec::id_for(ordinal),
            window: None,
            slice: (n > 1).then(|| SliceRef {
                id: clamp_to_u32(ordinal as u64),
                max: n,
            }),
            estimated_docs,
            partition: None,
            index: None,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sharding(target: u64, max_slices: u32) -> Sharding {
        Sharding {
            target_docs_per_shard: target,
            max_slices,
            ..Sharding::default()
        }
    }

    #[test]
    fn spread_is_even_and_exact() {
        assert_eq!(spread(10, 3).collect::<Vec<_>>(), vec![4, 3, 3]);
        assert_eq!(spread(2, 4).collect::<Vec<_>>(), vec![1, 1, 0, 0]);
        assert_eq!(spread(u64::MAX, 1024).sum::<u64>(), u64::MAX);
    }

    #[test]
    fn bucket_slices_follow_the_rules() {
        assert_eq!(slices_for_bucket(100, &sharding(100, 64)), 1);
        assert_eq!(slices_for_bucket(101, &sharding(100, 64)), 2);
        assert_eq!(slices_for_bucket(1_000, &sharding(100, 64)), 10);
        assert_eq!(slices_for_bucket(1_001, &sharding(100, 64)), 11);
        assert_eq!(slices_for_bucket(1_000_000, &sharding(100, 64)), 64);
        assert_eq!(
            slices_for_bucket(1_000_000, &sharding(1, 4096)),
            MAX_PIT_SLICES
        );
        assert_eq!(
            slices_for_bucket(1_000_000, &sharding(100, 1)),
            1,
            "slicing disabled"
        );
        assert_eq!(
            slices_for_bucket(5, &sharding(0, 64)),
            5,
            "target 0 acts as 1"
        );
    }

    #[test]
    fn slice_only_plans() {
        let one = plan_slices(0, &sharding(100, 64));
        assert_eq!(one.len(), 1);
        assert_eq!(
            (one[0].window, one[0].slice, one[0].estimated_docs),
            (None, None, 0)
        );

        let one = plan_slices(100, &sharding(100, 64));
        assert_eq!((one.len(), one[0].slice), (1, None));

        let three = plan_slices(250, &sharding(100, 64));
        assert_eq!(three.len(), 3);
        for (i, s) in three.iter().enumerate() {
            assert_eq!(s.id, ShardSpec::id_for(i));
            assert_eq!(
                s.slice,
                Some(SliceRef {
                    id: i as u32,
                    max: 3
                })
            );
            assert_eq!((s.window, s.partition.as_deref()), (None, None));
        }
        assert_eq!(
            three.iter().map(|s| s.estimated_docs).collect::<Vec<_>>(),
            [84, 83, 83]
        );

        let capped = plan_slices(1_000_000, &sharding(100, 8));
        assert_eq!(capped.len(), 8);
        assert_eq!(
            capped.iter().map(|s| s.estimated_docs).sum::<u64>(),
            1_000_000
        );

        let unsliceable = plan_slices(1_000_000, &sharding(100, 1));
        assert_eq!((unsliceable.len(), unsliceable[0].slice), (1, None));
    }
}
