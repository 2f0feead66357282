"""The built-in study: `bench reproduce` and `bench quickstart` as plans of stages.

Everything a reader (or the next study) would edit sits at the top: which upstreams, which
(task, protocol, options) evaluations per profile, which pretraining presets and overrides.
`plan()` expands them into the staged, hash-keyed plan that `bench sweep` plans expand into too,
and that any executor runs.
"""

from __future__ import annotations

from tasks.registry import TASKS

from ..errors import UserError
from .stage import Stage, seed_suffix

__all__ = ["UPSTREAMS", "PRETRAINED", "EVALUATIONS", "TASK_DATASET", "SPEECH_TASKS", "plan"]

UPSTREAMS = ("fbank", "random", "m2d", "m2dx", "score")
PRETRAINED = ("m2d", "m2dx", "score")  # upstreams whose checkpoint comes from a pretraining stage
DATASETS = ("librispeech", "quesst14", "speech_commands", "esc50", "icbhi", "pretrain")
TASK_DATASET = {name: spec.dataset for name, spec in TASKS.items()}

# (task, protocol, options) in the order they run: frozen SUPERB/HEAR protocols first, fine-tuning last.
# Fine-tuning on CPU is the expensive part, so on the mini-benchmark it uses one learning rate, ESC-50
# one fold and bf16 autocast (1.5x faster than fp32 for the mini ViT's forward + backward here); the
# records say so. `knn` costs under a second on cached features; HEAR's `mlp` (8 grid points x folds) adds
# 9-11 CPU-minutes per upstream and seed on mini, so it is left to `bench run --protocol mlp`.
EVALUATIONS: dict[str, list[tuple[str, str, dict]]] = {
    "mini": [
        ("esc50", "weighted", {}), ("speech_commands", "weighted", {}), ("icbhi", "weighted", {}),
        ("qbe", "dtw", {}),
        ("esc50", "linear", {}), ("speech_commands", "linear", {}), ("icbhi", "linear", {}),
        ("esc50", "knn", {}), ("speech_commands", "knn", {}), ("icbhi", "knn", {}),
        ("pr", "weighted", {}), ("asr", "weighted", {}),
        ("icbhi", "finetune", {"lrs": [3e-3], "precision": "bf16"}),
        ("esc50", "finetune", {"lrs": [3e-3], "folds": ["fold1"], "precision": "bf16"}),
    ],
    # `bench quickstart`: a short M2D pretraining, then the clip tasks on mini, frozen, for m2d, its
    # step-0 twin and fbank. `weighted` (6-11 CPU-minutes a stage on mini) is left to `bench reproduce`.
    "quick": [
        ("esc50", "linear", {}), ("speech_commands", "linear", {}), ("icbhi", "linear", {}),
        ("esc50", "knn", {}), ("speech_commands", "knn", {}), ("icbhi", "knn", {}),
    ],
    "tiny": [
        ("esc50", "weighted", {"folds": ["fold1"]}), ("speech_commands", "weighted", {}), ("icbhi", "weighted", {}),
        ("qbe", "dtw", {}), ("icbhi", "linear", {"lrs": [1e-3]}),
        ("pr", "weighted", {"lrs": [1e-2]}), ("asr", "weighted", {"lrs": [1e-3]}),
        ("icbhi", "finetune", {"lrs": [3e-3]}), ("esc50", "finetune", {"lrs": [3e-3], "folds": ["fold1"]}),
    ],
}
NO_FINETUNE = {"fbank"}  # nothing to fine-tune in a fixed filterbank
# `random` must have the architecture the pretrained models have, or "M2D beats no pretraining" compares sizes
UPSTREAM_OPTIONS = {"tiny": {"random": {"arch": "tiny"}}, "mini": {}}

# `bench quickstart` pretrains M2D briefly (the `quick` preset: 500 steps, about 5 minutes on one core)
# and shows it beside its step-0 twin (`random`) and fbank; m2dx and score are `bench reproduce`'s.
QUICK_UPSTREAMS = ("fbank", "random", "m2d")
QUICK_PRETRAIN = {"mini": "quick", "tiny": "tiny"}
QUICK_PRETRAIN_DATA = ("librispeech", "esc50", "icbhi", "pretrain")

