//! Engine behaviour over real HTTP: snapshot isolation, PIT paging across shards, slices,
//! `_shard_doc` rules per flavor and version, the Elasticsearch implicit tiebreaker, scroll,
//! bulk item errors, aggregations, auth and TLS.

use std::collections::HashSet;

use searchsim::{Config, RunningSim, SearchSim};
use serde_json::{Value, json};

mod common;
use common::{call, client};

async fn start(config: Config) -> RunningSim {
    SearchSim::start(config.with_refresh_interval(None))
        .await
        .expect("start searchsim")
}

async fn bulk(c: &reqwest::Client, sim: &RunningSim, index: &str, docs: &[(String, Value)]) {
    let mut nd = String::new();
    for (id, d) in docs {
        nd.push_str(&json!({"index": {"_index": index, "_id": id}}).to_string());
        nd.push('\n');
        nd.push_str(&d.to_string());
        nd.push('\n');
    }
    let resp = c
        .post(format!("{}/_bulk?refresh=true", sim.url()))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap();
    let v: Value = resp.json().await.unwrap();
    assert_eq!(v["errors"], json!(false), "{v}");
}

fn ids(v: &Value) -> Vec<String> {
    v["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap().to_string())
        .collect()
}

#[tokio::test]
async fn snapshot_isolation_pit_sees_open_time_state() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    call(
        &c,
        &sim,
        "PUT",
        "/snap",
        Some(json!({"settings": {"number_of_shards": 2}})),
    )
    .await;
    bulk(
        &c,
        &sim,
        "snap",
        &[("1".into(), json!({"v": 1})), ("2".into(), json!({"v": 2}))],
    )
    .await;
    let (st, pit) = call(
        &c,
        &sim,
        "POST",
        "/snap/_search/point_in_time?keep_alive=1m",
        None,
    )
    .await;
    assert_eq!(st, 200, "{pit}");
    let pit_id = pit["pit_id"].as_str().unwrap().to_string();
    // change everything after opening
    call(
        &c,
        &sim,
        "PUT",
        "/snap/_doc/1?refresh=true",
        Some(json!({"v": 100})),
    )
    .await;
    call(&c, &sim, "DELETE", "/snap/_doc/2?refresh=true", None).await;
    call(
        &c,
        &sim,
        "PUT",
        "/snap/_doc/3?refresh=true",
        Some(json!({"v": 3})),
    )
    .await;
    let (_, r) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(
            json!({"pit": {"id": pit_id, "keep_alive": "1m"}, "sort": [{"v": "asc"}], "size": 10}),
        ),
    )
    .await;
    assert_eq!(ids(&r), vec!["1", "2"], "{r}");
    assert_eq!(r["hits"]["hits"][0]["_source"], json!({"v": 1}));
    assert_eq!(r["pit_id"], json!(pit_id));
    let (_, now) = call(
        &c,
        &sim,
        "POST",
        "/snap/_search",
        Some(json!({"sort": [{"v": "asc"}]})),
    )
    .await;
    assert_eq!(ids(&now), vec!["3", "1"]);
    // writes without refresh stay invisible to plain searches
    call(&c, &sim, "PUT", "/snap/_doc/4", Some(json!({"v": 4}))).await;
    let (_, cnt) = call(&c, &sim, "GET", "/snap/_count", None).await;
    assert_eq!(cnt["count"], json!(2));
    call(&c, &sim, "POST", "/snap/_refresh", None).await;
    let (_, cnt) = call(&c, &sim, "GET", "/snap/_count", None).await;
    assert_eq!(cnt["count"], json!(3));
    sim.shutdown().await;
}

async fn load_numbers(c: &reqwest::Client, sim: &RunningSim, index: &str, shards: u32, n: usize) {
    call(c, sim, "PUT", &format!("/{index}"), Some(json!({"settings": {"number_of_shards": shards}, "mappings": {"properties": {"n": {"type": "long"}, "g": {"type": "keyword"}, "ts": {"type": "date"}}}}))).await;
    let docs: Vec<(String, Value)> = (0..n)
        .map(|i| (format!("d{i}"), json!({"n": i % 97, "g": format!("g{}", i % 5), "ts": 1_709_251_200_000i64 + (i as i64) * 3_600_000})))
        .collect();
    bulk(c, sim, index, &docs).await;
}

