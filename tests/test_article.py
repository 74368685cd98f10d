"""labkit.article: every failure chapter 4 shows is the one the article's code really meets, and the repaired
data-parallel step on p simulated workers equals one worker with the combined batch (and Keras's own step)."""

import numpy as np
import pytest

from labkit import comm, models
from labkit.lessons import article

tf = article.tf
keras = article.keras


@pytest.fixture(scope="module")
def tiny():
    rng = np.random.default_rng(0)
    return rng.random((256, 784), dtype=np.float32), rng.integers(0, 10, 256)


def test_quoted_code_keeps_the_articles_lines():
    code = article.SECTION3_CODE
    for line in (
        "logits = model.predict(batch_data)",
        "tf.keras.utils.shuffle(train_indices)",
        "data = ...  # 数据集合",
    ):
        assert line in code
    assert code.count("ProcessPoolExecutor(max_workers=4)") == 2
    assert list(article.pieces()) == [
        "imports",
        "构建模型",
        "定义损失函数和优化器",
        "构建分布式环境下训练函数",
        "加载数据集",
        "启动分布式环境下的训练函数",
    ]
    lines = lambda text: [line for line in text.splitlines() if line.strip()]  # noqa: E731
    assert lines("".join(article.pieces().values())) == lines(code)  # the pieces are the whole code, in order
    assert article.SECTION4_CODE.rstrip().endswith("tf.keras.preprocessing.image.resize")  # where the article stops


def test_run_snippet_reports_instead_of_raising():
    ns: dict = {}
    out = article.run_snippet("import warnings\nprint('hi')\nwarnings.warn('careful\\nmore')\nx = 1\n1 / 0", ns)
    assert not out.ok and out.error_type == "ZeroDivisionError" and out.message == "division by zero"
    assert out.stdout == "hi\n" and out.warnings == ["UserWarning: careful"] and ns["x"] == 1
    assert str(out) == "ZeroDivisionError: division by zero"
    assert article.run_snippet("y = 2", ns).ok and ns["y"] == 2
    assert len(article.first_line("x" * 500)) == 100


# (fixes applied, error type, words in the message) — the order in which the article's program fails
FAILURES = [
    (0, "TypeError", "ellipsis"),
    (1, "AttributeError", "shuffle"),
    (2, "TypeError", "integer scalar arrays"),
    (3, "ValueError", "No gradients provided"),
    (4, "NameError", "training_step"),
    (5, "ValueError", "Unknown variable"),
]


@pytest.mark.parametrize(("fixes", "error_type", "words"), FAILURES)
def test_each_fix_uncovers_the_next_failure(tiny, fixes, error_type, words):
    run = article.run_article(*tiny, fixes=fixes)
    assert (run.outcome.error_type, run.weights_changed) == (error_type, 0)
    assert words in run.outcome.message


def test_with_every_line_fixed_it_runs_and_the_parent_never_learns(tiny):
    run = article.run_article(*tiny, fixes=len(article.FIXES))
    assert run.outcome.ok, run.outcome
    assert run.pools == [0, 4]  # two pools opened; the outer one never given a task
    steps = [line for line in run.outcome.stdout.splitlines() if line.startswith("Step 1: Loss = ")]
    assert len(steps) == 4  # every task is step 1 of a fresh copy with a fresh optimiser
    assert (run.weights_changed, run.weights_total) == (0, 89_610)
    assert any("input_dim" in w for w in run.outcome.warnings)  # Keras 3 warns about the article's input_dim


def test_predict_inside_the_tape_records_no_gradient(tiny):
    x, y = tiny
    grads = article.predict_records_no_gradient(models.article_mlp(), x[:8], y[:8])
    assert len(grads) == 6
    assert all(by_predict is None for by_predict, _ in grads.values())
    assert all(by_call is not None and np.any(by_call.numpy() != 0) for _, by_call in grads.values())


def test_label_slice_selects_rows_of_images_not_labels():
    found = article.label_slice(n=256, batch_size=64, batch_number=1)
    assert found["as_written"].error_type == "TypeError"
    assert found["rows"] == [1, 65, 129, 193]  # every 64th row of the data: 4 images, not 64 labels


