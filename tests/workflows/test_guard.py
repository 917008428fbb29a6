# Copyright (c) medfuse contributors
# Licensed under the Apache License, Version 2.0
"""NonFiniteGuard, FiniteCheckpointSaver, check_finite_state on a tiny MONAI SupervisedTrainer (BatchNorm inside)."""

from __future__ import annotations

import pytest
import torch
from ignite.engine import Events
from monai.engines import SupervisedTrainer

from medfuse.errors import TrainingError
from medfuse.workflows import FiniteCheckpointSaver, NonFiniteGuard, check_finite_state


class NaNAt(torch.nn.Module):
    """MSE loss that is NaN on the calls listed in ``bad`` (1-based)."""

    def __init__(self, bad):
        super().__init__()
        self.bad, self.calls = set(bad), 0

    def forward(self, pred, target):
        self.calls += 1
        loss = torch.nn.functional.mse_loss(pred, target)
        return loss * float("nan") if self.calls in self.bad else loss


def _batches(n, bad_input=()):
    g = torch.Generator().manual_seed(0)
    out = []
    for i in range(1, n + 1):
        image = torch.randn(4, 3, generator=g)
        if i in bad_input:
            image[0, 1] = float("nan")
        out.append({"image": image, "label": torch.randn(4, 2, generator=g),
                    "image_path": [f"img_{i}_{k}.png" for k in range(4)]})
    return out


def _trainer(loss, data, epochs=1, limit=3, handlers=lambda net: []):
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(net.parameters(), lr=0.1)
    guard = NonFiniteGuard(limit=limit, log_interval=2)
    trainer = SupervisedTrainer(device=torch.device("cpu"), max_epochs=epochs, train_data_loader=data, network=net,
                                optimizer=opt, loss_function=loss, iteration_update=guard,
                                train_handlers=[guard, *handlers(net)], decollate=False)
    snaps = {}
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: snaps.__setitem__(
        e.state.iteration, {k: v.clone() for k, v in net.state_dict().items()}))
    return trainer, net, opt, guard, snaps


def _same(a, b):
    return all(torch.equal(a[k], b[k]) for k in a)


def test_nan_loss_step_is_dropped_params_and_buffers_unchanged():
    trainer, net, opt, guard, snaps = _trainer(NaNAt({2}), _batches(4))
    trainer.run()
    assert _same(snaps[1], snaps[2])  # weights AND BatchNorm running stats as before the step
    assert "1.running_mean" in snaps[2] and not torch.equal(snaps[2]["1.running_mean"], snaps[3]["1.running_mean"])
    assert not _same(snaps[2], snaps[3])  # training went on
    assert trainer.state.skipped_steps == 1 and trainer.state.skipped_steps_total == 1
    assert all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point())
    assert all(torch.isfinite(t).all() for s in opt.state.values() for t in s.values())


def test_nan_on_the_first_step_leaves_a_fresh_optimiser():
    trainer, net, opt, guard, snaps = _trainer(NaNAt({1}), _batches(2))
    init = {k: v.clone() for k, v in net.state_dict().items()}
    trainer.add_event_handler(Events.STARTED, lambda e: init.update({k: v.clone() for k, v in net.state_dict().items()}))
    trainer.run()
    assert _same(init, snaps[1]) and trainer.state.skipped_steps == 1
    assert all(torch.isfinite(t).all() for s in opt.state.values() for t in s.values())


def test_non_finite_input_never_reaches_the_network():
    seen = []
    trainer, net, opt, guard, snaps = _trainer(NaNAt(()), _batches(3, bad_input={2}))
    net[0].register_forward_pre_hook(lambda m, args: seen.append(bool(torch.isfinite(args[0]).all())))
    trainer.run()
    assert all(seen) and _same(snaps[1], snaps[2]) and trainer.state.skipped_steps == 1
    assert torch.isnan(trainer.state.output["loss"]) is not None  # last (good) batch's output is a dict


