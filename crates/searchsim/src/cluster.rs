//! The in-memory cluster: indices made of shards of append-only document versions, aliases,
//! settings, and the registry of open PITs and scrolls. Document writes, refresh, index and
//! alias administration live here; searching lives in `search`.
//!
//! Visibility: every write gets a per-shard sequence number; a version is born at one seq and
//! dies at the seq of the write that replaced or deleted it. A shard's `refreshed` watermark
//! says which seqs plain searches see; a PIT or scroll keeps the watermarks of its opening.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::{Map, Value, json};

use crate::error::{ApiError, ApiResult};
use crate::faults::{FaultState, Faults};
use crate::mapping::{Dv, DvRef, Mapping, decode_dvs, encode_dvs};
use crate::query::dv_cmp;
use crate::routing::{default_routing_shards, shard_for};
use crate::search::SortedCache;
use crate::{Config, Flavor};

/// One version of a document.
#[derive(Debug)]
pub struct DocVersion {
    /// `_id`.
    pub id: Box<str>,
    /// `_source` exactly as received (minified when it came through the generator).
    pub source: Bytes,
    /// Doc values packed by [`encode_dvs`], sorted by slot.
    pub dv: Box<[u8]>,
    /// Seq of the write that created this version.
    pub born: u64,
    /// Seq of the write that replaced or deleted it (`u64::MAX` while current).
    pub died: u64,
    /// `_version`.
    pub version: u64,
}

impl DocVersion {
    /// Whether the version is visible at watermark `w`.
    #[inline]
    pub fn visible(&self, w: u64) -> bool {
        self.born < w && self.died >= w
    }

    /// Doc values of a slot.
    #[inline]
    pub fn values(&self, slot: u32) -> impl Iterator<Item = DvRef<'_>> {
        decode_dvs(&self.dv)
            .skip_while(move |(s, _)| *s < slot)
            .take_while(move |(s, _)| *s == slot)
            .map(|(_, v)| v)
    }
}

/// A primary shard.
#[derive(Debug, Default)]
pub struct Shard {
    /// All versions in write order; the position is the doc's ordinal.
    pub docs: Vec<DocVersion>,
    /// Current version of each live id.
    pub live: HashMap<Box<str>, u32>,
    /// Next seq.
    pub next_seq: u64,
    /// Refresh watermark.
    pub refreshed: u64,
    /// Versions deleted or replaced (for `docs.deleted`).
    pub deleted: u64,
    /// Sum of live source bytes.
    pub bytes: u64,
    /// Smallest and largest numeric doc value per slot over every version ever written (never
    /// narrowed by deletes, so it over-approximates). A query whose required range cannot
    /// overlap them skips the shard without visiting its documents, as a real cluster does
    /// with its points index and the can-match phase.
    pub bounds: HashMap<u32, SlotBounds>,
}

/// Value bounds of one doc-value slot in a shard.
#[derive(Debug, Clone)]
pub enum SlotBounds {
    /// Every value seen is a number in `[min, max]`.
    Numeric(Dv, Dv),
    /// Some value is a string or NaN: no pruning on this slot.
    Any,
}

impl Shard {
    /// Widens the slot bounds with the values of a packed doc-value buffer.
    fn widen_bounds(&mut self, dv: &[u8]) {
        for (slot, v) in decode_dvs(dv) {
            let numeric = match v {
                DvRef::S(_) => false,
                DvRef::F(f) => !f.is_nan(),
                DvRef::I(_) | DvRef::U(_) => true,
            };
            let entry = self.bounds.entry(slot);
            if !numeric {
                entry.insert_entry(SlotBounds::Any);
                continue;
            }
            match entry.or_insert_with(|| SlotBounds::Numeric(v.to_owned(), v.to_owned())) {
                SlotBounds::Any => {}
                SlotBounds::Numeric(lo, hi) => {
                    if dv_cmp(v, lo.as_ref()).is_lt() {
                        *lo = v.to_owned();
                    }
                    if dv_cmp(v, hi.as_ref()).is_gt() {
                        *hi = v.to_owned();
                    }
                }
            }
        }
    }
}

/// An index.
#[derive(Debug)]
pub struct Index {
    /// Name.
    pub name: String,
    /// UUID (changes when the index is recreated).
    pub uuid: String,
    /// Primary shards.
    pub shards: Vec<Shard>,
    /// `index.number_of_routing_shards`.
    pub routing_shards: u32,
    /// Flat `index.*` settings (keys without the `index.` prefix), values as strings.
    pub settings: BTreeMap<String, String>,
    /// Mapping.
    pub mapping: Mapping,
    /// Aliases pointing at this index and their properties.
    pub aliases: BTreeMap<String, Value>,
    /// Creation time, epoch ms.
    pub created_ms: i64,
}

