//! Fault knobs over real HTTP: every knob is switched on and its effect is observed with the
//! servers' exact envelopes, and the `/_searchsim/stats` counters agree.

use std::time::{Duration, Instant};

use searchsim::{Config, Faults, RunningSim, SearchSim};
use serde_json::{Value, json};

mod common;
use common::{call, client};

async fn start(config: Config) -> RunningSim {
    let sim = SearchSim::start(config.with_refresh_interval(None))
        .await
        .expect("start");
    let mut nd = String::new();
    for i in 0..50 {
        nd.push_str(&format!(
            "{{\"index\":{{\"_index\":\"f\",\"_id\":\"{i}\"}}}}\n{{\"n\":{i},\"pad\":\"{}\"}}\n",
            "x".repeat(40)
        ));
    }
    let r = client()
        .post(format!("{}/_bulk?refresh=true", sim.url()))
        .header("content-type", "application/x-ndjson")
        .body(nd)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    sim
}

async fn set_faults(c: &reqwest::Client, sim: &RunningSim, f: Value) {
    let (st, v) = call(c, sim, "POST", "/_searchsim/faults", Some(f)).await;
    assert_eq!(st, 200, "{v}");
}

#[tokio::test]
async fn reject_rate_gives_flavor_envelopes_and_counts() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    set_faults(&c, &sim, json!({"reject_rate": 0.3, "seed": 7})).await;
    let mut rejected = 0;
    for _ in 0..400 {
        let (st, v) = call(&c, &sim, "POST", "/f/_search", Some(json!({"size": 1}))).await;
        if st == 429 {
            rejected += 1;
            assert_eq!(v["status"], json!(429));
            assert_eq!(
                v["error"]["type"],
                json!("search_phase_execution_exception")
            );
            assert_eq!(
                v["error"]["root_cause"][0]["type"],
                json!("rejected_execution_exception")
            );
            assert!(
                v["error"]["root_cause"][0]["reason"]
                    .as_str()
                    .unwrap()
                    .starts_with("rejected execution of")
            );
        } else {
            assert_eq!(st, 200);
        }
    }
    assert!((80..=160).contains(&rejected), "{rejected} of 400 rejected");
    let (_, stats) = call(&c, &sim, "GET", "/_searchsim/stats", None).await;
    assert_eq!(stats["faults"]["reject"], json!(rejected));
    assert_eq!(stats["requests"]["search"], json!(400));
    // writes and the info endpoint are never faulted
    set_faults(&c, &sim, json!({"reject_rate": 1.0})).await;
    let (st, _) = call(&c, &sim, "PUT", "/f/_doc/new", Some(json!({"n": 1}))).await;
    assert_eq!(st, 201);
    let (st, _) = call(&c, &sim, "GET", "/", None).await;
    assert_eq!(st, 200);
    let (st, _) = call(&c, &sim, "GET", "/f/_count", None).await;
    assert_eq!(st, 429);
    sim.shutdown().await;

    let sim = start(Config::elasticsearch().with_faults(Faults {
        reject_rate: 1.0,
        ..Faults::default()
    }))
    .await;
    let (st, v) = call(&c, &sim, "POST", "/f/_search", None).await;
    assert_eq!(st, 429);
    assert_eq!(
        v["error"]["root_cause"][0]["type"],
        json!("es_rejected_execution_exception")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn unavailable_rate_answers_502_or_503() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    set_faults(&c, &sim, json!({"unavailable_rate": 1.0, "seed": 1})).await;
    let mut seen = std::collections::HashSet::new();
    for _ in 0..40 {
        let (st, v) = call(&c, &sim, "POST", "/f/_search", None).await;
        assert!(st == 502 || st == 503, "{st}");
        if st == 503 {
            assert_eq!(v["status"], json!(503));
            assert_eq!(
                v["error"]["root_cause"][0]["type"],
                json!("no_shard_available_action_exception")
            );
        } else {
            assert!(v.as_str().unwrap().contains("502 Bad Gateway"));
        }
        seen.insert(st);
    }
    assert_eq!(seen.len(), 2, "both statuses occur");
    let (_, stats) = call(&c, &sim, "GET", "/_searchsim/stats", None).await;
    assert_eq!(stats["faults"]["unavailable"], json!(40));
    sim.shutdown().await;
}

