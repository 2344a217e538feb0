//! The Helm chart (`charts/spillway`), the kustomize base (`manifests/base`), the GitOps examples
//! (`manifests/flux`, `manifests/argocd`) and the `Dockerfile`, checked with real tools: Helm's
//! own renderer, linter and schema validator (helm-python-sdk), `kubernetes-validate --strict`
//! for Kubernetes 1.29 to 1.33, `check-jsonschema` against the CRD's schema, `kubectl
//! kustomize`, and the `spillway` binary's own argument parser (`spillway check-args`).
//!
//! The Python tools live in `.work/venv` (`bash scripts/deps/python.sh`); `tests/chart/chart.py`
//! turns their output into JSON and these tests do the asserting. Without the venv the tests fail
//! under `CI` and are skipped (with a message) elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use serde_json::{Value, json};
use spillway_e2e::repo_root;

// ---------------------------------------------------------------------------------------------
// Tools

fn venv_bin(name: &str) -> Option<PathBuf> {
    let path = repo_root().join(".work/venv/bin").join(name);
    if path.exists() {
        return Some(path);
    }
    let msg = format!(
        "{} is missing: run `bash scripts/deps/python.sh` to install helm-python-sdk, kubernetes-validate and check-jsonschema",
        path.display()
    );
    if std::env::var_os("CI").is_some() {
        panic!("{msg}");
    }
    eprintln!("skipping: {msg}");
    None
}

/// Runs `tests/chart/chart.py <cmd>` with `req` on stdin; returns its JSON answer.
fn helper(cmd: &str, req: &Value) -> Option<Value> {
    let python = venv_bin("python")?;
    let mut child = Command::new(python)
        .arg(repo_root().join("tests/chart/chart.py"))
        .arg(cmd)
        .current_dir(repo_root())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python starts");
    child
        .stdin
        .take()
        .unwrap()
        .write_all(req.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "chart.py {cmd} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Some(serde_json::from_slice(&out.stdout).expect("chart.py prints JSON"))
}

fn yaml_docs(paths: &[PathBuf]) -> Option<BTreeMap<String, Vec<Value>>> {
    let files: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
    let v = helper("yaml2json", &json!({ "files": files }))?;
    Some(
        v.as_object()
            .unwrap()
            .iter()
            .map(|(k, v)| (k.clone(), v.as_array().unwrap().clone()))
            .collect(),
    )
}

fn kubectl_kustomize(dir: &str) -> Vec<Value> {
    let kubectl = std::env::var_os("KUBECTL")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/usr/bin/kubectl"));
    let out = Command::new(&kubectl)
        .args(["kustomize", dir])
        .current_dir(repo_root())
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run {} ({e}): install kubectl 1.29+ or set KUBECTL",
                kubectl.display()
            )
        });
    assert!(
        out.status.success(),
        "kubectl kustomize {dir} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let tmp = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(tmp.path(), &out.stdout).unwrap();
    let docs = yaml_docs(&[tmp.path().to_path_buf()]).expect("venv checked by the caller");
    docs.into_values().next().unwrap()
}

const KUBE_VERSIONS: [&str; 5] = ["1.29.0", "1.30.0", "1.31.0", "1.32.0", "1.33.0"];

/// Kinds kubernetes-validate has no schema for (CRD-defined); each is checked another way.
const CUSTOM_KINDS: [&str; 7] = [
    "ExportJob",
    "ScaledObject",
    "TriggerAuthentication",
    "ServiceMonitor",
    "GitRepository",
    "Kustomization",
    "HelmRelease",
];

/// Validates every object with `kubernetes-validate --strict` for each Kubernetes version.
/// Returns, per object label, the problems found (empty when all is well).
fn kubernetes_validate(objects: &[(String, Value)]) -> Option<BTreeMap<String, Vec<String>>> {
    let kv = venv_bin("kubernetes-validate")?;
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    for (i, (label, obj)) in objects.iter().enumerate() {
        let path = dir.path().join(format!("{i:04}.json"));
        // JSON is YAML: kubernetes-validate reads it as is.
        std::fs::write(&path, serde_json::to_vec(obj).unwrap()).unwrap();
        files.push((
            path,
            label.clone(),
            obj["kind"].as_str().unwrap_or("").to_string(),
        ));
    }
    let mut problems: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for version in KUBE_VERSIONS {
        let out = Command::new(&kv)
            .args(["--strict", "-k", version])
            .args(files.iter().map(|f| &f.0))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).to_string();
        for (path, label, kind) in &files {
            let name = path.display().to_string();
            let lines: Vec<&str> = stdout
                .lines()
                .filter(|l| l.split_whitespace().nth(1) == Some(name.as_str()))
                .collect();
            let passed = lines
                .iter()
                .any(|l| l.starts_with("INFO ") && l.contains(" passed "));
            let no_schema = lines
                .iter()
                .any(|l| l.starts_with("WARN ") && l.contains("Couldn't find schema"));
            let ok = if CUSTOM_KINDS.contains(&kind.as_str()) {
                no_schema && lines.len() == 1
            } else {
                passed && lines.len() == 1
            };
            if !ok {
                problems
                    .entry(label.clone())
                    .or_default()
                    .push(format!("{version}: {}", lines.join(" | ")));
            } else {
                problems.entry(label.clone()).or_default();
            }
        }
    }
    Some(problems)
}

// ---------------------------------------------------------------------------------------------
// The documented value combinations (README.md, "Tested value combinations")

fn cases() -> Vec<(&'static str, Value)> {
    vec![
        ("defaults", json!({})),
        (
            "hpa",
            json!({"worker": {"autoscaling": {"mode": "hpa", "minReplicas": 2, "maxReplicas": 12}}}),
        ),
        (
            "fixed-replicas",
            json!({"worker": {"replicas": 3, "autoscaling": {"mode": "none"}}}),
        ),
        (
            "watch-namespaces",
            json!({"watchNamespaces": ["team-a", "team-b"]}),
        ),
        (
            "shared-broker",
            json!({
                "rabbitmq": {"existingSecret": "shared-rabbit", "secretKey": "amqp-url", "queueNamespace": "tenant1", "deliveryLimit": 7},
                "worker": {"concurrency": 16, "autoscaling": {"minReplicas": 0, "maxReplicas": 50, "keda": {"queueLength": 32}}},
                "coordinator": {"leaseName": "exports-leader", "leaseDuration": "30s", "statusInterval": "10s"}
            }),
        ),
        (
            "observability",
            json!({
                "logging": {"level": "info,spillway_engine=debug", "json": false},
                "opentelemetry": {"endpoint": "http://otel-collector.observability:4318"},
                "serviceMonitor": {"enabled": true, "labels": {"release": "prometheus"}},
                "metricsPort": 9102
            }),
        ),
        (
            "locked-down",
            json!({
                "crds": {"enabled": false},
                "image": {"digest": format!("sha256:{}", "a".repeat(64))},
                "imagePullSecrets": [{"name": "regcred"}],
                "sharedVolume": {"enabled": true, "claimName": "exports-rwx", "mountPath": "/exports"},
                "networkPolicy": {
                    "enabled": true,
                    "metricsFrom": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}],
                    "egress": [
                        {"to": [{"ipBlock": {"cidr": "10.0.0.1/32"}}], "ports": [{"port": 443, "protocol": "TCP"}]},
                        {"to": [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "rabbitmq"}}}], "ports": [{"port": 5672, "protocol": "TCP"}]},
                        {"to": [{"ipBlock": {"cidr": "10.20.0.0/16"}}], "ports": [{"port": 9200, "protocol": "TCP"}]}
                    ]
                },
                "coordinator": {
                    "serviceAccount": {"create": false, "name": "exports-coordinator"},
                    "priorityClassName": "system-cluster-critical",
                    "extraEnv": [{"name": "RUST_BACKTRACE", "value": "1"}],
                    "podAnnotations": {"example.com/owner": "data-platform"},
                    "nodeSelector": {"kubernetes.io/os": "linux"},
                    "topologySpreadConstraints": [{"maxSkew": 1, "topologyKey": "topology.kubernetes.io/zone", "whenUnsatisfiable": "ScheduleAnyway", "labelSelector": {"matchLabels": {"app.kubernetes.io/component": "coordinator"}}}]
                },
                "worker": {
                    "serviceAccount": {"annotations": {"eks.amazonaws.com/role-arn": "arn:aws:iam::123456789012:role/spillway"}},
                    "podDisruptionBudget": {"enabled": true, "maxUnavailable": "25%"},
                    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "exports", "effect": "NoSchedule"}],
                    "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "node-pool", "operator": "In", "values": ["exports"]}]}]}}},
                    "podLabels": {"team": "data"}
                }
            }),
        ),
        (
            "other-release",
            json!({"crds": {"keep": false}, "rbac": {"create": true}, "image": {"tag": "0.1.0-rc.1"}}),
        ),
    ]
}

