//! The committed manifests agree with the code: the CRD under `manifests/crds/` is exactly
//! what `spillway crd` prints, and every example job loads and validates.

use std::path::PathBuf;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[test]
fn committed_crd_matches_the_types() {
    let path = repo().join("manifests/crds/exportjob.yaml");
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    let generated = spillway_api::crd::crd_yaml();
    assert!(
        committed == generated,
        "{} is out of date: regenerate it with `cargo run -p spillway -- crd > manifests/crds/exportjob.yaml`",
        path.display()
    );
}

#[test]
fn every_example_is_a_valid_job() {
    let dir = repo().join("manifests/examples");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        if !text.contains("kind: ExportJob") {
            continue;
        }
        spillway_api::load_job_yaml(&text)
            .unwrap_or_else(|e| panic!("{} does not load: {e}", path.display()));
        n += 1;
    }
    assert!(n >= 5, "expected at least 5 example jobs, found {n}");
}

fn leaf_paths(node: &serde_json::Value, path: &str, out: &mut Vec<String>) {
    match node.get("properties").and_then(|p| p.as_object()) {
        Some(props) => {
            for (k, v) in props {
                leaf_paths(v, &format!("{path}.{k}"), out);
            }
        }
        None => out.push(path.to_string()),
    }
}

#[test]
fn readme_documents_every_spec_field() {
    let crd = serde_json::to_value(spillway_api::crd::crd()).unwrap();
    let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
    let mut paths = Vec::new();
    leaf_paths(spec, "spec", &mut paths);
    assert!(paths.len() > 30, "suspiciously few fields: {paths:?}");
    let readme = std::fs::read_to_string(repo().join("README.md")).unwrap();
    let missing: Vec<_> = paths
        .iter()
        .filter(|p| !readme.contains(&format!("`{p}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "README.md does not document: {missing:?}"
    );
}
