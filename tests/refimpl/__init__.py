"""Independent numpy/ml_dtypes reference implementations used as test oracles.

Nothing here imports numgrade: these modules exist so that the quantisers written in
numgrade's own language can be checked bit for bit against a second, separately written
implementation of the same recipes (see ../shared/ANCHORS.md section 4).
"""
