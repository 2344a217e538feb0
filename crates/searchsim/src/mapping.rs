//! Index mappings: the `properties` tree as the client sent it, a flat per-field view
//! (`include.field1`, `message.keyword`) with types and doc-value slots, dynamic mapping of new
//! fields (long, float, boolean, date, text + `keyword` sub-field, object) and doc-value
//! extraction at index time.

use std::collections::HashMap;

use serde_json::{Map, Value, json};

use crate::timeval::{DateFormat, looks_like_date};

/// Type of a mapped field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FieldType {
    /// Analysed text.
    Text,
    /// Exact string.
    Keyword,
    /// Integral numbers (long, integer, short, byte).
    Long,
    /// Floating point (double).
    Double,
    /// 32-bit float.
    Float,
    /// 16-bit float.
    HalfFloat,
    /// Unsigned 64-bit.
    UnsignedLong,
    /// Date with millisecond resolution.
    Date,
    /// Date with nanosecond resolution.
    DateNanos,
    /// true/false.
    Boolean,
    /// IP address (kept as a keyword-like string).
    Ip,
    /// An object with sub-properties.
    Object,
    /// Anything else (geo_point, binary, ...): stored, not searchable here.
    Other,
}

impl FieldType {
    fn from_name(name: &str) -> Self {
        match name {
            "text" | "match_only_text" => Self::Text,
            "keyword" | "constant_keyword" | "wildcard" | "version" => Self::Keyword,
            "long" | "integer" | "short" | "byte" => Self::Long,
            "double" | "scaled_float" => Self::Double,
            "float" => Self::Float,
            "half_float" => Self::HalfFloat,
            "unsigned_long" => Self::UnsignedLong,
            "date" => Self::Date,
            "date_nanos" => Self::DateNanos,
            "boolean" => Self::Boolean,
            "ip" => Self::Ip,
            "object" | "nested" | "flat_object" => Self::Object,
            _ => Self::Other,
        }
    }

    /// Whether values of this type are extracted as doc values (sortable, aggregatable).
    pub fn has_doc_values(&self) -> bool {
        !matches!(self, Self::Text | Self::Object | Self::Other)
    }

    /// Whether the type is a date.
    pub fn is_date(&self) -> bool {
        matches!(self, Self::Date | Self::DateNanos)
    }
}

/// One field of the flat view.
#[derive(Debug, Clone)]
pub struct FieldInfo {
    /// Type.
    pub ty: FieldType,
    /// Date format (dates only).
    pub format: DateFormat,
    /// Doc-value slot, if the type has doc values.
    pub slot: Option<u32>,
    /// `ignore_above` for keywords.
    pub ignore_above: Option<usize>,
    /// For multi-fields (`message.keyword`): the parent's path in the source.
    pub source_path: String,
}

/// A doc value.
#[derive(Debug, Clone, PartialEq)]
pub enum Dv {
    /// Integral value (also dates in ms or ns, and booleans as 0/1).
    I(i64),
    /// Unsigned long.
    U(u64),
    /// Floating point.
    F(f64),
    /// Keyword or IP.
    S(Box<str>),
}

impl Dv {
    /// Borrowed view.
    pub fn as_ref(&self) -> DvRef<'_> {
        match self {
            Dv::I(v) => DvRef::I(*v),
            Dv::U(v) => DvRef::U(*v),
            Dv::F(v) => DvRef::F(*v),
            Dv::S(s) => DvRef::S(s),
        }
    }
}

/// A doc value read from a document's packed doc-value buffer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum DvRef<'a> {
    /// Integral value.
    I(i64),
    /// Unsigned long.
    U(u64),
    /// Floating point.
    F(f64),
    /// Keyword or IP.
    S(&'a str),
}

impl DvRef<'_> {
    /// Owned copy.
    pub fn to_owned(self) -> Dv {
        match self {
            DvRef::I(v) => Dv::I(v),
            DvRef::U(v) => Dv::U(v),
            DvRef::F(v) => Dv::F(v),
            DvRef::S(s) => Dv::S(s.into()),
        }
    }
}