impl Index {
    /// Number of primary shards.
    pub fn num_shards(&self) -> u32 {
        self.shards.len() as u32
    }

    /// An integer index setting with a default.
    pub fn setting_u64(&self, key: &str, default: u64) -> u64 {
        self.settings
            .get(key)
            .and_then(|v| v.parse().ok())
            .unwrap_or(default)
    }

    /// Live documents visible to plain searches.
    pub fn doc_count(&self) -> u64 {
        self.shards
            .iter()
            .map(|s| s.docs.iter().filter(|d| d.visible(s.refreshed)).count() as u64)
            .sum()
    }

    /// Shard of a routing value.
    pub fn shard_of(&self, routing: &str) -> usize {
        shard_for(routing, self.num_shards(), self.routing_shards) as usize
    }
}

/// A snapshot of one index for a PIT or scroll.
#[derive(Debug, Clone)]
pub struct SnapTarget {
    /// Index name.
    pub index: String,
    /// Index UUID at open time.
    pub uuid: String,
    /// Refresh watermark per shard.
    pub watermarks: Vec<u64>,
}

/// An open point in time.
#[derive(Debug)]
pub struct Pit {
    /// Internal key.
    pub key: u64,
    /// The id returned at creation.
    pub id: String,
    /// Indices and their watermarks.
    pub targets: Vec<SnapTarget>,
    /// keep_alive in ms.
    pub keep_alive_ms: i64,
    /// Expiry.
    pub expires: Instant,
    /// Creation time, epoch ms.
    pub created_ms: i64,
}

/// An open scroll.
#[derive(Debug)]
pub struct Scroll {
    /// Internal key.
    pub key: u64,
    /// Snapshot.
    pub targets: Vec<SnapTarget>,
    /// Materialised sorted hits.
    pub hits: Arc<SortedCache>,
    /// Next position.
    pub pos: usize,
    /// Page size.
    pub size: usize,
    /// The search request, for rendering options.
    pub request: Arc<crate::search::SearchRequest>,
    /// Expiry.
    pub expires: Instant,
}

/// Mutable cluster state behind one lock.
#[derive(Debug, Default)]
pub struct State {
    /// Indices by name.
    pub indices: BTreeMap<String, Index>,
    /// Open PITs by key.
    pub pits: HashMap<u64, Pit>,
    /// PIT ids (including rotated ones) to keys.
    pub pit_ids: HashMap<String, u64>,
    /// Open scrolls by key.
    pub scrolls: HashMap<u64, Scroll>,
    /// Persistent cluster settings (flat keys).
    pub persistent: BTreeMap<String, Value>,
    /// Transient cluster settings (flat keys).
    pub transient: BTreeMap<String, Value>,
}

impl State {
    /// A cluster setting (transient over persistent).
    pub fn cluster_setting(&self, key: &str) -> Option<&Value> {
        self.transient.get(key).or_else(|| self.persistent.get(key))
    }

    /// A time-valued cluster setting in ms.
    pub fn cluster_time_ms(&self, key: &str, default_ms: i64) -> i64 {
        self.cluster_setting(key)
            .and_then(|v| match v {
                Value::String(s) => crate::timeval::parse_time_millis(s),
                Value::Number(n) => n.as_i64(),
                _ => None,
            })
            .unwrap_or(default_ms)
    }

    /// An integer cluster setting.
    pub fn cluster_u64(&self, key: &str, default: u64) -> u64 {
        self.cluster_setting(key)
            .and_then(|v| match v {
                Value::String(s) => s.parse().ok(),
                Value::Number(n) => n.as_u64(),
                _ => None,
            })
            .unwrap_or(default)
    }
}

/// Request counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests by endpoint kind.
    pub requests: Mutex<BTreeMap<String, u64>>,
}

pub(crate) struct Inner {
    pub config: Config,
    pub state: RwLock<State>,
    pub faults: Mutex<FaultState>,
    pub stats: Stats,
    pub cache: Mutex<crate::search::Lru>,
    pub next_key: AtomicU64,
}

/// Handle to the simulated cluster: cheap to clone, shared with the HTTP server.
#[derive(Clone)]
pub struct Cluster {
    pub(crate) inner: Arc<Inner>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("flavor", &self.inner.config.flavor)
            .finish_non_exhaustive()
    }
}

/// Kind of a write.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OpType {
    /// Create or replace.
    Index,
    /// Create only (409 when it exists).
    Create,
}

