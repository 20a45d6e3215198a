"""Checkpoint retention (latest N plus best) and restoring state and data iterator together."""
import jax
import numpy as np

from cnn_flax import checkpoint, parallel
from cnn_flax.data import datasets, pipeline


def _iterator():
  d = datasets.load("digits", 8)
  return pipeline.train_iterator(d.splits["train"], image_shape=d.image_shape, local_batch_size=16, seed=0)


def test_keeps_the_latest_n_and_the_best_evaluated(tmp_path):
  ckpt = checkpoint.Checkpoints(str(tmp_path), keep=2)
  state = {"w": np.zeros(3, np.float32)}
  accuracies = {1: 0.5, 2: None, 3: 0.9, 4: None, 5: 0.6, 6: None, 7: None}
  for step, acc in accuracies.items():
    ckpt.save(step, state, metrics={"eval/accuracy": acc} if acc is not None else None)
  ckpt.wait()
  assert ckpt.steps() == [3, 6, 7]
  assert ckpt.best_step() == 3
  ckpt.close()
  reopened = checkpoint.Checkpoints(str(tmp_path), read_only=True)
  assert reopened.best_step() == 3  # the metric was written to disk, not kept in memory only


def test_checkpoints_without_eval_are_never_best(tmp_path):
  ckpt = checkpoint.Checkpoints(str(tmp_path), keep=1)
  for step in (1, 2):
    ckpt.save(step, {"w": np.zeros(1)})
  ckpt.wait()
  assert ckpt.best_step() is None and ckpt.steps() == [2]


def test_restore_brings_back_state_and_data_position(tmp_path):
  mesh = parallel.make_mesh()
  state = {"w": np.arange(4, dtype=np.float32)}
  it = _iterator()
  next(it)
  ckpt = checkpoint.Checkpoints(str(tmp_path))
  ckpt.save(1, state, it, config={"seed": 0})
  ckpt.wait()
  expected = next(it)["label"]
  fresh = _iterator()
  abstract = checkpoint.abstract_with_shardings(jax.eval_shape(lambda: state),
                                                {"w": parallel.replicated(mesh)})
  restored = ckpt.restore(1, abstract, fresh)
  np.testing.assert_array_equal(restored["w"], state["w"])
  assert restored["w"].sharding == parallel.replicated(mesh)
  np.testing.assert_array_equal(next(fresh)["label"], expected)
