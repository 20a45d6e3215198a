"""Every config field cnn_flax reads, in one place: its default, what it means, and which values can work.

`base_config()` builds the `ml_collections.ConfigDict` that recipes (`configs/*.py`, or a file of your own anywhere)
start from; `cnn_flax.config.validate` checks a config against this table before any work starts. Adding a field is
one `Field` here plus the code that reads it. `python -m cnn_flax.schema` prints the table.

Fields marked `identity=True` decide *which* run a workdir holds (its weights, data order or optimizer state):
resuming with one of them changed is refused. Every other field may change between a stop and a resume.

Checks that need a registry (model, optimizer and schedule names, host augmentations) import it when they run,
so that loading a config file stays cheap (no jax import).
"""
from __future__ import annotations

import dataclasses
import math
import sys
from typing import Any, Callable, Sequence

import ml_collections

# A check returns why a value cannot work (the fix included), or None when it can.
Check = Callable[[Any], "str | None"]


@dataclasses.dataclass(frozen=True)
class Field:
  path: str  # dotted, e.g. "optimizer.learning_rate"
  default: Any
  doc: str
  check: Check | None = None
  identity: bool = False  # part of the run's identity: a resume may not change it
  free_form: bool = False  # a dict whose keys are not checked (model.kwargs)


# --- checks --------------------------------------------------------------------------------------------------
def at_least(low: float, note: str = "") -> Check:
  return lambda v: None if v >= low else f"must be >= {low}{note}"


def above(low: float, note: str = "") -> Check:
  return lambda v: None if v > low and math.isfinite(v) else f"must be > {low}{note}"


def in_range(low: float, high: float, *, closed_high: bool = False) -> Check:
  bracket = "]" if closed_high else ")"
  ok = (lambda v: low <= v <= high) if closed_high else (lambda v: low <= v < high)
  return lambda v: None if ok(v) else f"must be in [{low}, {high}{bracket}"


def one_of(choices: Sequence[str] | Callable[[], Sequence[str]], what: str = "") -> Check:
  """`choices` may be a callable, so that a registry is read (and imported) only when a config is checked."""
  def check(value):
    names = list(choices() if callable(choices) else choices)
    if value in names:
      return None
    return f"{'unknown ' + what + '; ' if what else ''}choose one of: {', '.join(map(str, names))}"
  return check


def pair(check_pair: Callable[[float, float], bool], why: str) -> Check:
  """A (min, max) tuple."""
  return lambda v: None if len(v) == 2 and check_pair(*v) else why


def _model_names():
  from cnn_flax import models
  return models.names()


def _optimizer_names():
  from cnn_flax import optim
  return sorted(optim.OPTIMIZERS)


def _schedule_names():
  from cnn_flax import optim
  return sorted(optim.SCHEDULES)


def _host_policies():
  from cnn_flax.data import pipeline
  return pipeline.HOST_POLICIES


def _dataset_name(value):
  from cnn_flax.data import datasets  # imports TFDS (about a second) only for a name nobody registered
  return None if datasets.is_known(value) else f"unknown dataset; choose one of: {datasets.choices()}"


def _profile_range(value):
  ok = len(value) == 2 and all(isinstance(v, int) for v in value) and (value == (0, 0) or 1 <= value[0] <= value[1])
  return None if ok else "must be (START, END) optimizer steps with 1 <= START <= END, or (0, 0) for off"


def _parameter_names(value):
  ok = all(isinstance(name, str) and name for name in value)
  return None if ok else "must be a tuple of top-level parameter names, e.g. ('stem', 'layer1')"


def _increasing_fractions(value):
  ok = all(0 < b < 1 for b in value) and list(value) == sorted(value)
  return None if ok else "must be increasing fractions of training strictly between 0 and 1"


