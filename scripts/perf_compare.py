#!/usr/bin/env python3
"""fleetpulse, the QUIC floor and Mosquitto side by side, in one run (issue 14); see
docs/PERFORMANCE.md. Called as `scripts/perf.sh compare [DEVICES] [BURST]`.

For each target (fleetpulse serve, quic_floor, mosquitto), in turn and with a fresh server per
target and run:
  * the server runs pinned to SERVER_CORE, the load tester to LOAD_CORE (taskset);
  * the maximum sustainable rate is searched: doubling from START_RATE, then bisecting, at most
    MAX_STEPS steps of STEP_SECS; a rate is sustainable when the run passes (fleetpulse: missing 0
    and duplicated 0 in the end-to-end verification; the others: every frame acknowledged), the ack
    p99 is under P99_LIMIT_MS, and nothing stayed owed (no device's window of unacknowledged frames
    filled up);
  * at 80 % of that rate a MEASURE_SECS run measures the server's CPU per message from
    /proc/<pid>/stat over a window that leaves out start-up and connection set-up (the load
    testers' --warmup), ack latency, the load tester's own CPU, and the rest of the machine's load
    (other processes' share of both cores over the same window, from /proc/stat);
  * every target is also measured at COMMON_RATE, sustainable or not;
  * RSS per connection is taken on the first step, while the server is fresh.
RUNS runs; medians of every figure and the fleetpulse / floor ratios are printed as a Markdown
table, and everything as JSON to OUT.

Environment: RUNS (3), TARGETS (fleetpulse,floor,mqtt), STEP_SECS (6), MEASURE_SECS (15),
START_RATE (4000), COMMON_RATE (2000), MAX_RATE (128000), MAX_STEPS (7), P99_LIMIT_MS (100),
SERVER_CORE (1), LOAD_CORE (0), NICE (-10), OUT (/tmp/fleetpulse-compare-<time>.json), FLEETPULSE_FSYNC (true),
FLEETPULSE_BIN (the server binary; default the release build), PREFILL_GIB (0; grow fleetpulse's
empty database to this many GiB with a table of zero blobs before measuring: below 1 GiB SQLite
scans its page cache at commits, see docs/PERFORMANCE.md), SERVER_PRELOAD (LD_PRELOAD for the
fleetpulse server only, e.g. an allocator to try without a rebuild), SEARCH (1; 0 = no maximum-rate search, only the COMMON_RATE measurement: for before/after comparisons
of one change, where the search's noise would swamp it).

The load tester's own CPU per simulated message and RSS per simulated device are reported beside
the server's (issue 14 item 5: the instrument must not be the bottleneck).
"""

import json
import os
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BIN = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
HZ = os.sysconf("SC_CLK_TCK")
ENV = os.environ


def env_int(name, default):
    return int(ENV.get(name, default))


RUNS = env_int("RUNS", 3)
TARGETS = ENV.get("TARGETS", "fleetpulse,floor,mqtt").split(",")
STEP_SECS = env_int("STEP_SECS", 6)
MEASURE_SECS = env_int("MEASURE_SECS", 15)
START_RATE = env_int("START_RATE", 4000)
MAX_RATE = env_int("MAX_RATE", 128000)
MAX_STEPS = env_int("MAX_STEPS", 7)
SEARCH = env_int("SEARCH", 1)
P99_LIMIT_US = env_int("P99_LIMIT_MS", 100) * 1000
SERVER_CORE = ENV.get("SERVER_CORE", "1")
# Both measured processes run at this nice value (the same for every target), so that other work
# on the machine (builds) takes the cores' spare time rather than theirs; "" = leave as is.
NICE = ENV.get("NICE", "-10")
LOAD_CORE = ENV.get("LOAD_CORE", "0")
# Every target is also measured at this one rate, sustainable or not, so that CPU per message is
# compared at the same offered load even where a target sustains little (fsync stalls).
COMMON_RATE = env_int("COMMON_RATE", 2000)
PREFILL_GIB = float(ENV.get("PREFILL_GIB", "0"))
CONNECT_RATE = 2000
ADMIN = ("perf@localhost", "perf-password")


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def measured(cmd, **kwargs):
    """Starts a measured process in a session of its own and gives its autogroup the NICE value:
    with the kernel's autogroup scheduling (sched_autogroup_enabled), nice orders only the processes
    of one session, so a nice value alone does not take CPU time from other sessions' builds."""
    proc = subprocess.Popen(cmd, start_new_session=True, **kwargs)
    if NICE:
        try:
            with open(f"/proc/{proc.pid}/autogroup", "w") as f:
                f.write(NICE)
        except OSError:
            pass
    return proc


