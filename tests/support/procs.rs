//! Processes of a distributed run: a RabbitMQ virtual host per test, `spillway worker`
//! processes that can be killed and restarted, and `spillway run --broker` coordinators.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{bin, repo_root};

/// The test broker's base URL (`scripts/services/rabbitmq.sh env` exports it).
pub fn amqp_base() -> String {
    std::env::var("SPILLWAY_TEST_AMQP").unwrap_or_else(|_| {
        panic!(
            "SPILLWAY_TEST_AMQP is not set: start the test broker with `scripts/services/rabbitmq.sh start` and `eval \"$(scripts/services/rabbitmq.sh env)\"` (scripts/test.sh does this)"
        )
    })
}

/// A fresh virtual host on the test broker, so tests running at once never share queues.
/// Returns its AMQP URL.
pub fn broker_vhost(name: &str) -> String {
    let script = repo_root().join("scripts/services/rabbitmq.sh");
    let out = Command::new("bash")
        .arg(&script)
        .args(["vhost", name])
        .output()
        .expect("rabbitmq.sh runs");
    assert!(
        out.status.success(),
        "creating vhost {name} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let url = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(
        url.starts_with("amqp://"),
        "rabbitmq.sh vhost printed {url}"
    );
    url
}

/// Restarts the test broker (stop, then start; queues are durable).
pub fn restart_broker() {
    let script = repo_root().join("scripts/services/rabbitmq.sh");
    let status = Command::new("bash")
        .arg(&script)
        .arg("restart")
        .stdout(Stdio::null())
        .status()
        .expect("rabbitmq.sh runs");
    assert!(status.success(), "the broker restart failed");
}

/// One `spillway worker` process, restartable.
pub struct WorkerProc {
    pub child: Child,
    broker: String,
    concurrency: u16,
    secrets: PathBuf,
    log: PathBuf,
    pub starts: u32,
}

impl WorkerProc {
    pub fn start(broker: &str, concurrency: u16, secrets: &Path, log: PathBuf) -> WorkerProc {
        let child = spawn_worker(broker, concurrency, secrets, &log);
        WorkerProc {
            child,
            broker: broker.to_string(),
            concurrency,
            secrets: secrets.to_path_buf(),
            log,
            starts: 1,
        }
    }

    /// SIGKILL: no chance to give anything back.
    pub fn kill9(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub fn restart(&mut self) {
        self.kill9();
        self.child = spawn_worker(&self.broker, self.concurrency, &self.secrets, &self.log);
        self.starts += 1;
    }

    /// SIGTERM and wait: the graceful path.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        let pid = self.child.id().to_string();
        let _ = Command::new("kill").args(["-TERM", &pid]).status();
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(st) = self.child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "worker did not stop within 60 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for WorkerProc {
    fn drop(&mut self) {
        self.kill9();
    }
}

fn spawn_worker(broker: &str, concurrency: u16, secrets: &Path, log: &Path) -> Child {
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .expect("worker log opens");
    Command::new(bin("spillway"))
        .args(["--log", "info", "worker", "--broker", broker])
        .args(["--concurrency", &concurrency.to_string()])
        .arg("--secrets-dir")
        .arg(secrets)
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::null())
        .stderr(log_file)
        .spawn()
        .expect("spillway worker starts")
}

/// A `spillway run --broker` coordinator process.
pub fn spawn_coordinator(broker: &str, job: &Path, secrets: &Path) -> Child {
    Command::new(bin("spillway"))
        .args(["--log", "info", "run", "--no-progress", "--broker", broker])
        .arg("--secrets-dir")
        .arg(secrets)
        .arg(job)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spillway run starts")
}

/// Output of a finished process.
pub struct Finished {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// Waits for `child` up to `limit`, killing it (and failing) past that.
pub fn wait_finished(child: Child, limit: Duration, what: &str) -> Finished {
    let pid = child.id();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send(child.wait_with_output());
    });
    match rx.recv_timeout(limit) {
        Ok(Ok(out)) => Finished {
            success: out.status.success(),
            stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        },
        Ok(Err(e)) => panic!("{what}: waiting failed: {e}"),
        Err(_) => {
            let _ = Command::new("kill")
                .args(["-KILL", &pid.to_string()])
                .status();
            panic!("{what} did not finish within {limit:?}")
        }
    }
}

/// The last line of a process's stderr that starts with `error:`.
pub fn error_line(stderr: &str) -> Option<&str> {
    stderr.lines().rev().find(|l| l.starts_with("error:"))
}
