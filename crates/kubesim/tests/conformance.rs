//! The KUBESIM-NOTES §2 conformance checklist as black-box tests through kube-rs (and raw
//! requests where the exact status code or body matters), adapted from the upstream
//! `[Conformance]` e2e tests named in each test's comment.

mod common;

use std::time::Duration;

use common::*;
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret};
use k8s_openapi::api::events::v1::Event as EventV1;
use kube::ResourceExt;
use kube::api::{
    Api, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams, WatchEvent,
    WatchParams,
};
use kube::core::ObjectMeta;
use kubesim::{Server, ServerOptions};
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(10);

fn rv_of(o: &DynamicObject) -> u64 {
    o.resource_version()
        .expect("objects carry an RV")
        .parse()
        .expect("RVs are numbers")
}

/// 1. ["should include custom resource definition resources in discovery documents"]
#[tokio::test]
async fn discovery_lists_resources_and_status_and_new_crds() {
    let server = Server::new(options());
    let (code, _, _) = raw(&server, "GET", "/apis/example.com/v1", None, None).await;
    assert_eq!(code, 404, "no group before the CRD exists");
    let (_, _, groups) = raw(&server, "GET", "/apis", None, None).await;
    assert!(!groups.to_string().contains("example.com"));

    install_widgets(&server).await;
    let (code, _, list) = raw(&server, "GET", "/apis/example.com/v1", None, None).await;
    assert_eq!(code, 200);
    assert_eq!(list["kind"], "APIResourceList");
    let resources = list["resources"].as_array().unwrap();
    let widgets = resources
        .iter()
        .find(|r| r["name"] == "widgets")
        .expect("widgets listed");
    assert_eq!(widgets["kind"], "Widget");
    assert_eq!(widgets["namespaced"], true);
    assert_eq!(widgets["shortNames"], json!(["wd"]));
    assert_eq!(widgets["categories"], json!(["gadgets"]));
    assert!(
        widgets["verbs"]
            .as_array()
            .unwrap()
            .contains(&json!("watch"))
    );
    assert!(
        resources.iter().any(|r| r["name"] == "widgets/status"),
        "status subresource listed"
    );
    let (_, _, groups) = raw(&server, "GET", "/apis", None, None).await;
    assert!(
        groups["groups"]
            .as_array()
            .unwrap()
            .iter()
            .any(|g| g["name"] == "example.com")
    );

    // kube-rs discovery finds the spillway CRD after it is created
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(server.client());
    crds.create(&PostParams::default(), &spillway_api::crd::crd())
        .await
        .unwrap();
    let discovery = kube::Discovery::new(server.client()).run().await.unwrap();
    let found = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .any(|(ar, caps)| {
            ar.kind == "ExportJob"
                && ar.plural == "exportjobs"
                && caps.subresources.iter().any(|(s, _)| s.plural == "status")
        });
    assert!(
        found,
        "kube::Discovery sees ExportJob with its status subresource"
    );
    for path in [
        "/version",
        "/api",
        "/api/v1",
        "/openapi/v3",
        "/openapi/v3/apis/spillway.dev/v1alpha1",
    ] {
        assert_eq!(raw(&server, "GET", path, None, None).await.0, 200, "{path}");
    }
    assert_eq!(raw(&server, "GET", "/openapi/v2", None, None).await.0, 404);
}

/// 2. Create sets uid, RV, creationTimestamp, generation 1; duplicate 409; missing 404 Status.
#[tokio::test]
async fn create_metadata_duplicate_and_missing() {
    let (server, api) = server_with_widgets().await;
    let w = api
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .unwrap();
    assert!(w.metadata.uid.as_deref().is_some_and(|u| u.len() == 36));
    assert!(rv_of(&w) > 0);
    assert!(w.metadata.creation_timestamp.is_some());
    assert_eq!(w.metadata.generation, Some(1));
    assert_eq!(w.metadata.namespace.as_deref(), Some("default"));

    let e = api
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .unwrap_err();
    assert_eq!(
        (code_of(&e), reason_of(&e).as_str()),
        (409, "AlreadyExists")
    );

    let e = api.get("nope").await.unwrap_err();
    assert_eq!((code_of(&e), reason_of(&e).as_str()), (404, "NotFound"));
    let (code, _, status) = raw(
        &server,
        "GET",
        "/apis/example.com/v1/namespaces/default/widgets/nope",
        None,
        None,
    )
    .await;
    assert_eq!(code, 404);
    assert_eq!(status["kind"], "Status");
    assert_eq!(status["status"], "Failure");
    assert_eq!(status["reason"], "NotFound");
    assert_eq!(status["code"], 404);
    assert_eq!(status["message"], "widgets.example.com \"nope\" not found");
    assert_eq!(
        status["details"],
        json!({"name": "nope", "group": "example.com", "kind": "widgets"})
    );

    // a namespace that does not exist
    let other: Api<DynamicObject> = Api::namespaced_with(server.client(), "ghost", &widget_ar());
    let e = other
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 404);
    // generateName
    let mut g = widget("", 2);
    g.metadata.name = None;
    g.metadata.generate_name = Some("gen-".into());
    let made = api.create(&PostParams::default(), &g).await.unwrap();
    assert!(made.name_any().starts_with("gen-") && made.name_any().len() == 9);
}

