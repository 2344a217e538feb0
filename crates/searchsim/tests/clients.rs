//! Real third-party clients against searchsim: opensearch-py (PIT + sliced search_after,
//! `helpers.scan`), the Elasticsearch 8.x Python client (open/close point in time,
//! `pit` + `search_after`) and elasticdump (export to NDJSON). Each test starts searchsim
//! in-process on 127.0.0.1, loads a 3-shard index with known ids through the REST API,
//! runs the client against it and checks in Rust that every id came back exactly once.
//!
//! The clients are installed by `scripts/deps/python.sh` and `scripts/deps/node.sh`;
//! `SPILLWAY_PYTHON` and `SPILLWAY_ELASTICDUMP` point elsewhere. A missing client fails
//! the test with the command that installs it.

use serde_json::{Value, json};
use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Documents loaded for the Python clients.
const DOCS: usize = 4000;
/// Documents loaded for elasticdump: more than one `--limit 10000` page.
const DUMP_DOCS: usize = 25_000;
const SHARDS: u64 = 3;
/// Upper bound for one client run; a hung client fails the test instead of hanging it.
const CLIENT_TIMEOUT: Duration = Duration::from_secs(300);

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn scripts_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients")
}

/// The Python interpreter with the clients: `$SPILLWAY_PYTHON` or `<repo>/.work/venv/bin/python`.
fn python() -> PathBuf {
    let path = std::env::var_os("SPILLWAY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".work/venv/bin/python"));
    assert!(
        path.exists(),
        "no Python with the client libraries at {} — install them with `bash scripts/deps/python.sh` \
         (from the repository root), or set SPILLWAY_PYTHON to an interpreter that has \
         opensearch-py, elasticsearch 8.x and PyYAML",
        path.display()
    );
    path
}

/// The elasticdump binary: `$SPILLWAY_ELASTICDUMP` or `<repo>/.work/node/node_modules/.bin/elasticdump`.
fn elasticdump() -> PathBuf {
    let path = std::env::var_os("SPILLWAY_ELASTICDUMP")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".work/node/node_modules/.bin/elasticdump"));
    assert!(
        path.exists(),
        "no elasticdump at {} — install it with `bash scripts/deps/node.sh` (from the repository root), \
         or set SPILLWAY_ELASTICDUMP to an elasticdump 6.x binary",
        path.display()
    );
    path
}

fn http() -> reqwest::Client {
    // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
    let _ = rustls::crypto::ring::default_provider().install_default();
    reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("HTTP client builds")
}

/// Sends a request and returns the JSON body, failing the test on a non-2xx answer.
async fn call(
    client: &reqwest::Client,
    method: reqwest::Method,
    url: &str,
    body: Option<(String, &str)>,
) -> Value {
    let mut req = client.request(method.clone(), url);
    if let Some((b, ct)) = body {
        req = req.header("Content-Type", ct).body(b);
    }
    let resp = req
        .send()
        .await
        .unwrap_or_else(|e| panic!("{method} {url} failed: {e}"));
    let status = resp.status();
    let text = resp
        .text()
        .await
        .unwrap_or_else(|e| panic!("{method} {url}: reading the body failed: {e}"));
    assert!(
        status.is_success(),
        "{method} {url} answered {status}: {text}"
    );
    serde_json::from_str(&text)
        .unwrap_or_else(|e| panic!("{method} {url}: body is not JSON ({e}): {text}"))
}

fn doc_id(i: usize) -> String {
    format!("doc-{i:05}")
}

