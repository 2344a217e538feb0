//! Signing checks: the published AWS examples, a cross-check against the independent
//! `aws-sigv4` crate on randomized requests, and sign → verify round trips.

use chrono::{DateTime, TimeZone, Utc};
use http::{HeaderMap, HeaderName, HeaderValue, Method, Uri};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use spillway_sigv4::{
    Credentials, Payload, VerifyError, compute_signature, sign, uri_encode, verify,
};

const EXAMPLE_SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";

fn t_2015() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2015, 8, 30, 12, 36, 0).unwrap()
}

fn example_creds() -> Credentials {
    Credentials::new("AKIDEXAMPLE", EXAMPLE_SECRET, None)
}

fn empty_hash() -> String {
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855".into()
}

#[test]
fn aws_iam_list_users_example() {
    // "Signature Version 4 signing process" example: IAM ListUsers.
    let uri: Uri = "https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08"
        .parse()
        .unwrap();
    let mut h = HeaderMap::new();
    h.insert(
        "content-type",
        HeaderValue::from_static("application/x-www-form-urlencoded; charset=utf-8"),
    );
    h.insert("host", HeaderValue::from_static("iam.amazonaws.com"));
    h.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
    let (signed, sig) = compute_signature(
        &Method::GET,
        &uri,
        &h,
        &empty_hash(),
        &example_creds(),
        "us-east-1",
        "iam",
        t_2015(),
    )
    .unwrap();
    assert_eq!(signed, "content-type;host;x-amz-date");
    assert_eq!(
        sig,
        "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7"
    );
}

#[test]
fn aws_suite_get_vanilla() {
    let uri: Uri = "https://example.amazonaws.com/".parse().unwrap();
    let mut h = HeaderMap::new();
    h.insert("host", HeaderValue::from_static("example.amazonaws.com"));
    h.insert("x-amz-date", HeaderValue::from_static("20150830T123600Z"));
    let (signed, sig) = compute_signature(
        &Method::GET,
        &uri,
        &h,
        &empty_hash(),
        &example_creds(),
        "us-east-1",
        "service",
        t_2015(),
    )
    .unwrap();
    assert_eq!(signed, "host;x-amz-date");
    assert_eq!(
        sig,
        "5fa00fa31553b73ebf1942676e86291e8372ff2a2260956d9b8aae1d763fbf31"
    );
}

#[test]
fn sign_adds_the_headers() {
    let uri: Uri = "https://search-x.eu-west-1.es.amazonaws.com:443/logs/_search?size=1"
        .parse()
        .unwrap();
    let mut h = HeaderMap::new();
    let creds = Credentials::new("AKID", "SECRET", Some("TOKEN".into()));
    sign(
        &Method::POST,
        &uri,
        &mut h,
        Payload::Bytes(b"{}"),
        &creds,
        "eu-west-1",
        "es",
        t_2015(),
    )
    .unwrap();
    assert_eq!(h["host"], "search-x.eu-west-1.es.amazonaws.com");
    assert_eq!(h["x-amz-date"], "20150830T123600Z");
    assert_eq!(h["x-amz-security-token"], "TOKEN");
    assert_eq!(
        h["x-amz-content-sha256"],
        "44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"
    );
    let auth = h["authorization"].to_str().unwrap();
    assert!(auth.starts_with(
        "AWS4-HMAC-SHA256 Credential=AKID/20150830/eu-west-1/es/aws4_request, SignedHeaders=host;x-amz-content-sha256;x-amz-date;x-amz-security-token, Signature="
    ));
    // The header values are marked sensitive so `Debug` output of the map hides them.
    assert!(!format!("{h:?}").contains("TOKEN"));
}

// ---------------------------------------------------------------------------------------
// Cross-check against the aws-sigv4 crate.

fn random_segment(rng: &mut StdRng) -> String {
    const PIECES: &[&str] = &[
        "a", "logs", "b c", "é", "日本", "%", "+", "=", "~", "-_.", "x!y", "_doc", "q&r", "(1)",
        "*", "'", "A", "9",
    ];
    let n = rng.random_range(1..4);
    (0..n)
        .map(|_| PIECES[rng.random_range(0..PIECES.len())])
        .collect()
}

fn random_path(rng: &mut StdRng, service: &str) -> String {
    let n = rng.random_range(0..4);
    let mut p = String::new();
    for _ in 0..n {
        p.push('/');
        if rng.random_bool(0.25) {
            // Characters legal in a path without encoding.
            const RAW: &[&str] = &["a+b", "*", "!", "(x)", "'", "a:b", "@", "$", "=&;,"];
            p.push_str(RAW[rng.random_range(0..RAW.len())]);
        } else {
            p.push_str(&uri_encode(&random_segment(rng), false));
        }
    }
    if service != "s3" && rng.random_bool(0.1) {
        p.push_str("/./x/../y");
    }
    if p.is_empty() || rng.random_bool(0.2) {
        p.push('/');
    }
    p
}

