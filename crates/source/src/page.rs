//! One page of search hits, kept as the response body the cluster sent plus the byte ranges
//! of each hit's `_index`, `_id` and `_source` inside it. Documents are handed out as
//! [`DocRef`]s borrowing the body: `_source` is never copied or re-serialised. Only an
//! `_index` or `_id` that contains JSON escapes is unescaped into an owned string.

use std::borrow::Cow;
use std::ops::Range;

use bytes::Bytes;
use serde::Deserialize;
use serde_json::value::RawValue;
use spillway_api::DocRef;

/// Where a string of a hit lives.
#[derive(Clone, Debug)]
enum Text {
    /// Byte range in the body (the JSON string had no escapes).
    Span(Range<usize>),
    /// Unescaped copy.
    Owned(Box<str>),
}

#[derive(Clone, Debug)]
struct HitSpans {
    index: Text,
    id: Text,
    source: Text,
}

impl HitSpans {
    /// The document, its spans resolved in `body` (the page's body as text).
    fn doc<'a>(&'a self, body: &'a str) -> DocRef<'a> {
        let text = |t: &'a Text| -> &'a str {
            match t {
                // the ranges were taken from `&str`s borrowed from this very body, so they lie
                // on character boundaries
                Text::Span(r) => body.get(r.clone()).unwrap_or(""),
                Text::Owned(s) => s,
            }
        };
        DocRef {
            index: text(&self.index),
            id: text(&self.id),
            source: text(&self.source),
        }
    }
}

/// A page of hits that owns its response body.
#[derive(Clone)]
pub struct Page {
    /// The body as received; checked to be UTF-8 when parsed.
    body: Bytes,
    hits: Vec<HitSpans>,
    last_sort: Option<Box<RawValue>>,
    total: Option<Total>,
    pit_id: Option<String>,
    scroll_id: Option<String>,
}

impl std::fmt::Debug for Page {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Page")
            .field("docs", &self.hits.len())
            .field("body_bytes", &self.body.len())
            .field("total", &self.total)
            .finish()
    }
}

/// `hits.total`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Total {
    pub value: u64,
    /// `true` for `"relation": "eq"` (or an integer total).
    pub exact: bool,
}

/// Shard failures reported in a 200 response (`_shards.failed > 0`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ShardFailures {
    pub failed: u64,
    /// `reason.type` of each failure.
    pub types: Vec<String>,
    /// First failure's reason text.
    pub first_reason: String,
}

/// Why a body is not a usable page.
#[derive(Debug)]
pub enum PageError {
    /// Not JSON or cut off: the connection dropped mid-response.
    Syntax(serde_json::Error),
    /// Valid JSON of an unexpected shape.
    Shape(String),
    /// Some shards failed.
    ShardFailures(ShardFailures),
    /// `timed_out: true`: the hits may be partial.
    TimedOut,
}

impl std::fmt::Display for PageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PageError::Syntax(e) => write!(f, "{e}"),
            PageError::Shape(s) => f.write_str(s),
            PageError::ShardFailures(s) => write!(
                f,
                "{} shard(s) failed: {} ({})",
                s.failed,
                s.types.join(", "),
                s.first_reason
            ),
            PageError::TimedOut => f.write_str("the search timed out and returned partial results"),
        }
    }
}

#[derive(Deserialize)]
struct RawResponse<'a> {
    #[serde(borrow, default)]
    pit_id: Option<Cow<'a, str>>,
    #[serde(borrow, default)]
    _scroll_id: Option<Cow<'a, str>>,
    #[serde(default)]
    timed_out: bool,
    #[serde(default)]
    _shards: Option<RawShards>,
    hits: Option<RawHits<'a>>,
}

#[derive(Deserialize)]
struct RawShards {
    #[serde(default)]
    failed: u64,
    #[serde(default)]
    failures: Vec<RawFailure>,
}

#[derive(Deserialize)]
struct RawFailure {
    #[serde(default)]
    reason: Option<RawReason>,
}

#[derive(Deserialize)]
struct RawReason {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    reason: Option<String>,
    #[serde(default)]
    caused_by: Option<Box<RawReason>>,
}

#[derive(Deserialize)]
struct RawHits<'a> {
    #[serde(default)]
    total: Option<RawTotal>,
    #[serde(borrow, default)]
    hits: Vec<RawHit<'a>>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RawTotal {
    Int(u64),
    Obj { value: u64, relation: String },
}

#[derive(Deserialize)]
struct RawHit<'a> {
    #[serde(borrow)]
    _index: Cow<'a, str>,
    #[serde(borrow)]
    _id: Cow<'a, str>,
    #[serde(borrow, default)]
    _source: Option<&'a RawValue>,
    #[serde(borrow, default)]
    sort: Option<&'a RawValue>,
}

/// A parse error as a page error: data errors are about the shape, others about syntax.
fn classify(e: serde_json::Error) -> PageError {
    if e.is_data() {
        PageError::Shape(e.to_string())
    } else {
        PageError::Syntax(e)
    }
}

