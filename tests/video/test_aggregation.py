"""Multi-view aggregation against a hand computation."""

import numpy as np
import pytest
import torch

from projects.video.evaluation import aggregate_views, save_view_scores

# 3 videos x 2 views x 3 classes; video 2 has no view, the last row repeats (video 1, view 1).
SCORES = torch.tensor(
    [
        [0.6, 0.3, 0.1],  # video 0, view 0: alone it says class 0
        [0.1, 0.7, 0.2],  # video 0, view 1
        [0.1, 0.1, 0.8],  # video 1, view 0
        [0.5, 0.4, 0.1],  # video 1, view 1
        [0.5, 0.4, 0.1],  # the same view again (sampler padding / replacement of an unreadable video)
    ]
)
LABELS = torch.tensor([1, 1, 0, 0, 0])
VIDEOS = torch.tensor([0, 0, 1, 1, 1])
VIEWS = torch.tensor([0, 1, 0, 1, 1])


def test_sum_of_views_by_hand():
    result = aggregate_views(SCORES, LABELS, VIDEOS, VIEWS, num_videos=3, num_views=2, ks=(1, 2, 5))
    # video 0: [0.6 + 0.1, 0.3 + 0.7, 0.1 + 0.2] = [0.7, 1.0, 0.3] -> class 1 = label: right.
    # video 1: [0.1 + 0.5, 0.1 + 0.4, 0.8 + 0.1] = [0.6, 0.5, 0.9] -> class 2, label 0 second: top-2 only.
    # (Counting the repeated view twice would give [1.1, 0.9, 1.0] -> class 0, top-1 100%.)
    expected = torch.tensor([[0.7, 1.0, 0.3], [0.6, 0.5, 0.9], [0.0, 0.0, 0.0]])
    assert torch.allclose(result.video_scores, expected)
    assert result.topk == {1: 50.0, 2: 100.0, 5: 100.0}  # k > classes counts as all classes
    assert result.num_videos == 2  # video 2 has no view and is left out
    assert result.views_seen.tolist() == [2, 2, 0]
    assert result.labels.tolist() == [1, 0, -1]
    assert torch.equal(result.view_scores[1, 0], SCORES[2])
    assert result.view_scores[2].isnan().all()


def test_max_of_views_by_hand():
    result = aggregate_views(SCORES, LABELS, VIDEOS, VIEWS, 3, 2, method="max", ks=(1,))
    # video 0: max -> [0.6, 0.7, 0.2] -> class 1 (right); video 1: [0.5, 0.4, 0.8] -> class 2 (wrong).
    assert torch.allclose(result.video_scores[:2], torch.tensor([[0.6, 0.7, 0.2], [0.5, 0.4, 0.8]]))
    assert result.topk == {1: 50.0}


def test_input_checks():
    with pytest.raises(ValueError, match="ENSEMBLE_METHOD"):
        aggregate_views(SCORES, LABELS, VIDEOS, VIEWS, 3, 2, method="mean")
    with pytest.raises(ValueError, match="out of range"):
        aggregate_views(SCORES, LABELS, VIDEOS, VIEWS, 3, num_views=1)


def test_saved_view_scores(tmp_path):
    result = aggregate_views(SCORES, LABELS, VIDEOS, VIEWS, 3, 2)
    path = str(tmp_path / "out" / "scores.npz")
    save_view_scores(result, path, ["a.mp4", "b.mp4", "c.mp4"])
    saved = np.load(path)
    assert saved["view_scores"].shape == (3, 2, 3)
    assert np.allclose(saved["view_scores"][0], SCORES[:2].numpy())
    assert np.isnan(saved["view_scores"][2]).all()
    assert np.allclose(saved["video_scores"], result.video_scores.numpy())
    assert saved["labels"].tolist() == [1, 0, -1] and saved["video_paths"].tolist() == ["a.mp4", "b.mp4", "c.mp4"]


def test_dataset_hook_sums_softmax_scores_and_saves_them(tmp_path):
    from projects.video.data import ClipSampling, Kinetics, VideoEvalTransform

    path = str(tmp_path / "views.npz")
    dataset = Kinetics(
        ["a.mp4", "b.mp4", "c.mp4"],
        [1, 0, 2],
        ClipSampling(4, 2),
        train=False,
        eval_transform=VideoEvalTransform(32, 32, (0.45,) * 3, (0.225,) * 3),
        num_clips=2,
        num_crops=1,
        results_path=path,
    )
    logits = torch.log(SCORES)  # softmax(log p) = p for rows that sum to 1
    indices = VIDEOS * 2 + VIEWS  # items are clip-major: video * num_views + view
    scores, labels = dataset.aggregate(indices, logits, LABELS)
    assert torch.allclose(scores, torch.tensor([[0.7, 1.0, 0.3], [0.6, 0.5, 0.9]]))  # video 2 left out
    assert labels.tolist() == [1, 0]
    assert np.load(path)["video_paths"].tolist() == ["a.mp4", "b.mp4", "c.mp4"]
