#!/usr/bin/env python3
"""Benchmark: acme-bridge issuing certificates from a local Pebble (dns-01).

    python3 benches/issuance.py [--runs N] [--bin PATH] [--json] [--trace NAMES]

Starts one Pebble and one pebble-challtestsrv (mock DNS) on free loopback ports for the
whole benchmark, then times `acme-bridge issue` for 1, 10 and 100 names (a fresh config
directory, hence a fresh account, every run) and `acme-bridge --version`. The consumer is
examples/consumer.py's publish()/unpublish(), driven from threads here. Figures are
medians; each is printed beside its target with PASS/FAIL. Exit status 0 even when a
target is missed (it is a measurement); 1 when a run fails.

--trace NAMES runs one issuance for NAMES names with ACME_BRIDGE_LOG (default "debug")
and prints every stdout/stderr line with its arrival time, to see where the time goes.
Needs pebble + pebble-challtestsrv (Debian package "pebble") and openssl on PATH.
Python 3.11+ standard library only.
"""

import argparse
import concurrent.futures
import ctypes
import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.dont_write_bytecode = True  # leave no __pycache__ in examples/
_spec = importlib.util.spec_from_file_location("consumer", ROOT / "examples" / "consumer.py")
consumer = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(consumer)

# Peak RSS, measured right. On Linux a child's ru_maxrss is at least the RSS of the process
# that exec'd it (exec keeps the old address space's high-water mark), so a child spawned
# by this Python (14+ MiB) would report Python's size. Instead a tiny /bin/sh forks the
# measured process and exits at once; as a child subreaper (prctl) we inherit the orphan
# and os.wait4 it. It waits on a gate line on stdin until then, so the wall clock starts
# when the gate opens: it covers exec and the whole run, not the shell's start-up. dash
# points a background job's fd 0 at /dev/null, hence the copy on fd 3.
SPAWN = 'exec 3<&0; { read -r _ <&3; exec "$@" <&3 3<&-; } & echo "$!" >&2'
PR_SET_CHILD_SUBREAPER = 36
TRAFFIC = re.compile(r"ACME traffic\b.*?\brequests=(\d+)\b.*?\bconnections=(\d+)")
MIB = 1024  # ru_maxrss is in KiB on Linux


def log(msg):
    print(f"bench: {msg}", file=sys.stderr, flush=True)


# --- Binary -------------------------------------------------------------------------------

def build_binary():
    log("cargo build --release --locked")
    subprocess.run(["cargo", "build", "--release", "--locked", "--bin", "acme-bridge"],
                   cwd=ROOT, check=True)
    meta = subprocess.run(["cargo", "metadata", "--format-version", "1", "--no-deps"],
                          cwd=ROOT, check=True, capture_output=True, text=True).stdout
    return Path(json.loads(meta)["target_directory"]) / "release" / "acme-bridge"


# --- Pebble and pebble-challtestsrv (what tests/lib.sh does, in Python) -------------------

OPENSSL_CNF = """[req]
distinguished_name = dn
prompt = no
[dn]
CN = acme-bridge bench throwaway CA
[ca_ext]
basicConstraints = critical, CA:TRUE
keyUsage = critical, keyCertSign, cRLSign
[server_ext]
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
"""


def free_ports(n):
    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports


def wait_up(url, proc, ctx=None, seconds=30):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args[0]} exited ({proc.returncode}) before {url} answered")
        try:
            urllib.request.urlopen(url, context=ctx, timeout=2).close()
            return
        except urllib.error.HTTPError:
            return  # it answered (challtestsrv answers 404 on "/")
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {seconds}s")