# --- the fields --------------------------------------------------------------------------------------------
F = Field
FIELDS: tuple[Field, ...] = (
    # model
    F("model.name", "lenet5", "a registered model, see `cnn_flax.models.names()`", one_of(_model_names, "model"),
      identity=True),
    F("model.kwargs", {}, "module fields passed to the model constructor, e.g. {'width_multiplier': 0.5}",
      identity=True, free_form=True),
    F("model.bn_sync", True, "BatchNorm statistics over the global batch (an all-reduce per BatchNorm layer); False: "
      "each device normalises its own shard (no BatchNorm communication; running averages averaged once a step)"),
    # data
    F("dataset.name", "digits", "'digits' (bundled, offline), a TFDS image-classification name such as 'cifar10' "
      "(prepared once, see the README), or 'folder' (your images in data_dir/{train,test}/<class>/)",
      _dataset_name, identity=True),
    F("dataset.data_dir", "", "where prepared datasets live; '' = the dataset's default ($TFDS_DATA_DIR or "
      "~/tensorflow_datasets for TFDS), the root directory for 'folder'"),
    F("dataset.train_split", "train", "the split to train on", identity=True),
    F("dataset.train_fraction", 1.0, "train on this class-stratified fraction of the training split, the same "
      "examples for every seed (the low-data regime of the study sweeps); 1 = all of it",
      lambda v: None if 0 < v <= 1 else "must be in (0, 1]", identity=True),
    F("dataset.eval_split", "test", "the split evaluated during training and by eval.py"),
    F("dataset.image_size", 0, "images are resized to this square size; 0 = the model's reference input size",
      at_least(0, " (0 = the model's input size)"), identity=True),
    F("dataset.num_workers", 0, "Grain worker processes for decoding and host augmentation; 0 = the main process",
      at_least(0)),
    F("dataset.on_device", "auto", "keep the training split on the accelerator and gather batches there: 'auto' "
      "when it fits in on_device_max_mb and no host augmentation is configured; 'yes' / 'no' force it",
      one_of(("auto", "yes", "no"))),
    F("dataset.on_device_max_mb", 1024, "largest training split (MiB, uint8) that 'auto' puts on the device",
      at_least(0)),
    F("dataset.eval_resize", 0, "evaluation: shorter side to this, then a centre crop; 0 = resize directly",
      at_least(0)),
    # augmentation: host (per example, needs the full-resolution image) and device (inside the train step)
    F("augment.host", "none", "host augmentation: none | random_resized_crop (Inception: `area` of the image, "
      "`aspect` ratio range) | scale_jitter (VGG: shorter side in `scale`, random crop)", one_of(_host_policies)),
    F("augment.area", (0.08, 1.0), "random_resized_crop: (min, max) fraction of the image area",
      pair(lambda lo, hi: 0 < lo <= hi <= 1, "must be (min, max) fractions with 0 < min <= max <= 1")),
    F("augment.aspect", (3 / 4, 4 / 3), "random_resized_crop: (min, max) aspect ratio",
      pair(lambda lo, hi: 0 < lo <= hi, "must be (min, max) > 0")),
    F("augment.scale", (256, 512), "scale_jitter: (min, max) shorter side in pixels",
      pair(lambda lo, hi: 0 < lo <= hi, "must be (min, max) > 0")),
    F("augment.crop_padding", 0, "device: random translation, pad by this many pixels and crop back at random",
      at_least(0, " (0 = no random crop)")),
    F("augment.flip", False, "device: random left-right mirror (not for digits)"),
    F("augment.pca_lighting", 0.0, "device: AlexNet colour noise, std of the PCA coefficients (paper: 0.1)",
      at_least(0)),
    F("augment.mixup_alpha", 0.0, "device: mixup Beta(alpha, alpha); 0 = off", at_least(0, " (0 = off)")),
    F("augment.cutmix_alpha", 0.0, "device: CutMix Beta(alpha, alpha); 0 = off; with mixup, one of them per batch",
      at_least(0, " (0 = off)")),
    # duration and batch
    F("batch_size", 128, "global batch: split over all devices of all processes",
      above(0, " (a positive global batch size)"), identity=True),
    F("eval_batch_size", 256, "global; the last eval batch is padded and masked, no example dropped",
      above(0, " (a positive global batch size)")),
    F("num_epochs", 10.0, "training length in epochs of the train split, unless num_train_steps > 0"),
    F("num_train_steps", 0, "training length in optimizer steps; 0 = use num_epochs",
      at_least(0, " (0 = train for num_epochs, > 0 = train for this many steps)")),
    # optimizer
    F("optimizer.name", "sgd", "a registered optimizer (`cnn_flax.optim.OPTIMIZERS`)",
      one_of(_optimizer_names, "optimizer"), identity=True),
    F("optimizer.learning_rate", 0.1, "peak learning rate (after warmup)", above(0)),
    F("optimizer.momentum", 0.9, "sgd and rmsprop; 0 = plain SGD", in_range(0, 1), identity=True),
    F("optimizer.nesterov", False, "sgd only"),
    F("optimizer.weight_decay", 0.0, "L2 on conv/dense kernels (sgd, rmsprop) or decoupled decay (adamw)",
      at_least(0)),
    F("optimizer.b1", 0.9, "adamw"),
    F("optimizer.b2", 0.999, "adamw"),
    F("optimizer.decay", 0.9, "rmsprop: decay of the squared-gradient average"),
    F("optimizer.eps", 1e-8, "adamw and rmsprop", above(0)),
    F("optimizer.grad_clip_norm", 0.0, "clip gradients to this global norm before the update (train/clipped logs "
      "the share of clipped steps); 0 = off", at_least(0, " (0 = off)")),
    # learning-rate schedule
    F("schedule.name", "cosine", "a registered schedule (`cnn_flax.optim.SCHEDULES`)",
      one_of(_schedule_names, "schedule")),
    F("schedule.warmup_epochs", 0.0, "linear warmup from 0 to the peak learning rate", at_least(0)),
    F("schedule.decay_at", (0.5, 0.75), "step: fractions of training at which the rate is multiplied ...",
      _increasing_fractions),
    F("schedule.decay_factor", 0.1, "... by this factor", lambda v: None if 0 < v <= 1 else "must be in (0, 1]"),
    F("schedule.end_factor", 0.0, "cosine: final rate as a fraction of the peak", in_range(0, 1, closed_high=True)),
    # loss
    F("label_smoothing", 0.0, "mix this much of a uniform distribution into the targets", in_range(0, 1)),
    F("remat", False, "recompute each block's activations in the backward pass instead of keeping them (less "
      "memory, about a third more compute): ResNet, DenseNet (the memory-efficient DenseNet), GoogLeNet, MobileNet"),
    F("profile_steps", (0, 0), "(START, END): write a jax.profiler trace of steps START..END into the workdir "
      "(TensorBoard's profile tab, or Perfetto); (0, 0) = off", _profile_range),
    F("grad_accum_steps", 1, "split each batch into this many microbatches, one forward and backward pass each, "
      "and take one step with their mean gradient (paper batch sizes on small devices; BatchNorm then sees "
      "microbatch statistics)", at_least(1)),
    F("ema_decay", 0.0, "keep an exponential moving average of the weights and BatchNorm statistics with this "
      "decay, evaluated beside the raw weights (eval/ema_*); 0 = off", in_range(0, 1), identity=True),
    F("aux_loss_weight", 0.3, "weight of auxiliary classifiers (GoogLeNet); 0 disables them in the loss",
      at_least(0, " (0 disables auxiliary losses)")),
    # numerics
    F("dtype", "auto", "compute dtype; parameters are always float32. 'auto' = bfloat16 on GPU/TPU, float32 on "
      "CPU (bf16 convolutions are slow on CPU)", one_of(("auto", "float32", "bfloat16"))),
    # logging, evaluation, checkpoints
    F("log_every_steps", 50, "train metrics to metrics.jsonl/TensorBoard; the last step is always logged",
      above(0)),
    F("eval_every_steps", 0, "0 = evaluate only at the end; the last step is always evaluated",
      at_least(0, " (0 = only at the end)")),
    F("checkpoint_every_steps", 1000, "0 = only at the end; the last step is always saved",
      at_least(0, " (0 = only at the end)")),
    F("keep_checkpoints", 3, "the latest N are kept, plus the one with the best eval accuracy", at_least(1)),
    F("progress_bar", True, "a tqdm bar on process 0"),
    # fine-tuning
    F("init_from", "", "start from pretrained variables: a training workdir (its latest checkpoint), a checkpoint "
      "step directory, or an .npz of variables (see cnn_flax.convert); arrays whose path or shape differ keep "
      "their fresh initialisation; used only when the workdir has no checkpoint yet"),
    F("freeze", (), "top-level parameter names that get no updates, e.g. ('stem', 'layer1'); BatchNorm "
      "statistics of frozen layers still update", _parameter_names),
    F("seed", 0, "initialisation, data order, augmentation and dropout all derive from it", identity=True),
)
del F

