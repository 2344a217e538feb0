//! kube-rs runtime against kubesim: `watcher` (list-then-watch and streaming lists) sees
//! create/update/delete in order, a `Controller` reconciles and writes status, the
//! `finalizer` helper adds and removes its finalizer, and Lease-based leader election
//! admits one holder at a time with 409 on a stale renew.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as FinalizerEvent, finalizer};
use kube::runtime::{Controller, WatchStreamExt, watcher};
use kube::{CustomResource, ResourceExt};
use parking_lot::Mutex;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

const WAIT: Duration = Duration::from_secs(15);

/// Typed view of the test CRD.
#[derive(CustomResource, Deserialize, Serialize, Clone, Debug, JsonSchema)]
#[kube(
    group = "example.com",
    version = "v1",
    kind = "Widget",
    namespaced,
    status = "WidgetStatus"
)]
pub struct WidgetSpec {
    size: i64,
}

/// Status written by the test controller.
#[derive(Deserialize, Serialize, Clone, Debug, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WidgetStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    phase: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    observed_generation: Option<i64>,
}

fn typed(name: &str, size: i64) -> Widget {
    Widget::new(name, WidgetSpec { size })
}

async fn watcher_sees_changes_in_order(streaming: bool) {
    let (server, _) = server_with_widgets().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &typed("pre", 1))
        .await
        .unwrap();
    let mut config = watcher::Config::default().page_size(1);
    if streaming {
        config = config.streaming_lists();
    }
    let mut stream = watcher(api.clone(), config).boxed();
    let mut log: Vec<String> = Vec::new();
    let mut next = async |log: &mut Vec<String>| {
        let ev = tokio::time::timeout(WAIT, stream.try_next())
            .await
            .expect("an event in time")
            .unwrap()
            .unwrap();
        let text = match ev {
            watcher::Event::Init => "init".to_string(),
            watcher::Event::InitApply(o) => format!("init-apply {}", o.name_any()),
            watcher::Event::InitDone => "init-done".to_string(),
            watcher::Event::Apply(o) => format!("apply {} {}", o.name_any(), o.spec.size),
            watcher::Event::Delete(o) => format!("delete {}", o.name_any()),
        };
        log.push(text);
    };
    for _ in 0..3 {
        next(&mut log).await;
    }
    assert_eq!(log, vec!["init", "init-apply pre", "init-done"]);
    api.create(&PostParams::default(), &typed("w", 1))
        .await
        .unwrap();
    api.patch(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    for _ in 0..3 {
        next(&mut log).await;
    }
    assert_eq!(&log[3..], &["apply w 1", "apply w 2", "delete w"]);
    let watches = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == "watch")
        .collect::<Vec<_>>();
    assert!(!watches.is_empty());
    assert_eq!(
        watches[0].query.contains("sendInitialEvents=true"),
        streaming,
        "{:?}",
        watches[0].query
    );
    if !streaming {
        assert!(
            server
                .requests()
                .iter()
                .any(|r| r.verb == "list" && r.query.contains("limit=1"))
        );
    }
}

#[tokio::test]
async fn watcher_list_then_watch() {
    watcher_sees_changes_in_order(false).await;
}

#[tokio::test]
async fn watcher_streaming_list() {
    watcher_sees_changes_in_order(true).await;
}

