//! Checking that a plan covers its job exactly once (guarantee 2, "no overlap, no
//! gap"), before the coordinator publishes it and in the planner's tests.
//!
//! A time plan is valid when, taking consecutive shards with the same window as one
//! group: the groups' windows are non-empty, the first starts at the job's `gte`, each
//! starts where the previous ended and the last ends at the job's `lt`; and each group
//! is either one shard without a slice or a complete slice set (every shard sliced with
//! the same `max` in `2..=1024`, slice ids exactly `0..max`). Shard ids are unique.

use std::collections::HashSet;

use spillway_api::{ShardSpec, TimeWindow};

use crate::error::{PlanError, show_ms};
use crate::slices::MAX_PIT_SLICES;

/// Checks that `shards` tile `window` exactly and that every sliced window carries a
/// complete slice set; see the module docs.
pub fn validate_plan(window: TimeWindow, shards: &[ShardSpec]) -> Result<(), PlanError> {
    if window.lt_ms <= window.gte_ms {
        return Err(PlanError::EmptyJobWindow {
            gte_ms: window.gte_ms,
            lt_ms: window.lt_ms,
        });
    }
    check_ids(shards)?;
    let mut covered_to = window.gte_ms;
    let mut last_id = "";
    for group in shards.chunk_by(|a, b| a.window == b.window) {
        let id = group[0].id.clone();
        let w = group[0]
            .window
            .ok_or_else(|| PlanError::MissingWindow { id: id.clone() })?;
        if w.lt_ms <= w.gte_ms {
            return Err(PlanError::EmptyShardWindow {
                id,
                gte_ms: w.gte_ms,
                lt_ms: w.lt_ms,
            });
        }
        if w.gte_ms > covered_to {
            return Err(PlanError::Gap {
                id,
                from_ms: covered_to,
                to_ms: w.gte_ms,
            });
        }
        if w.gte_ms < covered_to {
            return Err(PlanError::Overlap {
                id,
                gte_ms: w.gte_ms,
                covered_to_ms: covered_to,
            });
        }
        let what = format!("window [{}, {})", show_ms(w.gte_ms), show_ms(w.lt_ms));
        check_units(&what, group)?;
        covered_to = w.lt_ms;
        last_id = &group[group.len() - 1].id;
    }
    if covered_to != window.lt_ms {
        return Err(PlanError::WrongEnd {
            id: last_id.to_owned(),
            shard_lt_ms: covered_to,
            job_lt_ms: window.lt_ms,
        });
    }
    Ok(())
}

/// Checks a plan for a job without a time field (from [`crate::plan_slices`]): no
/// shard has a window, and the shards are one unsliced shard or one complete slice set.
pub fn validate_slice_plan(shards: &[ShardSpec]) -> Result<(), PlanError> {
    check_ids(shards)?;
    if let Some(s) = shards.iter().find(|s| s.window.is_some()) {
        return Err(PlanError::UnexpectedWindow { id: s.id.clone() });
    }
    check_units("the whole range", shards)
}

/// The shards of one window: one slice set, or (a shard-walking plan) one slice set per
/// index, each index in one run of shards.
fn check_units(what: &str, group: &[ShardSpec]) -> Result<(), PlanError> {
    if group.iter().all(|s| s.index.is_none()) {
        return check_slice_set(what, group);
    }
    if let Some(s) = group.iter().find(|s| s.index.is_none()) {
        return Err(PlanError::BadSliceSet {
            what: what.to_owned(),
            detail: format!("shard {} names no index but others of it do", s.id),
        });
    }
    let mut seen = HashSet::new();
    for run in group.chunk_by(|a, b| a.index == b.index) {
        let index = run[0].index.as_deref().unwrap_or_default();
        if !seen.insert(index) {
            return Err(PlanError::BadSliceSet {
                what: what.to_owned(),
                detail: format!("index [{index}] appears in two runs of shards"),
            });
        }
        check_slice_set(&format!("{what} of index [{index}]"), run)?;
    }
    Ok(())
}

