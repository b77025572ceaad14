"""Writes a random-weight Hugging Face checkpoint of a real model's shape, generating the weights on the GPU
(so an 8B checkpoint takes seconds, not minutes):

  python3 bench/make_random_checkpoint.py <out-dir> [--config llama3-8b] [--layers N] [--seed S]

Configs: llama3-8b (Llama-3.1-8B shape: 32 layers, 32/8 heads, head 128, d 4096, MLP 14336, vocab 128256,
rope_theta 500000 with llama3 scaling, 131072 context). Weights are bf16 N(0, 0.02²) (norms 1), in ~2 GiB
safetensors shards with an index; the tokenizer is the repository's moa-tiny byte-level BPE (the benchmark feeds
token ids directly, so its 4096-token vocabulary does not limit the model's).
"""
import argparse
import json
import os
import shutil

import torch
from safetensors.torch import save_file

CONFIGS = {
    "llama3-8b": {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": 4096,
        "intermediate_size": 14336,
        "num_hidden_layers": 32,
        "num_attention_heads": 32,
        "num_key_value_heads": 8,
        "head_dim": 128,
        "vocab_size": 128256,
        "max_position_embeddings": 131072,
        "rms_norm_eps": 1e-5,
        "rope_theta": 500000.0,
        "rope_scaling": {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                         "original_max_position_embeddings": 8192},
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "tie_word_embeddings": False,
        "bos_token_id": 0,
        "eos_token_id": 1,
        "torch_dtype": "bfloat16",
    },
}


def tensors_of(config):
    d, ff, v = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    hd = config["head_dim"]
    q, kv = config["num_attention_heads"] * hd, config["num_key_value_heads"] * hd
    yield "model.embed_tokens.weight", (v, d)
    for l in range(config["num_hidden_layers"]):
        p = f"model.layers.{l}."
        yield p + "input_layernorm.weight", (d,)
        yield p + "self_attn.q_proj.weight", (q, d)
        yield p + "self_attn.k_proj.weight", (kv, d)
        yield p + "self_attn.v_proj.weight", (kv, d)
        yield p + "self_attn.o_proj.weight", (d, q)
        yield p + "post_attention_layernorm.weight", (d,)
        yield p + "mlp.gate_proj.weight", (ff, d)
        yield p + "mlp.up_proj.weight", (ff, d)
        yield p + "mlp.down_proj.weight", (d, ff)
    yield "model.norm.weight", (d,)
    yield "lm_head.weight", (v, d)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--config", default="llama3-8b", choices=sorted(CONFIGS))
    parser.add_argument("--layers", type=int)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    config = dict(CONFIGS[args.config])
    if args.layers:
        config["num_hidden_layers"] = args.layers
    os.makedirs(args.out, exist_ok=True)
    generator = torch.Generator(device="cuda").manual_seed(args.seed)
    shard, shard_bytes, shards, weight_map = {}, 0, [], {}

    def flush():
        nonlocal shard, shard_bytes
        if shard:
            name = f"model-{len(shards) + 1:05d}.safetensors"
            save_file(shard, os.path.join(args.out, name), metadata={"format": "pt"})
            shards.append(name)
            for key in shard:
                weight_map[key] = name
            shard, shard_bytes = {}, 0

    total = 0
    for name, shape in tensors_of(config):
        if len(shape) == 1:
            t = torch.ones(shape, dtype=torch.bfloat16)
        else:
            t = (torch.randn(shape, generator=generator, device="cuda", dtype=torch.float32) * 0.02).to(torch.bfloat16).cpu()
        shard[name] = t
        shard_bytes += t.numel() * 2
        total += t.numel() * 2
        if shard_bytes >= 2 << 30:  # the moa runtime reads a shard into one buffer (< 4 GiB)
            flush()
    flush()
    count = len(shards)
    renamed = {}
    for i, name in enumerate(shards):
        final = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
        os.rename(os.path.join(args.out, name), os.path.join(args.out, final))
        renamed[name] = final
    index = {"metadata": {"total_size": total}, "weight_map": {k: renamed[v] for k, v in weight_map.items()}}
    with open(os.path.join(args.out, "model.safetensors.index.json"), "w") as f:
        json.dump(index, f, indent=1)
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=1)
    with open(os.path.join(args.out, "generation_config.json"), "w") as f:
        json.dump({"bos_token_id": 0, "eos_token_id": 1, "do_sample": False}, f, indent=1)
    fixtures = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures", "moa-tiny")
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(fixtures, name), os.path.join(args.out, name))
    print(f"wrote {args.out}: {config['num_hidden_layers']} layers, {total / 2**30:.2f} GiB in {count} shards")


if __name__ == "__main__":
    main()
