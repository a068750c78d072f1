"""Latency as a budget: a per-device lookup table of measured op latencies (table.py), the ops a
network runs (trace.py), and a fitted model that sums them into a network's latency (model.py)."""
from .lock import timing, training
from .model import Prediction, calibrate, measure, predict
from .table import DeviceKey, Table, key_here, table_file

__all__ = ["DeviceKey", "Prediction", "Table", "calibrate", "key_here", "measure", "predict", "table_file",
           "timing", "training"]
