#!/usr/bin/env bash
# Fetch the published ONNX exports of CLIP ViT-B/32 and OWL-ViT B/32 (the transformers.js
# exports, fp32 and dynamic int8 `_quantized`) into a model directory promptcam reads.
#
#   models/fetch.sh [DEST]        (default /var/lib/promptcam/models)
#
# Other sizes work unchanged (ViT-B/16, ViT-L/14, ViT-L/14-336, OWL-ViT B/16 and L/14): set
# CLIP_REPO / OWLVIT_REPO to another export in the same layout.
set -euo pipefail

DEST=${1:-/var/lib/promptcam/models}
BASE=${HF_ENDPOINT:-https://huggingface.co}
CLIP_REPO=${CLIP_REPO:-Xenova/clip-vit-base-patch32}
OWLVIT_REPO=${OWLVIT_REPO:-Xenova/owlvit-base-patch32}

COMMON=(config.json tokenizer.json tokenizer_config.json preprocessor_config.json)
CLIP_ONNX=(onnx/vision_model.onnx onnx/text_model.onnx onnx/model.onnx
           onnx/vision_model_quantized.onnx onnx/text_model_quantized.onnx onnx/model_quantized.onnx)
OWLVIT_ONNX=(onnx/model.onnx onnx/model_quantized.onnx)

instructions() {
  cat >&2 <<TXT
promptcam: unable to download from $BASE: $1
Without network access, copy the files by hand. From $BASE/$CLIP_REPO (folder "resolve/main") put
  ${COMMON[*]} ${CLIP_ONNX[*]}
into $DEST/clip-vit-base-patch32/ (keeping the onnx/ folder), and from $BASE/$OWLVIT_REPO put
  ${COMMON[*]} ${OWLVIT_ONNX[*]}
into $DEST/owlvit-base-patch32/. Then run: promptcam check --config /etc/promptcam/promptcam.toml
TXT
  exit 1
}

fetch() { # repo dir files...
  local repo=$1 dir=$2; shift 2
  for f in "$@"; do
    local out="$dir/$f"
    [ -s "$out" ] && { echo "have  $out"; continue; }
    mkdir -p "$(dirname "$out")"
    echo "fetch $repo/$f"
    curl -fL --retry 3 --connect-timeout 15 -o "$out.part" "$BASE/$repo/resolve/main/$f" \
      || { rm -f "$out.part"; instructions "$repo/$f failed"; }
    mv "$out.part" "$out"
  done
  echo "from $BASE/$repo" > "$dir/SOURCE"
}

command -v curl >/dev/null || instructions "curl is not installed"
fetch "$CLIP_REPO" "$DEST/clip-vit-base-patch32" "${COMMON[@]}" "${CLIP_ONNX[@]}"
fetch "$OWLVIT_REPO" "$DEST/owlvit-base-patch32" "${COMMON[@]}" "${OWLVIT_ONNX[@]}"
echo "models in $DEST"
