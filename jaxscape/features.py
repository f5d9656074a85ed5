"""Feature transforms of a Dataset: principal-component projection.

Small models with exact (dense) Hessians need few inputs: Dauphin et al.
(2014) located the critical points of MLPs on down-sampled MNIST and CIFAR;
jaxscape's CPU version feeds an MLP the first principal components of
scikit-learn's digits (PCA-16 of the 64 pixels). :func:`pca` fits the
components on the *training* split only and applies the same affine map to
both splits, so no test information leaks into the features.

Example:
  >>> from jaxscape import data, features
  >>> ds = features.pca(data.load("digits"), 16)
  >>> ds.x_train.shape, ds.x_test.shape
  ((1257, 16), (540, 16))
  >>> ds.info["pca"]["explained_variance_ratio"] > 0.8
  True
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .data import Dataset

__all__ = ["PCAFit", "fit_pca", "pca"]


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
    A new :class:`~jaxscape.data.Dataset` with ``[N, k]`` inputs and a name
    suffixed ``_pca{k}``.
  """
  fit = fit_pca(ds.x_train, k, whiten=whiten)
  dtype = ds.x_train.dtype if np.issubdtype(ds.x_train.dtype, np.floating) else np.float32
  return Dataset(fit.transform(ds.x_train).astype(dtype), ds.y_train, fit.transform(ds.x_test).astype(dtype), ds.y_test,
                 f"{ds.name}_pca{k}", ds.num_classes, {**ds.info, "pca": fit.describe()})
