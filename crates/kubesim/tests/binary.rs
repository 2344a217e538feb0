//! The `kubesim` binary: serves on 127.0.0.1, prints its URL on stdout, writes a
//! kubeconfig with one context per `--user`, and answers kube-rs through that kubeconfig.

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::Api;
use tokio::io::AsyncBufReadExt;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binary_serves_and_writes_a_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_kubesim"))
        .arg("--kubeconfig")
        .arg(&kubeconfig)
        .arg("--user")
        .arg("ci=secret-token")
        .stdout(std::process::Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
        .await
        .expect("the URL is printed")
        .unwrap()
        .expect("a line");
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let text = std::fs::read_to_string(&kubeconfig).unwrap();
    assert!(text.contains(&url) && text.contains("kubesim-ci"), "{text}");
    let kc = kube::config::Kubeconfig::from_yaml(&text).unwrap();
    let opts = kube::config::KubeConfigOptions {
        context: Some("kubesim-ci".into()),
        ..Default::default()
    };
    let config = kube::Config::from_custom_kubeconfig(kc, &opts)
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let namespaces: Api<Namespace> = Api::all(client);
    let names: Vec<String> = namespaces
        .list(&Default::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|n| n.metadata.name)
        .collect();
    assert!(names.contains(&"default".to_string()), "{names:?}");
    child.kill().await.unwrap();
}