def prefill(db, gib):
    """Grows an embedded-store database to `gib` GiB with a table that nothing reads; called while
    fleetpulse is stopped. A fleet's database soon passes 1 GiB, and a smaller one costs SQLite
    more per commit."""
    c = sqlite3.connect(db)
    c.execute("CREATE TABLE IF NOT EXISTS perf_filler (b BLOB)")
    page_size = c.execute("PRAGMA page_size").fetchone()[0]
    while c.execute("PRAGMA page_count").fetchone()[0] * page_size < gib * (1 << 30):
        c.executemany("INSERT INTO perf_filler VALUES (zeroblob(1048576))", [()] * 64)
        c.commit()
    c.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    c.close()


def free_port(kind=socket.SOCK_STREAM):
    s = socket.socket(socket.AF_INET, kind)
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def proc_ticks(pid):
    """User + system CPU ticks of a process (threads included)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def proc_rss_kib(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def machine_ticks():
    """(busy, total) ticks over all cores from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]
    total = sum(v[:8])
    return total - idle, total


class Sampler(threading.Thread):
    """Samples the CPU ticks of the server, the load tester and the machine every 0.2 s."""

    def __init__(self, server_pid, load_pid):
        super().__init__(daemon=True)
        self.server_pid, self.load_pid = server_pid, load_pid
        self.samples = []
        self.stop = threading.Event()

    def run(self):
        while not self.stop.is_set():
            try:
                self.samples.append((time.monotonic(), proc_ticks(self.server_pid), proc_ticks(self.load_pid),
                                     *machine_ticks(), proc_rss_kib(self.server_pid), proc_rss_kib(self.load_pid)))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                pass
            time.sleep(0.2)

    def at(self, t):
        """The sample nearest to monotonic time t."""
        return min(self.samples, key=lambda s: abs(s[0] - t))