/// 3. PUT with a stale RV → 409; without RV → 422; PUT never creates.
#[tokio::test]
async fn put_rules() {
    let (_server, api) = server_with_widgets().await;
    let w = api
        .create(&PostParams::default(), &widget("w1", 3))
        .await
        .unwrap();
    let mut fresh = w.clone();
    fresh.data["spec"]["size"] = json!(4);
    let updated = api
        .replace("w1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    assert!(rv_of(&updated) > rv_of(&w));
    let mut stale = w.clone();
    stale.data["spec"]["size"] = json!(5);
    let e = api
        .replace("w1", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!((code_of(&e), reason_of(&e).as_str()), (409, "Conflict"));
    let mut no_rv = updated.clone();
    no_rv.metadata.resource_version = None;
    let e = api
        .replace("w1", &PostParams::default(), &no_rv)
        .await
        .unwrap_err();
    assert_eq!((code_of(&e), reason_of(&e).as_str()), (422, "Invalid"));
    let mut missing = widget("w2", 1);
    missing.metadata.resource_version = Some(updated.resource_version().unwrap());
    let e = api
        .replace("w2", &PostParams::default(), &missing)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 404);
    assert!(
        api.get_opt("w2").await.unwrap().is_none(),
        "PUT did not create"
    );
}

/// 4. ["…status sub-resource works"]: status split, generation rules, no RV bump on no-op.
#[tokio::test]
async fn status_subresource_and_generation() {
    let (_server, api) = server_with_widgets().await;
    let mut w = widget("w1", 3);
    w.data["status"] = json!({"phase": "Ignored"});
    let w = api.create(&PostParams::default(), &w).await.unwrap();
    assert!(
        w.data.get("status").is_none(),
        "status is dropped on create"
    );

    // main resource write: status ignored, spec change bumps generation
    let mut m = w.clone();
    m.data["spec"]["size"] = json!(7);
    m.data["status"] = json!({"phase": "Sneaky"});
    let m = api.replace("w1", &PostParams::default(), &m).await.unwrap();
    assert_eq!(m.metadata.generation, Some(2));
    assert!(m.data.get("status").is_none());

    // status write: spec ignored, generation unchanged, RV bumped
    let mut s = m.clone();
    s.data["spec"]["size"] = json!(99);
    s.data["status"] = json!({"phase": "Ready"});
    let s = api
        .replace_status("w1", &PostParams::default(), &s)
        .await
        .unwrap();
    assert_eq!(s.data["status"]["phase"], "Ready");
    assert_eq!(s.data["spec"]["size"], 7);
    assert_eq!(s.metadata.generation, Some(2));
    assert!(rv_of(&s) > rv_of(&m));

    // merge patch to /status
    let p = api
        .patch_status(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"phase": "Done"}})),
        )
        .await
        .unwrap();
    assert_eq!(p.data["status"]["phase"], "Done");
    assert_eq!(p.metadata.generation, Some(2));

    // metadata-only change: no generation bump
    let l = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(l.metadata.generation, Some(2));

    // no-op: same RV, no event
    let again = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"a": "b"}}})),
        )
        .await
        .unwrap();
    assert_eq!(again.resource_version(), l.resource_version());
    let noop = api
        .replace("w1", &PostParams::default(), &again)
        .await
        .unwrap();
    assert_eq!(noop.resource_version(), l.resource_version());
    assert_eq!(
        api.get_status("w1").await.unwrap().data["status"]["phase"],
        "Done"
    );

    // server-side apply of status through /status, as controllers write it
    let applied = json!({"apiVersion": "example.com/v1", "kind": "Widget", "status": {"phase": "Applied", "observedGeneration": 2}});
    let a = api
        .patch_status(
            "w1",
            &PatchParams::apply("widget-controller").force(),
            &Patch::Apply(&applied),
        )
        .await
        .unwrap();
    assert_eq!(a.data["status"]["phase"], "Applied");
    assert_eq!(a.data["status"]["observedGeneration"], 2);
    assert_eq!(
        a.data["spec"]["size"], 7,
        "spec untouched by a status apply"
    );
    assert_eq!(a.metadata.generation, Some(2));
    let entry = a
        .metadata
        .managed_fields
        .unwrap()
        .into_iter()
        .find(|e| e.manager.as_deref() == Some("widget-controller"))
        .expect("the applier owns fields");
    assert_eq!(entry.operation.as_deref(), Some("Apply"));
    assert_eq!(entry.subresource.as_deref(), Some("status"));
    // status fields in a main-resource apply are ignored
    let main = json!({"apiVersion": "example.com/v1", "kind": "Widget", "spec": {"size": 7}, "status": {"phase": "Nope"}});
    let m2 = api
        .patch(
            "w1",
            &PatchParams::apply("spec-owner"),
            &Patch::Apply(&main),
        )
        .await
        .unwrap();
    assert_eq!(m2.data["status"]["phase"], "Applied");
}

