#!/usr/bin/env bash
# Runs the README's two commands as a newcomer would, on a fresh Debian: a debootstrap'ed chroot
# with only this machine's Rust toolchain (rustup's ~/.rustup and ~/.cargo/bin) copied in and a
# C/C++ compiler (build-essential; ca-certificates and sudo, which any installed Debian has), as
# a non-root user with sudo, from a clean export of HEAD. No cargo cache is copied: crates are
# downloaded as on a new machine. Prints how long each command took.
#
#   scripts/fresh-check.sh             # root; needs debootstrap and the network (apt and cargo)
#   SUITE=noble MIRROR=URL [KEYRING=FILE] scripts/fresh-check.sh   # the same on Ubuntu 24.04
#     (MIRROR: an Ubuntu archive; KEYRING: its keyring, default ubuntu-keyring's file)
#
# 1. `cargo run --release -- run --config config/demo.toml`: stopped (SIGINT) after its third
#    event; reports the time to that event (the build included).
# 2. `scripts/test`: installs the Debian packages the tests need with sudo, then cargo test.
# Not part of `cargo test` or CI: it builds everything twice from scratch (45 minutes on 2 busy
# cores: 14 for the first command, 29 for the second).
# The base chroot is cached in target/fresh-chroot/ (delete it to start over); every run starts
# from a fresh copy. Daemons the packages install are not started (policy-rc.d), since the chroot
# shares the host's network.
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE=${SUITE:-bookworm}
[ "$(id -u)" = 0 ] || { echo "fresh-check: needs root (debootstrap, chroot)" >&2; exit 2; }
command -v debootstrap >/dev/null || { echo "fresh-check: debootstrap is missing: apt-get install debootstrap" >&2; exit 2; }
TOOLCHAIN=$(rustup show active-toolchain | cut -d' ' -f1)
[ -d "$HOME/.rustup/toolchains/$TOOLCHAIN" ] || { echo "fresh-check: no rustup toolchain $TOOLCHAIN in $HOME/.rustup" >&2; exit 2; }

BASE=target/fresh-chroot/$SUITE
if [ ! -x "$BASE/usr/bin/gcc" ]; then
  case $SUITE in
    jammy | noble)
      [ -n "${MIRROR:-}" ] || { echo "fresh-check: set MIRROR to an Ubuntu archive URL for $SUITE" >&2; exit 2; }
      KEYRING=${KEYRING:-/usr/share/keyrings/ubuntu-archive-keyring.gpg}
      [ -f "$KEYRING" ] || { echo "fresh-check: no Ubuntu archive keyring at $KEYRING: install ubuntu-keyring, or set KEYRING to the file of Ubuntu's ubuntu-keyring package" >&2; exit 2; }
      echo "== debootstrap $SUITE from $MIRROR into $BASE, + build-essential (cached for next time)"
      rm -rf "$BASE" && mkdir -p "$BASE"
      # Ubuntu's suites bootstrap with the gutsy script, which this debootstrap may not link yet
      debootstrap --variant=minbase --keyring="$KEYRING" "$SUITE" "$BASE" "$MIRROR" /usr/share/debootstrap/scripts/gutsy >/dev/null
      # the components and pockets a fresh Ubuntu install enables (mosquitto, ffmpeg and the
      # GStreamer plugins are in universe)
      rm -f "$BASE/etc/apt/sources.list"
      printf 'Types: deb\nURIs: %s\nSuites: %s %s-updates %s-security\nComponents: main restricted universe multiverse\nSigned-By: /usr/share/keyrings/ubuntu-archive-keyring.gpg\n' \
        "$MIRROR" "$SUITE" "$SUITE" "$SUITE" >"$BASE/etc/apt/sources.list.d/ubuntu.sources"
      ;;
    *)
      MIRROR=$(scripts/debian-mirror)
      echo "== debootstrap $SUITE from $MIRROR into $BASE, + build-essential (cached for next time)"
      rm -rf "$BASE" && mkdir -p "$BASE"
      debootstrap --variant=minbase "$SUITE" "$BASE" "$MIRROR" >/dev/null
      ;;
  esac
  cp /etc/resolv.conf "$BASE/etc/resolv.conf"
  chroot "$BASE" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends build-essential ca-certificates sudo >/dev/null && apt-get clean'