def test_missing_names_and_attributes():
    shuffle = article.run_snippet("tf.keras.utils.shuffle(range(3))", {"tf": tf})
    assert shuffle.error_type == "AttributeError" and "shuffle" in shuffle.message
    step = article.run_snippet("training_step.result().numpy()", {})
    assert (step.error_type, step.message) == ("NameError", "name 'training_step' is not defined")
    resize = article.run_snippet("x = tf.keras.preprocessing.image.resize", {"tf": tf})
    assert resize.error_type == "AttributeError" and "resize" in resize.message


def test_model_and_optimizer_pickle_on_keras_3():
    rows = article.pickle_report(models.article_mlp(), keras.optimizers.Adam())
    assert [(what, outcome.ok) for what, outcome, _ in rows] == [("model", True), ("optimizer", True)]
    assert rows[0][2] > 4 * 89_610  # the whole model, weights included, travels to every task


def test_apply_fixes_refuses_ambiguous_text():
    with pytest.raises(ValueError, match="occurs 2 times"):
        article.apply_fixes(article.SECTION3_CODE, [article.Fix("pool", "ProcessPoolExecutor(max_workers=4)", "x")])


@pytest.mark.slow
def test_real_worker_processes_train_copies(tiny):
    x, y = tiny
    results, parent_changed = article.copies_in_processes(models.article_mlp(), x[:64], y[:64], tasks=2, steps=1)
    assert parent_changed == 0
    assert len(results) == 2 and all(changed > 0 for _, changed in results)


def test_forking_tensorflow_is_refused(tiny):
    with pytest.raises(ValueError, match="never fork"):
        article.copies_in_processes(models.article_mlp(), *tiny, start_method="fork")


def _weights(model):
    return model.get_weights()


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
@pytest.mark.parametrize("p", [2, 4])
def test_p_workers_equal_one_worker_with_the_combined_batch(tiny, p, optimizer):
    x, y = tiny
    lr = 0.1 if optimizer == "sgd" else 1e-3
    sim = article.train_on_sim(x, y, p=p, steps=3, batch_size=32, optimizer=optimizer, learning_rate=lr)
    one, one_loss = article.train_one_worker(x, y, steps=3, batch_size=32, optimizer=optimizer, learning_rate=lr)
    keras_model = models.article_mlp(seed=0)  # independent reference: Keras's own training step
    keras_model.compile(optimizer=article.make_optimizer(optimizer, lr), loss="sparse_categorical_crossentropy")
    for idx in article.batches(len(x), 32, 3):
        keras_model.train_on_batch(x[idx], y[idx])
    first = _weights(sim.replicas[0])
    for replica in sim.replicas[1:]:  # every replica applied the same update: bit for bit the same weights
        assert all(np.array_equal(a, b) for a, b in zip(first, _weights(replica), strict=True))
    for reference in (one, keras_model):
        assert all(np.allclose(a, b, rtol=1e-5, atol=1e-6) for a, b in zip(first, _weights(reference), strict=True))
    assert not np.allclose(first[0], models.article_mlp(seed=0).get_weights()[0])  # and they did train
    assert np.allclose(sim.loss, one_loss, rtol=1e-5)
    assert len(sim.run.trace) == 3 * 2 * (p - 1) * p  # ring: 2(p−1) messages per rank per step


def test_unequal_shards_and_batches_are_refused(tiny):
    x, y = tiny
    model, opt = models.article_mlp(), article.make_optimizer()

    def uneven(c):
        n = 4 + c.rank
        return article.simple_data_parallel_step(model, opt, x[:n], y[:n], c)

    with pytest.raises(Exception, match="shard sizes differ"):
        comm.run(uneven, 2)
    with pytest.raises(ValueError, match="equal shards"):
        article.train_on_sim(x, y, p=3, steps=1, batch_size=32)
    with pytest.raises(ValueError, match="unknown optimizer"):
        article.make_optimizer("rmsprop")


def test_batches_cover_each_epoch_once():
    plan = article.batches(10, 4, steps=4, seed=0)
    assert [len(b) for b in plan] == [4, 4, 4, 4]
    assert len(set(np.concatenate(plan[:2]))) == 8  # within an epoch no example repeats; the short tail is dropped