/// 5. Merge patch; JSON patch with `test` (422 on failure); apply (fieldManager, 409, force,
/// create-by-apply); strategic merge patch → 415.
#[tokio::test]
async fn patch_flavors() {
    let (server, api) = server_with_widgets().await;
    api.create(&PostParams::default(), &widget("w1", 3))
        .await
        .unwrap();
    let m = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"label": "abc", "size": 4}})),
        )
        .await
        .unwrap();
    assert_eq!(m.data["spec"]["label"], "abc");
    assert_eq!(m.data["spec"]["size"], 4);
    // merge patch with a stale RV is a precondition
    let e = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"resourceVersion": "1"}, "spec": {"size": 5}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 409);

    let ok: json_patch_ops::Ops = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/size", "value": 4},
        {"op": "replace", "path": "/spec/size", "value": 6}
    ]))
    .unwrap();
    let j = api
        .patch("w1", &PatchParams::default(), &Patch::Json::<()>(ok))
        .await
        .unwrap();
    assert_eq!(j.data["spec"]["size"], 6);
    let bad: json_patch_ops::Ops = serde_json::from_value(json!([
        {"op": "test", "path": "/spec/size", "value": 4},
        {"op": "replace", "path": "/spec/size", "value": 8}
    ]))
    .unwrap();
    let e = api
        .patch("w1", &PatchParams::default(), &Patch::Json::<()>(bad))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 422, "a failed JSON-patch test is 422");
    assert_eq!(
        api.get("w1").await.unwrap().data["spec"]["size"],
        6,
        "nothing applied"
    );

    // apply: fieldManager required
    let path = "/apis/example.com/v1/namespaces/default/widgets/w2";
    let yaml =
        b"apiVersion: example.com/v1\nkind: Widget\nmetadata:\n  name: w2\nspec:\n  size: 2\n"
            .to_vec();
    let (code, _, _) = raw_bytes(
        &server,
        "PATCH",
        path,
        Some("application/apply-patch+yaml"),
        Some(yaml.clone()),
    )
    .await;
    assert_eq!(code, 400);
    // create by apply
    let applied = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 2}});
    let a = api
        .patch("w2", &PatchParams::apply("alice"), &Patch::Apply(&applied))
        .await
        .unwrap();
    assert_eq!(a.data["spec"]["size"], 2);
    assert_eq!(a.metadata.generation, Some(1));
    assert!(
        a.metadata
            .managed_fields
            .as_ref()
            .is_some_and(|m| m.iter().any(|e| e.manager.as_deref() == Some("alice")))
    );
    // bob changes alice's field: 409 with the field named
    let other = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"size": 9}});
    let e = api
        .patch("w2", &PatchParams::apply("bob"), &Patch::Apply(&other))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 409);
    match &e {
        kube::Error::Api(s) => assert!(
            s.message.contains(".spec.size") && s.message.contains("alice"),
            "{}",
            s.message
        ),
        _ => unreachable!(),
    }
    // force takes it over
    let f = api
        .patch(
            "w2",
            &PatchParams::apply("bob").force(),
            &Patch::Apply(&other),
        )
        .await
        .unwrap();
    assert_eq!(f.data["spec"]["size"], 9);
    // alice no longer owns size; re-applying without it does not remove bob's value
    let alice2 = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {"label": "x"}});
    let a2 = api
        .patch("w2", &PatchParams::apply("alice"), &Patch::Apply(&alice2))
        .await
        .unwrap();
    assert_eq!(a2.data["spec"]["size"], 9);
    assert_eq!(a2.data["spec"]["label"], "x");
    // alice drops label: removed since she was its only owner
    let alice3 = json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "w2"}, "spec": {}});
    let a3 = api
        .patch("w2", &PatchParams::apply("alice"), &Patch::Apply(&alice3))
        .await
        .unwrap();
    assert!(a3.data["spec"].get("label").is_none());

    // strategic merge patch on a custom resource
    let e = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Strategic(json!({"spec": {"size": 1}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 415);
}

/// The JSON patch type kube-rs takes.
mod json_patch_ops {
    pub type Ops = json_patch::Patch;
}

/// 6. Finalizers: DELETE sets deletionTimestamp and bumps generation once; removing the last
/// finalizer produces DELETED.
#[tokio::test]
async fn finalizers_and_deletion_timestamp() {
    let (_server, api) = server_with_widgets().await;
    let mut w = widget("w1", 3);
    w.metadata.finalizers = Some(vec!["example.com/cleanup".into()]);
    let w = api.create(&PostParams::default(), &w).await.unwrap();
    let mut events = api
        .watch(&WatchParams::default(), &w.resource_version().unwrap())
        .await
        .unwrap()
        .boxed();

    let deleted = api.delete("w1", &DeleteParams::default()).await.unwrap();
    let marked = deleted
        .left()
        .expect("an object with finalizers is returned, not a Status");
    assert!(marked.metadata.deletion_timestamp.is_some());
    assert_eq!(marked.metadata.generation, Some(2));
    // a second delete changes nothing
    let again = api
        .delete("w1", &DeleteParams::default())
        .await
        .unwrap()
        .left()
        .unwrap();
    assert_eq!(again.metadata.generation, Some(2));
    assert_eq!(again.resource_version(), marked.resource_version());
    // adding a finalizer while deleting is forbidden
    let e = api
        .patch(
            "w1",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"finalizers": ["example.com/cleanup", "new"]}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 422);

    api.patch(
        "w1",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"finalizers": null}})),
    )
    .await
    .unwrap();
    assert!(api.get_opt("w1").await.unwrap().is_none());
    let mut seen = Vec::new();
    while seen.len() < 2 {
        match tokio::time::timeout(WAIT, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Modified(o) => {
                seen.push(("MODIFIED", o.metadata.deletion_timestamp.is_some()))
            }
            WatchEvent::Deleted(o) => {
                seen.push(("DELETED", o.metadata.deletion_timestamp.is_some()))
            }
            WatchEvent::Bookmark(_) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(seen, vec![("MODIFIED", true), ("DELETED", true)]);
}

async fn next_event(
    s: &mut (impl futures::Stream<Item = kube::Result<WatchEvent<DynamicObject>>> + Unpin),
) -> (String, String, Option<String>) {
    loop {
        let ev = tokio::time::timeout(WAIT, s.try_next())
            .await
            .expect("an event in time")
            .unwrap()
            .expect("stream open");
        return match ev {
            WatchEvent::Added(o) => ("ADDED".into(), o.name_any(), o.resource_version()),
            WatchEvent::Modified(o) => ("MODIFIED".into(), o.name_any(), o.resource_version()),
            WatchEvent::Deleted(o) => ("DELETED".into(), o.name_any(), o.resource_version()),
            WatchEvent::Bookmark(_) => continue,
            WatchEvent::Error(e) => ("ERROR".into(), e.reason.clone(), Some(e.code.to_string())),
        };
    }
}

/// 7. Watch: order, restart from an RV, selector exit = DELETED, bookmarks, 410 Gone,
/// sendInitialEvents.
#[tokio::test]
async fn watch_semantics() {
    let (server, api) = server_with_widgets().await;
    let start = server.resource_version().to_string();
    // two concurrent watches see the same order ["…concurrent watches in same order"]
    let mut w1 = api
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    let mut w2 = api
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    api.create(&PostParams::default(), &widget("a", 1))
        .await
        .unwrap();
    api.create(&PostParams::default(), &widget("b", 1))
        .await
        .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"spec": {"size": 2}})),
    )
    .await
    .unwrap();
    api.delete("b", &DeleteParams::default()).await.unwrap();
    let mut order1 = Vec::new();
    let mut order2 = Vec::new();
    for _ in 0..4 {
        order1.push(next_event(&mut w1).await);
        order2.push(next_event(&mut w2).await);
    }
    let kinds: Vec<(String, String)> = order1
        .iter()
        .map(|(k, n, _)| (k.clone(), n.clone()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("ADDED".into(), "a".into()),
            ("ADDED".into(), "b".into()),
            ("MODIFIED".into(), "a".into()),
            ("DELETED".into(), "b".into())
        ]
    );
    assert_eq!(order1, order2);

    // restart from the RV of the second event replays the rest ["…from a specific resource version"]
    let from = order1[1].2.clone().unwrap();
    let mut w3 = api
        .watch(&WatchParams::default(), &from)
        .await
        .unwrap()
        .boxed();
    assert_eq!(next_event(&mut w3).await.0, "MODIFIED");
    assert_eq!(next_event(&mut w3).await.0, "DELETED");

    // selector exit shown as DELETED, entry as ADDED ["…stops meeting the requirements of the selector"]
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watch": "yes"}}})),
    )
    .await
    .unwrap();
    let now = server.resource_version().to_string();
    let mut sel = api
        .watch(&WatchParams::default().labels("watch=yes"), &now)
        .await
        .unwrap()
        .boxed();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watch": "no"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "a",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"watch": "yes"}}})),
    )
    .await
    .unwrap();
    assert_eq!(next_event(&mut sel).await.0, "DELETED");
    assert_eq!(next_event(&mut sel).await.0, "ADDED");

    // bookmarks arrive with an RV
    let mut bm = api
        .watch(
            &WatchParams::default(),
            &server.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    let bookmark_rv = loop {
        match tokio::time::timeout(WAIT, bm.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Bookmark(b) => break b.metadata.resource_version,
            _ => continue,
        }
    };
    assert!(bookmark_rv.parse::<u64>().unwrap() >= 1);

    // RV "0": current objects first as ADDED
    let mut zero = api
        .watch(&WatchParams::default(), "0")
        .await
        .unwrap()
        .boxed();
    assert_eq!(
        next_event(&mut zero).await,
        (
            "ADDED".into(),
            "a".into(),
            api.get("a").await.unwrap().resource_version()
        )
    );

    // sendInitialEvents ends with the initial-events-end bookmark
    let mut stream = api
        .watch(&WatchParams::default().initial_events(), "")
        .await
        .unwrap()
        .boxed();
    let mut added = 0;
    loop {
        match tokio::time::timeout(WAIT, stream.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(_) => added += 1,
            WatchEvent::Bookmark(b) => {
                assert_eq!(
                    b.metadata
                        .annotations
                        .get("k8s.io/initial-events-end")
                        .map(String::as_str),
                    Some("true")
                );
                break;
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(added, 1);

    // 410 after the history is compacted
    server.compact_history();
    let mut old = api
        .watch(&WatchParams::default(), &start)
        .await
        .unwrap()
        .boxed();
    let (kind, reason, code) = next_event(&mut old).await;
    assert_eq!(
        (kind.as_str(), reason.as_str(), code.as_deref()),
        ("ERROR", "Expired", Some("410"))
    );

    // timeoutSeconds ends the stream
    let mut short = api
        .watch(
            &WatchParams::default().timeout(1),
            &server.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    let end = tokio::time::timeout(WAIT, async {
        while let Some(ev) = short.try_next().await.unwrap() {
            assert!(matches!(ev, WatchEvent::Bookmark(_)));
        }
    })
    .await;
    assert!(end.is_ok(), "the watch ended after timeoutSeconds");
}

/// ["CustomResourceDefinition Watch"]: watching CRDs sees create and delete.
#[tokio::test]
async fn crd_watch() {
    let server = Server::new(options());
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(server.client());
    let mut events = crds
        .watch(
            &WatchParams::default(),
            &server.resource_version().to_string(),
        )
        .await
        .unwrap()
        .boxed();
    install_widgets(&server).await;
    crds.delete("widgets.example.com", &DeleteParams::default())
        .await
        .unwrap();
    let mut kinds = Vec::new();
    while kinds.len() < 2 {
        match tokio::time::timeout(WAIT, events.try_next())
            .await
            .unwrap()
            .unwrap()
            .unwrap()
        {
            WatchEvent::Added(_) => kinds.push("ADDED"),
            WatchEvent::Deleted(_) => kinds.push("DELETED"),
            _ => {}
        }
    }
    assert_eq!(kinds, vec!["ADDED", "DELETED"]);
    assert_eq!(
        raw(
            &server,
            "GET",
            "/apis/example.com/v1/namespaces/default/widgets",
            None,
            None
        )
        .await
        .0,
        404
    );
}

/// 8. ["API chunking…"] limit/continue; label and field selectors ["CustomResourceFieldSelectors"].
#[tokio::test]
async fn chunking_and_selectors() {
    let (server, api) = server_with_widgets().await;
    for i in 0..7 {
        let mut w = widget(&format!("w{i}"), 1);
        w.metadata.labels = Some(
            [(
                "parity".to_string(),
                if i % 2 == 0 { "even" } else { "odd" }.to_string(),
            )]
            .into(),
        );
        w.data["spec"]["color"] = json!(if i < 3 { "blue" } else { "green" });
        api.create(&PostParams::default(), &w).await.unwrap();
    }
    let mut names = Vec::new();
    let mut token: Option<String> = None;
    let mut list_rvs = Vec::new();
    let mut pages = 0;
    loop {
        let mut lp = ListParams::default().limit(3);
        if let Some(t) = &token {
            lp = lp.continue_token(t);
        }
        let page = api.list(&lp).await.unwrap();
        pages += 1;
        list_rvs.push(page.metadata.resource_version.clone());
        names.extend(page.items.iter().map(|o| o.name_any()));
        match page.metadata.continue_ {
            Some(c) if !c.is_empty() => {
                assert!(page.metadata.remaining_item_count.unwrap() > 0);
                token = Some(c);
                // writes between pages do not change the list RV
                api.create(&PostParams::default(), &widget(&format!("late{pages}"), 1))
                    .await
                    .unwrap();
            }
            _ => break,
        }
    }
    assert_eq!(pages, 3);
    assert_eq!(&names[..7], &["w0", "w1", "w2", "w3", "w4", "w5", "w6"]);
    assert!(
        list_rvs.windows(2).all(|w| w[0] == w[1]),
        "one RV across pages: {list_rvs:?}"
    );
    // a continue token older than the history is 410
    let first = api.list(&ListParams::default().limit(2)).await.unwrap();
    server.compact_history();
    api.create(&PostParams::default(), &widget("after", 1))
        .await
        .unwrap();
    server.compact_history();
    let e = api
        .list(
            &ListParams::default()
                .limit(2)
                .continue_token(first.metadata.continue_.as_deref().unwrap()),
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 410);

    let odd = api
        .list(&ListParams::default().labels("parity=odd"))
        .await
        .unwrap();
    assert_eq!(
        odd.items.iter().map(|o| o.name_any()).collect::<Vec<_>>(),
        vec!["w1", "w3", "w5"]
    );
    let set = api
        .list(&ListParams::default().labels("parity in (even),parity notin (odd)"))
        .await
        .unwrap();
    assert_eq!(set.items.len(), 4);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=w4"))
        .await
        .unwrap();
    assert_eq!(by_name.items.len(), 1);
    let by_ns = api
        .list(&ListParams::default().fields("metadata.namespace=default,metadata.name!=w4"))
        .await
        .unwrap();
    assert!(by_ns.items.iter().all(|o| o.name_any() != "w4"));
    let blue = api
        .list(&ListParams::default().fields("spec.color=blue"))
        .await
        .unwrap();
    assert_eq!(blue.items.len(), 3, "selectableFields of the CRD");
    let e = api
        .list(&ListParams::default().fields("spec.size=1"))
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 400, "a field that is not selectable");
}

/// 9. Schema: 422 naming the field, pruning, fieldValidation=Strict, defaulting on write
/// and from storage ["custom resource defaulting for requests and from storage works"].
#[tokio::test]
async fn schema_validation_pruning_defaulting() {
    let (server, api) = server_with_widgets().await;
    let path = "/apis/example.com/v1/namespaces/default/widgets";
    let body = |spec: Value| json!({"apiVersion": "example.com/v1", "kind": "Widget", "metadata": {"name": "s1"}, "spec": spec});
    let (code, _, st) = raw(
        &server,
        "POST",
        path,
        Some("application/json"),
        Some(body(json!({"size": 0}))),
    )
    .await;
    assert_eq!((code, st["reason"].as_str()), (422, Some("Invalid")));
    assert_eq!(st["details"]["causes"][0]["field"], "spec.size");
    assert_eq!(st["details"]["kind"], "Widget");
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .starts_with("Widget.example.com \"s1\" is invalid: spec.size")
    );
    for (spec, field) in [
        (json!({"size": "big"}), "spec.size"),
        (json!({}), "spec.size"),
        (json!({"size": 1, "color": "pink"}), "spec.color"),
        (json!({"size": 1, "label": "UPPER"}), "spec.label"),
        (json!({"size": 1, "port": 1.5}), "spec.port"),
        (json!({"size": 1, "min": 5, "max": 2}), "spec"),
    ] {
        let (code, _, st) = raw(
            &server,
            "POST",
            path,
            Some("application/json"),
            Some(body(spec.clone())),
        )
        .await;
        assert_eq!(code, 422, "{spec}");
        assert_eq!(st["details"]["causes"][0]["field"], field, "{spec}: {st}");
    }
    // int-or-string accepts both
    for port in [json!(80), json!("http")] {
        let (code, _, _) = raw(
            &server,
            "POST",
            &format!("{path}?dryRun=All"),
            Some("application/json"),
            Some(body(json!({"size": 1, "port": port}))),
        )
        .await;
        assert_eq!(code, 201);
    }
    // unknown fields: pruned with a warning by default, 400 with Strict
    let (code, headers, created) = raw(
        &server,
        "POST",
        path,
        Some("application/json"),
        Some(body(
            json!({"size": 1, "bogus": true, "extra": {"free": {"form": 1}}}),
        )),
    )
    .await;
    assert_eq!(code, 201);
    assert!(created["spec"].get("bogus").is_none(), "pruned");
    assert_eq!(
        created["spec"]["extra"],
        json!({"free": {"form": 1}}),
        "preserve-unknown-fields kept"
    );
    assert_eq!(created["spec"]["color"], "red", "defaulted");
    assert!(headers.get_all("warning").iter().any(|w| {
        w.to_str()
            .unwrap()
            .contains("unknown field \\\"spec.bogus\\\"")
    }));
    let mut strict = body(json!({"size": 1, "bogus": true}));
    strict["metadata"]["name"] = json!("s2");
    let (code, _, st) = raw(
        &server,
        "POST",
        &format!("{path}?fieldValidation=Strict"),
        Some("application/json"),
        Some(strict),
    )
    .await;
    assert_eq!(code, 400);
    assert!(
        st["message"]
            .as_str()
            .unwrap()
            .contains("unknown field \"spec.bogus\"")
    );

    // defaulting from storage: add a default to the CRD, read the old object
    let crds: Api<DynamicObject> = Api::all_with(
        server.client(),
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk(
                "apiextensions.k8s.io",
                "v1",
                "CustomResourceDefinition",
            ),
            "customresourcedefinitions",
        ),
    );
    let patch = json!([{"op": "add", "path": "/spec/versions/0/schema/openAPIV3Schema/properties/spec/properties/shape",
                        "value": {"type": "string", "default": "round"}}]);
    crds.patch(
        "widgets.example.com",
        &PatchParams::default(),
        &Patch::Json::<()>(serde_json::from_value(patch).unwrap()),
    )
    .await
    .unwrap();
    assert_eq!(api.get("s1").await.unwrap().data["spec"]["shape"], "round");
}

/// 10. Lease renew conflict 409; Secrets; events.k8s.io/v1 Events; namespaces.
#[tokio::test]
async fn builtin_kinds() {
    let server = Server::new(ServerOptions::default());
    let client = server.client();
    let leases: Api<Lease> = Api::namespaced(client.clone(), "default");
    let lease: Lease = serde_json::from_value(json!({
        "metadata": {"name": "leader"},
        "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}
    }))
    .unwrap();
    let l1 = leases.create(&PostParams::default(), &lease).await.unwrap();
    let mut renew = l1.clone();
    renew.spec.as_mut().unwrap().holder_identity = Some("b".into());
    leases
        .replace("leader", &PostParams::default(), &renew)
        .await
        .unwrap();
    let mut stale = l1.clone();
    stale.spec.as_mut().unwrap().holder_identity = Some("c".into());
    let e = leases
        .replace("leader", &PostParams::default(), &stale)
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 409);

    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let s: Secret = serde_json::from_value(
        json!({"metadata": {"name": "creds"}, "stringData": {"k": "v"}, "data": {"p": "cGFzcw=="}}),
    )
    .unwrap();
    secrets.create(&PostParams::default(), &s).await.unwrap();
    let got = secrets.get("creds").await.unwrap();
    let data = got.data.unwrap();
    assert_eq!(data["p"].0, b"pass");
    assert_eq!(data["k"].0, b"v", "stringData folded into data");
    assert!(got.string_data.is_none());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    cms.create(
        &PostParams::default(),
        &ConfigMap {
            metadata: ObjectMeta {
                name: Some("cm".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // built-in kinds accept strategic merge patch
    cms.patch(
        "cm",
        &PatchParams::default(),
        &Patch::Strategic(json!({"data": {"a": "1"}})),
    )
    .await
    .unwrap();
    assert_eq!(cms.get("cm").await.unwrap().data.unwrap()["a"], "1");

    let events: Api<EventV1> = Api::namespaced(client.clone(), "default");
    let ev: EventV1 = serde_json::from_value(json!({
        "metadata": {"name": "e1"},
        "eventTime": "2024-01-01T00:00:00.000000Z",
        "reason": "Started", "note": "hello", "type": "Normal",
        "action": "Reconcile", "reportingController": "spillway", "reportingInstance": "x",
        "regarding": {"kind": "ExportJob", "name": "j", "namespace": "default"}
    }))
    .unwrap();
    events.create(&PostParams::default(), &ev).await.unwrap();
    assert_eq!(
        events.list(&ListParams::default()).await.unwrap().items[0]
            .note
            .as_deref(),
        Some("hello")
    );

    // deleting a namespace deletes its content
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &Namespace {
            metadata: ObjectMeta {
                name: Some("tmp".into()),
                ..Default::default()
            },
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let tmp: Api<Secret> = Api::namespaced(client.clone(), "tmp");
    tmp.create(&PostParams::default(), &s).await.unwrap();
    nss.delete("tmp", &DeleteParams::default()).await.unwrap();
    assert!(nss.get_opt("tmp").await.unwrap().is_none());
    assert!(
        tmp.list(&ListParams::default())
            .await
            .unwrap()
            .items
            .is_empty()
    );
}

/// Owner references: background deletion removes dependents, orphan keeps them.
#[tokio::test]
async fn garbage_collection() {
    let (server, api) = server_with_widgets().await;
    let owner = api
        .create(&PostParams::default(), &widget("owner", 1))
        .await
        .unwrap();
    let cms: Api<ConfigMap> = Api::namespaced(server.client(), "default");
    let owned = |name: &str| ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            owner_references: Some(vec![
                k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference {
                    api_version: "example.com/v1".into(),
                    kind: "Widget".into(),
                    name: "owner".into(),
                    uid: owner.uid().unwrap(),
                    ..Default::default()
                },
            ]),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&PostParams::default(), &owned("dep"))
        .await
        .unwrap();
    api.delete("owner", &DeleteParams::background())
        .await
        .unwrap();
    assert!(cms.get_opt("dep").await.unwrap().is_none());

    let owner = api
        .create(&PostParams::default(), &widget("owner", 1))
        .await
        .unwrap();
    let mut keep = owned("kept");
    keep.metadata.owner_references.as_mut().unwrap()[0].uid = owner.uid().unwrap();
    cms.create(&PostParams::default(), &keep).await.unwrap();
    api.delete("owner", &DeleteParams::orphan()).await.unwrap();
    let kept = cms.get("kept").await.unwrap();
    assert!(
        kept.metadata
            .owner_references
            .unwrap_or_default()
            .is_empty()
    );
}

/// spillway's real CRD: every example manifest is accepted, CEL rules and the immutable-spec
/// transition rule are enforced.
#[tokio::test]
async fn exportjob_crd_and_examples() {
    let server = Server::new(options());
    let crds: Api<k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition> =
        Api::all(server.client());
    crds.create(&PostParams::default(), &spillway_api::crd::crd())
        .await
        .unwrap();
    let jobs: Api<spillway_api::spec::ExportJob> = Api::namespaced(server.client(), "default");
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../manifests/examples");
    let mut count = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        let job: spillway_api::spec::ExportJob = serde_yaml_ng::from_str(&text).unwrap();
        let created = jobs
            .create(&PostParams::default(), &job)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", job.name_any()));
        assert_eq!(created.metadata.generation, Some(1));
        count += 1;
    }
    assert!(count >= 3);

    let raw_jobs: Api<DynamicObject> = Api::namespaced_with(
        server.client(),
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(
            &kube::core::GroupVersionKind::gvk("spillway.dev", "v1alpha1", "ExportJob"),
            "exportjobs",
        ),
    );
    let base = json!({
        "apiVersion": "spillway.dev/v1alpha1", "kind": "ExportJob", "metadata": {"name": "cel"},
        "spec": {"source": {"url": "http://x:9200", "indices": ["a"]},
                 "output": {"destination": {"volume": {"path": "/out"}}}}
    });
    let created = raw_jobs
        .create(
            &PostParams::default(),
            &serde_json::from_value(base.clone()).unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(
        created.data["spec"]["output"]["format"], "parquet",
        "defaults applied"
    );
    assert_eq!(
        created.data["spec"]["sharding"]["pageSize"], 1000,
        "nested defaults applied"
    );
    let bad_cases = [
        (
            json!({"timeRange": {"field": "@t", "gte": "2024-02-01T00:00:00Z", "lt": "2024-01-01T00:00:00Z"}}),
            "spec.timeRange",
        ),
        (
            json!({"source": {"url": "ftp://x", "indices": ["a"]}}),
            "spec.source.url",
        ),
        (
            json!({"retry": {"maxAttempts": 0}}),
            "spec.retry.maxAttempts",
        ),
        (
            json!({"output": {"destination": {"volume": null}}}),
            "spec.output.destination",
        ),
    ];
    for (i, (patch, field)) in bad_cases.iter().enumerate() {
        let mut obj = base.clone();
        obj["metadata"]["name"] = json!(format!("bad{i}"));
        kubesim::patch::merge_patch(&mut obj["spec"], patch);
        let e = raw_jobs
            .create(
                &PostParams::default(),
                &serde_json::from_value(obj).unwrap(),
            )
            .await
            .unwrap_err();
        assert_eq!(code_of(&e), 422, "{patch}");
        match &e {
            kube::Error::Api(s) => assert!(s.message.contains(field), "{field} in {}", s.message),
            _ => unreachable!(),
        }
    }
    // the transition rule: source is immutable, suspend is not
    let e = raw_jobs
        .patch(
            "cel",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"source": {"indices": ["b"]}}})),
        )
        .await
        .unwrap_err();
    assert_eq!(code_of(&e), 422);
    let ok = raw_jobs
        .patch(
            "cel",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"suspend": true}})),
        )
        .await
        .unwrap();
    assert_eq!(ok.metadata.generation, Some(2));
}

