"""Dict batches, per-token losses and weights: exact Σ w·ℓ / Σ w over all tokens of the dataset."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import jaxscape as js

N, T, V, D = 7, 5, 6, 3  # batch_size 3 does not divide N = 7: the last batch is padded


def _lm_apply(p, ids):
  """A tiny token model: embedding then a linear read-out, logits [B, T, V]."""
  return jnp.tanh(p["emb"][ids]) @ p["out"]


def _lm_data(dtype=np.float64):
  rng = np.random.default_rng(0)
  ids = rng.integers(0, V, (N, T)).astype(np.int32)
  labels = rng.integers(0, V, (N, T)).astype(np.int32)
  mask = (rng.random((N, T)) < 0.6).astype(dtype)
  mask[:, 0] = 1  # every row keeps a token; the rest are padding tokens
  params = {"emb": jnp.asarray(rng.normal(size=(V, D)), dtype), "out": jnp.asarray(rng.normal(size=(D, V)), dtype)}
  return {"input_ids": ids, "labels": labels, "mask": mask}, params


def _masked_mean(params, batch):
  """The reference: log-softmax cross-entropy per token in NumPy, masked mean over all tokens."""
  logits = np.tanh(np.asarray(params["emb"])[batch["input_ids"]]) @ np.asarray(params["out"])
  logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
  nll = -np.take_along_axis(logp, batch["labels"][..., None], -1)[..., 0]
  return float((batch["mask"] * nll).sum() / batch["mask"].sum())


def test_dict_batch_masked_token_mean_matches_numpy(x64):
  batch, params = _lm_data()
  obj = js.Objective.from_apply(_lm_apply, params, data=batch, inputs="input_ids", weights="mask", batch_size=3)
  assert obj.num_batches == 3 and obj.w.shape == (3, 3, T)
  assert obj.total_weight == float(batch["mask"].sum())
  # a mean of batch means (or of per-example means) differs: the check below can fail
  per_example = [_masked_mean(params, {k: v[i:i + 1] for k, v in batch.items()}) for i in range(N)]
  assert abs(np.mean(per_example) - _masked_mean(params, batch)) > 1e-3
  np.testing.assert_allclose(float(obj.value(params)), _masked_mean(params, batch), rtol=1e-12)
  assert obj.describe()["weights"] == "mask" and obj.describe()["targets"] == "labels"


def test_callable_loss_reads_the_whole_batch(x64):
  batch, params = _lm_data()

  def loss(logits, b):  # a user loss (outputs, batch) -> per-token losses
    return -jnp.take_along_axis(jax.nn.log_softmax(logits), b["labels"][..., None], -1)[..., 0]

  obj = js.Objective.from_apply(lambda p, b: _lm_apply(p, b["input_ids"]), params, data=batch, loss=loss,
                                weights="mask", batch_size=4)
  assert obj.y is None
  np.testing.assert_allclose(float(obj.value(params)), _masked_mean(params, batch), rtol=1e-12)
  # the model on one key, the loss on the batch
  obj_sel = js.Objective.from_apply(_lm_apply, params, data=batch, loss=loss, inputs="input_ids", weights="mask",
                                    batch_size=4)
  np.testing.assert_allclose(float(obj_sel.value(params)), _masked_mean(params, batch), rtol=1e-12)


def test_per_token_cross_entropy_without_mask_is_the_token_mean(x64):
  """The issue's first bug: cross_entropy on (B, T, C) logits and (B, T) integer targets."""
  batch, params = _lm_data()
  ones = dict(batch, mask=np.ones((N, T)))
  obj = js.Objective.from_apply(_lm_apply, params, data=(batch["input_ids"], batch["labels"]), batch_size=3)
  np.testing.assert_allclose(float(obj.value(params)), _masked_mean(params, ones), rtol=1e-12)
  loss, metrics = obj.loss(params)
  assert set(metrics) == {"accuracy"} and 0.0 <= float(metrics["accuracy"]) <= 1.0


def test_hvp_on_dict_batch_matches_dense_hessian(x64):
  batch, params = _lm_data()
  obj = js.Objective.from_apply(_lm_apply, params, data=batch, inputs="input_ids", weights="mask", batch_size=3)
  flat, unravel = jax.flatten_util.ravel_pytree(params)
  dense = jax.hessian(lambda f: _masked_mean_jnp(unravel(f), batch))(flat)
  v = jax.random.normal(jax.random.key(1), flat.shape, flat.dtype)
  hv, _ = jax.flatten_util.ravel_pytree(js.hessian.hvp(obj, params, unravel(v)))
  np.testing.assert_allclose(hv, dense @ v, rtol=1e-9, atol=1e-12)
  gv, _ = jax.flatten_util.ravel_pytree(js.hessian.hvp(obj, params, unravel(v), kind="ggn"))
  assert np.isfinite(np.asarray(gv)).all() and float(jnp.dot(v, gv)) >= -1e-12  # GGN of a convex loss: PSD


def _masked_mean_jnp(params, batch):
  logits = _lm_apply(params, jnp.asarray(batch["input_ids"]))
  nll = -jnp.take_along_axis(jax.nn.log_softmax(logits), jnp.asarray(batch["labels"])[..., None], -1)[..., 0]
  mask = jnp.asarray(batch["mask"])
  return jnp.sum(mask * nll) / jnp.sum(mask)


