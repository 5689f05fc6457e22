"""A generated corpus of hostile inputs through the command line and the Python API.

Each case is a file (image, saved transform, model file) or an option that a careless or hostile user,
a crashing machine or another lab's exporter could hand to stainlab. Every case runs in its own
process (``stainlab normalize`` or ``fit`` through the installed CLI, with a time limit) and, for
images, also through ``stainlab.io.read_image`` in this process. Outcomes:

* ``clean``: exit status 1 (or 2 for usage) with one ``stainlab: error:`` line naming the file, or an
  ``InputError`` from the API;
* ``ok``: exit 0 and an output image that is finite and not flattened (a flat output is accepted only
  for a flat input);
* ``crash``: a traceback, an ``internal error``, another exit status or another exception;
* ``hang``: over the time limit;
* ``silent-wrong``: exit 0 with a one-colour output from an input that has more than one colour;
* ``leftover``: a hidden partial file or work folder left in the output folder.

The target is zero of the last four.

    python benchmarks/fuzz.py                      # -> benchmarks/results/fuzz.json (and .md)
    python benchmarks/fuzz.py --mutations 50       # more random byte-flips of valid files
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import tifffile
from PIL import Image

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
from hostile import png_bomb, tiff_bomb, with_header  # noqa: E402  (tests/hostile.py: the shared generators)
from provenance import provenance  # noqa: E402
from synth import he_image  # noqa: E402  (tests/synth.py: synthetic H&E from known stains)

from stainlab.errors import InputError  # noqa: E402
from stainlab.io.atomic import atomic_write_text  # noqa: E402
from stainlab.io.images import read_image, write_image  # noqa: E402

TIME_LIMIT = 120  # seconds per CLI case
STAINLAB = [sys.executable, "-m", "stainlab"]  # the stainlab this process imports (PYTHONPATH is inherited)


# -- the corpus ------------------------------------------------------------------------------------------
def image_cases(folder: Path, mutations: int, seed: int) -> dict[str, Path]:
    """Hostile and degenerate image files, by name."""
    rng = np.random.default_rng(seed)
    tissue = he_image((64, 80), seed=1)
    cases: dict[str, Path] = {}

    def add(name: str, path: Path) -> None:
        cases[name] = path

    add("empty", _bytes(folder / "empty.png", b""))
    add("text-as-png", _bytes(folder / "text.png", b"not an image at all"))
    add("png-magic-then-noise", _bytes(folder / "noise.png", b"\x89PNG\r\n\x1a\n" + rng.bytes(500)))
    valid = {"png": write_image(folder / "valid.png", tissue), "tif": write_image(folder / "valid.tif", tissue)}
    Image.fromarray(tissue).save(folder / "valid.jpg", quality=90)
    valid["jpg"] = folder / "valid.jpg"
    for kind, path in valid.items():
        data = path.read_bytes()
        add(f"truncated-{kind}", _bytes(folder / f"cut.{kind}", data[: len(data) // 2]))
        for i in range(mutations):
            flipped = bytearray(data)
            for spot in rng.integers(8, len(data), size=4):
                flipped[spot] = rng.integers(0, 256)
            add(f"mutated-{kind}-{i}", _bytes(folder / f"mut{i}.{kind}", bytes(flipped)))
    add("png-bomb-8bit", png_bomb(folder / "bomb8.png"))
    add("png-bomb-16bit", png_bomb(folder / "bomb16.png", depth=16))
    add("tiff-bomb", tiff_bomb(folder / "bomb.tif"))
    add("one-pixel", write_image(folder / "one.png", tissue[:1, :1]))
    add("one-row", write_image(folder / "row.png", np.repeat(tissue[:1], 1, axis=0)))
    add("all-white", write_image(folder / "white.png", np.full((64, 64, 3), 255, np.uint8)))
    add("all-black", write_image(folder / "black.png", np.zeros((64, 64, 3), np.uint8)))
    add("one-colour", write_image(folder / "pink.png", np.full((64, 64, 3), (200, 120, 170), np.uint8)))
    Image.fromarray(tissue[..., 0]).save(folder / "grey.png")
    add("grey-8bit", folder / "grey.png")
    tifffile.imwrite(folder / "grey16.tif", tissue[..., 0].astype(np.uint16) * 257)
    add("grey-16bit", folder / "grey16.tif")
    rgba = np.dstack([tissue, np.where(np.arange(80) < 40, 0, 255).astype(np.uint8)[None].repeat(64, 0)])
    Image.fromarray(rgba).save(folder / "alpha.png")
    add("rgba-half-transparent", folder / "alpha.png")
    nan = tissue.astype(np.float32) / 255
    nan[3, 3] = np.nan
    tifffile.imwrite(folder / "nan.tif", nan, photometric="rgb")
    add("float-nan", folder / "nan.tif")
    tifffile.imwrite(folder / "hdr.tif", tissue.astype(np.float32), photometric="rgb")
    add("float-out-of-range", folder / "hdr.tif")
    tifffile.imwrite(folder / "five.tif", np.zeros((16, 16, 5), np.uint8), photometric="minisblack", planarconfig="contig")
    add("five-channels", folder / "five.tif")
    tifffile.imwrite(folder / "int32.tif", tissue.astype(np.int32) - 100, photometric="rgb")
    add("signed-int32", folder / "int32.tif")
    Image.fromarray(tissue).convert("CMYK").save(folder / "cmyk.jpg")
    add("cmyk-jpeg", folder / "cmyk.jpg")
    Image.fromarray(tissue).convert("P").save(folder / "palette.png")
    add("palette", folder / "palette.png")
    exif = Image.Image.getexif(Image.fromarray(tissue))
    exif[274] = 6
    Image.fromarray(tissue).save(folder / "rotated.jpg", exif=exif.tobytes())
    add("exif-rotated", folder / "rotated.jpg")
    (folder / "folder.png").mkdir()
    add("folder-named-png", folder / "folder.png")
    tifffile.imwrite(folder / "pages.tif", np.stack([tissue, tissue[::-1]]), photometric="rgb")
    add("multi-page-tiff", folder / "pages.tif")
    return cases


def transform_cases(folder: Path, reference: Path) -> dict[str, Path]:
    """Saved transforms: one valid file from ``stainlab fit``, then corruptions of it."""
    fitted = folder / "reinhard.json"
    subprocess.run([*STAINLAB, "fit", "-m", "reinhard", "-r", str(reference), "-o", str(fitted), "-q"], check=True)
    good = json.loads(fitted.read_text())
    corruptions = {
        "json-garbage": "{not json",
        "json-not-ours": json.dumps({"hello": 1}),
        "state-nan": _with(good, ["state", "target_std", 0], float("nan")),
        "state-zero-std": _with(good, ["state", "target_std"], [0.0, 0.0, 0.0]),
        "state-huge": _with(good, ["state", "target_std"], [1e308, 1e308, 1e308]),
        "state-wrong-shape": _with(good, ["state", "target_mean"], [1.0, 2.0]),
        "state-huge-list": _with(good, ["state", "target_mean"], [0.0] * 2_000_000),
        "state-deep": json.dumps(good)[:-1] + ', "deep": ' + "[" * 5000 + "]" * 5000 + "}",
        "param-unknown": _with(good, ["params", "frobnicate"], 3),
        "param-wrong-type": _with(good, ["params", "lut_bits"], "seven"),
        "param-bool-as-int": _with(good, ["params", "lut_bits"], True),
        "method-unknown": _with(good, ["method"], "nope"),
        "version-future": _with(good, ["version"], 99),
    }
    cases = {"valid-transform": fitted}
    for name, text in corruptions.items():
        path = folder / f"{name}.json"
        path.write_text(text if isinstance(text, str) else json.dumps(text))
        cases[name] = path
    return cases


def model_cases(folder: Path) -> dict[str, Path]:
    """Model files for ``-m unet --model``: foreign, cut short, lying headers, NaN weights."""
    import torch
    from safetensors.torch import save_file

    from stainlab.nets.files import save_model
    from stainlab.nets.unet import UNet

    net = UNet(base_channels=4)
    valid = save_model(folder / "unet.safetensors", net, "unet", {"base_channels": 4})
    data = valid.read_bytes()
    cases = {"model-valid": valid,
             "model-empty": _bytes(folder / "empty.safetensors", b""),
             "model-cut": _bytes(folder / "cut.safetensors", data[: len(data) // 2]),
             "model-noise": _bytes(folder / "noise.safetensors", np.random.default_rng(0).bytes(4000))}
    for name, kwargs in {"model-absurd-size": {"base_channels": 1_000_000}, "model-shape-lie": {"base_channels": 8},
                         "model-bad-kwarg": {"base_channels": 4, "rocket": True}}.items():
        cases[name] = with_header(folder / f"{name}.safetensors", valid, kwargs=kwargs)
    meta = {"arch": "unet", "kwargs": {"base_channels": 4}}
    state = {k: v.clone() for k, v in net.state_dict().items()}
    first = next(k for k, v in state.items() if v.is_floating_point())
    state[first].fill_(float("nan"))
    save_file(state, str(folder / "nan.safetensors"), metadata={"stainlab": json.dumps(meta)})
    cases["model-nan-weights"] = folder / "nan.safetensors"
    save_file({"x": torch.zeros(2)}, str(folder / "foreign.safetensors"))
    cases["model-foreign"] = folder / "foreign.safetensors"
    return cases


def option_cases() -> dict[str, list[str]]:
    """Bad options to an otherwise valid ``normalize``."""
    return {"param-lut-bits-99": ["--param", "lut_bits=99"], "param-mask-yes": ["--param", "mask=yes"],
            "param-unknown": ["--param", "rocket=1"], "workers-zero": ["--workers", "0"],
            "format-bmp": ["--format", "bmp"]}


def _bytes(path: Path, data: bytes) -> Path:
    path.write_bytes(data)
    return path


def _with(document: dict, keys: list, value) -> dict:
    out = json.loads(json.dumps(document))
    target = out
    for key in keys[:-1]:
        target = target[key]
    target[keys[-1]] = value
    return out


# -- running and judging -----------------------------------------------------------------------------------
def run_cli(args: list[str], out: Path) -> dict:
    """One CLI run in its own process, judged by its exit status, its stderr and the output folder."""
    start = time.perf_counter()
    try:
        proc = subprocess.run([*STAINLAB, *args], capture_output=True, text=True, timeout=TIME_LIMIT)
    except subprocess.TimeoutExpired:
        return {"outcome": "hang", "seconds": TIME_LIMIT}
    seconds = round(time.perf_counter() - start, 2)
    errors = [line for line in proc.stderr.splitlines() if line.startswith("stainlab: error:")]
    leftovers = [str(p) for p in out.rglob(".*") if p.name != ".stainlab-outputs.json"] if out.exists() else []
    if leftovers:
        outcome = "leftover"
    elif "Traceback" in proc.stderr or "internal error" in proc.stderr or proc.returncode not in (0, 1, 2):
        outcome = "crash"
    elif proc.returncode == 0:
        outcome = _judge_outputs(out)
    else:
        outcome = "clean" if errors or proc.returncode == 2 else "crash"
    return {"outcome": outcome, "status": proc.returncode, "seconds": seconds, "message": (errors or [""])[0][:300],
            **({"stderr": proc.stderr[-800:]} if outcome in ("crash", "leftover") else {})}


def _judge_outputs(out: Path) -> str:
    """``ok`` when every output is finite and varied where its input was; ``silent-wrong`` otherwise."""
    record = json.loads((out / ".stainlab-outputs.json").read_text())["outputs"] if out.exists() else {}
    for name, entry in record.items():
        path = out / name
        if not path.exists():
            continue
        result = read_image(path)[0]
        source = read_image(entry["source"])[0]
        if len(np.unique(result.reshape(-1, 3), axis=0)) == 1 and len(np.unique(source.reshape(-1, 3), axis=0)) > 1:
            return "silent-wrong"
    return "ok"


def run_api(path: Path) -> dict:
    try:
        read_image(path)
    except InputError as err:
        return {"outcome": "clean", "message": str(err)[:300]}
    except Exception as err:  # anything but InputError is a crash of the API
        return {"outcome": "crash", "message": f"{type(err).__name__}: {err}"[:300]}
    return {"outcome": "ok"}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mutations", type=int, default=10, help="random byte-flips per valid format")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(HERE / "results"))
    args = parser.parse_args(argv)
    started = provenance()
    work = Path(tempfile.mkdtemp(prefix="stainlab-fuzz-"))
    try:
        corpus = work / "corpus"
        corpus.mkdir()
        reference = write_image(work / "reference.png", he_image((96, 96), seed=5))
        results: dict[str, dict] = {}
        _mkdir(corpus / "images")
        for name, path in image_cases(corpus / "images", args.mutations, args.seed).items():
            out = work / "out" / name
            results[f"image/{name}/cli"] = run_cli(["normalize", str(path), "-m", "reinhard", "-r", str(reference),
                                                    "-o", str(out)], out)
            results[f"image/{name}/api"] = run_api(path)
            results[f"reference/{name}/cli"] = run_cli(["normalize", str(reference), "-m", "macenko", "-r", str(path),
                                                        "-o", str(work / "out" / f"ref-{name}")], work / "out" / f"ref-{name}")
        _mkdir(corpus / "transforms")
        for name, path in transform_cases(corpus / "transforms", reference).items():
            out = work / "out" / name
            results[f"transform/{name}/cli"] = run_cli(["normalize", str(reference), "-t", str(path), "-o", str(out)], out)
        _mkdir(corpus / "models")
        for name, path in model_cases(corpus / "models").items():
            out = work / "out" / name
            results[f"model/{name}/cli"] = run_cli(["normalize", str(reference), "-m", "unet", "--model", str(path),
                                                    "-o", str(out)], out)
        for name, extra in option_cases().items():
            out = work / "out" / name
            results[f"option/{name}/cli"] = run_cli(["normalize", str(reference), "-m", "reinhard", "-r", str(reference),
                                                     "-o", str(out), *extra], out)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    counts: dict[str, int] = {}
    for result in results.values():
        counts[result["outcome"]] = counts.get(result["outcome"], 0) + 1
    bad = {k: v for k, v in results.items() if v["outcome"] not in ("clean", "ok")}
    summary = {"cases": len(results), "counts": counts, "failures": bad, "results": results,
               "provenance": provenance(started)}
    out_dir = Path(args.out)
    atomic_write_text(out_dir / "fuzz.json", json.dumps(summary, indent=1))
    lines = ["# Fuzz corpus through the CLI and the API", "",
             f"{len(results)} cases: " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), "",
             "| case | outcome | message |", "| --- | --- | --- |"]
    lines += [f"| {k} | {v['outcome']} | {v.get('message', '').replace('|', '/')[:160]} |" for k, v in results.items()]
    atomic_write_text(out_dir / "fuzz.md", "\n".join(lines) + "\n")
    print(f"{len(results)} cases: {counts}")
    for key, value in bad.items():
        print(f"  {value['outcome']}: {key}: {value.get('message') or value.get('stderr', '')[-300:]}")
    return 1 if bad else 0


def _mkdir(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)


if __name__ == "__main__":
    sys.exit(main())
