//! What the cluster is: flavor and version from `GET /`, and the capabilities that follow
//! from them (point in time, `_shard_doc`, slicing with a PIT, scroll).
//!
//! OpenSearch is recognised by `version.distribution == "opensearch"` or its tagline, never
//! by the version number: with `compatibility.override_main_response_version` it reports
//! `7.10.2`. In that mode the real major version is inferred from the Lucene version.
//! Elasticsearch is recognised by its tagline, the `X-elastic-product` header or
//! `version.build_flavor`.

use serde::Deserialize;
use spillway_api::Flavor;

/// `major.minor.patch`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Version {
    pub major: u32,
    pub minor: u32,
    pub patch: u32,
}

impl Version {
    pub const fn new(major: u32, minor: u32, patch: u32) -> Self {
        Version {
            major,
            minor,
            patch,
        }
    }

    /// Parses `7.10.2`, `8.15.0-SNAPSHOT`, `3.3`.
    pub fn parse(s: &str) -> Option<Version> {
        let core = s.split(['-', '+']).next()?;
        let mut it = core.split('.');
        let major = it.next()?.trim().parse().ok()?;
        let minor = it.next().map(|m| m.parse()).transpose().ok()?.unwrap_or(0);
        let patch = it.next().map(|p| p.parse()).transpose().ok()?.unwrap_or(0);
        Some(Version::new(major, minor, patch))
    }
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the client may use on this cluster.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Capabilities {
    /// Point in time (OpenSearch >= 2.4, Elasticsearch >= 7.10 non-OSS).
    pub pit: bool,
    /// The `_shard_doc` tiebreaker (Elasticsearch >= 7.12, OpenSearch >= 3.3).
    pub shard_doc: bool,
    /// `slice` together with a PIT.
    pub pit_slicing: bool,
    /// Scroll (everything but Amazon OpenSearch Serverless).
    pub scroll: bool,
}

/// The cluster as `GET /` describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClusterInfo {
    pub flavor: Flavor,
    /// The effective version (for OpenSearch in compatibility mode: inferred, see
    /// [`ClusterInfo::compatibility_mode`]).
    pub version: Version,
    /// `version.number` exactly as reported.
    pub version_number: String,
    /// `version.distribution` (OpenSearch).
    pub distribution: Option<String>,
    /// `version.build_flavor` (Elasticsearch: `default` or `oss`).
    pub build_flavor: Option<String>,
    pub cluster_name: Option<String>,
    /// OpenSearch reporting `7.10.2` for old clients; the version is inferred from Lucene.
    pub compatibility_mode: bool,
    /// Amazon OpenSearch Serverless (SigV4 service `aoss`).
    pub serverless: bool,
    pub capabilities: Capabilities,
}

impl ClusterInfo {
    /// The version string to record (`2.19.0`; `serverless` for Amazon OpenSearch Serverless).
    pub fn version_label(&self) -> String {
        if self.serverless {
            "serverless".to_string()
        } else {
            self.version.to_string()
        }
    }

    /// Amazon OpenSearch Serverless: no `GET /`, PIT and slicing but no scroll.
    pub fn serverless() -> ClusterInfo {
        ClusterInfo {
            flavor: Flavor::Opensearch,
            version: Version::new(2, 0, 0),
            version_number: "serverless".into(),
            distribution: Some("opensearch".into()),
            build_flavor: None,
            cluster_name: None,
            compatibility_mode: false,
            serverless: true,
            capabilities: Capabilities {
                pit: true,
                shard_doc: false,
                pit_slicing: true,
                scroll: false,
            },
        }
    }

    /// Applies a flavor override and recomputes the capabilities.
    pub fn with_flavor(mut self, flavor: Flavor) -> ClusterInfo {
        if self.flavor != flavor && !self.serverless {
            self.flavor = flavor;
            self.capabilities = capabilities(flavor, self.version, self.build_flavor.as_deref());
        }
        self
    }
}

#[derive(Deserialize)]
struct MainResponse {
    cluster_name: Option<String>,
    tagline: Option<String>,
    version: Option<MainVersion>,
}

