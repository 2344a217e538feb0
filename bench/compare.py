#!/usr/bin/env python3
"""Side-by-side export benchmark: spillway against the tools users would otherwise pick.

Starts one searchsim with a generated data set and exports all of it with every tool, one after
the other, on the same data in the same run:

- `spillway run` with 1 and 4 shard slots, to zstd NDJSON and to zstd Parquet on a local
  directory;
- spillway distributed: `spillway run --broker` and 4 `spillway worker` processes over RabbitMQ,
  to Parquet on S3 (SeaweedFS);
- elasticdump with its fastest settings (bench/peers/elasticdump.sh), to NDJSON;
- opensearch-py `helpers.scan` (bench/peers/scan_ndjson.py), to NDJSON;
- a hand-written threaded exporter: 8 threads over PIT slices into pandas, written as CSV and
  Parquet (bench/peers/threaded_pit.py).

For each it records wall time, documents per second, client CPU seconds per million documents
(user + system time of the client processes only, from wait4(2); searchsim is not counted), peak
RSS (the largest client process), output bytes, and whether the output holds every document
exactly once (bench/verify_output.py). It writes a Markdown table and a PNG chart.

With --real-url URL the same data set is loaded into a real cluster (`searchsim --load-into`) and
every tool exports from it instead (bench/run.sh's `real` section: a real OpenSearch 3.x node).

Normally started by bench/run.sh, which builds the binaries, installs the peers and starts the
services first. Usage: compare.py --docs N [--avg-message-bytes B] [--latency-ms L]
[--only NAME,...] [--real-url URL --server-label TEXT] [--markdown FILE] [--png FILE] [--json FILE]. The binaries come from
target/release, or from SPILLWAY_BENCH_BIN_DIR (the test suite points it at its debug build).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

ROOT = Path(__file__).resolve().parent.parent
RELEASE = Path(os.environ.get("SPILLWAY_BENCH_BIN_DIR") or ROOT / "target" / "release")
VENV_PY = ROOT / ".work" / "bench-venv" / "bin" / "python"
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


@dataclass
class Measured:
    """Resource use of a set of client processes."""

    wall: float
    cpu: float
    peak_rss_kib: int
    rss_sum_kib: int
    exit_codes: list[int]


@dataclass
class Row:
    tool: str
    output: str
    docs: int
    m: Measured | None
    out_bytes: int | None
    complete: bool
    check: str

    @property
    def docs_per_s(self) -> float:
        return self.docs / self.m.wall if self.m and self.m.wall > 0 else 0.0

    @property
    def cpu_per_million(self) -> float:
        return self.m.cpu / (self.docs / 1e6) if self.m and self.docs else 0.0


class Proc:
    """A child process whose rusage is collected with wait4 when it exits."""

    def __init__(self, cmd: list[str], log_path: Path, env: dict[str, str] | None = None,
                 stdout_path: Path | None = None):
        self.cmd = cmd
        self.log_path = log_path
        self._stderr = open(log_path, "wb")
        self._stdout = open(stdout_path, "wb") if stdout_path else self._stderr
        self.start = time.monotonic()
        self.popen = subprocess.Popen(cmd, stdout=self._stdout, stderr=self._stderr,
                                      env=env, start_new_session=True)
        self.end: float | None = None
        self.status: int | None = None
        self.rusage = None
        self._done = threading.Event()
        threading.Thread(target=self._wait, daemon=True).start()

    def _wait(self) -> None:
        _, status, rusage = os.wait4(self.popen.pid, 0)
        self.end = time.monotonic()
        self.status = os.waitstatus_to_exitcode(status)
        self.rusage = rusage
        # Popen must not try to reap the pid a second time
        self.popen.returncode = self.status
        self._stderr.close()
        if self._stdout is not self._stderr:
            self._stdout.close()
        self._done.set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._done.wait(timeout)

    def stop(self, sig: int = signal.SIGTERM, grace: float = 30.0) -> None:
        if self._done.is_set():
            return
        try:
            os.killpg(self.popen.pid, sig)
        except ProcessLookupError:
            pass
        if not self.wait(grace):
            try:
                os.killpg(self.popen.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.wait()

    @property
    def cpu(self) -> float:
        return self.rusage.ru_utime + self.rusage.ru_stime if self.rusage else 0.0

    @property
    def maxrss_kib(self) -> int:
        return int(self.rusage.ru_maxrss) if self.rusage else 0

    def tail(self, n: int = 15) -> str:
        try:
            lines = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return ""
        return "\n".join(lines[-n:])


def measure(main: Proc, helpers: list[Proc], timeout: float) -> Measured:
    """Waits for `main`, then stops `helpers` (long-running workers) and sums everything."""
    if not main.wait(timeout):
        main.stop(signal.SIGKILL)
        for h in helpers:
            h.stop(signal.SIGKILL)
        raise TimeoutError(f"{' '.join(main.cmd[:3])} did not finish in {timeout:.0f} s")
    for h in helpers:
        h.stop(signal.SIGTERM)
    procs = [main, *helpers]
    assert main.end is not None
    return Measured(
        wall=main.end - main.start,
        cpu=sum(p.cpu for p in procs),
        peak_rss_kib=max(p.maxrss_kib for p in procs),
        rss_sum_kib=sum(p.maxrss_kib for p in procs),
        exit_codes=[p.status if p.status is not None else -1 for p in procs],
    )


class SearchSim:
    def __init__(self, work: Path, docs: int, avg_message_bytes: int, latency_ms: int):
        cmd = [str(RELEASE / "searchsim"), "--port", "0", "--generate", str(docs), "--days", "30",
               "--shards", "3", "--seed", "1", "--avg-message-bytes", str(avg_message_bytes)]
        if latency_ms:
            cmd += ["--latency-ms", str(latency_ms)]
        self.stdout = work / "searchsim.out"
        self.proc = Proc(cmd, work / "searchsim.log", env={**os.environ, "NO_COLOR": "1"},
                         stdout_path=self.stdout)
        self.url = ""
        deadline = time.monotonic() + 3600
        while time.monotonic() < deadline:
            text = self.stdout.read_text() if self.stdout.exists() else ""
            m = re.search(r"^searchsim listening on (\S+)", text, re.M)
            log_text = ANSI.sub("", self.proc.log_path.read_text(errors="replace"))
            if m and "serving" in log_text:
                self.url = m.group(1)
                break
            if self.proc.wait(0.5):
                raise RuntimeError(f"searchsim exited while loading data:\n{self.proc.tail()}")
        if not self.url:
            raise RuntimeError("searchsim did not start within an hour")
        g = re.search(r"generated data docs=(\d+) indices=(\d+) bytes=(\d+)", log_text)
        self.source_bytes = int(g.group(3)) if g else 0

    def close(self) -> None:
        self.proc.stop()


class RealNode:
    """A real cluster at `url`, loaded with the same generated data set as SearchSim serves
    (`searchsim --load-into`); its `logs-*` indices are replaced."""

    def __init__(self, url: str, docs: int, avg_message_bytes: int):
        import urllib.request
        self.url = url.rstrip("/")
        req = urllib.request.Request(f"{self.url}/logs-*", method="DELETE")
        try:
            urllib.request.urlopen(req, timeout=120).read()
        except urllib.error.HTTPError as e:
            if e.code != 404:
                raise
        cmd = [str(RELEASE / "searchsim"), "--load-into", self.url, "--generate", str(docs),
               "--days", "30", "--shards", "3", "--seed", "1",
               "--avg-message-bytes", str(avg_message_bytes)]
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=7200)
        if out.returncode != 0:
            raise RuntimeError(f"loading {self.url} failed:\n{out.stderr[-2000:]}")
        m = re.search(r"loaded (\d+) documents \((\d+) bytes of _source\)", out.stdout)
        if not m or int(m.group(1)) != docs:
            raise RuntimeError(f"unexpected loader output: {out.stdout!r}")
        self.source_bytes = int(m.group(2))

    def close(self) -> None:
        pass


def spillway_job(name: str, url: str, fmt: str, destination: str, shard_docs: int,
                 compression: str = "zstd") -> str:
    metadata = "\n    includeMetadata: true" if fmt == "ndjson" else ""
    return f"""apiVersion: spillway.dev/v1alpha1
