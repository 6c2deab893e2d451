"""A Keras ``fit`` run, on one worker or several (``MultiWorkerMirroredStrategy``, described by
``TF_CONFIG``): the program the multi-worker and resume tests start, and the one the README's
"Training at scale" launches on N hosts.

``fit`` is called once per epoch on that epoch's global batches (drawn from the seed and the
batch number; each worker gets its share of every global batch from the strategy), with
``roformer_tf.callbacks.BackupAndRestore`` when ``--backup`` is given. Every line on stdout is
one JSON event; the final weights go to ``--out`` (``.npz``, ``{pid}`` replaced by the worker index).

    python tests/workers/keras_worker.py --epochs 2 --steps 3 --out weights.npz
    # worker I of N (TF_CONFIG is built from --hosts when it is not set):
    python tests/workers/keras_worker.py --hosts h0:12345,h1:12345 --index I --out weights.npz
"""

from __future__ import annotations

import argparse
import json
import os

from common import global_batch, pace, run_main, say


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--hosts", help="host:port of every worker, comma-separated (builds TF_CONFIG)")
    p.add_argument("--index", type=int, default=0, help="this worker's index in --hosts")
    p.add_argument("--heads", default="sequence_classification")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--steps", type=int, default=3, help="batches per epoch")
    p.add_argument("--global-batch", type=int, default=8)
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--backup", help="BackupAndRestore folder (resumes from it when it holds a backup)")
    p.add_argument("--save-freq", type=int, default=1, help="back up every N batches")
    p.add_argument("--keep", type=int, default=2)
    p.add_argument("--save-to", help="canonical folders written at the end (the chief writes, all wait)")
    p.add_argument("--out", help="final weights (.npz; {pid} is replaced by the worker index)")
    p.add_argument("--also-one-worker", help="worker 0 then trains the same alone and saves the weights here (.npz)")
    p.add_argument("--xla", action="store_true", help="compile the train step with XLA (slower to start)")
    p.add_argument("--pace", type=float, default=0.0, help="seconds to wait after each step")
    p.add_argument("--timeout", type=float, default=0.0,
                   help="give up on a collective (an all-reduce) after this many seconds (0: wait as long as it "
                        "takes); a dead worker is noticed without it, within TensorFlow's 10 s heartbeat timeout")
    return p.parse_args(argv)


def main(argv=None) -> int:
    args = parse(argv)
    if args.hosts and "TF_CONFIG" not in os.environ:
        os.environ["TF_CONFIG"] = json.dumps({"cluster": {"worker": args.hosts.split(",")},
                                              "task": {"type": "worker", "index": args.index}})
    import numpy as np
    import tensorflow as tf

    from roformer_tf import RoFormerConfig

    multi = "TF_CONFIG" in os.environ
    if multi:
        # a worker that is alive but stuck sends its heartbeats, so only a collective timeout ends the wait
        options = tf.distribute.experimental.CommunicationOptions(timeout_seconds=args.timeout or None)
        strategy = tf.distribute.MultiWorkerMirroredStrategy(communication_options=options)
    else:
        strategy = tf.distribute.get_strategy()
    _kill_hook()
    config = RoFormerConfig(vocab_size=64, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                            intermediate_size=32, num_labels=3, hidden_dropout_prob=args.dropout,
                            attention_probs_dropout_prob=args.dropout)
    say(event="start", worker=args.index, replicas=strategy.num_replicas_in_sync)
    results = train(args, config, strategy, save_to=args.save_to)
    if args.also_one_worker and args.index == 0:
        # the same training on this worker alone (no strategy), for comparison: saves a TensorFlow start-up
        np.savez(args.also_one_worker, **train(args, config, tf.distribute.get_strategy()))
    if args.out:
        np.savez(args.out.replace("{pid}", str(args.index)), **results)
    say(event="done", worker=args.index)
    return 0


