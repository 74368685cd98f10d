"""The article's claims, each with the chapter that teaches, runs or corrects it.

Every row quotes the article (深度学习模型分布式推理) word for word and names the notebook whose markdown quotes it,
and a word that the quoting cell, or one of the two cells after it, must use when it answers the claim (a test reads
the notebooks). So a reader holding the article can find each sentence of it in the kit, with what is true of it.
"""

from __future__ import annotations

from typing import NamedTuple


class Claim(NamedTuple):
    """One sentence of the article and where the kit answers it."""

    quote: str  # the article's words, verbatim
    says: str  # what the quote claims, in English
    verdict: str  # what is true of it, in one line
    chapter: int  # the notebook (00-10) that quotes and answers it
    keyword: str  # a word the answer uses (case-insensitive), so that the quote is not merely repeated


CLAIMS: tuple[Claim, ...] = (
    Claim(
        "数据量的爆炸式增长，以及计算能力的提升",
        "growth of data and of compute made deep learning succeed",
        "true, and it leaves out the force that makes distribution necessary: models outgrew one device's memory",
        1,
        "memory",
    ),
    Claim(
        "深度学习的模型分布式推理成为了研究热点之一",
        "distributed inference became a research focus",
        "most of what the article describes is distributed training",
        1,
        "training",
    ),
    Claim(
        "通过在多个计算节点上并行处理，可以充分利用多核处理器的计算能力",
        "scalability: many nodes make training and inference more efficient",
        "the computing scales; the communicating does not shrink with p",
        1,
        "communicat",
    ),
    Claim(
        "计算节点的硬件设备和操作系统可能不同",
        "portability: the algorithm runs on mixed hardware and operating systems",
        "a property of the software; in a synchronous step the slowest node sets the pace",
        1,
        "slowest",
    ),
    Claim(
        "单个计算节点出现故障时，可以通过其他节点的计算结果来保证模型的稳定性",
        "fault tolerance: the other nodes cover a failed one",
        "not by itself: one failure stops a synchronous job; checkpoints, detection and restart must be built",
        8,
        "checkpoint",
    ),
    Claim(
        "在多个计算节点上并行处理深度学习模型训练和推理的过程",
        "distributed inference is parallel training and inference on many nodes",
        "training and inference distribute differently: data, tensor and pipeline parallelism",
        2,
        "parallelism",
    ),
    Claim(
        "模型压缩是为了减小模型的计算量",
        "compression reduces computation so the model spreads more easily",
        "compression shrinks bytes (sometimes compute); it distributes nothing, but a smaller n shrinks every β term",
        7,
        "bytes",
    ),
    Claim(
        "将模型参数划分为多个子集，每个子集对应一个计算节点",
        "step 1: split the parameters into subsets, one per node",
        "that is tensor (model) parallelism: each node holds a shard of each weight matrix",
        2,
        "tensor",
    ),
    Claim(
        "在每个计算节点上对模型参数子集进行加权求和",
        "step 2: each node computes a weighted sum on its subset",
        "read one way, a tensor-parallel layer's partial matrix product; read the other, weighted parameter averaging",
        2,
        "averag",
    ),
    Claim(
        "对加权后的模型参数子集进行优化，得到最终的模型参数",
        "step 3: optimise the combined parameters",
        "data-parallel SGD's update after an all-reduce of the gradients",
        3,
        "all-reduce",
    ),
    Claim(
        "我们可以用损失函数L来衡量输入值和真实值的差距",
        "the loss measures the gap between the input and the truth",
        "a slip: the loss compares the model's prediction ŷ with the truth y, never the input",
        3,
        "prediction",
    ),
    Claim(
        "可以使用梯度下降法、牛顿法等方法实现",
        "the optimiser may be gradient descent or Newton's method",
        "Newton's method needs the N² Hessian: 8.0e9 entries (32 GB) for the article's MLP; hence first-order methods",
        3,
        "Hessian",
    ),
    Claim(
        "f(θ) = -L'(y, y^)",
        "the optimiser is f(θ) = −L′(y, ŷ)",
        "not an optimiser: gradient descent is θ ← θ − η∇θL",
        3,
        "η",
    ),
    Claim(
        "由于计算节点之间的通信成本较高",
        "communication between nodes is costly",
        "true, and the α-β model says how costly and when each algorithm wins",
        3,
        "α",
    ),
    Claim(
        "例如模型大小、计算节点数量、通信协议等",
        "model size, node count and communication protocol must be considered",
        "the protocol sets α and β: TCP over Ethernet, RDMA over InfiniBand, NVLink inside a node",
        3,
        "RDMA",
    ),
    Claim(
        "常用的通信机制包括消息传递机制、流式传输机制、事件驱动机制等",
        "the mechanisms are message passing, streaming and event-driven",
        "not standard terms; the nearest real ideas are pipelined (chunked) collectives and asynchronous updates",
        3,
        "asynchronous",
    ),
    Claim(
        "通过消息传递机制将计算结果汇总到主节点上",
        "results are gathered to a master node",
        "that is the parameter server; an all-reduce leaves the result on every node without a master",
        2,
        "all-reduce",
    ),
    Claim(
        "常见的消息传递机制包括点对点机制、环形机制、树状机制等",
        "the topologies are point-to-point, ring and tree",
        "ring and tree all-reduces are built of point-to-point messages; which wins depends on n, p and the link",
        2,
        "ring",
    ),
    Claim(
        "利用并发任务池在多个计算节点上并行训练模型",
        "the process pool trains the model in parallel on many nodes",
        "each task trains a private copy that is thrown away: nothing is combined",
        4,
        "copy",
    ),
    Claim(
        "这里我们以经典的MNIST数据集为例",
        "section 4 trains on MNIST",
        "the text breaks off mid-line; chapter 5 finishes it with data-parallel training",
        5,
        "data-parallel",
    ),
    Claim(
        "未来发展趋势与挑战",
        "section 5, future trends (announced, never written)",
        "written here: ZeRO/FSDP, 3D parallelism, LLM serving",
        9,
        "ZeRO",
    ),
    Claim(
        "附录常见问题与解答",
        "section 6, FAQ (announced, never written)",
        "written here: the questions users hit, with runnable answers",
        10,
        "question",
    ),
    Claim(
        "深度学习模型分布式推理的核心算法是模型并行处理",
        "the core algorithm of distributed inference is model parallelism",
        "for inference that is one way (tensor or pipeline parallel, when the model does not fit one device); "
        "replicas of a model that fits serve more requests with no communication at all",
        6,
        "tensor",
    ),
)
