"""The published figures chapter 1 argues from, each with its citation: model sizes, GPU memories, training runs,
data sets, peak FLOP rates, and the bytes each kind of model state takes per parameter (`labkit.lessons.background`
turns them into the chapter's tables and figures).
"""

from __future__ import annotations

from dataclasses import dataclass

GB = 1e9


@dataclass(frozen=True)
class Model:
    name: str
    year: int
    params: float
    citation: str


@dataclass(frozen=True)
class Device:
    name: str
    year: int
    memory_gb: float
    citation: str


@dataclass(frozen=True)
class TrainingRun:
    name: str
    year: int
    params: float
    tokens: float
    reported_flops: float | None  # the paper's own total, where it gives one
    citation: str


@dataclass(frozen=True)
class Dataset:
    name: str
    year: int
    size: float
    unit: str  # what `size` counts: images, words or tokens
    citation: str


MODELS = (
    Model("AlexNet", 2012, 60e6, "Krizhevsky, Sutskever & Hinton 2012, NeurIPS ('60 million parameters')"),
    Model("VGG-16", 2014, 138e6, "Simonyan & Zisserman 2015, ICLR, Table 2 (configuration D)"),
    Model("ResNet-50", 2015, 25.6e6, "He et al. 2016, CVPR; 25,636,712 as keras.applications.ResNet50 counts it"),
    Model("Transformer (big)", 2017, 213e6, "Vaswani et al. 2017, NeurIPS, Table 3"),
    Model("BERT-large", 2018, 340e6, "Devlin et al. 2019, NAACL"),
    Model("GPT-2", 2019, 1.5e9, "Radford et al. 2019, OpenAI report ('a 1.5B parameter Transformer')"),
    Model("Megatron-LM", 2019, 8.3e9, "Shoeybi et al. 2019, arXiv:1909.08053"),
    Model("T5-11B", 2019, 11e9, "Raffel et al. 2020, JMLR"),
    Model("GPT-3", 2020, 175e9, "Brown et al. 2020, NeurIPS"),
    Model("Gopher", 2021, 280e9, "Rae et al. 2021, arXiv:2112.11446"),
    Model("PaLM", 2022, 540e9, "Chowdhery et al. 2022, arXiv:2204.02311 (JMLR 2023)"),
    Model("Chinchilla", 2022, 70e9, "Hoffmann et al. 2022, NeurIPS"),
    Model("Llama 3.1 405B", 2024, 405e9, "Llama Team, AI@Meta 2024, arXiv:2407.21783"),
)

DEVICES = (  # the largest-memory NVIDIA data-centre GPU of its day (AlexNet's GTX 580 was a 3 GB consumer card)
    Device("Tesla C2070", 2010, 6, "NVIDIA Tesla C2050/C2070 datasheet (2010): 6 GB of GDDR5"),
    Device("Tesla K80 (per GPU)", 2014, 12, "NVIDIA Tesla K80 datasheet: 24 GB on a board of two GPUs"),
    Device("Tesla P100", 2016, 16, "NVIDIA Tesla P100 datasheet"),
    Device("Tesla V100 32GB", 2018, 32, "NVIDIA V100 datasheet (16 GB at its 2017 launch)"),
    Device("A100 80GB", 2020, 80, "NVIDIA A100 datasheet"),
    Device("H100 SXM", 2022, 80, "NVIDIA H100 datasheet"),
    Device("H200", 2024, 141, "NVIDIA H200 datasheet"),
)

RUNS = (  # training runs whose papers give both N and D
    TrainingRun("GPT-3", 2020, 175e9, 300e9, 3.14e23, "Brown et al. 2020, NeurIPS, Table D.1"),
    TrainingRun("Chinchilla", 2022, 70e9, 1.4e12, 5.76e23, "Hoffmann et al. 2022, NeurIPS (the same budget as Gopher)"),
    TrainingRun("PaLM", 2022, 540e9, 780e9, None, "Chowdhery et al. 2022, arXiv:2204.02311"),
    TrainingRun("Llama 3.1 405B", 2024, 405e9, 15.6e12, 3.8e25, "Llama Team, AI@Meta 2024, arXiv:2407.21783"),
)

DATASETS = (
    Dataset("MNIST", 1998, 60_000, "images", "LeCun et al. 1998, Proc. IEEE"),
    Dataset("ImageNet (ILSVRC-2012)", 2012, 1_281_167, "images", "Russakovsky et al. 2015, IJCV"),
    Dataset("JFT-300M", 2017, 300e6, "images", "Sun et al. 2017, ICCV"),
    Dataset("BERT corpus", 2018, 3.3e9, "words", "Devlin et al. 2019, NAACL: BooksCorpus 800M + Wikipedia 2,500M"),
    Dataset("GPT-3", 2020, 300e9, "tokens", "Brown et al. 2020, NeurIPS"),
    Dataset("Chinchilla", 2022, 1.4e12, "tokens", "Hoffmann et al. 2022, NeurIPS"),
    Dataset("Llama 3.1", 2024, 15.6e12, "tokens", "Llama Team, AI@Meta 2024, arXiv:2407.21783"),
)

# Peak dense throughput of tensor cores in 16-bit (bf16/fp16), FLOP/s, from the vendor datasheets.
PEAK_FLOPS = {
    "V100": 125e12,
    "A100": 312e12,
    "H100 SXM": 989e12,  # the datasheet's 1,979 TFLOPS is quoted with 2:4 sparsity; dense is half
}

# Fault tolerance at scale: Llama Team 2024 (arXiv:2407.21783, section 3.3.4), pre-training on 16,384 H100s.
LLAMA3_RELIABILITY = {"gpus": 16_384, "days": 54, "unexpected_interruptions": 419, "all_interruptions": 466}

# Bytes of state per parameter (activations and temporary buffers come on top).
BYTES_PER_PARAM = {
    "train_mixed": {  # Adam in mixed precision, as counted by ZeRO (Rajbhandari et al. 2020): K = 12
        "fp16 weights": 2,
        "fp16 gradients": 2,
        "fp32 master weights": 4,
        "fp32 Adam momentum": 4,
        "fp32 Adam variance": 4,
    },
    "train_fp32": {"fp32 weights": 4, "fp32 gradients": 4, "fp32 Adam momentum": 4, "fp32 Adam variance": 4},
    "infer_fp16": {"fp16 weights": 2},
    "infer_fp32": {"fp32 weights": 4},
}
