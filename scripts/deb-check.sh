#!/usr/bin/env bash
# Builds the promptcam .deb with cargo-deb and checks it: the files it installs
# (dpkg-deb --contents), lintian (no errors; warnings are printed), and with --chroot, an install
# into a clean Debian made with debootstrap, where `promptcam check` must first fail naming the
# missing models and then pass once models are in place (the tiny fixture models stand in for
# the real ones, which this machine cannot download).
#
#   scripts/deb-check.sh                       # amd64: build, contents, lintian
#   scripts/deb-check.sh --chroot              # ... and install + check in a bookworm chroot (root)
#   scripts/deb-check.sh --target aarch64-unknown-linux-gnu   # arm64 (cross; no chroot)
#   scripts/deb-check.sh --no-build ...        # package the release binary already built
#
# Not part of `cargo test`: a release build takes many minutes, debootstrap needs root and the
# network. Needs: cargo-deb (cargo install cargo-deb --locked), dpkg-deb, lintian, and for
# --chroot debootstrap (from $MIRROR, else the Debian archive this machine's apt uses: see
# scripts/debian-mirror). The chroot is cached in target/deb-chroot/ (delete it to start over).
set -euo pipefail
cd "$(dirname "$0")/.."

CHROOT=0 NOBUILD=() TARGET= SUITE=${SUITE:-bookworm}
while [ $# -gt 0 ]; do
  case $1 in
    --chroot) CHROOT=1 ;;
    --no-build) NOBUILD=(--no-build) ;;
    --target) TARGET=$2; shift ;;
    *) echo "deb-check: unknown argument $1" >&2; exit 64 ;;
  esac
  shift
done

command -v cargo-deb >/dev/null || { echo "deb-check: cargo-deb is missing: cargo install cargo-deb --locked" >&2; exit 2; }
ARGS=()
if [ -n "$TARGET" ]; then
  ARGS=(--target "$TARGET")
  if [ "$TARGET" = aarch64-unknown-linux-gnu ]; then
    # the same cross toolchain as scripts/aarch64-check.sh (openh264 builds C++: g++ too)
    export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
    export CXX_aarch64_unknown_linux_gnu=aarch64-linux-gnu-g++
    export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
  fi
fi

DEB=$(cargo deb "${ARGS[@]}" "${NOBUILD[@]}" | tail -n 1)
[ -f "$DEB" ] || { echo "deb-check: cargo deb printed no package path" >&2; exit 1; }
echo "== package: $DEB ($(du -h "$DEB" | cut -f1))"
dpkg-deb --info "$DEB" | sed -n '/Package:/,$p'

echo "== contents"
CONTENTS=$(dpkg-deb --contents "$DEB")
echo "$CONTENTS"
fail=0
for f in ./usr/bin/promptcam ./etc/promptcam/promptcam.toml ./usr/share/promptcam/fetch-models.sh \
         ./usr/share/promptcam/manifest.sha256 ./usr/share/doc/promptcam/examples/promptcam.example.toml; do
  grep -q " $f\$" <<<"$CONTENTS" || { echo "deb-check: MISSING $f" >&2; fail=1; }
done
grep -Eq " \./(usr/)?lib/systemd/system/promptcam\.service\$" <<<"$CONTENTS" || { echo "deb-check: MISSING the systemd unit" >&2; fail=1; }
CONTROL=$(mktemp -d)
trap 'rm -rf "$CONTROL"' EXIT
dpkg-deb --control "$DEB" "$CONTROL"
grep -qx /etc/promptcam/promptcam.toml "$CONTROL/conffiles" || { echo "deb-check: /etc/promptcam/promptcam.toml is not a conffile" >&2; fail=1; }
for s in postinst postrm; do [ -x "$CONTROL/$s" ] || { echo "deb-check: no $s" >&2; fail=1; }; done
grep -q "adduser --system" "$CONTROL/postinst" && grep -q "deb-systemd-helper" "$CONTROL/postinst" \
  || { echo "deb-check: postinst does not create the user and enable the unit" >&2; fail=1; }
[ $fail = 0 ] || exit 1
echo "contents: ok"

echo "== lintian"
LINTIAN=$(lintian --tag-display-limit 0 "$DEB" 2>&1 || true)
echo "$LINTIAN"
if grep -q '^E:' <<<"$LINTIAN"; then
  echo "deb-check: lintian reports errors" >&2
  exit 1
fi
echo "lintian: no errors ($(grep -c '^W:' <<<"$LINTIAN" || true) warning(s))"

[ $CHROOT = 1 ] || exit 0
[ -z "$TARGET" ] || { echo "deb-check: --chroot installs the host's architecture only" >&2; exit 64; }
[ "$(id -u)" = 0 ] || { echo "deb-check: --chroot needs root (debootstrap, chroot)" >&2; exit 2; }
ROOT=target/deb-chroot/$SUITE
if [ ! -x "$ROOT/usr/bin/apt-get" ]; then
  echo "== debootstrap $SUITE into $ROOT (cached for next time)"
  MIRROR=$(scripts/debian-mirror)
  rm -rf "$ROOT" && mkdir -p "$ROOT"
  debootstrap --variant=minbase "$SUITE" "$ROOT" "$MIRROR" >/dev/null
fi
# a fresh copy of the cached base for every run: the install starts from a clean system
RUN=target/deb-chroot/run
umount "$RUN/proc" 2>/dev/null || true
rm -rf "$RUN" && cp -a "$ROOT" "$RUN"
mount -t proc proc "$RUN/proc"
trap 'umount "$RUN/proc" 2>/dev/null || true; rm -rf "$CONTROL"' EXIT
cp "$DEB" "$RUN/tmp/promptcam.deb"
echo "== install in $SUITE"
INSTALL=$(chroot "$RUN" sh -c 'apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq /tmp/promptcam.deb' 2>&1)
grep -E '^(Setting up promptcam|promptcam is installed|  [123]\. )' <<<"$INSTALL" || { echo "$INSTALL" | tail -n 20; echo "deb-check: the install printed no setup lines" >&2; exit 1; }
chroot "$RUN" sh -c 'id promptcam && stat -c "%U:%G %a %n" /var/lib/promptcam /var/lib/promptcam/spool /var/lib/promptcam/models && ls -l /etc/systemd/system/multi-user.target.wants/promptcam.service'
echo "== promptcam check without models (must fail and name them)"
set +e
OUT=$(chroot "$RUN" promptcam check --config /etc/promptcam/promptcam.toml 2>&1); code=$?
set -e
echo "$OUT"
[ $code != 0 ] && grep -q "/var/lib/promptcam/models" <<<"$OUT" || { echo "deb-check: check without models should fail naming the model directory (exit $code)" >&2; exit 1; }
echo "== promptcam check with models in place (the tiny fixture models stand in for the real ones)"
cp -r models/tiny/clip "$RUN/var/lib/promptcam/models/clip-vit-base-patch32"
cp -r models/tiny/owlvit "$RUN/var/lib/promptcam/models/owlvit-base-patch32"
chroot "$RUN" chown -R promptcam:promptcam /var/lib/promptcam/models
chroot "$RUN" promptcam check --config /etc/promptcam/promptcam.toml
echo "== purge"
chroot "$RUN" sh -c 'DEBIAN_FRONTEND=noninteractive apt-get purge -y -qq promptcam >/dev/null && test ! -e /var/lib/promptcam && test ! -e /usr/bin/promptcam && echo "purged: state and binary gone"'
echo "chroot: ok"