def test_limit_bad_steps_in_a_row_stop_with_one_line_naming_the_batch(tmp_path):
    data = _batches(3)
    def saver(net):
        return [FiniteCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_interval=1, n_saved=None)]

    # NaN from the 4th call on: epoch 1 is clean, epoch 2 iterations 1..3 are all bad
    trainer, net, opt, guard, snaps = _trainer(NaNAt(range(4, 100)), data, epochs=3, handlers=saver)
    with pytest.raises(TrainingError) as err:
        trainer.run()
    msg = str(err.value)
    assert "\n" not in msg and "epoch 2, iteration 3" in msg and "img_3_0.png" in msg and "nonfinite_limit" in msg
    saved = sorted(p.name for p in tmp_path.iterdir())
    assert saved == ["model_epoch=1.pt"]  # nothing written after the last finite epoch
    assert all(torch.isfinite(v).all() for v in torch.load(tmp_path / saved[0], weights_only=True).values()
               if v.is_floating_point())
    assert all(torch.isfinite(v).all() for v in net.state_dict().values() if v.is_floating_point())


def test_saver_refuses_non_finite_weights_previous_file_stays(tmp_path):
    net = torch.nn.Linear(2, 2)
    saver = FiniteCheckpointSaver(save_dir=str(tmp_path), save_dict={"model": net}, save_final=True,
                                  final_filename="model.pt")
    engine = SupervisedTrainer(device=torch.device("cpu"), max_epochs=1, train_data_loader=[], network=net,
                               optimizer=torch.optim.SGD(net.parameters(), lr=0.1), loss_function=torch.nn.MSELoss())
    saver.completed(engine)
    before = (tmp_path / "model.pt").read_bytes()
    with torch.no_grad():
        net.weight[0, 0] = float("inf")
    with pytest.raises(TrainingError, match="not saving 'model'.*previous checkpoint is kept"):
        saver.completed(engine)
    assert (tmp_path / "model.pt").read_bytes() == before


def test_check_finite_state_names_the_source():
    state = {"a": torch.ones(2), "b": torch.tensor([float("nan")]), "n": torch.tensor([3])}
    with pytest.raises(TrainingError, match=r"ckpt\.pt: 1 weight tensor\(s\) hold NaN or inf \(b\)"):
        check_finite_state(state, "ckpt.pt")
    check_finite_state({"a": torch.ones(2)}, "ok.pt")
    with pytest.raises(ValueError, match="nonfinite_limit must be at least 1, got 0"):
        NonFiniteGuard(limit=0)


def test_resume_continues_lr_schedule_and_skipped_count_as_if_never_interrupted(tmp_path):
    """resume.pt after epoch 1 (the cosine LR already stepped, 1 step dropped) + 2 more epochs == 3 epochs in one go."""
    from medfuse.workflows import RunState, lr_schedule_handler

    class Stop(Exception):
        pass

    def run(run_dir, loss, epochs=3, resume=None, stop_at=None):
        trainer, net, opt, guard, _ = _trainer(loss, _batches(2), epochs=epochs)
        torch.manual_seed(123)  # a resumed run starts from other weights: resume.pt must replace them
        for p in net.parameters():
            p.data.normal_()
        # attached before the LR handler, as in the base config: resume.pt must still hold the stepped schedule
        RunState(run_dir, net, opt, seed=0, resume=resume, guard=guard).attach(trainer)
        lr_schedule_handler(opt, "cosine", epochs=3, steps_per_epoch=2).attach(trainer)
        if stop_at:
            trainer.add_event_handler(Events.ITERATION_STARTED(once=stop_at), lambda e: (_ for _ in ()).throw(Stop()))
        return trainer, net, opt

    ref, ref_net, ref_opt = run(tmp_path / "ref", NaNAt({1}))
    ref.run()
    cut, _, _ = run(tmp_path / "cut", NaNAt({1}), stop_at=4)  # killed in epoch 2, iteration 2
    with pytest.raises(Stop):
        cut.run()
    again, net, opt = run(tmp_path / "cut", NaNAt(()), resume=tmp_path / "cut" / "resume.pt")
    again.run()
    assert ref.state.skipped_steps_total == 1 and again.state.skipped_steps_total == 1
    assert opt.param_groups[0]["lr"] == pytest.approx(ref_opt.param_groups[0]["lr"])
    for k, v in ref_net.state_dict().items():
        assert torch.allclose(v, net.state_dict()[k], atol=1e-6, rtol=0), k
