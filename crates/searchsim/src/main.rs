//! The `searchsim` binary: serves a simulated OpenSearch/Elasticsearch cluster, optionally
//! pre-loaded with generated data. The first stdout line is `searchsim listening on <url>`.

use std::io::Write as _;
use std::net::SocketAddr;

use anyhow::Context as _;
use clap::Parser;
use searchsim::datagen::{DataSpec, load};
use searchsim::{ApiKey, Auth, Config, Faults, Flavor, SearchSim, User};

#[derive(Debug, Parser)]
#[command(
    name = "searchsim",
    about = "OpenSearch/Elasticsearch-compatible test cluster",
    disable_version_flag = true
)]
struct Args {
    /// opensearch or elasticsearch.
    #[arg(long, default_value = "opensearch")]
    flavor: Flavor,
    /// Version reported by `GET /` (default 2.19.0 for OpenSearch, 8.15.0 for Elasticsearch).
    #[arg(long)]
    version: Option<String>,
    /// Listen host.
    #[arg(long, default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// Listen port (0 picks a free one).
    #[arg(long, default_value_t = 9200)]
    port: u16,
    /// Generate this many documents at start.
    #[arg(long, default_value_t = 0)]
    generate: u64,
    /// Number of daily indices.
    #[arg(long, default_value_t = 3)]
    days: u32,
    /// First day (YYYY-MM-DD).
    #[arg(long, default_value = "2024-03-01")]
    start: chrono::NaiveDate,
    /// Shards per generated index.
    #[arg(long, default_value_t = 3)]
    shards: u32,
    /// Data seed.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Prefix of generated index names.
    #[arg(long, default_value = "logs-")]
    index_prefix: String,
    /// Approximate message size of generated documents.
    #[arg(long, default_value_t = 120)]
    avg_message_bytes: usize,
    /// Probability of a 429 rejection per search-type request.
    #[arg(long, default_value_t = 0.0)]
    reject_rate: f64,
    /// Probability of a 502/503.
    #[arg(long, default_value_t = 0.0)]
    unavailable_rate: f64,
    /// Added latency in ms.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Random extra latency in ms.
    #[arg(long, default_value_t = 0)]
    latency_jitter_ms: u64,
    /// Maximum open PITs.
    #[arg(long)]
    max_open_pits: Option<usize>,
    /// Circuit breaker limit on response bytes.
    #[arg(long)]
    breaker_bytes: Option<u64>,
    /// Probability of dropping the connection mid-response.
    #[arg(long, default_value_t = 0.0)]
    drop_connection_rate: f64,
    /// Probability of a silently short page.
    #[arg(long, default_value_t = 0.0)]
    short_page_rate: f64,
    /// Probability of rotating the PIT id (Elasticsearch).
    #[arg(long, default_value_t = 0.0)]
    pit_id_rotation: f64,
    /// Seed of the fault RNG.
    #[arg(long, default_value_t = 0)]
    fault_seed: u64,
    /// Basic-auth user `user:pass[:ro][:index-pattern,...]` (repeatable).
    #[arg(long)]
    basic_auth: Vec<String>,
    /// API key `id:key` (repeatable).
    #[arg(long)]
    api_key: Vec<String>,
    /// Require AWS SigV4 signatures; accepted key `access_key_id:secret` (repeatable).
    #[arg(long)]
    sigv4: Vec<String>,
    /// Serve HTTPS and write the CA to DIR/ca.pem.
    #[arg(long)]
    tls_dir: Option<std::path::PathBuf>,
    /// Disable the 1s periodic refresh.
    #[arg(long)]
    no_auto_refresh: bool,
    /// Instead of serving, load the `--generate` data set into the (real) cluster at this URL
    /// over `_bulk`, print `loaded N documents (B bytes of _source) into URL` and exit.
    #[arg(long)]
    load_into: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let a = Args::parse();
    let spec = DataSpec {
        docs: a.generate,
        days: a.days,
        start: a.start,
        shards: a.shards,
        seed: a.seed,
        index_prefix: a.index_prefix.clone(),
        avg_message_bytes: a.avg_message_bytes,
        ..DataSpec::default()
    };
    if let Some(url) = &a.load_into {
        anyhow::ensure!(a.generate > 0, "--load-into needs --generate N (N > 0)");
        let t = std::time::Instant::now();
        let s = searchsim::bulkload::load_into(url, &spec)
            .await
            .map_err(anyhow::Error::msg)
            .with_context(|| format!("loading the data set into {url}"))?;
        println!(
            "loaded {} documents ({} bytes of _source) into {url} in {:.1} s",
            s.docs,
            s.bytes,
            t.elapsed().as_secs_f64()
        );
        return Ok(());
    }
    let mut config = match a.flavor {
        Flavor::OpenSearch => Config::opensearch(),
        Flavor::Elasticsearch => Config::elasticsearch(),
    };
    if let Some(v) = a.version {
        config = config.with_version(v);
    }
    config = config
        .with_bind(SocketAddr::new(a.host, a.port))
        .with_faults(Faults {
            reject_rate: a.reject_rate,
            unavailable_rate: a.unavailable_rate,
            latency_ms: a.latency_ms,
            latency_jitter_ms: a.latency_jitter_ms,
            max_open_pits: a.max_open_pits,
            breaker_bytes: a.breaker_bytes,
            drop_connection_rate: a.drop_connection_rate,
            short_page_rate: a.short_page_rate,
            pit_id_rotation: a.pit_id_rotation,
            seed: a.fault_seed,
            paths: Vec::new(),
            poison: None,
        });
    if !a.basic_auth.is_empty() || !a.api_key.is_empty() {
        let mut auth = Auth::default();
        for u in &a.basic_auth {
            auth.users.push(
                User::parse(u)
                    .map_err(anyhow::Error::msg)
                    .context("--basic-auth")?,
            );
        }
        for k in &a.api_key {
            let (id, key) = k.split_once(':').context("--api-key needs id:key")?;
            auth.api_keys.push(ApiKey::new(id, key));
        }
        config = config.with_auth(auth);
    }
    for k in &a.sigv4 {
        let (id, secret) = k
            .split_once(':')
            .context("--sigv4 needs access_key_id:secret")?;
        config = config.with_sigv4(id, secret);
    }
    if let Some(dir) = a.tls_dir {
        config = config.with_tls(dir);
    }
    if a.no_auto_refresh {
        config = config.with_refresh_interval(None);
    }
    let sim = SearchSim::start(config)
        .await
        .context("starting searchsim")?;
    if a.generate > 0 {
        let t = std::time::Instant::now();
        let s = load(sim.cluster(), &spec).context("generating data")?;
        tracing::info!(
            docs = s.docs,
            indices = s.indices.len(),
            bytes = s.bytes,
            secs = t.elapsed().as_secs_f64(),
            "generated data"
        );
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "searchsim listening on {}", sim.url())?;
        out.flush()?;
    }
    tracing::info!(url = %sim.url(), "serving");
    tokio::signal::ctrl_c()
        .await
        .context("waiting for ctrl-c")?;
    sim.shutdown().await;
    Ok(())
}
