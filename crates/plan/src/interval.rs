//! Choosing the `fixed_interval` of the one `date_histogram` the plan is sized from.
//!
//! Rules, in order of precedence:
//! 1. At least one second, and the histogram has at most [`MAX_BUCKETS`] buckets over
//!    the window (the cluster rejects requests past `search.max_buckets`, 65 535 by
//!    default).
//! 2. A whole divisor of the partition unit (hour or day), so every partition edge is
//!    a bucket edge and a bucket's documents belong to one partition. Fixed intervals
//!    are aligned to the Unix epoch, which is a UTC midnight, so a divisor of the day
//!    lands on every midnight and a divisor of the hour on every hour.
//! 3. Fine enough to size shards: the smallest such interval that gives at most
//!    [`AIM_BUCKETS`] buckets. The candidates grow by at most 2.5× per step, so the
//!    histogram has 4 000–10 000 buckets unless the one-second floor applies.
//!
//! Rule 1 beats rule 2 only for hourly partitions over more than ~5.7 years (50 000
//! hours), or daily ones over more than ~137 years: the interval is then the smallest
//! whole multiple of the unit that fits, and the planner apportions each bucket's
//! documents to the partitions it spans by length (see [`crate::plan_time`]).

use spillway_api::{PartitionBy, TimeWindow};

use crate::partition::{DAY_MS, HOUR_MS, SECOND_MS, partition_unit_ms};

/// The histogram never has more buckets than this.
pub const MAX_BUCKETS: i64 = 50_000;
/// The histogram aims at no more buckets than this.
pub const AIM_BUCKETS: i64 = 10_000;

const MINUTE_MS: i64 = 60 * SECOND_MS;

/// Intervals up to one day, ascending; each divides a day, and the ones up to an hour
/// divide an hour.
const UP_TO_A_DAY: [i64; 22] = [
    SECOND_MS,
    2 * SECOND_MS,
    5 * SECOND_MS,
    10 * SECOND_MS,
    15 * SECOND_MS,
    20 * SECOND_MS,
    30 * SECOND_MS,
    MINUTE_MS,
    2 * MINUTE_MS,
    5 * MINUTE_MS,
    10 * MINUTE_MS,
    15 * MINUTE_MS,
    20 * MINUTE_MS,
    30 * MINUTE_MS,
    HOUR_MS,
    2 * HOUR_MS,
    3 * HOUR_MS,
    4 * HOUR_MS,
    6 * HOUR_MS,
    8 * HOUR_MS,
    12 * HOUR_MS,
    DAY_MS,
];

/// Every candidate interval, ascending: [`UP_TO_A_DAY`], then 2, 5, 10, 20, 50, ...
/// days until the `i64` range ends.
fn candidates() -> impl Iterator<Item = i64> {
    let multi_day = (0u32..)
        .map_while(|exp| 10i64.checked_pow(exp))
        .flat_map(|scale| [2, 5, 10].map(|m| scale.checked_mul(m)))
        .map_while(|days| days?.checked_mul(DAY_MS));
    UP_TO_A_DAY.into_iter().chain(multi_day)
}

/// How many epoch-aligned buckets of `interval_ms` touch `window` (0 if it is empty).
pub fn bucket_count(window: TimeWindow, interval_ms: i64) -> i64 {
    if window.lt_ms <= window.gte_ms || interval_ms <= 0 {
        return 0;
    }
    let (first, last) = (
        i128::from(window.gte_ms.div_euclid(interval_ms)),
        i128::from((window.lt_ms - 1).div_euclid(interval_ms)),
    );
    i64::try_from(last - first + 1).unwrap_or(i64::MAX)
}

