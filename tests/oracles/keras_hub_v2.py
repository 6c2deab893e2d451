"""Oracle script: keras-hub 0.32's ``RoformerV2Backbone`` (Keras 3), run in ``.venv-oracle-v2``.

Run as ``KERAS_BACKEND=tensorflow|torch python keras_hub_v2.py`` with a JSON payload on stdin:
the canonical tensors of a RoFormer-V2 bare model (an ``.npz``, PyTorch layouts), its config,
and batches of ``token_ids`` / ``segment_ids``. The weights go into a backbone built to match
(its norms' scales stay at their initial ones, which is RoFormer-V2's parameter-free norm); the
last hidden states come back in the ``.npz`` named by the payload.

keras-hub derives the padding mask from ``token_ids != 0``; it has no mask input.
"""

import json
import sys

import numpy as np

import keras
import keras_hub


def main(payload):
    c = payload["config"]
    weights = dict(np.load(payload["weights"]))
    backbone = keras_hub.models.RoformerV2Backbone(
        vocabulary_size=c["vocab_size"], num_layers=c["num_hidden_layers"], num_heads=c["num_attention_heads"],
        hidden_dim=c["hidden_size"], intermediate_dim=c["intermediate_size"],
        head_size=c["hidden_size"] // c["num_attention_heads"], use_bias=False, activation=c["hidden_act"],
        dropout=0.0, num_segments=c["type_vocab_size"])
    backbone.token_embedding.embeddings.assign(weights["embeddings.word_embeddings.weight"])
    backbone.segment_embedding.embeddings.assign(weights["embeddings.token_type_embeddings.weight"])
    for i, layer in enumerate(backbone.transformer_layers):
        p = f"encoder.layer.{i}."
        pairs = {layer.attention_layer.q_dense: "attention.self.query", layer.attention_layer.k_dense:
                 "attention.self.key", layer.attention_layer.v_dense: "attention.self.value",
                 layer.attention_layer.o_dense: "attention.output.dense",
                 layer.feedforward_intermediate_dense: "intermediate.dense",
                 layer.feedforward_output_dense: "output.dense"}
        for dense, name in pairs.items():
            dense.kernel.assign(weights[p + name + ".weight"].T)  # Linear [out, in] -> Dense [in, out]
    out = {}
    for key, batch in payload["inputs"].items():
        hidden = backbone({"token_ids": np.asarray(batch["token_ids"], np.int32),
                           "segment_ids": np.asarray(batch["segment_ids"], np.int32)})
        out[key] = np.asarray(keras.ops.convert_to_numpy(hidden), np.float32)
    np.savez(payload["out"], **out)
    return {"backend": keras.backend.backend(), "epsilon": keras.backend.epsilon(), "outputs": sorted(out)}


if __name__ == "__main__":
    print(json.dumps(main(json.load(sys.stdin))))
