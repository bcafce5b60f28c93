"""`speedsim measure`: real timings of speedsim's decoders on this machine, in the measured-CSV schema.

`speedsim measure --device cpu|cuda --out CSV` writes the rows the simulator is validated
against (columns: `speedsim.validation.schema`; meaning: `experiments/measured/h200/README.md`).
Parts (`--parts`, all by default):

- `steps` (`steps.py`): ceilings (a copy, a GEMM, the per-launch cost of a tiny op, GEMVs), one
  decoder layer with n tokens (`layer`), the shared group unshared / sequential / pipelined
  (`group`), the LM head (`lmhead`); for a checkpoint or config model also whole decodes of the
  functional decoder (`decode`, `impl=functional`);
- `loop` (`loop.py`, `static.py`): whole sequential-greedy and SPEED decodes in a closed loop
  over static buffers, one CUDA-graph replay per step on CUDA, the host round trip included
  (`decode`, `impl=static`), with the exit traces of the same decodes beside the CSV;
- `batch` (`batch.py`): one decode step for B sequences at their own KV lengths, unshared and
  pipelined (`batch`, in `<stem>.batch.csv`).

Models (`models.py`): a trained checkpoint, random weights at a training config's shape, or
random weights at a model spec's dimensions (default `t5base`) for every UxR of `--sharings`.
"""

from speedsim.validation.measure.run import PARTS, MeasurePlan, measure, plan_from_options

__all__ = ["PARTS", "MeasurePlan", "measure", "plan_from_options"]
