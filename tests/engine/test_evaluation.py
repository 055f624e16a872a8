"""Evaluation: per-item top-k, and multi-view aggregation through the dataset's ``aggregate``."""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import Dataset

from mvit.data.loader import build_loader
from mvit.engine.evaluation import evaluate
from mvit.engine.meters import topk_correct

# Three views of two videos; the "model" is the identity, so each item's input is its logits.
VIEW_LOGITS = torch.tensor(
    [
        [2.0, 0.0, 1.0],  # video 0, label 1: views vote 0, 1, 1 but the summed scores pick 1
        [0.0, 1.5, 0.0],
        [0.0, 1.5, 0.0],
        [0.0, 0.0, 3.0],  # video 1, label 0: every view is wrong
        [1.0, 0.0, 2.0],
        [1.0, 0.0, 2.0],
    ]
)
VIEW_LABELS = [1, 1, 1, 0, 0, 0]


class Views(Dataset):
    def __len__(self):
        return len(VIEW_LOGITS)

    def __getitem__(self, index):
        return VIEW_LOGITS[index], VIEW_LABELS[index], index


class AggregatedViews(Views):
    calls = 0

    def aggregate(self, indices, scores, labels):
        type(self).calls += 1
        assert indices.tolist() == list(range(6))
        video = indices // 3
        summed = torch.zeros(2, scores.shape[1]).index_add_(0, video, scores)
        return summed, labels.view(2, 3)[:, 0]


def test_per_item_metrics():
    res = evaluate(nn.Identity(), build_loader(Views(), batch_size=4, train=False, seed=0), device=torch.device("cpu"))
    # per item: top-1 hits are items 1, 2 (label 1); top-3 of 3 classes always hits
    assert res.metrics["top1"] == 100 * 2 / 6 and res.metrics["top5"] == 100.0
    expected_loss = torch.nn.functional.cross_entropy(VIEW_LOGITS, torch.tensor(VIEW_LABELS))
    assert abs(res.metrics["loss"] - expected_loss.item()) < 1e-6
    assert res.metrics["num_samples"] == 6


def test_dataset_aggregate_is_scored_instead_of_items():
    loader = build_loader(AggregatedViews(), batch_size=4, train=False, seed=0)
    res = evaluate(nn.Identity(), loader, device=torch.device("cpu"), return_outputs=True)
    assert AggregatedViews.calls == 1
    # video 0 summed: [2, 3, 1] -> class 1 (right); video 1 summed: [2, 0, 7] -> class 2 (wrong), top-2 hits 0.
    assert res.metrics["top1"] == 50.0 and res.metrics["num_samples"] == 2
    assert torch.equal(res.outputs["scores"], VIEW_LOGITS)
    assert res.outputs["aggregated_scores"].shape == (2, 3)


def test_topk_correct_caps_k_at_the_class_count():
    scores = torch.tensor([[0.1, 0.9], [0.8, 0.2]])
    assert topk_correct(scores, torch.tensor([1, 1]), (1, 5)) == [1, 2]


class NamedAggregatedViews(Views):
    def __init__(self):
        self.names = []

    def aggregate(self, indices, scores, labels, name=None):
        self.names.append(name)
        return scores, labels


def test_aggregate_gets_the_evaluation_name_when_it_takes_one():
    dataset = NamedAggregatedViews()
    loader = build_loader(dataset, batch_size=4, train=False, seed=0)
    for name in ("val", "val_ema"):
        res = evaluate(nn.Identity(), loader, device=torch.device("cpu"), desc=name)
        assert "loss" not in res.metrics  # aggregated scores are not logits: no loss is made up
    assert dataset.names == ["val", "val_ema"]
