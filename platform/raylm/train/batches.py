"""Turn a loader batch into the keyword arguments of each architecture's training objective.

GPT: next-token prediction on the packed block. BERT: masked LM (Devlin et al. 2019) on the
block's first ``seq_len`` tokens. T5: span corruption (Raffel et al. 2020) of the same tokens.
The masking and corruption randomness comes from a generator seeded by ``(seed, step, micro,
rank)``, so a resumed run draws exactly what an uninterrupted one would have.
"""

from __future__ import annotations

import torch

from raylm.data.loader import Batch
from raylm.data.tokenizer import SpecialTokens
from raylm.model.objectives import mlm_mask, span_corruption_batch


def objective_generator(seed: int, step: int, micro: int, rank: int) -> torch.Generator:
    return torch.Generator().manual_seed(hash((seed, step, micro, rank)) & 0x7FFF_FFFF_FFFF_FFFF)


def model_inputs(arch: str, batch: Batch, specials: SpecialTokens, vocab_size: int,
                 generator: torch.Generator) -> dict[str, torch.Tensor]:
    if arch == "gpt":
        return {"ids": batch.inputs, "targets": batch.targets}
    if arch == "bert":
        mask_id = specials.require("mask_id", "BERT's masked-LM objective")
        never = [i for i in (specials.pad_id, specials.bos_id, specials.eos_id, specials.cls_id, specials.sep_id,
                             mask_id) if i is not None]
        ids, labels = mlm_mask(batch.inputs, mask_id, vocab_size, never, generator=generator)
        return {"ids": ids, "mlm_labels": labels}
    if arch == "t5":
        eos = specials.require("eos_id", "T5's span-corruption objective")
        if not specials.sentinel_ids:
            raise ValueError("T5 needs sentinel tokens <extra_id_i>; set data.num_sentinels > 0 and retokenize")
        start = specials.pad_id if specials.pad_id is not None else 0
        enc, dec, targets = span_corruption_batch(batch.inputs, list(specials.sentinel_ids), eos, start,
                                                  generator=generator)
        return {"ids": enc, "decoder_ids": dec, "targets": targets}
    raise ValueError(f"unknown architecture {arch!r}")