/// Creates a `SHARDS`-shard index and bulk-loads `docs` documents with known ids through
/// the REST API; returns the ids.
async fn load_index(base: &str, index: &str, docs: usize) -> BTreeSet<String> {
    let client = http();
    let settings = json!({
        "settings": {"number_of_shards": SHARDS, "number_of_replicas": 0},
        "mappings": {"properties": {"seq": {"type": "long"}, "name": {"type": "keyword"}, "group": {"type": "integer"}}}
    });
    call(
        &client,
        reqwest::Method::PUT,
        &format!("{base}/{index}"),
        Some((settings.to_string(), "application/json")),
    )
    .await;
    let mut ids = BTreeSet::new();
    for chunk in (0..docs).collect::<Vec<_>>().chunks(5000) {
        let mut body = String::new();
        for &i in chunk {
            body.push_str(&json!({"index": {"_index": index, "_id": doc_id(i)}}).to_string());
            body.push('\n');
            body.push_str(
                &json!({"seq": i, "name": format!("document {i}"), "group": i % 13}).to_string(),
            );
            body.push('\n');
            ids.insert(doc_id(i));
        }
        let resp = call(
            &client,
            reqwest::Method::POST,
            &format!("{base}/_bulk"),
            Some((body, "application/x-ndjson")),
        )
        .await;
        assert_eq!(
            resp["errors"],
            json!(false),
            "bulk load reported errors: {resp}"
        );
    }
    call(
        &client,
        reqwest::Method::POST,
        &format!("{base}/{index}/_refresh"),
        None,
    )
    .await;
    let count = call(
        &client,
        reqwest::Method::GET,
        &format!("{base}/{index}/_count"),
        None,
    )
    .await;
    assert_eq!(
        count["count"],
        json!(docs),
        "the loaded index does not count {docs} documents: {count}"
    );
    ids
}

/// Runs a client program and parses the JSON object it prints as its last stdout line.
async fn run_json(program: &Path, args: &[String]) -> Value {
    let output = run_program(program, args).await;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let last = stdout
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("");
    serde_json::from_str(last).unwrap_or_else(|e| {
        panic!(
            "{} printed no JSON result ({e}); stdout: {stdout}",
            program.display()
        )
    })
}

async fn run_program(program: &Path, args: &[String]) -> std::process::Output {
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args).kill_on_drop(true);
    let output = tokio::time::timeout(CLIENT_TIMEOUT, cmd.output())
        .await
        .unwrap_or_else(|_| {
            panic!(
                "{} {args:?} did not finish within {CLIENT_TIMEOUT:?}",
                program.display()
            )
        })
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", program.display()));
    assert!(
        output.status.success(),
        "{} {args:?} exited with {}\nstderr:\n{}\nstdout:\n{}",
        program.display(),
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
    );
    output
}

fn id_list(v: &Value, what: &str) -> Vec<String> {
    v.as_array()
        .unwrap_or_else(|| panic!("{what} is not a list: {v}"))
        .iter()
        .map(|id| {
            id.as_str()
                .unwrap_or_else(|| panic!("{what}: id {id} is not a string"))
                .to_string()
        })
        .collect()
}

/// Asserts that `got` holds every expected id exactly once and nothing else.
fn assert_exactly_once(what: &str, got: &[String], expected: &BTreeSet<String>) {
    let mut seen = BTreeMap::<&str, usize>::new();
    for id in got {
        *seen.entry(id.as_str()).or_default() += 1;
    }
    let dups: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).take(10).collect();
    let missing: Vec<_> = expected
        .iter()
        .filter(|id| !seen.contains_key(id.as_str()))
        .take(10)
        .collect();
    let extra: Vec<_> = seen
        .keys()
        .filter(|id| !expected.contains(**id))
        .take(10)
        .collect();
    assert!(
        dups.is_empty() && missing.is_empty() && extra.is_empty() && got.len() == expected.len(),
        "{what}: got {} ids for {} documents; duplicated (id, times): {dups:?}; missing: {missing:?}; unknown: {extra:?}",
        got.len(),
        expected.len()
    );
}

