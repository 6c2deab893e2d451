"""The main job: train, convert and serve a RoFormer across PyTorch, Keras and Flax on real Chinese text.

Run it as ``./run main`` (or ``python -m roformer_demo``); every stage is also a subcommand
(``vocab``, ``train``, ``eval``, ``flax``, ``convert``, ``predict``, ``fill-mask``), see
:mod:`roformer_demo.cli`. The stages live in :mod:`roformer_demo.pipeline`.

Example:
    >>> from roformer_demo.cli import main
    >>> main(["predict", "好", "--backend", "mxnet"])
    2
"""