#[tokio::test]
async fn latency_is_added_to_search_requests() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    set_faults(
        &c,
        &sim,
        json!({"latency_ms": 150, "latency_jitter_ms": 20}),
    )
    .await;
    let t = Instant::now();
    let (st, _) = call(&c, &sim, "POST", "/f/_search", None).await;
    assert_eq!(st, 200);
    assert!(
        t.elapsed() >= Duration::from_millis(150),
        "{:?}",
        t.elapsed()
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn max_open_pits_rejects_past_the_limit() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    set_faults(&c, &sim, json!({"max_open_pits": 2})).await;
    for _ in 0..2 {
        let (st, _) = call(
            &c,
            &sim,
            "POST",
            "/f/_search/point_in_time?keep_alive=1m",
            None,
        )
        .await;
        assert_eq!(st, 200);
    }
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/f/_search/point_in_time?keep_alive=1m",
        None,
    )
    .await;
    assert_eq!(st, 429);
    assert_eq!(v["error"]["type"], json!("rejected_execution_exception"));
    assert!(v["error"]["reason"].as_str().unwrap().contains(
        "Trying to create too many Point In Time contexts. Must be less than or equal to: [2]"
    ));
    let (_, stats) = call(&c, &sim, "GET", "/_searchsim/stats", None).await;
    assert_eq!(stats["open_pits"], json!(2));
    assert_eq!(stats["faults"]["max_open_pits"], json!(1));
    // the cluster setting applies without the fault knob
    set_faults(&c, &sim, json!({})).await;
    call(
        &c,
        &sim,
        "PUT",
        "/_cluster/settings",
        Some(json!({"persistent": {"search.max_open_pit_context": 2}})),
    )
    .await;
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/f/_search/point_in_time?keep_alive=1m",
        None,
    )
    .await;
    assert_eq!(st, 429, "{v}");
    let (st, _) = call(
        &c,
        &sim,
        "POST",
        "/f/_search/point_in_time?keep_alive=2d",
        None,
    )
    .await;
    assert_eq!(st, 400);
    sim.shutdown().await;
}

#[tokio::test]
async fn breaker_trips_on_large_responses() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    set_faults(&c, &sim, json!({"breaker_bytes": 1000})).await;
    let (st, _) = call(&c, &sim, "POST", "/f/_search", Some(json!({"size": 1}))).await;
    assert_eq!(st, 200);
    let (st, v) = call(&c, &sim, "POST", "/f/_search", Some(json!({"size": 50}))).await;
    assert_eq!(st, 429);
    assert_eq!(v["error"]["type"], json!("circuit_breaking_exception"));
    assert_eq!(v["error"]["bytes_limit"], json!(1000));
    assert!(v["error"]["bytes_wanted"].as_u64().unwrap() > 1000);
    assert_eq!(v["error"]["durability"], json!("TRANSIENT"));
    assert!(
        v["error"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("[parent] Data too large")
    );
    sim.shutdown().await;
}

#[tokio::test]
async fn dropped_connection_is_a_body_error() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    set_faults(&c, &sim, json!({"drop_connection_rate": 1.0})).await;
    let res = c
        .post(format!("{}/f/_search", sim.url()))
        .header("content-type", "application/json")
        .body(json!({"size": 50}).to_string())
        .send()
        .await;
    let failed = match res {
        Err(_) => true,
        Ok(r) => r.bytes().await.is_err(),
    };
    assert!(failed, "client must see a connection/body error");
    let (_, stats) = call(&client(), &sim, "GET", "/_searchsim/stats", None).await;
    assert_eq!(stats["faults"]["drop_connection"], json!(1));
    sim.shutdown().await;
}

#[tokio::test]
async fn short_page_returns_fewer_hits_than_total_implies() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    let (_, pit) = call(
        &c,
        &sim,
        "POST",
        "/f/_search/point_in_time?keep_alive=1m",
        None,
    )
    .await;
    set_faults(&c, &sim, json!({"short_page_rate": 1.0})).await;
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": pit["pit_id"]}, "size": 10, "sort": [{"n": "asc"}]})),
    )
    .await;
    assert_eq!(st, 200);
    assert_eq!(v["hits"]["total"]["value"], json!(50));
    let n = v["hits"]["hits"].as_array().unwrap().len();
    assert!(n < 10 && n > 0, "{n}");
    let (_, stats) = call(&c, &sim, "GET", "/_searchsim/stats", None).await;
    assert_eq!(stats["faults"]["short_page"], json!(1));
    sim.shutdown().await;
}

#[tokio::test]
async fn expire_endpoint_makes_pits_missing() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    let (_, pit) = call(
        &c,
        &sim,
        "POST",
        "/f/_search/point_in_time?keep_alive=10m",
        None,
    )
    .await;
    let (st, v) = call(&c, &sim, "POST", "/_searchsim/pits/_expire", None).await;
    assert_eq!((st, v["expired"].clone()), (200, json!(1)));
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": pit["pit_id"]}})),
    )
    .await;
    assert_eq!(st, 404);
    assert_eq!(
        v["error"]["type"],
        json!("search_phase_execution_exception")
    );
    assert_eq!(
        v["error"]["root_cause"][0]["type"],
        json!("search_context_missing_exception")
    );
    assert!(
        v["error"]["root_cause"][0]["reason"]
            .as_str()
            .unwrap()
            .starts_with("No search context found for id [")
    );
    // keep_alive expiry without the endpoint
    let (_, pit) = call(
        &c,
        &sim,
        "POST",
        "/f/_search/point_in_time?keep_alive=300ms",
        None,
    )
    .await;
    // Every search restarts a PIT's keep-alive (like the servers), so wait by listing only.
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, list) = call(&c, &sim, "GET", "/_search/point_in_time/_all", None).await;
        if list["pits"].as_array().unwrap().is_empty() {
            break;
        }
        assert!(Instant::now() < deadline, "PIT never expired");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": pit["pit_id"]}})),
    )
    .await;
    assert_eq!(st, 404, "{v}");
    sim.shutdown().await;
}

