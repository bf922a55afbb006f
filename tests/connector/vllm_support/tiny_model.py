"""Builds a tiny random-weight Qwen2-VL (or Qwen2.5-VL) checkpoint locally; nothing is downloaded.

Deterministic for a given `seed`. A 64x64 image becomes 4 image tokens and a `[4, 128]` embedding.
Usable as a script: `python -m tests.connector.vllm_support.tiny_model OUTDIR [2.5]`.
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

_SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>",
             "<|image_pad|>", "<|video_pad|>", "<|vision_pad|>", "<unk>"]
_CHAT_TEMPLATE = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}<|im_end|>\n"
    "{% else %}{% for content in message['content'] %}"
    "{% if content['type'] == 'image' or 'image' in content or 'image_url' in content %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif content['type'] == 'video' or 'video' in content %}<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in content %}{{ content['text'] }}{% endif %}{% endfor %}<|im_end|>\n"
    "{% endif %}{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")


def build_tiny_qwen2vl(out: str, qwen25: bool = False, seed: int = 0, hidden_size: int = 128) -> str:
    """Writes the checkpoint (tokenizer, chat template, image processor config) into `out`; returns `out`."""
    import torch
    from tokenizers import AddedToken, Tokenizer, models, pre_tokenizers
    from transformers import (
        PreTrainedTokenizerFast,
        Qwen2_5_VLConfig,
        Qwen2_5_VLForConditionalGeneration,
        Qwen2VLConfig,
        Qwen2VLForConditionalGeneration,
    )

    os.makedirs(out, exist_ok=True)
    vocab = {t: i for i, t in enumerate(_SPECIALS)}
    for word in ["user", "assistant", "system", "hello", "world", "the", "a", "is", "of", "to", "and", "what", "in", "this", "image", "describe", "picture"]:
        vocab[word] = len(vocab)
    while len(vocab) < 512:
        vocab[f"w{len(vocab)}"] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in _SPECIALS])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", eos_token="<|im_end|>",
                                   pad_token="<|endoftext|>")
    fast.chat_template = _CHAT_TEMPLATE
    fast.save_pretrained(out)

    h = hidden_size
    vision = (dict(depth=2, hidden_size=h, intermediate_size=2 * h, out_hidden_size=h, num_heads=2,
                   window_size=112, fullatt_block_indexes=[1], tokens_per_second=2, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, in_channels=3) if qwen25 else
              dict(depth=1, embed_dim=h, hidden_size=h, num_heads=2, mlp_ratio=2, patch_size=14,
                   spatial_merge_size=2, temporal_patch_size=2, in_channels=3))
    config_cls, model_cls = ((Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration) if qwen25 else
                             (Qwen2VLConfig, Qwen2VLForConditionalGeneration))
    head_dim = h // 2
    section = [head_dim // 4, head_dim // 8, head_dim // 8]
    config_kwargs: dict[str, Any] = dict(
        text_config=dict(vocab_size=len(vocab), hidden_size=h, intermediate_size=2 * h, num_hidden_layers=2,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                         rope_scaling={"type": "mrope", "mrope_section": section},
                         bos_token_id=0, eos_token_id=2, pad_token_id=0),
        vision_config=vision,
        image_token_id=vocab["<|image_pad|>"], video_token_id=vocab["<|video_pad|>"],
        vision_start_token_id=vocab["<|vision_start|>"], vision_end_token_id=vocab["<|vision_end|>"],
        bos_token_id=0, eos_token_id=2, pad_token_id=0, torch_dtype="bfloat16")
    config = config_cls(**config_kwargs)
    torch.manual_seed(seed)
    model: Any = model_cls(config)
    model.to(torch.bfloat16).save_pretrained(out)

    processor = {
        "image_processor_type": "Qwen2VLImageProcessor",
        "processor_class": "Qwen2_5_VLProcessor" if qwen25 else "Qwen2VLProcessor",
        "min_pixels": 56 * 56, "max_pixels": 28 * 28 * 16,
        "size": {"shortest_edge": 56 * 56, "longest_edge": 28 * 28 * 16},
        "patch_size": 14, "temporal_patch_size": 2, "merge_size": 2,
        "image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711],
        "do_resize": True, "do_rescale": True, "rescale_factor": 1 / 255, "do_normalize": True,
        "do_convert_rgb": True, "resample": 3,
    }
    with open(os.path.join(out, "preprocessor_config.json"), "w") as f:
        json.dump(processor, f, indent=1)
    return out


if __name__ == "__main__":
    build_tiny_qwen2vl(sys.argv[1], qwen25=len(sys.argv) > 2 and sys.argv[2] == "2.5")