/// At least one shard, and no id twice.
fn check_ids(shards: &[ShardSpec]) -> Result<(), PlanError> {
    if shards.is_empty() {
        return Err(PlanError::NoShards);
    }
    let mut seen = HashSet::with_capacity(shards.len());
    match shards.iter().find(|s| !seen.insert(s.id.as_str())) {
        Some(dup) => Err(PlanError::DuplicateId { id: dup.id.clone() }),
        None => Ok(()),
    }
}

/// One unsliced shard, or shards with slice ids exactly `0..max` for one `max`.
fn check_slice_set(what: &str, group: &[ShardSpec]) -> Result<(), PlanError> {
    let bad = |detail: String| PlanError::BadSliceSet {
        what: what.to_owned(),
        detail,
    };
    if let [only] = group
        && only.slice.is_none()
    {
        return Ok(());
    }
    let slices: Vec<_> = group
        .iter()
        .filter_map(|s| s.slice.map(|slice| (s, slice)))
        .collect();
    if slices.len() != group.len() {
        let unsliced = group.len() - slices.len();
        return Err(bad(format!(
            "{} shards, {unsliced} of them without a slice",
            group.len()
        )));
    }
    let max = slices[0].1.max;
    if let Some((s, slice)) = slices
        .iter()
        .find(|(_, slice)| !(2..=MAX_PIT_SLICES).contains(&slice.max))
    {
        return Err(PlanError::SliceMaxOutOfRange {
            id: s.id.clone(),
            max: slice.max,
        });
    }
    if let Some((s, slice)) = slices.iter().find(|(_, slice)| slice.max != max) {
        return Err(bad(format!(
            "shard {} has slice max {} but others have {max}",
            s.id, slice.max
        )));
    }
    if slices.len() != max as usize {
        return Err(bad(format!(
            "slice max is {max} but there are {} slices",
            slices.len()
        )));
    }
    let mut ids: Vec<u32> = slices.iter().map(|(_, slice)| slice.id).collect();
    ids.sort_unstable();
    if let Some((expected, found)) = (0..max)
        .zip(ids)
        .find(|(expected, found)| expected != found)
    {
        return Err(bad(format!(
            "slice id {expected} is missing (found {found} in its place; ids must be 0..{max}, each once)"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use spillway_api::SliceRef;

    use super::*;

    fn shard(ordinal: usize, gte_ms: i64, lt_ms: i64, slice: Option<(u32, u32)>) -> ShardSpec {
        ShardSpec {
            id: ShardSpec::id_for(ordinal),
            window: Some(TimeWindow { gte_ms, lt_ms }),
            slice: slice.map(|(id, max)| SliceRef { id, max }),
            estimated_docs: 1,
            partition: None,
            index: None,
        }
    }

    const JOB: TimeWindow = TimeWindow {
        gte_ms: 0,
        lt_ms: 30,
    };

    #[test]
    fn accepts_a_tiling_with_a_slice_set() {
        let plan = [
            shard(0, 0, 10, None),
            shard(1, 10, 20, Some((0, 2))),
            shard(2, 10, 20, Some((1, 2))),
            shard(3, 20, 30, None),
        ];
        assert_eq!(validate_plan(JOB, &plan), Ok(()));
    }

    #[test]
    fn rejects_each_kind_of_fault() {
        let err = |plan: &[ShardSpec]| validate_plan(JOB, plan).unwrap_err();
        assert!(matches!(err(&[]), PlanError::NoShards));
        assert!(matches!(
            validate_plan(
                TimeWindow {
                    gte_ms: 5,
                    lt_ms: 5
                },
                &[shard(0, 5, 5, None)]
            ),
            Err(PlanError::EmptyJobWindow { .. })
        ));
        assert!(matches!(
            err(&[shard(0, 0, 30, None), shard(0, 0, 30, None)]),
            PlanError::DuplicateId { .. }
        ));
        assert!(matches!(
            err(&[shard(0, 0, 10, None), shard(1, 11, 30, None)]),
            PlanError::Gap {
                from_ms: 10,
                to_ms: 11,
                ..
            }
        ));
        assert!(matches!(
            err(&[shard(0, 1, 30, None)]),
            PlanError::Gap { from_ms: 0, .. }
        ));
        assert!(matches!(
            err(&[shard(0, 0, 10, None), shard(1, 9, 30, None)]),
            PlanError::Overlap {
                gte_ms: 9,
                covered_to_ms: 10,
                ..
            }
        ));
        assert!(matches!(
            err(&[shard(0, -1, 30, None)]),
            PlanError::Overlap { .. }
        ));
        assert!(matches!(
            err(&[shard(0, 0, 29, None)]),
            PlanError::WrongEnd { .. }
        ));
        assert!(matches!(
            err(&[shard(0, 0, 31, None)]),
            PlanError::WrongEnd { .. }
        ));
        assert!(matches!(
            err(&[shard(0, 0, 0, None), shard(1, 0, 30, None)]),
            PlanError::EmptyShardWindow { .. }
        ));
        let mut windowless = shard(0, 0, 30, None);
        windowless.window = None;
        assert!(matches!(
            err(&[windowless]),
            PlanError::MissingWindow { .. }
        ));
    }

    #[test]
    fn rejects_broken_slice_sets() {
        let err = |plan: &[ShardSpec]| validate_plan(JOB, plan).unwrap_err();
        // Two unsliced shards over the same window export it twice.
        assert!(matches!(
            err(&[shard(0, 0, 30, None), shard(1, 0, 30, None)]),
            PlanError::BadSliceSet { .. }
        ));
        // A sliced shard beside an unsliced one.
        assert!(matches!(
            err(&[shard(0, 0, 30, Some((0, 2))), shard(1, 0, 30, None)]),
            PlanError::BadSliceSet { .. }
        ));
        // A slice missing.
        assert!(matches!(
            err(&[shard(0, 0, 30, Some((0, 2)))]),
            PlanError::BadSliceSet { .. }
        ));
        // A slice twice, another missing.
        assert!(matches!(
            err(&[shard(0, 0, 30, Some((1, 2))), shard(1, 0, 30, Some((1, 2)))]),
            PlanError::BadSliceSet { .. }
        ));
        // Differing max.
        assert!(matches!(
            err(&[shard(0, 0, 30, Some((0, 2))), shard(1, 0, 30, Some((1, 3)))]),
            PlanError::BadSliceSet { .. }
        ));
        // A "slice" of one.
        assert!(matches!(
            err(&[shard(0, 0, 30, Some((0, 1)))]),
            PlanError::SliceMaxOutOfRange { max: 1, .. }
        ));
        // Slices of one window split by another window: the window repeats (overlap).
        assert!(matches!(
            err(&[
                shard(0, 0, 10, Some((0, 2))),
                shard(1, 10, 30, None),
                shard(2, 0, 10, Some((1, 2))),
            ]),
            PlanError::BadSliceSet { .. }
        ));
    }

    #[test]
    fn slice_only_plans() {
        let mut a = shard(0, 0, 1, Some((0, 2)));
        let mut b = shard(1, 0, 1, Some((1, 2)));
        a.window = None;
        b.window = None;
        assert_eq!(validate_slice_plan(&[a.clone(), b.clone()]), Ok(()));
        assert!(matches!(
            validate_slice_plan(&[a.clone()]),
            Err(PlanError::BadSliceSet { .. })
        ));
        let mut whole = a.clone();
        whole.slice = None;
        assert_eq!(validate_slice_plan(&[whole]), Ok(()));
        let timed = shard(2, 0, 1, None);
        assert!(matches!(
            validate_slice_plan(&[timed]),
            Err(PlanError::UnexpectedWindow { .. })
        ));
    }

    #[test]
    fn errors_say_what_and_where() {
        let e = validate_plan(JOB, &[shard(0, 0, 10, None), shard(1, 11, 30, None)]).unwrap_err();
        let text = e.to_string();
        assert!(
            text.contains("uncovered") && text.contains("000001"),
            "{text}"
        );
        assert!(text.contains("1970-01-01T00:00:00.010Z (10 ms)"), "{text}");
    }
}
