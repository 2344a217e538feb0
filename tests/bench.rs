//! The benchmark pipeline (`bench/compare.py`) on a small data set: every tool of the
//! comparison exports, every output is read back and verified, and the table, chart and JSON
//! are written. The numbers are not judged here (a test is no place for timings); what is
//! checked is that the benchmark measures and verifies what it says it does, so a
//! `bench/run.sh` on a big machine does not fail an hour in.
//!
//! Needs the benchmark's tools (`scripts/deps/bench.sh`), SeaweedFS and RabbitMQ;
//! `scripts/test.sh` installs and starts all three.

use std::path::Path;
use std::process::Command;

use spillway_e2e::{bin, repo_root};

const DOCS: u64 = 3000;

fn bench_python() -> std::path::PathBuf {
    let py = repo_root().join(".work/bench-venv/bin/python");
    assert!(
        py.exists(),
        "{} is missing: install the benchmark's tools with scripts/deps/bench.sh (scripts/test.sh does this)",
        py.display()
    );
    py
}

#[test]
fn every_tool_of_the_comparison_exports_and_is_verified() {
    let py = bench_python();
    for var in [
        "SPILLWAY_S3_ENDPOINT",
        "SPILLWAY_S3_ACCESS_KEY",
        "SPILLWAY_S3_SECRET_KEY",
    ] {
        assert!(
            std::env::var_os(var).is_some(),
            "{var} is not set: start SeaweedFS with scripts/services/seaweedfs.sh start and eval \"$(scripts/services/seaweedfs.sh env)\""
        );
    }
    let bin_dir = bin("spillway")
        .parent()
        .expect("the binary has a directory")
        .to_path_buf();
    let out = tempfile::tempdir().expect("temp dir");
    let json = out.path().join("results.json");
    let md = out.path().join("results.md");
    let png = out.path().join("results.png");
    let run = Command::new(&py)
        .current_dir(repo_root())
        .arg("bench/compare.py")
        .args(["--docs", &DOCS.to_string(), "--shard-docs", "1000"])
        .args(["--timeout", "300"])
        .arg("--json")
        .arg(&json)
        .arg("--markdown")
        .arg(&md)
        .arg("--png")
        .arg(&png)
        .env("SPILLWAY_BENCH_BIN_DIR", &bin_dir)
        .output()
        .expect("compare.py runs");
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "compare.py failed:\n{stderr}");

    let rows: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(&json).expect("results.json written"))
            .expect("results.json is JSON");
    let tools: Vec<String> = rows
        .iter()
        .map(|r| format!("{} / {}", r["tool"], r["output"]))
        .collect();
    assert_eq!(rows.len(), 9, "one row per configuration: {tools:?}");
    for r in &rows {
        let what = format!("{} ({})", r["tool"], r["output"]);
        assert_eq!(
            r["complete"], true,
            "{what}: output not verified: {}\n{stderr}",
            r["check"]
        );
        assert_eq!(r["docs"], DOCS, "{what}");
        // one check per output file (the threaded exporter writes CSV and Parquet)
        let check = r["check"].as_str().unwrap_or("");
        assert!(
            !check.is_empty()
                && check
                    .split("; ")
                    .all(|c| c == format!("{DOCS} rows, {DOCS} distinct ids")),
            "{what}: {check}"
        );
        for key in ["wall_s", "cpu_s"] {
            let v = r[key].as_f64().unwrap_or(0.0);
            assert!(v > 0.0, "{what}: {key} = {v}");
        }
        assert!(r["peak_rss_kib"].as_u64().unwrap_or(0) > 1024, "{what}");
        assert!(r["output_bytes"].as_u64().unwrap_or(0) > 0, "{what}");
    }
    for tool in [
        "elasticdump",
        "opensearch-py helpers.scan",
        "spillway distributed, 4 worker processes",
    ] {
        assert!(
            rows.iter().any(|r| r["tool"] == tool),
            "{tool} missing from {tools:?}"
        );
    }
    let table = std::fs::read_to_string(&md).expect("markdown written");
    assert!(
        table.contains("| tool | output | wall s | docs/s |"),
        "{table}"
    );
    let chart = std::fs::read(&png).expect("chart written");
    assert!(chart.starts_with(b"\x89PNG"), "the chart is a PNG");
}

/// The verifier is what makes the "every document once" column mean something: it must
/// refuse outputs with a missing or a duplicated document.
#[test]
fn the_verifier_refuses_missing_and_duplicated_documents() {
    let py = bench_python();
    let dir = tempfile::tempdir().expect("temp dir");
    let write = |name: &str, ids: &[&str]| {
        let p = dir.path().join(name);
        let body: String = ids
            .iter()
            .map(|id| format!("{{\"_index\":\"i\",\"_id\":\"{id}\",\"_source\":{{}}}}\n"))
            .collect();
        std::fs::write(&p, body).expect("write");
        p
    };
    let verify = |file: &Path, expect: u64| {
        Command::new(&py)
            .current_dir(repo_root())
            .args(["bench/verify_output.py", "--expect", &expect.to_string()])
            .args(["--format", "ndjson"])
            .arg(file)
            .output()
            .expect("verify_output.py runs")
    };
    let good = write("good.ndjson", &["a", "b", "c"]);
    let ok = verify(&good, 3);
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    fails_saying(&verify(&good, 4), "missing", "one document short must fail");
    let dup = write("dup.ndjson", &["a", "b", "b"]);
    fails_saying(&verify(&dup, 3), "duplicated", "a duplicate must fail");
}

/// The verifier exited non-zero and its stderr names the problem.
fn fails_saying(out: &std::process::Output, word: &str, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{why}");
    assert!(stderr.contains(word), "{stderr}");
}