PRETRAIN_PRESETS = {"mini": {"m2d": "mini", "m2dx": "mini_respiratory", "score": "mini"},
                    "tiny": {"m2d": "tiny", "m2dx": "tiny", "score": "tiny"}}
# Speech tasks need frames of 40 ms or finer and clip tasks do not (results/recipe-study): where a profile
# names a speech preset, `m2d` and its step-0 twin are evaluated on SPEECH_TASKS with that run
# (stage `pretrain-m2d_speech`, folder `<runs>/m2d/reproduce-<profile>-speech`), and SCORE tunes it,
# since SCORE needs a base whose frames can carry content.
SPEECH_TASKS = ("qbe", "pr", "asr")
SPEECH_PRESET = {"mini": "mini_speech"}
SPEECH_RUN = "m2d_speech"  # the run's stage is `pretrain-m2d_speech[-seedK]`
# Tiny presets are sized for the test-suite; the reproduction test still needs them short.
# The mini presets run as they are: m2d `mini` 1000 steps of 16x16 patches (~8 min on one idle core),
# m2dx `mini_respiratory` 600 (~6 min from the 16x16 m2d), score `mini` 200 (10-15 min), so three seeds
# of pretraining take about an hour of one core while the other core evaluates.
PRETRAIN_OVERRIDES = {"mini": {},
                      "tiny": {"m2d": {"train": {"steps": 12}}, "m2dx": {"train": {"steps": 6}},
                                           "score": {"train": {"steps": 6}}}}


def plan(profile: str = "mini", upstreams: tuple[str, ...] = UPSTREAMS, tasks: tuple[str, ...] | None = None,
         protocols: tuple[str, ...] | None = None, quick: bool = False, seeds: int = 1) -> list[Stage]:
    """The stages of a reproduction on `profile`, restricted to some upstreams/tasks/protocols if asked.

    `seeds` repeats pretraining *and* evaluation per seed (pretraining variance is the one that
    matters): seed k pretrains its own m2d (train.seed = k), m2dx and score start from that m2d, and
    every evaluation of seed k trains its head with seed k. `random` is the step-0 twin of seed k's
    m2d run (`random -o like=CKPT`) whenever m2d is pretrained in the plan, so every pretrained model
    is compared with its own initialisation.

    `quick` (bench quickstart) pretrains m2d with the short `quick` preset (when m2d is among the
    upstreams) and evaluates it, its step-0 twin and fbank on the clip tasks with frozen protocols.
    """
    if profile not in ("tiny", "mini"):
        raise UserError(f"--profile {profile}: bench reproduce runs on tiny or mini")
    if not isinstance(seeds, int) or seeds < 1:
        raise UserError(f"--seeds {seeds}: give the number of seeds, 1 or more (seeds 0..N-1 are run)")
    unknown = [u for u in upstreams if u not in UPSTREAMS]
    if unknown:
        raise UserError(f"--upstreams: unknown {', '.join(unknown)}; choose from {', '.join(UPSTREAMS)}")
    if tasks is not None:
        bad = [t for t in tasks if t not in TASK_DATASET]
        if bad:
            raise UserError(f"--tasks: unknown {', '.join(bad)}; choose from {', '.join(TASK_DATASET)}")
    wanted = set(upstreams)
    if quick:
        evaluations = EVALUATIONS["quick"]
        datasets = {TASK_DATASET[t] for t, _, _ in evaluations if tasks is None or t in tasks}
        pretrained = ("m2d",) if "m2d" in wanted else ()
        if pretrained:  # the pretraining corpus is built from librispeech, esc50 and icbhi training material
            datasets |= set(QUICK_PRETRAIN_DATA)
        stages = [Stage("data", "data", {"profile": profile, "datasets": sorted(datasets)})]
        for k in range(seeds):
            sfx = seed_suffix(k)
            if pretrained:
                params = {"method": "m2d", "preset": QUICK_PRETRAIN[profile],
                          "overrides": {"train": {"seed": k}} if k else {}}
                if k:
                    params["seed"] = k
                stages.append(Stage(f"pretrain-m2d{sfx}", "pretrain", params, ("data",)))
            stages += _eval_stages(evaluations, profile, [u for u in QUICK_UPSTREAMS if u in wanted], tasks, protocols,
                                   pretrained=pretrained, seed=k, twin=bool(pretrained))
        return stages
    stages = [Stage("data", "data", {"profile": profile, "datasets": list(DATASETS)})]
    presets, overrides = PRETRAIN_PRESETS[profile], PRETRAIN_OVERRIDES[profile]
    pretrained = tuple(u for u in PRETRAINED if u in wanted)
    if pretrained:  # m2dx and score start from m2d
        pretrained = ("m2d",) + tuple(u for u in pretrained if u != "m2d")
    speech_preset = SPEECH_PRESET.get(profile) if pretrained else None
    evals = []
    for k in range(seeds):
        sfx = seed_suffix(k)
        seed_set = {"train": {"seed": k}} if k else {}
        seed_evals = _eval_stages(EVALUATIONS[profile], profile, [u for u in UPSTREAMS if u in wanted], tasks,
                                  protocols, pretrained=pretrained, seed=k, twin=bool(pretrained),
                                  speech_run=SPEECH_RUN if speech_preset else None)
        speech = speech_preset and ("score" in pretrained or any(
            f"pretrain-{SPEECH_RUN}{sfx}" in s.needs for s in seed_evals))
        for method in pretrained:
            params = {"method": method, "preset": presets[method],
                      "overrides": _merged(overrides.get(method, {}), seed_set)}
            needs = ("data",) if method == "m2d" else ("data", f"pretrain-m2d{sfx}")
            if method == "m2dx":
                params["init"] = f"m2d{sfx}"
            if method == "score":
                base_run = SPEECH_RUN if speech else "m2d"
                params["base"] = "m2d"
                params["base_run"] = f"{base_run}{sfx}"
                needs = ("data", f"pretrain-{base_run}{sfx}")
            if k:
                params["seed"] = k
            stages.append(Stage(f"pretrain-{method}{sfx}", "pretrain", params, needs))
            if method == "m2d" and speech:
                params = {**params, "preset": speech_preset, "variant": "speech",
                          "overrides": _merged(overrides.get(SPEECH_RUN, {}), seed_set)}
                stages.append(Stage(f"pretrain-{SPEECH_RUN}{sfx}", "pretrain", params, ("data",)))
        evals += seed_evals
    return stages + evals