fn random_query(rng: &mut StdRng) -> String {
    const KEYS: &[&str] = &["a", "b", "list-type", "prefix", "", "uploads", "k e", "ü"];
    const VALS: &[&str] = &["", "1", "x y", "a/b", "é", "%", "2", "~", "a+b"];
    let n = rng.random_range(0..5);
    let mut parts = Vec::new();
    for _ in 0..n {
        let k = uri_encode(KEYS[rng.random_range(0..KEYS.len())], false);
        // Raw (not percent-encoded) characters that are legal in a query: `+` means space.
        const RAW: &[&str] = &["a+b", "*", "!", "(x)", "'", "+", "a:b", "@"];
        match rng.random_range(0..4) {
            0 => parts.push(k),
            1 => parts.push(format!("{k}={}", RAW[rng.random_range(0..RAW.len())])),
            _ => parts.push(format!(
                "{k}={}",
                uri_encode(VALS[rng.random_range(0..VALS.len())], false)
            )),
        }
    }
    parts.join("&")
}

fn random_headers(rng: &mut StdRng) -> Vec<(&'static str, String)> {
    const NAMES: &[&str] = &[
        "content-type",
        "x-amz-meta-a",
        "x-custom",
        "if-none-match",
        "user-agent",
        "x-amzn-trace-id",
        "accept",
    ];
    const VALUES: &[&str] = &[
        "application/json",
        "  padded  ",
        "a   b    c",
        "*",
        "t\tab",
        "x,y",
        "",
    ];
    let n = rng.random_range(0..5);
    (0..n)
        .map(|_| {
            (
                NAMES[rng.random_range(0..NAMES.len())],
                VALUES[rng.random_range(0..VALUES.len())].to_string(),
            )
        })
        .collect()
}