#[tokio::test]
async fn pit_search_after_over_three_shards_returns_every_doc_once() {
    let sim = start(Config::opensearch_3()).await;
    let c = client();
    load_numbers(&c, &sim, "nums", 3, 1000).await;
    let (_, pit) = call(
        &c,
        &sim,
        "POST",
        "/nums/_search/point_in_time?keep_alive=5m",
        None,
    )
    .await;
    let pit_id = pit["pit_id"].as_str().unwrap().to_string();
    // non-unique sort + explicit _shard_doc tiebreaker, 77 per page
    let mut seen = Vec::new();
    let mut after: Option<Value> = None;
    let mut prev: Option<Value> = None;
    loop {
        let mut body =
            json!({"pit": {"id": pit_id}, "size": 77, "sort": [{"n": "asc"}, "_shard_doc"]});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let (st, r) = call(&c, &sim, "POST", "/_search", Some(body)).await;
        assert_eq!(st, 200, "{r}");
        let hits = r["hits"]["hits"].as_array().unwrap().clone();
        if hits.is_empty() {
            break;
        }
        assert_eq!(r["hits"]["total"]["value"], json!(1000));
        for h in &hits {
            let s = h["sort"].clone();
            assert_eq!(s.as_array().unwrap().len(), 2);
            if let Some(p) = &prev {
                let a = (p[0].as_i64().unwrap(), p[1].as_i64().unwrap());
                let b = (s[0].as_i64().unwrap(), s[1].as_i64().unwrap());
                assert!(
                    b > a,
                    "sort values must strictly increase: {a:?} then {b:?}"
                );
            }
            prev = Some(s);
            seen.push(h["_id"].as_str().unwrap().to_string());
        }
        after = Some(hits.last().unwrap()["sort"].clone());
    }
    assert_eq!(seen.len(), 1000);
    assert_eq!(seen.iter().collect::<HashSet<_>>().len(), 1000);
    // slices partition the PIT
    let mut union = HashSet::new();
    let mut total = 0;
    for id in 0..4 {
        let (st, r) = call(&c, &sim, "POST", "/_search", Some(json!({"pit": {"id": pit_id}, "size": 1000, "slice": {"id": id, "max": 4}, "sort": ["_shard_doc"]}))).await;
        assert_eq!(st, 200, "{r}");
        for i in ids(&r) {
            total += 1;
            union.insert(i);
        }
    }
    assert_eq!((total, union.len()), (1000, 1000));
    // slice validation
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": pit_id}, "slice": {"id": 0, "max": 1}})),
    )
    .await;
    assert_eq!(st, 400, "{r}");
    assert!(r.to_string().contains("max must be greater than 1"));
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/nums/_search",
        Some(json!({"slice": {"id": 0, "max": 2}})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        r.to_string()
            .contains("cannot be used outside of a scroll context or PIT context"),
        "{r}"
    );
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": pit_id}, "slice": {"id": 0, "max": 1025}})),
    )
    .await;
    assert_eq!(st, 429, "{r}");
    assert_eq!(
        r["error"]["root_cause"][0]["type"],
        json!("rejected_execution_exception")
    );
    assert!(r.to_string().contains("index.max_slices_per_pit"));
    // result window applies to PIT pages
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": pit_id}, "size": 10001})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(r.to_string().contains("Result window is too large"), "{r}");
    // listing and deleting
    let (_, list) = call(&c, &sim, "GET", "/_search/point_in_time/_all", None).await;
    assert_eq!(list["pits"][0]["pit_id"], json!(pit_id));
    assert_eq!(list["pits"][0]["keep_alive"], json!(300_000));
    let (st, del) = call(
        &c,
        &sim,
        "DELETE",
        "/_search/point_in_time",
        Some(json!({"pit_id": [pit_id]})),
    )
    .await;
    assert_eq!(
        (st, del["pits"][0]["successful"].clone()),
        (200, json!(true))
    );
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": pit_id}})),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(
        r["error"]["root_cause"][0]["type"],
        json!("search_context_missing_exception")
    );
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": "garbage!!"}})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(r.to_string().contains("invalid id"));
    sim.shutdown().await;
}