/// The `fixed_interval` (milliseconds) for the planning histogram over `window`; see
/// the module docs for the rules.
pub fn choose_interval(window: TimeWindow, partition_by: PartitionBy) -> i64 {
    let divides_unit =
        |interval: &i64| partition_unit_ms(partition_by).is_none_or(|unit| unit % interval == 0);
    let fits = |limit: i64| move |interval: &i64| bucket_count(window, *interval) <= limit;
    candidates()
        .filter(divides_unit)
        .find(fits(AIM_BUCKETS))
        // The divisors of the unit are a prefix of the ascending candidates, so the
        // smallest candidate under the cap is a divisor whenever one fits.
        .or_else(|| candidates().find(fits(MAX_BUCKETS)))
        .unwrap_or(SECOND_MS)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window(len: i64) -> TimeWindow {
        TimeWindow {
            gte_ms: 1_710_460_800_000,
            lt_ms: 1_710_460_800_000 + len,
        }
    }

    #[test]
    fn candidates_ascend_and_divide_a_day_up_to_a_day() {
        let all: Vec<i64> = candidates().collect();
        assert!(all.windows(2).all(|w| w[0] < w[1]));
        assert!(
            all.iter()
                .filter(|&&c| c <= DAY_MS)
                .all(|c| DAY_MS % c == 0)
        );
        assert!(
            all.iter()
                .filter(|&&c| c <= HOUR_MS)
                .all(|c| HOUR_MS % c == 0)
        );
        assert!(all.iter().filter(|&&c| c > DAY_MS).all(|c| c % DAY_MS == 0));
        assert!(
            all.windows(2)
                .all(|w| i128::from(w[1]) * 2 <= i128::from(w[0]) * 5),
            "steps of at most 2.5x"
        );
        assert!(*all.last().unwrap() > i64::MAX / 10);
    }

    #[test]
    fn examples() {
        // One minute: the one-second floor.
        assert_eq!(
            choose_interval(window(MINUTE_MS), PartitionBy::Day),
            SECOND_MS
        );
        // One day: 10 s gives 8 640 buckets.
        assert_eq!(
            choose_interval(window(DAY_MS), PartitionBy::Hour),
            10 * SECOND_MS
        );
        // Ten years by day: 12 h gives ~7 300 buckets.
        assert_eq!(
            choose_interval(window(3653 * DAY_MS), PartitionBy::Day),
            12 * HOUR_MS
        );
        // Ten years by hour: no divisor of the hour fits 50 000 buckets; 2 h does.
        assert_eq!(
            choose_interval(window(3653 * DAY_MS), PartitionBy::Hour),
            2 * HOUR_MS
        );
        // Ten years unpartitioned: like by day.
        assert_eq!(
            choose_interval(window(3653 * DAY_MS), PartitionBy::None),
            12 * HOUR_MS
        );
        // A century unpartitioned: past a day, 5 days gives ~7 300.
        assert_eq!(
            choose_interval(window(36_525 * DAY_MS), PartitionBy::None),
            5 * DAY_MS
        );
    }

    #[test]
    fn bucket_count_counts_partial_buckets_at_both_ends() {
        let w = TimeWindow {
            gte_ms: 500,
            lt_ms: 2_500,
        };
        assert_eq!(bucket_count(w, 1_000), 3);
        assert_eq!(
            bucket_count(
                TimeWindow {
                    gte_ms: 0,
                    lt_ms: 2_000
                },
                1_000
            ),
            2
        );
        assert_eq!(
            bucket_count(
                TimeWindow {
                    gte_ms: -1,
                    lt_ms: 0
                },
                1_000
            ),
            1
        );
        assert_eq!(
            bucket_count(
                TimeWindow {
                    gte_ms: 5,
                    lt_ms: 5
                },
                1_000
            ),
            0
        );
        let all = TimeWindow {
            gte_ms: i64::MIN,
            lt_ms: i64::MAX,
        };
        assert_eq!(bucket_count(all, 1), i64::MAX);
    }

    #[test]
    fn degenerate_windows_still_get_a_valid_interval() {
        for p in [PartitionBy::Day, PartitionBy::Hour, PartitionBy::None] {
            assert_eq!(
                choose_interval(
                    TimeWindow {
                        gte_ms: 7,
                        lt_ms: 7
                    },
                    p
                ),
                SECOND_MS
            );
            let huge = TimeWindow {
                gte_ms: i64::MIN,
                lt_ms: i64::MAX,
            };
            let interval = choose_interval(huge, p);
            assert!(
                bucket_count(huge, interval) <= MAX_BUCKETS,
                "{p:?}: {interval}"
            );
        }
    }
}
