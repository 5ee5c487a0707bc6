"""Tests of audio_xai_bench.nmf: sparse NMF (paper eq. 6), projection, objective, subsampling."""
from __future__ import annotations

import pytest
import torch
from scipy.optimize import linear_sum_assignment

from audio_xai_bench.nmf import objective, project, sparse_nmf, subsample_frames


def planted(F=40, N=300, K=4, seed=0, noise=0.0, dtype=torch.float32):
    """V = W H (+ uniform noise) with sparse-ish non-negative W (unit columns) and H."""
    g = torch.Generator().manual_seed(seed)
    W = torch.rand(F, K, generator=g) * (torch.rand(F, K, generator=g) < 0.5)
    W = W / W.norm(dim=0)
    H = 3 * torch.rand(K, N, generator=g) * (torch.rand(K, N, generator=g) < 0.5)
    V = W @ H + noise * torch.rand(F, N, generator=g)
    return V.to(dtype), W.to(dtype), H.to(dtype)


def match_cosines(W_true, W):
    """Cosines of the best one-to-one matching of W's columns to W_true's (Hungarian)."""
    Wt = W_true / W_true.norm(dim=0)
    Wn = W / W.norm(dim=0)
    C = (Wt.T @ Wn).double().numpy()
    r, c = linear_sum_assignment(-C)
    return torch.tensor(C[r, c]), c


def assert_nonincreasing(values, rel=1e-6):
    v = torch.tensor(values, dtype=torch.float64)
    rises = (v[1:] - v[:-1]) / v[:-1].abs()
    assert rises.max() <= rel, f"objective rose by {rises.max():.3g} (relative) at step {int(rises.argmax()) + 1}"


# ------------------------------------------------------------------------ monotone objective
@pytest.mark.parametrize("mu", [0.0, 0.1, 0.8, 5.0])
@pytest.mark.parametrize("inner", [1, 3])
@pytest.mark.parametrize("fixed", [False, True])
@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_history_never_increases_float64(mu, inner, fixed, solver):
    V, Wt, _ = planted(seed=1, noise=0.1, dtype=torch.float64)
    hist: list[float] = []
    W_fixed = Wt[:, :2] if fixed else None
    W, H = sparse_nmf(V, 2 if fixed else 4, mu=mu, n_iter=150, seed=3, inner=inner,
                      W_fixed=W_fixed, history=hist, solver=solver)
    assert len(hist) == 150
    assert_nonincreasing(hist, rel=1e-9)
    # the cached objective equals the explicit one
    assert hist[-1] == pytest.approx(objective(V, W, H, mu), rel=1e-9)


@pytest.mark.parametrize("mu", [0.0, 0.8])
@pytest.mark.parametrize("inner", [1, 3])
@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_explicit_objective_never_increases_float32(mu, inner, solver):
    V, _, _ = planted(seed=0, noise=0.1)
    # same seed => the n_iter=t run is the prefix of the trajectory; t=0 is the initialisation
    objs = [objective(V, *sparse_nmf(V, 4, mu=mu, n_iter=t, seed=0, inner=inner,
                                     solver=solver), mu)
            for t in range(0, 25)]
    assert_nonincreasing(objs, rel=1e-6)
    assert objs[-1] < 0.5 * objs[0]


def test_float32_history_tracks_explicit_objective():
    V, _, _ = planted(seed=2, noise=0.1)
    hist: list[float] = []
    W, H = sparse_nmf(V, 4, mu=0.8, n_iter=30, history=hist)
    assert hist[-1] == pytest.approx(objective(V, W, H, 0.8), rel=1e-4)


def test_objective_convention():
    V = torch.tensor([[1.0, 2.0], [3.0, 0.0]])
    W = torch.eye(2)
    H = torch.tensor([[0.0, 1.0], [1.0, 0.5]])
    # residual [[1, 1], [2, -0.5]] -> 0.5 * 6.25; ||H||_1 = 2.5
    assert objective(V, W, H, 0.8) == pytest.approx(0.5 * 6.25 + 0.8 * 2.5)
    assert objective(V[None].repeat(3, 1, 1), W, H[None].repeat(3, 1, 1), 0.0) == pytest.approx(3 * 0.5 * 6.25)


# ------------------------------------------------------------------------ structure / recovery
def test_columns_unit_norm_and_shapes():
    V, _, _ = planted(seed=3, noise=0.05)
    W, H = sparse_nmf(V, 6, mu=0.8, n_iter=20)
    assert W.shape == (40, 6) and H.shape == (6, 300)
    assert W.dtype == V.dtype and H.dtype == V.dtype
    torch.testing.assert_close(W.norm(dim=0), torch.ones(6), atol=1e-5, rtol=0)
    assert (W >= 0).all() and (H >= 0).all()


