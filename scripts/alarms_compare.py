#!/usr/bin/env python3
"""Alarm to inbox, fleetpulse and Prometheus Alertmanager side by side, in one run (issue 20); see
docs/PERFORMANCE.md. Called as `scripts/perf.sh alarms-compare`.

  * Alertmanager: the Debian package `prometheus-alertmanager` (installed with apt-get when
    missing), on free loopback ports with its own storage dir, clustering off, `group_wait: 0s`
    and one alert per group (`group_by: ['...']`), no resolved emails. `fleetpulse-amload` posts
    the alerts to its v2 API on an open-model schedule and measures from each alert's intended
    post time to the acceptance of the first email carrying its token.
  * fleetpulse: `scripts/perf.sh alarms` (embedded store, fsync on, grouping off, limits out of
    the way): `fleetpulse-loadtest` injects device alarms over QUIC and measures from each raise's
    intended send time to the acceptance of the first email carrying its token. Every raise and
    every clear is an email there, so fleetpulse sends twice the emails Alertmanager sends.
  * Both measure with the load tester's own SMTP sink (`loadtest/src/smtp_sink.rs`) and tracker.
  * Then Alertmanager's restart (RESTART_ALERTS alerts emailed, kill -9, restart on the same
    storage dir, the same alerts posted again: how many are emailed again) and storm (STORM_ALERTS
    alerts in one group, `group_by: [alertname]`: the largest digest). fleetpulse's counterparts
    are the crash and storm tests of `tests/alarms.rs`.

Environment: RATES (20,100,1000), SECS (30), RUNS (1), FP_DEVICES (max(200, rate)),
RESTART_ALERTS (50), STORM_ALERTS (10000), OUT (/tmp/fleetpulse-alarms-compare-<time>.json),
SKIP (comma list of am, fleetpulse, restart, storm), VARIANTS (comma list of fleetpulse
variants, each `default` or tokens joined by `+`: `passes` or `recorder` for that
FLEETPULSE_OUTBOX_MODE, `mark-inline` for FLEETPULSE_MARK_SYNC=inline, `audit-apart` for
FLEETPULSE_PLANNED_AUDIT=apart (planned audit entries in a commit of their own), `sent-apart` for
FLEETPULSE_SENT_AUDIT=apart (the sends' audit entries in a commit of their own after their outcomes'),
`queue-N` for FLEETPULSE_OUTCOME_QUEUE=N (finished sends that may wait for the recorder), `conn-N` for
SMTP_CONNECTIONS=N (`[smtp] connections`: connections to the relay, emails in flight), `no-pipelining` for
FLEETPULSE_SMTP_PIPELINING=off (one SMTP command per round trip); fleetpulse runs once per
variant, right after Alertmanager at the same rate, so that the variants are measured under the
same machine load; default: `default`, or the FLEETPULSE_OUTBOX_MODE of the environment).

While the runs go on, a 4 KiB write + fdatasync is timed FSYNC_HZ (10) times a second in the
temporary directory (the disk the embedded store writes to), so that fleetpulse's latency is
read against the disk's own floor at the same time; FSYNC_HZ=0 turns it off.
"""

import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TARGET = os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(ROOT, "target")), "release")
RATES = [float(r) for r in os.environ.get("RATES", "20,100,1000").split(",")]
SECS = int(os.environ.get("SECS", "30"))
RUNS = int(os.environ.get("RUNS", "1"))
RESTART_ALERTS = int(os.environ.get("RESTART_ALERTS", "50"))
STORM_ALERTS = int(os.environ.get("STORM_ALERTS", "10000"))
SKIP = set(filter(None, os.environ.get("SKIP", "").split(",")))
OUT = os.environ.get("OUT", f"/tmp/fleetpulse-alarms-compare-{int(time.time())}.json")
MODES = [m.strip() for m in os.environ.get("VARIANTS", os.environ.get("FLEETPULSE_OUTBOX_MODE", "") or "default").split(",")]
FSYNC_HZ = float(os.environ.get("FSYNC_HZ", "10"))


