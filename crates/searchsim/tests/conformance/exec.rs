//! Executes parsed test files against a server: wipes the cluster before each test, runs
//! `setup`, the test's steps and `teardown` (always), checks `catch`, warning headers and
//! every assertion, and reports one [`Outcome`] per test with, for a failure, the step,
//! the request and what differed. The server is reached through [`Transport`], so the
//! runner itself can be tested against canned responses.

use crate::api::{ApiRegistry, HttpRequest};
use crate::model::{CmpOp, DoStep, Section, Step, SuiteFile, Version, skip_reason};
use crate::values::{self, Stash, brief, diff, lookup, truthy, value_text};
use serde_json::Value;
use std::cmp::Ordering;

/// A response as the runner sees it.
#[derive(Debug, Clone)]
pub struct HttpResponse {
    pub status: u16,
    /// Raw values of every `Warning` header.
    pub warnings: Vec<String>,
    pub body_text: String,
    /// The body parsed as JSON, or the text as a JSON string when it is not JSON.
    pub body: Value,
}

impl HttpResponse {
    pub fn new(status: u16, warnings: Vec<String>, body_text: String) -> HttpResponse {
        let body = if body_text.trim().is_empty() {
            Value::String(String::new())
        } else {
            serde_json::from_str(&body_text).unwrap_or_else(|_| Value::String(body_text.clone()))
        };
        HttpResponse {
            status,
            warnings,
            body_text,
            body,
        }
    }
}

/// Sends one request; an `Err` means no HTTP response was received at all.
pub trait Transport {
    async fn send(&self, req: &HttpRequest) -> Result<HttpResponse, String>;
}

/// The real transport: HTTP to a server on loopback.
pub struct HttpTransport {
    base: String,
    client: reqwest::Client,
}

impl HttpTransport {
    pub fn new(base: &str) -> Result<HttpTransport, String> {
        // reqwest is built without a default TLS provider; plain HTTP still needs one installed.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let client = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .map_err(|e| format!("cannot build the HTTP client: {e}"))?;
        Ok(HttpTransport {
            base: base.trim_end_matches('/').to_string(),
            client,
        })
    }
}

impl Transport for HttpTransport {
    async fn send(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
        let method = reqwest::Method::from_bytes(req.method.as_bytes())
            .map_err(|e| format!("bad HTTP method {}: {e}", req.method))?;
        let mut builder = self
            .client
            .request(method, format!("{}{}", self.base, req.path));
        if !req.query.is_empty() {
            builder = builder.query(&req.query);
        }
        for (k, v) in &req.headers {
            builder = builder.header(k.as_str(), v.as_str());
        }
        if let Some(body) = &req.body {
            builder = builder.body(body.clone());
        }
        let resp = builder
            .send()
            .await
            .map_err(|e| format!("{} failed: {e}", req.describe()))?;
        let status = resp.status().as_u16();
        let warnings = resp
            .headers()
            .get_all("warning")
            .iter()
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .collect();
        let text = resp
            .text()
            .await
            .map_err(|e| format!("reading the response to {} failed: {e}", req.describe()))?;
        Ok(HttpResponse::new(status, warnings, text))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Skip,
}

impl Status {
    pub fn label(self) -> &'static str {
        match self {
            Status::Pass => "PASS",
            Status::Fail => "FAIL",
            Status::Skip => "SKIP",
        }
    }
}

/// The result of one test.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub file: String,
    pub test: String,
    pub status: Status,
    /// For FAIL: step, request and difference; for SKIP: the reason.
    pub detail: Option<String>,
}

impl Outcome {
    pub fn line(&self) -> String {
        let mut s = format!("{} {} :: {}", self.status.label(), self.file, self.test);
        if let Some(d) = &self.detail {
            for l in d.lines() {
                s.push_str("\n    ");
                s.push_str(l);
            }
        }
        s
    }
}

/// Per-test state: the stash and the last request/response.
#[derive(Default)]
struct Ctx {
    stash: Stash,
    last_request: Option<HttpRequest>,
    last_response: Option<HttpResponse>,
}

