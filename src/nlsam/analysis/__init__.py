"""What trained networks and studies show: study reports (:mod:`.report`), Grad-CAM
(:mod:`.gradcam`), NL-SAM attention maps (:mod:`.attention_maps`), predictions
(:mod:`.predict`), exports (:mod:`.export`) and their figures (:mod:`.figures`).

The ``nlsam`` commands that run them are in :mod:`nlsam.cli`; the cost counter is
:mod:`nlsam.cost`.
"""
