"""Temporal action detection: snippet features, detectors over them, and their metrics.

    metrics.py   segment mAP at tIoU thresholds (THUMOS14, ActivityNet), frame-level mAP
    features.py  snippet features of a registered model over prepared frames / flow
    models.py    ActionFormer-style detector; necks and heads registered by name
    train.py     the detector's training loop (MLflow run, registry)
"""