class Server:
    """A target server pinned to SERVER_CORE."""

    def __init__(self, target, work):
        self.target, self.work = target, work
        self.proc = None
        self.addr = self.api = self.ca = None

    def start(self):
        d = os.path.join(self.work, self.target)
        os.makedirs(d, exist_ok=True)
        pin = (["nice", "-n", NICE] if NICE else []) + ["taskset", "-c", SERVER_CORE]
        out = open(os.path.join(d, "out"), "w")
        if self.target == "fleetpulse":
            env = dict(ENV, FLEETPULSE_ADMIN_EMAIL=ADMIN[0], FLEETPULSE_ADMIN_PASSWORD=ADMIN[1], FLEETPULSE_LOG="warn")
            if ENV.get("SERVER_PRELOAD"):
                env["LD_PRELOAD"] = ENV["SERVER_PRELOAD"]
            args = [ENV.get("FLEETPULSE_BIN", f"{BIN}/fleetpulse"), "serve", "--data-dir", f"{d}/data", "--quic-addr", "127.0.0.1:0",
                    "--http-addr", "127.0.0.1:0"]
            if ENV.get("FLEETPULSE_FSYNC", "true") == "false":
                with open(f"{d}/server.toml", "w") as f:
                    f.write("[store]\nfsync = false\n")
                args += ["--config", f"{d}/server.toml"]
            self.proc = measured(pin + args, stdout=out, stderr=subprocess.STDOUT, env=env)
            line = self.wait_line(f"{d}/out", "fleetpulse listening")
            if PREFILL_GIB > 0 and not os.path.exists(f"{d}/prefilled"):
                self.stop()
                prefill(f"{d}/data/fleetpulse.db", PREFILL_GIB)
                open(f"{d}/prefilled", "w").close()
                return self.start()
            self.addr = line.split("quic=")[1].split()[0]
            self.api = "http://" + line.split("http=")[1].split()[0]
            self.ca = f"{d}/data/tls/ca.pem"
        elif self.target == "floor":
            args = [f"{BIN}/quic_floor", "--tls-dir", f"{d}/tls", "--addr", "127.0.0.1:0"]
            self.proc = measured(pin + args, stdout=out, stderr=subprocess.STDOUT)
            self.addr = self.wait_line(f"{d}/out", "quic_floor listening").split("quic=")[1].split()[0]
            self.ca = f"{d}/tls/ca.pem"
        elif self.target == "mqtt":
            self.ca = mosquitto_config(d)
            port = free_port()
            with open(f"{d}/mosquitto.conf", "a") as f:
                f.write(f"listener {port} 127.0.0.1\ncertfile {d}/server.pem\nkeyfile {d}/server.key\n")
            self.proc = measured(pin + [mosquitto_bin(), "-c", f"{d}/mosquitto.conf"], stdout=out,
                                         stderr=subprocess.STDOUT)
            self.addr = f"127.0.0.1:{port}"
            deadline = time.monotonic() + 10
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if time.monotonic() > deadline or self.proc.poll() is not None:
                        raise SystemExit(f"mosquitto did not start: {open(f'{d}/out').read()}")
                    time.sleep(0.1)
        return self

    def wait_line(self, path, needle):
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            with open(path) as f:
                for line in f:
                    if needle in line:
                        return line
            if self.proc.poll() is not None:
                raise SystemExit(f"{self.target} exited before listening: {open(path).read()}")
            time.sleep(0.1)
        raise SystemExit(f"{self.target} did not start listening")

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def wait_quiet(self, limit_s=20):
        """Waits until the server uses under 10 % of a core (a backlog of a failed step is done)."""
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            t0 = proc_ticks(self.proc.pid)
            time.sleep(0.5)
            if (proc_ticks(self.proc.pid) - t0) / HZ / 0.5 < 0.1:
                return

    def load_command(self, devices, rate, burst, secs, report):
        per_device = rate / devices
        common = ["--devices", str(devices), "--rate", f"{per_device:.6f}", "--burst", str(burst), "--duration",
                  f"{warmup_s(devices) + secs:.1f}s", "--warmup", f"{warmup_s(devices):.1f}s", "--heartbeat-interval", "30", "--connect-rate", str(CONNECT_RATE), "--drain-timeout",
                  "10s", "--report", report]
        if self.target == "fleetpulse":
            return [f"{BIN}/fleetpulse-loadtest", "--quic-addr", self.addr, "--api", self.api, "--ca-cert", self.ca,
                    "--admin-email", ADMIN[0], "--admin-password", ADMIN[1], "--no-progress"] + common
        mode = "floor" if self.target == "floor" else "mqtt"
        return [f"{BIN}/fleetpulse-peerload", "--mode", mode, "--addr", self.addr, "--ca-cert", self.ca] + common


def warmup_s(devices):
    """Connection set-up before the schedules start: API login and enterprise, the devices at
    CONNECT_RATE (handshake, Hello, registration), and a second to settle."""
    return 2.0 + devices / CONNECT_RATE + 1.0


def mosquitto_bin():
    return shutil.which("mosquitto") or "/usr/sbin/mosquitto"


def ensure_mosquitto():
    if shutil.which("mosquitto") or os.path.exists("/usr/sbin/mosquitto"):
        return
    log("installing mosquitto (Debian package)")
    subprocess.run(["apt-get", "install", "-y", "mosquitto"], check=True, stdout=subprocess.DEVNULL,
                   env=dict(ENV, DEBIAN_FRONTEND="noninteractive"))


def mosquitto_config(d):
    """A CA and a server certificate (ECDSA P-256, like fleetpulse's development certificate),
    and a configuration with persistence on in its own data directory; returns the CA path."""
    def ssl(*args):
        subprocess.run(["openssl", *args], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2",
        "-subj", "/CN=perf mosquitto CA", "-keyout", f"{d}/ca.key", "-out", f"{d}/ca.pem")
    ssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-subj", "/CN=localhost",
        "-keyout", f"{d}/server.key", "-out", f"{d}/server.csr")
    with open(f"{d}/ext.cnf", "w") as f:
        f.write("subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ssl("x509", "-req", "-in", f"{d}/server.csr", "-CA", f"{d}/ca.pem", "-CAkey", f"{d}/ca.key", "-CAcreateserial",
        "-days", "2", "-extfile", f"{d}/ext.cnf", "-out", f"{d}/server.pem")
    os.makedirs(f"{d}/data", exist_ok=True)
    user = "root" if os.geteuid() == 0 else os.environ.get("USER", "nobody")
    with open(f"{d}/mosquitto.conf", "w") as f:
        f.write(f"""user {user}
persistence true
persistence_location {d}/data/
log_dest file {d}/mosquitto.log
log_type error
log_type warning
allow_anonymous true
max_queued_messages 100000
""")
    return f"{d}/ca.pem"


