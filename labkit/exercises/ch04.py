"""Chapter 4 (the article's code and its repair): the exercises and, for teachers, their solutions.

No TensorFlow here: `labkit.check` imports every chapter's exercises, also in chapters that never start TensorFlow.
"""

from labkit.check import exercise


@exercise(
    chapter=4,
    question="Data-parallel SGD with a global batch of 64 examples on 4 workers: how many examples does each "
    "worker's gradient see in one step?",
    why="The global batch is split into p equal shards, one per worker; each worker computes the mean gradient of "
    "its own shard only, and the all-reduce (then dividing by p) turns the p shard means into the mean over the "
    "whole batch.",
    solution="answer = 64 // 4",
    mistakes=[(64, "That is the whole batch: no worker sees it all. Each sees its shard, one p-th of it.")],
)
def examples_per_worker():
    return 64 / 4


@exercise(
    chapter=4,
    question="How many floats does each worker all-reduce per step when it trains the article's MLP "
    "(784 → 100 → 100 → 10, Dense layers with biases)?",
    why="There is one gradient entry per trainable number: each Dense layer has inputs × outputs weights plus one "
    "bias per output, and the simple version packs all of them into a single flat vector before the all-reduce.",
    solution="answer = (784 * 100 + 100) + (100 * 100 + 100) + (100 * 10 + 10)",
    mistakes=[(89400, "Those are the weight matrices only: the biases have gradients too.")],
)
def floats_per_allreduce():
    layers = [(784, 100), (100, 100), (100, 10)]
    return sum(n_in * n_out + n_out for n_in, n_out in layers)


@exercise(
    chapter=4,
    question="The article's ProcessPoolExecutor version, with every line repaired so that it runs, trains on 4 "
    "batches. Of the parent model's 89,610 numbers, how many have changed when it finishes?",
    why="A process pool pickles each task's arguments on their way to a worker, so every task trains its own copy "
    "of the model. The copies are trained, returned nowhere and thrown away; nothing is sent back to the parent's "
    "model, and no step combines what the workers learnt.",
    solution="answer = 0",
    mistakes=[(89610, "The workers' copies changed; look at the parent's own model.")],
)
def parent_weights_changed():
    return 0


@exercise(
    chapter=4,
    question="Plain SGD on p = 4 workers: if the workers all-reduced their shard gradients but forgot to divide by "
    "p, how many times larger would each update be than one worker's update with the combined batch?",
    why="The all-reduce adds the p shard means; the gradient of the combined batch is their mean. Forgetting the "
    "division multiplies the gradient, and with SGD the update η·g, by p: the same as a learning rate p times "
    "larger. (Adam divides by the gradient's own scale, so it would hide much of the mistake.)",
    solution="answer = 4",
    mistakes=[(1, "The sum of p shard means is not their mean.")],
)
def forgot_to_divide():
    return 4
