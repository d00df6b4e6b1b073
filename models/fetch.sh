#!/usr/bin/env bash
# Fetch the published ONNX exports of CLIP ViT-B/32 and OWL-ViT B/32 (the transformers.js
# exports, fp32 and dynamic int8 `_quantized`) into the model directory promptcam reads, verify
# every file against the sha256 in the manifest, and record where each file came from.
#
#   models/fetch.sh [--strict] [--with-clipseg] [--with-owlv2] [DEST]
#                                         download + verify (default DEST /var/lib/promptcam/models);
#                                         --with-clipseg adds CLIPSeg rd64-refined (model = "clipseg"),
#                                         --with-owlv2 OWLv2 B/16 (model = "owlv2")
#   models/fetch.sh --print-sha [DEST]    print manifest lines for the files already in DEST
#   models/fetch.sh --list [DEST]         print the files and where they go, download nothing
#
# The manifest (models/manifest.sha256 next to this script, or /usr/share/promptcam/manifest.sha256
# when installed; PROMPTCAM_MODELS_MANIFEST overrides) has one line per file, `SHA256  DIR/FILE`,
# in sha256sum's format; `UNPINNED` instead of a hash means "not pinned yet": the file is accepted
# with a warning (refused with --strict) and its hash printed so it can be pinned. A file whose
# hash differs from a pinned one is deleted and the script stops.
#
# Environment: PROMPTCAM_MODELS_BASE_URL (default $HF_ENDPOINT or https://huggingface.co),
# PROMPTCAM_MODELS_REVISION (default main), CLIP_REPO / OWLVIT_REPO / CLIPSEG_REPO / OWLV2_REPO
# (other sizes in the same layout work unchanged: ViT-B/16, ViT-L/14, ViT-L/14-336, OWL-ViT B/16
# and L/14, OWLv2 L/14 — their files have other hashes, so use --strict only with a manifest made
# for them).
set -euo pipefail

HERE=$(cd "$(dirname "$0")" && pwd)
MODE=fetch STRICT=0 CLIPSEG=0 OWLV2=0 DEST=
for a in "$@"; do
  case $a in
    --print-sha) MODE=print ;;
    --list) MODE=list ;;
    --strict) STRICT=1 ;;
    --with-clipseg) CLIPSEG=1 ;;
    --with-owlv2) OWLV2=1 ;;
    -h|--help) sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    -*) echo "fetch.sh: unknown option $a; see --help" >&2; exit 64 ;;
    *) DEST=$a ;;
  esac
done
DEST=${DEST:-/var/lib/promptcam/models}
BASE=${PROMPTCAM_MODELS_BASE_URL:-${HF_ENDPOINT:-https://huggingface.co}}
BASE=${BASE%/}
REV=${PROMPTCAM_MODELS_REVISION:-main}
CLIP_REPO=${CLIP_REPO:-Xenova/clip-vit-base-patch32}
OWLVIT_REPO=${OWLVIT_REPO:-Xenova/owlvit-base-patch32}
CLIPSEG_REPO=${CLIPSEG_REPO:-Xenova/clipseg-rd64-refined}
OWLV2_REPO=${OWLV2_REPO:-Xenova/owlv2-base-patch16}

MANIFEST=${PROMPTCAM_MODELS_MANIFEST:-}
if [ -z "$MANIFEST" ]; then
  for m in "$HERE/manifest.sha256" /usr/share/promptcam/manifest.sha256; do
    [ -f "$m" ] && { MANIFEST=$m; break; }
  done
fi
[ -n "$MANIFEST" ] && [ -f "$MANIFEST" ] || { echo "fetch.sh: unable to find the manifest (models/manifest.sha256); reinstall the package or set PROMPTCAM_MODELS_MANIFEST" >&2; exit 2; }

repo_of() { # model dir -> hub repository
  case $1 in
    clip-*) echo "$CLIP_REPO" ;;
    clipseg-*) echo "$CLIPSEG_REPO" ;;
    owlvit-*) echo "$OWLVIT_REPO" ;;
    owlv2-*) echo "$OWLV2_REPO" ;;
    *) echo "fetch.sh: no repository for $1 in $MANIFEST" >&2; exit 2 ;;
  esac
}
url_of() { local dir=${1%%/*} file=${1#*/}; echo "$BASE/$(repo_of "$dir")/resolve/$REV/$file"; }