#[derive(Deserialize)]
struct MainVersion {
    number: Option<String>,
    distribution: Option<String>,
    build_flavor: Option<String>,
    lucene_version: Option<String>,
}

const OPENSEARCH_TAGLINE: &str = "The OpenSearch Project";
const ELASTIC_TAGLINE: &str = "You Know, for Search";

/// Why a `GET /` body could not be understood.
#[derive(Debug, PartialEq, Eq)]
pub enum DetectError {
    NotJson(String),
    NoVersion,
    BadVersion(String),
    UnknownFlavor,
}

impl std::fmt::Display for DetectError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DetectError::NotJson(e) => write!(f, "GET / did not return a JSON object ({e})"),
            DetectError::NoVersion => f.write_str("GET / has no version.number"),
            DetectError::BadVersion(v) => write!(f, "GET / reports an unreadable version [{v}]"),
            DetectError::UnknownFlavor => f.write_str(
                "GET / looks neither like OpenSearch nor like Elasticsearch (no distribution, tagline or build_flavor); set the flavor explicitly",
            ),
        }
    }
}

/// Detects flavor, version and capabilities from a `GET /` body and the value of the
/// `X-elastic-product` response header.
pub fn detect(
    body: &[u8],
    elastic_product_header: Option<&str>,
    flavor_override: Option<Flavor>,
) -> Result<ClusterInfo, DetectError> {
    let main: MainResponse =
        serde_json::from_slice(body).map_err(|e| DetectError::NotJson(e.to_string()))?;
    let v = main.version.ok_or(DetectError::NoVersion)?;
    let number = v.number.ok_or(DetectError::NoVersion)?;
    let reported =
        Version::parse(&number).ok_or_else(|| DetectError::BadVersion(number.clone()))?;
    let tagline = main.tagline.as_deref().unwrap_or("");

    let is_opensearch =
        v.distribution.as_deref() == Some("opensearch") || tagline.contains(OPENSEARCH_TAGLINE);
    let is_elastic = !is_opensearch
        && (tagline.contains(ELASTIC_TAGLINE)
            || elastic_product_header.is_some_and(|h| h.eq_ignore_ascii_case("elasticsearch"))
            || v.build_flavor.is_some());
    let detected = if is_opensearch {
        Some(Flavor::Opensearch)
    } else if is_elastic {
        Some(Flavor::Elasticsearch)
    } else {
        None
    };
    let flavor = flavor_override
        .or(detected)
        .ok_or(DetectError::UnknownFlavor)?;

    let mut version = reported;
    let mut compatibility_mode = false;
    if flavor == Flavor::Opensearch && reported.major == 7 {
        // OpenSearch has no 7.x: this is the compatibility override. Lucene 8 ships with
        // OpenSearch 1.x, Lucene 9 with 2.x, Lucene 10 with 3.x.
        compatibility_mode = true;
        let lucene = v.lucene_version.as_deref().and_then(Version::parse);
        version = match lucene.map(|l| l.major) {
            Some(8) => Version::new(1, 0, 0),
            Some(10) => Version::new(3, 0, 0),
            // Lucene 9 (2.x) or unknown. 2.x without further detail: assume a PIT-capable
            // 2.x; opening a snapshot falls back to scroll if the PIT API is missing.
            _ => Version::new(2, 4, 0),
        };
    }
    Ok(ClusterInfo {
        flavor,
        version,
        version_number: number,
        capabilities: capabilities(flavor, version, v.build_flavor.as_deref()),
        distribution: v.distribution,
        build_flavor: v.build_flavor,
        cluster_name: main.cluster_name,
        compatibility_mode,
        serverless: false,
    })
}

