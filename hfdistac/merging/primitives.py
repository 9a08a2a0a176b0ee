"""Shared merging primitives, written once and used by every method module (METHOD.md §2).

Two kinds of helpers live here:

* **Tensor primitives** (pure functions of tensors): magnitude threshold and trim (TIES), sign election and
  disjoint mean (TIES), TALL masks and the consensus mask (Consensus TA), the polar factor / nearest
  orthogonal matrix (TSVM), and :func:`is_matrix_parameter`, the one named predicate deciding which tensors
  TSVM treats as matrices.
* **Streaming helpers** over a sequence of task vectors: :func:`check_task_vectors` (identical keys and
  shapes, checked without reading tensor data from lazy files), :func:`load_float32` and
  :func:`stack_key` (one parameter of every task, as float32). Methods walk the keys and fetch one
  parameter of each task at a time, so lazy safetensors-backed :class:`~hfdistac.task_vectors.TaskVector`
  inputs are never materialised as a whole.

All arithmetic is float32 whatever the stored dtype, and reductions over tasks are sequential in task order
so results are bit-for-bit reproducible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from numbers import Integral, Real

import torch

from ..errors import InputError

TaskVectors = Sequence[Mapping[str, torch.Tensor]]

# --------------------------------------------------------------------------------------------------------
# Validation of inputs and hyper-parameters
# --------------------------------------------------------------------------------------------------------


def tensor_shapes(task_vector: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    """Shape of every tensor; read from the safetensors header for a lazy TaskVector (no tensor data)."""
    from ..task_vectors import TaskVector

    if isinstance(task_vector, TaskVector) and task_vector.is_lazy:
        from ..tensor_files import safe_open_checked

        with safe_open_checked(task_vector.path) as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in task_vector}
    return {k: tuple(task_vector[k].shape) for k in task_vector}


def check_task_vectors(task_vectors: TaskVectors) -> list[str]:
    """Check that the task vectors can be merged and return their keys (in the first one's order).

    Args:
        task_vectors: The task vectors τ_1 … τ_T.

    Returns:
        The parameter names, in the order of the first task vector.

    Raises:
        InputError: no task vectors, a task vector that is not a mapping, or task vectors whose keys or
            shapes differ (the message names the first differing key).
    """
    if isinstance(task_vectors, Mapping) or not isinstance(task_vectors, Sequence):
        raise InputError(f"task_vectors must be a sequence of {{name: tensor}} mappings, got "
                         f"{type(task_vectors).__name__}",
                         "pass a list of task vectors, e.g. [tau_1, tau_2]")
    if len(task_vectors) == 0:
        raise InputError("no task vectors given; merging needs at least one")
    for t, tv in enumerate(task_vectors):
        if not isinstance(tv, Mapping):
            raise InputError(f"task vector {t} is a {type(tv).__name__}, not a {{name: tensor}} mapping")
    keys = list(task_vectors[0])
    if not keys:
        raise InputError("task vector 0 has no tensors")
    key_set = set(keys)
    for t in range(1, len(task_vectors)):
        other = list(task_vectors[t])
        other_set = set(other)
        if other_set != key_set:
            missing = next((k for k in keys if k not in other_set), None)
            if missing is not None:
                raise InputError(f"task vectors 0 and {t} have different parameters: first differing key "
                                 f"{missing!r} is missing from task vector {t}",
                                 "all task vectors must come from the same architecture")
            extra = next(k for k in other if k not in key_set)
            raise InputError(f"task vectors 0 and {t} have different parameters: first differing key "
                             f"{extra!r} is only in task vector {t}",
                             "all task vectors must come from the same architecture")
    ref = tensor_shapes(task_vectors[0])
    for t in range(1, len(task_vectors)):
        shapes = tensor_shapes(task_vectors[t])
        for k in keys:
            if shapes[k] != ref[k]:
                raise InputError(f"task vectors 0 and {t} differ in shape at first differing key {k!r}: "
                                 f"{ref[k]} vs {shapes[k]}",
                                 "all task vectors must come from the same architecture")
    return keys


def check_density(density: object) -> float:
    """Validate a TIES density: a real number in (0, 1].

    Raises:
        InputError: naming the value given and the allowed range.
    """
    if isinstance(density, bool) or not isinstance(density, Real) or not 0.0 < float(density) <= 1.0:
        raise InputError(f"density must be a number in (0, 1], got {density!r}",
                         "density is the fraction of each task vector's entries TIES keeps, e.g. 0.2")
    return float(density)


def check_nonnegative(name: str, value: object) -> float:
    """Validate a finite real number ≥ 0 (used for TALL-mask λ)."""
    if isinstance(value, bool) or not isinstance(value, Real) or not math.isfinite(float(value)) or value < 0:
        raise InputError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def check_positive_int(name: str, value: object) -> int:
    """Validate an integer ≥ 1."""
    if isinstance(value, bool) or not isinstance(value, Integral) or value < 1:
        raise InputError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


# --------------------------------------------------------------------------------------------------------
# Streaming over task vectors, one parameter at a time
# --------------------------------------------------------------------------------------------------------


def load_float32(task_vector: Mapping[str, torch.Tensor], key: str) -> torch.Tensor:
    """One parameter of one task vector as float32 (detached; may alias an in-memory float32 input, so
    callers never modify it in place).

    Raises:
        InputError: if the tensor is not floating point.
    """
    tensor = task_vector[key]
    if not isinstance(tensor, torch.Tensor) or not torch.is_floating_point(tensor):
        what = tensor.dtype if isinstance(tensor, torch.Tensor) else type(tensor).__name__
        raise InputError(f"task vector entry {key!r} is {what}, not a floating-point tensor")
    out = tensor.detach().to(torch.float32)
    # A tensor read from a safetensors file may sit at an unaligned address (its offset in the file): LAPACK and
    # BLAS then take other code paths and round differently. A copy in fresh (aligned) memory makes the result
    # the same bits whether a task vector comes from memory or from disk.
    return out.clone() if out.data_ptr() % 64 else out


def stack_key(task_vectors: TaskVectors, key: str) -> torch.Tensor:
    """``key`` of every task stacked into a float32 tensor of shape ``(T, *shape)``."""
    return torch.stack([load_float32(tv, key) for tv in task_vectors])


# Entry-wise methods (TIES, Consensus) work on column chunks of a (T, n) stack so their temporaries stay
# ~T MB instead of several copies of the stack (tens of MB each for a 768x3072 matrix of 8 tasks).
CHUNK_ENTRIES = 1 << 18


def map_entries(fn: Callable[[torch.Tensor], torch.Tensor], stacked: torch.Tensor,
                chunk: int = CHUNK_ENTRIES) -> torch.Tensor:
    """Apply an entry-wise merge ``fn: (T, c) -> (c,)`` to a ``(T, *shape)`` stack, chunk by chunk.

    ``fn`` must treat every entry (column) independently; the result equals ``fn`` on the whole stack
    (reshaped to ``(T, n)``), reshaped back to ``shape``.
    """
    flat = stacked.reshape(stacked.shape[0], -1)
    out = torch.empty(flat.shape[1], dtype=stacked.dtype)
    for start in range(0, flat.shape[1], chunk):
        out[start:start + chunk] = fn(flat[:, start:start + chunk])
    return out.reshape(stacked.shape[1:])


def sum_over_tasks(stacked: torch.Tensor) -> torch.Tensor:
    """Σ_t stacked[t], added sequentially in task order (bit-for-bit reproducible)."""
    total = stacked[0].clone()
    for t in range(1, stacked.shape[0]):
        total += stacked[t]
    return total


# --------------------------------------------------------------------------------------------------------
# TIES: magnitude trim, sign election, disjoint mean
# --------------------------------------------------------------------------------------------------------


def keep_count(numel: int, density: float) -> int:
    """Number of entries TIES keeps out of ``numel``: ``round(density · numel)``, at least 1, at most numel.

    Rounding (not truncation) makes e.g. density 0.3 of 10 entries keep 3 despite 0.3·10 = 2.9999….
    """
    return max(1, min(numel, round(density * numel)))


_HI_BINS = 1 << 15  # |x| has sign bit 0, so the high 16 bits of its float32 pattern take 2^15 values
_LO_BINS = 1 << 16
_NONFINITE_HI = 0x7F80  # exponent all ones: inf or nan


def _abs_bits(tensor: torch.Tensor) -> torch.Tensor:
    # For non-negative IEEE-754 floats, the integer order of the bit patterns is the numeric order.
    return tensor.detach().to(torch.float32).abs().reshape(-1).view(torch.int32)


def magnitude_threshold(tensors: Mapping[str, torch.Tensor] | Sequence[torch.Tensor], density: float) -> float:
    """Exact magnitude threshold keeping the top-``density`` fraction of a whole task vector's entries.

    The threshold is the ``keep_count(n, density)``-th largest |value| over all entries of all tensors
    (flattened together), so ``|x| >= threshold`` keeps that many entries (more only when several entries
    tie at the threshold; all of those are kept). It is found by an exact two-pass radix selection on the
    float32 bit patterns of |x| (a histogram of the high 16 bits, then of the low 16 bits inside the chosen
    bucket), which needs memory for one tensor at a time instead of a sort or ``kthvalue`` of the whole
    flattened vector (~1 GB of copies for ViT-B/32).

    Args:
        tensors: One task vector (a mapping, or a sequence of its tensors); iterated twice.
        density: Fraction of entries to keep, in (0, 1].

    Returns:
        The threshold (a float32 value as a Python float); 0.0 when every entry is kept.

    Raises:
        InputError: for a density outside (0, 1], no entries, or non-finite entries.
    """
    density = check_density(density)

    def values() -> Iterable[torch.Tensor]:
        if isinstance(tensors, Mapping):
            return (tensors[k] for k in tensors)
        return iter(tensors)

    hist_hi = torch.zeros(_HI_BINS, dtype=torch.int64)
    for v in values():
        bits = _abs_bits(v)
        if bits.numel():
            hist_hi += torch.bincount(bits >> 16, minlength=_HI_BINS)
    n = int(hist_hi.sum())
    if n == 0:
        raise InputError("cannot trim an empty task vector (it has no entries)")
    if int(hist_hi[_NONFINITE_HI:].sum()):
        raise InputError("task vector contains non-finite values (inf or nan); cannot trim by magnitude")
    k = keep_count(n, density)
    if k >= n:
        return 0.0
    # Pass 1: the high-bits bucket holding the k-th largest entry.
    from_top = hist_hi.flip(0).cumsum(0)  # from_top[j] = #entries with high bits >= _HI_BINS-1-j
    j = int(torch.searchsorted(from_top, torch.tensor(k)))
    hi = _HI_BINS - 1 - j
    rank_in_bucket = k - (int(from_top[j]) - int(hist_hi[hi]))  # 1-based rank from the top of the bucket
    # Pass 2: the low bits of that entry, among the entries of the bucket.
    hist_lo = torch.zeros(_LO_BINS, dtype=torch.int64)
    for v in values():
        bits = _abs_bits(v)
        in_bucket = bits[(bits >> 16) == hi]
        if in_bucket.numel():
            hist_lo += torch.bincount(in_bucket & 0xFFFF, minlength=_LO_BINS)
    from_top_lo = hist_lo.flip(0).cumsum(0)
    lo = _LO_BINS - 1 - int(torch.searchsorted(from_top_lo, torch.tensor(rank_in_bucket)))
    return torch.tensor([(hi << 16) | lo], dtype=torch.int32).view(torch.float32).item()


def trim_by_magnitude(tensor: torch.Tensor, threshold: float) -> torch.Tensor:
    """Keep entries with ``|x| >= threshold``, zero the others (TIES "trim").

    Args:
        tensor: Entries of one task vector.
        threshold: From :func:`magnitude_threshold` over that whole task vector.

    Returns:
        A new tensor of the same shape.
    """
    return torch.where(tensor.abs() >= threshold, tensor, torch.zeros((), dtype=tensor.dtype))


def elect_sign(trimmed: torch.Tensor) -> torch.Tensor:
    """TIES sign election: sign(Σ_t trimmed[t]) per entry, with 0 → +1.

    Args:
        trimmed: Trimmed task-vector entries stacked over tasks, shape ``(T, *shape)``.

    Returns:
        ±1 of shape ``shape`` (same dtype as ``trimmed``).
    """
    total = sum_over_tasks(trimmed)
    return torch.where(total < 0, -1.0, 1.0).to(trimmed.dtype)


def disjoint_mean(trimmed: torch.Tensor, sign: torch.Tensor) -> torch.Tensor:
    """TIES disjoint merge: mean of the non-zero entries whose sign agrees with the elected sign.

    Per entry: Σ_t trimmed[t]·1[agree_t] / max(1, Σ_t 1[agree_t]), where agree_t means trimmed[t] ≠ 0 with
    the sign of ``sign`` (so an entry where no task agrees merges to 0).

    Args:
        trimmed: Shape ``(T, *shape)``.
        sign: Elected sign (±1), shape ``shape``.

    Returns:
        Merged entries, shape ``shape``.
    """
    agree = (trimmed * sign) > 0
    kept = torch.where(agree, trimmed, torch.zeros((), dtype=trimmed.dtype))
    count = agree.sum(dim=0).clamp_min(1).to(trimmed.dtype)
    return sum_over_tasks(kept) / count


# --------------------------------------------------------------------------------------------------------
# Consensus TA: TALL masks and the consensus mask
# --------------------------------------------------------------------------------------------------------


def tall_masks(stacked: torch.Tensor, lambdas: Sequence[float], total: torch.Tensor | None = None) -> torch.Tensor:
    """TALL masks m_t = 1[ |τ_t| > λ_t·|Σ_{s≠t} τ_s| ] (strict >), one per task.

    Σ_{s≠t} τ_s is computed as (Σ_s τ_s) − τ_t.

    Args:
        stacked: One parameter of every task, shape ``(T, *shape)``.
        lambdas: λ_t per task (T values, each ≥ 0).
        total: Σ_s τ_s if already computed (shape ``shape``).

    Returns:
        Boolean masks of shape ``(T, *shape)``.
    """
    if len(lambdas) != stacked.shape[0]:
        raise InputError(f"got {len(lambdas)} TALL-mask lambdas for {stacked.shape[0]} task vectors",
                         "give one lambda per task vector")
    if total is None:
        total = sum_over_tasks(stacked)
    lam = torch.tensor([float(x) for x in lambdas], dtype=stacked.dtype).reshape(-1, *([1] * (stacked.dim() - 1)))
    return stacked.abs() > lam * (total - stacked).abs()


def consensus_mask(masks: torch.Tensor, k: int) -> torch.Tensor:
    """Consensus mask c = 1[Σ_t m_t ≥ k]: entries that at least ``k`` tasks consider important.

    Args:
        masks: Boolean TALL masks, shape ``(T, *shape)``.
        k: Minimum number of agreeing tasks (≥ 1).

    Returns:
        Boolean mask of shape ``shape``.
    """
    return masks.sum(dim=0) >= k


# --------------------------------------------------------------------------------------------------------
# TSVM: which tensors are matrices, and the polar factor
# --------------------------------------------------------------------------------------------------------


def is_matrix_parameter(tensor_or_shape: torch.Tensor | Sequence[int]) -> bool:
    """Whether TSVM treats a parameter as a matrix: exactly 2-D.

    This is the single place deciding it. In a HF ``CLIPVisionModel`` that covers the q/k/v/out
    projections, both MLP matrices and the 2-D position embedding; biases, LayerNorms, the class embedding
    (1-D) and the 4-D patch-embedding convolution are not matrices and are averaged instead.
    """
    shape = tensor_or_shape.shape if isinstance(tensor_or_shape, torch.Tensor) else tuple(tensor_or_shape)
    return len(shape) == 2


def polar_factor(x: torch.Tensor) -> torch.Tensor:
    """Nearest matrix with orthonormal columns (or rows, if wide) to ``x``: SVD x = PΣQᵀ → PQᵀ.

    Args:
        x: A 2-D matrix.

    Returns:
        PQᵀ, same shape as ``x`` (float32).
    """
    x = x.to(torch.float32)
    if x.shape[0] < x.shape[1]:
        return polar_factor(x.T).T  # LAPACK's SVD is much faster on tall matrices; polar(Xᵀ) = polar(X)ᵀ
    p, _, qt = torch.linalg.svd(x, full_matrices=False)
    return p @ qt


def thin_svd(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Thin SVD x = U diag(S) Vᵀ of a 2-D matrix (float32), returning ``(U, S, Vᵀ)``.

    Wide matrices are decomposed through their transpose, which is several times faster on CPU.
    """
    x = x.to(torch.float32)
    if x.shape[0] < x.shape[1]:
        u, s, vt = torch.linalg.svd(x.T, full_matrices=False)
        return vt.T, s, u.T
    return torch.linalg.svd(x, full_matrices=False)


def top_singular(x: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The top ``k`` singular triplets ``(U_k, S_k, V_kᵀ)`` of a 2-D matrix, without a full SVD.

    The eigendecomposition of the Gram matrix of the smaller side (``xᵀx`` or ``xxᵀ``, ``r×r`` with r =
    min(m, n)) gives the top singular values and one side's vectors; the other side is ``x v / s``. That is
    the same factorisation for the components kept — the largest, which the Gram determines to float32
    precision — at a fraction of the cost (measured on one CPU thread: 0.06 s instead of 0.13 s for 768×768,
    0.09 s instead of 0.31 s for 3072×768). A zero singular value gets a zero vector on the other side.
    """
    x = x.to(torch.float32)
    m, n = x.shape
    tall = m >= n
    gram = x.T @ x if tall else x @ x.T
    evals, evecs = torch.linalg.eigh(gram)  # ascending
    k = min(k, evals.shape[-1])
    lam = evals[-k:].flip(0).clamp_min(0)
    vecs = evecs[:, -k:].flip(1)
    s = lam.sqrt()
    inv = torch.where(s > 0, 1.0 / s, torch.zeros_like(s))
    if tall:  # vecs are right singular vectors
        return (x @ vecs) * inv, s, vecs.T
    return vecs, s, (vecs.T @ x) * inv[:, None]


#: The Gram route of :func:`fast_polar_factor` squares singular values: in float32 while the smallest is at
#: least this fraction of the largest, in float64 down to :data:`POLAR_GRAM_MIN_RATIO`, the SVD below that.
POLAR_FLOAT32_MIN_RATIO = 0.1
POLAR_GRAM_MIN_RATIO = 1e-3


def fast_polar_factor(x: torch.Tensor) -> torch.Tensor:
    """The polar factor PQᵀ of ``x`` (as :func:`polar_factor`), from the Gram matrix of its smaller side.

    polar(x) = x (xᵀx)^(-1/2) = (xxᵀ)^(-1/2) x, with the inverse square root from the eigendecomposition of the
    r×r Gram matrix (r = min(m, n)); cheaper than an SVD of ``x``. The Gram squares the singular values, so the
    route is taken in float32 only while ``x`` is well conditioned (smallest / largest singular value ≥
    :data:`POLAR_FLOAT32_MIN_RATIO`; TSV-M's concatenated singular vectors usually are), in float64 down to
    :data:`POLAR_GRAM_MIN_RATIO`, and the SVD is used below that or for a rank-deficient ``x``.
    """
    x = x.to(torch.float32)
    tall = x.shape[0] >= x.shape[1]
    gram = x.T @ x if tall else x @ x.T
    evals, evecs = torch.linalg.eigh(gram)
    ratio2 = float(evals[0]) / float(evals[-1]) if float(evals[-1]) > 0 else 0.0
    if ratio2 <= POLAR_GRAM_MIN_RATIO ** 2:
        return polar_factor(x)
    xd = x
    if ratio2 <= POLAR_FLOAT32_MIN_RATIO ** 2:  # redo the Gram route in float64
        xd = x.double()
        evals, evecs = torch.linalg.eigh(xd.T @ xd if tall else xd @ xd.T)
    inv_sqrt = (evecs * evals.rsqrt()) @ evecs.T
    return (xd @ inv_sqrt if tall else inv_sqrt @ xd).to(torch.float32)
