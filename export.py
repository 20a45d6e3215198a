"""Export a trained model for inference: `python export.py --workdir runs/lenet5 --format stablehlo|saved_model
[--output DIR] [--step N | --best] [--ema] [--fold_bn]`.

stablehlo: a serialized jax.export module (load with jax.export.deserialize(...).call); saved_model: a TensorFlow
SavedModel through jax2tf (TF Serving, TFLite). Both take uint8 NHWC images of any batch size and return logits;
export.json beside the artifact says how to prepare the images.
"""
import json
import os

from absl import app, flags

from cnn_flax import cli

_RUN = cli.define_checkpoint_flags("Use")
_FORMAT = flags.DEFINE_string("format", "stablehlo", "stablehlo (jax.export) or saved_model (jax2tf).")
_OUTPUT = flags.DEFINE_string("output", None, "A new directory (default: WORKDIR/export/<format>_step<N>).")
_FOLD_BN = flags.DEFINE_bool("fold_bn", False, "Fold each BatchNorm into the convolution before it.")


def main(argv):
  if len(argv) > 1:
    cli.fail(f"unexpected arguments {argv[1:]}")
  _RUN.check()
  from cnn_flax import exporter, inference

  def run():
    if _FORMAT.value not in exporter.FORMATS:  # before restoring anything
      raise exporter.UserError(f"--format={_FORMAT.value!r}: choose one of {', '.join(exporter.FORMATS)}")
    restored = inference.restore(_RUN.workdir.value, _RUN.step.value, _RUN.best.value, _RUN.ema.value)
    output = _OUTPUT.value or os.path.join(_RUN.workdir.value, "export", f"{_FORMAT.value}_step{restored.step}"
                                           + ("_ema" if _RUN.ema.value else "") + ("_folded" if _FOLD_BN.value else ""))
    return output, exporter.export(restored, _FORMAT.value, output, _FOLD_BN.value)

  output, meta = cli.run_user_command(run)
  print(f"wrote {output} ({meta['format']}, step {meta['step']}, {meta['batchnorm_folded']} BatchNorms folded)")
  print(json.dumps({"path": output, **meta}), flush=True)


if __name__ == "__main__":
  app.run(main, flags_parser=cli.parse_flags)
