//! The borrowed view of one search hit that flows from the source reader to the encoders
//! without copying: slices of the response body as the cluster sent it.

/// One document of a search page. `source` is the raw `_source` JSON text exactly as the
/// cluster returned it (an object), so NDJSON output can pass it through unchanged.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DocRef<'a> {
    pub index: &'a str,
    pub id: &'a str,
    pub source: &'a str,
}
