"""Rank layout and process groups for tensor (tp), sequence (sp) and data (dp) parallelism.

Ranks are laid out tensor-major: ``rank = (dp_rank * sp + sp_rank) * tp + tp_rank``. The tensor
group all-reduces after every row-parallel layer (twice per block, forward and backward), the
sequence group all-to-alls around every attention, the data group only at the optimizer step,
so the group that talks most gets consecutive ranks: on a GPU cluster, the GPUs of one node
(Megatron-LM's ordering, Shoeybi et al. 2019, section 3; Narayanan et al. 2021, section 3.3).

:class:`ModelParallelGroups` is also the ``mpu`` handed to ``deepspeed.initialize`` (the
Megatron interface DeepSpeed queries): its model-parallel group is the tensor group, and its
data-parallel group is every rank holding the same tensor shard, the ``dp * sp`` ranks of the
data and sequence axes, so DeepSpeed averages gradients over both. Each sequence rank's loss is
scaled so that this average is the gradient of the global mean loss
(:func:`raylm.parallel.sequence.sequence_parallel_loss`).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RankCoords:
    tp_rank: int
    sp_rank: int
    dp_rank: int


def rank_coords(rank: int, tp: int, sp: int) -> RankCoords:
    """``(tp_rank, sp_rank, dp_rank)`` of global ``rank`` in the tensor-major layout."""
    rest, tp_rank = divmod(rank, tp)
    dp_rank, sp_rank = divmod(rest, sp)
    return RankCoords(tp_rank, sp_rank, dp_rank)


def layout_groups(world_size: int, tp: int, sp: int) -> dict[str, list[list[int]]]:
    """Every group of each kind, as lists of global ranks (pure: what :class:`ModelParallelGroups` creates).

    ``tensor``: ranks differing only in tp_rank; ``sequence``: only in sp_rank; ``data``: only in
    dp_rank; ``sequence_data``: in sp_rank and dp_rank (same tensor shard)."""
    coords = [rank_coords(r, tp, sp) for r in range(world_size)]

    def grouped(key) -> list[list[int]]:
        groups: dict = {}
        for rank, c in enumerate(coords):
            groups.setdefault(key(c), []).append(rank)
        return list(groups.values())

    return {
        "tensor": grouped(lambda c: (c.sp_rank, c.dp_rank)),
        "sequence": grouped(lambda c: (c.tp_rank, c.dp_rank)),
        "data": grouped(lambda c: (c.tp_rank, c.sp_rank)),
        "sequence_data": grouped(lambda c: c.tp_rank),
    }


class ModelParallelGroups:
    """The process groups of this rank, created collectively (every rank must build one, in step)."""

    def __init__(self, rank: int, world_size: int, tp: int, sp: int):
        import torch.distributed as dist

        self.rank, self.tp, self.sp = rank, tp, sp
        self.coords = rank_coords(rank, tp, sp)
        self.dp = world_size // (tp * sp)
        mine: dict = {}
        for kind, groups in layout_groups(world_size, tp, sp).items():
            for ranks in groups:  # new_group is collective: every rank creates every group
                group = dist.new_group(ranks=ranks)
                if rank in ranks:
                    mine[kind] = (group, ranks)
        self._groups = mine

    def group(self, kind: str):
        return self._groups[kind][0]

    def ranks(self, kind: str) -> list[int]:
        return self._groups[kind][1]

    # the Megatron "mpu" interface DeepSpeed queries (deepspeed/utils/groups.py, runtime/engine.py)
    def get_model_parallel_group(self):
        return self.group("tensor")

    def get_model_parallel_rank(self) -> int:
        return self.coords.tp_rank

    def get_model_parallel_world_size(self) -> int:
        return self.tp

    get_tensor_model_parallel_group = get_model_parallel_group
    get_tensor_model_parallel_rank = get_model_parallel_rank
    get_tensor_model_parallel_world_size = get_model_parallel_world_size

    def get_tensor_model_parallel_src_rank(self) -> int:
        return self.ranks("tensor")[0]

    def get_data_parallel_group(self):
        return self.group("sequence_data")

    def get_data_parallel_rank(self) -> int:
        return self.ranks("sequence_data").index(self.rank)

    def get_data_parallel_world_size(self) -> int:
        return self.dp * self.sp

    def get_data_parallel_group_ranks(self) -> list[int]:
        return self.ranks("sequence_data")

    def get_pipeline_model_parallel_world_size(self) -> int:
        return 1

    def get_pipeline_model_parallel_rank(self) -> int:
        return 0