fi

RUN=target/fresh-chroot/run
cleanup() {
  for m in dev/shm dev/pts sys proc; do umount "$RUN/$m" 2>/dev/null || true; done
}
cleanup
rm -rf "$RUN" && cp -a "$BASE" "$RUN"
trap cleanup EXIT
mount -t proc proc "$RUN/proc"
mount -t sysfs -o ro sysfs "$RUN/sys"
mkdir -p "$RUN/dev/pts" "$RUN/dev/shm"
mount -t devpts -o newinstance devpts "$RUN/dev/pts"
mount -t tmpfs -o mode=1777 tmpfs "$RUN/dev/shm"
cp /etc/resolv.conf "$RUN/etc/resolv.conf"
# debootstrap writes no /etc/hosts (an installed Debian has one, from the installer): without it
# `localhost` does not resolve, and chromedriver, mosquitto_pub and the tests that name the host
# fail for a reason no user's machine has
[ -s "$RUN/etc/hosts" ] || printf '127.0.0.1\tlocalhost\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$RUN/etc/hosts"
# the CAs this machine added locally (a TLS-inspecting proxy's, say): the chroot reaches the
# network as its host does
if ls /usr/local/share/ca-certificates/*.crt >/dev/null 2>&1; then
  cp /usr/local/share/ca-certificates/*.crt "$RUN/usr/local/share/ca-certificates/"
  chroot "$RUN" update-ca-certificates >/dev/null
fi
printf '#!/bin/sh\nexit 101\n' >"$RUN/usr/sbin/policy-rc.d" && chmod +x "$RUN/usr/sbin/policy-rc.d"

# the newcomer: a user with sudo, the toolchain in their home, the repository checked out
chroot "$RUN" useradd -m -s /bin/bash dev
echo 'dev ALL=(ALL) NOPASSWD: ALL' >"$RUN/etc/sudoers.d/dev"
H=$RUN/home/dev
mkdir -p "$H/.rustup/toolchains" "$H/.cargo/bin" "$H/promptcam"
cp "$HOME/.rustup/settings.toml" "$H/.rustup/"
cp -a "$HOME/.rustup/toolchains/$TOOLCHAIN" "$H/.rustup/toolchains/"
cp -a "$HOME/.cargo/bin/." "$H/.cargo/bin/"
git archive HEAD | tar -x -C "$H/promptcam"
cat >"$H/readme-commands.sh" <<'EOF'
#!/bin/bash
set -uo pipefail
export PATH=$HOME/.cargo/bin:$PATH
cd ~/promptcam
echo "== 1. cargo run --release -- run --config config/demo.toml (stopped after 3 events)"
t0=$(date +%s)
rm -f ../run.pid && : >../events.jsonl
# in a session (and process group) of its own, so that SIGINT reaches cargo and promptcam
setsid --fork sh -c 'echo $$ >../run.pid; exec cargo run --release -- run --config config/demo.toml' >../events.jsonl 2>../run.log
while [ ! -s ../run.pid ]; do sleep 0.1; done
pid=$(cat ../run.pid)
while kill -0 "$pid" 2>/dev/null && [ "$(wc -l <../events.jsonl)" -lt 3 ]; do sleep 1; done
t1=$(date +%s)
kill -INT -- "-$pid" 2>/dev/null
while kill -0 "$pid" 2>/dev/null; do sleep 0.2; done
head -n 3 ../events.jsonl
if [ "$(wc -l <../events.jsonl)" -lt 3 ]; then
  tail -n 30 ../run.log
  echo "fresh-check: the first command printed fewer than 3 events"
  exit 1
fi
echo "first command: $((t1 - t0)) s to the third event (build included), then stopped with SIGINT"
echo "== 2. scripts/test"
t0=$(date +%s)
scripts/test 2>&1 | tee ../test.log | grep -E '^scripts/test|^test result|FAILED|panicked|^error'
code=${PIPESTATUS[0]}
t1=$(date +%s)
echo "second command: $((t1 - t0)) s, exit $code"
exit $code
EOF
chmod +x "$H/readme-commands.sh"
chroot "$RUN" chown -R dev:dev /home/dev
chroot "$RUN" su - dev -c ./readme-commands.sh