BY_PATH: dict[str, Field] = {f.path: f for f in FIELDS}
RUN_IDENTITY_FIELDS: tuple[str, ...] = tuple(f.path for f in FIELDS if f.identity)


def _cross_field_problems(config) -> list[tuple[str, str]]:
  """Checks that involve several fields: (field to name in the message, why)."""
  problems = []
  if not config.num_train_steps and not (config.num_epochs > 0 and math.isfinite(config.num_epochs)):
    problems.append(("num_epochs", "must be > 0 when num_train_steps is 0"))
  return problems


def base_config() -> ml_collections.ConfigDict:
  """A ConfigDict holding every field at its default (what recipes start from)."""
  config = ml_collections.ConfigDict()
  for f in FIELDS:
    *sections, leaf = f.path.split(".")
    node = config
    for section in sections:
      if section not in node:
        node[section] = ml_collections.ConfigDict()
      node = node[section]
    node[leaf] = ml_collections.ConfigDict(f.default) if isinstance(f.default, dict) else f.default
  return config


def _type_problem(f: Field, value: Any) -> str | None:
  """The default's type is the field's type; ints are accepted where floats are expected."""
  expected = type(f.default)
  if expected is float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
  elif expected is int:
    ok = isinstance(value, int) and not isinstance(value, bool)
  elif expected is tuple:
    ok = isinstance(value, (tuple, list))
  elif expected is dict:
    ok = isinstance(value, (dict, ml_collections.ConfigDict))
  else:
    ok = isinstance(value, expected)
  return None if ok else f"must be of type {expected.__name__}"


def flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
  """{"optimizer.learning_rate": 0.1, ...}; free-form fields stay whole (as plain dicts)."""
  out = {}
  for key, value in tree.items():
    path = f"{prefix}{key}"
    field = BY_PATH.get(path)
    if isinstance(value, (dict, ml_collections.ConfigDict)) and not (field and field.free_form):
      out.update(flatten(value, path + "."))
    else:
      out[path] = value.to_dict() if isinstance(value, ml_collections.ConfigDict) else value
  return out


def problems(config: ml_collections.ConfigDict) -> list[tuple[str, Any, str]]:
  """Every (field, value, why) that cannot work, in schema order; unknown fields first."""
  values = flatten(config)
  found = [(path, value, "is not a cnn_flax setting; see `python -m cnn_flax.schema` for the fields")
           for path, value in values.items() if path not in BY_PATH]
  for f in FIELDS:
    if f.path not in values:
      continue  # configs built from base_config() always have it; from_saved() fills older ones
    value = values[f.path]
    why = _type_problem(f, value) or (f.check(value) if f.check else None)
    if why:
      found.append((f.path, value, why))
  if not found:
    found += [(path, values.get(path), why) for path, why in _cross_field_problems(config)]
  return found


def settings(cls, section: Any):
  """An instance of the frozen dataclass `cls` from the config `section` holding fields of the same names.

  This is how code receives a group of options (e.g. the device augmentations): a new field of the group is
  picked up without a line of plumbing. Lists become tuples, so the result can be a static (hashable) argument.
  """
  values = {f.name: section[f.name] for f in dataclasses.fields(cls)}
  return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})


def format_table() -> str:
  """Every field with its default and meaning, as a Markdown table."""
  lines = ["| field | default | meaning |", "|---|---|---|"]
  for f in FIELDS:
    mark = " (run identity: a resume may not change it)" if f.identity else ""
    lines.append(f"| `{f.path}` | `{f.default!r}` | {f.doc}{mark} |")
  return "\n".join(lines)


if __name__ == "__main__":
  print(format_table(), file=sys.stdout)