def _merged(a: dict, b: dict) -> dict:
    from upstreams.training.config import merge

    return merge(a, b) if b else a


def _eval_stages(evaluations, profile: str, ups: list[str], tasks, protocols, pretrained, seed: int = 0,
                 twin: bool = False, speech_run: str | None = None) -> list[Stage]:
    """`speech_run`: the pretraining run that `m2d` and its twin stand for on SPEECH_TASKS (None: the m2d run)."""
    sfx = seed_suffix(seed)
    stages = []
    for task, protocol, options in evaluations:
        if (tasks is not None and task not in tasks) or (protocols is not None and protocol not in protocols):
            continue
        for up in ups:
            if protocol == "finetune" and up in NO_FINETUNE:
                continue
            run = speech_run if speech_run and task in SPEECH_TASKS and up in ("m2d", "random") else None
            needs = ("data",) + ((f"pretrain-{run or up}{sfx}",) if up in pretrained else ())
            params = {"upstream": up, "task": task, "protocol": protocol, "profile": profile, **options}
            if seed:
                params["seed"] = seed
            if up in pretrained and (sfx or run):
                params["checkpoint_of"] = f"pretrain-{run or up}{sfx}"
            if up == "random" and twin:  # the step-0 twin of this seed's m2d run
                params["like_of"] = f"pretrain-{run or 'm2d'}{sfx}"
                needs = needs + (params["like_of"],)
            elif UPSTREAM_OPTIONS[profile].get(up):
                params["upstream_options"] = UPSTREAM_OPTIONS[profile][up]
            stages.append(Stage(f"eval-{up}-{task}-{protocol}{sfx}", "eval", params, needs))
    return stages
