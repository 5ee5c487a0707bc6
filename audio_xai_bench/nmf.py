"""Sparse NMF with unit-norm dictionary columns (paper eq. 6), projection onto a fixed dictionary.

Problem (paper eq. 6 with D = Euclidean, Le Roux, Weninger & Hershey, "Sparse NMF -- half-baked
or well done?", MERL TR2015-023)::

    min_{W >= 0, H >= 0}  0.5 * ||V - W H||_F^2 + mu * ||H||_1     s.t.  ||w_k||_2 = 1 for all k

**Constant convention (used everywhere in this module):** the Euclidean cost carries a factor
1/2, which is the beta-divergence with beta = 2 used by Le Roux et al. (d_2(x|y) = (x - y)^2 / 2)
and by scikit-learn's ``_beta_divergence(..., beta=2)``; ``||H||_1`` is the sum of all entries of
H (H >= 0). So ``mu`` here is Le Roux's ``sparsity`` parameter; the paper's ``sp0.8`` dictionaries
correspond to ``mu = 0.8`` under that convention (inferred from the file names, see
``reference/l2i_protocol_facts.md`` section 6). The gradient of the cost w.r.t. H is
``W^T (W H - V) + mu``, which gives the multiplicative update for H below.

Algorithm (multiplicative updates, every step provably non-increasing):

* H step (W fixed, unit-norm columns): ``H <- H * (W^T V) / (W^T W H + mu + eps)``. This is the
  Lee-Seung auxiliary-function update for a quadratic with non-negative Hessian plus a
  non-negative linear term; adding eps to the denominator only enlarges the curvature of the
  majoriser, so the objective never increases.
* W step (H fixed). With unit-norm columns the constrained problem has the same value as the
  scale-invariant objective ``J(W, H) = 0.5 ||V - W H||^2 + mu * sum_k ||w_k||_2 ||h_k||_1``
  (h_k = k-th row of H), and rescaling ``w_k / c, h_k * c`` leaves J unchanged. At the current
  W (column norms a_k) we majorise ``||w_k|| <= ||w_k||^2 / (2 a_k) + a_k / 2`` (AM-GM, tight
  at the current point), which turns J into a quadratic in W with the non-negative Hessian
  ``H H^T + mu diag(s_k / a_k)`` (s_k = ||h_k||_1). Its Lee-Seung update is
  ``W <- W * (V H^T) / (W H H^T + mu * W diag(s / a) + eps)``, so J never increases; the
  columns are then renormalised to unit norm and the rows of H rescaled by the same factors,
  which leaves W H and J unchanged. Hence the constrained objective is non-increasing over
  every iteration (up to floating-point rounding).

  Why not the other two options: (i) "plain MU step on W, then renormalise" is monotone only
  for mu = 0 -- with mu > 0 renormalising multiplies ||h_k||_1 by the column norm, which can
  raise the L1 term; the extra ``mu * s_k / a_k`` term above is exactly what fixes that (for
  mu = 0 the two coincide). (ii) Le Roux et al.'s update with the normalisation inside the
  gradient (their heuristic ratio of positive and negative gradient parts of the normalised
  model) has no monotonicity proof. Both variants optimise the same problem eq. (6).

Acceleration (Gillis & Glineur 2012, "Accelerated multiplicative updates ..."): with
``inner > 1`` each outer iteration does ``inner`` H steps that reuse ``W^T V`` and ``W^T W``
(each costs K^2 N instead of F N K) and ``inner`` W steps that reuse ``V H^T`` and ``H H^T``
(each costs F K^2). The first step of each block is the expensive one; the extra ones are cheap.

HALS (``solver="hals"``; Cichocki & Phan 2009, "Fast local algorithms for large scale
nonnegative matrix and tensor factorizations"; Gillis & Glineur 2012 for the reuse of products):
exact block-coordinate descent on one row of H or one column of W at a time, so the objective
never increases either:

* row k of H (W fixed; the others held): the objective is a quadratic in h_k with curvature
  ``(W^T W)_kk`` plus ``mu * sum(h_k)``, minimised over h_k >= 0 in closed form by
  ``h_k <- max(0, h_k + ((W^T V)_k - (W^T W H)_k - mu) / (W^T W)_kk)``; rows are updated in
  turn (Gauss-Seidel), each with the rows already updated.
* column k of W (H fixed): with ``||w_k|| = 1`` the L1 term does not depend on W, and
  ``0.5 ||R_k - w_k h_k||^2 = const - w_k^T a_k`` with ``a_k = R_k h_k^T = (V H^T)_k -
  W (H H^T)_k + w_k (H H^T)_kk`` (R_k the residual without atom k). Its minimiser over
  non-negative unit vectors is ``a_k^+ / ||a_k^+||`` when ``a_k`` has a positive entry (the
  column is kept otherwise). This is the exact constrained minimiser, so, unlike "HALS step then
  renormalise with the scale moved into H", it cannot raise the L1 term. W_fixed columns are
  not updated.

With ``inner > 1`` each outer iteration does ``inner`` sweeps over the rows of H reusing
``W^T V`` and ``W^T W`` and ``inner`` sweeps over the columns of W reusing ``V H^T`` and
``H H^T``. Per outer iteration HALS costs about what MU costs (two F x N x K products, one
K x K x N product, plus K^2 N per extra H sweep) but lowers the objective much more per
iteration; ``tests/benchmarks/test_bench_nmf.py`` measures the time to a common objective on a
real-audio spectrogram, and the default solver is the faster one there.

The objective after each iteration is computed from the cached products, never forming the
F x N matrix W H: ``0.5 (||V||^2 - 2 <W, V H^T> + <W^T W, H H^T>) + mu * sum(H)``. In float32
this has an absolute error of about 1e-7 * ||V||^2 (cancellation), so for a tight tolerance or
a strict monotonicity check on a near-exact fit use float64 or :func:`objective`.

Everything runs under ``torch.inference_mode`` on V's device and dtype; the returned tensors are
ordinary tensors (cloned outside inference mode) so that they can be used later in autograd
(e.g. the L2I reconstruction loss ``||X - W H_psi||^2``).
"""
from __future__ import annotations