kind: ExportJob
metadata:
  name: {name}
spec:
  source:
    url: {url}
    indices: ["logs-*"]
  timeRange:
    field: "@timestamp"
    gte: 2024-03-01T00:00:00Z
    lt: 2024-03-31T00:00:00Z
  sharding:
    targetDocsPerShard: {shard_docs}
  output:
    format: {fmt}
    compression: {compression}
    partitionBy: none{metadata}
    destination:
{destination}
"""


def verify(fmt: str, paths: list[str], expect: int, extra: list[str] | None = None,
           env: dict[str, str] | None = None) -> tuple[bool, int | None, str]:
    cmd = [str(VENV_PY), str(ROOT / "bench" / "verify_output.py"), "--expect", str(expect),
           "--format", fmt, *(extra or []), *paths]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    out = (p.stdout.strip().splitlines() or [""])[-1]
    try:
        info = json.loads(out)
        size = int(info.get("bytes", 0))
        desc = f"{info.get('rows')} rows, {info.get('distinct_ids')} distinct ids"
    except (ValueError, AttributeError):
        size, desc = None, ""
    if p.returncode != 0:
        reason = (p.stderr.strip().splitlines() or [out or "verification failed"])[-1]
        return False, size, reason
    return True, size, desc


class Bench:
    def __init__(self, args: argparse.Namespace, work: Path):
        self.args = args
        self.work = work
        self.rows: list[Row] = []
        self.s3 = {k: os.environ.get(k, "") for k in
                   ("SPILLWAY_S3_ENDPOINT", "SPILLWAY_S3_ACCESS_KEY", "SPILLWAY_S3_SECRET_KEY")}

    def record(self, tool: str, output: str, run: Callable[[], tuple[Measured, bool, int | None, str]]) -> None:
        log(f"--- {tool} -> {output}")
        try:
            m, ok, size, check = run()
        except Exception as e:  # one tool failing must not lose the other rows
            log(f"{tool}: {e}")
            self.rows.append(Row(tool, output, self.args.docs, None, None, False, str(e).splitlines()[0]))
            return
        row = Row(tool, output, self.args.docs, m, size, ok, check)
        self.rows.append(row)
        log(f"{tool}: {m.wall:.1f} s, {row.docs_per_s:,.0f} docs/s, {row.cpu_per_million:.1f} CPU-s/1M, "
            f"peak RSS {m.peak_rss_kib / 1024:.0f} MiB, complete={ok} ({check})")

    # spillway, one process
    def spillway_local(self, url: str, workers: int, fmt: str,
                       compression: str = "zstd") -> tuple[Measured, bool, int | None, str]:
        out = self.work / f"spillway-{fmt}-{compression}-{workers}"
        shutil.rmtree(out, ignore_errors=True)
        job = self.work / f"job-{fmt}-{compression}-{workers}.yaml"
        job.write_text(spillway_job(f"bench-{fmt}-{workers}", url, fmt,
                                    f"      volume:\n        path: {out}", self.args.shard_docs, compression))
        p = Proc([str(RELEASE / "spillway"), "run", str(job), "--workers", str(workers), "--no-progress"],
                 self.work / f"spillway-{fmt}-{workers}.log")
        m = measure(p, [], self.args.timeout)
        if m.exit_codes[0] != 0:
            raise RuntimeError(f"spillway run exited with {m.exit_codes[0]}: {p.tail(3)}")
        vfmt = "parquet" if fmt == "parquet" else ("ndjson-zst" if compression == "zstd" else "ndjson")
        ok, size, check = verify(vfmt, [str(out)], self.args.docs)
        shutil.rmtree(out, ignore_errors=True)
        return m, ok, size, check

    # spillway over RabbitMQ, S3
    def spillway_distributed(self, url: str, workers: int) -> tuple[Measured, bool, int | None, str]:
        if not all(self.s3.values()):
            raise RuntimeError("SPILLWAY_S3_ENDPOINT/ACCESS_KEY/SECRET_KEY are not set (run through bench/run.sh)")
        vhost = f"bench-{int(time.time())}"
        broker = subprocess.run([str(ROOT / "scripts/services/rabbitmq.sh"), "vhost", vhost],
                                check=True, capture_output=True, text=True).stdout.strip()
        bucket = "bench-compare"
        prefix = f"run-{int(time.time())}"
        env = {**os.environ,
               "SPILLWAY_SECRET_S3_ACCESSKEYID": self.s3["SPILLWAY_S3_ACCESS_KEY"],
               "SPILLWAY_SECRET_S3_SECRETACCESSKEY": self.s3["SPILLWAY_S3_SECRET_KEY"]}
        s3_args = ["--s3-endpoint", self.s3["SPILLWAY_S3_ENDPOINT"], "--s3-bucket", bucket]
        self.s3_bucket("PUT", bucket)
        job = self.work / "job-distributed.yaml"
        dest = (f"      s3:\n        bucket: {bucket}\n        prefix: {prefix}\n"
                f"        endpoint: {self.s3['SPILLWAY_S3_ENDPOINT']}\n        forcePathStyle: true\n"
                f"        secretRef: {{name: s3}}")
        job.write_text(spillway_job("bench-distributed", url, "parquet", dest, self.args.shard_docs))
        wprocs = [Proc([str(RELEASE / "spillway"), "worker", "--broker", broker, "--concurrency", "1",
                        "--listen", "127.0.0.1:0"], self.work / f"worker-{i}.log", env=env)
                  for i in range(workers)]
        time.sleep(1.0)  # let the workers connect; their start-up is not part of the export
        coord = Proc([str(RELEASE / "spillway"), "run", "--broker", broker, "--no-progress", str(job)],
                     self.work / "coordinator.log", env=env)
        m = measure(coord, wprocs, self.args.timeout)
        if m.exit_codes[0] != 0:
            raise RuntimeError(f"spillway run --broker exited with {m.exit_codes[0]}: {coord.tail(3)}")
        ok, size, check = verify("parquet", [], self.args.docs,
                                 [*s3_args, "--s3-prefix", prefix], env=env)
        # on SeaweedFS, deleting the bucket also frees its volumes
        self.s3_bucket("DELETE", bucket)
        return m, ok, size, check

    def s3_bucket(self, method: str, bucket: str) -> None:
        """Creates (PUT, idempotent) or deletes a bucket with curl's SigV4 signing."""
        key, secret = self.s3["SPILLWAY_S3_ACCESS_KEY"], self.s3["SPILLWAY_S3_SECRET_KEY"]
        p = subprocess.run(["curl", "-sS", "-o", "/dev/null", "-w", "%{http_code}", "-X", method,
                            f"{self.s3['SPILLWAY_S3_ENDPOINT']}/{bucket}", "--aws-sigv4", "aws:amz:us-east-1:s3",
                            "--user", f"{key}:{secret}"], capture_output=True, text=True)
        code = p.stdout.strip()
        if method == "PUT" and code not in ("200", "409"):
            raise RuntimeError(f"creating bucket {bucket} at {self.s3['SPILLWAY_S3_ENDPOINT']} answered "
                               f"HTTP {code or '(none)'}: {p.stderr.strip()[:200]}")

    def peer(self, name: str, cmd: list[str], fmt: str, outputs: list[Path]) -> tuple[Measured, bool, int | None, str]:
        for o in outputs:
            o.unlink(missing_ok=True)
        p = Proc(cmd, self.work / f"{name}.log")
        m = measure(p, [], self.args.timeout)
        if m.exit_codes[0] != 0:
            raise RuntimeError(f"{name} exited with {m.exit_codes[0]}: {p.tail(3)}")
        ok, size, check = True, 0, ""
        for o, f in zip(outputs, fmt.split("+")):
            ok1, size1, check1 = verify(f, [str(o)], self.args.docs)
            ok, size, check = ok and ok1, (size or 0) + (size1 or 0), "; ".join(x for x in (check, check1) if x)
            o.unlink(missing_ok=True)
        return m, ok, size, check

    def run_all(self, url: str) -> None:
        only = set(self.args.only.split(",")) if self.args.only else None

        def want(key: str) -> bool:
            return only is None or key in only

        configs = [(1, "ndjson", "zstd"), (1, "parquet", "zstd"),
                   (4, "ndjson", "zstd"), (4, "ndjson", "none"), (4, "parquet", "zstd")]
        for workers, fmt, comp in configs:
            key = f"spillway-{fmt}-{workers}" + ("-plain" if comp == "none" else "")
            if want(key):
                label = ("NDJSON" if fmt == "ndjson" else "Parquet") + (" zstd" if comp == "zstd" else ", uncompressed")
                self.record(f"spillway run, {workers} worker{'s' if workers > 1 else ''}",
                            f"{label}, local dir",
                            lambda w=workers, f=fmt, c=comp: self.spillway_local(url, w, f, c))
        if want("spillway-distributed"):
            self.record("spillway distributed, 4 worker processes", "Parquet zstd, S3 (SeaweedFS)",
                        lambda: self.spillway_distributed(url, 4))
        peers = ROOT / "bench" / "peers"
        if want("elasticdump"):
            out = self.work / "elasticdump.ndjson"
            self.record("elasticdump", "NDJSON",
                        lambda: self.peer("elasticdump", ["bash", str(peers / "elasticdump.sh"), url, "logs-*", str(out)],
                                          "ndjson", [out]))
        if want("scan"):
            out = self.work / "scan.ndjson"
            self.record("opensearch-py helpers.scan", "NDJSON",
                        lambda: self.peer("scan", [str(VENV_PY), str(peers / "scan_ndjson.py"), url, "logs-*", str(out)],
                                          "ndjson", [out]))
        if want("threaded"):
            prefix = self.work / "threaded"
            outs = [Path(f"{prefix}.csv"), Path(f"{prefix}.parquet")]
            self.record("Python, 8 threads over PIT slices, pandas", "CSV + Parquet",
                        lambda: self.peer("threaded", [str(VENV_PY), str(peers / "threaded_pit.py"), url, "logs-*",
                                                       str(prefix), "--threads", "8"], "csv+parquet", outs))


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = ""
    try:
        kb = int(re.search(r"MemTotal:\s+(\d+)", Path("/proc/meminfo").read_text()).group(1))
        mem = f", {kb / 1024 / 1024:.0f} GiB RAM"
    except (OSError, AttributeError):
        pass
    return f"{os.cpu_count()} cores ({cpu}){mem}, Linux {os.uname().release}"


