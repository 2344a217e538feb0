//! kubectl (v1.32 at /usr/bin/kubectl, or `$KUBECTL`) against kubesim served on 127.0.0.1
//! with a generated kubeconfig: apply the spillway CRD and an example (client-side and
//! server-side apply), re-apply unchanged, `get ej`, `wait --for=condition=Ready` released
//! by a status patch, `delete`. A missing kubectl fails the test with where to get it.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use kube::api::{Api, DynamicObject, Patch, PatchParams};
use kube::core::GroupVersionKind;
use kubesim::Server;
use serde_json::{Value, json};

const WAIT: Duration = Duration::from_secs(60);

fn kubectl_bin() -> PathBuf {
    let path = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"));
    assert!(
        path.exists(),
        "no kubectl at {} — install kubectl 1.32 (e.g. from the Kubernetes apt repository) or set KUBECTL",
        path.display()
    );
    path
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

struct Kubectl {
    kubeconfig: PathBuf,
    cache: PathBuf,
}

impl Kubectl {
    fn command(&self, args: &[&str]) -> tokio::process::Command {
        let mut c = tokio::process::Command::new(kubectl_bin());
        c.env("KUBECONFIG", &self.kubeconfig)
            .env("HOME", self.cache.parent().unwrap())
            .arg("--cache-dir")
            .arg(&self.cache)
            .args(args)
            .kill_on_drop(true);
        c
    }

    /// Runs kubectl; panics with its output when it fails.
    async fn ok(&self, args: &[&str]) -> String {
        let out = tokio::time::timeout(WAIT, self.command(args).output())
            .await
            .unwrap_or_else(|_| panic!("kubectl {args:?} did not finish in {WAIT:?}"))
            .expect("kubectl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        let stderr = String::from_utf8_lossy(&out.stderr).to_string();
        assert!(
            out.status.success(),
            "kubectl {args:?} failed: {stdout}\n{stderr}"
        );
        stdout
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubectl_apply_get_wait_delete() {
    let server = Server::start(options()).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    server.write_kubeconfig(&kubeconfig).unwrap();
    let k = Kubectl {
        kubeconfig,
        cache: dir.path().join("cache"),
    };

    let version = k.ok(&["version", "-o", "json"]).await;
    let v: Value = serde_json::from_str(&version).unwrap();
    assert_eq!(v["serverVersion"]["minor"], kubesim::discovery::MINOR);

    let crd = repo().join("manifests/crds/exportjob.yaml");
    let out = k.ok(&["apply", "-f", crd.to_str().unwrap()]).await;
    assert!(
        out.contains(
            "customresourcedefinition.apiextensions.k8s.io/exportjobs.spillway.dev created"
        ),
        "{out}"
    );

    let out = k.ok(&["apply", "-f", crd.to_str().unwrap()]).await;
    assert!(out.contains("exportjobs.spillway.dev unchanged"), "{out}");

    let example = repo().join("manifests/examples/volume-ndjson.yaml");
    let out = k.ok(&["apply", "-f", example.to_str().unwrap()]).await;
    assert!(
        out.contains("exportjob.spillway.dev/orders-ndjson created"),
        "{out}"
    );
    let out = k.ok(&["apply", "-f", example.to_str().unwrap()]).await;
    assert!(out.contains("orders-ndjson unchanged"), "{out}");
    let out = k
        .ok(&[
            "apply",
            "--server-side",
            "-f",
            repo()
                .join("manifests/examples/suspended.yaml")
                .to_str()
                .unwrap(),
        ])
        .await;
    assert!(out.contains("serverside-applied"), "{out}");
    // client-side apply sent server-side field validation, so kubectl used the OpenAPI v3 docs
    let log = server.requests();
    assert!(
        log.iter()
            .any(|r| r.path.starts_with("/openapi/v3/apis/spillway.dev/v1alpha1"))
    );
    assert!(
        log.iter()
            .any(|r| r.verb == "create" && r.query.contains("fieldValidation=Strict"))
    );
    assert!(
        log.iter()
            .any(|r| r.verb == "patch" && r.query.contains("fieldManager=kubectl"))
    );
    assert!(log.iter().all(|r| r.user_agent.starts_with("kubectl")));

    let out = k.ok(&["get", "ej"]).await;
    assert!(out.contains("orders-ndjson"), "{out}");
    assert!(
        out.lines().next().unwrap().contains("PHASE"),
        "printer columns through the Table: {out}"
    );
    let out = k
        .ok(&[
            "get",
            "exportjobs.spillway.dev",
            "orders-ndjson",
            "-o",
            "json",
        ])
        .await;
    let job: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(job["spec"]["output"]["format"], "ndjson");
    assert_eq!(job["spec"]["retry"]["maxAttempts"], 5, "schema defaults");

    // kubectl wait blocks on a watch until the condition appears
    let mut wait = k
        .command(&[
            "wait",
            "--for=condition=Ready",
            "ej/orders-ndjson",
            "--timeout=50s",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    eventually("kubectl wait watches", WAIT, || async {
        server
            .requests()
            .iter()
            .any(|r| {
                r.verb == "watch"
                    && r.resource.as_deref() == Some("exportjobs")
                    && r.user_agent.starts_with("kubectl")
            })
            .then_some(())
    })
    .await;
    let jobs: Api<DynamicObject> = Api::namespaced_with(
        server.client(),
        "default",
        &kube::api::ApiResource::from_gvk_with_plural(
            &GroupVersionKind::gvk("spillway.dev", "v1alpha1", "ExportJob"),
            "exportjobs",
        ),
    );
    let status = json!({"status": {"phase": "Succeeded", "conditions": [
        {"type": "Ready", "status": "True", "reason": "Done", "lastTransitionTime": "2025-01-01T00:00:00Z"}]}});
    jobs.patch_status(
        "orders-ndjson",
        &PatchParams::default(),
        &Patch::Merge(status),
    )
    .await
    .unwrap();
    let status = tokio::time::timeout(WAIT, wait.wait())
        .await
        .expect("kubectl wait returns")
        .unwrap();
    let mut stdout = String::new();
    tokio::io::AsyncReadExt::read_to_string(wait.stdout.as_mut().unwrap(), &mut stdout)
        .await
        .unwrap();
    assert!(status.success(), "kubectl wait failed: {stdout}");
    assert!(stdout.contains("condition met"), "{stdout}");
    let out = k.ok(&["get", "ej", "orders-ndjson"]).await;
    assert!(out.contains("Succeeded"), "{out}");

    let out = k.ok(&["delete", "ej", "orders-ndjson"]).await;
    assert!(out.contains("deleted"), "{out}");
    assert!(jobs.get_opt("orders-ndjson").await.unwrap().is_none());
    let delete = server
        .requests()
        .into_iter()
        .find(|r| r.verb == "delete")
        .unwrap();
    assert_eq!(delete.name.as_deref(), Some("orders-ndjson"));
}