impl Ctx {
    fn context(&self) -> String {
        let mut s = String::new();
        if let Some(r) = &self.last_request {
            s.push_str(&format!("\nrequest: {}", r.describe()));
        }
        if let Some(r) = &self.last_response {
            s.push_str(&format!(
                "\nresponse: {} {}",
                r.status,
                values::truncate(&r.body_text, 800)
            ));
        }
        s
    }

    fn body(&self) -> Result<&Value, String> {
        self.last_response
            .as_ref()
            .map(|r| &r.body)
            .ok_or_else(|| "no response to assert on yet".to_string())
    }

    /// The value an assertion key refers to: a stashed value (`$name`, `$body`) or a path
    /// into the last response.
    fn actual(&self, key: &str) -> Result<Option<Value>, String> {
        if key.starts_with('$') && Stash::is_stashed(key) {
            return self.stash.resolve(key).map(Some);
        }
        lookup(self.body()?, key, &self.stash)
    }
}

pub struct Runner<'a, T: Transport> {
    pub transport: &'a T,
    pub apis: &'a ApiRegistry,
    pub version: Version,
    pub wipe: Wipe,
}

/// How the cluster is wiped before each test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wipe {
    /// searchsim's `POST /_searchsim/reset`: indices, aliases, PITs, scrolls, settings, faults.
    Searchsim,
    /// A real OpenSearch node, the way upstream's runner cleans up: every PIT and scroll
    /// closed, every index that is not a system index (`.`-prefixed) deleted by name.
    OpenSearch,
}

impl<'a, T: Transport> Runner<'a, T> {
    /// Runs every test of a file; one outcome per test, in file order.
    pub async fn run_suite(&self, suite: &SuiteFile) -> Vec<Outcome> {
        let mut out = Vec::new();
        for test in &suite.tests {
            out.push(self.run_test(suite, test).await);
        }
        out
    }

    async fn run_test(&self, suite: &SuiteFile, test: &Section) -> Outcome {
        let outcome = |status, detail: Option<String>| Outcome {
            file: suite.path.clone(),
            test: test.name.clone(),
            status,
            detail,
        };
        for skip in [
            suite.setup.as_ref().and_then(|s| s.skip.as_ref()),
            test.skip.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            match skip_reason(skip, self.version) {
                Ok(Some(reason)) => return outcome(Status::Skip, Some(reason)),
                Ok(None) => {}
                Err(e) => return outcome(Status::Fail, Some(format!("bad skip section: {e}"))),
            }
        }
        if let Err(e) = self.wipe().await {
            return outcome(Status::Fail, Some(e));
        }
        let mut ctx = Ctx::default();
        let mut result = Ok(());
        if let Some(setup) = &suite.setup {
            result = self.run_steps(&mut ctx, "setup", &setup.steps).await;
        }
        if result.is_ok() {
            result = self.run_steps(&mut ctx, "test", &test.steps).await;
        }
        if let Some(teardown) = &suite.teardown {
            let torn = self.run_steps(&mut ctx, "teardown", &teardown.steps).await;
            if result.is_ok() {
                result = torn;
            }
        }
        match result {
            Ok(()) => outcome(Status::Pass, None),
            Err(e) => outcome(Status::Fail, Some(e)),
        }
    }

    /// Wipes the cluster (see [`Wipe`]).
    async fn wipe(&self) -> Result<(), String> {
        match self.wipe {
            Wipe::Searchsim => {
                self.wipe_call("POST", "/_searchsim/reset", &[200]).await?;
            }
            Wipe::OpenSearch => {
                self.wipe_call("DELETE", "/_search/point_in_time/_all", &[200, 404])
                    .await?;
                self.wipe_call("DELETE", "/_search/scroll/_all", &[200, 404])
                    .await?;
                let listing = self
                    .wipe_call(
                        "GET",
                        "/_cat/indices?h=index&format=json&expand_wildcards=all",
                        &[200],
                    )
                    .await?;
                let names: Vec<&str> = listing
                    .body
                    .as_array()
                    .map(|rows| {
                        rows.iter()
                            .filter_map(|r| r["index"].as_str())
                            .filter(|n| !n.starts_with('.'))
                            .collect()
                    })
                    .unwrap_or_default();
                if !names.is_empty() {
                    self.wipe_call("DELETE", &format!("/{}", names.join(",")), &[200, 404])
                        .await?;
                }
            }
        }
        Ok(())
    }

