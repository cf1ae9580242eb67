"""Fold ensembles: each model its own weights (not the rank-1 solution's one shared object), mean of probabilities."""

from __future__ import annotations

import pytest
import torch

from inferers import FlipTTAInferer
from networks.checkpoint import read_state_dict
from networks.ensemble import ProbabilityEnsemble, load_fold_models


def small_net() -> torch.nn.Module:
    nn = torch.nn
    return nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))


@pytest.fixture
def fold_checkpoints(tmp_path):
    paths, states = [], []
    for fold in range(5):
        torch.manual_seed(100 + fold)
        state = small_net().state_dict()
        path = tmp_path / f"fold{fold}.pt"
        # MONAI CheckpointSaver files hold {"network": state_dict, ...}; plain state dicts are accepted too
        torch.save({"network": state, "epoch": torch.tensor(3)} if fold % 2 else state, path)
        paths.append(path)
        states.append(state)
    return paths, states


def test_five_checkpoints_give_five_different_models_and_the_ensemble_is_their_mean(fold_checkpoints):
    paths, states = fold_checkpoints
    models = load_fold_models(small_net, paths)
    assert len({id(m) for m in models}) == 5 and not any(m.training for m in models)
    for model, state in zip(models, states):
        for name, value in model.state_dict().items():
            torch.testing.assert_close(value, state[name])
    weights = [m[0].weight for m in models]
    assert all(not torch.equal(weights[0], w) for w in weights[1:])
    x = torch.rand(2, 1, 16, 16)
    with torch.no_grad():
        expected = torch.stack([torch.sigmoid(m(x)) for m in models]).mean(0)
        torch.testing.assert_close(ProbabilityEnsemble(models)(x), expected)
        softmax = ProbabilityEnsemble(models, activation="softmax")(x)
    torch.testing.assert_close(softmax.sum(1), torch.ones(2, 16, 16))


def test_tta_is_applied_to_each_model_before_the_activation(fold_checkpoints):
    models = load_fold_models(small_net, fold_checkpoints[0][:2])
    tta = FlipTTAInferer()
    x = torch.rand(1, 1, 16, 16)
    with torch.no_grad():
        expected = (torch.sigmoid(tta(x, models[0])) + torch.sigmoid(tta(x, models[1]))) / 2
        torch.testing.assert_close(ProbabilityEnsemble(models, inferer=tta)(x), expected)


def test_the_same_object_twice_is_refused(fold_checkpoints):
    model = small_net()
    with pytest.raises(ValueError, match="more than once"):
        ProbabilityEnsemble([model, model])
    with pytest.raises(ValueError, match="same module twice"):  # the rank-1 solution's bug: five names, one model
        load_fold_models(lambda: model, fold_checkpoints[0])


def test_bad_checkpoints_are_named(tmp_path, fold_checkpoints):
    good = fold_checkpoints[0][0]
    with pytest.raises(FileNotFoundError, match="missing.pt"):
        load_fold_models(small_net, [good, tmp_path / "missing.pt"])
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="corrupt.pt"):
        load_fold_models(small_net, [corrupt])
    other = tmp_path / "other.pt"
    torch.save(torch.nn.Linear(3, 3).state_dict(), other)
    with pytest.raises(ValueError, match="other.pt does not fit"):
        load_fold_models(small_net, [other])
    with pytest.raises(ValueError, match="no entry 'teacher'"):
        read_state_dict(fold_checkpoints[0][1], key="teacher")


def test_weighted_fusion_of_packed_outputs_with_the_members_alongside():
    from networks.unet_plus_plus import UNet, UNetPlusPlus, seg_det_probabilities

    unet_pp, unet = UNetPlusPlus(features=(4, 8, 16, 32, 64)).eval(), UNet(features=(4, 8, 16, 32, 64)).eval()
    x = torch.randn(2, 3, 32, 16)
    fusion = ProbabilityEnsemble([unet_pp, unet], activation=seg_det_probabilities, weights=[3, 1], return_members=True)
    with torch.no_grad():
        out = fusion(x)
        p_pp, p_unet = seg_det_probabilities(unet_pp(x)), seg_det_probabilities(unet(x))
    assert out.shape == (2, 21, 32, 16)
    torch.testing.assert_close(out[:, :7], 0.75 * p_pp + 0.25 * p_unet)
    torch.testing.assert_close(out[:, 7:14], p_pp)
    torch.testing.assert_close(out[:, 14:], p_unet)
    with pytest.raises(ValueError, match="one non-negative weight per model"):
        ProbabilityEnsemble([unet_pp, unet], weights=[1.0])
    with pytest.raises(ValueError, match="one non-negative weight per model"):
        ProbabilityEnsemble([unet_pp, unet], weights=[1.0, -1.0])
