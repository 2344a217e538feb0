//! The export engine end to end, in process: searchsim → spillway's coordinator and workers →
//! real S3 (SeaweedFS) or a local directory, with every output file read back and compared to
//! the generated source documents.

use searchsim::datagen::DataSpec;
use searchsim::{Config, Faults};
use spillway_api::ExportJob;
use spillway_e2e::scenarios::*;
use spillway_e2e::*;
use spillway_engine::LocalSecrets;

/// Documents of the large exactness test (1M in CI; lower it locally with SPILLWAY_E2E_DOCS).
fn big_docs() -> u64 {
    std::env::var("SPILLWAY_E2E_DOCS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn heavy_exactness_parquet_s3_ndjson_csv() {
    let spec = DataSpec {
        docs: big_docs(),
        days: 30,
        shards: 3,
        seed: 2024,
        ..Default::default()
    };
    let (sim, loaded) = sim_with(Config::opensearch_3(), &spec).await;
    assert_eq!(loaded.docs, spec.docs);
    assert_eq!(loaded.indices.len(), 30);
    exactness_in_three_formats(&sim.url(), &spec, "e2e-exactness", "exact").await;
    sim.shutdown().await;
}

fn fired(sim: &searchsim::RunningSim, kind: &str) -> u64 {
    // A counter appears once its fault has fired.
    sim.cluster().stats()["faults"][kind].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn short_pages_fail_the_shard_and_are_retried() {
    let spec = small_spec(7);
    let (sim, _) = sim_with(Config::opensearch_3(), &spec).await;
    sim.cluster()
        .set_faults(Faults {
            short_page_rate: 0.1,
            seed: 3,
            ..Default::default()
        })
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let j = job(
        "short-pages",
        &sim.url(),
        &spec,
        "  sharding:\n    targetDocsPerShard: 2500\n    pageSize: 1000\n  retry:\n    maxAttempts: 40\n",
        &volume_output(out.path()),
    );
    let (report, progress) = run(&j, LocalSecrets::default(), 4).await;
    let report = report.expect("short pages are retried until the shard is whole");
    assert!(fired(&sim, "short_page") > 0, "the fault fired");
    assert!(progress.get().retries > 0, "shards were retried");
    assert_exact(
        &spec,
        exported_ids(out.path(), &format!("short-pages/{}", report.run_id)).await,
    );

    // Every page short: the job must fail, never claim success.
    sim.cluster()
        .set_faults(Faults {
            short_page_rate: 1.0,
            seed: 3,
            ..Default::default()
        })
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let j = job(
        "always-short",
        &sim.url(),
        &spec,
        "  sharding:\n    targetDocsPerShard: 2500\n  retry:\n    maxAttempts: 2\n",
        &volume_output(out.path()),
    );
    let (report, _) = run(&j, LocalSecrets::default(), 2).await;
    let err = report
        .expect_err("a job with truncated pages must fail")
        .to_string();
    assert!(
        err.contains("incomplete") || err.contains("truncat"),
        "{err}"
    );
    let success: Vec<_> = walk(out.path())
        .into_iter()
        .filter(|p| p.ends_with("_SUCCESS"))
        .collect();
    assert!(
        success.is_empty(),
        "no _SUCCESS after a failed job: {success:?}"
    );
    sim.shutdown().await;
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rejections_unavailability_and_latency_do_not_change_the_output() {
    let spec = small_spec(8);
    let (sim, _) = sim_with(Config::opensearch_3(), &spec).await;
    sim.cluster()
        .set_faults(Faults {
            reject_rate: 0.2,
            unavailable_rate: 0.05,
            latency_ms: 2,
            latency_jitter_ms: 3,
            seed: 5,
            ..Default::default()
        })
        .unwrap();
    let out = tempfile::tempdir().unwrap();
    let j = job(
        "faults",
        &sim.url(),
        &spec,
        "  sharding:\n    targetDocsPerShard: 5000\n    pageSize: 100\n",
        &volume_output(out.path()),
    );
    let (report, progress) = run(&j, LocalSecrets::default(), 4).await;
    let report = report.expect("faults are absorbed by retries");
    let retries = progress.request_retries();
    assert!(retries["rejected"] > 0, "429s were retried: {retries:?}");
    assert!(
        retries["unavailable_5xx"] > 0,
        "503s were retried: {retries:?}"
    );
    assert!(fired(&sim, "reject") > 0 && fired(&sim, "unavailable") > 0);
    assert_exact(
        &spec,
        exported_ids(out.path(), &format!("faults/{}", report.run_id)).await,
    );
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn opensearch_2_without_shard_doc_walks_index_shards_or_pages_by_a_tiebreaker_field() {
    let spec = small_spec(9);
    let (sim, _) = sim_with(Config::opensearch(), &spec).await;
    // Before OpenSearch 3.3 there is no `_shard_doc`: by default every planned shard reads
    // one index shard in `_doc` order (no `_id` fielddata); a unique field can replace that.
    for (name, tiebreaker) in [("os2-walk", None), ("os2-field", Some("event.id"))] {
        let out = tempfile::tempdir().unwrap();
        let mut j = job(
            name,
            &sim.url(),
            &spec,
            "  sharding:\n    targetDocsPerShard: 4000\n    pageSize: 700\n",
            &volume_output(out.path()),
        );
        j.spec.source.tiebreaker_field = tiebreaker.map(str::to_string);
        let (report, _) = run(&j, LocalSecrets::default(), 4).await;
        let report = report.unwrap_or_else(|e| panic!("OpenSearch 2.19 export ({name}): {e}"));
        let run_dir = out.path().join(format!("{name}/{}", report.run_id));
        assert_exact(
            &spec,
            exported_ids(out.path(), &format!("{name}/{}", report.run_id)).await,
        );
        let plan: spillway_api::Plan = serde_json::from_slice(
            &std::fs::read(run_dir.join(spillway_api::layout::PLAN)).unwrap(),
        )
        .unwrap();
        let walked = plan.shards.iter().filter(|s| s.index.is_some()).count();
        match tiebreaker {
            None => assert_eq!(
                walked,
                plan.shards.len(),
                "every shard reads one index shard: {:?}",
                plan.shards
            ),
            Some(_) => assert_eq!(walked, 0, "a tiebreaker field needs no walking"),
        }
    }
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn tls_with_a_custom_ca_and_sigv4_signed_requests() {
    let spec = DataSpec {
        docs: 5_000,
        ..small_spec(10)
    };
    let tls_dir = tempfile::tempdir().unwrap();
    let config = Config::opensearch_3()
        .with_tls(tls_dir.path())
        .with_sigv4("AKIDEXPORT", "export-secret-key-1");
    let (sim, _) = sim_with(config, &spec).await;
    assert!(sim.url().starts_with("https://"));
    let secrets = tempfile::tempdir().unwrap();
    let put = |secret: &str, key: &str, value: &str| {
        std::fs::create_dir_all(secrets.path().join(secret)).unwrap();
        std::fs::write(secrets.path().join(secret).join(key), value).unwrap();
    };
    put(
        "search-ca",
        "ca.crt",
        sim.ca_pem().expect("the simulator wrote its CA"),
    );
    put("aws", "accessKeyId", "AKIDEXPORT");
    put("aws", "secretAccessKey", "export-secret-key-1");
    put("aws-wrong", "accessKeyId", "AKIDEXPORT");
    put("aws-wrong", "secretAccessKey", "not-the-secret-999");
    let auth = |secret: &str| {
        format!(
            "    auth:\n      awsSigV4:\n        region: us-east-1\n        service: es\n        secretRef: {{name: {secret}}}\n    tls:\n      caSecretRef: {{name: search-ca}}\n"
        )
    };
    let out = tempfile::tempdir().unwrap();
    let with_auth = |name: &str, secret: &str| {
        let mut j = job(name, &sim.url(), &spec, "", &volume_output(out.path()));
        let extra: ExportJob = spillway_api::load_job_yaml(&format!(
            "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata: {{name: x}}\nspec:\n  source:\n    url: {}\n    indices: [x]\n{}  output: {{destination: {{volume: {{path: /x}}}}}}\n",
            sim.url(),
            auth(secret)
        ))
        .unwrap();
        j.spec.source.auth = extra.spec.source.auth;
        j.spec.source.tls = extra.spec.source.tls;
        j
    };
    let secrets_of = || LocalSecrets {
        dir: Some(secrets.path().into()),
    };
    let (report, progress) = run(&with_auth("signed", "aws"), secrets_of(), 4).await;
    let report = report.expect("signed requests over TLS export everything");
    assert!(progress.requests() > 0);
    assert_exact(
        &spec,
        exported_ids(out.path(), &format!("signed/{}", report.run_id)).await,
    );

    let (report, _) = run(&with_auth("wrongly-signed", "aws-wrong"), secrets_of(), 2).await;
    let err = report
        .expect_err("a wrong secret key is refused")
        .to_string();
    assert!(
        !err.contains("not-the-secret-999"),
        "the secret leaked: {err}"
    );
    assert!(
        err.contains("403")
            || err.to_lowercase().contains("signature")
            || err.contains("authentication"),
        "{err}"
    );
    sim.shutdown().await;
}
