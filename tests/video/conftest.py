"""Fixtures of the video tests: small generated mp4 data sets."""

import pytest


@pytest.fixture(scope="session")
def motion_dir(tmp_path_factory) -> str:
    """A small motion data set (36 train / 12 val clips of 32x32x32 frames), generated once per session."""
    from projects.video.tools.make_motion_dataset import make_motion_dataset

    out = str(tmp_path_factory.mktemp("motion"))
    make_motion_dataset(out, num_train=36, num_val=12, size=32, num_frames=32, seed=0, progress=False)
    return out