/// A watcher whose resourceVersion was compacted away (it saw no event or bookmark while
/// other objects changed) gets 410 on its next watch, re-lists and still sees later changes.
#[tokio::test]
async fn watcher_recovers_from_410() {
    let (server, _) = server_with_widgets().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let config = watcher::Config::default()
        .labels("app=x")
        .disable_bookmarks()
        .timeout(1);
    let task_api = api.clone();
    let api_for_task = move || task_api.clone();
    // the watcher only makes progress when polled: drive it from a task
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Result<Widget, String>>();
    let driver = tokio::spawn(async move {
        let mut stream = watcher(api_for_task(), config).applied_objects().boxed();
        // errors are yielded and the watcher recovers on the next poll
        while let Some(item) = stream.next().await {
            if tx.send(item.map_err(|e| e.to_string())).is_err() {
                return;
            }
        }
    });
    let mut a = typed("a", 1);
    a.metadata.labels = Some([("app".to_string(), "x".to_string())].into());
    api.create(&PostParams::default(), &a).await.unwrap();
    let first = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.name_any(), "a");
    // changes the watcher does not see move the RV on; then the history is dropped
    api.create(&PostParams::default(), &typed("other", 1))
        .await
        .unwrap();
    let lists_before = server
        .requests()
        .iter()
        .filter(|r| r.verb == "list")
        .count();
    server.compact_history();
    // the watch ends after timeoutSeconds=1; its restart gets 410 and the watcher re-lists
    eventually("a re-list after 410", WAIT, || async {
        (server
            .requests()
            .iter()
            .filter(|r| r.verb == "list")
            .count()
            > lists_before)
            .then_some(())
    })
    .await;
    let mut b = typed("b", 2);
    b.metadata.labels = a.metadata.labels.clone();
    api.create(&PostParams::default(), &b).await.unwrap();
    let mut errors = Vec::new();
    let seen = tokio::time::timeout(WAIT, async {
        loop {
            match rx.recv().await.unwrap() {
                Ok(o) if o.name_any() == "b" => return o,
                Ok(_) => {}
                Err(e) => errors.push(e),
            }
        }
    })
    .await
    .expect("b is seen after the re-list");
    assert_eq!(seen.spec.size, 2);
    assert!(
        errors
            .iter()
            .any(|e| e.contains("too old resource version") && e.contains("Expired")),
        "{errors:?}"
    );
    driver.abort();
}

struct Ctx {
    client: kube::Client,
    cleaned: Mutex<Vec<String>>,
}

#[derive(Debug, thiserror::Error)]
#[error("reconcile failed: {0}")]
struct ReconcileError(#[source] kube::Error);

const FINALIZER: &str = "example.com/cleanup";

async fn reconcile(
    obj: Arc<Widget>,
    ctx: Arc<Ctx>,
) -> Result<Action, kube::runtime::finalizer::Error<ReconcileError>> {
    let api: Api<Widget> = Api::namespaced(ctx.client.clone(), &obj.namespace().unwrap());
    finalizer(&api, FINALIZER, obj, |event| async {
        match event {
            FinalizerEvent::Apply(w) => {
                let status = json!({"status": {"phase": "Ready", "observedGeneration": w.metadata.generation}});
                api.patch_status(&w.name_any(), &PatchParams::default(), &Patch::Merge(status))
                    .await
                    .map_err(ReconcileError)?;
                Ok(Action::await_change())
            }
            FinalizerEvent::Cleanup(w) => {
                ctx.cleaned.lock().push(w.name_any());
                Ok(Action::await_change())
            }
        }
    })
    .await
}

fn error_policy(
    _: Arc<Widget>,
    _: &kube::runtime::finalizer::Error<ReconcileError>,
    _: Arc<Ctx>,
) -> Action {
    Action::requeue(Duration::from_millis(50))
}

/// A Controller with the finalizer helper: the finalizer is added, status is written,
/// deletion runs cleanup and the finalizer is removed so the object goes away.
#[tokio::test]
async fn controller_and_finalizer() {
    let (server, _) = server_with_widgets().await;
    let client = server.client();
    let api: Api<Widget> = Api::namespaced(client.clone(), "default");
    let ctx = Arc::new(Ctx {
        client: client.clone(),
        cleaned: Mutex::new(Vec::new()),
    });
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let controller = Controller::new(api.clone(), watcher::Config::default())
        .graceful_shutdown_on(async move {
            let _ = stop_rx.await;
        })
        .run(reconcile, error_policy, ctx.clone())
        .for_each(|_| async {});
    let handle = tokio::spawn(controller);

    api.create(&PostParams::default(), &typed("w1", 1))
        .await
        .unwrap();
    let ready = eventually("w1 reconciled", WAIT, || async {
        let w = api.get("w1").await.unwrap();
        w.status
            .as_ref()
            .and_then(|s| s.phase.clone())
            .filter(|p| p == "Ready")
            .map(|_| w)
    })
    .await;
    assert_eq!(ready.finalizers(), &[FINALIZER.to_string()]);
    assert_eq!(ready.status.as_ref().unwrap().observed_generation, Some(1));
    // a spec change is reconciled again with the new generation
    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 5}})),
    )
    .await
    .unwrap();
    eventually("generation 2 observed", WAIT, || async {
        let w = api.get("w1").await.unwrap();
        (w.status.as_ref().and_then(|s| s.observed_generation) == Some(2)).then_some(())
    })
    .await;

    api.delete("w1", &DeleteParams::default()).await.unwrap();
    eventually("w1 deleted after cleanup", WAIT, || async {
        api.get_opt("w1").await.unwrap().is_none().then_some(())
    })
    .await;
    assert_eq!(*ctx.cleaned.lock(), vec!["w1".to_string()]);
    // the finalizer helper's JSON patches went through: add with test, remove with test
    let patches: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.verb == "patch" && r.subresource.is_none())
        .collect();
    assert!(
        patches.iter().filter(|r| r.code == 200).count() >= 2,
        "{patches:?}"
    );
    let _ = stop_tx.send(());
    tokio::time::timeout(WAIT, handle)
        .await
        .expect("controller stops")
        .unwrap();
}