def versions() -> str:
    parts = []
    rev = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], capture_output=True, text=True)
    parts.append(f"spillway {rev.stdout.strip() or 'unknown'}")
    pkg = ROOT / ".work/node/node_modules/elasticdump/package.json"
    if pkg.exists():
        parts.append(f"elasticdump {json.loads(pkg.read_text()).get('version')}")
    node = shutil.which("node")
    if node:
        parts.append("node " + subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip())
    code = ("from importlib import metadata as m; import platform;"
            "print('; '.join([f'Python {platform.python_version()}'] + [f'{n} {m.version(n)}' for n in"
            " ('opensearch-py','pandas','pyarrow')]))")
    py = subprocess.run([str(VENV_PY), "-c", code], capture_output=True, text=True)
    if py.returncode == 0:
        parts.append(py.stdout.strip())
    return "; ".join(parts)


def table(rows: list[Row]) -> str:
    out = ["| tool | output | wall s | docs/s | client CPU s per 1M docs | peak RSS MiB | output MiB | every document once |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | --- |"]
    for r in rows:
        if r.m is None:
            out.append(f"| {r.tool} | {r.output} | — | — | — | — | — | failed: {r.check} |")
            continue
        rss = f"{r.m.peak_rss_kib / 1024:.0f}"
        if r.m.rss_sum_kib != r.m.peak_rss_kib:
            rss += f" (all processes {r.m.rss_sum_kib / 1024:.0f})"
        size = f"{r.out_bytes / 2**20:.0f}" if r.out_bytes is not None else "—"
        ok = "yes" if r.complete else f"**no**: {r.check}"
        out.append(f"| {r.tool} | {r.output} | {r.m.wall:.1f} | {r.docs_per_s:,.0f} | {r.cpu_per_million:.2f} | "
                   f"{rss} | {size} | {ok} |")
    return "\n".join(out)


