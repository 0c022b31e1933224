"""Seconds per training step, measured by benchmarks/step_costs.py (do not edit by hand).

Last written for cpu (x86_64, 2 threads, edge-popup, torch 2.14.1+cu130).
"""

STEP_COSTS: dict[str, dict[str, dict[str, float]]] = {
    "cpu": {
        "cnn_small": {
            "batch": 32,
            "flops_per_sample": 10147072.0,
            "seconds": 0.470702
        },
        "conv2": {
            "batch": 32,
            "flops_per_sample": 87561216.0,
            "seconds": 3.336016
        },
        "conv4": {
            "batch": 32,
            "flops_per_sample": 196613120.0,
            "seconds": 2.033152
        },
        "conv6": {
            "batch": 32,
            "flops_per_sample": 307762176.0,
            "seconds": 2.755829
        },
        "conv8": {
            "batch": 32,
            "flops_per_sample": 419959808.0,
            "seconds": 3.654199
        },
        "convmixer_256_8": {
            "batch": 32,
            "flops_per_sample": 296227840.0,
            "seconds": 4.124281
        },
        "efficientnet_b0": {
            "batch": 4,
            "flops_per_sample": 769095104.0,
            "seconds": 16.478276
        },
        "lenet5_caffe": {
            "batch": 32,
            "flops_per_sample": 8612000.0,
            "seconds": 0.225222
        },
        "mlp": {
            "batch": 32,
            "flops_per_sample": 1905200.0,
            "seconds": 0.506262
        },
        "mlp_large": {
            "batch": 32,
            "flops_per_sample": 7350272.0,
            "seconds": 0.183464
        },
        "mlp_small": {
            "batch": 32,
            "flops_per_sample": 1709056.0,
            "seconds": 0.333513
        },
        "resnet101": {
            "batch": 4,
            "flops_per_sample": 15598755840.0,
            "seconds": 19.673811
        },
        "resnet110": {
            "batch": 32,
            "flops_per_sample": 506299648.0,
            "seconds": 3.345473
        },
        "resnet18": {
            "batch": 32,
            "flops_per_sample": 1110845440.0,
            "seconds": 6.993073
        },
        "resnet20": {
            "batch": 32,
            "flops_per_sample": 81626368.0,
            "seconds": 2.649833
        },
        "resnet32": {
            "batch": 32,
            "flops_per_sample": 138249472.0,
            "seconds": 6.01595
        },
        "resnet44": {
            "batch": 32,
            "flops_per_sample": 194872576.0,
            "seconds": 3.225409
        },
        "resnet50": {
            "batch": 4,
            "flops_per_sample": 8174313472.0,
            "seconds": 12.974143
        },
        "resnet56": {
            "batch": 32,
            "flops_per_sample": 251495680.0,
            "seconds": 2.850801
        },
        "resnext29_32x4d": {
            "batch": 32,
            "flops_per_sample": 1544966144.0,
            "seconds": 12.036191
        },
        "vgg16_bn": {
            "batch": 32,
            "flops_per_sample": 626403328.0,
            "seconds": 2.724807
        },
        "wide_resnet50_2": {
            "batch": 4,
            "flops_per_sample": 22791987200.0,
            "seconds": 30.003654
        }
    },
    "gpu": {}
}