fn release_of(case: &str) -> (&'static str, &'static str) {
    match case {
        "other-release" => ("exports", "data"),
        _ => ("spillway", "spillway-system"),
    }
}

struct Rendered {
    objects: Vec<Value>,
    notes: String,
}

impl Rendered {
    fn all(&self, kind: &str) -> Vec<&Value> {
        self.objects.iter().filter(|o| o["kind"] == kind).collect()
    }
    fn one(&self, kind: &str, name: &str) -> &Value {
        let found: Vec<_> = self
            .objects
            .iter()
            .filter(|o| o["kind"] == kind && o["metadata"]["name"] == name)
            .collect();
        assert_eq!(
            found.len(),
            1,
            "expected one {kind} {name}, found {}",
            found.len()
        );
        found[0]
    }
    fn kinds(&self) -> BTreeMap<String, usize> {
        let mut m = BTreeMap::new();
        for o in &self.objects {
            *m.entry(o["kind"].as_str().unwrap().to_string())
                .or_default() += 1;
        }
        m
    }
}

fn render_all() -> Option<BTreeMap<String, Rendered>> {
    let mut req = serde_json::Map::new();
    for (name, values) in cases() {
        let (release, namespace) = release_of(name);
        req.insert(
            name.into(),
            json!({"values": values, "release": release, "namespace": namespace}),
        );
    }
    let out = helper("render", &json!({ "cases": req }))?;
    let mut rendered = BTreeMap::new();
    for (name, r) in out.as_object().unwrap() {
        assert!(
            r["ok"] == true,
            "the chart does not render with the {name} values: {}",
            r["error"]
        );
        rendered.insert(
            name.clone(),
            Rendered {
                objects: r["objects"].as_array().unwrap().clone(),
                notes: r["files"]["spillway/templates/NOTES.txt"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            },
        );
    }
    Some(rendered)
}

fn container(deploy: &Value) -> &Value {
    let cs = deploy["spec"]["template"]["spec"]["containers"]
        .as_array()
        .unwrap();
    assert_eq!(cs.len(), 1, "one container per pod");
    &cs[0]
}

fn args(deploy: &Value) -> Vec<String> {
    container(deploy)["args"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().expect("args are strings").to_string())
        .collect()
}

/// The value following `flag` in `args`.
fn flag<'a>(args: &'a [String], name: &str) -> Option<&'a str> {
    args.iter()
        .position(|a| a == name)
        .map(|i| args[i + 1].as_str())
}

fn env<'a>(deploy: &'a Value, name: &str) -> Option<&'a Value> {
    container(deploy)["env"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["name"] == name)
}

fn labels_match(selector: &Value, labels: &Value) -> bool {
    selector
        .as_object()
        .unwrap()
        .iter()
        .all(|(k, v)| labels.get(k) == Some(v))
}

// ---------------------------------------------------------------------------------------------
// 1. Rendering, lint and values schema