def ratios(rows: list[Row]) -> str:
    """CPU ratios of each peer to the leanest spillway configuration with the same shape."""
    ok = [r for r in rows if r.m is not None]
    spill = [r for r in ok if r.tool.startswith("spillway run")]
    peers = [r for r in ok if not r.tool.startswith("spillway")]
    if not spill or not peers:
        return ""
    lines = []
    for s in spill:
        cells = [f"{p.cpu_per_million / s.cpu_per_million:.1f}×" if s.cpu_per_million else "—" for p in peers]
        lines.append(f"| {s.tool}, {s.output} | " + " | ".join(cells) + " |")
    head = "| client CPU of … relative to | " + " | ".join(p.tool for p in peers) + " |"
    sep = "| --- | " + " | ".join("---:" for _ in peers) + " |"
    return "\n".join([head, sep, *lines])


def chart(rows: list[Row], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib import ticker

    ok = [r for r in rows if r.m is not None]
    if not ok:
        return
    labels = [f"{r.tool}\n{r.output}" for r in ok]
    colors = ["#1f77b4" if r.tool.startswith("spillway") else "#d62728" for r in ok]
    metrics = [
        ("documents per second (higher is better)", [r.docs_per_s for r in ok], False),
        ("client CPU seconds per 1M documents (lower is better, log scale)", [r.cpu_per_million for r in ok], True),
        ("peak RSS, MiB (lower is better, log scale)", [r.m.peak_rss_kib / 1024 for r in ok], True),
    ]
    fig, axes = plt.subplots(1, 3, figsize=(20, 0.55 * len(ok) + 2.2), sharey=True)
    for ax, (name, values, logscale) in zip(axes, metrics):
        y = list(range(len(ok)))
        ax.barh(y, values, color=colors)
        ax.set_title(name, fontsize=10)
        if logscale:
            ax.set_xscale("log")
            ax.xaxis.set_major_formatter(ticker.FuncFormatter(lambda v, _: f"{v:g}"))
            ax.xaxis.set_minor_formatter(ticker.NullFormatter())
        for yi, v in zip(y, values):
            ax.text(v, yi, f" {v:,.0f}" if v >= 100 else f" {v:.1f}", va="center", fontsize=8)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(list(range(len(ok))))
    axes[0].set_yticklabels(labels, fontsize=8)
    axes[0].invert_yaxis()
    fig.suptitle(title, fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--docs", type=int, default=1_000_000)
    ap.add_argument("--avg-message-bytes", type=int, default=600,
                    help="searchsim message size; 600 gives documents of about 1 KiB")
    ap.add_argument("--latency-ms", type=int, default=0, help="added to every search request")
    ap.add_argument("--shard-docs", type=int, default=50_000, help="spillway targetDocsPerShard")
    ap.add_argument("--only", default="", help="comma-separated subset: spillway-ndjson-1, spillway-parquet-1, "
                    "spillway-ndjson-4, spillway-ndjson-4-plain, spillway-parquet-4, spillway-distributed, "
                    "elasticdump, scan, threaded")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per tool")
    ap.add_argument("--real-url", default="", help="export from this real cluster instead of searchsim; "
                    "the data set is loaded into it first (its logs-* indices are replaced)")
    ap.add_argument("--server-label", default="", help="the real cluster's name in the tables, "
                    "e.g. 'a real OpenSearch 3.9.0 node (512 MiB heap)'")
    ap.add_argument("--markdown", type=Path, help="write the section here (default: print)")
    ap.add_argument("--png", type=Path, help="write the chart here")
    ap.add_argument("--json", type=Path, help="write the raw rows here")
    args = ap.parse_args()

    work = Path(tempfile.mkdtemp(prefix="spillway-bench-"))
    log(f"work directory {work}")
    sim = None
    try:
        t0 = time.monotonic()
        if args.real_url:
            log(f"loading {args.docs:,} documents into {args.real_url}")
            sim = RealNode(args.real_url, args.docs, args.avg_message_bytes)
        else:
            log(f"starting searchsim with {args.docs:,} documents")
            sim = SearchSim(work, args.docs, args.avg_message_bytes, args.latency_ms)
        log(f"{sim.url} ready after {time.monotonic() - t0:.0f} s "
            f"({sim.source_bytes / max(args.docs, 1):.0f} bytes of _source per document)")
        bench = Bench(args, work)
        bench.run_all(sim.url)
    finally:
        if sim:
            sim.close()
    rows = bench.rows
    mean = sim.source_bytes / max(args.docs, 1)
    served = (args.server_label or f"the real cluster at {args.real_url}") if args.real_url else "searchsim"
    dataset = (f"{args.docs:,} generated log documents (mean `_source` {mean:.0f} bytes, "
               f"{sim.source_bytes / 2**30:.2f} GiB in all) in 30 daily indices of 3 shards, served by {served}"
               + (" (its CPU is not the client's: compare client CPU per 1M documents)" if args.real_url else "")
               + (f" with {args.latency_ms} ms added to every search request" if args.latency_ms else "")
               + f". spillway shards target {args.shard_docs:,} documents.")
    text = "\n".join([
        f"Machine: {machine()}.",
        "",
        f"Dataset: {dataset}",
        "",
        f"Versions: {versions()}.",
        "",
        table(rows),
        "",
        ratios(rows),
        "",
    ])
    if args.markdown:
        args.markdown.write_text(text)
        log(f"wrote {args.markdown}")
    else:
        print(text)
    if args.png:
        chart(rows, args.png, f"Exporting {args.docs:,} documents of ~{mean / 1024:.1f} KiB, {os.cpu_count()} cores")
        log(f"wrote {args.png}")
    if args.json:
        args.json.write_text(json.dumps([{
            "tool": r.tool, "output": r.output, "docs": r.docs, "complete": r.complete, "check": r.check,
            "wall_s": r.m.wall if r.m else None, "cpu_s": r.m.cpu if r.m else None,
            "peak_rss_kib": r.m.peak_rss_kib if r.m else None, "output_bytes": r.out_bytes,
        } for r in rows], indent=2))
    shutil.rmtree(work, ignore_errors=True)
    failed = [r for r in rows if not r.complete]
    for r in failed:
        log(f"INCOMPLETE: {r.tool} ({r.output}): {r.check}")
    return 1 if any(r.tool.startswith("spillway") for r in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