/// Checks the opensearch-py script's output: for every slice count, `max` slices whose
/// union is every id with no overlap, a deleted PIT and none left; `helpers.scan` saw every id.
fn check_opensearch_py_output(out: &Value, ids: &BTreeSet<String>, slice_counts: &[usize]) {
    for max in slice_counts {
        let s = &out["slicings"][max.to_string()];
        assert!(s.is_object(), "no result for slice.max = {max}: {out}");
        let slices = s["slices"]
            .as_array()
            .unwrap_or_else(|| panic!("slice.max {max}: no slices"));
        assert_eq!(slices.len(), *max, "slice.max {max}: expected {max} slices");
        let mut union = Vec::new();
        for (i, slice) in slices.iter().enumerate() {
            let slice_ids = id_list(slice, &format!("slice {i}/{max}"));
            assert!(
                !slice_ids.is_empty(),
                "slice {i} of {max} returned no document (of {DOCS} over {SHARDS} shards)"
            );
            union.extend(slice_ids);
        }
        let sizes: Vec<usize> = slices
            .iter()
            .map(|s| s.as_array().map_or(0, Vec::len))
            .collect();
        println!(
            "{}: slice.max={max}: slice sizes {sizes:?}, pages {}",
            out["client"], s["pages"]
        );
        assert_exactly_once(&format!("PIT slices with max={max}"), &union, ids);
        assert_eq!(
            s["create_shards"]["failed"],
            json!(0),
            "create_pit reported shard failures: {}",
            s["create_shards"]
        );
        assert_eq!(
            s["create_shards"]["total"],
            json!(SHARDS),
            "create_pit _shards.total: {}",
            s["create_shards"]
        );
        let deleted = &s["delete"]["pits"];
        assert_eq!(
            deleted.as_array().map(Vec::len),
            Some(1),
            "delete_pit answer: {}",
            s["delete"]
        );
        assert_eq!(
            deleted[0]["successful"],
            json!(true),
            "delete_pit answer: {}",
            s["delete"]
        );
        assert_eq!(
            s["pits_left"],
            json!(0),
            "PITs still listed after delete_pit (max={max})"
        );
    }
    assert_exactly_once("helpers.scan", &id_list(&out["scan"], "scan"), ids);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opensearch_py_pit_slices_and_scan() {
    let python = python();
    let sim = searchsim::SearchSim::start(searchsim::Config::opensearch_3())
        .await
        .unwrap_or_else(|e| panic!("searchsim did not start: {e}"));
    let url = sim.url().to_string();
    let ids = load_index(&url, "clients-os", DOCS).await;
    let script = scripts_dir()
        .join("opensearch_pit_slices.py")
        .display()
        .to_string();
    let slice_counts = [2, 5, 7];
    let slices_arg = slice_counts.map(|n| n.to_string()).join(",");

    // Sort on a unique numeric field, the tiebreaker that works on every OpenSearch version.
    let args = |sort: &str| {
        vec![
            script.clone(),
            "--url".into(),
            url.clone(),
            "--index".into(),
            "clients-os".into(),
            "--slices".into(),
            slices_arg.clone(),
            "--page-size".into(),
            "333".into(),
            "--sort".into(),
            sort.into(),
        ]
    };
    let out = run_json(&python, &args("seq")).await;
    assert_eq!(
        out["server_version"],
        json!("3.3.0"),
        "GET / as seen by opensearch-py: {}",
        out["server_version"]
    );
    assert_eq!(out["distribution"], json!("opensearch"));
    check_opensearch_py_output(&out, &ids, &slice_counts);

    // `_shard_doc` (OpenSearch 3.3+) as the only sort key.
    let out = run_json(&python, &args("_shard_doc")).await;
    check_opensearch_py_output(&out, &ids, &slice_counts);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticsearch_py_point_in_time_paging() {
    let python = python();
    let sim = searchsim::SearchSim::start(searchsim::Config::elasticsearch())
        .await
        .unwrap_or_else(|e| panic!("searchsim did not start: {e}"));
    let url = sim.url().to_string();
    let ids = load_index(&url, "clients-es", DOCS).await;
    let script = scripts_dir()
        .join("elasticsearch_pit.py")
        .display()
        .to_string();
    let out = run_json(
        &python,
        &[
            script,
            "--url".into(),
            url.clone(),
            "--index".into(),
            "clients-es".into(),
            "--page-size".into(),
            "333".into(),
        ],
    )
    .await;
    sim.shutdown().await;

    assert_eq!(
        out["server_version"],
        json!("8.15.0"),
        "GET / as seen by the client"
    );
    assert_eq!(out["tagline"], json!("You Know, for Search"));
    assert_exactly_once("ES PIT + search_after", &id_list(&out["ids"], "ids"), &ids);
    // 4000 docs / 333 per page = 13 pages with hits, then one empty page.
    assert_eq!(
        out["pages"],
        json!(DOCS.div_ceil(333) + 1),
        "pages requested: {}",
        out["pages"]
    );
    // One `seq` value plus the implicit `_shard_doc` tiebreaker Elasticsearch appends.
    assert_eq!(
        out["sort_lengths"],
        json!([2]),
        "sort values per hit: {}",
        out["sort_lengths"]
    );
    assert_eq!(
        out["close"]["succeeded"],
        json!(true),
        "close_point_in_time: {}",
        out["close"]
    );
    assert_eq!(
        out["close"]["num_freed"],
        json!(1),
        "close_point_in_time: {}",
        out["close"]
    );
    assert_eq!(
        out["search_after_close"],
        json!("not_found"),
        "a search on a closed PIT must answer 404"
    );
}

/// Exports `clients-dump` from a fresh server of `config`'s flavor with elasticdump and
/// checks the NDJSON file holds every document exactly once.
/// Returns searchsim's request counters (`GET /_searchsim/stats` `requests`) after the export.
async fn elasticdump_export(config: searchsim::Config, mode_args: &[&str]) -> Value {
    let elasticdump = elasticdump();
    let sim = searchsim::SearchSim::start(config)
        .await
        .unwrap_or_else(|e| panic!("searchsim did not start: {e}"));
    let url = sim.url().to_string();
    let ids = load_index(&url, "clients-dump", DUMP_DOCS).await;
    let dir = tempfile::tempdir().expect("temp dir");
    let file = dir.path().join("clients-dump.ndjson");
    // `--limit 10000` is elasticdump's biggest page (the server's max_result_window).
    let mut args = vec![
        format!("--input={url}/clients-dump"),
        format!("--output={}", file.display()),
        "--type=data".to_string(),
        "--limit=10000".to_string(),
    ];
    args.extend(mode_args.iter().map(|a| a.to_string()));
    let output = run_program(&elasticdump, &args).await;
    let stats = call(
        &http(),
        reqwest::Method::GET,
        &format!("{url}/_searchsim/stats"),
        None,
    )
    .await;
    sim.shutdown().await;

    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        panic!(
            "elasticdump wrote no {}: {e}; its output:\n{}",
            file.display(),
            String::from_utf8_lossy(&output.stdout)
        )
    });
    // Shown when the test fails: elasticdump logs each page it got and wrote.
    let log = String::from_utf8_lossy(&output.stdout);
    let tail: Vec<&str> = log.lines().rev().take(12).collect();
    println!(
        "elasticdump {mode_args:?}, last log lines (newest first):\n{}",
        tail.join("\n")
    );
    let mut got = Vec::new();
    for (n, line) in text
        .lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
    {
        let doc: Value = serde_json::from_str(line)
            .unwrap_or_else(|e| panic!("line {} is not JSON ({e}): {line}", n + 1));
        assert_eq!(
            doc["_index"],
            json!("clients-dump"),
            "line {}: {line}",
            n + 1
        );
        let id = doc["_id"]
            .as_str()
            .unwrap_or_else(|| panic!("line {} has no _id: {line}", n + 1))
            .to_string();
        let seq = doc["_source"]["seq"]
            .as_u64()
            .unwrap_or_else(|| panic!("line {} has no _source.seq: {line}", n + 1));
        assert_eq!(
            id,
            doc_id(seq as usize),
            "line {}: _id and _source disagree",
            n + 1
        );
        got.push(id);
    }
    assert_exactly_once(
        &format!("elasticdump {mode_args:?} NDJSON export"),
        &got,
        &ids,
    );
    stats["requests"].clone()
}