/// Request log and bearer-token identities; the same router over TCP.
#[tokio::test]
async fn request_log_identities_and_tcp() {
    let server = Server::start(options()).await.unwrap();
    install_widgets(&server).await;
    server.add_token("token-a", "alice");
    server.add_token("token-b", "bob");
    server.clear_requests();
    let alice: Api<DynamicObject> =
        Api::namespaced_with(server.client_with_token("token-a"), "default", &widget_ar());
    let bob: Api<DynamicObject> = Api::namespaced_with(
        server.http_client(Some("token-b")).await.unwrap(),
        "default",
        &widget_ar(),
    );
    alice
        .create(&PostParams::default(), &widget("w", 1))
        .await
        .unwrap();
    bob.get("w").await.unwrap();
    bob.list(&ListParams::default()).await.unwrap();
    let anon: Api<DynamicObject> = Api::namespaced_with(
        server.http_client(None).await.unwrap(),
        "default",
        &widget_ar(),
    );
    anon.patch_status(
        "w",
        &PatchParams::default(),
        &Patch::Merge(json!({"status": {"phase": "x"}})),
    )
    .await
    .unwrap();
    let intruder: Api<DynamicObject> =
        Api::namespaced_with(server.client_with_token("wrong"), "default", &widget_ar());
    assert_eq!(code_of(&intruder.get("w").await.unwrap_err()), 401);

    let log = server.requests();
    let calls: Vec<(&str, &str, Option<&str>, Option<&str>)> = log
        .iter()
        .map(|r| {
            (
                r.user.as_str(),
                r.verb.as_str(),
                r.resource.as_deref(),
                r.subresource.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        calls,
        vec![
            ("alice", "create", Some("widgets"), None),
            ("bob", "get", Some("widgets"), None),
            ("bob", "list", Some("widgets"), None),
            (kubesim::ANONYMOUS, "patch", Some("widgets"), Some("status")),
            ("", "get", Some("widgets"), None),
        ]
    );
    assert_eq!(log[3].code, 200);
    assert_eq!(log[4].code, 401);
    assert!(
        !format!("{server:?}").contains("token-a"),
        "tokens are redacted in Debug"
    );
    let kubeconfig = server.kubeconfig_yaml();
    assert!(kubeconfig.contains(&server.url().unwrap()));
}
