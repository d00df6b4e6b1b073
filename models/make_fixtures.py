#!/usr/bin/env python3
"""Build random-weight CLIP and OWL-ViT models of the real architectures, export them in the
layout of the published ONNX exports (the transformers.js `onnx/` layout), and record what the
Hugging Face `transformers` reference (processors + models + post-processing) outputs for them.

    python3 -m venv .venv && .venv/bin/pip install torch transformers onnx onnxruntime \
        scikit-image open-clip-torch pillow
    .venv/bin/python models/make_fixtures.py            # tiny fixtures, committed to the repo
    .venv/bin/python models/make_fixtures.py --full     # full-size ViT-B/32 models for benchmarks

Tiny mode writes
    models/tiny/clip/     CLIP with flat preprocessor_config.json, onnx/{model,vision_model,text_model}[_quantized].onnx
    models/tiny/owlvit/   OWL-ViT with nested processor_config.json, onnx/model[_quantized].onnx
    tests/fixtures/images/        a few real photos (scikit-image's), grayscale, RGBA, portrait, landscape,
                                  and three with real partial transparency (RGBA, palette + tRNS,
                                  grayscale + alpha) that transformers composites onto white
    tests/fixtures/reference/*.json  token ids, pixel samples, scores, detections (fp32 = transformers,
                                     quantized = onnxruntime running the same quantized file)
Full mode writes the same model layout (no references) to --out (default target/full-models), never
committed: same graphs, same cost as the real ViT-B/32 checkpoints.

Nothing here needs a network: the CLIP BPE vocabulary comes from the open-clip-torch package and the
photos from scikit-image.
"""

import argparse
import gzip
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.quantization import QuantType, quantize_dynamic
from PIL import Image

import transformers
from transformers.image_transforms import convert_to_rgb
from transformers import (
    CLIPConfig,
    CLIPImageProcessorPil,
    CLIPModel,
    CLIPTextModelWithProjection,
    CLIPTokenizer,
    CLIPVisionModelWithProjection,
    OwlViTConfig,
    OwlViTForObjectDetection,
    OwlViTImageProcessorPil,
)

REPO = Path(__file__).resolve().parent.parent
OPSET = 14  # what the published transformers.js exports use
SEED = 20261127

CLIP_PROMPTS = [
    "a photo of a cat",
    "a photo of a dog",
    "a cup of coffee",
    "an astronaut",
    "a rocket on the launch pad",
    "an empty driveway",
    "a delivery van",
]
OWL_PROMPTS = ["a cat", "a person", "a cup", "a rocket", "a package on the doorstep"]

# strings that exercise the tokenizer: case, whitespace, punctuation, digits, unicode, truncation
TOKEN_STRINGS = [
    "a photo of a cat",
    "A   Delivery\tVAN!!",
    "the garage door is open.",
    "it's 42 degrees, isn't it?",
    "café naïve 東京 🚐",
    "",
    "a package on the doorstep " * 20,
]

IMAGES = {
    # name: (source file in skimage.data, transform)
    "chelsea.png": ("chelsea.png", "rgb"),  # landscape 451x300
    "coffee.png": ("coffee.png", "rgb"),  # landscape 600x400
    "rocket.png": ("rocket.jpg", "rgb"),  # landscape 640x427
    "astronaut_portrait.png": ("astronaut.png", "portrait"),  # portrait 300x512
    "camera_gray.png": ("camera.png", "gray"),  # grayscale 512x512
    "logo_rgba.png": ("logo.png", "copy"),  # RGBA 500x500, opaque everywhere
    # partial transparency over non-white colours: transformers' convert_to_rgb composites it onto
    # white, so dropping alpha (PIL's convert("RGB")) changes every score. 352x352, CLIPSeg's input
    # size: its resize is then the identity on both sides, and the tiny random CLIPSeg decoder,
    # which turns one-level rounding differences of two bilinear resamplers into mask differences
    # of 0.01-0.05, compares the compositing alone. Named to sort last: the demo (config/demo.toml)
    # replays this directory in name order, and its events depend on that order
    "transparent_rgba.png": ("coffee.png", "rgba"),  # RGBA: alpha 200 on the left half, 0..255 ramps on the right
    "transparent_palette.png": ("chelsea.png", "palette"),  # P + tRNS: opaque, alpha 110 and alpha 0 entries
    "transparent_la.png": ("astronaut.png", "la"),  # grayscale + alpha: a vignette, alpha 255 to ~30
}


def bytes_to_unicode():
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(2**8):
        if b not in bs:
            bs.append(b)
            cs.append(2**8 + n)
            n += 1
    return dict(zip(bs, [chr(c) for c in cs]))


def clip_tokenizer(pad_token, max_length):
    """The real CLIP BPE vocabulary (49408 tokens), built exactly as OpenAI's and open_clip's code do."""
    import open_clip

    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    merges = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = [tuple(m.split()) for m in merges[1 : 49152 - 256 - 2 + 1]]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    encoder = {v: i for i, v in enumerate(vocab)}
    assert len(encoder) == 49408
    tok = CLIPTokenizer(vocab=encoder, merges=merges, pad_token=pad_token, model_max_length=max_length)
    # cross-check with open_clip's own tokenizer on plain text
    ref = open_clip.tokenize(["a photo of a cat", "the garage door is open."])
    ours = tok(["a photo of a cat", "the garage door is open."], padding="max_length", max_length=77)["input_ids"]
    for r, o in zip(ref.tolist(), ours):
        n = len([x for x in r if x])
        assert r[:n] == o[:n], (r[:n], o[:n])
    return tok


def save_tokenizer(tok, out):
    tmp = out / "_tok"
    tok.save_pretrained(tmp)
    shutil.copy(tmp / "tokenizer.json", out / "tokenizer.json")
    shutil.copy(tmp / "tokenizer_config.json", out / "tokenizer_config.json")
    shutil.rmtree(tmp)
    # as a tokenizer.json built from the vocabulary: no truncation or padding settings (calling the
    # tokenizer with padding= above leaves them in the backend); consumers truncate and pad themselves
    t = json.loads((out / "tokenizer.json").read_text())
    t["truncation"] = None
    t["padding"] = None
    (out / "tokenizer.json").write_text(json.dumps(t, ensure_ascii=False))


def round_params(model):
    """Round every weight to bfloat16 precision: still random, but the committed files compress ~2x in git."""
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).to(torch.float32))


def export(module, args, path, input_names, output_names, dynamic_axes):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module,
        args,
        str(path),
        input_names=input_names,
        output_names=output_names,
        dynamic_axes=dynamic_axes,
        opset_version=OPSET,
        do_constant_folding=True,
        dynamo=False,
    )
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    # keep a single file (no external data) as the published exports do for these sizes
    onnx.save_model(m, str(path), save_as_external_data=False)


def quantize(path):
    out = path.with_name(path.stem + "_quantized.onnx")
    # onnxruntime's dynamic int8 quantization, as the published `*_quantized.onnx` files
    quantize_dynamic(str(path), str(out), weight_type=QuantType.QUInt8)
    return out


# --------------------------------------------------------------------------------------------- CLIP