@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_planted_recovery(seed, solver):
    V, Wt, Ht = planted(seed=seed)
    W, H = sparse_nmf(V, 4, mu=0.0, n_iter=400, seed=seed, inner=2, solver=solver)
    rel = ((V - W @ H).norm() / V.norm()).item()
    assert rel < 0.02, rel
    cos, _ = match_cosines(Wt, W)
    assert cos.min() > 0.95, cos


def test_planted_recovery_with_sparsity():
    V, Wt, _ = planted(seed=4)
    W, H = sparse_nmf(V, 4, mu=0.05, n_iter=300, inner=2)
    assert ((V - W @ H).norm() / V.norm()).item() < 0.05
    assert match_cosines(Wt, W)[0].min() > 0.95


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_sparsity_weight_makes_h_sparser(solver):
    V, _, _ = planted(seed=5, noise=0.05)
    _, H0 = sparse_nmf(V, 8, mu=0.0, n_iter=100, solver=solver)
    _, H1 = sparse_nmf(V, 8, mu=5.0, n_iter=100, solver=solver)
    assert H1.sum() < H0.sum()
    assert (H1 == 0).float().mean() > (H0 == 0).float().mean() or solver == "mu"  # HALS: exact zeros


def test_hals_reaches_lower_objective_than_mu_at_equal_iterations():
    V, _, _ = planted(seed=12, noise=0.1)
    h_hals: list[float] = []
    h_mu: list[float] = []
    sparse_nmf(V, 6, mu=0.8, n_iter=30, solver="hals", history=h_hals)
    sparse_nmf(V, 6, mu=0.8, n_iter=30, solver="mu", history=h_mu)
    assert h_hals[-1] < h_mu[-1]


def test_hals_column_update_is_the_constrained_minimiser():
    """One W sweep of HALS on one column: no non-negative unit vector does better (random
    search over many candidates, and the MU direction)."""
    g = torch.Generator().manual_seed(3)
    V = torch.rand(12, 40, generator=g, dtype=torch.float64)
    W0, H = sparse_nmf(V, 3, mu=0.3, n_iter=5, solver="hals")
    # the last column's subproblem with H and the other columns fixed
    R = V - W0[:, :2] @ H[:2]
    a = (R @ H[2]).clamp_min(0)
    w_star = a / a.norm()
    best = 0.5 * ((R - w_star[:, None] * H[2][None]) ** 2).sum()
    cand = torch.rand(2000, 12, generator=g, dtype=torch.float64)
    cand = cand / cand.norm(dim=1, keepdim=True)
    vals = 0.5 * ((R[None] - cand[:, :, None] * H[2][None, None]) ** 2).sum((1, 2))
    assert best <= vals.min() + 1e-12


@pytest.mark.parametrize("solver", ["hals", "mu"])
def test_w_fixed_columns_unchanged_and_first(solver):
    V, Wt, _ = planted(seed=6)
    W_fixed = Wt[:, :2].clone()
    W, H = sparse_nmf(V, 2, mu=0.0, n_iter=300, W_fixed=W_fixed, inner=2, solver=solver)
    assert W.shape == (40, 4) and H.shape == (4, 300)
    assert torch.equal(W[:, :2], W_fixed)
    torch.testing.assert_close(W[:, 2:].norm(dim=0), torch.ones(2), atol=1e-5, rtol=0)
    # SONYC recipe: with the first two atoms known, the learned ones are the other two
    cos, _ = match_cosines(Wt[:, 2:], W[:, 2:])
    assert cos.min() > 0.95, cos
    assert ((V - W @ H).norm() / V.norm()).item() < 0.02


def test_w_init_is_used():
    V, Wt, _ = planted(seed=7)
    W, _ = sparse_nmf(V, 4, mu=0.0, n_iter=0, W_init=Wt * 2.0)
    torch.testing.assert_close(W, Wt, atol=1e-6, rtol=1e-5)  # normalised on entry


def test_tol_stops_early():
    V, _, _ = planted(seed=8, noise=0.1)
    hist: list[float] = []
    sparse_nmf(V, 4, mu=0.8, n_iter=500, tol=1e-3, history=hist)
    assert 1 < len(hist) < 500
    assert (hist[-2] - hist[-1]) <= 1e-3 * hist[-2]


def test_determinism():
    V, _, _ = planted(seed=9, noise=0.1)
    W1, H1 = sparse_nmf(V, 5, n_iter=20, seed=11)
    W2, H2 = sparse_nmf(V, 5, n_iter=20, seed=11)
    W3, _ = sparse_nmf(V, 5, n_iter=20, seed=12)
    assert torch.equal(W1, W2) and torch.equal(H1, H2)
    assert not torch.equal(W1, W3)
    P1 = project(V, W1, seed=4)
    assert torch.equal(P1, project(V, W1, seed=4))