#[allow(clippy::too_many_arguments)]
fn aws_signature(
    method: &str,
    uri: &str,
    headers: &[(&'static str, String)],
    body: &[u8],
    creds: &Credentials,
    region: &str,
    service: &str,
    now: DateTime<Utc>,
) -> String {
    use aws_sigv4::http_request::{
        PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
        UriPathNormalizationMode,
    };
    let identity = aws_credential_types::Credentials::new(
        creds.access_key_id.clone(),
        creds.secret_access_key.clone(),
        creds.session_token.clone(),
        None,
        "test",
    )
    .into();
    let mut settings = SigningSettings::default();
    settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
    if service == "s3" {
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
    }
    let params = aws_sigv4::sign::v4::SigningParams::builder()
        .identity(&identity)
        .region(region)
        .name(service)
        .time(now.into())
        .settings(settings)
        .build()
        .unwrap()
        .into();
    let req = SignableRequest::new(
        method,
        uri,
        headers.iter().map(|(k, v)| (*k, v.as_str())),
        SignableBody::Bytes(body),
    )
    .unwrap();
    let out = aws_sigv4::http_request::sign(req, &params).unwrap();
    out.signature().to_string()
}

#[test]
fn matches_the_aws_sigv4_crate_on_random_requests() {
    let mut rng = StdRng::seed_from_u64(0x5157_4f34);
    let methods = [
        Method::GET,
        Method::PUT,
        Method::POST,
        Method::DELETE,
        Method::HEAD,
    ];
    let services = ["es", "aoss", "s3"];
    for i in 0..400 {
        let service = services[i % services.len()];
        let method = methods[rng.random_range(0..methods.len())].clone();
        let path = random_path(&mut rng, service);
        let query = random_query(&mut rng);
        let port = if rng.random_bool(0.3) { ":9200" } else { "" };
        let uri_s = if query.is_empty() {
            format!("https://host.example.com{port}{path}")
        } else {
            format!("https://host.example.com{port}{path}?{query}")
        };
        let uri: Uri = uri_s.parse().unwrap();
        let headers = random_headers(&mut rng);
        let body: Vec<u8> = (0..rng.random_range(0..64)).map(|_| rng.random()).collect();
        let token = rng
            .random_bool(0.3)
            .then(|| format!("tok{}", rng.random::<u32>()));
        let creds = Credentials::new("AKIDRANDOM", format!("secret/{i}+x"), token);
        let now = Utc
            .timestamp_opt(1_600_000_000 + rng.random_range(0..300_000_000), 0)
            .unwrap();
        let mut h = HeaderMap::new();
        for (k, v) in &headers {
            h.append(
                HeaderName::from_static(k),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        sign(
            &method,
            &uri,
            &mut h,
            Payload::Bytes(&body),
            &creds,
            "eu-west-1",
            service,
            now,
        )
        .unwrap();
        let ours = h["authorization"].to_str().unwrap();
        let ours = ours.rsplit_once("Signature=").unwrap().1.to_string();
        let theirs = aws_signature(
            method.as_str(),
            &uri_s,
            &headers,
            &body,
            &creds,
            "eu-west-1",
            service,
            now,
        );
        assert_eq!(
            ours, theirs,
            "request {i}: {method} {uri_s} headers {headers:?} service {service}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Round trips through verify.

fn signed_request() -> (Method, Uri, HeaderMap, Vec<u8>, DateTime<Utc>) {
    let uri: Uri = "http://127.0.0.1:9200/logs-2024/_search?size=10&q=a%20b"
        .parse()
        .unwrap();
    let body = br#"{"query":{"match_all":{}}}"#.to_vec();
    let mut h = HeaderMap::new();
    h.insert("content-type", HeaderValue::from_static("application/json"));
    let now = Utc.with_ymd_and_hms(2024, 3, 15, 7, 0, 0).unwrap();
    let creds = Credentials::new("AKIDTEST", "SKTEST", Some("session".into()));
    sign(
        &Method::POST,
        &uri,
        &mut h,
        Payload::Bytes(&body),
        &creds,
        "us-east-1",
        "es",
        now,
    )
    .unwrap();
    (Method::POST, uri, h, body, now)
}

fn lookup(id: &str) -> Option<String> {
    (id == "AKIDTEST").then(|| "SKTEST".to_string())
}

#[test]
fn verify_accepts_what_sign_produces() {
    let (m, u, h, b, now) = signed_request();
    let id = verify(&m, &u, &h, &b, lookup, now, chrono::Duration::minutes(5)).unwrap();
    assert_eq!(id.access_key_id, "AKIDTEST");
    assert_eq!(id.service, "es");
    assert_eq!(id.region, "us-east-1");
    assert_eq!(id.session_token.as_deref(), Some("session"));
}

#[test]
fn verify_rejects_tampering() {
    let skew = chrono::Duration::minutes(5);
    let (m, u, h, b, now) = signed_request();

    let mut body = b.clone();
    body[3] ^= 1;
    assert_eq!(
        verify(&m, &u, &h, &body, lookup, now, skew),
        Err(VerifyError::ContentHashMismatch)
    );

    let mut h2 = h.clone();
    h2.insert("content-type", HeaderValue::from_static("text/plain"));
    assert_eq!(
        verify(&m, &u, &h2, &b, lookup, now, skew),
        Err(VerifyError::SignatureDoesNotMatch)
    );

    let u2: Uri = "http://127.0.0.1:9200/logs-2024/_search?size=11&q=a%20b"
        .parse()
        .unwrap();
    assert_eq!(
        verify(&m, &u2, &h, &b, lookup, now, skew),
        Err(VerifyError::SignatureDoesNotMatch)
    );

    assert_eq!(
        verify(&Method::PUT, &u, &h, &b, lookup, now, skew),
        Err(VerifyError::SignatureDoesNotMatch)
    );

    let wrong = |id: &str| (id == "AKIDTEST").then(|| "WRONG".to_string());
    assert_eq!(
        verify(&m, &u, &h, &b, wrong, now, skew),
        Err(VerifyError::SignatureDoesNotMatch)
    );

    assert!(matches!(
        verify(&m, &u, &h, &b, |_| None, now, skew),
        Err(VerifyError::UnknownAccessKey(_))
    ));

    assert!(matches!(
        verify(
            &m,
            &u,
            &h,
            &b,
            lookup,
            now + chrono::Duration::minutes(16),
            skew
        ),
        Err(VerifyError::Skewed { .. })
    ));

    let mut h3 = h.clone();
    h3.remove("authorization");
    assert_eq!(
        verify(&m, &u, &h3, &b, lookup, now, skew),
        Err(VerifyError::MissingAuthorization)
    );
}

#[test]
fn verify_accepts_unsigned_payload() {
    let uri: Uri = "http://127.0.0.1:8333/bucket/key%20with%20space"
        .parse()
        .unwrap();
    let mut h = HeaderMap::new();
    let now = Utc::now();
    let creds = Credentials::new("AKIDTEST", "SKTEST", None);
    sign(
        &Method::PUT,
        &uri,
        &mut h,
        Payload::Unsigned,
        &creds,
        "us-east-1",
        "s3",
        now,
    )
    .unwrap();
    verify(
        &Method::PUT,
        &uri,
        &h,
        b"anything",
        lookup,
        now,
        chrono::Duration::minutes(5),
    )
    .unwrap();
}
