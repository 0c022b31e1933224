"""Inference export of a sparse trial's network, and its measured latency against dense.

`fold`: masks folded into the weights (θ0 ⊙ m, θ0 ⊙ Σ m_i, θ ⊙ m) in a plain PyTorch model,
written as safetensors + a torch.export program + a JSON description (loads with torch only).
`latency`: CSR (CPU) execution chosen per layer by measurement, never slower than dense.
`semi_structured`: the GPU 2:4 path (`torch.sparse.to_sparse_semi_structured`).
"""