# the manifest's entries: "HASH PATH" per line, comments and blank lines skipped
# (CLIPSeg only with --with-clipseg, OWLv2 only with --with-owlv2)
mapfile -t ENTRIES < <(sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$MANIFEST" | awk -v seg=$CLIPSEG -v v2=$OWLV2 '{ if ((seg || $2 !~ /^clipseg-/) && (v2 || $2 !~ /^owlv2-/)) print $1, $2 }')

instructions() { # reason
  {
    echo "promptcam: unable to download the models from $BASE: $1"
    echo "Without network access here, download these files on another machine and copy each one to"
    echo "the path shown (keep the onnx/ folders), then run: promptcam check --config /etc/promptcam/promptcam.toml"
    for e in "${ENTRIES[@]}"; do
      local path=${e#* }
      echo "  $(url_of "$path")"
      echo "    -> $DEST/$path"
    done
    echo "Then rerun this script: it verifies the copied files against $MANIFEST and downloads nothing."
  } >&2
  exit 1
}

sha_of() { sha256sum "$1" | awk '{print $1}'; }

if [ "$MODE" = list ]; then
  for e in "${ENTRIES[@]}"; do path=${e#* }; echo "$(url_of "$path") -> $DEST/$path"; done
  exit 0
fi
if [ "$MODE" = print ]; then
  echo "# sha256 of the files in $DEST, $(date -u +%Y-%m-%d); check them against the hub before pinning"
  for e in "${ENTRIES[@]}"; do
    path=${e#* }
    if [ -f "$DEST/$path" ]; then echo "$(sha_of "$DEST/$path")  $path"; else echo "UNPINNED  $path  # missing in $DEST"; fi
  done
  exit 0
fi

command -v curl >/dev/null || instructions "curl is not installed (apt install curl)"
unpinned=()
rm -f "$DEST/SOURCES.part" 2>/dev/null || true
for e in "${ENTRIES[@]}"; do
  want=${e%% *} path=${e#* }
  out="$DEST/$path" url=$(url_of "$path")
  src="$out.part"
  if [ ! -s "$out" ]; then
    mkdir -p "$(dirname "$out")" || { echo "fetch.sh: unable to create $(dirname "$out"); run as root or as the promptcam user" >&2; exit 2; }
    echo "fetch $url"
    if ! curl -fsSL --retry 2 --connect-timeout 10 -o "$out.part" "$url"; then
      rm -f "$out.part"
      instructions "$url failed"
    fi
  else
    src="$out"
    [ -r "$out" ] || { echo "fetch.sh: unable to read $out; run as root or as the promptcam user" >&2; exit 2; }
    echo "have  $out"
  fi
  got=$(sha_of "$src")
  if [ "$want" = UNPINNED ]; then
    if [ "$STRICT" = 1 ]; then
      rm -f "$src"
      echo "fetch.sh: refusing $path: its sha256 is not pinned in $MANIFEST and --strict is set (got $got); the file was deleted" >&2
      exit 3
    fi
    unpinned+=("$got  $path")
  elif [ "$got" != "$want" ]; then
    rm -f "$src"
    echo "fetch.sh: refusing $path: sha256 $got does not match $want pinned in $MANIFEST; the file was deleted (from $url). Rerun to download it again; if it fails the same way the published file changed: check the source and update the manifest" >&2
    exit 3
  fi
  [ "$src" = "$out" ] || mv "$src" "$out"
  origin=$url
  [ "$src" = "$out" ] && origin="already present (copied by hand or an earlier fetch); published at $url"
  printf '%s  %s  %s\n' "$got" "$path" "$origin" >> "$DEST/SOURCES.part"
done
{
  echo "# fetched by promptcam models/fetch.sh on $(date -u +%Y-%m-%dT%H:%M:%SZ), revision $REV"
  echo "# sha256  file  source"
  cat "$DEST/SOURCES.part"
} > "$DEST/SOURCES"
rm -f "$DEST/SOURCES.part"
if [ ${#unpinned[@]} -gt 0 ]; then
  echo "warning: ${#unpinned[@]} file(s) have no pinned sha256 in $MANIFEST; accepted as downloaded:" >&2
  printf '  %s\n' "${unpinned[@]}" >&2
  echo "  (pin them: compare with the hub's file page, then put these lines in the manifest)" >&2
fi
echo "models in $DEST (sources and sha256 in $DEST/SOURCES)"