def start_servers(work, procs):
    """Starts challtestsrv and Pebble (appending them to procs); returns the URLs."""
    for tool in ("pebble", "pebble-challtestsrv", "openssl"):
        if not shutil.which(tool):
            sys.exit(f"bench: {tool} not found (apt-get install pebble openssl)")
    (work / "openssl.cnf").write_text(OPENSSL_CNF)
    w = lambda name: str(work / name)  # noqa: E731
    for cmd in (
        ["req", "-x509", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", "2", "-config", w("openssl.cnf"), "-extensions", "ca_ext",
         "-keyout", w("ca.key"), "-out", w("ca.pem")],
        ["req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
         "-config", w("openssl.cnf"), "-subj", "/CN=localhost",
         "-keyout", w("pebble.key"), "-out", w("pebble.csr")],
        ["x509", "-req", "-days", "2", "-in", w("pebble.csr"), "-CA", w("ca.pem"),
         "-CAkey", w("ca.key"), "-set_serial", str(int.from_bytes(os.urandom(8), "big")),
         "-extfile", w("openssl.cnf"), "-extensions", "server_ext", "-out", w("pebble.pem")],
    ):
        subprocess.run(["openssl", *cmd], check=True, capture_output=True)
    mgmt, dns, acme, pebble_mgmt, http_port, tls_port = free_ports(6)
    procs.append(subprocess.Popen(
        ["pebble-challtestsrv", "-management", f"127.0.0.1:{mgmt}", "-dns01",
         f"127.0.0.1:{dns}", "-http01", "", "-https01", "", "-tlsalpn01", "",
         "-defaultIPv6", "", "-defaultIPv4", "127.0.0.1"],
        stdout=open(work / "challtestsrv.log", "wb"), stderr=subprocess.STDOUT))
    (work / "pebble.json").write_text(json.dumps({"pebble": {
        "listenAddress": f"127.0.0.1:{acme}",
        "managementListenAddress": f"127.0.0.1:{pebble_mgmt}",
        "certificate": w("pebble.pem"), "privateKey": w("pebble.key"),
        "httpPort": http_port, "tlsPort": tls_port, "ocspResponderURL": "",
        "externalAccountBindingRequired": False}}))
    # NOSLEEP: validate at once; NONCEREJECT=0: no deliberate badNonce; AUTHZREUSE=0: every
    # order gets fresh authorizations (fresh accounts anyway, but be explicit).
    env = dict(os.environ, PEBBLE_VA_NOSLEEP="1", PEBBLE_WFE_NONCEREJECT="0",
               PEBBLE_AUTHZREUSE="0")
    procs.append(subprocess.Popen(
        ["pebble", "-config", w("pebble.json"), "-dnsserver", f"127.0.0.1:{dns}"],
        env=env, stdout=open(work / "pebble.log", "wb"), stderr=subprocess.STDOUT))
    challtestsrv = f"http://127.0.0.1:{mgmt}"
    directory = f"https://127.0.0.1:{acme}/dir"
    wait_up(challtestsrv + "/", procs[0])
    wait_up(directory, procs[1], ssl.create_default_context(cafile=w("ca.pem")))
    return challtestsrv, directory, work / "ca.pem"


# --- One acme-bridge run with a consumer --------------------------------------------------

class Run:
    """One `acme-bridge issue`, its consumer, and what was observed."""

    def __init__(self, rc, wall, maxrss_kib, out, err):
        self.rc, self.wall, self.maxrss_kib = rc, wall, maxrss_kib
        self.out, self.err = out, err  # [(seconds since start, line)]
        m = next((TRAFFIC.search(line) for _, line in err if TRAFFIC.search(line)), None)
        self.requests, self.connections = (int(m[1]), int(m[2])) if m else (None, None)
        self.t_order = next((t for t, line in err if "order created" in line), None)
        self.t_awaiting = None
        self.error = None
        for t, line in out:
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            if msg.get("type") == "awaiting" and self.t_awaiting is None:
                self.t_awaiting = t
            elif msg.get("type") == "error" and msg.get("fatal"):
                self.error = msg


def issue(binary, names, ctx, log_filter="acme_bridge=debug"):
    """Runs one issuance for names (fresh config dir), consumer included."""
    config = Path(tempfile.mkdtemp(prefix="config.", dir=ctx["work"]))
    cmd = [str(binary), "issue", "--challenge", "dns-01", "--server", ctx["directory"],
           "--ca-bundle", str(ctx["ca"]), "--config-dir", str(config), "--agree-tos",
           "--email", "bench@bench.test", "--timeout", "120s"]
    for name in names:
        cmd += ["-d", name]
    env = dict(os.environ, ACME_BRIDGE_LOG=log_filter)
    out, err = [], []
    lock = threading.Lock()  # one writer at a time on acme-bridge's stdin
    # Publishing runs in a thread pool: a real DNS provider's API takes 100 ms..seconds
    # per call, and the protocol announces every challenge before awaiting any reply
    # ("all announced first"), so a consumer may deploy them all concurrently (or in one
    # batch) instead of paying one API round trip per challenge in series. "ready" is
    # still sent for each challenge only after challtestsrv has accepted its record.
    pool = concurrent.futures.ThreadPoolExecutor(max_workers=16)
    published = {}  # id -> unpublish key

    def reply(obj):
        with lock:
            try:
                child.stdin.write(json.dumps(obj) + "\n")
                child.stdin.flush()
            except (BrokenPipeError, ValueError):
                pass  # acme-bridge stopped reading; its exit status tells why

    def deploy(msg):
        try:
            key = consumer.publish(ctx["challtestsrv"], msg)
        except Exception as e:  # anything: never tell the CA to validate
            reply({"type": "failed", "id": msg["id"], "reason": f"publishing failed: {e}"})
            return
        with lock:
            published[msg["id"]] = key
        reply({"type": "ready", "id": msg["id"]})

    def cleanup(msg):
        with lock:
            key = published.pop(msg.get("id"), None)
            shared = key in published.values()
        if key is not None and not shared:
            try:
                consumer.unpublish(ctx["challtestsrv"], key)
            except Exception as e:
                log(f"cleanup of {msg.get('id')} failed: {e}")

    def read_stderr():
        for line in child.stderr:
            err.append((time.perf_counter() - t0, line.rstrip("\n")))

    child = subprocess.Popen(["/bin/sh", "-c", SPAWN, "sh", *cmd], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             encoding="utf-8", env=env)
    pid = int(child.stderr.readline())  # acme-bridge-to-be; ours once the shell is gone
    child.wait()
    reader = threading.Thread(target=read_stderr, daemon=True)
    reader.start()
    t0 = time.perf_counter()
    child.stdin.write("go\n")
    child.stdin.flush()

    jobs = []
    for line in child.stdout:
        out.append((time.perf_counter() - t0, line.rstrip("\n")))
        try:
            msg = json.loads(line)
            kind = msg["type"]
        except (ValueError, TypeError, KeyError):
            continue
        if kind == "challenge":
            jobs.append(pool.submit(deploy, msg))
        elif kind == "cleanup":
            jobs.append(pool.submit(cleanup, msg))
    _, status, usage = os.wait4(pid, 0)
    wall = time.perf_counter() - t0
    rc = os.waitstatus_to_exitcode(status)
    reader.join()
    concurrent.futures.wait(jobs)
    pool.shutdown()
    with lock:
        try:
            child.stdin.close()
        except BrokenPipeError:
            pass
    shutil.rmtree(config, ignore_errors=True)
    return Run(rc, wall, usage.ru_maxrss, out, err)


