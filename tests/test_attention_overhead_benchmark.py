"""benchmarks/attention_overhead.py, imported by path: a pair of networks differs only by the
attention the attended one adds, and the unfused path it times is the paper's formulation."""

import pytest
import torch


@pytest.fixture(scope="module")
def bench(load_script):
    return load_script("benchmarks/attention_overhead.py")


#: (partner's name, attended network's name) of channel-gate weights a composition shares
GATE_NAMES = {
    "nlsam": [],
    "se+nlsam": [("stages.layer2.0.attention.fc1.weight", "stages.layer2.0.attention.0.fc1.weight")],
    "cbam+nlsam": [
        ("stages.layer1.0.attention.0.mlp.0.weight", "stages.layer1.0.attention.mlp.0.weight"),
        ("stages.layer3.2.attention.0.mlp.2.weight", "stages.layer3.2.attention.0.mlp.2.weight"),
    ],
}


@pytest.mark.parametrize("attended", ["nlsam", "se+nlsam", "cbam+nlsam"])
def test_pair_shares_every_common_weight(bench, attended):
    args = bench.parse_args(["--smoke", "--only", "train:resnet20"])
    workload = bench.make_workloads(args)[0]
    partner_name = bench.partner_of(attended)
    partner = bench.build_network(workload, partner_name)
    alone = bench.build_network(workload, attended)
    shared = bench.build_network(workload, attended, partner=partner)
    source = partner.state_dict()
    backbone = [name for name in source if ".attention" not in name]
    # seeded construction alone gives different backbones: the attention draws from the stream
    assert any(not torch.equal(alone.state_dict()[name], source[name]) for name in backbone)
    for name in backbone:
        assert torch.equal(shared.state_dict()[name], source[name]), name
    # the partner's channel gate is the first (or, where NL-SAM is not placed, the only) part
    # of the composition, with the same weights
    for source_name, target_name in GATE_NAMES[attended]:
        assert torch.equal(shared.state_dict()[target_name], source[source_name])


def test_unfused_path_is_the_paper_formulation_and_is_restored(bench):
    import nlsam.models.resnet as resnet
    from nlsam.attention.nlsam import NLSAM

    saved = (resnet.add_attended, NLSAM.forward)
    args = bench.parse_args(["--smoke", "--only", "train:resnet20"])
    workload = bench.make_workloads(args)[0]
    model = bench.build_network(workload, "nlsam").eval()
    assert bench.fused_unfused_difference(model, workload) < bench.AGREEMENT_TOLERANCE
    with bench.unfused_path():
        assert resnet.add_attended is not saved[0] and NLSAM.forward is not saved[1]
    assert (resnet.add_attended, NLSAM.forward) == saved