#[tokio::test]
async fn shard_doc_rules_per_flavor_and_version() {
    let c = client();
    // OpenSearch 2.19: no _shard_doc at all
    let sim = start(Config::opensearch()).await;
    load_numbers(&c, &sim, "t", 2, 10).await;
    let (_, pit) = call(
        &c,
        &sim,
        "POST",
        "/t/_search/point_in_time?keep_alive=1m",
        None,
    )
    .await;
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": pit["pit_id"]}, "sort": ["_shard_doc"]})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        r.to_string()
            .contains("No mapping found for [_shard_doc] in order to sort on"),
        "{r}"
    );
    // no implicit tiebreaker on OpenSearch
    let (_, r) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": pit["pit_id"]}, "sort": [{"n": "asc"}]})),
    )
    .await;
    assert_eq!(r["hits"]["hits"][0]["sort"].as_array().unwrap().len(), 1);
    sim.shutdown().await;

    // OpenSearch 3.3: explicit with PIT only
    let sim = start(Config::opensearch_3()).await;
    load_numbers(&c, &sim, "t", 2, 10).await;
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/t/_search",
        Some(json!({"sort": [{"_shard_doc": {}}]})),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(
        r["error"]["type"],
        json!("action_request_validation_exception")
    );
    assert!(
        r["error"]["reason"]
            .as_str()
            .unwrap()
            .contains("_shard_doc is only supported with point-in-time (PIT)")
    );
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/t/_search?scroll=1m",
        Some(json!({"sort": ["_shard_doc"]})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        r.to_string()
            .contains("_shard_doc cannot be used with scroll"),
        "{r}"
    );
    let (_, pit) = call(
        &c,
        &sim,
        "POST",
        "/t/_search/point_in_time?keep_alive=1m",
        None,
    )
    .await;
    let (st, r) = call(&c, &sim, "POST", "/_search", Some(json!({"pit": {"id": pit["pit_id"]}, "sort": ["_shard_doc", {"_shard_doc": {"order": "asc"}}]}))).await;
    assert_eq!(st, 400);
    assert!(
        r.to_string().contains("duplicate _shard_doc sort detected"),
        "{r}"
    );
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/t/_search",
        Some(json!({"pit": {"id": pit["pit_id"]}})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        r.to_string()
            .contains("[indices] cannot be used with point in time"),
        "{r}"
    );
    sim.shutdown().await;

    // Elasticsearch: rejected without PIT
    let sim = start(Config::elasticsearch()).await;
    load_numbers(&c, &sim, "t", 2, 10).await;
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/t/_search",
        Some(json!({"sort": ["_shard_doc"]})),
    )
    .await;
    assert_eq!(st, 400);
    assert!(
        r.to_string()
            .contains("[_shard_doc] sort field cannot be used without [point in time]"),
        "{r}"
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn elasticsearch_adds_implicit_shard_doc_tiebreaker() {
    let sim = start(Config::elasticsearch()).await;
    let c = client();
    load_numbers(&c, &sim, "es", 3, 300).await;
    let (st, pit) = call(&c, &sim, "POST", "/es/_pit?keep_alive=1m", None).await;
    assert_eq!(st, 200, "{pit}");
    let id = pit["id"].as_str().unwrap().to_string();
    let mut after: Option<Value> = None;
    let mut seen = HashSet::new();
    loop {
        let mut body =
            json!({"pit": {"id": id, "keep_alive": "1m"}, "size": 50, "sort": [{"n": "desc"}]});
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let (st, r) = call(&c, &sim, "POST", "/_search", Some(body)).await;
        assert_eq!(st, 200, "{r}");
        let hits = r["hits"]["hits"].as_array().unwrap().clone();
        if hits.is_empty() {
            break;
        }
        for h in &hits {
            assert_eq!(
                h["sort"].as_array().unwrap().len(),
                2,
                "sort + implicit _shard_doc"
            );
            assert!(seen.insert(h["_id"].as_str().unwrap().to_string()));
        }
        after = Some(hits.last().unwrap()["sort"].clone());
    }
    assert_eq!(seen.len(), 300);
    let (st, r) = call(&c, &sim, "DELETE", "/_pit", Some(json!({"id": id}))).await;
    assert_eq!((st, r["num_freed"].clone()), (200, json!(1)));
    let (st, r) = call(&c, &sim, "DELETE", "/_pit", Some(json!({"id": id}))).await;
    assert_eq!((st, r["num_freed"].clone()), (200, json!(0)));
    let (_, info) = call(&c, &sim, "GET", "/", None).await;
    assert_eq!(info["tagline"], json!("You Know, for Search"));
    sim.shutdown().await;
}

#[tokio::test]
async fn aggregations_with_and_without_pit() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    load_numbers(&c, &sim, "agg", 3, 240).await; // 10 days of hourly docs from 2024-03-01
    let body = json!({"size": 0, "track_total_hits": true, "aggs": {
        "per_day": {"date_histogram": {"field": "ts", "calendar_interval": "day", "min_doc_count": 0}},
        "first": {"min": {"field": "ts"}}, "last": {"max": {"field": "ts"}},
        "groups": {"terms": {"field": "g"}}, "c": {"value_count": {"field": "n"}}
    }});
    let (st, r) = call(&c, &sim, "POST", "/agg/_search", Some(body.clone())).await;
    assert_eq!(st, 200, "{r}");
    let buckets = r["aggregations"]["per_day"]["buckets"].as_array().unwrap();
    assert_eq!(buckets.len(), 10);
    assert!(buckets.iter().all(|b| b["doc_count"] == json!(24)));
    assert_eq!(buckets[0]["key"], json!(1_709_251_200_000i64));
    assert_eq!(
        buckets[0]["key_as_string"],
        json!("2024-03-01T00:00:00.000Z")
    );
    assert_eq!(
        r["aggregations"]["first"]["value"],
        json!(1_709_251_200_000.0)
    );
    assert_eq!(
        r["aggregations"]["last"]["value_as_string"],
        json!("2024-03-10T23:00:00.000Z")
    );
    assert_eq!(
        r["aggregations"]["groups"]["buckets"]
            .as_array()
            .unwrap()
            .len(),
        5
    );
    assert_eq!(r["aggregations"]["c"]["value"], json!(240));
    assert_eq!(r["hits"]["hits"].as_array().unwrap().len(), 0);
    let (_, pit) = call(
        &c,
        &sim,
        "POST",
        "/agg/_search/point_in_time?keep_alive=1m",
        None,
    )
    .await;
    let mut pbody = body.clone();
    pbody["pit"] = json!({"id": pit["pit_id"]});
    pbody["query"] = json!({"range": {"ts": {"gte": "2024-03-02", "lt": "2024-03-04"}}});
    let (st, r) = call(&c, &sim, "POST", "/_search", Some(pbody)).await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(r["hits"]["total"]["value"], json!(48));
    assert_eq!(
        r["aggregations"]["per_day"]["buckets"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn scroll_and_sliced_scroll_like_upstream() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    call(
        &c,
        &sim,
        "PUT",
        "/ss",
        Some(json!({"settings": {"number_of_shards": 5, "number_of_routing_shards": 5}})),
    )
    .await;
    for i in 1..=4 {
        call(
            &c,
            &sim,
            "PUT",
            &format!("/ss/_doc/{i}"),
            Some(json!({"foo": i})),
        )
        .await;
    }
    call(&c, &sim, "POST", "/_refresh", None).await;
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/ss/_search?scroll=1m&rest_total_hits_as_int=true&sort=foo",
        Some(json!({"slice": {"id": 0, "max": 2}, "query": {"match_all": {}}})),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    assert_eq!(ids(&r), vec!["2", "3", "4"]);
    assert_eq!(r["hits"]["total"], json!(3));
    let (_, r1) = call(
        &c,
        &sim,
        "POST",
        "/ss/_search?scroll=1m&sort=foo",
        Some(json!({"slice": {"id": 1, "max": 2}})),
    )
    .await;
    assert_eq!(ids(&r1), vec!["1"]);
    // paging through a plain scroll
    let (_, p1) = call(
        &c,
        &sim,
        "POST",
        "/ss/_search?scroll=1m&size=3&sort=foo",
        None,
    )
    .await;
    let sid = p1["_scroll_id"].as_str().unwrap().to_string();
    assert_eq!(ids(&p1), vec!["1", "2", "3"]);
    let (_, p2) = call(
        &c,
        &sim,
        "POST",
        "/_search/scroll",
        Some(json!({"scroll": "1m", "scroll_id": sid})),
    )
    .await;
    assert_eq!(ids(&p2), vec!["4"]);
    let (_, p3) = call(
        &c,
        &sim,
        "POST",
        "/_search/scroll",
        Some(json!({"scroll": "1m", "scroll_id": sid})),
    )
    .await;
    assert!(ids(&p3).is_empty());
    let (st, cl) = call(
        &c,
        &sim,
        "DELETE",
        "/_search/scroll",
        Some(json!({"scroll_id": [sid]})),
    )
    .await;
    assert_eq!((st, cl["num_freed"].clone()), (200, json!(1)));
    let (st, _) = call(
        &c,
        &sim,
        "DELETE",
        "/_search/scroll",
        Some(json!({"scroll_id": [sid]})),
    )
    .await;
    assert_eq!(st, 404);
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/_search/scroll",
        Some(json!({"scroll": "1m", "scroll_id": sid})),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(
        r["error"]["root_cause"][0]["type"],
        json!("search_context_missing_exception")
    );
    let (st, _) = call(
        &c,
        &sim,
        "POST",
        "/ss/_search?scroll=1m",
        Some(json!({"slice": {"id": 0, "max": 1025}})),
    )
    .await;
    assert_eq!(st, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn bulk_items_and_documents() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    let nd = "{\"index\":{\"_index\":\"b\",\"_id\":\"\"}}\n{\"f\":1}\n{\"index\":{\"_index\":\"b\",\"_id\":\"x\"}}\n{\"f\":2}\n{\"create\":{\"_index\":\"b\",\"_id\":\"x\"}}\n{\"f\":3}\n{\"index\":{\"_index\":\"b\"}}\n{\"f\":4,\"when\":\"2024-03-01T00:00:00Z\",\"s\":\"hello\"}\n{\"delete\":{\"_index\":\"b\",\"_id\":\"nope\"}}\n";
    let r: Value = c
        .post(format!("{}/_bulk?refresh=true", sim.url()))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(r["errors"], json!(true));
    assert_eq!(r["items"][0]["index"]["status"], json!(400));
    assert_eq!(
        r["items"][0]["index"]["error"]["reason"],
        json!("if _id is specified it must not be empty")
    );
    assert_eq!(r["items"][1]["index"]["result"], json!("created"));
    assert_eq!(r["items"][2]["create"]["status"], json!(409));
    assert_eq!(
        r["items"][2]["create"]["error"]["type"],
        json!("version_conflict_engine_exception")
    );
    let auto_id = r["items"][3]["index"]["_id"].as_str().unwrap();
    assert_eq!(auto_id.len(), 20);
    assert_eq!(r["items"][4]["delete"]["result"], json!("not_found"));
    let (_, cnt) = call(&c, &sim, "GET", "/b/_count", None).await;
    assert_eq!(cnt["count"], json!(2));
    let (_, m) = call(&c, &sim, "GET", "/b/_mapping", None).await;
    assert_eq!(
        m["b"]["mappings"]["properties"]["when"]["type"],
        json!("date")
    );
    assert_eq!(
        m["b"]["mappings"]["properties"]["s"]["fields"]["keyword"]["type"],
        json!("keyword")
    );
    let (st, g) = call(&c, &sim, "GET", "/b/_doc/x", None).await;
    assert_eq!((st, g["_source"].clone()), (200, json!({"f": 2})));
    let (st, _) = call(&c, &sim, "GET", "/b/_doc/missing", None).await;
    assert_eq!(st, 404);
    let (st, e) = call(&c, &sim, "GET", "/nosuch/_search", None).await;
    assert_eq!(st, 404);
    assert_eq!(e["error"]["type"], json!("index_not_found_exception"));
    let (st, cat) = call(&c, &sim, "GET", "/_cat/indices?format=json", None).await;
    assert_eq!(st, 200);
    assert_eq!(cat[0]["docs.count"], json!("2"));
    let (st, bad) = call(
        &c,
        &sim,
        "POST",
        "/b/_search",
        Some(json!({"match": {"f": 1}})),
    )
    .await;
    assert_eq!(st, 400);
    assert_eq!(bad["error"]["type"], json!("parsing_exception"));
    sim.shutdown().await;
}

#[tokio::test]
async fn basic_auth_api_keys_and_tls() {
    use base64::Engine as _;
    let dir = tempfile::tempdir().unwrap();
    let auth = searchsim::Auth {
        users: vec![
            searchsim::User::new("admin", "pw"),
            searchsim::User::new("reader", "pw2").read_only(),
        ],
        api_keys: vec![searchsim::ApiKey::new("k", "secret")],
    };
    let sim = start(Config::elasticsearch().with_auth(auth).with_tls(dir.path())).await;
    assert!(sim.url().starts_with("https://"));
    let ca = std::fs::read(dir.path().join("ca.pem")).unwrap();
    let _ = rustls::crypto::ring::default_provider().install_default();
    let c = reqwest::Client::builder()
        .add_root_certificate(reqwest::Certificate::from_pem(&ca).unwrap())
        .build()
        .unwrap();
    let r = c.get(format!("{}/", sim.url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().get("www-authenticate").is_some());
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["error"]["type"], json!("security_exception"));
    let r = c
        .get(format!("{}/", sim.url()))
        .basic_auth("admin", Some("pw"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(
        r.headers().get("x-elastic-product").unwrap(),
        "Elasticsearch"
    );
    let r = c
        .put(format!("{}/idx", sim.url()))
        .basic_auth("reader", Some("pw2"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403);
    let key = base64::engine::general_purpose::STANDARD.encode("k:secret");
    let r = c
        .put(format!("{}/idx", sim.url()))
        .header("authorization", format!("ApiKey {key}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    sim.shutdown().await;

    // OpenSearch 401 is a plain-text body
    let sim = start(Config::opensearch().with_auth(searchsim::Auth {
        users: vec![searchsim::User::new("a", "b")],
        api_keys: vec![],
    }))
    .await;
    let r = client()
        .get(format!("{}/_search", sim.url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert_eq!(r.text().await.unwrap(), "Unauthorized");
    sim.shutdown().await;
}

#[tokio::test]
async fn generated_data_loads_and_is_searchable() {
    let sim = start(Config::opensearch()).await;
    let spec = searchsim::datagen::DataSpec {
        docs: 3000,
        days: 3,
        shards: 2,
        ..Default::default()
    };
    let summary = searchsim::datagen::load(sim.cluster(), &spec).unwrap();
    assert_eq!(summary.docs, 3000);
    let c = client();
    let (_, r) = call(
        &c,
        &sim,
        "POST",
        "/logs-*/_search",
        Some(json!({"size": 0, "track_total_hits": true})),
    )
    .await;
    assert_eq!(r["hits"]["total"]["value"], json!(3000));
    let first = searchsim::datagen::docs(&spec).next().unwrap();
    let (st, g) = call(
        &c,
        &sim,
        "GET",
        &format!("/{}/_doc/{}", first.index, first.id),
        None,
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(
        g["_source"],
        serde_json::from_slice::<Value>(&first.source).unwrap()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn msearch_and_old_versions_without_pit() {
    let sim = start(Config::elasticsearch()).await;
    let c = client();
    load_numbers(&c, &sim, "m", 2, 20).await;
    let (_, pit) = call(&c, &sim, "POST", "/m/_pit?keep_alive=1m", None).await;
    let nd = format!(
        "{{\"index\":\"m\"}}\n{{\"size\":1,\"query\":{{\"term\":{{\"g\":\"g1\"}}}}}}\n{{}}\n{{\"pit\":{{\"id\":\"{}\"}},\"size\":2,\"sort\":[{{\"n\":\"asc\"}}]}}\n{{\"index\":\"missing\"}}\n{{}}\n",
        pit["id"].as_str().unwrap()
    );
    let r: Value = c
        .post(format!("{}/_msearch", sim.url()))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let rs = r["responses"].as_array().unwrap();
    assert_eq!(rs.len(), 3);
    assert_eq!(rs[0]["status"], json!(200));
    assert_eq!(rs[0]["hits"]["total"]["value"], json!(4));
    assert_eq!(
        rs[1]["hits"]["hits"][0]["sort"].as_array().unwrap().len(),
        2
    );
    assert_eq!(rs[2]["status"], json!(404));
    assert_eq!(rs[2]["error"]["type"], json!("index_not_found_exception"));
    sim.shutdown().await;

    let sim = start(Config::opensearch().with_version("1.3.19")).await;
    call(&c, &sim, "PUT", "/old", None).await;
    let (st, _) = call(
        &c,
        &sim,
        "POST",
        "/old/_search/point_in_time?keep_alive=1m",
        None,
    )
    .await;
    assert_eq!(st, 400, "OpenSearch 1.x has no PIT");
    let (st, _) = call(&c, &sim, "POST", "/old/_search?scroll=1m", None).await;
    assert_eq!(st, 200, "but scroll works");
    sim.shutdown().await;
}

#[test]
fn binary_prints_listening_line_first() {
    use std::io::BufRead as _;
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_searchsim"))
        .args([
            "--port",
            "0",
            "--flavor",
            "elasticsearch",
            "--generate",
            "500",
            "--days",
            "2",
            "--shards",
            "2",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("spawn searchsim");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let url = line
        .trim()
        .strip_prefix("searchsim listening on ")
        .expect("first line format")
        .to_string();
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let (count, product) = rt.block_on(async {
        let r = client()
            .get(format!("{url}/logs-*/_count"))
            .send()
            .await
            .unwrap();
        let product = r
            .headers()
            .get("x-elastic-product")
            .map(|v| v.to_str().unwrap().to_string());
        (r.json::<Value>().await.unwrap()["count"].clone(), product)
    });
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(count, json!(500));
    assert_eq!(product.as_deref(), Some("Elasticsearch"));
}

#[tokio::test]
async fn sigv4_signatures_are_verified() {
    let sim = start(Config::opensearch().with_sigv4("AKIDSIM", "sim-secret")).await;
    let c = client();
    let send = |secret: &'static str| {
        let c = c.clone();
        let url = format!("{}/_cluster/health", sim.url());
        async move {
            let uri: http::Uri = url.parse().unwrap();
            let mut headers = http::HeaderMap::new();
            let creds = spillway_sigv4::Credentials::new("AKIDSIM", secret, None);
            spillway_sigv4::sign(
                &http::Method::GET,
                &uri,
                &mut headers,
                spillway_sigv4::Payload::Bytes(b""),
                &creds,
                "eu-west-1",
                "es",
                chrono::Utc::now(),
            )
            .unwrap();
            let mut rb = c.get(&url);
            for (k, v) in &headers {
                rb = rb.header(k.as_str(), v.to_str().unwrap());
            }
            let r = rb.send().await.unwrap();
            (r.status().as_u16(), r.json::<Value>().await.unwrap())
        }
    };
    let (st, v) = send("sim-secret").await;
    assert_eq!(st, 200, "{v}");
    let (st, v) = send("wrong").await;
    assert_eq!(st, 403);
    assert!(
        v["message"]
            .as_str()
            .unwrap()
            .contains("signature we calculated does not match")
    );
    let (st, v) = call(&c, &sim, "GET", "/_cluster/health", None).await;
    assert_eq!(st, 403);
    assert!(
        v["Message"]
            .as_str()
            .unwrap()
            .contains("anonymous is not authorized")
    );
    sim.shutdown().await;
}

/// What a shard-walking export asks of OpenSearch 2.19 (checked against the real node by
/// `tests/real.rs`): per-window, per-index counts (`filters` with `terms` on `_index`), and
/// one index shard read under the PIT with a `term` on `_index`, `slice {k, numShards}` (or a
/// multiple of it) and `_doc` order — every document exactly once.
#[tokio::test]
async fn walking_index_shards_under_a_pit_in_doc_order() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    load_numbers(&c, &sim, "walk-a", 3, 240).await;
    load_numbers(&c, &sim, "walk-b", 2, 100).await;
    let (_, pit) = call(
        &c,
        &sim,
        "POST",
        "/walk-*/_search/point_in_time?keep_alive=1m",
        None,
    )
    .await;
    let pit = json!({"id": pit["pit_id"]});
    let day = |d: i64| 1_709_251_200_000i64 + d * 86_400_000;
    let (st, r) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({
            "size": 0, "pit": pit,
            "aggs": {"w": {
                "filters": {"filters": {
                    "0": {"range": {"ts": {"gte": day(0), "lt": day(2)}}},
                    "1": {"range": {"ts": {"gte": day(2), "lt": day(20)}}},
                }},
                "aggs": {"i": {"terms": {"field": "_index", "size": 10}}},
            }},
        })),
    )
    .await;
    assert_eq!(st, 200, "{r}");
    let counts = |w: &str| -> Vec<(String, u64)> {
        r["aggregations"]["w"]["buckets"][w]["i"]["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| {
                (
                    b["key"].as_str().unwrap().to_string(),
                    b["doc_count"].as_u64().unwrap(),
                )
            })
            .collect()
    };
    assert_eq!(
        counts("0"),
        vec![("walk-a".into(), 48), ("walk-b".into(), 48)]
    );
    assert_eq!(
        counts("1"),
        vec![("walk-a".into(), 192), ("walk-b".into(), 52)]
    );
    assert_eq!(
        r["aggregations"]["w"]["buckets"]["1"]["doc_count"],
        json!(244)
    );

    // walk-a: 3 shards, each cut in two (max 6); walk-b: 2 shards whole (max 2).
    let mut seen = HashSet::new();
    for (index, max) in [("walk-a", 6), ("walk-b", 2)] {
        for k in 0..max {
            let mut after: Option<Value> = None;
            loop {
                let mut body = json!({
                    "size": 7, "pit": pit, "slice": {"id": k, "max": max},
                    "sort": [{"_doc": "asc"}],
                    "query": {"bool": {"filter": [{"term": {"_index": index}}]}},
                });
                if let Some(a) = &after {
                    body["search_after"] = a.clone();
                }
                let (st, r) = call(&c, &sim, "POST", "/_search", Some(body)).await;
                assert_eq!(st, 200, "{r}");
                let hits = r["hits"]["hits"].as_array().unwrap();
                if hits.is_empty() {
                    break;
                }
                for h in hits {
                    assert_eq!(h["_index"], json!(index));
                    let key = format!("{index}/{}", h["_id"].as_str().unwrap());
                    assert!(seen.insert(key.clone()), "{key} read twice");
                }
                after = Some(hits.last().unwrap()["sort"].clone());
            }
        }
    }
    assert_eq!(seen.len(), 340, "every document of both indices once");
    sim.shutdown().await;
}
