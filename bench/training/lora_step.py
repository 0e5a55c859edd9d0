#!/usr/bin/python3
"""The reference for bench_train: the same LoRA training step in PyTorch-Python.

A Llama-shaped decoder (RMSNorm, rotate-half RoPE, grouped-query attention,
SwiGLU, tied head) with frozen base weights and LoRA (r, alpha) on q_proj and
v_proj, trained with AdamW on random tokens. Prints one line:
  tokens_per_s=<float> peak_rss_mb=<float> cpu_tokens_per_s=<float>
Usage: lora_step.py CONFIG THREADS STEPS   (CONFIG: tiny | smollm135m)
"""
import math
import resource
import sys
import time

import torch
import torch.nn.functional as F

CONFIGS = {
    "tiny": dict(hidden=256, inter=688, layers=4, heads=8, kv=4, vocab=261),
    "smollm135m": dict(hidden=576, inter=1536, layers=30, heads=9, kv=3, vocab=49152),
}


def main():
    name, threads, steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    c = CONFIGS[name]
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    batch, seq, rank, alpha = 4, 256, 8, 16.0
    h, nh, nkv = c["hidden"], c["heads"], c["kv"]
    hd = h // nh

    def w(*shape):
        return (torch.randn(*shape) * 0.02).requires_grad_(False)

    embed = w(c["vocab"], h)
    layers = []
    lora = []
    for _ in range(c["layers"]):
        layers.append(dict(an=torch.ones(h), mn=torch.ones(h), q=w(nh * hd, h), k=w(nkv * hd, h),
                           v=w(nkv * hd, h), o=w(h, nh * hd), g=w(c["inter"], h), u=w(c["inter"], h),
                           d=w(h, c["inter"])))
        bound = 1.0 / math.sqrt(h)
        qa = torch.empty(rank, h).uniform_(-bound, bound).requires_grad_()
        qb = torch.zeros(nh * hd, rank, requires_grad=True)
        va = torch.empty(rank, h).uniform_(-bound, bound).requires_grad_()
        vb = torch.zeros(nkv * hd, rank, requires_grad=True)
        lora.append((qa, qb, va, vb))
    norm = torch.ones(h)
    params = [p for group in lora for p in group]
    opt = torch.optim.AdamW(params, lr=1e-3, weight_decay=0.0)
    scale = alpha / rank

    inv = 1.0 / (10000.0 ** (torch.arange(0, hd, 2).float() / hd))
    freqs = torch.outer(torch.arange(seq).float(), inv)
    cos = torch.cat([freqs.cos(), freqs.cos()], -1)
    sin = torch.cat([freqs.sin(), freqs.sin()], -1)
    causal = torch.full((seq, seq), float("-inf")).triu(1)

    def rms(x, weight):
        return weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5))

    def rot(x):
        half = x.shape[-1] // 2
        return torch.cat([-x[..., half:], x[..., :half]], -1)

    def forward(tokens):
        x = F.embedding(tokens, embed)
        for L, (qa, qb, va, vb) in zip(layers, lora):
            xn = rms(x, L["an"])
            q = F.linear(xn, L["q"]) + F.linear(F.linear(xn, qa), qb) * scale
            k = F.linear(xn, L["k"])
            v = F.linear(xn, L["v"]) + F.linear(F.linear(xn, va), vb) * scale
            q = q.view(batch, seq, nh, hd).transpose(1, 2)
            k = k.view(batch, seq, nkv, hd).transpose(1, 2)
            v = v.view(batch, seq, nkv, hd).transpose(1, 2)
            q = q * cos + rot(q) * sin
            k = k * cos + rot(k) * sin
            k = k.repeat_interleave(nh // nkv, 1)
            v = v.repeat_interleave(nh // nkv, 1)
            p = torch.softmax(q @ k.transpose(-1, -2) / math.sqrt(hd) + causal, -1)
            x = x + F.linear((p @ v).transpose(1, 2).reshape(batch, seq, h), L["o"])
            xn = rms(x, L["mn"])
            x = x + F.linear(F.silu(F.linear(xn, L["g"])) * F.linear(xn, L["u"]), L["d"])
        return F.linear(rms(x, norm), embed)

    tokens = torch.randint(0, c["vocab"], (batch, seq))

    def step():
        logits = forward(tokens)
        loss = F.cross_entropy(logits[:, :-1].reshape(-1, c["vocab"]), tokens[:, 1:].reshape(-1))
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()

    step()  # warm-up
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(steps):
        step()
    seconds = time.perf_counter() - start
    cpu = time.process_time() - cpu_start
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    tokens = batch * seq * steps
    print(f"tokens_per_s={tokens / seconds:.1f} peak_rss_mb={rss:.0f} cpu_tokens_per_s={tokens / cpu:.1f}")


if __name__ == "__main__":
    main()
