//! The shard planner: tiles a time range into half-open shards sized from one histogram, split further by PIT slices. Pure.