#[test]
fn chart_renders_every_documented_value_combination() {
    let Some(all) = render_all() else { return };
    assert_eq!(all.len(), cases().len());

    // Defaults: exactly these objects.
    let d = &all["defaults"];
    let expected: BTreeMap<String, usize> = [
        ("CustomResourceDefinition", 1),
        ("ServiceAccount", 2),
        ("Service", 2),
        ("Deployment", 2),
        ("PodDisruptionBudget", 1),
        ("ClusterRole", 2),
        ("ClusterRoleBinding", 2),
        ("Role", 1),
        ("RoleBinding", 1),
        ("ScaledObject", 1),
        ("TriggerAuthentication", 1),
    ]
    .into_iter()
    .map(|(k, n)| (k.to_string(), n))
    .collect();
    assert_eq!(d.kinds(), expected);
    let coord = d.one("Deployment", "spillway-coordinator");
    assert_eq!(coord["spec"]["replicas"], 2, "two coordinators by default");
    let worker = d.one("Deployment", "spillway-worker");
    assert!(
        worker["spec"].get("replicas").is_none(),
        "KEDA owns the worker replica count"
    );
    assert_eq!(
        container(coord)["image"],
        "ghcr.io/spillway-dev/spillway:0.1.0",
        "the tag defaults to appVersion"
    );
    let crd = d.one("CustomResourceDefinition", "exportjobs.spillway.dev");
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    assert!(
        crd["_source"]
            .as_str()
            .unwrap()
            .contains("/templates/crds/")
    );
    let pdb = d.one("PodDisruptionBudget", "spillway-coordinator");
    assert!(labels_match(
        &pdb["spec"]["selector"]["matchLabels"],
        &coord["spec"]["template"]["metadata"]["labels"]
    ));
    assert_eq!(pdb["spec"]["minAvailable"], 1);

    // NOTES.txt tells the next steps: the broker Secret, applying and watching a job.
    assert!(d.notes.contains("create secret generic spillway-rabbitmq"));
    assert!(d.notes.contains("kubectl get ej -n <namespace> -w"));
    assert!(d.notes.contains("KEDA"));
    assert!(all["hpa"].notes.contains("kubectl get ej") && !all["hpa"].notes.contains("KEDA"));
    assert!(all["watch-namespaces"].notes.contains("team-a, team-b"));

    // KEDA: the ScaledObject scales the worker Deployment on the shard queue, authenticated from
    // the RabbitMQ Secret the pods read.
    for (case, queue, secret, key) in [
        ("defaults", "spillway.shards", "spillway-rabbitmq", "url"),
        (
            "shared-broker",
            "spillway.tenant1.shards",
            "shared-rabbit",
            "amqp-url",
        ),
    ] {
        let r = &all[case];
        let so = r.one("ScaledObject", "spillway-worker");
        let spec = &so["spec"];
        assert_eq!(spec["scaleTargetRef"]["name"], "spillway-worker");
        assert_eq!(spec["scaleTargetRef"]["kind"], "Deployment");
        let triggers = spec["triggers"].as_array().unwrap();
        assert_eq!(triggers.len(), 1);
        let t = &triggers[0];
        assert_eq!(t["type"], "rabbitmq");
        assert_eq!(t["metadata"]["queueName"], queue);
        assert_eq!(t["metadata"]["mode"], "QueueLength");
        assert!(
            t["metadata"]["value"].is_string(),
            "KEDA trigger metadata values are strings"
        );
        let ta_name = t["authenticationRef"]["name"].as_str().unwrap();
        let ta = r.one("TriggerAuthentication", ta_name);
        let refs = ta["spec"]["secretTargetRef"].as_array().unwrap();
        assert_eq!(refs.len(), 1);
        assert_eq!(refs[0]["parameter"], "host");
        assert_eq!(refs[0]["name"], secret);
        assert_eq!(refs[0]["key"], key);
        let broker = env(r.one("Deployment", "spillway-worker"), "SPILLWAY_BROKER").unwrap();
        assert_eq!(broker["valueFrom"]["secretKeyRef"]["name"], secret);
        assert_eq!(broker["valueFrom"]["secretKeyRef"]["key"], key);
        assert!(spec["minReplicaCount"].is_u64() && spec["maxReplicaCount"].is_u64());
    }
    let so = &all["shared-broker"].one("ScaledObject", "spillway-worker")["spec"];
    assert_eq!(so["minReplicaCount"], 0);
    assert_eq!(so["triggers"][0]["metadata"]["value"], "32");

    // The queue settings reach both roles the same way.
    let sb = &all["shared-broker"];
    for name in ["spillway-coordinator", "spillway-worker"] {
        let a = args(sb.one("Deployment", name));
        assert_eq!(flag(&a, "--queue-namespace"), Some("tenant1"), "{name}");
        assert_eq!(flag(&a, "--delivery-limit"), Some("7"), "{name}");
    }
    let a = args(sb.one("Deployment", "spillway-worker"));
    assert_eq!(flag(&a, "--concurrency"), Some("16"));
    assert!(a.contains(&"--kube-secrets".to_string()));
    let a = args(sb.one("Deployment", "spillway-coordinator"));
    assert_eq!(flag(&a, "--lease-name"), Some("exports-leader"));
    assert_eq!(flag(&a, "--lease-duration"), Some("30s"));
    assert_eq!(
        sb.one("Role", "spillway-coordinator-lease")["rules"][0]["resourceNames"],
        json!(["exports-leader"])
    );

    // HPA instead of KEDA.
    let h = &all["hpa"];
    assert!(h.all("ScaledObject").is_empty() && h.all("TriggerAuthentication").is_empty());
    let hpa = h.one("HorizontalPodAutoscaler", "spillway-worker");
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "spillway-worker");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert_eq!(hpa["spec"]["maxReplicas"], 12);
    assert!(
        h.one("Deployment", "spillway-worker")["spec"]
            .get("replicas")
            .is_none()
    );

    // No autoscaler: a fixed worker count.
    let f = &all["fixed-replicas"];
    assert!(f.all("ScaledObject").is_empty() && f.all("HorizontalPodAutoscaler").is_empty());
    assert_eq!(
        f.one("Deployment", "spillway-worker")["spec"]["replicas"],
        3
    );

    // Watched namespaces: the coordinator is told, and bindings exist only there.
    let w = &all["watch-namespaces"];
    assert_eq!(
        flag(
            &args(w.one("Deployment", "spillway-coordinator")),
            "--namespaces"
        ),
        Some("team-a,team-b")
    );
    assert!(w.all("ClusterRoleBinding").is_empty());
    assert!(
        flag(
            &args(d.one("Deployment", "spillway-coordinator")),
            "--namespaces"
        )
        .is_none()
    );

    // Observability: OTLP endpoint, plain-text logs, the metrics port, and a ServiceMonitor
    // whose selector and port reach both Services.
    let o = &all["observability"];
    let sm = o.one("ServiceMonitor", "spillway");
    assert_eq!(sm["metadata"]["labels"]["release"], "prometheus");
    let services = o.all("Service");
    assert_eq!(services.len(), 2);
    for svc in &services {
        let labels = &svc["metadata"]["labels"];
        assert!(labels_match(&sm["spec"]["selector"]["matchLabels"], labels));
        let comp = labels["app.kubernetes.io/component"].as_str().unwrap();
        assert!(
            sm["spec"]["selector"]["matchExpressions"][0]["values"]
                .as_array()
                .unwrap()
                .contains(&json!(comp))
        );
        assert_eq!(
            svc["spec"]["ports"][0]["name"],
            sm["spec"]["endpoints"][0]["port"]
        );
        assert_eq!(svc["spec"]["ports"][0]["port"], 9102);
        // The Service selects exactly one role's pods.
        let deploy = o.one("Deployment", svc["metadata"]["name"].as_str().unwrap());
        assert!(labels_match(
            &svc["spec"]["selector"],
            &deploy["spec"]["template"]["metadata"]["labels"]
        ));
    }
    for (name, service) in [
        ("spillway-coordinator", "spillway-coordinator"),
        ("spillway-worker", "spillway-worker"),
    ] {
        let dep = o.one("Deployment", name);
        assert_eq!(
            env(dep, "OTEL_EXPORTER_OTLP_ENDPOINT").unwrap()["value"],
            "http://otel-collector.observability:4318"
        );
        assert_eq!(env(dep, "OTEL_SERVICE_NAME").unwrap()["value"], service);
        let a = args(dep);
        assert!(!a.contains(&"--log-json".to_string()));
        assert_eq!(flag(&a, "--log"), Some("info,spillway_engine=debug"));
        assert_eq!(flag(&a, "--listen"), Some("0.0.0.0:9102"));
        assert_eq!(container(dep)["ports"][0]["containerPort"], 9102);
    }
    assert!(
        env(
            d.one("Deployment", "spillway-worker"),
            "OTEL_EXPORTER_OTLP_ENDPOINT"
        )
        .is_none()
    );

    // Locked down: NetworkPolicies, a shared volume in both roles, no CRD, digest-pinned image.
    let l = &all["locked-down"];
    assert!(l.all("CustomResourceDefinition").is_empty());
    let nps = l.all("NetworkPolicy");
    assert_eq!(nps.len(), 2);
    for np in nps {
        let types = np["spec"]["policyTypes"].as_array().unwrap();
        assert_eq!(types, &vec![json!("Ingress"), json!("Egress")]);
        assert_eq!(
            np["spec"]["egress"].as_array().unwrap().len(),
            4,
            "DNS + 3 rules"
        );
        let name = np["metadata"]["name"].as_str().unwrap();
        let dep = l.one("Deployment", name);
        assert!(labels_match(
            &np["spec"]["podSelector"]["matchLabels"],
            &dep["spec"]["template"]["metadata"]["labels"]
        ));
    }
    for name in ["spillway-coordinator", "spillway-worker"] {
        let dep = l.one("Deployment", name);
        let c = container(dep);
        assert_eq!(
            c["image"],
            format!("ghcr.io/spillway-dev/spillway@sha256:{}", "a".repeat(64))
        );
        assert!(
            c["volumeMounts"]
                .as_array()
                .unwrap()
                .iter()
                .any(|m| m["mountPath"] == "/exports")
        );
        let pod = &dep["spec"]["template"]["spec"];
        assert!(
            pod["volumes"]
                .as_array()
                .unwrap()
                .iter()
                .any(|v| v["persistentVolumeClaim"]["claimName"] == "exports-rwx")
        );
        assert_eq!(pod["imagePullSecrets"], json!([{"name": "regcred"}]));
    }
    assert_eq!(
        l.all("ServiceAccount").len(),
        1,
        "the coordinator's is not created"
    );
    assert_eq!(
        l.one("Deployment", "spillway-coordinator")["spec"]["template"]["spec"]["serviceAccountName"],
        "exports-coordinator"
    );
    assert_eq!(
        l.one("ClusterRoleBinding", "spillway-coordinator")["subjects"][0]["name"],
        "exports-coordinator"
    );
    assert_eq!(
        l.one("PodDisruptionBudget", "spillway-worker")["spec"]["maxUnavailable"],
        "25%"
    );
    assert!(d.all("NetworkPolicy").is_empty());

    // Another release name and namespace: names and subjects follow.
    let r = &all["other-release"];
    let crd = r.one("CustomResourceDefinition", "exportjobs.spillway.dev");
    assert!(
        crd["metadata"].get("annotations").is_none(),
        "crds.keep=false"
    );
    let dep = r.one("Deployment", "exports-spillway-coordinator");
    assert_eq!(dep["metadata"]["namespace"], "data");
    assert_eq!(
        container(dep)["image"],
        "ghcr.io/spillway-dev/spillway:0.1.0-rc.1"
    );
    let crb = r.one("ClusterRoleBinding", "exports-spillway-worker");
    assert_eq!(
        crb["subjects"],
        json!([{"kind": "ServiceAccount", "name": "exports-spillway-worker", "namespace": "data"}])
    );
}