def test_surface_and_fingerprint_on_dict_batch(x64):
  batch, params = _lm_data()
  def loss(logits, b):
    return optax.softmax_cross_entropy_with_integer_labels(logits, b["labels"])

  obj = js.Objective.from_apply(_lm_apply, params, data=batch, loss=loss, inputs="input_ids", weights="mask",
                                batch_size=3)
  dirs = js.random_directions(jax.random.key(0), params, n=1, norm="none")
  surf = js.loss_surface(None, obj, params, dirs, (-1.0, 1.0, 3), quiet=True)
  np.testing.assert_allclose(surf.loss[1], _masked_mean(params, batch), rtol=1e-10)
  step = jax.tree.map(lambda p, d: p + d[0], params, dirs.vectors)
  np.testing.assert_allclose(surf.loss[2], _masked_mean(step, batch), rtol=1e-10)
  assert js.io.fingerprint((obj.x, obj.y, obj.w)) != js.io.fingerprint((obj.x, obj.y, obj.w * 2))


def test_with_data_keeps_the_dict_layout(x64):
  batch, params = _lm_data()
  obj = js.Objective.from_apply(_lm_apply, params, data=batch, inputs="input_ids", weights="mask", batch_size=3)
  half = {k: v[:4] for k, v in batch.items()}
  sub = obj.with_data(half, name="first4")
  np.testing.assert_allclose(float(sub.value(params)), _masked_mean(params, half), rtol=1e-12)
  assert sub.total_weight == float(half["mask"].sum())


def test_with_l2_on_per_token_losses_adds_the_penalty_once(x64):
  batch, params = _lm_data()
  obj = js.Objective.from_apply(_lm_apply, params, data=batch, inputs="input_ids", weights="mask", batch_size=3)
  reg = js.objective.with_l2(obj, 0.1)
  penalty = 0.05 * sum(float(jnp.sum(a ** 2)) for a in jax.tree.leaves(params))
  np.testing.assert_allclose(float(reg.value(params)), _masked_mean(params, batch) + penalty, rtol=1e-12)


def test_dict_batch_refusals():
  batch, params = _lm_data(np.float32)
  params = jax.tree.map(lambda a: a.astype(jnp.float32), params)
  with pytest.raises(ValueError, match=r"weights='maks' is not a key of the dict batch; its keys: \['input_ids', "):
    js.Objective.from_apply(_lm_apply, params, data=batch, inputs="input_ids", weights="maks")
  with pytest.raises(ValueError, match=r"targets='labels' \(the default for a named loss\) is not a key"):
    js.Objective.from_apply(_lm_apply, params, data={"input_ids": batch["input_ids"]}, inputs="input_ids")
  with pytest.raises(js.DataError, match=r"the arrays differ in length: got batch\['input_ids'\] \(7, 5\), "):
    js.Objective.from_apply(_lm_apply, params, data=dict(batch, labels=batch["labels"][:5]), inputs="input_ids")
  with pytest.raises(js.DataError, match=r"weights must be finite and >= 0 .* in 1 of 7 examples \(rows \[2\]\)"):
    bad = batch["mask"].copy()
    bad[2, 1] = -1.0
    js.Objective.from_apply(_lm_apply, params, data=dict(batch, mask=bad), inputs="input_ids", weights="mask")
  with pytest.raises(js.DataError, match="the weights sum to 0"):
    js.Objective.from_apply(_lm_apply, params, data=dict(batch, mask=0 * batch["mask"]), inputs="input_ids",
                            weights="mask")
  with pytest.raises(ValueError, match=r"weights of shape \(3, 5, 2\) per batch do not fit losses of shape \(3, 5\)"):
    js.Objective.from_apply(_lm_apply, params, data=dict(batch, mask=np.ones((N, T, 2), np.float32)),
                            inputs="input_ids", weights="mask", batch_size=3)
  with pytest.raises(ValueError, match="inputs/targets/weights name keys of a dict batch; data is a tuple"):
    js.Objective.from_apply(_lm_apply, params, data=(batch["input_ids"], batch["labels"]), weights="mask")


def test_hugging_face_ignore_index_labels_are_refused_with_the_recipe_and_the_recipe_is_exact(x64):
  """Label -100 (Hugging Face's ignored tokens) is not a class: refused, naming the mask that handles it."""
  batch, params = _lm_data()
  labels = np.where(batch["mask"] > 0, batch["labels"], -100)
  hf = {"input_ids": batch["input_ids"], "labels": labels}
  with pytest.raises(js.DataError, match=r"found \[-100\] \(-100: Hugging Face's ignored tokens; give them weight 0"):
    js.Objective.from_apply(_lm_apply, params, data=hf, inputs="input_ids")
  # the recipe of the message (and of the README): the masked token mean over the labelled tokens only
  masked = dict(hf, mask=labels != -100, labels=np.where(labels == -100, 0, labels))
  obj = js.Objective.from_apply(_lm_apply, params, data=masked, inputs="input_ids", weights="mask", batch_size=3)
  np.testing.assert_allclose(float(obj.value(params)), _masked_mean(params, batch), rtol=1e-12)