def load_step(server, devices, rate, burst, secs, measure=False):
    """One load-tester run at `rate` msg/s; returns the report and, if `measure`, the window figures."""
    report_path = os.path.join(server.work, f"report-{server.target}.json")
    if os.path.exists(report_path):
        os.remove(report_path)
    rss_before = proc_rss_kib(server.proc.pid)
    cmd = (["nice", "-n", NICE] if NICE else []) + ["taskset", "-c", LOAD_CORE] + server.load_command(devices, rate, burst, secs, report_path)
    started = time.monotonic()
    lt = measured(cmd, stdout=subprocess.DEVNULL, stderr=open(os.path.join(server.work, "lt.err"), "a"))
    sampler = Sampler(server.proc.pid, lt.pid)
    sampler.start()
    rc = lt.wait()
    sampler.stop.set()
    sampler.join()
    try:
        with open(report_path) as f:
            r = json.load(f)
    except (FileNotFoundError, json.JSONDecodeError):
        return {"ok": False, "rc": rc, "why": "no report"}
    if server.target == "fleetpulse":
        missing, duplicated = r["verified"]["missing"], r["verified"]["duplicated"]
    else:
        missing, duplicated = r["missing"], 0
    p99 = r["ack_latency_us"]["p99"]
    achieved = r["rate_msgs_per_s"]
    why = []
    if rc != 0:
        why.append(f"exit {rc}")
    if missing or duplicated:
        why.append(f"missing {missing} duplicated {duplicated}")
    if p99 >= P99_LIMIT_US:
        why.append(f"p99 {p99 / 1000:.0f} ms")
    if r.get("not_sent", 0):
        why.append(f"not_sent {r['not_sent']}")
    out = {"ok": not why, "why": ", ".join(why), "rate": rate, "achieved": round(achieved), "acked": r["acked"],
           "missing": missing, "duplicated": duplicated, "latency_us": r["ack_latency_us"]}
    if sampler.samples:
        # RSS in the middle of the schedules' part, over RSS before the load tester started.
        # Only meaningful on a fresh server: one that already served connections keeps memory.
        mid = sampler.at(started + warmup_s(devices) + secs / 2)
        out["rss_per_connection_kib"] = round((mid[5] - rss_before) / devices, 1)
        # The load tester's whole RSS over its devices (an upper bound of what one costs it).
        out["loadtester_rss_per_device_kib"] = round(mid[6] / devices, 1)
    if measure:
        # The window: from a second into the schedules (after the warm-up) to half a second
        # before the end of the sending phase.
        w0 = started + warmup_s(devices) + 1.0
        w1 = started + warmup_s(devices) + secs - 0.5
        a, b = sampler.at(w0), sampler.at(w1)
        span = b[0] - a[0]
        server_s = (b[1] - a[1]) / HZ
        load_s = (b[2] - a[2]) / HZ
        busy_s, total_s = (b[3] - a[3]) / HZ, (b[4] - a[4]) / HZ
        cores = os.cpu_count() or 2
        msgs = rate * span
        out.update({
            # A run whose server (or load tester) was starved by other processes falls far behind the
            # offered rate; its CPU per offered message means nothing and it is left out of medians.
            "valid": achieved >= 0.9 * rate,
            "window_s": round(span, 2),
            "server_cpu_us_per_msg": round(server_s * 1e6 / max(msgs, 1), 2),
            "server_core_use": round(server_s / span, 3),
            "loadtester_core_use": round(load_s / span, 3),
            "loadtester_cpu_us_per_msg": round(load_s * 1e6 / max(msgs, 1), 2),
            # Busy time of both cores not spent in the server or the load tester, in cores.
            "other_load_cores": round(max(busy_s - server_s - load_s, 0) / span, 3),
            "machine_cores": cores,
            "loadavg": open("/proc/loadavg").read().split()[:3],
        })
    return out