    async fn wipe_call(
        &self,
        method: &str,
        path: &str,
        ok: &[u16],
    ) -> Result<HttpResponse, String> {
        let (path, query) = match path.split_once('?') {
            Some((p, q)) => (
                p,
                q.split('&')
                    .filter_map(|kv| kv.split_once('='))
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
            ),
            None => (path, Vec::new()),
        };
        let req = HttpRequest {
            method: method.into(),
            path: path.into(),
            query,
            headers: Vec::new(),
            body: None,
        };
        let resp = self
            .transport
            .send(&req)
            .await
            .map_err(|e| format!("wiping the cluster failed: {method} {path}: {e}"))?;
        if !ok.contains(&resp.status) {
            return Err(format!(
                "wiping the cluster failed: {method} {path} answered {} {}",
                resp.status,
                values::truncate(&resp.body_text, 400)
            ));
        }
        Ok(resp)
    }

    async fn run_steps(&self, ctx: &mut Ctx, section: &str, steps: &[Step]) -> Result<(), String> {
        for (i, step) in steps.iter().enumerate() {
            let label = format!("{section} step {} ({})", i + 1, step.kind());
            let res = match step {
                Step::Do(d) => self.run_do(ctx, d).await,
                other => assert_step(ctx, other),
            };
            if let Err(e) = res {
                return Err(format!("{label}: {e}{}", ctx.context()));
            }
        }
        Ok(())
    }

    async fn run_do(&self, ctx: &mut Ctx, step: &DoStep) -> Result<(), String> {
        let params = ctx.stash.replace(&Value::Object(step.params.clone()))?;
        let mut params = match params {
            Value::Object(m) => m,
            _ => unreachable!("replacing inside an object yields an object"),
        };
        let ignore: Vec<u16> = match params.remove("ignore") {
            None => Vec::new(),
            Some(Value::Array(v)) => v
                .iter()
                .filter_map(Value::as_u64)
                .map(|s| s as u16)
                .collect(),
            Some(v) => v.as_u64().map(|s| vec![s as u16]).unwrap_or_default(),
        };
        let mut headers = Vec::new();
        for (k, v) in &step.headers {
            headers.push((
                k.clone(),
                value_text(&ctx.stash.replace(&Value::String(v.clone()))?),
            ));
        }
        let req = self
            .apis
            .build(&step.api, &params, &headers)
            .map_err(|e| format!("cannot build the request: {e}"))?;
        ctx.last_request = Some(req.clone());
        ctx.last_response = None;
        let resp = self.transport.send(&req).await?;
        ctx.stash.set("body", resp.body.clone());
        ctx.last_response = Some(resp.clone());

        match &step.catch {
            None => {
                if resp.status >= 400 && !ignore.contains(&resp.status) {
                    return Err(format!(
                        "[{}] failed with status {} but no error was expected",
                        step.api, resp.status
                    ));
                }
            }
            Some(catch) => check_catch(catch, &resp)?,
        }
        check_warnings(step, &resp)
    }
}

fn check_catch(catch: &str, resp: &HttpResponse) -> Result<(), String> {
    let status = resp.status;
    if status < 400 {
        return Err(format!(
            "expected an error [{catch}] but the request succeeded with status {status}"
        ));
    }
    let want = match catch {
        "bad_request" => Some(400),
        "unauthorized" => Some(401),
        "forbidden" => Some(403),
        "missing" => Some(404),
        "request_timeout" => Some(408),
        "conflict" => Some(409),
        "unavailable" => Some(503),
        "request" => {
            if [400, 401, 403, 404, 408, 409].contains(&status) {
                return Err(format!(
                    "expected a generic error (catch: request) but got status {status}, which has its own catch name"
                ));
            }
            return Ok(());
        }
        "param" => {
            return Err("`catch: param` (client-side validation) is not supported".to_string());
        }
        other => {
            let Some(re) = values::regex_literal(other) else {
                return Err(format!("unknown catch value [{other}]"));
            };
            let regex = values::plain_regex(re)?;
            if regex.is_match(&resp.body_text) {
                return Ok(());
            }
            return Err(format!(
                "the error body does not match the catch regex /{re}/"
            ));
        }
    };
    match want {
        Some(w) if w == status => Ok(()),
        Some(w) => Err(format!("expected status {w} ({catch}) but got {status}")),
        None => unreachable!("every named catch maps to a status"),
    }
}