/// Lease-based leader election in the style of kube-lease-manager: get, then create or
/// replace with the read resourceVersion.
struct Elector {
    api: Api<Lease>,
    me: String,
    ttl_secs: i64,
}

impl Elector {
    /// Tries to take or renew the lease. Ok(true): holder after this call.
    async fn try_acquire(&self) -> kube::Result<bool> {
        let now = chrono::Utc::now();
        let stamp = now.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string();
        match self.api.get_opt("leader").await? {
            None => {
                let lease: Lease = serde_json::from_value(json!({
                    "metadata": {"name": "leader"},
                    "spec": {"holderIdentity": self.me, "leaseDurationSeconds": self.ttl_secs,
                             "acquireTime": stamp, "renewTime": stamp, "leaseTransitions": 0}
                }))
                .unwrap();
                match self.api.create(&PostParams::default(), &lease).await {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
            Some(current) => {
                let mut v = serde_json::to_value(&current).unwrap();
                let holder = v["spec"]["holderIdentity"]
                    .as_str()
                    .unwrap_or("")
                    .to_string();
                let renewed =
                    chrono::DateTime::parse_from_rfc3339(v["spec"]["renewTime"].as_str().unwrap())
                        .unwrap();
                let expired = renewed + chrono::Duration::seconds(self.ttl_secs) < now;
                if holder != self.me && !expired {
                    return Ok(false);
                }
                if holder != self.me {
                    v["spec"]["leaseTransitions"] =
                        json!(v["spec"]["leaseTransitions"].as_i64().unwrap_or(0) + 1);
                    v["spec"]["acquireTime"] = json!(stamp);
                }
                v["spec"]["holderIdentity"] = json!(self.me);
                v["spec"]["renewTime"] = json!(stamp);
                match self
                    .api
                    .replace(
                        "leader",
                        &PostParams::default(),
                        &serde_json::from_value(v).unwrap(),
                    )
                    .await
                {
                    Ok(_) => Ok(true),
                    Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
                    Err(e) => Err(e),
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lease_leader_election() {
    let server = kubesim::Server::new(options());
    let a = Elector {
        api: Api::namespaced(server.client_with_token("ta"), "default"),
        me: "a".into(),
        ttl_secs: 1,
    };
    let b = Elector {
        api: Api::namespaced(server.client_with_token("tb"), "default"),
        me: "b".into(),
        ttl_secs: 1,
    };
    server.add_token("ta", "pod-a");
    server.add_token("tb", "pod-b");
    // contenders race; exactly one wins every round while the holder keeps renewing
    for _ in 0..20 {
        let (ra, rb) = tokio::join!(a.try_acquire(), b.try_acquire());
        let (ra, rb) = (ra.unwrap(), rb.unwrap());
        assert!(ra ^ rb, "exactly one holder: a={ra} b={rb}");
    }
    let leases: Api<Lease> = Api::namespaced(server.client(), "default");
    let held = leases.get("leader").await.unwrap();
    let holder = held.spec.as_ref().unwrap().holder_identity.clone().unwrap();
    let (leader, follower) = if holder == "a" { (&a, &b) } else { (&b, &a) };
    // the leader stops renewing; the follower takes over once the lease expired
    eventually("the follower takes over", WAIT, || async {
        follower.try_acquire().await.unwrap().then_some(())
    })
    .await;
    let now = leases.get("leader").await.unwrap();
    assert_eq!(
        now.spec.as_ref().unwrap().holder_identity.as_deref(),
        Some(follower.me.as_str())
    );
    assert_eq!(now.spec.as_ref().unwrap().lease_transitions, Some(1));
    // the old leader renews with its stale copy: 409
    let mut stale = held.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some(leader.me.clone());
    let e = leader
        .api
        .replace("leader", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 409);
    // both identities show up in the request log
    let users: std::collections::BTreeSet<String> =
        server.requests().into_iter().map(|r| r.user).collect();
    assert!(
        users.contains("pod-a") && users.contains("pod-b"),
        "{users:?}"
    );
}

/// kube-runtime's event `Recorder` (events.k8s.io/v1): the first publish creates, a repeat
/// within the cache window merge-patches the same Event with a series count.
#[tokio::test]
async fn event_recorder() {
    use kube::Resource;
    use kube::runtime::events::{Event, EventType, Recorder, Reporter};
    let (server, _) = server_with_widgets().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    let w = api
        .create(&PostParams::default(), &typed("w", 1))
        .await
        .unwrap();
    let recorder = Recorder::new(
        server.client(),
        Reporter {
            controller: "spillway-controller".into(),
            instance: Some("pod-0".into()),
        },
    );
    let event = Event {
        type_: EventType::Normal,
        reason: "Planned".into(),
        note: Some("12 shards".into()),
        action: "Plan".into(),
        secondary: None,
    };
    recorder.publish(&event, &w.object_ref(&())).await.unwrap();
    recorder.publish(&event, &w.object_ref(&())).await.unwrap();
    let events: Api<k8s_openapi::api::events::v1::Event> =
        Api::namespaced(server.client(), "default");
    let list = events.list(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1, "the repeat updates the same Event");
    let e = &list.items[0];
    assert_eq!(e.reason.as_deref(), Some("Planned"));
    assert_eq!(e.regarding.as_ref().unwrap().name.as_deref(), Some("w"));
    assert_eq!(e.series.as_ref().map(|s| s.count), Some(2));
    let verbs: Vec<String> = server
        .requests()
        .into_iter()
        .filter(|r| r.resource.as_deref() == Some("events"))
        .map(|r| format!("{} {}", r.verb, r.group.unwrap_or_default()))
        .collect();
    assert_eq!(
        verbs,
        vec![
            "create events.k8s.io",
            "patch events.k8s.io",
            "list events.k8s.io"
        ]
    );
}

/// Metadata-only watches (`Api<PartialObjectMeta<K>>`) and `list_metadata` get
/// PartialObjectMetadata.
#[tokio::test]
async fn metadata_watcher_and_list() {
    let (server, _) = server_with_widgets().await;
    let api: Api<Widget> = Api::namespaced(server.client(), "default");
    api.create(&PostParams::default(), &typed("m", 1))
        .await
        .unwrap();
    let list = api.list_metadata(&Default::default()).await.unwrap();
    assert_eq!(list.items.len(), 1);
    assert_eq!(list.items[0].metadata.name.as_deref(), Some("m"));
    assert_eq!(
        list.items[0].types.as_ref().map(|t| t.kind.as_str()),
        Some("PartialObjectMetadata")
    );
    let meta_api: Api<kube::core::PartialObjectMeta<Widget>> =
        Api::namespaced(server.client(), "default");
    let mut stream = watcher(meta_api, watcher::Config::default())
        .applied_objects()
        .boxed();
    let first = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(first.metadata.name.as_deref(), Some("m"));
    api.patch(
        "m",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"x": "y"}}})),
    )
    .await
    .unwrap();
    let second = tokio::time::timeout(WAIT, stream.try_next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.metadata.labels.unwrap()["x"], "y");
}
