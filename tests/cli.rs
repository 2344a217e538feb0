//! The `spillway` binary as users run it: a job killed mid-way resumes from its finished
//! shards, and bad input fails with one clear line, a non-zero exit and no `_SUCCESS`.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use searchsim::datagen::DataSpec;
use searchsim::{Config, Faults};
use spillway_e2e::cli::*;
use spillway_e2e::*;

const MARCH: &str = "    gte: 2024-03-01T00:00:00Z\n    lt: 2024-03-04T00:00:00Z\n";

fn spec() -> DataSpec {
    DataSpec {
        docs: 40_000,
        days: 3,
        shards: 3,
        seed: 99,
        large_every: 0,
        ..Default::default()
    }
}

/// A slowed-down cluster and a `spillway run` child that has committed at least `shards`
/// shards of a 40,000-document job (so it is mid-way when the caller stops it).
struct MidRun {
    sim: searchsim::RunningSim,
    spec: DataSpec,
    _dir: tempfile::TempDir,
    out: std::path::PathBuf,
    job: std::path::PathBuf,
    child: std::process::Child,
}

async fn start_mid_run(name: &str, shards: usize) -> MidRun {
    let spec = spec();
    let (sim, _) = sim_with(Config::opensearch_3(), &spec).await;
    // Slow the cluster down so the run is still busy when it is stopped.
    sim.cluster()
        .set_faults(Faults {
            latency_ms: 40,
            ..Default::default()
        })
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let job = write_job(
        dir.path(),
        name,
        &job_text(name, &sim.url(), "\"logs-*\"", MARCH, &out, ""),
    );
    let mut child = Command::new(bin("spillway"))
        .args(["run", "--workers", "2", "--no-progress"])
        .arg(&job)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spillway starts");
    let deadline = Instant::now() + Duration::from_secs(120);
    while markers(&out) < shards {
        assert!(
            Instant::now() < deadline,
            "no shard finished within 2 minutes"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the run ended before it was stopped"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    MidRun {
        sim,
        spec,
        _dir: dir,
        out,
        job,
        child,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_killed_run_resumes_from_finished_shards() {
    let MidRun {
        sim,
        spec,
        _dir,
        out,
        job,
        mut child,
    } = start_mid_run("resume", 3).await;
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let finished = markers(&out);
    assert!(
        files_named(&out, "_SUCCESS").is_empty(),
        "a killed run has no _SUCCESS"
    );

    sim.cluster().set_faults(Faults::default()).unwrap();
    resume_and_check(&job, &out, finished, &spec);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_fails_with_one_clear_line() {
    init();
    let spec = DataSpec {
        docs: 2_000,
        ..spec()
    };
    let auth = searchsim::Auth {
        users: vec![searchsim::User::new("reader", "correct-horse")],
        ..Default::default()
    };
    let (sim, _) = sim_with(Config::opensearch_3().with_auth(auth), &spec).await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let secrets = dir.path().join("secrets");
    std::fs::create_dir_all(secrets.join("good")).unwrap();
    std::fs::write(secrets.join("good/username"), "reader").unwrap();
    std::fs::write(secrets.join("good/password"), "correct-horse").unwrap();
    std::fs::create_dir_all(secrets.join("bad")).unwrap();
    std::fs::write(secrets.join("bad/username"), "reader").unwrap();
    std::fs::write(secrets.join("bad/password"), "wrong-password-1234").unwrap();
    let good_auth = "    auth:\n      basic:\n        secretRef: {name: good}\n";
    let url = sim.url();

    // Unknown field.
    let text = job_text("typo", &url, "\"logs-*\"", MARCH, &out, good_auth).replace(
        "    compression: none\n",
        "    compression: none\n    colour: blue\n",
    );
    let line = fails(&write_job(dir.path(), "typo", &text), &out, Some(&secrets));
    assert!(line.contains("unknown field `colour`"), "{line}");

    // gte >= lt.
    let reversed = "    gte: 2024-03-04T00:00:00Z\n    lt: 2024-03-01T00:00:00Z\n";
    let line = fails(
        &write_job(
            dir.path(),
            "reversed",
            &job_text("reversed", &url, "\"logs-*\"", reversed, &out, good_auth),
        ),
        &out,
        Some(&secrets),
    );
    assert!(
        line.contains("timeRange.gte") && line.contains("before"),
        "{line}"
    );

    // Unreachable cluster: a port nothing listens on.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let line = fails(
        &write_job(
            dir.path(),
            "unreachable",
            &job_text(
                "unreachable",
                &format!("http://127.0.0.1:{port}"),
                "\"logs-*\"",
                MARCH,
                &out,
                "",
            ),
        ),
        &out,
        None,
    );
    assert!(line.contains("cannot reach"), "{line}");

    // Missing index.
    let line = fails(
        &write_job(
            dir.path(),
            "missing",
            &job_text("missing", &url, "\"no-such-index\"", MARCH, &out, good_auth),
        ),
        &out,
        Some(&secrets),
    );
    assert!(line.contains("no-such-index"), "{line}");

    // Wrong credentials; the password must not be echoed.
    let bad_auth = "    auth:\n      basic:\n        secretRef: {name: bad}\n";
    let line = fails(
        &write_job(
            dir.path(),
            "badcreds",
            &job_text("badcreds", &url, "\"logs-*\"", MARCH, &out, bad_auth),
        ),
        &out,
        Some(&secrets),
    );
    assert!(line.contains("authentication failed"), "{line}");
    assert!(
        !line.contains("wrong-password-1234"),
        "the password leaked: {line}"
    );

    // Unwritable destination: its parent is a regular file.
    let blocker = dir.path().join("not-a-directory");
    std::fs::write(&blocker, "x").unwrap();
    let line = fails(
        &write_job(
            dir.path(),
            "unwritable",
            &job_text(
                "unwritable",
                &url,
                "\"logs-*\"",
                MARCH,
                &blocker.join("out"),
                good_auth,
            ),
        ),
        &out,
        Some(&secrets),
    );
    assert!(
        line.contains("not-a-directory"),
        "the error names the destination: {line}"
    );

    // And the same job with good credentials works, so the failures above were the input's.
    let ok = Command::new(bin("spillway"))
        .args(["run", "--no-progress", "--secrets-dir"])
        .arg(&secrets)
        .arg(write_job(
            dir.path(),
            "good",
            &job_text("good", &url, "\"logs-*\"", MARCH, &out, good_auth),
        ))
        .output()
        .unwrap();
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(files_named(&out, "_SUCCESS").len(), 1);
    sim.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heavy_ctrl_c_stops_cleanly_and_closes_the_snapshot() {
    let MidRun {
        sim,
        _dir,
        out,
        child,
        ..
    } = start_mid_run("interrupt", 1).await;
    assert_eq!(sim.cluster().open_pits(), 1, "the run holds one snapshot");
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let o = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "an interrupted run exits non-zero");
    assert!(stderr.contains("interrupted"), "{stderr}");
    assert!(files_named(&out, "_SUCCESS").is_empty());
    assert_eq!(
        sim.cluster().open_pits(),
        0,
        "the snapshot is closed on Ctrl-C"
    );
    let mut stack = vec![out.clone()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            let name = p.file_name().unwrap().to_string_lossy().to_string();
            assert!(
                !name.contains(".tmp"),
                "a temporary file was left behind: {}",
                p.display()
            );
            if p.is_dir() {
                stack.push(p);
            }
        }
    }
    sim.shutdown().await;
}
