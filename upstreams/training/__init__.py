"""Training infrastructure shared by every pretraining method (M2D, M2D-X, SCORE).

    config.py      TrainConfig, typed overrides from files and --set
    loop.py        Recipe / BatchSource / Slot and the one training loop `train`
    run.py         method registry and the `bench pretrain` driver (presets, run dirs, resume)
    ddp.py         torchrun environment, gradient accumulation split, DDP wrapping
    schedule.py    warm-up + cosine lr, run length in steps or epochs
    checkpoint.py  atomic checkpoints, RNG state
    log.py         JSON-lines log, TensorBoard events without TensorFlow, loss plot
    corpus.py      the pretraining corpus index (index.csv) reader
"""
