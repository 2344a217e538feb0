//! Upstream conformance: runs the OpenSearch REST API YAML tests kept in
//! `shared/conformance/opensearch/test/` (with the API specs in `.../api/`) against an
//! in-process searchsim, the way upstream's YAML runner runs them against a real cluster.
//!
//! Every file is run against the OpenSearch 3.3.0 flavor; the PIT and search_after files
//! also against 2.19.0. Each test prints `PASS|FAIL|SKIP <file> :: <test>` and a summary
//! `conformance: N passed, M failed, K skipped` (run with `--nocapture` to see them).
//! A test fails the Rust test unless it is listed in [`KNOWN_FAILURES`]; tests in the
//! required set ([`is_required`]) may not be listed there at all.
//!
//! The same files also run against the real OpenSearch 2.19 and 3.x nodes that
//! `scripts/services/opensearch.sh` starts, printed side by side with searchsim's results
//! (`side_by_side`); there every required test must pass too.
//!
//! The shared directory is `<repo>/../shared`, or `$SPILLWAY_SHARED_DIR`.

#[path = "conformance/api.rs"]
mod api;
#[path = "conformance/exec.rs"]
mod exec;
#[path = "conformance/model.rs"]
mod model;
#[path = "conformance/values.rs"]
mod values;

use api::{ApiRegistry, HttpRequest};
use exec::{HttpTransport, Outcome, Runner, Status, Transport, Wipe};
use model::Version;
use std::path::{Path, PathBuf};

/// Tests allowed to fail, as `(server version, file, test name, the searchsim gap)`.
/// Every entry must name what searchsim does wrong; an entry whose test passes (or no
/// longer exists) fails the run, so the list never goes stale. Entries may not name a
/// file of the required set.
const KNOWN_FAILURES: &[(&str, &str, &str, &str)] = &[];

/// Files whose every test must pass, on every flavor they are run against.
fn is_required(file: &str) -> bool {
    matches!(
        file,
        "pit/10_basic.yml" | "search/90_search_after.yml" | "bulk/10_basic.yml"
    ) || file.starts_with("scroll/")
        || file.starts_with("count/")
}

/// Where the shared directory is: `$SPILLWAY_SHARED_DIR`, else `<repo>/../shared`.
fn shared_dir() -> PathBuf {
    match std::env::var_os("SPILLWAY_SHARED_DIR") {
        Some(dir) => PathBuf::from(dir),
        None => Path::new(env!("CARGO_MANIFEST_DIR")).join("../../../shared"),
    }
}

/// The upstream test and API directories; panics (failing the test) when they are missing.
fn conformance_dirs() -> (PathBuf, PathBuf) {
    let source = if std::env::var_os("SPILLWAY_SHARED_DIR").is_some() {
        "$SPILLWAY_SHARED_DIR"
    } else {
        "CARGO_MANIFEST_DIR/../../../shared"
    };
    conformance_dirs_in(&shared_dir(), source)
}

fn conformance_dirs_in(shared: &Path, source: &str) -> (PathBuf, PathBuf) {
    let base = shared.join("conformance/opensearch");
    let (tests, apis) = (base.join("test"), base.join("api"));
    for dir in [&tests, &apis] {
        assert!(
            dir.is_dir(),
            "the upstream conformance suite is missing: looked for {} (shared dir {}, from {source}). \
             Put the shared directory beside the repository or set SPILLWAY_SHARED_DIR.",
            dir.display(),
            shared.display(),
        );
    }
    (tests, apis)
}

