//! Hive-style output partitions by the time field (`dt=2024-03-15`,
//! `dt=2024-03-15/hr=07`). Partitions are UTC calendar days or hours, so every
//! partition has a fixed length (no DST) and its edges are whole multiples of that
//! length counted from the Unix epoch. The planner never lets a shard cross a
//! partition edge, so each shard's files belong to exactly one partition.

use chrono::{DateTime, Utc};
use spillway_api::PartitionBy;

/// One second in milliseconds.
pub const SECOND_MS: i64 = 1_000;
/// One UTC hour in milliseconds: the unit of [`PartitionBy::Hour`].
pub const HOUR_MS: i64 = 3_600_000;
/// One UTC day in milliseconds: the unit of [`PartitionBy::Day`].
pub const DAY_MS: i64 = 86_400_000;

/// The fixed length of one partition, or `None` for [`PartitionBy::None`] (the whole
/// time range is one partition).
pub fn partition_unit_ms(partition_by: PartitionBy) -> Option<i64> {
    match partition_by {
        PartitionBy::Day => Some(DAY_MS),
        PartitionBy::Hour => Some(HOUR_MS),
        PartitionBy::None => None,
    }
}

/// The Hive partition path of the document time `t_ms` (epoch milliseconds, UTC):
/// `dt=YYYY-MM-DD` by day, `dt=YYYY-MM-DD/hr=HH` by hour, `None` when the output is
/// not partitioned or `t_ms` lies outside the calendar's range.
pub fn partition_label(t_ms: i64, partition_by: PartitionBy) -> Option<String> {
    let unit = partition_unit_ms(partition_by)?;
    let at: DateTime<Utc> = DateTime::from_timestamp_millis(t_ms)?;
    let day = at.format("%Y-%m-%d");
    Some(match unit {
        DAY_MS => format!("dt={day}"),
        _ => format!("dt={day}/hr={}", at.format("%H")),
    })
}

/// The ordinal of the partition holding `t_ms` (`floor(t / unit)`); `0` for
/// [`PartitionBy::None`]. Two instants share a partition iff their ordinals match.
pub(crate) fn partition_ordinal(t_ms: i64, partition_by: PartitionBy) -> i64 {
    partition_unit_ms(partition_by).map_or(0, |unit| t_ms.div_euclid(unit))
}

/// The first partition edge strictly after `t_ms`, or `None` when there is none
/// (not partitioned, or past the end of the `i64` millisecond range).
pub(crate) fn next_partition_edge(t_ms: i64, partition_by: PartitionBy) -> Option<i64> {
    let unit = partition_unit_ms(partition_by)?;
    let edge = (i128::from(t_ms.div_euclid(unit)) + 1) * i128::from(unit);
    i64::try_from(edge).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const T_2024_03_15_07_30: i64 = 1_710_487_800_000;

    #[test]
    fn labels_by_day_and_hour() {
        assert_eq!(
            partition_label(T_2024_03_15_07_30, PartitionBy::Day).as_deref(),
            Some("dt=2024-03-15")
        );
        assert_eq!(
            partition_label(T_2024_03_15_07_30, PartitionBy::Hour).as_deref(),
            Some("dt=2024-03-15/hr=07")
        );
        assert_eq!(partition_label(T_2024_03_15_07_30, PartitionBy::None), None);
    }

    #[test]
    fn labels_at_edges_and_before_epoch() {
        // The last millisecond of a day belongs to it; the next one to the next day.
        let midnight = 1_710_460_800_000; // 2024-03-15T00:00:00Z
        assert_eq!(
            partition_label(midnight - 1, PartitionBy::Hour).as_deref(),
            Some("dt=2024-03-14/hr=23")
        );
        assert_eq!(
            partition_label(midnight, PartitionBy::Hour).as_deref(),
            Some("dt=2024-03-15/hr=00")
        );
        assert_eq!(
            partition_label(-1, PartitionBy::Day).as_deref(),
            Some("dt=1969-12-31")
        );
    }

    #[test]
    fn edges_are_multiples_of_the_unit() {
        assert_eq!(next_partition_edge(0, PartitionBy::Day), Some(DAY_MS));
        assert_eq!(next_partition_edge(-1, PartitionBy::Day), Some(0));
        assert_eq!(
            next_partition_edge(HOUR_MS - 1, PartitionBy::Hour),
            Some(HOUR_MS)
        );
        assert_eq!(
            next_partition_edge(HOUR_MS, PartitionBy::Hour),
            Some(2 * HOUR_MS)
        );
        assert_eq!(next_partition_edge(5, PartitionBy::None), None);
        assert_eq!(next_partition_edge(i64::MAX, PartitionBy::Hour), None);
        assert_eq!(partition_ordinal(-1, PartitionBy::Hour), -1);
        assert_eq!(partition_ordinal(123, PartitionBy::None), 0);
    }
}