def train(args, config, strategy, save_to=None) -> dict:
    """Train every head of ``args.heads`` under ``strategy``; returns the final weights by name."""
    import keras
    import numpy as np

    from roformer_tf import MODEL_CLASSES
    from roformer_tf.callbacks import BackupAndRestore, save_pretrained

    results = {}
    for head in args.heads.split(","):
        with strategy.scope():
            keras.utils.set_random_seed(args.seed)
            model = MODEL_CLASSES[head](config)
            model(np.ones((1, 4), "int32"))
            total = args.epochs * args.steps
            schedule = keras.optimizers.schedules.CosineDecay(0.0, decay_steps=max(1, total - 1), warmup_steps=1,
                                                              warmup_target=1e-2)
            # no clipping: under a strategy Keras 3 clips each replica's gradient before summing them
            model.compile(optimizer=keras.optimizers.AdamW(schedule, weight_decay=0.01), jit_compile=args.xla)
        callbacks = [Events(head, args)]
        backup = None
        if args.backup:
            backup = BackupAndRestore(os.path.join(args.backup, head), save_freq=args.save_freq, keep=args.keep,
                                      delete_checkpoint=False)
            callbacks.insert(0, backup)
        for epoch in range(args.epochs):
            batches = [global_batch(head, config, args.global_batch, args.seed, epoch * args.steps + b)
                       for b in range(args.steps)]
            model.fit(dataset(batches), initial_epoch=epoch, epochs=epoch + 1, callbacks=callbacks, verbose=0,
                      shuffle=False)
            if backup is not None and backup.restored_step is not None:
                say(event="resumed", head=head, step=backup.restored_step)
                backup.restored_step = None
        for name, variable, _ in model.named_variables():
            results[f"{head}/{name}"] = np.asarray(variable)
        if save_to:
            save_pretrained(model, os.path.join(save_to, head))
    return results


def _events():
    import keras
    import numpy as np

    class Events(keras.callbacks.Callback):
        """One ``step`` event per optimizer step (what the tests kill at)."""

        def __init__(self, head, args):
            super().__init__()
            self.head, self.args = head, args

        def on_train_batch_end(self, batch, logs=None):
            say(event="step", head=self.head, step=int(np.asarray(self.model.optimizer.iterations)))
            pace(self.args)

    return Events


def dataset(batches):
    """``(features, labels)`` batches as ``fit`` takes them."""
    import numpy as np
    import tensorflow as tf

    def split(b):
        b = {k: v.astype(np.int32) for k, v in b.items()}  # Keras' integer inputs
        return b, b.pop("labels")

    pairs = [split(b) for b in batches]
    keys = list(pairs[0][0])
    features = {k: tf.constant(np.concatenate([f[k] for f, _ in pairs])) for k in keys}
    labels = tf.constant(np.concatenate([y for _, y in pairs]))
    # batched by tf.data, so that several workers can split every global batch between them
    return tf.data.Dataset.from_tensor_slices((features, labels)).batch(len(pairs[0][1]))


def _kill_hook() -> None:
    """With ROFORMER_TEST_KILL_IN_SAVE=N, SIGKILL this process while the backup of step N is being
    written: its weights file is complete in the temporary folder, the rename has not happened."""
    target = os.environ.get("ROFORMER_TEST_KILL_IN_SAVE")
    if not target:
        return
    import signal

    from roformer_tf import callbacks

    original = callbacks.json.dump

    def dump(obj, fh, *a, **k):
        if isinstance(obj, dict) and obj.get("step") == int(target) and "seeds" in obj:
            fh.write('{"epoch": ')  # half a metadata file
            fh.flush()
            say(event="killed-in-save", step=int(target))
            os.kill(os.getpid(), signal.SIGKILL)
        return original(obj, fh, *a, **k)

    callbacks.json.dump = dump


Events = None

if __name__ == "__main__":
    Events = _events()
    run_main(main, "keras_worker")
