//! Sorting on `_id` over HTTP: OpenSearch pages a 3-shard index by `_id` under a PIT in byte
//! order, every id exactly once; Elasticsearch 8 refuses with the server's 400 until
//! `indices.id_field_data.enabled` is set.

use std::collections::HashSet;

use searchsim::{Config, RunningSim, SearchSim};
use serde_json::{Value, json};

const DOCS: usize = 1234;

fn client() -> reqwest::Client {
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::new()
}

async fn call(
    c: &reqwest::Client,
    sim: &RunningSim,
    method: &str,
    path: &str,
    body: Value,
) -> (u16, Value) {
    let m = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
    let resp = c
        .request(m, format!("{}{}", sim.url(), path))
        .header("content-type", "application/json")
        .body(body.to_string())
        .send()
        .await
        .expect("send");
    let status = resp.status().as_u16();
    (status, resp.json().await.expect("json body"))
}

async fn loaded(config: Config) -> (RunningSim, reqwest::Client, Vec<String>) {
    let sim = SearchSim::start(config.with_refresh_interval(None))
        .await
        .expect("start");
    let c = client();
    let (st, _) = call(
        &c,
        &sim,
        "PUT",
        "/ids",
        json!({"settings": {"number_of_shards": 3, "number_of_replicas": 0}}),
    )
    .await;
    assert_eq!(st, 200);
    let mut ids = Vec::new();
    let mut nd = String::new();
    for i in 0..DOCS {
        // mixed lengths, cases and a few non-ASCII ids, so byte order matters
        let id = match i % 4 {
            0 => format!("doc-{i}"),
            1 => format!("D{:05}", i * 7),
            2 => format!("é{i}"),
            _ => format!("{i:x}"),
        };
        nd.push_str(&format!(
            "{{\"index\":{{\"_id\":{}}}}}\n{{\"n\":{i}}}\n",
            serde_json::to_string(&id).unwrap()
        ));
        ids.push(id);
    }
    let r = c
        .post(format!("{}/ids/_bulk?refresh=true", sim.url()))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["errors"], json!(false));
    ids.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    (sim, c, ids)
}

#[tokio::test]
async fn opensearch_pages_a_pit_by_id_in_byte_order() {
    let (sim, c, expected) = loaded(Config::opensearch()).await;
    let (st, pit) = call(
        &c,
        &sim,
        "POST",
        "/ids/_search/point_in_time?keep_alive=1m",
        Value::Null,
    )
    .await;
    assert_eq!(st, 200, "{pit}");
    let pit = pit["pit_id"].as_str().unwrap().to_string();
    let mut got: Vec<String> = Vec::new();
    let mut after: Option<Value> = None;
    loop {
        let mut body = json!({
            "size": 100,
            "pit": {"id": pit, "keep_alive": "1m"},
            "sort": [{"_id": "asc"}],
            "track_total_hits": after.is_none(),
        });
        if let Some(a) = &after {
            body["search_after"] = a.clone();
        }
        let (st, v) = call(&c, &sim, "POST", "/_search", body).await;
        assert_eq!(st, 200, "{v}");
        if after.is_none() {
            assert_eq!(v["hits"]["total"]["value"], json!(DOCS));
            assert_eq!(v["hits"]["total"]["relation"], json!("eq"));
        }
        let hits = v["hits"]["hits"].as_array().unwrap();
        if hits.is_empty() {
            break;
        }
        assert!(hits.len() <= 100);
        for h in hits {
            let id = h["_id"].as_str().unwrap();
            assert_eq!(h["sort"], json!([id]), "the sort value is the id");
            got.push(id.to_string());
        }
        after = Some(hits.last().unwrap()["sort"].clone());
    }
    let unique: HashSet<&String> = got.iter().collect();
    assert_eq!(unique.len(), got.len(), "no id twice");
    assert_eq!(got, expected, "every id once, in UTF-8 byte order");

    // _id as a tiebreaker after another field, and within slices
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        json!({"size": 5, "pit": {"id": pit}, "sort": [{"n": "desc"}, {"_id": "asc"}]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let first = &v["hits"]["hits"][0];
    assert_eq!(first["sort"][0], json!(DOCS - 1));
    assert_eq!(first["sort"][1], first["_id"]);
    let mut sliced = Vec::new();
    for id in 0..2 {
        let (st, v) = call(
            &c,
            &sim,
            "POST",
            "/_search",
            json!({"size": 10000, "pit": {"id": pit}, "slice": {"id": id, "max": 2}, "sort": [{"_id": "asc"}]}),
        )
        .await;
        assert_eq!(st, 200, "{v}");
        sliced.extend(
            v["hits"]["hits"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| h["_id"].as_str().unwrap().to_string()),
        );
    }
    sliced.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
    assert_eq!(sliced, expected, "slices partition the ids");
    sim.shutdown().await;
}

#[tokio::test]
async fn elasticsearch_8_refuses_id_field_data_until_enabled() {
    let (sim, c, expected) = loaded(Config::elasticsearch()).await;
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/ids/_search",
        json!({"sort": [{"_id": "asc"}]}),
    )
    .await;
    assert_eq!(st, 400, "{v}");
    let reason = "Fielddata access on the _id field is disallowed, you can re-enable it by updating the dynamic cluster setting: indices.id_field_data.enabled";
    assert_eq!(
        v["error"]["root_cause"][0]["type"],
        json!("illegal_argument_exception")
    );
    assert_eq!(v["error"]["root_cause"][0]["reason"], json!(reason));
    assert_eq!(v["status"], json!(400));

    let (st, _) = call(
        &c,
        &sim,
        "PUT",
        "/_cluster/settings",
        json!({"persistent": {"indices.id_field_data.enabled": true}}),
    )
    .await;
    assert_eq!(st, 200);
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/ids/_search",
        json!({"size": 3, "sort": [{"_id": "asc"}]}),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    let ids: Vec<&str> = v["hits"]["hits"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["_id"].as_str().unwrap())
        .collect();
    assert_eq!(
        ids,
        expected[..3].iter().map(String::as_str).collect::<Vec<_>>()
    );
    sim.shutdown().await;
}
