//! `kubesim` binary: serves the emulator on 127.0.0.1, prints its URL and optionally
//! writes a kubeconfig for kubectl and other clients.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use kubesim::{Server, ServerOptions};

/// A Kubernetes API-server emulator for tests.
#[derive(Debug, Parser)]
#[command(name = "kubesim", version)]
struct Args {
    /// Port on 127.0.0.1 (0 picks a free one).
    #[arg(long, default_value_t = 0, env = "KUBESIM_PORT")]
    port: u16,
    /// Write a kubeconfig pointing at the server to this path.
    #[arg(long)]
    kubeconfig: Option<std::path::PathBuf>,
    /// Register a bearer token as `user=token` (repeatable).
    #[arg(long = "user", value_name = "USER=TOKEN")]
    users: Vec<String>,
    /// Seconds between watch bookmarks.
    #[arg(long, default_value_t = 1)]
    bookmark_interval_secs: u64,
    /// Events kept for watch replay.
    #[arg(long, default_value_t = 10_000)]
    history: usize,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    let args = Args::parse();
    let options = ServerOptions {
        bookmark_interval: Duration::from_secs(args.bookmark_interval_secs.max(1)),
        history_limit: args.history,
        ..ServerOptions::default()
    };
    let server = Server::start_on(options, SocketAddr::from(([127, 0, 0, 1], args.port))).await?;
    for pair in &args.users {
        let (user, token) = pair.split_once('=').with_context(|| {
            format!(
                "--user takes USER=TOKEN, got {:?}",
                pair.split('=').next().unwrap_or("")
            )
        })?;
        server.add_token(token, user);
    }
    if let Some(path) = &args.kubeconfig {
        server
            .write_kubeconfig(path)
            .with_context(|| format!("could not write the kubeconfig to {}", path.display()))?;
        eprintln!("kubeconfig written to {}", path.display());
    }
    println!("{}", server.url().unwrap_or_default());
    tokio::signal::ctrl_c()
        .await
        .context("waiting for Ctrl-C")?;
    Ok(())
}
