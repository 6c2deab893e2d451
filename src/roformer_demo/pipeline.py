"""The main job's stages; ``run`` chains them, each is also a subcommand.

1. ``vocab``   — split the reviews, build the vocabulary, tokenize (batch path, progress bar)
2. ``train``   — optional masked-LM pass on People's Daily, then the sentiment classifier
3. (save)      — the canonical checkpoint + tokenizer files, listed and checked
4. ``eval``    — PyTorch: test accuracy and F1 next to a bag-of-words baseline, example sentences
5. ``flax``    — Flax: logits against PyTorch and Keras, then pmap data-parallel training steps
6. ``convert`` — Keras weights and Flax msgpack round trips, and ``verify``'s parity table
7. ``v2``      — a RoFormer-V2 classifier (RMS norm, no biases, relu) trained from scratch in Keras,
   saved canonical, then served in PyTorch and Flax: its test scores next to the V1 model's and the baseline's

Stages hand over through the output folder (``runs/demo`` by default), so any stage can run
on its own once the ones before it have run; within ``run`` a :class:`Workspace` also keeps
what was loaded in memory. Each stage stamps its outputs when it finishes
(``roformer_demo.stamps``), and a stage reads an earlier one's files only when that stamp says
they are complete, unchanged and built from the outputs still in place. Each stage returns
(and writes to ``reports/<stage>.json``) a report; ``run`` prints a summary of them and writes
``summary.txt`` and ``metrics.json``.

Example:
    >>> reports = run(Settings(out="runs/demo"))  # doctest: +SKIP
    >>> reports["eval"]["test"]["accuracy"] > reports["eval"]["baseline"]["test"]["accuracy"]  # doctest: +SKIP
    True
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import time

import numpy as np

from roformer_core.checkpoint import Checkpoint
from roformer_core.errors import CheckpointError, InputError
from roformer_core.io import atomic_write_text
from roformer_core.tokenizer import RoFormerTokenizer
from roformer_demo import data, stamps, text
from roformer_demo.backends import check_backend, check_checkpoint, load_runner
from roformer_demo.baseline import fit_baseline
from roformer_demo.inference import all_logits, check_tokenizer, classify, fill_mask, softmax
from roformer_demo.metrics import scores
from roformer_demo.report import Timer, banner, table, write_json
from roformer_demo.settings import Settings
from roformer_demo.training import Recipe, Task

#: Sentences written for this demo (not in the data), shown with the classifier's probabilities.
EXAMPLES = ("这本书写得太好了，强烈推荐！", "质量很差，用了两天就坏了。", "物流很快，包装也很仔细，满意。",
            "客服态度恶劣，再也不会买了。", "内容空洞，浪费时间和金钱。", "孩子很喜欢，画面漂亮，故事有趣。")
#: Fill-mask examples (People's Daily style and review style).
MASK_EXAMPLES = ("今天[MASK]气很好。", "中国[MASK]民共和国", "这本书写得非常[MASK]。")
NEWS_FILE = "news.txt"


#: the settings each stage's output depends on (recorded in its stamp, compared by ``run --resume``)
BUILT_FROM = {
    "vocab": ("seed", "max_examples", "news_sentences", "vocab_size", "max_length"),
    "train": ("seed", "layers", "hidden", "heads", "intermediate", "epochs", "batch_size", "learning_rate",
              "mlm_steps", "max_steps"),
    "flax": ("flax_steps", "batch_size"),
    "v2": ("seed", "layers", "hidden", "heads", "intermediate", "batch_size", "learning_rate", "v2_steps"),
}
#: where a stage being trained keeps its training checkpoints (removed once the stage is complete)
CHECKPOINTS = "checkpoints"


def built_from(stage: str, settings: Settings) -> dict:
    """The settings ``stage``'s output was built from, as its stamp records them.

    Example:
        >>> built_from("flax", Settings())
        {'flax_steps': 6, 'batch_size': 32}
    """
    return {k: getattr(settings, k) for k in BUILT_FROM.get(stage, ())}


class Workspace:
    """One run's data and tokenizer, read from the output folder once and kept in memory.

    Example:
        >>> ws = Workspace(Settings(out="runs/demo"))  # doctest: +SKIP
        >>> len(ws.rows("test")), ws.tokenizer().vocab_size  # doctest: +SKIP
        (1736, 8000)
    """

    def __init__(self, settings: Settings):
        self.settings = settings
        self.layout = settings.layout
        self._split: dict[str, data.Examples] | None = None
        self._news: list[str] | None = None
        self._tokenizer: RoFormerTokenizer | None = None
        self._rows: dict[str, list[np.ndarray]] = {}
        self._stamps: dict[str, dict] = {}

    def stamp(self, stage: str) -> dict:
        """The stamp of an earlier stage whose outputs are complete (``stamps.require``), checked once."""
        if stage not in self._stamps:
            self._stamps[stage] = stamps.require(self.layout, stage)
        return self._stamps[stage]

    def _started(self, stage: str) -> None:
        # until the stage stamps its outputs again, no other stage may take them as complete
        self._stamps.pop(stage, None)
        stamps.clear_stamp(self.layout, stage)

    def _finished(self, stage: str, outputs, inputs=(), built_from=None) -> dict:
        stamp = stamps.write_stamp(self.layout, stage, outputs, {name: self.stamp(name) for name in inputs},
                                   built_from)
        self._stamps[stage] = stamp
        return stamp

    def split(self) -> dict[str, data.Examples]:
        """train / validation / test reviews, as the ``vocab`` stage wrote them."""
        if self._split is None:
            self.stamp("vocab")
            self._split = {name: data.read_jsonl(self.layout.split(name)) for name in data.SPLITS}
        return self._split

    def news(self) -> list[str]:
        """The People's Daily sentences chosen by the ``vocab`` stage."""
        if self._news is None:
            self.stamp("vocab")
            path = os.path.join(self.layout.data, NEWS_FILE)
            if not os.path.isfile(path):
                raise InputError(f"no {path}: run the `vocab` stage (or `run`) first")
            with open(path, encoding="utf-8") as fh:
                self._news = [line.rstrip("\n") for line in fh if line.strip()]
        return self._news

    def tokenizer(self) -> RoFormerTokenizer:
        """The tokenizer the ``vocab`` stage saved."""
        if self._tokenizer is None:
            self.stamp("vocab")
            if not os.path.isfile(os.path.join(self.layout.tokenizer, "vocab.txt")):
                raise InputError(f"no tokenizer in {self.layout.tokenizer}: run the `vocab` stage (or `run`) first")
            self._tokenizer = RoFormerTokenizer.from_pretrained(self.layout.tokenizer)
        return self._tokenizer

    def rows(self, name: str) -> list[np.ndarray]:
        """Token rows of a split (``train``, ``validation``, ``test``) or of ``news``."""
        if name not in self._rows:
            texts = self.news() if name == "news" else self.split()[name].texts
            # cut where the `vocab` stage said (its --max-length is the tokenizer's model_max_length)
            tokenizer = self.tokenizer()
            self._rows[name] = text.encode(tokenizer, texts, tokenizer.model_max_length, desc=f"tokenizing {name}")
        return self._rows[name]


