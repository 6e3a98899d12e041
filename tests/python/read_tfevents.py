"""Reads a directory of TensorBoard event files with TensorBoard's own reader and writes every
scalar as JSON: {tag: [[step, value], ...]}.  usage: read_tfevents.py LOGDIR OUT.json"""
import json
import sys

from tensorboard.backend.event_processing import event_accumulator

acc = event_accumulator.EventAccumulator(sys.argv[1], size_guidance={event_accumulator.SCALARS: 0})
acc.Reload()
out = {tag: [[e.step, e.value] for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
with open(sys.argv[2], "w") as f:
    json.dump(out, f)