/// Packs doc values (sorted by slot) into one buffer: per value `slot: u16`, `tag: u8`, then
/// 8 bytes for numbers or `len: u32` + UTF-8 for strings. One allocation per document.
pub fn encode_dvs(values: &[(u32, Dv)]) -> Box<[u8]> {
    let mut out = Vec::with_capacity(values.len() * 11);
    for (slot, v) in values {
        let Ok(slot) = u16::try_from(*slot) else {
            continue;
        };
        out.extend_from_slice(&slot.to_le_bytes());
        match v {
            Dv::I(x) => {
                out.push(0);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Dv::U(x) => {
                out.push(1);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Dv::F(x) => {
                out.push(2);
                out.extend_from_slice(&x.to_le_bytes());
            }
            Dv::S(x) => {
                out.push(3);
                out.extend_from_slice(&(x.len() as u32).to_le_bytes());
                out.extend_from_slice(x.as_bytes());
            }
        }
    }
    out.into_boxed_slice()
}

/// Iterates a packed doc-value buffer as `(slot, value)`.
pub fn decode_dvs(buf: &[u8]) -> impl Iterator<Item = (u32, DvRef<'_>)> {
    let mut pos = 0usize;
    std::iter::from_fn(move || {
        if pos + 3 > buf.len() {
            return None;
        }
        let slot = u32::from(u16::from_le_bytes([buf[pos], buf[pos + 1]]));
        let tag = buf[pos + 2];
        pos += 3;
        let eight = |p: usize| -> [u8; 8] { buf[p..p + 8].try_into().unwrap_or([0; 8]) };
        let v = match tag {
            0 => DvRef::I(i64::from_le_bytes(eight(pos))),
            1 => DvRef::U(u64::from_le_bytes(eight(pos))),
            2 => DvRef::F(f64::from_le_bytes(eight(pos))),
            _ => {
                let len =
                    u32::from_le_bytes(buf[pos..pos + 4].try_into().unwrap_or([0; 4])) as usize;
                let start = pos + 4;
                pos = start + len;
                return Some((
                    slot,
                    DvRef::S(std::str::from_utf8(&buf[start..start + len]).unwrap_or_default()),
                ));
            }
        };
        pos += 8;
        Some((slot, v))
    })
}

/// An index mapping.
#[derive(Debug, Clone, Default)]
pub struct Mapping {
    /// The `properties` tree.
    pub properties: Map<String, Value>,
    /// Other top-level mapping keys (`dynamic`, `_source`, ...).
    pub extra: Map<String, Value>,
    /// Flat view by full path.
    pub fields: HashMap<String, FieldInfo>,
    slots: HashMap<String, u32>,
    next_slot: u32,
}

impl Mapping {
    /// Builds a mapping from a `mappings` body (`{"properties":{..}, ..}`).
    pub fn from_json(body: &Value) -> Result<Self, String> {
        let mut m = Self::default();
        m.merge(body)?;
        Ok(m)
    }

    /// Merges a `mappings` body (PUT _mapping): new fields are added, existing kept.
    pub fn merge(&mut self, body: &Value) -> Result<(), String> {
        let Some(obj) = body.as_object() else {
            return Err("mapping must be an object".into());
        };
        for (k, v) in obj {
            if k == "properties" {
                let Some(props) = v.as_object() else {
                    return Err("[properties] must be an object".into());
                };
                merge_props(&mut self.properties, props);
            } else if k != "_doc" {
                self.extra.insert(k.clone(), v.clone());
            } else if let Some(inner) = v.as_object() {
                // typed mapping `{"_doc": {"properties": ..}}`
                if let Some(p) = inner.get("properties").and_then(Value::as_object) {
                    merge_props(&mut self.properties, p);
                }
            }
        }
        self.rebuild();
        Ok(())
    }

    /// The mapping as `{"properties":..}` for GET responses.
    pub fn to_json(&self) -> Value {
        let mut out = self.extra.clone();
        if !self.properties.is_empty() {
            out.insert("properties".into(), Value::Object(self.properties.clone()));
        }
        Value::Object(out)
    }

    fn rebuild(&mut self) {
        let mut fields = HashMap::new();
        let props = self.properties.clone();
        self.walk(&props, "", &mut fields);
        self.fields = fields;
    }

    fn slot_for(&mut self, path: &str) -> u32 {
        if let Some(s) = self.slots.get(path) {
            return *s;
        }
        let s = self.next_slot;
        self.next_slot += 1;
        self.slots.insert(path.to_string(), s);
        s
    }

    fn walk(
        &mut self,
        props: &Map<String, Value>,
        prefix: &str,
        out: &mut HashMap<String, FieldInfo>,
    ) {
        for (name, def) in props {
            let path = if prefix.is_empty() {
                name.clone()
            } else {
                format!("{prefix}.{name}")
            };
            let ty = match def.get("type").and_then(Value::as_str) {
                Some(t) => FieldType::from_name(t),
                None if def.get("properties").is_some() => FieldType::Object,
                None => FieldType::Object,
            };
            let format = def
                .get("format")
                .and_then(Value::as_str)
                .map(DateFormat::new)
                .unwrap_or_default();
            let slot = ty.has_doc_values().then(|| self.slot_for(&path));
            let ignore_above = def
                .get("ignore_above")
                .and_then(Value::as_u64)
                .map(|v| v as usize);
            out.insert(
                path.clone(),
                FieldInfo {
                    ty: ty.clone(),
                    format,
                    slot,
                    ignore_above,
                    source_path: path.clone(),
                },
            );
            if let Some(sub) = def.get("properties").and_then(Value::as_object) {
                self.walk(sub, &path, out);
            }
            if let Some(multi) = def.get("fields").and_then(Value::as_object) {
                for (sub_name, sub_def) in multi {
                    let sub_path = format!("{path}.{sub_name}");
                    let sub_ty = FieldType::from_name(
                        sub_def
                            .get("type")
                            .and_then(Value::as_str)
                            .unwrap_or("keyword"),
                    );
                    let format = sub_def
                        .get("format")
                        .and_then(Value::as_str)
                        .map(DateFormat::new)
                        .unwrap_or_default();
                    let slot = sub_ty.has_doc_values().then(|| self.slot_for(&sub_path));
                    let ignore_above = sub_def
                        .get("ignore_above")
                        .and_then(Value::as_u64)
                        .map(|v| v as usize);
                    out.insert(
                        sub_path,
                        FieldInfo {
                            ty: sub_ty,
                            format,
                            slot,
                            ignore_above,
                            source_path: path.clone(),
                        },
                    );
                }
            }
        }
    }

    /// Adds mappings for fields of `source` that are not mapped yet. Returns true when changed.
    pub fn apply_dynamic(&mut self, source: &Value) -> bool {
        if self
            .extra
            .get("dynamic")
            .and_then(|v| {
                v.as_str()
                    .map(str::to_string)
                    .or_else(|| v.as_bool().map(|b| b.to_string()))
            })
            .is_some_and(|d| d == "false" || d == "strict")
        {
            return false;
        }
        let Some(obj) = source.as_object() else {
            return false;
        };
        let mut changed = false;
        dynamic_props(&mut self.properties, obj, &mut changed);
        if changed {
            self.rebuild();
        }
        changed
    }

    /// Extracts doc values of every doc-valued field in `source`, sorted by slot.
    pub fn extract(&self, source: &Value) -> Vec<(u32, Dv)> {
        let mut out = Vec::new();
        if let Some(obj) = source.as_object() {
            self.extract_obj(obj, "", &mut out);
        }
        out.sort_by_key(|(s, _)| *s);
        out
    }

    fn extract_obj(&self, obj: &Map<String, Value>, prefix: &str, out: &mut Vec<(u32, Dv)>) {
        for (k, v) in obj {
            let path = if prefix.is_empty() {
                k.clone()
            } else {
                format!("{prefix}.{k}")
            };
            self.extract_value(&path, v, out);
        }
    }

    fn extract_value(&self, path: &str, v: &Value, out: &mut Vec<(u32, Dv)>) {
        match v {
            Value::Object(o) => self.extract_obj(o, path, out),
            Value::Array(items) => {
                for item in items {
                    self.extract_value(path, item, out);
                }
            }
            Value::Null => {}
            scalar => {
                if let Some(info) = self.fields.get(path)
                    && let (Some(slot), Some(dv)) = (info.slot, to_dv(info, scalar))
                {
                    out.push((slot, dv));
                }
                // multi-fields
                for suffix in ["keyword", "raw"] {
                    let sub = format!("{path}.{suffix}");
                    if let Some(info) = self.fields.get(&sub)
                        && info.source_path == path
                        && let (Some(slot), Some(dv)) = (info.slot, to_dv(info, scalar))
                    {
                        out.push((slot, dv));
                    }
                }
            }
        }
    }
}

fn merge_props(into: &mut Map<String, Value>, from: &Map<String, Value>) {
    for (k, v) in from {
        match (into.get_mut(k), v) {
            (Some(Value::Object(existing)), Value::Object(new)) => {
                for (nk, nv) in new {
                    if nk == "properties"
                        && let (Some(Value::Object(ep)), Value::Object(np)) =
                            (existing.get_mut("properties"), nv)
                    {
                        merge_props(ep, np);
                        continue;
                    }
                    existing.insert(nk.clone(), nv.clone());
                }
            }
            _ => {
                into.insert(k.clone(), v.clone());
            }
        }
    }
}

fn dynamic_props(props: &mut Map<String, Value>, obj: &Map<String, Value>, changed: &mut bool) {
    for (k, v) in obj {
        let sample = match v {
            Value::Array(items) => items.iter().find(|i| !i.is_null()),
            Value::Null => None,
            other => Some(other),
        };
        let Some(sample) = sample else { continue };
        if let Value::Object(child) = sample {
            let entry = props.entry(k.clone()).or_insert_with(|| {
                *changed = true;
                json!({"properties": {}})
            });
            if let Some(eobj) = entry.as_object_mut() {
                if eobj
                    .get("type")
                    .is_some_and(|t| t != "object" && t != "nested")
                {
                    continue;
                }
                let sub = eobj.entry("properties").or_insert_with(|| json!({}));
                if let Some(sub) = sub.as_object_mut() {
                    dynamic_props(sub, child, changed);
                }
            }
            // objects in arrays: also merge every element
            if let Value::Array(items) = v {
                for item in items.iter().skip(1) {
                    if let (Value::Object(c), Some(Value::Object(eobj))) = (item, props.get_mut(k))
                        && let Some(Value::Object(sub)) = eobj.get_mut("properties")
                    {
                        dynamic_props(sub, c, changed);
                    }
                }
            }
            continue;
        }
        if props.contains_key(k) {
            continue;
        }
        let def = match sample {
            Value::Bool(_) => json!({"type": "boolean"}),
            Value::Number(n) if n.is_i64() || n.is_u64() => json!({"type": "long"}),
            Value::Number(_) => json!({"type": "float"}),
            Value::String(s) if looks_like_date(s) => json!({"type": "date"}),
            Value::String(_) => {
                json!({"type": "text", "fields": {"keyword": {"type": "keyword", "ignore_above": 256}}})
            }
            _ => continue,
        };
        props.insert(k.clone(), def);
        *changed = true;
    }
}

/// Rounds to the nearest IEEE half-precision value (round half to even).
pub fn round_half(v: f64) -> f64 {
    let f = v as f32;
    if !f.is_finite() || f == 0.0 {
        return f64::from(f);
    }
    let abs = f.abs();
    if abs >= 65520.0 {
        return if f > 0.0 {
            f64::INFINITY
        } else {
            f64::NEG_INFINITY
        };
    }
    // spacing of half floats around this value
    let exp = abs.log2().floor().max(-14.0);
    let ulp = 2f64.powf(f64::from(exp) - 10.0);
    let q = f64::from(abs) / ulp;
    let r = q.round_ties_even();
    let out = r * ulp;
    if f < 0.0 { -out } else { out }
}

/// Converts a JSON scalar to the doc value of a field.
pub fn to_dv(info: &FieldInfo, v: &Value) -> Option<Dv> {
    match info.ty {
        FieldType::Keyword | FieldType::Ip => {
            let s = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return None,
            };
            if info.ignore_above.is_some_and(|max| s.chars().count() > max) {
                return None;
            }
            Some(Dv::S(s.into_boxed_str()))
        }
        FieldType::Long => match v {
            Value::Number(n) => n
                .as_i64()
                .or_else(|| n.as_f64().map(|f| f as i64))
                .map(Dv::I),
            Value::String(s) => s.trim().parse::<f64>().ok().map(|f| Dv::I(f as i64)),
            _ => None,
        },
        FieldType::UnsignedLong => match v {
            Value::Number(n) => n.as_u64().map(Dv::U),
            Value::String(s) => s.trim().parse::<u64>().ok().map(Dv::U),
            _ => None,
        },
        FieldType::Double | FieldType::Float | FieldType::HalfFloat => {
            let f = match v {
                Value::Number(n) => n.as_f64()?,
                Value::String(s) => s.trim().parse::<f64>().ok()?,
                _ => return None,
            };
            Some(Dv::F(round_float(&info.ty, f)))
        }
        FieldType::Boolean => match v {
            Value::Bool(b) => Some(Dv::I(i64::from(*b))),
            Value::String(s) if s == "true" => Some(Dv::I(1)),
            Value::String(s) if s == "false" || s.is_empty() => Some(Dv::I(0)),
            _ => None,
        },
        FieldType::Date | FieldType::DateNanos => {
            let nanos = match v {
                Value::String(s) => info.format.parse_nanos(s)?,
                Value::Number(n) => (n.as_f64()? * 1_000_000.0) as i128,
                _ => return None,
            };
            Some(Dv::I(if info.ty == FieldType::DateNanos {
                nanos as i64
            } else {
                nanos.div_euclid(1_000_000) as i64
            }))
        }
        _ => None,
    }
}

/// Applies the precision of a float type.
pub fn round_float(ty: &FieldType, f: f64) -> f64 {
    match ty {
        FieldType::Float => f64::from(f as f32),
        FieldType::HalfFloat => round_half(f),
        _ => f,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dynamic_mapping_infers_types() {
        let mut m = Mapping::default();
        let doc = json!({"a": 1, "b": 1.5, "c": true, "d": "2024-03-01T00:00:00Z", "e": "hello",
            "o": {"x": "y", "n": 3}, "tags": ["t1", "t2"], "z": null});
        assert!(m.apply_dynamic(&doc));
        assert_eq!(m.fields["a"].ty, FieldType::Long);
        assert_eq!(m.fields["b"].ty, FieldType::Float);
        assert_eq!(m.fields["c"].ty, FieldType::Boolean);
        assert_eq!(m.fields["d"].ty, FieldType::Date);
        assert_eq!(m.fields["e"].ty, FieldType::Text);
        assert_eq!(m.fields["e.keyword"].ty, FieldType::Keyword);
        assert_eq!(m.fields["o"].ty, FieldType::Object);
        assert_eq!(m.fields["o.n"].ty, FieldType::Long);
        assert!(!m.fields.contains_key("z"));
        let dvs = m.extract(&doc);
        let tags_slot = m.fields["tags.keyword"].slot.unwrap();
        assert_eq!(dvs.iter().filter(|(s, _)| *s == tags_slot).count(), 2);
        assert!(!m.apply_dynamic(&doc));
    }

    #[test]
    fn packed_doc_values_round_trip() {
        let vals = vec![
            (0, Dv::I(-5)),
            (0, Dv::I(7)),
            (3, Dv::S("zürich".into())),
            (4, Dv::F(1.5)),
            (9, Dv::U(u64::MAX)),
        ];
        let buf = encode_dvs(&vals);
        let back: Vec<(u32, Dv)> = decode_dvs(&buf).map(|(s, v)| (s, v.to_owned())).collect();
        assert_eq!(back, vals);
        assert_eq!(decode_dvs(&[]).count(), 0);
    }

    #[test]
    fn half_float_rounding() {
        assert_eq!(round_half(184.4), 184.375);
        assert_eq!(round_half(164.4), 164.375);
        assert_eq!(round_half(1.0), 1.0);
    }
}