def version_time(binary):
    t0 = time.perf_counter()
    child = subprocess.Popen([str(binary), "--version"], stdout=subprocess.DEVNULL)
    _, status, _ = os.wait4(child.pid, 0)
    wall = time.perf_counter() - t0
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise RuntimeError(f"acme-bridge --version exited {child.returncode}")
    return wall


def names_for(prefix, n):
    return [f"{prefix}{i}.bench.test" for i in range(n)] if n > 1 else ["one.bench.test"]


def explain(run):
    text = f"exit {run.rc}"
    if run.error:
        text += ": " + consumer.describe_error(run.error)
    tail = "\n".join(line for _, line in run.err[-8:])
    return text + (f"\n  stderr (last lines):\n{tail}" if tail else "")


def series(binary, names, ctx, runs):
    done = []
    for i in range(runs):
        run = issue(binary, names, ctx)
        if run.rc != 0:
            raise RuntimeError(f"{len(names)} names, run {i + 1}: {explain(run)}")
        done.append(run)
    return done


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


# --- Main ---------------------------------------------------------------------------------

def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs per figure (default 5)")
    ap.add_argument("--bin", type=Path, help="acme-bridge binary (default: cargo build)")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--trace", type=int, metavar="NAMES",
                    help="one issuance with NAMES names; print its timestamped log")
    args = ap.parse_args()
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
        sys.exit(f"bench: prctl(PR_SET_CHILD_SUBREAPER): {os.strerror(ctypes.get_errno())}"
                 " (Linux only)")
    binary = args.bin or build_binary()
    if not os.access(binary, os.X_OK):
        sys.exit(f"bench: no executable at {binary}")

    work = Path(tempfile.mkdtemp(prefix="acme-bridge-bench."))
    procs = []
    try:
        challtestsrv, directory, ca = start_servers(work, procs)
        ctx = {"work": work, "challtestsrv": challtestsrv, "directory": directory, "ca": ca}
        if args.trace:
            run = issue(binary, names_for("t", args.trace), ctx,
                        os.environ.get("ACME_BRIDGE_LOG", "debug"))
            merged = sorted([(t, "err", l) for t, l in run.err] + [(t, "out", l) for t, l in run.out])
            for t, stream, line in merged:
                print(f"{t * 1000:8.1f} ms {stream} {line[:300]}")
            print(f"exit {run.rc}, wall {run.wall:.3f} s, maxrss {run.maxrss_kib} KiB")
            return 0 if run.rc == 0 else 1
        return bench(binary, ctx, args)
    except (RuntimeError, subprocess.CalledProcessError) as e:
        log(f"FAILED: {e}")
        for name in ("pebble.log", "challtestsrv.log"):
            p = work / name
            if p.exists():
                print(f"----- {name} (last 20 lines)", file=sys.stderr)
                print("\n".join(p.read_text(errors="replace").splitlines()[-20:]), file=sys.stderr)
        return 1
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(5)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
        shutil.rmtree(work, ignore_errors=True)


