"""Chapter 4 (the article's code and its repair): the exercises and, for teachers, their solutions.

No TensorFlow here: `labkit.check` imports every chapter's exercises, also in chapters that never start TensorFlow.
"""

from labkit.lessons.check import exercise


@exercise(
    chapter=4,
    question="Data-parallel SGD with a global batch of 96 examples on p = 3 workers: how many examples does each "
    "worker's gradient see in one step?",
    why="The global batch is split into p equal shards, one per worker: 96 / 3 = 32. Each worker computes the mean "
    "gradient of its own shard only, and the all-reduce (then dividing by p) turns the p shard means into the mean "
    "over the whole batch of 96.",
    solution="answer = 96 // 3",
    hint="Look at the formula of section 4: what is the size of 'shard r'?",
    mistakes=[
        (96, "That is the whole global batch: no worker sees it all. Each sees its shard, one p-th of it."),
        (288, "That treats 96 as each worker's batch; here 96 is the global batch, shared by the 3 workers."),
    ],
)
def examples_per_worker():
    global_batch, p = 96, 3
    return global_batch / p


@exercise(
    chapter=4,
    question="A wider MLP, 784 → 256 → 128 → 10 (three Dense layers with biases), is trained data-parallel with the "
    "simple step of section 4. How many floats does each worker all-reduce per step?",
    why="There is one gradient entry per trainable number: each Dense layer has inputs × outputs weights plus one "
    "bias per output, (784·256 + 256) + (256·128 + 128) + (128·10 + 10) = 235,146, and the simple step packs all of "
    "them into a single flat vector before the all-reduce.",
    solution="answer = (784 * 256 + 256) + (256 * 128 + 128) + (128 * 10 + 10)",
    hint="One gradient entry per trainable number: count each layer's weights and biases.",
    mistakes=[
        (234752, "Those are the weight matrices only: the biases are trained too, so they have gradients."),
        (940584, "That is in bytes (4 per float32); the question asks for the number of floats."),
    ],
)
def floats_per_allreduce():
    layers = [(784, 256), (256, 128), (128, 10)]
    return sum(n_in * n_out + n_out for n_in, n_out in layers)


@exercise(
    chapter=4,
    question="Suppose the repaired process-pool program is changed so that each task returns its trained copy's "
    "weights, and when the pool has finished the parent loads the returned weights into its model, one result "
    "after another. It runs on 8 batches, one optimiser step per task. How many optimiser steps of training does "
    "the parent's model carry at the end?",
    why="Every task receives a pickled copy of the parent's model, and the parent's model does not change while the "
    "pool runs, so all 8 copies start from the untrained weights and take one step each. Loading each result in "
    "turn overwrites the one before: the parent ends with the last copy, one step from the start. Nothing adds "
    "the tasks' updates together; that is what the all-reduce of section 4 does.",
    solution="answer = 1",
    hint="Ask from which weights each task's copy starts: when are the copies pickled, and when do results return?",
    mistakes=[
        (
            8,
            "That would need each task to start from the previous task's result; every copy is made from the "
            "parent's untrained weights.",
        ),
        (0, "The parent's weights are overwritten with a trained copy here, so it does carry some training."),
    ],
)
def parent_weights_changed():
    return 1  # the last overwrite: one step from the initial weights


@exercise(
    chapter=4,
    question="Plain SGD with η = 0.02 on p = 6 workers: the workers all-reduce their shard-mean gradients but forget "
    "to divide by p. Which learning rate is the run in effect using, compared with one worker on the combined batch?",
    why="The all-reduce adds the p shard means; the gradient of the combined batch is their mean. Forgetting the "
    "division multiplies the gradient, and with SGD the update η·g, by p: the same as a learning rate p·η = "
    "6 × 0.02 = 0.12. (Adam divides by the gradient's own running scale, so it would hide much of the mistake.)",
    solution="answer = 6 * 0.02",
    hint="Compare the sum of p shard means with the mean over the combined batch, then put it into η·g.",
    mistakes=[
        (0.02, "The sum of p shard means is not their mean: it is p times larger."),
        (0.02 / 6, "That divides by p where the forgotten division would have been; the sum is larger, not smaller."),
    ],
)
def forgot_to_divide():
    eta, p = 0.02, 6
    return eta * p  # η · (sum of p shard means) = (p η) · (their mean)
