"""Every config field cnn_flax reads, with its default and what it means.

Model configs start from `get_base_config()` and change what their paper's recipe needs. Any field can be
overridden on the command line, e.g. `--config.optimizer.learning_rate=0.05 --config.num_train_steps=200`.
Durations are in epochs (`num_epochs`) unless `num_train_steps` is set; intervals are in optimizer steps.
"""
import ml_collections


def get_base_config() -> ml_collections.ConfigDict:
  config = ml_collections.ConfigDict()

  # --- model --------------------------------------------------------------------------------------
  config.model = ml_collections.ConfigDict()
  config.model.name = "lenet5"  # a name from `cnn_flax.models.names()`
  # Module fields passed to the model constructor, e.g. {"width_multiplier": 0.5} for MobileNet.
  config.model.kwargs = ml_collections.ConfigDict()

  # --- data ---------------------------------------------------------------------------------------
  config.dataset = ml_collections.ConfigDict()
  # "digits" is bundled and works offline; TFDS: mnist, fashion_mnist, cifar10, cifar100, imagenette,
  # imagenet2012 (prepared once, see the README); "folder": your images in data_dir/{train,test}/<class>/.
  config.dataset.name = "digits"
  config.dataset.data_dir = ""  # where prepared datasets live; "" = the dataset's default ($TFDS_DATA_DIR or
  # ~/tensorflow_datasets for TFDS), the root directory for "folder"
  config.dataset.train_split = "train"
  config.dataset.eval_split = "test"
  config.dataset.image_size = 0  # images are resized to this square size; 0 = the model's reference input size
  config.dataset.num_workers = 0  # Grain worker processes for decoding/augmentation; 0 = in the main process
  # Keep the whole training split on the accelerator and gather batches there: "auto" does so when the split
  # fits in `on_device_max_mb` and no host augmentation is configured; "yes" / "no" force it.
  config.dataset.on_device = "auto"
  config.dataset.on_device_max_mb = 1024
  config.dataset.eval_resize = 0  # evaluation: shorter side to this, then a centre crop; 0 = resize directly

  # --- augmentation (training only, on the device inside the train step) ------------------------------
  config.augment = ml_collections.ConfigDict()
  # On the host, per example (needs the full-resolution image): none | random_resized_crop (Inception:
  # `area` of the image, `aspect` ratio range) | scale_jitter (VGG: shorter side in `scale`, random crop).
  config.augment.host = "none"
  config.augment.area = (0.08, 1.0)
  config.augment.aspect = (3 / 4, 4 / 3)
  config.augment.scale = (256, 512)
  # On the device, inside the train step:
  config.augment.crop_padding = 0  # random translation: pad by this many pixels, crop back at random
  config.augment.flip = False  # random left-right mirror (not for digits)
  config.augment.pca_lighting = 0.0  # AlexNet colour noise: std of the PCA coefficients (paper: 0.1)
  config.augment.mixup_alpha = 0.0  # mixup Beta(alpha, alpha); 0 = off
  config.augment.cutmix_alpha = 0.0  # cutmix Beta(alpha, alpha); 0 = off; with mixup, one of them per batch

  # --- duration and batch -------------------------------------------------------------------------
  config.batch_size = 128  # global: split over all devices of all processes
  config.eval_batch_size = 256  # global; the last eval batch is padded and masked, no example dropped
  config.num_epochs = 10.0  # training length in epochs of the train split ...
  config.num_train_steps = 0  # ... unless this is > 0: then it is the length in optimizer steps

  # --- optimizer ----------------------------------------------------------------------------------
  config.optimizer = ml_collections.ConfigDict()
  config.optimizer.name = "sgd"  # sgd | adamw | rmsprop
  config.optimizer.learning_rate = 0.1  # peak learning rate (after warmup)
  config.optimizer.momentum = 0.9  # sgd and rmsprop; 0 = plain SGD
  config.optimizer.nesterov = False  # sgd only
  config.optimizer.weight_decay = 0.0  # L2 on conv/dense kernels (sgd, rmsprop) or decoupled decay (adamw)
  config.optimizer.b1 = 0.9  # adamw
  config.optimizer.b2 = 0.999  # adamw
  config.optimizer.decay = 0.9  # rmsprop: decay of the squared-gradient average
  config.optimizer.eps = 1e-8  # adamw and rmsprop

  # --- learning-rate schedule ---------------------------------------------------------------------
  config.schedule = ml_collections.ConfigDict()
  config.schedule.name = "cosine"  # constant | step | cosine
  config.schedule.warmup_epochs = 0.0  # linear warmup from 0 to the peak learning rate
  config.schedule.decay_at = (0.5, 0.75)  # step: fractions of training at which the rate is multiplied ...
  config.schedule.decay_factor = 0.1  # ... by this factor
  config.schedule.end_factor = 0.0  # cosine: final rate as a fraction of the peak

  # --- loss ---------------------------------------------------------------------------------------
  config.label_smoothing = 0.0
  config.aux_loss_weight = 0.3  # weight of auxiliary classifiers (GoogLeNet); 0 disables them in the loss

  # --- numerics -----------------------------------------------------------------------------------
  # Compute dtype; parameters are always float32. "auto" = bfloat16 on GPU/TPU, float32 on CPU (bf16
  # convolutions are slow on CPU).
  config.dtype = "auto"

  # --- logging, evaluation, checkpoints -----------------------------------------------------------
  config.log_every_steps = 50  # train metrics to metrics.jsonl/TensorBoard; the last step is always logged
  config.eval_every_steps = 0  # 0 = evaluate only at the end; the last step is always evaluated
  config.checkpoint_every_steps = 1000  # 0 = only at the end; the last step is always saved
  config.keep_checkpoints = 3  # the latest N are kept, plus the one with the best eval accuracy
  config.progress_bar = True

  # --- fine-tuning ---------------------------------------------------------------------------------
  # Start from pretrained variables: a training workdir (its latest checkpoint), a checkpoint step directory,
  # or an .npz of variables (see cnn_flax.convert). Arrays whose path or shape differ (e.g. a classifier head
  # for another number of classes) keep their fresh initialisation. Used only when the workdir has no
  # checkpoint yet; a resume continues from the workdir's own checkpoint.
  config.init_from = ""
  # Top-level parameter names that get no updates, e.g. ("stem", "layer1") for ResNet; see
  # `python -m cnn_flax.summary --model NAME` for the names. BatchNorm statistics of frozen layers still update.
  config.freeze = ()

  config.seed = 0  # initialisation, data order and dropout all derive from it
  return config