import math
import numbers

import torch
from torch import Tensor

__all__ = ["sparse_nmf", "project", "objective", "subsample_frames", "SOLVERS", "DEFAULT_SOLVER"]

#: the solvers of :func:`sparse_nmf`; the default is picked by tests/benchmarks/test_bench_nmf.py
SOLVERS = ("hals", "mu")
DEFAULT_SOLVER = "hals"


# --------------------------------------------------------------------------------- validation
def _check_int(name: str, value, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be an integer >= {minimum}, got {value}")
    return int(value)


def _check_float(name: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if positive and value <= 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    if not positive and value < 0:
        raise ValueError(f"{name} must be >= 0, got {value}")
    return float(value)


def _check_matrix(name: str, X, ndims: tuple[int, ...], shape_hint: str) -> Tensor:
    if not isinstance(X, Tensor):
        raise ValueError(f"{name} must be a torch.Tensor {shape_hint}, got {type(X).__name__}")
    if X.dim() not in ndims:
        raise ValueError(f"{name} must have shape {shape_hint}, got a {X.dim()}-D tensor of shape "
                         f"{tuple(X.shape)}")
    if not X.is_floating_point():
        raise ValueError(f"{name} must be a floating-point tensor (e.g. float32), got {X.dtype}")
    if X.numel() == 0:
        raise ValueError(f"{name} is empty (shape {tuple(X.shape)})")
    with torch.inference_mode():
        if not bool(torch.isfinite(X).all()):
            raise ValueError(f"{name} contains NaN or infinite entries")
        mn = float(X.min())
    if mn < 0:
        raise ValueError(f"{name} must be non-negative (NMF), but its minimum entry is {mn:.6g}")
    return X


def _ordinary(x: Tensor) -> Tensor:
    """A normal (non-inference) tensor, usable in autograd later."""
    return x.clone() if x.is_inference() else x


# ---------------------------------------------------------------------------------- objective
def objective(V: Tensor, W: Tensor, H: Tensor, mu: float) -> float:
    """``0.5 * ||V - W H||_F^2 + mu * ||H||_1`` (||H||_1 = sum of |H| entries), as a Python float.

    The factor 1/2 on the Euclidean term is the convention of the whole module (Le Roux et al.'s
    beta = 2 divergence, scikit-learn's ``_beta_divergence(beta=2)``; scikit-learn's
    ``reconstruction_err_`` is ``sqrt(2 * 0.5 ||V - W H||^2)``). V (F, N) with H (K, N), or
    batched V (B, F, N) with H (B, K, N) (sum over the batch). Computed exactly (W H is formed,
    in float64, in blocks of columns) -- meant for checks and benchmarks, not inner loops.
    """
    mu = _check_float("mu", mu)
    if V.dim() not in (2, 3) or H.dim() != V.dim() or W.dim() != 2:
        raise ValueError(f"objective expects V (F, N) / H (K, N) or V (B, F, N) / H (B, K, N) and "
                         f"W (F, K); got V {tuple(V.shape)}, W {tuple(W.shape)}, H {tuple(H.shape)}")
    if W.shape[0] != V.shape[-2] or W.shape[1] != H.shape[-2] or V.shape[-1] != H.shape[-1] \
            or V.shape[:-2] != H.shape[:-2]:
        raise ValueError(f"shape mismatch: V {tuple(V.shape)}, W {tuple(W.shape)}, H {tuple(H.shape)}")
    with torch.inference_mode():
        Wd = W.to(torch.float64)
        sq = 0.0
        block = 16384
        for j in range(0, V.shape[-1], block):  # blocks of columns only bound the memory
            R = V[..., j:j + block].to(torch.float64) - torch.matmul(
                Wd, H[..., j:j + block].to(device=W.device, dtype=torch.float64))
            sq += float((R * R).sum())
        l1 = float(H.abs().sum(dtype=torch.float64))
    return 0.5 * sq + mu * l1


# ---------------------------------------------------------------------------------- sparse NMF
def sparse_nmf(V: Tensor, k: int, *, mu: float = 0.8, n_iter: int = 100, seed: int = 0,
               W_fixed: Tensor | None = None, W_init: Tensor | None = None, tol: float = 0.0,
               inner: int | None = None, eps: float = 1e-10, history: list[float] | None = None,
               solver: str | None = None) -> tuple[Tensor, Tensor]:
    """Sparse NMF of paper eq. (6) / Le Roux et al. TR2015-023 with Euclidean cost.

    Minimises ``0.5 * ||V - W H||_F^2 + mu * ||H||_1`` over ``W, H >= 0`` with unit-L2-norm
    columns of W, by HALS (exact coordinate updates, the default) or multiplicative updates
    (H step, then W step with a majorised column-norm term and renormalisation); see the module
    docstring for the update formulas and why the objective never increases with either.

    Args:
        V: (F, N) non-negative data (e.g. log1p magnitude frames as columns), float32 (float64
            also works), on any device; all computation stays on V's device and dtype.
        k: number of NEW columns to learn (>= 1).
        mu: L1 weight on H (>= 0), constant convention of the module docstring.
        n_iter: outer iterations (>= 0; 0 returns the initialisation).
        seed: the initialisation is drawn from ``torch.Generator().manual_seed(seed)`` on the CPU
            (uniform [0, 1): first an (F, k) block for W, then a (K_total, N) block for H) and then
            moved to V's device/dtype, so a seed gives the same result on every run.
            W's random columns are normalised; H is scaled so that ``sum(W H) = sum(V)``.
        W_fixed: (F, K0) non-negative columns held fixed (not updated, not renormalised; pass
            unit-norm columns, e.g. an earlier ``sparse_nmf`` output) -- the SONYC recipe: noise
            atoms fixed, class atoms learned. Returned first: ``W = [W_fixed, W_new]``.
        W_init: (F, k) non-negative initial values for the learned columns (normalised on entry)
            instead of random ones; the random draws are still made so H's init is unchanged.
        tol: if > 0, stop early once an iteration lowers the objective by less than
            ``tol * objective`` (use tol >= 1e-6 in float32, see the module docstring).
        inner: H steps and W steps per outer iteration (accelerated MU / HALS, Gillis &
            Glineur 2012); the extra steps reuse W^T V, W^T W, V H^T, H H^T. Default 1 (on the
            real-audio benchmark HALS with inner=1 reached the target in 8.5 s, inner=2 in 10.3 s).
        solver: ``"hals"`` (default, :data:`DEFAULT_SOLVER`) or ``"mu"``.
        eps: added to every denominator and used as the floor of column norms.
        history: if a list is given, the objective after each outer iteration is appended
            (computed from cached products, no F x N product).

    Returns:
        W (F, K0 + k) with unit-norm learned columns, H (K0 + k, N), both on V's device/dtype.

    Raises:
        ValueError: V not 2-D, empty, not floating point, not finite or with negative entries;
        k < 1; wrong shapes of W_fixed / W_init; bad mu / n_iter / inner / eps / tol.
    """
    V = _check_matrix("V", V, (2,), "(F, N) (frequency bins x frames)")
    k = _check_int("k", k, 1)
    mu = _check_float("mu", mu)
    n_iter = _check_int("n_iter", n_iter, 0)
    seed = _check_int("seed", seed, 0)
    tol = _check_float("tol", tol)
    solver = DEFAULT_SOLVER if solver is None else solver
    if solver not in SOLVERS:
        raise ValueError(f"solver must be one of {', '.join(SOLVERS)}, got {solver!r}")
    inner = _check_int("inner", 1 if inner is None else inner, 1)
    eps = _check_float("eps", eps, positive=True)
    if history is not None and not isinstance(history, list):
        raise ValueError(f"history must be a list or None, got {type(history).__name__}")
    F, N = V.shape
    if W_fixed is not None:
        W_fixed = _check_matrix("W_fixed", W_fixed, (2,), f"(F={F}, K0)")
        if W_fixed.shape[0] != F:
            raise ValueError(f"W_fixed must have F={F} rows like V, got shape {tuple(W_fixed.shape)}")
    if W_init is not None:
        W_init = _check_matrix("W_init", W_init, (2,), f"(F={F}, k={k})")
        if tuple(W_init.shape) != (F, k):
            raise ValueError(f"W_init must have shape (F, k) = ({F}, {k}) (the learned columns "
                             f"only), got {tuple(W_init.shape)}")
    impl = _hals_impl if solver == "hals" else _sparse_nmf_impl
    W, H = impl(V, k, mu, n_iter, seed, W_fixed, W_init, tol, inner, eps, history)
    return _ordinary(W), _ordinary(H)


def _sq_norm(V: Tensor) -> float:
    """||V||_F^2 accumulated in float64, in row blocks (float32 reductions over ~1e7 entries
    lose about 1e-4 relative, which would swamp the cached objective)."""
    rows = max(1, (1 << 22) // max(1, V.shape[1]))
    return sum(float(V[i:i + rows].to(torch.float64).square().sum()) for i in range(0, V.shape[0], rows))


def _init(V, k, seed, W_fixed, W_init, eps):
    """Seeded initialisation shared by the solvers (see ``sparse_nmf``'s ``seed``)."""
    F, N = V.shape
    dev, dt = V.device, V.dtype
    K0 = 0 if W_fixed is None else W_fixed.shape[1]
    K = K0 + k
    gen = torch.Generator().manual_seed(seed)
    W_rand = torch.rand(F, k, generator=gen)
    H = torch.rand(K, N, generator=gen).to(device=dev, dtype=dt)
    W = torch.empty(F, K, device=dev, dtype=dt)
    if K0:
        W[:, :K0] = W_fixed.to(device=dev, dtype=dt)
    W[:, K0:] = W_rand.to(device=dev, dtype=dt) if W_init is None else W_init.to(device=dev, dtype=dt)
    Wn = W[:, K0:]
    Wn /= torch.linalg.vector_norm(Wn, dim=0).clamp_min(eps)
    scale = V.sum() / (W.sum(0) @ H.sum(1)).clamp_min(1e-30)  # stays on the device
    H *= scale
    return W, H, K0


class _Tracker:
    """The objective from cached products (module docstring) and the ``tol`` stopping rule."""

    def __init__(self, V, mu, tol, history):
        self.on = history is not None or tol > 0
        self.vv = _sq_norm(V) if self.on else 0.0
        self.mu, self.tol, self.history, self.prev = mu, tol, history, None

    def stop(self, W, H, VHt, HHt, WtW) -> bool:
        if not self.on:
            return False
        cross = float((W * VHt).sum(dtype=torch.float64))
        quad = float((WtW * HHt).sum(dtype=torch.float64))
        l1 = float(H.sum(dtype=torch.float64)) if self.mu else 0.0
        obj = 0.5 * (self.vv - 2.0 * cross + quad) + self.mu * l1
        if self.history is not None:
            self.history.append(obj)
        done = self.tol > 0 and self.prev is not None and self.prev - obj <= self.tol * abs(self.prev)
        self.prev = obj
        return done


@torch.inference_mode()
def _hals_impl(V, k, mu, n_iter, seed, W_fixed, W_init, tol, inner, eps, history):
    """HALS with exact row / column minimisers (module docstring)."""
    W, H, K0 = _init(V, k, seed, W_fixed, W_init, eps)
    K = W.shape[1]
    track = _Tracker(V, mu, tol, history)
    WtW = W.T @ W
    for _ in range(n_iter):
        # ---- H sweeps (reuse W^T V, W^T W): h_k <- max(0, h_k + (WtV_k - WtW_k H - mu) / WtW_kk)
        WtV = W.T.contiguous() @ V
        WtV -= mu
        diag = WtW.diagonal().clamp_min(eps)
        inv = (1.0 / diag).tolist() if H.device.type == "cpu" else None
        for _ in range(inner):
            for j in range(K):
                g = WtV[j] - WtW[j] @ H                       # (N,): the row's negative gradient
                if inv is not None:
                    H[j].add_(g, alpha=inv[j]).clamp_(min=0.0)
                else:                                         # no host sync on an accelerator
                    H[j].addcdiv_(g, diag[j]).clamp_(min=0.0)
        del WtV
        # ---- W sweeps on the learned columns (reuse V H^T, H H^T): w_k <- a_k^+ / ||a_k^+||
        VHt = V @ H.T
        HHt = H @ H.T
        for _ in range(inner):
            for j in range(K0, K):
                a = VHt[:, j] - W @ HHt[:, j] + W[:, j] * HHt[j, j]
                a.clamp_(min=0.0)
                n = torch.linalg.vector_norm(a)
                # a column whose a_k has no positive entry is kept (no host sync: torch.where)
                W[:, j] = torch.where(n > eps, a / n.clamp_min(eps), W[:, j])
        WtW = W.T @ W
        if track.stop(W, H, VHt, HHt, WtW):
            break
    return W, H


@torch.inference_mode()
def _sparse_nmf_impl(V, k, mu, n_iter, seed, W_fixed, W_init, tol, inner, eps, history):
    """Multiplicative updates with the majorised column-norm term (module docstring)."""
    W, H, K0 = _init(V, k, seed, W_fixed, W_init, eps)
    Wn = W[:, K0:]                                     # view: the learned columns
    track = _Tracker(V, mu, tol, history)
    WtW = W.T @ W
    for _ in range(n_iter):
        # ---- H steps (reuse W^T V, W^T W)
        WtV = W.T.contiguous() @ V                     # (K, N); contiguous W^T: faster GEMM
        for _ in range(inner):
            denom = WtW @ H
            denom += mu + eps
            H *= WtV
            H /= denom
        del WtV, denom
        # ---- W steps on the learned columns (reuse V H^T, H H^T)
        VHt = V @ H.T                                  # (F, K)
        HHt = H @ H.T                                  # (K, K)
        s = H[K0:].sum(1)                              # L1 norms of the learned rows
        num = VHt[:, K0:]
        for _ in range(inner):
            a = torch.linalg.vector_norm(Wn, dim=0).clamp_min(eps)
            d = W @ HHt[:, K0:]
            d += Wn * (mu * s / a)
            d += eps
            Wn *= num / d
        # ---- renormalise learned columns, rescale H rows (W H and the objective unchanged)
        nrm = torch.linalg.vector_norm(Wn, dim=0).clamp_min(eps)
        Wn /= nrm
        H[K0:] *= nrm[:, None]
        WtW = W.T @ W
        if track.on:
            VHt[:, K0:] *= nrm
            HHt[K0:, :] *= nrm[:, None]
            HHt[:, K0:] *= nrm
        if track.stop(W, H, VHt, HHt, WtW):
            break
    return W, H


# ----------------------------------------------------------------------------------- project
def project(V: Tensor, W: Tensor, *, mu: float = 0.8, n_iter: int = 100, seed: int = 0,
            eps: float = 1e-10) -> Tensor:
    """Activations ``H >= 0`` minimising ``0.5 ||V - W H||_F^2 + mu ||H||_1`` with W fixed.

    Multiplicative updates ``H <- H * (W^T V) / (W^T W H + mu + eps)`` (monotone, see the module
    docstring), W^T V and W^T W computed once. V (F, N) -> H (K, N), or batched V (B, F, N) ->
    H (B, K, N); the problem separates over columns, so a batch is solved as one (F, B*N) matrix
    and item b of a batched call equals the unbatched call on V[b] (up to float rounding).
    Init: uniform [0, 1) draws of shape (K, N) from ``torch.Generator().manual_seed(seed)`` (the
    same draws for every batch item), each column scaled so that ``sum(W h_n) = sum(v_n)``
    (all-zero frames get all-zero activations). Runs on V's device and dtype.
    """
    V = _check_matrix("V", V, (2, 3), "(F, N) or (B, F, N)")
    W = _check_matrix("W", W, (2,), "(F, K)")
    mu = _check_float("mu", mu)
    n_iter = _check_int("n_iter", n_iter, 0)
    seed = _check_int("seed", seed, 0)
    eps = _check_float("eps", eps, positive=True)
    if W.shape[0] != V.shape[-2]:
        raise ValueError(f"W has {W.shape[0]} rows but V has F={V.shape[-2]} (shape {tuple(V.shape)})")
    return _ordinary(_project_impl(V, W, mu, n_iter, seed, eps))


@torch.inference_mode()
def _project_impl(V, W, mu, n_iter, seed, eps):
    dev, dt = V.device, V.dtype
    W = W.to(device=dev, dtype=dt)
    K = W.shape[1]
    batched = V.dim() == 3
    if batched:
        B, F, N = V.shape
        Vm = V.permute(1, 0, 2).reshape(F, B * N)    # columns (b, n) in batch-major order
    else:
        N = V.shape[1]
        Vm = V
    gen = torch.Generator().manual_seed(seed)
    H = torch.rand(K, N, generator=gen).to(device=dev, dtype=dt)
    if batched:
        H = H.repeat(1, B)
    pred = W.sum(0) @ H                                # column sums of W H, (cols,)
    H *= (Vm.sum(0) / pred.clamp_min(1e-30))[None, :]
    WtV = W.T @ Vm
    WtW = W.T @ W
    for _ in range(n_iter):
        denom = WtW @ H
        denom += mu + eps
        H *= WtV
        H /= denom
    if batched:
        H = H.reshape(K, B, N).permute(1, 0, 2).contiguous()
    return H


# --------------------------------------------------------------------------- frame subsampling
def subsample_frames(frames: Tensor, max_frames: int = 200_000, seed: int = 0) -> tuple[Tensor, dict]:
    """Keep at most ``max_frames`` columns of ``frames`` (F, N), to bound NMF memory.

    When N > max_frames a random subset of ``max_frames`` columns is drawn without replacement
    with ``torch.Generator().manual_seed(seed)`` (deterministic) and kept in their original order;
    otherwise ``frames`` is returned as is. Returns ``(frames, {'frames_total': N,
    'frames_used': m})`` for ``config.json``.
    """
    if not isinstance(frames, Tensor) or frames.dim() != 2:
        raise ValueError("frames must be a 2-D tensor (F, N) with frames as columns, got "
                         f"{tuple(frames.shape) if isinstance(frames, Tensor) else type(frames).__name__}")
    max_frames = _check_int("max_frames", max_frames, 1)
    seed = _check_int("seed", seed, 0)
    n = frames.shape[1]
    if n <= max_frames:
        return frames, {"frames_total": int(n), "frames_used": int(n)}
    gen = torch.Generator().manual_seed(seed)
    idx = torch.randperm(n, generator=gen)[:max_frames].sort().values
    out = frames.index_select(1, idx.to(frames.device))
    return out, {"frames_total": int(n), "frames_used": int(max_frames)}