impl Page {
    /// Parses a search or scroll response body.
    ///
    /// The body is checked to be UTF-8 once, as a whole, with a SIMD validator, and then
    /// parsed as text, so the parser does not check each string and `_source` again.
    pub fn parse(body: Bytes) -> Result<Page, PageError> {
        let Ok(text) = simdutf8::basic::from_utf8(&body) else {
            // a body cut inside a multi-byte character is a cut-off body: let the parser say
            // where the JSON breaks, as it does for any other truncation
            if let Err(je) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
                return Err(classify(je));
            }
            let at = simdutf8::compat::from_utf8(&body)
                .err()
                .map_or(0, |e| e.valid_up_to());
            return Err(PageError::Shape(format!(
                "the response is not valid UTF-8 (byte {at})"
            )));
        };
        let raw: RawResponse<'_> = serde_json::from_str(text).map_err(classify)?;
        if let Some(shards) = &raw._shards
            && shards.failed > 0
        {
            let mut types = Vec::new();
            let mut first_reason = String::new();
            for f in &shards.failures {
                if let Some(r) = &f.reason {
                    let mut cur = Some(r);
                    while let Some(c) = cur {
                        if let Some(t) = &c.kind
                            && !types.contains(t)
                        {
                            types.push(t.clone());
                        }
                        if first_reason.is_empty()
                            && let Some(text) = &c.reason
                        {
                            first_reason = text.clone();
                        }
                        cur = c.caused_by.as_deref();
                    }
                }
            }
            return Err(PageError::ShardFailures(ShardFailures {
                failed: shards.failed,
                types,
                first_reason,
            }));
        }
        if raw.timed_out {
            return Err(PageError::TimedOut);
        }
        let hits = raw
            .hits
            .ok_or_else(|| PageError::Shape("the response has no `hits`".into()))?;
        let base = body.as_ptr() as usize;
        let end = base + body.len();
        let text = |c: &Cow<'_, str>| -> Text {
            match c {
                Cow::Borrowed(s) => {
                    let start = s.as_ptr() as usize;
                    debug_assert!(start >= base && start + s.len() <= end);
                    Text::Span(start - base..start - base + s.len())
                }
                Cow::Owned(s) => Text::Owned(s.clone().into_boxed_str()),
            }
        };
        let mut spans = Vec::with_capacity(hits.hits.len());
        let mut last_sort = None;
        for h in &hits.hits {
            let source = match h._source {
                Some(raw) => {
                    let s = raw.get();
                    let start = s.as_ptr() as usize;
                    Text::Span(start - base..start - base + s.len())
                }
                None => Text::Owned("{}".into()),
            };
            spans.push(HitSpans {
                index: text(&h._index),
                id: text(&h._id),
                source,
            });
            last_sort = h.sort;
        }
        let total = match hits.total {
            None => None,
            Some(RawTotal::Int(v)) => Some(Total {
                value: v,
                exact: true,
            }),
            Some(RawTotal::Obj { value, relation }) => Some(Total {
                value,
                exact: relation == "eq",
            }),
        };
        let last_sort = last_sort.map(|r| r.to_owned());
        let pit_id = raw.pit_id.map(Cow::into_owned);
        let scroll_id = raw._scroll_id.map(Cow::into_owned);
        Ok(Page {
            hits: spans,
            last_sort,
            total,
            pit_id,
            scroll_id,
            body,
        })
    }

    /// The body as text. It was validated by [`Page::parse`]; validating again (SIMD, a
    /// small fraction of the parse) is what keeps this free of `unsafe`.
    fn body_text(&self) -> &str {
        simdutf8::basic::from_utf8(&self.body).unwrap_or("")
    }

    /// The documents of this page, in the order the cluster returned them.
    pub fn docs(&self) -> impl ExactSizeIterator<Item = DocRef<'_>> + '_ {
        let body = self.body_text();
        self.hits.iter().map(move |h| h.doc(body))
    }

    /// The `i`-th document.
    pub fn doc(&self, i: usize) -> Option<DocRef<'_>> {
        let body = self.body_text();
        self.hits.get(i).map(|h| h.doc(body))
    }

    pub fn len(&self) -> usize {
        self.hits.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hits.is_empty()
    }

    /// The response body as received.
    pub fn body(&self) -> &Bytes {
        &self.body
    }

    /// The last hit's `sort` array, raw (the next page's `search_after`).
    pub fn last_sort(&self) -> Option<&RawValue> {
        self.last_sort.as_deref()
    }

    /// `hits.total`, when the request tracked it.
    pub fn total(&self) -> Option<Total> {
        self.total
    }

    /// The `pit_id` the response carried.
    pub fn pit_id(&self) -> Option<&str> {
        self.pit_id.as_deref()
    }

    /// The `_scroll_id` the response carried.
    pub fn scroll_id(&self) -> Option<&str> {
        self.scroll_id.as_deref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(s: &str) -> Page {
        Page::parse(Bytes::copy_from_slice(s.as_bytes())).unwrap()
    }

    #[test]
    fn offsets_and_bytes_exact_source() {
        let body = r#"{"pit_id":"p1==","took":3,"timed_out":false,"_shards":{"total":3,"successful":3,"skipped":0,"failed":0},
"hits":{"total":{"value":2,"relation":"eq"},"max_score":null,"hits":[
{"_index":"logs-1","_id":"a1","_score":null,"_source":{ "msg" : "hé \"x\"\u00e9",  "n":1.50e3, "nested":{"k":[1, 2]} },"sort":[17179869184]},
{"_index":"logs-2","_id":"b\"2\\x\u0041","_score":null,"_source":{},"sort":[17179869185, "z"]}]}}"#;
        let p = page(body);
        assert_eq!(p.len(), 2);
        assert_eq!(p.pit_id(), Some("p1=="));
        assert_eq!(
            p.total(),
            Some(Total {
                value: 2,
                exact: true
            })
        );
        let docs: Vec<_> = p.docs().collect();
        assert_eq!(docs[0].index, "logs-1");
        assert_eq!(docs[0].id, "a1");
        // _source byte-exact, spacing and escapes untouched.
        assert_eq!(
            docs[0].source,
            r#"{ "msg" : "hé \"x\"\u00e9",  "n":1.50e3, "nested":{"k":[1, 2]} }"#
        );
        // Borrowed: the source slice lies inside the body.
        let b = p.body().as_ptr() as usize;
        let s = docs[0].source.as_ptr() as usize;
        assert!(s > b && s < b + p.body().len());
        // Escaped ids are unescaped.
        assert_eq!(docs[1].id, "b\"2\\xA");
        assert_eq!(docs[1].index, "logs-2");
        assert_eq!(docs[1].source, "{}");
        assert_eq!(p.last_sort().unwrap().get(), r#"[17179869185, "z"]"#);
        assert_eq!(p.doc(1).unwrap().id, "b\"2\\xA");
        assert!(p.doc(2).is_none());
    }

    #[test]
    fn int_total_scroll_id_and_missing_source() {
        let p = page(
            r#"{"_scroll_id":"c2Nyb2xs","hits":{"total":5,"hits":[{"_index":"i","_type":"_doc","_id":"1","_score":1.0}]}}"#,
        );
        assert_eq!(p.scroll_id(), Some("c2Nyb2xs"));
        assert_eq!(
            p.total(),
            Some(Total {
                value: 5,
                exact: true
            })
        );
        assert_eq!(p.doc(0).unwrap().source, "{}");
        assert!(p.last_sort().is_none());
    }

    #[test]
    fn gte_total_is_not_exact() {
        let p = page(r#"{"hits":{"total":{"value":10000,"relation":"gte"},"hits":[]}}"#);
        assert!(!p.total().unwrap().exact);
        assert!(p.is_empty());
    }

    #[test]
    fn cut_off_body_is_syntax_error_and_shape_errors_differ() {
        let full = r#"{"hits":{"total":{"value":1,"relation":"eq"},"hits":[{"_index":"i","_id":"1","_source":{"a":1}}]}}"#;
        for cut in [10, 40, full.len() - 1] {
            let e = Page::parse(Bytes::copy_from_slice(&full.as_bytes()[..cut])).unwrap_err();
            assert!(matches!(e, PageError::Syntax(_)), "cut at {cut}: {e}");
        }
        let e = Page::parse(Bytes::from_static(b"{\"took\":1}")).unwrap_err();
        assert!(matches!(e, PageError::Shape(_)), "{e}");
        let e =
            Page::parse(Bytes::from_static(b"{\"hits\":{\"hits\":[{\"_id\":1}]}}")).unwrap_err();
        assert!(matches!(e, PageError::Shape(_)), "{e}");
    }

    #[test]
    fn invalid_utf8_is_refused_and_a_cut_character_is_a_cut_body() {
        let mut bad = br#"{"hits":{"hits":[{"_index":"i","_id":"1","_source":{"a":"x"#.to_vec();
        bad.push(0xff);
        bad.extend_from_slice(br#""}}]}}"#);
        let e = Page::parse(Bytes::from(bad)).unwrap_err();
        assert!(matches!(e, PageError::Shape(_)), "{e}");
        assert!(e.to_string().contains("not valid UTF-8"), "{e}");
        let full = r#"{"hits":{"hits":[{"_index":"i","_id":"1","_source":{"a":"é"}}]}}"#;
        let cut = full.find('é').unwrap() + 1;
        let e = Page::parse(Bytes::copy_from_slice(&full.as_bytes()[..cut])).unwrap_err();
        assert!(matches!(e, PageError::Syntax(_)), "{e}");
    }

    #[test]
    fn shard_failures_are_reported() {
        let body = r#"{"_shards":{"total":3,"successful":2,"skipped":0,"failed":1,"failures":[{"shard":1,"index":"i","node":"n",
        "reason":{"type":"rejected_execution_exception","reason":"rejected execution of stuff"}}]},"hits":{"hits":[]}}"#;
        match Page::parse(Bytes::copy_from_slice(body.as_bytes())).unwrap_err() {
            PageError::ShardFailures(f) => {
                assert_eq!(f.failed, 1);
                assert_eq!(f.types, vec!["rejected_execution_exception".to_string()]);
                assert_eq!(f.first_reason, "rejected execution of stuff");
            }
            e => panic!("{e}"),
        }
    }
}
