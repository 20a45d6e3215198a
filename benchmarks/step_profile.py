"""Where a model's training step spends its time, by kind of operation: a `jax.profiler` trace of the real step
(`cnn_flax.benchmark.measure`), its XLA operations named from the compiled HLO and grouped.

  python benchmarks/step_profile.py --model densenet121 --batch_size 16 --image_size 224
  python benchmarks/step_profile.py --model googlenet_bn --batch_size 64 --image_size 96 --top 15

Prints milliseconds per step and the share of each group, then the `--top` operations. The figures are thread
time: on a CPU two operations can run at once, so the groups add up to more than the step's wall time; read the
shares. Groups: convolutions forward, their input gradients (named `transpose(jvp(...))` by JAX), XLA's other
convolutions (kernel gradients, which carry no name), matrix products (the fast paths' 1x1 convolutions and
kernel-gradient products), concatenations, reductions (BatchNorm statistics, pooling), copies and transposes, and
the remaining elementwise work (BatchNorm's normalisation, activations, the optimizer); with oneDNN, its
BatchNorm calls (statistics, normalisation, the ReLU after it and their gradient) are a group of their own. The
trace itself stays in `--trace_dir` for TensorBoard or Perfetto.
"""
import argparse
import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from cnn_flax import benchmark  # noqa: E402


def fusion_groups(hlo_text: str) -> dict[str, str]:
  """Each instruction of the entry computation -> its group, from the computation it calls (or itself)."""
  bodies, current = {}, None
  for line in hlo_text.splitlines():
    header = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
    if header:
      current = header.group(1)
      bodies[current] = []
    elif current:
      bodies[current].append(line)
  groups = {}
  for line in hlo_text.splitlines():
    match = re.match(r"^\s*(?:ROOT )?%([\w.\-]+) = .*", line)
    if not match:
      continue
    name = match.group(1)
    called = re.search(r"calls=%([\w.\-]+)", line)
    body = "\n".join(bodies.get(called.group(1), [])) if called else line
    op_name = re.search(r'op_name="([^"]+)"', line)
    op_name = op_name.group(1) if op_name else ""
    onednn = re.search(r'custom_call_target="CnnFlaxConv(\w+)"', body)  # cnn_flax/models/onednn.py's handlers
    if 'custom_call_target="CnnFlaxBatchNorm' in body:
      group = "BatchNorm and its ReLU, forward and backward (oneDNN)"
    elif onednn:
      group = {"Forward": "convolutions: forward", "InputGradient": "convolutions: input gradients"}.get(
          onednn.group(1), "convolutions: kernel gradients (oneDNN)")
    elif " convolution(" in body:
      group = ("convolutions: input gradients" if "transpose(" in op_name else
               "convolutions: forward" if op_name else "convolutions: kernel gradients (XLA's)")
    elif " dot(" in body:
      group = "matrix products"
    elif " concatenate(" in body:
      group = "concatenations"
    elif " reduce(" in body or " reduce-window(" in body or "select-and-scatter(" in body:
      group = "reductions (BatchNorm statistics, pooling)"
    elif name.startswith(("copy", "transpose")):
      group = "copies and transposes"
    else:
      group = "elementwise and the rest"
    groups[name] = group
  return groups


def main():
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--model", required=True)
  parser.add_argument("--batch_size", type=int, default=16)
  parser.add_argument("--image_size", type=int, default=0)
  parser.add_argument("--steps", type=int, default=3)
  parser.add_argument("--top", type=int, default=10, help="the longest operations to list")
  parser.add_argument("--trace_dir", default="", help="where the trace goes (default: a temporary directory)")
  args = parser.parse_args()
  trace_dir = args.trace_dir or tempfile.mkdtemp(prefix="step_profile_")
  result = benchmark.measure(args.model, batch_size=args.batch_size, image_size=args.image_size, steps=args.steps,
                             warmup=1, trace_dir=trace_dir)
  with open(os.path.join(trace_dir, "step.hlo.txt")) as f:
    groups = fusion_groups(f.read())
  trace = sorted(glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True))[-1]
  with gzip.open(trace) as f:
    events = json.load(f)["traceEvents"]
  per_op = collections.Counter()
  for event in events:
    if event.get("ph") == "X" and event.get("name") in groups:  # the step's operations, not the runtime's spans
      per_op[event["name"]] += event["dur"] / 1000 / args.steps
  per_group = collections.Counter()
  for name, ms in per_op.items():
    per_group[groups[name]] += ms
  total = sum(per_group.values())
  print(f"{args.model}, batch {result['batch_size']}, {result['image_size']} px: {result['step_ms']:.0f} ms a step "
        f"(wall), {total:.0f} ms of operations (thread time), trace in {trace_dir}")
  for group, ms in per_group.most_common():
    print(f"  {ms:8.1f} ms  {100 * ms / total:5.1f}%  {group}")
  print(f"the {args.top} longest operations:")
  for name, ms in per_op.most_common(args.top):
    print(f"  {ms:8.1f} ms  {groups[name]:45s} {name}")


if __name__ == "__main__":
  from cnn_flax import hugepages
  hugepages.reexec()  # the step as train.py runs it (cnn_flax/hugepages.py)
  main()
