"""Fixtures of the detection tests: a tiny generated COCO-format set, shared by the session."""

import pytest


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> str:
    """12 train / 6 val images of 128x128 with 1..3 shapes each (pycocotools polygons)."""
    from projects.detection.data.synthetic_coco import generate_synthetic_coco

    root = str(tmp_path_factory.mktemp("synthetic_coco"))
    generate_synthetic_coco(root, num_train=12, num_val=6, image_size=(128, 128), max_objects=3, seed=0, progress=False)
    return root


@pytest.fixture(autouse=True)
def _no_log_handlers_outlive_a_test():
    """detectron2's ``setup_logger`` (train_net run in-process) binds console handlers to the ``sys.stdout`` of the
    moment, a test's capture that is closed afterwards; a later test's logging would then print "Logging error"
    tracebacks. A fresh process (the real command line) never has them: remove what a test added."""
    import logging

    loggers = [logging.getLogger(), *[logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)]]
    before = {id(lg): list(lg.handlers) for lg in loggers}
    yield
    for lg in [logging.getLogger(), *[logging.getLogger(n) for n in list(logging.Logger.manager.loggerDict)]]:
        for handler in [h for h in lg.handlers if h not in before.get(id(lg), [])]:
            lg.removeHandler(handler)