def test_outputs_are_ordinary_tensors_usable_in_autograd():
    V, _, _ = planted(seed=10)
    W, H = sparse_nmf(V, 4, n_iter=3)
    P = project(V, W, n_iter=3)
    assert not W.is_inference() and not H.is_inference() and not P.is_inference()
    Hp = P.clone().requires_grad_(True)
    loss = ((V - W @ Hp) ** 2).sum()
    loss.backward()
    assert Hp.grad is not None


# ------------------------------------------------------------------------------------ project
def test_project_recovers_planted_h_and_reduces_objective():
    V, Wt, Ht = planted(seed=11)
    H = project(V, Wt, mu=0.0, n_iter=500)
    rel = ((H - Ht).norm() / Ht.norm()).item()
    assert rel < 0.05, rel
    H0 = project(V, Wt, mu=0.8, n_iter=0)        # the initialisation
    H1 = project(V, Wt, mu=0.8, n_iter=50)
    assert objective(V, Wt, H1, 0.8) < 0.6 * objective(V, Wt, H0, 0.8)
    assert objective(V, Wt, H1, 0.8) < objective(V, Wt, Ht, 0.8)   # beats the planted H
    objs = [objective(V, Wt, project(V, Wt, mu=0.8, n_iter=t), 0.8) for t in range(0, 15)]
    assert_nonincreasing(objs, rel=1e-6)


def test_project_batched_equals_per_item():
    g = torch.Generator().manual_seed(0)
    W = torch.rand(40, 6, generator=g)
    Vb = torch.rand(3, 40, 50, generator=g)
    Vb[1, :, 7] = 0.0                               # an all-zero frame -> zero activations
    Hb = project(Vb, W, mu=0.5, n_iter=60, seed=2)
    assert Hb.shape == (3, 6, 50)
    for b in range(3):
        torch.testing.assert_close(Hb[b], project(Vb[b], W, mu=0.5, n_iter=60, seed=2),
                                   rtol=1e-5, atol=1e-6)
    assert torch.equal(Hb[1, :, 7], torch.zeros(6))


# ---------------------------------------------------------------------------------- subsample
def test_subsample_frames():
    frames = torch.arange(2 * 1000, dtype=torch.float32).reshape(2, 1000)
    out, info = subsample_frames(frames, max_frames=100, seed=3)
    assert out.shape == (2, 100)
    assert info == {"frames_total": 1000, "frames_used": 100}
    cols = out[0].long()
    assert (cols[1:] > cols[:-1]).all()               # distinct, original order
    torch.testing.assert_close(out[1], frames[1, cols])
    out2, _ = subsample_frames(frames, max_frames=100, seed=3)
    assert torch.equal(out, out2)
    same, info = subsample_frames(frames, max_frames=1000)
    assert same is frames and info == {"frames_total": 1000, "frames_used": 1000}


# -------------------------------------------------------------------------------- bad inputs
@pytest.mark.parametrize("call, match", [
    (lambda V: sparse_nmf(-V, 3), "non-negative"),
    (lambda V: sparse_nmf(V[0], 3), "shape"),
    (lambda V: sparse_nmf(V[None], 3), "shape"),
    (lambda V: sparse_nmf(V, 0), "k must be an integer >= 1"),
    (lambda V: sparse_nmf(V, 2.5), "k must be an integer"),
    (lambda V: sparse_nmf(V.long(), 3), "floating-point"),
    (lambda V: sparse_nmf(V * float("nan"), 3), "NaN"),
    (lambda V: sparse_nmf(V[:, :0], 3), "empty"),
    (lambda V: sparse_nmf(V, 3, mu=-1.0), "mu must be >= 0"),
    (lambda V: sparse_nmf(V, 3, inner=0), "inner"),
    (lambda V: sparse_nmf(V, 3, solver="als"), "solver must be one of hals, mu"),
    (lambda V: sparse_nmf(V, 3, W_fixed=torch.rand(7, 2)), "W_fixed must have F=10"),
    (lambda V: sparse_nmf(V, 3, W_fixed=-torch.rand(10, 2)), "W_fixed must be non-negative"),
    (lambda V: sparse_nmf(V, 3, W_init=torch.rand(10, 4)), r"W_init must have shape \(F, k\)"),
    (lambda V: project(V, -torch.rand(10, 3)), "W must be non-negative"),
    (lambda V: project(V, torch.rand(9, 3)), "rows"),
    (lambda V: project(V[0], torch.rand(10, 3)), "shape"),
    (lambda V: project(-V, torch.rand(10, 3)), "non-negative"),
    (lambda V: objective(V, torch.rand(10, 3), torch.rand(4, 20), 0.8), "mismatch"),
    (lambda V: subsample_frames(V[0]), "2-D"),
    (lambda V: subsample_frames(V, max_frames=0), "max_frames"),
])
def test_bad_input_raises_value_error(call, match):
    V = torch.rand(10, 20)
    with pytest.raises(ValueError, match=match):
        call(V)