def use_bundled_digits(config: ml_collections.ConfigDict, *, image_size: int, num_epochs: float,
                       batch_size: int = 64, learning_rate: float = 0.05) -> ml_collections.ConfigDict:
  """Turns a paper recipe into its `:digits` preset: the same model on the bundled digits, CPU-sized.

  The digits are upsampled to `image_size` (the smallest size the model's poolings allow, or more); random
  translations of about a tenth of the image replace the paper's crops; SGD with Nesterov momentum and a
  cosine schedule replaces the paper's long schedule.
  """
  config.dataset.name = "digits"
  config.dataset.data_dir = ""
  config.dataset.train_split, config.dataset.eval_split = "train", "test"
  config.dataset.image_size = image_size
  config.dataset.eval_resize = 0
  config.dataset.num_workers = 0  # 1,797 small images: worker processes would cost more than they save
  config.dataset.on_device = "auto"
  config.augment.host = "none"
  config.augment.crop_padding = max(1, round(image_size * 3 / 32))
  config.augment.flip = False  # mirrored digits are other shapes
  config.augment.pca_lighting = 0.0
  config.augment.mixup_alpha = config.augment.cutmix_alpha = 0.0
  config.batch_size, config.eval_batch_size = batch_size, 256
  config.num_epochs, config.num_train_steps = num_epochs, 0
  config.optimizer.name = "sgd"
  config.optimizer.learning_rate = learning_rate
  config.optimizer.momentum, config.optimizer.nesterov = 0.9, True
  config.optimizer.weight_decay = 5e-4
  config.schedule.name, config.schedule.warmup_epochs = "cosine", 0.0
  steps_per_epoch = 1442 // batch_size
  config.log_every_steps = max(1, steps_per_epoch // 2)
  config.eval_every_steps = steps_per_epoch * max(1, int(num_epochs) // 4)
  config.checkpoint_every_steps = config.eval_every_steps
  return config


def paper_imagenet(config: ml_collections.ConfigDict, *, batch_size: int, num_epochs: float) -> None:
  """ImageNet defaults shared by the paper recipes: 224 crops, evaluation at shorter side 256 + centre crop."""
  config.dataset.name = "imagenet2012"
  config.dataset.train_split, config.dataset.eval_split = "train", "validation"
  config.dataset.image_size = 224
  config.dataset.eval_resize = 256
  config.dataset.num_workers = 8
  config.augment.flip = True
  config.batch_size, config.eval_batch_size = batch_size, 500  # 50,000 validation images / 500
  config.num_epochs = num_epochs
  config.log_every_steps = 100
  config.eval_every_steps = 5000
  config.checkpoint_every_steps = 5000


def check_preset(preset: str, presets: tuple[str, ...], file: str) -> None:
  if preset not in presets:
    names = ", ".join(p for p in presets if p) or "(none)"
    raise ValueError(f"unknown preset {preset!r} for {file}; choose one of: {names}")