/// elasticdump's default mode: a scroll over the OpenSearch flavor.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticdump_scroll_export_from_opensearch() {
    let requests = elasticdump_export(searchsim::Config::opensearch_3(), &[]).await;
    assert!(
        requests["scroll"].as_u64() >= Some((DUMP_DOCS / 10_000) as u64),
        "elasticdump did not scroll: {requests}"
    );
    assert_eq!(
        requests.get("pit_open"),
        None,
        "elasticdump opened a PIT: {requests}"
    );
}

/// elasticdump's `--searchAfter --pit` mode, which opens an Elasticsearch `_pit`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn elasticdump_pit_search_after_export_from_elasticsearch() {
    let requests = elasticdump_export(
        searchsim::Config::elasticsearch(),
        &["--searchAfter=true", "--pit=true", "--pitKeepAlive=5m"],
    )
    .await;
    // searchsim counts `POST /{index}/_pit` as `pit_open`; elasticdump 6.125.1 closes its PIT
    // with `DELETE /{index}/_pit`, which Elasticsearch has no route for either (it answers
    // an error and elasticdump retries), and searchsim counts those under the same kind.
    assert!(
        requests["pit_open"].as_u64() >= Some(1),
        "elasticdump did not open a PIT: {requests}"
    );
    assert!(
        requests["search"].as_u64() >= Some((DUMP_DOCS / 10_000 + 1) as u64),
        "elasticdump did not page with search_after: {requests}"
    );
    assert_eq!(
        requests.get("scroll"),
        None,
        "elasticdump scrolled: {requests}"
    );
}

