#!/usr/bin/env python3
"""Inference under prompt-lab load (issue 23): runs `promptcam run` on a kept history (from
`promptcam bench --model CLIP --history N --keep-history DIR`) with a camera replaying the fixture
photos at 2 fps through the same CLIP model, then measures, for --seconds each:

  idle: the inference time per analysed frame (the daemon's own histogram on /metrics), the
        analysed frames per second, and the daemon's peak resident memory (VmRSS, RssAnon);
  load: the same while --clients clients send lab queries back to back, each a new prompt (its
        text tower run, every stored embedding scored), and what they got (200 / 503 busy).

Prints the figures and the load/idle ratios (issue 23's targets: inference within 1.3x, peak
RSS within 1.2x). Standard library only.

  scripts/lab-load.py --clip target/full-models/clip-vit-base-patch32 --history /tmp/h300k
"""
import argparse
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(port, path, timeout=150):
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()
    except OSError:
        return None, b""


def inference(port):
    """(sum of seconds, count) of the camera's inference histogram; frames analysed."""
    _, body = get(port, "/metrics", timeout=10)
    text = body.decode()
    s = re.search(r'promptcam_inference_duration_seconds_sum\{camera="bench"\} (\S+)', text)
    c = re.search(r'promptcam_inference_duration_seconds_count\{camera="bench"\} (\S+)', text)
    a = re.search(r'promptcam_frames_analysed_total\{camera="bench"\} (\S+)', text)
    if not (s and c and a):
        sys.exit(f"no inference figures for camera bench on /metrics:\n{text[:2000]}")
    return float(s.group(1)), float(c.group(1)), float(a.group(1))


def memory(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            k, _, v = line.partition(":")
            if k in ("VmRSS", "RssAnon"):
                out[k] = int(v.split()[0]) / 1024
    return out


def phase(port, pid, seconds, load=None):
    peak = {"VmRSS": 0.0, "RssAnon": 0.0}
    s0, c0, a0 = inference(port)
    t0 = time.time()
    stop = threading.Event()
    workers = [threading.Thread(target=load, args=(stop,)) for _ in range(load.clients)] if load else []
    for w in workers:
        w.start()
    while time.time() - t0 < seconds:
        for k, v in memory(pid).items():
            peak[k] = max(peak[k], v)
        time.sleep(0.5)
    s1, c1, a1 = inference(port)
    elapsed = time.time() - t0
    stop.set()
    for w in workers:
        w.join()
    frames = c1 - c0
    return {
        "ms_per_frame": 1000 * (s1 - s0) / max(frames, 1),
        "fps": (a1 - a0) / elapsed,
        "peak_rss_mb": peak["VmRSS"],
        "peak_anon_mb": peak["RssAnon"],
    }


class Load:
    ADJ = ["red", "white", "parked", "open", "small", "wet", "dark", "moving", "blue", "old"]
    NOUN = ["van", "car", "gate", "person", "dog", "bicycle", "parcel", "truck", "cat", "door"]

    def __init__(self, port, clients, hours):
        self.port, self.clients, self.hours = port, clients, hours
        self.codes, self.latencies, self.n = {}, [], 0
        self.lock = threading.Lock()

    def __call__(self, stop):
        while not stop.is_set():
            with self.lock:
                self.n += 1
                n = self.n
            text = f"a {random.choice(self.ADJ)} {random.choice(self.NOUN)} number {n}"
            q = urllib.parse.urlencode({"camera": "bench", "q": text, "hours": self.hours})
            t = time.time()
            code, _ = get(self.port, f"/api/lab?{q}")
            with self.lock:
                self.codes[code] = self.codes.get(code, 0) + 1
                if code == 200:
                    self.latencies.append(time.time() - t)
            if code != 200:
                time.sleep(0.2)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--promptcam", default=os.path.join(REPO, "target/release/promptcam"))
    p.add_argument("--clip", required=True, help="the CLIP model directory the history was made with")
    p.add_argument("--history", required=True, help="a directory holding the kept history.sqlite")
    p.add_argument("--seconds", type=float, default=60)
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--hours", type=float, default=24 * 30, help="the lab's period (default: all)")
    a = p.parse_args()
    port = free_port()
    tmp = tempfile.mkdtemp(prefix="promptcam-lab-load-")
    config = os.path.join(tmp, "promptcam.toml")
    with open(config, "w") as f:
        f.write(f"""
[models.clip]
dir = "{os.path.abspath(a.clip)}"

[motion]
enabled = false

[http]
enabled = true
listen = "127.0.0.1:{port}"

[history]
path = "{os.path.abspath(a.history)}"
max_mb = 8192
keep_days = 60
min_free_mb = 0

[[cameras]]
name = "Bench"
source = "{REPO}/tests/fixtures/images"
fps = 2
loop = true

[[cameras.prompts]]
text = "a delivery van"
model = "clip"
negatives = ["an empty driveway"]
""")
    log = open(os.path.join(tmp, "daemon.log"), "w")
    d = subprocess.Popen([a.promptcam, "run", "--config", config], stdout=subprocess.DEVNULL, stderr=log, cwd=REPO)
    try:
        t = time.time()
        while get(port, "/healthz", timeout=2)[0] != 200:
            if d.poll() is not None or time.time() - t > 120:
                sys.exit(f"the daemon did not come up; log in {log.name}")
            time.sleep(0.5)
        time.sleep(10)  # past the first frames and the start's measurements
        # one lab query first: the lab loads its text tower on the first one, which belongs to
        # neither phase
        code, _ = get(port, "/api/lab?" + urllib.parse.urlencode({"camera": "bench", "q": "a warm-up", "hours": a.hours}))
        if code != 200:
            sys.exit(f"the warm-up lab query answered {code}; log in {log.name}")
        cpu = open("/proc/cpuinfo").read()
        model = re.search(r"model name\s*:\s*(.*)", cpu)
        print(f"CPU: {model.group(1) if model else '?'}, {os.cpu_count()} cores; history: {a.history}")
        idle = phase(port, d.pid, a.seconds)
        load = Load(port, a.clients, a.hours)
        busy = phase(port, d.pid, a.seconds, load)
        lat = sorted(load.latencies)
        print(f"{'':28}{'idle':>12}{'under load':>14}{'ratio':>8}")
        for k, name in [("ms_per_frame", "inference ms per frame"), ("fps", "analysed frames/s"),
                        ("peak_rss_mb", "peak RSS MB"), ("peak_anon_mb", "peak anonymous MB")]:
            print(f"{name:28}{idle[k]:>12.1f}{busy[k]:>14.1f}{busy[k] / max(idle[k], 1e-9):>8.2f}")
        print(f"lab answers during the load: {dict(sorted(load.codes.items(), key=str))}"
              + (f"; 200s took median {lat[len(lat) // 2]:.2f} s, worst {lat[-1]:.2f} s" if lat else ""))
    finally:
        d.terminate()
        d.wait(timeout=30)


if __name__ == "__main__":
    main()
