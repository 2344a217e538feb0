//! The reconcile pipeline step by step against a mocked API server (tower-test): each test
//! states the API calls a reconcile must make, in order, answers them, and fails if a call
//! never comes (a timeout) or an unexpected one is made.

use std::sync::Arc;
use std::time::Duration;

use http::{Method, Request, Response};
use kube::Client;
use kube::client::Body;
use kube::runtime::controller::Action;
use kube::runtime::events::{Recorder, Reporter};
use serde_json::{Value, json};
use spillway_api::ExportJob;
use spillway_controller::reconcile::{Context, reconcile};
use spillway_controller::{ControllerStats, FINALIZER, Runs};
use spillway_queue::memory::MemoryQueue;

type Handle = tower_test::mock::Handle<Request<Body>, Response<Body>>;

fn job(extra_meta: Value, spec_patch: Value, status: Value) -> ExportJob {
    let mut v = json!({
        "apiVersion": "spillway.dev/v1alpha1",
        "kind": "ExportJob",
        "metadata": {"name": "nightly", "namespace": "exports", "uid": "u-1", "generation": 1, "resourceVersion": "7"},
        "spec": {
            "source": {"url": "http://127.0.0.1:9", "indices": ["logs-*"]},
            "output": {"format": "ndjson", "compression": "none", "destination": {"volume": {"path": "/tmp/spillway-mock"}}}
        }
    });
    merge(&mut v["metadata"], extra_meta);
    merge(&mut v["spec"], spec_patch);
    if !status.is_null() {
        v["status"] = status;
    }
    serde_json::from_value(v).unwrap()
}

fn merge(into: &mut Value, from: Value) {
    if let (Some(a), Value::Object(b)) = (into.as_object_mut(), from) {
        for (k, v) in b {
            a.insert(k, v);
        }
    }
}

fn context() -> (Arc<Context>, Handle) {
    let (svc, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    let client = Client::new(svc, "default");
    let ctx = Arc::new(Context {
        client: client.clone(),
        runs: Runs::new(Arc::new(MemoryQueue::new(5))),
        recorder: Recorder::new(
            client,
            Reporter {
                controller: "spillway-coordinator".into(),
                instance: Some("test".into()),
            },
        ),
        stats: Arc::new(ControllerStats::default()),
        status_interval: Duration::from_secs(5),
    });
    (ctx, handle)
}

/// Waits for the next request, checks it, answers it with `reply`, and returns its body.
async fn expect(handle: &mut Handle, method: Method, path: &str, reply: Value) -> Value {
    let (req, send) = tokio::time::timeout(Duration::from_secs(5), handle.next_request())
        .await
        .unwrap_or_else(|_| panic!("reconcile never made the expected call {method} {path}"))
        .expect("the client is alive");
    assert_eq!(req.method(), method, "call to {}", req.uri());
    assert_eq!(req.uri().path(), path);
    let body = req.into_body().collect_bytes().await.unwrap();
    let body: Value = if body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&body).unwrap()
    };
    send.send_response(
        Response::builder()
            .status(200)
            .header("content-type", "application/json")
            .body(Body::from(serde_json::to_vec(&reply).unwrap()))
            .unwrap(),
    );
    body
}

/// No further call is made within a short while.
async fn expect_no_more(handle: &mut Handle) {
    if let Ok(Some((req, _))) =
        tokio::time::timeout(Duration::from_millis(300), handle.next_request()).await
    {
        panic!("unexpected call {} {}", req.method(), req.uri());
    }
}

const JOB_PATH: &str = "/apis/spillway.dev/v1alpha1/namespaces/exports/exportjobs/nightly";
const EVENTS_PATH: &str = "/apis/events.k8s.io/v1/namespaces/exports/events";

#[tokio::test]
async fn a_new_job_first_gets_the_finalizer() {
    let (ctx, mut handle) = context();
    let j = job(json!({}), json!({}), Value::Null);
    let mut with_finalizer = serde_json::to_value(&j).unwrap();
    with_finalizer["metadata"]["finalizers"] = json!([FINALIZER]);
    let task = tokio::spawn(reconcile(Arc::new(j), ctx));
    let patch = expect(&mut handle, Method::PATCH, JOB_PATH, with_finalizer).await;
    let ops = patch.as_array().expect("a JSON patch");
    assert!(
        ops.iter()
            .any(|op| op["op"] == "add" && op["value"].to_string().contains(FINALIZER)),
        "the patch adds {FINALIZER}: {patch}"
    );
    let action = task.await.unwrap().expect("reconcile succeeds");
    assert_eq!(action, Action::await_change());
    expect_no_more(&mut handle).await;
}

