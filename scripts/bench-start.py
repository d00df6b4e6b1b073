#!/usr/bin/env python3
"""Start-up benchmark (issue 21): seconds from `promptcam run` to systemd's READY.

Runs the daemon on full-size CLIP + OWL-ViT with one file camera and a history (its state
directory holds the start cache), under a notify socket of its own, and prints, for each run,
the seconds to READY and the daemon's log lines about precision, threads and the cache.

    scripts/bench-start.py [--bin target/release/promptcam] [--runs 2] [--size 384]
        [--quantized auto|true|false] [--cold]

The first run starts with an empty state directory (cold: nothing cached); the next ones keep
it (warm). `--cold` empties it before every run. Model files should be in the page cache
(run once before measuring) so that the figures are promptcam's, not the disk's.
"""

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def config(tmp, args):
    q = {"auto": '"auto"', "true": "true", "false": "false"}[args.quantized]
    return f"""
[daemon]
inference_threads = {args.threads}

[models.clip]
dir = "{args.clip}"
quantized = {q}

[models.owlvit]
dir = "{args.owl}"
quantized = {q}
input_size = {args.size}

[[cameras]]
name = "Start"
source = "{REPO}/tests/fixtures/images"
fps = 1
loop = true

[[cameras.prompts]]
text = "a rocket on the launch pad"
model = "clip"
negatives = ["an empty field"]

[[cameras.prompts]]
text = "a cat"
model = "owlvit"

[history]
enabled = true
path = "{tmp}/state/history"
"""


def one_run(args, tmp, hold=0.0):
    """Starts the daemon, waits for READY, keeps it running `hold` seconds more, stops it.
    Returns the seconds to READY (None without), its log lines and its peak RSS in kB (read
    just before the stop)."""
    sock_path = os.path.join(tmp, "notify.sock")
    if os.path.exists(sock_path):
        os.unlink(sock_path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(1.0)
    env = dict(os.environ, NOTIFY_SOCKET=sock_path, NO_COLOR="1")
    log = open(os.path.join(tmp, "log"), "w+")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [args.bin, "run", "--config", os.path.join(tmp, "promptcam.toml")],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=env,
    )
    ready = None
    while time.monotonic() - t0 < args.timeout:
        try:
            msg = sock.recv(4096).decode()
        except socket.timeout:
            if proc.poll() is not None:
                break
            continue
        if "READY=1" in msg.split("\n"):
            ready = time.monotonic() - t0
            break
    # keep reading: the daemon's WATCHDOG pings would fill the socket's queue (10 datagrams on
    # Linux) and block it, as they would under a systemd that stopped listening
    stop = threading.Event()

    def drain():
        while not stop.is_set():
            try:
                sock.recv(4096)
            except (socket.timeout, OSError):
                pass

    drainer = threading.Thread(target=drain, daemon=True)
    drainer.start()
    if ready is not None:
        time.sleep(hold)
    peak_kb = None
    try:
        with open(f"/proc/{proc.pid}/status") as f:
            peak_kb = next((int(line.split()[1]) for line in f if line.startswith("VmHWM:")), None)
    except OSError:
        pass
    proc.terminate()
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        print("the daemon did not stop within 60 s of SIGTERM (killed)")
        ready = None
    stop.set()
    drainer.join()
    sock.close()
    log.seek(0)
    return ready, [line.rstrip() for line in log], peak_kb


def relevant(args, line):
    return args.log or any(w in line for w in ("int8", "fp32", "threads", "cache", "WARN", "ERROR"))


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--bin", default=os.path.join(REPO, "target/release/promptcam"))
    p.add_argument("--clip", default=os.path.join(REPO, "target/full-models/clip-vit-base-patch32"))
    p.add_argument("--owl", default=os.path.join(REPO, "target/full-models/owlvit-base-patch32"))
    p.add_argument("--size", type=int, default=384)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--quantized", choices=["auto", "true", "false"], default="auto")
    p.add_argument("--runs", type=int, default=2)
    p.add_argument("--cold", action="store_true", help="empty the state directory before every run")
    p.add_argument("--timeout", type=float, default=300)
    p.add_argument("--log", action="store_true", help="print every log line, not only the relevant ones")
    args = p.parse_args()
    tmp = tempfile.mkdtemp(prefix="promptcam-start-")
    try:
        with open(os.path.join(tmp, "promptcam.toml"), "w") as f:
            f.write(config(tmp, args))
        print(f"{args.bin}: quantized = {args.quantized}, input_size {args.size}, {os.cpu_count()} cores")
        for i in range(args.runs):
            if args.cold or i == 0:
                shutil.rmtree(os.path.join(tmp, "state"), ignore_errors=True)
            kind = "cold" if args.cold or i == 0 else "warm"
            ready, lines, _ = one_run(args, tmp)
            shown = "no READY" if ready is None else f"{ready:.1f} s"
            print(f"run {i + 1} ({kind}): start to READY {shown}")
            for line in lines:
                if relevant(args, line):
                    print("   ", line)
            if ready is None:
                with open(os.path.join(tmp, "log")) as f:
                    print(f.read()[-3000:])
                sys.exit(1)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
