//! `spillway worker` as a process, without a broker: its flags, its refusal of a bad broker URL
//! (one line, no password), its probes and metrics while it waits for the broker, and a
//! clean exit on SIGTERM.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

const PASSWORD: &str = "hunter2-s3cret";

fn spillway() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_spillway"));
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if key.starts_with("SPILLWAY_") || key.starts_with("OTEL_") {
            cmd.env_remove(key);
        }
    }
    cmd
}

/// A port nothing listens on (bound, then released).
fn closed_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn error_lines(stderr: &str) -> Vec<&str> {
    stderr.lines().filter(|l| l.starts_with("error:")).collect()
}

#[test]
fn help_lists_the_flags_and_hides_the_broker_value() {
    let out = spillway()
        .args(["worker", "--help"])
        .env(
            "SPILLWAY_BROKER",
            format!("amqp://admin:{PASSWORD}@rabbit:5672/%2f"),
        )
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8(out.stdout).unwrap();
    for flag in [
        "--broker <BROKER>",
        "--concurrency <CONCURRENCY>",
        "--secrets-dir <SECRETS_DIR>",
        "--listen <LISTEN>",
        "--delivery-limit <DELIVERY_LIMIT>",
        "--shutdown-grace <SHUTDOWN_GRACE>",
        "--connect-timeout <CONNECT_TIMEOUT>",
        "[env: SPILLWAY_BROKER]",
        "[env: SPILLWAY_CONCURRENCY=]",
        "[default: 4]",
        "[default: 0.0.0.0:9090]",
        "[default: 20]",
        "[default: 30s]",
    ] {
        assert!(help.contains(flag), "`{flag}` missing from:\n{help}");
    }
    assert!(!help.contains(PASSWORD), "{help}");

    let top = spillway().arg("--help").output().unwrap();
    assert!(String::from_utf8_lossy(&top.stdout).contains("worker"));
}

#[test]
fn a_broker_url_that_is_not_amqp_fails_in_one_line_without_the_password() {
    let out = spillway()
        .args(["worker", "--listen", "127.0.0.1:0", "--broker"])
        .arg(format!("http://admin:{PASSWORD}@127.0.0.1:5672/"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0]
            .starts_with("error: --broker [http://admin:***@127.0.0.1:5672/] has scheme [http]"),
        "{stderr}"
    );
    assert!(
        errors[0].contains("amqp://user:password@host:5672/%2f"),
        "{stderr}"
    );
}

#[test]
fn an_unreachable_broker_fails_after_the_connect_timeout_without_the_password() {
    let port = closed_port();
    let started = Instant::now();
    let out = spillway()
        .args([
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--connect-timeout",
            "1s",
            "--broker",
        ])
        .arg(format!("amqp://admin:{PASSWORD}@127.0.0.1:{port}/%2f"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(started.elapsed() < Duration::from_secs(30), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let errors = error_lines(&stderr);
    assert_eq!(errors.len(), 1, "{stderr}");
    assert!(
        errors[0].starts_with("error: cannot connect to the broker"),
        "{stderr}"
    );
    assert!(
        errors[0].contains(&format!("amqp://admin:***@127.0.0.1:{port}")),
        "{stderr}"
    );
    // The start line names the settings, with the password masked.
    let start = stderr
        .lines()
        .find(|l| l.contains("spillway worker starting"))
        .unwrap_or_else(|| panic!("no start line in {stderr}"));
    assert!(start.contains("concurrency=4"), "{start}");
    assert!(start.contains("listen=127.0.0.1:"), "{start}");
    assert!(
        start.contains("broker=amqp://admin:***@127.0.0.1"),
        "{start}"
    );
}

/// A running worker whose stderr lines arrive on a channel.
struct Running {
    child: Child,
    lines: mpsc::Receiver<String>,
    seen: Vec<String>,
}

impl Running {
    fn start(args: &[String]) -> Running {
        let mut child = spillway()
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Running {
            child,
            lines,
            seen: Vec::new(),
        }
    }

    /// The first stderr line containing `needle` (waits up to 60 s).
    fn line_with(&mut self, needle: &str) -> String {
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!("no line with `{needle}` in:\n{}", self.seen.join("\n")),
            }
        }
    }

    fn wait(&mut self, within: Duration) -> ExitStatus {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                // Collect what is left of stderr.
                while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
                    self.seen.push(line);
                }
                return status;
            }
            // Output is the condition we wait on; it also paces the loop.
            match self.lines.recv_timeout(Duration::from_millis(50)) {
                Ok(line) => self.seen.push(line),
                Err(_) if Instant::now() > deadline => {
                    let _ = self.child.kill();
                    panic!("did not exit within {within:?}:\n{}", self.seen.join("\n"));
                }
                Err(_) => {}
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `GET path` over plain HTTP/1.1: status and body.
fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    let status = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response}"));
    (status, body.to_string())
}