#[tokio::test]
async fn an_invalid_spec_is_reported_then_stalls() {
    let (ctx, mut handle) = context();
    let j = job(
        json!({"finalizers": [FINALIZER]}),
        json!({"output": {"format": "ndjson", "compression": "snappy", "destination": {"volume": {"path": "/x"}}}}),
        Value::Null,
    );
    let reply = serde_json::to_value(&j).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(j), ctx));
    let event = expect(&mut handle, Method::POST, EVENTS_PATH, json!({})).await;
    assert_eq!(event["reason"], "InvalidSpec");
    assert_eq!(event["type"], "Warning");
    assert!(
        event["note"]
            .as_str()
            .unwrap()
            .contains("snappy is only for parquet")
    );
    let status = expect(
        &mut handle,
        Method::PATCH,
        &format!("{JOB_PATH}/status"),
        reply,
    )
    .await;
    assert_eq!(status["status"]["phase"], "Failed");
    let conds = status["status"]["conditions"].as_array().unwrap();
    let stalled = conds.iter().find(|c| c["type"] == "Stalled").unwrap();
    assert_eq!(stalled["status"], "True");
    assert_eq!(stalled["observedGeneration"], 1);
    assert_eq!(
        task.await.unwrap().expect("reconcile succeeds"),
        Action::await_change()
    );
    expect_no_more(&mut handle).await;
}

#[tokio::test]
async fn a_valid_job_starts_a_run_and_reports_planning() {
    let (ctx, mut handle) = context();
    let j = job(json!({"finalizers": [FINALIZER]}), json!({}), Value::Null);
    let reply = serde_json::to_value(&j).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(j), ctx.clone()));
    let event = expect(&mut handle, Method::POST, EVENTS_PATH, json!({})).await;
    assert_eq!(event["reason"], "Started");
    let status = expect(
        &mut handle,
        Method::PATCH,
        &format!("{JOB_PATH}/status"),
        reply,
    )
    .await;
    assert_eq!(status["status"]["phase"], "Planning");
    assert!(status["status"]["runId"].is_string());
    let reconciling = status["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Reconciling")
        .unwrap()
        .clone();
    assert_eq!(reconciling["status"], "True");
    assert_eq!(
        task.await.unwrap().expect("reconcile succeeds"),
        Action::requeue(Duration::from_secs(5))
    );
    assert!(
        ctx.runs.get("u-1").is_some(),
        "a run was started for the job"
    );
}

#[tokio::test]
async fn a_finished_job_past_its_ttl_is_deleted() {
    let (ctx, mut handle) = context();
    let j = job(
        json!({"finalizers": [FINALIZER]}),
        json!({"ttlSecondsAfterFinished": 0}),
        json!({"phase": "Succeeded", "observedGeneration": 1, "completionTime": "2024-01-01T00:00:00Z"}),
    );
    let reply = serde_json::to_value(&j).unwrap();
    let task = tokio::spawn(reconcile(Arc::new(j), ctx));
    let event = expect(&mut handle, Method::POST, EVENTS_PATH, json!({})).await;
    assert_eq!(event["reason"], "Expired");
    expect(&mut handle, Method::DELETE, JOB_PATH, reply).await;
    assert_eq!(
        task.await.unwrap().expect("reconcile succeeds"),
        Action::await_change()
    );
    expect_no_more(&mut handle).await;
}

#[tokio::test]
async fn deletion_without_a_run_just_releases_the_finalizer() {
    let (ctx, mut handle) = context();
    let j = job(
        json!({"finalizers": [FINALIZER], "deletionTimestamp": "2024-01-01T00:00:00Z"}),
        json!({}),
        Value::Null,
    );
    let mut released = serde_json::to_value(&j).unwrap();
    released["metadata"]["finalizers"] = json!([]);
    let task = tokio::spawn(reconcile(Arc::new(j), ctx));
    let patch = expect(&mut handle, Method::PATCH, JOB_PATH, released).await;
    assert!(
        patch
            .as_array()
            .unwrap()
            .iter()
            .any(|op| op["op"] == "remove"),
        "the finalizer is removed: {patch}"
    );
    assert_eq!(
        task.await.unwrap().expect("reconcile succeeds"),
        Action::await_change()
    );
    expect_no_more(&mut handle).await;
}
