"""Localization: box detectors, their data and their training.

:data:`DETECTORS` names every :class:`segloc.localize.detect.Detector` by the method name the
command line uses; importing this package loads none of them.
"""

#: method name (the command line's) -> "module:class"; each class is a :class:`Detector`
DETECTORS = {
    "hog-svm": "segloc.localize.hog:HogSvmDetector",
    "proposals": "segloc.localize.proposal_detector:ProposalDetector",
    "selective-search": "segloc.localize.proposal_detector:SelectiveSearchDetector",
    "cnn": "segloc.localize.cnn:CnnDetector",
    "from-mask": "segloc.localize.from_mask:MaskDetector",
}
#: the detectors that learn from boxes (``segloc train-detector``)
TRAINABLE = ("hog-svm", "proposals", "cnn")