def search(server, devices, burst):
    """The highest sustainable rate (bounded doubling, then bisection), and the steps taken."""
    good, bad, rate, steps = None, None, START_RATE, []
    for _ in range(MAX_STEPS):
        rate = max(devices // 10, int(rate))
        step = load_step(server, devices, rate, burst, STEP_SECS)
        steps.append({k: step.get(k) for k in ("rate", "ok", "why", "achieved", "rss_per_connection_kib")} | {"p99_us": step.get("latency_us", {}).get("p99")})
        log(f"  {server.target}: {rate} msg/s -> {'ok' if step['ok'] else 'NOT sustainable: ' + step['why']}")
        server.wait_quiet()
        if step["ok"]:
            good = rate
            if bad is None:
                if rate >= MAX_RATE:
                    break
                rate = min(rate * 2, MAX_RATE)
                continue
        else:
            bad = rate
        if good is None:
            rate = bad / 2
            if rate < devices / 10:
                break
            continue
        if (bad - good) / good < 0.08:
            break
        rate = (good + bad) / 2
    return good, steps


def one_run(work, devices, burst):
    results = {}
    for target in TARGETS:
        d = os.path.join(work, target)
        os.makedirs(d, exist_ok=True)
        server = Server(target, d).start()
        try:
            best, steps = search(server, devices, burst) if SEARCH else (None, [])
            entry = {"max_rate": best, "steps": steps, "rss_fresh_kib": steps[0].get("rss_per_connection_kib") if steps else None}
            if best:
                at = int(best * 0.8)
                m = load_step(server, devices, at, burst, MEASURE_SECS, measure=True)
                entry["at_80"] = m
                log(f"  {target}: max {best} msg/s; at {at} msg/s: {m.get('server_cpu_us_per_msg')} µs/msg, "
                    f"p99 {m['latency_us']['p99'] / 1000 if 'latency_us' in m else '?'} ms, ok={m['ok']} {m['why']}")
            c = load_step(server, devices, COMMON_RATE, burst, MEASURE_SECS, measure=True)
            entry["at_common"] = c
            if not steps:
                entry["rss_fresh_kib"] = c.get("rss_per_connection_kib")
            log(f"  {target}: at {COMMON_RATE} msg/s: {c.get('server_cpu_us_per_msg')} µs/msg, ok={c['ok']} {c['why']}")
            results[target] = entry
        finally:
            server.stop()
    return results


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def summarize(runs):
    rows = {}
    for target in TARGETS:
        per = [r[target] for r in runs if target in r]
        at = [p.get("at_80") or {} for p in per]
        common = [c for c in (p.get("at_common") or {} for p in per) if c.get("valid", True)]
        rows[target] = {
            "max_rate": median([p["max_rate"] for p in per]),
            "cpu_us_per_msg": median([a.get("server_cpu_us_per_msg") for a in at]),
            "p50_ms": median([a["latency_us"]["p50"] / 1000 for a in at if "latency_us" in a]),
            "p99_ms": median([a["latency_us"]["p99"] / 1000 for a in at if "latency_us" in a]),
            "rss_per_conn_kib": median([p.get("rss_fresh_kib") for p in per]),
            "server_core_use": median([a.get("server_core_use") for a in at]),
            "loadtester_core_use": median([a.get("loadtester_core_use") for a in at]),
            "other_load_cores": median([a.get("other_load_cores") for a in at]),
            "all_ok": all(a.get("ok") for a in at) and bool(at),
            "common_cpu_us_per_msg": median([a.get("server_cpu_us_per_msg") for a in common]),
            "common_p50_ms": median([a["latency_us"]["p50"] / 1000 for a in common if "latency_us" in a]),
            "common_p99_ms": median([a["latency_us"]["p99"] / 1000 for a in common if "latency_us" in a]),
            "common_missing": max([a.get("missing", 0) or 0 for a in common], default=None),
            "common_other_load_cores": median([a.get("other_load_cores") for a in common]),
            "common_loadtester_cpu_us_per_msg": median([a.get("loadtester_cpu_us_per_msg") for a in common]),
            "common_loadtester_rss_per_device_kib": median([a.get("loadtester_rss_per_device_kib") for a in common]),
            "common_cpu_runs": [a.get("server_cpu_us_per_msg") for a in common],
        }
    ratios = []
    for r in runs:
        fp, fl = r.get("fleetpulse", {}), r.get("floor", {})
        a, b = (fp.get("at_80") or {}).get("server_cpu_us_per_msg"), (fl.get("at_80") or {}).get("server_cpu_us_per_msg")
        fpc, flc = fp.get("at_common") or {}, fl.get("at_common") or {}
        valid = fpc.get("valid", True) and flc.get("valid", True)
        ca = fpc.get("server_cpu_us_per_msg") if valid else None
        cb = flc.get("server_cpu_us_per_msg") if valid else None
        ratios.append({"cpu": a / b if a and b else None, "cpu_common": ca / cb if ca and cb else None,
                       "max_rate": fp.get("max_rate") / fl.get("max_rate") if fp.get("max_rate") and fl.get("max_rate") else None})
    summary = {"rows": rows, "fleetpulse_over_floor_cpu": median([x["cpu"] for x in ratios]),
               "fleetpulse_over_floor_cpu_common": median([x["cpu_common"] for x in ratios]),
               "fleetpulse_over_floor_max_rate": median([x["max_rate"] for x in ratios])}
    return summary


def table(summary, devices, burst):
    def f(v, fmt="{:.1f}"):
        return "–" if v is None else fmt.format(v)
    lines = [f"{devices} devices, burst {burst}, medians of {RUNS} run(s):", "",
             "| target | max sustainable msg/s | server CPU µs/msg at 80 % | ack p50 / p99 ms at 80 % | RSS KiB per connection (fresh server, first step) | server core | load-tester core | other load (cores) | all checks passed |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for t, r in summary["rows"].items():
        lines.append(f"| {t} | {f(r['max_rate'], '{:,.0f}')} | {f(r['cpu_us_per_msg'])} | {f(r['p50_ms'])} / {f(r['p99_ms'])} | "
                     f"{f(r['rss_per_conn_kib'])} | {f(r['server_core_use'], '{:.2f}')} | {f(r['loadtester_core_use'], '{:.2f}')} | "
                     f"{f(r['other_load_cores'], '{:.2f}')} | {r['all_ok']} |")
    lines += ["", f"All at {COMMON_RATE} msg/s:", "",
              "| target | server CPU µs/msg (runs) | ack p50 / p99 ms | missing | other load (cores) | load tester CPU µs/msg | load tester RSS KiB/device |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for t, r in summary["rows"].items():
        runs = ", ".join(f(v) for v in r["common_cpu_runs"])
        lines.append(f"| {t} | {f(r['common_cpu_us_per_msg'])} ({runs}) | {f(r['common_p50_ms'])} / {f(r['common_p99_ms'])} | "
                     f"{r['common_missing']} | {f(r['common_other_load_cores'], '{:.2f}')} | "
                     f"{f(r['common_loadtester_cpu_us_per_msg'])} | {f(r['common_loadtester_rss_per_device_kib'])} |")
    lines.append("")
    lines.append(f"fleetpulse / floor at {COMMON_RATE} msg/s: CPU per message "
                 f"{f(summary['fleetpulse_over_floor_cpu_common'], '{:.2f}')}×")
    lines.append(f"fleetpulse / floor: CPU per message {f(summary['fleetpulse_over_floor_cpu'], '{:.2f}')}×, "
                 f"max rate {f(summary['fleetpulse_over_floor_max_rate'], '{:.2f}')}× (medians of per-run ratios)")
    return "\n".join(lines)


def main():
    try:
        run_all()
    except KeyboardInterrupt:
        sys.exit(130)


def run_all():
    devices = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    burst = int(sys.argv[2]) if len(sys.argv) > 2 else 1
    needed = ["fleetpulse", "fleetpulse-loadtest", "fleetpulse-peerload", "quic_floor"]
    if not all(os.access(f"{BIN}/{b}", os.X_OK) for b in needed):
        subprocess.run(["cargo", "build", "--release", "-p", "fleetpulse", "-p", "fleetpulse-loadtest", "-p",
                        "fleetpulse-benches", "--bins"], check=True, cwd=ROOT)
    if "mqtt" in TARGETS:
        ensure_mosquitto()
    out_path = ENV.get("OUT", f"/tmp/fleetpulse-compare-{int(time.time())}.json")
    runs = []
    git = subprocess.run(["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    for i in range(RUNS):
        log(f"run {i + 1}/{RUNS} (loadavg {open('/proc/loadavg').read().split()[:3]})")
        work = tempfile.mkdtemp(prefix="fleetpulse-compare-")
        try:
            runs.append(one_run(work, devices, burst))
        finally:
            shutil.rmtree(work, ignore_errors=True)
        summary = summarize(runs)
        with open(out_path, "w") as f:
            json.dump({"commit": git, "devices": devices, "burst": burst, "runs": runs, "summary": summary,
                       "cpu": open("/proc/cpuinfo").read().split("model name")[1].split("\n")[0].strip(": ")}, f, indent=1)
    print(table(summarize(runs), devices, burst))
    log(f"details: {out_path}")


if __name__ == "__main__":
    main()
