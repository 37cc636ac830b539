"""User code in the shape of TF's tutorial `distribute/custom_training` (no tfdist calls inside).

As the tutorial: a Sequential CNN without an input shape (its layers are first built inside
`strategy.run` in a `tf.function`), Adam and the checkpoint created under the scope, a
`reduction=None` loss averaged with `tf.nn.compute_average_loss`, metrics updated in the step,
`experimental_distribute_dataset`, a checkpoint restored into a new model without the strategy.
Keras 3 spellings (`reduction=None`, `reset_state`); the data are scikit-learn's 8x8 digits
scaled up to the tutorial's 28x28x1 (no download); shuffling and initial weights are seeded.
"""

import os

import keras
import numpy as np
import tensorflow as tf
from input_pipelines import digits as digits_data

BATCH_SIZE_PER_REPLICA = 64


def digits_28x28():
    """(train_images, train_labels), (test_images, test_labels); images 28x28x1 in [0, 1]."""
    raw_images, target = digits_data.load_raw()
    images = np.kron(raw_images, np.ones((3, 3)))  # 8x8 -> 24x24
    images = np.pad(images, ((0, 0), (2, 2), (2, 2)))[..., None] / np.float32(16)
    images = images.astype(np.float32)
    labels = target.astype(np.int64)
    return (images[:1500], labels[:1500]), (images[1500:], labels[1500:])


def create_model(with_input: bool = False):
    head = [keras.Input((28, 28, 1))] if with_input else []
    return keras.Sequential(head + [
        keras.layers.Conv2D(32, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 3, activation="relu"),
        keras.layers.MaxPooling2D(),
        keras.layers.Flatten(),
        keras.layers.Dense(64, activation="relu"),
        keras.layers.Dense(10),
    ])


def train(strategy, checkpoint_dir, epochs: int = 3, with_input: bool = False) -> dict:
    """Runs the tutorial's training and restore cells; returns what it prints, and the model."""
    keras.utils.set_random_seed(0)
    (train_images, train_labels), (test_images, test_labels) = digits_28x28()
    global_batch_size = BATCH_SIZE_PER_REPLICA * strategy.num_replicas_in_sync
    train_dataset = tf.data.Dataset.from_tensor_slices((train_images, train_labels)).shuffle(
        len(train_images), seed=0).batch(global_batch_size)
    test_dataset = tf.data.Dataset.from_tensor_slices((test_images, test_labels)).batch(
        global_batch_size)
    train_dist_dataset = strategy.experimental_distribute_dataset(train_dataset)
    test_dist_dataset = strategy.experimental_distribute_dataset(test_dataset)
    checkpoint_prefix = os.path.join(checkpoint_dir, "ckpt")

    with strategy.scope():
        loss_object = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)

        def compute_loss(labels, predictions):
            per_example_loss = loss_object(labels, predictions)
            return tf.nn.compute_average_loss(per_example_loss, global_batch_size=global_batch_size)

        test_loss = keras.metrics.Mean(name="test_loss")
        train_accuracy = keras.metrics.SparseCategoricalAccuracy(name="train_accuracy")
        test_accuracy = keras.metrics.SparseCategoricalAccuracy(name="test_accuracy")

    with strategy.scope():
        model = create_model(with_input)
        optimizer = keras.optimizers.Adam()
        checkpoint = tf.train.Checkpoint(optimizer=optimizer, model=model)

    def train_step(inputs):
        images, labels = inputs
        with tf.GradientTape() as tape:
            predictions = model(images, training=True)
            loss = compute_loss(labels, predictions)
        gradients = tape.gradient(loss, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables))
        train_accuracy.update_state(labels, predictions)
        return loss

    def test_step(inputs):
        images, labels = inputs
        predictions = model(images, training=False)
        t_loss = loss_object(labels, predictions)
        test_loss.update_state(t_loss)
        test_accuracy.update_state(labels, predictions)

    @tf.function
    def distributed_train_step(dataset_inputs):
        per_replica_losses = strategy.run(train_step, args=(dataset_inputs,))
        return strategy.reduce(tf.distribute.ReduceOp.SUM, per_replica_losses, axis=None)

    @tf.function
    def distributed_test_step(dataset_inputs):
        return strategy.run(test_step, args=(dataset_inputs,))

    history = []
    for epoch in range(epochs):
        total_loss = 0.0
        num_batches = 0
        for x in train_dist_dataset:
            total_loss += distributed_train_step(x)
            num_batches += 1
        train_loss = total_loss / num_batches
        for x in test_dist_dataset:
            distributed_test_step(x)
        if epoch % 2 == 0:
            checkpoint.save(checkpoint_prefix)
        history.append({
            "loss": float(train_loss),
            "accuracy": float(train_accuracy.result()),
            "test_loss": float(test_loss.result()),
            "test_accuracy": float(test_accuracy.result()),
        })
        test_loss.reset_state()
        train_accuracy.reset_state()
        test_accuracy.reset_state()

    # "Restore the latest checkpoint and test": a new model and optimizer, no strategy.
    eval_accuracy = keras.metrics.SparseCategoricalAccuracy(name="eval_accuracy")
    new_model = create_model(with_input)
    new_optimizer = keras.optimizers.Adam()
    test_dataset = tf.data.Dataset.from_tensor_slices((test_images, test_labels)).batch(
        global_batch_size)

    @tf.function
    def eval_step(images, labels):
        predictions = new_model(images, training=False)
        eval_accuracy(labels, predictions)

    checkpoint = tf.train.Checkpoint(optimizer=new_optimizer, model=new_model)
    checkpoint.restore(tf.train.latest_checkpoint(checkpoint_dir))
    for images, labels in test_dataset:
        eval_step(images, labels)
    return {"history": history, "restored_accuracy": float(eval_accuracy.result()),
            "model": model}
