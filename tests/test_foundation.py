"""Front-end, registry, API, classifier, training loop and synth task."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from audio_xai_bench.api import (Explainer, FactorExplanation, FrontendConfig,
                                 SegmentExplanation, normalise_relevance)
from audio_xai_bench.audio import AudioError, Frontend, check_waveform, fix_length, load_audio
from audio_xai_bench.registry import METHODS, TASKS, Registry

FE = FrontendConfig(sample_rate=16000, n_fft=1024, hop_length=512, n_mels=64, clip_seconds=1.0)


def _noise(b=3, n=16000, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).standard_normal((b, n)).astype(np.float32)) * 0.1


# --- front-end ------------------------------------------------------------------------------
def test_inverse_of_forward_is_the_input():
    fe = Frontend(FE)
    x = _noise()
    X, P, _ = fe.analyze(x)
    y = fe.invert(X, P, x.shape[1])
    assert torch.max(torch.abs(y - x)) < 1e-4


def test_frontend_matches_librosa():
    import librosa

    fe = Frontend(FE)
    x = _noise(1)
    X, _, logmel = fe.analyze(x)
    S = np.abs(librosa.stft(x[0].numpy(), n_fft=1024, hop_length=512, pad_mode="reflect"))
    np.testing.assert_allclose(X[0].numpy(), np.log1p(S), atol=1e-4)
    mel = librosa.feature.melspectrogram(S=S, sr=16000, n_fft=1024, n_mels=64)
    ref = librosa.power_to_db(mel, top_db=80.0).T
    np.testing.assert_allclose(logmel[0, 0].numpy(), ref, atol=1e-3)


def test_load_audio_downmixes_resamples_and_names_bad_files(tmp_path):
    import soundfile as sf

    stereo = np.stack([np.ones(8000), -np.ones(8000) * 0.5], 1).astype(np.float32) * 0.1
    sf.write(tmp_path / "a.wav", stereo, 8000)
    wave, info = load_audio(tmp_path / "a.wav", 16000)
    assert info["channels"] == 2 and info["resampled_from"] == 8000
    assert abs(len(wave) - 16000) <= 2
    assert np.allclose(np.median(wave), 0.025, atol=1e-3)
    (tmp_path / "bad.wav").write_bytes(b"RIFF0000WAVEjunk")
    with pytest.raises(AudioError, match="bad.wav"):
        load_audio(tmp_path / "bad.wav", 16000)
    with pytest.raises(AudioError, match="missing.wav"):
        load_audio(tmp_path / "missing.wav", 16000)


def test_nan_and_empty_waveforms_are_rejected():
    with pytest.raises(AudioError, match="clip-7"):
        check_waveform(np.array([0.0, np.nan], np.float32), "clip-7")
    with pytest.raises(AudioError, match="empty"):
        check_waveform(np.zeros(0, np.float32), "clip-8")
    assert fix_length(np.ones(5), 3).shape == (3,) and fix_length(np.ones(2), 4)[-1] == 0


# --- registry and API ------------------------------------------------------------------------
def test_unknown_names_list_the_valid_ones():
    with pytest.raises(KeyError, match="l2i"):
        METHODS.get("no-such-method")
    with pytest.raises(KeyError, match="synth"):
        TASKS.get("no-such-task")
    reg = Registry("thing")
    reg.add_lazy("explainer", "audio_xai_bench.api:Explainer")
    assert reg.get("explainer") is Explainer
    assert reg.get("audio_xai_bench.api:Explainer") is Explainer
    with pytest.raises(KeyError, match="cannot import"):
        reg.get("not_a_module_xyz:Thing")


def test_resolve_config_layers_and_rejects_unknown_keys():
    cls = METHODS.get("l2i")
    task = TASKS.get("synth")()
    cfg = cls.resolve_config(task, "default", {"K": "12", "alpha": "2.5"})
    assert cfg["K"] == 12 and cfg["alpha"] == 2.5
    assert cls.resolve_config(task, "small", {})["K"] == cls.small_profile["K"]
    with pytest.raises(KeyError, match="valid keys"):
        cls.resolve_config(task, "default", {"nope": "1"})
    from audio_xai_bench.settings import parse_value  # the one --set parser

    assert parse_value("l2i", "b", True, "false") is False
    assert parse_value("l2i", "t", (1,), "1,2") == (1, 2)


def test_factor_explanation_is_a_soft_mask_decomposition():
    g = torch.Generator().manual_seed(0)
    W, H = torch.rand(20, 5, generator=g), torch.rand(2, 5, 7, generator=g)
    X = torch.rand(2, 20, 7, generator=g)
    e = FactorExplanation(X, W, H, torch.rand(2, 5, generator=g))
    everything = e.mixture(torch.ones(2, 5))
    assert torch.allclose(everything, X, atol=1e-4)
    parts = torch.stack([e.component(k) for k in range(5)])
    assert (parts >= 0).all() and torch.allclose(parts.sum(0), everything, atol=1e-5)
    half = e.mixture(torch.tensor([[1, 1, 0, 0, 0], [0, 0, 0, 0, 1]], dtype=torch.bool))
    assert (half <= X + 1e-6).all()


def test_segment_explanation_partitions_the_input():
    X = torch.rand(1, 4, 6)
    seg = torch.tensor([[[0, 0, 1, 1, 2, 2]] * 4])
    e = SegmentExplanation(X, seg, torch.tensor([[1.0, 0.5, -0.2]]))
    assert torch.equal(e.mixture(torch.tensor([[True, False, True]])),
                       X * torch.tensor([1, 1, 0, 0, 1, 1.0]))


def test_relevance_normalisation_paper_and_code():
    v = torch.tensor([[2.0, -4.0, 1.0]])
    assert torch.allclose(normalise_relevance(v, "paper"), torch.tensor([[0.5, -1.0, 0.25]]))
    assert torch.allclose(normalise_relevance(v, "code"), torch.tensor([[1.0, -2.0, 0.5]]))


# --- classifier and training -----------------------------------------------------------------
def test_kumar_cnn_shapes_for_any_clip_length():
    from audio_xai_bench.classifier import KumarCNN

    net = KumarCNN(5, width=0.125).eval()
    for T, M in ((431, 128), (94, 64), (30, 40)):
        logits, hidden = net.forward_hidden(torch.randn(2, 1, T, M))
        assert logits.shape == (2, 5)
        assert list(hidden) == ["B1", "B2", "B3", "B4", "B5", "B6"]
    _, hidden = net.forward_hidden(torch.randn(1, 1, 431, 128))
    # reference §2: ESC (T=431) -> B4 (128 ch, 53, 16), B5 (26, 8), B6 (13, 4) at width 1
    assert hidden["B4"].shape[2:] == (53, 16) and hidden["B6"].shape[2:] == (13, 4)


def test_training_resumes_after_an_interruption(tmp_path):
    from audio_xai_bench.api import SplitData
    from audio_xai_bench.train import BatchLoader, fit

    split = SplitData(ids=[str(i) for i in range(8)], wave=_noise(8, 16000),
                      target=torch.eye(2)[torch.arange(8) % 2], mask=torch.ones(8, 2, dtype=torch.bool))
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.LazyLinear(2))
    loader = BatchLoader(split, Frontend(FE), 4, shuffle=True)
    calls = {"n": 0}

    def loss_fn(batch, epoch):
        calls["n"] += 1
        if epoch == 2 and calls.get("fail", True):
            raise RuntimeError("simulated crash")
        return {"loss": torch.nn.functional.cross_entropy(net(batch.logmel), batch.target.argmax(1))}

    net(loader.batch(torch.arange(2)).logmel)  # materialise the lazy layer
    ckpt = tmp_path / "resume.pt"
    with pytest.raises(RuntimeError):
        fit(net, net.parameters(), loss_fn, loader, epochs=4, lr=1e-2, checkpoint=ckpt,
            select="last")
    assert ckpt.exists()
    calls["fail"] = False
    history = fit(net, net.parameters(), loss_fn, loader, epochs=4, lr=1e-2, checkpoint=ckpt,
                  select="last")
    assert [h["epoch"] for h in history] == [1, 2, 3, 4]
    assert not ckpt.exists()


# --- synth -----------------------------------------------------------------------------------
def test_synth_is_deterministic_and_keeps_sources():
    from audio_xai_bench.tasks.synth import SynthMultilabelTask, SynthTask

    a = SynthTask(profile="small", seed=0).folds()[0]
    b = SynthTask(profile="small", seed=0).folds()[0]
    c = SynthTask(profile="small", seed=1).folds()[0]
    assert np.array_equal(a.test[3].audio, b.test[3].audio)
    assert not np.array_equal(a.test[3].audio, c.test[3].audio)
    ex = a.train[5]
    assert ex.target.argmax() == ex.source_classes[0] and ex.sources.shape[0] == 1
    # the event's source is part of the mixture: correlation with the mixture is high
    s, m = ex.sources[0], ex.audio
    assert np.dot(s, m) / (np.linalg.norm(s) * np.linalg.norm(m)) > 0.2
    ml = SynthMultilabelTask(profile="small").folds()[0]
    counts = [int(e.target.sum()) for e in ml.train]
    assert min(counts) >= 1 and max(counts) <= 3 and len(set(counts)) > 1
    assert all(set(np.flatnonzero(e.target)) == set(e.source_classes) for e in ml.train)


def test_resumed_training_equals_the_uninterrupted_one_bit_for_bit(tmp_path):
    """Issue 12: the resume checkpoint holds every RNG state and the optimiser's, so a run
    interrupted at epoch k and resumed in a fresh process gives the same weights (CPU, same
    thread count) as one that never stopped. Dropout makes the RNG matter."""
    from audio_xai_bench.api import SplitData
    from audio_xai_bench.train import BatchLoader, fit

    split = SplitData(ids=[str(i) for i in range(8)], wave=_noise(8, 16000),
                      target=torch.eye(2)[torch.arange(8) % 2], mask=torch.ones(8, 2, dtype=torch.bool))

    def make():
        torch.manual_seed(3)
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Dropout(0.5), torch.nn.Linear(
            split.wave.shape[0] and Frontend(FE).logmel(split.wave[:1]).numel(), 2))
        return net, BatchLoader(split, Frontend(FE), 4, shuffle=True, seed=1)

    def run(net, loader, ckpt, crash_at=None):
        def loss_fn(batch, epoch):
            if crash_at is not None and epoch == crash_at:
                raise RuntimeError("simulated crash")
            return {"loss": torch.nn.functional.cross_entropy(net(batch.logmel),
                                                              batch.target.argmax(1))}
        return fit(net, net.parameters(), loss_fn, loader, epochs=5, lr=1e-2, checkpoint=ckpt,
                   select="last")

    ref, loader = make()
    hist_ref = run(ref, loader, tmp_path / "a.pt")
    net, loader = make()
    with pytest.raises(RuntimeError):
        run(net, loader, tmp_path / "b.pt", crash_at=3)
    net, loader = make()  # a fresh process: same seed, then other draws before resuming
    torch.rand(17)
    hist = run(net, loader, tmp_path / "b.pt")
    for (k, a), b in zip(ref.state_dict().items(), net.state_dict().values()):
        assert torch.equal(a, b), k
    assert [h["loss"] for h in hist] == [h["loss"] for h in hist_ref]


def test_bad_checkpoints_are_named_and_never_unpickled(tmp_path):
    from audio_xai_bench.train import CheckpointError, load_checkpoint

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    evil = tmp_path / "evil.pt"
    torch.save({"model": Evil()}, evil)
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    good = tmp_path / "good.pt"
    torch.save({"w": torch.ones(3)}, good)
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(good.read_bytes()[:40])
    for path, needle in ((evil, "not a plain state dict"), (empty, "truncated"),
                         (trunc, "truncated"), (tmp_path / "none.pt", "does not exist")):
        with pytest.raises(CheckpointError) as info:
            load_checkpoint(path)
        assert str(path) in str(info.value) and needle in str(info.value)
        assert "weights_only=False" not in str(info.value)
    assert torch.equal(load_checkpoint(good)["w"], torch.ones(3))


def test_truncated_and_too_short_files_are_bad_files_and_padding_is_counted(tmp_path):
    """Issue 12: a WAV cut off mid-download (fewer frames than its header says) and a clip
    under MIN_CLIP_FRACTION of the clip length follow --on-bad-file; padding is counted."""
    import soundfile as sf

    from audio_xai_bench.api import Example, FrontendConfig
    from audio_xai_bench.audio import MIN_CLIP_FRACTION, wav_declared_frames
    from audio_xai_bench.data import LoadReport, materialize

    fe = FrontendConfig(sample_rate=16000, clip_seconds=1.0)
    rng = np.random.default_rng(0)
    full, trunc, short, near = (tmp_path / f"{n}.wav" for n in ("full", "trunc", "short", "near"))
    sf.write(full, rng.standard_normal(16000).astype(np.float32) * 0.1, 16000, subtype="PCM_16")
    trunc.write_bytes(full.read_bytes()[:20000])
    sf.write(short, np.full(1600, 0.1, np.float32), 16000)  # 0.1 s of a 1 s clip
    sf.write(near, np.full(int(16000 * 0.9), 0.1, np.float32), 16000)  # 0.9 s: padded
    assert wav_declared_frames(str(full)) == 16000 and MIN_CLIP_FRACTION > 0.1
    with pytest.raises(AudioError, match="truncated"):
        load_audio(trunc, 16000)
    exs = [Example(id=p.stem, target=np.eye(2, dtype=np.float32)[0], path=str(p))
           for p in (full, trunc, short, near)]
    with pytest.raises(AudioError, match="short.wav is too short"):
        materialize([exs[0], exs[2]], fe, on_bad_file="fail")
    for cache in (None, tmp_path / "cache"):
        report = LoadReport()
        split = materialize(exs, fe, on_bad_file="skip", report=report, cache_dir=cache,
                            namespace="t")
        assert split.ids == ["full", "near"]
        d = report.as_dict()
        assert d["n_skipped"] == 2 and d["padded"] == 1
        assert {s["id"] for s in d["skipped"]} == {"trunc", "short"}