#[tokio::test]
async fn elasticsearch_pit_id_rotation_keeps_old_ids_working() {
    let sim = start(Config::elasticsearch()).await;
    let c = client();
    let (_, pit) = call(&c, &sim, "POST", "/f/_pit?keep_alive=1m", None).await;
    let first = pit["id"].as_str().unwrap().to_string();
    set_faults(&c, &sim, json!({"pit_id_rotation": 1.0})).await;
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/_search",
        Some(json!({"pit": {"id": first}, "size": 1})),
    )
    .await;
    assert_eq!(st, 200);
    let rotated = v["pit_id"].as_str().unwrap().to_string();
    assert_ne!(rotated, first);
    set_faults(&c, &sim, json!({})).await;
    for id in [&first, &rotated] {
        let (st, v) = call(
            &c,
            &sim,
            "POST",
            "/_search",
            Some(json!({"pit": {"id": id}, "size": 1})),
        )
        .await;
        assert_eq!(st, 200);
        assert_eq!(v["pit_id"], json!(id), "without rotation the id is echoed");
    }
    let (_, stats) = call(&c, &sim, "GET", "/_searchsim/stats", None).await;
    assert_eq!(stats["faults"]["pit_id_rotation"], json!(1));
    sim.shutdown().await;
}

#[tokio::test]
async fn reset_and_path_filter() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    set_faults(&c, &sim, json!({"reject_rate": 1.0, "paths": ["_count"]})).await;
    let (st, _) = call(&c, &sim, "POST", "/f/_search", None).await;
    assert_eq!(st, 200);
    let (st, _) = call(&c, &sim, "GET", "/f/_count", None).await;
    assert_eq!(st, 429);
    let (st, _) = call(
        &c,
        &sim,
        "POST",
        "/_searchsim/faults",
        Some(json!({"reject_rate": 2.0})),
    )
    .await;
    assert_eq!(st, 400);
    let (st, _) = call(&c, &sim, "POST", "/_searchsim/reset", None).await;
    assert_eq!(st, 200);
    let (_, f) = call(&c, &sim, "GET", "/_searchsim/faults", None).await;
    assert_eq!(f["reject_rate"], json!(0.0));
    let (st, _) = call(&c, &sim, "GET", "/f/_count", None).await;
    assert_eq!(st, 404, "index wiped");
    sim.shutdown().await;
}

#[tokio::test]
async fn pit_searches_restart_the_keep_alive() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    let (_, pit) = call(
        &c,
        &sim,
        "POST",
        "/f/_search/point_in_time?keep_alive=400ms",
        None,
    )
    .await;
    // keep using the PIT for well over its keep-alive: it must stay open
    let until = Instant::now() + Duration::from_millis(1200);
    while Instant::now() < until {
        let (st, _) = call(
            &c,
            &sim,
            "POST",
            "/_search",
            Some(json!({"pit": {"id": pit["pit_id"]}, "size": 1})),
        )
        .await;
        assert_eq!(st, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    sim.shutdown().await;
}

#[tokio::test]
async fn poison_fails_only_matching_requests_every_time() {
    let sim = start(Config::opensearch()).await;
    let c = client();
    set_faults(&c, &sim, json!({"poison": "\"n\":7"})).await;
    for _ in 0..3 {
        let (st, v) = call(
            &c,
            &sim,
            "POST",
            "/f/_search",
            Some(json!({"query": {"term": {"n":7}}})),
        )
        .await;
        assert_eq!(st, 500, "{v}");
        assert_eq!(
            v["error"]["type"],
            json!("search_phase_execution_exception")
        );
        assert_eq!(
            v["error"]["root_cause"][0]["type"],
            json!("illegal_state_exception")
        );
    }
    let (st, v) = call(
        &c,
        &sim,
        "POST",
        "/f/_search",
        Some(json!({"query": {"term": {"n":8}}})),
    )
    .await;
    assert_eq!(st, 200, "{v}");
    assert_eq!(v["hits"]["total"]["value"], json!(1));
    let (_, stats) = call(&c, &sim, "GET", "/_searchsim/stats", None).await;
    assert_eq!(stats["faults"]["poison"], json!(3));
    sim.shutdown().await;
}
