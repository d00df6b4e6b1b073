"""References for tree prompts and example-image prompts (issue 15), written by
`models/make_fixtures.py --tree`: the committed tiny CLIP and OWL-ViT are rebuilt from their seeds
(checked to hold the committed weights), then each tree is run step by step with transformers alone:
the detector on the image, post_process_object_detection, the crop
[floor(x0), floor(y0), ceil(x1), ceil(y1)] clamped to the image, CLIP on the crop (softmax over the
group), the detector on the crop with its boxes shifted back to the frame. Nothing of promptcam's
tree code is used; the rules are NanoOWL's as the issue states them.

Also the CLIP example-image prompts: each example's normalized image embedding (CLIPModel), their mean
normalized again, scored like a text prompt. Writes tests/fixtures/reference/tree.json and clip_examples.json.
"""

import json
import math
import tempfile
from pathlib import Path

import numpy as np
import torch
import transformers
from transformers import CLIPImageProcessorPil, OwlViTImageProcessorPil
from transformers.image_transforms import convert_to_rgb
from PIL import Image

import make_fixtures as mf

# Each node: (op, prompts, {prompt: [nodes applied to what that prompt found]}), written in the order
# of the tree text; the text is what promptcam parses.
TREES = [
    {
        "tree": "[a cat, a rocket (a photo of a cat, a photo of a dog) [a cup, a person]]",
        "nodes": [("detect", ["a cat", "a rocket"], {
            "a rocket": [("classify", ["a photo of a cat", "a photo of a dog"], {}),
                         ("detect", ["a cup", "a person"], {})]})],
        "min_nested": 2,
    },
    {
        "tree": "(a photo of a dog, a photo of a cat [a person (a cup of coffee, a delivery van)])",
        "nodes": [("classify", ["a photo of a dog", "a photo of a cat"], {
            "a photo of a cat": [("detect", ["a person"], {
                "a person": [("classify", ["a cup of coffee", "a delivery van"], {})]})]})],
        # the detector runs only where "a photo of a cat" wins: some images must close the gate
        "min_nested": 0,
    },
]
TREE_IMAGES = ["chelsea.png", "rocket.png", "astronaut_portrait.png", "transparent_la.png", "coffee.png"]
# no compared detection score within this of the threshold, no edge of a box that gets cropped within
# this many pixels of an integer (floor and ceil must pick the same pixels on both sides), no winning
# class that decides what runs next within this probability of the runner-up
SCORE_MARGIN, EDGE_MARGIN, WIN_MARGIN = 0.005, 0.02, 0.02