/// The id checks must catch a duplicate, a missing and an unknown id, and an overlap between
/// slices, or the client tests above could pass on wrong output.
#[test]
fn id_checks_reject_wrong_output() {
    let ids: BTreeSet<String> = (0..4).map(doc_id).collect();
    let ok: Vec<String> = (0..4).map(doc_id).collect();
    assert_exactly_once("ok", &ok, &ids);
    let wrong = [
        vec![doc_id(0), doc_id(1), doc_id(2)],
        vec![doc_id(0), doc_id(1), doc_id(2), doc_id(2)],
        vec![doc_id(0), doc_id(1), doc_id(2), doc_id(3), doc_id(3)],
        vec![doc_id(0), doc_id(1), doc_id(2), "other".to_string()],
    ];
    for w in wrong {
        assert!(
            std::panic::catch_unwind(|| assert_exactly_once("wrong", &w, &ids)).is_err(),
            "{w:?}"
        );
    }
    let output = |slices: Value, pits_left: u64| {
        json!({"slicings": {"2": {
            "create_shards": {"total": SHARDS, "successful": SHARDS, "failed": 0},
            "slices": slices,
            "delete": {"pits": [{"pit_id": "p", "successful": true}]},
            "pits_left": pits_left,
        }}, "scan": ok})
    };
    check_opensearch_py_output(
        &output(json!([[doc_id(0), doc_id(1)], [doc_id(2), doc_id(3)]]), 0),
        &ids,
        &[2],
    );
    for bad in [
        output(
            json!([[doc_id(0), doc_id(1), doc_id(2)], [doc_id(2), doc_id(3)]]),
            0,
        ),
        output(json!([[doc_id(0), doc_id(1), doc_id(2), doc_id(3)], []]), 0),
        output(json!([[doc_id(0), doc_id(1)], [doc_id(2), doc_id(3)]]), 1),
        output(json!([[doc_id(0), doc_id(1), doc_id(2), doc_id(3)]]), 0),
    ] {
        let result = std::panic::catch_unwind(|| check_opensearch_py_output(&bad, &ids, &[2]));
        assert!(result.is_err(), "accepted {bad}");
    }
}
