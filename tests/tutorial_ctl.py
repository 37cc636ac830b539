"""User code in the shape of the TF custom-training tutorials (no tfdist calls inside)."""

import keras
import numpy as np
import tensorflow as tf

GLOBAL_BATCH = 16


def train(strategy: tf.distribute.Strategy, steps: int = 3) -> list[float]:
    """Model, optimizer and metric under the scope; apply_gradients in strategy.run in a tf.function."""
    rng = np.random.default_rng(0)
    x = rng.random((64, 4), dtype=np.float32)
    y = rng.integers(0, 3, 64)
    with strategy.scope():
        model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
        optimizer = keras.optimizers.RMSprop(0.01)
        accuracy = keras.metrics.SparseCategoricalAccuracy()

    def dataset_fn(ctx):
        batch = ctx.get_per_replica_batch_size(GLOBAL_BATCH)
        return tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch)

    dist = strategy.distribute_datasets_from_function(dataset_fn)

    @tf.function
    def train_step(iterator):
        def step_fn(inputs):
            features, labels = inputs
            with tf.GradientTape() as tape:
                logits = model(features, training=True)
                per_example = keras.losses.sparse_categorical_crossentropy(
                    labels, logits, from_logits=True
                )
                loss = tf.nn.compute_average_loss(per_example, global_batch_size=GLOBAL_BATCH)
            grads = tape.gradient(loss, model.trainable_variables)
            optimizer.apply_gradients(zip(grads, model.trainable_variables))
            accuracy.update_state(labels, logits)
            return loss

        return strategy.reduce("SUM", strategy.run(step_fn, args=(next(iterator),)), axis=None)

    iterator = iter(dist)
    return [float(train_step(iterator)) for _ in range(steps)]