# -- 1 · vocabulary -------------------------------------------------------------------------------
def stage_vocab(ws: Workspace) -> dict:
    """Split the reviews, pick People's Daily sentences, build the vocabulary, tokenize everything.

    Example:
        >>> stage_vocab(Workspace(Settings(out="runs/demo")))["vocab_size"]  # doctest: +SKIP
        8000
    """
    s, layout = ws.settings, ws.layout
    ws._started("vocab")
    split = data.load_split(s.seed, s.max_examples)
    news = data.news_sentences(limit=s.news_sentences)
    for name, part in split.items():
        data.write_jsonl(layout.split(name), part)
    atomic_write_text(os.path.join(layout.data, NEWS_FILE), "".join(t + "\n" for t in news))
    print(table(["split", "reviews", "negative", "positive"],
                [[name, len(part), *part.counts()] for name, part in split.items()]))
    print(f"People's Daily (1998-01): {len(news):,} sentences for the vocabulary and the masked-LM pass")

    started = time.perf_counter()
    # the training reviews and the news only: validation and test text stays unseen
    tokenizer = text.build_tokenizer(split["train"].texts + news, s.vocab_size, max_length=s.max_length)
    tokenizer.save_pretrained(layout.tokenizer)
    print(f"vocabulary: {tokenizer.vocab_size:,} tokens (characters first, then frequent rjieba words) "
          f"built in {time.perf_counter() - started:.1f}s -> {layout.tokenizer}")

    ws._split, ws._news, ws._tokenizer, ws._rows = split, news, tokenizer, {}
    started = time.perf_counter()
    stats = []
    for name in (*data.SPLITS, "news"):
        rows = ws.rows(name)
        lengths = np.array([len(r) for r in rows])
        unk = sum(int((r == tokenizer.unk_token_id).sum()) for r in rows) / max(1, int(lengths.sum()))
        stats.append([name, len(rows), float(lengths.mean()), int(np.median(lengths)),
                      float((lengths >= s.max_length).mean()), unk])
    print(f"tokenized {sum(r[1] for r in stats):,} texts in {time.perf_counter() - started:.1f}s (batch path)")
    print(table(["part", "texts", "mean tokens", "median", f"cut at {s.max_length}", "[UNK] rate"], stats))
    report = {"splits": {n: {"size": len(p), "counts": p.counts()} for n, p in split.items()},
              "news_sentences": len(news), "vocab_size": tokenizer.vocab_size, "tokenizer": layout.tokenizer,
              "tokens": {r[0]: {"texts": r[1], "mean": r[2], "median": r[3], "truncated": r[4], "unk": r[5]}
                         for r in stats}}
    write_json(layout.report("vocab"), report)
    ws._finished("vocab", [layout.data, layout.tokenizer, layout.report("vocab")],
                 built_from=built_from("vocab", s))
    return report


