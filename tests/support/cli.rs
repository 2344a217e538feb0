//! The `spillway` binary as a user runs it: job files, the one error line of a failed run,
//! and the files a run leaves behind.

use std::path::Path;
use std::process::Command;

use searchsim::datagen::DataSpec;

use crate::{bin, files_under, ndjson_rows};

/// Writes a job file `<dir>/<name>.yaml`.
pub fn write_job(dir: &Path, name: &str, body: &str) -> std::path::PathBuf {
    let path = dir.join(format!("{name}.yaml"));
    std::fs::write(&path, body).unwrap();
    path
}

/// A small NDJSON-to-volume job over `indices` and the time range `range` (YAML lines under
/// `timeRange:`); `extra` is inserted into `source:`.
pub fn job_text(
    name: &str,
    url: &str,
    indices: &str,
    range: &str,
    out: &Path,
    extra: &str,
) -> String {
    format!(
        "apiVersion: spillway.dev/v1alpha1\nkind: ExportJob\nmetadata:\n  name: {name}\nspec:\n  source:\n    url: {url}\n    indices: [{indices}]\n{extra}  timeRange:\n    field: \"@timestamp\"\n{range}  sharding:\n    targetDocsPerShard: 2000\n  retry:\n    maxAttempts: 2\n  output:\n    format: ndjson\n    compression: none\n    includeMetadata: true\n    destination:\n      volume:\n        path: {}\n",
        out.display()
    )
}

/// Every file named `name` below `dir`.
pub fn files_named(dir: &Path, name: &str) -> Vec<std::path::PathBuf> {
    files_under(dir)
        .into_iter()
        .filter(|p| p.file_name().and_then(|n| n.to_str()) == Some(name))
        .collect()
}

/// Shard markers committed below `dir` (not the hidden temporary file of a marker being
/// written, which a killed run can leave behind).
pub fn markers(dir: &Path) -> usize {
    files_under(dir)
        .iter()
        .filter(|p| {
            p.parent()
                .and_then(|p| p.file_name())
                .and_then(|n| n.to_str())
                == Some("shards")
                && p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| !n.starts_with('.'))
        })
        .count()
}

/// Runs the binary on a job and returns its last stderr line; asserts failure and no _SUCCESS.
pub fn fails(job: &Path, out: &Path, secrets: Option<&Path>) -> String {
    let mut cmd = Command::new(bin("spillway"));
    cmd.args(["run", "--no-progress"]).arg(job);
    if let Some(s) = secrets {
        cmd.arg("--secrets-dir").arg(s);
    }
    let o = cmd.output().expect("spillway runs");
    let stderr = String::from_utf8_lossy(&o.stderr).to_string();
    assert!(
        !o.status.success(),
        "{} should fail; stderr: {stderr}",
        job.display()
    );
    let errors: Vec<&str> = stderr.lines().filter(|l| l.starts_with("error:")).collect();
    assert_eq!(errors.len(), 1, "exactly one error line: {stderr}");
    assert!(
        files_named(out, "_SUCCESS").is_empty(),
        "no _SUCCESS for {}",
        job.display()
    );
    errors[0].to_string()
}

/// The number in "N shards reused from an earlier run" on the first line of a run's stdout.
pub fn reused_shards(stdout: &str) -> usize {
    stdout
        .lines()
        .next()
        .unwrap_or_default()
        .split(", ")
        .find_map(|part| {
            part.strip_suffix(" shards reused from an earlier run")
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or_else(|| panic!("the run reports reused shards: {stdout}"))
}

/// Every `_id` in the uncompressed NDJSON files below `out`; asserts that only committed
/// files (`part-*`) remain.
pub fn committed_ndjson_ids(out: &Path) -> Vec<String> {
    let mut ids = Vec::new();
    for p in files_under(out) {
        if p.extension().and_then(|e| e.to_str()) != Some("ndjson") {
            continue;
        }
        let name = p.file_name().unwrap().to_str().unwrap();
        assert!(
            name.starts_with("part-"),
            "only committed files remain: {name}"
        );
        let body = std::fs::read(&p).unwrap();
        for line in ndjson_rows(name, &body) {
            ids.push(line["_id"].as_str().unwrap().to_string());
        }
    }
    ids
}

/// Runs `job` again after a run that was killed with `finished` shards committed: the second
/// run reuses them and succeeds, its output under `out` is exactly `spec`'s documents (no
/// duplicates from the killed attempt), and a third run finds the job complete.
pub fn resume_and_check(job: &Path, out: &Path, finished: usize, spec: &DataSpec) {
    let second = Command::new(bin("spillway"))
        .args(["run", "--workers", "4", "--no-progress"])
        .arg(job)
        .output()
        .expect("spillway runs");
    let stdout = String::from_utf8_lossy(&second.stdout);
    assert!(
        second.status.success(),
        "resumed run failed: {stdout}{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let reused = reused_shards(&stdout);
    assert!(
        reused >= finished.min(3),
        "reused {reused} of {finished} finished shards"
    );
    let mut ids = committed_ndjson_ids(out);
    let mut want: Vec<String> = searchsim::datagen::docs(spec).map(|d| d.id).collect();
    want.sort();
    ids.sort();
    assert_eq!(ids.len(), want.len(), "document count after resume");
    assert!(ids == want, "resumed output differs from the source");
    let third = Command::new(bin("spillway"))
        .args(["run", "--no-progress"])
        .arg(job)
        .output()
        .unwrap();
    assert!(third.status.success());
    assert!(String::from_utf8_lossy(&third.stdout).contains("already complete"));
}