#[test]
fn helm_lint_is_clean_for_every_combination() {
    let mut req = serde_json::Map::new();
    for (name, values) in cases() {
        req.insert(name.into(), json!({ "values": values }));
    }
    // A control: lint must report values that break the schema.
    req.insert(
        "control".into(),
        json!({ "values": {"worker": {"autoscaling": {"mode": "vpa"}}} }),
    );
    let Some(out) = helper(
        "lint",
        &json!({"cases": req, "kube_versions": ["v1.29.0", "v1.33.0"]}),
    ) else {
        return;
    };
    let mut bad = Vec::new();
    for (case, by_version) in out.as_object().unwrap() {
        for (version, report) in by_version.as_object().unwrap() {
            assert_eq!(report["total_charts_linted"], 1);
            let errors = report["errors"].as_array().unwrap();
            // Severity 1 is informational ("icon is recommended"); 2 warnings, 3 errors.
            let serious: Vec<_> = report["messages"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|m| m["severity"].as_u64().unwrap_or(3) >= 2)
                .collect();
            if case == "control" {
                assert!(!errors.is_empty(), "helm lint accepted the control values");
            } else if !errors.is_empty() || !serious.is_empty() {
                bad.push(format!("{case} @ {version}: {errors:?} {serious:?}"));
            }
        }
    }
    assert!(bad.is_empty(), "helm lint --strict: {bad:#?}");
}

#[test]
fn values_schema_refuses_bad_values() {
    let bad: Vec<(&str, Value, &str)> = vec![
        (
            "unknown top-level key",
            json!({"replicaCount": 3}),
            "replicaCount",
        ),
        (
            "unknown nested key",
            json!({"worker": {"concurency": 8}}),
            "concurency",
        ),
        (
            "typo in rabbitmq",
            json!({"rabbitmq": {"secret": "x"}}),
            "secret",
        ),
        (
            "autoscaling mode",
            json!({"worker": {"autoscaling": {"mode": "vpa"}}}),
            "mode",
        ),
        (
            "zero concurrency",
            json!({"worker": {"concurrency": 0}}),
            "concurrency",
        ),
        (
            "concurrency as string",
            json!({"worker": {"concurrency": "4"}}),
            "concurrency",
        ),
        (
            "no coordinator",
            json!({"coordinator": {"replicas": 0}}),
            "replicas",
        ),
        (
            "duration syntax",
            json!({"coordinator": {"leaseDuration": "fifteen"}}),
            "leaseDuration",
        ),
        ("latest tag", json!({"image": {"tag": "latest"}}), "tag"),
        (
            "bad digest",
            json!({"image": {"digest": "sha256:xyz"}}),
            "digest",
        ),
        (
            "empty broker secret",
            json!({"rabbitmq": {"existingSecret": ""}}),
            "existingSecret",
        ),
        (
            "bad namespace",
            json!({"watchNamespaces": ["Team_A"]}),
            "watchNamespaces",
        ),
        ("port range", json!({"metricsPort": 70000}), "metricsPort"),
        (
            "otlp endpoint",
            json!({"opentelemetry": {"endpoint": "collector:4318"}}),
            "endpoint",
        ),
        (
            "shared volume without claim",
            json!({"sharedVolume": {"enabled": true}}),
            "claimName",
        ),
        (
            "pull policy",
            json!({"image": {"pullPolicy": "Sometimes"}}),
            "pullPolicy",
        ),
        (
            "serviceMonitor typo",
            json!({"serviceMonitor": {"enable": true}}),
            "enable",
        ),
        (
            "networkPolicy egress type",
            json!({"networkPolicy": {"egress": {"to": []}}}),
            "egress",
        ),
    ];
    let mut req = serde_json::Map::new();
    for (name, values, _) in &bad {
        req.insert(format!("bad: {name}"), values.clone());
    }
    for (name, values) in cases() {
        req.insert(format!("good: {name}"), values);
    }
    let Some(out) = helper("schema", &json!({ "cases": req })) else {
        return;
    };
    for (name, _, needle) in &bad {
        let r = &out[format!("bad: {name}")];
        assert!(r["ok"] == false, "values.schema.json accepts {name}");
        assert!(
            r["error"].as_str().unwrap().contains(needle),
            "the error for {name} does not name {needle}: {}",
            r["error"]
        );
    }
    for (name, _) in cases() {
        let r = &out[format!("good: {name}")];
        assert!(
            r["ok"] == true,
            "values.schema.json refuses {name}: {}",
            r["error"]
        );
    }

    // Every object the chart itself defines is closed.
    let schema: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("charts/spillway/values.schema.json")).unwrap(),
    )
    .unwrap();
    fn walk(node: &Value, path: &str, open: &mut Vec<String>) {
        if let Some(props) = node.get("properties").and_then(Value::as_object) {
            if node.get("additionalProperties") != Some(&Value::Bool(false))
                && !path.ends_with("extraEnv[]")
            {
                open.push(path.to_string());
            }
            for (k, v) in props {
                walk(v, &format!("{path}.{k}"), open);
            }
        }
        if let Some(items) = node.get("items") {
            walk(items, &format!("{path}[]"), open);
        }
    }
    let mut open = Vec::new();
    walk(&schema, "", &mut open);
    assert!(
        open.is_empty(),
        "schema objects without additionalProperties: false: {open:?}"
    );
}