# -- 2 · training ---------------------------------------------------------------------------------
def _trainer(backend: str):
    if backend == "keras":
        from roformer_demo import train_keras as module
    elif backend == "torch":
        from roformer_demo import train_torch as module
    else:
        from roformer_demo import train_flax as module
    return module


def stage_train(ws: Workspace, backend: str | None = None, resume: bool = False) -> dict:
    """Masked-LM pass (``mlm_steps`` > 0), then the classifier, in ``backend`` (default: the settings').

    In Keras each pass backs itself up as it trains (``OUT/checkpoints/<pass>``, kept until the
    stage is complete); with ``resume`` a pass carries on from its newest backup, to the same
    weights, and a finished pass is not trained again. Without it, backups of an earlier run
    are removed first. PyTorch and Flax passes start from the beginning.

    Example:
        >>> stage_train(Workspace(Settings(out="runs/demo")), "torch")["classifier"]["steps"]  # doctest: +SKIP
        870
    """
    s, layout = ws.settings, ws.layout
    backend = check_backend(backend or s.backend)
    ws._started("train")
    checkpoints = os.path.join(layout.root, CHECKPOINTS)
    if not resume:
        shutil.rmtree(checkpoints, ignore_errors=True)

    def backed_up(name: str) -> dict:
        # the backups are only for this backend's trainer, and only for these settings (see `run --resume`)
        return {"backup": os.path.join(checkpoints, f"train-{name}")} if backend == "keras" else {}

    tokenizer = ws.tokenizer()
    config = s.model_config(tokenizer.vocab_size)
    trainer = _trainer(backend)
    report: dict = {"backend": backend, "config": config.to_dict()}
    init = None
    if s.mlm_steps:
        news = ws.rows("news")
        held_out = max(16, len(news) // 20)
        # the news and the training reviews: the words the classifier will need get trained too
        task = Task("masked_lm", config, tokenizer, news[:-held_out] + ws.rows("train"), news[-held_out:])
        recipe = Recipe(max_steps=s.mlm_steps, batch_size=s.batch_size, learning_rate=s.learning_rate, seed=s.seed)
        print(f"masked-LM pass: {s.mlm_steps} steps of {s.batch_size} on People's Daily + training reviews "
              f"({backend})")
        _, history = trainer.train(task, recipe, init=None, out=layout.mlm, **backed_up("mlm"))
        report["mlm"] = history.to_dict()
        init = layout.mlm
        print("the classifier starts from this masked LM's encoder; its head is new")
    split = ws.split()
    task = Task("sequence_classification", config, tokenizer, ws.rows("train"), ws.rows("validation"),
                split["train"].labels, split["validation"].labels)
    recipe = Recipe(epochs=s.epochs, max_steps=s.max_steps, batch_size=s.batch_size, learning_rate=s.learning_rate,
                    seed=s.seed)
    print(f"sentiment classifier: {len(task.train_rows):,} reviews, {s.epochs} epoch(s), batch {s.batch_size}, "
          f"validation each epoch ({backend})")
    _, history = trainer.train(task, recipe, init=init, out=layout.classifier, **backed_up("classifier"))
    report["classifier"] = history.to_dict()
    report["parameters"] = _parameters(layout.classifier)
    write_json(layout.report("train"), report)
    # with --mlm-steps 0, OUT/mlm may hold an older run's masked LM: it is not stamped as this run's
    ws._finished("train", ([layout.mlm] if s.mlm_steps else []) + [layout.classifier, layout.report("train")],
                 inputs=["vocab"], built_from={"backend": backend, **built_from("train", s)})
    shutil.rmtree(os.path.join(layout.root, CHECKPOINTS), ignore_errors=True)  # the stage is complete
    return report


def _parameters(folder: str) -> int:
    store = Checkpoint(folder)
    return int(sum(np.prod(store.shape(n)) for n in store.names()))


# -- 3 · the checkpoint ---------------------------------------------------------------------------
def stage_save(ws: Workspace) -> dict:
    """List the saved checkpoint folders and check each reads back as a canonical checkpoint.

    Example:
        >>> sorted(stage_save(Workspace(Settings(out="runs/demo"))))  # doctest: +SKIP
        ['classifier', 'masked LM']
    """
    ws._started("save")
    trained = ws.stamp("train")
    rows, report = [], {}
    for name, folder in (("classifier", ws.layout.classifier), ("masked LM", ws.layout.mlm)):
        if not stamps.stamped_folder(trained, ws.layout, folder):
            continue
        check_checkpoint(folder)
        store = Checkpoint(folder)
        files = sorted(os.listdir(folder))
        size = sum(os.path.getsize(os.path.join(folder, f)) for f in files)
        rows.append([name, folder, len(store.names()), f"{size / 1e6:.1f} MB", ", ".join(files)])
        report[name] = {"folder": folder, "tensors": len(store.names()), "files": files, "bytes": size}
    if not rows:
        raise InputError(f"no checkpoint under {ws.layout.root}: run the `train` stage (or `run`) first")
    print(table(["model", "folder", "tensors", "size", "files"], rows))
    write_json(ws.layout.report("save"), report)
    ws._finished("save", [ws.layout.report("save")], inputs=["train"])
    return report


# -- 4 · evaluation -------------------------------------------------------------------------------
def stage_eval(ws: Workspace, backend: str = "torch", checkpoint: str | None = None) -> dict:
    """Test accuracy and F1 of the classifier in ``backend``, the baseline, and example sentences.

    Example:
        >>> stage_eval(Workspace(Settings(out="runs/demo")), "keras")["beats_baseline"]  # doctest: +SKIP
        True
    """
    s, layout = ws.settings, ws.layout
    check_backend(backend)
    ws._started("eval")
    # the classifier must have been trained on this split, or test reviews may have been training ones
    trained = ws.stamp("train") if checkpoint is None else None
    split = ws.split()
    folder = check_checkpoint(checkpoint or layout.classifier)
    runner = load_runner(backend, folder, "sequence_classification")
    tokenizer = check_tokenizer(RoFormerTokenizer.from_pretrained(folder), runner.config, folder)
    rows = text.encode(tokenizer, split["test"].texts, tokenizer.model_max_length, desc="tokenizing test")
    logits = all_logits(runner, rows, tokenizer.pad_token_id)
    test = scores(split["test"].labels, logits.argmax(-1))

    started = time.perf_counter()
    model, validation = fit_baseline(ws.rows("train"), split["train"].labels, ws.rows("validation"),
                                     split["validation"].labels, ws.tokenizer().vocab_size,
                                     ignore=ws.tokenizer().all_special_ids, seed=s.seed)
    base = scores(split["test"].labels, model.predict(ws.rows("test")))
    baseline_seconds = time.perf_counter() - started
    print(table(["model", "test accuracy", "F1 (positive)", "macro F1"],
                [[f"RoFormer ({backend})", test["accuracy"], test["f1"], test["macro_f1"]],
                 ["baseline: bag-of-words logistic regression", base["accuracy"], base["f1"], base["macro_f1"]]]))
    margin = test["accuracy"] - base["accuracy"]
    print(f"{len(rows):,} held-out reviews; the RoFormer is {abs(margin) * 100:.1f} points "
          f"{'above' if margin > 0 else 'BELOW'} the baseline (L2 {model.l2:g} chosen on validation, "
          f"fitted in {baseline_seconds:.1f}s)")

    probs = classify(runner, tokenizer, list(EXAMPLES))
    labels = [runner.config.id2label[i] for i in range(runner.config.num_labels)]
    print(table(["sentence", *(f"P({name})" for name in labels), "label"],
                [[t, *p.tolist(), labels[int(p.argmax())]] for t, p in zip(EXAMPLES, probs)]))
    filled = []
    if trained is not None and stamps.stamped_folder(trained, layout, layout.mlm):
        mlm_folder = check_checkpoint(layout.mlm)
        mlm = load_runner(backend, mlm_folder, "masked_lm")
        mlm_tokenizer = check_tokenizer(RoFormerTokenizer.from_pretrained(mlm_folder), mlm.config, mlm_folder)
        filled = fill_mask(mlm, mlm_tokenizer, list(MASK_EXAMPLES), top_k=3)
        print(f"fill-mask with the masked LM of the short pre-training pass ({layout.mlm}):")
        print(table(["text", "top 3 for [MASK]"],
                    [[f.text, "  ".join(f"{t} {p:.3f}" for t, p in f.candidates[0])] for f in filled]))
    report = {"backend": backend, "checkpoint": folder, "test": test, "test_size": len(rows),
              "baseline": {"name": "bag-of-words logistic regression", "l2": model.l2, "validation": validation,
                           "test": base},
              "beats_baseline": bool(margin > 0),
              "examples": [{"text": t, "probabilities": dict(zip(labels, p.tolist()))}
                           for t, p in zip(EXAMPLES, probs)],
              "fill_mask": [{"text": f.text, "candidates": f.candidates} for f in filled]}
    write_json(layout.report("eval"), report)
    ws._finished("eval", [layout.report("eval")], inputs=["vocab"] + (["train"] if trained else []),
                 built_from={"backend": backend, "checkpoint": folder})
    return report


# -- 5 · Flax -------------------------------------------------------------------------------------
def stage_flax(ws: Workspace) -> dict:
    """Flax logits against PyTorch and Keras on the test reviews, then pmap data-parallel steps.

    Example:
        >>> stage_flax(Workspace(Settings(out="runs/demo")))["same_predictions"]  # doctest: +SKIP
        True
    """
    import jax

    s, layout = ws.settings, ws.layout
    ws._started("flax")
    ws.stamp("train")
    split = ws.split()
    folder = check_checkpoint(layout.classifier)
    tokenizer = RoFormerTokenizer.from_pretrained(folder)
    rows = text.encode(tokenizer, split["test"].texts, tokenizer.model_max_length, desc="tokenizing test")
    length = text.round_length(max(len(r) for r in rows))
    logits = {}
    for backend in ("torch", "keras", "flax"):
        runner = load_runner(backend, folder, "sequence_classification")
        check_tokenizer(tokenizer, runner.config, folder)
        logits[backend] = all_logits(runner, rows, tokenizer.pad_token_id, length=length)
    predictions = {b: v.argmax(-1) for b, v in logits.items()}
    pairs = [("flax", "torch"), ("flax", "keras"), ("keras", "torch")]
    parity = []
    for a, b in pairs:
        diff = float(np.abs(logits[a] - logits[b]).max())
        prob_diff = float(np.abs(softmax(logits[a]) - softmax(logits[b])).max())
        same = float((predictions[a] == predictions[b]).mean())
        parity.append({"a": a, "b": b, "max_abs_logit_diff": diff, "max_abs_prob_diff": prob_diff,
                       "same_predictions": same})
    print(f"logits of the {len(rows):,} test reviews (padded to {length}) in each backend:")
    print(table(["backend", "vs", "max |Δ logit|", "max |Δ probability|", "same predictions"],
                [[p["a"], p["b"], p["max_abs_logit_diff"], p["max_abs_prob_diff"],
                  f"{p['same_predictions'] * 100:.2f}%"] for p in parity]))
    all_same = all(p["same_predictions"] == 1.0 for p in parity)
    print("the three backends give the same prediction for every test review" if all_same
          else "WARNING: the backends disagree on some predictions")

    from roformer_demo import train_flax

    devices = jax.local_device_count()
    report = {"parity": parity, "same_predictions": all_same, "examples": len(rows), "devices": devices,
              "platform": jax.default_backend()}
    if s.flax_steps:
        task = Task("sequence_classification", s.model_config(tokenizer.vocab_size), tokenizer,
                    ws.rows("train"), ws.rows("validation"), split["train"].labels, split["validation"].labels)
        recipe = Recipe(max_steps=s.flax_steps, batch_size=s.batch_size, learning_rate=s.learning_rate / 10,
                        warmup_ratio=0.0, seed=s.seed + 1)
        batch = train_flax.global_batch_size(s.batch_size)
        print(f"continuing training in Flax: {s.flax_steps} pmap steps, global batch {batch} split over "
              f"{devices} {jax.default_backend().upper()} device(s) ({batch // devices} each), "
              f"gradients summed with lax.psum")
        _, history = train_flax.train(task, recipe, init=folder, out=layout.flax_continued,
                                      length=text.round_length(tokenizer.model_max_length))
        print(table(["step", "loss"], [[i + 1, loss] for i, loss in enumerate(history.losses)]))
        report["continued"] = {"history": history.to_dict(), "checkpoint": layout.flax_continued,
                               "global_batch": batch}
    write_json(layout.report("flax"), report)
    ws._finished("flax", ([layout.flax_continued] if s.flax_steps else []) + [layout.report("flax")],
                 inputs=["vocab", "train"], built_from=built_from("flax", s))
    return report


# -- 6 · conversion -------------------------------------------------------------------------------
def stage_convert(ws: Workspace) -> dict:
    """canonical -> Keras weights / Flax msgpack -> canonical, tensors compared; ``verify``'s table.

    Example:
        >>> stage_convert(Workspace(Settings(out="runs/demo")))["verify"]["ok"]  # doctest: +SKIP
        True
    """
    from roformer_convert import convert, verify

    layout = ws.layout
    ws._started("convert")
    ws.stamp("train")
    folder = check_checkpoint(layout.classifier)
    original = Checkpoint(folder)
    rows, report = [], {"round_trips": {}}
    for fmt in ("keras", "flax"):
        there = os.path.join(layout.converted, fmt)
        back = os.path.join(layout.converted, f"{fmt}-back")
        started = time.perf_counter()
        out = convert(folder, there, to=fmt, force=True)
        convert(there, back, to="canonical", force=True)
        returned = Checkpoint(back)
        diff = max(float(np.abs(np.asarray(original.get(n), np.float64)
                                - np.asarray(returned.get(n), np.float64)).max()) for n in original.names())
        same_names = sorted(original.names()) == sorted(returned.names())
        files = ", ".join(sorted(f for f in os.listdir(there) if not f.endswith(".json") and f != "vocab.txt"))
        rows.append([fmt, there, files, out.tensors, "yes" if same_names else "NO", diff,
                     f"{time.perf_counter() - started:.1f}s"])
        report["round_trips"][fmt] = {"folder": there, "back": back, "tensors": out.tensors,
                                      "same_names": same_names, "max_abs_diff": diff}
    print(table(["format", "folder", "weights", "tensors", "same names back", "max |Δ| back", "time"], rows))
    result = verify(folder, atol=1e-4)
    print(f"roformer-convert verify {folder}: max abs difference of the logits from {result.reference}")
    print(result.table())
    report["verify"] = {"ok": result.ok, "reference": result.reference, "atol": result.atol,
                        "rows": {k: {"status": st, "diffs": d} for k, (st, d) in result.rows.items()}}
    write_json(layout.report("convert"), report)
    ws._finished("convert", [os.path.join(layout.converted, fmt) for fmt in ("keras", "flax")]
                 + [os.path.join(layout.converted, f"{fmt}-back") for fmt in ("keras", "flax")]
                 + [layout.report("convert")], inputs=["train"])
    return report


# -- 7 · RoFormer-V2 -----------------------------------------------------------------------------
#: the backend that trains the V2 classifier (compiled model.fit: measured ~6x quicker per step than the PyTorch
#: loop on 2 CPU cores), then those that serve it
V2_TRAINER = "keras"
V2_SERVERS = ("torch", "flax")


def stage_v2(ws: Workspace) -> dict:
    """RoFormer-V2 (``Settings.v2_config``) trained from scratch on the same split for ``v2_steps`` steps in
    Keras, saved as a canonical checkpoint, then served in PyTorch and Flax: test scores next to the V1
    classifier and the baseline of the ``eval`` stage, and the logits compared across the three backends.

    Example:
        >>> report = stage_v2(Workspace(Settings(out="runs/demo")))  # doctest: +SKIP
        >>> report["config"]["norm_type"], report["max_abs_logit_diff"] < 1e-4  # doctest: +SKIP
        ('rms_norm', True)
    """
    s, layout = ws.settings, ws.layout
    ws._started("v2")
    ws.stamp("eval")  # the V1 and baseline scores it is compared with
    with open(layout.report("eval"), encoding="utf-8") as fh:
        v1 = json.load(fh)
    split = ws.split()
    tokenizer = ws.tokenizer()
    config = s.v2_config(tokenizer.vocab_size)
    task = Task("sequence_classification", config, tokenizer, ws.rows("train"), ws.rows("validation"),
                split["train"].labels, split["validation"].labels)
    # enough epochs that exactly v2_steps steps run (Recipe stops at max_steps)
    epochs = -(-s.v2_steps // task.steps_per_epoch(s.batch_size))
    recipe = Recipe(epochs=epochs, max_steps=s.v2_steps, batch_size=s.batch_size, learning_rate=s.learning_rate,
                    seed=s.seed)
    print(f"RoFormer-V2 classifier (rms_norm, no biases, relu) from scratch: {s.v2_steps} steps of {s.batch_size} "
          f"on {len(task.train_rows):,} reviews ({V2_TRAINER})")
    _, history = _trainer(V2_TRAINER).train(task, recipe, init=None, out=layout.classifier_v2)

    folder = check_checkpoint(layout.classifier_v2, "sequence_classification")
    saved = Checkpoint(folder).config
    if (saved.norm_type, saved.use_bias, saved.hidden_act) != ("rms_norm", False, "relu"):
        raise CheckpointError(f"{folder}/config.json does not read back as a RoFormer-V2 config (norm_type "
                              f"{saved.norm_type!r}, use_bias {saved.use_bias}, hidden_act {saved.hidden_act!r})")
    served = RoFormerTokenizer.from_pretrained(folder)
    rows = text.encode(served, split["test"].texts, served.model_max_length, desc="tokenizing test")
    length = text.round_length(max(len(r) for r in rows))
    logits = {}
    for backend in (V2_TRAINER, *V2_SERVERS):
        runner = load_runner(backend, folder, "sequence_classification")
        check_tokenizer(served, runner.config, folder)
        logits[backend] = all_logits(runner, rows, served.pad_token_id, length=length)
    labels = split["test"].labels
    test = {b: scores(labels, v.argmax(-1)) for b, v in logits.items()}
    parity = [{"a": a, "b": V2_TRAINER, "max_abs_logit_diff": float(np.abs(logits[a] - logits[V2_TRAINER]).max()),
               "same_predictions": float((logits[a].argmax(-1) == logits[V2_TRAINER].argmax(-1)).mean())}
              for a in V2_SERVERS]
    worst = max(p["max_abs_logit_diff"] for p in parity)
    base = v1["baseline"]["test"]
    print(table(["model", "test accuracy", "F1 (positive)", "macro F1"],
                [[f"RoFormer-V2 ({V2_TRAINER}, served in {b})", r["accuracy"], r["f1"], r["macro_f1"]]
                 for b, r in test.items()]
                + [[f"RoFormer V1 ({v1['backend']})", *(v1["test"][k] for k in ("accuracy", "f1", "macro_f1"))],
                   ["baseline: bag-of-words logistic regression", base["accuracy"], base["f1"], base["macro_f1"]]]))
    print(table(["served in", "vs", "max |Δ logit|", "same predictions"],
                [[p["a"], p["b"], p["max_abs_logit_diff"], f"{p['same_predictions'] * 100:.2f}%"] for p in parity]))
    report = {"backend": V2_TRAINER, "served": list(V2_SERVERS), "checkpoint": folder, "config": saved.to_dict(),
              "parameters": _parameters(folder), "history": history.to_dict(), "test": test[V2_TRAINER],
              "served_test": test, "test_size": len(rows), "parity": parity, "max_abs_logit_diff": worst,
              "v1": {"backend": v1["backend"], "test": v1["test"]}, "baseline": {"test": base}}
    write_json(layout.report("v2"), report)
    ws._finished("v2", [layout.classifier_v2, layout.report("v2")], inputs=["vocab", "eval"],
                 built_from={"backend": V2_TRAINER, **built_from("v2", s)})
    return report


# -- the whole run --------------------------------------------------------------------------------
STAGES = (("vocab", "vocabulary and tokenization"), ("train", "training ({backend}: model.fit)"),
          ("save", "the canonical checkpoint"), ("eval", "PyTorch: test accuracy, baseline, examples"),
          ("flax", "Flax: parity with PyTorch and Keras, pmap data-parallel steps"),
          ("convert", "roformer_convert: round trips and verify"),
          ("v2", "RoFormer-V2: trained in Keras, served in PyTorch and Flax"))


def completed(ws: Workspace, stage: str) -> dict | None:
    """The report of ``stage`` when a run into the same folder finished it with these settings and
    its outputs (and those it was built from) are still in place; None otherwise.

    Example:
        >>> completed(Workspace(Settings(out="/nonexistent")), "vocab") is None
        True
    """
    try:
        stamp = stamps.require(ws.layout, stage)
    except InputError:
        return None
    wanted = built_from(stage, ws.settings)
    if stage == "train":
        wanted["backend"] = ws.settings.backend
    if stage == "eval":
        wanted["backend"] = "torch"
    if any(stamp["built_from"].get(k) != v for k, v in wanted.items()):
        return None
    try:
        with open(ws.layout.report(stage), encoding="utf-8") as fh:
            report = json.load(fh)
    except (OSError, ValueError):
        return None
    ws._stamps[stage] = stamp
    return report


def run(settings: Settings, resume: bool = False) -> dict:
    """Every stage in order, then the summary (printed, and written to ``summary.txt`` / ``metrics.json``).

    With ``resume`` (``run --resume``, after a run into the same folder was interrupted), a stage
    whose outputs are complete for these settings is not run again, and the stage that was
    interrupted carries on from its training checkpoint where it has one (Keras training).

    Example: see the module docstring.
    """
    ws = Workspace(settings)
    times: dict[str, float] = {}
    reports: dict[str, dict] = {}
    functions = {"vocab": stage_vocab, "train": lambda w: stage_train(w, resume=resume), "save": stage_save,
                 "eval": lambda w: stage_eval(w, "torch"), "flax": stage_flax, "convert": stage_convert,
                 "v2": stage_v2}
    started = time.perf_counter()
    for number, (name, title) in enumerate(STAGES, 1):
        banner(number, title.format(backend=settings.backend))
        done = completed(ws, name) if resume else None
        if done is not None:
            reports[name], times[name] = done, 0.0
            print(f"({name}: complete from an earlier run, not run again)")
            continue
        with Timer(times, name):
            reports[name] = functions[name](ws)
        print(f"({name}: {times[name]:.0f}s)")
    times["total"] = time.perf_counter() - started
    summary = summarize(settings, reports, times)
    print("\n" + summary)
    atomic_write_text(ws.layout.summary, summary + "\n")
    write_json(ws.layout.metrics, {"settings": settings.to_dict(), "seconds": times, **reports})
    return reports


def summarize(settings: Settings, reports: dict, times: dict) -> str:
    """The closing summary: what was trained, where the files are, accuracies, parity, time per stage.

    Example:
        >>> print(summarize(settings, reports, times))  # doctest: +SKIP
        == summary ==
        trained: RoFormerForSequenceClassification, 2 layer(s), hidden 128, ...
    """
    layout = settings.layout
    train, ev, fx, cv = reports["train"], reports["eval"], reports["flax"], reports["convert"]
    config = train["config"]
    classifier = train["classifier"]
    lines = ["== summary ==",
             f"trained: RoFormerForSequenceClassification, {config['num_hidden_layers']} layer(s), hidden "
             f"{config['hidden_size']}, {config['num_attention_heads']} heads, vocabulary {config['vocab_size']:,}, "
             f"{train['parameters']:,} parameters; {classifier['steps']} {train['backend']} steps on "
             f"{reports['vocab']['splits']['train']['size']:,} reviews"
             + (f" after {train['mlm']['steps']} masked-LM steps" if "mlm" in train else ""),
             f"validation accuracy by epoch: "
             + ", ".join(f"{e.get('val_accuracy', float('nan')):.3f}" for e in classifier["epochs"])]
    base = ev["baseline"]["test"]
    lines.append(f"test ({ev['test_size']:,} reviews): RoFormer accuracy {ev['test']['accuracy']:.3f}, "
                 f"F1 {ev['test']['f1']:.3f} | baseline (bag-of-words logistic regression) accuracy "
                 f"{base['accuracy']:.3f}, F1 {base['f1']:.3f} -> "
                 + ("beats the baseline" if ev["beats_baseline"] else "does NOT beat the baseline"))
    worst = max(p["max_abs_logit_diff"] for p in fx["parity"])
    lines.append(f"parity: max |Δ logit| across torch/keras/flax {worst:.1e}; same predictions on every test "
                 f"review: {'yes' if fx['same_predictions'] else 'NO'}; verify "
                 f"{'ok' if cv['verify']['ok'] else 'FAILED'}; round trips "
                 + ", ".join(f"{k} max |Δ| {v['max_abs_diff']:.1e}" for k, v in cv["round_trips"].items()))
    if "continued" in fx:
        losses = fx["continued"]["history"]["losses"]
        lines.append(f"flax: {len(losses)} pmap steps on {fx['devices']} device(s), loss {losses[0]:.4f} -> "
                     f"{losses[-1]:.4f}")
    v2 = reports.get("v2")
    if v2 is not None:
        lines.append(f"RoFormer-V2 (rms_norm, no biases, relu; {v2['history']['steps']} {v2['backend']} steps from "
                     f"scratch, {v2['parameters']:,} parameters): test accuracy {v2['test']['accuracy']:.3f}, F1 "
                     f"{v2['test']['f1']:.3f} | V1 {v2['v1']['test']['accuracy']:.3f} / {v2['v1']['test']['f1']:.3f} "
                     f"| baseline {v2['baseline']['test']['accuracy']:.3f} / {v2['baseline']['test']['f1']:.3f}; "
                     f"served in {', '.join(v2['served'])}: max |Δ logit| {v2['max_abs_logit_diff']:.1e}")
    lines.append("files: " + ", ".join(f"{k} {v}" for k, v in (
        ("classifier", layout.classifier), ("masked LM", layout.mlm if "mlm" in train else None),
        ("V2 classifier", layout.classifier_v2 if v2 is not None else None),
        ("tokenizer", layout.tokenizer), ("data split", layout.data), ("converted", layout.converted),
        ("reports", layout.reports)) if v))
    lines.append("time: " + ", ".join(f"{k} {v:.0f}s" for k, v in times.items())
                 + f" ({os.cpu_count()} CPUs, {platform.machine()})")
    lines.append(f"try: ./run main predict \"质量很好，推荐\" --backend flax --out {settings.out}   |   "
                 f"./run main fill-mask \"今天[MASK]气很好\" --backend keras --out {settings.out}")
    return "\n".join(lines)


__all__ = ["Workspace", "run", "completed", "built_from", "BUILT_FROM", "stage_vocab", "stage_train", "stage_save",
           "stage_eval", "stage_flax", "stage_convert", "stage_v2", "summarize", "EXAMPLES", "MASK_EXAMPLES"]
