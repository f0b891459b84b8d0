"""Expert parallelism for raylm's :class:`~raylm.model.moe.SwitchMoE` under DeepSpeed (ZeRO 0, 1 and 2).

With ``ep`` ranks per expert-parallel group, each rank of a group holds ``n_experts / ep`` different
experts, so their gradients must not be averaged over the whole data-parallel group: an expert's
gradient is summed over the ranks that hold a copy of it (its expert-data-parallel group, of size
``dp / ep``) and divided by ``dp``. The all-to-all backward has already summed the contributions of the
tokens of every rank in the expert-parallel group, so the result equals the data-parallel average of
an ``ep = 1`` run (Fedus et al. 2021, Switch Transformers, section 5, "Designing models with data,
model and expert-parallelism"; the "E + D" layout of ``deepspeed/utils/groups.py:
_create_expert_and_data_parallel``). DeepSpeed does exactly this for parameters marked
``allreduce = False`` with a ``group_name`` (``deepspeed/moe/experts.py``), in
``DeepSpeedEngine._reduce_expert_gradients`` (ZeRO 0) and ``DeepSpeedZeroOptimizer`` (ZeRO 1 and 2,
``_configure_moe_settings``), but only once the engine has found a ``deepspeed.moe.layer.MoE`` module
(``has_moe_layers``). Hence, in this order (``deepspeed.init_distributed`` must have run):

1. ``group = expert_parallel_group(plan.ep)`` creates DeepSpeed's own expert-parallel and
   expert-data-parallel groups (``groups._create_expert_and_data_parallel``: groups of ``ep``
   consecutive ranks) and returns this rank's expert-parallel group, for the MoE all-to-all;
2. ``model = build_model(cfg.model, expert_group=group)``;
3. ``reinit_experts(model, seed)`` and ``reinit_dense(model, seed)`` (every MoE model, whatever ``ep``):
   the initial weights then depend on the seed only, not on ``ep``;
4. ``optimizer = build_optimizer(cfg, model)``;
5. ``prepare_expert_parallel(model, optimizer, plan)``: marks the expert parameters, attaches a
   weightless ``MoE`` marker to every SwitchMoE so that the engine sets ``has_moe_layers``, and splits
   the optimizer's parameter groups into dense and expert groups (ZeRO 1/2 partition an expert group
   over its expert-data-parallel group only);
6. ``deepspeed.initialize(model=model, optimizer=optimizer, ...)``;
7. ``fix_expert_grad_clipping(engine, plan)``: ZeRO 0 in fp32 clips with the mean of the ranks'
   local norms (``deepspeed.runtime.utils.clip_grad_norm_``), which with ``ep > 1`` is not the global
   norm; this replaces it by the exact global norm. ZeRO 1/2 and DeepSpeed's fp16/bf16 optimizers
   compute the global norm over expert groups themselves.

Checkpoints: DeepSpeed writes the model states from data-parallel rank 0 only, so with ``ep > 1``
every rank also writes its experts (:func:`save_local_experts`) and loads them back through
``engine.load_checkpoint(..., custom_load_fn=expert_load_fn(model, directory))``. An export of the
whole model gathers the experts first (:func:`full_state_dict`).
"""

from __future__ import annotations

import functools
import hashlib
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn

from raylm.model.blocks import init_weights
from raylm.model.moe import SwitchMoE
from raylm.parallel.plan import ParallelPlan

MARKER_NAME = "deepspeed_moe_marker"


def group_name(ep: int) -> str:
    """DeepSpeed's name for the expert groups of size ``ep`` (``deepspeed/moe/layer.py``)."""
    return f"ep_size_{ep}"


def moe_layers(model: nn.Module) -> list[SwitchMoE]:
    """The model's MoE layers in module order (the layer index used by :func:`reinit_experts`)."""
    return [m for m in model.modules() if isinstance(m, SwitchMoE)]


def expert_parallel_group(ep: int):
    """This rank's expert-parallel process group (ranks ``[r - r % ep, r - r % ep + ep)``), or None for ep 1.

    Creates DeepSpeed's expert-parallel and expert-data-parallel groups of size ``ep`` if they do not
    exist yet, collectively: every rank must call this with the same ``ep``.
    """
    if ep == 1:
        return None
    from deepspeed.utils import groups

    name = group_name(ep)
    if name not in groups._get_expert_parallel_group_dict():
        groups._create_expert_and_data_parallel(ep)
    return groups._get_expert_parallel_group(name)