def bench(binary, ctx, args):
    runs = args.runs
    log(f"{binary}; {runs} runs per figure; Pebble {ctx['directory']}")
    log("1 name")
    one = series(binary, names_for("", 1), ctx, runs)
    log("10 names")
    ten = series(binary, names_for("n", 10), ctx, runs)

    # 100 names; if Pebble refuses that many identifiers in one order, report its problem
    # and measure the largest count it accepts (binary search, one try per count).
    want, refused = 100, None
    probe = issue(binary, names_for("h", want), ctx)
    if probe.rc != 0:
        refused = explain(probe)
        log(f"100 names refused: {refused}")
        lo, hi = 10, want - 1  # ten names worked above
        while lo < hi:
            mid = (lo + hi + 1) // 2
            if issue(binary, names_for("h", mid), ctx).rc == 0:
                lo = mid
            else:
                hi = mid - 1
        want = lo
        log(f"largest accepted: {want} names")
    log(f"{want} names")
    hundred = series(binary, names_for("h", want), ctx, runs)

    log("--version x50")
    version = [version_time(binary) for _ in range(50)]

    fig = {
        "runs": runs,
        "binary": str(binary),
        "one_name": {
            "wall_s": median(r.wall for r in one),
            "requests": median(r.requests for r in one),
            "connections": median(r.connections for r in one),
            "peak_rss_mib": median(r.maxrss_kib / MIB for r in one),
            "samples_wall_s": [r.wall for r in one],
        },
        "ten_names": {
            "wall_s": median(r.wall for r in ten),
            "requests": median(r.requests for r in ten),
            "connections": median(r.connections for r in ten),
            "peak_rss_mib": median(r.maxrss_kib / MIB for r in ten),
            "samples_wall_s": [r.wall for r in ten],
        },
        "many_names": {
            "names": want,
            "refused_100": refused,
            "wall_s": median(r.wall for r in hundred),
            "order_to_awaiting_s": median(
                r.t_awaiting - r.t_order if r.t_awaiting and r.t_order else None
                for r in hundred),
            "start_to_awaiting_s": median(r.t_awaiting for r in hundred),
            "requests": median(r.requests for r in hundred),
            "connections": median(r.connections for r in hundred),
            "peak_rss_mib": median(r.maxrss_kib / MIB for r in hundred),
            "samples_wall_s": [r.wall for r in hundred],
        },
        "version": {"wall_s": median(version), "runs": len(version)},
    }
    if args.json:
        print(json.dumps(fig, indent=2))
        return 0

    def row(label, value, fmt, target=None, ok=None):
        shown = "n/a" if value is None else fmt.format(value)
        verdict = "" if ok is None else ("PASS" if value is not None and ok(value) else "FAIL")
        print(f"{label:<34} {shown:>10}  {target or '':<12} {verdict}")

    o, t, m, v = fig["one_name"], fig["ten_names"], fig["many_names"], fig["version"]
    print(f"acme-bridge vs local Pebble, dns-01 via challtestsrv; medians of {runs} runs")
    print(f"{'figure':<34} {'value':>10}  {'target':<12} verdict")
    row("1 name: wall time", o["wall_s"], "{:.3f} s", "< 0.5 s", lambda x: x < 0.5)
    row("1 name: ACME requests", o["requests"], "{:g}", "<= 10", lambda x: x <= 10)
    row("1 name: TLS connections", o["connections"], "{:g}", "1", lambda x: x == 1)
    row("1 name: peak RSS", o["peak_rss_mib"], "{:.1f} MiB", "< 15 MiB", lambda x: x < 15)
    row("10 names: wall time", t["wall_s"], "{:.3f} s", "< 1 s", lambda x: x < 1)
    row("10 names: ACME requests", t["requests"], "{:g}")
    row("10 names: peak RSS", t["peak_rss_mib"], "{:.1f} MiB", "< 15 MiB", lambda x: x < 15)
    n = m["names"]
    row(f"{n} names: order created->awaiting", m["order_to_awaiting_s"], "{:.3f} s",
        "< 1 s", lambda x: x < 1)
    row(f"{n} names: start->awaiting", m["start_to_awaiting_s"], "{:.3f} s")
    row(f"{n} names: wall time (issued)", m["wall_s"], "{:.3f} s", "< 5 s", lambda x: x < 5)
    row(f"{n} names: ACME requests", m["requests"], "{:g}")
    row(f"{n} names: peak RSS", m["peak_rss_mib"], "{:.1f} MiB", "< 15 MiB",
        lambda x: x < 15)
    row("--version: wall time (50 runs)", v["wall_s"] * 1000, "{:.2f} ms", "< 5 ms",
        lambda x: x < 5)
    if m["refused_100"]:
        print(f"note: Pebble refused 100 names: {m['refused_100']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
