//! The coordinator engine (plan, publish, track) and the shard executor (fetch, encode, commit, report), shared by every mode.