/// Every `*.yml` under `dir`, as sorted paths relative to it with `/` separators.
fn yaml_files(dir: &Path) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let entries =
            std::fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()));
        for entry in entries {
            let path = entry
                .unwrap_or_else(|e| panic!("cannot list {}: {e}", dir.display()))
                .path();
            if path.is_dir() {
                walk(root, &path, out);
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yml" | "yaml")
            ) {
                let rel = path.strip_prefix(root).expect("under root");
                out.push(
                    rel.components()
                        .map(|c| c.as_os_str().to_string_lossy())
                        .collect::<Vec<_>>()
                        .join("/"),
                );
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

/// The version the server reports at `GET /`.
async fn server_version(transport: &HttpTransport) -> Version {
    let req = HttpRequest {
        method: "GET".into(),
        path: "/".into(),
        query: vec![],
        headers: vec![],
        body: None,
    };
    let resp = transport
        .send(&req)
        .await
        .unwrap_or_else(|e| panic!("GET / failed: {e}"));
    let number = resp
        .body
        .pointer("/version/number")
        .and_then(|v| v.as_str())
        .unwrap_or_else(|| {
            panic!(
                "GET / has no version.number: {} {}",
                resp.status, resp.body_text
            )
        });
    Version::parse(number).unwrap_or_else(|e| panic!("GET / version: {e}"))
}

/// The server a run goes to.
enum Against {
    /// A fresh in-process searchsim of this flavor, which must report `Version`.
    Sim(Box<searchsim::Config>, Version),
    /// A real node already running at a URL (from `$var`, which `start` sets up).
    Real {
        var: &'static str,
        start: &'static str,
    },
}

impl Against {
    fn label(&self, version: Version) -> String {
        match self {
            Against::Sim(..) => format!("searchsim {version}"),
            Against::Real { .. } => format!("OpenSearch {version} (real node)"),
        }
    }
}

/// Runs the selected files against `against`, prints one line per test and the summary,
/// and returns the version the server reported and the outcomes.
async fn run_against(against: Against, files: Option<&[&str]>) -> (Version, Vec<Outcome>) {
    let (test_dir, api_dir) = conformance_dirs();
    let apis = ApiRegistry::load_dir(&api_dir).unwrap_or_else(|e| panic!("{e}"));
    assert!(
        apis.len() > 20,
        "only {} API specs loaded from {}",
        apis.len(),
        api_dir.display()
    );
    let all = yaml_files(&test_dir);
    let selected: Vec<String> = match files {
        None => all,
        Some(wanted) => {
            for w in wanted {
                assert!(
                    all.iter().any(|f| f == w),
                    "{w} is not in {}",
                    test_dir.display()
                );
            }
            all.into_iter()
                .filter(|f| wanted.contains(&f.as_str()))
                .collect()
        }
    };
    assert!(
        !selected.is_empty(),
        "no YAML test files under {}",
        test_dir.display()
    );

    let (sim, url, wipe) = match &against {
        Against::Sim(config, _) => {
            let sim = searchsim::SearchSim::start((**config).clone())
                .await
                .unwrap_or_else(|e| panic!("searchsim did not start: {e}"));
            let url = sim.url().to_string();
            (Some(sim), url, Wipe::Searchsim)
        }
        Against::Real { var, start } => {
            let url = std::env::var(var).unwrap_or_else(|_| {
                panic!("{var} is not set: start the node with `{start}` and eval the output of its `env` command (scripts/test.sh does both)")
            });
            (None, url, Wipe::OpenSearch)
        }
    };
    let transport = HttpTransport::new(&url).unwrap_or_else(|e| panic!("{e}"));
    let version = server_version(&transport).await;
    if let Against::Sim(_, expect_version) = &against {
        assert_eq!(
            version, *expect_version,
            "the server reports version {version}, expected {expect_version}"
        );
    }
    let runner = Runner {
        transport: &transport,
        apis: &apis,
        version,
        wipe,
    };

    let mut outcomes = Vec::new();
    for file in &selected {
        let text = std::fs::read_to_string(test_dir.join(file))
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", test_dir.join(file).display()));
        match model::parse_suite(file, &text) {
            Ok(suite) => {
                for o in runner.run_suite(&suite).await {
                    println!("{}", o.line());
                    outcomes.push(o);
                }
            }
            Err(e) => {
                let o = Outcome {
                    file: file.clone(),
                    test: "(file)".into(),
                    status: Status::Fail,
                    detail: Some(e),
                };
                println!("{}", o.line());
                outcomes.push(o);
            }
        }
    }
    if let Some(sim) = sim {
        sim.shutdown().await;
    }

    let count = |s| outcomes.iter().filter(|o| o.status == s).count();
    let summary = format!(
        "conformance: {} passed, {} failed, {} skipped",
        count(Status::Pass),
        count(Status::Fail),
        count(Status::Skip)
    );
    let label = against.label(version);
    println!("conformance run against {label}:");
    println!("{summary}");
    let mut report: Vec<String> = outcomes.iter().map(Outcome::line).collect();
    report.push(summary);
    let path = report_path(&label);
    std::fs::write(&path, report.join("\n") + "\n")
        .unwrap_or_else(|e| panic!("cannot write the report {}: {e}", path.display()));
    (version, outcomes)
}

/// Where the PASS/FAIL/SKIP lines of a run are written (also printed with `--nocapture`).
fn report_path(label: &str) -> PathBuf {
    let name: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("conformance-{name}.txt"))
}

/// Fails (panics) on every outcome the rules do not allow; see the module docs.
fn enforce(version: Version, outcomes: &[Outcome]) {
    let v = version.to_string();
    let mut problems = Vec::new();
    for (kv, file, test, gap) in KNOWN_FAILURES.iter().filter(|k| k.0 == v) {
        assert!(
            !gap.trim().is_empty(),
            "KNOWN_FAILURES entry {file} :: {test} must name the searchsim gap"
        );
        if is_required(file) {
            problems.push(format!(
                "KNOWN_FAILURES lists {file} :: {test}, but {file} is in the required set"
            ));
        }
        match outcomes.iter().find(|o| o.file == *file && o.test == *test) {
            None => problems.push(format!("KNOWN_FAILURES lists {file} :: {test} for {kv}, but no such test ran")),
            Some(o) if o.status != Status::Fail => problems.push(format!(
                "{file} :: {test} is listed in KNOWN_FAILURES ({gap}) but it now ends {}; remove the entry",
                o.status.label()
            )),
            Some(_) => {}
        }
    }
    for o in outcomes {
        let allowed = KNOWN_FAILURES
            .iter()
            .any(|k| k.0 == v && k.1 == o.file && k.2 == o.test);
        match o.status {
            Status::Fail if is_required(&o.file) => {
                problems.push(format!("required test failed: {} :: {}", o.file, o.test))
            }
            Status::Fail if !allowed => {
                problems.push(format!("test failed: {} :: {}", o.file, o.test))
            }
            // Nothing in the required files is version- or feature-gated for the versions we
            // serve, so a skip there means the runner or the reported version is off.
            Status::Skip if is_required(&o.file) => problems.push(format!(
                "required test was skipped: {} :: {} ({})",
                o.file,
                o.test,
                o.detail.as_deref().unwrap_or("")
            )),
            _ => {}
        }
    }
    assert!(
        problems.is_empty(),
        "conformance against searchsim {v}: {} problem(s):\n  {}\n(the PASS/FAIL lines above, also in {}, \
         show the step, the request and the difference)",
        problems.len(),
        problems.join("\n  "),
        report_path(&format!("searchsim {v}")).display()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_yaml_suite_against_opensearch_3_3() {
    let (_, outcomes) = run_against(
        Against::Sim(
            Box::new(searchsim::Config::opensearch_3()),
            Version(3, 3, 0),
        ),
        None,
    )
    .await;
    for required in [
        "pit/10_basic.yml",
        "search/90_search_after.yml",
        "bulk/10_basic.yml",
        "count/10_basic.yml",
    ] {
        assert!(
            outcomes.iter().any(|o| o.file == required),
            "required file {required} produced no test"
        );
    }
    assert!(
        outcomes.iter().any(|o| o.file.starts_with("scroll/")),
        "no scroll test ran"
    );
    enforce(Version(3, 3, 0), &outcomes);
}

/// The PIT and search_after files against the 2.x flavor. `search/95_search_after_shard_doc.yml`
/// is left out: `_shard_doc` for OpenSearch arrived in 3.3 and that file (which has no
/// version skip because upstream only keeps it on 3.3+) fails against a real 2.19 as well.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_pit_and_search_after_against_opensearch_2_19() {
    let files = ["pit/10_basic.yml", "search/90_search_after.yml"];
    let (_, outcomes) = run_against(
        Against::Sim(Box::new(searchsim::Config::opensearch()), Version(2, 19, 0)),
        Some(&files),
    )
    .await;
    for required in files {
        assert!(
            outcomes.iter().any(|o| o.file == required),
            "required file {required} produced no test"
        );
    }
    enforce(Version(2, 19, 0), &outcomes);
}

/// Tests a released node fails, as `(version, file, test, what the node does)`. The upstream
/// files come from OpenSearch's main branch, which may test fixes no release has yet; an entry
/// says what the real node answers. Like [`KNOWN_FAILURES`], an entry whose test passes fails
/// the run. Required files may be listed here: it is the server, not searchsim, that fails.
const KNOWN_REAL_FAILURES: &[(&str, &str, &str, &str)] = &[
    (
        "2.19.6",
        "search/90_search_after.yml",
        "search with null search after value",
        "HTTP 500 null_pointer_exception for search_after [null, \"doc3\"] on a keyword sort",
    ),
    (
        "3.9.0",
        "search/90_search_after.yml",
        "search with null search after value",
        "HTTP 500 null_pointer_exception for search_after [null, \"doc3\"] on a keyword sort",
    ),
];

/// One line per test with the result on searchsim and on the real node, and the summary of
/// both; fails on any real failure not in [`KNOWN_REAL_FAILURES`], a skipped required test,
/// a stale entry, and when the two runs did not run the same tests.
fn side_by_side(sim: (Version, &[Outcome]), real: (Version, &[Outcome])) {
    let (sim_v, sim) = sim;
    let (real_v, real) = real;
    let status = |outcomes: &[Outcome], o: &Outcome| {
        outcomes
            .iter()
            .find(|x| x.file == o.file && x.test == o.test)
            .map_or("—", |x| x.status.label())
    };
    let left = format!("searchsim {sim_v}");
    let right = format!("OpenSearch {real_v} (real)");
    println!("{:<70} {left:<16} {right}", "upstream YAML test");
    let mut problems = Vec::new();
    for o in real {
        let name = format!("{} :: {}", o.file, o.test);
        println!("{name:<70} {:<16} {}", status(sim, o), o.status.label());
        if !sim.iter().any(|x| x.file == o.file && x.test == o.test) {
            problems.push(format!("{name} ran on the real node only"));
        }
        let v = real_v.to_string();
        let known = KNOWN_REAL_FAILURES
            .iter()
            .find(|k| k.0 == v && k.1 == o.file && k.2 == o.test);
        if let Some(k) = known {
            println!("    (known: OpenSearch {v} answers {})", k.3);
        }
        let known = known.is_some();
        match o.status {
            Status::Fail if !known => problems.push(format!(
                "{name} failed on the real node: {}",
                o.detail.as_deref().unwrap_or("")
            )),
            Status::Skip if is_required(&o.file) => {
                problems.push(format!("{name} (required) was skipped on the real node"))
            }
            Status::Pass if known => problems.push(format!(
                "{name} passes on the real node: remove it from KNOWN_REAL_FAILURES"
            )),
            _ => {}
        }
    }
    for o in sim {
        if !real.iter().any(|x| x.file == o.file && x.test == o.test) {
            problems.push(format!("{} :: {} ran on searchsim only", o.file, o.test));
        }
    }
    let summary = |outcomes: &[Outcome]| {
        let n = |s| outcomes.iter().filter(|o| o.status == s).count();
        format!(
            "{} passed, {} failed, {} skipped",
            n(Status::Pass),
            n(Status::Fail),
            n(Status::Skip)
        )
    };
    println!("{left}: {}", summary(sim));
    println!("{right}: {}", summary(real));
    assert!(
        problems.is_empty(),
        "conformance on the real node: {} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

/// Every upstream file against searchsim 3.3 and the real OpenSearch 3.x node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_yaml_suite_side_by_side_with_real_opensearch_3() {
    let (sim_v, sim) = run_against(
        Against::Sim(
            Box::new(searchsim::Config::opensearch_3()),
            Version(3, 3, 0),
        ),
        None,
    )
    .await;
    let (real_v, real) = run_against(
        Against::Real {
            var: "SPILLWAY_OPENSEARCH3_URL",
            start: "scripts/services/opensearch.sh start 3",
        },
        None,
    )
    .await;
    assert_eq!(real_v.0, 3, "the OpenSearch 3 node reports {real_v}");
    side_by_side((sim_v, &sim), (real_v, &real));
}

/// Every upstream file but `_shard_doc`'s (OpenSearch 3.3+) against searchsim 2.19 and the
/// real OpenSearch 2.19 node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn upstream_yaml_suite_side_by_side_with_real_opensearch_2_19() {
    let (test_dir, _) = conformance_dirs();
    let files: Vec<String> = yaml_files(&test_dir)
        .into_iter()
        .filter(|f| f != "search/95_search_after_shard_doc.yml")
        .collect();
    let files: Vec<&str> = files.iter().map(String::as_str).collect();
    let (sim_v, sim) = run_against(
        Against::Sim(Box::new(searchsim::Config::opensearch()), Version(2, 19, 0)),
        Some(&files),
    )
    .await;
    let (real_v, real) = run_against(
        Against::Real {
            var: "SPILLWAY_OPENSEARCH2_URL",
            start: "scripts/services/opensearch.sh start 2",
        },
        Some(&files),
    )
    .await;
    assert_eq!(
        (real_v.0, real_v.1),
        (2, 19),
        "the OpenSearch 2.19 node reports {real_v}"
    );
    side_by_side((sim_v, &sim), (real_v, &real));
}

#[test]
fn every_upstream_file_parses() {
    let (test_dir, api_dir) = conformance_dirs();
    ApiRegistry::load_dir(&api_dir).unwrap_or_else(|e| panic!("{e}"));
    let files = yaml_files(&test_dir);
    assert!(
        files.len() >= 15,
        "expected the 15 upstream files, found {files:?}"
    );
    let mut tests = 0;
    for file in &files {
        let text = std::fs::read_to_string(test_dir.join(file)).expect("readable");
        let suite = model::parse_suite(file, &text).unwrap_or_else(|e| panic!("{e}"));
        assert!(!suite.tests.is_empty(), "{file} has no test");
        tests += suite.tests.len();
    }
    assert!(tests > 50, "only {tests} tests parsed");
}

#[test]
fn a_missing_suite_fails_and_says_where_it_looked() {
    let missing = Path::new(env!("CARGO_TARGET_TMPDIR")).join("no-such-shared-dir");
    let err = std::panic::catch_unwind(|| conformance_dirs_in(&missing, "test"))
        .expect_err("a missing suite must fail");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(
        msg.contains("no-such-shared-dir/conformance/opensearch/test"),
        "{msg}"
    );
    assert!(msg.contains("SPILLWAY_SHARED_DIR"), "{msg}");
}

#[test]
fn required_set_and_allow_list_rules() {
    assert!(is_required("pit/10_basic.yml"));
    assert!(is_required("scroll/20_keep_alive.yml"));
    assert!(is_required("count/10_basic.yml"));
    assert!(!is_required("bulk/20_list_of_strings.yml"));
    assert!(!is_required("search/95_search_after_shard_doc.yml"));
    for (_, file, _, gap) in KNOWN_FAILURES {
        assert!(
            !is_required(file),
            "{file} is required and cannot be a known failure"
        );
        assert!(!gap.trim().is_empty());
    }
    let fail = |file: &str| Outcome {
        file: file.into(),
        test: "t".into(),
        status: Status::Fail,
        detail: None,
    };
    let pass = |file: &str| Outcome {
        file: file.into(),
        test: "t".into(),
        status: Status::Pass,
        detail: None,
    };
    let v = Version(3, 3, 0);
    assert!(std::panic::catch_unwind(|| enforce(v, &[fail("scroll/10_basic.yml")])).is_err());
    assert!(std::panic::catch_unwind(|| enforce(v, &[fail("bulk/30_big_string.yml")])).is_err());
    enforce(
        v,
        &[pass("scroll/10_basic.yml"), pass("bulk/30_big_string.yml")],
    );
}

/// The whole path (YAML → request → searchsim → assertions) must report FAIL for a
/// deliberately wrong expectation, so a PASS above means something.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wrong_expectation_fails_against_the_real_server() {
    let (_, api_dir) = conformance_dirs();
    let apis = ApiRegistry::load_dir(&api_dir).unwrap_or_else(|e| panic!("{e}"));
    let sim = searchsim::SearchSim::start(searchsim::Config::opensearch_3())
        .await
        .unwrap_or_else(|e| panic!("searchsim did not start: {e}"));
    let transport = HttpTransport::new(&sim.url().to_string()).unwrap_or_else(|e| panic!("{e}"));
    let runner = Runner {
        transport: &transport,
        apis: &apis,
        version: Version(3, 3, 0),
        wipe: Wipe::Searchsim,
    };
    let yaml = |expected: u32, is_false: &str| {
        format!(
            "\"count two\":\n  - do:\n      bulk:\n        refresh: true\n        body:\n          \
             - '{{\"index\": {{\"_index\": \"t\", \"_id\": \"1\"}}}}'\n          - '{{\"f\": 1}}'\n          \
             - '{{\"index\": {{\"_index\": \"t\", \"_id\": \"2\"}}}}'\n          - '{{\"f\": 2}}'\n  \
             - do:\n      count:\n        index: t\n  - match: {{ count: {expected} }}\n  \
             - is_false: {is_false}\n"
        )
    };
    let right = run_one(&runner, &yaml(2, "_shards.failed")).await;
    assert_eq!(right.status, Status::Pass, "{}", right.line());
    for wrong in [yaml(3, "_shards.failed"), yaml(2, "_shards.total")] {
        let o = run_one(&runner, &wrong).await;
        assert_eq!(o.status, Status::Fail, "{}", o.line());
        assert!(
            o.detail.as_deref().unwrap_or("").contains("GET /t/_count"),
            "{}",
            o.line()
        );
    }
    sim.shutdown().await;
}

async fn run_one(runner: &Runner<'_, HttpTransport>, text: &str) -> Outcome {
    let suite = model::parse_suite("self-check.yml", text).unwrap_or_else(|e| panic!("{e}"));
    runner.run_suite(&suite).await.remove(0)
}