class FsyncProbe:
    """Times a 4 KiB write + fdatasync FSYNC_HZ times a second in a thread of its own."""

    def __init__(self):
        self.samples = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self):
        fd, path = tempfile.mkstemp(prefix="fsync-probe-")
        block = os.urandom(4096)
        try:
            while not self.stop.wait(1 / FSYNC_HZ):
                os.lseek(fd, 0, os.SEEK_SET)
                t = time.perf_counter()
                os.write(fd, block)
                os.fdatasync(fd)
                self.samples.append(time.perf_counter() - t)
        finally:
            os.close(fd)
            os.unlink(path)

    def summary(self):
        xs = sorted(self.samples)
        if not xs:
            return None
        q = lambda p: xs[min(len(xs) - 1, int(p * len(xs)))] * 1000
        return {"samples": len(xs), "p50_ms": round(q(0.5), 2), "p90_ms": round(q(0.9), 2),
                "p99_ms": round(q(0.99), 2), "max_ms": round(xs[-1] * 1000, 2)}


def log(*args):
    print(*args, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def alertmanager_binary():
    for name in ("prometheus-alertmanager", "alertmanager"):
        path = shutil.which(name)
        if path:
            return path
    log("installing prometheus-alertmanager (apt-get)")
    env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
    subprocess.run(["apt-get", "install", "-y", "--no-install-recommends", "prometheus-alertmanager"],
                   check=True, env=env, stdout=subprocess.DEVNULL)
    path = shutil.which("prometheus-alertmanager")
    if not path:
        sys.exit("prometheus-alertmanager is not on PATH after installing it")
    # The package may have started its own service; ours runs on other ports and dirs either way.
    return path


def build():
    bins = ["fleetpulse", "fleetpulse-loadtest", "fleetpulse-amload"]
    if all(os.access(os.path.join(TARGET, b), os.X_OK) for b in bins):
        return
    subprocess.run(["cargo", "build", "--release", "-p", "fleetpulse", "-p", "fleetpulse-loadtest"], cwd=ROOT, check=True)


AM_CONFIG = """global:
  smtp_smarthost: '127.0.0.1:{smtp}'
  smtp_from: 'alertmanager@compare.test'
  smtp_require_tls: false
route:
  receiver: mail
  group_by: {group_by}
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 24h
receivers:
  - name: mail
    email_configs:
      - to: 'ops@compare.test'
        send_resolved: false
"""


class Alertmanager:
    """One Alertmanager on free loopback ports with its own config and storage dir."""

    def __init__(self, binary, work, smtp, group_by):
        self.binary, self.work, self.smtp = binary, work, smtp
        self.port = free_port()
        self.storage = os.path.join(work, "am-data")
        os.makedirs(self.storage, exist_ok=True)
        self.config = os.path.join(work, "alertmanager.yml")
        with open(self.config, "w") as f:
            f.write(AM_CONFIG.format(smtp=smtp, group_by=group_by))
        self.proc = None

    def start(self):
        self.proc = subprocess.Popen(
            [self.binary, f"--config.file={self.config}", f"--storage.path={self.storage}",
             f"--web.listen-address=127.0.0.1:{self.port}", "--cluster.listen-address=", "--log.level=warn"],
            stdout=subprocess.DEVNULL, stderr=open(os.path.join(self.work, "am.log"), "a"))
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            if self.proc.poll() is not None:
                sys.exit(f"alertmanager exited; see {self.work}/am.log")
            time.sleep(0.1)
        sys.exit("alertmanager did not become ready")

    def kill9(self):
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self):
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill9()