/// Every key of values.yaml is in the README's values reference.
#[test]
fn readme_documents_every_value() {
    let Some(docs) = yaml_docs(&[repo_root().join("charts/spillway/values.yaml")]) else {
        return;
    };
    let values = docs.into_values().next().unwrap().remove(0);
    fn leaves(v: &Value, path: &str, out: &mut Vec<String>) {
        match v.as_object() {
            // Free-form maps (annotations, labels, resources, ...) are documented as one key.
            Some(m)
                if !m.is_empty()
                    && !path.ends_with("resources")
                    && !path.ends_with("SecurityContext")
                    && path != "securityContext" =>
            {
                for (k, c) in m {
                    let p = if path.is_empty() {
                        k.clone()
                    } else {
                        format!("{path}.{k}")
                    };
                    leaves(c, &p, out);
                }
            }
            _ => out.push(path.to_string()),
        }
    }
    let mut keys = Vec::new();
    leaves(&values, "", &mut keys);
    assert!(keys.len() > 60, "suspiciously few values: {keys:?}");
    let readme = std::fs::read_to_string(repo_root().join("charts/spillway/README.md")).unwrap();
    let missing: Vec<_> = keys
        .iter()
        .filter(|k| !readme.contains(&format!("`{k}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "charts/spillway/README.md does not document {missing:?}"
    );
    // And the README names each tested combination.
    for (name, _) in cases() {
        assert!(
            readme.contains(&format!("`{name}`")),
            "README does not list the {name} combination"
        );
    }
}

// ---------------------------------------------------------------------------------------------
// 2. Valid Kubernetes, for 1.29 to 1.33; examples against the CRD; the chart's CRD is the
//    generated one

fn manifest_files(dir: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("cannot read {dir}: {e}"))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"))
        .collect();
    files.sort();
    files
}

#[test]
fn every_rendered_object_and_manifest_is_valid_kubernetes_1_29_to_1_33() {
    let Some(all) = render_all() else { return };
    let mut objects: Vec<(String, Value)> = Vec::new();
    let mut seen = BTreeSet::new();
    for (case, r) in &all {
        for o in &r.objects {
            let mut o = o.clone();
            let source = o.as_object_mut().unwrap().remove("_source").unwrap();
            // Identical objects from several combinations are checked once.
            if seen.insert(o.to_string()) {
                objects.push((format!("{case}: {} ({source})", kind_name(&o)), o));
            }
        }
    }
    let rendered = objects.len();

    // manifests/: the CRD, the examples, the kustomize bases built, the Flux objects, and the
    // Argo CD patch as the ConfigMap it is merged into.
    let mut files = manifest_files("manifests/crds");
    files.extend(manifest_files("manifests/examples"));
    files.extend(
        manifest_files("manifests/flux")
            .into_iter()
            .filter(|p| !p.ends_with("kustomization.yaml")),
    );
    let docs = yaml_docs(&files).unwrap();
    for (path, docs) in &docs {
        for d in docs {
            objects.push((format!("{path}: {}", kind_name(d)), d.clone()));
        }
    }
    for dir in ["manifests/base", "manifests/flux"] {
        for d in kubectl_kustomize(dir) {
            objects.push((format!("kubectl kustomize {dir}: {}", kind_name(&d)), d));
        }
    }
    let patch = yaml_docs(&[repo_root().join("manifests/argocd/argocd-cm-patch.yaml")]).unwrap();
    let mut cm = patch.into_values().next().unwrap().remove(0);
    cm["apiVersion"] = json!("v1");
    cm["kind"] = json!("ConfigMap");
    cm["metadata"] = json!({"name": "argocd-cm", "namespace": "argocd"});
    objects.push((
        "manifests/argocd/argocd-cm-patch.yaml: ConfigMap/argocd-cm".into(),
        cm,
    ));

    // A control: an object with a field Kubernetes does not know must be reported.
    let mut control = all["defaults"].one("Deployment", "spillway-worker").clone();
    control.as_object_mut().unwrap().remove("_source");
    control["spec"]["template"]["spec"]["containers"][0]["readOnlyRootFS"] = json!(true);
    objects.push(("control: unknown field".into(), control));

    let Some(problems) = kubernetes_validate(&objects) else {
        return;
    };
    assert_eq!(problems.len(), objects.len(), "every object was checked");
    let control = &problems["control: unknown field"];
    assert_eq!(
        control.len(),
        KUBE_VERSIONS.len(),
        "--strict must refuse an unknown field: {control:?}"
    );
    let failed: BTreeMap<_, _> = problems
        .iter()
        .filter(|(k, v)| !v.is_empty() && !k.starts_with("control:"))
        .collect();
    assert!(
        failed.is_empty(),
        "kubernetes-validate --strict: {failed:#?}"
    );
    assert!(
        rendered > 40,
        "suspiciously few rendered objects: {rendered}"
    );
}

fn kind_name(o: &Value) -> String {
    match o["metadata"]["namespace"].as_str() {
        Some(ns) => format!(
            "{}/{ns}/{}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["name"].as_str().unwrap_or("?")
        ),
        None => format!(
            "{}/{}",
            o["kind"].as_str().unwrap_or("?"),
            o["metadata"]["name"].as_str().unwrap_or("?")
        ),
    }
}

#[test]
fn examples_validate_against_the_crd_schema() {
    let Some(cj) = venv_bin("check-jsonschema") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let schema = dir.path().join("exportjob.schema.json");
    helper(
        "crd-schema",
        &json!({"crd": repo_root().join("manifests/crds/exportjob.yaml"), "out": schema}),
    )
    .unwrap();
    let examples = manifest_files("manifests/examples");
    assert!(examples.len() >= 5);
    let run = |files: &[PathBuf]| {
        Command::new(&cj)
            .arg("--schemafile")
            .arg(&schema)
            .args(files)
            .output()
            .unwrap()
    };
    let out = run(&examples);
    assert!(
        out.status.success(),
        "examples do not match the CRD schema: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );

    // Controls: an unknown field and a wrong enum value must be refused.
    let text =
        std::fs::read_to_string(repo_root().join("manifests/examples/s3-parquet-daily.yaml"))
            .unwrap();
    for (name, broken) in [
        ("unknown", text.replace("  sharding:\n", "  shardng:\n")),
        ("enum", text.replace("format: parquet", "format: avro")),
    ] {
        assert_ne!(broken, text, "the {name} control changed nothing");
        let path = dir.path().join(format!("{name}.yaml"));
        std::fs::write(&path, broken).unwrap();
        let out = run(&[path]);
        assert!(
            !out.status.success(),
            "check-jsonschema accepted the {name} control"
        );
    }
}

#[test]
fn chart_crd_is_the_generated_crd() {
    // manifests/crds/exportjob.yaml is `spillway crd` (crates/api/tests/manifests.rs) and is
    // structural (crates/api/src/crd.rs, crd_is_structural); the chart must carry exactly it.
    let Some(all) = render_all() else { return };
    let mut chart_crd = all["defaults"]
        .one("CustomResourceDefinition", "exportjobs.spillway.dev")
        .clone();
    let docs = yaml_docs(&[repo_root().join("manifests/crds/exportjob.yaml")]).unwrap();
    let committed = docs.into_values().next().unwrap().remove(0);
    let meta = chart_crd["metadata"].as_object_mut().unwrap();
    assert_eq!(
        meta.remove("annotations").unwrap(),
        json!({"helm.sh/resource-policy": "keep"})
    );
    assert!(meta.remove("labels").is_some());
    chart_crd.as_object_mut().unwrap().remove("_source");
    assert!(
        chart_crd == committed,
        "charts/spillway/templates/crds/exportjob.yaml differs from manifests/crds/exportjob.yaml: run tests/chart/sync-crd.sh"
    );
    // The API server's own rules the schema validators do not apply.
    assert_eq!(
        committed["metadata"]["name"],
        format!(
            "{}.{}",
            committed["spec"]["names"]["plural"].as_str().unwrap(),
            committed["spec"]["group"].as_str().unwrap()
        )
    );
    let storage = committed["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["storage"] == true)
        .count();
    assert_eq!(storage, 1, "exactly one storage version");
}

// ---------------------------------------------------------------------------------------------
// 3. The kustomize base is the chart's default rendering

/// The documented differences (manifests/base/README.md), applied to the chart's objects.
fn as_base(mut o: Value) -> Option<Value> {
    o.as_object_mut().unwrap().remove("_source");
    if o["kind"] == "CustomResourceDefinition" {
        return None; // applied from manifests/crds/ before the base
    }
    fn fix(labels: &mut Value) {
        if let Some(m) = labels.as_object_mut() {
            m.remove("helm.sh/chart");
            if m.contains_key("app.kubernetes.io/managed-by") {
                m.insert("app.kubernetes.io/managed-by".into(), json!("kustomize"));
            }
        }
    }
    fix(&mut o["metadata"]["labels"]);
    if o["spec"]["template"]["metadata"]["labels"].is_object() {
        fix(&mut o["spec"]["template"]["metadata"]["labels"]);
    }
    Some(o)
}

#[test]
fn kustomize_base_matches_the_chart_defaults() {
    let Some(all) = render_all() else { return };
    let key = |o: &Value| {
        format!(
            "{}/{}/{}",
            o["kind"].as_str().unwrap(),
            o["metadata"]["namespace"].as_str().unwrap_or(""),
            o["metadata"]["name"].as_str().unwrap()
        )
    };
    let chart: BTreeMap<String, Value> = all["defaults"]
        .objects
        .iter()
        .cloned()
        .filter_map(as_base)
        .map(|o| (key(&o), o))
        .collect();
    let mut base: BTreeMap<String, Value> = kubectl_kustomize("manifests/base")
        .into_iter()
        .map(|o| (key(&o), o))
        .collect();

    // Difference: the base creates its namespace (Helm: --create-namespace), with the
    // restricted Pod Security Standard enforced.
    let ns = base
        .remove("Namespace//spillway-system")
        .expect("the base creates its namespace");
    assert_eq!(
        ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"],
        "restricted"
    );

    let only_chart: Vec<_> = chart.keys().filter(|k| !base.contains_key(*k)).collect();
    let only_base: Vec<_> = base.keys().filter(|k| !chart.contains_key(*k)).collect();
    assert!(
        only_chart.is_empty() && only_base.is_empty(),
        "objects only in the chart: {only_chart:?}; only in manifests/base: {only_base:?} (regenerate the base, see manifests/base/README.md)"
    );
    for (k, c) in &chart {
        assert!(
            c == &base[k],
            "{k} differs between the chart and manifests/base:\nchart: {c:#}\nbase: {:#}",
            base[k]
        );
    }
    assert!(
        chart.len() >= 14,
        "suspiciously few objects: {:?}",
        chart.keys()
    );
}

// ---------------------------------------------------------------------------------------------
// 4. The binary accepts every rendered command line and environment

fn check_args(args: &[String], env: &BTreeMap<String, String>) -> std::process::Output {
    let bin = spillway_e2e::bin("spillway");
    let mut cmd = Command::new(&bin);
    cmd.env_clear().arg("check-args").args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()))
}

/// The container's environment as the kubelet would set it, with plausible values for the
/// `valueFrom` entries.
fn container_env(deploy: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    for e in container(deploy)["env"].as_array().unwrap() {
        let name = e["name"].as_str().unwrap().to_string();
        let value = if let Some(v) = e.get("value") {
            v.as_str().expect("env values are strings").to_string()
        } else if e["valueFrom"]["secretKeyRef"].is_object() {
            "amqp://u:p@rabbitmq:5672/%2f".to_string()
        } else {
            match e["valueFrom"]["fieldRef"]["fieldPath"].as_str() {
                Some("metadata.namespace") => deploy["metadata"]["namespace"]
                    .as_str()
                    .unwrap()
                    .to_string(),
                Some("metadata.name") => format!(
                    "{}-5d8f7c9b4-x2x7q",
                    deploy["metadata"]["name"].as_str().unwrap()
                ),
                other => panic!("no stand-in for env {name} from {other:?}"),
            }
        };
        out.insert(name, value);
    }
    out
}

#[test]
fn rendered_command_lines_are_accepted_by_the_binary() {
    let Some(all) = render_all() else { return };
    let mut checked = 0;
    for (case, r) in &all {
        for deploy in r.all("Deployment") {
            let args = args(deploy);
            let env = container_env(deploy);
            let out = check_args(&args, &env);
            assert!(
                out.status.success(),
                "{case}: spillway refuses the command line of {}: spillway check-args {}\n{}",
                kind_name(deploy),
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
            checked += 1;
        }
    }
    assert_eq!(checked, 2 * cases().len());

    // Controls, so this test can fail: a flag that does not exist, a bad value, and the
    // broker URL missing from the environment must all be refused.
    let d = all["defaults"].one("Deployment", "spillway-worker");
    let (args, env) = (args(d), container_env(d));
    let mut wrong = args.clone();
    wrong.push("--no-such-flag".into());
    assert!(
        !check_args(&wrong, &env).status.success(),
        "an unknown flag was accepted"
    );
    let mut bad_value = args.clone();
    let i = bad_value.iter().position(|a| a == "--concurrency").unwrap();
    bad_value[i + 1] = "many".into();
    assert!(
        !check_args(&bad_value, &env).status.success(),
        "--concurrency many was accepted"
    );
    let mut no_broker = env.clone();
    no_broker.remove("SPILLWAY_BROKER");
    assert!(
        !check_args(&args, &no_broker).status.success(),
        "the worker started without a broker URL"
    );
}

// ---------------------------------------------------------------------------------------------
// Security and RBAC

#[test]
fn pods_meet_the_restricted_pod_security_standard() {
    let Some(all) = render_all() else { return };
    for (case, r) in &all {
        for deploy in r.all("Deployment") {
            let what = format!("{case}: {}", kind_name(deploy));
            let pod = &deploy["spec"]["template"]["spec"];
            let psc = &pod["securityContext"];
            assert_eq!(psc["runAsNonRoot"], true, "{what}");
            assert_eq!(psc["seccompProfile"]["type"], "RuntimeDefault", "{what}");
            assert!(psc["runAsUser"].as_u64().unwrap() > 0, "{what}");
            for key in ["hostNetwork", "hostPID", "hostIPC"] {
                assert!(pod.get(key).is_none(), "{what}: {key}");
            }
            for v in pod["volumes"].as_array().unwrap() {
                assert!(
                    v.get("emptyDir").is_some() || v.get("persistentVolumeClaim").is_some(),
                    "{what}: volume {v}"
                );
            }
            let c = container(deploy);
            let sc = &c["securityContext"];
            assert_eq!(sc["allowPrivilegeEscalation"], false, "{what}");
            assert_eq!(sc["readOnlyRootFilesystem"], true, "{what}");
            assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{what}");
            assert!(sc["capabilities"].get("add").is_none(), "{what}");
            assert!(sc.get("privileged").is_none(), "{what}");
            assert!(
                c["resources"]["requests"]["cpu"].is_string(),
                "{what}: cpu request"
            );
            assert!(
                c["resources"]["limits"]["memory"].is_string(),
                "{what}: memory limit"
            );
            // Probes hit the named port the container declares, on the health paths.
            let port = c["ports"][0]["name"].as_str().unwrap();
            assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz", "{what}");
            assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz", "{what}");
            assert_eq!(c["livenessProbe"]["httpGet"]["port"], port, "{what}");
            assert_eq!(c["readinessProbe"]["httpGet"]["port"], port, "{what}");
            // A writable /tmp, since the root filesystem is read-only.
            assert!(
                c["volumeMounts"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|m| m["mountPath"] == "/tmp")
            );
        }
        for sa in r.all("ServiceAccount") {
            assert_eq!(
                sa["automountServiceAccountToken"],
                false,
                "{case}: {}",
                kind_name(sa)
            );
        }
    }
}

/// (apiGroup, resource, verb, resourceName or "", namespace of the grant or "*").
type Grant = (String, String, String, String, String);

/// What each ServiceAccount may do, from the rendered (Cluster)Roles and bindings.
fn grants(r: &Rendered) -> BTreeMap<String, BTreeSet<Grant>> {
    let mut out: BTreeMap<String, BTreeSet<Grant>> = BTreeMap::new();
    for binding in r
        .all("ClusterRoleBinding")
        .into_iter()
        .chain(r.all("RoleBinding"))
    {
        let ns = if binding["kind"] == "ClusterRoleBinding" {
            "*".to_string()
        } else {
            binding["metadata"]["namespace"]
                .as_str()
                .unwrap()
                .to_string()
        };
        let role_ref = &binding["roleRef"];
        let role = r.one(
            role_ref["kind"].as_str().unwrap(),
            role_ref["name"].as_str().unwrap(),
        );
        if role_ref["kind"] == "Role" {
            assert_eq!(
                role["metadata"]["namespace"],
                binding["metadata"]["namespace"]
            );
        }
        for subject in binding["subjects"].as_array().unwrap() {
            assert_eq!(subject["kind"], "ServiceAccount");
            let sa = format!(
                "{}/{}",
                subject["namespace"].as_str().unwrap(),
                subject["name"].as_str().unwrap()
            );
            for rule in role["rules"].as_array().unwrap() {
                let strs = |k: &str| -> Vec<String> {
                    rule[k]
                        .as_array()
                        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
                        .unwrap_or_default()
                };
                let names = strs("resourceNames");
                let names = if names.is_empty() {
                    vec![String::new()]
                } else {
                    names
                };
                for g in strs("apiGroups") {
                    for res in strs("resources") {
                        for verb in strs("verbs") {
                            for n in &names {
                                assert!(
                                    !(g.contains('*') || res.contains('*') || verb.contains('*')),
                                    "wildcard in {}",
                                    kind_name(role)
                                );
                                out.entry(sa.clone()).or_default().insert((
                                    g.clone(),
                                    res.clone(),
                                    verb.clone(),
                                    n.clone(),
                                    ns.clone(),
                                ));
                            }
                        }
                    }
                }
            }
        }
    }
    out
}

fn expected_grants(
    namespaces: &[&str],
    lease_ns: &str,
    lease: &str,
) -> (BTreeSet<Grant>, BTreeSet<Grant>) {
    let g = |group: &str, res: &str, verb: &str, name: &str, ns: &str| -> Grant {
        (
            group.into(),
            res.into(),
            verb.into(),
            name.into(),
            ns.into(),
        )
    };
    let mut coordinator = BTreeSet::new();
    let mut worker = BTreeSet::new();
    for ns in namespaces {
        for verb in ["list", "watch", "patch", "delete"] {
            coordinator.insert(g("spillway.dev", "exportjobs", verb, "", ns));
        }
        coordinator.insert(g("spillway.dev", "exportjobs/status", "patch", "", ns));
        coordinator.insert(g("spillway.dev", "exportjobs/finalizers", "update", "", ns));
        coordinator.insert(g("events.k8s.io", "events", "create", "", ns));
        coordinator.insert(g("events.k8s.io", "events", "patch", "", ns));
        coordinator.insert(g("", "secrets", "get", "", ns));
        worker.insert(g("", "secrets", "get", "", ns));
    }
    for verb in ["get", "update"] {
        coordinator.insert(g("coordination.k8s.io", "leases", verb, lease, lease_ns));
    }
    coordinator.insert(g("coordination.k8s.io", "leases", "create", "", lease_ns));
    (coordinator, worker)
}

#[test]
fn rbac_grants_exactly_the_calls_each_role_makes() {
    let Some(all) = render_all() else { return };
    for (case, namespaces, lease) in [
        ("defaults", vec!["*"], "spillway-coordinator"),
        (
            "watch-namespaces",
            vec!["team-a", "team-b"],
            "spillway-coordinator",
        ),
        ("shared-broker", vec!["*"], "exports-leader"),
    ] {
        let got = grants(&all[case]);
        let (coordinator, worker) = expected_grants(&namespaces, "spillway-system", lease);
        assert_eq!(
            got.keys().cloned().collect::<Vec<_>>(),
            vec![
                "spillway-system/spillway-coordinator",
                "spillway-system/spillway-worker"
            ],
            "{case}"
        );
        assert_eq!(
            got["spillway-system/spillway-coordinator"], coordinator,
            "{case}: coordinator"
        );
        assert_eq!(
            got["spillway-system/spillway-worker"], worker,
            "{case}: worker"
        );
        // The ServiceAccounts the pods run as are the bound ones.
        for (dep, sa) in [
            ("spillway-coordinator", "spillway-coordinator"),
            ("spillway-worker", "spillway-worker"),
        ] {
            let d = all[case].one("Deployment", dep);
            assert_eq!(d["spec"]["template"]["spec"]["serviceAccountName"], sa);
            assert_eq!(
                d["spec"]["template"]["spec"]["automountServiceAccountToken"],
                true
            );
        }
    }
    // rbac.create=false renders no RBAC at all.
    let Some(out) = helper(
        "render",
        &json!({"cases": {"no-rbac": {"values": {"rbac": {"create": false}}}}}),
    ) else {
        return;
    };
    let kinds: BTreeSet<_> = out["no-rbac"]["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["kind"].as_str().unwrap().to_string())
        .collect();
    for k in ["ClusterRole", "ClusterRoleBinding", "Role", "RoleBinding"] {
        assert!(!kinds.contains(k), "rbac.create=false still renders a {k}");
    }
}

// ---------------------------------------------------------------------------------------------
// GitOps examples

#[test]
fn flux_examples_point_at_real_paths_and_valid_values() {
    let Some(docs) = yaml_docs(&manifest_files("manifests/flux")) else {
        return;
    };
    let objs: Vec<Value> = docs
        .iter()
        .filter(|(p, _)| !p.ends_with("/kustomization.yaml"))
        .flat_map(|(_, d)| d.clone())
        .collect();
    let sources: BTreeSet<String> = objs
        .iter()
        .filter(|o| o["kind"] == "GitRepository")
        .map(|o| o["metadata"]["name"].as_str().unwrap().to_string())
        .collect();
    assert!(!sources.is_empty());
    let kustomizations: Vec<&Value> = objs
        .iter()
        .filter(|o| o["apiVersion"] == "kustomize.toolkit.fluxcd.io/v1")
        .collect();
    let names: BTreeSet<&str> = kustomizations
        .iter()
        .map(|k| k["metadata"]["name"].as_str().unwrap())
        .collect();
    let mut paths = BTreeSet::new();
    for k in &kustomizations {
        let spec = &k["spec"];
        assert_eq!(spec["sourceRef"]["kind"], "GitRepository");
        assert!(sources.contains(spec["sourceRef"]["name"].as_str().unwrap()));
        let path = spec["path"].as_str().unwrap();
        assert!(
            repo_root().join(path).is_dir(),
            "Flux path {path} does not exist"
        );
        paths.insert(path.to_string());
        for dep in spec["dependsOn"].as_array().into_iter().flatten() {
            assert!(
                names.contains(dep["name"].as_str().unwrap()),
                "unknown dependsOn {dep}"
            );
        }
        assert!(spec["interval"].is_string());
    }
    assert!(paths.contains("./manifests/crds") && paths.contains("./manifests/base"));
    let crds = kustomizations
        .iter()
        .find(|k| k["spec"]["path"] == "./manifests/crds")
        .unwrap();
    assert_eq!(
        crds["spec"]["prune"], false,
        "pruning the CRD would delete every ExportJob"
    );

    // The HelmRelease's chart exists and its values pass the chart's schema and render.
    let hr = objs
        .iter()
        .find(|o| o["kind"] == "HelmRelease")
        .expect("a HelmRelease example");
    let chart = hr["spec"]["chart"]["spec"]["chart"].as_str().unwrap();
    assert!(repo_root().join(chart).join("Chart.yaml").is_file());
    assert!(
        sources.contains(
            hr["spec"]["chart"]["spec"]["sourceRef"]["name"]
                .as_str()
                .unwrap()
        )
    );
    let values = hr["spec"]["values"].clone();
    let out = helper("schema", &json!({"cases": {"hr": values}})).unwrap();
    assert!(
        out["hr"]["ok"] == true,
        "HelmRelease values: {}",
        out["hr"]["error"]
    );
    let out = helper("render", &json!({"cases": {"hr": {"values": values}}})).unwrap();
    assert!(
        out["hr"]["ok"] == true,
        "HelmRelease values do not render: {}",
        out["hr"]["error"]
    );
}

// ---------------------------------------------------------------------------------------------
// Dockerfile (no Docker engine here: what can be checked without building)

#[test]
fn dockerfile_builds_the_binary_and_runs_it_unprivileged() {
    let root = repo_root();
    let text = std::fs::read_to_string(root.join("Dockerfile")).unwrap();
    // Instructions, with continuation lines joined.
    let mut instructions: Vec<String> = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || (t.starts_with('#') && current.is_empty()) {
            continue;
        }
        if let Some(stripped) = t.strip_suffix('\\') {
            current.push_str(stripped);
            current.push(' ');
        } else {
            current.push_str(t);
            instructions.push(std::mem::take(&mut current));
        }
    }
    let args: BTreeMap<String, String> = instructions
        .iter()
        .filter_map(|i| i.strip_prefix("ARG "))
        .filter_map(|a| a.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    let expand = |s: &str| {
        let mut s = s.to_string();
        for (k, v) in &args {
            s = s.replace(&format!("${{{k}}}"), v);
        }
        s
    };

    // Stages: FROM <image> AS <name>, images pinned to a tag (never latest).
    let mut stages: Vec<(String, String, Vec<String>)> = Vec::new();
    for i in &instructions {
        if let Some(rest) = i.strip_prefix("FROM ") {
            let parts: Vec<&str> = rest.split_whitespace().collect();
            assert!(
                parts.len() == 3 && parts[1].eq_ignore_ascii_case("AS"),
                "unnamed stage: {i}"
            );
            let image = expand(parts[0]);
            let (_, tag) = image
                .rsplit_once(':')
                .unwrap_or_else(|| panic!("{image} has no tag"));
            assert!(
                !tag.contains('/') && tag != "latest" && !tag.is_empty(),
                "{image} is not pinned"
            );
            stages.push((image, parts[2].to_string(), Vec::new()));
        } else if let Some(stage) = stages.last_mut() {
            stage.2.push(i.clone());
        } else {
            assert!(
                i.starts_with("ARG "),
                "only ARG may come before the first FROM: {i}"
            );
        }
    }
    assert!(stages.len() >= 2, "a multi-stage build");
    let (build_image, build_name, build) = &stages[0];
    let (runtime_image, _, runtime) = stages.last().unwrap();

    // The build stage uses the workspace's declared toolchain and builds the spillway package.
    let cargo_toml = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let rust_version = cargo_toml
        .lines()
        .find_map(|l| l.strip_prefix("rust-version = "))
        .unwrap()
        .trim_matches('"');
    assert_eq!(build_image, &format!("rust:{rust_version}-bookworm"));
    assert!(
        build
            .iter()
            .any(|i| i.starts_with("RUN ")
                && i.contains("cargo build --release --locked -p spillway"))
    );
    for member in ["crates", "tests"] {
        assert!(
            build
                .iter()
                .any(|i| i.starts_with("COPY ") && i.contains(member)),
            "the build stage does not copy workspace member {member}"
        );
    }

    // The binary name is the crate's [[bin]].
    let crate_toml = std::fs::read_to_string(root.join("crates/spillway/Cargo.toml")).unwrap();
    let bin_section = crate_toml
        .split("[[bin]]")
        .nth(1)
        .expect("crates/spillway has a [[bin]]");
    let bin = bin_section
        .lines()
        .find_map(|l| l.trim().strip_prefix("name = "))
        .unwrap()
        .trim_matches('"');
    assert!(
        build
            .iter()
            .any(|i| i.contains(&format!("target/release/{bin} ")))
    );

    // The runtime stage: small, copies only the binary, runs as 65532, starts the binary.
    assert!(
        !runtime_image.starts_with("rust:"),
        "the runtime image is not the toolchain"
    );
    assert!(
        runtime_image.contains("distroless") || runtime_image.contains("-slim"),
        "{runtime_image} is not a small runtime image"
    );
    let copies: Vec<_> = runtime.iter().filter(|i| i.starts_with("COPY ")).collect();
    assert_eq!(
        copies.len(),
        1,
        "the runtime copies only the binary: {copies:?}"
    );
    assert!(copies[0].starts_with(&format!("COPY --from={build_name} ")));
    let dest = copies[0].split_whitespace().last().unwrap();
    assert!(dest.ends_with(&format!("/{bin}")));
    let users: Vec<_> = runtime
        .iter()
        .filter_map(|i| i.strip_prefix("USER "))
        .collect();
    assert_eq!(
        users,
        vec!["65532:65532"],
        "the runtime runs as the chart's user"
    );
    let entrypoint = runtime
        .iter()
        .find_map(|i| i.strip_prefix("ENTRYPOINT "))
        .expect("an ENTRYPOINT");
    let entrypoint: Vec<String> = serde_json::from_str(entrypoint).expect("exec-form ENTRYPOINT");
    assert_eq!(entrypoint, vec![dest.to_string()]);

    // The chart's runAsUser is the image's user.
    let values = std::fs::read_to_string(root.join("charts/spillway/values.yaml")).unwrap();
    assert!(values.contains("runAsUser: 65532") && values.contains("runAsGroup: 65532"));

    // The build context leaves out what is big or secret.
    let ignore = std::fs::read_to_string(root.join(".dockerignore")).unwrap();
    let ignored: BTreeSet<&str> = ignore.lines().map(str::trim).collect();
    for p in ["target", ".work", ".git"] {
        assert!(ignored.contains(p), ".dockerignore does not exclude {p}");
    }
}
