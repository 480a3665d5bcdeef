"""Models: the built-in zoo, training, evaluation, pruning and export."""