#[cfg(unix)]
#[test]
fn probes_answer_while_connecting_and_sigterm_exits_zero() {
    // A "broker" that accepts connections and never says a word: the AMQP handshake waits.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let broker = format!(
        "amqp://admin:{PASSWORD}@127.0.0.1:{}/%2f",
        silent.local_addr().unwrap().port()
    );
    let mut worker = Running::start(&[
        "worker".into(),
        "--broker".into(),
        broker,
        "--listen".into(),
        "127.0.0.1:0".into(),
        "--connect-timeout".into(),
        "5m".into(),
        "--concurrency".into(),
        "3".into(),
    ]);
    let start = worker.line_with("spillway worker starting");
    assert!(start.contains("concurrency=3"), "{start}");
    let addr: SocketAddr = start
        .split_whitespace()
        .find_map(|w| w.strip_prefix("listen="))
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| panic!("no listen address in {start}"));

    assert_eq!(http_get(addr, "/healthz").0, 200);
    let (status, body) = http_get(addr, "/readyz");
    assert_eq!(status, 503);
    assert!(
        body.starts_with("not ready: connecting to the broker at amqp://admin:***@127.0.0.1:"),
        "{body}"
    );
    assert!(!body.contains(PASSWORD));
    let (status, metrics) = http_get(addr, "/metrics");
    assert_eq!(status, 200);
    for line in [
        "spillway_documents_exported_total 0",
        "spillway_shards_in_flight 0",
        "spillway_search_request_duration_seconds_count 0",
        "# EOF",
    ] {
        assert!(
            metrics.lines().any(|l| l == line),
            "`{line}` missing:\n{metrics}"
        );
    }

    let kill = Command::new("kill")
        .args(["-TERM", &worker.child.id().to_string()])
        .status()
        .unwrap();
    assert!(kill.success());
    let status = worker.wait(Duration::from_secs(30));
    let log = worker.seen.join("\n");
    assert_eq!(status.code(), Some(0), "{log}");
    assert!(
        log.contains("signal=\"SIGTERM\"") || log.contains("signal=SIGTERM"),
        "{log}"
    );
    assert!(!log.contains(PASSWORD), "{log}");
    drop(silent);
}

#[test]
fn json_logs_are_one_object_per_line_without_the_password() {
    let port = closed_port();
    let out = spillway()
        .args([
            "--log-json",
            "worker",
            "--listen",
            "127.0.0.1:0",
            "--connect-timeout",
            "1s",
            "--broker",
        ])
        .arg(format!("amqp://admin:{PASSWORD}@127.0.0.1:{port}/%2f"))
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains(PASSWORD), "{stderr}");
    let logs: Vec<serde_json::Value> = stderr
        .lines()
        .filter(|l| !l.starts_with("error:"))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let start = logs
        .iter()
        .find(|v| v["fields"]["message"] == "spillway worker starting")
        .unwrap_or_else(|| panic!("no start line in {stderr}"));
    assert_eq!(start["level"], "INFO");
    assert_eq!(start["fields"]["concurrency"], 4);
    assert_eq!(
        start["fields"]["broker"],
        format!("amqp://admin:***@127.0.0.1:{port}/%2f")
    );
    assert_eq!(error_lines(&stderr).len(), 1, "{stderr}");
}
