"""cnn_flax: the classic image-classification CNNs in JAX/Flax Linen, with a sharded training loop."""
