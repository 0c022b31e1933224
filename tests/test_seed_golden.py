"""Seeds stay bit-identical: the data order, the initial weights and the masks and weights after
a few steps, updates, cycles and rounds of every method, for fixed seeds, against sha256 digests
recorded from the code before the structure refactor (commit 58a1413).

A refactor that moves code must not change one bit of these; a deliberate change of a seed
stream re-records them (`python tests/test_seed_golden.py` prints the current digests).
Recorded on x86-64 CPU, one torch thread, torch's deterministic algorithms (run.deterministic):
a CPU with other float kernels could round differently; the failure names the item that moved.
Only entry points that outlive a refactor: ExperimentConfig.from_flat, load_data / DataBundle /
train_batches / sample_batch, the engine's build_state and run_experiment, read_masks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import torch

from trainables.config import ExperimentConfig
from trainables.data import DataBundle, load_data, sample_batch, train_batches
from trainables.loop import build_state, run_experiment
from trainables.sparse.mask_io import read_masks

TINY = {"data.dataset": "digits", "model.name": "mlp", "model.mlp_hidden": "32,16", "data.batch_size": 64,
        "run.max_steps_per_epoch": 3, "run.device": "cpu", "optim.name": "sgd", "optim.lr": 0.1,
        "optim.momentum": 0.9, "run.seed": 3}
SUPERMASK = {"method.prune_rate": 0.5}
METHODS: dict[str, dict[str, Any]] = {
    "dense": {"method.name": "dense", "schedule.epochs": 2},
    "edge_popup": {"method.name": "edge_popup", **SUPERMASK, "schedule.epochs": 2},
    "multicoat": {"method.name": "edge_popup", **SUPERMASK, "method.coats": 3, "schedule.epochs": 2},
    "iep_hard": {"method.name": "iep", "method.pruning": "hard", "method.cycles": 3, "schedule.epochs": 1},
    "iep_soft": {"method.name": "iep", "method.pruning": "soft", "method.cycles": 3, "schedule.epochs": 1},
    "iep_soft_score_reinit": {"method.name": "iep", "method.pruning": "soft", "method.score_reset": "reinit",
                              "method.cycles": 3, "schedule.epochs": 1},
    "dense_lrr": {"method.name": "dense_lrr", "method.cycles": 3, "schedule.epochs": 1},
    "dst_magnitude_random": {"method.name": "dst", "method.density": 0.3, "method.criterion": "magnitude",
                             "method.growth": "random", "method.update_period": 2, "schedule.epochs": 2},
    "dst_snip_gradient": {"method.name": "dst", "method.density": 0.3, "method.criterion": "snip",
                          "method.growth": "gradient", "method.update_period": 2, "schedule.epochs": 2},
    "dst_set_random_global": {"method.name": "dst", "method.density": 0.3, "method.criterion": "set",
                              "method.growth": "random", "method.scope": "global", "method.update_period": 2,
                              "method.update_batch_size": 32, "schedule.epochs": 2},
    "imp": {"method.name": "imp", "method.rounds": 3, "schedule.epochs": 1},
}

# Recorded from commit 58a1413 (torch 2.14.1+cu130, x86-64 CPU).
# IMP's per-round artifacts are named by round (the reinit's histograms as reinit_cycle_RR): the
# digests recorded from 58a1413 under the engine's cycle numbers, each under its round's name.
GOLDEN: dict[str, str] = {
    "data/digits_tensors": "f8ac982afe789a5d2cc92269bf2e3ddf7ed07cc9834dbcc15ea36a0c45ed88a9",
    "data/order_seed0_epoch0": "b6fac9764a812fc9b143df02fca4952cc8a10cbabd59ba75386f265ff7b4490b",
    "data/shard_1of2_seed0_epoch0": "53cbb380d27e72bac5378576ccc88d7df1c11a64795667dce75a9c32eb05b5a4",
    "data/order_seed0_epoch1": "7c67905f908e3a50c1b6241358b4465346271e19cceda70241ac3ec44bb8a2b8",
    "data/shard_1of2_seed0_epoch1": "711b97d3443535a7cadb7c849b497ebd8a4f29404b05bae0500e421df6879b6c",
    "data/sample_batch_seed0": "25162088a79772212a4bb877962f4462741e7b3f6bf4e3dae3b32f35df5b7c88",
    "data/augment_seed0": "105f5ec57db0d85f93c21a55b8fc0f163c7e34aeae5495341e36df332f69fe61",
    "data/order_seed3_epoch0": "d69cc98d4b77b5995ebe23514f31643d3ced7068d6c6f6d076d4dc4cc9dbb57b",
    "data/shard_1of2_seed3_epoch0": "3df65c6acb316d4e27d00879bf57ed6c993fffc8ec967dd176cafe25a7b35799",
    "data/order_seed3_epoch1": "1046bdba8996626766d2c2e73d3ebee90b814dd9af4a3d533f101f1784c9126c",
    "data/shard_1of2_seed3_epoch1": "e13697acc11c8ebedf7a033b707d96afcbe3647a7dc5d356ef944a4da1b7fa17",
    "data/sample_batch_seed3": "4e3c6e7348e324cc21ef6026ee4507de0bd22129e1b74fdb053bbd24717a9538",
    "data/augment_seed3": "08225a159f589c8efe8b994cf15f88c3113e9766e4c427eb4a6fff16b678f6d6",
    "dense/init": "55b807b23285aa926864302efcce72b626905337c7876bef83a205aff643bfae",
    "dense/final_weights": "6fad0d6e0d2cd3e2c5237ad10f7f5b2b774f6cc2f54049ebbf67aaf9837042d0",
    "edge_popup/init": "1d27ef5d67a852ead58f474e4c67b54a6822fc1cd69d3e664285258d69a61d8a",
    "edge_popup/final_weights": "d44bf12179088e869f0c902877a72adb5f14b0edfa73ace8a4f6a6acc6f1c66e",
    "edge_popup/final_masks": "dc39ad8835e4ba14ec19f6fa61f7eecad94edbfb31edca02e9b2f7d7c4ca51a7",
    "edge_popup/masks/cycle_01.parquet": "dc39ad8835e4ba14ec19f6fa61f7eecad94edbfb31edca02e9b2f7d7c4ca51a7",
    "edge_popup/ranks/cycle_01.parquet": "01831097bf937e2249b6e3858bb1032364e4c4f9a158b6e7e4472d598597b2db",
    "edge_popup/visits/cycle_01.parquet": "22a866f1d5ce31c8dfb3f4a82b123ce2bb179e8de59ca4f7ee6cb6fb18e7a735",
    "multicoat/init": "1d27ef5d67a852ead58f474e4c67b54a6822fc1cd69d3e664285258d69a61d8a",
    "multicoat/final_weights": "32cca4f9097b0ddb4a47b09f06ceaf329d9a4b477cd3e1e14823e7c9cc6b9ef7",
    "multicoat/final_masks": "b653a7d5ca0bc2f2db5afd512ec73881b4930829a4712fe5a81b90cfa694297a",
    "multicoat/coats/cycle_01.parquet": "4a56859cd8269b48af550303d524195cfa38486bf169c4a557e2fae10175fe97",
    "multicoat/masks/cycle_01.parquet": "b653a7d5ca0bc2f2db5afd512ec73881b4930829a4712fe5a81b90cfa694297a",
    "multicoat/ranks/cycle_01.parquet": "9dabd6ede2406d754ecec549948d88af3586f0efced3f482d0fe8079207a53bf",
    "multicoat/visits/cycle_01.parquet": "a643213a617cdc9758407beae62dd87757a18277105f32e4097a85c042a1c147",
    "iep_hard/init": "f63f67c70d80776b8c30e0c926876851476f40d2720e50973f277b870a7e98be",
    "iep_hard/final_weights": "c56eac8eec9eb0f3159a5c92e4d689ae0ebcef45a3b1cead8f6519832775de78",
    "iep_hard/final_masks": "52af7982555768000222da5d81a8e2fa0b0ca6df86e81c5f89aef905fa6d7d33",
    "iep_hard/masks/cycle_01.parquet": "1082408fa60fc86fe61db6b523a2bd0b11fc7518505824f66711d3fec6bd6eb8",
    "iep_hard/masks/cycle_02.parquet": "697e2c5ea2a7f77e0e2b43f049a531c67c643b3e5abfdccdbb680aafd4c5e40e",
    "iep_hard/masks/cycle_03.parquet": "52af7982555768000222da5d81a8e2fa0b0ca6df86e81c5f89aef905fa6d7d33",
    "iep_hard/ranks/cycle_01.parquet": "36a5f08f65cb8e24363b15a610e76459479e7060f09147ff830c726705adcc3d",
    "iep_hard/ranks/cycle_02.parquet": "8927d33728579ec911d4633cf2fb98e48424cab7d8e90a9170d14f888ac0df5b",
    "iep_hard/ranks/cycle_03.parquet": "9dcdd01744733f28ec6228c8e5fe11be79da524432c0e2e580ca3d039126c2cf",
    "iep_hard/visits/cycle_01.parquet": "1f58d8571e4e7eea3656cd07a7a925ae72f569a5a15827b652d390df022dd962",
    "iep_hard/visits/cycle_02.parquet": "683b7216b76189a6b3603128b8546e7e3ace410313314ef3acd5dfc5dfc1bb92",
    "iep_hard/visits/cycle_03.parquet": "dcd672fde975570f19284722260ebfef6a0b7bfff30d8d0017096540379cbb70",
    "iep_soft/init": "1d27ef5d67a852ead58f474e4c67b54a6822fc1cd69d3e664285258d69a61d8a",
    "iep_soft/final_weights": "1f74eccec0758a99e11737fac0626fdd93c6173ed9d93c8884cfcbb295b0f639",
    "iep_soft/final_masks": "52af7982555768000222da5d81a8e2fa0b0ca6df86e81c5f89aef905fa6d7d33",
    "iep_soft/masks/cycle_01.parquet": "1082408fa60fc86fe61db6b523a2bd0b11fc7518505824f66711d3fec6bd6eb8",
    "iep_soft/masks/cycle_02.parquet": "697e2c5ea2a7f77e0e2b43f049a531c67c643b3e5abfdccdbb680aafd4c5e40e",
    "iep_soft/masks/cycle_03.parquet": "52af7982555768000222da5d81a8e2fa0b0ca6df86e81c5f89aef905fa6d7d33",
    "iep_soft/ranks/cycle_01.parquet": "36a5f08f65cb8e24363b15a610e76459479e7060f09147ff830c726705adcc3d",
    "iep_soft/ranks/cycle_02.parquet": "6ffe5790dae64fd88632a557fbb9afca052e7a384f10b2c805d69205f832cc88",
    "iep_soft/ranks/cycle_03.parquet": "70bf9f6ace2390fab7f91bb5b682e2a5aa30713508a4c31f97e24495124a9326",
    "iep_soft/visits/cycle_01.parquet": "1f58d8571e4e7eea3656cd07a7a925ae72f569a5a15827b652d390df022dd962",
    "iep_soft/visits/cycle_02.parquet": "683b7216b76189a6b3603128b8546e7e3ace410313314ef3acd5dfc5dfc1bb92",
    "iep_soft/visits/cycle_03.parquet": "dcd672fde975570f19284722260ebfef6a0b7bfff30d8d0017096540379cbb70",
    "iep_soft_score_reinit/init": "1d27ef5d67a852ead58f474e4c67b54a6822fc1cd69d3e664285258d69a61d8a",
    "iep_soft_score_reinit/final_weights": "dbada22dbb8d927bd7141dff79483dfada56aa78e033b7b0240f7b235223a833",
    "iep_soft_score_reinit/final_masks": "61416bc42f33ed0e29db3d0deae19534056ccfaf2708307ce380287216662960",
    "iep_soft_score_reinit/masks/cycle_01.parquet": "1082408fa60fc86fe61db6b523a2bd0b11fc7518505824f66711d3fec6bd6eb8",
    "iep_soft_score_reinit/masks/cycle_02.parquet": "7f22d588633369551ad6f53be1c8f4a4a84bbea734793f31837d9486df9ed77f",
    "iep_soft_score_reinit/masks/cycle_03.parquet": "61416bc42f33ed0e29db3d0deae19534056ccfaf2708307ce380287216662960",
    "iep_soft_score_reinit/ranks/cycle_01.parquet": "36a5f08f65cb8e24363b15a610e76459479e7060f09147ff830c726705adcc3d",
    "iep_soft_score_reinit/ranks/cycle_02.parquet": "3076f706264b82730ddb17a2ce531e40f598acabf8d0f2620a916d650c468257",
    "iep_soft_score_reinit/ranks/cycle_03.parquet": "c411f412b1adcc04981848cad4e239bc3883ace9c96c1910b284dc55895f673e",
    "iep_soft_score_reinit/visits/cycle_01.parquet": "1f58d8571e4e7eea3656cd07a7a925ae72f569a5a15827b652d390df022dd962",
    "iep_soft_score_reinit/visits/cycle_02.parquet": "bdc99904699f8d7e979a36f4249c679447b03fd774c7fe07b1cd706bf6e0d87c",
    "iep_soft_score_reinit/visits/cycle_03.parquet": "32e1d2df3bb0c54fa3ad463e863f25cf76476e68ac35a205eeb67ad824c3d768",
    "dense_lrr/init": "40cc90ce7707a25bccd443604ced14d0eca42d2650f1e3da98b6705f5fc00bc9",
    "dense_lrr/final_weights": "968231324e9f2cf758e36e70b09ea9a4b3c788cc0a325a6f9b04aadaa683bbd4",
    "dense_lrr/final_masks": "7482d253aaca30ece1ce5895b764268f5403357dc3f05207f6d8d96175d7c1a6",
    "dense_lrr/masks/cycle_01.parquet": "c4cb322b9717ea197f83ffa582ea621a548a25410f6e85a2a54927d4b66ef137",
    "dense_lrr/masks/cycle_02.parquet": "b820f84724d1470a678805c6d5c5252f34843aea4db7e3982ecdb21d4d9d0575",
    "dense_lrr/masks/cycle_03.parquet": "1286da8aba22cca91ec5106435c916a52283a6e04b9793cea1f01c506c0c7031",
    "dense_lrr/masks/cycle_04.parquet": "7482d253aaca30ece1ce5895b764268f5403357dc3f05207f6d8d96175d7c1a6",
    "dst_magnitude_random/init": "d1622efb7a2ad6ac0899978c2d980d1d64fd23acd053494f261808b7d3fbee80",
    "dst_magnitude_random/final_weights": "f72842abd5e2645d419209f1c205227e49347cc603e18b660429bfaa41dc2407",
    "dst_magnitude_random/final_masks": "5b5e735bd42fbc138330b03d890a83b51518c20999c737a552c505ddb01db401",
    "dst_magnitude_random/criteria_jaccard/cycle_01.parquet": "0edf285bef66d84ab697ebfff30178b9c25450039e9138354c0ecae6c0f98a01",
    "dst_magnitude_random/init_masks/cycle_01.parquet": "1eb94f931089ef9db638a26c1cb5e6d8661ff9fa1a4eafa1abdc3371b546b4b9",
    "dst_magnitude_random/masks/cycle_01.parquet": "5b5e735bd42fbc138330b03d890a83b51518c20999c737a552c505ddb01db401",
    "dst_snip_gradient/init": "d1622efb7a2ad6ac0899978c2d980d1d64fd23acd053494f261808b7d3fbee80",
    "dst_snip_gradient/final_weights": "fda6b93f5e843e48d7e3c3d7a6df40c84e74ccea827ce3fdd6ef06fe95177649",
    "dst_snip_gradient/final_masks": "15b2ba6ee586dbe571c8c8afb4b4aa4dda615ba9242600425886075c8d36e3f0",
    "dst_snip_gradient/criteria_jaccard/cycle_01.parquet": "1102b9acc961479ab62c590c7231fd8578df0f33d7ac0b655ff42f7561d02c99",
    "dst_snip_gradient/init_masks/cycle_01.parquet": "1eb94f931089ef9db638a26c1cb5e6d8661ff9fa1a4eafa1abdc3371b546b4b9",
    "dst_snip_gradient/masks/cycle_01.parquet": "15b2ba6ee586dbe571c8c8afb4b4aa4dda615ba9242600425886075c8d36e3f0",
    "dst_set_random_global/init": "d1622efb7a2ad6ac0899978c2d980d1d64fd23acd053494f261808b7d3fbee80",
    "dst_set_random_global/final_weights": "8ded8920ed251369201ff292fb6373e6cf7d04290707e393d7fab0172bd6d521",
    "dst_set_random_global/final_masks": "8cfcd067f691a506cfc51af61302286781ca30041b6bcbaa5e48d0b69db68e8a",
    "dst_set_random_global/criteria_jaccard/cycle_01.parquet": "24ee906ea86d75c3626be670baa8e8640b196f09e73d4fd338905ccba2216056",
    "dst_set_random_global/init_masks/cycle_01.parquet": "1eb94f931089ef9db638a26c1cb5e6d8661ff9fa1a4eafa1abdc3371b546b4b9",
    "dst_set_random_global/masks/cycle_01.parquet": "8cfcd067f691a506cfc51af61302286781ca30041b6bcbaa5e48d0b69db68e8a",
    "imp/init": "40cc90ce7707a25bccd443604ced14d0eca42d2650f1e3da98b6705f5fc00bc9",
    "imp/final_weights": "f36cf20ceeddb422171f16876bec38a8b41b1d3ede960f3b4ab848adb0d9eadb",
    "imp/final_masks": "a5b68ede5646d0aa9aee911bf470145cdf54acb1fbbf9b9510056ee5f07161dc",
    "imp/distances/cycle_01.parquet": "7cff89a06e74d7b99fa0a426847fedf311a584258e4928d4fbcc38b737ec3c1b",
    "imp/distances/cycle_02.parquet": "cd9a0ea0786c886551ccfb6408130f0b4f836b26489d277232266216c3868fbd",
    "imp/distances/cycle_03.parquet": "0421e8a6ed92526cf08e185c27fb904f9207003b2d18419700b01ac78be1b71f",
    "imp/histograms/cycle_01.parquet": "915299dd8bf8d1af2770d6354481bb6216e2a10e1c496f96a63c5bbbde2245d9",
    "imp/histograms/reinit_cycle_02.parquet": "c4a3316341ff4968425bf1bea350070cd88ea552792bba06ceb70114020703d2",
    "imp/histograms/cycle_02.parquet": "5fe6e87dd0ddf5a9036b1f94a8f45db3be9fcc11907875cbe8e5faf88f60afe3",
    "imp/histograms/reinit_cycle_03.parquet": "17ee904978da86db28a2de0e7cbce60e35a35b73ecf450aa7586b6f79ddb3e7b",
    "imp/histograms/cycle_03.parquet": "1750c10caa3c057a553f644bdb5faa1bdcf34e8da674bfbbf1f871900fccd117",
    "imp/lmc/cycle_02.parquet": "692d1a0fde55680b803a50a14fbed58a3a3658cb8d4ef199bea841032ca3a640",
    "imp/lmc/cycle_03.parquet": "39c5e9c89c319b876864bac3fe4169653a8415e718a71df240f1ea644876154a",
    "imp/masks/cycle_01.parquet": "c4cb322b9717ea197f83ffa582ea621a548a25410f6e85a2a54927d4b66ef137",
    "imp/masks/cycle_02.parquet": "b820f84724d1470a678805c6d5c5252f34843aea4db7e3982ecdb21d4d9d0575",
    "imp/masks/cycle_03.parquet": "a5b68ede5646d0aa9aee911bf470145cdf54acb1fbbf9b9510056ee5f07161dc",
}


def _cfg(**flat: Any) -> ExperimentConfig:
    return ExperimentConfig.from_flat({**TINY, **flat})


def _h(*parts: Any) -> str:
    h = hashlib.sha256()
    for p in parts:
        if isinstance(p, torch.Tensor):
            t = p.detach().cpu().contiguous()
            h.update(f"{t.dtype}{tuple(t.shape)}".encode())
            h.update(t.view(torch.uint8).numpy().tobytes() if t.dtype == torch.bool else t.numpy().tobytes())
        else:
            h.update(repr(p).encode())
    return h.hexdigest()


def _state_digest(tensors: Mapping[str, torch.Tensor]) -> str:
    return _h(*[x for k in sorted(tensors) for x in (k, tensors[k])])


def _data_digests(bundle: DataBundle) -> Iterator[tuple[str, str]]:
    yield "data/digits_tensors", _h(bundle.train_x, bundle.train_y, bundle.test_x, bundle.test_y,
                                    bundle.mean, bundle.std)
    # labels replaced by the example's index: a batch's labels are then its indices
    probe = dataclasses.replace(bundle, train_y=torch.arange(bundle.n_train))
    for seed in (0, 3):
        for epoch in (0, 1):
            kw = {"batch_size": 64, "epoch": epoch, "seed": seed, "augment": False}
            first = [y.tolist() for _, (_, y) in zip(range(3), train_batches(probe, **kw), strict=False)]
            yield f"data/order_seed{seed}_epoch{epoch}", _h(first)
            shard = [y.tolist() for _, (_, y) in zip(range(3), train_batches(probe, rank=1, world_size=2, **kw),
                                                     strict=False)]
            yield f"data/shard_1of2_seed{seed}_epoch{epoch}", _h(shard)
        x, y = sample_batch(probe, 32, key=0, seed=seed, augment=False)
        yield f"data/sample_batch_seed{seed}", _h(y.tolist(), x)
        # the crop + flip stream (CIFAR's augmentation, applied to the 8x8 digits)
        x, y = next(train_batches(probe, batch_size=64, epoch=0, seed=seed, augment=True, dataset="cifar10"))
        yield f"data/augment_seed{seed}", _h(y.tolist(), x)


def _method_digests(name: str, flat: dict[str, Any], data: DataBundle) -> Iterator[tuple[str, str]]:
    cfg = _cfg(**flat)
    state = build_state(cfg, torch.device("cpu"), 3)  # what the engine starts from
    yield f"{name}/init", _state_digest(state.model.state_dict())
    last: list[Path] = []
    with tempfile.TemporaryDirectory() as tmp:
        def keep(metrics: dict[str, float], ckpt: Path | None) -> None:
            if ckpt is not None:
                dest = Path(tmp) / f"c{len(last)}"
                shutil.copytree(ckpt, dest)
                last.append(dest)

        run_experiment(cfg, reporter=keep, data=data)
        final = last[-1]
        blob = torch.load(final / "state.pt", map_location="cpu", weights_only=True)
        yield f"{name}/final_weights", _state_digest(blob["model"])
        if (final / "masks.parquet").is_file():
            yield f"{name}/final_masks", _state_digest(read_masks(final / "masks.parquet"))
        # every cycle's masks, and the tables drawn from seeded samples (score ranks, visits, ...)
        for path in sorted((final / "artifacts").rglob("*.parquet")):
            rel = path.relative_to(final / "artifacts").as_posix()
            if path.parent.name in ("masks", "init_masks"):
                yield f"{name}/{rel}", _state_digest(read_masks(path))
            else:
                yield f"{name}/{rel}", _h(pq.read_table(path).to_pylist())


def current_digests() -> dict[str, str]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        data = load_data(_cfg().data, progress=False)
        out = dict(_data_digests(data))
        for name, flat in METHODS.items():
            out.update(_method_digests(name, flat, data))
        return out
    finally:
        torch.set_num_threads(threads)


def test_seeds_are_bit_identical_to_the_recorded_digests() -> None:
    got = current_digests()
    assert sorted(got) == sorted(GOLDEN), "the recorded items changed: " + repr(sorted(set(got) ^ set(GOLDEN)))
    moved = [k for k in GOLDEN if got[k] != GOLDEN[k]]
    assert not moved, f"{len(moved)} of {len(GOLDEN)} digests moved: {moved}"


if __name__ == "__main__":
    for key, digest in current_digests().items():
        sys.stdout.write(f'    "{key}": "{digest}",\n')
