"""Seconds per training step, measured by benchmarks/step_costs.py (do not edit by hand).

Last written for cpu (x86_64, 2 threads, edge-popup, torch 2.14.1+cu130).
"""

STEP_COSTS: dict[str, dict[str, dict[str, float]]] = {
    "cpu": {
        "cnn_small": {
            "batch": 32,
            "flops_per_sample": 10147072.0,
            "seconds": 0.01499
        },
        "conv2": {
            "batch": 32,
            "flops_per_sample": 87561216.0,
            "seconds": 0.083591
        },
        "conv4": {
            "batch": 32,
            "flops_per_sample": 196613120.0,
            "seconds": 0.131414
        },
        "conv6": {
            "batch": 32,
            "flops_per_sample": 307762176.0,
            "seconds": 0.170249
        },
        "conv8": {
            "batch": 32,
            "flops_per_sample": 419959808.0,
            "seconds": 0.242973
        },
        "convmixer_256_8": {
            "batch": 32,
            "flops_per_sample": 296227840.0,
            "seconds": 0.46338
        },
        "efficientnet_b0": {
            "batch": 4,
            "flops_per_sample": 769095104.0,
            "seconds": 0.350237
        },
        "lenet5_caffe": {
            "batch": 32,
            "flops_per_sample": 8612000.0,
            "seconds": 0.01978
        },
        "mlp": {
            "batch": 32,
            "flops_per_sample": 1905200.0,
            "seconds": 0.006507
        },
        "mlp_large": {
            "batch": 32,
            "flops_per_sample": 7350272.0,
            "seconds": 0.032073
        },
        "mlp_small": {
            "batch": 32,
            "flops_per_sample": 1709056.0,
            "seconds": 0.008212
        },
        "resnet101": {
            "batch": 4,
            "flops_per_sample": 15598755840.0,
            "seconds": 1.546148
        },
        "resnet110": {
            "batch": 32,
            "flops_per_sample": 506299648.0,
            "seconds": 0.446092
        },
        "resnet18": {
            "batch": 32,
            "flops_per_sample": 1110845440.0,
            "seconds": 0.672346
        },
        "resnet20": {
            "batch": 32,
            "flops_per_sample": 81626368.0,
            "seconds": 0.080625
        },
        "resnet32": {
            "batch": 32,
            "flops_per_sample": 138249472.0,
            "seconds": 0.152039
        },
        "resnet44": {
            "batch": 32,
            "flops_per_sample": 194872576.0,
            "seconds": 0.179116
        },
        "resnet50": {
            "batch": 4,
            "flops_per_sample": 8174313472.0,
            "seconds": 0.853245
        },
        "resnet56": {
            "batch": 32,
            "flops_per_sample": 251495680.0,
            "seconds": 0.230329
        },
        "resnext29_32x4d": {
            "batch": 32,
            "flops_per_sample": 1544966144.0,
            "seconds": 1.40388
        },
        "vgg16_bn": {
            "batch": 32,
            "flops_per_sample": 626403328.0,
            "seconds": 0.397047
        },
        "wide_resnet50_2": {
            "batch": 4,
            "flops_per_sample": 22791987200.0,
            "seconds": 2.505613
        }
    },
    "gpu": {}
}
