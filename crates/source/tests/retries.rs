//! Retry and error behaviour against a scripted raw HTTP server: timeouts, bodies cut off
//! mid-response, 5xx, transient and permanent circuit breakers, exhausted retries, shard
//! failures inside a 200, and what the reader sends on the wire (PIT id rotation,
//! `search_after` echo, `track_total_hits` only on the first page).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use spillway_source::{
    Client, RetryPolicy, RetryReason, ShardRequest, Snapshot, SnapshotKind, SourceConfig,
    SourceError, Target,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const OS_MAIN: &str = r#"{"name":"n","cluster_name":"c","version":{"distribution":"opensearch","number":"2.19.0","lucene_version":"9.12.1"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
const ES_MAIN: &str = r#"{"name":"n","cluster_name":"c","version":{"number":"8.15.0","build_flavor":"default","lucene_version":"9.11.1"},"tagline":"You Know, for Search"}"#;

enum Reply {
    Json(u16, String),
    Slow(Duration, u16, String),
    /// Declares `Content-Length` of the whole body but sends only `sent` bytes, then closes.
    Cut(u16, String, usize),
}

type Seen = Arc<Mutex<Vec<(String, String, String)>>>;

struct Stub {
    url: String,
    seen: Seen,
    count: Arc<AtomicUsize>,
}

/// Serves each request with `script(n, method, path, body)`; `n` counts requests from 0.
async fn stub<F>(script: F) -> Stub
where
    F: Fn(usize, &str, &str, &str) -> Reply + Send + Sync + 'static,
{
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let seen: Seen = Arc::default();
    let count = Arc::new(AtomicUsize::new(0));
    let script = Arc::new(script);
    let (seen2, count2) = (seen.clone(), count.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (seen, count, script) = (seen2.clone(), count2.clone(), script.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                let head_end = loop {
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    if let Some(p) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        break p + 4;
                    }
                };
                let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
                let len: usize = head
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse().ok())?
                    })
                    .unwrap_or(0);
                while buf.len() < head_end + len {
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                }
                let body = String::from_utf8_lossy(&buf[head_end..head_end + len]).to_string();
                let mut first = head.lines().next().unwrap_or("").split(' ');
                let method = first.next().unwrap_or("").to_string();
                let path = first.next().unwrap_or("").to_string();
                let n = count.fetch_add(1, Ordering::SeqCst);
                seen.lock()
                    .unwrap()
                    .push((method.clone(), path.clone(), body.clone()));
                let reply = script(n, &method, &path, &body);
                let (status, text, sent) = match reply {
                    Reply::Json(s, b) => {
                        let l = b.len();
                        (s, b, l)
                    }
                    Reply::Slow(d, s, b) => {
                        tokio::time::sleep(d).await;
                        let l = b.len();
                        (s, b, l)
                    }
                    Reply::Cut(s, b, sent) => (s, b, sent),
                };
                let head = format!(
                    "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    text.len()
                );
                let _ = sock.write_all(head.as_bytes()).await;
                let _ = sock.write_all(&text.as_bytes()[..sent]).await;
                let _ = sock.flush().await;
            });
        }
    });
    Stub { url, seen, count }
}

fn config(url: &str) -> SourceConfig {
    let mut c = SourceConfig::new(url);
    c.retry = RetryPolicy {
        max_retries: 4,
        initial_backoff: Duration::from_millis(1),
        max_backoff: Duration::from_millis(10),
    };
    c.request_timeout = Duration::from_millis(300);
    c
}

fn hits(total: Option<u64>, ids: &[(&str, Value)], pit: Option<&str>) -> String {
    let hits: Vec<Value> = ids
        .iter()
        .map(|(id, sort)| json!({"_index":"i","_id":id,"_score":null,"_source":{"id":id},"sort":sort}))
        .collect();
    let mut h = json!({"max_score": null, "hits": hits});
    if let Some(t) = total {
        h["total"] = json!({"value": t, "relation": "eq"});
    }
    let mut v = serde_json::Map::new();
    if let Some(p) = pit {
        v.insert("pit_id".into(), json!(p));
    }
    v.insert("took".into(), json!(1));
    v.insert("timed_out".into(), json!(false));
    v.insert(
        "_shards".into(),
        json!({"total":1,"successful":1,"skipped":0,"failed":0}),
    );
    v.insert("hits".into(), h);
    Value::Object(v).to_string()
}

fn count_body(n: u64) -> String {
    hits(Some(n), &[], None)
}

fn is_main(path: &str) -> bool {
    path == "/"
}

fn req(target: Target, page_size: u32) -> ShardRequest {
    ShardRequest {
        target,
        query: json!({"match_all": {}}),
        time_field: None,
        window: None,
        slice: None,
        page_size,
        source_includes: vec![],
        source_excludes: vec![],
        tiebreaker_field: None,
        index: None,
    }
}