/// Extracts the message of a `Warning: 299 agent "message" "date"` header.
pub fn warning_message(header: &str) -> String {
    let rest = header.trim();
    let Some(q) = rest.find('"') else {
        return rest.to_string();
    };
    let mut out = String::new();
    let mut chars = rest[q + 1..].chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            '"' => return out,
            other => out.push(other),
        }
    }
    rest.to_string()
}

fn check_warnings(step: &DoStep, resp: &HttpResponse) -> Result<(), String> {
    let got: Vec<String> = resp.warnings.iter().map(|w| warning_message(w)).collect();
    let compile = |list: &[String]| -> Result<Vec<regex::Regex>, String> {
        list.iter().map(|r| values::plain_regex(r)).collect()
    };
    let expected_re = compile(&step.warnings_regex)?;
    let allowed_re = compile(&step.allowed_warnings_regex)?;
    let mut problems = Vec::new();
    for w in &got {
        let known = step.warnings.contains(w)
            || step.allowed_warnings.contains(w)
            || expected_re.iter().chain(&allowed_re).any(|r| r.is_match(w));
        if !known {
            problems.push(format!("unexpected warning header [{w}]"));
        }
    }
    for w in &step.warnings {
        if !got.contains(w) {
            problems.push(format!("expected warning header [{w}] was not sent"));
        }
    }
    for (re, src) in expected_re.iter().zip(&step.warnings_regex) {
        if !got.iter().any(|w| re.is_match(w)) {
            problems.push(format!("no warning header matches /{src}/"));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

fn describe(v: &Option<Value>) -> String {
    match v {
        None => "nothing (path not found)".to_string(),
        Some(v) => format!("{} {}", values::kind(v), brief(v, 300)),
    }
}

fn assert_step(ctx: &mut Ctx, step: &Step) -> Result<(), String> {
    match step {
        Step::Do(_) => unreachable!("`do` is executed, not asserted"),
        Step::Set(pairs) => {
            for (path, name) in pairs {
                let v = ctx
                    .actual(path)?
                    .ok_or_else(|| format!("cannot stash [{path}]: not in the response"))?;
                ctx.stash.set(name, v);
            }
        }
        Step::Match(pairs) => {
            for (key, expected) in pairs {
                let expected = ctx.stash.replace(expected)?;
                let actual = ctx.actual(key)?;
                if let Value::String(s) = &expected
                    && let Some(re) = values::regex_literal(s)
                {
                    let Some(Value::String(text)) = &actual else {
                        return Err(format!(
                            "[{key}] should match /{re}/ but is {}",
                            describe(&actual)
                        ));
                    };
                    if !values::comments_regex(re)?.is_match(text) {
                        return Err(format!(
                            "[{key}] = {text:?} does not match /{re}/ (COMMENTS mode)"
                        ));
                    }
                    continue;
                }
                let actual_v = actual.clone().unwrap_or(Value::Null);
                if actual.is_none() && !expected.is_null() {
                    return Err(format!(
                        "[{key}]: expected {}, got nothing (path not found)",
                        brief(&expected, 300)
                    ));
                }
                if let Some(d) = diff(&expected, &actual_v) {
                    return Err(format!(
                        "[{key}] mismatch: {d}; whole value: {}",
                        brief(&actual_v, 300)
                    ));
                }
            }
        }
        Step::Length(pairs) => {
            for (key, expected) in pairs {
                let expected = ctx.stash.replace(expected)?;
                let want = expected.as_u64().ok_or_else(|| {
                    format!("`length` of [{key}] needs a count, found {expected}")
                })?;
                let actual = ctx.actual(key)?;
                let got = match &actual {
                    Some(Value::Array(a)) => a.len(),
                    Some(Value::Object(o)) => o.len(),
                    Some(Value::String(s)) => s.chars().count(),
                    _ => {
                        return Err(format!(
                            "[{key}] has no length: it is {}",
                            describe(&actual)
                        ));
                    }
                };
                if got as u64 != want {
                    return Err(format!(
                        "[{key}] length: expected {want}, got {got}; value: {}",
                        describe(&actual)
                    ));
                }
            }
        }
        Step::IsTrue(key) => {
            let actual = ctx.actual(key)?;
            if !truthy(actual.as_ref()) {
                return Err(format!(
                    "[{key}] should be true-ish but is {}",
                    describe(&actual)
                ));
            }
        }
        Step::IsFalse(key) => {
            let actual = ctx.actual(key)?;
            if truthy(actual.as_ref()) {
                return Err(format!(
                    "[{key}] should be false-ish or missing but is {}",
                    describe(&actual)
                ));
            }
        }
        Step::Compare(op, pairs) => {
            for (key, expected) in pairs {
                let expected = ctx.stash.replace(expected)?;
                let actual = ctx.actual(key)?;
                let ord = match (&actual, &expected) {
                    (Some(Value::Number(a)), Value::Number(e)) => values::cmp_numbers(a, e),
                    (Some(Value::String(a)), Value::String(e)) => Some(a.cmp(e)),
                    _ => None,
                }
                .ok_or_else(|| {
                    format!(
                        "[{key}] = {} cannot be compared ({}) with {}",
                        describe(&actual),
                        op.name(),
                        brief(&expected, 200)
                    )
                })?;
                let ok = match op {
                    CmpOp::Gt => ord == Ordering::Greater,
                    CmpOp::Gte => ord != Ordering::Less,
                    CmpOp::Lt => ord == Ordering::Less,
                    CmpOp::Lte => ord != Ordering::Greater,
                };
                if !ok {
                    return Err(format!(
                        "[{key}] = {} is not {} {}",
                        describe(&actual),
                        op.name(),
                        brief(&expected, 200)
                    ));
                }
            }
        }
        Step::Contains(pairs) => {
            for (key, expected) in pairs {
                let expected = ctx.stash.replace(expected)?;
                let actual = ctx.actual(key)?;
                let Some(Value::Array(items)) = &actual else {
                    return Err(format!(
                        "[{key}] should be an array but is {}",
                        describe(&actual)
                    ));
                };
                let found = items.iter().any(|item| match (&expected, item) {
                    (Value::Object(e), Value::Object(a)) => e
                        .iter()
                        .all(|(k, ev)| a.get(k).is_some_and(|av| diff(ev, av).is_none())),
                    (e, a) => diff(e, a).is_none(),
                });
                if !found {
                    return Err(format!(
                        "[{key}] does not contain {}; value: {}",
                        brief(&expected, 200),
                        describe(&actual)
                    ));
                }
            }
        }
        Step::CloseTo(triples) => {
            for (key, value, error) in triples {
                let actual = ctx.actual(key)?;
                let a = actual.as_ref().and_then(Value::as_f64).ok_or_else(|| {
                    format!("[{key}] should be a number but is {}", describe(&actual))
                })?;
                if (a - value).abs() > *error {
                    return Err(format!("[{key}] = {a} is not within {error} of {value}"));
                }
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::parse_suite;
    use serde_json::json;
    use std::sync::Mutex;

    /// Answers every request with the next canned response and records the requests.
    struct Canned {
        responses: Mutex<Vec<HttpResponse>>,
        seen: Mutex<Vec<HttpRequest>>,
    }

    impl Canned {
        fn new(responses: Vec<(u16, Value)>) -> Canned {
            let mut r: Vec<HttpResponse> = responses
                .into_iter()
                .map(|(s, b)| HttpResponse::new(s, Vec::new(), b.to_string()))
                .collect();
            r.reverse();
            Canned {
                responses: Mutex::new(r),
                seen: Mutex::new(Vec::new()),
            }
        }
    }

    impl Transport for Canned {
        async fn send(&self, req: &HttpRequest) -> Result<HttpResponse, String> {
            self.seen.lock().expect("lock").push(req.clone());
            if req.path == "/_searchsim/reset" {
                return Ok(HttpResponse::new(200, Vec::new(), "{}".into()));
            }
            self.responses
                .lock()
                .expect("lock")
                .pop()
                .ok_or_else(|| "no canned response left".to_string())
        }
    }

    fn registry() -> ApiRegistry {
        ApiRegistry::from_specs(&[json!({"search": {"url": {"paths": [
            {"path": "/_search", "methods": ["GET", "POST"]},
            {"path": "/{index}/_search", "methods": ["GET", "POST"], "parts": {"index": {}}}
        ]}, "params": {"size": {}, "rest_total_hits_as_int": {}}, "body": {}}})])
        .expect("spec")
    }

    async fn run(yaml: &str, responses: Vec<(u16, Value)>) -> (Vec<Outcome>, Vec<HttpRequest>) {
        let suite = parse_suite("t.yml", yaml).expect("parses");
        let canned = Canned::new(responses);
        let apis = registry();
        let runner = Runner {
            transport: &canned,
            apis: &apis,
            version: Version(3, 3, 0),
            wipe: Wipe::Searchsim,
        };
        let out = runner.run_suite(&suite).await;
        let seen = canned.seen.lock().expect("lock").clone();
        (out, seen)
    }

    const HITS: &str = r#"{"hits": {"total": 2, "hits": [{"_id": "42", "sort": [1, 7]}, {"_id": "43", "sort": [2, 3]}]}, "took": 1}"#;

    fn hits() -> Value {
        serde_json::from_str(HITS).expect("json")
    }

    async fn single(assertions: &str) -> Outcome {
        let yaml =
            format!("t:\n  - do: {{ search: {{ index: x, body: {{ size: 2 }} }} }}\n{assertions}");
        let (mut out, _) = run(&yaml, vec![(200, hits())]).await;
        assert_eq!(out.len(), 1);
        out.remove(0)
    }

    #[tokio::test]
    async fn correct_expectations_pass() {
        let o = single(
            "  - match: { hits.total: 2.0 }\n  - match: { hits.hits.0._id: \"42\" }\n  - length: { hits.hits: 2 }\n  \
             - is_true: hits.hits.0.sort\n  - is_false: hits.nothing\n  - set: { hits.hits.1.sort.0: prev }\n  \
             - gt: { hits.hits.1.sort.0: 1 }\n  - lte: { $prev: 2 }\n  - length: { $body: 2 }\n  \
             - match: { hits.hits.0._id: \"/^4 2$/\" }\n  - match: { hits.hits.1.sort: [2, 3] }\n",
        )
        .await;
        assert_eq!(o.status, Status::Pass, "{}", o.line());
    }

    #[tokio::test]
    async fn wrong_expectations_fail() {
        for bad in [
            "  - match: { hits.total: 3 }\n",
            "  - match: { hits.hits.0._id: 42 }\n",
            "  - match: { hits.hits.0._id: \"/^43$/\" }\n",
            "  - match: { hits.missing: 1 }\n",
            "  - match: { hits.hits.0.sort: [1] }\n",
            "  - length: { hits.hits: 3 }\n",
            "  - is_true: hits.missing\n",
            "  - is_false: hits.total\n",
            "  - gt: { hits.total: 2 }\n",
            "  - lt: { hits.total: 2 }\n",
            "  - set: { hits.hits.0._id: x }\n  - match: { hits.hits.1._id: $x }\n",
            "  - set: { nope: x }\n",
        ] {
            let o = single(bad).await;
            assert_eq!(o.status, Status::Fail, "should fail: {bad}");
            let detail = o.detail.expect("failure detail");
            assert!(detail.contains("request: POST /x/_search"), "{detail}");
            assert!(detail.contains("test step "), "{detail}");
        }
    }

    #[tokio::test]
    async fn catch_and_errors() {
        let err = json!({"error": {"type": "index_not_found_exception", "reason": "no such index [x]"}, "status": 404});
        let yaml = "t:\n  - do: { catch: missing, search: { index: x } }\n  - match: { error.type: index_not_found_exception }\n";
        let (out, _) = run(yaml, vec![(404, err.clone())]).await;
        assert_eq!(out[0].status, Status::Pass, "{}", out[0].line());
        let yaml = "t:\n  - do: { catch: bad_request, search: { index: x } }\n";
        let (out, _) = run(yaml, vec![(404, err.clone())]).await;
        assert_eq!(out[0].status, Status::Fail);
        let yaml = "t:\n  - do: { catch: \"/no such index \\\\[x\\\\]/\", search: { index: x } }\n";
        let (out, _) = run(yaml, vec![(404, err.clone())]).await;
        assert_eq!(out[0].status, Status::Pass, "{}", out[0].line());
        let yaml = "t:\n  - do: { catch: \"/no such index \\\\[y\\\\]/\", search: { index: x } }\n";
        let (out, _) = run(yaml, vec![(404, err.clone())]).await;
        assert_eq!(out[0].status, Status::Fail);
        let yaml = "t:\n  - do: { catch: missing, search: { index: x } }\n";
        let (out, _) = run(yaml, vec![(200, hits())]).await;
        assert_eq!(out[0].status, Status::Fail);
        let yaml = "t:\n  - do: { search: { index: x } }\n";
        let (out, _) = run(yaml, vec![(500, err.clone())]).await;
        assert_eq!(out[0].status, Status::Fail);
        let yaml = "t:\n  - do: { catch: request, search: { index: x } }\n";
        let (out, _) = run(yaml, vec![(500, err)]).await;
        assert_eq!(out[0].status, Status::Pass);
    }

    #[tokio::test]
    async fn stash_flows_into_requests_and_setup_teardown_run() {
        let yaml = "setup:\n  - do: { search: { index: s } }\n  - set: { hits.hits.0._id: first }\n---\n\
                    t:\n  - do: { search: { index: \"${first}\", body: { after: $first, q: \"id-${first}\" } } }\n\
                    ---\nteardown:\n  - do: { search: {} }\n";
        let (out, seen) = run(yaml, vec![(200, hits()), (200, hits()), (200, hits())]).await;
        assert_eq!(out[0].status, Status::Pass, "{}", out[0].line());
        let paths: Vec<_> = seen
            .iter()
            .map(|r| format!("{} {}", r.method, r.path))
            .collect();
        assert_eq!(
            paths,
            vec![
                "POST /_searchsim/reset",
                "GET /s/_search",
                "POST /42/_search",
                "GET /_search"
            ]
        );
        assert_eq!(
            seen[2].body.as_deref(),
            Some(r#"{"after":"42","q":"id-42"}"#)
        );
    }

    #[tokio::test]
    async fn version_and_feature_skips() {
        let yaml = "t:\n  - skip: { version: \" - 3.9.99\", reason: too old }\n  - do: { search: {} }\n---\n\
                    u:\n  - skip: { features: [headers, no_such_feature] }\n  - do: { search: {} }\n";
        let (out, seen) = run(yaml, vec![]).await;
        assert_eq!(out[0].status, Status::Skip);
        assert!(
            out[0]
                .detail
                .as_deref()
                .expect("reason")
                .contains("too old")
        );
        assert_eq!(out[1].status, Status::Skip);
        assert!(
            out[1]
                .detail
                .as_deref()
                .expect("reason")
                .contains("no_such_feature")
        );
        assert!(seen.is_empty(), "skipped tests must not touch the server");
    }

    #[test]
    fn warning_headers() {
        assert_eq!(
            warning_message(
                r#"299 OpenSearch-3.3.0-abc "a \"quoted\" thing" "Sat, 21 Nov 2026 05:00:00 GMT""#
            ),
            "a \"quoted\" thing"
        );
        let step = DoStep {
            warnings: vec!["w1".into()],
            allowed_warnings: vec!["w2".into()],
            ..DoStep::default()
        };
        let resp = |ws: &[&str]| {
            HttpResponse::new(
                200,
                ws.iter()
                    .map(|w| format!("299 OpenSearch-3.3.0 \"{w}\""))
                    .collect(),
                "{}".into(),
            )
        };
        assert!(check_warnings(&step, &resp(&["w1"])).is_ok());
        assert!(check_warnings(&step, &resp(&["w1", "w2"])).is_ok());
        assert!(
            check_warnings(&step, &resp(&["w2"])).is_err(),
            "expected warning missing"
        );
        assert!(
            check_warnings(&step, &resp(&["w1", "w3"])).is_err(),
            "unexpected warning"
        );
        assert!(check_warnings(&DoStep::default(), &resp(&["w3"])).is_err());
    }
}