def amload(am, *args):
    cmd = [os.path.join(TARGET, "fleetpulse-amload"), "--alertmanager", f"http://127.0.0.1:{am.port}",
           "--smtp-sink", f"127.0.0.1:{am.smtp}", *map(str, args)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode not in (0, 3):
        sys.exit(f"fleetpulse-amload failed ({r.returncode}): {r.stderr}")
    return json.loads(r.stdout)


def run_alertmanager(binary, rate):
    work = tempfile.mkdtemp(prefix="am-compare-")
    try:
        am = Alertmanager(binary, work, free_port(), "['...']")
        am.start()
        report = amload(am, "--rate", rate, "--count", int(rate * SECS), "--drain-timeout", "30s")
        am.stop()
        return report
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run_fleetpulse(rate, mode):
    devices = int(os.environ.get("FP_DEVICES", max(200, int(rate))))
    env = dict(os.environ)
    env.pop("FLEETPULSE_OUTBOX_MODE", None)
    env.pop("FLEETPULSE_MARK_SYNC", None)
    env.pop("FLEETPULSE_PLANNED_AUDIT", None)
    env.pop("FLEETPULSE_SENT_AUDIT", None)
    env.pop("FLEETPULSE_OUTCOME_QUEUE", None)
    env.pop("SMTP_CONNECTIONS", None)
    env.pop("FLEETPULSE_SMTP_PIPELINING", None)
    for token in mode.split("+"):
        if token in ("passes", "recorder"):
            env["FLEETPULSE_OUTBOX_MODE"] = token
        elif token == "mark-inline":
            env["FLEETPULSE_MARK_SYNC"] = "inline"
        elif token == "audit-apart":
            env["FLEETPULSE_PLANNED_AUDIT"] = "apart"
        elif token == "sent-apart":
            env["FLEETPULSE_SENT_AUDIT"] = "apart"
        elif token.startswith("queue-") and token[len("queue-"):].isdigit():
            env["FLEETPULSE_OUTCOME_QUEUE"] = token[len("queue-"):]
        elif token == "no-pipelining":
            env["FLEETPULSE_SMTP_PIPELINING"] = "off"
        elif token.startswith("conn-") and token[len("conn-"):].isdigit():
            env["SMTP_CONNECTIONS"] = token[len("conn-"):]
        elif token != "default":
            sys.exit(f"unknown variant token {token!r} in VARIANTS")
    r = subprocess.run([os.path.join(ROOT, "scripts", "perf.sh"), "alarms", str(devices), str(rate), str(SECS)],
                       capture_output=True, text=True, cwd=ROOT, env=env)
    lines = [line for line in r.stdout.splitlines() if line.startswith("{")]
    if not lines:
        sys.exit(f"scripts/perf.sh alarms failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(lines[-1])


def restart_check(binary):
    """RESTART_ALERTS alerts emailed; kill -9; restart on the same storage; the same alerts again."""
    work = tempfile.mkdtemp(prefix="am-restart-")
    try:
        am = Alertmanager(binary, work, free_port(), "['...']")
        am.start()
        tag = "%08x" % int.from_bytes(os.urandom(4), "big")
        first = amload(am, "--rate", 50, "--count", RESTART_ALERTS, "--tag", tag, "--drain-timeout", "20s")
        am.kill9()
        am.start()
        again = amload(am, "--rate", 50, "--count", RESTART_ALERTS, "--tag", tag, "--drain-timeout", "10s")
        am.stop()
        return {"alerts": RESTART_ALERTS, "emailed_before_kill": first["alarm_email"]["emailed"],
                "emailed_again_after_restart": again["alarm_email"]["emailed"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def storm_check(binary):
    """STORM_ALERTS alerts in one group: how many emails, and the largest."""
    work = tempfile.mkdtemp(prefix="am-storm-")
    try:
        am = Alertmanager(binary, work, free_port(), "[alertname]")
        am.start()
        r = amload(am, "--rate", 2000, "--count", STORM_ALERTS, "--drain-timeout", "60s", "--linger", "5s")
        am.stop()
        return {"alerts": STORM_ALERTS, "emails": r["sink_messages"], "largest_email_bytes": r["largest_email_bytes"],
                "emailed": r["alarm_email"]["emailed"]}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fp_key(mode):
    """The result's key for fleetpulse's runs in outbox mode `mode`."""
    return "fleetpulse" if mode == "default" else f"fleetpulse_{mode.replace('+', '_')}"


def machine():
    load = open("/proc/loadavg").read().split()[:3]
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), "?")
    return {"cpus": os.cpu_count(), "cpu": cpu, "loadavg_at_start": load}


def main():
    build()
    binary = alertmanager_binary()
    version = subprocess.run([binary, "--version"], capture_output=True, text=True)
    result = {"machine": machine(), "alertmanager": (version.stdout or version.stderr).splitlines()[0],
              "secs": SECS, "variants": MODES, "rates": {}}
    probe = FsyncProbe()
    if FSYNC_HZ > 0:
        probe.thread.start()
    for rate in RATES:
        entry = {"alertmanager": [], **{fp_key(m): [] for m in MODES}, "loadavg": []}
        for run in range(RUNS):
            entry["loadavg"].append(open("/proc/loadavg").read().split()[:3])
            if "am" not in SKIP:
                log(f"alertmanager at {rate}/s, run {run + 1}")
                entry["alertmanager"].append(run_alertmanager(binary, rate))
            if "fleetpulse" not in SKIP:
                for mode in MODES:
                    log(f"fleetpulse ({mode}) at {rate}/s, run {run + 1}")
                    entry[fp_key(mode)].append(run_fleetpulse(rate, mode))
        result["rates"][str(rate)] = entry
    if "restart" not in SKIP:
        log("alertmanager restart check")
        result["alertmanager_restart"] = restart_check(binary)
    if "storm" not in SKIP:
        log("alertmanager storm check")
        result["alertmanager_storm"] = storm_check(binary)
    probe.stop.set()
    result["fsync_4k"] = probe.summary()
    result["loadavg_at_end"] = open("/proc/loadavg").read().split()[:3]
    with open(OUT, "w") as f:
        json.dump(result, f, indent=2)

    def med(runs, q):
        values = [r["alarm_email"]["latency_us"][q] / 1000 for r in runs if r.get("alarm_email")]
        return statistics.median(values) if values else float("nan")

    def emailed(runs):
        return " ".join(f'{r["alarm_email"]["emailed"]}/{r["alarm_email"]["injected"]}' for r in runs if r.get("alarm_email"))

    print(f"machine: {result['machine']}; {result['alertmanager']}; {SECS} s per rate; medians of {RUNS} run(s); "
          f"load average at the end {' '.join(result['loadavg_at_end'])}")
    if result["fsync_4k"]:
        print("4 KiB write + fdatasync during the runs:", json.dumps(result["fsync_4k"]))
    print("| alarms/s | fleetpulse variant | Alertmanager p50 / p99 (ms) | emailed | fleetpulse p50 / p99 (ms) | emailed | p50 ratio AM/fp | p99 ratio AM/fp |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for rate, entry in result["rates"].items():
        am = entry["alertmanager"]
        for mode in MODES:
            fp = entry[fp_key(mode)]
            a50, a99, f50, f99 = med(am, "p50"), med(am, "p99"), med(fp, "p50"), med(fp, "p99")
            r50 = a50 / f50 if f50 else float("nan")
            r99 = a99 / f99 if f99 else float("nan")
            print(f"| {float(rate):g} | {mode} | {a50:.1f} / {a99:.1f} | {emailed(am)} | {f50:.1f} / {f99:.1f} | {emailed(fp)} | {r50:.2f} | {r99:.2f} |")
    for rate, entry in result["rates"].items():
        for mode in MODES:
            for run in entry[fp_key(mode)]:
                stages = run.get("alarm_stages") or []
                e = run.get("alarm_email") or {}
                print(f"fleetpulse ({mode}) at {float(rate):g}/s: {e.get('emails')} emails, peak "
                      f"{e.get('emails_peak_per_s')} emails/s to the one sink; devices connected in "
                      f"{run.get('connected_in_s')} s; frames not sent {run.get('not_sent')}")
                if stages:
                    print(f"fleetpulse ({mode}) stages at {float(rate):g}/s: " + "; ".join(
                        f'{s["stage"]} p50 {s["p50_us"] / 1000:.2f} ms p99 {s["p99_us"] / 1000:.2f} ms' for s in stages))
    if "alertmanager_restart" in result:
        print("alertmanager restart:", json.dumps(result["alertmanager_restart"]))
    if "alertmanager_storm" in result:
        print("alertmanager storm:", json.dumps(result["alertmanager_storm"]))
    print(f"everything: {OUT}")


if __name__ == "__main__":
    main()
