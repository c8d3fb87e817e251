"""landmark-retrieval: instance-level image retrieval and recognition for GLR-style data.

Pipeline steps (one module each, one entry function each):

* :func:`landmark_retrieval.extract.extract` - local + global features into HDF5 shards;
* :func:`landmark_retrieval.retrieve.retrieve` - top-k train neighbours of every test image;
* :func:`landmark_retrieval.verify.verify` - DEGENSAC inlier counts on local matches;
* :func:`landmark_retrieval.predict.predict` - one (landmark_id, confidence) per test image;
* :func:`landmark_retrieval.submit.submit` - ``submission.csv``;
* :func:`landmark_retrieval.evaluate.evaluate` - GAP and mAP@100.

:func:`landmark_retrieval.pipeline.run` chains them.
"""
import logging

__version__ = "0.1.0"

from .io.progress import TqdmHandler  # noqa: E402

logger = logging.getLogger("landmark_retrieval")
if not logger.handlers:
    _handler = TqdmHandler()
    _handler.setFormatter(
        logging.Formatter("[%(asctime)s %(name)s %(levelname)s] %(message)s", "%H:%M:%S")
    )
    logger.addHandler(_handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False


__all__ = ["logger", "__version__"]
