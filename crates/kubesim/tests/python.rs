//! The Python `kubernetes` client against kubesim on 127.0.0.1 (script in
//! `tests/clients/python_custom_objects.py`): custom objects create, status merge patch,
//! watch replay, DynamicClient discovery, Secrets, delete, and the 409/422 error shapes.
//!
//! The client is installed by `scripts/deps/python.sh` into `<repo>/.work/venv`;
//! `SPILLWAY_PYTHON` points elsewhere. A missing client fails the test with the command
//! that installs it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, PostParams};
use kubesim::Server;
use serde_json::{Value, json};

fn python() -> PathBuf {
    let path = std::env::var_os("SPILLWAY_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.work/venv/bin/python")
        });
    assert!(
        path.exists(),
        "no Python with the kubernetes client at {} — install it with `bash scripts/deps/python.sh` \
         (from the repository root), or set SPILLWAY_PYTHON to an interpreter that has kubernetes==37.0.2",
        path.display()
    );
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_client_custom_objects() {
    let server = Server::start(options()).await.unwrap();
    let crds: Api<CustomResourceDefinition> = Api::all(server.client());
    crds.create(&PostParams::default(), &spillway_api::crd::crd())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let script =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients/python_custom_objects.py");
    let out = tokio::time::timeout(
        Duration::from_secs(120),
        tokio::process::Command::new(python())
            .arg(&script)
            .arg(&kubeconfig)
            .kill_on_drop(true)
            .output(),
    )
    .await
    .expect("the Python client finishes")
    .expect("python runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "python failed:\n{stdout}\n{stderr}");
    let summary: Value =
        serde_json::from_str(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(summary["generation"], 1);
    assert_eq!(summary["defaulted_format"], "parquet");
    assert_eq!(summary["status_phase"], "Running");
    assert_eq!(
        summary["events"],
        json!([["MODIFIED", "py-job", "Running"]])
    );
    assert_eq!(summary["duplicate"], json!([409, "AlreadyExists"]));
    assert_eq!(summary["invalid"], json!([422, "spec.source.url"]));
    assert_eq!(summary["dynamic_list"], json!(["py-job"]));
    assert_eq!(summary["secret_keys"], json!(["k"]));
    assert_eq!(summary["after_delete"], 404);
    let log = server.requests();
    assert!(
        log.iter()
            .any(|r| r.verb == "watch" && r.query.contains("resourceVersion="))
    );
    assert!(
        log.iter()
            .any(|r| r.verb == "patch" && r.subresource.as_deref() == Some("status"))
    );
    assert!(
        log.iter().any(|r| r.path == "/apis/spillway.dev/v1alpha1"),
        "DynamicClient discovery"
    );
}
