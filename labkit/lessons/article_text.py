"""The article's code, quoted verbatim from its sections 3 and 4 (for study: neither runs, and chapter 4 shows why).

Kept apart from `labkit.lessons.article`, which runs these pieces and repairs them, so that the quotation stays
exactly as the article prints it.
"""

# Quoted from the article, section 3 (核心算法原理…), for study: it does not run, and chapter 4 shows why.
SECTION3_CODE = """\
import tensorflow as tf
from tensorflow import keras
import concurrent.futures

# 构建模型
model = keras.Sequential([
    keras.layers.Dense(100, input_dim=784),
    keras.layers.Dense(100, activation='relu'),
    keras.layers.Dense(10, activation='softmax')
])

# 定义损失函数和优化器
loss_fn = tf.keras.losses.CategoricalCrossentropy()
optimizer = tf.keras.optimizers.Adam()

# 构建分布式环境下训练函数
def distributed_train(data, model, batch_size):
    train_indices = range(len(data))
    train_shuffle = tf.keras.utils.shuffle(train_indices)
    batched_indices = [train_shuffle[i:i + batch_size] for i in range(0, len(train_indices), batch_size)]

    with concurrent.futures.ProcessPoolExecutor(max_workers=4) as pool:
        futures = []
        for batch_index in batched_indices:
            batch_data = data[batch_index]
            batch_labels = data[train_indices[batch_index::batch_size]]

            futures.append(pool.submit(distributed_compute, batch_data, batch_labels, model))

        results = list(concurrent.futures.as_completed(futures))
        for future in results:
            training_step = future.result()
            print("Step {}: Loss = {}, Gradients = {}".format(training_step.global_step, training_step.loss, training_step.gradients))

def distributed_compute(batch_data, batch_labels, model):
    with tf.GradientTape() as tape:
        with tf.device("/cpu:0"):
            logits = model.predict(batch_data)
            loss = loss_fn(batch_labels, logits)
    grads = tape.gradient(loss, model.trainable_variables)
    optimizer.apply_gradients(zip(grads, model.trainable_variables))
    return training_step.result().numpy()

# 加载数据集
data = ...  # 数据集合
batch_size = 64

# 启动分布式环境下的训练函数
with concurrent.futures.ProcessPoolExecutor(max_workers=4) as pool:
    distributed_train(data, model, batch_size)
"""  # noqa: E501  (verbatim)

# Quoted from the article, section 4 (具体代码实例和详细解释说明), for study; the article breaks off mid-line.
SECTION4_CODE = """\
import tensorflow as tf
from tensorflow import keras
import concurrent.futures

# 加载数据集
mnist = tf.keras.datasets.mnist
(x_train, y_train), (x_test, y_test) = mnist.load_data()

# 对数据进行预处理
x_train = x_train / 255.0
x_test = x_test / 255.0
x_train = tf.keras.preprocessing.image.resize
"""