class ClipFull(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, pixel_values, attention_mask):
        o = self.m(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        return o.logits_per_image, o.logits_per_text, o.text_embeds, o.image_embeds


class ClipVision(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, pixel_values):
        o = self.m(pixel_values=pixel_values)
        return o.image_embeds, o.last_hidden_state


class ClipText(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        o = self.m(input_ids=input_ids, attention_mask=attention_mask)
        return o.text_embeds, o.last_hidden_state


def clip_config(full):
    if full:
        cfg = CLIPConfig()  # ViT-B/32: text 512 wide, vision 768 wide, 12 layers each, projection 512
    else:
        cfg = CLIPConfig(
            text_config=dict(hidden_size=8, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                             max_position_embeddings=77, vocab_size=49408, bos_token_id=49406, eos_token_id=49407,
                             pad_token_id=1),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=224, patch_size=32),
            projection_dim=16,
        )
    cfg.text_config.eos_token_id = 49407
    cfg.text_config.bos_token_id = 49406
    # the single-tower models (vision_model.onnx, text_model.onnx) read projection_dim from their own config
    cfg.text_config.projection_dim = cfg.projection_dim
    cfg.vision_config.projection_dim = cfg.projection_dim
    cfg._attn_implementation = "eager"
    return cfg


def clip_processor_flat():
    """preprocessor_config.json as the published exports carry it: flat, sizes as integers."""
    return {
        "crop_size": 224,
        "do_center_crop": True,
        "do_normalize": True,
        "do_resize": True,
        "feature_extractor_type": "CLIPFeatureExtractor",
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "size": 224,
    }


def build_clip(out, full):
    torch.manual_seed(SEED)
    cfg = clip_config(full)
    model = CLIPModel(cfg).eval()
    round_params(model)
    with torch.no_grad():
        # real checkpoints learn their scale (OpenAI: log(100)); config.json keeps the init value 2.6592
        model.logit_scale.fill_(math.log(100.0))
    out.mkdir(parents=True, exist_ok=True)
    cfg_dict = cfg.to_dict()
    (out / "config.json").write_text(json.dumps(cfg_dict, indent=2, default=str))
    (out / "preprocessor_config.json").write_text(json.dumps(clip_processor_flat(), indent=2))
    tok = clip_tokenizer("<|endoftext|>", 77)
    save_tokenizer(tok, out)

    ids = tok(["a photo of a cat", "a dog"], padding="max_length", max_length=77, return_tensors="pt")
    px = torch.randn(1, 3, 224, 224)
    onnx_dir = out / "onnx"
    export(ClipFull(model), (ids["input_ids"], px, ids["attention_mask"]), onnx_dir / "model.onnx",
           ["input_ids", "pixel_values", "attention_mask"],
           ["logits_per_image", "logits_per_text", "text_embeds", "image_embeds"],
           {"input_ids": {0: "text_batch_size", 1: "sequence_length"},
            "attention_mask": {0: "text_batch_size", 1: "sequence_length"},
            "pixel_values": {0: "image_batch_size"},
            "logits_per_image": {0: "image_batch_size", 1: "text_batch_size"},
            "logits_per_text": {0: "text_batch_size", 1: "image_batch_size"},
            "text_embeds": {0: "text_batch_size"}, "image_embeds": {0: "image_batch_size"}})
    vision = CLIPVisionModelWithProjection(cfg.vision_config)
    vision.vision_model.load_state_dict(model.vision_model.state_dict())
    vision.visual_projection.load_state_dict(model.visual_projection.state_dict())
    vision.eval()
    export(ClipVision(vision), (px,), onnx_dir / "vision_model.onnx", ["pixel_values"],
           ["image_embeds", "last_hidden_state"],
           {"pixel_values": {0: "batch_size"}, "image_embeds": {0: "batch_size"},
            "last_hidden_state": {0: "batch_size"}})
    text = CLIPTextModelWithProjection(cfg.text_config)
    text.text_model.load_state_dict(model.text_model.state_dict())
    text.text_projection.load_state_dict(model.text_projection.state_dict())
    text.eval()
    export(ClipText(text), (ids["input_ids"], ids["attention_mask"]), onnx_dir / "text_model.onnx",
           ["input_ids", "attention_mask"], ["text_embeds", "last_hidden_state"],
           {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
            "text_embeds": {0: "batch_size"}, "last_hidden_state": {0: "batch_size", 1: "sequence_length"}})
    for name in ["model.onnx", "vision_model.onnx", "text_model.onnx"]:
        quantize(onnx_dir / name)
    return model, tok


# ------------------------------------------------------------------------------------------ OWL-ViT


class OwlFull(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, pixel_values, attention_mask):
        o = self.m(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        return o.logits, o.pred_boxes, o.text_embeds, o.image_embeds


def owl_config(full):
    if full:
        cfg = OwlViTConfig()  # OWL-ViT B/32 at 768 px
    else:
        cfg = OwlViTConfig(
            text_config=dict(hidden_size=8, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                             max_position_embeddings=16, vocab_size=49408, bos_token_id=49406, eos_token_id=49407,
                             pad_token_id=0),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=768, patch_size=32),
            projection_dim=8,  # OWL-ViT's class head needs projection_dim == text hidden_size
        )
    cfg._attn_implementation = "eager"
    return cfg


def owl_processor_nested():
    """processor_config.json as newer transformers versions write it: nested, sizes as dicts."""
    ip = {
        "crop_size": {"height": 768, "width": 768},
        "do_center_crop": False,
        "do_convert_rgb": True,
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "OwlViTImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "resample": 3,
        "rescale_factor": 1 / 255,
        "size": {"height": 768, "width": 768},
    }
    return {"image_processor": ip, "processor_class": "OwlViTProcessor"}


def build_owlvit(out, full):
    torch.manual_seed(SEED + 1)
    cfg = owl_config(full)
    model = OwlViTForObjectDetection(cfg).eval()
    if not full:
        # Random weights saturate: near-uniform random attention gives every patch the same features, and
        # random heads give every box the whole image and every score ~0 or ~1. Damp the attention
        # outputs and scale the heads down so that scores and boxes vary across patches and prompts.
        with torch.no_grad():
            for layer in model.owlvit.vision_model.encoder.layers:
                layer.self_attn.out_proj.weight.mul_(0.1)
            model.box_head.dense2.weight.mul_(0.01)
            model.box_head.dense2.bias.zero_()
            model.class_head.logit_scale.weight.zero_()
            model.class_head.logit_scale.bias.fill_(10.0)
            model.class_head.logit_shift.weight.zero_()
            model.class_head.logit_shift.bias.fill_(-0.6)
    round_params(model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    (out / "processor_config.json").write_text(json.dumps(owl_processor_nested(), indent=2))
    tok = clip_tokenizer("!", 16)
    save_tokenizer(tok, out)
    ids = tok(OWL_PROMPTS[:2], padding="max_length", max_length=16, return_tensors="pt")
    size = cfg.vision_config.image_size
    px = torch.randn(1, 3, size, size)
    onnx_dir = out / "onnx"
    export(OwlFull(model), (ids["input_ids"], px, ids["attention_mask"]), onnx_dir / "model.onnx",
           ["input_ids", "pixel_values", "attention_mask"], ["logits", "pred_boxes", "text_embeds", "image_embeds"],
           {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
            "pixel_values": {0: "image_batch_size"},
            "logits": {0: "image_batch_size", 2: "batch_size"}, "pred_boxes": {0: "image_batch_size"},
            "text_embeds": {0: "image_batch_size", 1: "batch_size"}, "image_embeds": {0: "image_batch_size"}})
    quantize(onnx_dir / "model.onnx")
    return model, tok


# ------------------------------------------------------------------------------------------ images


def make_images(dst):
    import skimage

    src = Path(skimage.__file__).parent / "data"
    dst.mkdir(parents=True, exist_ok=True)
    for name, (f, how) in IMAGES.items():
        im = Image.open(src / f)
        if how == "copy":
            shutil.copy(src / f, dst / name)
            continue
        if how == "rgb":
            im = im.convert("RGB")
        elif how == "portrait":
            im = im.convert("RGB").crop((120, 0, 420, 512))
        elif how == "gray":
            im = im.convert("L")
        elif how in TRANSPARENT:
            TRANSPARENT[how](im).save(dst / name)
            continue
        # 4:4:4 (no chroma subsampling): the parity tests then measure the model pipeline, not how
        # libjpeg-turbo (PIL) and zune-jpeg (promptcam) upsample chroma, which differ by a few levels
        im.save(dst / name, quality=90, subsampling=0)


def with_alpha_rgba(im):
    """Alpha 200 on the left half; on the right half a vertical ramp from 0 (top) to 255 (bottom)."""
    rgb = np.asarray(im.convert("RGB").crop((100, 0, 500, 400)).resize((352, 352), Image.BICUBIC))
    h, w = rgb.shape[:2]
    alpha = np.full((h, w), 200, dtype=np.uint8)
    alpha[:, w // 2:] = np.round(np.linspace(0, 255, h))[:, None].astype(np.uint8)
    return Image.fromarray(np.dstack([rgb, alpha]), "RGBA")


def with_alpha_palette(im):
    """85 colours, each three times in the palette: opaque, alpha 110 (the left third of the image)
    and alpha 0 (a band along the bottom); the alphas go into the PNG's tRNS chunk."""
    q = im.convert("RGB").crop((60, 0, 360, 300)).resize((352, 352), Image.BICUBIC).quantize(
        colors=85, dither=Image.Dither.NONE)
    idx = np.asarray(q).astype(np.uint8)
    h, w = idx.shape
    idx = idx.copy()
    idx[:, : w // 3] += 85
    idx[h - h // 6:, :] = idx[h - h // 6:, :] % 85 + 170
    pal = q.getpalette()[: 85 * 3]
    out = Image.fromarray(idx, "P")
    out.putpalette(pal * 3)
    out.info["transparency"] = bytes([255] * 85 + [110] * 85 + [0] * 85)
    return out


def with_alpha_la(im):
    """Grayscale with a vignette: alpha 255 in the middle falling to ~30 in the corners."""
    gray = np.asarray(im.convert("L").resize((352, 352), Image.BICUBIC))
    h, w = gray.shape
    y, x = np.mgrid[0:h, 0:w]
    r = np.hypot(x - (w - 1) / 2, y - (h - 1) / 2) / np.hypot((w - 1) / 2, (h - 1) / 2)
    alpha = np.clip(np.round(255 - 225 * r), 0, 255).astype(np.uint8)
    return Image.fromarray(np.dstack([gray, alpha]), "LA")


TRANSPARENT = {"rgba": with_alpha_rgba, "palette": with_alpha_palette, "la": with_alpha_la}


def load_image(path):
    im = Image.open(path)
    im.load()
    return im


# ------------------------------------------------------------------------------------------ references


def pixel_sample(pv, n=2048):
    """A fixed pseudo-random sample of the pixel tensor plus whole-tensor statistics."""
    flat = np.asarray(pv, dtype=np.float64).reshape(-1)
    rng = np.random.default_rng(7)
    idx = np.sort(rng.choice(flat.size, size=min(n, flat.size), replace=False))
    return {
        "shape": list(np.asarray(pv).shape),
        "indices": idx.tolist(),
        "values": [round(float(v), 6) for v in flat[idx]],
        "mean": float(flat.mean()),
        "abs_mean": float(np.abs(flat).mean()),
    }


def exact_input(im, width, height, mean, std):
    """A pixel tensor both sides compute bit-identically: nearest-neighbour sampling with integer
    indices (src = dst * size // out), then transformers' rescale (f64 multiply, cast to f32) and
    normalize (f32). Used to compare the quantized models with onnxruntime on the same input, since
    dynamic int8 quantization amplifies the one-level rounding differences of two resamplers."""
    rgb = convert_to_rgb(im, return_numpy=True)  # transparency onto white, as the processors do
    ys = (np.arange(height) * rgb.shape[0]) // height
    xs = (np.arange(width) * rgb.shape[1]) // width
    u8 = rgb[ys][:, xs].transpose(2, 0, 1)
    x = (u8.astype(np.float64) * (1 / 255)).astype(np.float32)
    m = np.array(mean, dtype=np.float32)[:, None, None]
    s = np.array(std, dtype=np.float32)[:, None, None]
    return ((x - m) / s)[None].astype(np.float32)


def softmax(x):
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def tokens_reference(tok_clip, tok_owl):
    out = []
    for s in TOKEN_STRINGS:
        c = tok_clip(s, padding="max_length", max_length=77, truncation=True)
        o = tok_owl(s, padding="max_length", max_length=16, truncation=True)
        out.append({"text": s, "clip": {"input_ids": c["input_ids"], "attention_mask": c["attention_mask"]},
                    "owlvit": {"input_ids": o["input_ids"], "attention_mask": o["attention_mask"]}})
    return out


def clip_reference(model, tok, model_dir, images_dir):
    proc = CLIPImageProcessorPil(**{k: v for k, v in clip_processor_flat().items() if k != "feature_extractor_type"})
    text = tok(CLIP_PROMPTS, padding="max_length", max_length=77, return_tensors="pt")
    sess = {n: ort.InferenceSession(str(model_dir / "onnx" / f"{n}_quantized.onnx"), providers=["CPUExecutionProvider"])
            for n in ["model", "vision_model", "text_model"]}
    np_ids = text["input_ids"].numpy().astype(np.int64)
    np_mask = text["attention_mask"].numpy().astype(np.int64)
    q_text = sess["text_model"].run(["text_embeds"], {"input_ids": np_ids, "attention_mask": np_mask})[0]
    q_text = q_text / np.linalg.norm(q_text, axis=-1, keepdims=True)
    results = []
    for name in IMAGES:
        im = load_image(images_dir / name)
        pv = proc(images=im, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            o = model(input_ids=text["input_ids"], pixel_values=pv, attention_mask=text["attention_mask"])
        logits = o.logits_per_image[0].numpy()
        sims = (o.image_embeds @ o.text_embeds.T)[0].numpy()
        # quantized: the separate towers and the combined model, as onnxruntime runs them
        qi = sess["vision_model"].run(["image_embeds"], {"pixel_values": pv.numpy()})[0]
        qi = qi / np.linalg.norm(qi, axis=-1, keepdims=True)
        q_sims = (qi @ q_text.T)[0]
        qm = sess["model"].run(None, {"input_ids": np_ids, "pixel_values": pv.numpy(), "attention_mask": np_mask})
        qm_logits = qm[0][0]
        cfg = clip_processor_flat()
        ex = exact_input(im, 224, 224, cfg["image_mean"], cfg["image_std"])
        qe = sess["vision_model"].run(["image_embeds"], {"pixel_values": ex})[0]
        qe = qe / np.linalg.norm(qe, axis=-1, keepdims=True)
        qe_sims = (qe @ q_text.T)[0]
        qme = sess["model"].run(None, {"input_ids": np_ids, "pixel_values": ex, "attention_mask": np_mask})[0][0]
        results.append({
            "image": name,
            "size": [im.width, im.height],
            "mode": im.mode,
            "pixel_values": pixel_sample(pv.numpy()),
            "fp32": {"scores": softmax(logits).tolist(), "similarities": sims.tolist()},
            "quantized_towers": {"scores": softmax(100.0 * q_sims).tolist(), "similarities": q_sims.tolist()},
            "quantized_model": {"scores": softmax(qm_logits).tolist(),
                                "similarities": (qm_logits / 100.0).tolist()},
            "quantized_towers_exact_input": {"scores": softmax(100.0 * qe_sims).tolist(),
                                             "similarities": qe_sims.tolist()},
            "quantized_model_exact_input": {"scores": softmax(qme).tolist(), "similarities": (qme / 100.0).tolist()},
        })
    return {
        "generated_by": f"models/make_fixtures.py with transformers {transformers.__version__}, torch {torch.__version__}, onnxruntime {ort.__version__}",
        "logit_scale": float(model.logit_scale.exp()),
        "config_logit_scale_init": float(math.exp(model.config.logit_scale_init_value)),
        "prompts": CLIP_PROMPTS,
        "input_ids": np_ids.tolist(),
        "images": results,
    }


def detections(res, prompts):
    dets = [{"prompt": prompts[int(l)], "score": float(s), "box": [float(x) for x in b]}
            for s, l, b in zip(res["scores"], res["labels"], res["boxes"])]
    dets.sort(key=lambda d: -d["score"])
    return dets


def pick_threshold(scores, exact_scores, lo, hi):
    """A threshold in the widest gap between the fp32 scores within [lo, hi] that keeps the margins
    owl_reference asserts (0.005 from every fp32 score, 0.0005 from every exact-input score): the
    admissible point (4 decimals) nearest the gap's middle."""
    s = sorted(x for x in scores if lo <= x <= hi)
    best = None
    for a, b in zip(s, s[1:]):
        ok = [t for t in np.round(np.arange(a + 0.005, b - 0.005, 0.0001), 4)
              if a + 0.005 <= t <= b - 0.005 and all(abs(e - t) >= 0.0005 for e in exact_scores)]
        if ok and (best is None or b - a > best[0]):
            best = (b - a, float(min(ok, key=lambda t: abs(t - (a + b) / 2))))
    assert best, f"no threshold in [{lo}, {hi}] clears the margins: pass --threshold or rescale the heads"
    print(f"{len(s)} fp32 scores in [{lo}, {hi}]; widest admissible gap {best[0]:.4f}, threshold {best[1]}")
    return best[1]


def owl_reference(model, tok, model_dir, images_dir, threshold):
    cfg = owl_processor_nested()["image_processor"]
    proc = OwlViTImageProcessorPil(**{k: v for k, v in cfg.items() if k != "image_processor_type"})
    text = tok(OWL_PROMPTS, padding="max_length", max_length=16, return_tensors="pt")
    sess = ort.InferenceSession(str(model_dir / "onnx" / "model_quantized.onnx"), providers=["CPUExecutionProvider"])

    class Out:
        def __init__(self, logits, pred_boxes):
            self.logits, self.pred_boxes = logits, pred_boxes

    runs = []
    fp32_scores = []
    exact_scores = []
    for name in IMAGES:
        im = load_image(images_dir / name)
        pv = proc(images=im, return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            o = model(input_ids=text["input_ids"], pixel_values=pv, attention_mask=text["attention_mask"])
        q = sess.run(["logits", "pred_boxes"], {"input_ids": text["input_ids"].numpy(), "pixel_values": pv.numpy(),
                                                "attention_mask": text["attention_mask"].numpy()})
        fp, qo = Out(o.logits, o.pred_boxes), Out(torch.from_numpy(q[0]), torch.from_numpy(q[1]))
        fp32_scores += torch.sigmoid(fp.logits.max(-1).values).reshape(-1).tolist()
        ex = exact_input(im, cfg["size"]["width"], cfg["size"]["height"], cfg["image_mean"], cfg["image_std"])
        qe = sess.run(["logits", "pred_boxes"], {"input_ids": text["input_ids"].numpy(), "pixel_values": ex,
                                                 "attention_mask": text["attention_mask"].numpy()})
        qe = Out(torch.from_numpy(qe[0]), torch.from_numpy(qe[1]))
        exact_scores += torch.sigmoid(qe.logits.max(-1).values).reshape(-1).tolist()
        runs.append((name, im, pv, fp, qo, qe))
    if threshold is None:
        threshold = pick_threshold(fp32_scores, exact_scores, 0.5, 0.8)
    # the parity tests match detections by score: no score they compare (fp32 after each side's own
    # preprocessing; quantized on the exact input) may sit close to the threshold, or a rounding
    # difference between runtimes would add or drop a detection. The quantized detections after real
    # preprocessing are recorded, not compared: int8 amplifies the resamplers' differences
    close = [s for s in fp32_scores if abs(s - threshold) < 0.005]
    assert not close, f"scores too close to threshold {threshold}: {close[:5]}; pick another threshold"
    # on bit-identical inputs tract and onnxruntime agree to ~1e-6: a small margin is enough there
    close = [s for s in exact_scores if abs(s - threshold) < 0.0005]
    assert not close, f"exact-input scores too close to threshold {threshold}: {close[:5]}"
    results = []
    for name, im, pv, fp, qo, qe in runs:
        target = [(im.height, im.width)]
        post = lambda out: detections(
            proc.post_process_object_detection(out, threshold=threshold, target_sizes=target)[0], OWL_PROMPTS)
        results.append({"image": name, "size": [im.width, im.height], "pixel_values": pixel_sample(pv.numpy()),
                        "fp32": post(fp), "quantized": post(qo), "quantized_exact_input": post(qe)})
    labels = {d["prompt"] for r in results for d in r["fp32"]}
    assert len(labels) >= 3, f"reference detections span only {labels}: rescale the heads"
    counts = [len(r["fp32"]) for r in results]
    print(f"owlvit threshold {threshold}: detections per image {counts}, prompts {sorted(labels)}")
    assert sum(counts) >= 10 and max(counts) < 60, f"detections per image {counts}: rescale the heads"
    return {
        "generated_by": f"models/make_fixtures.py with transformers {transformers.__version__}, torch {torch.__version__}, onnxruntime {ort.__version__}",
        "prompts": OWL_PROMPTS,
        "threshold": threshold,
        "input_ids": text["input_ids"].tolist(),
        "images": results,
    }


def preprocess_reference(images_dir):
    """Pixel tensors for processor settings of other checkpoints (ViT-L/14-336, a non-square OWL-ViT-like
    resize, no crop), so the preprocessing is checked beyond the two fixture models' settings."""
    mean, std = [0.5, 0.4, 0.3], [0.2, 0.25, 0.3]
    cases = {
        "clip_336": (CLIPImageProcessorPil, dict(size={"shortest_edge": 336}, crop_size={"height": 336, "width": 336},
                                                 resample=3)),
        "square_320_bilinear": (OwlViTImageProcessorPil, dict(size={"height": 320, "width": 320}, do_center_crop=False,
                                                             resample=2, image_mean=mean, image_std=std)),
        "clip_160_crop_128": (CLIPImageProcessorPil, dict(size={"shortest_edge": 160},
                                                          crop_size={"height": 128, "width": 128}, resample=3)),
    }
    out = {}
    for case, (cls, kw) in cases.items():
        proc = cls(**kw)
        d = proc.to_dict()
        cfg = {k: d[k] for k in ["size", "crop_size", "do_center_crop", "do_resize", "do_rescale", "rescale_factor",
                                 "do_normalize", "image_mean", "image_std", "resample", "do_convert_rgb"] if k in d}
        cfg["image_processor_type"] = cls.__name__[:-3]
        out[case] = {"config": cfg, "images": {}}
        for name in IMAGES:
            pv = proc(images=load_image(images_dir / name), return_tensors="np")["pixel_values"]
            out[case]["images"][name] = pixel_sample(pv)
    return out


def rgb_reference(images_dir, refs_dir):
    """What transformers' convert_to_rgb makes of each fixture image (the processors' first step):
    a fixed sample of the RGB pixels and the sum of all of them. Also writes alpha_ramp.png, every
    (colour level, alpha) pair once (R = x, G = 255 - x, B = 7x mod 256, alpha = y), and its
    conversion alpha_ramp_rgb.png, for an exact check of the compositing arithmetic."""
    x, y = np.meshgrid(np.arange(256), np.arange(256))
    ramp = np.stack([x, 255 - x, (x * 7) % 256, y], -1).astype(np.uint8)
    Image.fromarray(ramp, "RGBA").save(refs_dir / "alpha_ramp.png")
    Image.fromarray(convert_to_rgb(load_image(refs_dir / "alpha_ramp.png"), return_numpy=True), "RGB").save(
        refs_dir / "alpha_ramp_rgb.png")
    images = []
    for name in IMAGES:
        im = load_image(images_dir / name)
        rgb = convert_to_rgb(im, return_numpy=True)
        flat = rgb.reshape(-1).astype(np.int64)
        idx = sample(flat, 1024, 5)
        dropped = np.asarray(im.convert("RGB")).reshape(-1).astype(np.int64)
        images.append({"image": name, "mode": im.mode, "transparency": "transparency" in im.info,
                       "size": [im.width, im.height], "sum": int(flat.sum()), "indices": idx.tolist(),
                       "values": flat[idx].tolist(),
                       # how far PIL's convert("RGB") (alpha dropped) is from it: 0 for opaque images
                       "differs_from_alpha_dropped": int((dropped != flat).sum())})
    return {"generated_by": f"models/make_fixtures.py with transformers {transformers.__version__}, "
                            f"Pillow {Image.__version__}",
            "what": "transformers.image_transforms.convert_to_rgb(image, return_numpy=True), flattened HxWx3",
            "images": images}


def static_quantized_fixtures(out):
    """onnxruntime's static quantization, in its QDQ and QOperator formats, of a small attention
    block: promptcam must refuse both with a clear message (tract mis-runs QDQ softmax inputs and
    lacks the QLinear* ops)."""
    from onnx import TensorProto, helper
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, quantize_static

    rng = np.random.default_rng(3)
    w1 = helper.make_tensor("w1", TensorProto.FLOAT, [16, 16], rng.standard_normal(256).astype(np.float32))
    w2 = helper.make_tensor("w2", TensorProto.FLOAT, [16, 16], rng.standard_normal(256).astype(np.float32))
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Softmax", ["h"], ["p"], axis=-1),
         helper.make_node("MatMul", ["p", "w2"], ["y"])],
        "attention_block",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16])],
        [w1, w2],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    out.mkdir(parents=True, exist_ok=True)
    fp = out / "attention_block.onnx"
    onnx.save(model, str(fp))

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.data = iter([{"x": rng.standard_normal((1, 8, 16)).astype(np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.data, None)

    quantize_static(str(fp), str(out / "attention_block_qdq.onnx"), Reader(), quant_format=QuantFormat.QDQ)
    quantize_static(str(fp), str(out / "attention_block_qoperator.onnx"), Reader(), quant_format=QuantFormat.QOperator)
    fp.unlink()


# ------------------------------------------------------------------------------------------ CLIPSeg

CLIPSEG_PROMPTS = ["a cat", "the sky", "a person in a space suit"]
CLIPSEG_IMAGES = ["chelsea.png", "astronaut_portrait.png", "camera_gray.png", "transparent_rgba.png",
                  "transparent_palette.png", "transparent_la.png"]
CLIPSEG_THRESHOLDS = [0.5, 0.3]
# a region of interest [x0, y0, x1, y1] for one image, to check coverage within it
CLIPSEG_ROI = ("chelsea.png", [100, 50, 400, 250])


class ClipSegFull(torch.nn.Module):
    """The stock graph, as the published export: one (image, prompt) pair per batch row."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, pixel_values, attention_mask):
        o = self.m(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        return o.logits, o.conditional_embeddings, o.pooled_output


class ClipSegText(torch.nn.Module):
    """Text side: prompt tokens -> conditional embeddings (run once per prompt set)."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, attention_mask):
        return self.m.clip.get_text_features(input_ids=input_ids, attention_mask=attention_mask).pooler_output


class ClipSegVision(torch.nn.Module):
    """Image side: pixels -> the CLIP activations the decoder reads, stacked [layers, batch, tokens, width]."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, pixel_values):
        o = self.m.clip.get_image_features(pixel_values=pixel_values, output_hidden_states=True)
        return torch.stack([o.hidden_states[i + 1] for i in self.m.extract_layers])


class ClipSegDecoder(torch.nn.Module):
    """Decoder: one image's activations (batch 1) x P conditional embeddings -> P logit maps. The
    activations broadcast against the prompts in the FiLM step, so the image side is not repeated."""

    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, activations, conditional_embeddings):
        acts = tuple(activations[i] for i in range(activations.shape[0]))
        return self.m.decoder(acts, conditional_embeddings).logits


def clipseg_config(full):
    from transformers import CLIPSegConfig

    if full:
        # clipseg-rd64-refined: CLIP ViT-B/16 vision (224, position embeddings interpolated to 352), text 512,
        # projection 512, decoder reduce_dim 64 on layers 3, 6, 9, complex transposed convolution
        cfg = CLIPSegConfig(
            vision_config=dict(patch_size=16, image_size=224),
            extract_layers=[3, 6, 9], reduce_dim=64, use_complex_transposed_convolution=True,
        )
    else:
        cfg = CLIPSegConfig(
            text_config=dict(hidden_size=4, intermediate_size=16, num_hidden_layers=2, num_attention_heads=1,
                             max_position_embeddings=77, vocab_size=49408, bos_token_id=49406, eos_token_id=49407,
                             pad_token_id=1),
            # image_size 224 with 16 px patches as rd64-refined: 352 px inputs interpolate the position embeddings
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=2,
                               image_size=224, patch_size=16),
            projection_dim=8, extract_layers=[0, 2], reduce_dim=16, decoder_num_attention_heads=2,
            decoder_intermediate_size=32, use_complex_transposed_convolution=True,
        )
    cfg.text_config.eos_token_id = 49407
    cfg.text_config.bos_token_id = 49406
    cfg._attn_implementation = "eager"
    return cfg


def clipseg_processor_flat():
    """preprocessor_config.json of clipseg-rd64-refined: ViT processor, 352x352 without crop, bilinear, ImageNet mean/std."""
    return {
        "do_normalize": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.485, 0.456, 0.406],
        "image_processor_type": "ViTImageProcessor",
        "image_std": [0.229, 0.224, 0.225],
        "processor_class": "CLIPSegProcessor",
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": 352, "width": 352},
    }


def build_clipseg(out, full):
    """models/tiny/clipseg (or the full-size rd64-refined shape): the stock whole-model graph plus the split
    text / vision / decoder graphs promptcam prefers (the image side once per frame, the text side once)."""
    from transformers import CLIPSegForImageSegmentation

    torch.manual_seed(SEED + 2)
    cfg = clipseg_config(full)
    model = CLIPSegForImageSegmentation(cfg).eval()
    tok = clip_tokenizer("<|endoftext|>", 77)
    if not full:
        # Random weights give the same saturated mask for every image and prompt: a 16x16 tile pattern from
        # the transposed convolutions, and near-identical tiny text embeddings. Damp the vision attention
        # (patches keep their own features), make the transposed convolutions plain block upsampling (the
        # mask follows the 22x22 decoder map), and centre the FiLM conditioning on the mean embedding of a
        # set of prompts, scaled up, so masks differ across images and prompts around probability 0.5.
        with torch.no_grad():
            for layer in model.clip.vision_model.encoder.layers:
                layer.self_attn.out_proj.weight.mul_(0.1)
            model.clip.text_projection.weight.mul_(10.0)
            model.decoder.film_mul.weight.mul_(12.0)
            model.decoder.film_add.weight.mul_(5.0)
            tc = model.decoder.transposed_convolution
            for m in tc:
                if getattr(m, "bias", None) is not None:
                    m.bias.zero_()
            for m in (tc[2], tc[4]):
                m.weight.copy_(m.weight.mean(dim=(2, 3), keepdim=True).expand_as(m.weight))
            ids = tok(CLIP_PROMPTS + OWL_PROMPTS + CLIPSEG_PROMPTS, padding="max_length", max_length=77,
                      return_tensors="pt")
            mean = model.clip.get_text_features(input_ids=ids["input_ids"],
                                                attention_mask=ids["attention_mask"]).pooler_output.mean(0)
            for f in (model.decoder.film_mul, model.decoder.film_add):
                f.bias.copy_(-f.weight @ mean)
    round_params(model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    (out / "preprocessor_config.json").write_text(json.dumps(clipseg_processor_flat(), indent=2))
    save_tokenizer(tok, out)
    ids = tok(CLIPSEG_PROMPTS[:2], padding="max_length", max_length=77, return_tensors="pt")
    px = torch.randn(2, 3, 352, 352)
    onnx_dir = out / "onnx"
    export(ClipSegFull(model), (ids["input_ids"], px, ids["attention_mask"]), onnx_dir / "model.onnx",
           ["input_ids", "pixel_values", "attention_mask"], ["logits", "conditional_embeddings", "pooled_output"],
           {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
            "pixel_values": {0: "batch_size"}, "logits": {0: "batch_size"},
            "conditional_embeddings": {0: "batch_size"}, "pooled_output": {0: "batch_size"}})
    export(ClipSegText(model), (ids["input_ids"], ids["attention_mask"]), onnx_dir / "text_model.onnx",
           ["input_ids", "attention_mask"], ["conditional_embeddings"],
           {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"}, "conditional_embeddings": {0: "batch_size"}})
    export(ClipSegVision(model), (px[:1],), onnx_dir / "vision_model.onnx", ["pixel_values"], ["activations"],
           {"pixel_values": {0: "batch_size"}, "activations": {1: "batch_size"}})
    with torch.no_grad():
        acts = ClipSegVision(model)(px[:1])
        cond = ClipSegText(model)(ids["input_ids"], ids["attention_mask"])
    export(ClipSegDecoder(model), (acts, cond), onnx_dir / "decoder_model.onnx",
           ["activations", "conditional_embeddings"], ["logits"],
           {"conditional_embeddings": {0: "num_prompts"}, "logits": {0: "num_prompts"}})
    # dynamic int8 for the per-frame graphs; the text side runs once per prompt set (its fp32 file serves
    # both precisions) and the tiny whole model's int8 copy would only repeat the token embedding table
    for name in ["vision_model.onnx", "decoder_model.onnx"] + (["model.onnx", "text_model.onnx"] if full else []):
        quantize(onnx_dir / name)
    # the split graphs must reproduce the stock graph (the decoder broadcasts one image over the prompts)
    with torch.no_grad():
        whole = model(input_ids=ids["input_ids"], pixel_values=px[:1].repeat(2, 1, 1, 1),
                      attention_mask=ids["attention_mask"]).logits
        split = ClipSegDecoder(model)(acts, cond)
    assert (whole - split).abs().max() < 1e-4, (whole - split).abs().max()
    return model, tok


def sample(flat, n, seed):
    rng = np.random.default_rng(seed)
    return np.sort(rng.choice(flat.size, size=min(n, flat.size), replace=False))


def clipseg_reference(model, tok, images_dir):
    """Per image and prompt: the sigmoid mask at the model resolution (a fixed sample of pixels, plus whole-mask
    statistics) and, on the mask resized to the original image (bilinear upsampling of the logits,
    align_corners=False, no antialias, then sigmoid), the coverage at each threshold and the maximum."""
    from transformers import CLIPSegProcessor, ViTImageProcessorPil

    ip = ViTImageProcessorPil(**{k: v for k, v in clipseg_processor_flat().items()
                                 if k not in ("image_processor_type", "processor_class")},
                              do_convert_rgb=True)  # as promptcam: grayscale and RGBA frames become RGB
    proc = CLIPSegProcessor(image_processor=ip, tokenizer=tok)
    results = []
    for name in CLIPSEG_IMAGES:
        im = load_image(images_dir / name)
        inputs = proc(text=CLIPSEG_PROMPTS, images=[im] * len(CLIPSEG_PROMPTS), padding="max_length",
                      max_length=77, return_tensors="pt")
        with torch.no_grad():
            logits = model(**inputs).logits  # [prompts, 352, 352]
        up = torch.nn.functional.interpolate(logits[:, None], size=(im.height, im.width), mode="bilinear",
                                             align_corners=False)[:, 0]
        probs, up_probs = torch.sigmoid(logits).numpy(), torch.sigmoid(up).numpy()
        per_prompt = []
        for q, prompt in enumerate(CLIPSEG_PROMPTS):
            flat = probs[q].reshape(-1).astype(np.float64)
            idx = sample(flat, 1000, 11 + q)
            p = up_probs[q]
            entry = {
                "prompt": prompt,
                "mask_shape": list(probs[q].shape),
                "mask_indices": idx.tolist(),
                "mask_values": [round(float(v), 6) for v in flat[idx]],
                "mask_mean": float(flat.mean()),
                "mask_max": float(flat.max()),
                "max": float(p.max()),
                "coverage": {str(t): float((p > t).mean()) for t in CLIPSEG_THRESHOLDS},
                # pixels whose probability sits within 0.002 of a threshold: a resampling difference may flip them
                "near_threshold": {str(t): float((np.abs(p - t) < 0.002).mean()) for t in CLIPSEG_THRESHOLDS},
            }
            if name == CLIPSEG_ROI[0]:
                x0, y0, x1, y1 = CLIPSEG_ROI[1]
                r = p[y0:y1, x0:x1]
                entry["roi"] = {"box": CLIPSEG_ROI[1], "max": float(r.max()),
                                "coverage": {str(t): float((r > t).mean()) for t in CLIPSEG_THRESHOLDS}}
            per_prompt.append(entry)
        cov = [r["coverage"]["0.5"] for r in per_prompt]
        print(f"clipseg {name}: coverage at 0.5 {['%.3f' % c for c in cov]}, "
              f"mask mean {['%.3f' % r['mask_mean'] for r in per_prompt]}")
        results.append({"image": name, "size": [im.width, im.height],
                        "pixel_values": pixel_sample(inputs["pixel_values"][:1].numpy(), 1024), "results": per_prompt})
    covs = [r["coverage"]["0.5"] for im in results for r in im["results"]]
    # the tests must check something: coverages neither all empty nor all full, and differing across prompts
    assert 0.05 < np.mean(covs) < 0.95 and np.std(covs) > 0.02, f"coverages {covs}: rescale the decoder"
    return {
        "generated_by": f"models/make_fixtures.py with transformers {transformers.__version__}, torch {torch.__version__}",
        "prompts": CLIPSEG_PROMPTS,
        "thresholds": CLIPSEG_THRESHOLDS,
        "resize": "bilinear interpolation of the logits to the image size (align_corners=False, no antialias), then sigmoid",
        "input_ids": inputs["input_ids"].tolist(),
        "images": results,
    }

# ------------------------------------------------------------------------------ OWL at other sizes, OWLv2

# input sizes other than the tiny OWL-ViT's native 768 (grids 15x15 and 12x12 of its 32 px patches)
OWL_SIZES = [480, 384]
OWLV2_PROMPTS = OWL_PROMPTS
# the tiny OWLv2's native size (as the published B/16) and a reduced one
OWLV2_SIZES = [960, 480]


def same_weights(a, b):
    """Whether two ONNX files hold the same initializers (names, shapes and values)."""
    ia = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(a)).graph.initializer}
    ib = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(str(b)).graph.initializer}
    return ia.keys() == ib.keys() and all(
        ia[k].shape == ib[k].shape and np.array_equal(ia[k], ib[k]) for k in ia)


def rebuild_tiny_owlvit(tmp):
    """The committed tiny OWL-ViT, rebuilt from its seed: its export must hold exactly the committed weights, so
    that references computed with it describe the committed files."""
    model, tok = build_owlvit(tmp, False)
    committed = REPO / "models" / "tiny" / "owlvit" / "onnx" / "model.onnx"
    assert same_weights(tmp / "onnx" / "model.onnx", committed), \
        "the rebuilt tiny OWL-ViT differs from models/tiny/owlvit: other torch/transformers versions?"
    return model, tok


def rebuild_tiny_clip(tmp):
    """The committed tiny CLIP, rebuilt from its seed and checked as rebuild_tiny_owlvit checks OWL-ViT."""
    model, tok = build_clip(tmp, False)
    for name in ["model.onnx", "vision_model.onnx", "text_model.onnx"]:
        committed = REPO / "models" / "tiny" / "clip" / "onnx" / name
        assert same_weights(tmp / "onnx" / name, committed), \
            f"the rebuilt tiny CLIP {name} differs from models/tiny/clip: other torch/transformers versions?"
    return model, tok


def graph_box_predictor(self, image_feats, feature_map, interpolate_pos_encoding=False):
    """OwlViTForObjectDetection.box_predictor with compute_box_bias written on the traced feature-map shape
    (as exports traced for dynamic sizes compute it): the exported graph then computes the box bias with
    Shape/Range/Div/Log ops from the image's shape instead of storing it."""
    pred_boxes = self.box_head(image_feats)
    h, w = feature_map.shape[1], feature_map.shape[2]
    xs = torch.arange(1, w + 1, dtype=torch.float32) / w
    ys = torch.arange(1, h + 1, dtype=torch.float32) / h
    xx, yy = torch.meshgrid(xs, ys, indexing="xy")
    coords = torch.clip(torch.stack((xx, yy), dim=-1).reshape(-1, 2), 0.0, 1.0)
    coord_bias = torch.log(coords + 1e-4) - torch.log1p(-coords + 1e-4)
    size = torch.ones_like(coords) / torch.stack([w, h]).to(torch.float32)
    size_bias = torch.log(size + 1e-4) - torch.log1p(-size + 1e-4)
    pred_boxes = pred_boxes + torch.cat([coord_bias, size_bias], dim=-1)
    return self.sigmoid(pred_boxes)


def export_owlvit_variant(module, tok, size, out, dynamic_axes):
    """Exports a tiny OWL-ViT (`module`: an OwlFull) to out/model.onnx as make_fixtures' other exports do, but with
    these dynamic axes: (path, the checked model, the feed it was traced with)."""
    ids = tok(OWL_PROMPTS[:2], padding="max_length", max_length=16, return_tensors="pt")
    px = torch.randn(1, 3, size, size)
    path = out / "model.onnx"
    out.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(module, (ids["input_ids"], px, ids["attention_mask"]), str(path),
                      input_names=["input_ids", "pixel_values", "attention_mask"],
                      output_names=["logits", "pred_boxes", "text_embeds", "image_embeds"],
                      dynamic_axes=dynamic_axes, opset_version=OPSET, do_constant_folding=True, dynamo=False)
    m = onnx.load(str(path))
    onnx.checker.check_model(m)
    feed = {"input_ids": ids["input_ids"].numpy(), "pixel_values": px.numpy(),
            "attention_mask": ids["attention_mask"].numpy()}
    return path, m, feed


def assert_same_as_committed_owlvit(path, feed, names):
    """The export at `path` gives the committed tiny OWL-ViT's outputs `names` on `feed`."""
    committed = REPO / "models" / "tiny" / "owlvit" / "onnx" / "model.onnx"
    for name in names:
        a = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run([name], feed)[0]
        b = ort.InferenceSession(str(committed), providers=["CPUExecutionProvider"]).run([name], feed)[0]
        assert np.abs(a - b).max() < 1e-5, (name, np.abs(a - b).max())


TEXT_AXES = {"input_ids": {0: "batch_size", 1: "sequence_length"},
             "attention_mask": {0: "batch_size", 1: "sequence_length"}}


def export_legacy_owlvit(model, tok, out):
    """The same tiny OWL-ViT exported with the box bias computed in the graph (tests/fixtures/owlvit-graph-bias)."""
    import types

    legacy = OwlViTForObjectDetection(model.config).eval()
    legacy.load_state_dict(model.state_dict())
    legacy.box_predictor = types.MethodType(graph_box_predictor, legacy)
    path, m, feed = export_owlvit_variant(OwlFull(legacy), tok, 768, out,
                                          {**TEXT_AXES, "pixel_values": {0: "image_batch_size"}})
    ops = {n.op_type for n in m.graph.node}
    assert {"Log", "Range"} <= ops, "the export should compute the box bias (Range, Log) in the graph"
    onnx.save_model(m, str(path), save_as_external_data=False)
    # same outputs as the stored-bias export
    assert_same_as_committed_owlvit(path, feed, ["pred_boxes"])
    print(f"{path.relative_to(REPO)}: {path.stat().st_size / 1e6:.1f} MB, box bias computed by {sorted(ops & {'Range', 'Log', 'Sub'})}")


def export_static_owlvit(model, tok, out):
    """The same tiny OWL-ViT exported with a fixed image shape (no dynamic axes on pixel_values, the batch included):
    the exporter then folds `image_embeds[:, :-1].shape`, the target of the class token's broadcast in
    `image_embedder`, into a constant holding the native patch count (tests/fixtures/owlvit-static). The text side
    keeps its dynamic axes, as an export meant for any number of prompts does."""
    size = model.config.vision_config.image_size
    path, m, feed = export_owlvit_variant(OwlFull(model), tok, size, out,
                                          {**TEXT_AXES, "logits": {2: "batch_size"}, "text_embeds": {1: "batch_size"}})
    patches = (size // model.config.vision_config.patch_size) ** 2
    consts = {i.name: onnx.numpy_helper.to_array(i) for i in m.graph.initializer}
    consts.update({n.output[0]: onnx.numpy_helper.to_array(n.attribute[0].t) for n in m.graph.node if n.op_type == "Constant"})
    expand_shapes = [consts[i].tolist() for n in m.graph.node if n.op_type in ("Where", "Equal") for i in n.input
                     if i in consts and consts[i].ndim == 1 and patches in consts[i].tolist()]
    assert expand_shapes, "the fixed-shape export should hold the class-token broadcast's shape as a constant"
    onnx.save_model(m, str(path), save_as_external_data=False)
    assert_same_as_committed_owlvit(path, feed, ["logits", "pred_boxes"])
    print(f"{path.relative_to(REPO)}: {path.stat().st_size / 1e6:.1f} MB, constant broadcast shape(s) {expand_shapes}")


def pick_size_threshold(scores, lo=0.5, hi=0.8):
    """A detection threshold with no score within 0.005 of it, in lo..hi: the middle of the widest gap between
    scores that leaves 10 to 150 detections over the images (the tests must check something)."""
    s = sorted(x for x in scores if lo <= x <= hi)
    gaps = sorted(((b - a, (a + b) / 2) for a, b in zip(s, s[1:])), reverse=True)
    ok = [(w, m) for w, m in gaps if w >= 0.01 and 10 <= sum(x > m for x in scores) <= 150]
    assert ok, f"no threshold in {lo}..{hi} leaves 10 to 150 detections"
    threshold = round(ok[0][1], 4)
    close = [s for s in scores if abs(s - threshold) < 0.005]
    assert not close, f"scores too close to threshold {threshold}: {close[:5]}"
    return threshold


def owl_sizes_reference(model, tok, images_dir, sizes):
    """transformers at other input sizes: the processor resizing to N x N and the model called with
    interpolate_pos_encoding=True (bicubic position embeddings, box bias for the new grid), then
    post_process_object_detection, for each size."""
    cfg = owl_processor_nested()["image_processor"]
    text = tok(OWL_PROMPTS, padding="max_length", max_length=16, return_tensors="pt")
    out = {}
    for size in sizes:
        kw = {k: v for k, v in cfg.items() if k != "image_processor_type"}
        kw["size"] = {"height": size, "width": size}
        proc = OwlViTImageProcessorPil(**kw)
        runs, scores = [], []
        for name in IMAGES:
            im = load_image(images_dir / name)
            pv = proc(images=im, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                o = model(input_ids=text["input_ids"], pixel_values=pv, attention_mask=text["attention_mask"],
                          interpolate_pos_encoding=True)
            assert o.logits.shape[1] == (size // 32) ** 2, o.logits.shape
            scores += torch.sigmoid(o.logits.max(-1).values).reshape(-1).tolist()
            runs.append((name, im, pv, o))
        threshold = pick_size_threshold(scores)
        images = []
        for name, im, pv, o in runs:
            res = proc.post_process_object_detection(o, threshold=threshold, target_sizes=[(im.height, im.width)])[0]
            images.append({"image": name, "size": [im.width, im.height], "pixel_values": pixel_sample(pv.numpy()),
                           "fp32": detections(res, OWL_PROMPTS)})
        counts = [len(i["fp32"]) for i in images]
        labels = {d["prompt"] for i in images for d in i["fp32"]}
        print(f"owlvit at {size}: threshold {threshold}, detections per image {counts}, prompts {sorted(labels)}")
        assert sum(counts) >= 10 and len(labels) >= 2, f"too few detections at {size}: {counts} {labels}"
        emb = model.owlvit.vision_model.embeddings
        with torch.no_grad():
            table = emb.interpolate_pos_encoding(torch.zeros(1, (size // 32) ** 2 + 1, emb.embed_dim), size, size)
        out[str(size)] = {"threshold": threshold, "images": images,
                          "exact_input": raw_patches(model, text, EXACT_IMAGE, size, cfg),
                          "position_embedding": pixel_sample(table.numpy(), 1024)}
    return {
        "generated_by": f"models/make_fixtures.py --owl-sizes with transformers {transformers.__version__}, torch {torch.__version__}",
        "reference": "OwlViTImageProcessorPil(size=N) + OwlViTForObjectDetection(interpolate_pos_encoding=True) + post_process_object_detection",
        "prompts": OWL_PROMPTS,
        "input_ids": text["input_ids"].tolist(),
        "sizes": out,
    }


EXACT_IMAGE = "rocket.png"


def raw_patches(model, text, name, size, cfg):
    """Per-patch sigmoid scores (best query) and boxes on exact_input at `size`: the whole adapted graph checked
    tightly, where detections (0.01 score tolerance) cannot tell interpolation kernels apart on a tiny model."""
    im = load_image(REPO / "tests" / "fixtures" / "images" / name)
    px = torch.from_numpy(exact_input(im, size, size, cfg["image_mean"], cfg["image_std"]))
    native = size == model.config.vision_config.image_size
    with torch.no_grad():
        o = model(input_ids=text["input_ids"], pixel_values=px, attention_mask=text["attention_mask"],
                  interpolate_pos_encoding=not native)
    return {"image": name, "scores": torch.sigmoid(o.logits.max(-1).values)[0].tolist(),
            "boxes": o.pred_boxes[0].reshape(-1).tolist()}


class Owlv2Full(torch.nn.Module):
    def __init__(self, m):
        super().__init__()
        self.m = m

    def forward(self, input_ids, pixel_values, attention_mask):
        o = self.m(input_ids=input_ids, pixel_values=pixel_values, attention_mask=attention_mask)
        return o.logits, o.pred_boxes, o.text_embeds, o.image_embeds, o.objectness_logits


def owlv2_config(full):
    from transformers import Owlv2Config

    if full:
        # OWLv2 B/16 as published: 960 px, 16 px patches (a 60x60 grid), text and vision as OWL-ViT B
        cfg = Owlv2Config(vision_config=dict(image_size=960, patch_size=16))
    else:
        # the real input size, 32 px patches (a 30x30 grid) to keep the tests quick
        cfg = Owlv2Config(
            text_config=dict(hidden_size=8, intermediate_size=32, num_hidden_layers=2, num_attention_heads=2,
                             max_position_embeddings=16, vocab_size=49408, bos_token_id=49406, eos_token_id=49407,
                             pad_token_id=0),
            vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                               image_size=960, patch_size=32),
            projection_dim=8,
        )
    cfg._attn_implementation = "eager"
    return cfg


def owlv2_processor_flat():
    """preprocessor_config.json as the published OWLv2 export carries it."""
    return {
        "do_normalize": True,
        "do_pad": True,
        "do_rescale": True,
        "do_resize": True,
        "image_mean": [0.48145466, 0.4578275, 0.40821073],
        "image_processor_type": "Owlv2ImageProcessor",
        "image_std": [0.26862954, 0.26130258, 0.27577711],
        "processor_class": "Owlv2Processor",
        "resample": 2,
        "rescale_factor": 1 / 255,
        "size": {"height": 960, "width": 960},
    }


def owlv2_processor(size=None):
    from transformers import Owlv2ImageProcessorPil

    kw = {k: v for k, v in owlv2_processor_flat().items() if k not in ("image_processor_type", "processor_class")}
    if size:
        kw["size"] = {"height": size, "width": size}
    return Owlv2ImageProcessorPil(**kw)


def build_owlv2(out, full):
    from transformers import Owlv2ForObjectDetection

    torch.manual_seed(SEED + 3)
    cfg = owlv2_config(full)
    model = Owlv2ForObjectDetection(cfg).eval()
    if not full:
        # as the tiny OWL-ViT: damp the attention and scale the heads so scores and boxes vary
        with torch.no_grad():
            for layer in model.owlv2.vision_model.encoder.layers:
                layer.self_attn.out_proj.weight.mul_(0.1)
            for head in (model.box_head, model.objectness_head):
                head.dense2.weight.mul_(0.01)
                head.dense2.bias.zero_()
            model.class_head.logit_scale.weight.zero_()
            model.class_head.logit_scale.bias.fill_(10.0)
            model.class_head.logit_shift.weight.zero_()
            model.class_head.logit_shift.bias.fill_(-0.6)
    round_params(model)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.json").write_text(json.dumps(cfg.to_dict(), indent=2, default=str))
    (out / "preprocessor_config.json").write_text(json.dumps(owlv2_processor_flat(), indent=2))
    tok = clip_tokenizer("!", 16)
    save_tokenizer(tok, out)
    ids = tok(OWL_PROMPTS[:2], padding="max_length", max_length=16, return_tensors="pt")
    size = cfg.vision_config.image_size
    px = torch.randn(1, 3, size, size)
    onnx_dir = out / "onnx"
    export(Owlv2Full(model), (ids["input_ids"], px, ids["attention_mask"]), onnx_dir / "model.onnx",
           ["input_ids", "pixel_values", "attention_mask"],
           ["logits", "pred_boxes", "text_embeds", "image_embeds", "objectness_logits"],
           {"input_ids": {0: "batch_size", 1: "sequence_length"},
            "attention_mask": {0: "batch_size", 1: "sequence_length"},
            "pixel_values": {0: "image_batch_size"},
            "logits": {0: "image_batch_size", 2: "batch_size"}, "pred_boxes": {0: "image_batch_size"},
            "text_embeds": {0: "image_batch_size", 1: "batch_size"}, "image_embeds": {0: "image_batch_size"},
            "objectness_logits": {0: "image_batch_size"}})
    quantize(onnx_dir / "model.onnx")
    return model, tok


def procedural_image(width, height):
    """A deterministic RGB image with detail at every scale (promptcam's tests build the same pixels), to
    check the Gaussian blur and zoom on an image larger than the model input."""
    y, x = np.mgrid[0:height, 0:width].astype(np.int64)
    r = (x * 7 + y * 3 + (x * y) % 101) % 256
    g = (x * 2 + y * 11 + (x ^ y) % 53) % 256
    b = ((x // 16 + y // 16) % 2) * 200 + (x + y) % 56
    return Image.fromarray(np.stack([r, g, b], axis=-1).astype(np.uint8), "RGB")


PROCEDURAL = (1500, 900)


def owlv2_reference(model, tok, images_dir):
    """Owlv2ImageProcessorPil (pad, Gaussian blur + scipy zoom, normalize) + Owlv2ForObjectDetection
    (interpolate_pos_encoding=True below the native size) + post_process_object_detection (boxes scaled by the
    padded square), at each of OWLV2_SIZES; plus pixel samples for a procedural image larger than the input."""
    text = tok(OWLV2_PROMPTS, padding="max_length", max_length=16, return_tensors="pt")
    sizes = {}
    for size in OWLV2_SIZES:
        proc = owlv2_processor(size)
        native = size == model.config.vision_config.image_size
        runs, scores = [], []
        for name in IMAGES:
            im = load_image(images_dir / name)
            pv = proc(images=im, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                o = model(input_ids=text["input_ids"], pixel_values=pv, attention_mask=text["attention_mask"],
                          interpolate_pos_encoding=not native)
            scores += torch.sigmoid(o.logits.max(-1).values).reshape(-1).tolist()
            runs.append((name, im, pv, o))
        threshold = pick_size_threshold(scores)
        images = []
        for name, im, pv, o in runs:
            res = proc.post_process_object_detection(o, threshold=threshold, target_sizes=[(im.height, im.width)])[0]
            images.append({"image": name, "size": [im.width, im.height], "pixel_values": pixel_sample(pv.numpy()),
                           "objectness_mean": float(torch.sigmoid(o.objectness_logits).mean()),
                           "fp32": detections(res, OWLV2_PROMPTS)})
        big = procedural_image(*PROCEDURAL)
        counts = [len(i["fp32"]) for i in images]
        labels = {d["prompt"] for i in images for d in i["fp32"]}
        print(f"owlv2 at {size}: threshold {threshold}, detections per image {counts}, prompts {sorted(labels)}")
        assert sum(counts) >= 10 and len(labels) >= 2, f"too few detections at {size}: {counts} {labels}"
        sizes[str(size)] = {"threshold": threshold, "images": images,
                            "exact_input": raw_patches(model, text, EXACT_IMAGE, size, owlv2_processor_flat()),
                            "procedural_pixel_values": pixel_sample(proc(images=big, return_tensors="np")["pixel_values"])}
    return {
        "generated_by": f"models/make_fixtures.py --owlv2 with transformers {transformers.__version__}, torch {torch.__version__}",
        "reference": "Owlv2ImageProcessorPil(size=N) + Owlv2ForObjectDetection(interpolate_pos_encoding=N != 960) + post_process_object_detection",
        "prompts": OWLV2_PROMPTS,
        "input_ids": text["input_ids"].tolist(),
        "procedural_size": list(PROCEDURAL),
        "sizes": sizes,
    }



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--full", action="store_true", help="full-size random-weight ViT-B/32 models for benchmarks")
    ap.add_argument("--out", type=Path, help="output directory for --full (default target/full-models)")
    ap.add_argument("--threshold", type=float, help="detection threshold recorded in the reference "
                    "(default: the middle of the widest score gap in 0.5..0.8)")
    ap.add_argument("--clipseg", action="store_true", help="only the CLIPSeg model (and, tiny, its reference)")
    ap.add_argument("--owl-sizes", action="store_true",
                    help="rebuild the committed tiny OWL-ViT (checked to hold the same weights) and write its references "
                         "at other input sizes (tests/fixtures/reference/owlvit_sizes.json), its export with the box "
                         "bias computed in the graph (tests/fixtures/owlvit-graph-bias) and its export with a fixed "
                         "image shape (tests/fixtures/owlvit-static)")
    ap.add_argument("--owlv2", action="store_true",
                    help="only OWLv2: tiny in models/tiny/owlv2 with tests/fixtures/reference/owlv2.json, or with --full "
                         "the B/16 shape in target/full-models/owlv2-base-patch16")
    ap.add_argument("--tree", action="store_true",
                    help="rebuild the committed tiny CLIP and OWL-ViT (checked to hold the same weights) and write the "
                         "tree prompt and CLIP example-image references (tests/fixtures/reference/tree.json, clip_examples.json; "
                         "see models/fixtures_tree.py)")
    args = ap.parse_args()
    refs = REPO / "tests" / "fixtures" / "reference"
    if args.tree:
        import fixtures_tree

        fixtures_tree.main(refs, REPO / "tests" / "fixtures" / "images")
        return
    if args.owlv2:
        if args.full:
            build_owlv2((args.out or REPO / "target" / "full-models") / "owlv2-base-patch16", True)
            return
        out = REPO / "models" / "tiny" / "owlv2"
        model, tok = build_owlv2(out, False)
        ref = owlv2_reference(model, tok, REPO / "tests" / "fixtures" / "images")
        (refs / "owlv2.json").write_text(json.dumps(ref) + "\n")
        total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
        print(f"{out.relative_to(REPO)}: {total / 1e6:.1f} MB")
        return
    if args.owl_sizes:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            model, tok = rebuild_tiny_owlvit(Path(tmp))
        ref = owl_sizes_reference(model, tok, REPO / "tests" / "fixtures" / "images", OWL_SIZES)
        (refs / "owlvit_sizes.json").write_text(json.dumps(ref) + "\n")
        export_legacy_owlvit(model, tok, REPO / "tests" / "fixtures" / "owlvit-graph-bias")
        export_static_owlvit(model, tok, REPO / "tests" / "fixtures" / "owlvit-static")
        return
    if args.clipseg:
        out = args.out or REPO / "target" / "full-models"
        if args.full:
            build_clipseg(out / "clipseg-rd64-refined", True)
            return
        model, tok = build_clipseg(REPO / "models" / "tiny" / "clipseg", False)
        ref = clipseg_reference(model, tok, REPO / "tests" / "fixtures" / "images")
        (REPO / "tests" / "fixtures" / "reference" / "clipseg.json").write_text(json.dumps(ref) + "\n")
        return
    if args.full:
        out = args.out or REPO / "target" / "full-models"
        build_clipseg(out / "clipseg-rd64-refined", True)
        build_clip(out / "clip-vit-base-patch32", True)
        build_owlvit(out / "owlvit-base-patch32", True)
        print(f"full-size random-weight models in {out}")
        return
    images = REPO / "tests" / "fixtures" / "images"
    refs = REPO / "tests" / "fixtures" / "reference"
    refs.mkdir(parents=True, exist_ok=True)
    make_images(images)
    clip_dir = REPO / "models" / "tiny" / "clip"
    owl_dir = REPO / "models" / "tiny" / "owlvit"
    clip_model, clip_tok = build_clip(clip_dir, False)
    owl_model, owl_tok = build_owlvit(owl_dir, False)
    dump = lambda name, obj: (refs / name).write_text(json.dumps(obj, indent=1) + "\n")
    dump("tokens.json", tokens_reference(clip_tok, owl_tok))
    dump("clip.json", clip_reference(clip_model, clip_tok, clip_dir, images))
    dump("owlvit.json", owl_reference(owl_model, owl_tok, owl_dir, images, args.threshold))
    dump("preprocess.json", preprocess_reference(images))
    (refs / "rgb.json").write_text(json.dumps(rgb_reference(images, refs)) + "\n")
    static_quantized_fixtures(REPO / "tests" / "fixtures" / "onnx")
    seg_model, seg_tok = build_clipseg(REPO / "models" / "tiny" / "clipseg", False)
    (refs / "clipseg.json").write_text(json.dumps(clipseg_reference(seg_model, seg_tok, images)) + "\n")
    for d in [clip_dir, owl_dir]:
        total = sum(f.stat().st_size for f in d.rglob("*") if f.is_file())
        print(f"{d.relative_to(REPO)}: {total / 1e6:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