def _seed(*key) -> int:
    """A 63-bit seed from ``key`` (stable across processes and Python runs, unlike ``hash``)."""
    digest = hashlib.blake2b("/".join(map(str, key)).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & (2**63 - 1)


def _init_layers(cfg) -> int:
    """The ``n_layers`` the model's own :func:`init_weights` call uses (T5 counts both stacks)."""
    return cfg.n_layers + ((cfg.n_decoder_layers or 0) if cfg.arch == "t5" else 0)


def _seeded_init(module: nn.Module, cfg, seed: int) -> None:
    """:func:`raylm.model.blocks.init_weights` on ``module`` with the global RNG seeded by ``seed``."""
    devices = [p.device for p in module.parameters() if p.device.type == "cuda"]
    with torch.random.fork_rng(devices=sorted({d.index or 0 for d in devices})):
        torch.manual_seed(seed)
        init_weights(module, cfg, _init_layers(cfg))


@torch.no_grad()
def reinit_experts(model: nn.Module, seed: int, cfg=None) -> None:
    """Re-draw every local expert from ``(seed, MoE layer index, global expert id)``.

    The distribution is the model's own (GPT-2 init, Radford et al. 2019, section 2.3, via
    :func:`raylm.model.blocks.init_weights`: N(0, init_std) weights, ``w_out`` scaled by
    ``1/sqrt(2 * n_layers)`` when ``scaled_init``, zero biases), so expert ``e`` of layer ``l`` is the
    same tensor whichever rank holds it and whatever ``ep`` is. ``cfg`` defaults to ``model.cfg``.
    """
    cfg = cfg if cfg is not None else model.cfg
    for layer_idx, layer in enumerate(moe_layers(model)):
        for local, expert in enumerate(layer.experts):
            _seeded_init(expert, cfg, _seed("expert", seed, layer_idx, layer.first_local_expert + local))


@torch.no_grad()
def reinit_dense(model: nn.Module, seed: int, cfg=None) -> None:
    """Re-draw every parameter outside the experts from ``(seed, module name)``, same distribution.

    Building a model consumes the global RNG once per expert it holds, so with ``ep > 1`` every
    module built after the first MoE layer would otherwise differ from the ``ep = 1`` model. Each
    leaf module is initialised on its own with the rule :func:`init_weights` applies to its name (the
    residual-projection test looks at the name's end, which the holder below preserves). Tied
    weights end up with the draw of the last module that holds them, as in :func:`init_weights`.
    """
    cfg = cfg if cfg is not None else model.cfg
    skip = {id(m) for layer in moe_layers(model) for m in layer.experts.modules()}
    for name, module in model.named_modules():
        if id(module) in skip or next(module.children(), None) is not None:
            continue
        if next(module.parameters(recurse=False), None) is None:
            continue
        holder = nn.Module()
        holder.add_module(name.rsplit(".", 1)[-1], module)
        _seeded_init(holder, cfg, _seed("dense", seed, name))


@functools.cache
def _marker_class():
    """A ``deepspeed.moe.layer.MoE`` subclass holding no weights, built lazily (imports deepspeed)."""
    from deepspeed.moe.layer import MoE

    class SwitchMoEMarker(MoE):
        """Tells ``DeepSpeedEngine`` that its parent SwitchMoE is an MoE layer (``has_moe_layers``).

        ``num_local_experts`` is 0 because the expert weights live in the parent, not under
        DeepSpeed's ``deepspeed_moe.experts.deepspeed_experts`` names: DeepSpeed's per-expert
        checkpoint files therefore hold nothing, and saving and loading the experts is left to the
        caller (:func:`save_local_experts` and :func:`expert_load_fn`).
        """

        def __init__(self, n_experts: int, ep: int):
            nn.Module.__init__(self)  # not MoE.__init__: no gate, no experts
            self.num_experts, self.ep_size, self.expert_group_name = n_experts, ep, group_name(ep)
            self.num_local_experts = 0
            self.use_residual, self.enable_expert_tensor_parallelism = False, False

        def set_deepspeed_parallelism(self, use_data_before_expert_parallel_: bool = False) -> None:
            from deepspeed.utils import groups

            if use_data_before_expert_parallel_:
                raise ValueError("use_data_before_expert_parallel is not supported with raylm's SwitchMoE")
            if self.expert_group_name not in groups._get_expert_parallel_group_dict():
                raise RuntimeError(f"expert groups {self.expert_group_name} missing: build the model with "
                                   f"expert_parallel_group({self.ep_size}) before deepspeed.initialize")

        def forward(self, *args, **kwargs):
            raise RuntimeError("SwitchMoEMarker holds no weights and is never called; call its parent")

    return SwitchMoEMarker


def split_expert_param_groups(param_groups: list[dict]) -> list[dict]:
    """Dense groups keep their non-expert parameters; each group's expert parameters move to a copy of
    it marked ``moe: True`` and named after the expert group (what ZeRO 1/2 and DeepSpeed's fp16/bf16
    optimizers expect: ``deepspeed.moe.utils.split_params_into_different_moe_groups_for_optimizer``)."""
    from deepspeed.moe.utils import split_params_into_different_moe_groups_for_optimizer

    named = [{**group, "name": group.get("name", f"group{i}")} for i, group in enumerate(param_groups)]
    return [g for g in split_params_into_different_moe_groups_for_optimizer(named) if g["params"]]


def prepare_expert_parallel(model: nn.Module, optimizer: torch.optim.Optimizer, plan: ParallelPlan) -> None:
    """Make ``deepspeed.initialize`` reduce expert gradients over expert-data-parallel groups only.

    Call after building the model with :func:`expert_parallel_group` and the optimizer, before
    ``deepspeed.initialize`` and before any optimizer step. Does nothing when ``plan.ep == 1`` (every
    rank then holds every expert, and plain data parallelism is exact).
    """
    if plan.ep == 1:
        return
    layers = moe_layers(model)
    if not layers:
        raise ValueError(f"plan.ep={plan.ep} but the model has no MoE layers")
    for layer in layers:
        if layer.ep_size != plan.ep:
            raise ValueError(f"an MoE layer is sharded over {layer.ep_size} ranks but plan.ep={plan.ep}: build the "
                             f"model with expert_group=expert_parallel_group({plan.ep})")
        for p in layer.experts.parameters():
            p.allreduce, p.group_name = False, group_name(plan.ep)
        if not hasattr(layer, MARKER_NAME):
            layer.add_module(MARKER_NAME, _marker_class()(layer.n_experts, plan.ep))
    if any(state for state in optimizer.state.values()):
        raise RuntimeError("prepare_expert_parallel must run before the optimizer's first step")
    groups = split_expert_param_groups(optimizer.param_groups)
    optimizer.param_groups.clear()
    optimizer.param_groups.extend(groups)


def _is_expert(p: torch.Tensor) -> bool:
    return getattr(p, "allreduce", True) is False


def global_grad_norm(parameters, ep_group=None) -> torch.Tensor:
    """The 2-norm of all gradients of the model, with each expert counted once.

    Dense gradients are equal on every rank after the data-parallel reduction; expert gradients are
    equal within an expert-data-parallel group and different across an expert-parallel group, so their
    squares are summed over ``ep_group``.
    """
    grads = [(p.grad.detach().float(), _is_expert(p)) for p in parameters if p.grad is not None]
    device = grads[0][0].device if grads else torch.device("cpu")
    dense = sum((g.square().sum() for g, expert in grads if not expert), torch.zeros((), device=device))
    experts = sum((g.square().sum() for g, expert in grads if expert), torch.zeros((), device=device))
    if ep_group is not None:
        dist.all_reduce(experts, group=ep_group)
    return (dense + experts).sqrt()


def fix_expert_grad_clipping(engine, plan: ParallelPlan) -> None:
    """Clip by the exact global norm under ZeRO 0 in fp32 with ``ep > 1`` (no-op otherwise).

    DeepSpeed's ``clip_fp32_gradients`` uses the mean over ranks of each rank's local norm
    (``deepspeed/runtime/utils.py: clip_grad_norm_``), which differs from the global norm when the
    ranks hold different experts; the clipping then differs from the ``ep = 1`` run. The engine's method
    is replaced, on this instance only, by ``torch.nn.utils.clip_grad_norm_`` semantics with
    :func:`global_grad_norm`; the norm is also what ``engine.get_global_grad_norm()`` returns.
    """
    if plan.ep == 1 or engine.zero_optimization() or engine.fp16_enabled() or engine.bfloat16_enabled():
        return
    ep_group = expert_parallel_group(plan.ep)

    def clip_fp32_gradients():
        params = [p for p in engine.module.parameters() if p.grad is not None]
        norm = global_grad_norm(params, ep_group)
        coef = torch.clamp(engine.gradient_clipping() / (norm + 1e-6), max=1.0)
        for p in params:
            p.grad.detach().mul_(coef.to(p.grad.device))
        engine._global_grad_norm = norm.item()

    engine.clip_fp32_gradients = clip_fp32_gradients


EXPERTS_FILE = "experts_rank{rank}.pt"


def _expert_prefixes(model: nn.Module) -> list[str]:
    """State-dict prefixes of the expert weights of each MoE layer that shards them (ep > 1)."""
    return [f"{name}.experts." if name else "experts." for name, m in model.named_modules()
            if isinstance(m, SwitchMoE) and m.ep_size > 1]


def local_expert_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """This rank's expert weights keyed ``moe{layer}.expert{global id}.{param}`` (rank-independent names)."""
    state = {}
    for layer_idx, layer in enumerate(moe_layers(model)):
        for local, expert in enumerate(layer.experts):
            for name, tensor in expert.state_dict().items():
                state[f"moe{layer_idx}.expert{layer.first_local_expert + local}.{name}"] = tensor.detach().cpu()
    return state


@torch.no_grad()
def load_local_expert_state(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy the experts this rank holds out of ``state`` (from :func:`local_expert_state` or a merge of them)."""
    for layer_idx, layer in enumerate(moe_layers(model)):
        for local, expert in enumerate(layer.experts):
            prefix = f"moe{layer_idx}.expert{layer.first_local_expert + local}."
            expert.load_state_dict({name: state[prefix + name] for name in expert.state_dict()})


def save_local_experts(model: nn.Module, directory: str | Path, rank: int) -> None:
    """Write this rank's experts into a checkpoint directory (nothing when no layer shards its experts).

    DeepSpeed's model-states file comes from data-parallel rank 0 only and so holds rank 0's experts
    (under local names); its per-expert files stay empty (see the marker's ``num_local_experts``).
    Call next to ``engine.save_checkpoint(directory, ...)`` on every rank.
    """
    if _expert_prefixes(model):
        torch.save(local_expert_state(model), Path(directory) / EXPERTS_FILE.format(rank=rank))


def expert_load_fn(model: nn.Module, directory: str | Path):
    """``custom_load_fn`` for ``engine.load_checkpoint(directory, ..., custom_load_fn=...)``, or None.

    DeepSpeed loads the module before the optimizer (whose fp32 master weights some optimizers
    refresh from the module), so the experts must be right at that point: the returned function loads
    the dense weights from DeepSpeed's model states and this rank's experts from the files of
    :func:`save_local_experts`. None (DeepSpeed's own loading) when no layer shards its experts.
    """
    prefixes = tuple(_expert_prefixes(model))
    if not prefixes:
        return None
    files = sorted(Path(directory).glob(EXPERTS_FILE.format(rank="*")))
    if not files:
        raise FileNotFoundError(f"{directory} holds no {EXPERTS_FILE.format(rank='*')}: the checkpoint was not "
                                f"written by an expert-parallel run (save_local_experts)")

    def load(src: dict, dst: nn.Module) -> None:
        dense = {k: v for k, v in src.items() if not k.startswith(prefixes)}
        result = dst.load_state_dict(dense, strict=False)
        missing = [k for k in result.missing_keys if not k.startswith(prefixes)]
        if missing or result.unexpected_keys:
            raise RuntimeError(f"checkpoint does not match the model: missing {missing}, "
                               f"unexpected {result.unexpected_keys}")
        experts = {}
        for path in files:
            experts.update(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
        load_local_expert_state(dst, experts)

    return load


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The state dict of the equivalent ``ep = 1`` model, on every rank (collective over the expert groups).

    Expert ``e`` of an MoE layer appears as ``<layer>.experts.<e>.*``; with ``ep == 1`` this is
    ``model.state_dict()``. For exporting or comparing a sharded model (all ranks must call it).
    """
    state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
    for layer_name, layer in ((n, m) for n, m in model.named_modules() if isinstance(m, SwitchMoE)):
        if layer.process_group is None or layer.ep_size == 1:
            continue
        prefix = f"{layer_name}.experts." if layer_name else "experts."
        local = {k: v for k, v in state.items() if k.startswith(prefix)}
        gathered = [None] * layer.ep_size
        dist.all_gather_object(gathered, (layer.first_local_expert, local), group=layer.process_group)
        for k in local:
            del state[k]
        for first, part in gathered:
            for key, tensor in part.items():
                local_id, rest = key[len(prefix):].split(".", 1)
                state[f"{prefix}{first + int(local_id)}.{rest}"] = tensor
    return state
