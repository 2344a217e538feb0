//! Fault injection: a seeded random source decides, per search/scroll/PIT/count/msearch request,
//! whether to delay, reject (429), fail (502/503), trip the circuit breaker, drop the connection
//! mid-body, or truncate a page. Counters of what fired feed `GET /_searchsim/stats`.

use std::collections::BTreeMap;

use rand::{Rng, SeedableRng, rngs::StdRng};
use serde::{Deserialize, Serialize};

/// Fault knobs. Every rate is a probability in `[0, 1]` applied per eligible request.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// Probability of a 429 thread-pool rejection.
    pub reject_rate: f64,
    /// Probability of a 502/503 answer.
    pub unavailable_rate: f64,
    /// Fixed delay added to each eligible request, in milliseconds.
    pub latency_ms: u64,
    /// Extra random delay in `[0, latency_jitter_ms]`.
    pub latency_jitter_ms: u64,
    /// Overrides `search.max_open_pit_context`.
    pub max_open_pits: Option<usize>,
    /// A response body larger than this trips a 429 `circuit_breaking_exception`.
    pub breaker_bytes: Option<u64>,
    /// Probability of closing the connection after part of the body.
    pub drop_connection_rate: f64,
    /// Probability of returning fewer hits than the page should hold.
    pub short_page_rate: f64,
    /// Probability (ES flavor) that a PIT search answers with a new `pit_id`.
    pub pit_id_rotation: f64,
    /// RNG seed; the same seed and request sequence give the same faults.
    pub seed: u64,
    /// Only requests whose path contains one of these strings are eligible (all when empty).
    pub paths: Vec<String>,
    /// A poison request: every eligible request whose body contains this text fails with a 500
    /// `search_phase_execution_exception`, every time (a shard that can never succeed).
    pub poison: Option<String>,
}

impl Faults {
    /// Validates the rates.
    pub fn validate(&self) -> Result<(), String> {
        for (name, v) in [
            ("reject_rate", self.reject_rate),
            ("unavailable_rate", self.unavailable_rate),
            ("drop_connection_rate", self.drop_connection_rate),
            ("short_page_rate", self.short_page_rate),
            ("pit_id_rotation", self.pit_id_rotation),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return Err(format!("[{name}] must be between 0 and 1 but was [{v}]"));
            }
        }
        Ok(())
    }

    /// Whether a request path is eligible under the `paths` filter.
    pub fn path_matches(&self, path: &str) -> bool {
        self.paths.is_empty() || self.paths.iter().any(|p| path.contains(p.as_str()))
    }
}

/// What the fault source decided for one request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Decision {
    /// Delay before answering.
    pub delay_ms: u64,
    /// Answer 429 rejection.
    pub reject: bool,
    /// Answer 503 (or 502) with this status.
    pub unavailable: Option<u16>,
    /// Close the connection mid-body.
    pub drop_connection: bool,
    /// Truncate the page.
    pub short_page: bool,
    /// Rotate the PIT id.
    pub rotate_pit: bool,
}

/// Faults plus their RNG and counters.
#[derive(Debug)]
pub struct FaultState {
    /// Current knobs.
    pub faults: Faults,
    rng: StdRng,
    /// Injected faults by kind.
    pub fired: BTreeMap<&'static str, u64>,
}

impl FaultState {
    /// New state with these knobs.
    pub fn new(faults: Faults) -> Self {
        let rng = StdRng::seed_from_u64(faults.seed);
        Self {
            faults,
            rng,
            fired: BTreeMap::new(),
        }
    }

    /// Replaces the knobs and reseeds the RNG (counters are kept).
    pub fn set(&mut self, faults: Faults) {
        self.rng = StdRng::seed_from_u64(faults.seed);
        self.faults = faults;
    }

    fn roll(&mut self, p: f64) -> bool {
        p > 0.0 && self.rng.random::<f64>() < p
    }

    /// Records a fault of `kind`.
    pub fn count(&mut self, kind: &'static str) {
        *self.fired.entry(kind).or_insert(0) += 1;
    }

    /// Decides the faults of one eligible request.
    pub fn decide(&mut self, path: &str) -> Decision {
        let mut d = Decision::default();
        if !self.faults.path_matches(path) {
            return d;
        }
        let f = self.faults.clone();
        if f.latency_ms > 0 || f.latency_jitter_ms > 0 {
            let jitter = if f.latency_jitter_ms > 0 {
                self.rng.random_range(0..=f.latency_jitter_ms)
            } else {
                0
            };
            d.delay_ms = f.latency_ms + jitter;
            self.count("latency");
        }
        if self.roll(f.reject_rate) {
            d.reject = true;
            self.count("reject");
            return d;
        }
        if self.roll(f.unavailable_rate) {
            d.unavailable = Some(if self.rng.random::<f64>() < 0.8 {
                503
            } else {
                502
            });
            self.count("unavailable");
            return d;
        }
        if self.roll(f.drop_connection_rate) {
            d.drop_connection = true;
            self.count("drop_connection");
        }
        if self.roll(f.short_page_rate) {
            d.short_page = true;
        }
        if self.roll(f.pit_id_rotation) {
            d.rotate_pit = true;
        }
        d
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_decisions() {
        let f = Faults {
            reject_rate: 0.5,
            seed: 42,
            ..Faults::default()
        };
        let mut a = FaultState::new(f.clone());
        let mut b = FaultState::new(f);
        let da: Vec<bool> = (0..100).map(|_| a.decide("/_search").reject).collect();
        let db: Vec<bool> = (0..100).map(|_| b.decide("/_search").reject).collect();
        assert_eq!(da, db);
        let n = da.iter().filter(|r| **r).count();
        assert!((30..70).contains(&n), "{n}");
    }

    #[test]
    fn path_filter_limits_faults() {
        let f = Faults {
            reject_rate: 1.0,
            paths: vec!["_count".into()],
            ..Faults::default()
        };
        let mut s = FaultState::new(f);
        assert!(!s.decide("/idx/_search").reject);
        assert!(s.decide("/idx/_count").reject);
        assert!(
            Faults {
                reject_rate: 1.5,
                ..Faults::default()
            }
            .validate()
            .is_err()
        );
    }
}