/// Result of one document write.
#[derive(Debug, Clone)]
pub struct WriteResult {
    /// Concrete index.
    pub index: String,
    /// Document id.
    pub id: String,
    /// New version.
    pub version: u64,
    /// `created`, `updated`, `deleted`, `not_found`, `noop`.
    pub result: &'static str,
    /// Seq number.
    pub seq_no: u64,
    /// Copies (for `_shards.total`).
    pub total_copies: u64,
    /// HTTP status of the item.
    pub status: u16,
}

impl WriteResult {
    /// Item body as the servers render it.
    pub fn to_json(&self) -> Value {
        json!({
            "_index": self.index,
            "_id": self.id,
            "_version": self.version,
            "result": self.result,
            "_shards": {"total": self.total_copies, "successful": 1, "failed": 0},
            "_seq_no": self.seq_no,
            "_primary_term": 1,
        })
    }
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Random URL-safe base64 string of `n` random bytes.
pub fn random_b64(n: usize) -> String {
    use base64::Engine as _;
    use rand::RngCore as _;
    let mut buf = vec![0u8; n];
    rand::rng().fill_bytes(&mut buf);
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(buf)
}

fn valid_index_name(name: &str) -> Result<(), ApiError> {
    let bad = name.is_empty()
        || name.starts_with('_')
        || name.starts_with('-')
        || name.starts_with('+')
        || name == "."
        || name == ".."
        || name
            .chars()
            .any(|c| c.is_uppercase() || "\\/*?\"<>| ,#:".contains(c));
    if bad {
        let mut extra = Map::new();
        extra.insert("index".into(), json!(name));
        extra.insert("index_uuid".into(), json!("_na_"));
        return Err(ApiError::with_extra(
            400,
            "invalid_index_name_exception",
            format!(
                "Invalid index name [{name}], must be lowercase and must not start with '_', '-' or '+' or contain a space or one of \\, /, *, ?, \", <, >, |, ,, #, :"
            ),
            extra,
        ));
    }
    Ok(())
}

/// `*` wildcard matching.
pub fn wildcard_match(pattern: &str, s: &str) -> bool {
    let p = pattern.as_bytes();
    let t = s.as_bytes();
    let (mut pi, mut ti) = (0, 0);
    let (mut star, mut mark) = (None, 0);
    while ti < t.len() {
        if pi < p.len() && (p[pi] == t[ti] || p[pi] == b'?') {
            pi += 1;
            ti += 1;
        } else if pi < p.len() && p[pi] == b'*' {
            star = Some(pi);
            pi += 1;
            mark = ti;
        } else if let Some(sp) = star {
            pi = sp + 1;
            mark += 1;
            ti = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == b'*' {
        pi += 1;
    }
    pi == p.len()
}

/// How an index expression resolves.
#[derive(Debug, Clone, Copy)]
pub struct IndicesOptions {
    /// Missing concrete names are skipped.
    pub ignore_unavailable: bool,
    /// An expression that resolves to nothing is fine.
    pub allow_no_indices: bool,
    /// Wildcards include hidden (`.`-prefixed) indices.
    pub expand_hidden: bool,
    /// Wildcards expand at all (`expand_wildcards=none` turns them off).
    pub expand_wildcards: bool,
}

impl Default for IndicesOptions {
    fn default() -> Self {
        Self {
            ignore_unavailable: false,
            allow_no_indices: true,
            expand_hidden: false,
            expand_wildcards: true,
        }
    }
}

impl IndicesOptions {
    /// Reads `ignore_unavailable`, `allow_no_indices`, `expand_wildcards` from query params.
    pub fn from_params(params: &HashMap<String, String>, defaults: Self) -> Self {
        let mut o = defaults;
        if let Some(v) = params.get("ignore_unavailable") {
            o.ignore_unavailable = v != "false";
        }
        if let Some(v) = params.get("allow_no_indices") {
            o.allow_no_indices = v != "false";
        }
        if let Some(v) = params.get("expand_wildcards") {
            o.expand_hidden = v.contains("hidden") || v.contains("all");
            o.expand_wildcards = v != "none";
        }
        o
    }
}

impl State {
    /// Resolves an index expression (comma list, wildcards, aliases, `_all`) to index names.
    pub fn resolve(&self, expr: &str, opts: IndicesOptions) -> ApiResult<Vec<String>> {
        let mut out: Vec<String> = Vec::new();
        let parts: Vec<&str> = if expr.is_empty() {
            vec!["_all"]
        } else {
            expr.split(',').map(str::trim).collect()
        };
        let mut saw_wildcard = false;
        for part in &parts {
            if part.is_empty() {
                continue;
            }
            if let Some(excl) = part.strip_prefix('-')
                && saw_wildcard
            {
                let names = self.expand(excl, opts);
                out.retain(|n| !names.contains(n));
                continue;
            }
            if *part == "_all" || part.contains('*') || part.contains('?') {
                saw_wildcard = true;
                let pat = if *part == "_all" { "*" } else { part };
                if opts.expand_wildcards {
                    for n in self.expand(pat, opts) {
                        if !out.contains(&n) {
                            out.push(n);
                        }
                    }
                }
                continue;
            }
            if self.indices.contains_key(*part) {
                if !out.iter().any(|n| n == part) {
                    out.push((*part).to_string());
                }
                continue;
            }
            let alias_targets: Vec<String> = self
                .indices
                .values()
                .filter(|i| i.aliases.contains_key(*part))
                .map(|i| i.name.clone())
                .collect();
            if !alias_targets.is_empty() {
                for n in alias_targets {
                    if !out.contains(&n) {
                        out.push(n);
                    }
                }
                continue;
            }
            if !opts.ignore_unavailable {
                return Err(ApiError::index_not_found(part));
            }
        }
        out.sort();
        if out.is_empty() && !opts.allow_no_indices {
            return Err(ApiError::index_not_found(if expr.is_empty() {
                "_all"
            } else {
                expr
            }));
        }
        Ok(out)
    }

    fn expand(&self, pattern: &str, opts: IndicesOptions) -> Vec<String> {
        let mut v = Vec::new();
        for idx in self.indices.values() {
            let hidden = idx.name.starts_with('.') && !pattern.starts_with('.');
            if hidden && !opts.expand_hidden {
                continue;
            }
            if wildcard_match(pattern, &idx.name)
                || idx.aliases.keys().any(|a| wildcard_match(pattern, a))
            {
                v.push(idx.name.clone());
            }
        }
        v
    }

    /// Resolves the index a write to `name` goes to (index or alias with a write index).
    pub fn write_target(&self, name: &str) -> ApiResult<Option<String>> {
        if self.indices.contains_key(name) {
            return Ok(Some(name.to_string()));
        }
        let targets: Vec<&Index> = self
            .indices
            .values()
            .filter(|i| i.aliases.contains_key(name))
            .collect();
        match targets.len() {
            0 => Ok(None),
            1 => Ok(Some(targets[0].name.clone())),
            _ => {
                let write: Vec<&&Index> = targets
                    .iter()
                    .filter(|i| {
                        i.aliases
                            .get(name)
                            .and_then(|a| a.get("is_write_index"))
                            .and_then(Value::as_bool)
                            == Some(true)
                    })
                    .collect();
                if write.len() == 1 {
                    Ok(Some(write[0].name.clone()))
                } else {
                    Err(ApiError::illegal(format!(
                        "no write index is defined for alias [{name}]. The write index may be explicitly disabled using is_write_index=false or the alias points to multiple indices without one being designated as a write index"
                    )))
                }
            }
        }
    }

    /// Whether `name` is an alias.
    pub fn is_alias(&self, name: &str) -> bool {
        self.indices.values().any(|i| i.aliases.contains_key(name))
    }

    /// Creates an index from a create-index body.
    pub fn create_index(&mut self, name: &str, body: &Value, flavor: Flavor) -> ApiResult<()> {
        valid_index_name(name)?;
        if self.indices.contains_key(name) {
            let mut extra = Map::new();
            extra.insert("index".into(), json!(name));
            extra.insert("index_uuid".into(), json!(self.indices[name].uuid));
            return Err(ApiError::with_extra(
                400,
                "resource_already_exists_exception",
                format!(
                    "index [{}/{}] already exists",
                    name, self.indices[name].uuid
                ),
                extra,
            ));
        }
        if self.is_alias(name) {
            return Err(ApiError::new(
                400,
                "invalid_index_name_exception",
                format!("Invalid index name [{name}], already exists as alias"),
            ));
        }
        let mut settings = BTreeMap::new();
        if let Some(s) = body.get("settings") {
            flatten_settings(s, "", &mut settings);
        }
        let settings: BTreeMap<String, String> = settings
            .into_iter()
            .map(|(k, v)| (k.strip_prefix("index.").unwrap_or(&k).to_string(), v))
            .collect();
        let shards: u32 = match settings.get("number_of_shards") {
            Some(v) => v.parse().map_err(|_| {
                ApiError::illegal(format!(
                    "Failed to parse value [{v}] for setting [index.number_of_shards]"
                ))
            })?,
            None => 1,
        };
        if !(1..=1024).contains(&shards) {
            return Err(ApiError::illegal(format!(
                "Failed to parse value [{shards}] for setting [index.number_of_shards] must be >= 1"
            )));
        }
        let routing_shards = match settings.get("number_of_routing_shards") {
            Some(v) => v.parse().map_err(|_| {
                ApiError::illegal(format!("invalid number_of_routing_shards [{v}]"))
            })?,
            None => default_routing_shards(shards),
        };
        if routing_shards < shards || routing_shards % shards != 0 {
            return Err(ApiError::illegal(format!(
                "the number of source shards [{shards}] must be a factor of [{routing_shards}]"
            )));
        }
        let mapping = match body.get("mappings") {
            Some(m) => Mapping::from_json(m)
                .map_err(|e| ApiError::new(400, "mapper_parsing_exception", e))?,
            None => Mapping::default(),
        };
        let mut aliases = BTreeMap::new();
        if let Some(a) = body.get("aliases").and_then(Value::as_object) {
            for (k, v) in a {
                aliases.insert(k.clone(), v.clone());
            }
        }
        let mut settings = settings;
        settings.insert("number_of_shards".into(), shards.to_string());
        settings
            .entry("number_of_replicas".into())
            .or_insert_with(|| "1".into());
        let _ = flavor;
        self.indices.insert(
            name.to_string(),
            Index {
                name: name.to_string(),
                uuid: random_b64(16).chars().take(22).collect(),
                shards: (0..shards).map(|_| Shard::default()).collect(),
                routing_shards,
                settings,
                mapping,
                aliases,
                created_ms: now_ms(),
            },
        );
        Ok(())
    }

    /// Makes all writes visible to plain searches.
    pub fn refresh(&mut self, names: &[String]) {
        for n in names {
            if let Some(idx) = self.indices.get_mut(n) {
                for s in &mut idx.shards {
                    s.refreshed = s.next_seq;
                }
            }
        }
    }

    /// Writes a document. `parsed` is the parsed `source`.
    #[allow(clippy::too_many_arguments)]
    pub fn write_doc(
        &mut self,
        index: &str,
        id: Option<&str>,
        routing: Option<&str>,
        source: Bytes,
        parsed: &Value,
        op: OpType,
        flavor: Flavor,
    ) -> ApiResult<WriteResult> {
        if !parsed.is_object() {
            return Err(ApiError::new(
                400,
                "mapper_parsing_exception",
                "failed to parse, document is empty",
            ));
        }
        if let Some(id) = id {
            if id.is_empty() {
                return Err(ApiError::illegal(
                    "if _id is specified it must not be empty",
                ));
            }
            if id.len() > 512 {
                return Err(ApiError::illegal(format!(
                    "id [{id}] is too long, must be no longer than 512 bytes but was: {}",
                    id.len()
                )));
            }
        }
        if !self.indices.contains_key(index) {
            self.create_index(index, &json!({}), flavor)?;
        }
        let idx = self.indices.get_mut(index).expect("index exists");
        if idx.mapping.apply_dynamic(parsed) {
            // new fields
        }
        let dv = encode_dvs(&idx.mapping.extract(parsed));
        let id: String = id.map(str::to_string).unwrap_or_else(|| random_b64(15));
        let shard_no = idx.shard_of(routing.unwrap_or(&id));
        let copies = 1 + idx.setting_u64("number_of_replicas", 1);
        let shard = &mut idx.shards[shard_no];
        let seq = shard.next_seq;
        let mut version = 1;
        let mut result = "created";
        if let Some(&pos) = shard.live.get(id.as_str()) {
            if op == OpType::Create {
                let cur = shard.docs[pos as usize].version;
                let mut extra = Map::new();
                extra.insert("index_uuid".into(), json!(idx.uuid));
                extra.insert("shard".into(), json!(shard_no.to_string()));
                extra.insert("index".into(), json!(index));
                return Err(ApiError::with_extra(
                    409,
                    "version_conflict_engine_exception",
                    format!(
                        "[{id}]: version conflict, document already exists (current version [{cur}])"
                    ),
                    extra,
                ));
            }
            let old = &mut shard.docs[pos as usize];
            old.died = seq;
            version = old.version + 1;
            shard.bytes -= old.source.len() as u64;
            shard.deleted += 1;
            result = "updated";
        }
        shard.next_seq += 1;
        shard.bytes += source.len() as u64;
        let pos = shard.docs.len() as u32;
        shard.widen_bounds(&dv);
        shard.docs.push(DocVersion {
            id: id.clone().into_boxed_str(),
            source,
            dv,
            born: seq,
            died: u64::MAX,
            version,
        });
        shard.live.insert(id.clone().into_boxed_str(), pos);
        Ok(WriteResult {
            index: index.to_string(),
            id,
            version,
            result,
            seq_no: seq,
            total_copies: copies,
            status: if result == "created" { 201 } else { 200 },
        })
    }

    /// Deletes a document.
    pub fn delete_doc(
        &mut self,
        index: &str,
        id: &str,
        routing: Option<&str>,
    ) -> ApiResult<WriteResult> {
        let Some(idx) = self.indices.get_mut(index) else {
            return Err(ApiError::index_not_found(index));
        };
        let shard_no = idx.shard_of(routing.unwrap_or(id));
        let copies = 1 + idx.setting_u64("number_of_replicas", 1);
        let shard = &mut idx.shards[shard_no];
        let seq = shard.next_seq;
        shard.next_seq += 1;
        let (result, version, status) = match shard.live.remove(id) {
            Some(pos) => {
                let d = &mut shard.docs[pos as usize];
                d.died = seq;
                shard.bytes -= d.source.len() as u64;
                shard.deleted += 1;
                ("deleted", d.version + 1, 200)
            }
            None => ("not_found", 1, 404),
        };
        Ok(WriteResult {
            index: index.to_string(),
            id: id.to_string(),
            version,
            result,
            seq_no: seq,
            total_copies: copies,
            status,
        })
    }

    /// The current version of a document (real-time, ignores refresh).
    pub fn get_doc(&self, index: &str, id: &str, routing: Option<&str>) -> Option<&DocVersion> {
        let idx = self.indices.get(index)?;
        let shard = &idx.shards[idx.shard_of(routing.unwrap_or(id))];
        shard.live.get(id).map(|p| &shard.docs[*p as usize])
    }
}

/// Flattens nested settings into dotted keys with string values.
pub fn flatten_settings(v: &Value, prefix: &str, out: &mut BTreeMap<String, String>) {
    match v {
        Value::Object(o) => {
            for (k, val) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_settings(val, &key, out);
            }
        }
        Value::String(s) => {
            out.insert(prefix.to_string(), s.clone());
        }
        Value::Null => {}
        other => {
            out.insert(prefix.to_string(), other.to_string());
        }
    }
}

/// Flattens nested settings keeping JSON values (for cluster settings, where null resets).
pub fn flatten_values(v: &Value, prefix: &str, out: &mut BTreeMap<String, Value>) {
    match v {
        Value::Object(o) => {
            for (k, val) in o {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten_values(val, &key, out);
            }
        }
        other => {
            out.insert(prefix.to_string(), other.clone());
        }
    }
}

/// Turns flat dotted keys back into nested objects.
pub fn nest(flat: &BTreeMap<String, Value>) -> Value {
    let mut root = Map::new();
    for (k, v) in flat {
        let parts: Vec<&str> = k.split('.').collect();
        let mut cur = &mut root;
        for p in &parts[..parts.len() - 1] {
            let e = cur.entry(p.to_string()).or_insert_with(|| json!({}));
            if !e.is_object() {
                *e = json!({});
            }
            cur = e.as_object_mut().expect("object");
        }
        cur.insert(parts[parts.len() - 1].to_string(), v.clone());
    }
    Value::Object(root)
}

impl Cluster {
    pub(crate) fn new(config: Config) -> Self {
        let faults = FaultState::new(config.faults.clone());
        Self {
            inner: Arc::new(Inner {
                config,
                state: RwLock::new(State::default()),
                faults: Mutex::new(faults),
                stats: Stats::default(),
                cache: Mutex::new(crate::search::Lru::new(64)),
                next_key: AtomicU64::new(1),
            }),
        }
    }

    /// The flavor this cluster imitates.
    pub fn flavor(&self) -> Flavor {
        self.inner.config.flavor
    }

    /// The version string reported by `GET /`.
    pub fn version(&self) -> &str {
        &self.inner.config.version
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.inner.config
    }

    pub(crate) fn next_key(&self) -> u64 {
        self.inner.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// Creates an index (`PUT /{index}` body).
    pub fn create_index(&self, name: &str, body: Value) -> Result<(), ApiError> {
        self.inner
            .state
            .write()
            .create_index(name, &body, self.flavor())
    }

    /// Deletes an index if it exists; returns whether it existed.
    pub fn delete_index(&self, name: &str) -> bool {
        let removed = self.inner.state.write().indices.remove(name).is_some();
        if removed {
            self.inner.cache.lock().clear();
        }
        removed
    }

    /// Indexes (creates or replaces) one document without refreshing.
    pub fn index_doc(
        &self,
        index: &str,
        id: Option<&str>,
        source: impl Into<Bytes>,
    ) -> Result<WriteResult, ApiError> {
        let source: Bytes = source.into();
        let parsed: Value = serde_json::from_slice(&source).map_err(|e| {
            ApiError::new(
                400,
                "mapper_parsing_exception",
                format!("failed to parse: {e}"),
            )
        })?;
        self.inner.state.write().write_doc(
            index,
            id,
            None,
            source,
            &parsed,
            OpType::Index,
            self.flavor(),
        )
    }

    /// Indexes many documents under one lock acquisition (used by the data generator).
    pub fn index_batch<I>(&self, docs: I) -> Result<usize, ApiError>
    where
        I: IntoIterator<Item = (String, String, Bytes)>,
    {
        let mut parsed: Vec<(String, String, Bytes, Value)> = Vec::new();
        for (index, id, src) in docs {
            let v: Value = serde_json::from_slice(&src).map_err(|e| {
                ApiError::new(
                    400,
                    "mapper_parsing_exception",
                    format!("failed to parse: {e}"),
                )
            })?;
            parsed.push((index, id, src, v));
        }
        let n = parsed.len();
        let mut st = self.inner.state.write();
        for (index, id, src, v) in parsed {
            st.write_doc(
                &index,
                Some(&id),
                None,
                src,
                &v,
                OpType::Index,
                self.flavor(),
            )?;
        }
        Ok(n)
    }

    /// Refreshes every index.
    pub fn refresh_all(&self) {
        let mut st = self.inner.state.write();
        let names: Vec<String> = st.indices.keys().cloned().collect();
        st.refresh(&names);
    }

    /// Documents visible to plain searches in one index.
    pub fn doc_count(&self, index: &str) -> Option<u64> {
        self.inner
            .state
            .read()
            .indices
            .get(index)
            .map(Index::doc_count)
    }

    /// Names of all indices.
    pub fn index_names(&self) -> Vec<String> {
        self.inner.state.read().indices.keys().cloned().collect()
    }

    /// Replaces the fault knobs.
    pub fn set_faults(&self, faults: Faults) -> Result<(), String> {
        faults.validate()?;
        self.inner.faults.lock().set(faults);
        Ok(())
    }

    /// Current fault knobs.
    pub fn faults(&self) -> Faults {
        self.inner.faults.lock().faults.clone()
    }

    /// Counts a request of an endpoint kind.
    pub(crate) fn count_request(&self, kind: &str) {
        *self
            .inner
            .stats
            .requests
            .lock()
            .entry(kind.to_string())
            .or_insert(0) += 1;
    }

    /// Counts an injected fault.
    pub(crate) fn count_fault(&self, kind: &'static str) {
        self.inner.faults.lock().count(kind);
    }

    /// Statistics as served by `GET /_searchsim/stats`.
    pub fn stats(&self) -> Value {
        self.reap();
        let requests = self.inner.stats.requests.lock().clone();
        let faults = self.inner.faults.lock().fired.clone();
        let st = self.inner.state.read();
        let docs: Map<String, Value> = st
            .indices
            .values()
            .map(|i| (i.name.clone(), json!(i.doc_count())))
            .collect();
        json!({
            "requests": requests,
            "faults": faults,
            "open_pits": st.pits.len(),
            "open_scrolls": st.scrolls.len(),
            "docs": docs,
        })
    }

    /// Number of open PITs.
    pub fn open_pits(&self) -> usize {
        self.reap();
        self.inner.state.read().pits.len()
    }

    /// Wipes indices, aliases, PITs, scrolls, cluster settings, faults and counters.
    pub fn reset(&self) {
        *self.inner.state.write() = State::default();
        self.inner.cache.lock().clear();
        let mut f = self.inner.faults.lock();
        *f = FaultState::new(Faults::default());
        self.inner.stats.requests.lock().clear();
    }

    /// Expires every PIT now (or only the one with `id`); returns how many were removed.
    pub fn expire_pits(&self, id: Option<&str>) -> usize {
        let mut st = self.inner.state.write();
        let keys: Vec<u64> = match id {
            Some(id) => st.pit_ids.get(id).copied().into_iter().collect(),
            None => st.pits.keys().copied().collect(),
        };
        for k in &keys {
            st.pits.remove(k);
        }
        st.pit_ids.retain(|_, k| !keys.contains(k));
        drop(st);
        self.inner
            .cache
            .lock()
            .retain(|key| !keys.contains(&key.ctx));
        keys.len()
    }

    /// Drops expired PITs and scrolls.
    pub fn reap(&self) {
        let now = Instant::now();
        let expired: bool = {
            let st = self.inner.state.read();
            st.pits.values().any(|p| p.expires <= now)
                || st.scrolls.values().any(|s| s.expires <= now)
        };
        if !expired {
            return;
        }
        let mut st = self.inner.state.write();
        let dead: Vec<u64> = st
            .pits
            .values()
            .filter(|p| p.expires <= now)
            .map(|p| p.key)
            .collect();
        for k in &dead {
            st.pits.remove(k);
        }
        st.pit_ids.retain(|_, k| !dead.contains(k));
        st.scrolls.retain(|_, s| s.expires > now);
        drop(st);
        self.inner
            .cache
            .lock()
            .retain(|key| !dead.contains(&key.ctx));
    }

    /// Refreshes shards with pending writes (the periodic refresh).
    pub fn auto_refresh(&self) {
        let pending = {
            let st = self.inner.state.read();
            st.indices
                .values()
                .any(|i| i.shards.iter().any(|s| s.refreshed != s.next_seq))
        };
        if pending {
            self.refresh_all();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wildcards() {
        assert!(wildcard_match("logs-*", "logs-2024.03.01"));
        assert!(wildcard_match("*", "x"));
        assert!(wildcard_match("a*c", "abbbc"));
        assert!(!wildcard_match("a*c", "abbbd"));
        assert!(wildcard_match("*.field2", "include.field2"));
    }

    #[test]
    fn versions_and_visibility() {
        let mut st = State::default();
        st.create_index(
            "t",
            &json!({"settings": {"number_of_shards": 2}}),
            Flavor::OpenSearch,
        )
        .unwrap();
        let doc = json!({"a": 1});
        let r = st
            .write_doc(
                "t",
                Some("1"),
                None,
                Bytes::from_static(b"{\"a\":1}"),
                &doc,
                OpType::Index,
                Flavor::OpenSearch,
            )
            .unwrap();
        assert_eq!(r.result, "created");
        assert_eq!(st.indices["t"].doc_count(), 0, "not visible before refresh");
        st.refresh(&["t".into()]);
        assert_eq!(st.indices["t"].doc_count(), 1);
        let r = st
            .write_doc(
                "t",
                Some("1"),
                None,
                Bytes::from_static(b"{\"a\":2}"),
                &doc,
                OpType::Index,
                Flavor::OpenSearch,
            )
            .unwrap();
        assert_eq!((r.result, r.version), ("updated", 2));
        let e = st
            .write_doc(
                "t",
                Some("1"),
                None,
                Bytes::from_static(b"{}"),
                &json!({}),
                OpType::Create,
                Flavor::OpenSearch,
            )
            .unwrap_err();
        assert_eq!(e.status, 409);
        st.refresh(&["t".into()]);
        assert_eq!(st.indices["t"].doc_count(), 1);
        assert_eq!(st.delete_doc("t", "1", None).unwrap().result, "deleted");
        assert_eq!(st.delete_doc("t", "1", None).unwrap().result, "not_found");
    }

    #[test]
    fn resolve_expressions() {
        let mut st = State::default();
        for n in ["a1", "a2", "b1"] {
            st.create_index(n, &json!({}), Flavor::OpenSearch).unwrap();
        }
        st.indices
            .get_mut("b1")
            .unwrap()
            .aliases
            .insert("zal".into(), json!({}));
        let o = IndicesOptions::default();
        assert_eq!(st.resolve("a*", o).unwrap(), vec!["a1", "a2"]);
        assert_eq!(st.resolve("_all", o).unwrap(), vec!["a1", "a2", "b1"]);
        assert_eq!(st.resolve("*,-a2", o).unwrap(), vec!["a1", "b1"]);
        assert_eq!(st.resolve("zal", o).unwrap(), vec!["b1"]);
        assert_eq!(st.resolve("zz", o).unwrap_err().status, 404);
        assert!(st.resolve("zz*", o).unwrap().is_empty());
        let strict = IndicesOptions {
            allow_no_indices: false,
            ..o
        };
        assert_eq!(st.resolve("zz*", strict).unwrap_err().status, 404);
        let lenient = IndicesOptions {
            ignore_unavailable: true,
            ..o
        };
        assert_eq!(st.resolve("zz,a1", lenient).unwrap(), vec!["a1"]);
    }
}