/// Capabilities from flavor and version.
pub fn capabilities(flavor: Flavor, version: Version, build_flavor: Option<&str>) -> Capabilities {
    match flavor {
        Flavor::Opensearch => {
            let pit = version >= Version::new(2, 4, 0);
            Capabilities {
                pit,
                shard_doc: version >= Version::new(3, 3, 0),
                pit_slicing: pit,
                scroll: true,
            }
        }
        Flavor::Elasticsearch => {
            let oss = build_flavor == Some("oss");
            let pit = !oss && version >= Version::new(7, 10, 0);
            Capabilities {
                pit,
                shard_doc: pit && version >= Version::new(7, 12, 0),
                pit_slicing: pit,
                scroll: true,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const OS_2: &str = r#"{"name":"node-1","cluster_name":"docker-cluster","cluster_uuid":"Jm5pU6mTRL2Rw6g8mXWk1g",
      "version":{"distribution":"opensearch","number":"2.19.0","build_type":"tar","build_hash":"abc",
      "build_date":"2025-02-05T20:24:51.436286Z","build_snapshot":false,"lucene_version":"9.12.1",
      "minimum_wire_compatibility_version":"7.10.0","minimum_index_compatibility_version":"7.0.0"},
      "tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
    const OS_COMPAT: &str = r#"{"name":"node-1","cluster_name":"c","cluster_uuid":"u",
      "version":{"number":"7.10.2","build_type":"tar","build_hash":"abc","build_date":"2024-01-01T00:00:00Z",
      "build_snapshot":false,"lucene_version":"9.7.0","minimum_wire_compatibility_version":"7.10.0",
      "minimum_index_compatibility_version":"7.0.0"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
    const OS_COMPAT_1X: &str = r#"{"name":"n","cluster_name":"c","version":{"number":"7.10.2",
      "lucene_version":"8.10.1"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
    const OS_3_3: &str = r#"{"name":"n","cluster_name":"c","cluster_uuid":"u","version":{"distribution":"opensearch",
      "number":"3.3.0","build_type":"tar","lucene_version":"10.3.1","minimum_wire_compatibility_version":"2.19.0",
      "minimum_index_compatibility_version":"2.0.0"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
    const OS_3_2: &str = r#"{"version":{"distribution":"opensearch","number":"3.2.0"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
    const OS_2_3: &str = r#"{"version":{"distribution":"opensearch","number":"2.3.0"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
    const ES_8: &str = r#"{"name":"es01","cluster_name":"docker-cluster","cluster_uuid":"u",
      "version":{"number":"8.15.0","build_flavor":"default","build_type":"docker","build_hash":"h",
      "build_date":"2024-08-05T10:05:34.233336849Z","build_snapshot":false,"lucene_version":"9.11.1",
      "minimum_wire_compatibility_version":"7.17.0","minimum_index_compatibility_version":"7.0.0"},
      "tagline":"You Know, for Search"}"#;
    const ES_7_10_OSS: &str = r#"{"name":"n","cluster_name":"c","cluster_uuid":"u","version":{"number":"7.10.2",
      "build_flavor":"oss","build_type":"docker","lucene_version":"8.7.0"},"tagline":"You Know, for Search"}"#;
    const ES_7_10_DEFAULT: &str = r#"{"version":{"number":"7.10.2","build_flavor":"default"},"tagline":"You Know, for Search"}"#;
    const ES_7_11: &str = r#"{"version":{"number":"7.11.1","build_flavor":"default"},"tagline":"You Know, for Search"}"#;
    const NO_TAGLINE: &str = r#"{"version":{"number":"8.1.0"}}"#;

    #[test]
    fn opensearch_2() {
        let i = detect(OS_2.as_bytes(), None, None).unwrap();
        assert_eq!(i.flavor, Flavor::Opensearch);
        assert_eq!(i.version, Version::new(2, 19, 0));
        assert!(!i.compatibility_mode);
        assert_eq!(i.cluster_name.as_deref(), Some("docker-cluster"));
        assert_eq!(
            i.capabilities,
            Capabilities {
                pit: true,
                shard_doc: false,
                pit_slicing: true,
                scroll: true
            }
        );
    }

    #[test]
    fn opensearch_compatibility_mode_is_not_elasticsearch_7() {
        let i = detect(OS_COMPAT.as_bytes(), None, None).unwrap();
        assert_eq!(i.flavor, Flavor::Opensearch);
        assert!(i.compatibility_mode);
        assert_eq!(i.version_number, "7.10.2");
        assert_eq!(i.version.major, 2);
        assert!(i.capabilities.pit);
        assert!(!i.capabilities.shard_doc);

        let old = detect(OS_COMPAT_1X.as_bytes(), None, None).unwrap();
        assert_eq!(old.flavor, Flavor::Opensearch);
        assert_eq!(old.version.major, 1);
        assert!(!old.capabilities.pit, "OpenSearch 1.x has no PIT");
    }

    #[test]
    fn opensearch_3_3_has_shard_doc() {
        let i = detect(OS_3_3.as_bytes(), None, None).unwrap();
        assert_eq!(i.version, Version::new(3, 3, 0));
        assert!(i.capabilities.pit && i.capabilities.shard_doc);
        let i = detect(OS_3_2.as_bytes(), None, None).unwrap();
        assert!(i.capabilities.pit && !i.capabilities.shard_doc);
        let i = detect(OS_2_3.as_bytes(), None, None).unwrap();
        assert!(!i.capabilities.pit, "PIT arrived in OpenSearch 2.4");
    }

    #[test]
    fn elasticsearch_8() {
        let i = detect(ES_8.as_bytes(), Some("Elasticsearch"), None).unwrap();
        assert_eq!(i.flavor, Flavor::Elasticsearch);
        assert_eq!(i.version, Version::new(8, 15, 0));
        assert_eq!(i.build_flavor.as_deref(), Some("default"));
        assert!(i.capabilities.pit && i.capabilities.shard_doc && i.capabilities.pit_slicing);
    }

    #[test]
    fn elasticsearch_7_10_oss_has_no_pit() {
        let i = detect(ES_7_10_OSS.as_bytes(), None, None).unwrap();
        assert_eq!(i.flavor, Flavor::Elasticsearch);
        assert_eq!(i.version, Version::new(7, 10, 2));
        assert!(!i.capabilities.pit && !i.capabilities.shard_doc);
        assert!(i.capabilities.scroll);
        let i = detect(ES_7_10_DEFAULT.as_bytes(), None, None).unwrap();
        assert!(i.capabilities.pit && !i.capabilities.shard_doc);
        let i = detect(ES_7_11.as_bytes(), None, None).unwrap();
        assert!(!i.capabilities.shard_doc, "_shard_doc arrived in 7.12");
    }

    #[test]
    fn header_or_override_decides_when_tagline_is_missing() {
        assert_eq!(
            detect(NO_TAGLINE.as_bytes(), None, None).unwrap_err(),
            DetectError::UnknownFlavor
        );
        let i = detect(NO_TAGLINE.as_bytes(), Some("Elasticsearch"), None).unwrap();
        assert_eq!(i.flavor, Flavor::Elasticsearch);
        let i = detect(NO_TAGLINE.as_bytes(), None, Some(Flavor::Elasticsearch)).unwrap();
        assert_eq!(i.flavor, Flavor::Elasticsearch);
        // An override wins over detection.
        let i = detect(OS_2.as_bytes(), None, Some(Flavor::Elasticsearch)).unwrap();
        assert_eq!(i.flavor, Flavor::Elasticsearch);
    }

    #[test]
    fn bad_bodies() {
        assert!(matches!(
            detect(b"Unauthorized", None, None),
            Err(DetectError::NotJson(_))
        ));
        assert_eq!(
            detect(b"{}", None, None).unwrap_err(),
            DetectError::NoVersion
        );
        assert!(matches!(
            detect(
                br#"{"version":{"number":"x.y"},"tagline":"You Know, for Search"}"#,
                None,
                None
            ),
            Err(DetectError::BadVersion(_))
        ));
    }

    #[test]
    fn version_parse() {
        assert_eq!(
            Version::parse("8.15.0-SNAPSHOT"),
            Some(Version::new(8, 15, 0))
        );
        assert_eq!(Version::parse("3.3"), Some(Version::new(3, 3, 0)));
        assert_eq!(Version::parse("abc"), None);
    }
}