#[tokio::test]
async fn timeouts_are_retried_and_counted() {
    let s = stub(|n, _, path, _| {
        if is_main(path) {
            Reply::Json(200, OS_MAIN.into())
        } else if n <= 2 {
            Reply::Slow(Duration::from_secs(3), 200, count_body(1))
        } else {
            Reply::Json(200, count_body(5))
        }
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let n = c
        .count(&Target::Indices(vec!["i".into()]), &json!({}))
        .await
        .unwrap();
    assert_eq!(n, 5);
    assert_eq!(c.stats().retries(RetryReason::Timeout), 2);
    assert_eq!(c.stats().requests(), 4);
}

#[tokio::test]
async fn cut_off_and_invalid_bodies_are_retried_as_connection_failures() {
    let s = stub(|n, _, path, _| {
        if is_main(path) {
            return Reply::Json(200, OS_MAIN.into());
        }
        let body = count_body(9);
        match n {
            // Connection closed before the declared length.
            1 => Reply::Cut(200, body.clone(), body.len() / 2),
            // Complete HTTP response, but the JSON itself is cut.
            2 => Reply::Json(200, body[..body.len() - 3].to_string()),
            _ => Reply::Json(200, body),
        }
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let n = c
        .count(&Target::Indices(vec!["i".into()]), &json!({}))
        .await
        .unwrap();
    assert_eq!(n, 9);
    assert_eq!(c.stats().retries(RetryReason::Connection), 2);
}

#[tokio::test]
async fn gateway_errors_and_transient_breakers_are_retried() {
    let breaker = |d: &str| {
        json!({"error":{"root_cause":[{"type":"circuit_breaking_exception","reason":"[parent] Data too large","bytes_wanted":10,"bytes_limit":5,"durability":d}],
            "type":"circuit_breaking_exception","reason":"[parent] Data too large","bytes_wanted":10,"bytes_limit":5,"durability":d},"status":429}).to_string()
    };
    let s = stub(move |n, _, path, _| {
        if is_main(path) {
            return Reply::Json(200, OS_MAIN.into());
        }
        match n {
            1 => Reply::Json(504, "<html>gateway timeout</html>".into()),
            2 => Reply::Json(502, "".into()),
            3 => Reply::Json(429, breaker("TRANSIENT")),
            4 => Reply::Json(
                500,
                r#"{"error":{"type":"x","reason":"boom"},"status":500}"#.into(),
            ),
            5 => Reply::Json(200, count_body(3)),
            _ => Reply::Json(429, breaker("PERMANENT")),
        }
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let t = Target::Indices(vec!["i".into()]);
    assert_eq!(c.count(&t, &json!({})).await.unwrap(), 3);
    let st = c.stats().snapshot();
    assert_eq!(st.retries_unavailable_5xx, 3, "{st:?}");
    assert_eq!(st.retries_breaker, 1, "{st:?}");
    assert_eq!(st.total_retries(), 4);

    let before = c.stats().requests();
    let err = c.count(&t, &json!({})).await.unwrap_err();
    assert!(
        matches!(err, SourceError::CircuitBreakerPermanent { .. }),
        "{err}"
    );
    assert!(err.to_string().contains("reduce pageSize"), "{err}");
    assert_eq!(
        c.stats().requests(),
        before + 1,
        "a permanent breaker is not retried"
    );
}

#[tokio::test]
async fn exhausted_retries_say_what_happened() {
    let s = stub(|_, _, path, _| {
        if is_main(path) {
            return Reply::Json(200, OS_MAIN.into());
        }
        Reply::Json(
            429,
            json!({"error":{"root_cause":[{"type":"rejected_execution_exception","reason":"rejected execution of search"}],
                "type":"search_phase_execution_exception","reason":"all shards failed"},"status":429})
            .to_string(),
        )
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let err = c
        .count(&Target::Indices(vec!["i".into()]), &json!({}))
        .await
        .unwrap_err();
    match &err {
        SourceError::Overloaded {
            attempts, reason, ..
        } => {
            assert_eq!(*attempts, 5);
            assert_eq!(*reason, "rejected");
        }
        other => panic!("{other}"),
    }
    assert!(err.is_retryable());
    assert_eq!(c.stats().retries(RetryReason::Rejected), 4);
    assert_eq!(s.count.load(Ordering::SeqCst), 6);
}

#[tokio::test]
async fn bad_request_reason_is_verbatim_and_not_retried() {
    let s = stub(|_, _, path, _| {
        if is_main(path) {
            return Reply::Json(200, OS_MAIN.into());
        }
        Reply::Json(
            400,
            r#"{"error":{"root_cause":[{"type":"parsing_exception","reason":"[match_all] malformed query, expected [END_OBJECT] but found [FIELD_NAME]","line":1,"col":26}],"type":"parsing_exception","reason":"[match_all] malformed query, expected [END_OBJECT] but found [FIELD_NAME]","line":1,"col":26},"status":400}"#.into(),
        )
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let err = c
        .count(
            &Target::Indices(vec!["i".into()]),
            &json!({"match_all": {}, "x": 1}),
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string().ends_with(
            ": [match_all] malformed query, expected [END_OBJECT] but found [FIELD_NAME]"
        ),
        "{err}"
    );
    assert_eq!(s.count.load(Ordering::SeqCst), 2);
}

fn pit(id: &str) -> Target {
    Target::Snapshot(Snapshot {
        id: id.into(),
        keep_alive: "2m".into(),
        kind: SnapshotKind::Pit,
        indices: vec!["i".into()],
    })
}

#[tokio::test]
async fn reader_follows_rotated_pit_ids_and_echoes_sort_values() {
    // Elasticsearch: `_shard_doc` values are longs > 2^32; the PIT id changes on page 2.
    let s = stub(|n, _, path, _| {
        if is_main(path) {
            return Reply::Json(200, ES_MAIN.into());
        }
        match n {
            1 => Reply::Json(
                200,
                hits(
                    Some(5),
                    &[("a", json!([4294967296u64])), ("b", json!([4294967297u64]))],
                    Some("pit-1"),
                ),
            ),
            2 => Reply::Json(
                200,
                hits(
                    None,
                    &[
                        ("c", json!([8589934592u64])),
                        ("d\"q", json!([8589934593u64])),
                    ],
                    Some("pit-2"),
                ),
            ),
            3 => Reply::Json(
                200,
                hits(None, &[("e", json!([8589934599u64]))], Some("pit-2")),
            ),
            _ => panic!("no request expected after the count is reached"),
        }
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let mut r = c.read_shard(req(pit("pit-1"), 2));
    let mut ids = Vec::new();
    while let Some(p) = r.next_page().await.unwrap() {
        ids.extend(p.docs().map(|d| d.id.to_string()));
    }
    assert_eq!(ids, ["a", "b", "c", "d\"q", "e"]);
    assert_eq!(r.expected(), Some(5));
    assert_eq!(r.exported(), 5);
    assert_eq!(r.snapshot_id(), Some("pit-2"));

    let seen = s.seen.lock().unwrap().clone();
    let bodies: Vec<Value> = seen[1..]
        .iter()
        .map(|(m, p, b)| {
            assert_eq!(
                (m.as_str(), p.as_str()),
                ("POST", "/_search"),
                "no index with a PIT"
            );
            serde_json::from_str(b).unwrap()
        })
        .collect();
    assert_eq!(bodies.len(), 3);
    assert_eq!(bodies[0]["pit"], json!({"id": "pit-1", "keep_alive": "2m"}));
    assert_eq!(bodies[0]["track_total_hits"], json!(true));
    assert!(bodies[0].get("search_after").is_none());
    assert_eq!(bodies[0]["sort"], json!([{"_shard_doc": "asc"}]));
    assert_eq!(bodies[0]["size"], json!(2));
    assert_eq!(bodies[1]["pit"]["id"], json!("pit-1"));
    assert_eq!(bodies[1]["search_after"], json!([4294967297u64]));
    assert_eq!(bodies[1]["track_total_hits"], json!(false));
    assert_eq!(
        bodies[2]["pit"]["id"],
        json!("pit-2"),
        "the rotated id is used"
    );
    assert_eq!(bodies[2]["search_after"], json!([8589934593u64]));
}

#[tokio::test]
async fn shard_failures_in_a_200_are_retried_or_reported() {
    let failed = |ty: &str| {
        json!({"took":1,"timed_out":false,"_shards":{"total":2,"successful":1,"skipped":0,"failed":1,
            "failures":[{"shard":0,"index":"i","node":"n","reason":{"type":ty,"reason":"shard trouble"}}]},
            "hits":{"total":{"value":1,"relation":"eq"},"hits":[]}})
        .to_string()
    };
    let s = stub(move |n, _, path, _| {
        if is_main(path) {
            return Reply::Json(200, OS_MAIN.into());
        }
        match n {
            1 => Reply::Json(200, failed("rejected_execution_exception")),
            2 => Reply::Json(200, hits(Some(1), &[("a", json!(["a"]))], Some("p"))),
            3 => Reply::Json(200, failed("query_shard_exception")),
            _ => Reply::Json(200, hits(None, &[], Some("p"))),
        }
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let mut r = c.read_shard(req(pit("p"), 10));
    assert_eq!(r.next_page().await.unwrap().unwrap().len(), 1);
    assert_eq!(c.stats().retries(RetryReason::Rejected), 1);
    assert!(r.next_page().await.unwrap().is_none(), "count reached");

    let mut r = c.read_shard(req(pit("p"), 10));
    let err = r.next_page().await.unwrap_err();
    assert!(err.to_string().contains("shard trouble"), "{err}");
}

#[tokio::test]
async fn short_pages_do_not_end_paging() {
    let s = stub(|n, _, path, _| {
        if is_main(path) {
            return Reply::Json(200, OS_MAIN.into());
        }
        match n {
            1 => Reply::Json(200, hits(Some(6), &[("a", json!(["a"]))], Some("p"))),
            2 => Reply::Json(
                200,
                hits(None, &[("b", json!(["b"])), ("c", json!(["c"]))], Some("p")),
            ),
            3 => Reply::Json(
                200,
                hits(
                    None,
                    &[
                        ("d", json!(["d"])),
                        ("e", json!(["e"])),
                        ("f", json!(["f"])),
                    ],
                    Some("p"),
                ),
            ),
            _ => panic!("no request expected after the count is reached"),
        }
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let mut r = c.read_shard(req(pit("p"), 3));
    let mut sizes = Vec::new();
    while let Some(p) = r.next_page().await.unwrap() {
        sizes.push(p.len());
    }
    assert_eq!(sizes, [1, 2, 3]);
    assert_eq!(r.exported(), 6);
    let seen = s.seen.lock().unwrap().clone();
    let last: Value = serde_json::from_str(&seen[3].2).unwrap();
    assert_eq!(last["search_after"], json!(["c"]));
}

#[tokio::test]
async fn an_early_empty_page_is_truncation() {
    let s = stub(|n, _, path, _| {
        if is_main(path) {
            return Reply::Json(200, OS_MAIN.into());
        }
        match n {
            1 => Reply::Json(200, hits(Some(3), &[("a", json!(["a"]))], Some("p"))),
            _ => Reply::Json(200, hits(None, &[], Some("p"))),
        }
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let mut r = c.read_shard(req(pit("p"), 1));
    assert!(r.next_page().await.unwrap().is_some());
    let err = r.next_page().await.unwrap_err();
    assert!(
        matches!(
            err,
            SourceError::Truncated {
                expected: 3,
                got: 1
            }
        ),
        "{err}"
    );
    assert!(err.is_retryable());
}

#[tokio::test]
async fn opensearch_compatibility_mode_without_pit_api_falls_back_to_scroll() {
    const COMPAT: &str = r#"{"name":"n","cluster_name":"c","version":{"number":"7.10.2","lucene_version":"9.1.0"},"tagline":"The OpenSearch Project: https://opensearch.org/"}"#;
    let s = stub(|_, method, path, _| {
        if is_main(path) {
            return Reply::Json(200, COMPAT.into());
        }
        if path.contains("point_in_time") {
            return Reply::Json(
                400,
                format!(r#"{{"error":"no handler found for uri [{path}] and method [{method}]","status":400}}"#),
            );
        }
        Reply::Json(404, "{}".into())
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    assert!(c.info().compatibility_mode);
    assert_eq!(c.info().version_number, "7.10.2");
    assert!(
        c.info().capabilities.pit,
        "a Lucene 9 OpenSearch is tried with PIT first"
    );
    let snap = c.open_snapshot(&["i".into()], "1m").await.unwrap();
    assert_eq!(snap.kind, SnapshotKind::None);
    let seen = s.seen.lock().unwrap().clone();
    assert_eq!(seen[1].1, "/i/_search/point_in_time?keep_alive=1m");
}

#[tokio::test]
async fn readers_and_their_futures_are_send() {
    fn assert_send<T: Send>(_: &T) {}
    let s = stub(|_, _, path, _| {
        if is_main(path) {
            return Reply::Json(200, OS_MAIN.into());
        }
        Reply::Json(200, hits(Some(0), &[], Some("p")))
    })
    .await;
    let c = Client::connect(config(&s.url)).await.unwrap();
    let mut r = c.read_shard(req(pit("p"), 10));
    assert_send(&r);
    {
        let f = r.next_page();
        assert_send(&f);
        assert!(f.await.unwrap().is_none(), "an empty shard ends at once");
    }
    assert_eq!(r.expected(), Some(0));
    let t = Target::Indices(vec!["i".into()]);
    let q = json!({});
    let f = c.count(&t, &q);
    assert_send(&f);
    assert_eq!(f.await.unwrap(), 0);
    let stream = c.read_shard(req(pit("p"), 10)).into_stream();
    assert_send(&stream);
    use futures::StreamExt;
    assert_eq!(stream.count().await, 0);
}
