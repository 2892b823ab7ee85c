"""Pre-norm Transformer encoder block that can hand back its attention weights."""

from __future__ import annotations

import keras
from keras import layers


@keras.saving.register_keras_serializable(package="spondyscan")
class TransformerBlock(layers.Layer):
    """LayerNorm -> multi-head self-attention -> residual; LayerNorm -> MLP -> residual.

    Args:
        num_heads: attention heads.
        key_dim: size of each head's query/key (and value) projection.
        ff_dim: hidden units of the MLP (ReLU); the second MLP layer maps back to the token width.
        dropout: dropout on the attention weights and after the MLP (0 disables it).
        return_attention: also return the attention weights (N, heads, T, T), which attention
            rollout needs; the model graph only consumes the first output.
        epsilon: LayerNormalization epsilon.
    """

    def __init__(
        self,
        num_heads: int,
        key_dim: int,
        ff_dim: int,
        dropout: float = 0.0,
        return_attention: bool = False,
        epsilon: float = 1e-6,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.num_heads = int(num_heads)
        self.key_dim = int(key_dim)
        self.ff_dim = int(ff_dim)
        self.dropout = float(dropout)
        self.return_attention = bool(return_attention)
        self.epsilon = float(epsilon)
        self.norm1 = layers.LayerNormalization(epsilon=self.epsilon, name="norm1")
        self.attention = layers.MultiHeadAttention(
            num_heads=self.num_heads, key_dim=self.key_dim, dropout=self.dropout, name="mha"
        )
        self.norm2 = layers.LayerNormalization(epsilon=self.epsilon, name="norm2")
        self.ff1 = layers.Dense(self.ff_dim, activation="relu", name="ff1")
        self.ff2: layers.Dense | None = None  # its width is the token width, known at build
        self.ff_dropout = layers.Dropout(self.dropout, name="ff_dropout")

    def build(self, input_shape):
        dim = int(input_shape[-1])
        self.norm1.build(input_shape)
        self.attention.build(input_shape, input_shape)
        self.norm2.build(input_shape)
        self.ff1.build(input_shape)
        ff2 = layers.Dense(dim, name="ff2")
        ff2.build((*input_shape[:-1], self.ff_dim))
        self.ff2 = ff2

    def call(self, inputs, training=None):
        x = self.norm1(inputs)
        attended, scores = self.attention(x, x, return_attention_scores=True, training=training)
        x = inputs + attended
        assert self.ff2 is not None, "called before build"
        y = self.ff2(self.ff1(self.norm2(x)))
        x = x + self.ff_dropout(y, training=training)
        if self.return_attention:
            return x, scores
        return x

    def compute_output_shape(self, input_shape):
        shape = tuple(input_shape)
        if self.return_attention:
            return shape, (shape[0], self.num_heads, shape[1], shape[1])
        return shape

    def count_flops(self, input_shape) -> int:
        """Multiply-adds x2 of projections, attention products and MLP, per image."""
        tokens, dim = int(input_shape[1]), int(input_shape[-1])
        inner = self.num_heads * self.key_dim
        projections = 2 * tokens * (3 * dim * inner + inner * dim)
        attention = 2 * 2 * self.num_heads * tokens * tokens * self.key_dim
        softmax = 3 * self.num_heads * tokens * tokens
        mlp = 2 * tokens * (dim * self.ff_dim + self.ff_dim * dim)
        norms_and_residuals = tokens * dim * (2 * 5 + 2)
        return projections + attention + softmax + mlp + norms_and_residuals

    def get_config(self):
        config = super().get_config()
        config.update(
            num_heads=self.num_heads,
            key_dim=self.key_dim,
            ff_dim=self.ff_dim,
            dropout=self.dropout,
            return_attention=self.return_attention,
            epsilon=self.epsilon,
        )
        return config
