//! The `spillway` binary: one program, several roles (see `spillway --help`).

/// mimalloc (v2) returns freed pages to the OS and keeps per-thread heaps small: with several
/// shard slots encoding and uploading at once, glibc malloc's arenas left the peak RSS of
/// `spillway run --workers 4` 7-12 MiB higher (155 vs 148 MiB at 1M documents, 172 vs 161 MiB
/// at 5M). Freeing pages at once (`MIMALLOC_PURGE_DELAY=0`, see [`purge_at_once`]) lowers it
/// by another ~30 MiB and keeps it flat as jobs grow.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::process::ExitCode;

use clap::Parser;

mod cli;
mod coordinator;
mod demo;
mod run;
mod worker;

/// mimalloc reads its options from the environment when the process starts, and its delayed
/// purge (10 ms by default) never runs on a thread that went idle, so freed pages of finished
/// shards stayed resident. The process therefore re-executes itself once with
/// `MIMALLOC_PURGE_DELAY=0` (an explicit value in the environment is kept).
///
/// The price is CPU: memory freed and allocated again in the next page cycle (hyper's read
/// buffers above all, since it reads one chunk ahead) gets fresh pages that the kernel faults
/// in and zeroes. With 1 KiB documents and 4 shard slots, `MIMALLOC_PURGE_DELAY=10` takes about
/// 20-30% less CPU per document (plain NDJSON: 2.1 vs 2.6 CPU-s per 1M, 15k vs 240k page
/// faults; zstd Parquet to S3: 9.6 vs 13.4), but the Parquet export then peaks at 169 MiB
/// instead of 129 (bench/rss.sh, 1M), past the 150 MiB budget; set it where CPU costs more
/// than memory.
fn purge_at_once() {
    use std::os::unix::process::CommandExt;
    const VAR: &str = "MIMALLOC_PURGE_DELAY";
    if std::env::var_os(VAR).is_some() {
        return;
    }
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut args = std::env::args_os();
    let arg0 = args.next().unwrap_or_else(|| exe.clone().into_os_string());
    // `exec` only returns when it failed; then run on with the default delay.
    let _ = std::process::Command::new(&exe)
        .arg0(arg0)
        .args(args)
        .env(VAR, "0")
        .exec();
}

fn main() -> ExitCode {
    purge_at_once();
    let args = cli::Cli::parse();
    // Held to the end: dropping it exports the spans still buffered.
    let _tracing = cli::init_tracing(&args);
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(cli::dispatch(args)) {
        Ok(code) => code,
        Err(e) => {
            // One line: what failed and what to do.
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

fn one_line(e: &anyhow::Error) -> String {
    let mut s = e.to_string();
    let mut src = e.source();
    while let Some(cause) = src {
        let c = cause.to_string();
        if !s.contains(&c) {
            s.push_str(": ");
            s.push_str(&c);
        }
        src = cause.source();
    }
    s.replace('\n', " ")
}