class Hand:
    """The two tiny models, run the way transformers' processors and post-processing run them."""

    def __init__(self, owl, owl_tok, clip, clip_tok):
        self.owl, self.owl_tok, self.clip, self.clip_tok = owl, owl_tok, clip, clip_tok
        cfg = mf.owl_processor_nested()["image_processor"]
        self.owl_proc = OwlViTImageProcessorPil(**{k: v for k, v in cfg.items() if k != "image_processor_type"})
        self.clip_proc = CLIPImageProcessorPil(
            **{k: v for k, v in mf.clip_processor_flat().items() if k != "feature_extractor_type"})
        self.scores = []  # every sigmoid score compared against the threshold
        self.cache = {}

    def detect(self, im, prompts, threshold):
        key = ("d", im.tobytes(), im.size, tuple(prompts))
        if key not in self.cache:
            text = self.owl_tok(prompts, padding="max_length", max_length=16, return_tensors="pt")
            pv = self.owl_proc(images=im, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                self.cache[key] = self.owl(input_ids=text["input_ids"], pixel_values=pv,
                                           attention_mask=text["attention_mask"])
        o = self.cache[key]
        self.scores += torch.sigmoid(o.logits.max(-1).values).reshape(-1).tolist()
        res = self.owl_proc.post_process_object_detection(o, threshold=threshold,
                                                          target_sizes=[(im.height, im.width)])[0]
        return mf.detections(res, prompts)

    def classify(self, im, prompts):
        key = ("c", im.tobytes(), im.size, tuple(prompts))
        if key not in self.cache:
            text = self.clip_tok(prompts, padding="max_length", max_length=77, return_tensors="pt")
            pv = self.clip_proc(images=im, return_tensors="pt")["pixel_values"]
            with torch.no_grad():
                o = self.clip(input_ids=text["input_ids"], pixel_values=pv, attention_mask=text["attention_mask"])
            self.cache[key] = torch.softmax(o.logits_per_image[0], -1).tolist()
        return self.cache[key]


def crop_rect(box, w, h):
    x0, y0 = min(max(math.floor(box[0]), 0), w), min(max(math.floor(box[1]), 0), h)
    x1, y1 = min(max(math.ceil(box[2]), 0), w), min(max(math.ceil(box[3]), 0), h)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def number(nodes):
    """Tree order: the order the groups' brackets open in the text (a node, then what it nests)."""
    count = [0]

    def walk(entries):
        out = []
        for op, prompts, nested in entries:
            node = {"op": op, "prompts": prompts, "index": count[0], "on": {}}
            count[0] += 1
            for p in prompts:
                node["on"][p] = walk(nested.get(p, []))
            out.append(node)
        return out

    return walk(nodes)


def run(hand, frame, nodes, threshold, checks):
    """The tree's output on `frame` (an RGB PIL image), in promptcam's JSON shape; `checks` collects what
    must sit clear of the rounding edges."""
    out = {"classes": [], "detections": []}
    queue = [(None, nodes)]
    while queue:
        region, on = queue.pop(0)
        if region is None:
            image, offset = frame, (0, 0)
        else:
            d = out["detections"][region]
            if not on:
                continue
            checks["edges"] += d["box"]
            rect = crop_rect(d["box"], frame.width, frame.height)
            if rect is None:
                continue
            d["crop"] = list(rect)
            image, offset = frame.crop(rect), rect[:2]
        active, i, groups = list(on), 0, []
        while i < len(active):
            node = active[i]
            i += 1
            if node["op"] != "classify":
                continue
            probs = hand.classify(image, node["prompts"])
            best = int(np.argmax(probs))
            won = node["prompts"][best]
            if node["on"][won]:
                runner_up = sorted(probs)[-2]
                checks["wins"].append(probs[best] - runner_up)
            groups.append((node["index"], [{"prompt": p, "score": s} for p, s in zip(node["prompts"], probs)]))
            active += node["on"][won]
        classes = [c for _, g in sorted(groups, key=lambda g: g[0]) for c in g]
        if region is None:
            out["classes"] = classes
        else:
            out["detections"][region]["classes"] = classes
        for node in sorted((n for n in active if n["op"] == "detect"), key=lambda n: n["index"]):
            for d in hand.detect(image, node["prompts"], threshold):
                b = d["box"]
                out["detections"].append({
                    "prompt": d["prompt"], "score": d["score"],
                    "box": [b[0] + offset[0], b[1] + offset[1], b[2] + offset[0], b[3] + offset[1]],
                    "parent": region, "classes": []})
                queue.append((len(out["detections"]) - 1, node["on"][d["prompt"]]))
    return out


def tree_reference(hand, images_dir):
    trees = []
    for t in TREES:
        nodes = number(t["nodes"])
        frames = {n: Image.fromarray(convert_to_rgb(mf.load_image(images_dir / n), return_numpy=True))
                  for n in TREE_IMAGES}
        for threshold in [round(x, 4) for x in np.arange(0.7, 0.9, 0.0025)]:
            # an image is kept when nothing in its run sits near a rounding edge
            results, dropped = [], []
            for n, f in frames.items():
                hand.scores = []
                checks = {"edges": [], "wins": []}
                r = dict(image=n, size=[f.width, f.height], **run(hand, f, nodes, threshold, checks))
                near = [s for s in hand.scores if abs(s - threshold) < SCORE_MARGIN]
                edges = [e for e in checks["edges"] if abs(e - round(e)) < EDGE_MARGIN]
                wins = [w for w in checks["wins"] if w < WIN_MARGIN]
                if near or edges or wins:
                    dropped.append(f"{n} ({len(near)} scores near, edges {edges}, wins {wins})")
                else:
                    results.append(r)
            nested = sum(1 for r in results for d in r["detections"] if d["parent"] is not None)
            top = [sum(1 for d in r["detections"] if d["parent"] is None) for r in results]
            total = sum(top) + nested
            gated = sum(1 for r in results if r["classes"] and r["classes"][0]["score"] > 0.5)
            if len(results) < 3 or nested < t["min_nested"] or total < 2 or max(top) > 8 or (
                    results[0]["classes"] and gated == 0):
                print(f"{t['tree']}: threshold {threshold} rejected: nested {nested}, top-level {top}, dropped {dropped}")
                continue
            print(f"{t['tree']}: threshold {threshold}, images {[r['image'] for r in results]}, "
                  f"top-level detections {top}, nested {nested}")
            trees.append({"tree": t["tree"], "threshold": threshold, "images": results})
            break
        else:
            raise SystemExit(f"no threshold suits {t['tree']}: change the tree or the images")
    return {
        "generated_by": f"models/make_fixtures.py --tree with transformers {transformers.__version__}, torch {torch.__version__}",
        "reference": "OwlViTImageProcessorPil + OwlViTForObjectDetection + post_process_object_detection on the "
                     "image and on crops [floor, floor, ceil, ceil] of it, CLIPImageProcessorPil + CLIPModel "
                     "softmax(logits_per_image) over each group on the crops",
        "trees": trees,
    }


# example-image prompts: two sets of pictures next to two text prompts, scored on other images
EXAMPLE_TEXTS = ["a photo of a cat", "an astronaut"]
EXAMPLE_SETS = {"pets": ["chelsea.png", "coffee.png"], "launch": ["rocket.png", "astronaut_portrait.png"]}
EXAMPLE_IMAGES = ["camera_gray.png", "transparent_rgba.png", "logo_rgba.png", "chelsea.png"]


def examples_reference(hand, images_dir):
    """CLIPModel's normalized image_embeds of each example (transformers' processor), their mean normalized
    again, then softmax(logit_scale * cosine) over the text prompts and the example prompts."""
    model, proc = hand.clip, hand.clip_proc

    def embed(name):
        pv = proc(images=mf.load_image(images_dir / name), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            e = model.get_image_features(pixel_values=pv)
        e = e.pooler_output if hasattr(e, "pooler_output") else e
        return torch.nn.functional.normalize(e[0], dim=-1)

    text = hand.clip_tok(EXAMPLE_TEXTS, padding="max_length", max_length=77, return_tensors="pt")
    with torch.no_grad():
        t = model.get_text_features(input_ids=text["input_ids"], attention_mask=text["attention_mask"])
    t = t.pooler_output if hasattr(t, "pooler_output") else t
    classes = [torch.nn.functional.normalize(r, dim=-1) for r in t]
    sets = {}
    for name, files in EXAMPLE_SETS.items():
        mean = torch.stack([embed(f) for f in files]).mean(0)
        sets[name] = torch.nn.functional.normalize(mean, dim=-1)
        classes.append(sets[name])
    scale = model.logit_scale.exp().item()
    images = []
    for name in EXAMPLE_IMAGES:
        e = embed(name)
        sims = torch.stack([c @ e for c in classes])
        images.append({"image": name, "similarities": sims.tolist(), "scores": torch.softmax(scale * sims, 0).tolist()})
    return {
        "generated_by": f"models/make_fixtures.py --tree with transformers {transformers.__version__}, torch {torch.__version__}",
        "reference": "CLIPImageProcessorPil + CLIPModel.get_image_features, L2-normalized, averaged per example "
                     "set and normalized again; softmax(logit_scale * cosine) over texts then example sets",
        "texts": EXAMPLE_TEXTS,
        "sets": {k: {"files": v, "embedding": sets[k].tolist()} for k, v in EXAMPLE_SETS.items()},
        "logit_scale": scale,
        "images": images,
    }


def main(refs, images_dir):
    with tempfile.TemporaryDirectory() as tmp:
        owl, owl_tok = mf.rebuild_tiny_owlvit(Path(tmp) / "owlvit")
        clip, clip_tok = mf.rebuild_tiny_clip(Path(tmp) / "clip")
    hand = Hand(owl, owl_tok, clip, clip_tok)
    (refs / "tree.json").write_text(json.dumps(tree_reference(hand, images_dir), indent=1) + "\n")
    (refs / "clip_examples.json").write_text(json.dumps(examples_reference(hand, images_dir), indent=1) + "\n")
