"""``python -m labkit.train``: one worker (or ``--world-size`` simulated ones), or one per process under mpiexec."""

from __future__ import annotations

import argparse
import json
import os
import sys

from labkit import collectives, cost
from labkit.i18n import tr
from labkit.parallel import data as dataparallel
from labkit.progress import under_mpiexec
from labkit.train import OPTIMIZERS, TrainConfig, train


def main(argv: list[str] | None = None) -> int:
    """``python -m labkit.train``: one worker (or --world-size simulated ones), or one per process under mpiexec."""
    parser = argparse.ArgumentParser(
        prog="python -m labkit.train", description="Train the article's MLP data-parallel (labkit)."
    )
    parser.add_argument("--dataset", default="mnist", choices=("mnist", "fashion_mnist"))
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch, split over the workers")
    parser.add_argument("--algorithm", default="ring", choices=list(collectives.ALGORITHMS))
    parser.add_argument("--optimizer", default="adam", choices=OPTIMIZERS)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--n-train", type=int, help="train on the first N images only (a knob for quick runs)")
    parser.add_argument("--n-test", type=int, help="test on the first N test images only")
    parser.add_argument("--world-size", type=int, help="simulated workers when not under mpiexec (default 1)")
    parser.add_argument("--link", help="link preset for the modelled time, e.g. 'shared memory' (default 10 GbE)")
    parser.add_argument("--threads", type=int, help="TensorFlow threads per process (default: cores / processes)")
    parser.add_argument("--out", help="write the history (and every worker's weight checksum) here as JSON")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.add_argument("--checkpoint-dir", help="write a checkpoint here after each epoch (labkit.fault)")
    parser.add_argument("--checkpoint-every", type=int, default=0, help="also checkpoint every N steps")
    parser.add_argument("--resume", action="store_true", help="continue from the checkpoint in --checkpoint-dir")
    parser.add_argument("--timeout", type=float, default=120.0, help="seconds a worker waits for another")
    parser.add_argument("--fail-rank", type=int, help="fault injection: this worker dies (SIGKILL under MPI)")
    parser.add_argument("--fail-step", type=int, default=0, help="… before the exchange of this global step")
    args = parser.parse_args(argv)
    mpi = under_mpiexec()
    if mpi:
        from mpi4py import MPI

        size = MPI.COMM_WORLD.Get_size()
        if args.world_size not in (None, size):
            parser.error(f"--world-size {args.world_size} but mpiexec started {size} processes: drop --world-size")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = args.threads or max(1, cores // (size if mpi else 1))
    try:  # p processes on few cores: do not oversubscribe them
        dataparallel.tf.config.threading.set_intra_op_parallelism_threads(threads)
        dataparallel.tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:  # TensorFlow already runs in this process (main() called from a notebook): keep its pools
        threads = dataparallel.tf.config.threading.get_intra_op_parallelism_threads() or cores
    rank0 = not mpi or MPI.COMM_WORLD.Get_rank() == 0
    try:
        config = TrainConfig(
            p=size if mpi else args.world_size or 1,
            algorithm=args.algorithm,
            transport="mpi" if mpi else "sim",
            link=cost.preset(args.link) if args.link else None,
            epochs=args.epochs,
            batch_size=args.batch_size,
            learning_rate=args.lr,
            optimizer=args.optimizer,
            seed=args.seed,
            timeout=args.timeout,
            checkpoint_dir=args.checkpoint_dir,
            checkpoint_every=args.checkpoint_every,
            fail_at=None if args.fail_rank is None else (args.fail_rank, args.fail_step),
        )
    except (ValueError, TypeError) as e:  # the same on every rank, before any communication: no one waits
        if rank0:
            parser.error(str(e))
        return 2
    try:
        from labkit import data

        x, y = data.load(args.dataset, "train", n=args.n_train, verbose=rank0)
        test = data.load(args.dataset, "test", n=args.n_test, verbose=rank0)
        h = train(x, y, config, test=test, progress=not args.quiet, resume=args.resume)
        if args.out and h.rank == 0:
            with open(args.out, "w") as f:
                json.dump(h.as_dict() | {"threads": threads, "dataset": args.dataset}, f)
        if h.rank == 0:
            sha = h.checksums[0][:12]
            if h.identical:
                print(tr("final weights identical on every worker (sha256 {sha}…)", sha=sha), flush=True)
            else:
                print(tr("final weights DIFFERENT between workers (sha256 {sha}…)", sha=sha), flush=True)
        return 0 if h.identical else 1
    except Exception:
        if mpi and MPI.COMM_WORLD.Get_size() > 1:  # one rank's error would leave the others waiting: stop them all
            import traceback

            traceback.print_exc()
            sys.stderr.flush()
            MPI.COMM_WORLD.Abort(1)
        raise
