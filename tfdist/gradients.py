"""How gradients cross the wire: compression, packing, and micro-batch accumulation.

Every route all-reduces its gradients through the Keras optimizer (`apply_gradients`), which
calls `tfdist.compat.keras_gradient_reduction` for an optimizer given `GradientOptions`:

- **Compression** casts each float gradient to bfloat16 or float16 before the all-reduce and
  back after it, halving the bytes on the wire. float16 keeps 3 more mantissa bits than bfloat16
  but only 5 exponent bits: small gradients flush to zero unless they are multiplied first by
  `loss_scale` (and divided after). The sum is formed in the compressed dtype.
- **Packing**: `bytes_per_pack` is TensorFlow's `CommunicationOptions(bytes_per_pack=...)`
  (0, the default: one pack of all gradients per step); `flat=True` concatenates the gradients of
  each dtype into one buffer and all-reduces that.
- **Accumulation** (`split_micro_batches`, `accumulate`): each replica's batch is cut into
  `tfdist.data.DataSpec.accumulation_steps` micro-batches; their gradients are summed locally and
  all-reduced once per optimizer step (the data layer knows the micro-batch size).

Kept free of Keras internals: the override of Keras's all-reduce lives in `tfdist.compat`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import tensorflow as tf

from tfdist import checks

COMPRESSIONS = ("none", "bfloat16", "float16")
_WIRE_DTYPES = {"bfloat16": tf.bfloat16, "float16": tf.float16}


class GradientOptionsError(ValueError):
    """Gradient reduction options that cannot work."""


@dataclasses.dataclass(frozen=True)
class GradientOptions:
    """How a step all-reduces its gradients.

    Args:
        compression: `"none"`, `"bfloat16"` or `"float16"`: the dtype gradients travel in.
            Defaults to `"none"`.
        loss_scale: Only with `"float16"`: gradients are multiplied by this before the cast and
            divided after the reduction, so that small values survive float16's range. `None`
            scales by 1. Defaults to `None`.
        bytes_per_pack: TensorFlow's `CommunicationOptions(bytes_per_pack=...)`: 0 packs all
            gradients into one all-reduce; a positive value splits them into packs of about that
            many bytes. Defaults to 0.
        flat: Concatenate the gradients of each dtype into one flat buffer and all-reduce it.
            Defaults to `False`.

    Raises:
        GradientOptionsError: An unknown compression, a `loss_scale` without float16 or not a
            positive finite number, or a negative `bytes_per_pack`.

    Example:

    ```python
    options = tfdist.gradients.GradientOptions(compression="bfloat16")
    trainer = tfdist.loop.Trainer(..., gradients=options)
    ```
    """

    compression: str = "none"
    loss_scale: float | None = None
    bytes_per_pack: int = 0
    flat: bool = False

    def __post_init__(self) -> None:
        checks.one_of("compression", self.compression, COMPRESSIONS, owner="GradientOptions",
                      error=GradientOptionsError)
        if self.loss_scale is not None:
            if self.compression != "float16":
                raise GradientOptionsError(
                    f"Invalid value for argument `loss_scale` of GradientOptions. Received: "
                    f"loss_scale={self.loss_scale!r} with compression={self.compression!r}. "
                    "Loss scaling guards float16's range only: pass compression='float16' or "
                    "loss_scale=None.")
            checks.seconds("loss_scale", self.loss_scale, example=1024, owner="GradientOptions",
                           error=GradientOptionsError)
        checks.non_negative_int("bytes_per_pack", self.bytes_per_pack, owner="GradientOptions",
                                error=GradientOptionsError)
        if not isinstance(self.flat, bool):
            raise GradientOptionsError(
                f"Invalid value for argument `flat` of GradientOptions. Received: "
                f"flat={self.flat!r}. Pass True or False.")

    @property
    def is_default(self) -> bool:
        """True when these options reduce exactly as TensorFlow does without them."""
        return self == GradientOptions()


def _is_dense_float(grad: Any) -> bool:
    return isinstance(grad, tf.Tensor) and grad.dtype in (tf.float32, tf.float64)


def all_reduce_sum(grads: Sequence[Any], options: GradientOptions) -> list[Any]:
    """Sums `grads` across all replicas (call in replica context).

    Args:
        grads: This replica's gradients, none of them `None`. Dense float32/float64 ones are
            compressed as `options` says; others (`tf.IndexedSlices`, other dtypes) travel as
            they are.
        options: How to reduce.

    Returns:
        The summed gradients, in the order and dtypes of `grads`.
    """
    context = tf.distribute.get_replica_context()
    grads = [tf.convert_to_tensor(g) if not isinstance(g, tf.IndexedSlices) else g for g in grads]
    wire_dtype = _WIRE_DTYPES.get(options.compression)
    scale = options.loss_scale or 1.0
    communication = tf.distribute.experimental.CommunicationOptions(
        bytes_per_pack=options.bytes_per_pack)

    def to_wire(g: Any) -> Any:
        if wire_dtype is None or not _is_dense_float(g):
            return g
        if scale != 1.0:
            g = g * tf.cast(scale, g.dtype)
        return tf.cast(g, wire_dtype)

    wire = [to_wire(g) for g in grads]
    if options.flat:
        reduced = _flat_all_reduce(context, wire, communication)
    else:
        reduced = list(context.all_reduce(tf.distribute.ReduceOp.SUM, wire, options=communication))

    def from_wire(r: Any, g: Any) -> Any:
        if wire_dtype is None or not _is_dense_float(g):
            return r
        r = tf.cast(r, g.dtype)
        return r / tf.cast(scale, g.dtype) if scale != 1.0 else r

    return [from_wire(r, g) for r, g in zip(reduced, grads)]


def _flat_all_reduce(context: Any, grads: list[Any],
                     communication: tf.distribute.experimental.CommunicationOptions) -> list[Any]:
    """One all-reduce per dtype of one concatenated buffer; sparse gradients go separately."""
    by_dtype: dict[tf.DType, list[int]] = {}
    for i, g in enumerate(grads):
        if isinstance(g, tf.Tensor):
            by_dtype.setdefault(g.dtype, []).append(i)
    dense = {i for indices in by_dtype.values() for i in indices}
    buffers = [tf.concat([tf.reshape(grads[i], [-1]) for i in indices], axis=0)
               for indices in by_dtype.values()]
    others = [i for i in range(len(grads)) if i not in dense]
    # One call per buffer: TensorFlow's batched reduction would concatenate mixed dtypes.
    reduced = [context.all_reduce(tf.distribute.ReduceOp.SUM, b, options=communication)
               for b in buffers]
    out: list[Any] = [None] * len(grads)
    for buffer, indices in zip(reduced, by_dtype.values()):
        sizes = [grads[i].shape.num_elements() for i in indices]
        for i, part in zip(indices, tf.split(buffer, sizes)):
            out[i] = tf.reshape(part, tf.shape(grads[i]))
    if others:
        sparse = context.all_reduce(tf.distribute.ReduceOp.SUM, [grads[i] for i in others],
                                    options=communication)
        for i, r in zip(others, sparse):
            out[i] = r
    return out


def split_micro_batches(batch: Any, steps: int) -> Any:
    """Cuts every tensor of a per-replica batch into `steps` equal micro-batches on axis 0.

    Args:
        batch: A nest of tensors sharing their first dimension (a multiple of `steps`; the data
            layer guarantees it for `DataSpec.accumulation_steps`).
        steps: Number of micro-batches.

    Returns:
        The same nest with a new leading dimension of size `steps`: element `i` is micro-batch
        `i`, for a `tf.range` loop to index.
    """

    def cut(t: Any) -> Any:
        t = tf.convert_to_tensor(t)
        if t.shape.rank is not None and t.shape[1:].is_fully_defined():
            return tf.reshape(t, [steps, -1, *t.shape[1:]])  # static micro-batch shape
        return tf.reshape(t, tf.concat([[steps, -1], tf.shape(t)[1:]], axis=0))

    return tf.nest.map_structure(cut, batch)


def accumulate(micro_step: Callable[[Any], tuple[Any, list[Any]]], batch: Any, steps: int,
               *, combine: str | Callable[[Any, Any], Any] = "sum") -> tuple[Any, list[Any]]:
    """Runs `micro_step` on each of `steps` micro-batches and sums the gradients it returns.

    The micro-batches run one after another in a `tf.while_loop`, so one micro-batch's
    activations are alive at a time; nothing is communicated here (call in replica context, then
    apply the sums once: one all-reduce per optimizer step).

    Args:
        micro_step: `micro_step(micro_batch) -> (aux, grads)`: `aux` a nest of tensors (e.g. the
            loss), `grads` a list with `None` for a variable the loss does not reach.
        batch: This replica's batch, `steps` micro-batches long.
        steps: Number of micro-batches.
        combine: What becomes of `aux`: `"sum"` over the micro-batches, the `"last"` one, or
            `combine(previous, new) -> aux`. Defaults to `"sum"`.

    Returns:
        `(aux, grad_sums)`; `None` where the first micro-step's gradient was `None`.
    """
    if steps == 1:
        aux, grads = micro_step(batch)
        return aux, list(grads)
    micro = split_micro_batches(batch, steps)
    # The first micro-batch runs outside the loop: it fixes which gradients exist and the
    # structure of `aux`, which the loop then carries.
    aux, first = micro_step(tf.nest.map_structure(lambda t: t[0], micro))
    present = [i for i, g in enumerate(first) if g is not None]
    aux = tf.nest.map_structure(tf.convert_to_tensor, aux)
    sums = [tf.convert_to_tensor(first[i]) for i in present]

    def body(i: tf.Tensor, aux: Any, sums: list[tf.Tensor]) -> tuple[Any, ...]:
        new_aux, grads = micro_step(tf.nest.map_structure(lambda t: tf.gather(t, i), micro))
        new_aux = tf.nest.map_structure(tf.convert_to_tensor, new_aux)
        if combine == "sum":
            new_aux = tf.nest.map_structure(lambda a, b: a + b, aux, new_aux)
        elif callable(combine):
            new_aux = combine(aux, new_aux)
        return i + 1, new_aux, [s + tf.convert_to_tensor(grads[j]) for s, j in zip(sums, present)]

    _, aux, sums = tf.while_loop(lambda i, *_: i < steps, body, (tf.constant(1), aux, sums))
    out: list[Any] = [None] * len(first)
    for s, j in zip(sums, present):
        out[j] = s
    return aux, out
